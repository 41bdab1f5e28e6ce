"""The service's real job functions around stand-in engine ML work (``Service(engine=EngineJobs(...))``):
datasource job on the real data engine, model save/load, evaluation report files, batch output per input
file (gzip, names, manifest), missing inputs."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from amlflow.engine.batch import BatchCounts
from amlflow.engine.evaluation import EvaluationResult
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import Recipe
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import Table
from amlflow.service.core import Service
from amlflow.service.engine_jobs import EngineJobs
from amlflow.settings import Settings
from tests.service.support import SCHEMA, wait


class StandInModel:
    """Trains nothing; saves a marker file so the service's load path is the one used."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.size_in_bytes = 1

    def save(self, directory: Path | str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "schema.json").write_text(self.schema.to_json())

    def predict_record(self, record: Mapping[str, str], threshold: float = 0.5) -> dict[str, Any]:
        return {"predictedLabel": "1", "predictedScores": {"1": threshold}, "details": {}}


def fake_train(
    table: Table, schema: Schema, recipe: Recipe, params: TrainingParameters, model_type: str, **_: Any
) -> StandInModel:
    return StandInModel(schema)


def fake_load_model(directory: Path) -> StandInModel:
    return StandInModel(parse_schema((directory / "schema.json").read_text()))


def fake_write_batch_output(
    model: Any,
    table: Table,
    schema: Schema,
    out: BinaryIO,
    *,
    threshold: float = 0.5,
    rows: tuple[int, int] | None = None,
) -> BatchCounts:
    """Header + one line per row of the span (these test files have no rejected rows)."""
    start, stop = rows if rows is not None else (0, table.n_rows)
    out.write(b"trueLabel,score\n")
    dictionary = table.dictionary("y")
    for code in table.codes("y", start, stop):
        out.write(f"{dictionary[code]},{threshold}\n".encode())
    return BatchCounts(stop - start, 0)


def fake_evaluate(
    model: Any,
    table: Table,
    schema: Schema,
    *,
    training_info: Mapping[str, Any] | None = None,
    memory_budget: int | None = None,
) -> EvaluationResult:
    return EvaluationResult(
        {"BinaryAUC": "0.875"}, {"rows": table.n_rows, "seen": sorted(training_info or {})}
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = Settings(home=tmp_path / "home")
    engine = EngineJobs(
        train=fake_train,
        load_model=fake_load_model,
        evaluate=fake_evaluate,
        write_batch_output=fake_write_batch_output,
    )
    svc = Service(settings, engine=engine)
    root = settings.resolved_storage_root() / "in"
    (root / "parts").mkdir(parents=True)
    (root / "parts" / "one.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (root / "parts" / "two").write_text("x,y\n" + "".join(f"{i},{(i + 1) % 2}\n" for i in range(20)))
    yield svc
    svc.shutdown(timeout=10)


def _create_all(service: Service, location: str, output: str = "s3://out/results/") -> None:
    service.create_data_source_from_s3(
        DataSourceId="ds", ComputeStatistics=True, DataSpec={"DataLocationS3": location, "DataSchema": SCHEMA}
    )
    service.create_ml_model(MLModelId="ml", MLModelType="BINARY", TrainingDataSourceId="ds")
    service.create_evaluation(EvaluationId="ev", MLModelId="ml", EvaluationDataSourceId="ds")
    service.create_batch_prediction(
        BatchPredictionId="bp", MLModelId="ml", BatchPredictionDataSourceId="ds", OutputUri=output
    )


def test_datasource_evaluation_and_batch_over_two_files(service: Service) -> None:
    _create_all(service, "s3://in/parts/")
    ds = wait(service, "DataSource", "ds")
    assert ds["Status"] == "COMPLETED", ds.get("Message")
    assert ds["NumberOfFiles"] == 2 and ds["DataSizeInBytes"] > 0
    insights = service.get_data_insights("ds")
    assert insights["n_rows"] == 50
    ev = wait(service, "Evaluation", "ev")
    assert ev["Status"] == "COMPLETED", ev.get("Message")
    assert ev["PerformanceMetrics"] == {"Properties": {"BinaryAUC": "0.875"}}
    report = service.get_evaluation_report("ev")
    assert report["rows"] == 50 and report["seen"] == [
        "evaluation_datasource_id",
        "score_threshold",
        "training_datasource_id",
    ]
    bp = wait(service, "BatchPrediction", "bp")
    assert bp["Status"] == "COMPLETED", bp.get("Message")
    assert bp["TotalRecordCount"] == 50 and bp["InvalidRecordCount"] == 0
    store = service.storage
    manifest = json.loads(store.read_bytes("s3://out/results/batch-prediction/bp.manifest"))
    assert manifest == {
        "s3://in/parts/one.csv": "s3://out/results/batch-prediction/result/bp-one.csv.gz",
        "s3://in/parts/two": "s3://out/results/batch-prediction/result/bp-two.gz",
    }
    one = gzip.decompress(store.read_bytes(manifest["s3://in/parts/one.csv"])).decode().splitlines()
    two = gzip.decompress(store.read_bytes(manifest["s3://in/parts/two"])).decode().splitlines()
    assert one[0] == two[0] == "trueLabel,score"
    assert len(one) == 31 and len(two) == 21
    assert one[1] == "0,0.5" and two[1] == "1,0.5"  # each file's own rows, in order
    assert [o.key for o in store.list("s3://out/results/")] == [
        "results/batch-prediction/bp.manifest",
        "results/batch-prediction/result/bp-one.csv.gz",
        "results/batch-prediction/result/bp-two.gz",
    ]


def test_single_file_output_uri_without_slash(service: Service) -> None:
    _create_all(service, "s3://in/parts/one.csv", output="s3://out/nodir")
    bp = wait(service, "BatchPrediction", "bp")
    assert bp["Status"] == "COMPLETED", bp.get("Message")
    keys = [o.key for o in service.storage.list("s3://out/nodir/")]
    assert keys == ["nodir/batch-prediction/bp.manifest", "nodir/batch-prediction/result/bp-one.csv.gz"]


def test_missing_input_fails_with_a_message_naming_it(service: Service) -> None:
    _create_all(service, "s3://in/absent.csv")
    ds = wait(service, "DataSource", "ds")
    assert ds["Status"] == "FAILED" and "s3://in/absent.csv" in ds["Message"]
    for kind, entity_id in (("MLModel", "ml"), ("Evaluation", "ev"), ("BatchPrediction", "bp")):
        out = wait(service, kind, entity_id)
        assert out["Status"] == "FAILED" and out["Message"], out
    with pytest.raises(Exception, match="no data insights"):  # FAILED: never computed
        service.get_data_insights("ds")
    with pytest.raises(Exception, match="no report"):
        service.get_evaluation_report("ev")


def test_rejected_rows_are_reported(service: Service) -> None:
    root = service.settings.resolved_storage_root() / "in"
    (root / "bad.csv").write_text("x,y\n1,0\n2,1,EXTRA\n3,1\n")
    service.create_data_source_from_s3(
        DataSourceId="ds-bad",
        ComputeStatistics=False,
        DataSpec={"DataLocationS3": "s3://in/bad.csv", "DataSchema": SCHEMA},
    )
    out = wait(service, "DataSource", "ds-bad")
    assert out["Status"] == "COMPLETED" and "1 record" in out.get("Message", ""), out
    assert "ComputeTime" not in out  # AML: only with ComputeStatistics
    insights = service.get_data_insights("ds-bad")
    assert insights["statistics_computed"] is False and insights["attributes"] == []
    assert insights["n_rows"] == 2 and insights["n_rejected"] == 1
