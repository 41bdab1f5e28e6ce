"""The ONE place where amlflow's boto3-style clients are built.

Everything that talks to Amazon Machine Learning or S3 (the Prefect tasks, the benchmark, user scripts,
and the service's own :class:`~amlflow.storage.S3Storage`) gets its clients here, so the endpoint,
region, retries and timeouts are applied in exactly one spot and are never dropped on the way (the bug
of prefect-aws's ``client_waiter``, which rebuilds a client without ``endpoint_url``).

Which AML client you get (:func:`ml_client`):

1. ``endpoint_url=`` argument or ``AWS_ENDPOINT_URL_MACHINE_LEARNING``: ``boto3.client("machinelearning",
   endpoint_url=...)`` (an ``amlflow serve`` endpoint);
2. ``AMLFLOW_TARGET=aws``: ``boto3.client("machinelearning")`` (real AWS);
3. otherwise (``AMLFLOW_TARGET`` unset or ``embedded``): the in-process service, ``amlflow.connect()``.

Which storage you get (:func:`storage`): in the embedded default the same storage the in-process service
reads (``amlflow.storage.storage_from_settings``: ``s3://bucket/key`` is the file
``<AMLFLOW_STORAGE_ROOT>/bucket/key``, no credentials needed); against an endpoint or AWS, S3 through
boto3 honouring ``AWS_ENDPOINT_URL_S3`` (MinIO, moto, LocalStack) — unless ``AMLFLOW_STORAGE=local``
says the server shares a local storage root with this process.

Environment read here (besides boto3's own: credentials, ``AWS_ENDPOINT_URL_S3``, profiles):

| variable                              | meaning                                             | default |
|---------------------------------------|-----------------------------------------------------|---------|
| ``AMLFLOW_TARGET``                    | ``embedded`` / ``endpoint`` / ``aws``               | see above |
| ``AWS_ENDPOINT_URL_MACHINE_LEARNING`` | URL of an AML-compatible endpoint                   | unset   |
| ``AWS_REGION``, ``AWS_DEFAULT_REGION`` | region for boto3 clients                       | ``us-east-1`` |
| ``AMLFLOW_CLIENT_MAX_ATTEMPTS``       | botocore retry attempts (mode ``standard``)         | 5       |
| ``AMLFLOW_CLIENT_CONNECT_TIMEOUT``    | seconds                                             | 10      |
| ``AMLFLOW_CLIENT_READ_TIMEOUT``       | seconds                                             | 60      |

Example:
    >>> from amlflow.client import ml_client
    >>> ml = ml_client()                       # embedded: no server, no credentials
    >>> ml.describe_ml_models(Limit=1)["Results"]
    []
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import boto3
from botocore.config import Config

from amlflow.storage import S3Storage, parse_s3_uri

if TYPE_CHECKING:
    from amlflow.settings import Settings
    from amlflow.storage import Storage

__all__ = [
    "BucketNotFoundError",
    "ClientOptions",
    "client_options",
    "ml_client",
    "override",
    "reports_for",
    "reset_clients",
    "s3_client",
    "storage",
    "target",
]

Target = Literal["embedded", "endpoint", "aws"]

_LOCK = threading.Lock()
#: The one client cache: ``("embedded", home, ...)`` → in-process client, ``("boto3", service, endpoint,
#: ...)`` → boto3 client. Guarded by ``_LOCK`` (boto3 clients are thread-safe; creating them is not).
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_OVERRIDE: dict[str, Any] = {}

#: Used when a boto3 client talks to a local endpoint and no AWS credentials are configured: an
#: ``amlflow serve`` endpoint (unless started with signature checks) and moto accept any key.
_LOCAL_DUMMY_CREDENTIALS = {"aws_access_key_id": "amlflow", "aws_secret_access_key": "amlflow"}


class ClientOptions:
    """Resolved client options (from arguments, then the environment).

    Attributes:
        target: ``embedded``, ``endpoint`` or ``aws``.
        endpoint_url: the AML endpoint for ``endpoint`` (None otherwise).
        region: AWS region name.
        max_attempts: botocore retry attempts (retry mode ``standard``).
        connect_timeout: seconds.
        read_timeout: seconds.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        target: str | None = None,
        region: str | None = None,
        max_attempts: int | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        env = os.environ
        self.endpoint_url: str | None = endpoint_url or env.get("AWS_ENDPOINT_URL_MACHINE_LEARNING") or None
        raw_target = (target or env.get("AMLFLOW_TARGET") or "").strip().lower()
        if raw_target not in ("", "embedded", "endpoint", "aws"):
            raise ValueError(f"AMLFLOW_TARGET must be one of embedded, endpoint, aws; got {raw_target!r}")
        if raw_target == "endpoint" and not self.endpoint_url:
            raise ValueError(
                "AMLFLOW_TARGET=endpoint needs an endpoint: set AWS_ENDPOINT_URL_MACHINE_LEARNING "
                "(e.g. http://127.0.0.1:8080 for `amlflow serve`)"
            )
        resolved: Target
        if self.endpoint_url and raw_target != "embedded":
            resolved = "endpoint"
        elif raw_target == "aws":
            resolved = "aws"
        else:
            resolved = "embedded"
        self.target: Target = resolved
        self.region: str = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.max_attempts: int = int(max_attempts or env.get("AMLFLOW_CLIENT_MAX_ATTEMPTS") or 5)
        self.connect_timeout: float = float(
            connect_timeout or env.get("AMLFLOW_CLIENT_CONNECT_TIMEOUT") or 10
        )
        self.read_timeout: float = float(read_timeout or env.get("AMLFLOW_CLIENT_READ_TIMEOUT") or 60)

    def botocore_config(self) -> Config:
        """The botocore ``Config``: region, retry mode ``standard``, timeouts."""
        return Config(
            region_name=self.region,
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def __repr__(self) -> str:
        return (
            f"ClientOptions(target={self.target!r}, endpoint_url={self.endpoint_url!r}, "
            f"region={self.region!r})"
        )


def client_options(**overrides: Any) -> ClientOptions:
    """Resolve the client options from keyword overrides and the environment.

    Example:
        >>> client_options(endpoint_url="http://127.0.0.1:8080").target
        'endpoint'
    """
    return ClientOptions(**overrides)


def target(**overrides: Any) -> Target:
    """Which AML back end :func:`ml_client` would use: ``embedded``, ``endpoint`` or ``aws``."""
    return ClientOptions(**overrides).target


def _credentials_kwargs(endpoint_url: str | None) -> dict[str, str]:
    """Dummy credentials for a custom endpoint when boto3 finds none (never for real AWS)."""
    if endpoint_url is None:
        return {}
    if boto3.session.Session().get_credentials() is not None:
        return {}
    return dict(_LOCAL_DUMMY_CREDENTIALS)


def _embedded_key(settings: Settings | None) -> tuple[str, ...]:
    from amlflow.settings import Settings as _Settings

    resolved = settings if settings is not None else _Settings()
    return (
        "embedded",
        str(resolved.home),
        resolved.storage,
        str(resolved.resolved_storage_root()),
        str(resolved.max_jobs),
        str(resolved.seed),
    )


def ml_client(
    settings: Settings | None = None,
    *,
    endpoint_url: str | None = None,
    target: str | None = None,
    region: str | None = None,
) -> Any:
    """Return a boto3-style ``machinelearning`` client.

    An ``amlflow serve`` endpoint or AWS when ``endpoint_url`` / ``AWS_ENDPOINT_URL_MACHINE_LEARNING`` /
    ``AMLFLOW_TARGET=aws`` say so, otherwise the embedded in-process service. The embedded client is
    shared per process and per amlflow home, so every task of a flow sees the same job pool.

    Args:
        settings: embedded-service settings (``amlflow.settings.Settings``); default: the environment.
        endpoint_url: an AML-compatible endpoint (overrides the environment).
        target: ``embedded``, ``endpoint`` or ``aws`` (overrides ``AMLFLOW_TARGET``).
        region: AWS region (overrides ``AWS_REGION``).

    Returns:
        An object with the methods of ``boto3.client("machinelearning")``.

    Example:
        >>> ml = ml_client(endpoint_url="http://127.0.0.1:8080")
        >>> ml.meta.endpoint_url
        'http://127.0.0.1:8080'
    """
    if "ml" in _OVERRIDE:
        return _OVERRIDE["ml"]
    opts = ClientOptions(endpoint_url=endpoint_url, target=target, region=region)
    if opts.target == "embedded":
        key = _embedded_key(settings)
        with _LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                import amlflow

                kwargs = settings.model_dump() if settings is not None else {}
                client = amlflow.connect(**kwargs)
                _CLIENTS[key] = client
            return client
    return _boto3_client("machinelearning", opts.endpoint_url, opts)


def _boto3_client(service: str, endpoint_url: str | None, opts: ClientOptions) -> Any:
    """A cached boto3 client (boto3 clients are thread-safe; creating them concurrently is not)."""
    key = (
        "boto3",
        service,
        endpoint_url,
        opts.region,
        opts.max_attempts,
        opts.connect_timeout,
        opts.read_timeout,
        tuple(os.environ.get(v, "") for v in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3")),
    )
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = boto3.session.Session().client(
                service,
                endpoint_url=endpoint_url,  # None for AWS: boto3's regional endpoint
                config=opts.botocore_config(),
                **_credentials_kwargs(endpoint_url),
            )
            _CLIENTS[key] = client
        return client


def s3_client(*, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """Return a boto3 S3 client honouring ``AWS_ENDPOINT_URL_S3`` (MinIO, moto, LocalStack, AWS).

    Args:
        endpoint_url: an S3 endpoint (overrides ``AWS_ENDPOINT_URL_S3``).
        region: AWS region (overrides ``AWS_REGION``).

    Example:
        >>> s3 = s3_client(endpoint_url="http://127.0.0.1:9000")
        >>> s3.meta.endpoint_url
        'http://127.0.0.1:9000'
    """
    opts = ClientOptions(region=region)
    url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    return _boto3_client("s3", url, opts)


def storage(
    settings: Settings | None = None, *, endpoint_url: str | None = None, create_bucket: bool = False
) -> Storage:
    """Return the storage that holds the pipeline's ``s3://`` inputs and outputs.

    Embedded: exactly the storage the in-process service reads. Endpoint or AWS: S3 through boto3
    (:func:`s3_client`, ``AWS_ENDPOINT_URL_S3`` honoured), unless ``AMLFLOW_STORAGE=local`` (a server on
    this machine sharing ``AMLFLOW_STORAGE_ROOT``). ``endpoint_url`` (an AML endpoint given to a flow as a
    parameter rather than through ``AWS_ENDPOINT_URL_MACHINE_LEARNING``) counts as the endpoint target.

    On S3 a write into a bucket that does not exist raises :class:`BucketNotFoundError` (one line naming
    the bucket and the S3 endpoint) instead of botocore's ``NoSuchBucket`` deep in a traceback; with
    ``create_bucket=True`` (for a bucket the caller owns, such as the upload task's destination) the
    bucket is created before the first write into it. Local storage needs neither: a bucket is a folder.

    Args:
        settings: amlflow settings (default: the environment).
        endpoint_url: the AML endpoint the caller targets, if given as a parameter.
        create_bucket: create a missing bucket on the first write into it (S3 only).

    Example:
        >>> store = storage()
        >>> store.write_atomic("s3://demo/hello.txt", b"hi")
        >>> store.read_bytes("s3://demo/hello.txt")
        b'hi'
    """
    if "storage" in _OVERRIDE:
        return _OVERRIDE["storage"]  # type: ignore[no-any-return]
    from amlflow.settings import Settings as _Settings
    from amlflow.storage import storage_from_settings

    resolved = settings if settings is not None else _Settings()
    embedded = ClientOptions().target == "embedded" and not endpoint_url
    if embedded or os.environ.get("AMLFLOW_STORAGE", "").lower() == "local":
        return storage_from_settings(resolved)
    return BucketCheckedS3Storage(s3_client(), create_bucket=create_bucket)


class BucketNotFoundError(LookupError):
    """A write went to an S3 bucket that does not exist (permanent: never retried).

    Attributes:
        bucket: the bucket's name.
        endpoint_url: the S3 endpoint that answered.
    """

    def __init__(self, bucket: str, endpoint_url: str) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        super().__init__(
            f"bucket {bucket!r} does not exist at {endpoint_url}; create it or pass create_bucket=True"
        )


def _is_no_such_bucket(exc: BaseException) -> bool:
    """True for botocore's ``NoSuchBucket`` and boto3's transfer error wrapping it."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return bool(exc.response.get("Error", {}).get("Code") == "NoSuchBucket")
    return isinstance(exc, S3UploadFailedError) and "NoSuchBucket" in str(exc)


class BucketCheckedS3Storage(S3Storage):
    """:class:`~amlflow.storage.S3Storage` whose writes name a missing bucket, or create it.

    Args:
        client: a boto3 S3 client.
        create_bucket: create a missing bucket before the first write into it.
    """

    def __init__(self, client: Any, *, create_bucket: bool = False) -> None:
        super().__init__(client)
        self.create_bucket = create_bucket
        self._ready: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"BucketCheckedS3Storage(endpoint_url={self.endpoint_url!r}, create_bucket={self.create_bucket})"
        )

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint the client talks to."""
        return str(self.client.meta.endpoint_url)

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists (once per bucket and instance)."""
        if bucket in self._ready:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            region = self.client.meta.region_name
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as create_exc:
                if create_exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
        self._ready.add(bucket)

    def write_atomic(self, uri: str, data_or_file: bytes | str | os.PathLike[str] | BinaryIO) -> None:
        """``S3Storage.write_atomic``; a missing bucket is created or named (:class:`BucketNotFoundError`)."""
        bucket, _ = parse_s3_uri(uri)
        if self.create_bucket:
            self.ensure_bucket(bucket)
        try:
            super().write_atomic(uri, data_or_file)
        except Exception as exc:
            if _is_no_such_bucket(exc):
                raise BucketNotFoundError(bucket, self.endpoint_url) from None
            raise


def reports_for(client: Any) -> Any | None:
    """The embedded service's report side-channel behind ``client``, or None.

    AML's console showed baselines, confusion matrices, threshold tables and data insights that the API
    never returned; the embedded service keeps them (``get_evaluation_report(id)``,
    ``get_data_insights(id)``). A boto3 client for an endpoint or AWS has none: reports degrade.

    Example:
        >>> reports_for(ml_client(endpoint_url="http://127.0.0.1:8080")) is None
        True
    """
    for attr in ("service", "_service", "backend", "_backend"):
        candidate = getattr(client, attr, None)
        if candidate is not None and (
            hasattr(candidate, "get_evaluation_report") or hasattr(candidate, "get_data_insights")
        ):
            return candidate
    if hasattr(client, "get_evaluation_report") or hasattr(client, "get_data_insights"):
        return client
    return None


def reset_clients() -> None:
    """Forget the cached clients (closing embedded ones when they can be closed); for tests."""
    with _LOCK:
        clients = [client for key, client in _CLIENTS.items() if key[0] == "embedded"]
        _CLIENTS.clear()
    for client in clients:
        close = getattr(client, "close", None)
        if callable(close):
            close()


@contextmanager
def override(*, ml: Any | None = None, store: Storage | None = None) -> Iterator[None]:
    """Make :func:`ml_client` / :func:`storage` return the given objects inside the block (tests, tools).

    Example:
        >>> with override(ml=my_wrapped_client):
        ...     my_flow()
    """
    with _LOCK:
        saved = dict(_OVERRIDE)
        if ml is not None:
            _OVERRIDE["ml"] = ml
        if store is not None:
            _OVERRIDE["storage"] = store
    try:
        yield
    finally:
        with _LOCK:
            _OVERRIDE.clear()
            _OVERRIDE.update(saved)
