"""The classes batchcopy's command line is built on: help laid out by cli/render.py (never
cut), and options read from the environment and the config file (cli/settings.py).

`App.command()` makes every command a `Command`, so a command registered in cli/root.py
gets both without asking; the emulator's group and commands (mounted from emulator/, which
imports nothing of the product) get the help only (`HelpGroup`, `HelpCommand`).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from batchcopy.cli import render, settings


class HelpCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        render.render(self, ctx)


class HelpGroup(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        render.render(self, ctx)


class Command(HelpCommand):
    """A command whose options also come from BATCHCOPY_<OPTION> and the config file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings.install(self)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except settings.BadParameter as exc:
            settings.explain(exc)
            raise


class App(typer.Typer):
    """typer.Typer whose commands are `Command`s unless told otherwise."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=Command if cls in (None, TyperCommand) else cls,
                               **kwargs)


def help_only(group: typer.Typer) -> None:
    """Lay out the help of `group`'s commands (registered elsewhere) as ours."""
    for info in group.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = HelpCommand
