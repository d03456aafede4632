"""`--metrics-file PATH`: the run's numbers for dashboards and alarms, in the Prometheus
text format that node_exporter's textfile collector reads (`*.prom` in its directory).

The file is a snapshot, rewritten every --log-interval seconds and once more at the end
(then with the exit code), each time whole: written beside its place and renamed over it,
so a reader never sees half a file (what the textfile collector asks of its writers).
Every series carries the manifest as a label, so runs of several manifests can share the
collector's directory, each with its own file.

    batchcopy_run_running            1 while the run goes on, 0 once it has ended
    batchcopy_run_exit_code          the exit code (at the end only)
    batchcopy_run_id, batchcopy_run_started_timestamp_seconds,
    batchcopy_last_update_timestamp_seconds   (alarm when it stops moving)
    batchcopy_rows_total, batchcopy_rows_done (SUCCEEDED, SKIPPED or FAILED, earlier runs too)
    batchcopy_rows_finished{status}  rows this run brought to a status
    batchcopy_calls_in_flight, batchcopy_calls_queued
    batchcopy_throttles_total, batchcopy_copy_calls_accepted_total
    batchcopy_copy_rate_per_second (accepted), batchcopy_copy_quota_per_second,
    batchcopy_eta_seconds            when known

A file that cannot be written (a full disk) is one WARNING, and the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from batchcopy.console import logs

_HELP = {
    "run_running": ("gauge", "1 while the run goes on, 0 once it has ended."),
    "run_exit_code": ("gauge", "The run's exit code (0 done, 1 rows failed, 3 aborted, 5 time limit, 130 interrupted)."),
    "run_id": ("gauge", "The run's number in its journal."),
    "run_started_timestamp_seconds": ("gauge", "When the run started (Unix time)."),
    "last_update_timestamp_seconds": ("gauge", "When this file was written (Unix time)."),
    "rows_total": ("gauge", "Rows of the manifest."),
    "rows_done": ("gauge", "Rows with a final status (SUCCEEDED, SKIPPED, FAILED), earlier runs included."),
    "rows_finished": ("gauge", "Rows this run brought to a status."),
    "calls_in_flight": ("gauge", "CopyImageSet calls sent and not settled."),
    "calls_queued": ("gauge", "CopyImageSet calls planned and not sent."),
    "throttles_total": ("counter", "Throttled requests in this run."),
    "copy_calls_accepted_total": ("counter", "CopyImageSet calls the service accepted in this run."),
    "copy_rate_per_second": ("gauge", "Accepted CopyImageSet calls per second, recently."),
    "copy_quota_per_second": ("gauge", "The CopyImageSet rate the run paces to."),
    "eta_seconds": ("gauge", "Seconds until the last call is sent, at the recent rate."),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshot: dict[str, Any], *, manifest: str, run_id: int, started: float,
           exit_code: int | None, now: float) -> str:
    """The file's text for one snapshot of console/progress.Progress."""
    base = f'manifest="{_label(manifest)}"'
    values: dict[str, list[tuple[str, float]]] = {
        "run_running": [("", 0 if exit_code is not None else 1)],
        "run_id": [("", run_id)],
        "run_started_timestamp_seconds": [("", round(started, 3))],
        "last_update_timestamp_seconds": [("", round(now, 3))],
        "rows_total": [("", snapshot["rows_total"])],
        "rows_done": [("", snapshot["rows_done"])],
        "rows_finished": [(f',status="{s}"', n) for s, n in snapshot["by_status"].items()],
        "calls_in_flight": [("", snapshot["in_flight"])],
        "calls_queued": [("", snapshot["queued"])],
        "throttles_total": [("", snapshot["throttles"])],
        "copy_calls_accepted_total": [("", snapshot["copy_calls_accepted"])],
        "copy_quota_per_second": [("", snapshot["quota_per_s"])],
    }
    if exit_code is not None:
        values["run_exit_code"] = [("", exit_code)]
    if snapshot.get("accepted_rate_per_s") is not None:
        values["copy_rate_per_second"] = [("", snapshot["accepted_rate_per_s"])]
    if snapshot.get("eta_s") is not None:
        values["eta_seconds"] = [("", snapshot["eta_s"])]
    lines = []
    for name, (kind, text) in _HELP.items():
        if not values.get(name):
            continue
        lines += [f"# HELP batchcopy_{name} {text}", f"# TYPE batchcopy_{name} {kind}"]
        lines += [f"batchcopy_{name}{{{base}{extra}}} {float(value):g}" for extra, value in values[name]]
    return "\n".join(lines) + "\n"


class MetricsFile:
    def __init__(self, path: str, *, manifest: str, run_id: int, progress: Any,
                 clock: Any = time.time) -> None:
        self.path = Path(path)
        self.manifest, self.run_id, self.progress = manifest, run_id, progress
        self._clock = clock
        self.started = clock()
        self._warned = False

    def write(self, final: Any = None, exit_code: int | None = None) -> None:
        """Write the snapshot (with `final`, the journal's statuses, at the end)."""
        text = render(self.progress.snapshot(final), manifest=self.manifest, run_id=self.run_id,
                      started=self.started, exit_code=exit_code, now=self._clock())
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if not self._warned:
                self._warned = True
                logs.say(f"batchcopy: --metrics-file: cannot write {self.path}: "
                         f"{exc.strerror or exc}; the run goes on", level=logging.WARNING,
                         event="metrics_error")
