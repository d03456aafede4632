"""Which copy units may start now: the plan's DAG, held only for units not yet terminal.

Pure bookkeeping, no I/O and no asyncio, so it is tested on its own. A unit may start
when every unit it comes `after` is terminal and its data store has a free copy slot
(`max_in_flight` copies in progress per data store: the service allows 100). Units
start in the order they became ready. Units of later manifest batches may name units
that finished long ago; only their ids are remembered (`done`), nothing else.
"""

from __future__ import annotations

from collections import deque

from batchcopy.plan.units import CopyUnit


class Schedule:
    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.max_in_flight = max_in_flight
        self.units: dict[int, CopyUnit] = {}  # not yet terminal
        self.done: set[int] = set()
        self._deps_left: dict[int, int] = {}
        self._dependents: dict[int, list[int]] = {}
        self._ready: dict[str, deque[int]] = {}
        self._in_flight: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.units)

    def add(self, unit: CopyUnit) -> None:
        self.units[unit.unit_id] = unit
        waiting = [u for u in unit.after if u not in self.done]
        self._deps_left[unit.unit_id] = len(waiting)
        for u in waiting:
            self._dependents.setdefault(u, []).append(unit.unit_id)
        if not waiting:
            self._ready.setdefault(unit.call.datastore_id, deque()).append(unit.unit_id)

    def take_ready(self) -> list[CopyUnit]:
        """Units that may start now; each takes a copy slot of its data store."""
        started: list[CopyUnit] = []
        for ds, queue in self._ready.items():
            while queue and self._in_flight.get(ds, 0) < self.max_in_flight:
                started.append(self.units[queue.popleft()])
                self._in_flight[ds] = self._in_flight.get(ds, 0) + 1
        return started

    def finish(self, unit: CopyUnit) -> None:
        """A started unit is terminal: free its slot, release the units that waited for it."""
        self._in_flight[unit.call.datastore_id] -= 1
        self.units.pop(unit.unit_id, None)
        self._deps_left.pop(unit.unit_id, None)
        self.done.add(unit.unit_id)
        for dep in self._dependents.pop(unit.unit_id, []):
            self._deps_left[dep] -= 1
            if self._deps_left[dep] == 0:
                self._ready.setdefault(self.units[dep].call.datastore_id, deque()).append(dep)

    def blocked(self, datastore_id: str) -> bool:
        """Units of this data store are ready and wait for a copy slot."""
        return bool(self._ready.get(datastore_id)) and \
            self._in_flight.get(datastore_id, 0) >= self.max_in_flight

    def in_flight(self, datastore_id: str) -> int:
        return self._in_flight.get(datastore_id, 0)
