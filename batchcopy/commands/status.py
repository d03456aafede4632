"""`batchcopy status [STATE_OR_JOURNAL]`: where a state's run stands, from any machine.

    holder    who holds the state now: an s3:// state's lease (host, pid, manifest, last
              renewal, expiry; S3's clock), or a local state's lock (a live process)
    ledger    read as it is (journal/state.py open_for_reading: an s3:// state is brought
              up to date in this machine's cache); the latest run's manifest, row by status
    figures   calls open (sent, not settled); the accepted copy rate over the run's latest
              200 accepted calls; the time left at that rate (rows left / rows per call /
              rate)

Text for people, `--output json` for scripts; exit 0 once read, 2 if the state cannot be.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DONE = ("SUCCEEDED", "SKIPPED", "FAILED")


class StatusError(Exception):
    """The state cannot be read: one line, exit 2."""


@dataclass
class StatusOptions:
    source: str | None = None
    state: str | None = None
    output: str = "text"  # text | json
    profile: str | None = None


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def holder_of(location: Any, profile: str | None) -> dict[str, Any] | None:
    """Who holds the state, or None: {"live", "host", "pid", "command", "manifest",
    "started_at", "renewed_at", "expires_at"} (times ISO-8601 UTC)."""
    if location.kind == "s3":
        from batchcopy.journal.lease import read_lease
        from batchcopy.journal.s3io import S3

        info = read_lease(S3(location.url, profile=profile))
        if info is None:
            return None
        h = info.holder
        return {"live": not info.expired, "host": h.host, "pid": h.pid, "command": h.command,
                "manifest": h.manifest, "started_at": iso(h.started_at),
                "renewed_at": iso(info.renewed_at), "expires_at": iso(info.expires_at)}
    from batchcopy.journal.locks import probe_lock

    text = probe_lock(Path(str(location.ledger) + ".lock"))
    if text is None:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        found = {"pid": text}
    if not isinstance(found, dict):
        found = {"pid": found}
    return {"live": True, "host": found.get("host"), "pid": found.get("pid"),
            "command": found.get("command", "run"), "manifest": found.get("manifest"),
            "started_at": iso(found.get("started_at")), "renewed_at": None, "expires_at": None}


def collect(journal: Any, location: Any, holder: dict[str, Any] | None) -> dict[str, Any]:
    run = journal.run_record()
    by_status = journal.manifest_statuses()
    rows = sum(by_status.values())
    left = sum(n for s, n in by_status.items() if s not in DONE)
    out: dict[str, Any] = {
        "state": location.url, "kind": location.kind, "rows": rows, "by_status": by_status,
        "rows_left": left, "calls_open": len(journal.open_calls()), "copy_rate_per_s": None,
        "rows_per_call": None, "time_left_s": None, "holder": holder, "run": None}
    if run is None:
        return out
    out["run"] = {"run_id": run["run_id"], "manifest": run["manifest"], "host": run.get("host"),
                  "pid": run["pid"], "started_at": iso(run["started_at"]),
                  "finished_at": iso(run["finished_at"]), "exit_code": run["exit_code"]}
    sends = journal.accepted_sends(run["run_id"])
    if len(sends) > 1 and sends[0] > sends[-1]:
        rate = (len(sends) - 1) / (sends[0] - sends[-1])
        per_call = journal.rows_per_call(run["run_id"]) or 1.0
        out.update(copy_rate_per_s=round(rate, 4), rows_per_call=round(per_call, 3))
        if run["finished_at"] is None and (holder or {}).get("live"):
            out["time_left_s"] = round(left / per_call / rate, 1)
    return out


def render(s: dict[str, Any]) -> str:
    from batchcopy.core.durations import human_duration

    lines = [f"state {s['state']}"]
    run = s["run"]
    if run is None:
        lines.append("no run yet")
    else:
        ended = (f"ended {run['finished_at'][:19].replace('T', ' ')} UTC, exit {run['exit_code']}"
                 if run["finished_at"] else "not ended (running, or stopped without an end)")
        lines.append(f"run {run['run_id']} of {run['manifest']} on host {run['host']} (pid "
                     f"{run['pid']}), started {run['started_at'][:19].replace('T', ' ')} UTC; "
                     f"{ended}")
        counts = ", ".join(f"{n:,} {st}" for st, n in sorted(s["by_status"].items()))
        lines.append(f"rows of its manifest: {s['rows']:,} ({counts}); {s['rows_left']:,} left")
    lines.append(f"calls open (sent, not settled): {s['calls_open']:,}")
    if s["copy_rate_per_s"] is not None:
        line = (f"accepted copy rate: {s['copy_rate_per_s']:g}/s ({s['rows_per_call']:g} "
                f"rows per call)")
        if s["time_left_s"] is not None:
            line += f"; time left at that rate: about {human_duration(s['time_left_s'])}"
        lines.append(line)
    h = s["holder"]
    if h is None:
        lines.append("held by: nobody (no run is live)")
    else:
        who = (f"the {h['command']} of {h['manifest']} on host {h['host']} (pid {h['pid']}"
               + (f", started {h['started_at'][:19].replace('T', ' ')} UTC" if h["started_at"] else "")
               + ")")
        if s["kind"] != "s3":
            lines.append(f"held by: {who}")
        else:
            when = (f"lease renewed {h['renewed_at'][:19].replace('T', ' ')} UTC, "
                    f"{'expires' if h['live'] else 'expired'} {h['expires_at'][:19].replace('T', ' ')} UTC")
            lines.append(f"held by: {who}; {when}" if h["live"] else
                         f"held by: nobody live ({who} left a lease that {when.split(', ')[1]}: "
                         "the next run takes it over)")
    return "\n".join(lines)


def run(opts: StatusOptions) -> int:
    from batchcopy.report.source import ReportError, locate
    from batchcopy.journal.s3io import StateError, StateUnavailable
    from batchcopy.journal.state import open_for_reading

    try:
        location = locate(opts.source, opts.state)
    except ReportError as exc:
        raise StatusError(str(exc)) from None
    if location is None:
        raise StatusError(f"{opts.source} is a report, not a state: `batchcopy report "
                          f"{opts.source}` reads it")
    started = time.monotonic()
    try:
        opened = open_for_reading(location, profile=opts.profile)
        holder = holder_of(location, opts.profile)
    except (StateError, StateUnavailable) as exc:
        raise StatusError(str(exc)) from None
    try:
        found = collect(opened.journal, location, holder)
        if opened.log is not None:  # what reading the state cost this machine
            found["read"] = {**opened.figures(), "seconds": round(time.monotonic() - started, 3)}
    finally:
        opened.close()
    found["read_at"] = iso(time.time())
    if opts.output == "json":
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(found))
    return 0
