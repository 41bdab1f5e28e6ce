"""Fixtures of the service tests."""

from __future__ import annotations

import pytest

import amlflow.service.core
import amlflow.service.entities
import amlflow.service.jobs
import amlflow.service.realtime
from tests.service.support import Ticks


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Ticks:
    """Every service module's ``now`` replaced by one :class:`Ticks`."""
    clock = Ticks()
    for module in (
        amlflow.service.jobs,
        amlflow.service.entities,
        amlflow.service.realtime,
        amlflow.service.core,
    ):
        monkeypatch.setattr(module, "now", clock)
    return clock
