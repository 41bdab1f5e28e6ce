"""The one seam between the service and the engine's ML work: :class:`EngineJobs`.

The service's four jobs (build a datasource, train a model, evaluate, write a batch prediction) do
their bookkeeping themselves — entity statuses, file layout, insights and report files, AML's batch
output names and manifest — and call the engine only through the functions an :class:`EngineJobs`
holds. ``Service(settings)`` uses :data:`ENGINE` (the real engine); tests and demos pass their own::

    Service(settings, engine=EngineJobs(train=fake_train, load_model=fake_load))

Parsing requests (schemas, rearrangements, parameters, recipes) is not ML work and stays the real
engine's at every call site. :mod:`amlflow.service.standin` has ready-made stand-ins that finish at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from amlflow.engine.batch import BatchCounts, write_batch_output
from amlflow.engine.dataset import DatasetInfo, Source, build_dataset
from amlflow.engine.evaluation import EvaluationResult, evaluate
from amlflow.engine.model import import_learners, load_model, train
from amlflow.engine.params import TrainingParameters
from amlflow.engine.rearrange import Rearrangement
from amlflow.engine.recipe import Recipe
from amlflow.engine.schema import Schema
from amlflow.engine.stats import compute_statistics
from amlflow.engine.table import Table

__all__ = [
    "ENGINE",
    "BuildDataset",
    "ComputeStatistics",
    "EngineJobs",
    "Evaluate",
    "LoadModel",
    "Model",
    "Train",
    "WriteBatchOutput",
]


class Model(Protocol):
    """What the service needs of a trained model (``engine.model.TrainedModel`` is one)."""

    @property
    def schema(self) -> Schema:
        """The schema the model reads records with."""
        ...

    @property
    def size_in_bytes(self) -> int:
        """AML's ``SizeInBytes``."""
        ...

    def save(self, directory: Path | str) -> None:
        """Write the model to ``directory`` (read back by :class:`LoadModel`)."""
        ...

    def predict_record(self, record: Mapping[str, str], threshold: float = 0.5) -> dict[str, Any]:
        """AML's ``Prediction`` for one realtime record."""
        ...


class BuildDataset(Protocol):
    """``engine.dataset.build_dataset``: parse the sources and write the encoded table at ``out_dir``."""

    def __call__(
        self,
        sources: Sequence[Source],
        schema: Schema,
        rearrangement: Rearrangement | None,
        out_dir: Path,
        *,
        memory_budget: int | None = None,
    ) -> DatasetInfo: ...


class ComputeStatistics(Protocol):
    """``engine.stats.compute_statistics``: the data insights document of an encoded table."""

    def __call__(self, table: Table, schema: Schema) -> dict[str, Any]: ...


class Train(Protocol):
    """``engine.model.train``: fit a model of ``model_type``."""

    def __call__(
        self,
        table: Table,
        schema: Schema,
        recipe: Recipe,
        params: TrainingParameters,
        model_type: str,
        *,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
        memory_budget: int | None = None,
    ) -> Model: ...


class LoadModel(Protocol):
    """``engine.model.load_model``: read a model ``Model.save`` wrote."""

    def __call__(self, directory: Path) -> Model: ...


class Evaluate(Protocol):
    """``engine.evaluation.evaluate``: metrics and report of ``model`` on ``table``."""

    def __call__(
        self,
        model: Any,
        table: Table,
        schema: Schema,
        *,
        training_info: Mapping[str, Any] | None = None,
        memory_budget: int | None = None,
    ) -> EvaluationResult: ...


class WriteBatchOutput(Protocol):
    """``engine.batch.write_batch_output``: AML's batch prediction CSV for rows ``rows`` of ``table``."""

    def __call__(
        self,
        model: Any,
        table: Table,
        schema: Schema,
        out: BinaryIO,
        *,
        threshold: float = 0.5,
        rows: tuple[int, int] | None = None,
    ) -> BatchCounts: ...


@dataclass(frozen=True)
class EngineJobs:
    """The engine functions the service's jobs call; every field defaults to the real engine's.

    Attributes:
        build_dataset: the datasource job's CSV reader and table writer.
        compute_statistics: the datasource job's insights (``ComputeStatistics=true``).
        train: the ML model job.
        load_model: reads a saved model (evaluations, batch predictions, Predict, after a restart).
        evaluate: the evaluation job.
        write_batch_output: the batch prediction job, once per input file.
        prepare: called once when the service starts taking jobs (the real engine imports its
            scikit-learn estimators then, ~0.5-0.8 s, instead of in the first training job).
    """

    build_dataset: BuildDataset = build_dataset
    compute_statistics: ComputeStatistics = compute_statistics
    train: Train = train
    load_model: LoadModel = load_model
    evaluate: Evaluate = evaluate
    write_batch_output: WriteBatchOutput = write_batch_output
    prepare: Callable[[], None] = import_learners


#: The real engine.
ENGINE = EngineJobs()
