"""The `batchcopy` command line (typer).

Heavy modules (pandas, pyarrow, aioboto3) are imported inside the commands that need
them, so `batchcopy --help` starts fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="Run AWS HealthImaging CopyImageSet in bulk from a manifest, paced to your quotas, "
         "with a crash-safe journal and a Parquet report. `batchcopy demo` tries it against "
         "the bundled local emulator.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None)


def _mount_emulator() -> None:
    from batchcopy.emulator.cli import emulator_app
    app.add_typer(emulator_app, name="emulator",
                  help="Run or seed the local HealthImaging emulator.")


class OnConflict(str, Enum):
    refresh = "refresh"
    fail = "fail"


class ProgressMode(str, Enum):
    auto = "auto"
    bar = "bar"
    log = "log"
    off = "off"


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"batchcopy: {message}", err=True)
    raise typer.Exit(code)


def _check_extra(value: str) -> None:
    if value not in ("error", "ignore"):
        _fail(f"--extra-columns: expected error or ignore, got {value!r}")


def _parse_duration(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError:
        _fail(f"--max-duration: not a duration: {text!r} (e.g. 3600, 90m, 6h)")
    return None


def _rates(rate: list[str], rate_file: Optional[Path]) -> dict[str, tuple[float, float | None]]:
    from batchcopy.ratelimit import load_rate_file, parse_rate

    out: dict[str, tuple[float, float | None]] = {}
    try:
        if rate_file is not None:
            out.update(load_rate_file(rate_file))
        for item in rate:
            op, r, burst = parse_rate(item)
            out[op] = (r, burst)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    return out


def _local_manifest(manifest: str, tmp: str) -> Path:
    """The manifest as a local file (downloaded if s3://), or a one-line error, exit 2."""
    import asyncio

    from batchcopy import storage

    try:
        return asyncio.run(storage.download(manifest, Path(tmp)))
    except FileNotFoundError:
        _fail(f"manifest not found: {manifest}")
    except Exception as exc:  # a malformed s3:// URL, S3 refusing, a network error
        _fail(f"cannot read manifest {manifest}: {exc}")
    raise AssertionError("unreachable")


DELIMITER_HELP = "CSV delimiter (default: sniffed from the header among , ; tab |)."
EXTRA_HELP = "Columns the manifest has beyond batchcopy's: error (a typo guard), or ignore them (kept in the report's extras column)."


@app.command()
def run(
    manifest: str = typer.Argument(..., help="Manifest: CSV or Parquet, a local path or s3://bucket/key."),
    datastore_id: Optional[str] = typer.Option(None, help="Data store for rows without a datastore_id column."),
    delimiter: Optional[str] = typer.Option(None, help=DELIMITER_HELP),
    extra_columns: str = typer.Option("error", help=EXTRA_HELP),
    report: Optional[str] = typer.Option(None, help="Report path (.parquet, local or s3://). Default: reports/<manifest>-<time>.parquet"),
    journal: Optional[str] = typer.Option(None, help="Journal (SQLite, a local path). Default: one per manifest and data store, in the batchcopy state directory; a rerun continues it."),
    resume: bool = typer.Option(False, "--resume", help="Require an existing journal of this manifest and continue it (an error if it is missing, empty or foreign). A plain rerun continues too."),
    fresh: bool = typer.Option(False, "--fresh", help="Set the journal aside and start over: rows done before are copied again."),
    pins: str = typer.Option("strict", help="strict: a stale source_version_id/destination_version_id pin makes the row CONFLICT, nothing copied; hint: pins are starting points, refreshed on conflict."),
    skip_present: bool = typer.Option(True, "--skip-present/--no-skip-present", help="Skip rows whose instances are already in the destination, identical to the source (one metadata read per copy into an existing destination)."),
    merge: bool = typer.Option(True, "--merge/--no-merge", help="Carry compatible subset rows into one CopyImageSet call."),
    rate: list[str] = typer.Option([], "--rate", help="OPERATION=RATE[/BURST] requests/s, e.g. CopyImageSet=5 for a raised quota. Repeatable."),
    rate_file: Optional[Path] = typer.Option(None, help="JSON file of rates: {\"CopyImageSet\": 5} or {\"CopyImageSet\": {\"rate\": 5, \"burst\": 5}}."),
    max_in_flight: int = typer.Option(100, min=1, help="Copies in progress per data store (the service allows 100)."),
    max_attempts: int = typer.Option(5, min=1, help="Attempts per call for throttles, 5xx and connection errors."),
    on_conflict: OnConflict = typer.Option(OnConflict.refresh, help="ConflictException: refresh = re-read the latest versions and try again; fail = report CONFLICT."),
    max_conflict_refreshes: int = typer.Option(3, min=0, help="Refreshes per row before it is reported CONFLICT."),
    max_failure_rate: float = typer.Option(0.5, min=0.0, max=1.0, help="Abort (exit 3) when more than this share of finished rows failed..."),
    failure_min_rows: int = typer.Option(1000, min=1, help="...once at least this many rows finished (as S3 Batch Operations does)."),
    max_duration: Optional[str] = typer.Option(None, help="Soft time limit (e.g. 6h): stop dispatching, finish in-flight copies, exit 5. Resume later."),
    stop_grace: float = typer.Option(60.0, min=0.0, help="Seconds in-flight copies get to finish after a stop."),
    endpoint_url: Optional[str] = typer.Option(None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", help="HealthImaging endpoint (e.g. the emulator's)."),
    region: Optional[str] = typer.Option(None, help="AWS region (default: your AWS configuration)."),
    profile: Optional[str] = typer.Option(None, help="AWS profile (default credential chain otherwise)."),
    progress: ProgressMode = typer.Option(ProgressMode.auto, help="auto: a bar on a terminal, a log line every --log-interval seconds otherwise."),
    log_interval: float = typer.Option(30.0, min=0.1, help="Seconds between progress lines off a terminal."),
    poll_first: float = typer.Option(1.0, min=0.001, help="Seconds before the first completion check of a copy."),
    poll_max: float = typer.Option(30.0, min=0.001, help="Longest wait between completion checks of a long copy."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verify: bool = typer.Option(False, "--verify", help="After the run, check each done row's destination against its source (as `batchcopy verify` does; its report beside the run's, x-verify.parquet); mismatches make the exit code 1."),
) -> None:
    """Copy every row of MANIFEST; write one report row per manifest row."""
    from batchcopy.job import JobOptions, run_job
    from batchcopy.runner import RunSettings

    if pins not in ("strict", "hint"):
        _fail(f"--pins: expected strict or hint, got {pins!r}")
    if resume and fresh:
        _fail("--resume and --fresh contradict each other: choose one")
    _check_extra(extra_columns)
    settings = RunSettings(
        strict_pins=pins == "strict", skip_present=skip_present,
        merge=merge, max_in_flight_per_datastore=max_in_flight, max_attempts=max_attempts,
        on_conflict=on_conflict.value, max_conflict_refreshes=max_conflict_refreshes,
        max_failure_rate=max_failure_rate, failure_min_rows=failure_min_rows,
        max_duration_s=_parse_duration(max_duration), stop_grace_s=stop_grace)
    opts = JobOptions(
        manifest=manifest, datastore_id=datastore_id, report=report, delimiter=delimiter,
        extra_columns=extra_columns,
        journal=journal, resume=resume, fresh=fresh, rates=_rates(rate, rate_file),
        endpoint_url=endpoint_url, region=region, profile=profile,
        progress="off" if quiet else progress.value, log_interval_s=log_interval,
        poll_first_s=poll_first, poll_max_s=poll_max, settings=settings, verify=verify)
    raise typer.Exit(run_job(opts))


@app.command()
def validate(
    manifest: str = typer.Argument(..., help="Manifest: CSV or Parquet, local or s3://."),
    datastore_id: Optional[str] = typer.Option(None, help="Data store for rows without the column."),
    delimiter: Optional[str] = typer.Option(None, help=DELIMITER_HELP),
    extra_columns: str = typer.Option("error", help=EXTRA_HELP),
) -> None:
    """Check MANIFEST without calling the service: exit 0 if valid, 2 with the errors if not."""
    import tempfile

    from batchcopy.manifest import ManifestInvalid, validate as check

    _check_extra(extra_columns)
    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        local = _local_manifest(manifest, tmp)
        try:
            result = check(local, display_name=manifest, default_datastore_id=datastore_id,
                           delimiter=delimiter, extra_columns=extra_columns)  # type: ignore[arg-type]
        except FileNotFoundError:
            _fail(f"manifest not found: {manifest}")
        except ManifestInvalid as exc:
            _fail(f"invalid manifest:\n{exc}")
    if not result.ok:
        for err in result.errors[:200]:
            typer.echo(str(err), err=True)
        _fail(f"{manifest}: {len(result.errors)} error(s); nothing would be sent")
    typer.echo(f"{manifest}: {result.rows} rows OK ({result.datastores} data store(s), "
               f"{result.image_sets} image set(s), {result.subset_rows} subset row(s))")


@app.command()
def plan(
    manifest: str = typer.Argument(..., help="Manifest: CSV or Parquet, local or s3://."),
    datastore_id: Optional[str] = typer.Option(None),
    merge: bool = typer.Option(True, "--merge/--no-merge"),
    copy_rate: float = typer.Option(0.25, help="CopyImageSet requests/s, for the time estimate."),
) -> None:
    """Show how MANIFEST would run: calls, merges, chains and the time at the copy quota."""
    import asyncio
    import tempfile

    from batchcopy import storage
    from batchcopy.manifest import ManifestInvalid, read_specs
    from batchcopy.plan import Planner

    planner = Planner(merge=merge)
    rows = calls = merged = chained = 0
    with tempfile.TemporaryDirectory(prefix="batchcopy-") as tmp:
        try:
            local = asyncio.run(storage.download(manifest, Path(tmp)))
            for batch in read_specs(local, display_name=manifest, default_datastore_id=datastore_id):
                rows += len(batch)
                for unit in planner.add_batch(batch):
                    calls += 1
                    merged += len(unit.rows) > 1
                    chained += bool(unit.after)
        except FileNotFoundError:
            _fail(f"manifest not found: {manifest}")
        except ManifestInvalid as exc:
            _fail(f"invalid manifest:\n{exc}")
    hours = calls / copy_rate / 3600 if copy_rate > 0 else float("inf")
    typer.echo(f"{rows} rows -> {calls} CopyImageSet calls ({merged} merged calls, "
               f"{rows - calls} calls saved); {chained} calls wait for an earlier copy of the "
               f"same image set; at {copy_rate:g} calls/s: about {hours:.2f} h")


class ReportOutput(str, Enum):
    table = "table"
    json = "json"


@app.command("report")
def report_cmd(
    source: str = typer.Argument(..., help="A journal (.journal.sqlite) or a report (.parquet, local or s3://)."),
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o", help="table: the counts and the rows that went wrong, with their messages; json: the same for scripts (counts, rows by status with error codes and messages, the run's context)."),
    html: Optional[Path] = typer.Option(None, help="Also write a self-contained HTML page (charts of the run and the failure table; works offline). Needs: pip install 'batchcopy[report]'."),
    limit: Optional[int] = typer.Option(None, min=0, help="Rows listed per status (default: 50 in the table, all in JSON; 0 = all)."),
    failed_manifest: Optional[Path] = typer.Option(None, help="Write a manifest (CSV) of the rows to retry: failed, conflict, unknown, not run."),
    out: Optional[str] = typer.Option(None, help="From a journal: (re)write the Parquet report here (default reports/<journal name>.parquet)."),
) -> None:
    """Show what a run did and what went wrong; rebuild its report from the journal; list the rows to retry.

    Example: batchcopy report reports/curated.parquet --html curated.html --failed-manifest retry.csv
    """
    from batchcopy.report_cmd import Options, ReportError, run as show

    try:
        code = show(Options(source=source, output=output.value, html=html, limit=limit,
                            failed_manifest=failed_manifest, out=out))
    except ReportError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command("verify")
def verify_cmd(
    source: str = typer.Argument(..., help="A run's journal (.journal.sqlite) or report (.parquet, local or s3://)."),
    out: Optional[str] = typer.Option(None, help="verify's own report (.parquet, local or s3://): one row per checked row, SUCCEEDED = verified, FAILED = mismatch. Default: reports/<source>-verify-<time>.parquet"),
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o", help="table or json (as `batchcopy report`)."),
    limit: Optional[int] = typer.Option(None, min=0, help="Rows listed per status (default: 50 in the table, all in JSON; 0 = all)."),
    failed_manifest: Optional[Path] = typer.Option(None, help="Write a manifest (CSV) of the rows that did not verify, to copy them again with `batchcopy run`."),
    rate: list[str] = typer.Option([], "--rate", help="OPERATION=RATE[/BURST] requests/s (GetImageSetMetadata, GetImageSet). Repeatable."),
    rate_file: Optional[Path] = typer.Option(None, help="JSON file of rates, as for `run`."),
    concurrency: int = typer.Option(16, min=1, help="Rows checked at the same time (reads stay within their quotas)."),
    endpoint_url: Optional[str] = typer.Option(None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", help="HealthImaging endpoint (e.g. the emulator's)."),
    region: Optional[str] = typer.Option(None, help="AWS region (default: your AWS configuration)."),
    profile: Optional[str] = typer.Option(None, help="AWS profile (default credential chain otherwise)."),
) -> None:
    """Check that each done row's destination holds what the row asked for, like rclone check.

    For every SUCCEEDED or SKIPPED row: the requested instances are in the destination's
    latest version with the source's DICOM attributes, and the version each copy made is the
    version it named plus the copied instances, nothing else. Exit 0: all verified; 1: some
    rows did not verify (FAILED, with the series and instances named) or could not be checked.

    Example: batchcopy verify reports/curated.parquet --failed-manifest recopy.csv
    """
    from batchcopy.report_cmd import ReportError
    from batchcopy.verify_cmd import VerifyOptions, run as check

    try:
        code = check(VerifyOptions(source=source, out=out, output=output.value, limit=limit,
                                   failed_manifest=failed_manifest, rates=_rates(rate, rate_file),
                                   endpoint_url=endpoint_url, region=region, profile=profile,
                                   concurrency=concurrency))
    except ReportError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command()
def undo(
    source: str = typer.Argument(..., metavar="JOURNAL_OR_REPORT", help="The run's journal (.journal.sqlite), or its report (the summary beside it names the journal)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be reverted or deleted, change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation on a terminal."),
    force: bool = typer.Option(False, "--force", help="Revert or delete even image sets written since the run (what is lost is said in the report)."),
    report: Optional[str] = typer.Option(None, help="The undo's report (.parquet). Default: reports/<journal>-undo-<time>.parquet"),
    rate: list[str] = typer.Option([], "--rate", metavar="OPERATION=RATE[/BURST]", help="Raised quotas, e.g. UpdateImageSetMetadata=5. Repeatable."),
    rate_file: Optional[Path] = typer.Option(None, help="JSON file of rates (as for run)."),
    max_attempts: int = typer.Option(5, min=1, help="Attempts per call for throttles, 5xx and connection errors."),
    stop_grace: float = typer.Option(60.0, min=0.0, help="Seconds changes in flight get to finish after a stop."),
    endpoint_url: Optional[str] = typer.Option(None, envvar="AWS_ENDPOINT_URL_MEDICAL_IMAGING", help="HealthImaging endpoint (e.g. the emulator's)."),
    region: Optional[str] = typer.Option(None, help="AWS region (default: your AWS configuration)."),
    profile: Optional[str] = typer.Option(None, help="AWS profile (default credential chain otherwise)."),
    poll_first: float = typer.Option(1.0, min=0.001, help="Seconds before the first check that a revert or delete ended."),
    poll_max: float = typer.Option(30.0, min=0.001, help="Longest wait between such checks."),
) -> None:
    """Take back what a manifest's runs copied: revert each destination to its version before
    the run (UpdateImageSetMetadata revertToVersionId), delete each image set the run created
    (DeleteImageSet); leave alone (CONFLICT) what another writer has written since.

    Example: batchcopy undo reports/nightly.parquet --dry-run
    """
    from batchcopy.undo_job import UndoOptions, run_undo

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
    from batchcopy.demo import run_demo

    raise typer.Exit(run_demo(rows=rows, copy_rate=copy_rate, keep_running=keep_running))


def main() -> None:
    _mount_emulator()
    app(prog_name="batchcopy")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
