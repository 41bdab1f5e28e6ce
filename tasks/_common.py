"""Shared helpers of the AML tasks: deterministic IDs, the retry condition, and waiting with backoff.

Nothing here talks to AML by itself; the task modules (one per entity) call these helpers with a client
from :mod:`amlflow.client`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff

__all__ = [
    "RETRY_POLICY",
    "TRANSIENT_CODES",
    "EntityFailedError",
    "EntityWaitTimeoutError",
    "entity_id",
    "error_code",
    "is_transient",
    "resolve_text_or_uri",
    "retry_on_transient",
    "run_logger",
    "summarize",
    "wait_for_entity",
]

#: AWS error codes that are worth retrying (botocore's throttling codes plus AML's 500).
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)

#: Polling of Get*: first delay, growth factor, cap (seconds).
POLL_FIRST_DELAY = 0.2
POLL_FACTOR = 1.5
POLL_MAX_DELAY = 5.0
#: AML ended any job running longer than 7 days; the tasks wait at most this long by default.
DEFAULT_WAIT_TIMEOUT = 7 * 24 * 3600.0


class EntityFailedError(RuntimeError):
    """An AML entity ended FAILED (or was DELETED): permanent, never retried.

    Attributes:
        entity_id: the entity's ID.
        status: ``FAILED`` or ``DELETED``.
        aml_message: AML's ``Message`` for the entity ("" when it gave none).
    """

    def __init__(self, kind: str, entity_id: str, status: str, aml_message: str) -> None:
        self.entity_id = entity_id
        self.status = status
        self.aml_message = aml_message
        detail = aml_message or "no message given"
        super().__init__(f"{kind} {entity_id} ended {status}: {detail}")


class EntityWaitTimeoutError(TimeoutError):
    """An AML entity did not finish within the task's timeout."""


def run_logger() -> Any:
    """Prefect's run logger inside a flow or task run, else the ``amlflow.tasks`` logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("amlflow.tasks")


def entity_id(prefix: str, *parts: Any) -> str:
    """Derive an AML entity ID from the inputs that define the entity.

    The same inputs give the same ID, so a retried or re-run task re-attaches to the entity it created
    (AML's creates are idempotent on the ID) instead of creating a duplicate.

    Args:
        prefix: ``ds``, ``ml``, ``ev`` or ``bp``.
        *parts: JSON-serialisable values (content hashes, URIs, parameters).

    Returns:
        ``<prefix>-<24 hex chars>``, within AML's 64-character ``[a-zA-Z0-9_.-]+`` limit.

    Example:
        >>> entity_id("ds", "s3://b/k", {"splitting": {"percentEnd": 70}}) == entity_id(
        ...     "ds", "s3://b/k", {"splitting": {"percentEnd": 70}})
        True
    """
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"{prefix}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:24]}"


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError`` (None for anything else)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: throttling, 5xx/InternalServerException, connection errors.

    Permanent failures — ``InvalidInputException``, ``ResourceNotFoundException``,
    ``IdempotentParameterMismatchException``, an entity that ended FAILED — are not transient.

    Example:
        >>> from botocore.exceptions import ClientError
        >>> is_transient(ClientError({"Error": {"Code": "InternalServerException"}}, "GetMLModel"))
        True
        >>> is_transient(ClientError({"Error": {"Code": "InvalidInputException"}}, "CreateMLModel"))
        False
    """
    if isinstance(exc, ClientError):
        if error_code(exc) in TRANSIENT_CODES:
            return True
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return isinstance(status, int) and (status >= 500 or status == 429)
    if isinstance(exc, (BotocoreConnectionError, HTTPClientError)):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError)) and not isinstance(exc, EntityWaitTimeoutError)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only when its error is transient."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return False


#: Retries of every AML task, for transient failures only (throttling, 5xx, connection errors): 6 retries
#: with exponential backoff from ``AMLFLOW_TASK_RETRY_BASE`` seconds (default 1: 1, 2, 4, 8, 16, 32 s — a
#: minute in all, enough to ride out an ``amlflow serve`` restart or a rolling upgrade). Permanent errors
#: (InvalidInput, ResourceNotFound, an entity that ended FAILED) fail at once.
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = float(os.environ.get("AMLFLOW_TASK_RETRY_BASE", "1"))
RETRY_POLICY: dict[str, Any] = {
    "retries": RETRY_ATTEMPTS,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
    "retry_condition_fn": retry_on_transient,
}


class _Progress:
    """A Prefect progress artifact per waited entity: PENDING 10 %, INPROGRESS 50 %, finished 100 %."""

    _PERCENT = {"PENDING": 10.0, "INPROGRESS": 50.0, "COMPLETED": 100.0, "FAILED": 100.0, "DELETED": 100.0}

    def __init__(self, kind: str, entity: str) -> None:
        self.kind = kind
        self.entity = entity
        self.artifact_id: Any = None

    def update(self, status: str) -> None:
        from prefect.context import TaskRunContext

        if TaskRunContext.get() is None:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = self._PERCENT.get(status, 0.0)
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    percent, description=f"{self.kind} {self.entity}: {status}"
                )
            else:
                update_progress_artifact(
                    self.artifact_id, percent, description=f"{self.kind} {self.entity}: {status}"
                )
        except Exception as exc:
            run_logger().debug("progress artifact not updated: %s", exc)


def wait_for_entity(
    get: Callable[..., Mapping[str, Any]],
    id_member: str,
    entity: str,
    kind: str,
    *,
    timeout_seconds: float = DEFAULT_WAIT_TIMEOUT,
    first_delay: float = POLL_FIRST_DELAY,
    max_delay: float = POLL_MAX_DELAY,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll ``get(**{id_member: entity})`` with exponential backoff until the entity is COMPLETED.

    Args:
        get: the client's Get* method (``ml.get_ml_model``).
        id_member: its ID member (``MLModelId``).
        entity: the entity's ID.
        kind: a label for logs and errors (``ML model``).
        timeout_seconds: give up after this long (``EntityWaitTimeoutError``).
        first_delay: first poll delay in seconds; each next one is 1.5× longer, capped at ``max_delay``.
        max_delay: the longest delay between two polls.
        sleep: the sleep function (tests pass a fake).

    Returns:
        The Get* response of the COMPLETED entity.

    Raises:
        EntityFailedError: the entity ended FAILED or was DELETED (with AML's ``Message``).
        EntityWaitTimeoutError: still not finished after ``timeout_seconds``.

    Example:
        >>> wait_for_entity(ml.get_data_source, "DataSourceId", "ds-123", "datasource")  # doctest: +SKIP
    """
    logger = run_logger()
    started = time.monotonic()
    delay = first_delay
    last_status = None
    outage: BaseException | None = None
    progress = _Progress(kind, entity)
    while True:
        elapsed = time.monotonic() - started
        try:
            response = dict(get(**{id_member: entity}))
        except Exception as exc:
            if not is_transient(exc):
                raise
            # an AML job takes minutes: a server restart, throttling or a 5xx must not fail the wait
            if outage is None:
                logger.warning(
                    "%s %s: %s unreachable or failing (%s); polling on until the deadline",
                    kind,
                    entity,
                    _endpoint_of(get),
                    _describe(exc),
                )
            outage = exc
            if elapsed >= timeout_seconds:
                raise EntityWaitTimeoutError(
                    f"{kind} {entity}: no answer from {_endpoint_of(get)} for the last polls; "
                    f"last error: {_describe(exc)} (waited {elapsed:.0f} s, timeout {timeout_seconds:.0f} s)"
                ) from exc
            sleep(min(delay, max(0.0, timeout_seconds - elapsed)))
            delay = min(delay * POLL_FACTOR, max_delay)
            continue
        if outage is not None:
            logger.info("%s %s: %s answers again", kind, entity, _endpoint_of(get))
            outage = None
        status = str(response.get("Status", ""))
        if status != last_status:
            logger.info("%s %s is %s", kind, entity, status)
            progress.update(status)
            last_status = status
        if status == "COMPLETED":
            return response
        if status in ("FAILED", "DELETED"):
            raise EntityFailedError(kind, entity, status, str(response.get("Message") or ""))
        elapsed = time.monotonic() - started
        if elapsed >= timeout_seconds:
            raise EntityWaitTimeoutError(
                f"{kind} {entity} still {status} after {elapsed:.0f} s (timeout {timeout_seconds:.0f} s)"
            )
        sleep(min(delay, max(0.0, timeout_seconds - elapsed)))
        delay = min(delay * POLL_FACTOR, max_delay)


def _endpoint_of(get: Callable[..., Any]) -> str:
    """The endpoint a boto3 client method talks to (``the endpoint`` when it cannot tell)."""
    client = getattr(get, "__self__", None)
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return str(url) if url else "the endpoint"


def _describe(exc: BaseException) -> str:
    code = error_code(exc)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


def summarize(response: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of a Get* response: ``ResponseMetadata`` dropped, datetimes as ISO strings."""

    def convert(value: Any) -> Any:
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return {k: convert(v) for k, v in response.items() if k != "ResponseMetadata"}


def resolve_text_or_uri(value: str, what: str) -> tuple[str | None, str | None]:
    """Interpret a schema/recipe argument: ``s3://`` URI, inline JSON text, or a local file path.

    Returns:
        ``(text, uri)``: exactly one is set.

    Raises:
        ValueError: a local path that does not exist (the message names ``what``).
    """
    stripped = value.strip()
    if stripped.startswith("s3://"):
        return None, stripped
    if stripped.startswith("{"):
        return stripped, None
    from pathlib import Path

    path = Path(stripped).expanduser()
    if not path.is_file():
        raise ValueError(f"{what}: {value!r} is neither an s3:// URI, JSON text, nor an existing file")
    return path.read_text(encoding="utf-8"), None
