"""What more than one command takes: option factories, choices, and the parsers that turn
option values into settings (each mistake one line, exit 2)."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from batchcopy.cli import help as H


def choices(name: str, *values: str) -> Any:
    """A str Enum of `values`: typer shows them as [a|b] and refuses anything else."""
    return Enum(name, {v: v for v in values}, type=str)


OnConflict = choices("OnConflict", "refresh", "fail")
ProgressMode = choices("ProgressMode", "auto", "bar", "log", "off")
ExtraColumns = choices("ExtraColumns", "error", "ignore")
Pins = choices("Pins", "strict", "hint")
LogFormat = choices("LogFormat", "text", "json")
LogLevel = choices("LogLevel", "error", "warning", "notice", "info", "debug")
Output = choices("Output", "text", "json")


def fail(message: str, code: int = 2) -> None:
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
    from batchcopy.aws.ratelimit import load_rate_file, parse_rate

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
    would start over) and minus --yes (the question is theirs to answer)."""
    keep = [a for a in argv if a not in ("--fresh", "--yes", "-y")]
    return shlex.join(["batchcopy", *keep])


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
    """--state URL (a directory or s3://bucket/prefix/); BATCHCOPY_STATE when not given is
    read by the command, so that --journal given with it is not a contradiction."""
    return typer.Option(None, "--state", metavar="URL", rich_help_panel=H.RESUME, help=help_text)


def rate_file_opt() -> Any:
    return typer.Option(None, "--rate-file", metavar="FILE", rich_help_panel=H.PACING,
                        help='JSON file of rates: {"CopyImageSet": 5} or '
                             '{"CopyImageSet": {"rate": 5, "burst": 5}}; --rate wins.')


def print_errors(result: Any) -> None:
    for err in result.errors[:200]:
        typer.echo(str(err), err=True)
    total = len(result.errors) + result.more_errors
    if total > 200:
        typer.echo(f"... and {total - 200} more", err=True)


class ReportOutput(str, Enum):
    table = "table"
    json = "json"
