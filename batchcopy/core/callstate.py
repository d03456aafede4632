"""The life of one CopyImageSet call: its states, the moves between them, and its record.

One state machine, used by the live path and by a resumed run alike, and enforced by the
journal (an illegal move is a bug and raises):

    (planned) ---> SENT            committed before the request leaves
    SENT      ---> ANSWERED        200: the service named the image set and version it writes
              ---> REJECTED        refused without executing (throttle, 503, conflict, invalid,
                                   access): nothing was copied
              ---> AMBIGUOUS       no usable answer: it may or may not have executed
    AMBIGUOUS ---> ADOPTED         reconciliation found the copy it made
              ---> VOID            reconciliation proved it did not execute
              ---> AMBIGUOUS       checked again, still undecidable (evidence updated)
    ANSWERED  ---> DONE            the copy ended (COPIED / COPY_FAILED), rows finished
    ADOPTED   ---> DONE
    SENT      ---> ADOPTED | VOID  (a resumed run reconciles a call a crash left SENT)

"Planned" exists only in memory: a unit becomes a call when it is journaled SENT. Calls
in OPEN states may have made (or be making) a copy: their rows are never sent again until
the call is settled.

An undo's action (an UpdateImageSetMetadata revert or a DeleteImageSet) is a call of the
same kind, journaled with it (journal/undo.py) and checked the same way; it is planned in
the ledger, and sent again (back to PLANNED) while its attempts last:

    PLANNED   ---> SENT            committed before the request leaves
              ---> CONFLICT        the image set changed since the plan: nothing done
    SENT      ---> ANSWERED        the service took it; its end is awaited
              ---> AMBIGUOUS       no usable answer: reconciled before anything is resent
              ---> PLANNED         refused for a passing reason: sent again
              ---> FAILED          refused for good
    AMBIGUOUS ---> ANSWERED | PLANNED | CONFLICT   (it happened | it did not | another
                                                    writer's version came instead)
    ANSWERED  ---> DONE | FAILED   it ended (UPDATED, DELETED | anything else)
              ---> ANSWERED        a later undo looked again, its end not yet seen
    SENT, ANSWERED ---> the moves of AMBIGUOUS (a later undo reconciles what a crash left)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from batchcopy.core.specs import CopyRequest


class CallState(str, enum.Enum):
    SENT = "SENT"
    ANSWERED = "ANSWERED"
    REJECTED = "REJECTED"
    AMBIGUOUS = "AMBIGUOUS"
    ADOPTED = "ADOPTED"
    VOID = "VOID"
    DONE = "DONE"


MOVES: dict[CallState, frozenset[CallState]] = {
    CallState.SENT: frozenset({CallState.ANSWERED, CallState.REJECTED, CallState.AMBIGUOUS,
                               CallState.ADOPTED, CallState.VOID}),
    CallState.AMBIGUOUS: frozenset({CallState.ADOPTED, CallState.VOID, CallState.AMBIGUOUS}),
    CallState.ANSWERED: frozenset({CallState.DONE}),
    CallState.ADOPTED: frozenset({CallState.DONE}),
    CallState.REJECTED: frozenset(),
    CallState.VOID: frozenset(),
    CallState.DONE: frozenset(),
}

OPEN = frozenset({CallState.SENT, CallState.AMBIGUOUS, CallState.ANSWERED, CallState.ADOPTED})
# the copy is known to exist: only its end is awaited
IN_PROGRESS = frozenset({CallState.ANSWERED, CallState.ADOPTED})


class ActionState(str, enum.Enum):
    PLANNED = "PLANNED"
    SENT = "SENT"
    AMBIGUOUS = "AMBIGUOUS"
    ANSWERED = "ANSWERED"
    DONE = "DONE"
    FAILED = "FAILED"
    CONFLICT = "CONFLICT"


_SETTLE = frozenset({ActionState.ANSWERED, ActionState.PLANNED, ActionState.CONFLICT})
ACTION_MOVES: dict[ActionState, frozenset[ActionState]] = {
    ActionState.PLANNED: frozenset({ActionState.SENT, ActionState.CONFLICT}),
    ActionState.SENT: _SETTLE | {ActionState.AMBIGUOUS, ActionState.FAILED},
    ActionState.AMBIGUOUS: _SETTLE,
    ActionState.ANSWERED: _SETTLE | {ActionState.DONE, ActionState.FAILED},
    ActionState.DONE: frozenset(),
    ActionState.FAILED: frozenset(),
    ActionState.CONFLICT: frozenset(),
}
# a crash may have left the action's request out: reconciled before anything is resent
ACTION_OPEN = frozenset({ActionState.SENT, ActionState.AMBIGUOUS, ActionState.ANSWERED})
ACTION_FINAL = frozenset({ActionState.DONE, ActionState.FAILED, ActionState.CONFLICT})


class IllegalMove(RuntimeError):
    """A call was asked to move where the state machine does not allow: a bug."""


def check_move(ident: int, old: CallState | ActionState, new: CallState | ActionState) -> None:
    """Raise IllegalMove unless `new` is a legal move from `old`: a copy call's (CallState)
    or an undo action's (ActionState), `ident` its id."""
    if isinstance(old, CallState):
        what, legal = "call", new in MOVES[old]
    else:
        what, legal = "undo action", new in ACTION_MOVES[old]
    if not legal:
        raise IllegalMove(f"{what} {ident}: {old.value} -> {new.value} is not a legal move")


@dataclass(frozen=True)
class CallRecord:
    """A journaled call: what was sent, for which rows, and where it stands."""

    call_id: int
    run_id: int
    state: CallState
    row_keys: tuple[str, ...]
    request: CopyRequest
    sent_at: float
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    evidence: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN
