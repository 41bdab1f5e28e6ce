"""The botocore client behind :func:`amlflow.service.client.connect` (see that module's docstring).

:func:`build_client` wires a real botocore ``machinelearning`` client to a service object's
``dispatch`` through a ``before-call`` handler; nothing goes over the network.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import botocore.session
from botocore.awsrequest import AWSResponse

from amlflow.service.core import EMBEDDED_ENDPOINT_URL
from amlflow.service.errors import AmlError
from amlflow.settings import Settings
from amlflow.storage.atomic import write_file_atomic

__all__ = ["build_client"]

log = logging.getLogger("amlflow.service")


def _waiter_data_path(settings: Settings) -> Path:
    """A botocore data directory holding the fast copy of machinelearning's waiters-2.json."""
    root = Path(settings.home).expanduser() / "botocore-data"
    loader = botocore.session.get_session().get_component("data_loader")
    api_version = "2014-12-12"
    config = loader.load_service_model("machinelearning", "waiters-2", api_version)
    config = json.loads(json.dumps(config))
    for waiter in config.get("waiters", {}).values():
        waiter["delay"] = settings.waiter_delay
    target = root / "machinelearning" / api_version / "waiters-2.json"
    text = json.dumps(config, indent=2, sort_keys=True)
    if not target.is_file() or target.read_text("utf-8") != text:
        write_file_atomic(target, text)
    return root


def _response(status: int, parsed: dict[str, Any], request_id: str) -> tuple[AWSResponse, dict[str, Any]]:
    headers = {"x-amzn-RequestId": request_id, "content-type": "application/x-amz-json-1.1"}
    parsed["ResponseMetadata"] = {
        "RequestId": request_id,
        "HTTPStatusCode": status,
        "HTTPHeaders": headers,
        "RetryAttempts": 0,
    }
    return AWSResponse(EMBEDDED_ENDPOINT_URL, status, headers, None), parsed


def build_client(service: Any, settings: Settings) -> Any:
    """A botocore ``machinelearning`` client whose calls go to ``service.dispatch`` in this process."""
    session = botocore.session.Session()
    session.get_component("data_loader").search_paths.insert(0, str(_waiter_data_path(settings)))
    client = session.create_client(
        "machinelearning",
        region_name=settings.region,
        endpoint_url=EMBEDDED_ENDPOINT_URL,
        aws_access_key_id="amlflow-embedded",
        aws_secret_access_key="amlflow-embedded",
    )

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        request_id = str(uuid.uuid4())
        body = params.get("body") or b"{}"
        try:
            request = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
            result = service.dispatch(model.name, request)
        except AmlError as exc:
            return _response(
                exc.http_status, {"Error": {"Code": exc.code, "Message": exc.message}}, request_id
            )
        except Exception:
            log.exception("internal error", extra={"request_id": request_id, "operation": model.name})
            return _response(
                500,
                {
                    "Error": {
                        "Code": "InternalServerException",
                        "Message": f"An internal error occurred; quote request id "
                        f"{request_id} when reporting it.",
                    }
                },
                request_id,
            )
        return _response(200, dict(result or {}), request_id)

    client.meta.events.register("before-call", before_call)
    client.service = service
    return client
