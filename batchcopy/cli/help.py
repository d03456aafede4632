"""How `--help` reads: option panels, metavars, examples, the version.

Typer labels every parameter with its Python type (`<bool>` on a flag, `<str>`), and writes
a required argument as `{manifest}` in the usage line. `tidy()` walks the finished command
tree once (cli.main) and gives each parameter a plain metavar instead (none on flags,
`TEXT`, `INTEGER`, `[error|ignore]`) and the usage line `MANIFEST`. cli/render.py lays the
help out, with each command's examples (`EXAMPLES`). Help text is rich markup: write `\\[` for a literal
`[` that a letter or `/` follows (`OPERATION=RATE\\[/BURST]`); metavars are plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# panels of `batchcopy run` (and of the options other commands share with it)
INPUT = "Input"
AWS = "AWS"
PACING = "Pacing"
RETRIES = "Conflicts and retries"
RESUME = "State and resume"
LIMITS = "Limits and stops"
OUTPUT = "Report and progress"
LOGGING = "Logging"
NOTIFY = "Notifications and metrics"
CONFIRM = "Confirmation"
TUNING = "Tuning"

ENV_PREFIX = "BATCHCOPY_"  # every option's environment variable: BATCHCOPY_<OPTION>

ENDPOINT_HELP = ("HealthImaging endpoint, e.g. the emulator's http://127.0.0.1:8787. Default: "
                 "AWS_ENDPOINT_URL_MEDICAL_IMAGING, AWS_ENDPOINT_URL, the profile's "
                 "endpoint_url, else AWS's regional one. Image-set calls get the runtime- "
                 "host prefix unless AWS_DISABLE_HOST_PREFIX_INJECTION=true (as in the AWS "
                 "CLI).")


@dataclass(frozen=True)
class Examples:
    """A command's examples: (command line, what it does) pairs, and a note after them."""

    commands: tuple[tuple[str, str], ...]
    note: str = ""


def examples(*commands: tuple[str, str] | str, note: str = "") -> Examples:
    return Examples(tuple((c, "") if isinstance(c, str) else c for c in commands), note)


EXAMPLES: dict[str, Examples] = {
    "": examples(
        ("batchcopy demo", "try it against the bundled emulator"),
        ("batchcopy select --datastore-id DS --where Modality=CT --out ct.csv",
         "a manifest from a query"),
        ("batchcopy validate manifest.csv", "check a manifest, send nothing"),
        ("batchcopy plan manifest.csv --rows", "what each row will do, and how long"),
        ("batchcopy run manifest.csv", "copy; run it again to continue"),
        ("batchcopy report reports/manifest-*.parquet", "what happened")),
    "select": examples(
        ("batchcopy select --datastore-id DS -w Modality=CT -w 'StudyDate>=20190101' -o ct.csv",
         "the CT series of the studies from 2019 on, each into a new image set"),
        ("batchcopy select --datastore-id DS -w PatientID=@ids.txt -o s3://bucket/m.parquet",
         "every image set of the patients listed in a file"),
        ("batchcopy select --datastore-id DS -w 'SeriesDescription~*axial*' -o axial.csv",
         "series by a description pattern"),
        ("batchcopy select --datastore-id DS -w BodyPartExamined=KNEE --into ID --force -o k.csv",
         "into one existing image set"),
        note="Then `batchcopy plan FILE` and `batchcopy run FILE`. Stopped half-way, the same "
             "command continues: what was read is not read again."),
    "run": examples(
        ("batchcopy run manifest.csv", "copy every row not done yet"),
        ("batchcopy run manifest.csv --datastore-id 0123456789abcdef0123456789abcdef",
         "rows without a datastore_id column"),
        ("batchcopy run s3://bucket/nightly.csv --rate CopyImageSet=5 --max-duration 6h",
         "a raised quota, at most six hours"),
        ("batchcopy run manifest.csv --log-format json --log-file run.jsonl -v",
         "every row and call, as JSON lines"),
        ("BATCHCOPY_LOG_FORMAT=json batchcopy run manifest.csv",
         "an option from the environment"),
        ("batchcopy run s3://bucket/nightly.csv --state s3://bucket/batchcopy-state/",
         "the ledger in S3: any machine continues"),
        note="Run the same command again to continue: rows done are skipped with no API "
             "call, rows not run are run, UNKNOWN rows are checked against the service "
             "before anything is resent. Any manifest run against the same state skips "
             "the copies done before, whatever its name."),
    "validate": examples(
        "batchcopy validate manifest.csv",
        ("batchcopy validate export.csv --delimiter ';' --extra-columns ignore",
         "a spreadsheet export with notes")),
    "plan": examples(
        "batchcopy plan manifest.csv",
        ("batchcopy plan manifest.csv --rate CopyImageSet=5 --rows", "at a raised quota, row by row"),
        ("batchcopy plan manifest.csv --output json > plan.json", "for scripts")),
    "report": examples(
        ("batchcopy report reports/manifest-20260101T000000Z.parquet", "what a run did"),
        ("batchcopy report", "the default state's latest run"),
        ("batchcopy report s3://bucket/batchcopy-state/", "a state in S3, from any machine"),
        ("batchcopy report reports/manifest.parquet --failed-manifest retry.csv",
         "the rows to retry, as a manifest"),
        ("batchcopy report reports/curated.parquet --html curated.html", "charts, for a browser")),
    "status": examples(
        ("batchcopy status", "the default state"),
        ("batchcopy status s3://bucket/batchcopy-state/", "from any machine"),
        ("batchcopy status s3://bucket/batchcopy-state/ -o json", "for scripts")),
    "verify": examples(
        ("batchcopy verify reports/curated.parquet", "check every done row"),
        ("batchcopy verify reports/curated.parquet --failed-manifest recopy.csv",
         "the rows that did not verify, to copy again"),
        ("batchcopy verify reports/curated.parquet --log-format json --log-file verify.jsonl --quiet",
         "for cron")),
    "undo": examples(
        ("batchcopy undo reports/manifest-20260101T000000Z.parquet --dry-run",
         "the plan; nothing changes"),
        ("batchcopy undo reports/manifest-20260101T000000Z.parquet", "asks first on a terminal"),
        ("batchcopy undo --state s3://bucket/batchcopy-state/ --yes",
         "a state's latest manifest, no question")),
    "doctor": examples(
        ("batchcopy doctor manifest.csv", "before the first real run"),
        ("batchcopy doctor manifest.csv --rate CopyImageSet=5", "is that quota really there?"),
        ("batchcopy doctor --datastore-id 0123456789abcdef0123456789abcdef --output json",
         "for scripts")),
    "demo": examples("batchcopy demo", "batchcopy demo --rows 200 --keep-running"),
    "emulator": examples(
        "batchcopy emulator serve --port 8787 --seed 1",
        "batchcopy emulator seed --patients 20",
        "batchcopy emulator assumptions"),
    "emulator serve": examples(
        "batchcopy emulator serve --port 8787 --seed 1",
        "batchcopy emulator serve --time-scale 0.01 --fault throttle:CopyImageSet:0.2"),
    "emulator seed": examples(
        "batchcopy emulator seed --endpoint-url http://127.0.0.1:8787 --patients 20 --seed 3"),
    "emulator stats": examples("batchcopy emulator stats --endpoint-url http://127.0.0.1:8787"),
    "emulator assumptions": examples("batchcopy emulator assumptions",
                                     "batchcopy emulator assumptions --json"),
}

_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "int range": "INTEGER",
               "float range": "NUMBER", "path": "PATH", "bool": "", "list[str]": "TEXT",
               "list[int]": "INTEGER", "file": "FILE", "directory": "DIR"}


def tidy(command: Any, path: str = "") -> None:
    """Clean metavars and usage names for `command` and every command below it."""
    command._batchcopy_tidy = True
    for param in getattr(command, "params", []):
        _tidy_param(param)
    original = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    command.get_help_option = get_help_option
    for name, sub in (getattr(command, "commands", None) or {}).items():
        tidy(sub, f"{path} {name}".strip())


def tidy_once(command: Any) -> None:
    """tidy() the command tree under `command` unless it was."""
    if not getattr(command, "_batchcopy_tidy", False):
        tidy(command)


def _tidy_param(param: Any) -> None:
    if param.param_type_name == "argument":
        name = (param.metavar or param.name or "").upper()
        usage = name if param.required else f"[{name}]"
        if getattr(param, "nargs", 1) != 1:
            usage += "..."
        param.metavar = name
        if hasattr(param, "_usage_display_name"):
            param._usage_display_name = lambda usage=usage: usage
        if hasattr(param, "display_type_rich"):
            param.display_type_rich = lambda ctx=None: None
        return
    if param.metavar is not None or not hasattr(param, "display_type_rich"):
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.display_type_rich = lambda ctx=None: None
        return
    original = param.display_type_rich

    def display(ctx: Any = None, original: Any = original) -> str | None:
        shown = original(ctx)
        return None if shown is None else plain_type(shown)

    param.display_type_rich = display


def plain_type(shown: str) -> str:
    """typer's type label -> the help's: `<str>` TEXT, `<int range>` INTEGER, `<a|b>`
    [a|b]; a metavar (upper case, or already bracketed) as it is."""
    if shown.startswith("[") or not (shown.startswith("<") or shown.islower()):
        return shown
    bare = shown.strip("<>").removesuffix("...")
    multiple = shown.endswith("...")
    if "|" in bare:
        return f"[{bare}]"
    return _TYPE_NAMES.get(bare, bare.upper()) + ("..." if multiple else "")


def version_text() -> str:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"batchcopy {v('batchcopy')} (Python {platform.python_version()}; "
            f"aioboto3 {v('aioboto3')}, botocore {v('botocore')}, pyarrow {v('pyarrow')})")
