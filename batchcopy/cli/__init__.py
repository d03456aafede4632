"""The `batchcopy` command line: the typer app (root.py) and how help reads (help.py).

`app` and `main` are the console script's entry; `mount_emulator` adds the emulator
command group (the help renderers call it to walk every command; `_mount_emulator` is its
older name, which the before-stop help check still uses).
"""

from batchcopy.cli.root import app, main, mount_emulator

_mount_emulator = mount_emulator

__all__ = ["app", "main", "mount_emulator"]
