"""The engine's import paths: every public name stays importable from the module the service imports it
from (the recipe package and the table/dataset split keep the old paths working)."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "amlflow.engine.batch",
    "amlflow.engine.dataset",
    "amlflow.engine.dataset_parts",
    "amlflow.engine.errors",
    "amlflow.engine.evaluation",
    "amlflow.engine.limits",
    "amlflow.engine.model",
    "amlflow.engine.order_stats",
    "amlflow.engine.params",
    "amlflow.engine.rearrange",
    "amlflow.engine.recipe",
    "amlflow.engine.recipe.features",
    "amlflow.engine.recipe.leaves",
    "amlflow.engine.recipe.parser",
    "amlflow.engine.recipe.suggest",
    "amlflow.engine.recipe.transforms",
    "amlflow.engine.schema",
    "amlflow.engine.sgd",
    "amlflow.engine.streaming",
    "amlflow.engine.stats",
    "amlflow.engine.table",
    "amlflow.engine.trained",
]

# names imported from these paths before the split (by the service, tests and benches)
HISTORICAL = {
    "amlflow.engine.recipe": [
        "FUNCTIONS",
        "MAX_NAME",
        "MAX_OUTPUTS",
        "MAX_STANDARDISED",
        "PREDEFINED_GROUPS",
        "SECTIONS",
        "SUGGESTED_BINS",
        "Expr",
        "FeatureBuilder",
        "Recipe",
        "parse_recipe",
        "suggest_recipe",
    ],
    "amlflow.engine.dataset": [
        "CHUNK_BYTES",
        "FORMAT",
        "MAX_REJECTED_ROWS",
        "MAX_ROW_BYTES",
        "SPILL_BYTES",
        "VERSION",
        "DatasetInfo",
        "EncodedTable",
        "Source",
        "TableWriter",
        "build_dataset",
        "code_dtype",
    ],
}


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_is_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    assert [n for n in exported if not hasattr(module, n)] == []


@pytest.mark.parametrize(("name", "names"), sorted(HISTORICAL.items()))
def test_historical_names_stay_importable(name: str, names: list[str]) -> None:
    module = importlib.import_module(name)
    assert [n for n in names if n not in module.__all__ or not hasattr(module, n)] == []


def test_moved_names_are_the_same_objects() -> None:
    from amlflow.engine import dataset, table
    from amlflow.engine.recipe import features, parser, suggest

    assert dataset.EncodedTable is table.EncodedTable and dataset.TableWriter is table.TableWriter
    import amlflow.engine.recipe as recipe

    assert recipe.FeatureBuilder is features.FeatureBuilder
    assert recipe.parse_recipe is parser.parse_recipe and recipe.suggest_recipe is suggest.suggest_recipe
