"""Evaluations: the job scores the evaluation datasource (``engine.evaluate``), stores
``PerformanceMetrics`` and writes ``report.json`` (docs/aml-reference.md §7).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from amlflow.service.entities import DESCRIBE_FIELDS, EntityOps, write_json
from amlflow.service.errors import (
    InvalidInputException,
    ResourceNotFoundException,
)
from amlflow.service.jobs import JobContext, JobFailed, JobResult
from amlflow.service.layout import BATCH_WORK_PREFIX

__all__ = ["Evaluations"]


class Evaluations(EntityOps):
    """CreateEvaluation, GetEvaluation, the evaluation job and its report."""

    def create_evaluation(
        self,
        *,
        EvaluationId: str,
        MLModelId: str,
        EvaluationDataSourceId: str,
        EvaluationName: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "EvaluationId": EvaluationId,
            "EvaluationName": EvaluationName,
            "MLModelId": MLModelId,
            "EvaluationDataSourceId": EvaluationDataSourceId,
        }
        if self.state.get("Evaluation", EvaluationId) is not None:
            return self._create("Evaluation", EvaluationId, request, {})
        model = self._input("MLModel", MLModelId, "MLModelId")
        ds = self._input("DataSource", EvaluationDataSourceId, "EvaluationDataSourceId")
        schema = self._schema_of(ds)
        if schema.target is None:
            raise InvalidInputException(
                f"EvaluationDataSourceId: the schema of DataSource {EvaluationDataSourceId} has no "
                f"targetAttributeName; an evaluation needs the true values."
            )
        train_ds = self.state.get("DataSource", model.attrs["TrainingDataSourceId"])
        if train_ds is not None:
            train_target = self._schema_of(train_ds).target
            if train_target != schema.target:
                raise InvalidInputException(
                    f"EvaluationDataSourceId: target {schema.target!r} differs from the model's training "
                    f"target {train_target!r}."
                )
        attrs = {
            "Name": EvaluationName,
            "MLModelId": MLModelId,
            "EvaluationDataSourceId": EvaluationDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
        }
        return self._create("Evaluation", EvaluationId, request, attrs)

    def _scoring_processes(self) -> int:
        """The batch workers an evaluation's scores may come from: none when the engine is not the real
        one (a test's stand-in evaluates in the job's thread)."""
        from amlflow.engine.evaluation import evaluate

        if self.engine.evaluate is not evaluate:
            return 0
        return self.settings.resolved_batch_processes()

    def _evaluation_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        model, table, schema, _ = self._scoring_inputs(entity, "EvaluationDataSourceId")
        model_entity = self._get("MLModel", entity.attrs["MLModelId"])
        train_ds_id = model_entity.attrs["TrainingDataSourceId"]
        training_info = {
            "training_datasource_id": train_ds_id,
            "evaluation_datasource_id": entity.attrs["EvaluationDataSourceId"],
            "score_threshold": float(model_entity.attrs.get("ScoreThreshold", 0.5)),
        }
        if self.settings.dask_address:  # on a Dask cluster, same choice and metric (service/distributed.py)
            from amlflow.service.distributed import scored_model

            model = scored_model(
                self.settings.dask_address,
                self.artifacts,
                model,
                model_id=entity.attrs["MLModelId"],
                datasource_id=entity.attrs["EvaluationDataSourceId"],
                n_rows=table.n_rows,
                log=ctx.log,
            )
        work: Path | None = None
        processes = self._scoring_processes()
        directory = getattr(table, "directory", None)
        if not self.settings.dask_address and processes > 1 and directory is not None:
            from amlflow.service.batch_processes import MIN_ROWS, ProcessEvaluationModel

            if table.n_rows >= MIN_ROWS:  # scores by partition on the batch workers (docs/scale.md)
                work = Path(tempfile.mkdtemp(prefix=f"{BATCH_WORK_PREFIX}ev-", dir=self.home))
                model = ProcessEvaluationModel(
                    processes,
                    model,
                    model_dir=self._fetched("MLModel", entity.attrs["MLModelId"]) / "model",
                    table_dir=Path(directory),
                    work=work,
                    log=ctx.log,
                )
        budget = self.settings.memory_limit
        try:
            result = self.engine.evaluate(
                model,
                table,
                schema,
                training_info=training_info,
                memory_budget=int(budget) if budget is not None else None,
            )
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        mode = result.report.get("evaluation_mode")
        if mode is not None:
            from amlflow.engine.evaluation import evaluation_mode
            from amlflow.engine.limits import default_memory_budget

            classes = getattr(model, "classes", ())
            _, why = evaluation_mode(
                str(result.report.get("model_type")),
                len(classes),
                int(result.report.get("n_evaluated", 0)),
                int(budget) if budget is not None else default_memory_budget(),
            )
            ctx.log(f"evaluation mode: {mode} ({why})")
        undefined = [k for k, v in result.properties.items() if not math.isfinite(float(v))]
        if undefined:
            ds_id = entity.attrs["EvaluationDataSourceId"]
            raise JobFailed(
                f"EvaluationDataSourceId: {', '.join(undefined)} is undefined on datasource {ds_id}: "
                "it has no record with a usable target value."
            )
        folder = self._paths("Evaluation", entity.id)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "report.json", result.report)
        ctx.log(f"metrics: {result.properties}")
        return JobResult(
            {"PerformanceMetrics": {"Properties": {k: str(v) for k, v in result.properties.items()}}}
        )

    def get_evaluation(self, *, EvaluationId: str) -> dict[str, Any]:
        return self._out(self._get("Evaluation", EvaluationId), (*DESCRIBE_FIELDS["Evaluation"], "LogUri"))

    def get_evaluation_report(self, evaluation_id: str) -> dict[str, Any]:
        """The evaluation's report (engine.evaluation), or ResourceNotFound while there is none."""
        entity = self._get("Evaluation", evaluation_id)
        try:
            path = self._fetched("Evaluation", entity.id) / "report.json"
        except FileNotFoundError:
            path = self._paths("Evaluation", entity.id) / "report.json"
        if not path.is_file():
            raise ResourceNotFoundException(
                f"Evaluation {evaluation_id} has no report (status {entity.status})."
            )
        return dict(json.loads(path.read_text("utf-8")))
