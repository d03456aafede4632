"""What to say about an option a command does not have: the option a newcomer meant.

click suggests any option whose name looks a bit like the one typed (`--retries` got
"Possible options: --fresh, --merge, --rate"). Here a typed name is first looked up among
the spellings other tools use for the same thing (the AWS CLI, rclone, s5cmd: `--dry-run`,
`--retries`, `--transfers`...), then compared, strictly, with the command's own options.
Pure: no typer, no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# the spelling other tools use -> what this project calls it (an option, or a command)
ALIASES: dict[str, str] = {
    "--dry-run": "plan", "--dryrun": "plan", "-n": "plan", "--what-if": "plan",
    "--retries": "--max-attempts", "--retry": "--max-attempts", "--max-retries": "--max-attempts",
    "--attempts": "--max-attempts", "--tries": "--max-attempts",
    "--transfers": "--max-in-flight", "--concurrency": "--max-in-flight",
    "--workers": "--max-in-flight", "--jobs": "--max-in-flight", "-j": "--max-in-flight",
    "--parallel": "--max-in-flight",
    "--tps": "--rate", "--rate-limit": "--rate", "--tpslimit": "--rate",
    "--output-file": "--report",
    "--continue": "--resume",
    "--restart": "--fresh",
}
_CUTOFF = 0.8  # difflib ratio: '--no-merges' -> '--no-merge' passes, '--retries' -> '--fresh' does not


def suggest(typed: str, options: Iterable[str], *, has_plan: bool = False) -> list[str]:
    """The options of the command (or "plan", when `has_plan`: the command is `run`) the user
    probably meant by `typed`, best first: the command's own look-alikes, then what other
    tools call the same thing."""
    have = [o for o in options if o.startswith("-")]
    found: list[str] = []

    def add(name: str) -> None:
        if name not in found and ((name == "plan" and has_plan) or name in have):
            found.append(name)

    for match in difflib.get_close_matches(typed, have, n=3, cutoff=_CUTOFF):
        add(match)
    if typed in ALIASES:
        add(ALIASES[typed])
    for match in difflib.get_close_matches(typed, list(ALIASES), n=3, cutoff=_CUTOFF):
        add(ALIASES[match])
    return found


def unknown_option_message(command: str, typed: str, options: Iterable[str]) -> str:
    """One line for `batchcopy COMMAND TYPED...` where COMMAND has no option TYPED."""
    hints = suggest(typed, options, has_plan=command.endswith(" run"))
    if hints and hints[0] == "plan":
        return (f"{command}: No such option: {typed}: there is no dry run of `run`; "
                "`batchcopy plan MANIFEST` shows what it would do (calls, merges, chains, "
                "time) and sends nothing")
    line = f"{command}: No such option: {typed}"
    if hints:
        line += f"; did you mean {' or '.join(hints)}?"
    return line + f" (see '{command} --help')"
