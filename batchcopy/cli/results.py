"""`report`, `verify` and `undo`: the commands that read what runs did."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from batchcopy.cli import help as H
from batchcopy.cli.options import (
    LogFormat,
    LogLevel,
    ProgressMode,
    ReportOutput,
    console_options,
    debug_opt,
    endpoint_opt,
    fail,
    log_file_opt,
    log_format_opt,
    log_interval_opt,
    log_level_opt,
    profile_opt,
    progress_opt,
    quiet_opt,
    rate_file_opt,
    rates_option,
    region_opt,
    state_opt,
    verbose_opt,
)

STATE_HELP = ("The state to read when SOURCE is not given: a directory or s3://bucket/prefix/. "
              "Default: the state directory.")
SOURCE_HELP = ("A state (a directory, s3://bucket/prefix/, a journal file) or a run's report "
               "(.parquet, local or s3://). Default: --state.")


def report_cmd(
    source: Optional[str] = typer.Argument(None, show_default=False, help=SOURCE_HELP),
    state: Optional[str] = state_opt(STATE_HELP),
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o", help="table: the counts and the rows that went wrong, with their messages; json: the same for scripts (counts, rows by status with error codes and messages, the run's context)."),
    html: Optional[Path] = typer.Option(None, help="Also write a self-contained HTML page (charts of the run and the failure table; works offline). Needs: pip install 'batchcopy\\[report]'."),
    limit: Optional[int] = typer.Option(None, min=0, help="Rows listed per status (default: 50 in the table, all in JSON; 0 = all)."),
    failed_manifest: Optional[Path] = typer.Option(None, help="Write a manifest (CSV) of the rows to retry: failed, conflict, unknown, not run."),
    out: Optional[str] = typer.Option(None, help="From a state: (re)write the Parquet report of its latest run here (default reports/<state name>.parquet)."),
) -> None:
    """Show what a run did and what went wrong; rebuild its report from the state; list the rows to retry."""
    from batchcopy.commands.report import Options, run as show
    from batchcopy.report.source import ReportError

    try:
        code = show(Options(source=source, output=output.value, html=html, limit=limit,
                            failed_manifest=failed_manifest, out=out, state=state))
    except ReportError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def verify_cmd(
    source: Optional[str] = typer.Argument(None, show_default=False,
                                           help=SOURCE_HELP),
    state: Optional[str] = state_opt(STATE_HELP),
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
    rate_file: Optional[Path] = rate_file_opt(),
    concurrency: int = typer.Option(16, min=1, metavar="N", rich_help_panel=H.PACING,
                                    help="Rows checked at the same time (reads stay within "
                                         "their quotas)."),
    endpoint_url: Optional[str] = endpoint_opt(),
    region: Optional[str] = region_opt(),
    profile: Optional[str] = profile_opt(),
    progress: ProgressMode = progress_opt(),
    log_interval: float = log_interval_opt(),
    quiet: bool = quiet_opt(),
    log_format: LogFormat = log_format_opt(),
    log_file: Optional[Path] = log_file_opt(),
    log_level: Optional[LogLevel] = log_level_opt(),
    verbose: int = verbose_opt(),
    debug: bool = debug_opt(),
) -> None:
    """Check that each done row's destination holds what the row asked for, like rclone check.

    For every SUCCEEDED or SKIPPED row: the requested instances are in the destination's
    latest version with the source's DICOM attributes, and the version each copy made is the
    version it named plus the copied instances, nothing else. Exit 0: all verified; 1: some
    rows did not verify (FAILED, with the series and instances named) or could not be checked.
    """
    from batchcopy.report.source import ReportError
    from batchcopy.commands.verify import VerifyOptions, run as check

    try:
        code = check(VerifyOptions(
            source=source, out=out, output=output.value, limit=limit,
            failed_manifest=failed_manifest, rates=rates_option(rate, rate_file),
            endpoint_url=endpoint_url, region=region, profile=profile, concurrency=concurrency,
            console=console_options(progress, log_interval, quiet, log_format, log_file,
                                    log_level, verbose, debug), state=state))
    except ReportError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def undo(
    source: Optional[str] = typer.Argument(
        None, show_default=False,
        help="A state (a directory, s3://bucket/prefix/, a journal file), or a run's report "
             "(the summary beside it names the state). Default: --state."),
    state: Optional[str] = state_opt(STATE_HELP),
    lease_ttl: float = typer.Option(
        120.0, min=5.0, metavar="SECONDS", rich_help_panel=H.RESUME,
        help="An s3:// state's lease while the undo runs (as run's --lease-ttl)."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=H.CONFIRM,
                                 help="Show what would be reverted or deleted; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", rich_help_panel=H.CONFIRM,
                             help="Go ahead without asking. Needed off a terminal (cron, "
                                  "a pipe): without it undo changes nothing there, exit 2."),
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
    rate_file: Optional[Path] = rate_file_opt(),
    max_attempts: int = typer.Option(5, min=1, metavar="N", rich_help_panel=H.RETRIES,
                                     help="Attempts per call on throttles, 5xx and connection "
                                          "errors (a change that may have happened is checked "
                                          "first, never resent blindly)."),
    stop_grace: float = typer.Option(60.0, min=0.0, metavar="SECONDS", rich_help_panel=H.LIMITS,
                                     help="After a stop, how long changes in flight get to "
                                          "finish."),
    endpoint_url: Optional[str] = endpoint_opt(),
    region: Optional[str] = region_opt(),
    profile: Optional[str] = profile_opt(),
    progress: ProgressMode = progress_opt(),
    log_interval: float = log_interval_opt(),
    quiet: bool = quiet_opt(),
    log_format: LogFormat = log_format_opt(),
    log_file: Optional[Path] = log_file_opt(),
    log_level: Optional[LogLevel] = log_level_opt(),
    verbose: int = verbose_opt(),
    debug: bool = debug_opt(),
    poll_first: float = typer.Option(1.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                     help="Wait before the first check that a revert or delete "
                                          "ended."),
    poll_max: float = typer.Option(30.0, min=0.001, metavar="SECONDS", rich_help_panel=H.TUNING,
                                   help="Longest wait between such checks."),
) -> None:
    """Take back what a manifest's runs copied (the manifest a state ran last): revert each
    destination to its version before the runs (UpdateImageSetMetadata revertToVersionId),
    delete each image set they created (DeleteImageSet), and leave alone (CONFLICT) what
    another writer has written since.

    Resumable: run it again after a stop or a crash; nothing is reverted or deleted twice.
    Exit codes as run: 0 all taken back, 1 some rows left (CONFLICT...), 2 usage, 4 locked."""
    from batchcopy.commands.undo import UndoOptions, run_undo

    raise typer.Exit(run_undo(UndoOptions(
        source=source, state=state, lease_ttl_s=lease_ttl, report=report, dry_run=dry_run,
        yes=yes, force=force,
        rates=rates_option(rate, rate_file), endpoint_url=endpoint_url, region=region, profile=profile,
        max_attempts=max_attempts, stop_grace_s=stop_grace, poll_first_s=poll_first,
        poll_max_s=poll_max, console=console_options(progress, log_interval, quiet, log_format,
                                                     log_file, log_level, verbose, debug))))
