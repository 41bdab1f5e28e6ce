"""engine.evaluation in bounded memory (``memory_budget`` too small for the scores): the same metric and
report as the exact path, batch by batch (engine/evaluation_bounded.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from amlflow.engine.evaluation import evaluate
from amlflow.engine.evaluation_bounded import (
    AUC_BINS,
    BoundedPlan,
    accumulate,
    merge,
    new_accumulator,
    pack,
)
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


def _same(a: dict[str, Any], b: dict[str, Any], *, float_rel: float = 0.0) -> None:
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], rel=float_rel, abs=0.0), key
        else:
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("model_type", "csv", "schema_file"),
    [
        ("MULTICLASS", "data/mnist-sample/train.csv.gz", "mnist-train.csv.schema"),
        ("BINARY", "data/wine/winequality-red-comma.csv", "wine-binary.csv.schema"),
        ("REGRESSION", "data/wine/winequality-red-comma.csv", "wine-regression.csv.schema"),
    ],
)
def test_merged_partitions_are_the_one_pass_accumulator(model_type: str, csv: str, schema_file: str) -> None:
    """Partition accumulators (plain and packed) merged in order = one pass over every row, for several
    splits: counts equal, REGRESSION's float sum of squares to rounding."""
    recipe = "mnist.recipe.json" if model_type == "MULTICLASS" else "wine.recipe.json"
    model, te, _ = _case(csv, schema_file, recipe, model_type)
    n = te.n_rows
    if model_type == "MULTICLASS":
        plans = [BoundedPlan(model_type, labels=tuple(sorted(set(model.classes) | {"0", "1"})))]
    elif model_type == "BINARY":
        plans = [
            BoundedPlan(
                model_type,
                threshold=0.3,
                thresholds=tuple(float(t) for t in np.round(np.linspace(0, 1, 101), 2)),
                edges=tuple(float(e) for e in np.linspace(0, 1, 21)),
            )
        ]
    else:
        r_edges = tuple(float(e) for e in np.linspace(-6, 6, 21))
        s_edges = tuple(float(e) for e in np.linspace(0, 12, 21))  # wine quality 3..8
        plans = [
            BoundedPlan(model_type),
            BoundedPlan(model_type, regression_pass=2, residual_edges=r_edges, score_edges=s_edges),
        ]
    rng = np.random.default_rng(0)
    splits = [
        [0, n],
        [0, 1, n],
        [0, n // 2, n],
        [0, *sorted(rng.choice(np.arange(1, n), 6, replace=False)), n],
    ]
    for plan in plans:
        whole = accumulate(model, te, plan, batch_rows=37)
        if plan.model_type != "REGRESSION" or plan.regression_pass == 2:  # counts of every row
            key = {"MULTICLASS": "cm", "BINARY": "totals", "REGRESSION": "s_hist"}[plan.model_type]
            assert int(np.sum(whole[key])) == n, key
        for cuts in splits:
            parts = [accumulate(model, te, plan, a, b, batch_rows=37) for a, b in itertools.pairwise(cuts)]
            _same(merge(new_accumulator(plan), parts), whole, float_rel=1e-12)
            packed = [pack(p) for p in parts]
            if model_type == "BINARY":  # the bins travel as their nonzero entries
                assert all(isinstance(p["pos_bins"], tuple) for p in packed)
                assert sum(len(p["pos_bins"][0]) + len(p["neg_bins"][0]) for p in packed) <= n
            _same(merge(new_accumulator(plan), packed), whole, float_rel=1e-12)
        # one batch per row or all rows in one batch: the same counts
        _same(accumulate(model, te, plan, batch_rows=n), whole, float_rel=1e-12)
    if model_type == "REGRESSION":
        first = accumulate(model, te, plans[0])
        assert first["s_lo"] < first["s_hi"] and first["r_max"] > 0 and first["sq"] > 0
