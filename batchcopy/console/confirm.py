"""Asking the person at the terminal before something is sent or changed: whether there is
one (stdin and stderr are terminals), and their answer, the prompt on stderr (stdout may be
a pipe). Off a terminal nothing is asked: `run` goes ahead (a cron job), destructive
commands (`undo`) refuse without --yes. `batchcopy run` asks before a large run: the plan's
figures, then "Start copying? [y/N]"."""

from __future__ import annotations

import sys
from typing import Any

from batchcopy.aws.preflight import SetupError
from batchcopy.console import logs


def at_terminal() -> bool:
    """Whether a person can answer: stdin and stderr are terminals."""
    return logs._isatty(sys.stdin) and logs._isatty(sys.stderr)


def asked(prompt: str) -> bool:
    """The prompt on stderr, one line from stdin: yes, or not (end of input is not)."""
    try:
        answer = input_line(prompt)
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def confirm_run(opts: Any, journal: Any) -> None:
    """Above --confirm-above rows to run, on a terminal: show the plan, ask. SetupError if
    the answer is not yes (nothing was sent)."""
    if opts.confirm_above is None or not at_terminal():
        return
    pending = journal.manifest_statuses().get("PENDING", 0)
    if pending <= opts.confirm_above:
        return
    from batchcopy.plan.forecast import Forecaster
    from batchcopy.commands.plan import confirmation_text
    from batchcopy.aws.ratelimit import RateLimiter

    settings = opts.settings
    forecaster = Forecaster(merge=settings.merge if settings else True)
    for batch in journal.iter_manifest():
        forecaster.add_batch([r.spec for r in batch], [r.status == "PENDING" for r in batch])
    rate = RateLimiter(opts.rates).configured()["CopyImageSet"][0]
    print(f"batchcopy: {opts.manifest}: "
          f"{confirmation_text(forecaster.figures(), rate)}.", file=sys.stderr, flush=True)
    if not asked("Start copying? [y/N] "):
        raise SetupError("not confirmed: nothing was sent (--yes runs without asking; "
                         "`batchcopy plan` shows the plan)")


def input_line(prompt: str) -> str:
    """One line from stdin, the prompt on stderr (stdout may be a pipe)."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line
