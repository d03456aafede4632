"""`doctor`: check a set-up before a bulk run, read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from batchcopy.cli import help as H
from batchcopy.cli.options import (
    ExtraColumns,
    Output,
    datastore_opt,
    delimiter_opt,
    endpoint_opt,
    extra_opt,
    profile_opt,
    rate_file_opt,
    rate_opt,
    rates_option,
    region_opt,
)


def doctor(
    manifest: Optional[str] = typer.Argument(
        None, metavar="MANIFEST", show_default=False,
        help="The manifest the run will copy (optional): its data stores, its first row."),
    datastore_id: Optional[str] = datastore_opt(),
    delimiter: Optional[str] = delimiter_opt(),
    extra_columns: ExtraColumns = extra_opt(),
    endpoint_url: Optional[str] = endpoint_opt(),
    region: Optional[str] = region_opt(),
    profile: Optional[str] = profile_opt(),
    rate: list[str] = rate_opt(),
    rate_file: Optional[Path] = rate_file_opt(),
    output: Output = typer.Option(Output.text, "--output", "-o", rich_help_panel=H.OUTPUT,
                                  help="text (a table of checks), or json."),
) -> None:
    """Check, read-only, what a bulk run needs: the credentials (not expired), the endpoint
    and host botocore will use, TLS, who you are (STS), the data stores (ACTIVE), the first
    row's source, one read per permission (CopyImageSet by the IAM policy simulator where
    allowed), the applied quotas against --rate. A table of checks with next steps; exit 0
    when the run can go, 2 when a check failed. Sends no CopyImageSet."""
    from batchcopy.commands.doctor import DoctorOptions, run_doctor

    raise typer.Exit(run_doctor(DoctorOptions(
        manifest=manifest, datastore_id=datastore_id, delimiter=delimiter,
        extra_columns=extra_columns.value, endpoint_url=endpoint_url, region=region,
        profile=profile, rates=rates_option(rate, rate_file), output=output.value)))
