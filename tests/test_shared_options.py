"""One set of logging, progress and AWS options on every command that talks to AWS or runs
long (run, verify, undo), defined once; verify and undo log to a file as JSON and show
progress; an option from the environment reaches the run (BATCHCOPY_LOG_FORMAT=json: every
line JSON). Over real HTTP against the emulator, the CLI in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchcopy.cli.root import build
from kit.resumekit import distinct_copies, seed_world
from kit.runkit import run_cli, run_manifest, write_manifest

SEED = {"seed": 5, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 1, "frames_per_instance": 1}
SHARED = ("--log-format", "--log-file", "--log-level", "-v", "--debug", "--quiet",
          "--progress", "--log-interval", "--endpoint-url", "--region", "--profile", "--config")
UNDO_FAST = ["--rate", "UpdateImageSetMetadata=20", "--rate", "DeleteImageSet=20",
             "--poll-first", "0.02", "--poll-max", "0.2"]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of `text` as JSON (a line that is not fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_run_verify_and_undo_take_the_same_options_with_the_same_help() -> None:
    tree = build()
    helps: dict[str, set[str]] = {}
    for name in ("run", "verify", "undo", "select"):
        params = {opt: p for p in tree.commands[name].params for opt in p.opts}
        assert set(SHARED) <= set(params), (name, set(SHARED) - set(params))
        for opt in SHARED[:-1]:  # --config names the command's own section
            helps.setdefault(opt, set()).add(params[opt].help)
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_verify_and_undo_log_json_lines_to_a_file_and_show_progress(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest = write_manifest(tmp_path / "m.csv", distinct_copies(w, 4))
    ran = run_manifest(manifest, w.env, tmp_path)
    assert ran.code == 0, ran.stderr
    w.wait_idle()
    # verify, quietly, its log into a file as JSON
    log = tmp_path / "verify.jsonl"
    res = run_cli(["verify", str(ran.report), "--out", str(tmp_path / "v.parquet"),
                   "--log-format", "json", "--log-file", str(log), "--quiet", "-v"], w.env,
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = json_lines(log.read_text())
    events = [line["event"] for line in lines]
    assert events[0] == "verify_started" and events[-1] == "verify_summary", events
    assert sorted(line["row_id"] for line in lines if line["event"] == "verified") == \
        sorted(r["row_id"] for r in ran.rows())
    assert "stats" not in events and "rows checked" not in res.stderr  # --quiet
    # verify with stats lines: the rows checked of the rows to check
    res = run_cli(["verify", str(ran.report), "--out", str(tmp_path / "v2.parquet"),
                   "--progress", "log", "--log-interval", "0.1"], w.env, cwd=tmp_path)
    assert res.returncode == 0 and "4/4 rows checked (succeeded 4)" in res.stderr, res.stderr
    # undo, quietly, its log into a file as JSON
    log = tmp_path / "undo.jsonl"
    res = run_cli(["undo", str(ran.report), "--yes", "--report", str(tmp_path / "u.parquet"),
                   *UNDO_FAST, "--log-format", "json", "--log-file", str(log), "--quiet"],
                  w.env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = json_lines(log.read_text())
    events = [line["event"] for line in lines]
    assert "undo_started" in events and events[-1] == "summary", events
    assert lines[-1]["by_status"] == {"SUCCEEDED": 4}
    assert "stats" not in events


def test_undo_shows_its_progress(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    ran = run_manifest(write_manifest(tmp_path / "m.csv", distinct_copies(w, 3)), w.env, tmp_path)
    assert ran.code == 0, ran.stderr
    w.wait_idle()
    res = run_cli(["undo", str(ran.report), "--yes", "--report", str(tmp_path / "u.parquet"),
                   *UNDO_FAST, "--progress", "log", "--log-interval", "0.1"], w.env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3/3 changes made (done 3)" in res.stderr, res.stderr


def test_an_option_from_the_environment_makes_every_line_of_a_run_json(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    rows = distinct_copies(w, 3)
    rows.append({**rows[0], "row_id": "absent", "source_image_set_id": "f" * 32})  # fails
    ran = run_manifest(write_manifest(tmp_path / "m.csv", rows), {**w.env,
                       "BATCHCOPY_LOG_FORMAT": "json"}, tmp_path)
    assert ran.code == 1, ran.stderr
    lines = json_lines(ran.stdout) + json_lines(ran.stderr)
    events = {line["event"] for line in lines}
    assert {"run_started", "stats", "row", "summary"} <= events, events
    assert ran.summary()["options"]["log_format"] == "json"
