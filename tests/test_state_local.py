"""A state directory holds one ledger keyed by what rows copy, not by the manifest's name:
a renamed or dated manifest skips what is done; `--fresh` takes the lock before touching
anything; a ledger is never seen half-built; names derived from a manifest stay short and
printable; journals of earlier versions are imported, not forgotten.

Runs are the real CLI (in this process where no second process is needed) against the
emulator; a live run is a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchcopy.cli import root as cli
from kit.resumekit import Running, distinct_copies, journal_rows, read_report, seed_world
from kit.runkit import FAST, write_manifest

SEED = {"seed": 43, "datastores": 1, "patients": 6, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 1, "frames_per_instance": 1}


def run_here(*args: str) -> tuple[int, str]:
    """`batchcopy run ...` in this process: (exit code, what it printed)."""
    result = CliRunner().invoke(cli.app, ["run", *args, *FAST], prog_name="batchcopy")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def world(emulator: Any, env: dict[str, str], tmp: Path, n: int = 6) -> tuple[Any, Path]:
    w = seed_world(emulator, env, SEED)
    return w, write_manifest(tmp / "nightly.csv", distinct_copies(w, n))


def test_a_manifest_under_a_new_name_makes_no_call(emulator: Any, client_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    """A dated copy of last night's manifest, a regenerated one (rows reordered, ids and
    extra columns renamed): the state's ledger knows the copies, 0 CopyImageSet calls."""
    w, manifest = world(emulator, client_env, tmp_path)
    code, out = run_here(str(manifest), "--report", str(tmp_path / "first.parquet"))
    assert code == 0, out
    copies = w.copy_calls()
    assert w.copies_requested() == 6
    dated = tmp_path / "nightly-2026-12-07.csv"
    shutil.copy(manifest, dated)
    code, out = run_here(str(dated), "--report", str(tmp_path / "dated.parquet"))
    assert code == 0, out
    assert w.copy_calls() == copies
    rows = read_report(tmp_path / "dated.parquet")
    assert {r["status"] for r in rows} == {"SKIPPED"}
    assert all("done in run 1" in r["evidence"] for r in rows)
    regenerated = list(reversed(distinct_copies(w, 6, prefix="again-")))
    (tmp_path / "export").mkdir()
    other = write_manifest(tmp_path / "export" / "copies.csv", regenerated)
    code, out = run_here(str(other), "--report", str(tmp_path / "regenerated.parquet"))
    assert code == 0, out
    assert w.copy_calls() == copies
    assert [r["row_id"] for r in read_report(tmp_path / "regenerated.parquet")] == \
        [r["row_id"] for r in regenerated]
    # the default state, read with no SOURCE: its latest run's manifest
    shown = CliRunner().invoke(cli.app, ["report", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["by_status"]["SKIPPED"] == 6
    seen = CliRunner().invoke(cli.app, ["status"])
    assert seen.exit_code == 0 and "held by: nobody" in seen.output, seen.output
    assert "run 3 of " + str(other) in seen.output


# copies that last until the test moves the emulator's clock: the first run is surely live
@pytest.mark.emulator_config(copy_base_s=1e6)
def test_fresh_beside_a_live_run_exits_4_and_touches_nothing(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """Before, --fresh renamed the live run's journal first, then found the lock taken: the
    live run wrote on into the renamed file, and the next plain run copied every row again."""
    w, manifest = world(emulator, client_env, tmp_path)
    ledger = tmp_path / "cron.journal.sqlite"
    live = Running(["run", str(manifest), "--journal", str(ledger), "--report",
                    str(tmp_path / "live.parquet"), *FAST], w.env, tmp_path, "live")
    assert live.wait_until(lambda: w.copy_calls() >= 6 and len(journal_rows(
        ledger, "SELECT 1 FROM calls WHERE state = 'ANSWERED'")) >= 6)
    before = sorted(journal_rows(ledger, "SELECT key, status, call_id FROM rows"))
    copies = w.copy_calls()
    code, out = run_here(str(manifest), "--fresh", "--journal", str(ledger), "--report",
                         str(tmp_path / "fresh.parquet"))
    assert code == 4, out
    assert "in use by another batchcopy run" in out and f"pid {live.proc.pid}" in out
    assert w.copy_calls() == copies and not (tmp_path / "fresh.parquet").exists()
    assert sorted(journal_rows(ledger, "SELECT key, status, call_id FROM rows")) == before
    assert not list(ledger.parent.glob("*.old*"))  # nothing set aside under the live run
    seen = CliRunner().invoke(cli.app, ["status", str(ledger), "-o", "json"])
    assert seen.exit_code == 0, seen.output
    live_status = json.loads(seen.output)
    assert live_status["holder"]["pid"] == live.proc.pid and live_status["calls_open"] == 6
    emulator.set_clock(advance_s=1e7)  # the live run's copies end
    emulator.update_config({"copy_base_s": 2.0})
    assert live.wait() == 0, live.stderr()
    assert {r["status"] for r in read_report(tmp_path / "live.parquet")} == {"SUCCEEDED"}
    code, out = run_here(str(manifest), "--journal", str(ledger), "--report",
                         str(tmp_path / "again.parquet"))
    assert code == 0, out
    assert w.copy_calls() == copies  # the next plain run: 0 calls


def test_fresh_starts_this_manifests_rows_over_and_leaves_the_others(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    rows = distinct_copies(w, 6)
    mine = write_manifest(tmp_path / "mine.csv", rows[:3])
    theirs = write_manifest(tmp_path / "theirs.csv", rows[3:])
    for m in (mine, theirs):
        code, out = run_here(str(m), "--report", str(tmp_path / f"{m.stem}.parquet"))
        assert code == 0, out
    copies = w.copies_requested()
    # (--no-skip-present: else the presence check would find the copies made and skip them)
    code, out = run_here(str(mine), "--fresh", "--no-skip-present", "--report",
                         str(tmp_path / "fresh.parquet"))
    assert code == 0, out
    assert "--fresh: the rows of" in out
    assert w.copies_requested() == copies + 3
    assert {r["status"] for r in read_report(tmp_path / "fresh.parquet")} == {"SUCCEEDED"}
    calls = w.copy_calls()
    code, out = run_here(str(theirs), "--report", str(tmp_path / "theirs-again.parquet"))
    assert code == 0 and w.copy_calls() == calls, out


def test_a_ledger_is_never_seen_half_built(tmp_path: Path) -> None:
    """Three openers of one new ledger at the same moment, forty times: each gets a whole
    ledger (before, one in six rounds saw a half-made schema or a locked file and was told
    the journal could not be used)."""
    from batchcopy.journal.journal import Journal, JournalError

    failures: list[str] = []
    for round_ in range(40):
        path = tmp_path / f"r{round_}" / "ledger.sqlite"
        barrier = threading.Barrier(3)

        def open_it() -> None:
            barrier.wait()
            try:
                Journal(path).close()
            except JournalError as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tables = {r[0] for r in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "runs", "manifest", "rows", "calls"} <= tables
    assert failures == []


@pytest.mark.parametrize("name", ["m" * 250 + ".csv", "night\nly.csv"], ids=["long", "newline"])
def test_names_made_from_a_manifest_are_short_and_printable(
        emulator: Any, client_env: dict[str, str], tmp_path: Path, name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the journal's name was made from the manifest's: 250 characters made it too
    long to create (exit 2), a newline landed in a file name."""
    w = seed_world(emulator, client_env, SEED)
    manifest = write_manifest(tmp_path / name, distinct_copies(w, 2))
    monkeypatch.chdir(tmp_path)
    code, out = run_here(str(manifest))  # the default state and report names
    assert code == 0, out
    made = [p for d in (tmp_path / "batchcopy-state", tmp_path / "reports") for p in d.rglob("*")]
    assert len(made) >= 3
    for p in made:
        assert len(p.name.encode()) <= 255 and p.name.isprintable(), p.name


def test_journals_of_earlier_versions_are_imported_not_forgotten(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """An upgrade: last version's per-manifest journal (schema 2) in the state directory's
    journals/; the first run of the new version imports it and copies nothing again."""
    w, manifest = world(emulator, client_env, tmp_path, n=4)
    old = tmp_path / "old-run.journal.sqlite"
    code, out = run_here(str(manifest), "--journal", str(old), "--report",
                         str(tmp_path / "old.parquet"))
    assert code == 0, out
    copies = w.copy_calls()
    db = sqlite3.connect(old)  # back to the previous schema: no runs.host, no undo_actions
    db.executescript("ALTER TABLE runs DROP COLUMN host; DROP TABLE undo_actions; "
                     "UPDATE meta SET value='2' WHERE key='schema_version';")
    db.close()
    journals = tmp_path / "batchcopy-state" / "journals"
    journals.mkdir(parents=True)
    os.replace(old, journals / "nightly-0123456789ab.journal.sqlite")
    code, out = run_here(str(manifest), "--report", str(tmp_path / "new.parquet"))
    assert code == 0, out
    assert "imported the journals of earlier batchcopy versions" in out
    assert w.copy_calls() == copies
    rows = read_report(tmp_path / "new.parquet")
    assert {r["status"] for r in rows} == {"SKIPPED"}


def test_a_journal_of_the_previous_schema_is_brought_up_to_date_in_place(tmp_path: Path) -> None:
    from batchcopy.journal.journal import Journal
    from batchcopy.journal.schema import SCHEMA_VERSION

    path = tmp_path / "old.journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript("ALTER TABLE runs DROP COLUMN host; DROP TABLE undo_actions; "
                     "UPDATE meta SET value='2' WHERE key='schema_version';")
    db.close()
    with Journal(path) as journal:
        assert journal.start_run("m.csv") == 1
        assert journal.run_record()["host"]  # type: ignore[index]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == \
        SCHEMA_VERSION
    assert db.execute("SELECT count(*) FROM undo_actions").fetchone()[0] == 0
    db.close()


def test_journal_on_the_command_line_wins_over_a_state_from_the_environment(
        emulator: Any, client_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, manifest = world(emulator, client_env, tmp_path, n=2)
    monkeypatch.setenv("BATCHCOPY_STATE", str(tmp_path / "from-env"))
    ledger = tmp_path / "given.journal.sqlite"
    code, out = run_here(str(manifest), "--journal", str(ledger), "--report",
                         str(tmp_path / "r.parquet"))
    assert code == 0, out
    assert ledger.exists() and not (tmp_path / "from-env").exists()
    code, out = run_here(str(manifest), "--journal", str(ledger), "--state",
                         str(tmp_path / "also"))
    assert code == 2 and "--journal and --state" in out, out
