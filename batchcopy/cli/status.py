"""`status`: where a state's run stands, from any machine."""

from __future__ import annotations

from typing import Optional

import typer

from batchcopy.cli.options import Output, fail, state_opt


def status(
    source: Optional[str] = typer.Argument(
        None, metavar="STATE_OR_JOURNAL", show_default=False,
        help="A state (a directory or s3://bucket/prefix/) or a journal file. Default: --state."),
    state: Optional[str] = state_opt(
        "The state when none is given: a directory or s3://bucket/prefix/. Env "
        "BATCHCOPY_STATE; default: the state directory."),
    output: Output = typer.Option(Output.text, "--output", "-o",
                                  help="text, or json (one object, for scripts)."),
    profile: Optional[str] = typer.Option(None, metavar="NAME",
                                          help="AWS profile for an s3:// state."),
) -> None:
    """Where a state's run stands, from any machine: its rows by status, calls open, the
    accepted copy rate and the time left at that rate, who holds the state (an s3://
    state's lease: host, pid, last renewal, expiry). Reads only; exit 0, or 2 if the state
    cannot be read."""
    from batchcopy.commands.status import StatusError, StatusOptions, run

    try:
        code = run(StatusOptions(source=source, state=state, output=output.value,
                                 profile=profile))
    except StatusError as exc:
        fail(str(exc))
    raise typer.Exit(code)
