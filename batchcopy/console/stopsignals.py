"""SIGINT/SIGTERM/SIGHUP for a run (or an undo): the first stops it gently, the second at once.

SIGHUP is what a run on a dropped SSH session (or a closed terminal window) receives: it
stops like SIGTERM (nothing sent after it, copies in flight finish, state saved, report
written, exit 130). Its terminal is gone by then, and writing to a hung-up terminal fails
(EIO): the standard streams that were a terminal are pointed at /dev/null first, so the
end of the run (the summary; a `--log-file` keeps every line) cannot fail on them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from batchcopy.core.specs import ExitCode

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _terminals() -> list[int]:
    """The standard file descriptors (0, 1, 2) that are a terminal now."""
    out = []
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                out.append(fd)
        except OSError:
            pass
    return out


def detach(fds: list[int]) -> None:
    """Point `fds` at /dev/null (their terminal hung up: writes to it would fail)."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)


@contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None], message: str,
                    announce: Callable[[str, str], None] | None = None) -> Iterator[None]:
    """While inside: the first signal announces `message` (with the signal's name; to
    stderr unless `announce(text, signal name)` is given) and calls `stop`; a second exits
    at once with 130 (the journal is consistent at every commit)."""
    hits = {"n": 0}
    terminals = _terminals()

    def handler(name: str) -> None:
        hits["n"] += 1
        if name == "SIGHUP":
            detach(terminals)
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
    for sig in SIGNALS:
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
