"""Storage tasks: put the pipeline's input files in S3 (or the local storage root) and fetch outputs.

Storage comes from :func:`amlflow.client.storage` — the same place the service reads — so
``s3://bucket/key`` works with no credentials in the embedded default and against S3/MinIO otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from prefect import get_run_logger, task

from amlflow.client import storage
from amlflow.storage.atomic import write_file_atomic
from tasks._common import RETRY_POLICY

__all__ = ["download_object", "file_sha256", "fingerprint_uri", "upload_inputs"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_uri(uri: str, endpoint_url: str | None = None) -> str:
    """A fingerprint of data already in S3: hash of the key and size of every object under ``uri``.

    Raises:
        ValueError: nothing is stored at ``uri``.
    """
    objects = storage(endpoint_url=endpoint_url).list(uri)
    if not objects:
        raise ValueError(f"input {uri!r}: no object found at this S3 location")
    listing = [[obj.key, obj.size] for obj in objects]
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()


def _join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


@task(
    name="upload_inputs",
    **RETRY_POLICY,
)
def upload_inputs(
    inputs: Mapping[str, str | None],
    bucket: str,
    prefix: str,
    endpoint_url: str | None = None,
) -> dict[str, dict[str, str]]:
    """Upload local input files to ``s3://<bucket>/<prefix>/inputs/<sha256[:16]>/<file name>``.

    Inputs that already are ``s3://`` URIs are not copied (they are fingerprinted from their listing).
    The key holds the file's content hash, so an unchanged file is uploaded once and a changed file gets
    a new key (and therefore new, deterministic AML entity IDs downstream).

    Args:
        inputs: role → local path or ``s3://`` URI (``None`` entries are skipped), e.g.
            ``{"train": "data/train.csv.gz", "batch": "data/test.csv.gz"}``.
        bucket: the S3 bucket.
        prefix: the key prefix (e.g. the case name).
        endpoint_url: the AML endpoint the flow targets (its storage is S3 unless AMLFLOW_STORAGE=local).

    Returns:
        role → ``{"uri": s3 URI, "fingerprint": content hash, "name": file name, "uploaded": "yes"|"no"}``.

    Raises:
        ValueError: a local input does not exist or is a directory (named in the message).

    Example:
        >>> upload_inputs({"train": "data/wine/winequality-red-comma.csv"}, "amlflow", "wine")
        {'train': {'uri': 's3://amlflow/wine/inputs/f5eb6b494f4f6431/winequality-red-comma.csv', ...}}
    """
    logger = get_run_logger()
    store = storage(endpoint_url=endpoint_url)
    out: dict[str, dict[str, str]] = {}
    for role, source in inputs.items():
        if source is None:
            continue
        source = str(source)
        if source.startswith("s3://"):
            out[role] = {
                "uri": source,
                "fingerprint": fingerprint_uri(source, endpoint_url),
                "name": source.rstrip("/").rsplit("/", 1)[-1],
                "uploaded": "no",
            }
            logger.info("%s input already in S3: %s", role, source)
            continue
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"input {role!r}: {source!r} is not a file (expected a local path or s3:// URI)")
        sha = file_sha256(path)
        uri = f"s3://{bucket}/{_join_key(prefix, 'inputs', sha[:16], path.name)}"
        if store.exists(uri):
            logger.info("%s input unchanged, not re-uploaded: %s", role, uri)
            uploaded = "no"
        else:
            with path.open("rb") as fh:
                store.write_atomic(uri, fh)
            logger.info("uploaded %s (%d bytes) to %s", path, path.stat().st_size, uri)
            uploaded = "yes"
        out[role] = {"uri": uri, "fingerprint": sha, "name": path.name, "uploaded": uploaded}
    return out


@task(
    name="download_object",
    **RETRY_POLICY,
)
def download_object(uri: str, destination: str, endpoint_url: str | None = None) -> str:
    """Copy one ``s3://`` object to a local file, atomically (temp file + rename).

    Args:
        uri: the object's URI.
        destination: the local file path (parent folders are created).

    Returns:
        The destination path.

    Example:
        >>> download_object("s3://amlflow/wine/out/batch-prediction/bp-1.manifest", "out/manifest.json")
        'out/manifest.json'
    """
    dest = Path(destination).expanduser()
    with storage(endpoint_url=endpoint_url).open_read(uri) as src:
        write_file_atomic(dest, src)
    get_run_logger().info("downloaded %s to %s", uri, dest)
    return str(dest)
