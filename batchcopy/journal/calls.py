"""The ledger's calls and rows' outcomes: what the runner writes as calls move through
core/callstate.py's machine, and what it reads back (open calls, results known).

`CallLedger` is a part of journal.Journal (its `db` for reads, `write()` for writes): the
only code that writes the `calls` table and rows' outcomes. `call_sent` is the one urgent
write: the call is durable where the state lives before its request may leave.

Every write is a deterministic function of the ledger and its parameters (times are
parameters, never SQL's clock), so an S3 state can replay it elsewhere (journal/s3log.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from batchcopy.core.callstate import OPEN, CallRecord, CallState, check_move
from batchcopy.core.specs import REQUEST_FIELDS, CopyRequest, Status

_OPEN_STATES = tuple(sorted(s.value for s in OPEN))
_CALL_COLUMNS = ("call_id", "run_id", "state", "row_keys", *REQUEST_FIELDS, "sent_at",
                 "result_image_set_id", "result_version_id", "evidence")
_CHUNK = 500


@dataclass
class RowOutcome:
    """What the runner records when rows reach a status."""

    status: Status
    call_id: int | None = None
    call_rows: int | None = None
    attempts: int = 0
    throttles: int = 0
    conflicts: int = 0
    source_version_used: str | None = None
    destination_version_used: str | None = None
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    workflow_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: float | None = None
    sent_at: float | None = None
    finished_at: float | None = None
    evidence: str | None = None
    copy_duration_s: float | None = None  # the service's (start and end updatedAt)
    detection_delay_s: float | None = None  # from the copy's end to the run seeing it


OUTCOME_COLUMNS = [f.name for f in fields(RowOutcome)]


class CallLedger:
    """Calls and outcomes (see the module doc); mixed into journal.Journal."""

    db: Any
    # the keys of rows carried by calls still open, as SQL (states are literals: replayable)
    OPEN_KEYS_SQL = ("SELECT j.value FROM calls c, json_each(c.row_keys) j WHERE c.state IN ("
                     + ",".join(f"'{s}'" for s in _OPEN_STATES) + ")")

    async def write(self, fn: Any, *, urgent: bool = False, flush: bool = False) -> Any:
        raise NotImplementedError

    # ---- reads ----------------------------------------------------------------
    def open_calls(self) -> list[CallRecord]:
        """Calls that may have made (or be making) a copy, oldest first."""
        marks = ",".join("?" * len(_OPEN_STATES))
        cur = self.db.execute(
            f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE state IN ({marks}) "
            "ORDER BY call_id", _OPEN_STATES)
        return [_call_record(r) for r in cur.fetchall()]

    def call(self, call_id: int) -> CallRecord:
        row = self.db.execute(f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE call_id=?",
                              (call_id,)).fetchone()
        if row is None:
            raise KeyError(call_id)
        return _call_record(row)

    def open_call_keys(self) -> dict[str, int]:
        """{row key: call id} of rows carried by a call that is not settled."""
        return {k: c.call_id for c in self.open_calls() for k in c.row_keys}

    def known_results(self, datastore_id: str, but_for: str | None = None) -> set[str]:
        """Image sets this ledger's calls are known to have created or written; `but_for`
        (a row's key): except the calls that carried that row (its own earlier copies)."""
        sql = ("SELECT DISTINCT result_image_set_id FROM calls WHERE datastore_id=? "
               "AND result_image_set_id IS NOT NULL")
        params: tuple[str, ...] = (datastore_id,)
        if but_for is not None:
            sql += " AND NOT EXISTS (SELECT 1 FROM json_each(calls.row_keys) j WHERE j.value=?)"
            params += (but_for,)
        return {r[0] for r in self.db.execute(sql, params).fetchall()}

    def count_calls(self, state: str | None = None) -> int:
        if state is None:
            return int(self.db.execute("SELECT count(*) FROM calls").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM calls WHERE state=?",
                                   (state,)).fetchone()[0])

    def run_calls(self, run_id: int) -> list[tuple[float, str, str | None]]:
        """(sent_at, state, error_code) of every CopyImageSet call a run journaled, in order."""
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT sent_at, state, error_code FROM calls WHERE run_id=? ORDER BY call_id",
            (run_id,))]

    def accepted_sends(self, run_id: int, limit: int = 200) -> list[float]:
        """When the run's latest accepted calls (not refused, not void) were sent, newest
        first (for a copy rate)."""
        return [r[0] for r in self.db.execute(
            "SELECT sent_at FROM calls WHERE run_id=? AND state NOT IN ('REJECTED', 'VOID') "
            "ORDER BY call_id DESC LIMIT ?", (run_id, limit))]

    def rows_per_call(self, run_id: int) -> float | None:
        """Rows the run's accepted calls carried, on average (merging makes it above 1)."""
        found = self.db.execute(
            "SELECT count(*), sum(json_array_length(row_keys)) FROM calls WHERE run_id=? "
            "AND state NOT IN ('REJECTED', 'VOID')", (run_id,)).fetchone()
        return found[1] / found[0] if found and found[0] else None

    def _by_keys(self, sql: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        out: dict[str, Any] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            out.update(self.db.execute(sql.format(",".join("?" * len(chunk))), chunk))
        return out

    # ---- writes -----------------------------------------------------------------
    async def call_sent(self, run_id: int, request: CopyRequest, keys: Sequence[str],
                        sent_at: float) -> int:
        """Durably record a CopyImageSet call *before* its request leaves (urgent)."""
        values = [getattr(request, f) for f in REQUEST_FIELDS]

        def write(db: Any) -> int:
            cur = db.execute(
                f"INSERT INTO calls (run_id, state, row_keys, {', '.join(REQUEST_FIELDS)},"
                f" sent_at) VALUES (?, 'SENT', ?, {', '.join('?' * len(REQUEST_FIELDS))}, ?)",
                (run_id, json.dumps(list(keys)), *values, sent_at))
            return int(cur.lastrowid)

        return int(await self.write(write, urgent=True))

    async def call_answered(self, call_id: int, image_set_id: str, version_id: str) -> None:
        await self._move(call_id, CallState.ANSWERED, answered_at=time.time(),
                         result_image_set_id=image_set_id, result_version_id=version_id)

    async def call_adopted(self, call_id: int, image_set_id: str, version_id: str,
                           evidence: str) -> None:
        await self._move(call_id, CallState.ADOPTED, answered_at=time.time(),
                         result_image_set_id=image_set_id, result_version_id=version_id,
                         evidence=evidence)

    async def call_rejected(self, call_id: int, error_code: str, error_message: str) -> None:
        await self._move(call_id, CallState.REJECTED, answered_at=time.time(),
                         error_code=error_code, error_message=error_message)

    async def call_ambiguous(self, call_id: int, error_code: str | None,
                             error_message: str | None, evidence: str | None = None) -> None:
        changes: dict[str, Any] = {"evidence": evidence}
        if error_code is not None:
            changes.update(error_code=error_code, error_message=error_message)
        await self._move(call_id, CallState.AMBIGUOUS, **changes)

    async def call_void(self, call_id: int, evidence: str) -> None:
        await self._move(call_id, CallState.VOID, evidence=evidence)

    async def call_done(self, call_id: int, workflow_status: str | None,
                        message: str | None) -> None:
        """The copy ended, and its rows go on to another call (a conflict in disguise)."""
        await self._move(call_id, CallState.DONE, finished_at=time.time(),
                         workflow_status=workflow_status, message=message)

    async def _move(self, call_id: int, new: CallState, **changes: Any) -> None:
        def write(db: Any) -> None:
            found = db.execute("SELECT state FROM calls WHERE call_id=?", (call_id,)).fetchone()
            if found is None:
                raise KeyError(f"call {call_id} is not in the journal")
            check_move(call_id, CallState(found[0]), new)
            sets = ", ".join(f"{c}=?" for c in changes)
            db.execute(f"UPDATE calls SET state=?{', ' + sets if sets else ''} WHERE call_id=?",
                       (new.value, *changes.values(), call_id))

        await self.write(write)

    async def finish_rows(self, run_id: int, keys: Sequence[str], outcome: RowOutcome, *,
                          done_call: tuple[int, str | None, str | None] | None = None,
                          only_pending: bool = False) -> int:
        """Record rows' outcome; with `done_call` (call_id, workflow status, message) the
        call moves to DONE in the same transaction, so a crash can never leave a call DONE
        with its rows PENDING. Returns how many rows were written."""
        values = [getattr(outcome, c) for c in OUTCOME_COLUMNS]
        values[0] = outcome.status.value
        sets = ", ".join(f"{c}=?" for c in OUTCOME_COLUMNS)
        guard = " AND status='PENDING'" if only_pending else ""
        finished = time.time()

        def write(db: Any) -> int:
            if done_call is not None:
                call_id, workflow_status, message = done_call
                state = db.execute("SELECT state FROM calls WHERE call_id=?", (call_id,)).fetchone()
                check_move(call_id, CallState(state[0]), CallState.DONE)
                db.execute("UPDATE calls SET state='DONE', finished_at=?, workflow_status=?, "
                           "message=? WHERE call_id=?",
                           (finished, workflow_status, message, call_id))
            n = 0
            for k in keys:
                n += db.execute(f"UPDATE rows SET {sets}, run_id=? WHERE key=?{guard}",
                                (*values, run_id, k)).rowcount
            return n

        return int(await self.write(write))

    async def reset_rows(self, keys: Sequence[str]) -> None:
        """Put rows back to PENDING (a void call: this or a later run attempts them again)."""
        def write(db: Any) -> None:
            db.executemany("UPDATE rows SET status='PENDING' WHERE key=?", [(k,) for k in keys])

        await self.write(write)

    async def mark_pending_not_run(self, run_id: int, reason: str,
                                   error_code: str | None = None) -> int:
        """Rows of the manifest still PENDING and carried by no open call: NOT_RUN."""
        at = time.time()

        def write(db: Any) -> int:
            cur = db.execute(
                "UPDATE rows SET status=?, run_id=?, error_code=?, error_message=?, "
                "finished_at=?, call_id=NULL, call_rows=NULL, evidence=NULL "
                "WHERE status='PENDING' AND key IN (SELECT key FROM manifest) "
                f"AND key NOT IN ({self.OPEN_KEYS_SQL})",
                (Status.NOT_RUN.value, run_id, error_code, reason, at))
            return int(cur.rowcount)

        return int(await self.write(write))


def _call_record(r: Sequence[Any]) -> CallRecord:
    n = len(REQUEST_FIELDS)
    req = list(r[4:4 + n])
    req[-2], req[-1] = bool(req[-2]), bool(req[-1])  # force, promote_to_primary: 0/1 in SQLite
    return CallRecord(call_id=r[0], run_id=r[1], state=CallState(r[2]),
                      row_keys=tuple(json.loads(r[3])), request=CopyRequest(*req),
                      sent_at=r[4 + n], result_image_set_id=r[5 + n],
                      result_version_id=r[6 + n], evidence=r[7 + n])
