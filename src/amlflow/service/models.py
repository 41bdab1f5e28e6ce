"""ML models: CreateMLModel checks the training datasource, the target type, the parameters and the
recipe at once; the job trains (``engine.train``), saves the model and reloads it through the cache
(docs/aml-reference.md §5–6).
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from amlflow.engine.errors import EngineError
from amlflow.engine.model import train as engine_train
from amlflow.engine.params import parse_parameters
from amlflow.engine.recipe import parse_recipe, suggest_recipe
from amlflow.service.entities import DESCRIBE_FIELDS, NO_ENDPOINT, EntityOps
from amlflow.service.errors import (
    InvalidInputException,
    from_engine,
)
from amlflow.service.jobs import JobContext, JobResult
from amlflow.service.validate import check_json_document

__all__ = ["TARGET_TYPE", "Models"]

TARGET_TYPE = {"BINARY": "BINARY", "REGRESSION": "NUMERIC", "MULTICLASS": "CATEGORICAL"}


class Models(EntityOps):
    """CreateMLModel, GetMLModel and the training job."""

    def create_ml_model(
        self,
        *,
        MLModelId: str,
        MLModelType: str,
        TrainingDataSourceId: str,
        MLModelName: str | None = None,
        Parameters: dict[str, str] | None = None,
        Recipe: str | None = None,
        RecipeUri: str | None = None,
    ) -> dict[str, Any]:
        request = {
            "MLModelId": MLModelId,
            "MLModelName": MLModelName,
            "MLModelType": MLModelType,
            "TrainingDataSourceId": TrainingDataSourceId,
            "Parameters": Parameters or {},
            "Recipe": Recipe,
            "RecipeUri": RecipeUri,
        }
        if self.state.get("MLModel", MLModelId) is not None:
            return self._create("MLModel", MLModelId, request, {})
        if Recipe and RecipeUri:
            raise InvalidInputException("Recipe, RecipeUri: give one of them, not both.")
        ds = self._input("DataSource", TrainingDataSourceId, "TrainingDataSourceId")
        if not ds.attrs.get("ComputeStatistics"):
            raise InvalidInputException(
                f"TrainingDataSourceId: DataSource {TrainingDataSourceId} was created with ComputeStatistics "
                f"false; a training datasource needs ComputeStatistics=true."
            )
        schema = self._schema_of(ds)
        if schema.target is None:
            raise InvalidInputException(
                f"TrainingDataSourceId: the schema of DataSource {TrainingDataSourceId} has no "
                f"targetAttributeName; a training datasource needs a target."
            )
        target_type = schema.type_of(schema.target)
        if TARGET_TYPE[MLModelType] != target_type:
            raise InvalidInputException(
                f"MLModelType: {MLModelType} needs a {TARGET_TYPE[MLModelType]} target, but "
                f"{schema.target!r} is {target_type} in DataSource {TrainingDataSourceId}."
            )
        try:
            params = parse_parameters(Parameters or None)
        except EngineError as exc:
            raise from_engine(exc, "Parameters") from None
        recipe_text = Recipe
        if RecipeUri:
            self._check_uri(RecipeUri, "RecipeUri")
            recipe_text = self._read_text(RecipeUri, "RecipeUri")
            check_json_document(recipe_text, "RecipeUri")
        if recipe_text is not None:
            try:
                parse_recipe(recipe_text, schema)
            except EngineError as exc:
                raise from_engine(exc, "RecipeUri" if RecipeUri else "Recipe") from None
        attrs = {
            "Name": MLModelName,
            "MLModelType": MLModelType,
            "TrainingDataSourceId": TrainingDataSourceId,
            "InputDataLocationS3": ds.attrs.get("DataLocationS3"),
            "Algorithm": "sgd",
            "TrainingParameters": params.echo(),
            "EndpointInfo": dict(NO_ENDPOINT),
        }
        return self._create("MLModel", MLModelId, request, attrs, {"recipe": recipe_text})

    def _training_processes(self) -> int:
        """How many worker processes a streaming fit of this service runs on: none when its engine is
        not the real one (a test's stand-in trains in the job's thread)."""
        if self.engine.train is not engine_train:
            return 0
        return self.settings.resolved_training_processes()

    def _model_job(self, ctx: JobContext) -> JobResult:
        entity = ctx.entity
        ds = self._get("DataSource", entity.attrs["TrainingDataSourceId"])
        schema = self._schema_of(ds)
        table = self._table_of(ds.id)
        recipe_text = entity.internal.get("recipe")
        if recipe_text is None:
            recipe_text = suggest_recipe(table, schema)
            ctx.log("no recipe given: using the suggested recipe")
        recipe = parse_recipe(recipe_text, schema)
        params = parse_parameters(entity.internal["request"].get("Parameters") or None)
        budget = self.settings.memory_limit
        model: Any = None
        # what every way of training gets: the table and how to learn from it
        fit: dict[str, Any] = {
            "table": table,
            "schema": schema,
            "recipe": recipe,
            "params": params,
            "model_type": entity.attrs["MLModelType"],
            "seed": self.settings.seed,
            "memory_budget": int(budget) if budget is not None else None,
            "log": ctx.log,
        }
        if self.settings.dask_address and self.settings.dask_training != "never":
            from amlflow.service.dask_training import train_on_dask  # data-parallel (docs/scale.md)

            model = train_on_dask(
                self.settings.dask_address,
                self.artifacts,
                model_id=entity.id,
                datasource_id=ds.id,
                when=self.settings.dask_training,
                **fit,
            )
        if model is None:
            trainer, extra = self.engine.train, {}
            processes = self._training_processes()
            if processes > 1:  # the real engine: where it would stream, it trains on every core instead
                from amlflow.service.training_processes import train_in_processes  # docs/scale.md

                def on_the_workers() -> Any:
                    work_dir = self._paths("MLModel", entity.id) / f".shards.tmp-{uuid.uuid4().hex[:12]}"
                    return train_in_processes(processes, work_dir=work_dir, **fit)

                trainer, extra = engine_train, {"streaming": on_the_workers}
            model = trainer(
                table,
                schema,
                recipe,
                params,
                entity.attrs["MLModelType"],
                seed=self.settings.seed,
                log=ctx.log,
                memory_budget=int(budget) if budget is not None else None,
                **extra,
            )
        folder = self._paths("MLModel", entity.id) / "model"
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        model.save(folder)
        model = self.engine.load_model(folder)  # what evaluations, batch predictions and Predict use
        with self._models_lock:
            self._models[entity.id] = model
        attrs: dict[str, Any] = {"SizeInBytes": int(model.size_in_bytes)}
        defaults = {"ScoreThreshold": 0.5} if entity.attrs["MLModelType"] == "BINARY" else {}
        schema_json = model.schema.to_json()
        return JobResult(attrs, {"recipe": recipe_text, "schema": schema_json}, defaults=defaults)

    def get_ml_model(self, *, MLModelId: str, Verbose: bool = False) -> dict[str, Any]:
        entity = self._get("MLModel", MLModelId)
        fields = tuple(f for f in DESCRIBE_FIELDS["MLModel"] if f != "Algorithm") + ("LogUri",)
        out = self._out(entity, fields)
        if Verbose:
            if entity.internal.get("recipe") is not None:
                out["Recipe"] = entity.internal["recipe"]
            ds = self.state.get("DataSource", entity.attrs["TrainingDataSourceId"])
            schema = entity.internal.get("schema") or (ds.internal.get("schema") if ds else None)
            if schema:
                out["Schema"] = schema
        return out
