"""The send-time hook: ImagingApi spaces requests when botocore is about to send them
(after signing), not when their token was granted. On a virtual clock: a fake client
that takes a variable time to "sign" and then emits botocore's before-send event."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiobotocore.hooks import AioHierarchicalEmitter
from botocore.exceptions import ClientError

from batchcopy.aws.client import ImagingApi
from batchcopy.aws.ratelimit import RateLimiter
from batchcopy.emulator.config import RateQuota
from batchcopy.core.specs import CopyRequest

from test_ratelimit import FakeTime, aio


class SlowSigningClient:
    """copy_image_set: sign (a delay that varies per call), emit before-send, 'send'."""

    def __init__(self, t: FakeTime, signing: list[float], throttle: set[int]) -> None:
        self.meta = SimpleNamespace(events=AioHierarchicalEmitter())
        self.t = t
        self.signing = signing
        self.throttle = throttle
        self.sent: list[float] = []

    async def copy_image_set(self, **params: Any) -> dict[str, Any]:
        await self.t.sleep(self.signing[len(self.sent) % len(self.signing)])
        await self.meta.events.emit("before-send.medical-imaging.CopyImageSet",
                                    request=None)
        self.sent.append(self.t.now)
        if len(self.sent) - 1 in self.throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                               "ResponseMetadata": {"HTTPStatusCode": 429}}, "CopyImageSet")
        return {}


def request() -> CopyRequest:
    return CopyRequest(datastore_id="d" * 32, source_image_set_id="s" * 32,
                       source_version_id="1", destination_image_set_id=None,
                       destination_version_id=None, copiable_attributes=None, force=False,
                       promote_to_primary=False)


def api_for(client: SlowSigningClient, t: FakeTime) -> ImagingApi:
    limiter = RateLimiter({"CopyImageSet": (10.0, 1.0)}, clock=t, sleep=t.sleep, margin=0.0)
    return ImagingApi(client, limiter, sleep=t.sleep)


@aio
async def test_gaps_between_sends_hold_the_rate_whatever_signing_takes() -> None:
    t = FakeTime()
    # slow, quick, slow, quick...: token grants 0.1 s apart would leave 0.02 s apart
    client = SlowSigningClient(t, [0.09, 0.01], throttle=set())
    api = api_for(client, t)
    for _ in range(20):
        await api.copy_image_set(request())
    gaps = [b - a for a, b in zip(client.sent, client.sent[1:])]
    assert min(gaps) >= 0.1 - 1e-9
    assert api.limiter.bucket("CopyImageSet").sends == 20


@aio
async def test_a_throttle_after_a_spaced_send_keeps_the_rate() -> None:
    t = FakeTime()
    client = SlowSigningClient(t, [0.0], throttle={5})
    api = api_for(client, t)
    for i in range(10):
        try:
            await api.copy_image_set(request())
        except ClientError:
            assert i == 5
    bucket = api.limiter.bucket("CopyImageSet")
    assert api.stats.throttles["CopyImageSet"] == 1
    assert api.stats.jitter["CopyImageSet"] == 1
    assert bucket.current_rate == pytest.approx(10.0)


@aio
async def test_throttles_that_persist_halve_the_rate() -> None:
    t = FakeTime()
    client = SlowSigningClient(t, [0.0], throttle={5, 7, 9})
    api = api_for(client, t)
    for _ in range(10):
        try:
            await api.copy_image_set(request())
        except ClientError:
            pass
    assert api.stats.throttles["CopyImageSet"] == 3
    assert api.stats.jitter["CopyImageSet"] == 2
    assert api.limiter.bucket("CopyImageSet").current_rate < 10.0


@pytest.mark.emulator_config(enforce_rates=False)
@pytest.mark.parametrize("light", [True, False], ids=["light path", "botocore"])
def test_a_request_with_a_body_leaves_at_its_first_chunk(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, light: bool) -> None:
    """aiohttp holds a request's headers back to send them with its body, which a task of its
    own writes a turn of the event loop later: the next send is spaced from that write, not
    from the headers' trace (a loaded loop would let the next one leave too soon)."""
    from batchcopy.aws.client import ClientSettings, open_client
    from batchcopy.aws.ratelimit import TokenBucket

    store = seeded["datastores"][0]
    ds, source = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    told: list[tuple[int, float]] = []
    real_left = TokenBucket.left

    def left(self: TokenBucket, send: int, at: float) -> None:
        if self.rate < 1000:  # CopyImageSet's bucket (GetImageSet's is far quicker here)
            told.append((send, at))
        real_left(self, send, at)

    monkeypatch.setattr(TokenBucket, "left", left)

    async def go() -> None:
        async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
            api = ImagingApi(client, RateLimiter({"CopyImageSet": (100.0, 1.0)}), light=light)
            await api.get_image_set(ds, source)  # the session's trace is added on first use
            await api.copy_image_set(CopyRequest(
                datastore_id=ds, source_image_set_id=source, source_version_id="1",
                destination_image_set_id=None, destination_version_id=None,
                copiable_attributes=None, force=False, promote_to_primary=False))

    asyncio.run(go())
    # the request is spaced once its connection is ready (its headers about to be buffered):
    # then its body is written, a turn of the event loop later, and the bucket hears of it
    assert [send for send, _ in told] == [1]


# 20/s burst 1, and every GetImageSet takes 100 ms to answer: requests that overlap need
# connections of their own
@pytest.mark.emulator_config(rates={"GetImageSet": RateQuota(0.2, 1)}, faults=[
    {"kind": "latency", "operation": "GetImageSet", "latency_s": 10.0}])
def test_requests_are_spaced_once_their_connections_are_ready(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaced before aiohttp had connected it, a request that waited 60 ms for a new
    connection left together with the next one, and the service (counting arrivals)
    refused one of them; spaced once its connection is ready, none is refused."""
    from aiohttp.connector import TCPConnector

    from batchcopy.aws.client import ClientSettings, open_client

    store = seeded["datastores"][0]
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    made = {"connections": 0}
    real_create = TCPConnector._create_connection

    async def create(self: TCPConnector, *args: Any, **kwargs: Any) -> Any:
        made["connections"] += 1
        if made["connections"] == 2:  # the first new connection after the warm-up one
            await asyncio.sleep(0.06)
        return await real_create(self, *args, **kwargs)

    monkeypatch.setattr(TCPConnector, "_create_connection", create)

    async def go() -> None:
        async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
            api = ImagingApi(client, RateLimiter({"GetImageSet": (20.0, 1.0)}))
            await api.get_image_set(ds, image_set)  # the session, and one connection
            await asyncio.sleep(0.06)  # a token again
            # polls: their tokens taken by the waiter, spaced only when they leave
            await asyncio.gather(*(api.poll_image_set(ds, image_set, "1") for _ in range(4)))

    asyncio.run(go())
    assert made["connections"] >= 3  # new connections were made, one of them slow
    assert emulator.stats()["throttled"].get("GetImageSet", 0) == 0
