"""Evaluation and batch prediction on a Dask cluster (``AMLFLOW_DASK_ADDRESS``, issue 10): a 2-worker
``LocalCluster`` of processes whose only store shared with the service is moto's S3 (the artifact root
``s3://artifacts/x/``), on the repository's MNIST sample. The Dask run must give the in-process run's
batch output byte for byte and its evaluation."""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from amlflow.service import batch as batch_jobs
from amlflow.service import distributed as dask_jobs
from amlflow.service.core import Service
from amlflow.service.embedded import build_client
from amlflow.service.jobs import JobFailed
from tests.server.aml_data import DATA
from tests.service.dask_support import MNIST_PARAMETERS, local_cluster, mnist_s3, s3_settings
from tests.service.support import wait_for

REPO = Path(__file__).resolve().parents[2]
#: the batch input: the sample's 1,000 test rows in two files, with malformed rows (AML writes an empty
#: line for each) at positions 199 and 300 of the first file, on either side of a partition boundary
FIRST_FILE_ROWS = 600
BAD_POSITIONS = (199, 300)
#: a memory budget a quarter of which is below the exact scores of the sample's 300 evaluation rows
#: (MNIST: 8 B x 13 x 3 = 312 B a row) and of wine's 480: the evaluations take the bounded path
BOUNDED_BUDGET = 64 * 1024


def _batch_files() -> tuple[bytes, bytes]:
    lines = gzip.decompress((DATA / "mnist-sample" / "test.csv.gz").read_bytes()).splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    first = rows[:FIRST_FILE_ROWS]
    for position in BAD_POSITIONS:
        first.insert(position, b"1,2,3\n")  # 3 fields where the schema has 784: rejected
    return header + b"".join(first), header + b"".join(rows[FIRST_FILE_ROWS:])


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 with the sample's training file and the batch input in two files."""
    first, second = _batch_files()
    with mnist_s3(monkeypatch, {"mnist/batch/part-1.csv": first, "mnist/batch/part-2.csv": second}) as url:
        yield url


@pytest.fixture
def cluster(moto_s3: str) -> Iterator[Any]:
    """A 2-worker LocalCluster of processes, started after the S3 environment."""
    with local_cluster() as c:
        yield c


_settings = s3_settings


def _objects(s3: Any, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket="data", Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: s3.get_object(Bucket="data", Key=o["Key"])["Body"].read() for o in listed
    }


def _members(gz: bytes) -> int:
    """How many gzip members ``gz`` holds (a reader that stops after the first would lose the rest)."""
    count = 0
    while gz:
        d = zlib.decompressobj(31)
        d.decompress(gz)
        assert d.eof, "a truncated gzip member"
        gz, count = d.unused_data, count + 1
    return count


def test_dask_batch_and_evaluation_match_in_process(
    cluster: Any, moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # partitions of exactly 100 positions: 7 + 4 in the batch's two files, one per 100 rows in the
    # evaluation; batch blocks of 100 rows too (in both runs: the block size is the data's, not the cluster's)
    monkeypatch.setattr(dask_jobs, "MIN_PARTITION_ROWS", 100)
    monkeypatch.setattr(dask_jobs, "MAX_PARTITION_ROWS", 100)
    monkeypatch.setattr(batch_jobs, "MIN_BLOCK_ROWS", 100)
    monkeypatch.setattr(batch_jobs, "MAX_BLOCK_ROWS", 100)
    db = tmp_path / "state.db"
    train_schema = (REPO / "schemas" / "mnist-train.csv.schema").read_text()
    test_schema = (REPO / "schemas" / "mnist-test.csv.schema").read_text()

    # 1. in-process: datasources, the model, the reference evaluation and batch prediction
    local = Service(_settings(tmp_path / "local", db))
    ml = build_client(local, local.settings)
    try:
        for ds_id, location, schema, split in (
            ("ds-train", "s3://data/mnist/train.csv.gz", train_schema, (0, 70)),
            ("ds-eval", "s3://data/mnist/train.csv.gz", train_schema, (70, 100)),
            ("ds-batch", "s3://data/mnist/batch/", test_schema, None),
        ):
            spec = {"DataLocationS3": location, "DataSchema": schema}
            if split:
                spec["DataRearrangement"] = json.dumps(
                    {"splitting": {"percentBegin": split[0], "percentEnd": split[1]}}
                )
            ml.create_data_source_from_s3(
                DataSourceId=ds_id, DataSpec=spec, ComputeStatistics=ds_id == "ds-train"
            )
        ml.create_ml_model(
            MLModelId="ml",
            MLModelType="MULTICLASS",
            TrainingDataSourceId="ds-train",
            Recipe=(REPO / "recipes" / "mnist.recipe.json").read_text(),
            Parameters=MNIST_PARAMETERS,
        )
        ml.create_evaluation(EvaluationId="ev-local", MLModelId="ml", EvaluationDataSourceId="ds-eval")
        ml.create_batch_prediction(
            BatchPredictionId="bp-local",
            MLModelId="ml",
            BatchPredictionDataSourceId="ds-batch",
            OutputUri="s3://data/out-local/",
        )
        ev_local = wait_for(lambda: ml.get_evaluation(EvaluationId="ev-local"), timeout=120)
        bp_local = wait_for(lambda: ml.get_batch_prediction(BatchPredictionId="bp-local"), timeout=120)
        assert ev_local["Status"] == "COMPLETED" and bp_local["Status"] == "COMPLETED", (ev_local, bp_local)
        report_local = local.get_evaluation_report("ev-local")
        eval_rows = int(local.get_data_insights("ds-eval")["n_rows"])
    finally:
        local.shutdown(timeout=30)

    # 2. another process's view (its own home, no files of the first): the same work on the cluster
    service = Service(_settings(tmp_path / "dask", db, dask_address=cluster.scheduler_address))
    ml = build_client(service, service.settings)
    try:
        ml.create_evaluation(EvaluationId="ev-dask", MLModelId="ml", EvaluationDataSourceId="ds-eval")
        ml.create_batch_prediction(
            BatchPredictionId="bp-dask",
            MLModelId="ml",
            BatchPredictionDataSourceId="ds-batch",
            OutputUri="s3://data/out-dask/",
        )
        ev = wait_for(lambda: ml.get_evaluation(EvaluationId="ev-dask"), timeout=120)
        bp = wait_for(lambda: ml.get_batch_prediction(BatchPredictionId="bp-dask"), timeout=120)
        assert ev["Status"] == "COMPLETED" and bp["Status"] == "COMPLETED", (ev, bp)
        logs = {
            k: service.jobs.log_path(k, i).read_text()
            for k, i in (("Evaluation", "ev-dask"), ("BatchPrediction", "bp-dask"))
        }
        report = service.get_evaluation_report("ev-dask")
    finally:
        service.shutdown(timeout=30)
    assert "scoring on the Dask cluster at tcp://" in logs["BatchPrediction"], logs["BatchPrediction"]
    assert "11 partition(s)" in logs["BatchPrediction"], logs["BatchPrediction"]
    assert "compressed there in blocks of 100 rows" in logs["BatchPrediction"], logs["BatchPrediction"]
    assert f"{-(-eval_rows // 100)} partition(s)" in logs["Evaluation"], logs["Evaluation"]

    # evaluation: the in-process metric and report (the scores are the same numbers)
    local_f1 = float(ev_local["PerformanceMetrics"]["Properties"]["MulticlassAvgFScore"])
    dask_f1 = float(ev["PerformanceMetrics"]["Properties"]["MulticlassAvgFScore"])
    assert abs(dask_f1 - local_f1) <= 0.002 and local_f1 > 0.8, (local_f1, dask_f1)
    assert ev["PerformanceMetrics"] == ev_local["PerformanceMetrics"]
    assert report == report_local

    # batch: same counts, same files (the same gzip bytes), same manifest
    assert (bp["TotalRecordCount"], bp["InvalidRecordCount"]) == (1002, 2), bp
    assert (bp_local["TotalRecordCount"], bp_local["InvalidRecordCount"]) == (1002, 2), bp_local
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    local_files = _objects(s3, "out-local/batch-prediction/")
    dask_files = _objects(s3, "out-dask/batch-prediction/")
    assert sorted(local_files) == [
        "bp-local.manifest",
        "result/bp-local-part-1.csv.gz",
        "result/bp-local-part-2.csv.gz",
    ]
    assert sorted(dask_files) == [k.replace("bp-local", "bp-dask") for k in sorted(local_files)]
    for part in ("part-1.csv", "part-2.csv"):
        mine, theirs = dask_files[f"result/bp-dask-{part}.gz"], local_files[f"result/bp-local-{part}.gz"]
        assert gzip.decompress(mine) == gzip.decompress(theirs), part
        assert mine == theirs, part
        assert _members(mine) == 1, part  # one member: its CRC-32 and length cover the whole file
    # the first file: 7 blocks of 100 positions, each ending in a sync flush's empty stored block
    assert dask_files["result/bp-dask-part-1.csv.gz"].count(b"\x00\x00\xff\xff") >= 7
    lines = gzip.decompress(dask_files["result/bp-dask-part-1.csv.gz"]).decode().split("\n")
    assert lines[0] == ",".join(str(d) for d in range(10))
    assert [i - 1 for i, line in enumerate(lines[1:-1], 1) if not line] == list(BAD_POSITIONS)
    manifest = json.loads(dask_files["bp-dask.manifest"])
    expected = {
        k: v.replace("out-local/", "out-dask/").replace("/bp-local-", "/bp-dask-")
        for k, v in json.loads(local_files["bp-local.manifest"]).items()
    }
    assert manifest == expected and len(manifest) == 2, manifest

    # 3. bounded memory (a budget a quarter of which the 300 rows' exact scores exceed): the in-process
    # bounded evaluation, then the workers' confusion counts merged by the service: the same report
    bounded = {}
    for name, address in (("bounded-local", None), ("bounded-dask", cluster.scheduler_address)):
        svc = Service(_settings(tmp_path / name, db, dask_address=address, memory_limit=BOUNDED_BUDGET))
        ml = build_client(svc, svc.settings)
        try:
            ml.create_evaluation(EvaluationId=f"ev-{name}", MLModelId="ml", EvaluationDataSourceId="ds-eval")
            got = wait_for(lambda: ml.get_evaluation(EvaluationId=f"ev-{name}"), timeout=120)  # noqa: B023
            assert got["Status"] == "COMPLETED", got
            log = svc.jobs.log_path("Evaluation", f"ev-{name}").read_text()
            bounded[name] = (got["PerformanceMetrics"], svc.get_evaluation_report(f"ev-{name}"), log)
        finally:
            svc.shutdown(timeout=30)
    (m_local, r_local, log_local), (m_dask, r_dask, log_dask) = (
        bounded["bounded-local"],
        bounded["bounded-dask"],
    )
    assert "evaluation mode: bounded (" in log_local and "evaluation mode: bounded (" in log_dask, log_dask
    assert "evaluation accumulators on the Dask cluster at tcp://" in log_dask, log_dask
    assert f"{-(-eval_rows // 100)} partition(s)" in log_dask, log_dask
    assert "scoring on the Dask cluster" not in log_dask, log_dask  # no score left the workers
    assert r_dask["evaluation_mode"] == r_local["evaluation_mode"] == "bounded"
    assert m_dask == m_local == ev_local["PerformanceMetrics"]  # MULTICLASS: exact in every mode
    assert r_dask == r_local
    assert {k: v for k, v in r_dask.items() if k != "evaluation_mode"} == {
        k: v for k, v in report_local.items() if k != "evaluation_mode"
    }
    assert "evaluation mode: exact (" in logs["Evaluation"], logs["Evaluation"]

    # the workers read the model and the tables from S3 into their own caches, not the service's homes
    from distributed import Client

    with Client(cluster.scheduler_address, set_as_default=False) as client:
        caches = client.run(_worker_cache)
    fetched = [c for c in caches.values() if c is not None]
    assert fetched, caches
    for home, folders in fetched:
        assert not home.startswith(str(tmp_path)), home
        assert set(folders) <= {"models", "datasources"} and "datasources" in folders, folders


def _wine_files() -> dict[str, bytes]:
    """Red wine for a REGRESSION model (``quality``) and a BINARY one (``good``: quality >= 7)."""
    text = (REPO / "data" / "wine" / "winequality-red-comma.csv").read_text()
    header, *rows = text.splitlines()
    binary = [header.replace(',"quality"', ',"good"')] + [
        f"{r.rsplit(',', 1)[0]},{int(int(r.rsplit(',', 1)[1]) >= 7)}" for r in rows if r
    ]
    return {"wine/regression.csv": text.encode(), "wine/binary.csv": ("\n".join(binary) + "\n").encode()}


def test_dask_bounded_evaluation_binary_and_regression(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BINARY's logit bins (sent as their nonzero entries) and REGRESSION's two rounds merged from the
    workers' partitions: the in-process bounded report, the AUC within the bins' bound of the exact one."""
    monkeypatch.setattr(dask_jobs, "MIN_PARTITION_ROWS", 100)
    monkeypatch.setattr(dask_jobs, "MAX_PARTITION_ROWS", 100)
    db = tmp_path / "state.db"
    cases = {"BINARY": "wine-binary.csv.schema", "REGRESSION": "wine-regression.csv.schema"}
    with mnist_s3(monkeypatch, _wine_files()), local_cluster() as cluster:
        local = Service(_settings(tmp_path / "local", db))
        ml = build_client(local, local.settings)
        try:
            for mt, schema_file in cases.items():
                schema = (REPO / "schemas" / schema_file).read_text()
                location = f"s3://data/wine/{mt.lower()}.csv"
                for ds_id, split in ((f"tr-{mt}", (0, 70)), (f"ev-{mt}", (70, 100))):
                    ml.create_data_source_from_s3(
                        DataSourceId=ds_id,
                        DataSpec={
                            "DataLocationS3": location,
                            "DataSchema": schema,
                            "DataRearrangement": json.dumps(
                                {"splitting": {"percentBegin": split[0], "percentEnd": split[1]}}
                            ),
                        },
                        ComputeStatistics=ds_id.startswith("tr-"),
                    )
                ml.create_ml_model(
                    MLModelId=f"ml-{mt}",
                    MLModelType=mt,
                    TrainingDataSourceId=f"tr-{mt}",
                    Recipe=(REPO / "recipes" / "wine.recipe.json").read_text(),
                    Parameters={"sgd.maxPasses": "5"},
                )
                ml.create_evaluation(
                    EvaluationId=f"exact-{mt}", MLModelId=f"ml-{mt}", EvaluationDataSourceId=f"ev-{mt}"
                )
            exact = {}
            for mt in cases:
                got = wait_for(lambda: ml.get_evaluation(EvaluationId=f"exact-{mt}"), timeout=120)  # noqa: B023
                assert got["Status"] == "COMPLETED", got
                exact[mt] = (
                    got["PerformanceMetrics"]["Properties"],
                    local.get_evaluation_report(f"exact-{mt}"),
                )
        finally:
            local.shutdown(timeout=30)

        runs: dict[str, dict[str, Any]] = {}
        for name, address in (("local", None), ("dask", cluster.scheduler_address)):
            svc = Service(_settings(tmp_path / name, db, dask_address=address, memory_limit=BOUNDED_BUDGET))
            ml = build_client(svc, svc.settings)
            try:
                for mt in cases:
                    ml.create_evaluation(
                        EvaluationId=f"{name}-{mt}", MLModelId=f"ml-{mt}", EvaluationDataSourceId=f"ev-{mt}"
                    )
                for mt in cases:
                    got = wait_for(lambda: ml.get_evaluation(EvaluationId=f"{name}-{mt}"), timeout=120)  # noqa: B023
                    assert got["Status"] == "COMPLETED", got
                    runs.setdefault(name, {})[mt] = (
                        got["PerformanceMetrics"]["Properties"],
                        svc.get_evaluation_report(f"{name}-{mt}"),
                        svc.jobs.log_path("Evaluation", f"{name}-{mt}").read_text(),
                    )
            finally:
                svc.shutdown(timeout=30)

    # BINARY: every count merged from integers, so the in-process bounded report; AUC within the bins
    (p_local, r_local, _), (p_dask, r_dask, log) = runs["local"]["BINARY"], runs["dask"]["BINARY"]
    assert "evaluation mode: bounded (" in log and "evaluation accumulators on the Dask cluster" in log, log
    assert r_dask["evaluation_mode"] == "bounded" and r_dask == r_local
    assert p_dask == p_local
    p_exact, r_exact = exact["BINARY"]
    assert r_exact["evaluation_mode"] == "exact"
    assert abs(float(p_dask["BinaryAUC"]) - float(p_exact["BinaryAUC"])) < 1e-4, (p_dask, p_exact)
    for key in ("confusion_matrix", "threshold_table", "score_histogram", "target_distribution"):
        assert r_dask[key] == r_exact[key], key

    # REGRESSION: two rounds (the second on the merged extremes); the same histograms, the RMSE to 1e-12
    (p_local, r_local, _), (p_dask, r_dask, log) = runs["local"]["REGRESSION"], runs["dask"]["REGRESSION"]
    assert "(pass 1) on the Dask cluster" in log and "(pass 2) on the Dask cluster" in log, log
    assert r_dask["evaluation_mode"] == "bounded"
    assert float(p_dask["RegressionRMSE"]) == pytest.approx(float(p_local["RegressionRMSE"]), rel=1e-12)
    for key in ("residual_histogram", "score_histogram"):
        assert r_dask[key]["counts"] == r_local[key]["counts"], key
        assert r_dask[key]["edges"] == pytest.approx(r_local[key]["edges"], rel=1e-12), key
    assert r_dask["target_distribution"] == r_local["target_distribution"]


def _worker_cache() -> tuple[str, list[str]] | None:
    """On a worker: its cache home and the folders fetched into it (None if it never fetched)."""
    from amlflow.service import distributed as on_worker

    home = on_worker._worker_home
    if home is None:
        return None
    return str(home), sorted(p.name for p in home.iterdir() if p.is_dir())


def test_without_the_extra_the_error_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if amlflow[dask] were not installed
    with pytest.raises(JobFailed) as info:
        dask_jobs.client_for("tcp://127.0.0.1:8786")
    assert "AMLFLOW_DASK_ADDRESS" in str(info.value) and "amlflow[dask]" in str(info.value)


def test_an_unreachable_scheduler_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(dask_jobs, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(JobFailed) as info:
        dask_jobs.client_for(f"tcp://127.0.0.1:{port}")
    assert f"AMLFLOW_DASK_ADDRESS: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in str(
        info.value
    )


def _check_plan(plan: list[list[tuple[int, int]]], spans: list[tuple[int, int]], block: int) -> int:
    """Every span covered in order by partitions of one size that start on its blocks; the size."""
    sizes = set()
    for (first, stop), parts in zip(spans, plan, strict=True):
        assert parts[0][0] == first and parts[-1][1] == stop
        for (a, b), (c, _) in itertools.pairwise(parts):
            assert b == c and (a - first) % block == 0, parts
            sizes.add(b - a)
        assert (parts[-1][0] - first) % block == 0
    assert len(sizes) <= 1, sizes
    return sizes.pop() if sizes else 0


def test_partitions_cover_every_span_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dask_jobs, "MIN_PARTITION_ROWS", 10)
    monkeypatch.setattr(dask_jobs, "MAX_PARTITION_ROWS", 1_000)
    monkeypatch.setattr(dask_jobs, "PARTITION_COST_ROWS", 0)
    spans = [(0, 95), (95, 95), (95, 200)]
    plan = dask_jobs.partitions(spans, threads=2)  # 200 rows / 8 → 25: sizes 12..50 tried
    _check_plan(plan, spans, 1)
    assert plan[1] == [(95, 95)]
    # with no cost per partition the threads end together: 100 rows each is the best there is
    assert plan == [[(0, 50), (50, 95)], [(95, 95)], [(95, 145), (145, 195), (195, 200)]]
    assert dask_jobs.partitions([(0, 5)], threads=4) == [[(0, 5)]]  # never below the minimum's span
    monkeypatch.setattr(dask_jobs, "MIN_PARTITION_ROWS", 100)
    monkeypatch.setattr(dask_jobs, "MAX_PARTITION_ROWS", 100)
    assert _check_plan(dask_jobs.partitions([(0, 350)], threads=2), [(0, 350)], 1) == 100  # bounds hold


def test_batch_partitions_are_whole_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # MNIST's batch (28,000 positions, blocks of 2,048): fewer, balanced partitions, a task costing
    # PARTITION_COST_ROWS rows of work
    spans = [(0, 28_000)]
    sizes = {
        t: _check_plan(dask_jobs.partitions(spans, threads=t, block=2048), spans, 2048) for t in (1, 2, 4)
    }
    assert sizes == {1: 6 * 2048, 2: 3 * 2048, 4: 2 * 2048}, sizes
    monkeypatch.setattr(dask_jobs, "MIN_PARTITION_ROWS", 10)
    monkeypatch.setattr(dask_jobs, "MAX_PARTITION_ROWS", 1_000)
    monkeypatch.setattr(dask_jobs, "PARTITION_COST_ROWS", 0)
    spans = [(0, 95), (95, 95), (95, 200)]
    plan = dask_jobs.partitions(spans, threads=2, block=20)
    assert _check_plan(plan, spans, 20) % 20 == 0
    assert plan == [  # 100 rows a thread with one-block partitions; two-block ones would end at 105 / 95
        [(0, 20), (20, 40), (40, 60), (60, 80), (80, 95)],
        [(95, 95)],
        [(95, 115), (115, 135), (135, 155), (155, 175), (175, 195), (195, 200)],
    ]
    # a span shorter than a block: one partition, never less than a block
    assert dask_jobs.partitions([(0, 30)], threads=1, block=64) == [[(0, 30)]]
    with pytest.raises(ValueError, match="does not start a block"):
        dask_jobs.batch_part("/nowhere", "ml", "ds", "{}", 0.5, 30, 50, 0, 20)
