"""amlflow.connect(): one service per home per process, reports side-channel, settings by keyword."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import amlflow
from amlflow.client import reports_for
from amlflow.service import client as client_module


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    client_module.reset_services()


def test_one_service_per_home(tmp_path: Path) -> None:
    a = amlflow.connect(home=tmp_path / "a")
    a2 = amlflow.connect(home=tmp_path / "a")
    b = amlflow.connect(home=tmp_path / "b", max_jobs=1)
    assert a.service is a2.service and a.service is not b.service
    assert b.service.settings.max_jobs == 1
    assert reports_for(a) is a.service
    assert a.describe_data_sources()["Results"] == []
    assert (tmp_path / "a" / "state.db").is_file()


def test_environment_home_and_rate_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMLFLOW_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("AMLFLOW_PREDICT_RATE_LIMIT", "0")
    ml = amlflow.connect()
    assert ml.service.home == tmp_path / "env-home"
    assert ml.service.settings.predict_rate_limit == 0
