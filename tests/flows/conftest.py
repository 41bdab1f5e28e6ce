"""Fixtures for the Prefect flow tests: one Prefect test harness per session, isolated amlflow state.

The wiring tests run the flows on the real in-process AML service (``amlflow.connect``) whose ML jobs are
stand-ins that finish at once (``amlflow.service.standin``): the entity rules, statuses, idempotency,
storage and batch-output layout are the service's own, only training, evaluation and scoring are instant.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

import amlflow
from amlflow.client import override, reset_clients
from amlflow.service.engine_jobs import EngineJobs
from amlflow.service.standin import standin_engine

#: What every stand-in evaluation reports (``BinaryAUC``, ``RegressionRMSE``...) unless a test says otherwise.
STANDIN_METRIC = 0.75

#: Describe operation (snake_case, as ``get_paginator`` names it) per entity kind.
_DESCRIBE = {
    "DataSource": "describe_data_sources",
    "MLModel": "describe_ml_models",
    "Evaluation": "describe_evaluations",
    "BatchPrediction": "describe_batch_predictions",
}


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API + database for the whole session (started once: it takes seconds)."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test gets a new embedded service for its own AMLFLOW_HOME."""
    reset_clients()
    yield
    reset_clients()


@dataclass
class EmbeddedAML:
    """The real in-process AML service of one test, installed as ``amlflow.client``'s AML client.

    Attributes:
        ml: the in-process ``machinelearning`` client (``amlflow.connect``) the flows' tasks get.
        root: the service's local storage root (``s3://bucket/key`` is ``root/bucket/key``); the upload
            task writes there through ``amlflow.client.storage()``.
        calls: AML operations requested through ``ml`` by name (``CreateMLModel``...), counted before
            botocore's parameter checks, so a request the service rejects counts too.
    """

    ml: Any
    root: Path
    calls: Counter[str] = field(default_factory=Counter)

    def describe(self, kind: str) -> list[dict[str, Any]]:
        """Every entity of ``kind`` (``DataSource``, ``MLModel``, ``Evaluation``, ``BatchPrediction``)."""
        pages = self.ml.get_paginator(_DESCRIBE[kind]).paginate()
        return [entity for page in pages for entity in page["Results"]]

    def counts(self) -> list[int]:
        """How many datasources, models, evaluations and batch predictions the service holds."""
        return [len(self.describe(kind)) for kind in _DESCRIBE]

    def tags(self, ml_model_id: str) -> dict[str, str]:
        """The model's tags, from ``DescribeTags``."""
        response = self.ml.describe_tags(ResourceId=ml_model_id, ResourceType="MLModel")
        return {t["Key"]: t.get("Value", "") for t in response["Tags"]}


@pytest.fixture
def start_aml(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., EmbeddedAML]]:
    """Start this test's embedded service (under the test's AMLFLOW_HOME) with the given engine jobs.

    ``start_aml()`` uses ``standin_engine(metric=STANDIN_METRIC)``; ``start_aml(engine)`` any other
    :class:`~amlflow.service.engine_jobs.EngineJobs`. The client is installed with
    ``amlflow.client.override`` until the test ends; the service is then shut down.
    """
    monkeypatch.delenv("AWS_ENDPOINT_URL_MACHINE_LEARNING", raising=False)
    monkeypatch.delenv("AMLFLOW_TARGET", raising=False)
    started: list[Any] = []
    with ExitStack() as stack:

        def start(engine: EngineJobs | None = None) -> EmbeddedAML:
            assert not started, "one embedded service per test"
            ml = amlflow.connect(engine=engine or standin_engine(metric=STANDIN_METRIC), max_jobs=4)
            started.append(ml)
            aml = EmbeddedAML(ml, ml.service.settings.resolved_storage_root())
            lock = threading.Lock()

            def count(model: Any, **_: Any) -> None:
                with lock:
                    aml.calls[model.name] += 1

            ml.meta.events.register("before-parameter-build.machine-learning", count)
            stack.enter_context(override(ml=ml))
            return aml

        yield start
    for ml in started:
        ml.service.shutdown(timeout=30)
        ml.close()


@pytest.fixture
def aml(start_aml: Callable[..., EmbeddedAML]) -> EmbeddedAML:
    """The embedded service with the default stand-in engine (every metric is ``STANDIN_METRIC``)."""
    return start_aml()
