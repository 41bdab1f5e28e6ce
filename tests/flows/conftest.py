"""Fixtures for the Prefect flow tests: one Prefect test harness per session, isolated amlflow state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from amlflow.client import override, reset_clients
from tests.flows.fake_aml import FakeML, MemoryStorage


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


@pytest.fixture
def fake_aml() -> Iterator[FakeML]:
    """The in-memory fake AML client + storage, installed as amlflow.client's clients."""
    store = MemoryStorage()
    fake = FakeML(store)
    with override(ml=fake, store=store):
        yield fake
