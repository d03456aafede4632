"""Every command's --help renders (in-process for all of them, and the real entry point
for the ones this branch added), and the report/verify help says what they produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from batchcopy.cli import root as cli
from kit.runkit import run_cli


def command_paths() -> list[list[str]]:
    cli.mount_emulator()
    root = typer.main.get_command(cli.app)
    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return paths


PATHS = command_paths()


def test_the_commands_are_all_there() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"select", "run", "validate", "plan", "report", "verify", "demo", "emulator"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "batchcopy")
def test_help_renders(path: list[str]) -> None:
    result = CliRunner().invoke(cli.app, [*path, "--help"], prog_name="batchcopy")
    assert result.exit_code == 0, result.output
    assert "Usage: batchcopy" in result.output and "--help" in result.output


@pytest.mark.parametrize("command,words", [
    ("report", ["--output", "--html", "--failed-manifest", "batchcopy[report]"]),
    ("verify", ["rclone check", "--failed-manifest", "Exit 0"]),
    ("run", ["--verify"]),
])
def test_help_of_report_and_verify_from_the_entry_point(command: str, words: list[str],
                                                        tmp_path: Path) -> None:
    proc = run_cli([command, "--help"], {"COLUMNS": "200"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for word in words:
        assert word in text, (word, text)
