"""The call state machine (copies, and the undo's updates and deletes), and the journal
refusing an illegal move (a bug) outright."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchcopy.core.callstate import (
    ACTION_FINAL,
    ACTION_MOVES,
    ACTION_OPEN,
    MOVES,
    OPEN,
    ActionState,
    CallState,
    IllegalMove,
    check_move,
)
from batchcopy.journal.undo import UndoStore
from batchcopy.undo.plan import DELETE, REVERT, Action
from batchcopy.journal.journal import Journal
from batchcopy.core.specs import CopyRequest


def test_every_state_has_its_moves_and_final_states_have_none() -> None:
    assert set(MOVES) == set(CallState)
    for final in (CallState.DONE, CallState.VOID, CallState.REJECTED):
        assert not MOVES[final] and final not in OPEN
    # a copy known to exist is only ever waited for; an answered call is never reconciled
    assert MOVES[CallState.ANSWERED] == MOVES[CallState.ADOPTED] == {CallState.DONE}
    with pytest.raises(IllegalMove):
        check_move(1, CallState.ANSWERED, CallState.VOID)


def test_the_journal_enforces_the_machine(tmp_path: Path) -> None:
    req = CopyRequest("d" * 32, "s" * 32, "1", None, None, None, False, False)

    async def go() -> None:
        with Journal(tmp_path / "j.sqlite") as journal:
            call = await journal.call_sent(1, req, ["k"], 0.0)
            await journal.call_answered(call, "n" * 32, "2")
            with pytest.raises(IllegalMove):
                await journal.call_void(call, "a verdict after an answer")  # never
            with pytest.raises(IllegalMove):
                await journal.call_rejected(call, "X", "a refusal after an answer")
            assert journal.call(call).state is CallState.ANSWERED
            journal.start_writer()  # the same through the group-commit writer
            try:
                other = await journal.call_sent(1, req, ["k2"], 0.0)
                await journal.call_void(other, "not executed")
                with pytest.raises(IllegalMove):
                    await journal.call_adopted(other, "n" * 32, "2", "too late")
            finally:
                journal.stop_writer()
            assert journal.call(other).state is CallState.VOID

    asyncio.run(go())


def test_an_undo_action_moves_only_where_its_machine_allows() -> None:
    assert set(ACTION_MOVES) == set(ActionState)
    for final in ACTION_FINAL:
        assert not ACTION_MOVES[final] and final not in ACTION_OPEN
    # planned: sent or found changed, never answered without being sent
    assert ACTION_MOVES[ActionState.PLANNED] == {ActionState.SENT, ActionState.CONFLICT}
    for old, new in ((ActionState.PLANNED, ActionState.ANSWERED),
                     (ActionState.AMBIGUOUS, ActionState.FAILED),
                     (ActionState.DONE, ActionState.PLANNED)):
        with pytest.raises(IllegalMove):
            check_move(7, old, new)


def test_the_ledger_enforces_the_undo_machine(tmp_path: Path) -> None:
    """A finished action never moves again, and an action is answered only once sent."""
    async def go() -> None:
        with Journal(tmp_path / "j.sqlite") as journal:
            store = UndoStore(journal)
            plan = store.store_plan([Action(REVERT, "d" * 32, "i" * 32, "3", "1", [1], ["k"]),
                                     Action(DELETE, "d" * 32, "n" * 32, "1", None, [2], ["k2"])])
            revert, delete = store.actions(plan)
            assert revert.state is ActionState.PLANNED
            with pytest.raises(IllegalMove):
                await store.move(revert.action_id, ActionState.ANSWERED)
            await store.sent(revert.action_id)
            await store.move(revert.action_id, ActionState.ANSWERED, result_version_id="4")
            await store.done(revert, "4", "UPDATED")
            with pytest.raises(IllegalMove):
                await store.sent(revert.action_id)  # a finished revert is never sent again
            await store.move(delete.action_id, ActionState.CONFLICT, evidence="changed")
            with pytest.raises(IllegalMove):
                await store.done(delete, "1", "DELETED")
            assert [a.state for a in store.actions(plan)] == [ActionState.DONE,
                                                              ActionState.CONFLICT]

    asyncio.run(go())
