"""The undo's part of the ledger: its actions live in the same ledger as the calls they
take back, so that an action finishing and the rows it undid going back to NOT_RUN
(a later run of the manifest copies them again) are one transaction.

    undo_actions  one line per action of a plan (undo_plan.Action), and its state:
        PLANNED -> SENT (committed before the request leaves) -> ANSWERED -> DONE | FAILED
                          -> AMBIGUOUS (no usable answer) -> ANSWERED (it happened) | PLANNED
                   -> CONFLICT (the image set changed since the plan; nothing done)
        NONE actions (planned conflicts) are CONFLICT from the start.

A plan whose actions are not all final is resumed as it is, never planned again, so a
crash between a revert and its record can never revert twice: SENT and AMBIGUOUS actions
are reconciled against the service first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchcopy.core.callstate import ACTION_FINAL, ActionState, check_move
from batchcopy.journal.journal import Journal
from batchcopy.core.specs import REQUEST_FIELDS, CopyRequest, Status
from batchcopy.undo.plan import NONE, Action, DoneCall

FINAL = tuple(sorted(s.value for s in ACTION_FINAL))
UNDONE_CODE = "Undone"


@dataclass
class StoredAction:
    action_id: int
    plan_id: int
    action: Action
    state: ActionState
    sent_at: float | None
    result_version_id: str | None
    attempts: int


class UndoStore:
    """The `undo_actions` table of a journal (journal/schema.py), read and written."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    # ---- reading -------------------------------------------------------------------
    def done_calls(self) -> list[DoneCall]:
        """Finished copy calls of the current manifest's rows (the state's latest run's
        manifest: a state's ledger holds every manifest run against it) that made a
        version and that no finished undo took back."""
        undone: set[int] = set()
        for (ids,) in self.journal.db.execute(
                "SELECT call_ids FROM undo_actions WHERE state = 'DONE'"):
            undone.update(json.loads(ids))
        fields = ", ".join(REQUEST_FIELDS)
        out = []
        for row in self.journal.db.execute(
                f"SELECT call_id, row_keys, {fields}, result_image_set_id, result_version_id, "
                f"workflow_status FROM calls WHERE state = 'DONE' AND result_image_set_id IS NOT "
                f"NULL AND workflow_status IN ('COPIED', 'COPY_FAILED') AND EXISTS (SELECT 1 "
                f"FROM json_each(calls.row_keys) j WHERE j.value IN (SELECT key FROM manifest)) "
                f"ORDER BY call_id"):
            if row[0] in undone:
                continue
            n = len(REQUEST_FIELDS)
            req = list(row[2:2 + n])
            req[-2], req[-1] = bool(req[-2]), bool(req[-1])
            out.append(DoneCall(row[0], tuple(json.loads(row[1])), CopyRequest(*req),
                                row[2 + n], row[3 + n], row[4 + n]))
        return out

    def unfinished_plan(self) -> int | None:
        marks = ",".join("?" * len(FINAL))
        found = self.journal.db.execute(
            f"SELECT max(plan_id) FROM undo_actions WHERE state NOT IN ({marks})", FINAL).fetchone()
        plan: int | None = found[0]
        return plan

    def latest_plan(self) -> int | None:
        found: int | None = self.journal.db.execute(
            "SELECT max(plan_id) FROM undo_actions").fetchone()[0]
        return found

    def actions(self, plan_id: int) -> list[StoredAction]:
        out = []
        for r in self.journal.db.execute(
                "SELECT action_id, plan_id, kind, datastore_id, image_set_id, expected_latest, "
                "target_version, call_ids, row_keys, note, state, sent_at, result_version_id, "
                "attempts FROM undo_actions WHERE plan_id = ? ORDER BY action_id", (plan_id,)):
            action = Action(r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), json.loads(r[8]), r[9])
            out.append(StoredAction(r[0], r[1], action, ActionState(r[10]), r[11], r[12],
                                    r[13]))
        return out

    def action_rows(self, plan_id: int) -> dict[str, dict[str, Any]]:
        """{row key: the action's line} for the report."""
        cur = self.journal.db.execute("SELECT * FROM undo_actions WHERE plan_id = ?", (plan_id,))
        names = [d[0] for d in cur.description]
        out: dict[str, dict[str, Any]] = {}
        for values in cur.fetchall():
            line = dict(zip(names, values))
            for key in json.loads(line["row_keys"]):
                out[key] = line
        return out

    # ---- writing ---------------------------------------------------------------------
    def store_plan(self, actions: Sequence[Action]) -> int:
        plan_id = (self.latest_plan() or 0) + 1
        now = time.time()
        rows = [(plan_id, a.kind, a.datastore_id, a.image_set_id, a.expected_latest,
                 a.target_version, json.dumps(a.call_ids), json.dumps(a.row_keys), a.note,
                 "CONFLICT" if a.kind == NONE else "PLANNED", now, now if a.kind == NONE else None)
                for a in actions]
        self.journal.write_now(lambda db: db.executemany(
            "INSERT INTO undo_actions (plan_id, kind, datastore_id, image_set_id, "
            "expected_latest, target_version, call_ids, row_keys, note, state, planned_at, "
            "finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows))
        return plan_id

    async def move(self, action_id: int, state: ActionState, **changes: Any) -> None:
        sets = "".join(f", {c}=?" for c in changes)

        def write(db: Any) -> None:
            _check(db, action_id, state)
            db.execute(f"UPDATE undo_actions SET state=?{sets} WHERE action_id=?",
                       (state.value, *changes.values(), action_id))

        await self.journal.write(write)

    async def sent(self, action_id: int) -> None:
        """Durably SENT before the request leaves (urgent, like a copy's call_sent)."""
        at = time.time()

        def write(db: Any) -> None:
            _check(db, action_id, ActionState.SENT)
            db.execute("UPDATE undo_actions SET state='SENT', sent_at=?, attempts=attempts+1 "
                       "WHERE action_id=?", (at, action_id))

        await self.journal.write(write, urgent=True)

    async def done(self, stored: StoredAction, result_version: str | None,
                   workflow_status: str | None, evidence: str | None = None) -> None:
        """The action ended well: the rows it undid go back to NOT_RUN in the same
        transaction (a later run of the manifest would copy them again)."""
        a = stored.action
        message = f"undone by batchcopy undo: {a.note}"

        def write(db: Any) -> None:
            _check(db, stored.action_id, ActionState.DONE)
            db.execute("UPDATE undo_actions SET state='DONE', finished_at=?, result_version_id=?, "
                       "workflow_status=?, evidence=coalesce(?, evidence) WHERE action_id=?",
                       (time.time(), result_version, workflow_status, evidence, stored.action_id))
            db.executemany(
                "UPDATE rows SET status=?, error_code=?, error_message=?, evidence=NULL "
                "WHERE key=? AND status IN ('SUCCEEDED', 'SKIPPED')",
                [(Status.NOT_RUN.value, UNDONE_CODE, message, k) for k in a.row_keys])

        await self.journal.write(write)


def _check(db: Any, action_id: int, new: ActionState) -> None:
    """The move is legal from where the ledger has the action (core/callstate.py)."""
    found = db.execute("SELECT state FROM undo_actions WHERE action_id=?", (action_id,)).fetchone()
    if found is None:
        raise KeyError(f"undo action {action_id} is not in the ledger")
    check_move(action_id, ActionState(found[0]), new)
