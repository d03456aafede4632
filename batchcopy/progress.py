"""Progress for humans (a tqdm bar on a TTY) and for cron (a plain line every N seconds)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Rows done out of the manifest's total, copies in flight, ETA from the quota."""

    def __init__(self, total: int, *, mode: str = "auto", interval_s: float = 30.0,
                 copy_rate: float = 0.25, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.total = total
        self.done = 0
        self.in_flight = 0
        self.copies_left = 0
        self.copy_rate = copy_rate
        self.interval_s = interval_s
        self._last_log = time.monotonic()
        self._started = time.monotonic()
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit="row", file=self.stream, dynamic_ncols=True)

    def advance(self, rows: int = 1) -> None:
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
        self._refresh()

    def set_in_flight(self, n: int) -> None:
        self.in_flight = n
        self._refresh()

    def eta_s(self) -> float | None:
        if self.copy_rate <= 0:
            return None
        return self.copies_left / self.copy_rate

    def _refresh(self) -> None:
        if self._bar is not None:
            eta = self.eta_s()
            extra = {"in_flight": self.in_flight}
            if eta is not None:
                extra["quota_eta"] = f"{eta:.0f}s"
            self._bar.set_postfix(extra, refresh=False)
            return
        if self.mode == "log" and time.monotonic() - self._last_log >= self.interval_s:
            self._last_log = time.monotonic()
            self.log_line()

    def log_line(self) -> None:
        eta = self.eta_s()
        elapsed = time.monotonic() - self._started
        print(f"batchcopy: {self.done}/{self.total} rows done, {self.in_flight} copies in "
              f"flight, {elapsed:.0f}s elapsed"
              + (f", about {eta:.0f}s left at the copy quota" if eta is not None else ""),
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self.log_line()
