"""Champion/challenger decision for scheduled re-training (pure logic over evaluation summaries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.reports import artifact_key

__all__ = ["decide_promotion"]


@task(name="decide_promotion")
def decide_promotion(
    pipeline: str,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    min_improvement: float = 0.0,
) -> dict[str, Any]:
    """Decide whether the challenger replaces the champion.

    Both summaries come from ``report_evaluation`` on the **same** evaluation datasource. The challenger is
    promoted when there is no champion yet, or when it beats the champion's metric by more than
    ``min_improvement`` (higher AUC / macro-F1, lower RMSE) **and** its evaluation raised no alert.

    Args:
        pipeline: the pipeline name (for the artifact).
        challenger: ``report_evaluation`` summary of the new model.
        champion: the same for the current champion, or None.
        min_improvement: the margin the challenger must beat the champion by.

    Returns:
        ``{"promote": bool, "reason": str, "champion": model id that serves after the decision}``.

    Example:
        >>> decide_promotion("wine", {"metric": 0.70, "higher_is_better": False, "alerts": [],
        ...                           "ml_model_id": "ml-new"},
        ...     {"metric": 0.73, "higher_is_better": False, "alerts": [], "ml_model_id": "ml-old"})
        {'promote': True, 'reason': 'RMSE ...', 'champion': 'ml-new'}
    """
    new_id = str(challenger["ml_model_id"])
    name = str(challenger.get("metric_name", "metric"))
    if challenger.get("alerts"):
        decision = {
            "promote": False,
            "reason": f"challenger raised evaluation alerts: {'; '.join(challenger['alerts'])}",
        }
    elif champion is None:
        decision = {"promote": True, "reason": "no champion yet"}
    elif str(champion["ml_model_id"]) == new_id:
        decision = {"promote": False, "reason": "the challenger is the champion (inputs unchanged)"}
    else:
        new, old = float(challenger["metric"]), float(champion["metric"])
        higher = bool(challenger.get("higher_is_better", True))
        gain = (new - old) if higher else (old - new)
        better = gain > min_improvement
        decision = {
            "promote": better,
            "reason": f"{name} {new:.6g} vs champion {old:.6g} ({'higher' if higher else 'lower'} is better; "
            f"gain {gain:+.6g}, required > {min_improvement:g})",
        }
    serving = new_id if decision["promote"] else (str(champion["ml_model_id"]) if champion else None)
    decision["champion"] = serving
    decision["challenger"] = new_id
    decision["previous_champion"] = str(champion["ml_model_id"]) if champion else None
    create_markdown_artifact(
        f"# Re-training decision: {pipeline}\n\n* challenger: `{new_id}`\n"
        f"* previous champion: `{decision['previous_champion']}`\n"
        f"* promoted: **{decision['promote']}** — {decision['reason']}\n* serving: `{serving}`\n",
        key=artifact_key(pipeline, "promotion"),
        description="Champion/challenger decision",
    )
    get_run_logger().info("promotion decision for %s: %s", pipeline, decision)
    return decision
