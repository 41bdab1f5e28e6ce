"""engine.evaluation: AML's metric and the evaluation report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from amlflow.engine.errors import DataError
from amlflow.engine.evaluation import ALERTS, ROC_POINTS, _roc_curve, evaluate
from amlflow.engine.model import train
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import parse_recipe
from amlflow.engine.schema import parse_schema
from amlflow.engine.table import EncodedTable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return pd.read_csv(REPO / "data/wine/winequality-red-comma.csv", dtype=str, keep_default_na=False)


def _split(df: pd.DataFrame) -> tuple[EncodedTable, EncodedTable, pd.DataFrame]:
    k = int(len(df) * 0.7)
    return (
        EncodedTable.from_frame(df.iloc[:k].reset_index(drop=True)),
        EncodedTable.from_frame(df.iloc[k:].reset_index(drop=True)),
        df.iloc[k:],
    )


def alerts(report: dict) -> dict[str, bool]:
    return {a["name"]: a["triggered"] for a in report["alerts"]}


def test_evaluate_regression_wine(wine: pd.DataFrame) -> None:
    schema = parse_schema((REPO / "schemas/wine-regression.csv.schema").read_text())
    tr, te, b = _split(wine)
    model = train(
        tr,
        schema,
        parse_recipe((REPO / "recipes/wine.recipe.json").read_text(), schema),
        parse_parameters(None),
        "REGRESSION",
    )
    result = evaluate(
        model,
        te,
        schema,
        training_info={"training_datasource_id": "ds-tr", "evaluation_datasource_id": "ds-ev"},
    )
    assert list(result.properties) == ["RegressionRMSE"]
    rmse = float(result.properties["RegressionRMSE"])
    assert result.properties["RegressionRMSE"] == repr(rmse)
    y = b["quality"].astype(float).to_numpy()
    assert rmse == pytest.approx(float(np.sqrt(np.mean((y - model.predict_table(te).scores) ** 2))))
    r = result.report
    assert r["metric"] == "RegressionRMSE" and r["value"] == rmse <= 0.729
    assert r["baseline"]["metric"] == "RegressionRMSE" and 0.75 < r["baseline"]["value"] < 0.85
    assert r["n_evaluated"] == len(b) and r["n_invalid"] == 0
    assert sum(r["residual_histogram"]["counts"]) == len(b)
    assert [a["name"] for a in r["alerts"]] == list(ALERTS)
    assert not any(alerts(r).values())
    assert "confusion_matrix" not in r


def test_evaluate_binary_wine_and_alerts(wine: pd.DataFrame) -> None:
    schema = parse_schema((REPO / "schemas/wine-binary.csv.schema").read_text())
    df = wine.copy()
    df["good"] = (df.pop("quality").astype(int) >= 7).astype(int).astype(str)
    tr, te, b = _split(df)
    model = train(
        tr,
        schema,
        parse_recipe((REPO / "recipes/wine.recipe.json").read_text(), schema),
        parse_parameters(None),
        "BINARY",
    )
    result = evaluate(
        model,
        tr,
        schema,
        training_info={"training_datasource_id": "ds-1", "evaluation_datasource_id": "ds-1"},
    )
    assert alerts(result.report)[ALERTS[0]] is True  # evaluated on the training data
    result = evaluate(model, te, schema, training_info={"score_threshold": 0.3})
    auc = float(result.properties["BinaryAUC"])
    assert (
        auc == pytest.approx(roc_auc_score(b["good"].astype(int), model.predict_table(te).scores))
        and auc >= 0.778
    )
    r = result.report
    assert r["baseline"]["value"] == 0.5 and r["threshold"] == 0.3
    cm = np.array(r["confusion_matrix"]["matrix"])
    assert r["confusion_matrix"]["labels"] == ["0", "1"] and cm.sum() == len(b)
    table = r["threshold_table"]
    assert len(table) == 101 and table[0]["threshold"] == 0.0 and table[-1]["threshold"] == 1.0
    at_03 = next(t for t in table if t["threshold"] == 0.3)
    assert [[at_03["tn"], at_03["fp"]], [at_03["fn"], at_03["tp"]]] == cm.tolist()
    assert table[0]["recall"] == 1.0
    hist = r["score_histogram"]
    assert sum(hist["actual_0"]) + sum(hist["actual_1"]) == len(b)
    assert sum(hist["actual_1"]) == int((b["good"] == "1").sum())
    roc = r["roc_curve"]
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert 2 <= len(fpr) == len(tpr) <= 200
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # the area under the stored points is the AUC (thinning, when any, moves it by little)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(auc, abs=0.01)


def test_roc_curve_is_thinned_to_a_bounded_number_of_points() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 20_000)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0)
    assert len(roc_curve(y, s)[0]) > 10 * ROC_POINTS  # many points before thinning
    roc = _roc_curve(y, s)
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert len(fpr) == len(tpr) == ROC_POINTS
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(roc_auc_score(y, s), abs=0.005)
    few = _roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert few == {"fpr": [0.0, 0.0, 0.5, 0.5, 1.0], "tpr": [0.0, 0.5, 0.5, 1.0, 1.0]}


def test_evaluate_multiclass_macro_f1_baseline_and_invalid_targets(wine: pd.DataFrame) -> None:
    schema = parse_schema((REPO / "schemas/wine-multiclass.csv.schema").read_text())
    df = wine.copy()
    q = df.pop("quality").astype(int)
    df["grade"] = np.where(q <= 4, "bad", np.where(q <= 6, "average", "good"))
    tr, _, b = _split(df)
    model = train(
        tr,
        schema,
        parse_recipe((REPO / "recipes/wine.recipe.json").read_text(), schema),
        parse_parameters(None),
        "MULTICLASS",
    )
    ev = b.copy()
    ev.iloc[:5, ev.columns.get_loc("grade")] = ""
    table = EncodedTable.from_frame(ev.reset_index(drop=True))
    result = evaluate(model, table, schema, training_info={})
    r = result.report
    assert r["n_invalid"] == 5 and r["n_evaluated"] == len(b) - 5
    assert alerts(r)[ALERTS[3]] is True
    kept = ev.iloc[5:]
    expected = f1_score(kept["grade"], model.predict_table(table).labels()[5:], average="macro")
    assert float(result.properties["MulticlassAvgFScore"]) == pytest.approx(expected)
    assert r["baseline"]["value"] == pytest.approx(
        f1_score(kept["grade"], ["average"] * len(kept), average="macro", zero_division=0)
    )
    assert r["confusion_matrix"]["labels"] == ["average", "bad", "good"]
    assert np.array(r["confusion_matrix"]["matrix"]).sum() == len(kept)
    assert set(r["per_class"]) == {"average", "bad", "good"}


def test_evaluate_schema_size_and_distribution_alerts() -> None:
    schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"CATEGORICAL"}, {"attributeName": "z", "attributeType": "NUMERIC"}, '
        '{"attributeName": "y", "attributeType": "BINARY"}]}'
    )
    rng = np.random.default_rng(0)
    n = 400
    x = rng.choice(["a", "b"], n)
    df = pd.DataFrame({"x": x, "z": ["1"] * n, "y": np.where(x == "a", "1", "0")})
    model = train(
        EncodedTable.from_frame(df),
        schema,
        parse_recipe('{"outputs": ["x"]}', schema),
        parse_parameters(None),
        "BINARY",
    )
    ev_schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"CATEGORICAL"}, {"attributeName": "w", "attributeType": "NUMERIC"}, '
        '{"attributeName": "y", "attributeType": "BINARY"}]}'
    )
    ev = pd.DataFrame({"x": ["a"] * 20 + ["b"] * 2, "w": ["0"] * 22, "y": ["1"] * 20 + ["0"] * 2})
    r = evaluate(model, EncodedTable.from_frame(ev), ev_schema, training_info={}).report
    got = alerts(r)
    assert got[ALERTS[1]] is True  # 22 < 10% of 400
    assert got[ALERTS[2]] is True  # z missing, w extra
    assert (
        "missing attributes: z" in r["alerts"][2]["message"]
        and "extra attributes: w" in r["alerts"][2]["message"]
    )
    assert got[ALERTS[4]] is True  # ~50% positives in training, 91% here
    assert got[ALERTS[0]] is False and got[ALERTS[3]] is False


def test_evaluate_needs_the_target_column() -> None:
    schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"NUMERIC"}, {"attributeName": "y", "attributeType": "NUMERIC"}]}'
    )
    df = pd.DataFrame({"x": ["1", "2", "3"], "y": ["1", "2", "3"]})
    model = train(
        EncodedTable.from_frame(df),
        schema,
        parse_recipe('{"outputs": ["x"]}', schema),
        parse_parameters(None),
        "REGRESSION",
    )
    with pytest.raises(DataError, match="no column 'y'"):
        evaluate(model, EncodedTable.from_frame(df[["x"]]), schema, training_info={})


def test_evaluate_binary_single_class_is_an_error_not_nan() -> None:
    # was: properties {"BinaryAUC": "NaN"}; an undefined metric now fails the evaluation (issue 8)
    schema = parse_schema(
        '{"targetAttributeName": "y", "attributes": [{"attributeName": "x", "attributeType": '
        '"CATEGORICAL"}, {"attributeName": "y", "attributeType": "BINARY"}]}'
    )
    df = pd.DataFrame({"x": ["a", "b"] * 10, "y": ["1", "0"] * 10})
    model = train(
        EncodedTable.from_frame(df),
        schema,
        parse_recipe('{"outputs": ["x"]}', schema),
        parse_parameters(None),
        "BINARY",
    )
    with pytest.raises(DataError, match="BinaryAUC is undefined on datasource ds-one: every record") as err:
        evaluate(
            model,
            EncodedTable.from_frame(df.iloc[:1]),
            schema,
            training_info={"evaluation_datasource_id": "ds-one"},
        )
    assert err.value.field == "EvaluationDataSourceId"
