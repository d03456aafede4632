"""Optional SigV4 verification and deny lists (on when `EmulatorConfig.auth` is set).

The server recomputes the AWS Signature Version 4 of each request (header
form: `Authorization: AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/SERVICE/aws4_request,
SignedHeaders=..., Signature=...`) with the secret configured for the access key
and compares in constant time. Answers, all 403 like AWS JSON services:
no Authorization -> MissingAuthenticationTokenException; unknown access key ->
UnrecognizedClientException; `x-amz-security-token` listed as expired ->
ExpiredTokenException; wrong signature, wrong scope or a stale clock ->
InvalidSignatureException; a denied operation -> AccessDeniedException.
A malformed Authorization header -> IncompleteSignatureException (400).

The canonical request follows the SigV4 rules as botocore applies them to
non-S3 services: the already-encoded path is encoded once more, query pairs are
sorted by encoded key then value, header values are trimmed, the payload hash is
`x-amz-content-sha256` when sent (and checked against the body) or SHA-256 of the body.

Secrets, signatures and session tokens are never logged nor put in messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from batchcopy.emulator.config import AuthConfig
from batchcopy.emulator.errors import (
    AccessDeniedException,
    ExpiredTokenException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ServiceError,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "medical-imaging"
MAX_CLOCK_SKEW_S = 15 * 60
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. "
                  "Check your AWS Secret Access Key and signing method. "
                  "Consult the service documentation for details.")


class IncompleteSignatureException(ServiceError):
    code, status = "IncompleteSignatureException", 400


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs of an HTTP request (header names in any case)."""

    method: str
    raw_path: str  # as sent, still percent-encoded, no query
    raw_query: str  # as sent, without '?'
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Credential:
    access_key: str
    date: str
    region: str
    service: str


@dataclass(frozen=True)
class ParsedAuthorization:
    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported authorization algorithm; expected {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise IncompleteSignatureException(
            f"Authorization header requires {', '.join(repr(k) for k in missing)} parameter(s).")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise IncompleteSignatureException("Credential must have the form AK/DATE/REGION/SERVICE/aws4_request.")
    return ParsedAuthorization(
        credential=Credential(access_key=scope[0], date=scope[1], region=scope[2], service=scope[3]),
        signed_headers=tuple(h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()),
        signature=fields["Signature"].lower(),
    )


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(raw_query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(req: SignedRequest, signed_headers: Iterable[str], payload_hash: str) -> str:
    names = sorted(set(signed_headers))
    header_lines = []
    for name in names:
        values = req.header_values(name)
        header_lines.append(f"{name}:" + ",".join(" ".join(v.split()) for v in values))
    path = quote(req.raw_path or "/", safe="/~")
    return "\n".join([
        req.method.upper(),
        path,
        canonical_query(req.raw_query),
        "\n".join(header_lines) + "\n",
        ";".join(names),
        payload_hash,
    ])


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signature(secret: str, cred: Credential, amz_date: str, creq: str) -> str:
    scope = f"{cred.date}/{cred.region}/{cred.service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    key = _hmac(("AWS4" + secret).encode("utf-8"), cred.date)
    key = _hmac(key, cred.region)
    key = _hmac(key, cred.service)
    key = _hmac(key, "aws4_request")
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _parse_amz_date(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def authenticate(auth: AuthConfig, region: str, req: SignedRequest, now: float) -> str:
    """Verify the request's SigV4 signature; the caller's access key id, or raise."""
    header = req.header("Authorization")
    if not header:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    parsed = parse_authorization(header)
    cred = parsed.credential
    secret = auth.keys.get(cred.access_key)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    token = req.header("X-Amz-Security-Token")
    if token is not None and token in auth.expired_tokens:
        raise ExpiredTokenException("The security token included in the request is expired")
    if "host" not in parsed.signed_headers:
        raise InvalidSignatureException("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    amz_date = req.header("X-Amz-Date")
    when = _parse_amz_date(amz_date) if amz_date else None
    if amz_date is None or when is None:
        raise IncompleteSignatureException("Authorization header requires existence of a valid 'X-Amz-Date' header.")
    if cred.date != amz_date[:8]:
        raise InvalidSignatureException("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
    if cred.service != SERVICE:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if cred.region != region:
        raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{cred.region}'.")
    skew = abs(when.timestamp() - now)
    if skew > MAX_CLOCK_SKEW_S:
        raise InvalidSignatureException(
            f"Signature expired: {amz_date} is out of the {MAX_CLOCK_SKEW_S // 60} minute window around the server time.")
    body_hash = hashlib.sha256(req.body).hexdigest()
    sent_hash = req.header("X-Amz-Content-SHA256")
    if sent_hash is not None and sent_hash != UNSIGNED_PAYLOAD and sent_hash.lower() != body_hash:
        raise InvalidSignatureException("The provided 'x-amz-content-sha256' header does not match what was computed.")
    payload_hash = sent_hash if sent_hash is not None else body_hash
    expected = signature(secret, cred, amz_date, canonical_request(req, parsed.signed_headers, payload_hash))
    if not hmac.compare_digest(expected, parsed.signature):
        raise InvalidSignatureException(_BAD_SIGNATURE)
    return cred.access_key


def check_allowed(auth: AuthConfig, access_key: str, operation: str) -> None:
    """AccessDeniedException when the deny list names this operation for this key (or "*")."""
    denied = set(auth.deny.get(access_key, ())) | set(auth.deny.get("*", ()))
    if operation in denied or "*" in denied:
        raise AccessDeniedException(
            f"User is not authorized to perform: medical-imaging:{operation} "
            f"because no identity-based policy allows the medical-imaging:{operation} action")
