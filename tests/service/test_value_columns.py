"""A NUMERIC input with more distinct values than a dictionary should hold (one per row) goes through the
whole service stored without a dictionary (engine.table value columns): statistics, a model over it (the
value itself and its quantile bins), its evaluation on a datasource small enough to keep the dictionary,
and a batch prediction whose scores are the model's on the same rows stored as dictionaries."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from amlflow.engine import table as table_mod
from amlflow.engine.dataset import Source, build_dataset
from amlflow.engine.rearrange import parse_rearrangement
from amlflow.engine.schema import parse_schema
from amlflow.engine.stats import compute_statistics
from amlflow.engine.table import EncodedTable
from amlflow.engine.trained import load_model
from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.layout import entity_dir_name
from amlflow.settings import Settings
from tests.service.support import wait

N = 100_000  # 70 % of them: more distinct values than VALUE_COLUMN_MIN_VALUES, 30 %: fewer
SCHEMA = json.dumps(
    {
        "version": "1.0",
        "dataFormat": "CSV",
        "dataFileContainsHeader": True,
        "targetAttributeName": "y",
        "attributes": [
            {"attributeName": "x", "attributeType": "NUMERIC"},
            {"attributeName": "k", "attributeType": "CATEGORICAL"},
            {"attributeName": "y", "attributeType": "BINARY"},
        ],
    }
)
RECIPE = json.dumps({"groups": {}, "assignments": {}, "outputs": ["x", "quantile_bin(x,20)", "k"]})
TRAIN = json.dumps({"splitting": {"percentBegin": 0, "percentEnd": 70}})
EVAL = json.dumps({"splitting": {"percentBegin": 70, "percentEnd": 100}})


def _csv() -> bytes:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, N)
    k = rng.integers(0, 5, N)
    y = (np.abs(x) + 0.2 * k + rng.normal(0.0, 0.5, N) > 1.2).astype(int)  # |x|: the bins matter
    text = [("" if i % 97 == 0 else f"{v:.9f}") for i, v in enumerate(x.tolist())]
    return (
        "x,k,y\n" + "".join(f"{t},c{c},{t_}\n" for t, c, t_ in zip(text, k.tolist(), y.tolist(), strict=True))
    ).encode()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("memory_limit", [None, 8 << 20])
def test_a_value_column_through_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_limit: int | None
) -> None:
    """In memory, and (an 8 MB budget) data-parallel on the training worker processes; the evaluation and
    the batch are 20,000 rows or more, so they are scored on the batch worker processes."""
    data = _csv()
    settings = Settings(home=tmp_path / "home", max_jobs=2, memory_limit=memory_limit, training_processes=2)
    root = settings.resolved_storage_root()
    (root / "b").mkdir(parents=True)
    (root / "b" / "data.csv").write_bytes(data)
    service = Service(settings, endpoint_url="http://127.0.0.1:1")
    try:
        ml = build_client(service, settings)
        for ds, rearr in (("ds-train", TRAIN), ("ds-eval", EVAL), ("ds-all", None)):
            spec = {"DataLocationS3": "s3://b/data.csv", "DataSchema": SCHEMA}
            ml.create_data_source_from_s3(
                DataSourceId=ds,
                DataSpec={**spec, "DataRearrangement": rearr} if rearr else spec,
                ComputeStatistics=ds == "ds-train",
            )
        ml.create_ml_model(
            MLModelId="ml", MLModelType="BINARY", TrainingDataSourceId="ds-train", Recipe=RECIPE,
            Parameters={"sgd.maxPasses": "5"},
        )  # fmt: skip
        assert wait(service, "MLModel", "ml", timeout=200)["Status"] == "COMPLETED"
        ml.create_evaluation(EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds-eval")
        ml.create_batch_prediction(
            BatchPredictionId="bp",
            MLModelId="ml",
            BatchPredictionDataSourceId="ds-all",
            OutputUri="s3://b/out/",
        )
        ev = wait(service, "Evaluation", "ev", timeout=120)
        bp = wait(service, "BatchPrediction", "bp", timeout=120)
        assert ev["Status"] == "COMPLETED" and bp["Status"] == "COMPLETED", (ev, bp)
        home = settings.home
        ds_dir = Path(home) / "datasources" / entity_dir_name("DataSource", "ds-train")
        model_dir = Path(home) / "models" / entity_dir_name("MLModel", "ml") / "model"
        train_table = EncodedTable.open(ds_dir / "table")
        kinds = {
            ds: EncodedTable.open(
                Path(home) / "datasources" / entity_dir_name("DataSource", ds) / "table"
            ).kind("x")
            for ds in ("ds-train", "ds-eval", "ds-all")
        }
        insights = json.loads((ds_dir / "insights.json").read_text())
        training_log = service.jobs.log_path("MLModel", "ml").read_text()
        auc = float(ev["PerformanceMetrics"]["Properties"]["BinaryAUC"])
        (out,) = (root / "b" / "out" / "batch-prediction" / "result").glob("*.gz")
        rows = list(csv.DictReader(io.StringIO(gzip.decompress(out.read_bytes()).decode())))
    finally:
        service.shutdown(timeout=60)

    assert kinds == {"ds-train": "values", "ds-eval": "dictionary", "ds-all": "values"}
    want_mode = "in-memory" if memory_limit is None else "data-parallel in 2 worker processes"
    assert f"training mode: {want_mode}" in training_log, training_log
    assert train_table.kind("k") == "dictionary"

    # the same data stored as dictionaries, in this process
    monkeypatch.setattr(table_mod, "VALUE_COLUMN_MIN_VALUES", 10**9)
    src = Source("data.csv", len(data), lambda: io.BytesIO(data), lambda o: io.BytesIO(data[o:]))
    schema = parse_schema(SCHEMA)
    for name, rearr in (("train", TRAIN), ("eval", EVAL), ("all", None)):
        build_dataset([src], schema, parse_rearrangement(rearr) if rearr else None, tmp_path / name)
    plain_train, plain_eval, plain_all = (EncodedTable.open(tmp_path / n) for n in ("train", "eval", "all"))
    assert plain_train.kind("x") == "dictionary" and len(plain_train.dictionary("x")) > 50_000
    want = compute_statistics(plain_train, schema)
    got_x = next(a for a in insights["attributes"] if a["name"] == "x")
    want_x = next(a for a in want["attributes"] if a["name"] == "x")
    assert got_x["missing"] == want_x["missing"] > 0
    assert got_x["median"] == want_x["median"]
    assert got_x["histogram"]["counts"] == want_x["histogram"]["counts"]
    for key in ("min", "max", "mean", "std", "correlation"):
        assert got_x[key] == pytest.approx(want_x[key], rel=1e-9)

    # the batch output is the trained model's scores on the dictionary table
    model = load_model(model_dir)
    got_scores = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(
        got_scores, model.predict_table(plain_all, schema).scores, rtol=1e-5, atol=1e-6
    )
    # the evaluation's AUC is the model's on the evaluation rows
    y = plain_eval.dictionary("y")[plain_eval.codes("y")].astype(int)
    assert auc == pytest.approx(roc_auc_score(y, model.predict_table(plain_eval, schema).scores), abs=1e-6)
    assert auc > 0.85  # |x| is learnt from its bins
