"""The flows end to end on the real AML service: embedded (wine, banking subset); `amlflow serve` + moto."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.banking_pipeline import banking_pipeline
from flows.pipeline import aml_pipeline
from flows.retrain import retrain_champion
from flows.wine_pipeline import wine_pipeline

pytestmark = pytest.mark.prefect

REPO = Path(__file__).resolve().parents[2]


def _task_runs(flow_run_id: Any) -> dict[str, Any]:
    """Task runs of the flow run and of its subflow runs (wine_pipeline runs aml_pipeline as a subflow)."""
    out: dict[str, Any] = {}
    ids = [flow_run_id]
    with get_client(sync_client=True) as client:
        while ids:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            ids = []
            for r in runs:
                out[r.name.rsplit("-", 1)[0]] = r
                child = r.state.state_details.child_flow_run_id if r.state is not None else None
                if child is not None:
                    ids.append(child)
    return out


def test_wine_regression_flow_embedded(tmp_path: Path) -> None:
    state = wine_pipeline(variant="regression", output_dir=str(tmp_path), return_state=True)
    result = state.result()
    ev = result["evaluation"]
    assert ev["metric_name"] == "RegressionRMSE"
    assert 0.4 < ev["metric"] < 0.9, ev  # AML: 0.729
    assert ev["baseline"] is not None and ev["metric"] < ev["baseline"], ev  # AML's baseline: 0.793
    batch = pd.read_csv(result["batch"]["local_files"][0], compression="gzip")
    assert len(batch) == 1599 and list(batch.columns) == ["trueLabel", "score"]
    assert (tmp_path / "wine-regression" / "evaluation-report.json").exists()
    assert all(i["insights"] for i in result["insights"]), "embedded service exposes data insights"

    runs = _task_runs(state.state_details.flow_run_id)
    ev_run, bp_run = runs["wait_for_evaluation"], runs["wait_for_batch_prediction"]
    assert ev_run.start_time < bp_run.end_time and bp_run.start_time < ev_run.end_time, "overlap in time"


@pytest.fixture
def banking_subset(tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    """The first 8,000 rows of AML's banking.csv (CRLF kept) and 600 rows of banking-batch.csv."""
    train = tmp_path / "banking-8000.csv"
    batch = tmp_path / "banking-batch-600.csv"
    with (data_dir / "aml-banking/banking.csv").open("rb") as src:
        train.write_bytes(b"".join(src.readline() for _ in range(8001)))
    with (data_dir / "aml-banking/banking-batch.csv").open("rb") as src:
        batch.write_bytes(b"".join(src.readline() for _ in range(601)))
    return train, batch


def test_banking_flow_embedded_with_threshold(banking_subset: tuple[Path, Path], tmp_path: Path) -> None:
    train, batch = banking_subset
    result = banking_pipeline(data=str(train), batch_data=str(batch), output_dir=str(tmp_path / "out"))
    ev = result["evaluation"]
    assert ev["metric_name"] == "BinaryAUC" and ev["metric"] > 0.85, ev
    assert result["model"]["MLModelType"] == "BINARY"
    out = pd.read_csv(result["batch"]["local_files"][0], compression="gzip", dtype=str)
    assert list(out.columns) == ["bestAnswer", "score"] and len(out) == 600
    scores = out["score"].astype(float)
    assert ((scores >= 0.77) == (out["bestAnswer"] == "1")).all(), "ScoreThreshold 0.77 applied"


def test_invalid_input_fails_the_flow_with_the_aml_message(tmp_path: Path, data_dir: Path) -> None:
    bad_recipe = '{"groups": {}, "assignments": {}, "outputs": ["NO_SUCH_GROUP"]}'
    with pytest.raises(Exception, match="NO_SUCH_GROUP"):
        aml_pipeline(
            name="wine-bad-recipe",
            train_data=str(data_dir / "wine/winequality-red-comma.csv"),
            data_schema=str(REPO / "schemas/wine-regression.csv.schema"),
            model_type="REGRESSION",
            recipe=bad_recipe,
            output_dir=str(tmp_path),
        )


# ------------------------------------------------------------------------------ amlflow serve + moto S3


@pytest.fixture
def served_with_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real `amlflow serve` app (thread, 127.0.0.1:<free port>) in s3 mode on moto's S3 server.

    The flow's process gets the same S3 endpoint, so its uploads land where the server reads.
    """
    from moto.server import ThreadedMotoServer

    from amlflow.server.app import create_app
    from amlflow.server.runner import ServerThread
    from amlflow.server.serve import build_service, shutdown_service
    from amlflow.settings import Settings

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    s3_url = f"http://{host}:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL_S3": s3_url,
        "AWS_ACCESS_KEY_ID": "moto",
        "AWS_SECRET_ACCESS_KEY": "moto",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket="amlflow")
    settings = Settings(home=tmp_path / "server-home", storage="s3", max_jobs=2)
    holder: dict[str, Any] = {}

    def factory(url: str) -> Any:
        holder["service"] = build_service(settings, url)
        return create_app(holder["service"], on_shutdown=lambda: shutdown_service(holder["service"], 30))

    server = ServerThread(factory)
    url = server.start()
    try:
        yield url
    finally:
        server.stop(timeout=60)
        moto.stop()


@pytest.mark.server
def test_wine_binary_flow_against_amlflow_serve_and_moto_s3(served_with_moto: str, tmp_path: Path) -> None:
    result = wine_pipeline(variant="binary", output_dir=str(tmp_path), endpoint_url=served_with_moto)
    ev = result["evaluation"]
    assert ev["metric_name"] == "BinaryAUC" and 0.7 < ev["metric"] <= 1.0, ev  # AML: 0.778
    assert ev["baseline"] is None and not ev["report_available"], "no report side-channel over HTTP"
    assert result["inputs"]["train"]["uri"].startswith("s3://amlflow/wine-binary/inputs/")
    import boto3

    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="amlflow", Prefix="wine-binary/output/")["Contents"]]
    assert any(k.endswith(".manifest") for k in keys) and any(k.endswith(".gz") for k in keys), keys
    body = s3.get_object(Bucket="amlflow", Key=next(k for k in keys if k.endswith(".gz")))["Body"].read()
    frame = pd.read_csv(io.BytesIO(gzip.decompress(body)), dtype=str)
    assert list(frame.columns) == ["trueLabel", "bestAnswer", "score"] and len(frame) == 1599


def test_retrain_on_the_real_service_promotes_only_a_better_challenger(tmp_path: Path) -> None:
    """Wine regression: a 1-pass model is the first champion; a 10-pass challenger beats it on the same
    evaluation datasource and is promoted; a second 1-pass challenger then loses and is rejected."""
    common = {"output_dir": str(tmp_path), "batch_data": "data/wine/winequality-red-comma.csv"}
    first = retrain_champion(parameters={"sgd.maxPasses": "1"}, salt="a", **common)["decision"]
    assert first["promote"] is True
    run2 = retrain_champion(parameters={"sgd.maxPasses": "10"}, salt="b", **common)
    second = run2["decision"]
    assert second["promote"] is True, second
    assert run2["challenger"]["metric"] < run2["champion"]["metric"], run2  # RMSE: lower is better
    run3 = retrain_champion(parameters={"sgd.maxPasses": "1"}, salt="c", **common)
    third = run3["decision"]
    assert third["promote"] is False and third["champion"] == second["challenger"], third

    import amlflow

    ml = amlflow.connect()
    roles = {
        m: {t["Key"]: t["Value"] for t in ml.describe_tags(ResourceId=m, ResourceType="MLModel")["Tags"]}
        for m in (first["challenger"], second["challenger"], third["challenger"])
    }
    assert roles[second["challenger"]]["amlflow:role"] == "champion"
    assert roles[third["challenger"]]["amlflow:role"] == "rejected-challenger"
    assert roles[first["challenger"]]["amlflow:role"] == "retired"
    batch_models = {bp["MLModelId"] for bp in ml.describe_batch_predictions()["Results"]}
    assert second["challenger"] in batch_models and third["challenger"] not in batch_models
