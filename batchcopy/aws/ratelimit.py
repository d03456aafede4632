"""Client-side pacing: one async token bucket per API operation, with AIMD.

HealthImaging publishes a request quota per operation as (rate, burst): a token
bucket on the service side. We keep a bucket of the same shape on our side so
that calls leave at the rate the service will accept, instead of learning the
quota from throttling errors.

Semantics of `TokenBucket` (the edge cases are the point):

* The bucket starts **full**: `burst` calls may go at once.
* Tokens accrue continuously at `current_rate` per second (`pace`: less any
  learnt slack, see below), up to `burst` plus `catchup`.
  Idle time never banks more than that: after an hour of silence the next second
  admits `burst + catchup + current_rate` calls, not an hour's worth. `catchup`
  (a fraction of a token; 0 unless given) keeps the tokens on their schedule when a
  waiter wakes late (a loaded machine): the next token is not pushed back by it.
  The sends are what the service counts, and `space()` keeps those apart.
* `acquire()` takes one token, waiting when none is available. Waiters are
  served strictly in arrival order (FIFO): a caller that arrives while others
  wait queues behind them even if a token happens to be free at that moment.
  A cancelled waiter leaves the queue without taking a token. `acquire_ahead()`
  is for a caller with work to do between its token and its send (the runner's
  durable journal write): the token comes `ahead` of its time (the longest of the
  last preparations the caller reported with `prepared()`, at most an interval),
  so that the send is ready when it is due; the caller waits for that time, and
  `space()` still keeps the send to it.
* AIMD. `on_throttle()` is a multiplicative decrease: `current_rate` halves
  (never below `rate * min_rate_fraction`) and the bucket is emptied, so the
  next call waits one full token interval at the new rate. Throttles that
  arrive in a cluster (many calls that were in flight together) count as one
  decrease: a further `on_throttle()` within one token interval of the last
  decrease only empties the bucket again. `on_success()` is an additive
  increase: `current_rate` grows by `rate * increase_fraction` per success,
  never above the configured `rate`.
* Jitter is not a quota. `on_throttle(spaced=True)` says the throttled request
  left through `space()`, i.e. its send time kept to our rate (never above the
  configured one). A service whose quota equals ours still throttles such a
  request now and then: the service counts *arrival* times, and scheduling on a
  loaded machine (ours or the service's front end) delays one request and not the
  next. A throttle like that only empties the bucket (the retry goes on the next
  token, the rate is kept: halving would cost ~1 s at 10/s for nothing). With
  `slack_step` > 0 it also widens the spacing of sends by that much of an interval
  (at most `max_slack`; it fades over `slack_memory` successes). Off by default:
  measured on a loaded 2-core machine, the emulator's arrival jitter was not bounded
  by a few per cent, and each per cent of spacing cost (0.01 x calls intervals) more
  than the throttles it saved (one interval each). Spaced throttles count as a quota signal,
  and halve as above, when they *persist*: `persist_count` of them within
  `persist_sends` sends. So a service quota well below ours is still found (at half
  our rate every other send is refused), while stray late arrivals cost one token
  interval each. Near the rate a quota was found at, the additive increase creeps
  (a tenth of its step) instead of climbing straight back over it.
* Sends. `space()` is a shadow bucket of the same shape fed by the moments
  requests leave (ImagingApi calls it from botocore's before-send event), and
  `left(send, at)` moves the last send to when it really reached the socket, so
  the next one is spaced from there. It refills at `send_rate` (scaled like the
  rate by AIMD and slack): a model of the service's own bucket, a little closer to
  the quota than the tokens, so that a send held up by a late wake-up is followed
  by the next one on the tokens' schedule, at most `send_rate` after it, and the
  run catches up instead of carrying every delay to its end. With `wake_early` (a
  real clock), `space()` wakes by the median of its recent oversleeps before a
  send is due and waits out the rest without sleeping: a sleep on a loaded machine
  ends late, and every late send is a loss the run never makes up.
* A bucket with rate `math.inf` is unlimited: `acquire()` never waits and
  AIMD is a no-op.

`RateLimiter` holds one bucket per operation name, created on first use from
`DEFAULT_QUOTAS` (the published defaults) or the caller's overrides. An
operation with no published quota and no override gets an unlimited bucket:
the service does not document a quota for it, and guessing one would only
slow down calls (a throttle is still retried with backoff by the caller).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

# Published HealthImaging request quotas per account and region: (rate/s, burst).
# Kept here (not imported from the emulator): the runner never imports the emulator.
DEFAULT_QUOTAS: dict[str, tuple[float, float]] = {
    "CopyImageSet": (0.25, 1),
    "UpdateImageSetMetadata": (0.25, 1),
    "DeleteImageSet": (0.25, 1),
    "GetImageSet": (25, 50),
    "SearchImageSets": (25, 50),
    "ListImageSetVersions": (25, 50),
    "GetDICOMImportJob": (25, 50),
    "GetImageSetMetadata": (50, 100),
    "GetImageFrame": (1000, 2000),
    "GetDatastore": (10, 20),
    "ListDatastores": (5, 10),
    "CreateDatastore": (0.085, 1),
    "DeleteDatastore": (0.085, 1),
}

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
_EPSILON = 1e-9  # float slack: a token that is 0.999999999 there counts as there
CATCHUP = 0.5  # RateLimiter's buckets: tokens that may bank above burst (see TokenBucket)


class TokenBucket:
    """An async, FIFO-fair token bucket with AIMD rate adaptation (see module doc).

    rate / burst: the configured quota; `current_rate` is what AIMD currently
    allows (rate * min_rate_fraction <= current_rate <= rate). `clock` and
    `sleep` are injectable so tests can run the bucket on a fake clock.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        min_rate_fraction: float = 0.1,
        increase_fraction: float = 0.05,
        sleep: Sleep = asyncio.sleep,
        persist_sends: int = 20,
        persist_count: int = 3,
        slack_step: float = 0.0,
        max_slack: float = 0.1,
        slack_memory: int = 200,
        catchup: float = 0.0,
        send_rate: float | None = None,
        wake_early: bool = False,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if not 0 < min_rate_fraction <= 1:
            raise ValueError(f"min_rate_fraction must be in (0, 1], got {min_rate_fraction!r}")
        if not increase_fraction > 0:
            raise ValueError(f"increase_fraction must be > 0, got {increase_fraction!r}")
        if not catchup >= 0 or (send_rate is not None and not send_rate >= rate):
            raise ValueError(f"need catchup >= 0 and send_rate >= rate, got {catchup!r}, "
                             f"{send_rate!r}")
        if not persist_sends >= persist_count >= 2:
            raise ValueError("need persist_sends >= persist_count >= 2, got "
                             f"{persist_sends!r}, {persist_count!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.catchup = float(catchup)
        self.wake_early = wake_early  # space(): see _lead (a real clock only)
        self._lateness: deque[float] = deque(maxlen=16)
        self._late_wakes: deque[float] = deque(maxlen=4096)  # for figures()
        self._prepare: deque[float] = deque(maxlen=16)  # see prepared()
        self._send_factor = 1.0 if send_rate is None or math.isinf(rate) else send_rate / rate
        self.current_rate = float(rate)
        self.min_rate = self.rate * min_rate_fraction
        self._increase = self.rate * increase_fraction
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._last_decrease: float | None = None
        self._shadow = self.burst  # see space()
        self._shadow_stamp: float | None = None
        self.persist_sends = persist_sends
        self.sends = 0  # requests that left through space()
        self._last_send: float | None = None  # when the last of them left
        self.late_sends = 0  # how many left() reported late, and the worst (diagnostics)
        self.max_late = 0.0
        self.jitter_throttles = 0  # spaced throttles forgiven as jitter (diagnostics)
        self.persist_count = persist_count
        # `sends` at the recent spaced throttles (those within persist_sends)
        self._spaced_throttles: deque[int] = deque()
        # extra spacing of sends learnt from jitter throttles (a fraction of an interval)
        self.slack = 0.0
        self.slack_step = slack_step
        self.max_slack = max_slack
        self._slack_decay = slack_step / slack_memory
        self._ceiling = math.inf  # the rate persistent throttles last halved from
        # asyncio.Lock hands itself over in FIFO order and does not let a newcomer
        # overtake a waiter that was already woken: that is our queue.
        self._queue = asyncio.Lock()
        self.waiting = 0  # callers in acquire()

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.rate)

    @property
    def tokens(self) -> float:
        """Tokens available now (for diagnostics; may be fractional)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        if not self.unlimited:
            self._tokens = min(self.burst + self.catchup, self._tokens + elapsed * self.pace)

    def now(self) -> float:
        """This bucket's clock."""
        return self._clock()

    @property
    def pace(self) -> float:
        """The rate tokens and sends go at: current_rate less the learnt slack."""
        return self.current_rate / (1.0 + self.slack)

    async def acquire(self) -> float:
        """Wait for a token (FIFO among waiters) and take it; return seconds waited."""
        if self.unlimited:
            return 0.0
        start = self._clock()
        return max(0.0, await self._take(early=False) - start)

    async def acquire_ahead(self) -> float:
        """Take a token `ahead` of its time; return when it is due (this bucket's clock).
        For a caller that prepares its send after the token (a durable journal write) and
        says how long that took with `prepared()`; it then waits for the due time (and
        space() keeps the send to it)."""
        return await self._take(early=True)

    async def _take(self, *, early: bool) -> float:
        if self.unlimited:
            return self._clock()
        self.waiting += 1
        try:
            return await self._take_queued(early)
        finally:
            self.waiting -= 1

    async def _take_queued(self, early: bool) -> float:
        async with self._queue:
            while True:
                self._refill()
                need = 1.0 - (self.ahead * self.pace if early else 0.0)
                if self._tokens >= need - _EPSILON:
                    now = self._clock()
                    due = now + max(0.0, (1.0 - self._tokens) / self.pace)
                    # an early token leaves the bucket below 0 until it was due
                    self._tokens = self._tokens - 1.0 if early else max(0.0, self._tokens - 1.0)
                    return due if early else now
                # Sleep for the deficit at the current rate, then look again:
                # on_throttle() may have emptied the bucket meanwhile.
                await self._sleep((need - self._tokens) / self.pace)

    @property
    def ahead(self) -> float:
        """How long before it is due acquire_ahead()'s token comes: the longest of the
        last preparations (`prepared()`), at most one interval."""
        if not self._prepare:
            return 0.0
        return min(max(self._prepare), 1.0 / self.pace)

    def prepared(self, seconds: float) -> None:
        """acquire_ahead()'s send was ready `seconds` after its token was taken."""
        self._prepare.append(max(0.0, seconds))

    async def space(self) -> float | None:
        """Make the moments requests actually leave conform to the quota too; return
        the send time (None for an unlimited bucket).

        `acquire()` grants tokens; a caller that then does something of variable
        length before sending (the runner makes a durable journal commit) could send
        two requests closer together than their tokens were granted, and the
        service's bucket (burst 1 for CopyImageSet) would throttle the second. This
        is a shadow bucket of the same shape fed by the actual send times: a model of
        the service's own bucket. `ImagingApi` calls it from botocore's `before-send`
        event: after signing, right before the bytes go to the connection.

        It refills at `send_rate`, scaled as the tokens' `pace` is (AIMD, and the slack
        the service's clock needed lately: see on_throttle; 0 until a throttle says so).
        """
        if self.unlimited:
            return None
        while True:
            now = self._clock()
            rate = self.pace * self._send_factor
            if self._shadow_stamp is not None:
                self._shadow = min(self.burst, self._shadow + (now - self._shadow_stamp) * rate)
            self._shadow_stamp = now
            if self._shadow >= 1.0 - _EPSILON:
                self._shadow = max(0.0, self._shadow - 1.0)
                self.sends += 1
                self._last_send = now
                return now
            wait = (1.0 - self._shadow) / rate
            lead = self._lead(rate)
            if wait <= lead:  # less than this process usually oversleeps: wait here
                while self._clock() < now + wait:
                    pass
                continue
            await self._sleep(wait - lead)
            if self.wake_early:
                late = max(0.0, self._clock() - (now + wait - lead))
                self._lateness.append(late)
                self._late_wakes.append(late)

    def _lead(self, rate: float) -> float:
        """How much earlier than due space() wakes: the median of its recent
        oversleeps, at most 5% of an interval and 5 ms (0 unless `wake_early`)."""
        if not self._lateness:
            return 0.0
        recent = sorted(self._lateness)
        return min(recent[len(recent) // 2], 0.05 / rate, 0.005)

    def figures(self) -> dict[str, float | int | None]:
        """Diagnostics for a run's summary: sends, how late space() woke from its
        sleeps (ms: median, 95th percentile; with `wake_early`), and sends that reached
        the connection later than stamped (how many, the worst in ms)."""
        wakes = sorted(self._late_wakes)

        def at(q: float) -> float | None:
            return round(1000 * wakes[int(q * (len(wakes) - 1))], 2) if wakes else None

        return {"sends": self.sends, "timer_late_ms_p50": at(0.5), "timer_late_ms_p95": at(0.95),
                "late_sends": self.late_sends, "max_late_ms": round(1000 * self.max_late, 2)}

    def left(self, send: int, at: float) -> None:
        """Send number `send` (the value of `sends` its space() made) reached the
        connection only `at`: later than space() stamped it (an event loop busy in
        between). Unless a later send was stamped since, the next one is spaced from
        `at`: the shadow bucket loses what it refilled meanwhile."""
        if self.unlimited or send != self.sends or self._last_send is None:
            return
        delay = at - self._last_send
        if delay > 0:
            self._shadow -= delay * self.pace * self._send_factor
            self._last_send = at
            self.late_sends += 1
            self.max_late = max(self.max_late, delay)

    def on_throttle(self, *, spaced: bool = False) -> bool:
        """A throttled answer: empty the bucket, and halve current_rate (floored) unless
        it looks like jitter (see module doc). Return True when the rate was halved
        (or the throttle belonged to a cluster that was)."""
        if self.unlimited:
            return False
        self._refill()
        if spaced:
            recent = self._spaced_throttles
            recent.append(self.sends)
            while recent and self.sends - recent[0] >= self.persist_sends:
                recent.popleft()
            if len(recent) < self.persist_count:
                # jitter: the next send waits a full interval (later ones a little more
                # when slack_step > 0)
                self.jitter_throttles += 1
                self.slack = min(self.max_slack, self.slack + self.slack_step)
                self._tokens = 0.0
                self._shadow = 0.0
                return False
            # not jitter after all: take back the spacing the earlier ones added
            self.slack = max(0.0, self.slack - self.slack_step * (len(recent) - 1))
            recent.clear()
            # a quota found: recover slowly near the rate it was found at
            self._ceiling = self.current_rate
        now = self._clock()
        clustered = (
            self._last_decrease is not None
            and now - self._last_decrease < 1.0 / self.current_rate
        )
        if not clustered:
            self.current_rate = max(self.min_rate, self.current_rate / 2.0)
            self._last_decrease = now
        self._tokens = 0.0
        self._shadow = 0.0
        return True

    def on_success(self) -> None:
        """Additive increase of current_rate toward the configured rate; the slack
        learnt from jitter fades (by slack_step over slack_memory successes)."""
        if self.slack:
            self.slack = self.slack - self._slack_decay
            if self.slack < self._slack_decay / 2:
                self.slack = 0.0
        if self.unlimited or self.current_rate >= self.rate:
            return
        self._refill()
        new = self.current_rate + self._increase
        knee = 0.8 * self._ceiling  # near a quota persistent throttles found: creep
        if new > knee:
            new = knee if self.current_rate < knee else self.current_rate + self._increase / 10
            if self.current_rate >= self._ceiling:
                self._ceiling = math.inf  # past it without a refusal: it was lifted
        self.current_rate = min(self.rate, new)

    def __repr__(self) -> str:
        return (f"TokenBucket(rate={self.rate}, burst={self.burst}, "
                f"current_rate={self.current_rate:.4g})")


class RateLimiter:
    """One `TokenBucket` per operation, created lazily.

    overrides: operation -> (rate, burst or None). A None burst keeps the
    operation's published burst (1 for an operation without one).
    rate_scale multiplies every rate (e.g. 100 against an emulator running at
    time_scale 0.01); bursts are not scaled.
    """

    def __init__(
        self,
        overrides: Mapping[str, tuple[float, float | None]] | None = None,
        *,
        clock: Clock = time.monotonic,
        rate_scale: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        margin: float = 0.02,
    ) -> None:
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin!r}")
        self.margin = margin
        if not rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {rate_scale!r}")
        self._clock = clock
        self._sleep = sleep
        self._scale = rate_scale
        self._config: dict[str, tuple[float, float]] = {
            op: (rate * rate_scale, burst) for op, (rate, burst) in DEFAULT_QUOTAS.items()
        }
        for op, (rate, burst) in (overrides or {}).items():
            if burst is None:
                burst = DEFAULT_QUOTAS.get(op, (rate, 1.0))[1]
            self._config[op] = (rate * rate_scale, burst)
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, operation: str) -> TokenBucket:
        found = self._buckets.get(operation)
        if found is None:
            rate, burst = self._config.get(operation, (math.inf, 1.0))
            # pace a hair under the quota: a request that leaves on time can still
            # arrive a little early relative to the one before it (scheduling and
            # network jitter), and a burst-1 bucket on the service side counts that
            # as a throttle. Sends may close up to a quarter of the margin after a late
            # one, so that a run catches up with the delays of a loaded machine (at 10/s
            # with half the margin it did not: span ratio 1.03-1.05 against 1.02-1.025);
            # the emulator, stamping arrivals as the kernel receives them, refused none
            # for those 0.5 ms
            found = TokenBucket(rate * (1.0 - self.margin), burst, clock=self._clock,
                                sleep=self._sleep, catchup=CATCHUP,
                                send_rate=rate * (1.0 - self.margin / 4),
                                wake_early=self._clock is time.monotonic)
            self._buckets[operation] = found
        return found

    def configured(self) -> dict[str, tuple[float, float]]:
        """The effective (rate, burst) of every operation with a quota."""
        return dict(self._config)
