"""Shared fixtures: paths to the repo's real data, and an isolated AMLFLOW_HOME for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repo's ``data/`` folder (real wine, banking and MNIST-sample files)."""
    return DATA


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch ~/.amlflow from a test: each test gets its own AMLFLOW_HOME."""
    home = tmp_path_factory.mktemp("amlflow-home")
    monkeypatch.setenv("AMLFLOW_HOME", str(home))
    monkeypatch.delenv("AMLFLOW_STORAGE", raising=False)
    monkeypatch.delenv("AMLFLOW_STORAGE_ROOT", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port for the whole session (tests/postgres.py)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each state-store test runs on SQLite (a file under tmp_path) and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()
