"""engine.evaluation in bounded memory (``memory_budget`` too small for the scores): the same metric and
report as the exact path, batch by batch (engine/evaluation_bounded.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from amlflow.engine.evaluation import evaluate
from amlflow.engine.evaluation_bounded import AUC_BINS
from amlflow.engine.model import TrainedModel, train
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import parse_recipe
from amlflow.engine.schema import parse_schema
from amlflow.engine.table import EncodedTable

REPO = Path(__file__).resolve().parents[2]
BIG = 1 << 40


def _case(csv: str, schema_file: str, recipe_file: str, model_type: str) -> tuple[Any, ...]:
    df = pd.read_csv(REPO / csv, dtype=str, keep_default_na=False)
    if schema_file == "wine-binary.csv.schema":  # the wine BINARY case: quality >= 7
        df["good"] = (df.pop("quality").astype(int) >= 7).astype(int).astype(str)
    schema = parse_schema((REPO / "schemas" / schema_file).read_text())
    k = int(len(df) * 0.7)
    tr = EncodedTable.from_frame(df.iloc[:k].reset_index(drop=True))
    te = EncodedTable.from_frame(df.iloc[k:].reset_index(drop=True))
    recipe = parse_recipe((REPO / "recipes" / recipe_file).read_text(), schema)
    model = train(tr, schema, recipe, parse_parameters({"sgd.maxPasses": "5"}), model_type)
    return model, te, schema


def _both(model: TrainedModel, te: EncodedTable, schema: Any, **kw: Any) -> tuple[Any, Any]:
    info = {"training_datasource_id": "ds-tr", "evaluation_datasource_id": "ds-ev", **kw}
    exact = evaluate(model, te, schema, training_info=info, memory_budget=BIG)
    # batches of 50,000 rows are the default; the tables here are small, so 1 byte forces the bounded path
    bounded = evaluate(model, te, schema, training_info=info, memory_budget=1)
    assert exact.report["evaluation_mode"] == "exact"
    assert bounded.report["evaluation_mode"] == "bounded"
    return exact, bounded


def test_multiclass_is_the_exact_result_to_the_last_digit() -> None:
    model, te, schema = _case(
        "data/mnist-sample/train.csv.gz", "mnist-train.csv.schema", "mnist.recipe.json", "MULTICLASS"
    )
    exact, bounded = _both(model, te, schema)
    assert bounded.properties == exact.properties
    for key in ("baseline", "confusion_matrix", "per_class", "target_distribution", "alerts", "n_evaluated"):
        assert bounded.report[key] == exact.report[key], key


def test_binary_counts_are_exact_and_the_auc_within_the_bins() -> None:
    model, te, schema = _case(
        "data/wine/winequality-red-comma.csv", "wine-binary.csv.schema", "wine.recipe.json", "BINARY"
    )
    exact, bounded = _both(model, te, schema, score_threshold=0.3)
    auc_exact, auc_bounded = float(exact.properties["BinaryAUC"]), float(bounded.properties["BinaryAUC"])
    assert abs(auc_bounded - auc_exact) < 1e-4, (auc_bounded, auc_exact)
    for key in ("confusion_matrix", "threshold_table", "score_histogram", "threshold", "target_distribution"):
        assert bounded.report[key] == exact.report[key], key
    assert str(AUC_BINS) in bounded.report["bounded"]["auc"].replace(",", "")
    roc = bounded.report["roc_curve"]
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_regression_two_passes_give_the_exact_histograms() -> None:
    model, te, schema = _case(
        "data/wine/winequality-red-comma.csv", "wine-regression.csv.schema", "wine.recipe.json", "REGRESSION"
    )
    exact, bounded = _both(model, te, schema)
    assert float(bounded.properties["RegressionRMSE"]) == pytest.approx(
        float(exact.properties["RegressionRMSE"]), rel=1e-12
    )
    assert bounded.report["baseline"]["value"] == pytest.approx(exact.report["baseline"]["value"], rel=1e-12)
    for key in ("residual_histogram", "score_histogram"):
        assert bounded.report[key]["counts"] == exact.report[key]["counts"], key
        assert bounded.report[key]["edges"] == pytest.approx(exact.report[key]["edges"], rel=1e-12), key
    ev_b, ev_e = (r.report["target_distribution"]["evaluation"] for r in (bounded, exact))
    assert ev_b["quantiles"] == pytest.approx(ev_e["quantiles"])
    assert ev_b["mean"] == pytest.approx(ev_e["mean"], rel=1e-12)
    assert ev_b["std"] == pytest.approx(ev_e["std"], rel=1e-9)
