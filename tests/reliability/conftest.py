"""The reliability layer: hostile requests against a real ``amlflow`` server on 127.0.0.1.

Its closing line (printed in pytest's terminal summary) counts what was tried and how the server answered:
``reliability: cases N, 2xx A, 4xx B, 5xx C, hangs D`` — C and D must be 0.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from amlflow.server.app import create_app
from amlflow.server.runner import ServerThread
from amlflow.server.serve import build_service, shutdown_service
from amlflow.settings import Settings

#: Seconds a request may take before it counts as a hang.
HANG_SECONDS = 20.0

_TALLY: collections.Counter[str] = collections.Counter()
_TALLY_LOCK = threading.Lock()


def record(outcome: str) -> None:
    """Count one case's outcome (``2xx``, ``4xx``, ``5xx``, ``hang``)."""
    with _TALLY_LOCK:
        _TALLY["cases"] += 1
        _TALLY[outcome] += 1


class HostileClient:
    """Raw AWS JSON 1.1 requests (no client-side validation at all) against one server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=HANG_SECONDS)

    def send(self, operation: str, body: bytes) -> httpx.Response | None:
        """POST one request; ``None`` when it hung. Every call is one counted case."""
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonML_20141212.{operation}",
        }
        try:
            response = self.http.post("/", content=body, headers=headers)
        except httpx.TimeoutException:
            record("hang")
            return None
        record(f"{response.status_code // 100}xx")
        return response


@pytest.fixture(scope="session")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Any, Path]]:
    """A real server (local storage) with one real datasource and model, so deep code paths are reached."""
    home = tmp_path_factory.mktemp("hostile-home")
    settings = Settings(home=home, storage_root=home / "s3", max_jobs=2)
    holder: dict[str, Any] = {}

    def factory(url: str) -> Any:
        holder["service"] = build_service(settings, url)
        return create_app(holder["service"], on_shutdown=lambda: shutdown_service(holder["service"], 30))

    server = ServerThread(factory)
    server.start()
    try:
        _seed(server.url, settings)
        yield server, holder["service"], home
    finally:
        server.stop(timeout=60)


#: Ids of the seeded entities: valid under AML's pattern and special to a filesystem or to amlflow's layout.
SEED_IDS = (".", "..", "table", "model", "TABLE")


def _seed(url: str, settings: Settings) -> None:
    """Real entities of every kind under odd ids, so generated requests reach real code paths."""
    import boto3
    from botocore.config import Config

    repo = Path(__file__).resolve().parents[2]
    root = settings.resolved_storage_root() / "seed"
    root.mkdir(parents=True, exist_ok=True)
    (root / "wine.csv").write_bytes((repo / "data" / "wine" / "winequality-red-comma.csv").read_bytes())
    (root / "wine.csv.schema").write_bytes((repo / "schemas" / "wine-regression.csv.schema").read_bytes())
    ml = boto3.client(
        "machinelearning",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}),
    )
    spec = {"DataLocationS3": "s3://seed/wine.csv", "DataSchemaLocationS3": "s3://seed/wine.csv.schema"}
    for i in SEED_IDS:
        ml.create_data_source_from_s3(DataSourceId=i, DataSpec=spec, ComputeStatistics=True)
    for i in SEED_IDS:
        ml.create_ml_model(MLModelId=i, MLModelType="REGRESSION", TrainingDataSourceId=i)
        ml.create_evaluation(EvaluationId=i, MLModelId=i, EvaluationDataSourceId=i)
        ml.create_batch_prediction(
            BatchPredictionId=i, MLModelId=i, BatchPredictionDataSourceId=i, OutputUri=f"s3://seed/out-{i}/"
        )
    import time

    deadline = time.monotonic() + 180
    for getter, key in [("get_batch_prediction", "BatchPredictionId"), ("get_evaluation", "EvaluationId")]:
        for i in SEED_IDS:
            while getattr(ml, getter)(**{key: i})["Status"] not in ("COMPLETED", "FAILED"):
                assert time.monotonic() < deadline, f"seed {getter} {i!r} did not finish"
                time.sleep(0.1)
    for i in SEED_IDS:
        if ml.get_ml_model(MLModelId=i)["Status"] == "COMPLETED":
            ml.create_realtime_endpoint(MLModelId=i)


@pytest.fixture(scope="session")
def hostile(hostile_server: tuple[ServerThread, Any, Path]) -> Iterator[HostileClient]:
    client = HostileClient(hostile_server[0].url)
    yield client
    client.http.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TALLY["cases"]:
        t = _TALLY
        counts = f"2xx {t['2xx']}, 4xx {t['4xx']}, 5xx {t['5xx']}, hangs {t['hang']}"
        terminalreporter.write_line(f"reliability: cases {t['cases']}, {counts}")
