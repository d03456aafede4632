"""TokenBucket / RateLimiter semantics on a fake clock, and rate parsing."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from batchcopy.aws.ratefile import load_rate_file, parse_rate
from batchcopy.aws.ratelimit import DEFAULT_QUOTAS, RateLimiter, TokenBucket


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def make_bucket(rate: float, burst: float, **kwargs: float) -> tuple[TokenBucket, FakeTime]:
    t = FakeTime()
    return TokenBucket(rate, burst, clock=t, sleep=t.sleep, **kwargs), t


@aio
async def test_full_burst_available_at_start() -> None:
    bucket, t = make_bucket(2.0, 5)
    waits = [await bucket.acquire() for _ in range(5)]
    assert waits == [0.0] * 5
    assert t.now == 1000.0
    assert await bucket.acquire() == pytest.approx(0.5)


@aio
async def test_steady_rate_after_burst() -> None:
    bucket, t = make_bucket(4.0, 2)
    for _ in range(2):
        await bucket.acquire()
    start = t.now
    for _ in range(20):
        await bucket.acquire()
    assert t.now - start == pytest.approx(20 / 4.0)


@aio
async def test_idle_time_never_banks_more_than_burst() -> None:
    bucket, t = make_bucket(1.0, 3)
    for _ in range(3):
        await bucket.acquire()
    t.now += 3600.0  # an hour idle
    assert bucket.tokens == pytest.approx(3.0)
    waits = [await bucket.acquire() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(1.0)


@aio
async def test_fractional_tokens_accrue_continuously() -> None:
    bucket, t = make_bucket(0.25, 1)
    await bucket.acquire()
    t.now += 2.0  # half a token
    assert await bucket.acquire() == pytest.approx(2.0)


@aio
async def test_waiters_are_served_in_arrival_order() -> None:
    bucket, t = make_bucket(1.0, 1)
    order: list[int] = []

    async def worker(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # arrive one after another
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    assert t.now == pytest.approx(1000.0 + 7.0)


@aio
async def test_newcomer_queues_behind_waiters_even_if_a_token_is_free() -> None:
    bucket, t = make_bucket(1.0, 1)
    await bucket.acquire()
    order: list[str] = []

    async def worker(name: str) -> None:
        await bucket.acquire()
        order.append(name)

    first = asyncio.create_task(worker("first"))
    await asyncio.sleep(0)  # first is now sleeping for its token
    t.now += 5.0  # tokens are there now, but "first" has not woken yet
    late = asyncio.create_task(worker("late"))
    await asyncio.gather(first, late)
    assert order == ["first", "late"]


@aio
async def test_cancelled_waiter_takes_no_token() -> None:
    bucket, t = make_bucket(1.0, 1)
    await bucket.acquire()
    blocked = asyncio.Event()

    async def never_wakes(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()

    bucket._sleep = never_wakes  # the head waiter parks until cancelled
    head = asyncio.create_task(bucket.acquire())
    await blocked.wait()
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head
    bucket._sleep = t.sleep
    t.now += 1.0
    assert bucket.tokens == pytest.approx(1.0)
    assert await bucket.acquire() == 0.0


@aio
async def test_on_throttle_halves_empties_and_floors() -> None:
    bucket, t = make_bucket(10.0, 20, min_rate_fraction=0.1)
    bucket.on_throttle()
    assert bucket.current_rate == pytest.approx(5.0)
    assert bucket.tokens == 0.0
    rates = []
    for _ in range(10):
        t.now += 10.0  # far apart: each throttle is its own event
        bucket.on_throttle()
        rates.append(bucket.current_rate)
    assert rates[:2] == [pytest.approx(2.5), pytest.approx(1.25)]
    assert min(rates) == pytest.approx(1.0)  # floor: 10 * 0.1
    assert rates[-1] == pytest.approx(1.0)
    assert bucket.rate == 10.0  # the configured rate is kept


@aio
async def test_clustered_throttles_decrease_once() -> None:
    bucket, t = make_bucket(8.0, 16)
    for _ in range(30):  # thirty calls in flight together, all throttled
        bucket.on_throttle()
    assert bucket.current_rate == pytest.approx(4.0)
    t.now += 1.0  # well past one token interval (0.25 s)
    bucket.on_throttle()
    assert bucket.current_rate == pytest.approx(2.0)


@aio
async def test_tokens_accrue_at_current_rate_after_throttle() -> None:
    bucket, t = make_bucket(10.0, 50)
    bucket.on_throttle()  # 5/s, empty
    t.now += 1.0
    assert bucket.tokens == pytest.approx(5.0)
    for _ in range(5):
        await bucket.acquire()
    assert await bucket.acquire() == pytest.approx(0.2)


@aio
async def test_on_success_recovers_additively_up_to_rate() -> None:
    bucket, t = make_bucket(10.0, 20, increase_fraction=0.05)
    bucket.on_throttle()
    assert bucket.current_rate == pytest.approx(5.0)
    for i in range(1, 11):
        bucket.on_success()
        assert bucket.current_rate == pytest.approx(min(10.0, 5.0 + 0.5 * i))
    for _ in range(5):
        bucket.on_success()
    assert bucket.current_rate == pytest.approx(10.0)


def test_bucket_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0.5)
    with pytest.raises(ValueError, match="min_rate_fraction"):
        TokenBucket(1, 1, min_rate_fraction=0)


@aio
async def test_limiter_defaults_overrides_and_unknown_operations() -> None:
    t = FakeTime()
    limiter = RateLimiter({"CopyImageSet": (5.0, None), "GetImageSet": (3.0, 7.0)},
                          clock=t, sleep=t.sleep, margin=0.0)
    copy = limiter.bucket("CopyImageSet")
    assert (copy.rate, copy.burst) == (5.0, 1.0)  # None burst keeps the published burst
    assert limiter.bucket("CopyImageSet") is copy  # one bucket per operation
    get = limiter.bucket("GetImageSet")
    assert (get.rate, get.burst) == (3.0, 7.0)
    meta = limiter.bucket("GetImageSetMetadata")
    assert (meta.rate, meta.burst) == DEFAULT_QUOTAS["GetImageSetMetadata"]
    configured = limiter.configured()
    assert configured["CopyImageSet"] == (5.0, 1.0)
    assert configured["ListDatastores"] == (5, 10)
    assert set(DEFAULT_QUOTAS) <= set(configured)
    tag = limiter.bucket("TagResource")  # no published quota: unlimited
    assert math.isinf(tag.rate)
    assert [await tag.acquire() for _ in range(1000)] == [0.0] * 1000
    tag.on_throttle()
    tag.on_success()
    assert t.now == 1000.0


def test_limiter_rate_scale() -> None:
    limiter = RateLimiter({"GetImageSet": (2.0, 4.0)}, rate_scale=100, margin=0.0)
    assert limiter.bucket("CopyImageSet").rate == pytest.approx(25.0)
    assert limiter.bucket("CopyImageSet").burst == 1.0
    assert limiter.configured()["GetImageSet"] == (200.0, 4.0)


def test_limiter_paces_a_margin_under_the_quota_but_reports_the_quota() -> None:
    limiter = RateLimiter({"CopyImageSet": (10.0, 1.0)})
    assert limiter.bucket("CopyImageSet").rate == pytest.approx(9.8)  # 2% default margin
    assert limiter.configured()["CopyImageSet"] == (10.0, 1.0)
    with pytest.raises(ValueError, match="margin"):
        RateLimiter(margin=1.0)


def test_default_quotas_match_the_published_table() -> None:
    assert DEFAULT_QUOTAS["CopyImageSet"] == (0.25, 1)
    assert DEFAULT_QUOTAS["GetImageSet"] == (25, 50)
    assert DEFAULT_QUOTAS["SearchImageSets"] == (25, 50)
    assert DEFAULT_QUOTAS["ListImageSetVersions"] == (25, 50)
    assert DEFAULT_QUOTAS["GetImageSetMetadata"] == (50, 100)
    assert DEFAULT_QUOTAS["GetDatastore"] == (10, 20)
    assert DEFAULT_QUOTAS["ListDatastores"] == (5, 10)
    assert DEFAULT_QUOTAS["DeleteImageSet"] == (0.25, 1)


@pytest.mark.parametrize("text,expected", [
    ("CopyImageSet=5", ("CopyImageSet", 5.0, None)),
    ("CopyImageSet=5/10", ("CopyImageSet", 5.0, 10.0)),
    (" GetImageSet = 0.5 / 1 ", ("GetImageSet", 0.5, 1.0)),
    ("CopyImageSet=0.25/1", ("CopyImageSet", 0.25, 1.0)),
])
def test_parse_rate_accepts(text: str, expected: tuple) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text,message", [
    ("CopyImageSet", "OPERATION=RATE"),
    ("CopyImageSet=", "OPERATION=RATE"),
    ("=5", "OPERATION=RATE"),
    ("CopyImageSets=5", "unknown operation 'CopyImageSets'; known operations: .*CopyImageSet"),
    ("CopyImageSet=fast", "rate of CopyImageSet must be a number"),
    ("CopyImageSet=0", "rate of CopyImageSet must be a finite number > 0"),
    ("CopyImageSet=-1", "> 0"),
    ("CopyImageSet=inf", "finite"),
    ("CopyImageSet=5/0.5", "burst of CopyImageSet must be a finite number >= 1"),
    ("CopyImageSet=5/", "burst of CopyImageSet must be a number"),
])
def test_parse_rate_rejects_with_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


def test_unknown_operation_error_lists_every_known_one() -> None:
    with pytest.raises(ValueError) as info:
        parse_rate("GetImageSets=5")
    for name in DEFAULT_QUOTAS:
        assert name in str(info.value)


def test_load_rate_file_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({
        "CopyImageSet": 5,
        "GetImageSet": {"rate": 10, "burst": 20},
        "ListImageSetVersions": {"rate": 2.5},
    }))
    assert load_rate_file(path) == {
        "CopyImageSet": (5.0, None),
        "GetImageSet": (10.0, 20.0),
        "ListImageSetVersions": (2.5, None),
    }


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"CopyImageSett": 5}', "unknown operation 'CopyImageSett'"),
    ('{"CopyImageSet": "five"}', "rate of CopyImageSet must be a number"),
    ('{"CopyImageSet": true}', "rate of CopyImageSet must be a finite number"),
    ('{"CopyImageSet": -2}', "> 0"),
    ('{"CopyImageSet": {"rate": 5, "brust": 10}}', "got keys \\['brust', 'rate'\\]"),
    ('{"CopyImageSet": {"burst": 10}}', "expected"),
    ('{"CopyImageSet": {"rate": 5, "burst": 0}}', "burst of CopyImageSet"),
])
def test_load_rate_file_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rates.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_rate_file(path)
    assert str(path) in str(info.value)


@aio
async def test_space_makes_actual_send_times_conform_to_the_quota() -> None:
    bucket, t = make_bucket(4.0, 1)  # one token every 0.25 s
    await bucket.acquire()
    await bucket.space()  # first send: no wait
    assert t.sleeps == []
    await bucket.acquire()  # granted at +0.25 s
    t.now += 0.01  # the caller is slow before sending (a journal commit) ...
    await bucket.space()
    await bucket.acquire()  # ... the next token comes at +0.5 s, but its caller is quick
    before = t.now
    await bucket.space()  # so the send waits until one interval after the previous send
    assert t.now - before == pytest.approx(0.01)
    wide, t2 = make_bucket(4.0, 2)
    await wide.space()
    await wide.space()
    assert t2.sleeps == []  # a burst of sends is fine while the shadow bucket has tokens
    await wide.space()
    assert t2.sleeps == [pytest.approx(0.25)]  # then sends conform to the rate


# ------------------------------------------------------------- jitter vs a lower quota
async def _simulate(bucket: TokenBucket, t: FakeTime, service_rate: float, accepted: int,
                    *, late: Callable[[int], float], spaced: bool = True) -> dict[str, float]:
    """Send until `accepted` calls are accepted by a burst-1 service bucket that counts
    *arrival* times: arrival = the send time our bucket stamped + late(send number).
    A throttled call is retried on the next token, as the runner does."""
    from batchcopy.emulator.quotas import TokenBucket as ServiceBucket

    service = ServiceBucket(service_rate, 1, 1, t.now)
    sends = throttles = halvings = 0
    first = last = None
    while accepted:
        await bucket.acquire()
        sent = await bucket.space()
        assert sent is not None
        arrival = sent + late(sends)
        sends += 1
        if service.take(arrival):
            accepted -= 1
            first = arrival if first is None else first
            last = arrival
            bucket.on_success()
        else:
            throttles += 1
            halvings += bucket.on_throttle(spaced=spaced)
    assert first is not None and last is not None
    return {"sends": sends, "throttles": throttles, "halvings": halvings,
            "span": last - first}


def _every(n: int, seconds: float) -> Callable[[int], float]:
    """One send in n arrives `seconds` late (a descheduled sender), the rest on time."""
    return lambda i: seconds if i % n == n - 1 else 0.0


@aio
async def test_a_lone_spaced_throttle_is_jitter_the_rate_is_kept() -> None:
    bucket, t = make_bucket(10.0, 1, slack_step=0.01)
    await bucket.acquire()
    await bucket.space()
    assert bucket.on_throttle(spaced=True) is False
    assert bucket.current_rate == 10.0
    assert bucket.jitter_throttles == 1
    # the retry waits for the next token, a little later than before: the spacing learns
    assert await bucket.acquire() == pytest.approx(0.1 * (1 + bucket.slack_step))


@aio
async def test_spaced_throttles_that_persist_halve() -> None:
    bucket, t = make_bucket(10.0, 1, persist_sends=20, persist_count=3, slack_step=0.01)

    async def sends(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()
            await bucket.space()

    await sends(3)
    assert bucket.on_throttle(spaced=True) is False  # jitter
    await sends(20)
    assert bucket.on_throttle(spaced=True) is False  # the first one is 20 sends back
    await sends(5)
    assert bucket.on_throttle(spaced=True) is False  # two within 20 sends: still jitter
    await sends(5)
    assert bucket.on_throttle(spaced=True) is True  # three within 20 sends: a quota
    assert bucket.current_rate == pytest.approx(5.0)
    assert bucket.jitter_throttles == 3


@aio
async def test_jitter_widens_the_spacing_and_successes_narrow_it_again() -> None:
    bucket, t = make_bucket(10.0, 1, slack_step=0.01, max_slack=0.03, slack_memory=100)
    for _ in range(5):
        bucket.on_throttle(spaced=True)
        for _ in range(25):  # far enough apart not to persist
            await bucket.acquire()
            await bucket.space()
    assert bucket.slack == pytest.approx(0.03)  # capped
    assert bucket.current_rate == 10.0
    before = t.now
    await bucket.acquire()
    await bucket.space()
    assert t.now - before == pytest.approx(0.103)  # one interval plus the slack
    for _ in range(300):
        bucket.on_success()
    assert bucket.slack == 0.0


@aio
async def test_unspaced_throttle_halves_at_once_as_before() -> None:
    bucket, t = make_bucket(10.0, 1)
    assert bucket.on_throttle() is True
    assert bucket.current_rate == pytest.approx(5.0)


@aio
async def test_equal_quotas_with_late_arrivals_keep_the_pace() -> None:
    """Client and service both 10/s burst 1 (the client 2% under, as RateLimiter does);
    one send in 25 arrives 5 ms late, so the next one arrives early and is throttled.
    Forgiven as jitter, each costs one token interval; halving cost far more."""
    rate = 10.0 * 0.98
    new, t_new = make_bucket(rate, 1, slack_step=0.01)
    forgiving = await _simulate(new, t_new, 10.0, 300, late=_every(25, 0.005))
    old, t_old = make_bucket(rate, 1)
    halving = await _simulate(old, t_old, 10.0, 300, late=_every(25, 0.005), spaced=False)
    assert forgiving["throttles"] == new.jitter_throttles > 0
    assert forgiving["halvings"] == 0
    assert new.current_rate == rate
    # the spacing learnt the 5 ms: a few throttles, then none
    assert forgiving["throttles"] <= 6 < halving["throttles"]
    assert forgiving["span"] / (299 / 10.0) <= 1.08
    assert halving["halvings"] > 0
    assert halving["span"] > forgiving["span"] * 1.05


@pytest.mark.parametrize("service_rate", [5.0, 2.0, 8.0])
@aio
async def test_a_service_quota_lower_than_ours_is_still_found(service_rate: float) -> None:
    bucket, t = make_bucket(10.0, 1)
    result = await _simulate(bucket, t, service_rate, 200, late=lambda i: 0.0)
    assert result["halvings"] >= 1
    assert bucket.current_rate < 10.0
    achieved = 199 / result["span"]
    assert achieved <= service_rate * 1.001
    # AIMD's saw-tooth (each success adds 5% of OUR rate back), not a collapse
    assert achieved >= service_rate * 0.4
    # bounded, but not small when our rate is 5x the service's: the additive increase
    # climbs back over the quota within a few successes (a known limit of this AIMD)
    assert result["throttles"] <= 0.4 * result["sends"]


@aio
async def test_a_send_that_left_late_spaces_the_next_from_when_it_left() -> None:
    bucket, t = make_bucket(10.0, 1)
    await bucket.space()
    first = await bucket.space()  # one interval later
    assert first is not None
    t.now += 0.03  # the event loop held the request up before it reached the socket
    bucket.left(bucket.sends, t.now)
    assert await bucket.space() == pytest.approx(first + 0.03 + 0.1)
    older = bucket.sends - 1
    bucket.left(older, t.now + 5.0)  # a report about an older send changes nothing
    assert await bucket.space() == pytest.approx(first + 0.03 + 0.2)


@aio
async def test_by_default_jitter_keeps_the_spacing() -> None:
    bucket, t = make_bucket(9.8, 1)  # 2% under the service, as RateLimiter paces
    result = await _simulate(bucket, t, 10.0, 300, late=_every(25, 0.005))
    assert result["halvings"] == 0 and bucket.slack == 0.0
    assert result["throttles"] == 12  # each late arrival throttles its successor ...
    # ... which costs one interval, nothing more
    assert result["span"] == pytest.approx((299 + result["throttles"]) / 9.8, rel=0.01)


class LateTime(FakeTime):
    """A fake clock whose sleeps end `late` seconds after they were due (a loaded machine)."""

    def __init__(self, late: float) -> None:
        super().__init__()
        self.late = late

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.late)


@aio
async def test_catchup_keeps_tokens_on_their_schedule_when_waiters_wake_late() -> None:
    """Every sleep ends 5 ms late: without catchup each grant is pushed back by it (and the
    next from there), with it the grants keep the rate on average."""
    for catchup, per_token in ((0.0, 0.105), (0.5, 0.1)):
        t = LateTime(0.005)
        bucket = TokenBucket(10.0, 1, clock=t, sleep=t.sleep, catchup=catchup)
        await bucket.acquire()
        start = t.now
        for _ in range(50):
            await bucket.acquire()
        assert (t.now - start) / 50 == pytest.approx(per_token, abs=0.001), catchup


@aio
async def test_sends_after_a_late_one_close_up_to_the_send_rate() -> None:
    """Tokens at 9.8/s, sends no closer than 9.9/s: a send held up by 3 ms is followed by
    the next ones at the send interval until the run is back on the tokens' schedule (with
    the send rate at the tokens' rate, the 3 ms are never made up)."""
    for send_rate, lost in ((9.9, 0.0), (9.8, 0.003)):
        t = FakeTime()
        bucket = TokenBucket(9.8, 1, clock=t, sleep=t.sleep, catchup=0.5, send_rate=send_rate)
        sent = []
        for i in range(8):
            await bucket.acquire()
            if i == 2:
                t.now += 0.003  # the third request leaves 3 ms after its token
            sent.append(await bucket.space())
        gaps = [b - a for a, b in zip(sent, sent[1:])]
        assert min(gaps) >= 1 / send_rate - 1e-9  # never closer than the send rate
        assert gaps[2] == pytest.approx(1 / send_rate)  # closing up after the late one
        assert sent[-1] - sent[0] == pytest.approx(7 / 9.8 + lost, abs=1e-6)


@aio
async def test_an_early_token_comes_ahead_by_the_preparation_and_the_send_keeps_its_time() -> None:
    t = FakeTime()
    bucket = TokenBucket(10.0, 1, clock=t, sleep=t.sleep)
    assert await bucket.acquire_ahead() == 1000.0  # nothing learnt: due now
    assert await bucket.space() == 1000.0
    assert bucket.ahead == 0.0
    bucket.prepared(0.03)  # a journal write took 30 ms after the token
    assert bucket.ahead == pytest.approx(0.03)
    assert await bucket.acquire_ahead() == pytest.approx(1000.1)  # due then,
    assert t.now == pytest.approx(1000.07)  # given 30 ms before
    t.now += 0.03  # prepared in time
    assert await bucket.space() == pytest.approx(1000.1)  # and sent on time
    await bucket.acquire()  # a token not taken early waits for its time
    assert t.now == pytest.approx(1000.2)
    bucket.prepared(5.0)
    assert bucket.ahead == pytest.approx(0.1)  # at most one interval ahead


@aio
async def test_waking_early_never_sends_early() -> None:
    """With wake_early (a real clock) space() wakes before a send is due by its usual
    oversleep and waits out the rest: sends are never closer than the send rate."""
    bucket = TokenBucket(50.0, 1, wake_early=True)
    bucket._lateness.extend([0.004] * 8)  # this process has been oversleeping by 4 ms
    assert bucket._lead(50.0) == pytest.approx(0.001)  # at most 5% of an interval
    sent = [await bucket.space() for _ in range(10)]
    assert all(b - a >= 1 / 50.0 - 1e-9 for a, b in zip(sent, sent[1:]))  # type: ignore[operator]
    assert TokenBucket(50.0, 1)._lead(50.0) == 0.0  # off by default
