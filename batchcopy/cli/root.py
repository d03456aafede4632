"""The `batchcopy` command line (typer).

Heavy modules (pandas, pyarrow, aioboto3) are imported inside the commands that need
them, so `batchcopy --help` starts fast. How the help reads (panels, metavars, examples)
is cli/help.py's.
"""

from __future__ import annotations

import os
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from batchcopy.cli import help as H

app = typer.Typer(
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})


def _mount_emulator() -> None:
    from batchcopy.emulator.cli import emulator_app
    if any(group.typer_instance is emulator_app for group in app.registered_groups):
        return
    app.add_typer(emulator_app, name="emulator",
                  help="Run or seed the local HealthImaging emulator.")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(H.version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Show the versions of batchcopy and its AWS stack, and exit."),
) -> None:
    """Run AWS HealthImaging CopyImageSet in bulk from a manifest, paced to your quotas, with a
    crash-safe journal and a Parquet report. `batchcopy demo` tries it against the bundled
    local emulator, with no AWS account."""


def _choices(name: str, *values: str) -> Any:
    """A str Enum of `values`: typer shows them as [a|b] and refuses anything else."""
    return Enum(name, {v: v for v in values}, type=str)


OnConflict = _choices("OnConflict", "refresh", "fail")
ProgressMode = _choices("ProgressMode", "auto", "bar", "log", "off")
ExtraColumns = _choices("ExtraColumns", "error", "ignore")
Pins = _choices("Pins", "strict", "hint")
LogFormat = _choices("LogFormat", "text", "json")
LogLevel = _choices("LogLevel", "error", "warning", "notice", "info", "debug")
Output = _choices("Output", "text", "json")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"batchcopy: {message}", err=True)
    raise typer.Exit(code)


def _parse_duration(text: str | None, option: str = "--max-duration") -> float | None:
    from batchcopy.core.durations import parse_duration

    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        _fail(f"{option}: {exc}")
        return None
    if seconds <= 0:  # a run that stops before it starts is a typo, not a plan
        _fail(f"{option}: must be more than 0, got {text!r} (e.g. 3600, 90m, 6h; leave it out for no limit)")
    return seconds


def _parse_backoff(text: str) -> Any:
    """--retry-backoff BASE[/CAP]: seconds, finite, BASE > 0 and CAP >= BASE."""
    import math

    from batchcopy.aws.retry import Backoff

    base_text, _, cap_text = text.partition("/")
    try:
        base = float(base_text)
        cap = float(cap_text) if cap_text else max(base, 20.0)
    except ValueError:
        base = cap = math.nan
    if not (math.isfinite(base) and math.isfinite(cap) and 0 < base <= cap):
        _fail(f"--retry-backoff: expected BASE[/CAP] in seconds with 0 < BASE <= CAP, got {text!r} "
              "(e.g. 0.5/20)")
    return Backoff(base=base, cap=cap)


def _rates(rate: list[str], rate_file: Optional[Path]) -> dict[str, tuple[float, float | None]]:
    """--rate and --rate-file, parsed the same way for `run` and `plan`."""
    from batchcopy.aws.ratelimit import load_rate_file, parse_rate

    out: dict[str, tuple[float, float | None]] = {}
    if rate_file is not None:
        try:
            out.update(load_rate_file(rate_file))
        except (ValueError, OSError) as exc:
            _fail(f"--rate-file: {exc}")
    for item in rate:
        try:
            op, r, burst = parse_rate(item)
        except ValueError as exc:
            _fail(f"--rate: {exc}")
        out[op] = (r, burst)
    return out


def _copy_rate(rates: dict[str, tuple[float, float | None]]) -> float:
    from batchcopy.aws.ratelimit import RateLimiter

    return RateLimiter(rates).configured()["CopyImageSet"][0]


def _local_manifest(manifest: str, tmp: str) -> Path:
    """The manifest as a local file (downloaded if s3://), or a one-line error, exit 2."""
    import asyncio

    from batchcopy.aws import storage

    try:
        return asyncio.run(storage.download(manifest, Path(tmp)))
    except FileNotFoundError:
        _fail(f"manifest not found: {manifest}")
    except Exception as exc:  # a malformed s3:// URL, S3 refusing, a network error
        _fail(f"cannot read manifest {manifest}: {exc}")
    raise AssertionError("unreachable")


def _rerun_command(argv: list[str]) -> str:
    """The command a summary tells the user to run again: this one, minus --fresh (which
    would start over) and minus --yes (the question is theirs to answer)."""
    keep = [a for a in argv if a not in ("--fresh", "--yes", "-y")]
    return shlex.join(["batchcopy", *keep])


# ---- options more than one command takes -------------------------------------------------
MANIFEST_HELP = "Manifest: CSV (.csv, .csv.gz) or Parquet (.parquet), a local path or s3://bucket/key."


def _manifest_arg() -> Any:
    return typer.Argument(..., metavar="MANIFEST", help=MANIFEST_HELP, show_default=False)


def _datastore_opt() -> Any:
    return typer.Option(None, "--datastore-id", metavar="ID", rich_help_panel=H.INPUT,
                        help="Data store of the rows that have no datastore_id column.")


def _delimiter_opt() -> Any:
    return typer.Option(None, "--delimiter", metavar="CHAR", rich_help_panel=H.INPUT,
                        help="CSV delimiter: , ; | or tab. Default: sniffed from the header "
                             "(a spreadsheet's semicolon export works as it is).")


def _extra_opt() -> Any:
    return typer.Option(ExtraColumns.error, "--extra-columns", rich_help_panel=H.INPUT,
                        help="Columns of your own (notes...): error = refuse them (a guard "
                             "against typos in column names); ignore = carry them into the "
                             "report's extras column.")


def _merge_opt() -> Any:
    return typer.Option(True, "--merge/--no-merge", rich_help_panel=H.PACING,
                        help="Carry compatible subset rows (same source, destination and "
                             "flags, next to each other in their chain) in one "
                             "CopyImageSet call: each merged row saves one call.")


def _rate_opt() -> Any:
    return typer.Option([], "--rate", metavar="OPERATION=RATE[/BURST]", rich_help_panel=H.PACING,
                        help="Requests per second (and burst) of an operation: the quota your "
                             "account has, e.g. CopyImageSet=5 after a quota increase. "
                             "Repeatable. Default: the published quotas (CopyImageSet 0.25/s).")


def _rate_file_opt() -> Any:
    return typer.Option(None, "--rate-file", metavar="FILE", rich_help_panel=H.PACING,
                        help='JSON file of rates: {"CopyImageSet": 5} or '
                             '{"CopyImageSet": {"rate": 5, "burst": 5}}; --rate wins.')


@app.command(no_args_is_help=True)
def run(
    manifest: str = _manifest_arg(),
    datastore_id: Optional[str] = _datastore_opt(),
    delimiter: Optional[str] = _delimiter_opt(),
    extra_columns: ExtraColumns = _extra_opt(),
    endpoint_url: Optional[str] = typer.Option(
        None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", metavar="URL", rich_help_panel=H.AWS,
        help="HealthImaging endpoint, e.g. the emulator's http://127.0.0.1:8787 (with it, the "
             "runtime- host prefix is not added)."),
    region: Optional[str] = typer.Option(None, metavar="REGION", rich_help_panel=H.AWS,
                                         help="AWS region. Default: your AWS configuration."),
    profile: Optional[str] = typer.Option(None, metavar="NAME", rich_help_panel=H.AWS,
                                          help="AWS profile. Default: the default credential chain."),
    rate: list[str] = _rate_opt(),
    rate_file: Optional[Path] = _rate_file_opt(),
    max_in_flight: int = typer.Option(100, min=1, metavar="N", rich_help_panel=H.PACING,
                                      help="Copies in progress at once per data store (the "
                                           "service allows 100)."),
    merge: bool = _merge_opt(),
    on_conflict: OnConflict = typer.Option(
        OnConflict.refresh, rich_help_panel=H.RETRIES,
        help="On ConflictException (a stale version, a locked image set): refresh = read the "
             "latest versions and try again; fail = report the row CONFLICT at once."),
    max_conflict_refreshes: int = typer.Option(3, min=0, metavar="N", rich_help_panel=H.RETRIES,
                                               help="Refreshes per row before it is CONFLICT."),
    max_attempts: int = typer.Option(5, min=1, metavar="N", rich_help_panel=H.RETRIES,
                                     help="Attempts per call on throttles, 5xx and connection "
                                          "errors (a CopyImageSet that may have happened is "
                                          "checked first, never resent blindly)."),
    retry_backoff: str = typer.Option(
        "0.5/20", metavar="BASE[/CAP]", rich_help_panel=H.RETRIES,
        help="Seconds between attempts: a random wait up to BASE, 2xBASE, 4xBASE... never more "
             "than CAP. Shorter for a local emulator or a quota far above the published one."),
    pins: Pins = typer.Option(
        Pins.strict, rich_help_panel=H.RETRIES,
        help="Version pins in the manifest: strict = a stale source_version_id or "
             "destination_version_id makes the row CONFLICT, nothing copied; hint = pins are "
             "starting points, refreshed on conflict."),
    skip_present: bool = typer.Option(
        True, "--skip-present/--no-skip-present", rich_help_panel=H.RETRIES,
        help="Skip rows whose instances are already in their destination, identical to the "
             "source (one metadata read per copy into an existing destination)."),
    journal: Optional[str] = typer.Option(
        None, metavar="PATH", rich_help_panel=H.RESUME,
        help="Journal (SQLite, a local path). Default: one per manifest and data store in the "
             "state directory ($BATCHCOPY_STATE_DIR); running the same manifest again continues it."),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=H.RESUME,
                                help="Insist on continuing: an error (exit 2, nothing sent) if "
                                     "the journal is missing, empty or another manifest's."),
    fresh: bool = typer.Option(False, "--fresh", rich_help_panel=H.RESUME,
                               help="Set the journal aside and start over: rows done before "
                                    "are copied again."),
    max_duration: Optional[str] = typer.Option(
        None, metavar="DURATION", rich_help_panel=H.LIMITS,
        help="Soft time limit (3600, 90m, 6h, 1h30m): stop sending, let copies in flight "
             "finish, exit 5. The same command continues later."),
    stop_grace: float = typer.Option(60.0, min=0.0, metavar="SECONDS", rich_help_panel=H.LIMITS,
                                     help="After a stop (Ctrl-C, SIGTERM, --max-duration), how "
                                          "long copies in flight get to finish."),
    max_failure_rate: float = typer.Option(
        0.5, min=0.0, max=1.0, metavar="SHARE", rich_help_panel=H.LIMITS,
        help="Abort (exit 3) when more than this share of finished rows did not succeed, once "
             "--failure-min-rows rows finished."),
    failure_min_rows: int = typer.Option(1000, min=1, metavar="N", rich_help_panel=H.LIMITS,
                                         help="Finished rows before --max-failure-rate applies "
                                              "(as S3 Batch Operations does)."),
    report: Optional[str] = typer.Option(
        None, metavar="PATH", rich_help_panel=H.OUTPUT,
        help="Report (.parquet, local or s3://); the summary JSON goes beside it. Default: "
             "reports/<manifest>-<time>.parquet"),
    progress: ProgressMode = typer.Option(
        ProgressMode.auto, rich_help_panel=H.OUTPUT,
        help="auto = a bar on a terminal, else a stats line every --log-interval; bar; log; off."),
    log_interval: float = typer.Option(30.0, min=0.1, metavar="SECONDS", rich_help_panel=H.OUTPUT,
                                       help="Seconds between stats lines (off a terminal, or "
                                            "into --log-file)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=H.OUTPUT,
                               help="No progress bar or stats lines (the summary is still printed)."),
    log_format: LogFormat = typer.Option(
        LogFormat.text, rich_help_panel=H.LOGGING,
        help="text = timestamped lines; json = one JSON object a line (time, level, event, "
             "run_id, row_id, call_id, error_code, latency_ms...) for log shippers. Applies "
             "to --log-file when given, else to stderr."),
    log_file: Optional[Path] = typer.Option(
        None, metavar="PATH", rich_help_panel=H.LOGGING,
        help="Append the log here; the terminal keeps the bar, warnings and the summary."),
    log_level: Optional[LogLevel] = typer.Option(
        None, rich_help_panel=H.LOGGING,
        help="notice (default): start, stats, summary, rows that did not succeed; info: "
             "every row and call; debug: every API request (operation, status, latency; "
             "never credentials or bodies)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, rich_help_panel=H.LOGGING,
                                show_default=False,
                                help="-v = --log-level info, -vv = --log-level debug."),
    debug: bool = typer.Option(False, "--debug", rich_help_panel=H.LOGGING,
                               help="Same as --log-level debug."),
    confirm_above: int = typer.Option(
        1000, min=0, metavar="ROWS", rich_help_panel=H.CONFIRM,
        help="On a terminal, show the plan and ask before running more rows than this. "
             "Never asks off a terminal."),
    yes: bool = typer.Option(False, "--yes", "-y", rich_help_panel=H.CONFIRM,
                             help="Do not ask: run at once."),
    verify: bool = typer.Option(
        False, "--verify", rich_help_panel=H.OUTPUT,
        help="After the run, check each done row's destination against its source (as "
             "`batchcopy verify` does; its report beside the run's, x-verify.parquet); "
             "mismatches make the exit code 1."),
    poll_first: float = typer.Option(1.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                     help="Wait before the first completion check of a copy, "
                                          "until the run has learnt how long its copies take."),
    poll_max: float = typer.Option(30.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                   help="Longest wait between completion checks of a long copy."),
) -> None:
    """Copy every row of MANIFEST not done yet; write one report row per manifest row.

    Nothing is sent until the manifest, the credentials, the journal and the report
    destination check out (exit 2 otherwise). Exit codes: 0 all rows done, 1 some rows did
    not succeed, 2 usage or manifest error, 3 aborted, 4 another run holds the rows, 5 time
    limit, 70 a bug, 130 interrupted."""
    from batchcopy.commands.run import JobOptions, run_job
    from batchcopy.run.runner import RunSettings

    if resume and fresh:
        _fail("--resume and --fresh contradict each other: choose one")
    level = log_level.value if log_level is not None else "notice"
    if debug or verbose >= 2:
        level = "debug"
    elif verbose == 1 and level not in ("debug",):
        level = "info"
    settings = RunSettings(
        strict_pins=pins is Pins.strict, skip_present=skip_present,
        merge=merge, max_in_flight_per_datastore=max_in_flight, max_attempts=max_attempts,
        on_conflict=on_conflict.value, max_conflict_refreshes=max_conflict_refreshes,
        max_failure_rate=max_failure_rate, failure_min_rows=failure_min_rows,
        max_duration_s=_parse_duration(max_duration), stop_grace_s=stop_grace,
        backoff=_parse_backoff(retry_backoff))
    opts = JobOptions(
        manifest=manifest, datastore_id=datastore_id, report=report, delimiter=delimiter,
        extra_columns=extra_columns.value,
        journal=journal, resume=resume, fresh=fresh, rates=_rates(rate, rate_file),
        endpoint_url=endpoint_url, region=region, profile=profile,
        progress="off" if quiet else progress.value, log_interval_s=log_interval,
        poll_first_s=poll_first, poll_max_s=poll_max, settings=settings,
        log_format=log_format.value, log_file=str(log_file) if log_file else None,
        log_level=level, command=_rerun_command(sys.argv[1:]),
        confirm_above=None if yes else confirm_above, verify=verify)
    raise typer.Exit(run_job(opts))


def _print_errors(result: Any) -> None:
    for err in result.errors[:200]:
        typer.echo(str(err), err=True)
    total = len(result.errors) + result.more_errors
    if total > 200:
        typer.echo(f"... and {total - 200} more", err=True)


@app.command(no_args_is_help=True)
def validate(
    manifest: str = _manifest_arg(),
    datastore_id: Optional[str] = _datastore_opt(),
    delimiter: Optional[str] = _delimiter_opt(),
    extra_columns: ExtraColumns = _extra_opt(),
) -> None:
    """Check MANIFEST without calling the service: every row, and the rules across rows
    (duplicates, contradicting pins). Exit 0 if valid, 2 with the errors if not."""
    import tempfile

    from batchcopy.manifest.scan import ManifestInvalid, validate as check

    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        local = _local_manifest(manifest, tmp)
        try:
            result = check(local, display_name=manifest, default_datastore_id=datastore_id,
                           delimiter=delimiter, extra_columns=extra_columns.value)  # type: ignore[arg-type]
        except FileNotFoundError:
            _fail(f"manifest not found: {manifest}")
        except ManifestInvalid as exc:
            _fail(f"invalid manifest:\n{exc}")
    if not result.ok:
        _print_errors(result)
        _fail(f"{manifest}: {len(result.errors) + result.more_errors} error(s); nothing would be sent")
    typer.echo(f"{manifest}: {result.rows} rows OK ({result.datastores} data store(s), "
               f"{result.image_sets} image set(s), {result.subset_rows} subset row(s))")


@app.command(no_args_is_help=True)
def plan(
    manifest: str = _manifest_arg(),
    datastore_id: Optional[str] = _datastore_opt(),
    delimiter: Optional[str] = _delimiter_opt(),
    extra_columns: ExtraColumns = _extra_opt(),
    rate: list[str] = _rate_opt(),
    rate_file: Optional[Path] = _rate_file_opt(),
    merge: bool = _merge_opt(),
    copy_seconds: float = typer.Option(
        None, min=0.0, metavar="SECONDS", rich_help_panel=H.PACING, show_default=False,
        help="Assumed duration of one copy, for the chains (default 5): the calls of a chain "
             "wait for each other's copies, whatever the quota."),
    rows: bool = typer.Option(False, "--rows", rich_help_panel=H.OUTPUT,
                              help="Also say what each row will do: its call, a new image set "
                                   "or which destination, the rows it waits for or shares "
                                   "its call with."),
    output: Output = typer.Option(Output.text, "--output", "-o", rich_help_panel=H.OUTPUT,
                                  help="text, or json (one object; with --rows its row_plans "
                                       "list)."),
    copy_rate: Optional[float] = typer.Option(None, hidden=True, min=0.0,
                                              help="Old spelling of --rate CopyImageSet=RATE."),
) -> None:
    """Show what running MANIFEST would do, without calling the service: CopyImageSet calls,
    merges, chains, per data store, and the time at your copy quota. Runs every check
    `validate` does (exit 2 on an invalid manifest)."""
    from batchcopy.commands.plan import run_plan

    rates = _rates(rate, rate_file)
    if copy_rate is not None:
        rates["CopyImageSet"] = (copy_rate, None)
    code = run_plan(manifest, datastore_id=datastore_id, delimiter=delimiter,
                    extra_columns=extra_columns.value, merge=merge, copy_rate=_copy_rate(rates),
                    rate_given="CopyImageSet" in rates, copy_seconds=copy_seconds, rows=rows,
                    output=output.value)
    raise typer.Exit(code)


class ReportOutput(str, Enum):
    table = "table"
    json = "json"


@app.command("report")
def report_cmd(
    source: str = typer.Argument(..., help="A journal (.journal.sqlite) or a report (.parquet, local or s3://)."),
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o", help="table: the counts and the rows that went wrong, with their messages; json: the same for scripts (counts, rows by status with error codes and messages, the run's context)."),
    html: Optional[Path] = typer.Option(None, help="Also write a self-contained HTML page (charts of the run and the failure table; works offline). Needs: pip install 'batchcopy\\[report]'."),
    limit: Optional[int] = typer.Option(None, min=0, help="Rows listed per status (default: 50 in the table, all in JSON; 0 = all)."),
    failed_manifest: Optional[Path] = typer.Option(None, help="Write a manifest (CSV) of the rows to retry: failed, conflict, unknown, not run."),
    out: Optional[str] = typer.Option(None, help="From a journal: (re)write the Parquet report here (default reports/<journal name>.parquet)."),
) -> None:
    """Show what a run did and what went wrong; rebuild its report from the journal; list the rows to retry."""
    from batchcopy.commands.report import Options, ReportError, run as show

    try:
        code = show(Options(source=source, output=output.value, html=html, limit=limit,
                            failed_manifest=failed_manifest, out=out))
    except ReportError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command("verify", no_args_is_help=True)
def verify_cmd(
    source: str = typer.Argument(..., metavar="JOURNAL_OR_REPORT",
                                 help="A run's journal (.journal.sqlite) or report (.parquet, "
                                      "local or s3://)."),
    out: Optional[str] = typer.Option(None, metavar="PATH", rich_help_panel=H.OUTPUT,
                                      help="verify's own report (.parquet, local or s3://): one "
                                           "row per checked row, SUCCEEDED = verified, FAILED = "
                                           "mismatch. Default: reports/<source>-verify-<time>.parquet"),
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o",
                                        rich_help_panel=H.OUTPUT,
                                        help="table or json (as `batchcopy report`)."),
    limit: Optional[int] = typer.Option(None, min=0, metavar="N", rich_help_panel=H.OUTPUT,
                                        help="Rows listed per status (default: 50 in the table, "
                                             "all in JSON; 0 = all)."),
    failed_manifest: Optional[Path] = typer.Option(
        None, metavar="CSV", rich_help_panel=H.OUTPUT,
        help="Write a manifest (CSV) of the rows that did not verify, to copy them again with "
             "`batchcopy run`."),
    rate: list[str] = typer.Option([], "--rate", metavar="OPERATION=RATE[/BURST]",
                                   rich_help_panel=H.PACING,
                                   help="Requests per second (and burst) of GetImageSetMetadata "
                                        "or GetImageSet. Repeatable."),
    rate_file: Optional[Path] = _rate_file_opt(),
    concurrency: int = typer.Option(16, min=1, metavar="N", rich_help_panel=H.PACING,
                                    help="Rows checked at the same time (reads stay within "
                                         "their quotas)."),
    endpoint_url: Optional[str] = typer.Option(
        None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", metavar="URL", rich_help_panel=H.AWS,
        help="HealthImaging endpoint, e.g. the emulator's http://127.0.0.1:8787."),
    region: Optional[str] = typer.Option(None, metavar="REGION", rich_help_panel=H.AWS,
                                         help="AWS region. Default: your AWS configuration."),
    profile: Optional[str] = typer.Option(None, metavar="NAME", rich_help_panel=H.AWS,
                                          help="AWS profile. Default: the default credential chain."),
) -> None:
    """Check that each done row's destination holds what the row asked for, like rclone check.

    For every SUCCEEDED or SKIPPED row: the requested instances are in the destination's
    latest version with the source's DICOM attributes, and the version each copy made is the
    version it named plus the copied instances, nothing else. Exit 0: all verified; 1: some
    rows did not verify (FAILED, with the series and instances named) or could not be checked.
    """
    from batchcopy.commands.report import ReportError
    from batchcopy.commands.verify import VerifyOptions, run as check

    try:
        code = check(VerifyOptions(source=source, out=out, output=output.value, limit=limit,
                                   failed_manifest=failed_manifest, rates=_rates(rate, rate_file),
                                   endpoint_url=endpoint_url, region=region, profile=profile,
                                   concurrency=concurrency))
    except ReportError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command(no_args_is_help=True)
def undo(
    source: str = typer.Argument(..., metavar="JOURNAL_OR_REPORT",
                                 help="The run's journal (.journal.sqlite), or its report (the "
                                      "summary beside it names the journal)."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=H.CONFIRM,
                                 help="Show what would be reverted or deleted; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", rich_help_panel=H.CONFIRM,
                             help="Do not ask for confirmation on a terminal."),
    force: bool = typer.Option(False, "--force", rich_help_panel=H.CONFIRM,
                               help="Revert or delete even image sets written since the run "
                                    "(what that loses is said in the report)."),
    report: Optional[str] = typer.Option(None, metavar="PATH", rich_help_panel=H.OUTPUT,
                                         help="The undo's report (.parquet). Default: "
                                              "reports/<journal>-undo-<time>.parquet"),
    rate: list[str] = typer.Option([], "--rate", metavar="OPERATION=RATE[/BURST]",
                                   rich_help_panel=H.PACING,
                                   help="Requests per second (and burst) of an operation, e.g. "
                                        "UpdateImageSetMetadata=5 or DeleteImageSet=5 after a "
                                        "quota increase. Repeatable. Default: 0.25/s each."),
    rate_file: Optional[Path] = _rate_file_opt(),
    max_attempts: int = typer.Option(5, min=1, metavar="N", rich_help_panel=H.RETRIES,
                                     help="Attempts per call on throttles, 5xx and connection "
                                          "errors (a change that may have happened is checked "
                                          "first, never resent blindly)."),
    stop_grace: float = typer.Option(60.0, min=0.0, metavar="SECONDS", rich_help_panel=H.LIMITS,
                                     help="After a stop, how long changes in flight get to "
                                          "finish."),
    endpoint_url: Optional[str] = typer.Option(
        None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", metavar="URL", rich_help_panel=H.AWS,
        help="HealthImaging endpoint, e.g. the emulator's http://127.0.0.1:8787."),
    region: Optional[str] = typer.Option(None, metavar="REGION", rich_help_panel=H.AWS,
                                         help="AWS region. Default: your AWS configuration."),
    profile: Optional[str] = typer.Option(None, metavar="NAME", rich_help_panel=H.AWS,
                                          help="AWS profile. Default: the default credential chain."),
    poll_first: float = typer.Option(1.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                     help="Wait before the first check that a revert or delete "
                                          "ended."),
    poll_max: float = typer.Option(30.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                   help="Longest wait between such checks."),
) -> None:
    """Take back what a manifest's runs copied: revert each destination to its version before
    the runs (UpdateImageSetMetadata revertToVersionId), delete each image set they created
    (DeleteImageSet), and leave alone (CONFLICT) what another writer has written since.

    Resumable: run it again after a stop or a crash; nothing is reverted or deleted twice.
    Exit codes as run: 0 all taken back, 1 some rows left (CONFLICT...), 2 usage, 4 locked."""
    from batchcopy.commands.undo import UndoOptions, run_undo

    raise typer.Exit(run_undo(UndoOptions(
        source=source, report=report, dry_run=dry_run, yes=yes, force=force,
        rates=_rates(rate, rate_file), endpoint_url=endpoint_url, region=region, profile=profile,
        max_attempts=max_attempts, stop_grace_s=stop_grace, poll_first_s=poll_first,
        poll_max_s=poll_max)))


@app.command()
def demo(
    rows: int = typer.Option(40, min=8, help="About how many manifest rows to generate."),
    copy_rate: float = typer.Option(8.0, help="Raised CopyImageSet quota for the demo (client and emulator agree)."),
    keep_running: bool = typer.Option(False, help="Leave the emulator running after the demo."),
) -> None:
    """Try batchcopy with no AWS account: embedded emulator, seeded data, a demo manifest, a run."""
    from batchcopy.commands.demo import run_demo

    raise typer.Exit(run_demo(rows=rows, copy_rate=copy_rate, keep_running=keep_running))


def build() -> Any:
    """The click command tree of `batchcopy`, with its help tidied (cli_help.tidy)."""
    _mount_emulator()
    command = typer.main.get_command(app)
    H.tidy(command)
    return command


def _usage_errors() -> tuple[type[Exception], type[Exception]]:
    """(UsageError, NoArgsIsHelpError) as the installed typer raises them: typer 0.2x
    vendors click as typer._click, older releases raise click's own."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer < 0.20
        from click import exceptions
    return exceptions.UsageError, exceptions.NoArgsIsHelpError


def main() -> None:
    """The console script: a usage error (an unknown option or command, a value out of
    range, a missing argument) is one line naming the command, exit 2, like every other
    setup mistake; a command run with nothing shows its help; the rest is typer's."""
    usage_error, no_args = _usage_errors()
    try:
        code = build()(prog_name="batchcopy", standalone_mode=False)
    except no_args as exc:
        exc.ctx.get_help()  # type: ignore[attr-defined]  # typer prints its rich help here
        sys.exit(2)
    except usage_error as exc:
        ctx = exc.ctx  # type: ignore[attr-defined]
        where = ctx.command_path if ctx is not None else "batchcopy"
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        print(f"{where}: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # `batchcopy report ... | head`: the reader left; say nothing
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (python's flush at exit)
        sys.stdout = sys.stderr
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
