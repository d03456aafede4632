"""The run summary beside a report: `build_summary` makes the JSON-able dict of counts and
run statistics, `write_summary[_async]` and `read_summary` store it at and read it from
`summary_path(report)` (local, or `s3://` for writing), and `human_summary` renders it as
a few short lines for stderr. No pyarrow or pandas is imported here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import math
import shlex
import shutil
import tempfile
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchcopy.core.durations import human_duration
from batchcopy.report.files import is_s3, s3_basename, write_local_atomic
from batchcopy.report.parquet import ReportCounts, to_utc
from batchcopy.core.specs import ExitCode, Status


def summary_path(report_path: str | Path) -> str:
    """The summary JSON beside a report: x.parquet -> x.summary.json (local or s3)."""
    text = str(report_path)
    for suffix in (".parquet", ".pq"):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)] + ".summary.json"
    return text + ".summary.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return to_utc(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, ReportCounts):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def build_summary(counts: ReportCounts, run_stats: dict[str, Any]) -> dict[str, Any]:
    """{"rows", "by_status", "by_error_code", **run_stats}, made JSON-able.

    Enums become their values, Paths strings, datetimes ISO-8601 UTC, NaN/inf null.
    run_stats may not use the keys rows / by_status / by_error_code (ValueError).
    """
    base = counts.as_dict()
    clash = sorted(set(base) & set(run_stats))
    if clash:
        raise ValueError(f"run_stats may not set {', '.join(clash)}")
    return _jsonable({**base, **run_stats})


def _summary_bytes(summary: dict[str, Any]) -> bytes:
    return (json.dumps(_jsonable(summary), indent=2) + "\n").encode("utf-8")


async def write_summary_async(summary: dict[str, Any], destination: str | Path) -> None:
    """Write the summary JSON to a local path (atomic, parents created) or an s3:// URL."""
    dest = str(destination)
    data = _summary_bytes(summary)
    if not is_s3(dest):
        write_local_atomic(data, Path(dest))
        return
    from batchcopy.aws import storage

    staging = Path(tempfile.mkdtemp(prefix="batchcopy-summary-"))
    try:
        local = staging / s3_basename(dest)
        local.write_bytes(data)
        await storage.upload(local, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_summary(summary: dict[str, Any], destination: str | Path) -> None:
    """Synchronous write_summary_async. Local paths work anywhere; for s3:// this runs its
    own event loop, so from inside a running loop (the runner) use write_summary_async
    (RuntimeError otherwise)."""
    dest = str(destination)
    if not is_s3(dest):
        write_local_atomic(_summary_bytes(summary), Path(dest))
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(write_summary_async(summary, dest))
        return
    raise RuntimeError("write_summary to s3 from a running event loop: use write_summary_async")


def read_summary(path: Path | str) -> dict[str, Any]:
    """Read a local summary JSON."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _fmt_rate(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3g}/s"
    return str(value)


def _counted(value: Any) -> str:
    """An int, or a dict of name -> int (total and parts)."""
    if isinstance(value, dict):
        parts = ", ".join(f"{k} {_fmt_int(v)}" for k, v in value.items())
        total = sum(v for v in value.values() if isinstance(v, (int, float)))
        return f"{_fmt_int(total)} ({parts})" if parts else "0"
    return _fmt_int(value)


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def human_summary(summary: dict[str, Any], *, top_errors: int = 5,
                  steps: bool | None = None) -> str:
    """A few short lines for stderr. Uses what the summary has; every key but the counts
    is optional. Recognised run_stats keys (either spelling):
      calls / api.calls (dict op -> n), throttles / api.throttles (int or dict),
      api.retries, merges (int or dict) or merged_calls + rows_in_merged_calls,
      split_calls, reconciled_calls, wall_time_s,
      copy_rate {"configured"|"configured_per_s", "achieved"|"achieved_per_s"},
      stop_reason, exit_code, manifest, report, summary (default summary_path(report)),
      journal, command (the `batchcopy run` command line).
    Then what to do next (`next_steps`) when `steps`, by default when the summary names the
    command that made it."""
    lines: list[str] = []
    by_status: dict[str, int] = summary.get("by_status") or {}
    known = [s.value for s in Status]
    order = known + [k for k in by_status if k not in known]
    parts = [f"{_fmt_int(by_status[k])} {k}" for k in order if by_status.get(k)]
    head = f"{_fmt_int(summary.get('rows', 0))} rows"
    if summary.get("manifest"):
        head += f" from {summary['manifest']}"
    lines.append(f"{head}: {', '.join(parts) if parts else 'nothing'}")

    earlier = summary.get("earlier_runs_left") or {}
    if earlier:
        parts = ", ".join(f"{_fmt_int(n)} {k}" for k, n in earlier.items() if n)
        lines.append(f"{parts} from earlier runs: not retried, not in the exit code (the "
                     "report says why)")

    codes: dict[str, int] = summary.get("by_error_code") or {}
    if codes:
        ranked = sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{k} {_fmt_int(v)}" for k, v in ranked[:top_errors])
        more = f", and {len(ranked) - top_errors} more" if len(ranked) > top_errors else ""
        lines.append(f"errors: {shown}{more}")

    api = summary.get("api") if isinstance(summary.get("api"), dict) else {}
    work: list[str] = []
    calls = _first(summary, "calls")
    calls = calls if calls is not None else api.get("calls")
    if calls is not None:
        work.append(f"calls {_counted(calls)}")
    throttles = _first(summary, "throttles")
    throttles = throttles if throttles is not None else api.get("throttles")
    if throttles is not None:
        work.append(f"throttles {_counted(throttles)}")
    if api.get("retries"):
        work.append(f"retries {_counted(api['retries'])}")
    if summary.get("merges") is not None:
        work.append(f"merges {_counted(summary['merges'])}")
    elif summary.get("merged_calls"):
        merged = f"merged calls {_fmt_int(summary['merged_calls'])}"
        if summary.get("rows_in_merged_calls"):
            merged += f" (carrying {_fmt_int(summary['rows_in_merged_calls'])} rows)"
        work.append(merged)
    for key, label in (("split_calls", "split calls"), ("reconciled_calls", "reconciled calls")):
        if summary.get(key):
            work.append(f"{label} {_fmt_int(summary[key])}")
    if work:
        lines.append("; ".join(work))

    timing: list[str] = []
    wall = summary.get("wall_time_s")
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        timing.append(f"wall time {human_duration(float(wall))}")
    rate = summary.get("copy_rate")
    if isinstance(rate, dict):
        achieved = _first(rate, "achieved", "achieved_per_s")
        configured = _first(rate, "configured", "configured_per_s")
        if achieved is not None and configured is not None:
            timing.append(
                f"CopyImageSet rate {_fmt_rate(achieved)} achieved of {_fmt_rate(configured)} configured"
            )
        elif achieved is not None:
            timing.append(f"CopyImageSet rate {_fmt_rate(achieved)} achieved")
        elif configured is not None:
            timing.append(f"CopyImageSet rate {_fmt_rate(configured)} configured")
    if summary.get("stop_reason"):
        timing.append(f"stopped: {summary['stop_reason']}")
    if summary.get("exit_code") is not None:
        code = summary["exit_code"]
        try:
            timing.append(f"exit code {int(code)} ({ExitCode(int(code)).name})")
        except (TypeError, ValueError):
            timing.append(f"exit code {code}")
    if timing:
        lines.append("; ".join(timing))

    report = summary.get("report")
    if report:
        report = str(report)
        lines.append(f"report:  {report}")
        lines.append(f"summary: {summary.get('summary') or summary_path(report)}")
        how = f"read it: batchcopy report {shlex.quote(report)}"
        if not report.lower().startswith("s3://"):
            code = f"import pandas as pd; print(pd.read_parquet({json.dumps(report)}))"
            how += f"   or   python -c {shlex.quote(code)}"
        lines.append(how)
    if summary.get("journal"):
        lines.append(f"journal: {summary['journal']}" + (
            " (running the same command again continues it)" if summary.get("command") else ""))
    if steps or (steps is None and summary.get("command")):
        lines.extend(next_steps(summary))
    return "\n".join(lines)


_GOOD = (Status.SUCCEEDED.value, Status.SKIPPED.value)


def this_run_left(summary: dict[str, Any]) -> dict[str, int]:
    """Rows this run did not get done, by status: every row that did not succeed, less
    the ones an earlier run decided (`earlier_runs_left`: FAILED rows no rerun touches)."""
    earlier: dict[str, int] = summary.get("earlier_runs_left") or {}
    by_status: dict[str, int] = summary.get("by_status") or {}
    left = {s: n - earlier.get(s, 0) for s, n in by_status.items() if s not in _GOOD}
    return {s: n for s, n in left.items() if n > 0}


def alert_line(summary: dict[str, Any]) -> str | None:
    """The one line worth a log alert: how many rows this run did not get done and where
    to look. None when this run left nothing (earlier runs' failures are not repeated)."""
    left = this_run_left(summary)
    if not left:
        return None
    total = sum(left.values())
    parts = ", ".join(f"{_fmt_int(n)} {s}" for s, n in left.items())
    report = summary.get("report")
    where = (f"batchcopy report {shlex.quote(str(report))} says why" if report
             else "the report says why")
    return (f"{_fmt_int(total)} of {_fmt_int(summary.get('rows', 0))} rows not done in this "
            f"run ({parts}): {where}")


_STOPPED = {
    "interrupted": "the run was interrupted",
    "time-limit": "--max-duration was reached",
    "aborted": "the run was aborted: fix the cause above first",
    "internal-error": "the run stopped on an internal error",
    "limit": "left by --limit, the canary is done",
}


def next_steps(summary: dict[str, Any]) -> list[str]:
    """What to run next, as lines for people: the command that continues the manifest (rows
    not run, conflicts, UNKNOWN rows), and how to retry FAILED rows once their cause is
    fixed. Nothing when every row is done."""
    by_status: dict[str, int] = summary.get("by_status") or {}
    codes: dict[str, int] = summary.get("by_error_code") or {}
    command = summary.get("command")
    if not command:
        manifest = summary.get("manifest")
        command = f"batchcopy run {shlex.quote(str(manifest))}" if manifest else \
            "the same batchcopy run command"
    left = {s: by_status.get(s, 0) for s in (Status.NOT_RUN.value, Status.CONFLICT.value,
                                            Status.UNKNOWN.value)}
    failed = by_status.get(Status.FAILED.value, 0)
    if not failed and not any(left.values()):
        return []
    lines = ["next:"]

    def prose(text: str, indent: str = "    ") -> None:
        lines.extend(textwrap.wrap(text, 92, initial_indent=indent, subsequent_indent=indent))

    if any(left.values()):
        parts = ", ".join(f"{_fmt_int(n)} {s}" for s, n in left.items() if n)
        why = _STOPPED.get(str(summary.get("stop_reason") or ""))
        again = ("without --limit (or with it again, for the next rows)"
                 if summary.get("stop_reason") == "limit" else "again")
        prose(f"to continue ({parts}{': ' + why if why else ''}), run the same command {again}:",
              "  ")
        lines.append(f"    {command}")
        notes = ["Rows done are skipped with no API call."]
        if left[Status.UNKNOWN.value]:
            notes.append("UNKNOWN rows are checked against the service first, never resent "
                         "blindly (the report's evidence column says what was seen).")
        if codes.get("StaleVersionPin"):
            notes.append("Rows CONFLICT on a stale version pin stay CONFLICT until the pin in "
                         "the manifest is updated or emptied (or with --pins hint).")
        prose(" ".join(notes))
    if failed:
        report = summary.get("report")
        journal = summary.get("journal")
        it = "them" if failed > 1 else "it"
        prose(f"{_fmt_int(failed)} FAILED: the service's final answer; a rerun leaves {it} "
              "FAILED. See why:", "  ")
        lines.append(f"    batchcopy report {shlex.quote(str(report))}" if report else
                     "    batchcopy report REPORT")
        prose(f"To retry {it} once the cause is fixed, correct {it} in the manifest (an edited "
              "row is new work) and run the same command again; or"
              + (", once nothing else is left," if any(left.values()) else "")
              + f" run {it} as a manifest of {'its' if failed == 1 else 'their'} own:")
        source = shlex.quote(str(journal or report or "JOURNAL"))
        lines.append(f"    batchcopy report {source} --failed-manifest failed.csv"
                     " && batchcopy run failed.csv")
    return lines
