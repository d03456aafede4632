"""Tests for batchcopy.summary: the summary JSON and its few lines for people."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from batchcopy.report.parquet import write_report
from batchcopy.report.rows import ReportCounts, RowResult
from batchcopy.core.specs import ExitCode, Status
from batchcopy.report.summary import (
    build_summary,
    human_summary,
    read_summary,
    summary_path,
    write_summary,
    write_summary_async,
)
from test_report import make_rows


def run_stats(report: Path) -> dict[str, object]:
    return {
        "calls": {"CopyImageSet": 240, "GetImageSet": 1900},
        "throttles": {"CopyImageSet": 2, "GetImageSet": 5},
        "merges": 60,
        "wall_time_s": 3723.4,
        "copy_rate": {"configured": 0.25, "achieved": 0.2412},
        "exit_code": ExitCode.ROWS_FAILED,
        "manifest": Path("manifests/m.csv"),
        "report": report,
        "journal": Path("reports/m.journal.sqlite"),
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "nan_is_null": math.nan,
    }


def test_summary_json_round_trip(tmp_path: Path) -> None:
    report = tmp_path / "m-1.parquet"
    counts = asyncio.run(write_report(make_rows(30), report))
    summary = build_summary(counts, run_stats(report))
    assert summary["rows"] == 30 and summary["by_status"] == counts.by_status
    assert summary["exit_code"] == 1 and summary["manifest"] == "manifests/m.csv"
    assert summary["started_at"] == "2026-01-01T00:00:00+00:00" and summary["nan_is_null"] is None
    dest = summary_path(report)
    write_summary(summary, dest)
    assert read_summary(dest) == summary
    assert json.loads(Path(dest).read_text()) == summary

    async def from_a_loop() -> None:  # the runner's way
        await write_summary_async(summary, tmp_path / "sub" / "again.summary.json")
        write_summary(summary, tmp_path / "sync-in-loop.summary.json")  # local: fine in a loop

    asyncio.run(from_a_loop())
    assert read_summary(tmp_path / "sub" / "again.summary.json") == summary
    assert read_summary(tmp_path / "sync-in-loop.summary.json") == summary
    with pytest.raises(ValueError, match="rows"):
        build_summary(counts, {"rows": 1})


def test_human_summary_mentions_counts_errors_and_paths(tmp_path: Path) -> None:
    counts = ReportCounts()
    for i in range(9):
        counts.add(RowResult(i, str(i), Status.SUCCEEDED))
    counts.add(RowResult(9, "9", Status.FAILED, error_code="COPY_FAILED"))
    counts.add(RowResult(10, "10", Status.CONFLICT, error_code="ConflictException"))
    report = tmp_path / "m-1.parquet"
    text = human_summary(build_summary(counts, run_stats(report)))
    lines = text.splitlines()
    assert 5 <= len(lines) <= 10
    assert "11 rows" in text
    assert "9 SUCCEEDED" in text and "1 FAILED" in text and "1 CONFLICT" in text
    assert "UNKNOWN" not in text  # zero counts are not shown
    assert "COPY_FAILED 1" in text and "ConflictException 1" in text
    assert "CopyImageSet 240" in text and "throttles 7" in text
    assert "wall time 1 h 2 min" in text
    assert "0.241/s achieved of 0.25/s configured" in text
    assert "exit code 1 (ROWS_FAILED)" in text
    assert str(report) in text and summary_path(report) in text
    assert f"batchcopy report {report}" in text and "pd.read_parquet" in text

    minimal = human_summary(ReportCounts().as_dict())
    assert minimal == "0 rows: nothing"


def test_human_summary_reads_the_runner_stats_shape(tmp_path: Path) -> None:
    """The keys batchcopy.runner.summary_stats / commands/run.py put in run_stats."""
    counts = ReportCounts()
    counts.add(RowResult(1, "1", Status.SUCCEEDED))
    counts.add(RowResult(2, "2", Status.NOT_RUN, error_code="AccessDeniedException"))
    stats = {
        "stop_reason": "aborted",
        "abort_message": "AccessDeniedException: no",
        "api": {
            "calls": {"CopyImageSet": 12, "GetImageSet": 40},
            "throttles": {"CopyImageSet": 3},
            "retries": {"GetImageSet": 2},
            "errors": {"AccessDeniedException": 1},
        },
        "copy_calls": 12, "units": 12, "merged_calls": 4, "rows_in_merged_calls": 30,
        "split_calls": 1, "reconciled_calls": 0, "wall_time_s": 59.25,
        "copy_rate": {"configured_per_s": 0.25, "achieved_per_s": 0.2, "ratio": 0.8},
        "exit_code": 3, "manifest": "s3://in/m.csv", "report": "s3://out/m-1.parquet",
        "journal": "reports/m-1.journal.sqlite", "run_id": 2,
    }
    text = human_summary(build_summary(counts, stats))
    assert "2 rows from s3://in/m.csv: 1 SUCCEEDED, 1 NOT_RUN" in text
    assert "errors: AccessDeniedException 1" in text
    assert "calls 52 (CopyImageSet 12, GetImageSet 40)" in text and "throttles 3" in text
    assert "retries 2" in text and "merged calls 4 (carrying 30 rows)" in text and "split calls 1" in text
    assert "reconciled" not in text
    assert "wall time 59 s" in text and "0.2/s achieved of 0.25/s configured" in text
    assert "stopped: aborted" in text and "exit code 3 (ABORTED)" in text
    assert "summary: s3://out/m-1.summary.json" in text
    assert "batchcopy report s3://out/m-1.parquet" in text and "pd.read_parquet" not in text
    assert "journal: reports/m-1.journal.sqlite" in text


def test_human_summary_limits_error_codes() -> None:
    summary = {"rows": 8, "by_status": {"FAILED": 8}, "by_error_code": {f"E{i}": i + 1 for i in range(8)}}
    text = human_summary(summary, top_errors=3)
    assert "E7 8, E6 7, E5 6, and 5 more" in text and "E0" not in text


def test_next_steps_give_the_command_that_continues_and_how_to_retry_failures() -> None:
    from batchcopy.report.summary import next_steps

    base = {"manifest": "m.csv", "report": "reports/m-1.parquet", "journal": "/state/m.sqlite",
            "command": "batchcopy run m.csv --rate CopyImageSet=5"}
    done = {**base, "rows": 3, "by_status": {"SUCCEEDED": 2, "SKIPPED": 1}}
    assert next_steps(done) == [] and "next:" not in human_summary(done)
    left = {**base, "rows": 9, "stop_reason": "time-limit",
            "by_status": {"SUCCEEDED": 3, "NOT_RUN": 4, "UNKNOWN": 1, "CONFLICT": 1},
            "by_error_code": {"StaleVersionPin": 1}}
    raw = "\n".join(next_steps(left))
    assert "\n    batchcopy run m.csv --rate CopyImageSet=5\n" in raw  # on a line of its own
    text = " ".join(raw.split())
    assert "to continue (4 NOT_RUN, 1 CONFLICT, 1 UNKNOWN: --max-duration was reached)" in text
    assert "UNKNOWN rows are checked against the service first" in text
    assert "stale version pin" in text and "FAILED" not in text
    failed = {**base, "rows": 4, "by_status": {"SUCCEEDED": 2, "FAILED": 2}}
    text = " ".join(" ".join(next_steps(failed)).split())
    assert "2 FAILED: the service's final answer; a rerun leaves them FAILED" in text
    assert "batchcopy report reports/m-1.parquet" in text
    assert "batchcopy report /state/m.sqlite --failed-manifest failed.csv && batchcopy run failed.csv" in text
    assert "to continue" not in text and "once nothing else is left" not in text
    both = {**failed, "by_status": {"FAILED": 1, "UNKNOWN": 1}}
    text = " ".join(" ".join(next_steps(both)).split())
    assert "once nothing else is left" in text  # a retry manifest must not resend UNKNOWN rows
    # the summary shows them when it knows the command that made it
    assert "next:" in human_summary(failed) and "next:" not in human_summary(
        {k: v for k, v in failed.items() if k != "command"})
