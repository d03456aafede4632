"""`batchcopy run`: wire the pipeline together for one run.

    preflight     endpoint, profile, region, credentials (not expired), the endpoint
                  and host prefix botocore will use, report destination          (exit 2)
    manifest      downloaded if s3://
    state         --journal, --state or the default state directory: its lock or lease
                  first (exit 4), then its ledger (journal/state.py)           (exit 2)
    stage         the manifest read once into the ledger; this machine's other live runs
                  must not hold its image sets (run/stage.py)                   (exit 2, 4)
    service       read-only: the endpoint answers as HealthImaging, the rows' data
                  stores exist and are ACTIVE (only when there is work)         (exit 2)
    run           settle open calls, dispatch, sweep (run/runner.py)
    report        derived from the ledger; summary JSON; a line on stderr

Nothing is sent before the last check passes, and a local ledger this run created is
removed again if a check after it fails.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcopy.console import logs
from batchcopy.console.confirm import confirm_run
from batchcopy.console.outlets import Outlets
from batchcopy.aws.preflight import SetupError
from batchcopy.console.stopsignals import stop_on_signals
from batchcopy.run.files import run_clash
from batchcopy.core.specs import ExitCode, Status

if TYPE_CHECKING:
    from batchcopy.aws.endpoints import Endpoint

MANIFEST_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq")


@dataclass
class JobOptions:
    manifest: str
    datastore_id: str | None = None
    report: str | None = None
    journal: str | None = None  # a ledger file (--journal)
    state: str | None = None  # --state: a directory or s3://bucket/prefix/ (env BATCHCOPY_STATE)
    lease_ttl_s: float = 120.0  # an s3:// state's lease
    resume: bool = False  # the state must exist and hold a run: continue it, or fail
    fresh: bool = False  # the manifest's rows start over (an unusable ledger is set aside)
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
    notify: list[Any] = field(default_factory=list)  # console/notify.Target: told when it ends
    metrics_file: str | None = None  # console/metrics.py, rewritten every log_interval_s


def say(msg: str, *, level: int = logs.NOTICE, event: str = "message", **fields: Any) -> None:
    logs.say(msg, level=level, event=event, **fields)


def run_job(opts: JobOptions) -> int:
    report_dest = opts.report or str(opts.reports_dir / (
        f"{manifest_stem(opts.manifest)}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet"))
    # before the log file opens: it may be the manifest
    clash = run_clash(opts.manifest, report_dest, lambda: ledger_path(opts),
                      opts.log_file, verify=opts.verify)
    try:
        setup = logs.configure(level=opts.log_level, fmt=opts.log_format,
                               file=None if clash else opts.log_file)
    except OSError as exc:
        print(f"batchcopy: --log-file: cannot open {opts.log_file}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return ExitCode.USAGE
    if clash:
        say(f"batchcopy: {clash}", level=logging.ERROR, event="setup_error")
        setup.close()
        return ExitCode.USAGE
    try:
        with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
            try:
                return asyncio.run(_run_job(opts, report_dest, Path(tmp), setup))
            except SetupError as exc:
                say(f"batchcopy: {exc}", level=logging.ERROR, event="setup_error")
                return ExitCode.USAGE
    finally:
        setup.close()


def manifest_stem(manifest: str) -> str:
    """The manifest's file name without its suffix, safe and bounded as a file name part."""
    from batchcopy.journal.state import safe_name

    name = manifest.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in MANIFEST_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_name(name or "manifest")


def resolve_location(opts: JobOptions) -> Any:
    """--journal (a ledger file), else --state / BATCHCOPY_STATE / the default directory."""
    from batchcopy.aws.preflight import check_journal_path
    from batchcopy.journal.state import Location, StateError, resolve

    if opts.journal:
        return Location("file", str(check_journal_path(opts.journal).absolute()))
    try:
        return resolve(opts.state)
    except StateError as exc:
        raise SetupError(str(exc)) from None


def ledger_path(opts: JobOptions) -> Path:
    """The ledger file this run will write, as given (--journal) or in its state."""
    from batchcopy.aws.preflight import check_journal_path

    return check_journal_path(opts.journal) if opts.journal else resolve_location(opts).ledger


def state_display(opened: Any) -> str:
    """What people are told the state is: the ledger file, or the s3:// URL."""
    return opened.location.url if opened.location.kind == "s3" else str(opened.journal.path)


async def _run_job(opts: JobOptions, report_dest: str, tmp: Path, setup: logs.LogSetup) -> int:
    from batchcopy.aws import preflight
    from batchcopy.aws import storage

    preflight.check_endpoint(opts.endpoint_url)
    region = preflight.check_aws(opts.profile, opts.region)
    endpoint = preflight.resolve_endpoint(opts.profile, region, opts.endpoint_url)
    preflight.check_report_destination(report_dest)
    if opts.metrics_file:
        preflight.writable_dir(Path(opts.metrics_file).expanduser().absolute().parent,
                               f"--metrics-file's directory ({opts.metrics_file})")
    location = resolve_location(opts)
    try:
        local = await storage.download(opts.manifest, tmp)
    except FileNotFoundError:
        raise SetupError(f"manifest not found: {opts.manifest}") from None
    except Exception as exc:  # unreadable s3 object, bad url...
        raise SetupError(f"cannot read manifest {opts.manifest}: {exc}") from None
    opened = _open_state(location, opts)
    if isinstance(opened, int):
        return opened
    from batchcopy.journal.holds import HeldElsewhere, Holds, state_unwritable
    from batchcopy.run.stage import stage_manifest

    keep = False
    try:
        holds = Holds()
    except OSError as exc:
        opened.discard()
        raise SetupError(state_unwritable(exc)) from None
    try:
        journal = opened.journal
        if opts.resume and (opened.created or not journal.has_rows()):
            raise SetupError(f"--resume: the state {location} holds no run to resume (run "
                             "without --resume to start, or give the right --state/--journal)")
        scope = f"{region}|{endpoint.url}"
        try:
            staged = stage_manifest(journal, local, opts, holds=holds, scope=scope,
                                    state=state_display(opened))
        except HeldElsewhere as exc:
            say(f"batchcopy: another batchcopy run on this machine is copying the same image "
                f"sets: {exc}. Not starting; run again once it has finished",
                level=logging.ERROR, event="locked")
            return ExitCode.LOCKED
        if staged is None:
            return ExitCode.USAGE
        rows = journal.count_rows()
        dirs = [journal.path.parent] + ([] if storage.is_s3(report_dest)
                                        else [Path(report_dest).parent])
        preflight.check_space(dirs, rows)
        await _check_service(opts, journal, region, endpoint)
        confirm_run(opts, journal)
        keep = True
        return await _execute(opts, opened, report_dest, region, rows, setup)
    finally:
        holds.release()
        if keep:
            opened.close()
        else:
            opened.discard()


def _open_state(location: Any, opts: JobOptions) -> Any:
    """The state opened to write (its lock or lease taken first), or an exit code."""
    from batchcopy.journal.lease import Holder
    from batchcopy.journal.state import StateError, StateLocked, StateUnavailable, open_for_writing

    try:
        opened = open_for_writing(location, Holder("run", opts.manifest),
                                  lease_ttl_s=opts.lease_ttl_s, fresh=opts.fresh,
                                  profile=opts.profile)
    except StateLocked as exc:
        say(f"batchcopy: {exc}; not starting a second run", level=logging.ERROR, event="locked")
        return ExitCode.LOCKED
    except (StateError, StateUnavailable) as exc:
        raise SetupError(str(exc)) from None
    for note in opened.notes:
        say(f"batchcopy: {note}")
    return opened


async def _check_service(opts: JobOptions, journal: Any, region: str,
                         endpoint: Endpoint) -> None:
    """Read-only calls before the first copy, when the run has rows to send or calls to
    settle (a rerun of a finished manifest stays at zero calls)."""
    from batchcopy.aws.client import ClientSettings
    from batchcopy.aws.preflight import service_checked

    datastores, probe = journal.to_run()
    settings = ClientSettings(endpoint_url=opts.endpoint_url, region=region, profile=opts.profile)
    for note in await service_checked(settings, opts.rates, endpoint, datastores, probe):
        say(f"batchcopy: {note}", event="preflight_note")


async def _execute(opts: JobOptions, opened: Any, report_dest: str, region: str,
                   total_rows: int, setup: logs.LogSetup) -> int:
    from batchcopy.aws.client import CallStats, ClientSettings, ImagingApi, open_client
    from batchcopy.aws.quotawatch import QuotaWatch
    from batchcopy.console.progress import Progress
    from batchcopy.journal.journal import JournalUnwritable
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.run.runner import Runner, RunSettings, summary_stats
    from batchcopy.run.waiter import CopyWaiter

    journal, where = opened.journal, state_display(opened)
    settings = opts.settings or RunSettings()
    limiter = RateLimiter(opts.rates)
    quota = QuotaWatch(on_lower=_quota_looks_lower)
    copy_rate = limiter.configured()["CopyImageSet"][0]
    stats = CallStats()
    statuses = journal.manifest_statuses()
    done = sum(n for s, n in statuses.items() if s in ("SUCCEEDED", "SKIPPED", "FAILED"))
    client_settings = ClientSettings(
        endpoint_url=opts.endpoint_url, region=region, profile=opts.profile,
        max_pool_connections=max(10, min(200, settings.max_in_flight_per_datastore + 10)))
    try:
        run_id = journal.start_run(opts.manifest)
    except JournalUnwritable as exc:  # nothing was sent
        raise SetupError(str(exc)) from None
    logs.RUN_ID.set(run_id)
    say(f"batchcopy: run {run_id} of {opts.manifest}: {total_rows:,} rows, {done:,} done "
        f"before; CopyImageSet at {copy_rate:g}/s; journal {where}", event="run_started",
        manifest=opts.manifest, rows=total_rows, done_before=done, copy_rate_per_s=copy_rate,
        journal=where, report=report_dest)
    progress = None
    if opts.progress != "off" or opts.metrics_file:  # the metrics file reads its numbers
        shown = opts.progress != "off"
        mode = logs.display_mode(opts.progress, setup) if shown else "log"
        progress = Progress(total_rows, mode=mode, interval_s=opts.log_interval_s,
                            copy_rate=copy_rate, done=done, to_run=statuses.get("PENDING", 0),
                            stats=stats, stats_lines=shown and (mode == "log" or setup.to_file),
                            console=setup.console)
    outlets = Outlets(notify=opts.notify, metrics_file=opts.metrics_file, profile=opts.profile,
                      interval_s=opts.log_interval_s, manifest=opts.manifest, run_id=run_id,
                      progress=progress)
    started, started_wall = time.monotonic(), time.time()
    loop = asyncio.get_running_loop()
    journal.start_writer()
    try:
        async with open_client(client_settings) as client:
            logs.attach_api_logging(client)
            if progress is not None:
                progress.start(loop)
            outlets.start()
            api = ImagingApi(client, limiter, stats=stats, max_attempts=settings.max_attempts,
                             backoff=settings.backoff, quota=quota)
            waiter = CopyWaiter(api, first_poll_s=opts.poll_first_s, max_interval_s=opts.poll_max_s)
            runner = Runner(journal=journal, api=api, waiter=waiter, settings=settings,
                            run_id=run_id, observer=progress)
            _stop_when_state_fails(opened, runner, loop)
            try:
                with stop_on_signals(loop, lambda: runner.request_stop("interrupted"),
                                     "stopping; in-flight copies finish, then the report is "
                                     "written", announce=lambda text, name: say(
                                         text, event="stopping", signal=name)):
                    outcome = await runner.run()
            finally:
                await waiter.aclose()
    finally:
        outlets.stop()
        journal.stop_writer()
    final = journal.manifest_statuses()
    if progress is not None:
        progress.close(final)
    wall = time.monotonic() - started
    run_stats = summary_stats(outcome, stats.to_dict(), copy_rate, wall)
    run_stats["pacing"] = {"CopyImageSet": limiter.bucket("CopyImageSet").figures()}
    exit_code = decide_exit(outcome.stop_reason, journal, run_id, outcome.left_by_limit)
    run_stats.update(exit_code=int(exit_code), manifest=opts.manifest, report=report_dest,
                     journal=where, state=opened.location.url, run_id=run_id,
                     earlier_runs_left=journal.statuses_before(run_id),
                     manifest_form=journal.manifest_form())
    if opened.log is not None:  # what the s3:// state cost (the last writes come after)
        run_stats["state_figures"] = opened.figures()
    if quota.lower:
        run_stats["quota_looks_lower"] = {op: round(r, 3) for op, r in quota.lower.items()}
    run_stats.update(_context(opts, started_wall))
    if opts.command:
        run_stats["command"] = opts.command
    try:
        journal.end_run(run_id, int(exit_code), run_stats)
    except JournalUnwritable as exc:  # the report still comes from what was recorded
        if outcome.abort_message is None:
            say(f"batchcopy: {exc}", level=logging.ERROR, event="journal_error")
        exit_code = ExitCode.ABORTED
    try:
        summary = await write_outputs(journal, report_dest, run_stats)
    except OSError as exc:  # checked before the first call; a disk can still fill up since
        say(f"batchcopy: could not write the report {report_dest}: {exc.strerror or exc}. "
            f"Every row's outcome is in the journal {where}: write the report with "
            f"`batchcopy report {where} --out PATH.parquet`",
            level=logging.ERROR, event="report_error")
        return await outlets.ended(ExitCode.ABORTED, f"batchcopy run {run_id} of "
                                   f"{opts.manifest}: the report could not be written", run_stats, final)
    from batchcopy.report.summary import alert_line, human_summary, next_steps
    text = human_summary(summary)
    say(text, event="summary", summary=summary, next_steps=next_steps(summary))
    alert = alert_line(summary)
    if alert is not None:  # the one line log alerting needs: rows this run did not get done
        say(alert, level=logging.WARNING, event="rows_not_done", run_id=run_id,
            report=summary.get("report"))
    if outcome.internal_error:
        say(f"batchcopy: internal error (a bug in batchcopy, please report it): "
            f"{outcome.internal_error}. The run stopped; every call it sent is settled or "
            f"reported UNKNOWN, and the journal {where} is consistent: run again to "
            f"continue", level=logging.ERROR, event="internal_error")
    elif outcome.abort_message:
        say(f"batchcopy: run aborted: {outcome.abort_message}", level=logging.ERROR,
            event="aborted")
    if opts.verify and not outcome.internal_error:
        from batchcopy.commands.verify import verify_after_run

        verified = await verify_after_run(opts, region, journal, report_dest, where)
        if exit_code == ExitCode.OK and verified:
            exit_code = ExitCode(verified)
    return await outlets.ended(exit_code, text.splitlines()[0], summary, final)


def _stop_when_state_fails(opened: Any, runner: Any, loop: asyncio.AbstractEventLoop) -> None:
    """An s3:// state that stops taking writes (errors past the retry budget, the lease
    lost) aborts the run at once: nothing is sent after (exit 3)."""
    hooks = getattr(opened.journal.committer, "on_unavailable", None)
    if hooks is None:
        return
    url = opened.location.url

    def abort(reason: str) -> None:
        message = (f"the state {url} cannot be written ({reason}); stopped sending: every "
                   "call already sent is settled by the next run, on any machine")
        loop.call_soon_threadsafe(runner.ctx.abort, message)

    hooks.append(abort)
    if opened.journal.committer.local_only is not None:  # it failed before the run began
        abort(opened.journal.committer.local_only)


def _quota_looks_lower(operation: str, accepted: float, configured: float) -> None:
    """Said once per operation and run (aws/quotawatch.py decides when)."""
    from batchcopy.aws.quotawatch import lower_text

    say(f"batchcopy: {lower_text(operation, accepted, configured)}", level=logging.WARNING,
        event="quota_looks_lower", operation=operation, accepted_per_s=round(accepted, 3),
        configured_per_s=configured)


def _context(opts: JobOptions, started_wall: float) -> dict[str, Any]:
    """When, with which options and package versions (the summary JSON's context)."""
    from batchcopy.report.runinfo import package_versions, run_options

    return {"started_at": datetime.fromtimestamp(started_wall, timezone.utc).isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "options": run_options(opts), "versions": package_versions()}


def decide_exit(stop_reason: str | None, journal: Any, run_id: int | None = None,
                left_by_limit: int = 0) -> ExitCode:
    """The run's exit code. Rows that did not succeed count only when this run (`run_id`,
    default the latest) decided them: a FAILED row of an earlier run, which no rerun
    touches, is named in the summary, not alerted again. Rows a --limit canary left for
    the next run are no failure: a canary whose rows all succeeded exits 0."""
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
              if s not in (Status.SUCCEEDED.value, Status.SKIPPED.value)) - left_by_limit
    run_id = run_id if run_id is not None else journal.latest_run()
    if run_id is not None:
        bad -= sum(journal.statuses_before(run_id).values())
    return ExitCode.ROWS_FAILED if bad > 0 else ExitCode.OK


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
