"""What `batchcopy report` shows: a run's rows, from a journal or a report file, boiled
down to what a person looks at: the counts, the rows that went wrong with their messages
(FAILED, CONFLICT, UNKNOWN), the NOT_RUN rows grouped by cause, queue waits and copy
durations, and the timelines the HTML page draws. `render_table` and `as_json` print it;
`report/html.py` draws it. Streams the rows once; holds the problem rows (up to a limit
per status) and one number per row for the charts. No pyarrow, pandas or plotting here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from batchcopy.report.parquet import ReportCounts, RowResult
from batchcopy.core.specs import ExitCode, Status

PROBLEM_STATUSES = (Status.FAILED, Status.CONFLICT, Status.UNKNOWN)
ACCEPTED_CALL_STATES = frozenset({"ANSWERED", "ADOPTED", "DONE"})
SAMPLE_IDS = 10  # row ids shown per NOT_RUN cause
MAX_LISTED = 1000  # failure groups, created image sets and skip reasons held (then counted)

# What each status means for the next run (the report's one-line legend).
MEANING = {
    Status.FAILED: "the service's final answer about the row; a rerun does not retry it "
                   "(fix the row, then run the rows again with --failed-manifest)",
    Status.CONFLICT: "nothing was copied: a pinned version was stale (update or empty the "
                     "pin, or run with --pins hint), or other writers kept overtaking the copy "
                     "(the next run tries again)",
    Status.UNKNOWN: "a copy may or may not have been made; the next run settles it from the "
                    "service (never resent blindly); see the evidence",
    Status.NOT_RUN: "no copy was made; the next run of the manifest runs these rows",
    "ok": "Nothing went wrong: every row SUCCEEDED or was SKIPPED (already done); nothing to "
          "retry.",
}


@dataclass
class Problem:
    """One FAILED, CONFLICT or UNKNOWN row, as the report shows it."""

    manifest_row: int
    row_id: str
    status: str
    error_code: str | None
    message: str | None  # the error message, or the evidence when there is none
    evidence: str | None
    source_image_set_id: str | None
    destination_image_set_id: str | None
    result_image_set_id: str | None
    call_id: str | None
    extras: str | None

    @classmethod
    def of(cls, row: RowResult) -> Problem:
        return cls(row.manifest_row, row.row_id, row.status.value, row.error_code,
                   row.error_message or row.evidence, row.evidence, row.source_image_set_id,
                   row.destination_image_set_id, row.result_image_set_id, row.call_id,
                   row.extras)


@dataclass
class Cause:
    """NOT_RUN rows that share a cause (an error code, or the stop's message)."""

    error_code: str | None
    message: str | None
    rows: int = 0
    row_ids: list[str] = field(default_factory=list)


@dataclass
class Group:
    """Rows of one status that failed alike: the same error code and message."""

    status: str
    error_code: str | None
    message: str | None
    first: Problem  # the first such row (its source, destination, extras)
    rows: int = 0
    row_ids: list[str] = field(default_factory=list)
    one_source: bool = True  # every row names the first row's source


@dataclass
class Created:
    """An image set a copy of this run created (a row with no destination)."""

    manifest_row: int
    row_id: str
    status: str
    source_image_set_id: str | None
    image_set_id: str
    version_id: str | None


@dataclass
class Reason:
    """SKIPPED rows that share why: done by an earlier run, already present..."""

    label: str
    example: str | None  # one row's evidence, word for word
    rows: int = 0
    row_ids: list[str] = field(default_factory=list)


@dataclass
class RunView:
    source: str
    kind: str  # "journal" | "report"
    run: dict[str, Any] | None = None  # the run's context (summary / journal / file metadata)
    counts: ReportCounts = field(default_factory=ReportCounts)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    not_run: dict[str, Cause] = field(default_factory=dict)
    limit: int | None = None
    meaning: dict[Any, str] = field(default_factory=lambda: MEANING)  # status -> legend, "ok"
    # one number per row or call of the run shown (epoch seconds / seconds), for charts
    finished_at: array = field(default_factory=lambda: array("d"))
    finished_ok: array = field(default_factory=lambda: array("b"))
    sent_at: array = field(default_factory=lambda: array("d"))  # CopyImageSet calls
    call_accepted: array = field(default_factory=lambda: array("b"))
    copy_durations: array = field(default_factory=lambda: array("d"))  # SUCCEEDED rows
    detection_delays: array = field(default_factory=lambda: array("d"))  # their ends seen
    queue_waits: array = field(default_factory=lambda: array("d"))
    causes: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, cause): rows
    calls_from_journal: bool = False
    earlier_rows: int = 0  # rows whose status an earlier run decided (left off the timeline)
    groups: dict[tuple[str, str | None, str | None], Group] = field(default_factory=dict)
    created: list[Created] = field(default_factory=list)  # at most MAX_LISTED
    created_total: int = 0
    skipped: dict[str, Reason] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.counts.all_done

    @property
    def run_id(self) -> int | None:
        value = (self.run or {}).get("run_id")
        return value if isinstance(value, int) else None

    def copy_rate(self) -> float | None:
        rate = ((self.run or {}).get("copy_rate") or {}).get("configured_per_s")
        return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def collect(rows: Iterable[RowResult], *, source: str, kind: str,
            run: dict[str, Any] | None = None,
            calls: list[tuple[float, str, str | None]] | None = None,
            limit: int | None = None, meaning: dict[Any, str] | None = None) -> RunView:
    """Read `rows` once into a RunView. `calls` (sent_at, state, error_code) are the run's
    CopyImageSet calls from its journal; without them the calls are the ones the rows
    name. `limit`: problem rows kept per status (None: all)."""
    view = RunView(source=source, kind=kind, run=run, limit=limit, meaning=meaning or MEANING)
    run_id = view.run_id
    seen_calls: set[str] = set()
    for row in rows:
        view.counts.add(row)
        status = row.status
        if status in PROBLEM_STATUSES:
            kept = view.problems.setdefault(status.value, [])
            if limit is None or len(kept) < limit:
                kept.append(Problem.of(row))
            _group(view, row)
        elif status is Status.SKIPPED:
            _skipped(view, row)
        elif status is Status.NOT_RUN:
            key = row.error_code or row.error_message or "(no cause recorded)"
            cause = view.not_run.get(key)
            if cause is None:
                cause = view.not_run[key] = Cause(row.error_code, row.error_message)
            cause.rows += 1
            if len(cause.row_ids) < SAMPLE_IDS:
                cause.row_ids.append(row.row_id)
        if status not in (Status.SUCCEEDED, Status.SKIPPED):
            cause_key = (status.value, row.error_code or _short(row.error_message or row.evidence)
                         or "no cause recorded")
            view.causes[cause_key] = view.causes.get(cause_key, 0) + 1
        if run_id is not None and row.run_id is not None and row.run_id != run_id:
            view.earlier_rows += 1
            continue  # done in an earlier run: not on this run's timeline
        if not row.destination_image_set_id and row.result_image_set_id and status in (
                Status.SUCCEEDED, Status.FAILED, Status.UNKNOWN):
            view.created_total += 1
            if len(view.created) < MAX_LISTED:
                view.created.append(Created(row.manifest_row, row.row_id, status.value,
                                            row.source_image_set_id, row.result_image_set_id,
                                            row.result_version_id))
        if row.finished_at is not None and status is not Status.NOT_RUN:
            view.finished_at.append(row.finished_at.timestamp())
            view.finished_ok.append(status in (Status.SUCCEEDED, Status.SKIPPED))
        if status is Status.SUCCEEDED and row.copy_duration_s is not None:
            view.copy_durations.append(row.copy_duration_s)
        if status is Status.SUCCEEDED and row.detection_delay_s is not None:
            view.detection_delays.append(row.detection_delay_s)
        if row.queue_wait_s is not None and row.sent_at is not None:
            view.queue_waits.append(row.queue_wait_s)
        if calls is None and row.call_id and row.sent_at and row.call_id not in seen_calls:
            seen_calls.add(row.call_id)
            view.sent_at.append(row.sent_at.timestamp())
            view.call_accepted.append(bool(row.workflow_status or row.result_version_id))
    if calls is not None:
        view.calls_from_journal = True
        for sent, state, _code in calls:
            view.sent_at.append(sent)
            view.call_accepted.append(state in ACCEPTED_CALL_STATES)
    view.counts = view.counts.sorted()
    return view


def _group(view: RunView, row: RowResult) -> None:
    message = row.error_message or row.evidence
    key = (row.status.value, row.error_code, message)
    group = view.groups.get(key)
    if group is None:
        if len(view.groups) >= MAX_LISTED:
            key = (row.status.value, row.error_code, None)  # past the cap: by code alone
            group = view.groups.get(key)
        if group is None:
            group = view.groups[key] = Group(row.status.value, row.error_code, key[2], Problem.of(row))
    group.rows += 1
    group.one_source = group.one_source and row.source_image_set_id == group.first.source_image_set_id
    if len(group.row_ids) < SAMPLE_IDS:
        group.row_ids.append(row.row_id)


def skip_reason(evidence: str | None) -> str:
    """The kind of reason a SKIPPED row's evidence gives (what the page groups by)."""
    text = evidence or ""
    if text.startswith("done in run "):
        return text.split(";", 1)[0] + ": not copied again"
    if "already in" in text:
        return "already present in the destination, with the source's attributes"
    return _short(text, 80) or "no reason recorded"


def _skipped(view: RunView, row: RowResult) -> None:
    label = skip_reason(row.evidence)
    reason = view.skipped.get(label)
    if reason is None:
        if len(view.skipped) >= MAX_LISTED:
            return
        reason = view.skipped[label] = Reason(label, row.evidence)
    reason.rows += 1
    if len(reason.row_ids) < SAMPLE_IDS:
        reason.row_ids.append(row.row_id)


def _short(text: str | None, width: int = 48) -> str | None:
    if not text:
        return None
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


# ---------------------------------------------------------------- figures

def percentiles(values: Iterable[float]) -> dict[str, Any]:
    """{"n", "p50", "p90", "p99", "max", "mean"} (nearest rank), or {"n": 0}."""
    data = sorted(values)
    if not data:
        return {"n": 0}

    def rank(p: float) -> float:
        return data[min(len(data) - 1, max(0, math.ceil(p * len(data)) - 1))]

    return {"n": len(data), "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99),
            "max": data[-1], "mean": round(sum(data) / len(data), 3)}


def _iso(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return value if isinstance(value, str) else None


def as_json(view: RunView, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The view as one JSON-able dict (what `batchcopy report --output json` prints)."""
    counts = view.counts.as_dict()
    out: dict[str, Any] = {
        "source": view.source, "kind": view.kind, "ok": view.ok, **counts,
        "run": view.run,
        "problems": {s.value: {"total": counts["by_status"].get(s.value, 0),
                               "meaning": view.meaning[s],
                               "rows": [p.__dict__ for p in view.problems.get(s.value, [])]}
                     for s in PROBLEM_STATUSES},
        "not_run": {"total": counts["by_status"].get(Status.NOT_RUN.value, 0),
                    "meaning": view.meaning[Status.NOT_RUN],
                    "causes": [c.__dict__ for c in sorted(view.not_run.values(),
                                                          key=lambda c: -c.rows)]},
        "durations": {"queue_wait_s": percentiles(view.queue_waits),
                      "copy_duration_s": percentiles(view.copy_durations),
                      "detection_delay_s": percentiles(view.detection_delays)},
        "rows_listed_per_status": view.limit,
    }
    out.update(extra or {})
    return out


# ---------------------------------------------------------------- the table

def _fmt_s(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is never padded (messages run on)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    lines = []
    for cells in [headers, *rows]:
        padded = [c.ljust(w) for c, w in zip(cells, widths)] + [cells[-1]]
        lines.append(indent + "  ".join(padded).rstrip())
    return lines


def run_line(view: RunView) -> str | None:
    """'run 3 of manifests/x.csv, 2026-... -> 2026-..., exit 1 (ROWS_FAILED)'."""
    run = view.run or {}
    if not run:
        return None
    head = " ".join(p for p in (f"run {run['run_id']}" if run.get("run_id") is not None else "",
                                 f"of {run['manifest']}" if run.get("manifest") else "") if p)
    parts = [head] if head else []
    start, end = _iso(run.get("started_at")), _iso(run.get("finished_at"))
    if start:
        parts.append(f"started {start[:19].replace('T', ' ')} UTC")
    if end:
        parts.append(f"ended {end[:19].replace('T', ' ')} UTC")
    elif start and view.kind == "journal":
        parts.append("never ended (killed, or still running)")
    code = run.get("exit_code")
    if code is not None:
        try:
            parts.append(f"exit {int(code)} ({ExitCode(int(code)).name})")
        except (TypeError, ValueError):
            parts.append(f"exit {code}")
    versions = run.get("versions") or {}
    if versions.get("batchcopy"):
        parts.append(f"batchcopy {versions['batchcopy']}")
    return ", ".join(parts)


def render_table(view: RunView) -> str:
    counts = view.counts
    by_status = counts.by_status
    lines = [f"{view.source}: {counts.rows:,} rows: "
             + (", ".join(f"{n:,} {s}" for s, n in by_status.items() if n) or "none")]
    context = run_line(view) if view.kind != "verify" else None
    if context:
        lines.append(context)
    if view.earlier_rows:
        lines.append(f"{view.earlier_rows:,} of them were done by earlier runs of this journal")
    if counts.rows == 0:
        lines.append(view.meaning.get("empty", "the manifest had no rows"))
        return "\n".join(lines)
    if view.ok:
        lines.append(view.meaning["ok"])
    for status in PROBLEM_STATUSES:
        total = by_status.get(status.value, 0)
        if not total:
            continue
        shown = view.problems.get(status.value, [])
        lines += ["", f"{status.value} ({total:,}): {view.meaning[status]}"]
        lines += _table(["row", "row_id", "error_code", "message"],
                        [[str(p.manifest_row), p.row_id, p.error_code or "-",
                          (p.message or "-").replace("\n", " ")] for p in shown])
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown):,} more (--limit 0 lists all; "
                         f"--output json for every field)")
    not_run = by_status.get(Status.NOT_RUN.value, 0)
    if not_run:
        lines += ["", f"NOT_RUN ({not_run:,}) by cause: {view.meaning[Status.NOT_RUN]}"]
        causes = sorted(view.not_run.values(), key=lambda c: -c.rows)
        lines += _table(["rows", "error_code", "e.g. row_id", "cause"],
                        [[f"{c.rows:,}", c.error_code or "-",
                          ", ".join(c.row_ids[:3]) + (", ..." if c.rows > 3 else ""),
                          (c.message or "-").replace("\n", " ")] for c in causes])
    waits, copies = percentiles(view.queue_waits), percentiles(view.copy_durations)
    if (copies["n"] or waits["n"]) and view.kind != "verify":
        lines.append("")
        if copies["n"]:
            lines.append(f"copy duration ({copies['n']:,} copied rows): median "
                         f"{_fmt_s(copies['p50'])}, p90 {_fmt_s(copies['p90'])}, "
                         f"max {_fmt_s(copies['max'])}")
        seen = percentiles(view.detection_delays)
        if seen["n"]:
            lines.append(f"end seen after (the copy's end -> the run saw it, {seen['n']:,} "
                         f"rows): median {_fmt_s(seen['p50'])}, p90 {_fmt_s(seen['p90'])}, "
                         f"max {_fmt_s(seen['max'])}")
        if waits["n"]:
            lines.append(f"queue wait (started -> sent, {waits['n']:,} rows): median "
                         f"{_fmt_s(waits['p50'])}, p90 {_fmt_s(waits['p90'])}, "
                         f"max {_fmt_s(waits['max'])}")
    return "\n".join(lines)
