"""LocalStorage and S3Storage (against moto's ThreadedMotoServer): one behaviour through one interface."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from amlflow.settings import Settings
from amlflow.storage import LocalStorage, ObjectInfo, S3Storage, Storage, parse_s3_uri, storage_from_settings


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    client = _s3_client(request.getfixturevalue("moto_url"))
    bucket = f"b{abs(hash(str(tmp_path))) % 10**8}"
    client.create_bucket(Bucket=bucket)
    s3 = S3Storage(client)
    s3.bucket_for_test = bucket  # type: ignore[attr-defined]
    return s3


def _bucket(store: Storage) -> str:
    return getattr(store, "bucket_for_test", "bucket")


def test_write_read_list_exists(store: Storage, tmp_path: Path) -> None:
    b = _bucket(store)
    store.write_atomic(f"s3://{b}/data/a.csv", b"x,y\n1,2\n")
    src = tmp_path / "local.csv"
    src.write_bytes(b"from a path")
    store.write_atomic(f"s3://{b}/data/sub/c.csv", src)
    store.write_atomic(f"s3://{b}/data/b.csv", io.BytesIO(b"from a file object"))
    store.write_atomic(f"s3://{b}/data2/z.csv", b"other prefix")

    assert store.read_bytes(f"s3://{b}/data/a.csv") == b"x,y\n1,2\n"
    with store.open_read(f"s3://{b}/data/sub/c.csv") as fh:
        assert fh.read(4) == b"from" and fh.read() == b" a path"
    assert store.exists(f"s3://{b}/data/b.csv") and not store.exists(f"s3://{b}/data/nope.csv")

    # a file lists as itself; a prefix lists everything under it, in key order
    assert store.list(f"s3://{b}/data/a.csv") == [ObjectInfo(f"s3://{b}/data/a.csv", "data/a.csv", 8)]
    assert [o.key for o in store.list(f"s3://{b}/data/")] == ["data/a.csv", "data/b.csv", "data/sub/c.csv"]
    assert [o.key for o in store.list(f"s3://{b}/data")] == [
        "data/a.csv",
        "data/b.csv",
        "data/sub/c.csv",
        "data2/z.csv",
    ]
    assert [o.size for o in store.list(f"s3://{b}/data/b")] == [18]
    assert store.list(f"s3://{b}/missing/") == []
    assert store.list("s3://no-such-bucket-here/x") == []


def test_missing_object_is_file_not_found(store: Storage) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        store.read_bytes(f"s3://{_bucket(store)}/nope.csv")


def test_overwrite_replaces_whole_object(store: Storage) -> None:
    uri = f"s3://{_bucket(store)}/out/result.gz"
    store.write_atomic(uri, b"first version, longer")
    store.write_atomic(uri, b"second")
    assert store.read_bytes(uri) == b"second"


def test_bad_uris_are_refused(store: Storage) -> None:
    for uri in ("http://bucket/key", "bucket/key", "s3://", "s3:///key"):
        with pytest.raises(ValueError, match="s3://bucket/key"):
            store.list(uri)
    with pytest.raises(ValueError, match="prefix"):
        store.write_atomic(f"s3://{_bucket(store)}/dir/", b"x")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/../outside.txt",
        "s3://bucket/a/../../outside.txt",
        "s3://../etc/passwd",
        "s3://bucket//etc/passwd",
        "s3://bucket/./x",
        "s3://bucket/a\\..\\..\\x",
    ],
)
def test_local_keys_cannot_escape_the_root(tmp_path: Path, uri: str) -> None:
    store = LocalStorage(tmp_path / "root")
    with pytest.raises(ValueError) as info:
        store.write_atomic(uri, b"x")
    assert repr(uri) in str(info.value)  # the message names the URI
    with pytest.raises(ValueError):
        store.read_bytes(uri)
    assert not store.exists(uri)
    assert not (tmp_path / "outside.txt").exists()


def test_local_symlink_escape_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bucket").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s.txt").write_text("secret")
    (root / "bucket" / "link").symlink_to(tmp_path / "secret")
    store = LocalStorage(root)
    with pytest.raises(ValueError, match="outside the storage root"):
        store.read_bytes("s3://bucket/link/s.txt")


def test_local_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write_atomic("s3://b/k/file.txt", b"data")

    class Boom(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        store.write_atomic("s3://b/k/file.txt", Boom())
    assert store.read_bytes("s3://b/k/file.txt") == b"data"  # old content intact
    assert sorted(p.name for p in (tmp_path / "b" / "k").iterdir()) == ["file.txt"]


def test_storage_from_settings(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    local = storage_from_settings(Settings(home=tmp_path, storage_root=tmp_path / "r"))
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "r").resolve()
    assert isinstance(storage_from_settings(Settings(home=tmp_path)), LocalStorage)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = storage_from_settings(Settings(home=tmp_path, storage="s3"))
    assert isinstance(s3, S3Storage)
    _s3_client(moto_url).create_bucket(Bucket="from-env")
    s3.write_atomic("s3://from-env/k.txt", b"via AWS_ENDPOINT_URL_S3")
    assert (
        _s3_client(moto_url).get_object(Bucket="from-env", Key="k.txt")["Body"].read()
        == b"via AWS_ENDPOINT_URL_S3"
    )


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/a/b.csv") == ("b", "a/b.csv")
    assert parse_s3_uri("s3://b") == ("b", "")
