"""A missing S3 bucket is one clear line naming the bucket and the endpoint, or is created when asked."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from prefect import flow

from amlflow.client import BucketNotFoundError, storage
from tasks._common import is_transient
from tasks.storage import upload_inputs
from tests.s3 import moto_s3_server


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (no bucket in it), the flow's process pointed at it."""
    with moto_s3_server(monkeypatch) as url:
        monkeypatch.delenv("AMLFLOW_STORAGE", raising=False)
        yield url


def _buckets(url: str) -> list[str]:
    return [b["Name"] for b in boto3.client("s3", endpoint_url=url).list_buckets()["Buckets"]]


@pytest.mark.parametrize("payload", [b"x,y\n1,0\n", "file object"])
def test_a_write_into_a_missing_bucket_names_the_bucket_and_the_endpoint(
    moto_s3: str, payload: bytes | str
) -> None:
    store = storage(endpoint_url="http://127.0.0.1:1")
    data: Any = io.BytesIO(b"x,y\n1,0\n") if payload == "file object" else payload
    with pytest.raises(BucketNotFoundError) as info:
        store.write_atomic("s3://no-such-bucket/inputs/d.csv", data)
    assert str(info.value) == (
        f"bucket 'no-such-bucket' does not exist at {moto_s3}; create it or pass create_bucket=True"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert _buckets(moto_s3) == []


def test_create_bucket_creates_the_missing_bucket_then_writes(moto_s3: str) -> None:
    store = storage(endpoint_url="http://127.0.0.1:1", create_bucket=True)
    store.write_atomic("s3://owned/inputs/d.csv", io.BytesIO(b"x,y\n1,0\n"))
    store.write_atomic("s3://owned/inputs/e.csv", b"x,y\n2,1\n")  # the bucket exists now: no second create
    assert _buckets(moto_s3) == ["owned"]
    assert store.read_bytes("s3://owned/inputs/d.csv") == b"x,y\n1,0\n"
    assert [o.key for o in store.list("s3://owned/inputs/")] == ["inputs/d.csv", "inputs/e.csv"]


def test_an_existing_bucket_is_written_as_before(moto_s3: str) -> None:
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket="there")
    store = storage(endpoint_url="http://127.0.0.1:1")
    store.write_atomic("s3://there/k", b"v")
    assert store.read_bytes("s3://there/k") == b"v"


@pytest.mark.prefect
def test_the_upload_task_fails_at_once_with_the_one_line(moto_s3: str, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,0\n")

    @flow
    def upload() -> Any:
        return upload_inputs({"train": str(data)}, "missing", "case", endpoint_url="http://127.0.0.1:1")

    state = upload(return_state=True)
    assert state.is_failed()
    with pytest.raises(
        BucketNotFoundError, match=r"^bucket 'missing' does not exist at http://127\.0\.0\.1"
    ) as info:
        state.result()
    assert not is_transient(info.value), "a missing bucket is permanent: the task is not retried"
