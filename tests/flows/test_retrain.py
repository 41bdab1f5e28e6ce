"""Champion/challenger re-training on the real embedded service with stand-in ML: promotion, tags, the
batch prediction uses the champion."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.retrain import retrain_champion
from tasks.champion import decide_promotion
from tests.flows.conftest import EmbeddedAML

pytestmark = pytest.mark.prefect

SCHEMA = (
    '{"version":"1.0","dataFormat":"CSV","dataFileContainsHeader":true,"targetAttributeName":"y",'
    '"attributes":[{"attributeName":"x","attributeType":"NUMERIC"},{"attributeName":"y","attributeType":"NUMERIC"}]}'
)


def test_retrain_promotes_first_model_then_keeps_the_champion(aml: EmbeddedAML, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(30)))
    kwargs = {
        "pipeline": "toy",
        "train_data": str(data),
        "data_schema": SCHEMA,
        "model_type": "REGRESSION",
        "recipe": None,
        "batch_data": str(data),
        "output_dir": str(tmp_path / "out"),
    }
    first = retrain_champion(**kwargs)
    assert first["decision"]["promote"] is True
    champion = first["decision"]["champion"]
    (first_eval,) = aml.describe("Evaluation")
    assert first_eval["MLModelId"] == champion
    first_eval_ds = first_eval["EvaluationDataSourceId"]
    assert aml.tags(champion)["amlflow:role"] == "champion"
    assert aml.tags(champion)["amlflow:pipeline"] == "toy"

    # a new challenger; every stand-in evaluation has the same RMSE, so it is not better
    second = retrain_champion(**kwargs, salt="v2")
    assert second["decision"]["promote"] is False
    assert second["decision"]["champion"] == champion
    challenger = second["decision"]["challenger"]
    assert challenger != champion
    assert aml.tags(challenger)["amlflow:role"] == "rejected-challenger"
    assert aml.tags(champion)["amlflow:role"] == "champion"
    # both models were evaluated on the same (the second run's) evaluation datasource
    second_evals = {
        e["MLModelId"]: e["EvaluationDataSourceId"]
        for e in aml.describe("Evaluation")
        if e["EvaluationDataSourceId"] != first_eval_ds
    }
    assert set(second_evals) == {champion, challenger}
    assert second_evals[challenger] == second_evals[champion]
    # the batch predictions always used the champion
    batch_predictions = aml.describe("BatchPrediction")
    assert len(batch_predictions) == 2
    assert {bp["MLModelId"] for bp in batch_predictions} == {champion}


@pytest.mark.parametrize(
    ("new", "old", "higher", "alerts", "promote"),
    [
        (0.70, 0.73, False, [], True),  # lower RMSE wins
        (0.75, 0.73, False, [], False),  # higher RMSE loses
        (0.91, 0.90, True, [], True),  # higher F1 wins
        (0.95, 0.90, True, ["Evaluation data is less than 10% of training data"], False),  # alert blocks
    ],
)
def test_decide_promotion_compares_on_the_metric_direction(
    new: float, old: float, higher: bool, alerts: list[str], promote: bool
) -> None:
    challenger = {"ml_model_id": "ml-new", "metric": new, "higher_is_better": higher, "alerts": alerts}
    champion = {"ml_model_id": "ml-old", "metric": old, "higher_is_better": higher, "alerts": []}
    from prefect import flow

    @flow
    def decide() -> dict:
        return decide_promotion("p", challenger, champion)

    decision = decide()
    assert decision["promote"] is promote
    assert decision["champion"] == ("ml-new" if promote else "ml-old")
