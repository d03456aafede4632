"""The call state machine, and the journal refusing an illegal move (a bug) outright."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchcopy.core.callstate import MOVES, OPEN, CallState, IllegalMove, check_move
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
