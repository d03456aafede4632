"""What more than one command takes: option factories, choices, and the parsers that turn
option values into settings (each mistake one line, exit 2)."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from batchcopy.cli import help as H


# Choices: str Enums, which typer shows as [a|b] and which refuse anything else.
class OnConflict(str, Enum):
    refresh = "refresh"
    fail = "fail"


class ProgressMode(str, Enum):
    auto = "auto"
    bar = "bar"
    log = "log"
    off = "off"


class ExtraColumns(str, Enum):
    error = "error"
    ignore = "ignore"


class Pins(str, Enum):
    strict = "strict"
    hint = "hint"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class LogLevel(str, Enum):
    error = "error"
    warning = "warning"
    notice = "notice"
    info = "info"
    debug = "debug"


class Output(str, Enum):
    text = "text"
    json = "json"


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, exit `code`. A message about an option (`--name: ...`) whose
    value came from the environment or the config file says which (cli/settings.py)."""
    option, colon, rest = message.partition(":")
    if colon and option.startswith("--") and " " not in option:
        from batchcopy.cli.settings import option_origin

        where = option_origin(option)
        if where:
            message = f"{option} (from {where}):{rest}"
    typer.echo(f"batchcopy: {message}", err=True)
    raise typer.Exit(code)


def parse_duration_option(text: str | None, option: str = "--max-duration") -> float | None:
    from batchcopy.core.durations import parse_duration

    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")
        return None
    if seconds <= 0:  # a run that stops before it starts is a typo, not a plan
        fail(f"{option}: must be more than 0, got {text!r} (e.g. 3600, 90m, 6h; leave it out for no limit)")
    return seconds


def parse_backoff(text: str) -> Any:
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
        fail(f"--retry-backoff: expected BASE[/CAP] in seconds with 0 < BASE <= CAP, got {text!r} "
              "(e.g. 0.5/20)")
    return Backoff(base=base, cap=cap)


def rates_option(rate: list[str], rate_file: Optional[Path]) -> dict[str, tuple[float, float | None]]:
    """--rate and --rate-file, parsed the same way for `run` and `plan`."""
    from batchcopy.aws.ratefile import load_rate_file, parse_rate

    out: dict[str, tuple[float, float | None]] = {}
    if rate_file is not None:
        try:
            out.update(load_rate_file(rate_file))
        except (ValueError, OSError) as exc:
            fail(f"--rate-file: {exc}")
    for item in rate:
        try:
            op, r, burst = parse_rate(item)
        except ValueError as exc:
            fail(f"--rate: {exc}")
        out[op] = (r, burst)
    return out


def notify_targets(texts: list[str]) -> list[Any]:
    """--notify values -> console/notify.Target, each mistake one line (exit 2)."""
    from batchcopy.console.notify import parse_target

    targets = []
    for text in texts:
        try:
            targets.append(parse_target(text))
        except ValueError as exc:
            fail(f"--notify: {exc}")
    return targets


def copy_rate_of(rates: dict[str, tuple[float, float | None]]) -> float:
    from batchcopy.aws.ratelimit import RateLimiter

    return RateLimiter(rates).configured()["CopyImageSet"][0]


def local_manifest(manifest: str, tmp: str) -> Path:
    """The manifest as a local file (downloaded if s3://), or a one-line error, exit 2."""
    import asyncio

    from batchcopy.aws import storage

    try:
        return asyncio.run(storage.download(manifest, Path(tmp)))
    except FileNotFoundError:
        fail(f"manifest not found: {manifest}")
    except Exception as exc:  # a malformed s3:// URL, S3 refusing, a network error
        fail(f"cannot read manifest {manifest}: {exc}")
    raise AssertionError("unreachable")


def rerun_command(argv: list[str]) -> str:
    """The command a summary tells the user to run again: this one, minus --fresh (which
    would start over), minus --yes (the question is theirs to answer) and minus --limit N
    (a canary's continuation runs the rest)."""
    keep: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--limit":
            skip = True
        elif a not in ("--fresh", "--yes", "-y") and not a.startswith("--limit="):
            keep.append(a)
    return shlex.join(["batchcopy", *_hide_webhooks(keep)])


def _hide_webhooks(argv: list[str]) -> list[str]:
    """A --notify webhook's URL is its secret: the summary shows its host only."""
    from batchcopy.console.notify import Target

    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--notify" and not arg.startswith("sns:"):
            arg = str(Target("webhook", arg))
        elif arg.startswith("--notify=") and not arg.startswith("--notify=sns:"):
            arg = "--notify=" + str(Target("webhook", arg[len("--notify="):]))
        out.append(arg)
    return out


MANIFEST_HELP = "Manifest: CSV (.csv, .csv.gz) or Parquet (.parquet), a local path or s3://bucket/key."


def manifest_arg() -> Any:
    return typer.Argument(..., metavar="MANIFEST", help=MANIFEST_HELP, show_default=False)


def datastore_opt() -> Any:
    return typer.Option(None, "--datastore-id", metavar="ID", rich_help_panel=H.INPUT,
                        help="Data store of the rows that have no datastore_id column.")


def delimiter_opt() -> Any:
    return typer.Option(None, "--delimiter", metavar="CHAR", rich_help_panel=H.INPUT,
                        help="CSV delimiter: , ; | or tab. Default: sniffed from the header "
                             "(a spreadsheet's semicolon export works as it is).")


def extra_opt() -> Any:
    return typer.Option(ExtraColumns.error, "--extra-columns", rich_help_panel=H.INPUT,
                        help="Columns of your own (notes...): error = refuse them (a guard "
                             "against typos in column names); ignore = carry them into the "
                             "report's extras column.")


def merge_opt() -> Any:
    return typer.Option(True, "--merge/--no-merge", rich_help_panel=H.PACING,
                        help="Carry compatible subset rows (same source, destination and "
                             "flags, next to each other in their chain) in one "
                             "CopyImageSet call: each merged row saves one call.")


def rate_opt() -> Any:
    return typer.Option([], "--rate", metavar="OPERATION=RATE[/BURST]", rich_help_panel=H.PACING,
                        help="Requests per second (and burst) of an operation: the quota your "
                             "account has, e.g. CopyImageSet=5 after a quota increase. "
                             "Repeatable. Default: the published quotas (CopyImageSet 0.25/s).")


def state_opt(help_text: str) -> Any:
    """--state URL (a directory or s3://bucket/prefix/); BATCHCOPY_STATE like every option
    (cli/settings.py)."""
    return typer.Option(None, "--state", metavar="URL", rich_help_panel=H.RESUME, help=help_text)


def one_ledger(journal: str | None, state: str | None) -> tuple[str | None, str | None]:
    """--journal or --state: the one given on the command line wins over the other from
    the environment or a config file; both on the command line is a mistake."""
    from batchcopy.cli.settings import option_origin

    if not (journal and state):
        return journal, state
    if option_origin("--state") is not None and option_origin("--journal") is None:
        return journal, None
    if option_origin("--journal") is not None and option_origin("--state") is None:
        return None, state
    fail("--journal and --state both name where the ledger lives: give one")
    return journal, state


def rate_file_opt() -> Any:
    return typer.Option(None, "--rate-file", metavar="FILE", rich_help_panel=H.PACING,
                        help='JSON file of rates: {"CopyImageSet": 5} or '
                             '{"CopyImageSet": {"rate": 5, "burst": 5}}; --rate wins.')


# ---- what every command that talks to AWS or runs long takes ----------------------------
def endpoint_opt() -> Any:
    """No envvar: botocore reads AWS_ENDPOINT_URL_MEDICAL_IMAGING (and the rest) itself, by
    its own rule (aws/endpoints.py)."""
    return typer.Option(None, "--endpoint-url", metavar="URL", rich_help_panel=H.AWS,
                        help=H.ENDPOINT_HELP)


def region_opt() -> Any:
    return typer.Option(None, "--region", metavar="REGION", rich_help_panel=H.AWS,
                        help="AWS region. Default: your AWS configuration.")


def profile_opt() -> Any:
    return typer.Option(None, "--profile", metavar="NAME", rich_help_panel=H.AWS,
                        help="AWS profile. Default: the default credential chain.")


def progress_opt() -> Any:
    return typer.Option(
        ProgressMode.auto, "--progress", rich_help_panel=H.OUTPUT,
        help="auto = a bar on a terminal, else a stats line every --log-interval; bar; log; off.")


def log_interval_opt() -> Any:
    return typer.Option(30.0, "--log-interval", min=0.1, metavar="SECONDS", rich_help_panel=H.OUTPUT,
                        help="Seconds between stats lines (off a terminal, or into --log-file).")


def quiet_opt() -> Any:
    return typer.Option(False, "--quiet", "-q", rich_help_panel=H.OUTPUT,
                        help="No progress bar or stats lines (the summary is still printed).")


def log_format_opt() -> Any:
    return typer.Option(
        LogFormat.text, "--log-format", rich_help_panel=H.LOGGING,
        help="text = timestamped lines; json = one JSON object a line (time, level, event, "
             "run_id, row_id, call_id, error_code, latency_ms...) for log shippers. Applies "
             "to --log-file when given, else to stderr.")


def log_file_opt() -> Any:
    return typer.Option(None, "--log-file", metavar="PATH", rich_help_panel=H.LOGGING,
                        help="Append the log here; the terminal keeps the bar, warnings and "
                             "the summary.")


def log_level_opt() -> Any:
    return typer.Option(
        None, "--log-level", rich_help_panel=H.LOGGING,
        help="notice (default): start, stats, summary, rows that did not succeed; info: "
             "every row and call; debug: every API request (operation, status, latency; "
             "never credentials or bodies).")


def verbose_opt() -> Any:
    return typer.Option(0, "--verbose", "-v", count=True, rich_help_panel=H.LOGGING,
                        show_default=False, help="-v = --log-level info, -vv = --log-level debug.")


def debug_opt() -> Any:
    return typer.Option(False, "--debug", rich_help_panel=H.LOGGING,
                        help="Same as --log-level debug.")


def console_options(progress: Any, log_interval: float, quiet: bool, log_format: Any,
                    log_file: Optional[Path], log_level: Any, verbose: int,
                    debug: bool) -> Any:
    """The logging and progress options, settled (console/logs.ConsoleOptions)."""
    from batchcopy.console.logs import ConsoleOptions

    level = log_level.value if log_level is not None else "notice"
    if debug or verbose >= 2:
        level = "debug"
    elif verbose == 1 and level != "debug":
        level = "info"
    return ConsoleOptions(progress="off" if quiet else progress.value, log_interval_s=log_interval,
                          log_format=log_format.value, log_file=str(log_file) if log_file else None,
                          log_level=level)


def print_errors(result: Any) -> None:
    for err in result.errors[:200]:
        typer.echo(str(err), err=True)
    total = len(result.errors) + result.more_errors
    if total > 200:
        typer.echo(f"... and {total - 200} more", err=True)


class ReportOutput(str, Enum):
    table = "table"
    json = "json"
