"""`batchcopy run`: wire the pipeline together for one run.

    preflight     endpoint, profile, region, credentials, report destination   (exit 2)
    manifest      downloaded if s3://
    journal       found from the manifest's identity (or --journal), locked     (exit 2, 4)
    stage         the manifest read once, validated into the journal            (exit 2)
    holds         this machine's other live runs must not hold its image sets   (exit 4)
    run           settle open calls, dispatch, sweep (run/runner.py)
    report        derived from the journal; summary JSON; a line on stderr

Nothing is sent before the last check passes, and a journal this run created is removed
again if a check after it fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.console import logs
from batchcopy.aws.preflight import SetupError
from batchcopy.console.stopsignals import stop_on_signals
from batchcopy.core.specs import ExitCode, Status

MANIFEST_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq")


@dataclass
class JobOptions:
    manifest: str
    datastore_id: str | None = None
    report: str | None = None
    journal: str | None = None
    resume: bool = False  # the journal must exist: continue it, or fail
    fresh: bool = False  # set the journal aside and start over
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
    delimiter: str | None = None  # CSV: None sniffs it from the header
    extra_columns: str = "error"  # error | ignore
    verify: bool = False  # check the done rows' destinations after the run (commands/verify.py)
    log_level: str = "notice"  # logs.LEVELS
    log_format: str = "text"  # text | json
    log_file: str | None = None
    command: str | None = None  # the command line, for the summary's next steps
    confirm_above: int | None = None  # ask on a terminal above this many rows (None: never)


def say(msg: str, *, level: int = logs.NOTICE, event: str = "message", **fields: Any) -> None:
    logs.say(msg, level=level, event=event, **fields)


def run_job(opts: JobOptions) -> int:
    try:
        setup = logs.configure(level=opts.log_level, fmt=opts.log_format, file=opts.log_file)
    except OSError as exc:
        print(f"batchcopy: --log-file: cannot open {opts.log_file}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return ExitCode.USAGE
    try:
        with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
            try:
                return asyncio.run(_run_job(opts, Path(tmp), setup))
            except SetupError as exc:
                say(f"batchcopy: {exc}", level=logging.ERROR, event="setup_error")
                return ExitCode.USAGE
    finally:
        setup.close()


def manifest_stem(manifest: str) -> str:
    name = manifest.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in MANIFEST_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "manifest"
    return name or "manifest"


def manifest_uri(manifest: str) -> str:
    from batchcopy.aws.storage import is_s3

    return manifest if is_s3(manifest) else str(Path(manifest).expanduser().resolve())


def resolve_journal_path(opts: JobOptions) -> Path:
    """--journal, or the default journal of this manifest's identity (URI + data store)."""
    from batchcopy.journal.holds import state_dir
    from batchcopy.journal.legacy import Identity
    from batchcopy.aws.preflight import check_journal_path

    if opts.journal:
        return check_journal_path(opts.journal)
    identity = Identity(manifest_uri(opts.manifest), opts.datastore_id).to_json()
    digest = hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()
    return state_dir() / "journals" / f"{manifest_stem(opts.manifest)}-{digest}.journal.sqlite"


async def _run_job(opts: JobOptions, tmp: Path, setup: logs.LogSetup) -> int:
    from batchcopy.aws import preflight
    from batchcopy.aws import storage

    preflight.check_endpoint(opts.endpoint_url)
    region = preflight.check_aws(opts.profile, opts.region)
    report_dest = opts.report or str(opts.reports_dir / (
        f"{manifest_stem(opts.manifest)}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet"))
    preflight.check_report_destination(report_dest)
    journal_path = resolve_journal_path(opts)
    try:
        local = await storage.download(opts.manifest, tmp)
    except FileNotFoundError:
        raise SetupError(f"manifest not found: {opts.manifest}") from None
    except Exception as exc:  # unreadable s3 object, bad url...
        raise SetupError(f"cannot read manifest {opts.manifest}: {exc}") from None
    opened = _open_journal(journal_path, opts)
    if isinstance(opened, int):
        return opened
    journal, created = opened
    try:
        staged = _stage(journal, local, opts)
        if staged is None:
            if created:
                journal.close()
                _remove_journal(journal_path)
            return ExitCode.USAGE
        rows = journal.count_rows()
        dirs = [journal_path.parent] + ([] if storage.is_s3(report_dest)
                                        else [Path(report_dest).parent])
        preflight.check_space(dirs, rows)
        _confirm(opts, journal)
        return await _hold_and_run(opts, journal, local, report_dest, region, rows, setup)
    except SetupError:
        if created:
            journal.close()
            _remove_journal(journal_path)
        raise
    finally:
        journal.close()


def _open_journal(path: Path, opts: JobOptions) -> tuple[Any, bool] | int:
    """(the locked journal, whether this run created it), or an exit code."""
    from batchcopy.journal.journal import Journal, JournalError, JournalLocked, inspect
    from batchcopy.journal.legacy import Identity

    state = inspect(path)
    if opts.resume and state in ("missing", "empty"):
        raise SetupError(f"--resume: journal {path} is {state}; nothing to resume (run "
                         "without --resume to start, or give the right --journal)")
    if opts.fresh and state != "missing":
        _set_aside(path)
        state = "missing"
    try:
        journal = Journal(path, create=True, check=state == "sqlite")
    except JournalError as exc:
        # --fresh sets aside a journal that is there; one that cannot be made needs another path
        hint = ("pass --fresh to set it aside and start over" if state not in ("missing", "empty")
                else "choose another --journal")
        raise SetupError(f"{exc}; {hint}") from None
    try:
        journal.lock()
    except JournalLocked as exc:
        journal.close()
        say(f"batchcopy: {exc}; not starting a second run", level=logging.ERROR, event="locked")
        return ExitCode.LOCKED
    except JournalError as exc:
        journal.close()
        raise SetupError(str(exc)) from None
    identity = Identity(manifest_uri(opts.manifest), opts.datastore_id)
    known = journal.identity()
    if known is not None and known != identity:
        journal.close()
        raise SetupError(f"journal {path} belongs to manifest {known.manifest}"
                         + (f" with --datastore-id {known.datastore_id}" if known.datastore_id else "")
                         + "; give another --journal, or --fresh to start over")
    if opts.resume and not journal.has_rows():
        journal.close()
        raise SetupError(f"--resume: journal {path} records no run of this manifest")
    created = known is None
    if created:
        journal.set_identity(identity)
    return journal, created


def _set_aside(path: Path) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(f"{path}.{stamp}.old{suffix}"))
    say(f"batchcopy: --fresh: the old journal is kept as {path}.{stamp}.old")


def _remove_journal(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _stage(journal: Any, local: Path, opts: JobOptions) -> int | None:
    """Read the manifest once into the journal (one transaction). None if it is invalid
    (the journal is left as it was, and the errors are printed)."""
    import sqlite3

    from batchcopy.manifest.scan import ManifestInvalid, scan_manifest

    try:
        scan = scan_manifest(local, display_name=opts.manifest,
                             default_datastore_id=opts.datastore_id, delimiter=opts.delimiter,
                             extra_columns=opts.extra_columns)
    except ManifestInvalid as exc:
        say(f"batchcopy: invalid manifest, nothing was sent:\n{exc}", level=logging.ERROR,
            event="invalid_manifest")
        return None
    journal.begin_manifest()
    try:
        for batch in scan:
            journal.stage(batch)
        report = scan.report
    except ManifestInvalid as exc:
        journal.rollback_manifest()
        say(f"batchcopy: invalid manifest, nothing was sent:\n{exc}", level=logging.ERROR,
            event="invalid_manifest")
        return None
    except sqlite3.Error as exc:
        journal.rollback_manifest()
        raise SetupError(f"cannot write the journal {journal.path}: {exc}") from None
    except BaseException:
        journal.rollback_manifest()
        raise
    if not report.ok:
        journal.rollback_manifest()
        total = len(report.errors) + report.more_errors
        listed = "\n".join(f"  {err}" for err in report.errors[:50])
        more = f"\n  ... and {total - 50} more (batchcopy validate lists them)" if total > 50 else ""
        say(f"batchcopy: invalid manifest, nothing was sent ({total} error(s)):\n{listed}{more}",
            level=logging.ERROR, event="invalid_manifest", errors=[str(e) for e in report.errors[:50]])
        return None
    journal.commit_manifest()
    return report.rows


def _confirm(opts: JobOptions, journal: Any) -> None:
    """Above --confirm-above rows to run, on a terminal: show the plan, ask. SetupError if
    the answer is not yes (nothing was sent)."""
    if opts.confirm_above is None or not (_isatty(sys.stdin) and _isatty(sys.stderr)):
        return
    pending = journal.manifest_statuses().get("PENDING", 0)
    if pending <= opts.confirm_above:
        return
    from batchcopy.plan.forecast import Forecaster
    from batchcopy.commands.plan import confirmation_text
    from batchcopy.aws.ratelimit import RateLimiter

    settings = opts.settings
    forecaster = Forecaster(merge=settings.merge if settings else True)
    for batch in journal.iter_manifest():
        forecaster.add_batch([r.spec for r in batch], [r.status == "PENDING" for r in batch])
    rate = RateLimiter(opts.rates).configured()["CopyImageSet"][0]
    print(f"batchcopy: {opts.manifest}: "
          f"{confirmation_text(forecaster.figures(), rate)}.", file=sys.stderr, flush=True)
    try:
        answer = input_line("Start copying? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise SetupError("not confirmed: nothing was sent (--yes runs without asking; "
                         "`batchcopy plan` shows the plan)")


def input_line(prompt: str) -> str:
    """One line from stdin, the prompt on stderr (stdout may be a pipe)."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


async def _hold_and_run(opts: JobOptions, journal: Any, local: Path, report_dest: str,
                        region: str, rows: int, setup: logs.LogSetup) -> int:
    from batchcopy.journal.holds import HeldElsewhere, Holds

    holds = Holds()
    scope = f"{region}|{opts.endpoint_url or 'aws'}"
    try:
        holds.acquire(scope, journal.held_image_sets(), manifest=opts.manifest,
                      journal=str(journal.path))
    except HeldElsewhere as exc:
        say(f"batchcopy: another batchcopy run on this machine is copying the same image sets: "
            f"{exc}. Not starting; run again once it has finished", level=logging.ERROR,
            event="locked")
        return ExitCode.LOCKED
    try:
        return await _execute(opts, journal, report_dest, region, rows, setup)
    finally:
        holds.release()


async def _execute(opts: JobOptions, journal: Any, report_dest: str, region: str,
                   total_rows: int, setup: logs.LogSetup) -> int:
    from batchcopy.aws.client import CallStats, ClientSettings, ImagingApi, open_client
    from batchcopy.console.progress import Progress
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.run.runner import Runner, RunSettings, summary_stats
    from batchcopy.run.waiter import CopyWaiter

    settings = opts.settings or RunSettings()
    limiter = RateLimiter(opts.rates)
    copy_rate = limiter.configured()["CopyImageSet"][0]
    stats = CallStats()
    statuses = journal.manifest_statuses()
    done = sum(n for s, n in statuses.items() if s in ("SUCCEEDED", "SKIPPED", "FAILED"))
    client_settings = ClientSettings(
        endpoint_url=opts.endpoint_url, region=region, profile=opts.profile,
        max_pool_connections=max(10, min(200, settings.max_in_flight_per_datastore + 10)))
    run_id = journal.start_run(opts.manifest)
    logs.RUN_ID.set(run_id)
    say(f"batchcopy: run {run_id} of {opts.manifest}: {total_rows:,} rows, {done:,} done "
        f"before; CopyImageSet at {copy_rate:g}/s; journal {journal.path}", event="run_started",
        manifest=opts.manifest, rows=total_rows, done_before=done, copy_rate_per_s=copy_rate,
        journal=str(journal.path), report=report_dest)
    progress = None
    if opts.progress != "off":
        mode = opts.progress
        if mode == "auto":  # a bar where a person watches, unless JSON goes to the same place
            mode = "bar" if setup.console_is_terminal and not setup.console_json else "log"
        progress = Progress(total_rows, mode=mode, interval_s=opts.log_interval_s,
                            copy_rate=copy_rate, done=done, to_run=statuses.get("PENDING", 0),
                            stats=stats, stats_lines=mode == "log" or setup.to_file,
                            console=setup.console)
    started, started_wall = time.monotonic(), time.time()
    loop = asyncio.get_running_loop()
    journal.start_writer()
    try:
        async with open_client(client_settings) as client:
            logs.attach_api_logging(client)
            if progress is not None:
                progress.start(loop)
            api = ImagingApi(client, limiter, stats=stats, max_attempts=settings.max_attempts,
                             backoff=settings.backoff)
            waiter = CopyWaiter(api, first_poll_s=opts.poll_first_s, max_interval_s=opts.poll_max_s)
            runner = Runner(journal=journal, api=api, waiter=waiter, settings=settings,
                            run_id=run_id, observer=progress)
            try:
                with stop_on_signals(loop, lambda: runner.request_stop("interrupted"),
                                     "stopping; in-flight copies finish, then the report is "
                                     "written", announce=lambda text, name: say(
                                         text, event="stopping", signal=name)):
                    outcome = await runner.run()
            finally:
                await waiter.aclose()
    finally:
        journal.stop_writer()
    if progress is not None:
        progress.close(journal.manifest_statuses())
    wall = time.monotonic() - started
    run_stats = summary_stats(outcome, stats.to_dict(), copy_rate, wall)
    exit_code = decide_exit(outcome.stop_reason, journal)
    run_stats.update(exit_code=int(exit_code), manifest=opts.manifest, report=report_dest,
                     journal=str(journal.path), run_id=run_id)
    run_stats.update(_context(opts, started_wall))
    if opts.command:
        run_stats["command"] = opts.command
    journal.end_run(run_id, int(exit_code), run_stats)
    try:
        summary = await write_outputs(journal, report_dest, run_stats)
    except OSError as exc:  # checked before the first call; a disk can still fill up since
        say(f"batchcopy: could not write the report {report_dest}: {exc.strerror or exc}. "
            f"Every row's outcome is in the journal {journal.path}: write the report with "
            f"`batchcopy report {journal.path} --out PATH.parquet`",
            level=logging.ERROR, event="report_error")
        return ExitCode.ABORTED
    from batchcopy.report.summary import human_summary, next_steps
    say(human_summary(summary), event="summary",
        level=logs.NOTICE if exit_code == ExitCode.OK else logging.WARNING,
        summary=summary, next_steps=next_steps(summary))
    if outcome.internal_error:
        say(f"batchcopy: internal error (a bug in batchcopy, please report it): "
            f"{outcome.internal_error}. The run stopped; every call it sent is settled or "
            f"reported UNKNOWN, and the journal {journal.path} is consistent: run again to "
            f"continue", level=logging.ERROR, event="internal_error")
    elif outcome.abort_message:
        say(f"batchcopy: run aborted: {outcome.abort_message}", level=logging.ERROR,
            event="aborted")
    if opts.verify and not outcome.internal_error:
        from batchcopy.commands.verify import verify_after_run

        verified = await verify_after_run(opts, region, journal, report_dest)
        if exit_code == ExitCode.OK and verified:
            exit_code = ExitCode(verified)
    return exit_code


def _context(opts: JobOptions, started_wall: float) -> dict[str, Any]:
    """When, with which options and package versions (the summary JSON's context)."""
    from batchcopy.report.runinfo import package_versions, run_options

    return {"started_at": datetime.fromtimestamp(started_wall, timezone.utc).isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "options": run_options(opts), "versions": package_versions()}


def decide_exit(stop_reason: str | None, journal: Any) -> ExitCode:
    if stop_reason == "internal-error":
        return ExitCode.INTERNAL
    if stop_reason == "aborted":
        return ExitCode.ABORTED
    if stop_reason == "interrupted":
        return ExitCode.INTERRUPTED
    statuses = journal.manifest_statuses()
    left = sum(n for s, n in statuses.items()
               if s in (Status.NOT_RUN.value, Status.UNKNOWN.value, "PENDING"))
    if stop_reason == "time-limit" and left:
        return ExitCode.TIME_LIMIT  # rows left for the next run
    bad = sum(n for s, n in statuses.items()
              if s not in (Status.SUCCEEDED.value, Status.SKIPPED.value))
    return ExitCode.ROWS_FAILED if bad else ExitCode.OK


async def write_outputs(journal: Any, report_dest: str, run_stats: dict[str, Any]) -> dict[str, Any]:
    from batchcopy.report.parquet import ReportUploadError, report_counts, write_report
    from batchcopy.report.results import journal_results
    from batchcopy.report.summary import build_summary, summary_path, write_summary_async

    try:
        counts = await write_report(journal_results(journal), report_dest, run=run_stats)
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
