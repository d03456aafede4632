"""The run lock (exit 4, no stale lock after kill -9) and graceful stops (SIGTERM, or SIGHUP
from a dropped terminal: stop dispatching, let copies in flight finish, report, exit 130; a
second signal exits at once).

The real CLI in a subprocess against the emulator in this process."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batchcopy.journal.journal import Journal
from kit.resumekit import (OnATerminal, call_states, copy_job, distinct_copies, journal_rows,
                       read_report, read_summary, run_args, runs_started, seed_world, start)
from conftest import control_call
from kit.runkit import run_cli, run_manifest, write_manifest

SEED = {"seed": 31, "datastores": 1, "patients": 12, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 1, "frames_per_instance": 1}
PACED = ("--rate", "CopyImageSet=4")  # 18 rows take 4.5 s to send: time to stop in between
# copies of 100 emulated hours (an hour of real time at 0.01): surely in flight while a run
# stops, however slow the machine; they end when the test moves the emulator's clock
HOUR = 360_000.0


def end_copies(w: Any) -> None:
    """End the hour-long copies; the copies of the next run last 20 ms."""
    w.emulator.update_config({"copy_base_s": 2.0})
    status, _ = control_call(w.emulator.endpoint, "POST", "/_emulator/clock", {"advance_s": 2 * HOUR})
    assert status == 200
    w.wait_idle()
    assert w.stats()["copies_in_flight"] == 0


def open_calls(journal: Path) -> int:
    c = call_states(journal)
    return c["SENT"] + c["AMBIGUOUS"] + c["ANSWERED"] + c["ADOPTED"]


# ---- the lock -------------------------------------------------------------------------------
def test_a_held_lock_makes_a_second_run_exit_4_and_send_nothing(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest = write_manifest(tmp_path / "m.csv", distinct_copies(w, 6))
    journal, report = tmp_path / "l.journal.sqlite", tmp_path / "l.parquet"
    holder = Journal(journal)
    holder.lock()
    try:
        before = w.api_calls()
        res = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
        assert res.code == 4, res.stderr
        assert "in use by another batchcopy run" in res.stderr
        assert f"pid {os.getpid()}" in res.stderr
        assert w.api_calls() == before and not report.exists() and runs_started(journal) == 0
        again = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
        assert again.code == 4 and w.api_calls() == before
    finally:
        holder.close()
    res = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_overlapping_runs_second_exits_4_and_kill_9_leaves_no_stale_lock(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 18, "o")
    first = start(manifest, w.env, tmp_path, "first", *PACED, journal=journal, report=report)
    assert first.wait_until(lambda: w.copies_requested() >= before + 2)
    # cron fires again while the first run is still copying
    second = run_cli(["run", str(manifest), "--journal", str(journal), "--report",
                      str(tmp_path / "second.parquet"), "--resume"], w.env, cwd=tmp_path)
    assert second.returncode == 4, second.stderr
    assert f"in use by another batchcopy run (pid {first.proc.pid} on host" in second.stderr
    assert first.alive and runs_started(journal) == 1  # the second never started a run
    first.kill()  # kill -9: the kernel drops the lock with the process
    third = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert third.code == 0, third.stderr
    out = third.rows()
    assert len(out) == len(rows) and {r["status"] for r in out} <= {"SUCCEEDED", "SKIPPED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)  # no copy made twice


# ---- graceful stop --------------------------------------------------------------------------
@pytest.mark.emulator_config(copy_base_s=50.0)
def test_sigterm_stops_dispatching_lets_copies_finish_then_resume_completes(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 18, "s")
    run = start(manifest, w.env, tmp_path, "stop", *PACED, journal=journal, report=report)
    assert run.wait_until(lambda: w.copies_requested() >= before + 3)
    run.signal(signal.SIGTERM)
    at_signal = w.copies_requested() - before
    assert run.wait(timeout=30) == 130, run.stderr()
    assert "SIGTERM: stopping" in run.stderr()
    out = read_report(report)
    assert [r["row_id"] for r in out] == [r["row_id"] for r in rows]
    statuses = Counter(r["status"] for r in out)
    assert set(statuses) <= {"SUCCEEDED", "NOT_RUN"}, statuses  # copies in flight finished
    # dispatching stopped at once: the 12 independent rows were all waiting for the copy
    # quota, none of them was sent after the signal (one request may have been on its way)
    assert statuses["SUCCEEDED"] <= at_signal + 1
    for r in out:
        if r["status"] == "NOT_RUN":
            assert r["call_id"] is None and "interrupted" in r["error_message"]
    # every copy the service made is reported; nothing was sent after the stop
    w.wait_idle()
    assert w.copies_requested() - before == statuses["SUCCEEDED"]
    assert open_calls(journal) == 0
    assert read_summary(report)["stop_reason"] == "interrupted"

    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert res.code == 0, res.stderr
    again = Counter(r["status"] for r in res.rows())
    assert again == Counter({"SKIPPED": statuses["SUCCEEDED"], "SUCCEEDED": statuses["NOT_RUN"]})
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)


@pytest.mark.emulator_config(copy_base_s=HOUR)
def test_stop_grace_zero_reports_copies_in_flight_unknown_and_resume_settles_them(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 6, "g")
    run = start(manifest, w.env, tmp_path, "grace", *PACED, "--stop-grace", "0",
                journal=journal, report=report)
    assert run.wait_until(lambda: call_states(journal)["ANSWERED"] >= 2)
    run.signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130, run.stderr()
    assert w.stats()["copies_in_flight"] >= 1  # it did not wait for the copies to end
    out = read_report(report)
    assert len(out) == len(rows)
    unknown = [r for r in out if r["status"] == "UNKNOWN"]
    assert len(unknown) >= 2 and all(r["call_id"] is not None for r in unknown)
    assert all("the next run of this manifest settles it" in r["evidence"] for r in unknown)
    assert {r["status"] for r in out} <= {"UNKNOWN", "NOT_RUN", "SUCCEEDED"}
    sent = w.copies_requested() - before
    assert sent == sum(r["status"] != "NOT_RUN" for r in out)

    end_copies(w)
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert res.code == 0, res.stderr
    settled = {r["row_id"]: r for r in res.rows()}
    for r in unknown:  # waited for, not sent again
        assert settled[r["row_id"]]["status"] == "SUCCEEDED"
        assert settled[r["row_id"]]["call_id"] == r["call_id"]
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)
    assert f"{len(rows)}/{len(rows)} rows done" in res.stderr  # settled rows counted once


@pytest.mark.emulator_config(copy_base_s=HOUR)
def test_a_second_signal_exits_at_once_and_the_journal_stays_consistent(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 6, "t")
    run = start(manifest, w.env, tmp_path, "twice", *PACED, journal=journal, report=report)
    assert run.wait_until(lambda: call_states(journal)["ANSWERED"] >= 2)
    run.signal(signal.SIGTERM)
    assert run.wait_until(lambda: "stopping" in run.stderr())
    run.signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 130
    assert w.stats()["copies_in_flight"] >= 1  # gone before its copies ended
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert journal_rows(journal, "SELECT exit_code FROM runs") == [(None,)]
    assert open_calls(journal) >= 2
    # the journal alone tells what happened: rows whose copy is open are UNKNOWN
    rebuilt = tmp_path / "rebuilt.parquet"
    rep = run_cli(["report", str(journal), "--out", str(rebuilt)], w.env, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    statuses = Counter(r["status"] for r in read_report(rebuilt))
    assert statuses["UNKNOWN"] == open_calls(journal) and statuses["SUCCEEDED"] == 0

    end_copies(w)
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)


@pytest.mark.emulator_config(copy_base_s=HOUR)
def test_a_stop_while_a_resumed_run_waits_for_earlier_copies_keeps_the_grace(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 6, "w")
    first = start(manifest, w.env, tmp_path, "first", *PACED, journal=journal, report=report)
    assert first.wait_until(lambda: call_states(journal)["ANSWERED"] >= 2)
    first.kill()
    # the resumed run first waits for the copies the killed one left running
    polls = w.stats()["calls"].get("GetImageSet", 0)
    second = start(manifest, w.env, tmp_path, "second", *PACED, "--stop-grace", "0",
                   journal=journal, report=report, resume=True)
    assert second.wait_until(lambda: runs_started(journal) == 2
                             and w.stats()["calls"].get("GetImageSet", 0) > polls)
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 130, second.stderr()
    assert w.stats()["copies_in_flight"] >= 1  # the grace (0 s) held while settling too
    statuses = Counter(r["status"] for r in read_report(report))
    assert statuses["UNKNOWN"] == open_calls(journal) >= 2  # still open, for the next resume
    assert statuses["UNKNOWN"] + statuses["NOT_RUN"] == len(rows)

    end_copies(w)
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)


def test_a_report_that_cannot_be_written_at_the_end_is_one_error_and_the_journal_rebuilds_it(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """The report's place is checked before the first call, but a disk can fill up (or the
    place vanish) while copies run: that is one error line naming the journal, exit 3,
    no traceback, and `batchcopy report JOURNAL --out` writes every row afterwards."""
    w, rows, manifest, journal, _, before = copy_job(emulator, client_env, tmp_path, SEED, 4, "r")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report = out_dir / "r.parquet"
    w.emulator.update_config({"copy_base_s": HOUR})
    run = start(manifest, w.env, tmp_path, "report-lost", journal=journal, report=report)
    assert run.wait_until(lambda: w.copies_requested() - before == len(rows))
    out_dir.rmdir()
    out_dir.write_text("a file where the report's directory was")
    end_copies(w)
    assert run.wait(timeout=60) == 3, run.stderr()
    err = run.stderr()
    assert "Traceback" not in err
    assert f"could not write the report {report}" in err and str(journal) in err, err
    assert f"batchcopy report {journal} --out" in err, err
    fixed = tmp_path / "fixed.parquet"
    res = run_cli(["report", str(journal), "--out", str(fixed)], w.env, cwd=tmp_path)
    assert res.returncode in (0, 1), res.stderr
    assert [r["row_id"] for r in read_report(fixed)] == [r["row_id"] for r in rows]
    assert {r["status"] for r in read_report(fixed)} == {"SUCCEEDED"}
    assert w.copies_requested() - before == len(rows)


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_a_dropped_terminal_sighup_stops_like_sigterm(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """The run's terminal goes away (an SSH session drops): the kernel sends SIGHUP and
    writes to the terminal fail from then on. The run stops as on SIGTERM: nothing sent
    after it, copies in flight finish, report written, exit 130; the next run completes."""
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, SEED, 18, "h")
    log = tmp_path / "h.log"
    # --verify: after the stop it checks the rows done, and says so on the (dead) terminal
    with OnATerminal(run_args(manifest, journal, report, *PACED, "--log-file", str(log),
                              "--progress", "bar", "--verify"), w.env, tmp_path) as run:
        assert run.wait_until(lambda: w.copies_requested() >= before + 3)
        run.hang_up()  # the terminal's master side closes: SIGHUP to the session
        at_signal = w.copies_requested() - before
        assert run.wait(timeout=60) == 130
    text = log.read_text()
    assert "SIGHUP: stopping" in text and "Traceback" not in text, text
    out = read_report(report)
    assert [r["row_id"] for r in out] == [r["row_id"] for r in rows]
    statuses = Counter(r["status"] for r in out)
    assert set(statuses) <= {"SUCCEEDED", "NOT_RUN"} and statuses["NOT_RUN"], statuses
    assert statuses["SUCCEEDED"] <= at_signal + 1
    w.wait_idle()
    assert w.copies_requested() - before == statuses["SUCCEEDED"]
    assert read_summary(report)["stop_reason"] == "interrupted"
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal, report=report)
    assert res.code == 0, res.stderr
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)
