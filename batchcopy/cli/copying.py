"""`run`, `validate` and `plan`: the commands that read a manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from batchcopy.cli import help as H
from batchcopy.core.limits import CONCURRENT_COPIES_PER_DATASTORE
from batchcopy.cli.options import (
    ExtraColumns,
    LogFormat,
    LogLevel,
    OnConflict,
    Output,
    Pins,
    ProgressMode,
    console_options,
    copy_rate_of,
    datastore_opt,
    debug_opt,
    delimiter_opt,
    endpoint_opt,
    extra_opt,
    fail,
    local_manifest,
    log_file_opt,
    log_format_opt,
    log_interval_opt,
    log_level_opt,
    manifest_arg,
    merge_opt,
    notify_targets,
    parse_backoff,
    parse_duration_option,
    print_errors,
    profile_opt,
    progress_opt,
    quiet_opt,
    rate_file_opt,
    rate_opt,
    rates_option,
    region_opt,
    rerun_command,
    one_ledger,
    state_opt,
    verbose_opt,
)


def run(
    manifest: str = manifest_arg(),
    datastore_id: Optional[str] = datastore_opt(),
    delimiter: Optional[str] = delimiter_opt(),
    extra_columns: ExtraColumns = extra_opt(),
    endpoint_url: Optional[str] = endpoint_opt(),
    region: Optional[str] = region_opt(),
    profile: Optional[str] = profile_opt(),
    rate: list[str] = rate_opt(),
    rate_file: Optional[Path] = rate_file_opt(),
    max_in_flight: int = typer.Option(CONCURRENT_COPIES_PER_DATASTORE, min=1, metavar="N",
                                      rich_help_panel=H.PACING,
                                      help="Copies in progress at once per data store (the "
                                           f"service allows {CONCURRENT_COPIES_PER_DATASTORE})."),
    merge: bool = merge_opt(),
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
        help="Skip rows whose copy is already there, journal or not: their instances in "
             "their destination, or for a new image set a copy holding exactly them (README: "
             "Already present)."),
    state: Optional[str] = state_opt(
        "Where the ledger of what was copied lives: a directory, or s3://bucket/prefix/ "
        "(then every machine continues where another stopped, one run at a time). Rows are "
        "known by what they copy: any manifest run against the same state skips what is done. "
        "Env BATCHCOPY_STATE; default: the state directory ($BATCHCOPY_STATE_DIR)."),
    journal: Optional[str] = typer.Option(
        None, metavar="PATH", rich_help_panel=H.RESUME,
        help="The ledger as one local file (SQLite) instead of a --state directory."),
    lease_ttl: float = typer.Option(
        120.0, min=5.0, metavar="SECONDS", rich_help_panel=H.RESUME,
        help="An s3:// state's lease: renewed every quarter of this; a run killed without "
             "giving it back holds the state this long."),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=H.RESUME,
                                help="Insist on continuing: an error (exit 2, nothing sent) if "
                                     "the state is missing or has no run yet."),
    fresh: bool = typer.Option(False, "--fresh", rich_help_panel=H.RESUME,
                               help="This manifest's rows start over: rows done before are "
                                    "copied again (rows of other manifests, and calls still "
                                    "open, are left alone)."),
    max_duration: Optional[str] = typer.Option(
        None, metavar="DURATION", rich_help_panel=H.LIMITS,
        help="Soft time limit (3600, 90m, 6h, 1h30m): stop sending, let copies in flight "
             "finish, exit 5. The same command continues later."),
    stop_grace: float = typer.Option(60.0, min=0.0, metavar="SECONDS", rich_help_panel=H.LIMITS,
                                     help="After a stop (Ctrl-C, SIGTERM, --max-duration), how "
                                          "long copies in flight get to finish."),
    limit: Optional[int] = typer.Option(
        None, min=1, metavar="N", rich_help_panel=H.LIMITS,
        help="A canary: run only the first N rows still to run (in manifest order, with the "
             "rest of any chain they start), then stop, exit 0. The same command without "
             "--limit does the rest, nothing twice."),
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
    progress: ProgressMode = progress_opt(),
    log_interval: float = log_interval_opt(),
    quiet: bool = quiet_opt(),
    log_format: LogFormat = log_format_opt(),
    log_file: Optional[Path] = log_file_opt(),
    log_level: Optional[LogLevel] = log_level_opt(),
    verbose: int = verbose_opt(),
    debug: bool = debug_opt(),
    notify: list[str] = typer.Option(
        [], "--notify", metavar="TARGET", rich_help_panel=H.NOTIFY,
        help="When the run ends (finished, aborted, stopped), send its summary: "
             "sns:arn:aws:sns:REGION:ACCOUNT:TOPIC, or a webhook URL (https://, or "
             "http://127.0.0.1 for a local relay). Repeatable. A notification that cannot be "
             "sent is one warning; the exit code stays the run's."),
    metrics_file: Optional[Path] = typer.Option(
        None, "--metrics-file", metavar="PATH", rich_help_panel=H.NOTIFY,
        help="Write the run's numbers here in Prometheus text format (for node_exporter's "
             "textfile collector: name it *.prom in its directory), every --log-interval "
             "and at the end; replaced whole each time."),
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

    Nothing is sent until the manifest, the credentials, the state and the report
    destination check out (exit 2 otherwise). Exit codes: 0 all rows done (FAILED rows of
    earlier runs are named, not counted), 1 rows of this run did not succeed, 2 usage or
    manifest error, 3 aborted (or the state stopped taking writes), 4 another run holds the
    state or the rows, 5 time limit, 70 a bug, 130 interrupted."""
    from batchcopy.commands.run import JobOptions, run_job
    from batchcopy.run.runner import RunSettings

    if resume and fresh:
        fail("--resume and --fresh contradict each other: choose one")
    journal, state = one_ledger(journal, state)
    console = console_options(progress, log_interval, quiet, log_format, log_file, log_level,
                              verbose, debug)
    settings = RunSettings(
        strict_pins=pins is Pins.strict, skip_present=skip_present,
        merge=merge, max_in_flight_per_datastore=max_in_flight, max_attempts=max_attempts,
        on_conflict=on_conflict.value, max_conflict_refreshes=max_conflict_refreshes,
        max_failure_rate=max_failure_rate, failure_min_rows=failure_min_rows,
        max_duration_s=parse_duration_option(max_duration), stop_grace_s=stop_grace,
        backoff=parse_backoff(retry_backoff), limit=limit)
    opts = JobOptions(
        manifest=manifest, datastore_id=datastore_id, report=report, delimiter=delimiter,
        extra_columns=extra_columns.value,
        journal=journal, state=state, lease_ttl_s=lease_ttl, resume=resume, fresh=fresh,
        rates=rates_option(rate, rate_file),
        endpoint_url=endpoint_url, region=region, profile=profile,
        progress=console.progress, log_interval_s=console.log_interval_s,
        poll_first_s=poll_first, poll_max_s=poll_max, settings=settings,
        log_format=console.log_format, log_file=console.log_file,
        log_level=console.log_level, command=rerun_command(sys.argv[1:]),
        confirm_above=None if yes else confirm_above, verify=verify,
        notify=notify_targets(notify), metrics_file=str(metrics_file) if metrics_file else None)
    raise typer.Exit(run_job(opts))


def validate(
    manifest: str = manifest_arg(),
    datastore_id: Optional[str] = datastore_opt(),
    delimiter: Optional[str] = delimiter_opt(),
    extra_columns: ExtraColumns = extra_opt(),
) -> None:
    """Check MANIFEST without calling the service: every row, and the rules across rows
    (duplicates, contradicting pins). Exit 0 if valid, 2 with the errors if not."""
    import tempfile

    from batchcopy.manifest.scan import ManifestInvalid, validate as check

    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        local = local_manifest(manifest, tmp)
        try:
            result = check(local, display_name=manifest, default_datastore_id=datastore_id,
                           delimiter=delimiter, extra_columns=extra_columns.value)
        except FileNotFoundError:
            fail(f"manifest not found: {manifest}")
        except ManifestInvalid as exc:
            fail(f"invalid manifest:\n{exc}")
    if not result.ok:
        print_errors(result)
        fail(f"{manifest}: {len(result.errors) + result.more_errors} error(s); nothing would be sent")
    typer.echo(f"{manifest}: {result.rows} rows OK ({result.datastores} data store(s), "
               f"{result.image_sets} image set(s), {result.subset_rows} subset row(s))")


def plan(
    manifest: str = manifest_arg(),
    datastore_id: Optional[str] = datastore_opt(),
    delimiter: Optional[str] = delimiter_opt(),
    extra_columns: ExtraColumns = extra_opt(),
    rate: list[str] = rate_opt(),
    rate_file: Optional[Path] = rate_file_opt(),
    merge: bool = merge_opt(),
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

    rates = rates_option(rate, rate_file)
    if copy_rate is not None:
        rates["CopyImageSet"] = (copy_rate, None)
    code = run_plan(manifest, datastore_id=datastore_id, delimiter=delimiter,
                    extra_columns=extra_columns.value, merge=merge, copy_rate=copy_rate_of(rates),
                    rate_given="CopyImageSet" in rates, copy_seconds=copy_seconds, rows=rows,
                    output=output.value)
    raise typer.Exit(code)
