"""Scheduled re-training: train a challenger on current data, promote it only if it beats the champion.

Both models are evaluated on the **same** evaluation datasource (the current data's held-out part). The
challenger is promoted when there is no champion, or when it is better and its evaluation raised no alert.
Promotion is recorded with tags (``amlflow:role=champion``, ``amlflow:promoted-at``; the old champion gets
``amlflow:role=retired``), and the batch prediction always uses the champion that serves after the decision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from flows.pipeline import repo_path
from tasks.batch_predictions import create_batch_prediction, wait_for_batch_prediction
from tasks.champion import decide_promotion
from tasks.data_sources import create_data_source_from_s3, split, wait_for_data_source
from tasks.evaluations import create_evaluation, wait_for_evaluation
from tasks.ml_models import create_ml_model, find_champion, set_model_role, wait_for_ml_model
from tasks.reports import report_batch_prediction, report_evaluation
from tasks.storage import upload_inputs

__all__ = ["retrain_champion"]


@flow(name="retrain-champion", log_prints=True)
def retrain_champion(
    pipeline: str = "wine-regression",
    train_data: str = "data/wine/winequality-red-comma.csv",
    data_schema: str = "schemas/wine-regression.csv.schema",
    model_type: str = "REGRESSION",
    recipe: str | None = "recipes/wine.recipe.json",
    parameters: dict[str, str] | None = None,
    batch_data: str | None = "data/wine/winequality-red-comma.csv",
    batch_schema: str | None = None,
    train_percent: int = 70,
    min_improvement: float = 0.0,
    bucket: str = "amlflow",
    output_dir: str = "amlflow-output",
    salt: str = "",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Champion/challenger re-training for one pipeline (default: wine regression).

    Args:
        pipeline: the pipeline's name; tags tie models to it (``amlflow:pipeline``).
        train_data: the current data (local file or ``s3://``): split into training and evaluation.
        data_schema: its AML schema.
        model_type: ``BINARY``, ``MULTICLASS`` or ``REGRESSION``.
        recipe: AML recipe (None = suggested).
        parameters: AML training parameters.
        batch_data: data to score with the champion (None = no batch prediction).
        batch_schema: schema of ``batch_data`` if it differs.
        train_percent: training share of the sequential split.
        min_improvement: the margin a challenger must win by.
        bucket: S3 bucket.
        output_dir: local folder for reports.
        salt: part of the challenger's ID (e.g. a data version); the ID is otherwise derived from the data.
        endpoint_url: an AML endpoint (default: environment, else embedded).

    Returns:
        The decision, both evaluations and the champion's batch prediction.
    """
    common: dict[str, Any] = {"endpoint_url": endpoint_url}
    out_dir = str(Path(output_dir).expanduser() / pipeline)
    schema_text = str(repo_path(data_schema))
    recipe_path = repo_path(recipe)
    inputs = upload_inputs(
        {"train": repo_path(train_data), "batch": repo_path(batch_data)},
        bucket,
        pipeline,
        endpoint_url=endpoint_url,
    )
    train_in = inputs["train"]
    train_ds = create_data_source_from_s3.submit(
        train_in["uri"],
        schema_text,
        fingerprint=train_in["fingerprint"],
        rearrangement=split(0, train_percent),
        name=f"{pipeline} training",
        salt=salt,
        **common,
    )
    eval_ds = create_data_source_from_s3.submit(
        train_in["uri"],
        schema_text,
        fingerprint=train_in["fingerprint"],
        rearrangement=split(train_percent, 100),
        name=f"{pipeline} evaluation",
        salt=salt,
        **common,
    )
    champion_id = find_champion.submit(pipeline, **common)
    train_ready = wait_for_data_source.submit(train_ds, **common)
    eval_ready = wait_for_data_source.submit(eval_ds, **common)
    challenger = create_ml_model.submit(
        train_ds,
        model_type,
        recipe=recipe_path,
        parameters=parameters,
        name=f"{pipeline} challenger",
        salt=salt,
        wait_for=[train_ready],
        **common,
    )
    challenger_ready = wait_for_ml_model.submit(challenger, **common)
    challenger_ev = create_evaluation.submit(
        challenger,
        eval_ds,
        name=f"{pipeline} challenger evaluation",
        wait_for=[challenger_ready, eval_ready],
        **common,
    )
    challenger_done = wait_for_evaluation.submit(challenger_ev, **common)
    challenger_report = report_evaluation.submit(
        challenger_ev, out_dir, label="challenger", case=pipeline, wait_for=[challenger_done], **common
    )

    current = champion_id.result()
    champion_report = None
    if current is not None and current != challenger.result():
        champion_ev = create_evaluation.submit(
            current, eval_ds, name=f"{pipeline} champion evaluation", wait_for=[eval_ready], **common
        )
        champion_done = wait_for_evaluation.submit(champion_ev, **common)
        champion_report = report_evaluation.submit(
            champion_ev, out_dir, label="champion", case=pipeline, wait_for=[champion_done], **common
        ).result()
    elif current is not None:
        champion_report = challenger_report.result()

    decision = decide_promotion(
        pipeline, challenger_report.result(), champion_report, min_improvement=min_improvement
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if decision["promote"]:
        set_model_role(
            decision["challenger"], pipeline, "champion", extra_tags={"amlflow:promoted-at": stamp}, **common
        )
        if decision["previous_champion"]:
            set_model_role(
                decision["previous_champion"],
                pipeline,
                "retired",
                extra_tags={"amlflow:retired-at": stamp},
                **common,
            )
    elif decision["challenger"] != decision["champion"]:
        set_model_role(
            decision["challenger"],
            pipeline,
            "rejected-challenger",
            extra_tags={"amlflow:evaluated-at": stamp},
            **common,
        )

    result: dict[str, Any] = {
        "pipeline": pipeline,
        "decision": decision,
        "challenger": challenger_report.result(),
        "champion": champion_report,
        "output_dir": out_dir,
    }
    if batch_data is not None and decision["champion"]:
        batch_in = inputs["batch"]
        batch_ds = create_data_source_from_s3.submit(
            batch_in["uri"],
            str(repo_path(batch_schema)) if batch_schema else schema_text,
            fingerprint=batch_in["fingerprint"],
            compute_statistics=False,
            name=f"{pipeline} batch",
            salt=salt,
            **common,
        )
        batch_ready = wait_for_data_source.submit(batch_ds, **common)
        bp = create_batch_prediction.submit(
            decision["champion"],
            batch_ds,
            f"s3://{bucket}/{pipeline}/output/",
            name=f"{pipeline} champion batch prediction",
            wait_for=[batch_ready],
            **common,
        )
        bp_done = wait_for_batch_prediction.submit(bp, **common)
        result["batch"] = report_batch_prediction.submit(
            bp, out_dir, label="champion-batch", case=pipeline, wait_for=[bp_done], **common
        ).result()
    for future in (train_ready, eval_ready, challenger_ready, challenger_done):
        future.result()
    print(
        f"{pipeline}: promoted={decision['promote']} ({decision['reason']}); serving {decision['champion']}"
    )
    return result


if __name__ == "__main__":
    print(retrain_champion()["decision"])
