"""How the flows' ``__main__`` blocks report a run: outputs, the flow-run id, and where to see it."""

from __future__ import annotations

import os
from typing import Any

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from amlflow.settings import Settings

__all__ = ["print_run_footer"]


def print_run_footer(result: dict[str, Any], flow_run_id: str | None) -> None:
    """Print where the outputs are and how to open the Prefect flow run."""
    print(f"outputs: {result.get('output_dir')}")
    batch = result.get("batch") or {}
    for uri, local in zip(batch.get("result_uris", []), batch.get("local_files", []), strict=False):
        print(f"batch prediction: {uri}\n                  local copy {local}")
    if os.environ.get("AMLFLOW_TARGET", "embedded") == "embedded" and not os.environ.get(
        "AWS_ENDPOINT_URL_MACHINE_LEARNING"
    ):
        settings = Settings()
        print(
            f"AML state (entities, models, reports): {settings.home}  (AMLFLOW_HOME)\n"
            f"AML storage (s3://bucket/key -> folder): {settings.resolved_storage_root()}"
        )
    if flow_run_id is None:
        return
    print(f"Prefect flow run: {flow_run_id}")
    api = PREFECT_API_URL.value()
    ui = PREFECT_UI_URL.value()
    if api and ui:
        print(f"  open {ui.rstrip('/')}/runs/flow-run/{flow_run_id}")
    else:
        print(
            "  (ran on an ephemeral Prefect API; its history is in ~/.prefect. To browse it: "
            "`prefect server start`, then open "
            f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id})"
        )
