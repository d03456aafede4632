"""Error classification over real botocore / aiohttp exceptions, and backoff bounds."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import aiohttp
import pytest
from botocore import exceptions as bx
from botocore.exceptions import ClientError

from batchcopy.aws.retry import (
    NON_IDEMPOTENT,
    THROTTLE_LIMIT,
    Backoff,
    ErrorKind,
    classify,
    error_code,
    error_message,
    is_retryable,
)
from batchcopy.core.callstate import ActionState
from batchcopy.core.specs import CopyRequest, Status
from batchcopy.run.calls import Ended, Settled
from batchcopy.run.outcome import (
    Next,
    Refusal,
    action_ended,
    refused,
    retry_passing,
    settled_rows,
)

URL = "http://127.0.0.1:9/datastore/x"
T, A, C, R, F, TH = (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, ErrorKind.CONFLICT,
                     ErrorKind.REFUSED, ErrorKind.RUN_FATAL, ErrorKind.THROTTLE)


def client_error(code: str, status: int, message: str = "boom",
                 operation: str = "CopyImageSet") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def real_connector_error() -> aiohttp.ClientConnectorError:
    """What aiohttp really raises when nothing listens on the port."""
    async with aiohttp.ClientSession() as session:
        try:
            await session.post(f"http://127.0.0.1:{closed_port()}/")
        except aiohttp.ClientConnectorError as exc:
            return exc
    raise AssertionError("connection to a closed port succeeded")


@pytest.fixture(scope="module")
def connector_error() -> aiohttp.ClientConnectorError:
    return asyncio.run(real_connector_error())


# (exception, kind for CopyImageSet, kind for GetImageSet)
SERVICE_TABLE = [
    (client_error("ThrottlingException", 429), TH, TH),
    (client_error("TooManyRequestsException", 429), TH, TH),
    (client_error("RequestLimitExceeded", 400), TH, TH),
    (client_error("SlowDown", 503), TH, TH),
    (client_error("", 429), TH, TH),
    (client_error("AccessDeniedException", 403), F, F),
    (client_error("UnrecognizedClientException", 403), F, F),
    (client_error("InvalidSignatureException", 403), F, F),
    (client_error("ExpiredTokenException", 403), F, F),
    (client_error("ExpiredToken", 400), F, F),
    (client_error("InvalidClientTokenId", 403), F, F),
    (client_error("MissingAuthenticationTokenException", 403), F, F),
    (client_error("ConflictException", 409), C, C),
    (client_error("ValidationException", 400), R, R),
    (client_error("ResourceNotFoundException", 404), R, R),
    (client_error("BadRequestException", 400), R, R),
    (client_error("NotAcceptableException", 406), R, R),
    (client_error("ServiceQuotaExceededException", 402), R, R),
    (client_error("SomethingNew", 418), R, R),
    (client_error("InternalServerException", 500), A, T),
    (client_error("", 502), A, T),
    (client_error("", 504), A, T),
    (client_error("ServiceUnavailable", 503), T, T),
    (client_error("ServiceUnavailableException", 503), T, T),
    (client_error("", 503), T, T),
    # answers that are not the service's (botocore names the bare status): the set-up
    (client_error("404", 404), F, F),  # a web server's HTML 404 page
    (client_error("403", 403), F, F),  # a WAF's HTML page
    (client_error("400", 400), F, F),  # a proxy's text/plain Bad Request
    (client_error("UnknownOperationException", 404), F, F),
    (client_error("408", 408), T, T),
    (client_error("503", 503), T, T),  # a load balancer's HTML 503 page
    (client_error("502", 502), A, T),
]


@pytest.mark.parametrize("exc,copy_kind,get_kind", SERVICE_TABLE,
                         ids=[f"{error_code(e)}-{e.response['ResponseMetadata']['HTTPStatusCode']}"
                              for e, _, _ in SERVICE_TABLE])
def test_service_errors(exc: ClientError, copy_kind: ErrorKind, get_kind: ErrorKind) -> None:
    assert classify(exc, operation="CopyImageSet") is copy_kind
    assert classify(exc, operation="GetImageSet") is get_kind


@pytest.mark.parametrize("exc", [
    bx.NoCredentialsError(),
    bx.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
    bx.NoRegionError(),
    bx.ProfileNotFound(profile="nope"),
])
def test_local_credential_problems_are_run_fatal(exc: Exception) -> None:
    assert classify(exc, operation="CopyImageSet") is F
    assert classify(exc, operation="GetImageSet") is F


def test_parameter_validation_is_row_fatal() -> None:
    exc = bx.ParamValidationError(report="Invalid length for parameter imageSetId")
    assert classify(exc, operation="CopyImageSet") is R


def transport_table(connector: aiohttp.ClientConnectorError) -> list[tuple[BaseException, ErrorKind]]:
    """(exception, kind for CopyImageSet); GetImageSet always gets TRANSIENT."""
    return [
        # never left this host
        (bx.EndpointConnectionError(endpoint_url=URL), T),
        (bx.EndpointConnectionError(endpoint_url=URL, error=connector), T),
        (bx.ConnectTimeoutError(endpoint_url=URL), T),
        (connector, T),
        (aiohttp.ConnectionTimeoutError("Connection timeout to host"), T),
        # may have reached the server
        (bx.ReadTimeoutError(endpoint_url=URL), A),
        (bx.ConnectionClosedError(endpoint_url=URL), A),
        (bx.ConnectionClosedError(endpoint_url=URL,
                                  error=aiohttp.ServerDisconnectedError()), A),
        (bx.EndpointConnectionError(endpoint_url=URL,
                                    error=aiohttp.ClientOSError(104, "Connection reset by peer")),
         A),
        (bx.EndpointConnectionError(endpoint_url=URL,
                                    error=aiohttp.ClientConnectionError("Connection closed")), A),
        (bx.ResponseStreamingError(error=aiohttp.ClientPayloadError("truncated")), A),
        (aiohttp.ServerDisconnectedError(), A),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), A),
        (aiohttp.ClientPayloadError("Response payload is not completed"), A),
        (asyncio.TimeoutError(), A),
        (ConnectionResetError(104, "reset"), A),
    ]


def test_transport_errors(connector_error: aiohttp.ClientConnectorError) -> None:
    for exc, copy_kind in transport_table(connector_error):
        assert classify(exc, operation="CopyImageSet") is copy_kind, repr(exc)
        assert classify(exc, operation="DeleteImageSet") is copy_kind, repr(exc)
        assert classify(exc, operation="UpdateImageSetMetadata") is copy_kind, repr(exc)
        for op in ("GetImageSet", "ListImageSetVersions", "SearchImageSets",
                   "GetImageSetMetadata", "GetDatastore"):
            assert classify(exc, operation=op) is T, (op, repr(exc))


def test_request_sent_overrides_inference(connector_error: aiohttp.ClientConnectorError) -> None:
    read_timeout = bx.ReadTimeoutError(endpoint_url=URL)
    assert classify(read_timeout, operation="CopyImageSet", request_sent=False) is T
    assert classify(connector_error, operation="CopyImageSet", request_sent=True) is A
    assert classify(connector_error, operation="GetImageSet", request_sent=True) is T
    # service answers do not depend on it
    assert classify(client_error("ThrottlingException", 429), operation="CopyImageSet",
                    request_sent=True) is TH


def test_unexpected_exceptions_are_never_taken_for_a_refusal() -> None:
    # after a CopyImageSet may have left, an error we cannot place proves nothing: reconcile
    for exc in (KeyError("destinationImageSetProperties"), RuntimeError("boom"), ValueError()):
        assert classify(exc, operation="CopyImageSet") is A
    # for a read it is a bug: raised, and the run stops with an internal error
    assert classify(KeyError("versionId"), operation="GetImageSet") is ErrorKind.UNEXPECTED


def test_non_idempotent_set() -> None:
    assert {"CopyImageSet", "DeleteImageSet", "UpdateImageSetMetadata"} <= NON_IDEMPOTENT
    assert not {"GetImageSet", "ListImageSetVersions", "SearchImageSets"} & NON_IDEMPOTENT


def test_retryable_kinds() -> None:
    assert [k for k in ErrorKind if is_retryable(k)] == [TH, T]


def test_error_code_and_message() -> None:
    exc = client_error("ConflictException", 409, "Image set is locked")
    assert error_code(exc) == "ConflictException"
    assert error_message(exc) == "Image set is locked"
    assert error_code(client_error("", 502)) == "HTTP502"
    closed = bx.ConnectionClosedError(endpoint_url=URL)
    assert error_code(closed) == "ConnectionClosedError"
    assert URL in error_message(closed)
    assert error_code(aiohttp.ServerDisconnectedError()) == "ServerDisconnectedError"
    assert error_message(ValueError()) == "ValueError"


def test_error_message_never_carries_credentials() -> None:
    text = ("Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/medical-imaging/aws4_request, "
            "SignedHeaders=host, Signature=0123456789abcdef0123456789abcdef "
            "X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLETOKEN aws_secret_access_key="
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ASIAIOSFODNN7EXAMPLE")
    message = error_message(client_error("InvalidSignatureException", 403, text))
    for secret in ("AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", "0123456789abcdef",
                   "FQoGZXIvYXdzEXAMPLETOKEN", "wJalrXUtnFEMI"):
        assert secret not in message
    assert "[REDACTED]" in message
    assert "SignedHeaders=host" in message
    assert len(error_message(client_error("X", 400, "y" * 10_000))) <= 2000


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_full_jitter_bounds(attempt: int) -> None:
    backoff = Backoff(base=0.5, cap=20.0)
    ceiling = min(20.0, 0.5 * 2 ** attempt)
    rng = random.Random(attempt)
    delays = [backoff.delay(attempt, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > 0.9 * ceiling  # the whole range is used...
    assert min(delays) < 0.1 * ceiling  # ...down to zero (full jitter)


def test_backoff_is_reproducible_and_survives_huge_attempts() -> None:
    backoff = Backoff()
    assert ([backoff.delay(3, random.Random(7)) for _ in range(3)]
            == [backoff.delay(3, random.Random(7)) for _ in range(3)])
    assert 0.0 <= backoff.delay(10_000, random.Random(1)) <= 20.0
    assert Backoff(base=0.0).delay(5) == 0.0
    with pytest.raises(ValueError):
        Backoff(base=-1)


def test_a_409_to_a_read_is_a_lock_and_to_a_write_a_conflict() -> None:
    from batchcopy.aws.retry import is_locked_read

    conflict = client_error("ConflictException", 409)
    assert is_locked_read(conflict, "GetImageSet") and is_locked_read(conflict, "GetImageSetMetadata")
    assert not is_locked_read(conflict, "CopyImageSet")
    assert not is_locked_read(client_error("ValidationException", 400), "GetImageSet")


def test_through_locks_looks_again_while_the_read_answers_409() -> None:
    from batchcopy.aws.retry import through_locks

    answers = [client_error("ConflictException", 409)] * 3 + ["read"]
    pauses: list[float] = []

    async def read() -> str:
        got = answers.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    async def sleep(s: float) -> None:
        pauses.append(s)

    assert asyncio.run(through_locks(read, operation="GetImageSet", wait_s=60, sleep=sleep)) == "read"
    assert pauses == [0.05, 0.1, 0.2]
    answers[:] = [client_error("ConflictException", 409)] * 50
    with pytest.raises(ClientError):  # the wait is bounded: the 409 comes back
        asyncio.run(through_locks(read, operation="GetImageSet", wait_s=0.0, sleep=sleep))


# --- run/outcome.py: what a refused CopyImageSet means for its rows (pure) ----------------
@pytest.mark.parametrize("code,rows,over,quota_refusals,spent,expected", [
    # the concurrent-copy quota passes: send again while attempts are left, then NOT_RUN
    ("ServiceQuotaExceededException", 1, None, 1, 1, Refusal.RETRY),
    ("ServiceQuotaExceededException", 1, True, 5, 3, Refusal.NOT_RUN),
    ("ServiceQuotaExceededException", 3, False, 1, 1, Refusal.RETRY),
    # a merged call over the frames (by our count), or refused for the quota twice: split
    ("ServiceQuotaExceededException", 3, True, 1, 1, Refusal.SPLIT),
    ("ServiceQuotaExceededException", 3, False, 2, 1, Refusal.SPLIT),
    ("ServiceQuotaExceededException", 3, None, 1, 1, Refusal.SPLIT),
    # any other refusal: a merged call is split, a single row's is its final answer
    ("ValidationException", 2, False, 0, 1, Refusal.SPLIT),
    ("ValidationException", 1, False, 0, 1, Refusal.FAILED),
])
def test_a_refusal_is_retried_split_or_final(code: str, rows: int, over: bool | None,
                                              quota_refusals: int, spent: int,
                                              expected: Refusal) -> None:
    assert refused(code, rows, over, quota_refusals, spent, max_attempts=3) is expected


def test_a_passing_error_is_retried_until_the_attempts_or_the_throttles_run_out() -> None:
    assert retry_passing(spent=2, throttles=0, max_attempts=3, throttled_out=False)
    assert not retry_passing(spent=3, throttles=0, max_attempts=3, throttled_out=False)
    assert not retry_passing(spent=0, throttles=THROTTLE_LIMIT, max_attempts=3,
                             throttled_out=False)
    assert not retry_passing(spent=0, throttles=1, max_attempts=3, throttled_out=True)


# --- run/outcome.py: what a settled call means for its rows, live or resumed (pure) ------
REQ = CopyRequest("d" * 32, "s" * 32, "1", None, None, None, False, False)


def settled(ended: Ended, **fields: Any) -> Settled:
    return Settled(ended, 7, REQ, **fields)


def test_a_copied_call_succeeds_and_carries_what_it_wrote() -> None:
    v = settled_rows(settled(Ended.DONE, workflow_status="COPIED", result_image_set_id="n" * 32,
                             result_version_id="1", copy_duration_s=2.0, detection_delay_s=0.1))
    assert (v.next, v.status, v.carry, v.abort) == (Next.FINISH, Status.SUCCEEDED, True, None)
    assert v.done_call == (7, "COPIED", None)
    assert v.fields["copy_duration_s"] == 2.0 and v.fields["result_image_set_id"] == "n" * 32
    assert "error_code" not in v.fields


def test_a_failed_copy_fails_its_rows_unless_its_versions_were_overtaken() -> None:
    failed = settled(Ended.DONE, workflow_status="COPY_FAILED", message="bad frame",
                     result_image_set_id="n" * 32, result_version_id="2")
    v = settled_rows(failed)
    assert (v.next, v.status, v.carry) == (Next.FINISH, Status.FAILED, True)
    assert (v.fields["error_code"], v.fields["error_message"]) == ("COPY_FAILED", "bad frame")
    # a conflict in disguise: the rows go on to another call, the call closes alone
    v = settled_rows(failed, stale="source s is at version 2, not the 1 the call named")
    assert (v.next, v.status, v.done_call, v.carry) == (Next.REFRESH, None, None, False)


def test_an_unknown_call_is_unknown_and_stops_the_run_on_a_set_up_answer() -> None:
    v = settled_rows(settled(Ended.UNKNOWN, error_code="ExpiredTokenException",
                             error_message="expired", run_fatal=True))
    assert (v.next, v.status, v.forget) == (Next.FINISH, Status.UNKNOWN, True)
    assert v.abort == "ExpiredTokenException: expired" and v.done_call is None
    assert settled_rows(settled(Ended.UNKNOWN, error_code="RequestTimeout")).abort is None


def test_a_void_call_goes_again_and_a_refusal_goes_to_the_refusal_rules() -> None:
    assert settled_rows(settled(Ended.VOID, evidence="no new version")).next is Next.AGAIN
    refusal = settled(Ended.REJECTED, error_code="ValidationException")
    assert settled_rows(refusal).next is Next.REFUSED


@pytest.mark.parametrize("status,final", [("UPDATED", ActionState.DONE),
                                          ("DELETED", ActionState.DONE),
                                          ("UPDATE_FAILED", ActionState.FAILED),
                                          (None, ActionState.FAILED)])
def test_an_undo_action_ends_done_or_failed(status: str | None, final: ActionState) -> None:
    assert action_ended(status) is final
