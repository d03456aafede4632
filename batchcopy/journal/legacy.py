"""Journals of earlier batchcopy versions: one file per manifest (named from its URI and
`--datastore-id`) in `<state dir>/journals/`. A new directory state imports them
(journal/state.py), so that an upgrade never forgets what was copied.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from batchcopy.journal.schema import inspect


_DONE = "('SUCCEEDED', 'SKIPPED', 'FAILED')"


def import_journals(journal: Any, directory: Path) -> int:
    """Merge the per-manifest journals found in `directory` into a new ledger: their runs
    and calls (renumbered after the ledger's own), and their rows (a row a journal finished
    wins over one it did not). Open calls come along open: the next run settles them.
    Returns how many journals were imported; unreadable ones are left alone."""
    if not directory.is_dir():
        return 0
    db: sqlite3.Connection = journal._wdb  # noqa: SLF001 - a local ledger, before any run
    imported = 0
    for old in sorted(directory.glob("*.journal.sqlite")):
        if inspect(old) != "sqlite":
            continue
        try:
            db.execute("ATTACH DATABASE ? AS old", (str(old),))
        except sqlite3.Error:
            continue
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM old.sqlite_master WHERE type='table'")}
            if not {"runs", "rows", "calls"} <= tables:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                _merge(db)
                db.execute("COMMIT")
                imported += 1
            except sqlite3.Error:
                db.execute("ROLLBACK")
        finally:
            db.execute("DETACH DATABASE old")
    return imported


def _merge(db: sqlite3.Connection) -> None:
    runs = db.execute("SELECT coalesce(max(run_id), 0) FROM main.runs").fetchone()[0]
    calls = db.execute("SELECT coalesce(max(call_id), 0) FROM main.calls").fetchone()[0]
    db.execute("INSERT INTO main.runs (run_id, started_at, finished_at, manifest, pid, exit_code,"
               " stats) SELECT run_id + ?, started_at, finished_at, manifest, pid, exit_code, stats"
               " FROM old.runs", (runs,))
    columns = [r[1] for r in db.execute("PRAGMA main.table_info(calls)")]
    picked = ", ".join("call_id + :calls" if c == "call_id" else "run_id + :runs" if c == "run_id"
                       else c for c in columns)
    db.execute(f"INSERT INTO main.calls ({', '.join(columns)}) SELECT {picked} FROM old.calls",
               {"calls": calls, "runs": runs})
    columns = [r[1] for r in db.execute("PRAGMA main.table_info(rows)")]
    picked = ", ".join("run_id + :runs" if c == "run_id" else "call_id + :calls" if c == "call_id"
                       else c for c in columns)
    updates = ", ".join(f"{c}=excluded.{c}" for c in columns if c != "key")
    db.execute(f"INSERT INTO main.rows ({', '.join(columns)}) SELECT {picked} FROM old.rows "
               f"WHERE true ON CONFLICT(key) DO UPDATE SET {updates} WHERE main.rows.status "
               f"NOT IN {_DONE} AND excluded.status IN {_DONE}", {"calls": calls, "runs": runs})
