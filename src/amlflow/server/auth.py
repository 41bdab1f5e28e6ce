"""AWS Signature Version 4 verification with botocore's own signer (no hand-written crypto).

The incoming request is rebuilt as a botocore ``AWSRequest`` holding exactly the headers the client
listed in ``SignedHeaders``; botocore's :class:`~botocore.auth.SigV4Auth` then computes the canonical
request, string to sign and signature at the request's own ``X-Amz-Date`` and credential scope, and the
result is compared with :func:`hmac.compare_digest`.

Errors, as AWS JSON services send them (all HTTP 400; botocore reads the ``__type``):

==========================================  ===================================================
``MissingAuthenticationTokenException``     no ``Authorization`` header at all
``IncompleteSignatureException``            a malformed ``Authorization`` header, or no date
``UnrecognizedClientException``             an access key id that is not configured
``InvalidSignatureException``               a wrong signature; a date more than 5 minutes off
                                            ("Signature expired" / "not yet current"); an
                                            ``X-Amz-Content-SHA256`` that is not the body's hash,
                                            or is ``UNSIGNED-PAYLOAD`` / a streaming marker
==========================================  ===================================================

The signature always covers the body actually received: the verifier hashes the body itself.
botocore's signer takes a present ``X-Amz-Content-SHA256`` header on trust as the payload hash (S3
clients send it), so without that check a body swapped after signing would still verify. This is not
S3: an unsigned or streamed payload is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from amlflow.server.protocol import ProtocolError

__all__ = ["SigV4Verifier", "SignedRequest"]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs from an HTTP request.

    Attributes:
        method: the HTTP method.
        path: the raw request path (as sent, still percent-encoded).
        query: the raw query string (without ``?``).
        headers: every header as ``(name, value)`` pairs, names in any case.
        body: the raw body bytes.
    """

    method: str
    path: str
    query: str
    headers: Iterable[tuple[str, str]]
    body: bytes


class SigV4Verifier:
    """Verify SigV4 ``Authorization`` headers against configured access keys.

    Args:
        credentials: access key id → secret access key.
        max_skew_seconds: how far ``X-Amz-Date`` may be from the server's clock (AWS: 5 minutes).
        clock: returns the current time in epoch seconds (tests inject one).
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        max_skew_seconds: int = MAX_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not credentials:
            raise ValueError("credentials: expected at least one access key id → secret access key")
        self._credentials = dict(credentials)
        self._max_skew = max_skew_seconds
        self._clock = clock

    def verify(self, request: SignedRequest) -> str:
        """Check ``request``'s signature; return the access key id that signed it.

        Raises:
            ProtocolError: with one of the codes in the module docstring.
        """
        headers: dict[str, list[str]] = {}
        for name, value in request.headers:
            headers.setdefault(name.lower(), []).append(value)
        auth_values = headers.get("authorization")
        if not auth_values:
            raise ProtocolError(
                "MissingAuthenticationTokenException", "Request is missing Authentication Token"
            )
        access_key, date_stamp, region, service, signed_headers, signature = _parse_authorization(
            auth_values[0]
        )
        amz_date = _request_timestamp(headers)
        if amz_date[:8] != date_stamp:
            raise ProtocolError(
                "InvalidSignatureException",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                f"HTTP: '{date_stamp}' != '{amz_date[:8]}', from '{amz_date}'.",
            )
        secret = self._credentials.get(access_key)
        if secret is None:
            raise ProtocolError(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        self._check_skew(amz_date)
        missing = [h for h in signed_headers if h not in headers]
        if missing:
            raise ProtocolError(
                "InvalidSignatureException",
                f"The request signature we calculated does not match the signature you provided: "
                f"signed header(s) {', '.join(missing)} not present in the request.",
            )
        if "host" not in signed_headers:
            raise ProtocolError(
                "IncompleteSignatureException", "'Host' must be a signed header in SignedHeaders."
            )
        _check_payload_hash(headers.get("x-amz-content-sha256"), request.body)

        aws_request = AWSRequest(
            method=request.method.upper(),
            url=f"http://{headers['host'][0]}{request.path}" + (f"?{request.query}" if request.query else ""),
            data=request.body,
        )
        for name in signed_headers:
            for value in headers[name]:
                aws_request.headers[name] = value
        aws_request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(access_key, secret), service, region)
        canonical = signer.canonical_request(aws_request)
        expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
            raise ProtocolError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service documentation "
                "for details.",
            )
        return access_key

    def _check_skew(self, amz_date: str) -> None:
        signed_at = _dt.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=_dt.UTC)
        now = _dt.datetime.fromtimestamp(self._clock(), tz=_dt.UTC)
        skew = _dt.timedelta(seconds=self._max_skew)
        minutes = self._max_skew // 60
        stamp = now.strftime(SIGV4_TIMESTAMP)
        if signed_at < now - skew:
            raise ProtocolError(
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - skew).strftime(SIGV4_TIMESTAMP)} ({stamp} - {minutes} min.)",
            )
        if signed_at > now + skew:
            raise ProtocolError(
                "InvalidSignatureException",
                f"Signature not yet current: {amz_date} is still later than "
                f"{(now + skew).strftime(SIGV4_TIMESTAMP)} ({stamp} + {minutes} min.)",
            )


def _check_payload_hash(declared: list[str] | None, body: bytes) -> None:
    """Refuse an ``X-Amz-Content-SHA256`` that does not bind the body received."""
    if declared is None:
        return  # botocore's signer hashes the body itself: the signature covers it
    value = declared[0].strip()
    if value == "UNSIGNED-PAYLOAD" or value.startswith("STREAMING-"):
        raise ProtocolError(
            "InvalidSignatureException",
            f"X-Amz-Content-SHA256 '{value[:64]}' is not accepted: this service requires the payload to "
            f"be signed (the SHA-256 of the request body).",
        )
    actual = hashlib.sha256(body).hexdigest()
    if len(declared) != 1 or not hmac.compare_digest(
        actual.encode("ascii"), value.lower().encode("ascii", "replace")
    ):
        raise ProtocolError(
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed: the request "
            "body is not the one that was signed.",
        )


def _parse_authorization(value: str) -> tuple[str, str, str, str, list[str], str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ProtocolError(
            "IncompleteSignatureException",
            f"Unsupported Authorization algorithm '{algorithm[:64]}'; expected '{ALGORITHM}'.",
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, val = item.strip().partition("=")
        if eq:
            parts[key.strip()] = val.strip()
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "SignedHeaders", "Signature")
        if not parts.get(name)
    ]
    if problems:
        raise ProtocolError("IncompleteSignatureException", " ".join(problems))
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not all(scope):
        raise ProtocolError(
            "IncompleteSignatureException",
            "Credential should be scoped to a valid region, service and 'aws4_request': "
            "expected '<AccessKeyId>/<YYYYMMDD>/<region>/<service>/aws4_request'.",
        )
    access_key, date_stamp, region, service, _ = scope
    signed = [h.strip().lower() for h in parts["SignedHeaders"].split(";") if h.strip()]
    return access_key, date_stamp, region, service, signed, parts["Signature"]


def _request_timestamp(headers: Mapping[str, list[str]]) -> str:
    if "x-amz-date" in headers:
        stamp = headers["x-amz-date"][0].strip()
        try:
            _dt.datetime.strptime(stamp, SIGV4_TIMESTAMP)
        except ValueError:
            raise ProtocolError(
                "IncompleteSignatureException",
                f"X-Amz-Date '{stamp[:40]}' is not in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'.",
            ) from None
        return stamp
    if "date" in headers:
        from email.utils import parsedate_to_datetime

        try:
            parsed = parsedate_to_datetime(headers["date"][0])
        except (TypeError, ValueError):
            raise ProtocolError(
                "IncompleteSignatureException", "Date header is not an RFC 1123 date."
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.UTC)
        return parsed.astimezone(_dt.UTC).strftime(SIGV4_TIMESTAMP)
    raise ProtocolError(
        "IncompleteSignatureException",
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    )
