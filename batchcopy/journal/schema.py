"""The ledger's SQLite schema, and making a ledger file: complete before anyone sees it.

`create_ledger` builds the schema in a temporary file beside the ledger's name and links
it into place in one step: a reader, or a second run starting at the same moment, sees
either nothing or a whole ledger, never a half-built one. `migrate` brings a ledger of
the previous schema (2) up to date in place; `add_columns` adds the columns added within
schema 3.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

SCHEMA_VERSION = "3"
SQLITE_MAGIC = b"SQLite format 3\x00"

UNDO_SCHEMA = """
CREATE TABLE IF NOT EXISTS undo_actions (
    action_id INTEGER PRIMARY KEY, plan_id INTEGER NOT NULL, kind TEXT NOT NULL,
    datastore_id TEXT NOT NULL, image_set_id TEXT NOT NULL, expected_latest TEXT NOT NULL,
    target_version TEXT, call_ids TEXT NOT NULL, row_keys TEXT NOT NULL, note TEXT NOT NULL,
    state TEXT NOT NULL, planned_at REAL NOT NULL, sent_at REAL, finished_at REAL,
    result_version_id TEXT, workflow_status TEXT, error_code TEXT, error_message TEXT,
    evidence TEXT, attempts INTEGER NOT NULL DEFAULT 0);
"""
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    manifest TEXT NOT NULL, pid INTEGER NOT NULL, exit_code INTEGER, stats TEXT, host TEXT);
CREATE TABLE manifest (
    manifest_row INTEGER PRIMARY KEY, key TEXT NOT NULL, row_id TEXT NOT NULL,
    source_version_id TEXT, destination_version_id TEXT, extras TEXT);
CREATE TABLE rows (
    key TEXT PRIMARY KEY, datastore_id TEXT NOT NULL, source_image_set_id TEXT NOT NULL,
    destination_image_set_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'PENDING', run_id INTEGER, call_id INTEGER,
    call_rows INTEGER, attempts INTEGER NOT NULL DEFAULT 0, throttles INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, source_version_used TEXT,
    destination_version_used TEXT, result_image_set_id TEXT, result_version_id TEXT,
    workflow_status TEXT, error_code TEXT, error_message TEXT, started_at REAL,
    sent_at REAL, finished_at REAL, evidence TEXT, copy_duration_s REAL,
    detection_delay_s REAL);
CREATE INDEX rows_status ON rows(status);
CREATE TABLE calls (
    call_id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, state TEXT NOT NULL,
    row_keys TEXT NOT NULL, datastore_id TEXT NOT NULL,
    source_image_set_id TEXT NOT NULL, source_version_id TEXT NOT NULL,
    destination_image_set_id TEXT, destination_version_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL, sent_at REAL NOT NULL,
    answered_at REAL, result_image_set_id TEXT, result_version_id TEXT, finished_at REAL,
    workflow_status TEXT, message TEXT, error_code TEXT, error_message TEXT, evidence TEXT);
CREATE INDEX calls_state ON calls(state);
""" + UNDO_SCHEMA



def inspect(path: Path) -> str:
    """'missing' | 'empty' | 'sqlite' | 'not-sqlite' (a cheap look before opening)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "not-sqlite"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    return "sqlite" if head == SQLITE_MAGIC else "not-sqlite"


def create_ledger(path: Path) -> bool:
    """A complete empty ledger at `path` unless one is there (True if this call made it):
    built in a temporary file beside it, then linked into place, so that a reader or a
    second creator sees either nothing or the whole schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("BEGIN")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        finally:
            db.close()
        if inspect(path) == "empty":  # an empty file is nobody's ledger: take its place
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


# Columns added within schema 3 (readers that do not know them ignore them). A ledger, and
# an s3:// state's cache before it replays a log that may write them, gets them here.
ADDED_ROW_COLUMNS = ("copy_duration_s", "detection_delay_s")


def add_columns(db: sqlite3.Connection) -> None:
    """Add ADDED_ROW_COLUMNS that `db`'s rows table lacks (each ALTER its own commit)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(rows)")}
    for column in ADDED_ROW_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE rows ADD COLUMN {column} REAL")


def migrate(db: sqlite3.Connection, version: str | None) -> str | None:
    """Schema 2 (before undo_actions and runs.host) -> 3, in one transaction; returns the
    version the file has now."""
    if version != "2":
        return version
    db.execute("BEGIN IMMEDIATE")
    columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    if "host" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN host TEXT")
    db.execute(UNDO_SCHEMA)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,))
    db.execute("COMMIT")
    return SCHEMA_VERSION
