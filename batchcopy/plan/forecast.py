"""What a manifest will cost before anything is sent: CopyImageSet calls, merges, chains,
the time at a copy rate, per data store, and (with `rows=True`) what each row will do.

Pure and streaming: feed row batches in manifest order (the runner's planner sees the same
batches), then read `figures()`. Kept across batches: the planner's state (the last call
per image set), the depth of calls that wait for another one, and with `rows=True` the
last row of every call (to name the row a call waits for).

A chain is a sequence of calls that must run one after another because they touch the
same image set: each waits for the copy before it to end. However high the quota, a
chain of N calls takes N copy durations; the run takes at least as long as its longest
chain, and at least calls / rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchcopy.plan.units import CopyUnit, MergeLimits, Planner
from batchcopy.core.specs import CopySpec

DEFAULT_COPY_SECONDS = 5.0  # assumed duration of one copy, for chains (--copy-seconds)


@dataclass
class StoreFigures:
    datastore_id: str
    rows: int = 0
    calls: int = 0
    merged_calls: int = 0
    rows_in_merged_calls: int = 0
    new_image_set_calls: int = 0
    existing_destination_calls: int = 0
    chained_calls: int = 0
    longest_chain: int = 0

    def add(self, unit: CopyUnit, depth: int) -> None:
        n = len(unit.rows)
        self.rows += n
        self.calls += 1
        if n > 1:
            self.merged_calls += 1
            self.rows_in_merged_calls += n
        if unit.call.destination_image_set_id:
            self.existing_destination_calls += 1
        else:
            self.new_image_set_calls += 1
        if unit.after:
            self.chained_calls += 1
        self.longest_chain = max(self.longest_chain, depth)

    def as_dict(self) -> dict[str, Any]:
        return {"datastore_id": self.datastore_id, "rows": self.rows, "calls": self.calls,
                "merged_calls": self.merged_calls,
                "rows_in_merged_calls": self.rows_in_merged_calls,
                "calls_saved": self.rows - self.calls,
                "new_image_set_calls": self.new_image_set_calls,
                "existing_destination_calls": self.existing_destination_calls,
                "chained_calls": self.chained_calls, "longest_chain": self.longest_chain}


@dataclass(frozen=True)
class Chain:
    calls: int
    datastore_id: str
    image_set_id: str  # the image set the last call of the chain writes (or reads)
    last_row_id: str


@dataclass
class Figures:
    total: StoreFigures
    stores: list[StoreFigures]
    longest: Chain | None
    rows_not_runnable: int = 0  # done before (a rerun): no call

    def send_seconds(self, rate: float) -> float:
        """Sending every call at `rate` calls/s (the first goes at once)."""
        return max(0, self.total.calls - 1) / rate if rate > 0 else float("inf")

    def chain_seconds(self, rate: float, copy_s: float) -> float:
        """The longest chain alone: each call waits for a token and for the copy before."""
        if self.longest is None or rate <= 0:
            return 0.0
        return self.longest.calls * max(1.0 / rate, copy_s)

    def seconds(self, rate: float, copy_s: float) -> float:
        """At least the sending, at least the longest chain; the last copy's duration too."""
        if self.total.calls == 0:
            return 0.0
        return max(self.send_seconds(rate) + copy_s, self.chain_seconds(rate, copy_s))

    def as_dict(self, rate: float, copy_s: float) -> dict[str, Any]:
        from batchcopy.core.durations import human_duration

        out = self.total.as_dict()
        del out["datastore_id"]
        out["longest_chain"] = None if self.longest is None else {
            "calls": self.longest.calls, "datastore_id": self.longest.datastore_id,
            "image_set_id": self.longest.image_set_id, "last_row_id": self.longest.last_row_id,
            "seconds": round(self.chain_seconds(rate, copy_s), 3)}
        seconds = self.seconds(rate, copy_s)
        out["time"] = {"copy_rate_per_s": rate, "assumed_copy_seconds": copy_s,
                       "sending_seconds": round(self.send_seconds(rate), 3),
                       "seconds": round(seconds, 3), "human": human_duration(seconds)}
        out["datastores"] = [s.as_dict() for s in self.stores]
        return out


@dataclass(frozen=True)
class RowPlan:
    """What one row will do."""

    row_id: str
    manifest_row: int
    call: int  # the call's number (1 = the first call of the plan)
    datastore_id: str
    source_image_set_id: str
    destination_image_set_id: str | None  # None: the call makes a new image set
    subset: bool
    merged_with: tuple[str, ...]  # the other rows of the same call
    after_rows: tuple[str, ...]  # rows whose copy must end first (same image set)

    def as_dict(self) -> dict[str, Any]:
        return {"row_id": self.row_id, "manifest_row": self.manifest_row, "call": self.call,
                "datastore_id": self.datastore_id,
                "source_image_set_id": self.source_image_set_id,
                "action": "into_existing" if self.destination_image_set_id else "new_image_set",
                "destination_image_set_id": self.destination_image_set_id,
                "subset": self.subset, "merged_with": list(self.merged_with),
                "after_rows": list(self.after_rows)}

    def describe(self, *, most: int = 5) -> str:
        what = "a subset of " if self.subset else ""
        if self.destination_image_set_id:
            text = f"copies {what}{self.source_image_set_id} into {self.destination_image_set_id}"
        else:
            text = f"copies {what}{self.source_image_set_id} into a new image set"
        text = f"call {self.call}: {text}"
        if self.merged_with:
            text += f"; shares the call with {_names(self.merged_with, most)}"
        if self.after_rows:
            text += f"; waits for the copy of {_names(self.after_rows, most)} (same image set)"
        return text


def _names(names: Sequence[str], most: int) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass
class Forecaster:
    merge: bool = True
    limits: MergeLimits = field(default_factory=MergeLimits)
    rows: bool = False  # also say what each row will do (add_batch returns RowPlans)

    def __post_init__(self) -> None:
        self._planner = Planner(merge=self.merge, limits=self.limits)
        self._stores: dict[str, StoreFigures] = {}
        self._depth: dict[int, int] = {}  # units that wait for another: their chain depth
        self._last_row: dict[int, str] = {}  # with rows=True: unit id -> its last row
        self._longest: Chain | None = None
        self._not_runnable = 0

    def add_batch(self, specs: Sequence[CopySpec],
                  runnable: Sequence[bool] | None = None) -> list[RowPlan]:
        units = self._planner.add_batch(specs, runnable)
        if runnable is not None:
            self._not_runnable += len(runnable) - sum(runnable)
        plans: list[RowPlan] = []
        depths = self._depth
        for unit in units:
            depth = 1
            if unit.after:
                depth = 1 + max(depths.get(a, 1) for a in unit.after)
                depths[unit.unit_id] = depth
            ds = unit.call.datastore_id
            store = self._stores.get(ds)
            if store is None:
                store = self._stores[ds] = StoreFigures(ds)
            store.add(unit, depth)
            if self._longest is None or depth > self._longest.calls:
                self._longest = Chain(depth, ds, unit.call.destination_image_set_id
                                      or unit.call.source_image_set_id, unit.rows[-1].row_id)
            if self.rows:
                plans.extend(self._row_plans(unit))
        return plans

    def _row_plans(self, unit: CopyUnit) -> list[RowPlan]:
        after = tuple(self._last_row[a] for a in unit.after if a in self._last_row)
        ids = [r.row_id for r in unit.rows]
        self._last_row[unit.unit_id] = ids[-1]
        return [RowPlan(row_id=r.row_id, manifest_row=r.manifest_row, call=unit.unit_id + 1,
                        datastore_id=unit.call.datastore_id,
                        source_image_set_id=unit.call.source_image_set_id,
                        destination_image_set_id=unit.call.destination_image_set_id,
                        subset=r.copiable_attributes is not None,
                        merged_with=tuple(i for i in ids if i != r.row_id), after_rows=after)
                for r in unit.rows]

    def figures(self) -> Figures:
        stores = sorted(self._stores.values(), key=lambda s: (-s.rows, s.datastore_id))
        total = StoreFigures("")
        for store in stores:
            for name, value in vars(store).items():
                if name == "longest_chain":
                    total.longest_chain = max(total.longest_chain, value)
                elif name != "datastore_id":
                    setattr(total, name, getattr(total, name) + value)
        return Figures(total=total, stores=stores, longest=self._longest,
                       rows_not_runnable=self._not_runnable)
