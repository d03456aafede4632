"""The `batchcopy` command line (typer).

Heavy modules (pandas, pyarrow, aioboto3) are imported inside the commands that need
them, so `batchcopy --help` starts fast. How the help reads (panels, metavars, examples)
is cli/help.py's.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from batchcopy.cli import copying, doctor, help as H, results, select, status
from batchcopy.cli import settings
from batchcopy.cli.base import App, HelpGroup, help_only

app = App(
    cls=HelpGroup, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})


def mount_emulator() -> None:
    """Add the `emulator` command group (once), for the console script and help walkers."""
    from batchcopy.emulator.cli import emulator_app
    if any(group.typer_instance is emulator_app for group in app.registered_groups):
        return
    help_only(emulator_app)
    app.add_typer(emulator_app, name="emulator", cls=HelpGroup,
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


def demo(
    rows: int = typer.Option(40, min=8, help="About how many manifest rows to generate."),
    copy_rate: float = typer.Option(8.0, help="Raised CopyImageSet quota for the demo (client and emulator agree)."),
    keep_running: bool = typer.Option(False, help="Leave the emulator running after the demo."),
) -> None:
    """Try batchcopy with no AWS account: embedded emulator, seeded data, a demo manifest, a run."""
    from batchcopy.commands.demo import run_demo

    raise typer.Exit(run_demo(rows=rows, copy_rate=copy_rate, keep_running=keep_running))


# Commands, in the order --help lists them (each module holds its commands' options).
app.command(no_args_is_help=True)(select.select)
app.command(no_args_is_help=True)(copying.run)
app.command(no_args_is_help=True)(copying.validate)
app.command(no_args_is_help=True)(copying.plan)
app.command("report")(results.report_cmd)
app.command("status")(status.status)
app.command("verify", no_args_is_help=True)(results.verify_cmd)
app.command(no_args_is_help=True)(results.undo)
app.command("doctor")(doctor.doctor)
app.command()(demo)


def build() -> Any:
    """The click command tree of `batchcopy`, with its help tidied (cli_help.tidy)."""
    mount_emulator()
    command = typer.main.get_command(app)
    H.tidy(command)
    return command


def _usage_errors() -> tuple[type[Exception], type[Exception]]:
    """(UsageError, NoArgsIsHelpError) as the installed typer raises them: typer 0.2x
    vendors click as typer._click, older releases raise click's own."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer < 0.20
        from click import exceptions  # type: ignore[no-redef]  # click's own classes
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
        settings.explain(exc)
        ctx = exc.ctx  # type: ignore[attr-defined]
        where = ctx.command_path if ctx is not None else "batchcopy"
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        line = f"{where}: {message} (see '{where} --help')"
        if type(exc).__name__ == "NoSuchOption" and ctx is not None:
            from batchcopy.cli.suggest import unknown_option_message

            line = unknown_option_message(where, exc.option_name, [  # type: ignore[attr-defined]
                o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts)])
        print(line, file=sys.stderr)
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
    main()
