"""`run --limit N`: which rows a canary run takes. Pure: no I/O.

A first real run is best tried small: the first N rows to run, in manifest order, then a
stop with exit 0 and the command that continues. Rows that share an image set (as source
or destination) form a chain that must run in manifest order, and its merged calls span
its rows, so a canary keeps chains whole:

* the first N runnable rows are taken;
* after them, a later row is taken when it touches an image set a taken row touches (the
  rest of a chain the canary started), unless it also touches an image set of a row left
  out: taking it would put it before that earlier row of its chain;
* every row left out blocks its image sets for the rest of the manifest, so no later row
  of its chain runs ahead of it.

Rows left out stay for the next run (NOT_RUN, `RunLimit`); the same command without
--limit, or with it again, runs them in order: a chain that had to be cut is continued in
its order, with versions read afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchcopy.core.specs import CopySpec

LIMIT_CODE = "RunLimit"


def image_sets(spec: CopySpec) -> set[tuple[str, str]]:
    out = {(spec.datastore_id, spec.source_image_set_id)}
    if spec.destination_image_set_id:
        out.add((spec.datastore_id, spec.destination_image_set_id))
    return out


class Canary:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.limit = limit
        self.taken = 0  # rows taken, the chains' rest included
        self.left_out = 0
        self._counted = 0  # rows taken towards the limit
        self._touched: set[tuple[str, str]] = set()
        self._blocked: set[tuple[str, str]] = set()

    def take(self, spec: CopySpec) -> bool:
        """Whether this runnable row (given in manifest order) runs in the canary."""
        sets = image_sets(spec)
        free = not (sets & self._blocked)
        if free and self._counted < self.limit:
            self._counted += 1
        elif not (free and sets & self._touched):
            self._blocked |= sets
            self.left_out += 1
            return False
        self._touched |= sets
        self.taken += 1
        return True

    def select(self, specs: Sequence[CopySpec], runnable: Sequence[bool]) -> list[bool]:
        """`runnable`, with the rows the canary leaves out turned off (manifest order)."""
        return [ok and self.take(spec) for spec, ok in zip(specs, runnable)]
