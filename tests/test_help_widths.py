"""Every command's --help at 60, 80 and 120 columns (the emulator's too): nothing is cut
(`…`), no word is split (every word of the help texts, option names, metavars and examples
is found whole, as often as it was written), no option name is cut."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from batchcopy.cli import help as H, render, root as cli

WIDTHS = (60, 80, 120)
BOX = str.maketrans({c: " " for c in "│╭╮╰╯─"})


def tree() -> list[tuple[list[str], Any]]:
    cli.mount_emulator()
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(cli.app), [])
    return found


TREE = tree()


def plain(text: str) -> str:
    return Text.from_markup(render.paragraphs(text)).plain


def written_words(path: list[str], command: Any) -> Counter[str]:
    """Every word the help of `command` was written with."""
    texts = [plain(command.help or "")]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        texts.append(plain(param.help or ""))
        if param.param_type_name == "option":
            texts += [*param.opts, *param.secondary_opts, param.metavar or ""]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        if not getattr(sub, "hidden", False):
            texts += [name, plain(sub.short_help or sub.help or "").split("\n\n")[0]]
    examples = H.EXAMPLES.get(" ".join(path))
    if examples is not None:
        texts += [f"{c} {d}" for c, d in examples.commands] + [examples.note]
    return words(" ".join(texts))


def words(text: str) -> Counter[str]:
    """Whitespace-separated words; a comma after an option name (`-q, --quiet`) dropped."""
    return Counter(w for w in (w.rstrip(",") for w in text.split()) if w)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path,command", TREE, ids=[" ".join(p) or "batchcopy" for p, _ in TREE])
def test_help_is_never_cut(path: list[str], command: Any, width: int) -> None:
    res = CliRunner().invoke(cli.app, [*path, "--help"], prog_name="batchcopy",
                             env={"COLUMNS": str(width), "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "…" not in res.output
    assert max(len(line.rstrip()) for line in lines) <= width, "a line runs past the terminal"
    shown = words(res.output.translate(BOX))
    missing = written_words(path, command) - shown
    assert not missing, f"words cut or split at {width} columns: {sorted(missing)}"
    assert "Examples:" in res.output or not H.EXAMPLES.get(" ".join(path))


def test_a_long_example_is_continued_at_an_argument() -> None:
    lines = render.example_lines(
        "batchcopy run manifest.csv --datastore-id 0123456789abcdef0123456789abcdef", 50)
    assert lines == ["batchcopy run manifest.csv \\",
                     "    --datastore-id 0123456789abcdef0123456789abcdef"]


def test_descriptions_are_joined_before_they_wrap() -> None:
    assert render.paragraphs("One\n    two three.\n\n    Four\n    five.") == "One two three.\n\nFour five."
