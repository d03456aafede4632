"""What a run tells its operator away from the terminal: the metrics file while it runs
(console/metrics.py) and a notification when it ends (console/notify.py), wired once for
commands/run.py."""

from __future__ import annotations

import logging
from typing import Any

from batchcopy.console import logs
from batchcopy.console.metrics import MetricsFile
from batchcopy.console.notify import Target, message, send_all
from batchcopy.console.tally import Ticker


class Outlets:
    def __init__(self, *, notify: list[Target], metrics_file: str | None, interval_s: float,
                 manifest: str, run_id: int, progress: Any, profile: str | None) -> None:
        self.notify, self.profile = notify, profile
        self.interval_s = interval_s
        self.metrics = (MetricsFile(metrics_file, manifest=manifest, run_id=run_id,
                                    progress=progress) if metrics_file else None)
        self._ticker: Ticker | None = None

    def start(self) -> None:
        """The first metrics snapshot now, then one every --log-interval (in the run's loop)."""
        if self.metrics is not None:
            self.metrics.write()
            self._ticker = Ticker(self.interval_s, self.metrics.write)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    async def ended(self, exit_code: int, text: str, summary: dict[str, Any],
                    final: Any = None) -> int:
        """The last metrics (with the exit code) and the notifications; returns `exit_code`,
        whatever became of them."""
        from batchcopy.core.specs import ExitCode

        self.stop()
        if self.metrics is not None:
            self.metrics.write(final, exit_code=int(exit_code))
        if self.notify:
            code = int(exit_code)
            outcome = ExitCode(code).name if code in set(ExitCode) else str(code)
            line = f"{text} (exit {code}, {outcome})"
            for failure in await send_all(self.notify, message(line, code, outcome, summary),
                                          profile=self.profile):
                logs.say(f"batchcopy: {failure}; the run's exit code is unchanged",
                         level=logging.WARNING, event="notify_error")
        return exit_code
