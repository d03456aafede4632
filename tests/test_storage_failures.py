"""The journal's disk refuses writes while a run copies: one error line naming the journal,
no traceback, exit 3, nothing sent that the journal could not record; the next run (with
room again) settles what was sent and copies the rest, each copy once.

A full disk, portably: the run's file size limit (RLIMIT_FSIZE) is lowered, while it
runs, to the size its journal's files have then. Every later write that would grow a file
fails (EFBIG; Python ignores SIGXFSZ), which SQLite reports as it reports a full disk (an
I/O error on write). Root ignores permissions and CI has no small file system to fill;
a size limit works for everyone. The read-only state directory is in
test_setup_mistakes.py (a sysfs directory: no one may create files there)."""

from __future__ import annotations

import resource
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kit.resumekit import call_states, copy_job, journal_rows, read_report, start
from kit.runkit import run_manifest

SEED = {"seed": 53, "datastores": 1, "patients": 12, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 1, "frames_per_instance": 1}


def files_of(journal: Path) -> list[Path]:
    return [p for p in (Path(f"{journal}{s}") for s in ("", "-wal", "-shm")) if p.exists()]


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_a_journal_whose_disk_fills_up_mid_run_stops_the_run_in_one_line(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 18, "f")
    run = start(manifest, w.env, tmp_path, "full", "--rate", "CopyImageSet=4", "--no-skip-present",
                journal=journal, report=report)
    assert run.wait_until(lambda: call_states(journal)["ANSWERED"] + call_states(journal)["DONE"] >= 2)
    limit = max(p.stat().st_size for p in files_of(journal))
    resource.prlimit(run.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    assert run.wait(timeout=60) == 3, run.stderr()
    err = run.stderr()
    assert "Traceback" not in err, err
    assert f"the journal {journal} cannot be written" in err and "then run again" in err, err
    # nothing was sent that the journal does not know of
    w.wait_idle()
    sent = w.copies_requested() - before
    recorded = journal_rows(journal, "SELECT count(*) FROM calls")[0][0]
    assert 0 < sent <= recorded < len(rows), (sent, recorded)
    if report.exists():  # small enough to fit under the limit: what the journal knew
        statuses = Counter(r["status"] for r in read_report(report))
        assert set(statuses) <= {"SUCCEEDED", "NOT_RUN", "UNKNOWN"}, statuses
    # room again: the next run settles the calls sent and copies the rest, each once
    res = run_manifest(manifest, w.env, tmp_path, "--no-skip-present", journal=journal, report=report)
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} <= {"SUCCEEDED", "SKIPPED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)
