"""The AWS "targeted marketing" banking sample: BINARY with AML's schema and recipe, threshold 0.77.

As in AWS's ``build_model.py`` / ``use_model.py``: 70/30 sequential split of ``banking.csv`` (41,188 rows),
BINARY model with ``recipes/banking.recipe.json``, ``ScoreThreshold`` 0.77 set with ``UpdateMLModel``, then a
batch prediction over ``banking-batch.csv`` (4,119 rows, no target).
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import print_run_footer
from flows.pipeline import aml_pipeline, repo_path

__all__ = ["banking_pipeline"]


@flow(name="banking-pipeline", log_prints=True)
def banking_pipeline(
    data: str | None = None,
    batch_data: str | None = None,
    score_threshold: float = 0.77,
    parameters: dict[str, str] | None = None,
    train_percent: int = 70,
    bucket: str = "amlflow",
    output_dir: str = "amlflow-output",
    salt: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """The banking case end to end.

    Args:
        data: ``banking.csv`` (default: the repo's copy of AML's sample).
        batch_data: ``banking-batch.csv`` (default: the repo's copy).
        score_threshold: the BINARY cut-off set with ``UpdateMLModel`` (AWS sample: 0.77).
        parameters: AML training parameters (default: AML's defaults).
        train_percent: training share of the sequential split.
        bucket: S3 bucket.
        output_dir: local folder for reports and the batch output copy.
        salt: change to force new AML entities.
        endpoint_url: an AML endpoint (default: environment, else embedded).
    """
    result = aml_pipeline(
        name="banking",
        train_data=str(repo_path(data, "data/aml-banking/banking.csv")),
        data_schema=str(repo_path("schemas/banking.csv.schema")),
        model_type="BINARY",
        batch_data=str(repo_path(batch_data, "data/aml-banking/banking-batch.csv")),
        batch_schema=str(repo_path("schemas/banking-batch.csv.schema")),
        recipe=repo_path("recipes/banking.recipe.json"),
        parameters=parameters,
        train_percent=train_percent,
        score_threshold=score_threshold,
        bucket=bucket,
        output_dir=output_dir,
        salt=salt,
        endpoint_url=endpoint_url,
    )
    result["flow_run_id"] = str(flow_run.get_id())
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="AML banking sample on amlflow")
    parser.add_argument("--endpoint-url")
    args = parser.parse_args()
    outcome = banking_pipeline(endpoint_url=args.endpoint_url)
    print_run_footer(outcome, outcome.get("flow_run_id"))
