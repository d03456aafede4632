"""`select`: write a manifest from a query of a data store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from batchcopy.cli import help as H
from batchcopy.cli.options import (
    LogFormat,
    LogLevel,
    ProgressMode,
    console_options,
    debug_opt,
    endpoint_opt,
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
    verbose_opt,
)

QUERY = "Query"


def select(
    datastore_id: str = typer.Option(..., "--datastore-id", metavar="ID", rich_help_panel=QUERY,
                                     show_default=False,
                                     help="The data store to search (its image sets are the sources)."),
    where: list[str] = typer.Option(
        [], "--where", "-w", metavar="COND", rich_help_panel=QUERY, show_default=False,
        help="A condition, NAME OP VALUE; repeat to AND them. Study: PatientID, "
             "StudyInstanceUID, AccessionNumber, StudyID, StudyDate (YYYYMMDD or "
             "20190101-20191231), UpdatedAt, CreatedAt (ISO 8601), IsPrimary. Series: "
             "Modality, BodyPartExamined, SeriesDescription, SeriesInstanceUID. OP: = (a list "
             "a,b or @FILE), != , ~ (pattern, *chest*), < <= > >=. Default: every image set."),
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", rich_help_panel=QUERY,
                            show_default=False,
                            help="The manifest to write: .csv, .csv.gz or .parquet, local or "
                                 "s3://bucket/key."),
    into: Optional[str] = typer.Option(
        None, "--into", metavar="ID", rich_help_panel=QUERY,
        help="Copy into this existing image set. Default: each source into a new image set "
             "holding exactly its matching series."),
    force: bool = typer.Option(False, "--force", rich_help_panel=QUERY,
                               help="Write force=true: copy despite Patient/Study/Series "
                                    "mismatches (needed --into another study's image set)."),
    pin: bool = typer.Option(False, "--pin", rich_help_panel=QUERY,
                             help="Write each source's version as source_version_id: a run "
                                  "copies nothing from a source changed since (CONFLICT)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, metavar="N", rich_help_panel=QUERY,
                                        help="Stop after N source image sets."),
    rate: list[str] = typer.Option([], "--rate", metavar="OP=RATE", rich_help_panel=H.PACING,
                                   help="Requests per second (and burst, OP=RATE/BURST) of "
                                        "SearchImageSets or GetImageSetMetadata, e.g. after a quota "
                                        "increase. Repeatable. Default: the published quotas."),
    rate_file: Optional[Path] = rate_file_opt(),
    concurrency: int = typer.Option(16, min=1, metavar="N", rich_help_panel=H.PACING,
                                    help="Metadata reads at the same time (they stay within their "
                                         "quota)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", rich_help_panel=H.RESUME,
                               help="Keep each image set version's series in the state directory, "
                                    "so a select run again (after a stop, or with other "
                                    "conditions) does not read it again."),
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
    """Write a manifest from a query of a data store: each source image set that matches
    becomes a row copying exactly its matching series (into a new image set, or --into
    one), in the friendly series_instance_uid column; `validate`, `plan` and `run` take it
    as it is.

    Study conditions go to SearchImageSets (and are checked again on each answer); series
    conditions are checked on each candidate's metadata (GetImageSetMetadata, 50/s by
    default: about 33 minutes per 100,000 image sets). Stopped half-way, the same command
    continues: what was read is kept (--cache). Exit codes: 0 written (or nothing matched),
    1 some image sets could not be read (run it again), 2 usage or setup, 3 credentials or
    access refused, 130 interrupted."""
    from batchcopy.commands.select import SelectOptions, run_select

    raise typer.Exit(run_select(SelectOptions(
        datastore_id=datastore_id, out=out, where=list(where), into=into, force=force, pin=pin,
        limit=limit, rates=rates_option(rate, rate_file), endpoint_url=endpoint_url,
        region=region, profile=profile, concurrency=concurrency, cache=cache,
        console=console_options(progress, log_interval, quiet, log_format, log_file, log_level,
                                verbose, debug))))
