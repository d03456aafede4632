"""What an error means for the run, and how long to wait before trying again.

`classify()` sorts every failure of an API call into one `ErrorKind`. It is
built from small checks, each a plain predicate over the exception, tried in a
fixed order (credentials, throttling, auth, conflict, 5xx, other 4xx, then
transport errors); each check can be tested alone.

The kinds and what the runner does with them:

THROTTLE    the service refused the call for rate; nothing executed. Slow down, retry:
            pacing owns throttles, they never use up a call's attempts (up to
            THROTTLE_LIMIT in a row, so that a loop still ends).
TRANSIENT   nothing executed (503, a connection never made), or the operation is
            idempotent: retry with backoff.
CONFLICT    409: a stale version id or a LOCKED image set; nothing executed. Refresh.
            On a read (`is_locked_read`) it means "still LOCKED": look again
            (`through_locks`), never a final answer.
REFUSED     the service refused the request itself (other 4xx): nothing executed. A
            final answer for that request (a merged call is split first).
RUN_FATAL   credentials, signature, access, or a set-up that is wrong: an answer that
            is not the service's (a 4xx page with no AWS error code: a web server's
            HTML 404, a WAF's 403), an unknown operation. Nothing executed, and every
            further call would fail. Stop the run; the rows made no copy and the next
            run retries them.
AMBIGUOUS   a non-idempotent call (CopyImageSet, DeleteImageSet, UpdateImageSetMetadata)
            may or may not have executed: 500, a connection lost after sending, a read
            timeout, an answer that cannot be read, or any error we cannot place. Find
            out before retrying; a blind retry can make a second copy. Never "refused".
UNEXPECTED  an idempotent call failed with an error that is neither AWS's nor the
            network's: a bug. Raised, so the run stops with an internal error.

How aiobotocore 2.25 (aiohttp 3.x) reports a broken connection, which decides
between TRANSIENT and AMBIGUOUS (see aiobotocore/httpsession.py `send`):

* connect refused / DNS failure: `EndpointConnectionError` whose `error` kwarg is
  an aiohttp `ClientConnectorError` (or `socket.gaierror`): never sent.
* connect timeout: `ConnectTimeoutError`: never sent.
* server closed the connection without an answer (our "reset" and
  "lost_response" faults, a dropped keep-alive connection): aiohttp raises
  `ServerDisconnectedError`, which aiobotocore turns into
  `ConnectionClosedError`; a truncated body is `ClientPayloadError`, also
  `ConnectionClosedError`: possibly executed.
* connection reset by peer (RST) after sending: aiohttp `ClientOSError`, which
  aiobotocore wraps in **`EndpointConnectionError`** ("Could not connect to
  the endpoint URL") although the request may have been sent. So
  `EndpointConnectionError` only means "never sent" when the wrapped error is
  a connect failure; anything else it wraps is ambiguous.
* read timeout: `ReadTimeoutError`: possibly executed.
* errors while reading a streamed body later: `ResponseStreamingError` (or
  raw aiohttp `ClientPayloadError`): the response arrived, so the operation
  ran; only reads stream bodies here.
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar


class UnreadableAnswer(Exception):
    """A 2xx answer without what the operation always answers (a proxy's or a captive
    portal's page where the service should be): as a dropped answer, the request may have
    executed. Reads are tried again; a CopyImageSet is reconciled."""

    def __init__(self, operation: str, missing: str) -> None:
        super().__init__(f"{operation} answered without {missing}: not the service's answer")


class ErrorKind(enum.Enum):
    THROTTLE = "THROTTLE"
    TRANSIENT = "TRANSIENT"
    CONFLICT = "CONFLICT"
    REFUSED = "REFUSED"
    RUN_FATAL = "RUN_FATAL"
    AMBIGUOUS = "AMBIGUOUS"
    UNEXPECTED = "UNEXPECTED"


# Operations that change state and carry no idempotency token.
NON_IDEMPOTENT: frozenset[str] = frozenset(
    {"CopyImageSet", "DeleteImageSet", "UpdateImageSetMetadata",
     "CreateDatastore", "DeleteDatastore", "StartDICOMImportJob"}
)

THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "BandwidthLimitExceeded",
})
RUN_FATAL_CODES = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature",
    "ExpiredTokenException", "ExpiredToken", "InvalidClientTokenId", "InvalidAccessKeyId",
    "MissingAuthenticationTokenException", "MissingAuthenticationToken",
    "RequestExpired", "UnauthorizedOperation", "AuthFailure",
})
# An operation the endpoint does not know: not HealthImaging's runtime API (a wrong host,
# a host prefix that should or should not be there).
SETUP_CODES = frozenset({"UnknownOperationException", "UnknownOperation",
                         "InvalidAction", "UnsupportedOperation"})
CONFLICT_CODES = frozenset({"ConflictException"})
# Throttles of one call before it gives up: pacing, not attempts, answers throttles (the
# bucket halves on persistent ones), but a loop must end (at the default backoff cap, this
# is about half an hour of refusals).
THROTTLE_LIMIT = 100
# Answered before anything executed: the front end was unavailable.
UNAVAILABLE_CODES = frozenset({"ServiceUnavailable", "ServiceUnavailableException",
                               "RequestTimeout", "RequestTimeoutException"})
# The service may have started the work before failing.
SERVER_ERROR_CODES = frozenset({"InternalServerException", "InternalServerError",
                                "InternalFailure", "InternalError"})


# ----------------------------------------------------------------- inspection
def _client_error_parts(exc: BaseException) -> tuple[str, str, int | None] | None:
    """(code, message, http status) of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode")
    code = str(error.get("Code") or "")
    if not code and isinstance(status, int):
        code = f"HTTP{status}"
    return code, str(error.get("Message") or ""), status if isinstance(status, int) else None


def error_code(exc: BaseException) -> str:
    """The service's error code for a ClientError, else the exception's class name."""
    parts = _client_error_parts(exc)
    if parts is not None and parts[0]:
        return parts[0]
    return type(exc).__name__


_SECRET_PATTERNS = (
    re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"),
    re.compile(r"(Credential=)[^,\s]+", re.IGNORECASE),
    re.compile(r"(Signature=)[0-9a-f]+", re.IGNORECASE),
    re.compile(r"((?:X-Amz-Security-Token|aws_session_token|aws_secret_access_key|"
               r"SecretAccessKey|SessionToken)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,]+",
               re.IGNORECASE),
)
_MAX_MESSAGE = 2000


def error_message(exc: BaseException) -> str:
    """A one-line human message, scrubbed of anything that looks like a credential."""
    parts = _client_error_parts(exc)
    text = parts[1] if parts is not None and parts[1] else str(exc)
    if not text:
        text = type(exc).__name__
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


# ----------------------------------------------------------------- checks
# Each check answers one question about an exception; classify() orders them.

def is_credentials_problem(exc: BaseException) -> bool:
    """Local configuration: no credentials, no region, a missing profile, SSO expired."""
    from botocore import exceptions as bx

    return isinstance(exc, (
        bx.NoCredentialsError, bx.PartialCredentialsError, bx.NoRegionError,
        bx.CredentialRetrievalError, bx.ProfileNotFound, bx.NoAuthTokenError,
        bx.TokenRetrievalError, bx.UnauthorizedSSOTokenError,
    ))


def is_throttle(code: str, status: int | None) -> bool:
    return code in THROTTLE_CODES or status == 429


def is_run_fatal_code(code: str) -> bool:
    return code in RUN_FATAL_CODES


def is_not_the_service(code: str, status: int | None) -> bool:
    """An answer that cannot be HealthImaging's: an unknown operation, or a 4xx with no AWS
    error code at all (botocore then names the HTTP status: "404" for a web server's HTML
    page, "403" for a WAF's). The endpoint, its host prefix or a proxy is wrong: set-up,
    not the row. (A bare 429 is a throttle, a bare 408 a timeout: both pass.)"""
    if code in SETUP_CODES:
        return True
    bare = code.removeprefix("HTTP")
    return bare.isdigit() and 400 <= int(bare) < 500 and int(bare) not in (408, 429)


def is_locked_read(exc: BaseException, operation: str) -> bool:
    """A 409 to a read: the image set is LOCKED (a copy, an update, a delete runs on it),
    not a final answer. Look again later (`through_locks`)."""
    parts = _client_error_parts(exc)
    return (operation not in NON_IDEMPOTENT and parts is not None
            and is_conflict(parts[0], parts[2]))


def is_conflict(code: str, status: int | None) -> bool:
    return code in CONFLICT_CODES


def is_unavailable(code: str, status: int | None) -> bool:
    """503-like answers: the request was refused before any work started."""
    return code in UNAVAILABLE_CODES or status == 503


def is_server_error(code: str, status: int | None) -> bool:
    """500-like answers: the service may have done part or all of the work."""
    return code in SERVER_ERROR_CODES or (status is not None and status >= 500)


def _wrapped(exc: BaseException) -> BaseException | None:
    kwargs = getattr(exc, "kwargs", None)
    inner = kwargs.get("error") if isinstance(kwargs, dict) else None
    return inner if isinstance(inner, BaseException) else None


def never_sent(exc: BaseException) -> bool:
    """Transport errors that happen before the request leaves this host."""
    import aiohttp
    from botocore import exceptions as bx

    if isinstance(exc, (bx.ConnectTimeoutError, bx.ProxyConnectionError, bx.SSLError,
                        aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                        socket.gaierror)):
        return True
    if isinstance(exc, bx.EndpointConnectionError):
        # aiobotocore also wraps mid-request ClientOSError (connection reset) here.
        inner = _wrapped(exc)
        return inner is None or never_sent(inner)
    return False


def maybe_sent(exc: BaseException) -> bool:
    """Transport errors after which the server may have received the request."""
    import aiohttp
    from botocore import exceptions as bx

    if never_sent(exc):
        return False
    return isinstance(exc, (
        bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError,
        bx.IncompleteReadError, bx.HTTPClientError, bx.ConnectionError,
        aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
        asyncio.TimeoutError, TimeoutError, ConnectionError,
    ))


# ----------------------------------------------------------------- decision
def classify(exc: BaseException, *, operation: str,
             request_sent: bool | None = None) -> ErrorKind:
    """Sort one failure of `operation` into an ErrorKind (see module doc).

    request_sent: what the caller knows about the transport, if anything;
    False forces connection errors to TRANSIENT, True forces them to
    "may have executed". None: infer from the exception.
    """
    idempotent = operation not in NON_IDEMPOTENT
    maybe_executed = ErrorKind.TRANSIENT if idempotent else ErrorKind.AMBIGUOUS

    if is_credentials_problem(exc):
        return ErrorKind.RUN_FATAL
    parts = _client_error_parts(exc)
    if parts is not None:
        code, _message, status = parts
        if is_throttle(code, status):
            return ErrorKind.THROTTLE
        if is_run_fatal_code(code) or is_not_the_service(code, status):
            return ErrorKind.RUN_FATAL
        if is_conflict(code, status):
            return ErrorKind.CONFLICT
        if is_unavailable(code, status) or (code.removeprefix("HTTP") == "408"):
            return ErrorKind.TRANSIENT
        if is_server_error(code, status):
            return maybe_executed
        return ErrorKind.REFUSED
    if _is_param_validation(exc):  # botocore refused to send it
        return ErrorKind.REFUSED
    if isinstance(exc, UnreadableAnswer):
        return maybe_executed
    if request_sent is False and (never_sent(exc) or maybe_sent(exc)):
        return ErrorKind.TRANSIENT
    if never_sent(exc) and request_sent is not True:
        return ErrorKind.TRANSIENT
    if maybe_sent(exc) or never_sent(exc):
        return maybe_executed
    # Not an AWS or transport error. After a non-idempotent request may have left, that is
    # no proof it did not execute; for a read it is a bug.
    return ErrorKind.AMBIGUOUS if not idempotent else ErrorKind.UNEXPECTED


def _is_param_validation(exc: BaseException) -> bool:
    from botocore import exceptions as bx

    return isinstance(exc, (bx.ParamValidationError, bx.ValidationError))


def raise_unless_passing(exc: BaseException, operation: str,
                         fatal: type[Exception]) -> None:
    """For a read that failed after the client's retries, inside its `except`: a bug is
    raised again as it is; credentials or access refused as `fatal` ("code: message"),
    since nothing more can be read; a passing failure returns, for the caller to count."""
    kind = classify(exc, operation=operation)
    if kind is ErrorKind.UNEXPECTED:
        raise exc
    if kind is ErrorKind.RUN_FATAL:
        raise fatal(f"{error_code(exc)}: {error_message(exc)}") from None


def is_retryable(kind: ErrorKind) -> bool:
    """Whether a call may simply be repeated after this kind of failure."""
    return kind in (ErrorKind.THROTTLE, ErrorKind.TRANSIENT)


def fatal_text(code: str, message: str, datastores: dict[str, bool] | None = None) -> str:
    """Why a run stops for a RUN_FATAL error (or a data store the endpoint does not have),
    and what to do: one line for the summary and stderr."""
    missing = sorted(ds for ds, there in (datastores or {}).items() if not there)
    if missing and code == "ResourceNotFoundException":
        return (f"{code}: data store {missing[0]} is not at this endpoint: the region, the "
                "account or the endpoint is wrong, not the rows (`batchcopy doctor MANIFEST` "
                "checks the set-up); the next run retries them")
    if is_not_the_service(code, None):
        return (f"{code}: {message or 'an answer that is not HealthImaging'}: the endpoint (its "
                "URL, its runtime- host prefix, a proxy) is not HealthImaging's API; run "
                "`batchcopy doctor MANIFEST`; the next run retries these rows")
    if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
        return (f"{code}: {message} (a permission is missing: `batchcopy doctor MANIFEST` "
                "checks each one; the next run retries these rows)")
    return f"{code}: {message}"


# ----------------------------------------------------------------- backoff
@dataclass(frozen=True)
class Backoff:
    """Truncated binary exponential backoff with full jitter.

    delay(attempt) = uniform(0, min(cap, base * 2**attempt)), attempt counted
    from 0 (the wait after the first failure).
    """

    base: float = 0.5
    cap: float = 20.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must be >= 0")

    def ceiling(self, attempt: int) -> float:
        attempt = max(0, min(int(attempt), 64))  # 2**64 * base exceeds any cap
        return min(self.cap, self.base * (2 ** attempt))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        draw: Any = (rng or random).uniform
        return float(draw(0.0, self.ceiling(attempt)))


# ----------------------------------------------------------------- reads of LOCKED image sets
T = TypeVar("T")


async def through_locks(read: Callable[[], Awaitable[T]], *, operation: str, wait_s: float,
                        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """`read()`, looked at again while it answers 409 (`is_locked_read`: the image set is
    LOCKED), with growing pauses (0.05 s doubling to 5 s), for at most about `wait_s`; then
    the last 409 is raised. Any other outcome is returned or raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.05
    while True:
        try:
            return await read()
        except Exception as exc:
            if not is_locked_read(exc, operation) or loop.time() + delay > deadline:
                raise
        await sleep(delay)
        delay = min(delay * 2, 5.0)
