"""amlflow.service — Amazon ML's semantics over the engine and the storage (see docs/architecture.md).

``Service(settings, endpoint_url=...)`` implements the 28 operations (``service.create_ml_model(...)``,
``service.dispatch("CreateMLModel", params)``); ``amlflow.service.client.connect`` wraps it in a real
botocore client that never leaves the process.
"""

from amlflow.service.core import EMBEDDED_ENDPOINT_URL, Service
from amlflow.service.errors import AmlError

__all__ = ["EMBEDDED_ENDPOINT_URL", "AmlError", "Service"]
