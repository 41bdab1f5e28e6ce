"""Server-side request validation: a thin adapter over :mod:`amlflow.service.validate`.

The rules (botocore's input shapes: required, types, max lengths, patterns, enums, ranges; the one
``Predict.PredictEndpoint`` exception) live in the service, which validates in ``Service.dispatch``
too; here a failure becomes the transport's :class:`ProtocolError` (``InvalidInputException``, 400)
so the app rejects a bad request before it reaches any dispatcher.
"""

from __future__ import annotations

from typing import Any

from amlflow.server.protocol import ProtocolError
from amlflow.service.errors import AmlError
from amlflow.service.validate import validate_input as _validate

__all__ = ["validate_input"]


def validate_input(operation: str, params: dict[str, Any]) -> None:
    """Check ``params`` against ``operation``'s input shape.

    Raises:
        ProtocolError: ``InvalidInputException`` listing the failed constraints (members by name).
    """
    try:
        _validate(operation, params)
    except AmlError as exc:
        raise ProtocolError(exc.code, exc.message, exc.http_status) from None
