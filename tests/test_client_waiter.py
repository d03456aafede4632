"""ImagingApi and CopyWaiter over real HTTP: the emulator, and a deliberately rude server.

The emulator runs at time_scale 0.01 (conftest), so its quotas are 100x the published
ones; RateLimiter(rate_scale=100) would match them exactly. The tests pace at half
that (rate_scale=50), so network jitter on loopback cannot turn two back-to-back
copies into a throttle at the emulator.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from botocore import exceptions as bx
from botocore.exceptions import ClientError

from batchcopy.aws.client import CallStats, ClientSettings, ImagingApi, open_client
from batchcopy.emulator.config import FaultSpec, RateQuota
from batchcopy.aws.ratelimit import RateLimiter
from batchcopy.aws.retry import Backoff, ErrorKind, classify
from batchcopy.core.specs import CopyRequest
from batchcopy.run.waiter import CopyWaiter, WaiterClosed, WaitTimeout

FAST = Backoff(base=0.002, cap=0.02)
MISSING = "0" * 32


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


@asynccontextmanager
async def imaging(endpoint: str | None = None, *, limiter: RateLimiter | None = None,
                  max_attempts: int = 5, read_timeout: float = 10.0) -> AsyncIterator[ImagingApi]:
    settings = ClientSettings(endpoint_url=endpoint, region="us-east-1", read_timeout=read_timeout,
                              connect_timeout=10.0)
    async with open_client(settings) as client:
        yield ImagingApi(client, limiter or RateLimiter(rate_scale=50),
                         max_attempts=max_attempts, backoff=FAST)


def first_image_sets(seeded: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    store = seeded["datastores"][0]
    return store["datastoreId"], store["imageSets"]


def one_instance(image_set: dict[str, Any]) -> str:
    series_uid, sops = next(iter(image_set["series"].items()))
    return json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {
        series_uid: {"Instances": {sops[0]: {}}}}}})


async def copy(api: ImagingApi, **fields: Any) -> dict[str, Any]:
    """api.copy_image_set with a CopyRequest built from keyword fields (defaults: no
    destination, the whole image set, no flags)."""
    fields.setdefault("destination_image_set_id", None)
    fields.setdefault("destination_version_id", None)
    fields.setdefault("copiable_attributes", None)
    fields.setdefault("force", False)
    fields.setdefault("promote_to_primary", False)
    return await api.copy_image_set(CopyRequest(**fields))


async def start_copy(api: ImagingApi, **request: Any) -> dict[str, Any]:
    """copy_image_set, tried again when throttled (as the runner does): on a loaded
    machine a late request k and a prompt request k+1 can reach the emulator's
    burst-1 bucket closer together than we paced them."""
    for _ in range(10):
        try:
            return await copy(api, **request)
        except ClientError as exc:
            if classify(exc, operation="CopyImageSet") is not ErrorKind.THROTTLE:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("CopyImageSet throttled ten times in a row")


def calls(emulator: Any, operation: str) -> int:
    return int(emulator.stats()["calls"].get(operation, 0))


# --------------------------------------------------------------------- endpoint handling
@aio
async def test_the_host_prefix_is_botocores_to_decide(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No rule of our own (tests/test_endpoints.py has the routes): with
    AWS_DISABLE_HOST_PREFIX_INJECTION, as the emulator prints it, the endpoint from the
    environment or from the settings is used as it is; without it botocore keeps the prefix."""
    datastore, sets = first_image_sets(seeded)
    async with imaging() as api:  # endpoint from AWS_ENDPOINT_URL_MEDICAL_IMAGING
        assert api.client.meta.config.inject_host_prefix is False
        assert (await api.latest_version(datastore, sets[0]["imageSetId"]))[0] == "1"
    monkeypatch.delenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING")
    async with imaging(emulator.endpoint) as api:  # endpoint from the settings
        found = await api.get_image_set(datastore, sets[0]["imageSetId"], "1")
        assert found["imageSetState"] == "ACTIVE"
    monkeypatch.delenv("AWS_DISABLE_HOST_PREFIX_INJECTION")
    async with imaging(emulator.endpoint) as api:
        assert api.client.meta.config.inject_host_prefix is True


@aio
async def test_botocore_retries_are_off(client_env: dict[str, str]) -> None:
    async with imaging() as api:
        retries = api.client.meta.config.retries
        assert retries["total_max_attempts"] == 1


# --------------------------------------------------------------------- CopyImageSet: one attempt
COPY_FAULTS = [
    # kind, error code we get, kind for CopyImageSet, did the copy execute?
    ("internal", "InternalServerException", ErrorKind.AMBIGUOUS, False),
    ("lost_response", "ConnectionClosedError", ErrorKind.AMBIGUOUS, True),
    ("reset", "ConnectionClosedError", ErrorKind.AMBIGUOUS, False),
    ("unavailable", "ServiceUnavailableException", ErrorKind.TRANSIENT, False),
    ("throttle", "ThrottlingException", ErrorKind.THROTTLE, False),
]


@pytest.mark.parametrize("fault,code,kind,executed", COPY_FAULTS, ids=[f[0] for f in COPY_FAULTS])
@aio
async def test_copy_image_set_makes_exactly_one_attempt(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        fault: str, code: str, kind: ErrorKind, executed: bool) -> None:
    from batchcopy.aws.retry import error_code

    datastore, sets = first_image_sets(seeded)
    emulator.set_faults([FaultSpec(kind=fault, operation="CopyImageSet")])
    async with imaging(max_attempts=5) as api:
        with pytest.raises(Exception) as info:
            await copy(api, datastore_id=datastore,
                                     source_image_set_id=sets[0]["imageSetId"],
                                     source_version_id="1")
        bucket = api.limiter.bucket("CopyImageSet")
    assert error_code(info.value) == code
    assert classify(info.value, operation="CopyImageSet") is kind
    assert calls(emulator, "CopyImageSet") == 1  # botocore did not retry behind our back
    assert api.stats.calls["CopyImageSet"] == 1
    assert api.stats.retries["CopyImageSet"] == 0
    assert api.stats.errors[code] == 1
    stats = emulator.stats()
    assert stats["copies_requested"] == (1 if executed else 0)
    if fault == "throttle":
        assert api.stats.throttles["CopyImageSet"] == 1
        # the request left through the send-time hook, spaced: one throttle is jitter,
        # the rate is kept (a second one within a few sends would halve it)
        assert api.stats.jitter["CopyImageSet"] == 1
        assert bucket.current_rate == bucket.rate
        assert bucket.sends == 1
    else:
        assert bucket.current_rate == bucket.rate


@aio
async def test_copy_image_set_request_shape_and_success(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    source, destination = sets[0]["imageSetId"], sets[1]["imageSetId"]
    async with imaging() as api:
        answer = await copy(api, 
            datastore_id=datastore, source_image_set_id=source, source_version_id="1",
            destination_image_set_id=destination, destination_version_id="1",
            copiable_attributes=one_instance(sets[0]), force=True)
        assert answer["destinationImageSetProperties"]["imageSetId"] == destination
        assert answer["destinationImageSetProperties"]["latestVersionId"] == "2"
        assert api.limiter.bucket("CopyImageSet").current_rate == api.limiter.bucket(
            "CopyImageSet").rate
        with pytest.raises(ValueError, match="latest version"):
            await copy(api, datastore_id=datastore, source_image_set_id=source,
                                     source_version_id="1", destination_image_set_id=destination)
    assert api.stats.calls["CopyImageSet"] == 1


# --------------------------------------------------------------------- idempotent reads retry
@aio
async def test_get_image_set_retries_through_every_transient_fault(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    emulator.set_faults([
        FaultSpec(kind="throttle", operation="GetImageSet", count=2),
        FaultSpec(kind="reset", operation="GetImageSet", count=1),
        FaultSpec(kind="lost_response", operation="GetImageSet", count=1),
        FaultSpec(kind="unavailable", operation="GetImageSet", count=1),
        FaultSpec(kind="internal", operation="GetImageSet", count=1),
    ])
    async with imaging(max_attempts=8) as api:
        found = await api.get_image_set(datastore, sets[0]["imageSetId"])
    assert found["versionId"] == "1"
    assert calls(emulator, "GetImageSet") == 7
    assert api.stats.calls["GetImageSet"] == 7
    assert api.stats.retries["GetImageSet"] == 6
    assert api.stats.throttles["GetImageSet"] == 2
    assert api.stats.errors["ThrottlingException"] == 2
    assert api.stats.errors["ConnectionClosedError"] == 2
    assert api.stats.to_dict()["throttles"] == {"GetImageSet": 2}


@aio
async def test_get_image_set_gives_up_after_max_attempts(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    emulator.set_faults([FaultSpec(kind="unavailable", operation="GetImageSet")])
    async with imaging(max_attempts=3) as api:
        with pytest.raises(ClientError) as info:
            await api.get_image_set(datastore, sets[0]["imageSetId"])
    assert info.value.response["Error"]["Code"] == "ServiceUnavailableException"
    assert calls(emulator, "GetImageSet") == 3
    assert api.stats.retries["GetImageSet"] == 2


@aio
async def test_throttles_use_up_no_attempt_and_still_end(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pacing owns throttles: six in a row do not exhaust three attempts (the bucket slows
    down instead); an endless refusal still ends, at THROTTLE_LIMIT."""
    datastore, sets = first_image_sets(seeded)
    emulator.set_faults([FaultSpec(kind="throttle", operation="GetImageSet", count=6)])
    async with imaging(max_attempts=3) as api:
        found = await api.get_image_set(datastore, sets[0]["imageSetId"])
        bucket = api.limiter.bucket("GetImageSet")
    assert found["versionId"] == "1" and calls(emulator, "GetImageSet") == 7
    assert api.stats.throttles["GetImageSet"] == 6 and bucket.current_rate < bucket.rate
    monkeypatch.setattr("batchcopy.aws.client.THROTTLE_LIMIT", 9)
    emulator.set_faults([FaultSpec(kind="throttle", operation="GetImageSet")])
    async with imaging(max_attempts=3) as api:
        with pytest.raises(ClientError) as info:
            await api.get_image_set(datastore, sets[0]["imageSetId"])
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert calls(emulator, "GetImageSet") == 7 + 9


@aio
async def test_row_errors_are_raised_at_once(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, _ = first_image_sets(seeded)
    async with imaging() as api:
        with pytest.raises(ClientError) as info:
            await api.get_image_set(datastore, MISSING)
    assert classify(info.value, operation="GetImageSet") is ErrorKind.REFUSED
    assert calls(emulator, "GetImageSet") == 1


@aio
async def test_typed_reads(emulator: Any, client_env: dict[str, str],
                           seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    source, destination = sets[0]["imageSetId"], sets[1]["imageSetId"]
    async with imaging() as api:
        await copy(api, datastore_id=datastore, source_image_set_id=source,
                                 source_version_id="1", destination_image_set_id=destination,
                                 destination_version_id="1",
                                 copiable_attributes=one_instance(sets[0]), force=True)
        outcome = await CopyWaiter(api, first_poll_s=0.01).wait(datastore, destination, "2")
        assert outcome.succeeded
        version, state, workflow = await api.latest_version(datastore, destination)
        assert (version, state, workflow) == ("2", "ACTIVE", "COPIED")
        versions = await api.list_image_set_versions(datastore, destination)
        assert sorted(v["versionId"] for v in versions) == ["1", "2"]
        found = await api.search_image_sets(datastore, {"filters": [
            {"values": [{"DICOMStudyInstanceUID": sets[1]["studyInstanceUID"]}],
             "operator": "EQUAL"}]})
        assert destination in {s["imageSetId"] for s in found}
        document = await api.get_image_set_metadata(datastore, destination)
        assert document["ImageSetID"] == destination
        series = document["Study"]["Series"]
        copied_sop = json.loads(one_instance(sets[0]))["Study"]["Series"]
        (series_uid, entry), = copied_sop.items()
        assert set(entry["Instances"]) <= set(series[series_uid]["Instances"])
    assert api.stats.calls["GetImageSetMetadata"] == 1


# --------------------------------------------------------------------- waiter
@aio
async def test_waiter_sees_copied(emulator: Any, client_env: dict[str, str],
                                  seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    async with imaging() as api:
        answer = await copy(api, datastore_id=datastore,
                                          source_image_set_id=sets[0]["imageSetId"],
                                          source_version_id="1")
        new = answer["destinationImageSetProperties"]
        waiter = CopyWaiter(api, first_poll_s=0.01, backoff_factor=1.5, max_interval_s=0.2,
                            timeout_s=30)
        outcome = await waiter.wait(datastore, new["imageSetId"], new["latestVersionId"],
                                    expected_s=0.02)
        await waiter.aclose()
    assert outcome.succeeded
    assert (outcome.image_set_state, outcome.workflow_status) == ("ACTIVE", "COPIED")
    assert outcome.image_set_id == new["imageSetId"]
    assert 1 <= outcome.polls <= 12
    assert calls(emulator, "GetImageSet") == outcome.polls


@aio
async def test_waiter_sees_copy_failed_with_message(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    destination = sets[1]["imageSetId"]  # another patient's study: metadata disagree
    async with imaging() as api:
        answer = await copy(api, datastore_id=datastore,
                                          source_image_set_id=sets[0]["imageSetId"],
                                          source_version_id="1",
                                          destination_image_set_id=destination,
                                          destination_version_id="1",
                                          copiable_attributes=one_instance(sets[0]))
        version = answer["destinationImageSetProperties"]["latestVersionId"]
        outcome = await CopyWaiter(api, first_poll_s=0.01).wait(datastore, destination, version)
    assert not outcome.succeeded
    assert outcome.workflow_status == "COPY_FAILED"
    assert outcome.image_set_state == "ACTIVE"
    assert outcome.message


@pytest.mark.emulator_config(copy_base_s=80.0)  # 0.8 s at time_scale 0.01
@aio
async def test_waiter_polls_less_as_a_copy_drags_on(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    async with imaging() as api:
        answer = await copy(api, datastore_id=datastore,
                                          source_image_set_id=sets[0]["imageSetId"],
                                          source_version_id="1")
        new = answer["destinationImageSetProperties"]
        waiter = CopyWaiter(api, first_poll_s=0.02, backoff_factor=2.0, max_interval_s=0.25)
        assert [round(d, 3) for d, _ in zip(waiter.intervals(), range(6))] == [
            0.02, 0.04, 0.08, 0.16, 0.25, 0.25]
        # a copy expected to be quick gets its first look sooner, then the same growth
        assert [round(d, 3) for d, _ in zip(waiter.intervals(expected_s=0.005), range(4))] == [
            0.005, 0.01, 0.02, 0.04]
        assert next(waiter.intervals(expected_s=60.0)) == 0.02
        outcome = await waiter.wait(datastore, new["imageSetId"], new["latestVersionId"])
    assert outcome.succeeded
    assert outcome.waited_s >= 0.5
    # a fixed 20 ms interval would have taken ~40 polls; the growing one takes ~7
    assert 3 <= outcome.polls <= 15
    assert calls(emulator, "GetImageSet") == outcome.polls


@pytest.mark.emulator_config(copy_base_s=2000.0)  # 20 s: outlives the test
@aio
async def test_waiter_timeout_and_close(emulator: Any, client_env: dict[str, str],
                                        seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    async with imaging() as api:
        first = await start_copy(api, datastore_id=datastore,
                                 source_image_set_id=sets[0]["imageSetId"], source_version_id="1")
        second = await start_copy(api, datastore_id=datastore,
                                  source_image_set_id=sets[1]["imageSetId"], source_version_id="1")
        one, two = (a["destinationImageSetProperties"] for a in (first, second))

        short = CopyWaiter(api, first_poll_s=0.02, max_interval_s=0.05, timeout_s=0.3)
        with pytest.raises(WaitTimeout) as info:
            await short.wait(datastore, one["imageSetId"], one["latestVersionId"])
        assert info.value.last_status == "COPYING"
        assert info.value.waited_s >= 0.3  # never gives up before its timeout

        waiter = CopyWaiter(api, first_poll_s=0.02, max_interval_s=0.05)
        pending = asyncio.create_task(
            waiter.wait(datastore, two["imageSetId"], two["latestVersionId"]))
        await asyncio.sleep(0.15)
        await waiter.aclose()
        with pytest.raises(WaiterClosed):
            await asyncio.wait_for(pending, timeout=5)
        with pytest.raises(WaiterClosed):
            await waiter.wait(datastore, two["imageSetId"], two["latestVersionId"])


# 0.4 s per copy; the service's GetImageSet quota at 36/s (burst 10): above the client's
# 30/s, so only a client polling faster than its bucket gets throttled
@pytest.mark.emulator_config(copy_base_s=40.0, rates={"GetImageSet": RateQuota(0.36, 10)})
@aio
async def test_many_waiters_share_the_get_image_set_quota(
        emulator: Any, client_env: dict[str, str],
        control: Callable[..., tuple[int, Any]]) -> None:
    """Six waiters that would poll at 100/s each are held to the bucket's 30/s together
    (the service, whose quota is a little above it, never throttles), and each gets its share."""
    status, summary = control("POST", "/_emulator/seed", {
        "seed": 3, "patients": 6, "studies_per_patient": 1, "series_per_study": 1,
        "instances_per_series": 1})
    assert status == 200, summary
    datastore, sets = first_image_sets(summary)
    assert len(sets) == 6
    limiter = RateLimiter({"GetImageSet": (30.0, 1.0), "CopyImageSet": (12.5, 1.0)})
    async with imaging(limiter=limiter) as api:
        targets = []
        for image_set in sets:
            answer = await start_copy(api, datastore_id=datastore,
                                      source_image_set_id=image_set["imageSetId"],
                                      source_version_id="1")
            new = answer["destinationImageSetProperties"]
            targets.append((new["imageSetId"], new["latestVersionId"]))
        waiter = CopyWaiter(api, first_poll_s=0.01, backoff_factor=1.0, max_interval_s=0.01)
        outcomes = await asyncio.gather(*(waiter.wait(datastore, i, v) for i, v in targets))
    assert all(o.succeeded for o in outcomes)  # every copy got its turn
    polls = calls(emulator, "GetImageSet")
    assert polls == sum(o.polls for o in outcomes)
    assert polls > 6  # they polled more than once each: the quota was really shared
    counts = sorted(o.polls for o in outcomes)
    assert counts[-1] <= 3 * counts[0] + 2  # FIFO: nobody starves, nobody hogs
    assert emulator.stats()["throttled"].get("GetImageSet", 0) == 0


# --------------------------------------------------------------------- pacing
# the service's quota (25/s, burst 8) referees the client's bucket (20/s, burst 1): 30 calls
# at once through the bucket are never throttled; unpaced, the 9th would be
@pytest.mark.emulator_config(rates={"GetImageSet": RateQuota(0.25, 8)})
@aio
async def test_bucket_admits_about_its_rate(emulator: Any, client_env: dict[str, str],
                                            seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    limiter = RateLimiter({"GetImageSet": (20.0, 1.0)}, rate_scale=1)
    async with imaging(limiter=limiter) as api:
        answers = await asyncio.gather(*(api.get_image_set(datastore, sets[0]["imageSetId"])
                                         for _ in range(30)))
    assert len(answers) == 30
    assert calls(emulator, "GetImageSet") == 30
    assert emulator.stats()["throttled"].get("GetImageSet", 0) == 0


@pytest.mark.emulator_config(rates={"GetImageSet": RateQuota(0.2, 1)})  # 20/s at this scale
@aio
async def test_aimd_backs_off_a_limiter_that_is_too_fast(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    datastore, sets = first_image_sets(seeded)
    limiter = RateLimiter({"GetImageSet": (400.0, 10.0)}, rate_scale=1)
    async with imaging(limiter=limiter, max_attempts=20) as api:
        async def worker() -> None:
            for _ in range(6):
                await api.get_image_set(datastore, sets[0]["imageSetId"])

        await asyncio.gather(*(worker() for _ in range(5)))
        bucket = limiter.bucket("GetImageSet")
    assert api.stats.throttles["GetImageSet"] >= 1
    assert emulator.stats()["throttled"].get("GetImageSet", 0) == api.stats.throttles["GetImageSet"]
    assert bucket.current_rate < bucket.rate
    assert calls(emulator, "GetImageSet") == 30 + api.stats.retries["GetImageSet"]


# --------------------------------------------------------------------- a rude server
class RudeServer:
    """Reads one HTTP request per connection, then misbehaves in a chosen way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            self.requests += 1
            if self.mode == "rst":  # SO_LINGER 0: close with a TCP reset
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            elif self.mode == "fin":  # close quietly, no answer
                writer.close()
            elif self.mode == "partial":  # half an answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"datastoreId\":")
                await writer.drain()
                writer.close()
            elif self.mode == "hang":  # never answer; wait for the client to give up
                await reader.read()
                writer.close()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()


RUDE = [
    # mode, botocore exception, aiohttp exception inside it
    ("rst", bx.EndpointConnectionError, aiohttp.ClientOSError),
    ("fin", bx.ConnectionClosedError, aiohttp.ServerDisconnectedError),
    ("partial", bx.ConnectionClosedError, aiohttp.ClientPayloadError),
    ("hang", bx.ReadTimeoutError, aiohttp.ServerTimeoutError),
]


@pytest.fixture
def dummy_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")  # a loopback endpoint
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_MEDICAL_IMAGING"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("mode,outer,inner", RUDE, ids=[r[0] for r in RUDE])
@aio
async def test_dropped_connections_as_aiobotocore_reports_them(
        dummy_credentials: None, mode: str, outer: type, inner: type) -> None:
    server = RudeServer(mode)
    async with server as endpoint:
        async with imaging(endpoint, read_timeout=0.3, max_attempts=3) as api:
            with pytest.raises(outer) as copy_info:
                await copy(api, datastore_id="a" * 32, source_image_set_id="b" * 32,
                                         source_version_id="1")
            with pytest.raises(outer) as get_info:
                await api.get_image_set("a" * 32, "b" * 32)
    for info in (copy_info, get_info):
        assert isinstance(info.value.kwargs.get("error"), inner)
    # the request reached the server: a copy may have started
    assert classify(copy_info.value, operation="CopyImageSet") is ErrorKind.AMBIGUOUS
    assert classify(get_info.value, operation="GetImageSet") is ErrorKind.TRANSIENT
    assert api.stats.calls == {"CopyImageSet": 1, "GetImageSet": 3}
    assert server.requests == 4  # one copy, three reads: nobody else retried


@aio
async def test_copy_to_a_closed_port_never_left(dummy_credentials: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with imaging(f"http://127.0.0.1:{port}") as api:
        with pytest.raises(bx.EndpointConnectionError) as info:
            await copy(api, datastore_id="a" * 32, source_image_set_id="b" * 32,
                                     source_version_id="1")
    assert isinstance(info.value.kwargs["error"], aiohttp.ClientConnectorError)
    assert classify(info.value, operation="CopyImageSet") is ErrorKind.TRANSIENT
    assert api.stats.calls["CopyImageSet"] == 1


def test_call_stats_to_dict() -> None:
    stats = CallStats()
    stats.calls["GetImageSet"] += 2
    stats.errors["ThrottlingException"] += 1
    assert stats.to_dict() == {"calls": {"GetImageSet": 2}, "throttles": {}, "jitter": {},
                               "retries": {},
                               "errors": {"ThrottlingException": 1}}
