"""The datasource job on a Dask cluster (``AMLFLOW_DASK_DATASOURCE``, issue 10): a 2-worker ``LocalCluster``
of processes whose only store shared with the service is moto's S3, encoding a multi-file datasource by file
and byte range. The table's files and the insights must be the in-process job's, byte for byte; a failure
must carry the in-process message."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from amlflow.service import dask_datasource
from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from tests.server.aml_data import DATA
from tests.service.dask_support import local_cluster, mnist_s3, s3_settings
from tests.service.support import wait_for

REPO = Path(__file__).resolve().parents[2]
TABLE_FILES = ("codes.bin", "dictionaries.json", "meta.json")
#: ranges of 768 KiB: the sample's two plain files (5.5 and 3.7 MB) make 7 and 5 parts; the gzipped
#: sample (1.06 MB) is over it, so it is recognised as gzip and read whole: 13 parts
RANGE = 768 << 10


def _inputs() -> dict[str, bytes]:
    """The sample's 5,000 training rows in two plain files (CRLF in the second, two malformed rows in the
    first), and the whole sample gzipped as a third file (read whole: gzip cannot be split)."""
    text = gzip.decompress((DATA / "mnist-sample" / "train.csv.gz").read_bytes())
    lines = text.splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    first = rows[:3000]
    first.insert(1234, b"1,2,3\n")  # 3 fields where the schema has 785: rejected
    first.insert(2500, b'7,"unterminated\n')
    second = [r.replace(b"\n", b"\r\n") for r in rows[3000:]]
    return {
        "mnist/multi/part-1.csv": header + b"".join(first),
        "mnist/multi/part-2.csv": header + b"".join(second),
        "mnist/multi/part-3.csv.gz": gzip.compress(text),
        "mnist/bad/a.csv": header + b"".join(rows[:1000]),
        "mnist/bad/b.csv.gz": gzip.compress(text)[:5000] + b"\xff" * 64,
    }


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with mnist_s3(monkeypatch, _inputs()) as url:
        yield url


@pytest.fixture
def cluster(moto_s3: str) -> Iterator[Any]:
    with local_cluster() as c:
        yield c


DATASOURCES = {  # id: (rearrangement, ComputeStatistics)
    "ds-seq": ({"splitting": {"percentBegin": 0, "percentEnd": 70}}, True),
    "ds-rnd": (
        {
            "splitting": {
                "percentBegin": 20,
                "percentEnd": 90,
                "strategy": "random",
                "strategyParams": {"randomSeed": "k"},
            }
        },
        True,
    ),
}


def _run(service: Service, location: str, ids: dict[str, tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    ml = build_client(service, service.settings)
    schema_text = (REPO / "schemas" / "mnist-train.csv.schema").read_text()
    for ds_id, (split, stats) in ids.items():
        ml.create_data_source_from_s3(
            DataSourceId=ds_id,
            DataSpec={
                "DataLocationS3": location,
                "DataSchema": schema_text,
                "DataRearrangement": json.dumps(split),
            },
            ComputeStatistics=stats,
        )
    return {ds_id: wait_for(lambda i=ds_id: ml.get_data_source(DataSourceId=i), timeout=120) for ds_id in ids}


def _outputs(service: Service, ds_id: str) -> dict[str, bytes]:
    folder = service._paths("DataSource", ds_id)
    out = {name: (folder / "table" / name).read_bytes() for name in TABLE_FILES}
    out["insights.json"] = (folder / "insights.json").read_bytes()
    return out


def test_a_multi_file_datasource_on_the_cluster_is_the_in_process_one(
    cluster: Any, moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_datasource, "RANGE_BYTES", RANGE)
    sizes = {k: len(v) for k, v in _inputs().items() if k.startswith("mnist/multi/")}
    assert sizes["mnist/multi/part-3.csv.gz"] > RANGE
    n_parts = 1 + sum(-(-n // RANGE) for k, n in sizes.items() if k.endswith(".csv"))
    assert n_parts == 13
    location = "s3://data/mnist/multi/"

    local = Service(s3_settings(tmp_path / "local", tmp_path / "local.db"))
    try:
        done = _run(local, location, DATASOURCES)
        expected = {ds_id: _outputs(local, ds_id) for ds_id in DATASOURCES}
    finally:
        local.shutdown(timeout=30)
    assert all(d["Status"] == "COMPLETED" for d in done.values()), done

    service = Service(
        s3_settings(
            tmp_path / "dask",
            tmp_path / "dask.db",
            dask_address=cluster.scheduler_address,
            dask_datasource="always",
        )
    )
    try:
        got = _run(service, location, DATASOURCES)
        outputs = {ds_id: _outputs(service, ds_id) for ds_id in DATASOURCES}
        logs = {ds_id: service.jobs.log_path("DataSource", ds_id).read_text() for ds_id in DATASOURCES}
    finally:
        service.shutdown(timeout=30)
    assert all(d["Status"] == "COMPLETED" for d in got.values()), got
    for ds_id in DATASOURCES:
        log = logs[ds_id]
        assert "encoding on the Dask cluster at tcp://" in log, log
        assert (
            "3 file(s)" in log and f"in {n_parts} part(s)" in log and "(1 gzip file(s) read whole)" in log
        ), log
        assert "read on 1 host(s)" in log, log
        for name, data in expected[ds_id].items():
            assert outputs[ds_id][name] == data, f"{ds_id}: {name} differs from the in-process job's"
        for key in ("NumberOfFiles", "DataSizeInBytes", "Message"):
            assert got[ds_id].get(key) == done[ds_id].get(key), key
    insights = json.loads(expected["ds-seq"]["insights.json"])
    assert insights["statistics_computed"] and len(insights["attributes"]) == 784  # the target apart
    assert [s["line"] for s in insights["rejected_samples"]] == [1236, 2502]

    # the parts are gone from the artifact root (and no local copy is published with the datasource)
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts").get("Contents", [])]
    assert keys and not [k for k in keys if "/parts/" in k or "/.parts-" in k], keys


def test_a_bad_gzip_fails_with_the_in_process_message(
    cluster: Any, moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_datasource, "RANGE_BYTES", 256 << 10)
    location = "s3://data/mnist/bad/"
    split = {"bad": ({"splitting": {"percentBegin": 0, "percentEnd": 100}}, False)}
    local = Service(s3_settings(tmp_path / "local", tmp_path / "local.db"))
    try:
        (failed_local,) = _run(local, location, split).values()
    finally:
        local.shutdown(timeout=30)
    service = Service(
        s3_settings(
            tmp_path / "dask",
            tmp_path / "dask.db",
            dask_address=cluster.scheduler_address,
            dask_datasource="always",
        )
    )
    try:
        (failed,) = _run(service, location, split).values()
        log = service.jobs.log_path("DataSource", "bad").read_text()
    finally:
        service.shutdown(timeout=30)
    assert failed_local["Status"] == failed["Status"] == "FAILED"
    assert "b.csv.gz: not a valid gzip file" in failed_local["Message"], failed_local
    assert failed["Message"] == failed_local["Message"]
    assert "encoding on the Dask cluster at tcp://" in log, log


def test_auto_keeps_a_small_input_in_process_and_says_why(tmp_path: Path) -> None:
    """``auto`` under AUTO_MIN_BYTES and ``never`` return None before any cluster is needed (the address is
    not even reachable), and the log gives the reason."""
    from amlflow.engine.rearrange import Rearrangement
    from amlflow.engine.schema import parse_schema
    from amlflow.service.artifacts import Artifacts
    from amlflow.storage import LocalStorage

    storage = LocalStorage(tmp_path / "s3")
    storage.write_atomic("s3://data/a.csv", b"x\n1\n2\n")
    objects = storage.list("s3://data/a.csv")
    schema = parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": True,
                "attributes": [{"attributeName": "x", "attributeType": "NUMERIC"}],
            }
        )
    )
    lines: list[str] = []
    for when in ("auto", "never"):
        got = dask_datasource.build_on_dask(
            "tcp://127.0.0.1:9",
            Artifacts(tmp_path / "home", None, None),
            storage,
            datasource_id="ds",
            objects=objects,
            schema=schema,
            rearrangement=Rearrangement(),
            out_dir=tmp_path / "t",
            when=when,
            log=lines.append,
        )
        assert got is None
    assert lines == [
        "encoding on Dask: no (AMLFLOW_DASK_DATASOURCE=auto and the input's 6 bytes are under "
        f"{dask_datasource.AUTO_MIN_BYTES:,})"
    ]
    assert not (tmp_path / "t").exists()


def test_plan_parts_cuts_big_plain_files_only() -> None:
    from amlflow.storage import ObjectInfo

    objects = [
        ObjectInfo("s3://d/a", "a", 10),
        ObjectInfo("s3://d/b", "b", 25),
        ObjectInfo("s3://d/c", "c", 99),
    ]
    plan = dask_datasource.plan_parts(objects, [False, False, True], range_bytes=10)
    assert plan == [(0, 0, None), (1, 0, 8), (1, 8, 16), (1, 16, 25), (2, 0, None)]


def test_read_range_writes_its_part_under_the_datasource_and_reports_failures_as_data(tmp_path: Path) -> None:
    """The worker function itself (called here, as a worker would): its part lands in the artifact root
    under the datasource's folder; a missing object and a bad gzip come back as the in-process errors."""
    from amlflow.engine.dataset import Source, build_dataset
    from amlflow.engine.errors import DataError
    from amlflow.engine.schema import parse_schema
    from amlflow.storage import LocalStorage

    storage = LocalStorage(tmp_path / "s3")
    data = b"x,y\n" + b"".join(b"%d,v%d\n" % (i, i % 3) for i in range(100))
    storage.write_atomic("s3://data/a.csv", data)
    storage.write_atomic("s3://data/b.gz", gzip.compress(data)[:40] + b"\xff" * 40)
    schema = parse_schema(
        json.dumps(
            {
                "dataFileContainsHeader": True,
                "attributes": [{"attributeName": n, "attributeType": "CATEGORICAL"} for n in "xy"],
            }
        )
    )
    root = str(tmp_path / "artifacts")
    common = (schema.to_json(), json.dumps({"splitting": {"percentBegin": 0, "percentEnd": 100}}))

    def call(uri: str, key: str, size: int, lo: int, hi: int | None) -> dict[str, Any]:
        return dask_datasource.read_range(
            root, str(storage.root), "ds-1", "tok", 3, uri, key, size, lo, hi, *common, size, 0
        )

    got = call("s3://data/a.csv", "a.csv", len(data), 10, 200)
    assert "error" not in got and got["index"] == 3
    part = Path(dask_datasource._parts_prefix(root, "ds-1", "tok")) / "000003"
    meta = json.loads((part / "meta.json").read_text())
    assert part.is_relative_to(tmp_path / "artifacts" / "datasources")
    first = data.index(b"\n", 9) + 1  # the first line starting at or after byte 10
    assert meta["info"]["part"]["start"] == first and meta["n_rows"] == got["rows"] > 0

    missing = call("s3://data/gone.csv", "gone.csv", 10, 0, None)
    with pytest.raises(FileNotFoundError) as exc:
        dask_datasource._raise_part_error(missing)
    with pytest.raises(FileNotFoundError) as local_exc:
        storage.open_read("s3://data/gone.csv")
    assert str(exc.value) == str(local_exc.value)

    bad_size = storage.list("s3://data/b.gz")[0].size
    bad = call("s3://data/b.gz", "b.gz", bad_size, 0, None)
    with pytest.raises(DataError) as exc_bad:
        dask_datasource._raise_part_error(bad)
    with pytest.raises(DataError) as in_process:
        build_dataset(
            [Source("b.gz", bad_size, lambda: storage.open_read("s3://data/b.gz"))],
            schema,
            None,
            tmp_path / "t",
        )
    assert str(exc_bad.value) == str(in_process.value)


def _one_part_call(root: str, storage_spec: str, token: str) -> dict[str, Any]:
    """read_range as a worker runs it, on the sample's training file (gzip: one part, read whole)."""
    schema_text = (REPO / "schemas" / "mnist-train.csv.schema").read_text()
    from amlflow.engine.schema import parse_schema

    size = len((DATA / "mnist-sample" / "train.csv.gz").read_bytes())
    return dask_datasource.read_range(
        root,
        storage_spec,
        "ds-late",
        token,
        0,
        "s3://data/mnist/train.csv.gz",
        "mnist/train.csv.gz",
        size,
        0,
        None,
        parse_schema(schema_text).to_json(),
        json.dumps({"splitting": {"percentBegin": 0, "percentEnd": 100}}),
        size,
        0,
    )


def test_a_part_finished_after_its_job_failed_is_dropped_local_root(tmp_path: Path) -> None:
    """A task still running when its job fails (Dask cancels it, but it runs to its end) must not leave
    its part in the artifact root: the failed job's marker tells it to drop it."""
    from amlflow.service.artifacts import Artifacts
    from amlflow.storage import LocalStorage

    storage = LocalStorage(tmp_path / "s3")
    storage.write_atomic(
        "s3://data/mnist/train.csv.gz", (DATA / "mnist-sample" / "train.csv.gz").read_bytes()
    )
    root = str(tmp_path / "artifacts")
    prefix = Path(dask_datasource._parts_prefix(root, "ds-late", "tok"))
    assert "error" not in _one_part_call(root, str(storage.root), "ok-job")  # a live job's part lands
    assert (Path(dask_datasource._parts_prefix(root, "ds-late", "ok-job")) / "000000" / "meta.json").is_file()

    dask_datasource._mark_cancelled(Artifacts(Path(root), root, None), root, "ds-late", "tok")
    got = _one_part_call(root, str(storage.root), "tok")
    assert got == {"index": 0, "cancelled": True}
    assert not prefix.exists() or not any(prefix.rglob("*")), list(prefix.rglob("*"))


def test_a_part_uploaded_across_the_clean_up_is_deleted_s3_root(
    moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an s3:// artifact root, the marker may appear while the task uploads (the service failed the
    job meanwhile): the task checks again after its upload and deletes what it wrote."""
    from amlflow.service.artifacts import Artifacts
    from amlflow.storage import S3Storage

    root = "s3://artifacts/x/"
    arts = Artifacts(tmp_path / "cache", root, S3Storage())
    real = S3Storage.write_atomic
    calls: list[str] = []

    def upload_then_fail_the_job(self: S3Storage, uri: str, data: Any) -> None:
        real(self, uri, data)
        calls.append(uri)
        if len(calls) == 1 and "/parts/tok/" in uri:  # the job fails while the part is uploading
            dask_datasource._mark_cancelled(arts, root, "ds-late", "tok")

    monkeypatch.setattr(S3Storage, "write_atomic", upload_then_fail_the_job)
    got = _one_part_call(root, "s3", "tok")
    assert got == {"index": 0, "cancelled": True}
    assert len([c for c in calls if "/parts/tok/" in c]) == len(TABLE_FILES)  # it had uploaded them all
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    mine = f"x/{dask_datasource._relative('ds-late')}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts", Prefix=mine).get("Contents", [])]
    assert keys == [f"{mine}parts/tok.cancelled"], keys


def test_a_column_without_a_dictionary_on_the_cluster_is_the_in_process_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """80,000 distinct floats in two files cut into 7 ranges of 256 KiB: every part keeps a dictionary (at
    most ~11,000 values), the merge stores the column as values, as the in-process job reading it whole
    does; the same bytes and insights."""
    import numpy as np

    from amlflow.engine.table import EncodedTable

    monkeypatch.setattr(dask_datasource, "RANGE_BYTES", 256 << 10)
    rng = np.random.default_rng(3)
    x = rng.normal(size=80_000)
    rows = [f"{v!r},{int(v + rng.normal() > 0)}\n".encode() for v in x.tolist()]
    files = {
        "wide/a.csv": b"x,y\n" + b"".join(rows[:45_000]),
        "wide/b.csv": b"x,y\n" + b"".join(rows[45_000:]),
    }
    schema = json.dumps(
        {
            "dataFileContainsHeader": True,
            "targetAttributeName": "y",
            "attributes": [
                {"attributeName": "x", "attributeType": "NUMERIC"},
                {"attributeName": "y", "attributeType": "BINARY"},
            ],
        }
    )

    def run(service: Service) -> tuple[dict[str, Any], dict[str, bytes], str]:
        ml = build_client(service, service.settings)
        ml.create_data_source_from_s3(
            DataSourceId="ds-wide",
            DataSpec={"DataLocationS3": "s3://data/wide/", "DataSchema": schema},
            ComputeStatistics=True,
        )
        done = wait_for(lambda: ml.get_data_source(DataSourceId="ds-wide"), timeout=120)
        return done, _outputs(service, "ds-wide"), service.jobs.log_path("DataSource", "ds-wide").read_text()

    with mnist_s3(monkeypatch, files), local_cluster() as cluster:
        local = Service(s3_settings(tmp_path / "local", tmp_path / "local.db"))
        try:
            done, expected, _ = run(local)
            assert EncodedTable.open(local._paths("DataSource", "ds-wide") / "table").kind("x") == "values"
        finally:
            local.shutdown(timeout=30)
        service = Service(
            s3_settings(
                tmp_path / "dask",
                tmp_path / "dask.db",
                dask_address=cluster.scheduler_address,
                dask_datasource="always",
            )
        )
        try:
            got, outputs, log = run(service)
        finally:
            service.shutdown(timeout=30)
    assert done["Status"] == got["Status"] == "COMPLETED", (done, got)
    assert "encoding on the Dask cluster at tcp://" in log and "in 7 part(s)" in log, log
    for name, data in expected.items():
        assert outputs[name] == data, f"{name} differs from the in-process job's"
