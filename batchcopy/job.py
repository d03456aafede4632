"""`batchcopy run`: wire the pipeline together for one run.

manifest (downloaded if s3://) -> validate (exit 2, nothing sent) -> journal + run lock
-> shared aioboto3 client, rate limiter, waiter -> Runner -> report from the journal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.specs import ExitCode, Status


@dataclass
class JobOptions:
    manifest: str
    datastore_id: str | None = None
    report: str | None = None
    journal: str | None = None
    resume: bool = False
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    progress: str = "auto"  # auto | bar | log | off
    log_interval_s: float = 30.0
    reports_dir: Path = Path("reports")
    poll_first_s: float = 1.0
    poll_max_s: float = 30.0
    settings: Any = None  # runner.RunSettings


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_job(opts: JobOptions) -> int:
    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        return asyncio.run(_run_job(opts, Path(tmp)))


async def _run_job(opts: JobOptions, tmp: Path) -> int:
    from batchcopy import storage
    from batchcopy.journal import ChangedRows, Journal, JournalLocked
    from batchcopy.manifest import ManifestInvalid, validate

    try:
        local = await storage.download(opts.manifest, tmp)
    except FileNotFoundError:
        say(f"batchcopy: manifest not found: {opts.manifest}")
        return ExitCode.USAGE
    except Exception as exc:  # unreadable s3 object, bad url...
        say(f"batchcopy: cannot read manifest {opts.manifest}: {exc}")
        return ExitCode.USAGE
    try:
        checked = validate(local, display_name=opts.manifest,
                           default_datastore_id=opts.datastore_id)
    except ManifestInvalid as exc:
        say(f"batchcopy: invalid manifest:\n{exc}")
        return ExitCode.USAGE
    if not checked.ok:
        say(f"batchcopy: invalid manifest, nothing was sent ({len(checked.errors)} error(s)):")
        for err in checked.errors[:50]:
            say(f"  {err}")
        return ExitCode.USAGE

    journal_path = resolve_journal_path(opts)
    journal = Journal(journal_path)
    try:
        try:
            journal.lock()
        except JournalLocked as exc:
            say(f"batchcopy: {exc}; not starting a second run")
            return ExitCode.LOCKED
        if journal.has_rows() and not opts.resume:
            say(f"batchcopy: journal {journal_path} already records a run; pass --resume to "
                "continue it, or choose another --journal")
            return ExitCode.USAGE
        report_dest = opts.report or str(opts.reports_dir / (journal_path.name.removesuffix(
            ".journal.sqlite") + ".parquet"))
        try:
            if journal.has_rows():  # resuming: the whole manifest must match, before any call
                check_unchanged(journal, local, opts)
            return await _execute(opts, journal, local, checked.rows, report_dest)
        except ChangedRows as exc:
            say(f"batchcopy: {opts.manifest}: {exc}")
            return ExitCode.USAGE
    finally:
        journal.close()


def check_unchanged(journal: Any, local: Path, opts: JobOptions) -> None:
    """Raise ChangedRows if any manifest row differs from the journal's record of its
    row_id (or position). Reads the manifest once more; writes nothing."""
    from batchcopy.journal import ChangedRows
    from batchcopy.manifest import read_specs

    changes: list[tuple[str, int, int]] = []
    for batch in read_specs(local, display_name=opts.manifest,
                            default_datastore_id=opts.datastore_id):
        changes.extend(journal.changed_rows(batch))
    if changes:
        raise ChangedRows(changes)


def resolve_journal_path(opts: JobOptions) -> Path:
    if opts.journal:
        return Path(opts.journal)
    stem = Path(opts.manifest.rstrip("/").split("/")[-1]).name
    for suffix in (".gz", ".csv", ".parquet", ".pq"):
        stem = stem.removesuffix(suffix)
    if opts.resume:
        found = sorted(opts.reports_dir.glob(f"{stem}-*.journal.sqlite"))
        if found:
            return found[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return opts.reports_dir / f"{stem}-{stamp}.journal.sqlite"


async def _execute(opts: JobOptions, journal: Any, local: Path, total_rows: int,
                   report_dest: str) -> int:
    from batchcopy.client import ClientSettings, CallStats, ImagingApi, open_client
    from batchcopy.manifest import read_specs
    from batchcopy.progress import Progress
    from batchcopy.ratelimit import RateLimiter
    from batchcopy.runner import Runner, RunSettings, summary_stats
    from batchcopy.waiter import CopyWaiter

    settings = opts.settings or RunSettings()
    limiter = RateLimiter(opts.rates)
    copy_rate = limiter.configured()["CopyImageSet"][0]
    progress = None
    if opts.progress != "off":
        progress = Progress(total_rows, mode=opts.progress, interval_s=opts.log_interval_s,
                            copy_rate=copy_rate)
    client_settings = ClientSettings(
        endpoint_url=opts.endpoint_url, region=opts.region, profile=opts.profile,
        max_pool_connections=max(10, min(200, settings.max_in_flight_per_datastore + 10)))
    run_id = journal.start_run(opts.manifest)
    started = time.monotonic()
    stats = CallStats()
    loop = asyncio.get_running_loop()
    async with open_client(client_settings) as client:
        api = ImagingApi(client, limiter, stats=stats, max_attempts=settings.max_attempts)
        waiter = CopyWaiter(api, first_poll_s=opts.poll_first_s, max_interval_s=opts.poll_max_s)
        runner = Runner(journal=journal, api=api, waiter=waiter, settings=settings,
                        run_id=run_id, progress=progress)
        # the handlers stay until the report is written: a second signal still exits at once
        signals = _install_signals(loop, runner)
        try:
            try:
                batches = read_specs(local, display_name=opts.manifest,
                                     default_datastore_id=opts.datastore_id)
                outcome = await runner.run(batches)
            finally:
                await waiter.aclose()
            if progress is not None:
                progress.close()
            wall = time.monotonic() - started
            run_stats = summary_stats(outcome, stats.to_dict(), copy_rate, wall)
            exit_code = decide_exit(outcome.stop_reason, journal)
            run_stats.update(exit_code=int(exit_code), manifest=opts.manifest,
                             report=report_dest, journal=str(journal.path), run_id=run_id)
            journal.end_run(run_id, int(exit_code), run_stats)
            summary = await write_outputs(journal, report_dest, run_stats)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    from batchcopy.summary import human_summary
    say(human_summary(summary))
    if outcome.abort_message:
        say(f"batchcopy: run aborted: {outcome.abort_message}")
    return exit_code


def _install_signals(loop: asyncio.AbstractEventLoop, runner: Any) -> list[int]:
    """First SIGINT/SIGTERM: stop dispatching, finish in-flight, save. Second: exit now."""
    hits = {"n": 0}

    def handler(signame: str) -> None:
        hits["n"] += 1
        if hits["n"] == 1:
            say(f"batchcopy: {signame}: stopping; in-flight copies finish, then the report "
                "is written (signal again to exit at once; the journal stays consistent)")
            runner.request_stop("interrupted")
        else:
            os._exit(int(ExitCode.INTERRUPTED))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    return installed


def decide_exit(stop_reason: str | None, journal: Any) -> ExitCode:
    if stop_reason == "aborted":
        return ExitCode.ABORTED
    if stop_reason == "interrupted":
        return ExitCode.INTERRUPTED
    if stop_reason == "time-limit" and journal.db.execute(
            "SELECT 1 FROM rows WHERE status IN (?, ?) LIMIT 1",
            (Status.NOT_RUN.value, Status.UNKNOWN.value)).fetchone():
        return ExitCode.TIME_LIMIT  # rows left for a resumed run
    bad = journal.db.execute(
        "SELECT count(*) FROM rows WHERE status NOT IN (?, ?)",
        (Status.SUCCEEDED.value, Status.SKIPPED.value)).fetchone()[0]
    return ExitCode.ROWS_FAILED if bad else ExitCode.OK


def journal_results(journal: Any) -> Any:
    """The report rows, derived from the journal (rows done by earlier runs: SKIPPED)."""
    from batchcopy.journal import OUTCOME_COLUMNS
    from batchcopy.report import RowResult
    from batchcopy.specs import SPEC_FIELDS, CopySpec

    latest = journal.latest_run()
    in_open_calls = journal.open_call_rows()
    for row in journal.iter_rows():
        status = Status(row["status"]) if row["status"] != "PENDING" else Status.NOT_RUN
        evidence = row["evidence"]
        if row["status"] == "PENDING" and row["manifest_row"] in in_open_calls:
            # a run ended (kill -9, second signal) with this row's copy request sent
            status = Status.UNKNOWN
            row = {**row, "call_id": in_open_calls[row["manifest_row"]]}
            evidence = ("its CopyImageSet call was sent but the run ended before it was "
                        "settled; batchcopy run --resume with this journal settles it")
        if status is Status.SUCCEEDED and row["run_id"] is not None and row["run_id"] != latest:
            status = Status.SKIPPED
            evidence = f"succeeded in run {row['run_id']} of this journal; not copied again"
        spec = CopySpec(**{name: row[name] for name in SPEC_FIELDS})
        spec = replace(spec, force=bool(spec.force),  # SQLite keeps booleans as 0/1
                       promote_to_primary=bool(spec.promote_to_primary))
        outcome = {name: row[name] for name in OUTCOME_COLUMNS if name != "status"}
        # RowResult turns epoch floats into UTC timestamps, ids into text, None counts into 0
        yield RowResult.from_spec(spec, status, **{**outcome, "evidence": evidence})


async def write_outputs(journal: Any, report_dest: str, run_stats: dict[str, Any]) -> dict[str, Any]:
    from batchcopy.report import ReportUploadError, report_counts, write_report
    from batchcopy.summary import build_summary, summary_path, write_summary_async

    try:
        counts = await write_report(journal_results(journal), report_dest)
    except ReportUploadError as exc:  # never lose a report to an S3 hiccup
        fallback = Path("reports") / Path(exc.local_path).name
        fallback.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(exc.local_path), fallback)
        say(f"batchcopy: could not upload the report to {exc.url}: {exc.__cause__}; "
            f"it is at {fallback} (the journal {journal.path} can rebuild it: "
            f"batchcopy report {journal.path} --out {exc.url})")
        report_dest = str(fallback)
        run_stats = {**run_stats, "report": report_dest, "report_upload_error": str(exc.__cause__)}
        counts = report_counts(fallback)
    summary = build_summary(counts, run_stats)
    await write_summary_async(summary, summary_path(report_dest))
    return summary
