"""`batchcopy verify SOURCE` and `batchcopy run --verify`: check the done rows of a
journal or report against the service (verify/check.py), write verify's own report (Parquet,
one row per checked row, SUCCEEDED = verified, FAILED = mismatch) and its summary JSON,
and print what did not verify.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.console import logs
from batchcopy.core.specs import ExitCode
from batchcopy.report.rows import RowResult


@dataclass
class VerifyOptions:
    source: str | None  # a state, a journal or a report; None: the state (--state...)
    out: str | None = None  # verify's report; default reports/<source>-verify-<time>.parquet
    output: str = "table"  # table | json
    limit: int | None = None
    failed_manifest: Path | None = None
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    concurrency: int = 16
    console: logs.ConsoleOptions = field(default_factory=logs.ConsoleOptions)
    state: str | None = None


def default_out(source: str) -> str:
    name = source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".journal.sqlite", ".sqlite", ".journal", ".parquet", ".pq"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return str(Path("reports") / f"{name or 'run'}-verify-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet")


def run(opts: VerifyOptions) -> int:
    """`batchcopy verify`: 0 every checked row verified, 1 some did not, 2 setup or source
    error, 3 credentials or access refused."""
    from batchcopy.aws import preflight
    from batchcopy.report.source import ReportError, locate, open_source

    try:
        preflight.check_endpoint(opts.endpoint_url)
        region = preflight.check_aws(opts.profile, opts.region)
        preflight.resolve_endpoint(opts.profile, region, opts.endpoint_url)
        dest = opts.out or default_out(opts.source or locate(None, opts.state).name)
        preflight.check_report_destination(dest)
    except preflight.SetupError as exc:
        raise ReportError(str(exc)) from None
    try:
        setup = opts.console.configure()
    except OSError as exc:
        raise ReportError(f"--log-file: cannot open {opts.console.log_file}: "
                          f"{exc.strerror or exc}") from None
    try:
        with open_source(opts.source, opts.state) as src:
            return asyncio.run(verify_source(src.rows, src.name, src.run, dest, opts, region,
                                             setup=setup))
    finally:
        setup.close()


async def verify_source(rows: Callable[[], Iterator[RowResult]], source: str,
                        of_run: dict[str, Any] | None, dest: str, opts: VerifyOptions,
                        region: str, *, err: bool = False, setup: Any = None) -> int:
    """Check `rows()` (read twice: merged calls first), write verify's report to `dest`,
    print the outcome (to stderr with err=True, as `run --verify` does). With `setup` (the
    command's logging), progress as --progress says. Returns the exit code."""
    from batchcopy.aws.client import CallStats, ClientSettings, ImagingApi, open_client
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.report.files import is_s3
    from batchcopy.report.parquet import ReportWriter
    from batchcopy.report.view import collect, default_limit, show
    from batchcopy.report.retry_manifest import write_failed_manifest
    from batchcopy.report.runinfo import package_versions
    from batchcopy.report.summary import build_summary, summary_path, write_summary_async
    from batchcopy.verify.check import (VERIFY_MEANING, Documents, Tally, Verifier, VerifyAborted,
                                  call_attributes, now_iso, verify_rows)

    out = sys.stderr if err else sys.stdout
    stats, tally = CallStats(), Tally()
    context: dict[str, Any] = {
        "kind": "verify", "verified": source, "started_at": now_iso(),
        "of_run": {k: (of_run or {}).get(k) for k in ("run_id", "manifest", "journal", "report")},
        "manifest_form": (of_run or {}).get("manifest_form"), "versions": package_versions()}
    display = _display(rows, opts, setup)
    logs.say(f"batchcopy verify: checking the done rows of {source}", event="verify_started",
             source=source, report=dest, rows=display.total)
    staging = Path(tempfile.mkdtemp(prefix="batchcopy-verify-"))
    local = staging / "verify.parquet" if is_s3(dest) else Path(dest)
    try:
        settings = ClientSettings(endpoint_url=opts.endpoint_url, region=region,
                                  profile=opts.profile,
                                  max_pool_connections=max(10, opts.concurrency + 10))
        async with open_client(settings) as client:
            api = ImagingApi(client, RateLimiter(opts.rates), stats=stats)
            verifier = Verifier(Documents(api), call_attributes(rows()))
            with ReportWriter(local, run=context) as writer:
                display.start()
                try:
                    async for checked in verify_rows(rows(), verifier, tally,
                                                     concurrency=opts.concurrency):
                        writer.write(checked)
                        _log_checked(checked, display)
                except VerifyAborted as exc:
                    writer.abort()
                    logs.say(f"batchcopy verify: stopped: {exc} (nothing more can be checked "
                             "with these credentials)", level=logging.ERROR,
                             event="aborted")
                    return int(ExitCode.ABORTED)
                finally:
                    display.close()
                context.update(finished_at=now_iso(), rows_checked=tally.checked,
                               rows_not_checked=tally.not_checked, api=stats.to_dict())
                counts = writer.close()
        if is_s3(dest):
            from batchcopy.aws import storage

            await storage.upload(local, dest)
        summary = build_summary(counts, {**context, "report": dest})
        await write_summary_async(summary, summary_path(dest))
        view = collect(_reread(local), source=dest, kind="verify", run=context,
                       limit=default_limit(opts.output, opts.limit), meaning=VERIFY_MEANING)
        extra: dict[str, Any] = {"rows_checked": tally.checked, "rows_not_checked": tally.not_checked,
                                 "report": dest}
        notes = [f"verify's report: {dest}"]
        if opts.failed_manifest is not None:
            n = write_failed_manifest(_reread(local), opts.failed_manifest,
                                      statuses=("FAILED", "UNKNOWN"), form=context["manifest_form"])
            extra["failed_manifest"] = {"path": str(opts.failed_manifest), "rows": n}
            notes.append(f"{n} row(s) that did not verify written to {opts.failed_manifest} "
                         "(a manifest: `batchcopy run` it to copy them again)")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    headline = _headline(source, tally, stats.to_dict())
    if opts.output == "table":
        print(headline, file=out)
    show(view, opts.output, extra, notes, out=out)
    if setup is not None and setup.to_file:  # the terminal has the table above
        logs.emit(logs.NOTICE if view.ok else logging.WARNING, "verify_summary",
                  f"{headline}; verify's report: {dest}", summary=summary, **extra)
    return int(ExitCode.OK if view.ok else ExitCode.ROWS_FAILED)


def _display(rows: Callable[[], Iterator[RowResult]], opts: VerifyOptions, setup: Any) -> Any:
    """verify's progress over the rows it will check (off for `run --verify`, whose own
    progress has ended)."""
    from batchcopy.console.tally import Tally
    from batchcopy.verify.check import CHECKED

    total = sum(1 for row in rows() if row.status in CHECKED)
    mode = "off" if setup is None else logs.display_mode(opts.console.progress, setup)
    return Tally(total, noun="rows", verb="checked", mode=mode,
                 interval_s=opts.console.log_interval_s,
                 console=None if setup is None else setup.console)


def _log_checked(checked: list[RowResult], display: Any) -> None:
    """One record per checked row: INFO when it verified, WARNING when it did not."""
    for row in checked:
        status = row.status.value
        display.finished(status)
        good = status == "SUCCEEDED"
        level = logging.INFO if good else logging.WARNING
        logs.emit(level, "verified", f"row {row.row_id}: "
                  + ("verified" if good else f"{status}: {row.error_code}: {row.error_message}"),
                  row_id=row.row_id, manifest_row=row.manifest_row, status=status,
                  error_code=row.error_code)


def _reread(path: Path) -> Iterator[RowResult]:
    from batchcopy.report.parquet import iter_report_rows

    return iter_report_rows(path)


def _headline(source: str, tally: Any, api: dict[str, Any]) -> str:
    calls = api.get("calls") or {}
    reads = ", ".join(f"{op} {n:,}" for op, n in calls.items())
    line = f"batchcopy verify: checked {tally.checked:,} done row(s) of {source}"
    line += f" ({reads} calls)" if reads else ""
    if tally.not_checked:
        skipped = ", ".join(f"{n:,} {s}" for s, n in tally.not_checked.items())
        line += f"; not checked, as not done: {skipped}"
    return line


async def verify_after_run(opts: Any, region: str, journal: Any, report_dest: str,
                           name: str | None = None) -> int:
    """`run --verify`: check the run's done rows; verify's report beside the run's
    (x.parquet -> x-verify.parquet). Printed to stderr, like the rest of `run`. `name`: the
    state as people know it (default: the journal's path)."""
    from batchcopy.report.results import journal_results

    name = name or str(journal.path)
    dest = (report_dest[: -len(".parquet")] if report_dest.endswith(".parquet")
            else report_dest) + "-verify.parquet"
    vopts = VerifyOptions(source=name, out=dest, rates=opts.rates,
                          endpoint_url=opts.endpoint_url, region=region, profile=opts.profile)
    print("batchcopy: --verify: checking every done row against its destination...",
          file=sys.stderr, flush=True)
    return await verify_source(lambda: journal_results(journal), name,
                               {"run_id": journal.latest_run(), "journal": name,
                                "report": report_dest, "manifest_form": journal.manifest_form()},
                               dest, vopts, region, err=True)
