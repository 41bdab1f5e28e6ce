"""Stand-in ML work for tests and demos: :func:`standin_engine` returns an :class:`EngineJobs` whose
training, evaluation and batch scoring finish at once with plausible results.

Everything else is the real service: entity rules and statuses, idempotency, Describe filters and
paging, tags, restart recovery, the datasource job (the real CSV reader and statistics: they are quick
on small files), the insights and report files, AML's batch output names and manifest::

    from amlflow.service import Service
    from amlflow.service.standin import standin_engine

    service = Service(settings, engine=standin_engine(metric=0.91))
    ml = amlflow.connect(home=..., engine=standin_engine(metric=0.91))   # the same, as a client

A stand-in model "trains" nothing: it predicts the same score (``score``) for every record, saves a small
JSON file (so it survives a restart) and weighs ``SizeInBytes`` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from amlflow.engine.batch import BatchCounts
from amlflow.engine.evaluation import EvaluationResult
from amlflow.engine.params import TrainingParameters
from amlflow.engine.recipe import Recipe
from amlflow.engine.schema import Schema, parse_schema
from amlflow.engine.table import Table
from amlflow.service.engine_jobs import EngineJobs

__all__ = ["METRIC", "StandInModel", "standin_engine"]

#: ``PerformanceMetrics.Properties`` key per model type.
METRIC = {"BINARY": "BinaryAUC", "REGRESSION": "RegressionRMSE", "MULTICLASS": "MulticlassAvgFScore"}
_FILE = "standin-model.json"


@dataclass
class StandInModel:
    """A model that predicts ``score`` for every record (see the module docstring)."""

    model_type: str
    schema: Schema
    classes: list[str]
    score: float = 0.5
    size_in_bytes: int = 96

    def save(self, directory: Path | str) -> None:
        """Write ``standin-model.json`` into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "model_type": self.model_type,
            "schema": self.schema.to_json(),
            "classes": self.classes,
            "score": self.score,
            "size_in_bytes": self.size_in_bytes,
        }
        (folder / _FILE).write_text(json.dumps(doc), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path | str) -> StandInModel:
        """Read what :meth:`save` wrote."""
        doc = json.loads((Path(directory) / _FILE).read_text("utf-8"))
        doc["schema"] = parse_schema(doc["schema"])
        return cls(**doc)

    def predict_record(self, record: Mapping[str, str], threshold: float = 0.5) -> dict[str, Any]:
        """AML's ``Prediction`` shape for this model type."""
        details = {"PredictiveModelType": self.model_type, "Algorithm": "SGD"}
        if self.model_type == "REGRESSION":
            return {"predictedValue": self.score, "details": details}
        if self.model_type == "BINARY":
            label = "1" if self.score >= threshold else "0"
            return {"predictedLabel": label, "predictedScores": {label: self.score}, "details": details}
        first = self.classes[0] if self.classes else ""
        return {"predictedLabel": first, "predictedScores": {first: self.score}, "details": details}


def standin_engine(
    *,
    metric: float | Callable[[str], float] = 0.9,
    score: float = 0.5,
    train_error: Callable[[Schema, TrainingParameters, str], Exception | None] | None = None,
) -> EngineJobs:
    """An :class:`EngineJobs` with the real datasource work and instant stand-in ML work.

    Args:
        metric: the evaluation metric (``BinaryAUC``, ``RegressionRMSE`` or ``MulticlassAvgFScore``), or a
            function of the evaluated model's type returning it.
        score: what every stand-in model predicts (BINARY/MULTICLASS score, REGRESSION value).
        train_error: called before "training"; an exception it returns is raised (the model ends FAILED
            with its message, e.g. an ``amlflow.engine.errors.TrainingError``).
    """

    def train(
        table: Table,
        schema: Schema,
        recipe: Recipe,
        params: TrainingParameters,
        model_type: str,
        *,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
        memory_budget: int | None = None,
    ) -> StandInModel:
        if train_error is not None and (error := train_error(schema, params, model_type)) is not None:
            raise error
        classes: list[str] = []
        if model_type == "MULTICLASS" and schema.target is not None:
            classes = sorted(str(v) for v in table.dictionary(schema.target) if str(v))
        if log is not None:
            log(f"stand-in training: {table.n_rows} rows, nothing learnt")
        return StandInModel(model_type, schema, classes, score)

    def load_model(directory: Path) -> StandInModel:
        return StandInModel.load(directory)

    def evaluate(
        model: StandInModel,
        table: Table,
        schema: Schema,
        *,
        training_info: Mapping[str, Any] | None = None,
        memory_budget: int | None = None,
    ) -> EvaluationResult:
        value = float(metric(model.model_type) if callable(metric) else metric)
        name = METRIC[model.model_type]
        report = {
            "model_type": model.model_type,
            "metric": name,
            "value": value,
            "alerts": [],
            "n_evaluated": table.n_rows,
            "n_invalid": 0,
        }
        return EvaluationResult({name: repr(value)}, report)

    def write_batch_output(
        model: StandInModel,
        table: Table,
        schema: Schema,
        out: BinaryIO,
        *,
        threshold: float = 0.5,
        rows: tuple[int, int] | None = None,
    ) -> BatchCounts:
        """AML's columns for the model type, one line per observation of the span, every score ``score``."""
        start, stop = rows if rows is not None else (0, table.n_rows + len(table.rejected_positions))
        if model.model_type == "BINARY":
            header, line = "bestAnswer,score", f"{int(model.score >= threshold)},{model.score!r}"
        elif model.model_type == "MULTICLASS":
            header = ",".join(model.classes)
            line = ",".join(repr(model.score if i == 0 else 0.0) for i in range(len(model.classes)))
        else:
            header, line = "score", repr(model.score)
        out.write(f"{header}\n".encode())
        out.write(f"{line}\n".encode() * (stop - start))
        return BatchCounts(stop - start, 0)

    return EngineJobs(
        train=train,
        load_model=load_model,
        evaluate=evaluate,
        write_batch_output=write_batch_output,
        prepare=lambda: None,  # nothing of scikit-learn is used
    )
