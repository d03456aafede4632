"""Turn manifest rows into CopyImageSet calls ("units") and the order they must keep.

Pure: no I/O, no clock. Same rows, same batches, same options -> same units and ids.

Ordering. An image set takes part in one copy at a time, and rows that touch the same
image set (as source or destination, per data store) run in manifest order. So each
unit lists in `after` the previous unit that touched each of its image sets; every
other pair of units is independent. Those edges are enough: the units touching one
image set form a chain, hence a total order.

Merging. A subset row joins an earlier unit of the same batch when the unit is a
subset unit with the same data store, source, *existing* destination, force and
promote flags; when that unit is still the last one to touch both its source and its
destination (nothing in between touched either, so moving the row earlier changes no
order anyone can observe); and when the union of the subsets stays within
MergeLimits. Rows that make a new image set never merge: each must make its own.
A whole series in a subset counts as one instance towards `max_instances` (the real
number is unknown here); the runner cuts a merged unit to the frames per call once it
has the source's metadata (run/precheck.py), and splits one the service refuses.

Version pins. A unit carries the manifest's source_version_id / destination_version_id
only when its first row is the first row of the whole manifest to touch that image set.
Later pins are superseded: by then an earlier unit may have written a new version, and
the runner carries the version each copy returns (or reads the current one) instead.
validate() reports pins that contradict each other on an image set nothing writes to.

Rows that need no call (done by an earlier run, or waiting for an open call to settle)
are fed too, flagged not runnable: they make no unit, but they count as touching their
image sets, so a later row's pin is not taken for the first one. A rerun therefore
treats pins exactly as the first run did.

Memory. A Planner keeps, across batches, the last unit id per (data store, image set)
and a counter; nothing per row. Merging happens only within one batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from batchcopy.core.limits import COPIABLE_ATTRIBUTES_CHARS, FRAMES_PER_COPY
from batchcopy.core.specs import CopyRequest, CopySpec
from batchcopy.manifest.attributes import SeriesMap, canonical_attributes, series_map


@dataclass(frozen=True)
class MergeLimits:
    max_chars: int = COPIABLE_ATTRIBUTES_CHARS  # copiableAttributes length
    max_instances: int = FRAMES_PER_COPY  # proxy for the frames (each instance has >= 1)
    max_rows: int = 1000


@dataclass(frozen=True)
class CopyUnit:
    """One CopyImageSet call: the copy (`call`: what the request will say, naming the
    manifest's version pins: only on the first unit touching the image set), its rows and
    the units it waits for."""

    unit_id: int  # increasing from 0 in manifest order of the first row (split halves come later)
    rows: tuple[CopySpec, ...]  # manifest order
    call: CopyRequest  # copiable_attributes: the union of the rows' subsets, None = whole
    after: tuple[int, ...]  # unit ids that must be terminal before this one may start

    def image_sets(self) -> tuple[str, ...]:
        return self.call.image_sets()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.rows)

    def request(self, source_version_id: str, destination_version_id: str | None) -> CopyRequest:
        """The CopyImageSet request of this unit, naming these versions."""
        return self.call.naming(source_version_id, destination_version_id)

    def with_rows(self, rows: Sequence[CopySpec]) -> CopyUnit:
        """The same unit carrying fewer rows (the subset is their union)."""
        return replace(self, rows=tuple(rows),
                       call=replace(self.call, copiable_attributes=_union(rows)))

    def unpinned(self) -> CopyUnit:
        """The same unit without the manifest's pins (it carries or reads the versions)."""
        return replace(self, call=self.call.naming(None, None))


NO_UNIT = -1  # in Planner._last: touched by a row that made no unit


# ---------------------------------------------------------------- subsets


def _instances_chars(instances: set[str]) -> int:
    # '"<uid>":{}' per instance, joined by commas
    return sum(len(json.dumps(i)) + 3 for i in instances) + max(0, len(instances) - 1)


def _series_chars(uid: str, instances: set[str] | None) -> int:
    # '"<uid>":{"Instances":{...}}'
    return len(json.dumps(uid)) + 1 + len('{"Instances":{}}') + _instances_chars(instances or set())


class _Subset:
    """A growing union of subsets, with its canonical length and instance count kept
    up to date, so a merge can be checked against the limits without re-serialising."""

    def __init__(self, attrs: str) -> None:
        self.series: SeriesMap = series_map(attrs)
        self.text: str | None = canonical_attributes(self.series)  # None once changed
        self.chars = len(self.text)
        self.instances = _count(self.series)

    def merged_size(self, other: SeriesMap) -> tuple[int, int]:
        """(chars, instances) the union with `other` would have."""
        chars, count = self.chars, self.instances
        n_series = len(self.series)
        for uid, insts in other.items():
            if uid not in self.series:
                chars += _series_chars(uid, insts) + (1 if n_series else 0)
                n_series += 1
                count += len(insts) if insts else 1
                continue
            have = self.series[uid]
            if have is None:  # already the whole series
                continue
            if insts is None:  # the whole series replaces the listed instances
                chars -= _instances_chars(have)
                count += 1 - len(have)
                continue
            new = insts - have
            chars += sum(len(json.dumps(i)) + 3 for i in new) + len(new)
            count += len(new)
        return chars, count

    def add(self, other: SeriesMap) -> None:
        self.chars, self.instances = self.merged_size(other)
        for uid, insts in other.items():
            if uid in self.series:
                have = self.series[uid]
                if have is not None:
                    self.series[uid] = None if insts is None else have | insts
            else:
                self.series[uid] = None if insts is None else set(insts)
        self.text = None

    def to_json(self) -> str:
        if self.text is None:
            self.text = canonical_attributes(self.series)
        return self.text


def _count(series: SeriesMap) -> int:
    return sum(len(i) if i else 1 for i in series.values())


def count_instances(attrs: str) -> int:
    """Instances a copiableAttributes string names; a whole series counts as one."""
    return _count(series_map(attrs))


def merge_attributes(a: str, b: str) -> str:
    """The canonical union of two copiableAttributes strings (a whole series absorbs
    any instances of it)."""
    union = _Subset(a)
    union.add(series_map(b))
    return union.to_json()


# ---------------------------------------------------------------- planning


@dataclass
class _Building:
    unit_id: int
    first: CopySpec
    after: tuple[int, ...]
    source_version_id: str | None
    destination_version_id: str | None
    rows: list[CopySpec] = field(default_factory=list)
    subset: _Subset | None = None

    def freeze(self) -> CopyUnit:
        f = self.first
        attrs = f.copiable_attributes if self.subset is None else self.subset.to_json()
        # CopyUnit's generated __init__ sets each field through object.__setattr__ (it is
        # frozen): filling __dict__ at once makes the same object in an eighth of the time,
        # which a million-row plan notices
        unit = object.__new__(CopyUnit)
        call = CopyRequest(f.datastore_id, f.source_image_set_id, self.source_version_id,
                           f.destination_image_set_id, self.destination_version_id, attrs,
                           f.force, f.promote_to_primary)
        unit.__dict__.update(unit_id=self.unit_id, rows=tuple(self.rows), call=call,
                             after=self.after)
        return unit


MergeKey = tuple[str, str, str, bool, bool]


def _merge_key(spec: CopySpec) -> MergeKey | None:
    if spec.copiable_attributes is None or not spec.destination_image_set_id:
        return None
    return (spec.datastore_id, spec.source_image_set_id, spec.destination_image_set_id,
            spec.force, spec.promote_to_primary)


class Planner:
    """Incremental planner: feed manifest batches in order, get their units.

    `after` may name units of earlier batches. Merging happens within a batch only.
    """

    def __init__(self, *, merge: bool = True, limits: MergeLimits = MergeLimits()) -> None:
        self._merge = merge
        self._limits = limits
        # data store -> image set -> the last unit touching it (nested: no tuple per image set)
        self._last: dict[str, dict[str, int]] = {}
        self._next_id = 0

    @property
    def next_unit_id(self) -> int:
        """The id the next unit will get."""
        return self._next_id

    def new_unit_id(self) -> int:
        """Reserve a fresh id, never reused by later batches."""
        self._next_id += 1
        return self._next_id - 1

    def add_batch(self, specs: Sequence[CopySpec],
                  runnable: Sequence[bool] | None = None) -> list[CopyUnit]:
        """Units for the runnable rows of one batch (all rows when `runnable` is None)."""
        built: list[_Building] = []
        open_units: dict[MergeKey, _Building] = {}
        lasts = self._last
        merge = self._merge
        for i, spec in enumerate(specs):
            last = lasts.get(spec.datastore_id)
            if last is None:
                last = lasts[spec.datastore_id] = {}
            src, dst = spec.source_image_set_id, spec.destination_image_set_id
            if runnable is not None and not runnable[i]:
                last.setdefault(src, NO_UNIT)
                if dst:
                    last.setdefault(dst, NO_UNIT)
                continue
            key = _merge_key(spec) if merge else None
            if key is not None:
                unit = open_units.get(key)
                if unit is not None and self._try_merge(unit, spec, last):
                    continue
            # the units this one waits for: the last to touch its source or destination
            before_src = last.get(src, NO_UNIT)
            before_dst = last.get(dst, NO_UNIT) if dst else NO_UNIT
            if before_dst == NO_UNIT or before_dst == before_src:
                after: tuple[int, ...] = () if before_src == NO_UNIT else (before_src,)
            elif before_src == NO_UNIT:
                after = (before_dst,)
            else:
                after = (min(before_src, before_dst), max(before_src, before_dst))
            unit_id = self._next_id
            self._next_id += 1
            unit = _Building(
                unit_id, spec, after,
                spec.source_version_id if src not in last else None,
                spec.destination_version_id if dst and dst not in last else None,
                [spec],
            )
            last[src] = unit_id
            if dst:
                last[dst] = unit_id
            built.append(unit)
            if key is not None:
                open_units[key] = unit
        return [b.freeze() for b in built]

    def _try_merge(self, unit: _Building, spec: CopySpec, last: dict[str, int]) -> bool:
        dst = spec.destination_image_set_id
        if dst is None or last.get(spec.source_image_set_id) != unit.unit_id or last.get(dst) != unit.unit_id:
            return False
        limits = self._limits
        if len(unit.rows) + 1 > limits.max_rows:
            return False
        if unit.subset is None:
            assert unit.first.copiable_attributes is not None
            unit.subset = _Subset(unit.first.copiable_attributes)
        assert spec.copiable_attributes is not None
        other = series_map(spec.copiable_attributes)
        chars, instances = unit.subset.merged_size(other)
        if chars > limits.max_chars or instances > limits.max_instances:
            return False
        unit.subset.add(other)
        unit.rows.append(spec)
        return True


def plan(specs: Iterable[CopySpec], *, merge: bool = True, limits: MergeLimits = MergeLimits()) -> list[CopyUnit]:
    """Plan a whole (small) manifest as one batch."""
    return Planner(merge=merge, limits=limits).add_batch(list(specs))


def _union(rows: Sequence[CopySpec]) -> str | None:
    if rows[0].copiable_attributes is None:
        return None
    if len(rows) == 1:
        return rows[0].copiable_attributes
    union = _Subset(rows[0].copiable_attributes)
    for r in rows[1:]:
        assert r.copiable_attributes is not None
        union.add(series_map(r.copiable_attributes))
    return union.to_json()
