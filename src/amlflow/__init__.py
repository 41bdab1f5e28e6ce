"""amlflow: the open, local successor to Amazon Machine Learning.

``amlflow.connect()`` returns an in-process client with the methods of boto3's ``machinelearning`` client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "connect"]
__version__ = "0.1.0"


def connect(**settings: Any) -> Any:
    """Return an in-process AML client (see ``amlflow.service.client``)."""
    from amlflow.service.client import connect as _connect

    return _connect(**settings)
