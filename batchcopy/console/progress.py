"""The run's live numbers: a tqdm bar on a terminal, a stats line every --log-interval
seconds off one (a log record: timestamped text or JSON, or into --log-file).

A terminal with no size (`docker exec -t`: 0 columns, 0 lines) gets stats lines, not a
bar it cannot draw. On a narrow one the bar keeps MIN_BAR columns and the figures after
it are shortened to fit (the rate goes first, then the statuses, then the queue).

It is the run's observer (context.Observer):

    rows_finished(status, n)   rows reaching a status in this run
    calls_open(n)              CopyImageSet calls sent and not settled yet
    units_queued(n, rows)      calls planned (n > 0, carrying `rows` rows) or ended (n < 0)
    copy_sent(accepted)        one CopyImageSet attempt; not accepted = refused (a throttle)
    stopping(reason)           the run sends nothing new from now on

What it shows, and why it can be trusted:

    done       rows with a final status: SUCCEEDED, SKIPPED or FAILED (this run or an earlier
               one). Rows left for the next run (NOT_RUN, CONFLICT, UNKNOWN) are counted
               apart and never as done: after a stop, "3/12 rows done ... not run 9".
    in flight  calls sent and not settled; queued: planned calls not sent yet (waiting for
               the quota, a copy slot, or an earlier copy of the same image set).
    rate       accepted CopyImageSet calls per second over the last ones (a throttled
               attempt is no copy); the configured quota until two were accepted.
    ETA        calls still to send / that rate (for rows not planned yet: the calls per
               row so far); none when nothing is left to send, after a stop, and in the
               final frame.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from batchcopy.console import logs
from batchcopy.console.tally import Ticker, terminal_columns
from batchcopy.core.durations import human_duration
from batchcopy.core.specs import Status

_DONE_ORDER = (Status.SUCCEEDED.value, Status.SKIPPED.value, Status.FAILED.value)
DONE = frozenset(_DONE_ORDER)
LEFT = (Status.NOT_RUN.value, Status.CONFLICT.value, Status.UNKNOWN.value)
_RATE_WINDOW = 100  # accepted calls the achieved rate is measured over
MIN_BAR = 20  # columns the bar keeps: the figures after it are shortened first
_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} rows [{elapsed}{postfix}]"


class Progress:
    def __init__(self, total: int, *, mode: str = "log", interval_s: float = 30.0,
                 copy_rate: float = 0.25, stream: TextIO | None = None, done: int = 0,
                 to_run: int | None = None, stats: Any = None, stats_lines: bool | None = None,
                 console: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        """mode: "bar" (tqdm on `stream`) or "log" (no bar). stats_lines: a stats record
        every `interval_s` (default: in log mode). `stats`: the run's client.CallStats (for
        the throttle count). `console`: the logs.ConsoleHandler that must print above the
        bar. `to_run`: rows this run may run (default: total - done)."""
        self.stream = stream or sys.stderr
        self.mode = mode
        self.total = total
        self.done_before = done
        self.done = done
        self.to_run = total - done if to_run is None else to_run
        self.by_status: Counter[str] = Counter()
        self.in_flight = 0
        self.outstanding = 0  # units planned and not ended (queued + in flight)
        self.units_planned = 0
        self.rows_planned = 0
        self.copy_rate = copy_rate
        self.interval_s = interval_s
        self.stats = stats
        self.stats_lines = mode == "log" if stats_lines is None else stats_lines
        self.stop_reason: str | None = None
        self._accepted: deque[float] = deque(maxlen=_RATE_WINDOW)
        self.accepted = 0
        self.refused = 0
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._timer: Ticker | None = None
        self._console = console
        self._closed = False
        self._bar: Any = None
        if mode == "bar" and terminal_columns(self.stream) == 0:
            self.mode, self.stats_lines = "log", True  # no width to draw in: stats lines
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=done, unit="row", file=self.stream,
                             dynamic_ncols=True, bar_format=_BAR_FORMAT)
            if console is not None:
                console.bar = self._bar

    # ---- the observer ------------------------------------------------------------
    def rows_finished(self, status: Status, n: int) -> None:
        value = Status(status).value
        self.by_status[value] += n
        if value in DONE:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)

    def calls_open(self, n: int) -> None:
        self.in_flight = n

    def units_queued(self, n: int, rows: int = 0) -> None:
        self.outstanding = max(0, self.outstanding + n)
        if n > 0:
            self.units_planned += n
            self.rows_planned += rows

    def copy_sent(self, accepted: bool) -> None:
        if accepted:
            self.accepted += 1
            self._accepted.append(self._clock())
        else:
            self.refused += 1

    def stopping(self, reason: str) -> None:
        self.stop_reason = reason
        self.refresh()

    # ---- figures -------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return max(0, self.outstanding - self.in_flight)

    def throttles(self) -> int:
        if self.stats is None:
            return 0
        return int(sum(self.stats.throttles.values()))

    def achieved_rate(self, *, live: bool = True) -> float | None:
        """Accepted CopyImageSet calls per second over the last ones (None before two).
        `live`: a stall since the last accepted call counts once it outlasts the usual gap
        (throttling shows at once); else first to last accepted call, as the summary has it."""
        times = self._accepted
        if len(times) < 2:
            return None
        n = len(times) - 1
        span = times[-1] - times[0]
        if span <= 0:
            return None
        if live:
            span = max(span, self._clock() - times[0] - span / n)
        return n / span

    def calls_to_send(self) -> float:
        unplanned = max(0, self.to_run - self.rows_planned)
        per_row = self.units_planned / self.rows_planned if self.rows_planned else 1.0
        return self.queued + unplanned * per_row

    def eta_s(self) -> float | None:
        """Seconds until the last call is sent, at the achieved rate (else the quota);
        None once nothing is left to send or the run is stopping."""
        if self.stop_reason is not None or self._closed:
            return None
        calls = self.calls_to_send()
        rate = self.achieved_rate() or self.copy_rate
        if calls <= 0 or rate <= 0:
            return None
        return calls / rate

    def snapshot(self, final: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The numbers of a stats line. `final`: the journal's statuses of every row of the
        manifest, which then decide done and left."""
        if final is not None:
            done = sum(n for s, n in final.items() if s in DONE)
            left = {s: final.get(s, 0) + (final.get("PENDING", 0) if s == "NOT_RUN" else 0)
                    for s in LEFT}
        else:
            done = self.done
            left = {s: self.by_status[s] for s in LEFT}
        rate = self.achieved_rate(live=final is None)
        eta = None if final is not None else self.eta_s()
        return {
            "rows_total": self.total, "rows_done": done, "done_before": self.done_before,
            "by_status": dict(sorted(self.by_status.items())),  # this run's
            "left": {k.lower(): v for k, v in left.items() if v},
            "in_flight": 0 if final is not None else self.in_flight,
            "queued": 0 if final is not None else self.queued,
            "throttles": self.throttles(), "copy_calls_accepted": self.accepted,
            "accepted_rate_per_s": None if rate is None else round(rate, 4),
            "quota_per_s": self.copy_rate,
            "elapsed_s": round(self._clock() - self._started, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "stopping": self.stop_reason,
        }

    def line(self, snap: dict[str, Any], *, final: bool = False) -> str:
        statuses = snap["by_status"]
        done_parts = [f"{s.lower()} {statuses[s]}" for s in _DONE_ORDER if statuses.get(s)]
        text = f"{snap['rows_done']}/{snap['rows_total']} rows done"
        before = [f"{snap['done_before']} before this run"] if snap["done_before"] else []
        if done_parts or before:
            text += f" ({', '.join(done_parts + before)})"
        left = snap["left"]
        if left:
            text += "; " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in left.items())
        if not final:
            n = snap["in_flight"]
            text += f"; {n} call{'' if n == 1 else 's'} in flight, {snap['queued']} queued"
        text += f"; throttles {snap['throttles']}; CopyImageSet "
        rate = snap["accepted_rate_per_s"]
        text += (f"{rate:.3g}/s accepted (quota {self.copy_rate:g}/s)" if rate is not None
                 else f"quota {self.copy_rate:g}/s")
        text += f"; {human_duration(snap['elapsed_s'])} elapsed"
        if snap["stopping"] and not final:
            text += f"; stopping ({snap['stopping']})"
        elif snap["eta_s"] is not None:
            text += f", about {human_duration(snap['eta_s'])} left to send"
        return text

    # ---- display ---------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Refresh the bar and write stats lines on a timer (call inside the run's loop)."""
        if self.mode == "bar" or self.stats_lines:
            self._timer = Ticker(Ticker.tick_s(self.mode == "bar", self.interval_s),
                                 self.refresh, loop)

    def refresh(self) -> None:
        if self._closed:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.refresh()
        if self.stats_lines and self._clock() - self._last_line >= self.interval_s:
            self.log_line()

    def _postfix(self) -> str:
        """The richest figures that leave the bar MIN_BAR columns: at 80 columns the bar
        keeps its width and the figures are shortened (rate, then statuses, then calls)."""
        flight = [f"{self.in_flight} in flight", f"{self.queued} queued"]
        bad = {s: self.by_status[s] for s in (Status.FAILED.value, *LEFT) if self.by_status[s]}
        statuses = [f"{s.lower().replace('_', ' ')} {n}" for s, n in bad.items()]
        rate = self.achieved_rate()
        speed = [f"{rate:.3g} calls/s" if rate is not None else f"quota {self.copy_rate:g}/s"]
        end: list[str] = []
        if self.stop_reason:
            end = [f"stopping ({self.stop_reason})"]
        else:
            eta = self.eta_s()
            if eta is not None:
                end = [f"{'' if eta < 1 else '~'}{human_duration(eta)} left"]
        room = terminal_columns(self.stream) - MIN_BAR - self._fixed_columns()
        for parts in (flight + statuses + speed + end, flight + statuses + end,
                      flight[:1] + end, end):
            text = ", ".join(parts)
            if len(text) + 2 <= room:
                return text
        return ""

    def _fixed_columns(self) -> int:
        """What the bar's line takes besides the bar and the figures: "100%|", "| n/total
        rows [", the elapsed time (as tqdm writes it, a second ahead), "]"."""
        from tqdm import tqdm

        digits = len(str(self.total))
        elapsed = tqdm.format_interval(self._clock() - self._started + 1)  # 00:59 or 1:00:00
        return len("100%|| ") + 2 * digits + 1 + len(" rows [") + len(elapsed) + len("]")

    def log_line(self, final: Mapping[str, int] | None = None) -> None:
        self._last_line = self._clock()
        snap = self.snapshot(final)
        logs.emit(logs.NOTICE, "stats", self.line(snap, final=final is not None),
                  final=final is not None, **snap)

    def close(self, final: Mapping[str, int] | None = None) -> None:
        """The last frame: `final` (the journal's statuses) decides done and left; no ETA."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._bar is not None:
            snap = self.snapshot(final)
            self._bar.n = snap["rows_done"]
            left = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in snap["left"].items())
            failed = snap["by_status"].get(Status.FAILED.value, 0)
            tail = ([f"failed {failed}"] if failed else []) + ([left] if left else [])
            self._bar.set_postfix_str(", ".join(tail) or "all done", refresh=False)
            self._bar.refresh()
            self._bar.close()
            if self._console is not None:
                self._console.bar = None
        if self.stats_lines:
            self.log_line(final)
