"""The `batchcopy` command line: the typer app (root.py) and how help reads (help.py).

`app` and `main` are the console script's entry; `_mount_emulator` adds the emulator
command group (the help renderers call it to walk every command).
"""

from batchcopy.cli.root import _mount_emulator, app, main

__all__ = ["app", "main", "_mount_emulator"]
