"""Progress for humans (a tqdm bar on a TTY) and for cron (a plain line every N seconds).

It is the run's observer (context.Observer): it counts rows as they reach a status in this
run (rows done by earlier runs start the count), calls actually out (journaled and not yet
settled, not units waiting for the quota), and units queued.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, TextIO

from batchcopy.specs import Status


class Progress:
    def __init__(self, total: int, *, mode: str = "auto", interval_s: float = 30.0,
                 copy_rate: float = 0.25, stream: TextIO | None = None, done: int = 0) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.total = total
        self.done = done
        self.by_status: Counter[str] = Counter()
        self.in_flight = 0
        self.queued = 0
        self.copy_rate = copy_rate
        self.interval_s = interval_s
        self._last_log = time.monotonic()
        self._started = time.monotonic()
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=done, unit="row", file=self.stream,
                             dynamic_ncols=True)

    # ---- the observer ------------------------------------------------------------
    def rows_finished(self, status: Status, n: int) -> None:
        self.done += n
        self.by_status[status.value] += n
        if self._bar is not None:
            self._bar.update(n)
        self._refresh()

    def calls_open(self, n: int) -> None:
        self.in_flight = n
        self._refresh()

    def units_queued(self, n: int) -> None:
        self.queued = max(0, self.queued + n)

    # ---- display ---------------------------------------------------------------------
    def eta_s(self) -> float | None:
        if self.copy_rate <= 0:
            return None
        return self.queued / self.copy_rate

    def _refresh(self) -> None:
        if self._bar is not None:
            extra: dict[str, Any] = {"in_flight": self.in_flight}
            bad = self.done_badly()
            if bad:
                extra["not_ok"] = bad
            self._bar.set_postfix(extra, refresh=False)
            return
        if self.mode == "log" and time.monotonic() - self._last_log >= self.interval_s:
            self._last_log = time.monotonic()
            self.log_line()

    def done_badly(self) -> int:
        return sum(n for s, n in self.by_status.items()
                   if s not in (Status.SUCCEEDED.value, Status.SKIPPED.value))

    def log_line(self) -> None:
        elapsed = time.monotonic() - self._started
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        counts = ", ".join(f"{s.lower()} {n}" for s, n in sorted(self.by_status.items()))
        print(f"{stamp} batchcopy: {self.done}/{self.total} rows done"
              + (f" ({counts})" if counts else "")
              + f", {self.in_flight} copies in flight, {elapsed:.0f}s elapsed",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self.log_line()
