"""What `batchcopy run` tells its user and their log shipper, over real HTTP against the
emulator: JSON log lines with run and row ids, timestamped text, API calls at debug level
without secrets, truthful live counts (a stop: rows done never counts rows not run; the
achieved rate counts accepted calls only), next steps, and the confirmation question
(asked on a terminal only: a pseudo-terminal here)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kit.resumekit import distinct_copies, journal_rows, read_report, seed_world, start
from kit.runkit import FAST, run_manifest, write_manifest

SEED = {"seed": 31, "datastores": 1, "patients": 12, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 1, "frames_per_instance": 1}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (NOTICE|WARNING|ERROR|INFO|DEBUG)\s")
SECRET = "sekrit-never-in-a-log"


def job(emulator: Any, client_env: dict[str, str], tmp_path: Path, n: int) -> tuple[Any, list[dict[str, Any]], Path]:
    w = seed_world(emulator, client_env, SEED)
    rows = distinct_copies(w, n)
    return w, rows, write_manifest(tmp_path / "m.csv", rows)


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# the emulator does not throttle here: on a loaded machine a throttled send is resent as a
# new call, and this test counts calls exactly (pacing has tests of its own)
@pytest.mark.emulator_config(enforce_rates=False)
def test_json_log_lines_carry_the_run_id_row_ids_and_api_calls_without_secrets(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest = job(emulator, client_env, tmp_path, 6)
    log = tmp_path / "run.jsonl"
    res = run_manifest(manifest, {**w.env, "AWS_SECRET_ACCESS_KEY": SECRET}, tmp_path,
                       "--log-format", "json", "--log-file", str(log), "--debug")
    assert res.code == 0, res.stderr
    lines = records(log.read_text())
    run_id = journal_rows(res.journal, "SELECT max(run_id) FROM runs")[0][0]
    assert lines and all(r["run_id"] == run_id for r in lines)
    assert all({"time", "level", "event", "message"} <= r.keys() for r in lines)
    assert lines[0]["event"] == "run_started" and lines[-1]["event"] == "summary"
    by_row = {r["row_id"]: r for r in lines if r["event"] == "row"}
    report = {r["row_id"]: r for r in res.rows()}
    assert set(by_row) == set(report) == {r["row_id"] for r in rows}
    for row_id, line in by_row.items():
        assert line["status"] == report[row_id]["status"] == "SUCCEEDED"
        assert str(line["call_id"]) == str(report[row_id]["call_id"]) and line["latency_ms"] > 0
    sent = {r["call_id"] for r in lines if r["event"] == "call_sent"}
    assert {str(c) for c in sent} == {str(r["call_id"]) for r in report.values()}
    api = [r for r in lines if r["event"] == "api"]
    copies = [r for r in api if r["operation"] == "CopyImageSet"]
    assert len(copies) == w.copy_calls() == len(rows)
    assert {r["call_id"] for r in copies} == sent  # each request names the call it carried
    assert all(r["http_status"] == 200 and r["latency_ms"] >= 0 for r in api)
    assert {"GetImageSet", "CopyImageSet"} <= {r["operation"] for r in api}
    text = log.read_text()
    assert SECRET not in text and "Authorization" not in text and "Signature" not in text
    stats = [r for r in lines if r["event"] == "stats"]
    assert stats and stats[-1]["final"] and stats[-1]["rows_done"] == len(rows)
    # the terminal kept the summary, stamped (it is not one)
    assert res.stderr and all(STAMP.match(line) for line in res.stderr.splitlines())
    assert "6 rows from" in res.stderr and '"event"' not in res.stderr


@pytest.mark.emulator_config(faults=[{"kind": "throttle", "operation": "CopyImageSet",
                                      "probability": 0.4}], fault_seed=3)
def test_text_log_off_a_terminal_is_stamped_warns_per_failed_row_and_says_what_next(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    rows = distinct_copies(w, 8)
    rows.append({"row_id": "ghost", "datastore_id": w.ds, "source_image_set_id": "9" * 32})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    res = run_manifest(manifest, w.env, tmp_path, "--log-interval", "0.1")
    assert res.code == 1, res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), res.stderr
    ghost = [line for line in lines if "row ghost" in line]
    assert len(ghost) == 1 and " WARNING " in ghost[0] and "FAILED" in ghost[0]
    assert "ResourceNotFoundException" in ghost[0]
    statuses = Counter(r["status"] for r in res.rows())
    assert statuses == Counter({"SUCCEEDED": 8, "FAILED": 1})
    final = [line for line in lines if "rows done" in line][-1]
    assert "9/9 rows done (succeeded 8, failed 1)" in final
    # the rate counts accepted calls only: throttled attempts are no copies
    summary = res.summary()
    throttled = summary["api"]["throttles"].get("CopyImageSet", 0)
    assert throttled >= 1 and summary["copy_calls"] == summary["accepted_copy_calls"] + throttled
    assert summary["accepted_copy_calls"] == w.copies_requested() == 8
    assert f"throttles {throttled}" in final
    # next steps: the failed row stays FAILED on a rerun; how to see why, how to retry
    assert summary["command"].startswith("batchcopy run ") and str(manifest) in summary["command"]
    text = res.stderr
    assert "1 FAILED: the service's final answer" in text
    assert f"batchcopy report {res.report}" in text
    assert f"batchcopy report {res.journal} --failed-manifest failed.csv" in text
    assert "to continue" not in text  # nothing is left for a rerun


def test_one_failed_row_is_at_most_two_warnings_and_an_earlier_failure_is_not_alerted_again(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    rows = distinct_copies(w, 5)
    rows.insert(2, {"row_id": "ghost", "datastore_id": w.ds, "source_image_set_id": "9" * 32})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    res = run_manifest(manifest, w.env, tmp_path)
    assert res.code == 1, res.stderr
    warnings = [line for line in res.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) <= 2, warnings  # the row's own line, and the one line to alert on
    assert "1 of 6 rows not done in this run (1 FAILED)" in warnings[-1]
    assert f"batchcopy report {res.report}" in warnings[-1]
    assert any(" NOTICE " in line and "6 rows from" in line for line in res.stderr.splitlines())
    # the same command again (cron): no call, the old failure named but not alerted: exit 0
    calls = w.api_calls()
    log = tmp_path / "again.jsonl"
    again = run_manifest(manifest, w.env, tmp_path, "--log-format", "json", "--log-file", str(log))
    assert again.code == 0, again.stderr
    assert w.api_calls() == calls
    assert " WARNING " not in again.stderr
    assert "1 FAILED from earlier runs: not retried, not in the exit code" in again.stderr
    (summary,) = [r for r in records(log.read_text()) if r["event"] == "summary"]
    assert summary["summary"]["earlier_runs_left"] == {"FAILED": 1}
    assert summary["summary"]["exit_code"] == 0 and again.summary()["earlier_runs_left"] == {"FAILED": 1}


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_a_stop_leaves_rows_not_run_out_of_the_done_count_and_says_how_to_continue(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest = job(emulator, client_env, tmp_path, 18)
    before = w.copies_requested()
    journal, report = tmp_path / "s.journal.sqlite", tmp_path / "s.parquet"
    run = start(manifest, w.env, tmp_path, "stop", "--rate", "CopyImageSet=4", "--fresh",
                "--log-format", "json", "--log-interval", "0.1", journal=journal, report=report)
    assert run.wait_until(lambda: w.copies_requested() >= before + 3)
    run.signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130, run.stderr()
    lines = records(run.stderr())
    out = Counter(r["status"] for r in read_report(report))
    assert out["NOT_RUN"] >= 1 and set(out) <= {"SUCCEEDED", "NOT_RUN"}
    stats = [r for r in lines if r["event"] == "stats"]
    final = stats[-1]
    assert final["final"] is True
    assert final["rows_done"] == out["SUCCEEDED"] < final["rows_total"] == len(rows)
    assert final["left"] == {"not_run": out["NOT_RUN"]}
    assert all(r["rows_done"] <= out["SUCCEEDED"] for r in stats)  # never counted not-run rows
    assert final["copy_calls_accepted"] == w.copies_requested() - before
    stopping = [r for r in stats if r["stopping"]]
    assert all(r["eta_s"] is None for r in stopping)  # no time left is promised after a stop
    assert any(r["eta_s"] for r in stats if not r["stopping"] and r["queued"])
    summary = [r for r in lines if r["event"] == "summary"][-1]
    steps = "\n".join(summary["next_steps"])
    assert f"to continue ({out['NOT_RUN']} NOT_RUN: the run was interrupted)" in steps
    assert "batchcopy run " + str(manifest) in steps and "--fresh" not in steps
    # the command it gives continues the manifest: rows done are skipped
    again = run_manifest(manifest, w.env, tmp_path, "--rate", "CopyImageSet=20",
                         journal=journal, report=report)
    assert again.code == 0, again.stderr
    assert Counter(r["status"] for r in again.rows()) == Counter(
        {"SKIPPED": out["SUCCEEDED"], "SUCCEEDED": out["NOT_RUN"]})
    assert f"18/18 rows done (succeeded {out['NOT_RUN']}, {out['SUCCEEDED']} before this run)" \
        in again.stderr


# ---- confirmation ------------------------------------------------------------------------
def on_terminal(args: list[str], env: dict[str, str], cwd: Path, *,
                answer: str | None = None, limit_s: float = 90,
                size: tuple[int, int] = (40, 120)) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal of `size` (lines,
    columns); type `answer` when asked. The exit code and everything it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "batchcopy", *args], stdin=slave,
                            stdout=slave, stderr=slave, cwd=cwd, env={**os.environ, **env})
    os.close(slave)
    out, answered = b"", False
    deadline = time.monotonic() + limit_s
    try:
        while True:
            assert time.monotonic() < deadline, out.decode(errors="replace")
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has gone
                    break
                if not chunk:
                    break
                out += chunk
            if answer is not None and not answered and b"[y/N]" in out:
                os.write(master, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_a_large_run_on_a_terminal_asks_first_and_no_sends_nothing(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest = job(emulator, client_env, tmp_path, 6)
    journal = tmp_path / "c.journal.sqlite"
    args = ["run", str(manifest), "--journal", str(journal), "--report",
            str(tmp_path / "c.parquet"), *FAST, "--progress", "auto", "--confirm-above", "5"]
    code, said = on_terminal(args, w.env, tmp_path, answer="n")
    assert "Start copying? [y/N]" in said
    assert "6 rows to copy: 6 CopyImageSet calls" in said and "at 20 calls/s" in said
    assert code == 2 and "not confirmed: nothing was sent" in said
    assert w.copy_calls() == 0 and not journal.exists()
    code, said = on_terminal(args, w.env, tmp_path, answer="y")
    assert code == 0, said
    assert "6 rows from" in said and w.copies_requested() == len(rows)


def test_no_question_off_a_terminal_or_with_yes_or_below_the_threshold(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest = job(emulator, client_env, tmp_path, 6)
    piped = run_manifest(manifest, w.env, tmp_path, "--confirm-above", "0",
                         journal=tmp_path / "a.sqlite", report=tmp_path / "a.parquet")
    assert piped.code == 0, piped.stderr
    assert "[y/N]" not in piped.stderr and "Start copying" not in piped.stderr
    for extra, journal in ((["--confirm-above", "0", "--yes"], "b"), (["--confirm-above", "6"], "c")):
        code, said = on_terminal(["run", str(manifest), "--journal", str(tmp_path / journal),
                                  "--report", str(tmp_path / f"{journal}.parquet"), *FAST,
                                  "--fresh", *extra], w.env, tmp_path)
        assert code == 0 and "[y/N]" not in said, said


# ---- the bar on a terminal of any size ----------------------------------------------------
def bar_frames(said: str) -> list[str]:
    """Every frame of the bar as drawn (tqdm redraws with a carriage return)."""
    frames = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", said))
    return [f for f in frames if "rows [" in f and f.count("|") >= 2]


@pytest.mark.emulator_config(copy_base_s=30.0)
def test_at_80_columns_the_bar_keeps_its_width_and_the_figures_give_way(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest = job(emulator, client_env, tmp_path, 12)
    args = ["run", str(manifest), "--journal", str(tmp_path / "b.sqlite"), "--report",
            str(tmp_path / "b.parquet"), *FAST, "--rate", "CopyImageSet=4", "--progress", "bar"]
    code, said = on_terminal(args, w.env, tmp_path, size=(24, 80))
    assert code == 0, said
    frames = bar_frames(said)
    assert len(frames) >= 2, said
    for frame in frames:
        bar = frame.split("|")[1]
        assert len(bar) >= 20 and len(frame.rstrip()) <= 80, frame
    assert any("in flight" in f for f in frames)  # figures still shown where they fit


def test_a_zero_size_terminal_gets_stats_lines(emulator: Any, client_env: dict[str, str],
                                               tmp_path: Path) -> None:
    """`docker exec -t`: a terminal, 0 columns and 0 lines until someone sets them."""
    w, rows, manifest = job(emulator, client_env, tmp_path, 6)
    args = ["run", str(manifest), "--journal", str(tmp_path / "z.sqlite"), "--report",
            str(tmp_path / "z.parquet"), *FAST[:-4], "--log-interval", "0.2"]
    code, said = on_terminal(args, {**w.env, "COLUMNS": "0", "LINES": "0"}, tmp_path, size=(0, 0))
    assert code == 0, said
    stats = [line for line in said.splitlines() if "rows done" in line]
    assert stats and "6/6 rows done" in stats[-1] and STAMP.match(stats[-1].strip()), said
    assert not bar_frames(said)


def test_verify_and_undo_progress_on_a_zero_size_terminal_is_stats_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from batchcopy.console.progress import Progress
    from batchcopy.console.tally import Tally

    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        monkeypatch.setenv("COLUMNS", "0")
        with os.fdopen(os.dup(slave), "w") as stream:
            assert Tally(3, noun="rows", verb="checked", mode="bar", stream=stream).mode == "log"
            progress = Progress(3, mode="bar", stream=stream)
            assert (progress.mode, progress.stats_lines) == ("log", True)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert Tally(3, noun="rows", verb="checked", mode="bar", stream=stream).mode == "bar"
    finally:
        os.close(master)
        os.close(slave)
