"""What an unknown option is answered with (cli/suggest.py): the option a newcomer meant,
from other tools' spellings and from close look-alikes, never a far-fetched one."""

from __future__ import annotations

import pytest

from batchcopy.cli.root import build
from batchcopy.cli.suggest import suggest, unknown_option_message


def options_of(name: str) -> list[str]:
    command = build().commands[name]  # type: ignore[attr-defined]
    return [o for p in command.params for o in (*p.opts, *p.secondary_opts)]


@pytest.mark.parametrize("typed,meant", [
    ("--retries", ["--max-attempts"]),
    ("--max-retries", ["--max-attempts"]),
    ("--transfers", ["--max-in-flight"]),
    ("--concurency", ["--max-in-flight"]),
    ("--no-merges", ["--no-merge"]),
    ("--dry-run", ["plan"]),
    ("--dryrun", ["plan"]),
    ("-n", ["plan"]),
    ("--frobnicate", []),
])
def test_run_suggests_what_was_meant(typed: str, meant: list[str]) -> None:
    got = suggest(typed, options_of("run"), has_plan=True)
    assert got[: len(meant)] == meant and (meant or got == [])
    assert "--fresh" not in got  # click offered --fresh for --retries


def test_a_command_with_its_own_dry_run_gets_it_and_plan_only_for_run() -> None:
    assert suggest("--dryrun", options_of("undo")) == ["--dry-run"]
    assert suggest("-n", options_of("verify")) == []
    line = unknown_option_message("batchcopy verify", "--retries", options_of("verify"))
    assert line == "batchcopy verify: No such option: --retries (see 'batchcopy verify --help')"


def test_the_dry_run_line_points_to_plan() -> None:
    line = unknown_option_message("batchcopy run", "--dry-run", options_of("run"))
    assert "\n" not in line and "batchcopy plan MANIFEST" in line and "sends nothing" in line
