"""When CopyWaiter looks at copies, on a virtual clock shared with the emulator: copies take
tens of (virtual) seconds and the test takes a fraction of a real one. The emulator's model
reads the same clock, so its timeline (GET /_emulator/copies: when each copy ended, when a
GetImageSet first showed it ended) is exact, and the tests count with it:

* a copy that ended is seen before any copy that ends later, at its end once its size is known;
* copies planned on a first guess are planned again when a copy of their size ends;
* while a slot is wanted, no ended copy stays unseen longer than its re-look interval.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from batchcopy.aws.client import ClientSettings, ImagingApi, open_client
from batchcopy.aws.ratelimit import RateLimiter
from batchcopy.core.specs import CopyRequest
from batchcopy.emulator.config import EmulatorConfig
from batchcopy.emulator.model import HealthImaging
from batchcopy.emulator.server import EmulatorServer
from conftest import control_call

BASE_S, PER_FRAME_S = 10.0, 10.0  # a copy of k one-frame instances takes 10 + 10 k seconds
UNLIMITED = {op: (math.inf, None) for op in ("CopyImageSet", "GetImageSet")}


class VirtualTime:
    """A clock the test moves: `sleep()` waits for it; a driver task moves it to the next
    sleeper whenever everything else is quiet (no look out, no call of the test's own, every
    woken sleeper resumed, checked twice some loop turns apart)."""

    def __init__(self) -> None:
        self.epoch = float(int(time.time()))
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._woken = 0
        self.busy = 0

    def now(self) -> float:
        return self.t

    def service_clock(self) -> float:
        return self.epoch + self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._seq), future))
        try:
            await future
        finally:
            if future.done() and not future.cancelled():
                self._woken -= 1

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Time stands still meanwhile (a call of the test's own)."""
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    async def drive(self, quiet: Callable[[], bool]) -> None:
        for _ in range(100_000):  # bounded: a stuck test fails instead of hanging
            settled = True
            for _ in range(3):
                await asyncio.sleep(0.001)
                for _ in range(5):
                    await asyncio.sleep(0)
                if self.busy or self._woken or not quiet():
                    settled = False
                    break
            if not settled:
                continue
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                continue
            self.t = self._sleepers[0][0]
            while self._sleepers and self._sleepers[0][0] <= self.t:
                future = heapq.heappop(self._sleepers)[2]
                if not future.done():
                    self._woken += 1
                    future.set_result(None)
        raise AssertionError("virtual time never settled")


class World:
    def __init__(self, server: EmulatorServer, api: ImagingApi, vt: VirtualTime,
                 waiter: Any) -> None:
        self.server, self.api, self.vt, self.waiter = server, api, vt, waiter
        status, summary = control_call(server.endpoint, "POST", "/_emulator/seed", {
            "seed": 9, "patients": 12, "studies_per_patient": 1, "series_per_study": 1,
            "instances_per_series": 8, "frames_per_instance": 1})
        assert status == 200, summary
        store = summary["datastores"][0]
        self.ds = store["datastoreId"]
        self.sources = [(s["imageSetId"], next(iter(s["series"].items())))
                        for s in store["imageSets"]]
        self.used = 0

    async def copy(self, instances: int) -> Any:
        """Copy `instances` of the next unused source into a new image set; then wait for it
        (a task). Time stands still while the call is out."""
        source, (series, sops) = self.sources[self.used]
        self.used += 1
        attrs = ('{"SchemaVersion":"1.1","Study":{"Series":{"%s":{"Instances":{%s}}}}}'
                 % (series, ",".join(f'"{sop}":{{}}' for sop in sops[:instances])))
        async with self.vt.hold():
            answer = await self.api.copy_image_set(CopyRequest(
                datastore_id=self.ds, source_image_set_id=source, source_version_id="1",
                destination_image_set_id=None, destination_version_id=None,
                copiable_attributes=attrs, force=False, promote_to_primary=False))
        dest = answer["destinationImageSetProperties"]
        return asyncio.ensure_future(self.waiter.wait(
            self.ds, dest["imageSetId"], dest["latestVersionId"], size=instances,
            answered_at=self.vt.now(), started_at=dest["updatedAt"]))

    def timeline(self) -> list[dict[str, Any]]:
        status, body = control_call(self.server.endpoint, "GET", "/_emulator/copies")
        assert status == 200
        return [{**c, "ended_at": c["ended_at"] - self.vt.epoch,
                 "seen_ended_at": c["seen_ended_at"] - self.vt.epoch} for c in body["copies"]]


def in_world(test: Callable[[World], Coroutine[Any, Any, None]], **waiter_kw: Any
             ) -> Callable[[pytest.MonkeyPatch, Any], None]:
    def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
        from batchcopy.run.waiter import CopyWaiter

        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",  # a loopback endpoint
                            "AWS_CONFIG_FILE": str(tmp_path / "none"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
            monkeypatch.setenv(name, value)
        vt = VirtualTime()
        config = EmulatorConfig(time_scale=1.0, enforce_rates=False, copy_base_s=BASE_S,
                                copy_per_frame_s=PER_FRAME_S)
        server = EmulatorServer(model=HealthImaging(config, clock=vt.service_clock)).start()

        async def go() -> None:
            settings = ClientSettings(endpoint_url=server.endpoint, region="us-east-1")
            async with open_client(settings) as client:
                api = ImagingApi(client, RateLimiter(UNLIMITED))
                waiter = CopyWaiter(api, clock=vt.now, sleep=vt.sleep, **{
                    "first_poll_s": 5.0, "max_interval_s": 60.0, **waiter_kw})
                driver = asyncio.ensure_future(vt.drive(lambda: waiter.looks_out == 0))
                try:
                    await test(World(server, api, vt, waiter))
                finally:
                    driver.cancel()
                    await waiter.aclose()

        try:
            asyncio.run(go())
        finally:
            server.stop()
    return run


async def learn(world: World, *sizes: int) -> None:
    """One copy of each size, waited for: the waiter knows their durations after."""
    outcomes = await asyncio.gather(*[await world.copy(n) for n in sizes])
    for n, outcome in zip(sizes, outcomes):
        assert outcome.succeeded
        assert outcome.copy_duration_s == BASE_S + PER_FRAME_S * n  # the service's stamps


async def _seen_in_the_order_they_end(world: World) -> None:
    await learn(world, 1, 2, 4)
    first = len(world.timeline())
    waits = []
    for n in (4, 2, 1):  # started longest first: they end in the other order
        waits.append(await world.copy(n))
        await world.vt.sleep(1.0)
    outcomes = await asyncio.gather(*waits)
    late = world.timeline()[first:]
    assert [c["ended_at"] for c in late] == sorted((c["ended_at"] for c in late), reverse=True)
    assert [c["seen_ended_at"] for c in late] == sorted(
        (c["seen_ended_at"] for c in late), reverse=True)  # seen in the order they ended
    for copy, outcome in zip(late, outcomes):
        assert copy["seen_ended_at"] - copy["ended_at"] < 0.01  # at its end, by one look
        assert copy["reads_running"] == 0 and outcome.polls == 1
        assert outcome.detection_delay_s is not None and outcome.detection_delay_s < 0.01


test_a_copy_that_ended_is_seen_before_any_later_ending_one = in_world(_seen_in_the_order_they_end)


async def _first_guesses_planned_again(world: World) -> None:
    waits = []
    for _ in range(5):  # nothing known yet: first looks on the first guess (5 s), growing
        waits.append(await world.copy(2))
        await world.vt.sleep(1.0)
    outcomes = await asyncio.gather(*waits)
    copies = world.timeline()
    first = copies[0]["seen_ended_at"] - copies[0]["ended_at"]
    assert first > 0.5  # the first end is found by looking, a little late
    # when it was seen, its 30 s was learnt: the others are looked at when they end
    for copy, outcome in zip(copies[1:], outcomes[1:]):
        assert copy["seen_ended_at"] - copy["ended_at"] < 0.01
        assert outcome.detection_delay_s is not None and outcome.detection_delay_s < 0.01


test_copies_planned_on_a_first_guess_are_planned_again = in_world(_first_guesses_planned_again)


def _slot_wanted(wanted: bool) -> Callable[[World], Coroutine[Any, Any, None]]:
    async def scenario(world: World) -> None:
        await learn(world, 3, 4)  # one size group (3-4 instances): 40 s and 50 s
        world.waiter.slot_wanted = (lambda ds: True) if wanted else None
        first = len(world.timeline())
        waits = [await world.copy(4)]
        await world.vt.sleep(1.0)
        waits += [await world.copy(3), await world.copy(3)]
        await asyncio.gather(*waits)
        delays = [c["seen_ended_at"] - c["ended_at"] for c in world.timeline()[first:]]
        repoll = 0.1 * 50.0  # the re-look interval of a copy expected to take 50 s
        if wanted:  # the 40 s copies are not left to the 50 s guess
            assert max(delays) <= repoll + 0.01, delays
        else:
            assert max(delays) >= 10.0 - 0.01, delays
    return scenario


test_while_a_slot_is_wanted_no_ended_copy_waits_longer_than_its_bound = in_world(
    _slot_wanted(True))
test_without_a_slot_wanted_copies_are_looked_at_on_their_guess = in_world(_slot_wanted(False))


def test_copy_times_learn_exact_durations_per_size() -> None:
    from batchcopy.run.copytimes import CopyTimes

    times = CopyTimes(window=4)
    assert times.expect(None) is None and times.expect(3) is None and not times.known(3)
    assert times.observe(3, 40.0) is True and times.observe(4, 50.0) is False  # one group
    assert (times.expect(4), times.shortest(4)) == (50.0, 40.0)
    assert times.expect(100) == 50.0  # an unknown size borrows from smaller copies
    assert times.expect(1) is None and times.expect(None) is None  # never from larger ones
    for seconds in (1.0, 2.0, 3.0, 4.0, 5.0):  # a window of the last four
        times.observe(None, seconds)
    assert (times.expect(None), times.shortest(None)) == (5.0, 2.0)
