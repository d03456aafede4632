"""Asking the person at the terminal before something is sent or changed: whether there is
one (stdin and stderr are terminals), and their answer. Off a terminal nothing is asked:
`run` goes ahead (a cron job), destructive commands (`undo`) refuse without --yes."""

from __future__ import annotations

import sys
from typing import Any


def at_terminal() -> bool:
    """Whether a person can answer: stdin and stderr are terminals."""
    return _isatty(sys.stdin) and _isatty(sys.stderr)


def asked(prompt: str) -> bool:
    """The prompt on stderr (stdout may be a pipe), one line from stdin: yes or not."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return line.strip().lower() in ("y", "yes")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
