"""AML recipes (docs/aml-reference.md §5): parsing and validation, feature building, suggested recipes.

The package is split by job; every public name is re-exported here, so
``from amlflow.engine.recipe import parse_recipe, FeatureBuilder, suggest_recipe`` is the import to use:

* :mod:`~amlflow.engine.recipe.parser`: the recipe language, :func:`parse_recipe` → :class:`Recipe` of
  :class:`Expr` output expressions;
* :mod:`~amlflow.engine.recipe.transforms`: the transformations evaluated per distinct value;
* :mod:`~amlflow.engine.recipe.features`: :class:`FeatureBuilder` (fit on a training table, rows → a
  sparse feature matrix, realtime records, plain-JSON persistence);
* :mod:`~amlflow.engine.recipe.suggest`: :func:`suggest_recipe`, AML's suggested recipe.
"""

from amlflow.engine.recipe.features import MAX_STANDARDISED, FeatureBound, FeatureBuilder
from amlflow.engine.recipe.parser import (
    FUNCTIONS,
    MAX_NAME,
    MAX_OUTPUTS,
    PREDEFINED_GROUPS,
    SECTIONS,
    Expr,
    Recipe,
    parse_recipe,
)
from amlflow.engine.recipe.suggest import SUGGESTED_BINS, suggest_recipe

__all__ = [
    "FUNCTIONS",
    "MAX_NAME",
    "MAX_OUTPUTS",
    "MAX_STANDARDISED",
    "PREDEFINED_GROUPS",
    "SECTIONS",
    "SUGGESTED_BINS",
    "Expr",
    "FeatureBound",
    "FeatureBuilder",
    "Recipe",
    "parse_recipe",
    "suggest_recipe",
]
