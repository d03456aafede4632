"""`batchcopy undo`: wire the undo together, like commands/run.py does a run.

    state     the one given (a state, a journal), or the one a report's summary names, or
              --state / BATCHCOPY_STATE / the state directory; its lock or lease (exit 4).
              The undo takes back the rows of the state's current manifest (its latest
              run's): a report of another manifest is refused (exit 2)
    preflight endpoint, profile, region, credentials (exit 2)
    holds     the image sets the undo will write, machine-wide (exit 4)
    plan      resume an unfinished plan as it is, or make one (reads only); --dry-run stops
              here; on a terminal, ask before changing anything (--yes skips); off a
              terminal without --yes: exit 2 before anything is read or changed
    execute   undo.UndoRunner, paced, journaled, signals as `run`
    report    one row per manifest row (undo/report.py)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.aws.preflight import SetupError
from batchcopy.console import logs
from batchcopy.console.stopsignals import stop_on_signals
from batchcopy.core.specs import ExitCode


@dataclass
class UndoOptions:
    source: str | None  # a state, a journal, or a report whose summary names its state
    report: str | None = None
    dry_run: bool = False
    yes: bool = False
    force: bool = False
    rates: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    max_attempts: int = 5
    stop_grace_s: float = 60.0
    poll_first_s: float = 1.0
    poll_max_s: float = 30.0
    reports_dir: Path = Path("reports")
    console: logs.ConsoleOptions = field(default_factory=logs.ConsoleOptions)
    state: str | None = None
    lease_ttl_s: float = 120.0


def say(msg: str, *, level: int = logs.NOTICE, event: str = "message", **fields: Any) -> None:
    logs.say(msg, level=level, event=event, **fields)


def run_undo(opts: UndoOptions) -> int:
    try:
        setup = opts.console.configure()
    except OSError as exc:
        print(f"batchcopy undo: --log-file: cannot open {opts.console.log_file}: "
              f"{exc.strerror or exc}", file=sys.stderr, flush=True)
        return ExitCode.USAGE
    try:
        return asyncio.run(_run(opts, setup))
    except SetupError as exc:
        say(f"batchcopy undo: {exc}", level=logging.ERROR, event="setup_error")
        return ExitCode.USAGE
    finally:
        setup.close()


def state_of(source: str | None, state: str | None) -> tuple[Any, str | None]:
    """(the state to undo, the manifest a report SOURCE is of, if it says)."""
    from batchcopy.report.source import ReportError, locate
    from batchcopy.journal.state import source_location
    from batchcopy.report.summary import summary_path

    if source and source.lower().endswith((".parquet", ".pq")):
        summary = Path(summary_path(source))
        try:
            found = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = {}
        named = found.get("state") or found.get("journal")
        location = source_location(named) if named else None
        if location is None:
            raise SetupError(f"{source}: its summary ({summary}) does not name the run's state; "
                             "give the state (or journal) instead")
        return location, found.get("manifest")
    try:
        location = locate(source, state)
    except ReportError as exc:
        raise SetupError(str(exc)) from None
    if location is None:
        raise SetupError(f"{source} is neither a state nor a report")
    return location, None


async def _run(opts: UndoOptions, setup: logs.LogSetup) -> int:
    import sqlite3

    from batchcopy.aws import preflight
    from batchcopy.console.confirm import at_terminal
    from batchcopy.journal.holds import HeldElsewhere, Holds, state_unwritable
    from batchcopy.journal.lease import Holder
    from batchcopy.journal.state import (StateError, StateLocked, StateUnavailable,
                                         open_for_writing)

    if not (opts.dry_run or opts.yes or at_terminal()):
        raise SetupError("undo reverts and deletes image sets, and off a terminal it cannot "
                         "ask: pass --yes to go ahead (see the plan first with --dry-run); "
                         "nothing was changed")
    preflight.check_endpoint(opts.endpoint_url)
    region = preflight.check_aws(opts.profile, opts.region)
    endpoint = preflight.resolve_endpoint(opts.profile, region, opts.endpoint_url)
    location, manifest = state_of(opts.source, opts.state)
    try:
        opened = open_for_writing(location, Holder("undo", manifest or str(location)),
                                  lease_ttl_s=opts.lease_ttl_s, profile=opts.profile,
                                  create=False)
    except StateLocked as exc:
        say(f"batchcopy undo: {exc}; not starting", level=logging.ERROR, event="locked")
        return ExitCode.LOCKED
    except (StateError, StateUnavailable) as exc:
        raise SetupError(str(exc)) from None
    journal = opened.journal
    where = location.url if location.kind == "s3" else str(journal.path)
    try:
        latest = (journal.run_record() or {}).get("manifest")
        if latest is None:
            raise SetupError(f"the state {where} holds no run: nothing to undo")
        if manifest is not None and manifest != latest:
            raise SetupError(
                f"the state {where} last ran {latest}, not {manifest} (the manifest of "
                f"{opts.source}): undo takes back the rows of a state's latest manifest; run "
                f"`batchcopy run {manifest}` against it first (rows done are not copied again)")
        from batchcopy.journal.undo import UndoStore

        store = UndoStore(journal)
        targets = {(c.request.datastore_id, c.result_image_set_id) for c in store.done_calls()}
        unfinished = store.unfinished_plan()
        if unfinished is not None:
            targets |= {(a.action.datastore_id, a.action.image_set_id)
                        for a in store.actions(unfinished)}
        try:
            holds = Holds()
            if not opts.dry_run:
                holds.acquire(f"{region}|{endpoint.url}", sorted(targets),
                              manifest=f"undo of {where}", journal=where)
        except (OSError, sqlite3.Error) as exc:
            raise SetupError(state_unwritable(exc)) from None
        except HeldElsewhere as exc:
            say(f"batchcopy undo: another batchcopy run on this machine holds image sets this "
                f"undo would change: {exc}. Not starting", level=logging.ERROR, event="locked")
            return ExitCode.LOCKED
        try:
            return await _with_client(opts, journal, store, unfinished, region, location,
                                      setup)
        finally:
            holds.release()
    finally:
        opened.close()


async def _with_client(opts: UndoOptions, journal: Any, store: Any, unfinished: int | None,
                       region: str, location: Any, setup: logs.LogSetup) -> int:
    from batchcopy.aws.client import ClientSettings, ImagingApi, open_client
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.undo.apply import UndoRunner, UndoSettings, make_plan
    from batchcopy.undo.report import describe_plan, write_undo_report
    from batchcopy.run.waiter import CopyWaiter

    settings = UndoSettings(force=opts.force, max_attempts=opts.max_attempts,
                            stop_grace_s=opts.stop_grace_s)
    limiter = RateLimiter(opts.rates)
    async with open_client(ClientSettings(endpoint_url=opts.endpoint_url, region=region,
                                          profile=opts.profile)) as client:
        api = ImagingApi(client, limiter, max_attempts=opts.max_attempts)
        if unfinished is None:
            actions = await make_plan(api, store, force=opts.force)
            say(describe_plan(actions))
            if opts.dry_run:
                say("batchcopy undo: --dry-run: nothing was changed")
                return ExitCode.OK
            if not actions:
                say("batchcopy undo: nothing to undo")
                return ExitCode.OK
            if not opts.yes:  # on a terminal (checked before anything was read)
                from batchcopy.console.confirm import asked

                if not asked("Proceed? [y/N] "):
                    say("batchcopy undo: not confirmed; nothing was changed")
                    return ExitCode.USAGE
            plan_id = store.store_plan(actions)
        else:
            plan_id = unfinished  # asked when it was made
            if opts.dry_run:
                say(describe_plan([a.action for a in store.actions(plan_id)]))
                say("batchcopy undo: an undo of this journal is unfinished; --dry-run: nothing "
                    "was changed")
                return ExitCode.OK
            say(f"batchcopy undo: resuming the unfinished undo of {location}")
        from batchcopy.console.tally import Tally
        from batchcopy.core.callstate import ACTION_FINAL

        actions = store.actions(plan_id)
        display = Tally(len(actions), noun="changes", verb="made",
                        mode=logs.display_mode(opts.console.progress, setup),
                        interval_s=opts.console.log_interval_s, console=setup.console)
        for stored in actions:  # done by an earlier, interrupted undo
            if stored.state in ACTION_FINAL:
                display.finished(stored.state.value)
        counts: Counter[str] = Counter()

        def finished(state: str) -> None:
            counts.update([state])
            display.finished(state)

        waiter = CopyWaiter(api, first_poll_s=opts.poll_first_s, max_interval_s=opts.poll_max_s)
        runner = UndoRunner(api, store, waiter, settings, on_finished=finished)
        started = time.monotonic()
        journal.start_writer()
        say(f"batchcopy undo: {len(actions)} change(s) to make, paced at "
            f"UpdateImageSetMetadata {limiter.configured()['UpdateImageSetMetadata'][0]:g}/s and "
            f"DeleteImageSet {limiter.configured()['DeleteImageSet'][0]:g}/s",
            event="undo_started", changes=len(actions), journal=str(location))
        display.start()
        try:
            with stop_on_signals(asyncio.get_running_loop(),
                                 lambda: runner.request_stop("interrupted"),
                                 "stopping; changes in flight finish"):
                await runner.run(actions)
        finally:
            display.close()
            journal.stop_writer()
    report = opts.report or str(opts.reports_dir / (
        f"{location.name}-undo-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.parquet"))
    by_status = write_undo_report(journal, store, plan_id, report)
    say(f"batchcopy undo: {sum(by_status.values())} rows: "
        + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        + f"; {time.monotonic() - started:.1f}s\n  report: {report}", event="summary",
        by_status=dict(by_status), report=report)
    if runner.stop_reason == "aborted":
        say(f"batchcopy undo: aborted: {runner.abort_message}", level=logging.ERROR,
            event="aborted")
        return ExitCode.ABORTED
    if runner.stop_reason == "interrupted":
        say(f"batchcopy undo: interrupted; run `batchcopy undo {opts.source or location}` again "
            "to finish", event="interrupted")
        return ExitCode.INTERRUPTED
    left = {s: n for s, n in by_status.items() if s not in ("SUCCEEDED", "SKIPPED")}
    if left:
        say("batchcopy undo: rows left as CONFLICT keep what was written since the run (see "
            "the report's evidence); UNKNOWN or NOT_RUN rows finish with the same command"
            + ("; FAILED rows: the service refused the revert or delete (error_message), and "
               "undo cannot restore those image sets" if left.get("FAILED") else ""))
    return ExitCode.ROWS_FAILED if left else ExitCode.OK
