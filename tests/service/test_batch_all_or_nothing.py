"""A batch prediction's outputs appear whole or not at all (issue 8, row 6); crash leftovers are cleaned."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.layout import BATCH_WORK_PREFIX, entity_dir_name
from amlflow.service.standin import standin_engine
from amlflow.settings import Settings
from tests.service.support import wait

SCHEMA = (
    '{"version": "1.0", "targetAttributeName": "y", "dataFormat": "CSV", "dataFileContainsHeader": true,'
    ' "attributes": [{"attributeName": "x", "attributeType": "NUMERIC"},'
    ' {"attributeName": "y", "attributeType": "BINARY"}]}'
)


def _four_file_batch(tmp_path: Path, engine: Any) -> tuple[Any, Service, Path]:
    settings = Settings(home=tmp_path / "home", max_jobs=1)
    service = Service(settings, engine=engine)
    root = settings.resolved_storage_root()
    (root / "b" / "in").mkdir(parents=True)
    for i in range(4):
        (root / "b" / "in" / f"part{i}.csv").write_text(
            "x,y\n" + "".join(f"{j},{j % 2}\n" for j in range(30))
        )
    ml = build_client(service, settings)
    ml.create_data_source_from_s3(
        DataSourceId="ds",
        DataSpec={"DataLocationS3": "s3://b/in/", "DataSchema": SCHEMA},
        ComputeStatistics=True,
    )
    ml.create_ml_model(MLModelId="m", MLModelType="BINARY", TrainingDataSourceId="ds")
    return ml, service, root


def test_a_batch_failing_at_part_3_leaves_no_parts(tmp_path: Path) -> None:
    base = standin_engine()
    calls = {"n": 0}

    def failing_write(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated) while writing part 3")
        return base.write_batch_output(*args, **kwargs)

    ml, service, root = _four_file_batch(
        tmp_path, dataclasses.replace(base, write_batch_output=failing_write)
    )
    try:
        ml.create_batch_prediction(
            BatchPredictionId="bp", MLModelId="m", BatchPredictionDataSourceId="ds", OutputUri="s3://b/out/"
        )
        out = wait(service, "BatchPrediction", "bp", timeout=60)
        assert out["Status"] == "FAILED" and "disk full" in out["Message"]
        assert calls["n"] == 3
        left = sorted(
            p.relative_to(root) for p in (root / "b").rglob("*") if p.is_file() and "out" in p.parts
        )
        assert left == [], f"a FAILED batch left outputs: {left}"
        assert not list(service.home.glob(BATCH_WORK_PREFIX + "*")), "work folder left behind"
    finally:
        service.shutdown(timeout=60)


def test_a_batch_failing_while_publishing_part_3_removes_parts_1_and_2(tmp_path: Path) -> None:
    ml, service, root = _four_file_batch(tmp_path, standin_engine())
    real_write = service.storage.write_atomic
    published: list[str] = []

    def flaky_write(uri: str, data: Any) -> None:
        if "/result/" in uri and len(published) == 2:
            raise OSError("connection reset (simulated) while uploading part 3")
        real_write(uri, data)
        published.append(uri)

    service.storage.write_atomic = flaky_write  # type: ignore[method-assign]
    try:
        ml.create_batch_prediction(
            BatchPredictionId="bp", MLModelId="m", BatchPredictionDataSourceId="ds", OutputUri="s3://b/out/"
        )
        out = wait(service, "BatchPrediction", "bp", timeout=60)
        assert out["Status"] == "FAILED" and "connection reset" in out["Message"]
        assert len(published) == 2, "parts 1 and 2 were published before the failure"
        assert _outputs(root) == [], "parts of a FAILED batch stayed visible"
    finally:
        service.shutdown(timeout=60)


def _outputs(root: Path) -> list[Path]:
    out = root / "b" / "out"
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) if out.exists() else []


def test_a_complete_batch_has_every_part_and_its_manifest(tmp_path: Path) -> None:
    ml, service, root = _four_file_batch(tmp_path, standin_engine())
    try:
        ml.create_batch_prediction(
            BatchPredictionId="bp", MLModelId="m", BatchPredictionDataSourceId="ds", OutputUri="s3://b/out/"
        )
        assert wait(service, "BatchPrediction", "bp", timeout=60)["Status"] == "COMPLETED"
        out = root / "b" / "out" / "batch-prediction"
        parts = sorted(p.name for p in (out / "result").iterdir())
        assert parts == [f"bp-part{i}.csv.gz" for i in range(4)]
        assert (out / "bp.manifest").is_file()
    finally:
        service.shutdown(timeout=60)


def test_crash_leftovers_are_cleaned_at_start_up(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    home, root = settings.home, settings.resolved_storage_root()
    work = home / f"{BATCH_WORK_PREFIX}bp-x-1234"
    work.mkdir(parents=True)
    (work / "part-0.gz").write_bytes(b"half")
    ds_dir = home / "datasources" / entity_dir_name("DataSource", "ds")
    (ds_dir / ".table.tmp-0123456789ab").mkdir(parents=True)
    (ds_dir / "insights.json").write_text("{}")
    (root / "b" / "out").mkdir(parents=True)
    (root / "b" / "out" / ".amlflow-tmp-abc").write_bytes(b"half an object")
    (root / "b" / "out" / "kept.csv").write_bytes(b"a finished object")
    # a Dask part that landed after its job had failed and cleaned up, and a local copy of one
    (ds_dir / "parts" / "0123abcd" / "000003").mkdir(parents=True)
    (ds_dir / "parts" / "0123abcd" / "000003" / "codes.bin").write_bytes(b"a stray part")
    (ds_dir / ".parts-0123abcd" / "000001").mkdir(parents=True)
    (ds_dir / "table").mkdir()
    (ds_dir / "table" / "meta.json").write_text("{}")
    # a data-parallel fit's work folder (learner states, the shards' chunk features) of a killed service
    ml_dir = home / "models" / entity_dir_name("MLModel", "ml")
    (ml_dir / ".shards.tmp-0123456789ab" / "shard-0").mkdir(parents=True)
    (ml_dir / ".shards.tmp-0123456789ab" / "state.npz").write_bytes(b"half a state")
    service = Service(settings)
    try:
        assert not (ml_dir / ".shards.tmp-0123456789ab").exists()
        assert not (ds_dir / "parts").exists() and not (ds_dir / ".parts-0123abcd").exists()
        assert (ds_dir / "table" / "meta.json").read_text() == "{}"  # a finished table stays
        assert not work.exists()
        assert not (ds_dir / ".table.tmp-0123456789ab").exists()
        assert not (root / "b" / "out" / ".amlflow-tmp-abc").exists()
        assert (ds_dir / "insights.json").read_text() == "{}"
        assert (root / "b" / "out" / "kept.csv").read_bytes() == b"a finished object"
    finally:
        service.shutdown(timeout=60)
