"""Every prefect.yaml entrypoint imports, is a Prefect flow, and accepts its deployment's parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

REPO = Path(__file__).resolve().parent.parent


def _deployments() -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    return list(config["deployments"])


def test_prefect_yaml_has_a_deployment_per_reference_case_and_a_schedule() -> None:
    deployments = _deployments()
    names = {d["name"] for d in deployments}
    assert {
        "mnist",
        "mnist-headerless",
        "wine-regression",
        "wine-binary",
        "wine-multiclass",
        "banking",
    } <= names
    scheduled = [d for d in deployments if d.get("schedules")]
    assert scheduled and all("cron" in s for d in scheduled for s in d["schedules"])
    assert all(d["work_pool"]["name"] == "amlflow-process" for d in deployments)


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_entrypoint_imports(deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    flow.validate_parameters(deployment.get("parameters") or {})
