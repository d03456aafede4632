"""SIGINT/SIGTERM for a run (or an undo): the first stops it gently, the second at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from batchcopy.core.specs import ExitCode


@contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None], message: str,
                    announce: Callable[[str, str], None] | None = None) -> Iterator[None]:
    """While inside: the first signal announces `message` (with the signal's name; to
    stderr unless `announce(text, signal name)` is given) and calls `stop`; a second exits
    at once with 130 (the journal is consistent at every commit)."""
    hits = {"n": 0}

    def handler(name: str) -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            os._exit(int(ExitCode.INTERRUPTED))
        text = (f"batchcopy: {name}: {message} (signal again to exit at once; the journal "
                "stays consistent)")
        if announce is not None:
            announce(text, name)
        else:
            print(text, file=sys.stderr, flush=True)
        stop()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
