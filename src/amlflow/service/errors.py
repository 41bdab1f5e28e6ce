"""AML errors, named after the error shapes of botocore's ``machinelearning`` model.

Every error carries ``code`` (the shape name, sent as ``__type``), ``message`` and ``http_status``
(400, except ``InternalServerException``: 500). :func:`from_engine` is the one place an engine error
becomes an AML error.
"""

from __future__ import annotations

from amlflow.engine.errors import EngineError

__all__ = [
    "AmlError",
    "IdempotentParameterMismatchException",
    "InternalServerException",
    "InvalidInputException",
    "InvalidTagException",
    "LimitExceededException",
    "PredictorNotMountedException",
    "ResourceNotFoundException",
    "TagLimitExceededException",
    "from_engine",
]

MAX_MESSAGE = 10240


class AmlError(Exception):
    """An error the API reports to the caller."""

    code = "InternalServerException"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None) -> None:
        message = str(message)[:MAX_MESSAGE]
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidInputException(AmlError):
    code = "InvalidInputException"


class ResourceNotFoundException(AmlError):
    code = "ResourceNotFoundException"


class IdempotentParameterMismatchException(AmlError):
    code = "IdempotentParameterMismatchException"


class LimitExceededException(AmlError):
    code = "LimitExceededException"


class PredictorNotMountedException(AmlError):
    code = "PredictorNotMountedException"


class InvalidTagException(AmlError):
    code = "InvalidTagException"


class TagLimitExceededException(AmlError):
    code = "TagLimitExceededException"


class InternalServerException(AmlError):
    code = "InternalServerException"
    http_status = 500


def from_engine(exc: EngineError, context: str | None = None) -> InvalidInputException:
    """An engine error (bad schema, recipe, parameter, ...) as ``InvalidInputException``, context first."""
    message = exc.message
    if not context or message.startswith(f"{context}:"):
        return InvalidInputException(message)
    return InvalidInputException(f"{context}: {message}")
