"""amlflow.storage — ``s3://bucket/key`` objects on a local root directory or on S3 (docs/architecture.md).

``Storage`` is the small protocol the service and the tasks use::

    list(uri_prefix) -> list[ObjectInfo]     the object itself if it is one, else every object below
    open_read(uri) -> BinaryIO               a streamed, binary, readable file object (close it)
    open_read_from(uri, offset) -> BinaryIO  the same from byte ``offset`` (Local and S3 storage; a range)
    read_bytes(uri) -> bytes
    write_atomic(uri, data_or_file)          bytes, a local file path or a binary file object; all or nothing
    exists(uri) -> bool
    delete(uri)                              remove one object (missing: no error)

``LocalStorage(root)`` maps ``s3://bucket/key`` to ``<root>/bucket/key``; ``S3Storage`` goes through
boto3 (``AWS_ENDPOINT_URL_S3`` honoured). :func:`storage_from_settings` is the one place that chooses.
Missing objects raise ``FileNotFoundError`` naming the URI; malformed URIs or keys escaping the root
raise ``ValueError`` naming the URI.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from amlflow.storage.atomic import write_file_atomic

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "parse_s3_uri",
    "storage_from_spec",
    "storage_from_settings",
    "storage_spec",
]

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its full ``s3://`` URI, its key inside the bucket and its size in bytes."""

    uri: str
    key: str
    size: int


@runtime_checkable
class Storage(Protocol):
    """What the service and the tasks need from a blob store."""

    def list(self, uri_prefix: str) -> list[ObjectInfo]: ...

    def open_read(self, uri: str) -> BinaryIO: ...

    def read_bytes(self, uri: str) -> bytes: ...

    def write_atomic(self, uri: str, data_or_file: bytes | str | os.PathLike[str] | BinaryIO) -> None: ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uri: str) -> None: ...


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty (a whole bucket).

    Raises:
        ValueError: not an ``s3://`` URI or no bucket.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"{uri!r}: expected an s3://bucket/key URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r}: expected an s3://bucket/key URI (no bucket)")
    return bucket, key


def _check_parts(uri: str, bucket: str, key: str) -> None:
    if bucket in (".", "..") or "/" in bucket or "\\" in bucket or "\x00" in bucket:
        raise ValueError(f"{uri!r}: invalid bucket name {bucket!r}")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"{uri!r}: invalid character in key {key!r}")
    if key.startswith("/"):
        raise ValueError(f"{uri!r}: key {key!r} is absolute (starts with '/')")
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{uri!r}: key {key!r} contains '.' or '..' segments (would escape the root)")


def _is_data(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


class LocalStorage:
    """``s3://bucket/key`` ↔ ``<root>/bucket/key`` on the local file system.

    Example:
        >>> store = LocalStorage("/tmp/amlflow-doc-root")
        >>> store.write_atomic("s3://demo/a.txt", b"hi")
        >>> [o.key for o in store.list("s3://demo/")]
        ['a.txt']
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, uri: str) -> Path:
        """The local path of ``uri`` (validated: never outside the root)."""
        bucket, key = parse_s3_uri(uri)
        _check_parts(uri, bucket, key)
        path = (self.root / bucket / key) if key else (self.root / bucket)
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ValueError(f"{uri!r}: resolves outside the storage root (a link?)")
        return path

    def list(self, uri_prefix: str) -> list[ObjectInfo]:
        """The object itself if ``uri_prefix`` names a file, else every object under the prefix (sorted)."""
        bucket, key = parse_s3_uri(uri_prefix)
        path = self.path(uri_prefix)
        if key and path.is_file():
            return [ObjectInfo(uri_prefix, key, path.stat().st_size)]
        bucket_dir = self.root / bucket
        if not bucket_dir.is_dir():
            return []
        # the deepest directory that contains every match
        base = key.rsplit("/", 1)[0] if "/" in key else ""
        start = bucket_dir / base if base else bucket_dir
        if not start.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(bucket_dir).as_posix()
                if rel.startswith(key) and not name.startswith(".amlflow-tmp-"):
                    out.append(ObjectInfo(f"s3://{bucket}/{rel}", rel, full.stat().st_size))
        out.sort(key=lambda o: o.key)
        return out

    def open_read(self, uri: str) -> BinaryIO:
        path = self.path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"{uri}: no such object")
        return path.open("rb")

    def open_read_from(self, uri: str, offset: int) -> BinaryIO:
        """Like :meth:`open_read`, positioned at byte ``offset`` (a ranged read)."""
        fh = self.open_read(uri)
        fh.seek(offset)
        return fh

    def read_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as fh:
            return fh.read()

    def exists(self, uri: str) -> bool:
        try:
            return self.path(uri).is_file()
        except ValueError:
            return False

    def delete(self, uri: str) -> None:
        """Remove one object; a missing object is not an error."""
        self.path(uri).unlink(missing_ok=True)

    def write_atomic(self, uri: str, data_or_file: bytes | str | os.PathLike[str] | BinaryIO) -> None:
        """Write the whole object or nothing: a temp file in the same directory, then ``os.replace``."""
        path = self.path(uri)
        if not parse_s3_uri(uri)[1] or uri.endswith("/"):
            raise ValueError(f"{uri!r}: expected an object URI (s3://bucket/key), not a prefix")
        if isinstance(data_or_file, bytes | bytearray | memoryview):
            write_file_atomic(path, bytes(data_or_file))
        elif isinstance(data_or_file, str | os.PathLike):
            with open(data_or_file, "rb") as src:
                write_file_atomic(path, src)
        else:
            write_file_atomic(path, data_or_file)


class _Body(io.RawIOBase):
    """A file-like view of a botocore ``StreamingBody`` (readable, closable, usable by ``io`` wrappers)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Storage:
    """Objects on S3 through boto3 (``AWS_ENDPOINT_URL_S3`` honoured).

    ``client``: a boto3 S3 client; default :func:`amlflow.client.s3_client` (the one client factory:
    region, retries and timeouts as every other amlflow client, cached).
    """

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from amlflow.client import s3_client  # the one factory (imported late: it imports storage)

            self._client = s3_client()
        return self._client

    def __repr__(self) -> str:
        return "S3Storage()"

    def _not_found(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")

    def list(self, uri_prefix: str) -> list[ObjectInfo]:
        bucket, key = parse_s3_uri(uri_prefix)
        from botocore.exceptions import ClientError

        out: list[ObjectInfo] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(f"s3://{bucket}/{obj['Key']}", obj["Key"], int(obj["Size"])))
        except ClientError as exc:
            if self._not_found(exc):
                return []
            raise
        exact = [o for o in out if o.key == key]
        if key and exact and not key.endswith("/"):
            return exact
        return sorted((o for o in out if not o.key.endswith("/")), key=lambda o: o.key)

    def open_read(self, uri: str) -> BinaryIO:
        bucket, key = parse_s3_uri(uri)
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if self._not_found(exc):
                raise FileNotFoundError(f"{uri}: no such object") from None
            raise
        return io.BufferedReader(_Body(body), _CHUNK)

    def open_read_from(self, uri: str, offset: int) -> BinaryIO:
        """Like :meth:`open_read` from byte ``offset`` on: one GetObject with ``Range: bytes=offset-``
        (only what is read is transferred; close it early to stop)."""
        if offset <= 0:
            return self.open_read(uri)
        bucket, key = parse_s3_uri(uri)
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={int(offset)}-")["Body"]
        except ClientError as exc:
            if self._not_found(exc):
                raise FileNotFoundError(f"{uri}: no such object") from None
            raise
        return io.BufferedReader(_Body(body), _CHUNK)

    def read_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as fh:
            return fh.read()

    def exists(self, uri: str) -> bool:
        bucket, key = parse_s3_uri(uri)
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if self._not_found(exc):
                return False
            raise
        return True

    def delete(self, uri: str) -> None:
        """Remove one object (S3's DeleteObject: a missing key is not an error)."""
        bucket, key = parse_s3_uri(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    def write_atomic(self, uri: str, data_or_file: bytes | str | os.PathLike[str] | BinaryIO) -> None:
        """One ``put_object``, ``upload_file`` or ``upload_fileobj``: S3 shows it whole or not at all."""
        bucket, key = parse_s3_uri(uri)
        if not key or key.endswith("/"):
            raise ValueError(f"{uri!r}: expected an object URI (s3://bucket/key), not a prefix")
        if _is_data(data_or_file):
            self.client.put_object(Bucket=bucket, Key=key, Body=bytes(data_or_file))  # type: ignore[arg-type]
        elif isinstance(data_or_file, str | os.PathLike):
            self.client.upload_file(os.fspath(data_or_file), bucket, key)
        else:
            self.client.upload_fileobj(data_or_file, bucket, key)


def storage_from_settings(settings: Any) -> Storage:
    """The storage ``settings`` choose: ``S3Storage()`` for ``storage="s3"``, else ``LocalStorage(root)``."""
    if getattr(settings, "storage", "local") == "s3":
        return S3Storage()
    return LocalStorage(settings.resolved_storage_root())


def storage_spec(storage: Storage) -> str | None:
    """What another process (a Dask worker, a datasource reader process) needs to reach ``storage``:
    ``"s3"`` (S3 as this environment configures it), a local storage root, or None (neither)."""
    if isinstance(storage, S3Storage):
        return "s3"
    if isinstance(storage, LocalStorage):
        return str(storage.root)
    return None


def storage_from_spec(spec: str) -> S3Storage | LocalStorage:
    """The storage :func:`storage_spec` described, made again in this process."""
    return S3Storage() if spec == "s3" else LocalStorage(spec)
