"""Shared fixtures: paths to the repo's real data, and an isolated AMLFLOW_HOME for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

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
