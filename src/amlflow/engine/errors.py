"""Errors raised by the engine.

The engine knows nothing of AWS error codes; the service translates these into
AML errors in one place (``amlflow.service.errors``)::

    EngineError (ValueError)          any problem with user input the engine detects
    ├── SchemaError                   a data schema (field named in ``field``)
    ├── RearrangementError            a DataRearrangement document
    ├── DataError                     the CSV data itself (e.g. > 10,000 rejected rows)
    ├── RecipeError                   a recipe (offending entry named in the message)
    ├── ParameterError                an ``sgd.*`` training parameter
    └── TrainingError                 training could not produce a model (e.g. one class only)

Every message names the field or entry and what was expected, e.g.
``"attributes[3].attributeType: 'NUMBER' is not one of NUMERIC, CATEGORICAL, TEXT, BINARY"``.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "EngineError",
    "ParameterError",
    "RearrangementError",
    "RecipeError",
    "SchemaError",
    "TrainingError",
]


class EngineError(ValueError):
    """Base class of every engine error; ``field`` names the offending input, if known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def message(self) -> str:
        return str(self.args[0])


class SchemaError(EngineError):
    """The data schema is invalid."""


class RearrangementError(EngineError):
    """The DataRearrangement document is invalid."""


class DataError(EngineError):
    """The data files cannot be used (unreadable, too many rejected rows, ...)."""


class RecipeError(EngineError):
    """The recipe is invalid."""


class ParameterError(EngineError):
    """A training parameter is unknown or out of range."""


class TrainingError(EngineError):
    """Training failed for a reason rooted in the data (e.g. a single target class)."""
