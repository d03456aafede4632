"""How `--help` is laid out, at any width: option names and values are never cut, no word
is split, descriptions wrap to the terminal, examples read as a list.

typer's own layout (a rich table per panel) squeezes every column to fit: at 80 columns it
cut option names (`--max-conflict-re…`) and split values (`RATE[/BURS T]`). Here each panel
is laid out by hand, from measured widths:

- **side by side** (names left, description right) when the longest name of the panel and
  the longest word of its descriptions both fit beside each other;
- **stacked** (the name on its line, the description indented below it) otherwise.

A command's description is joined into paragraphs before it is wrapped (a blank line
separates paragraphs; a paragraph starting with `\\b` keeps its lines). Examples come from
cli/help.py's EXAMPLES (a command and what it does): a table when both fit, else the
description on one line and the command under it, broken at argument boundaries with a
shell continuation (` \\`) when it is longer than the terminal.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from batchcopy.cli import help as H

ARGUMENTS = "Arguments"
OPTIONS = "Options"
COMMANDS = "Commands"
_GAP = 2  # spaces between a name and its description
_MIN_DESCRIPTION = 24  # narrower than this, descriptions go under their names
_INDENT = 4  # a stacked description's indent
_FRAME = 4  # a panel's border and padding, both sides


@dataclass(frozen=True)
class Entry:
    """One row of a panel: what is typed (never wrapped) and what it means (wrapped)."""

    head: str
    description: Text


def console() -> Console:
    """A console on stdout whose width is the terminal's, or $COLUMNS (80 when neither)."""
    return Console(highlight=False, soft_wrap=False)


def paragraphs(text: str) -> str:
    """Help text as written in a docstring -> paragraphs separated by one blank line, each
    joined into one line (so that it wraps to the terminal); `\\b` paragraphs keep their
    lines."""
    out = []
    for block in inspect.cleandoc(text or "").partition("\f")[0].split("\n\n"):
        if block.startswith("\b"):
            out.append(block.strip("\b\n"))
        elif block.strip():
            out.append(" ".join(block.split()))
    return "\n\n".join(out)


def markup(text: str, style: str = "") -> Text:
    """Rich markup (help texts are written for typer's rich mode) as Text."""
    return Text.from_markup(text, style=style)


def longest_word(texts: Iterable[Text]) -> int:
    return max((len(word) for t in texts for word in t.plain.split()), default=0)


def layout(entries: Sequence[Entry], width: int) -> RenderableType:
    """The entries side by side when they fit in `width` (inside a panel), else stacked."""
    heads = max((len(e.head) for e in entries), default=0)
    room = width - heads - _GAP
    if room >= max(_MIN_DESCRIPTION, longest_word(e.description for e in entries)):
        grid = Table.grid(padding=(0, _GAP))
        grid.add_column(width=heads, no_wrap=True, overflow="ignore")
        grid.add_column(width=room)
        for entry in entries:
            grid.add_row(Text(entry.head, style="bold cyan"), entry.description)
        return grid
    rows: list[RenderableType] = []
    for entry in entries:
        rows.append(Text(entry.head, style="bold cyan", no_wrap=True, overflow="ignore"))
        if entry.description.plain:
            rows.append(Padding(entry.description, (0, 0, 0, _INDENT)))
    return Group(*rows)


def panel(title: str, body: RenderableType) -> Panel:
    return Panel(body, title=title, title_align="left", border_style="dim")


def metavar(param: Any, ctx: Any) -> str:
    """What an option takes, as the help shows it: its metavar, a plain type name (TEXT,
    INTEGER), [a|b] for choices, nothing for a flag."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    try:
        shown = param.display_type_rich(ctx)
    except (AttributeError, TypeError):
        shown = param.make_metavar(ctx) if hasattr(param, "make_metavar") else None
    return H.plain_type(shown) if shown else ""


def head(param: Any, ctx: Any) -> str:
    """`-q, --quiet`, `--merge / --no-merge`, `--rate OPERATION=RATE[/BURST]`, `N [x>=1]`."""
    if param.param_type_name == "argument":
        return (param.metavar or param.name or "").upper()
    names = sorted(param.opts, key=lambda o: (o.startswith("--"), o))
    text = ", ".join(names)
    if param.secondary_opts:
        text += " / " + ", ".join(param.secondary_opts)
    value = metavar(param, ctx)
    if value:
        text += f" {value}"
    ranged = getattr(param, "_get_number_range_help_str", None)
    if ranged is not None and (bounds := ranged()):
        text += f" [{bounds}]"
    return text


def default_text(param: Any, ctx: Any) -> str | None:
    """`merge`, `0.5/20`, `error`: the default as typer words it, or None (not shown)."""
    show = getattr(param, "show_default", None)
    if show is False or getattr(param, "required", False) or getattr(param, "count", False):
        return None
    extract = getattr(param, "_extract_default_help_str", None)
    words = getattr(param, "_get_default_string", None)
    if extract is None or words is None:
        return None
    value = extract(ctx=ctx)
    if value is None or value == [] or value == () or (value is False and not param.secondary_opts):
        return None
    return str(words(ctx=ctx, show_default_is_str=isinstance(show, str), default_value=value)) or None


def description(param: Any, ctx: Any) -> Text:
    text = markup(paragraphs(getattr(param, "help", None) or ""))
    extras = []
    envvars = getattr(param, "envvar", None)
    shown_env = [envvars] if isinstance(envvars, str) else list(envvars or ())
    shown_env = [e for e in shown_env if not e.startswith(H.ENV_PREFIX)]
    if shown_env and getattr(param, "show_envvar", False):
        extras.append(f"[env var: {', '.join(shown_env)}]")
    default = default_text(param, ctx)
    if default:
        extras.append(f"[default: {default}]")
    if getattr(param, "required", False):
        extras.append("[required]")
    for extra in extras:
        if text.plain:
            text.append(" ")
        text.append(extra, style="dim")
    return text


def param_panels(command: Any, ctx: Any) -> list[tuple[str, list[Any]]]:
    """(title, params) in typer's order: arguments first, then the options' panels in the
    order they first appear; hidden parameters left out."""
    arguments: dict[str, list[Any]] = {}
    options: dict[str, list[Any]] = {OPTIONS: []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        is_argument = param.param_type_name == "argument"
        title = getattr(param, "rich_help_panel", None) or (ARGUMENTS if is_argument else OPTIONS)
        (arguments if is_argument else options).setdefault(title, []).append(param)
    return [(t, ps) for t, ps in (*arguments.items(), *options.items()) if ps]


def command_entries(command: Any, ctx: Any) -> list[Entry]:
    entries = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        first = paragraphs(sub.short_help or sub.help or "").split("\n\n")[0]
        entries.append(Entry(name, markup(first)))
    return entries


def example_lines(command_line: str, width: int) -> list[str]:
    """A command broken at argument boundaries to fit `width`, continued with ` \\`: an
    option stays with its value."""
    if len(command_line) <= width:
        return [command_line]
    tokens = command_line.split(" ")
    units: list[str] = []
    for token in tokens:
        if units and units[-1].startswith("-") and " " not in units[-1] and not token.startswith("-"):
            units[-1] += f" {token}"
        else:
            units.append(token)
    lines = [units[0]]
    for unit in units[1:]:
        if len(lines[-1]) + 1 + len(unit) + 2 <= width:  # room left for " \\"
            lines[-1] += f" {unit}"
        else:
            lines[-1] += " \\"
            lines.append(" " * _INDENT + unit)
    return lines


def examples(path: str, width: int) -> RenderableType | None:
    """The command's examples: `command   what it does` when both fit, else each
    description on its line and the command under it."""
    listed = H.EXAMPLES.get(path)
    if not listed:
        return None
    items: list[RenderableType] = [Text("Examples:")]
    commands = max(len(c) for c, _ in listed.commands)
    words = max((len(w) for _, d in listed.commands for w in d.split()), default=0)
    side = _INDENT // 2 + commands + _GAP + max(_MIN_DESCRIPTION, words) <= width
    if side and any(d for _, d in listed.commands):
        grid = Table.grid(padding=(0, _GAP))
        grid.add_column(width=commands, no_wrap=True, overflow="ignore")
        grid.add_column()
        for command_line, what in listed.commands:
            grid.add_row(Text(command_line, style="bold"), Text(what, style="dim"))
        items.append(Padding(grid, (0, 0, 0, _INDENT // 2)))
    else:
        for command_line, what in listed.commands:
            if what:
                items.append(Padding(Text(what, style="dim"), (0, 0, 0, _INDENT // 2)))
            for line in example_lines(command_line, width - _INDENT):
                items.append(Padding(Text(line, style="bold", no_wrap=True, overflow="ignore"),
                                     (0, 0, 0, _INDENT)))
    if listed.note:
        items += [Text(""), Text(paragraphs(listed.note))]
    return Group(*items)


def command_path(ctx: Any) -> str:
    """`run`, `emulator serve`, "" for the root: the key of cli/help.py's EXAMPLES."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def render(command: Any, ctx: Any) -> None:
    """Print `command`'s help (the usage line, its description, its panels, examples)."""
    H.tidy_once(command)
    out = console()
    width = out.width
    inner = max(20, width - _FRAME)
    out.print(Padding(Text(command.get_usage(ctx), style="bold"), 1))
    if command.help:
        text = paragraphs(command.help)
        first, _, rest = text.partition("\n\n")
        body: list[RenderableType] = [markup(first)]
        if rest:
            body += [Text(""), markup(rest, style="dim")]
        out.print(Padding(Group(*body), (0, 1, 1, 1)))
    for title, params in param_panels(command, ctx):
        entries = [Entry(head(p, ctx), description(p, ctx)) for p in params]
        out.print(panel(title, layout(entries, inner)))
    if hasattr(command, "list_commands"):
        entries = command_entries(command, ctx)
        if entries:
            out.print(panel(COMMANDS, layout(entries, inner)))
    path = command_path(ctx)
    shown = examples(path, width - 2)
    if shown is None and command.epilog:
        shown = markup(paragraphs(command.epilog))
    if shown is not None:
        out.print(Padding(shown, 1))
