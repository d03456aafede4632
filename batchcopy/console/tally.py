"""Progress of a command that works through a known number of items (verify's rows, undo's
changes): a tqdm bar on a terminal, a stats line every --log-interval seconds off one (a
log record: timestamped text or JSON, or into --log-file), as `run` has (console/progress.py).

    12/40 rows checked (succeeded 11, failed 1); 1 min 02 s elapsed, about 3 min 20 s left

The time left is the items left at the pace so far; none before the first item ends.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from batchcopy.console import logs
from batchcopy.core.durations import human_duration

_BAR_TICK_S = 1.0


def terminal_columns(stream: Any) -> int:
    """The width of the terminal `stream` writes to; 0 when it has none, or a zero size
    (`docker exec -t` before the size is set: COLUMNS and LINES are 0 too): then progress
    is stats lines, not a bar nobody can see."""
    import os

    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
    return max(0, columns)


class Ticker:
    """Call `fire` every `seconds` on the running loop until `cancel()`: a bar redraws about
    once a second, stats lines come every --log-interval (`tick_s`)."""

    def __init__(self, seconds: float, fire: Callable[[], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.seconds, self.fire = seconds, fire
        self.loop = loop or asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self.loop.call_later(seconds, self._run)

    @staticmethod
    def tick_s(bar: bool, interval_s: float) -> float:
        return max(0.05, min(_BAR_TICK_S, interval_s) if bar else interval_s)

    def _run(self) -> None:
        if self._handle is None:
            return
        self.fire()
        if self._handle is not None:
            self._handle = self.loop.call_later(self.seconds, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Tally:
    def __init__(self, total: int, *, noun: str, verb: str, mode: str = "log",
                 interval_s: float = 30.0, console: Any = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`noun` counts (`rows`), `verb` says what happened to them (`checked`). mode: "bar"
        (tqdm, on a terminal), "log" (stats lines) or "off"."""
        if mode == "bar" and terminal_columns(stream or sys.stderr) == 0:
            mode = "log"  # a terminal with no size: stats lines
        self.total, self.noun, self.verb, self.mode = total, noun, verb, mode
        self.interval_s = interval_s
        self.by_status: Counter[str] = Counter()
        self._clock = clock
        self._started = self._last_line = clock()
        self._timer: Ticker | None = None
        self._console = console
        self._closed = False
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit=noun.rstrip("s") or "item", file=stream or sys.stderr,
                             dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
            if console is not None:
                console.bar = self._bar

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    def finished(self, status: str, n: int = 1) -> None:
        self.by_status[status.lower()] += n
        if self._bar is not None:
            self._bar.update(n)

    def eta_s(self) -> float | None:
        elapsed = self._clock() - self._started
        if not self.done or self.done >= self.total or self._closed:
            return None
        return elapsed / self.done * (self.total - self.done)

    def snapshot(self) -> dict[str, Any]:
        eta = self.eta_s()
        return {"total": self.total, "done": self.done, "by_status": dict(sorted(self.by_status.items())),
                "elapsed_s": round(self._clock() - self._started, 1),
                "eta_s": None if eta is None else round(eta, 1)}

    def line(self, snap: dict[str, Any]) -> str:
        text = f"{snap['done']}/{snap['total']} {self.noun} {self.verb}"
        if snap["by_status"]:
            text += " (" + ", ".join(f"{s} {n}" for s, n in snap["by_status"].items()) + ")"
        text += f"; {human_duration(snap['elapsed_s'])} elapsed"
        if snap["eta_s"] is not None:
            text += f", about {human_duration(snap['eta_s'])} left"
        return text

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.mode != "off":
            self._timer = Ticker(Ticker.tick_s(self._bar is not None, self.interval_s),
                                 self.refresh, loop)

    def refresh(self) -> None:
        if self._closed:
            return
        if self._bar is not None:
            eta = self.eta_s()
            parts = [f"{s} {n}" for s, n in sorted(self.by_status.items())]
            if eta is not None:
                parts.append(f"~{human_duration(eta)} left")
            self._bar.set_postfix_str(", ".join(parts), refresh=True)
        elif self.mode == "log" and self._clock() - self._last_line >= self.interval_s:
            self.log_line()

    def log_line(self, *, final: bool = False) -> None:
        self._last_line = self._clock()
        snap = self.snapshot()
        logs.emit(logs.NOTICE, "stats", self.line(snap), final=final, **snap)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._bar is not None:
            self._bar.close()
            if self._console is not None:
                self._console.bar = None
        elif self.mode == "log":
            self.log_line(final=True)
