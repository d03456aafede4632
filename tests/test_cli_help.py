"""Every command's help renders (the real CLI, in a subprocess), reads cleanly and shows an
example; every option says what it does; `batchcopy --help` stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from batchcopy.cli.root import build


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from commands(sub, path + (name,))


TREE = list(commands(build()))
PATHS = [path for path, _ in TREE]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "batchcopy", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_the_tree_has_every_command() -> None:
    assert {" ".join(p) for p in PATHS} >= {
        "", "run", "validate", "plan", "report", "demo", "emulator", "emulator serve",
        "emulator seed", "emulator stats", "emulator assumptions"}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "batchcopy")
def test_help_renders_with_an_example_and_clean_labels(path: tuple[str, ...]) -> None:
    res = cli(*path, "--help")
    assert res.returncode == 0 and not res.stderr, res.stderr
    out = res.stdout
    assert "Usage: batchcopy" in out and "Traceback" not in out
    assert "Examples:" in out and f"batchcopy {' '.join(path)}".rstrip() in out.split("Examples:")[1]
    assert "<bool>" not in out and "<str>" not in out and "<int" not in out  # typer's type labels
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage
    if path in (("run",), ("validate",), ("plan",)):
        assert usage.strip().endswith("[OPTIONS] MANIFEST"), usage
    short = cli(*path, "-h")
    assert short.returncode == 0 and short.stdout == out


def test_run_groups_its_options_in_panels() -> None:
    out = cli("run", "--help").stdout
    for panel in ("Input", "AWS", "Pacing", "Conflicts and retries", "State and resume",
                  "Limits and stops", "Report and progress", "Logging", "Confirmation"):
        assert f"─ {panel} " in out, panel
    assert "Usage: batchcopy run [OPTIONS] MANIFEST" in out
    assert "OPERATION=RATE[/BURST]" in out


def test_every_option_says_what_it_does() -> None:
    missing = [f"{' '.join(path)} {param.opts[0] if param.opts else param.name}"
               for path, command in TREE for param in command.params
               if not getattr(param, "hidden", False) and not (param.help or "").strip()]
    assert missing == []


def test_version_and_completion() -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("batchcopy ") and "botocore" in res.stdout
    out = cli("--help").stdout
    assert "--install-completion" in out and "--show-completion" in out


def test_help_imports_nothing_heavy() -> None:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "batchcopy", "run", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert imported and not imported & {"pandas", "pyarrow", "aioboto3", "aiobotocore", "boto3"}


def test_no_help_text_loses_words_to_markup() -> None:
    """Help is rich markup: an unescaped `[` before a letter or `/` is read as a tag and the
    words vanish ('batchcopy[report]' printed as 'batchcopy'), or rendering crashes."""
    import re

    import typer.main

    from batchcopy.cli.root import app, build

    build()
    tag = re.compile(r"(?<!\\)\[[A-Za-z/]")
    bad = []

    def walk(command: object, path: str) -> None:
        texts = [getattr(command, "help", None) or ""]
        texts += [getattr(p, "help", None) or "" for p in getattr(command, "params", [])]
        bad.extend(f"{path}: {t!r}" for t in texts if tag.search(t))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "batchcopy")
    assert not bad, bad
