"""Connection limits of a real ``amlflow serve`` on 127.0.0.1, driven with raw sockets.

The server runs with short timeouts (1-2 s); the client sockets wait far longer (30 s), so a test that
passes shows the server cut the connection, without asserting how fast it did.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import ServeProcess

pytestmark = pytest.mark.server

CLIENT_WAIT = 30.0
TARGET = "AmazonML_20141212.DescribeMLModels"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-limits")
    with ServeProcess(
        tmp, "--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"
    ) as srv:
        yield srv


def _connect(srv: ServeProcess) -> socket.socket:
    sock = socket.create_connection(srv.address, timeout=CLIENT_WAIT)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises on the client's timeout)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _head(length: int) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: {TARGET}\r\n"
        f"Content-Type: application/x-amz-json-1.1\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_half_sent_body_is_cut_off_with_408(server: ServeProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(_head(100) + b'{"Limit": ')
        reply = _read_until_closed(sock)
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408"), reply
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["__type"] == "RequestTimeoutException" and "10 bytes arrived" in body["message"]


@pytest.mark.parametrize("sent", [b"", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_missing_or_half_sent_headers_close_the_connection(server: ServeProcess, sent: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(sent)
        assert _read_until_closed(sock) == b""


def test_half_sent_headers_on_a_kept_alive_connection_close_it(server: ServeProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(_head(2) + b"{}")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        rest = _read_until_closed(sock)
    assert b"HTTP/1.1" not in rest  # closed without a second response


def test_client_disconnect_mid_body_is_not_a_server_error(server: ServeProcess) -> None:
    for _ in range(3):
        with _connect(server) as sock:
            sock.sendall(_head(1000) + b'{"Limit": 1')
    # the server keeps answering, and its log shows no error and no traceback
    r = httpx.post(server.url, headers={"X-Amz-Target": TARGET}, content=b"{}", timeout=CLIENT_WAIT)
    assert r.status_code == 200
    server.stop()
    records = server.log_lines()
    assert records, "the server logged nothing"
    assert not [rec for rec in records if rec.get("status", 0) >= 500 or "exc" in rec]
    assert not [rec for rec in records if rec.get("level") in ("error", "critical")]
    assert "Traceback" not in server.log_path.read_text()


def test_connection_cap_answers_503(tmp_path: Path) -> None:
    with ServeProcess(tmp_path, "--max-connections", "2", "--header-timeout", "60") as srv:
        idle = [_connect(srv), _connect(srv)]
        try:
            with _connect(srv) as sock:
                sock.sendall(_head(2) + b"{}")
                reply = _read_until_closed(sock)
            assert reply.startswith(b"HTTP/1.1 503"), reply
        finally:
            for sock in idle:
                sock.close()
        r = httpx.post(srv.url, headers={"X-Amz-Target": TARGET}, content=b"{}", timeout=CLIENT_WAIT)
        assert r.status_code == 200


def test_limits_are_flags() -> None:
    from amlflow.cli import build_parser

    args = build_parser().parse_args(["serve", "--header-timeout", "3", "--max-connections", "7"])
    assert (args.header_timeout, args.max_connections, args.body_timeout) == (3.0, 7, 30.0)
