"""SigV4 verification: good, missing, wrong secret, unknown key, stale or future date, tampering."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from amlflow.server.app import create_app
from amlflow.server.auth import SignedRequest, SigV4Verifier
from amlflow.server.protocol import ProtocolError
from amlflow.server.runner import ServerThread
from tests.server.fakes import FakeDispatcher
from tests.server.harness import make_client

pytestmark = pytest.mark.server

KEY, SECRET = "AKIDAMLFLOWTEST", "s3cr3t/with+chars"
TARGET = "AmazonML_20141212.GetMLModel"


@pytest.fixture(scope="module")
def signed_server() -> Iterator[ServerThread]:
    with ServerThread(lambda url: create_app(FakeDispatcher(url), credentials={KEY: SECRET})) as srv:
        yield srv


def _signed(
    url: str,
    body: bytes,
    *,
    secret: str = SECRET,
    when: dt.datetime | None = None,
    region: str = "us-east-1",
    content_sha256: str | None = None,
) -> AWSRequest:
    headers = {"X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1"}
    if content_sha256 is not None:
        headers["X-Amz-Content-SHA256"] = content_sha256
    req = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    signer = SigV4Auth(Credentials(KEY, secret), "machinelearning", region)
    if when is None:
        signer.add_auth(req)
    else:
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when  # type: ignore[assignment]
        try:
            signer.add_auth(req)
        finally:
            botocore.auth.get_current_datetime = original  # type: ignore[assignment]
    return req


def _send(req: AWSRequest, body: bytes | None = None) -> httpx.Response:
    headers = dict(req.headers.items())
    return httpx.post(req.url, headers=headers, content=req.body if body is None else body)


def test_good_signature_from_boto3(signed_server: ServerThread) -> None:
    ml = make_client(signed_server.url, key=KEY, secret=SECRET)
    assert ml.get_ml_model(MLModelId="ml-1")["MLModelId"] == "EntityId-value"
    assert httpx.get(signed_server.url + "/health").json()["auth"] == "sigv4"


def test_wrong_secret(signed_server: ServerThread) -> None:
    ml = make_client(signed_server.url, key=KEY, secret="not-the-secret")
    with pytest.raises(ml.exceptions.ClientError) as info:
        ml.get_ml_model(MLModelId="ml-1")
    err = info.value.response
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert "does not match the signature you provided" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_access_key(signed_server: ServerThread) -> None:
    ml = make_client(signed_server.url, key="AKIDUNKNOWN", secret=SECRET)
    with pytest.raises(ml.exceptions.ClientError) as info:
        ml.describe_ml_models()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_missing_signature(signed_server: ServerThread) -> None:
    r = httpx.post(signed_server.url, headers={"X-Amz-Target": TARGET}, content=b'{"MLModelId": "ml-1"}')
    assert r.status_code == 400
    assert r.json() == {
        "__type": "MissingAuthenticationTokenException",
        "message": "Request is missing Authentication Token",
    }
    assert r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_stale_date_is_signature_expired(signed_server: ServerThread) -> None:
    stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)
    r = _send(_signed(signed_server.url, b'{"MLModelId": "ml-1"}', when=stale))
    assert r.status_code == 400
    assert r.json()["__type"] == "InvalidSignatureException"
    assert r.json()["message"].startswith("Signature expired: ")
    assert r.json()["message"].endswith(" - 5 min.)")


def test_future_date_is_not_yet_current(signed_server: ServerThread) -> None:
    future = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=6)
    r = _send(_signed(signed_server.url, b'{"MLModelId": "ml-1"}', when=future))
    assert r.json()["__type"] == "InvalidSignatureException"
    assert r.json()["message"].startswith("Signature not yet current: ")


def test_small_skew_is_accepted(signed_server: ServerThread) -> None:
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=4)
    r = _send(_signed(signed_server.url, b'{"MLModelId": "ml-1"}', when=skewed))
    assert r.status_code == 200, r.text


def test_tampered_body_fails(signed_server: ServerThread) -> None:
    req = _signed(signed_server.url, b'{"MLModelId": "ml-1"}')
    r = _send(req, body=b'{"MLModelId": "ml-2"}')
    assert r.json()["__type"] == "InvalidSignatureException"


def test_body_swapped_after_signing_with_content_sha256_fails(signed_server: ServerThread) -> None:
    """A signed X-Amz-Content-SHA256 is checked against the body received, not taken on trust."""
    body = b'{"MLModelId": "ml-1"}'
    req = _signed(signed_server.url, body, content_sha256=hashlib.sha256(body).hexdigest())
    assert _send(req).status_code == 200  # the honest request verifies
    r = _send(req, body=b'{"MLModelId": "ml-2"}')
    assert r.status_code == 400
    assert r.json()["__type"] == "InvalidSignatureException"
    assert "x-amz-content-sha256" in r.json()["message"]


@pytest.mark.parametrize("marker", ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"])
def test_unsigned_payload_is_refused(signed_server: ServerThread, marker: str) -> None:
    r = _send(_signed(signed_server.url, b'{"MLModelId": "ml-1"}', content_sha256=marker))
    assert r.status_code == 400
    assert r.json()["__type"] == "InvalidSignatureException"
    assert marker in r.json()["message"]


def test_aws_cli_signs_and_verifies(signed_server: ServerThread) -> None:
    """The AWS CLI against a server with auth on: accepted with the key, refused with another secret."""
    exe = Path(sys.executable).with_name("aws")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    cmd = [str(exe), "machinelearning", "--endpoint-url", signed_server.url, "--output", "json"]
    cmd += ["get-ml-model", "--ml-model-id", "ml-cli"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["MLModelId"] == "EntityId-value"
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stderr


def test_tampered_target_fails(signed_server: ServerThread) -> None:
    req = _signed(signed_server.url, b'{"MLModelId": "ml-1"}')
    req.headers.replace_header("X-Amz-Target", "AmazonML_20141212.DeleteMLModel")
    r = _send(req)
    assert r.json()["__type"] == "InvalidSignatureException"


def test_other_region_in_scope_still_verifies(signed_server: ServerThread) -> None:
    """The signature is computed with the client's own scope (eu-west-1 was AML's other region)."""
    r = _send(_signed(signed_server.url, b'{"MLModelId": "ml-1"}', region="eu-west-1"))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/machinelearning/aws4_request",
            "requires 'SignedHeaders' parameter",
        ),
        ("Basic dXNlcjpwYXNz", "Unsupported Authorization algorithm"),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=host, Signature=00",
            "Credential should be scoped",
        ),
    ],
)
def test_incomplete_signature(signed_server: ServerThread, authorization: str, fragment: str) -> None:
    r = httpx.post(
        signed_server.url,
        headers={"X-Amz-Target": TARGET, "Authorization": authorization, "X-Amz-Date": "20260101T000000Z"},
        content=b"{}",
    )
    assert r.json()["__type"] == "IncompleteSignatureException"
    assert fragment in r.json()["message"]


def test_verifier_uses_injected_clock() -> None:
    """Unit level: the same signed request is valid at signing time and expired 10 minutes later."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    req = _signed("http://127.0.0.1:8080", b"{}", when=when)
    signed = SignedRequest(
        method="POST",
        path="/",
        query="",
        body=b"{}",
        headers=[(k, v) for k, v in req.headers.items()] + [("Host", "127.0.0.1:8080")],
    )
    epoch = when.replace(tzinfo=dt.UTC).timestamp()
    assert SigV4Verifier({KEY: SECRET}, clock=lambda: epoch).verify(signed) == KEY
    with pytest.raises(ProtocolError) as info:
        SigV4Verifier({KEY: SECRET}, clock=lambda: epoch + 600).verify(signed)
    assert info.value.code == "InvalidSignatureException"
    assert (
        "20260102T030405Z is now earlier than 20260102T030905Z (20260102T031405Z - 5 min.)"
        in info.value.message
    )


def test_verifier_needs_credentials() -> None:
    with pytest.raises(ValueError, match="credentials"):
        SigV4Verifier({})
