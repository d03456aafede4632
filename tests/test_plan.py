"""Planning: dependencies between calls, merging, version pins, splitting.

The hand-written cases pin down each rule; the randomised ones (fixed seeds) check the
invariants every plan must keep, on manifests small id pools make dense with conflicts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from batchcopy.plan.units import (
    CopyUnit,
    MergeLimits,
    Planner,
    count_instances,
    merge_attributes,
    plan,
)
from batchcopy.core.specs import CopyRequest, CopySpec
from batchcopy.manifest.attributes import canonical_attributes, parse_copiable_attributes

DS = "d" * 32
DS2 = "e" * 32


def iid(name: str) -> str:
    """A valid image set id from a short name: iid("a") == "a" * 32."""
    return (name * 32)[:32]


def sub(*items: str) -> str:
    """Subset from "series" (whole) or "series/sop" items."""
    series: dict[str, set[str] | None] = {}
    for item in items:
        s, _, sop = item.partition("/")
        if not sop:
            series[s] = None
        elif series.get(s, set()) is not None:
            series.setdefault(s, set()).add(sop)  # type: ignore[union-attr]
    return canonical_attributes(series)


class Rows:
    """Builds specs in manifest order with increasing row numbers."""

    def __init__(self) -> None:
        self.specs: list[CopySpec] = []

    def add(self, src: str, dst: str | None = None, attrs: str | None = None, *, ds: str = DS,
            force: bool = False, promote: bool = False, sv: str | None = None,
            dv: str | None = None) -> CopySpec:
        n = len(self.specs) + 1
        spec = CopySpec(manifest_row=n, row_id=f"r{n}", datastore_id=ds, source_image_set_id=iid(src),
                        source_version_id=sv, destination_image_set_id=iid(dst) if dst else None,
                        destination_version_id=dv, copiable_attributes=attrs, force=force,
                        promote_to_primary=promote)
        self.specs.append(spec)
        return spec


def shape(units: Sequence[CopyUnit]) -> list[tuple[int, list[int], tuple[int, ...]]]:
    """(unit_id, manifest rows, after) per unit: the part of a plan most tests care about."""
    return [(u.unit_id, [r.manifest_row for r in u.rows], u.after) for u in units]


# ---------------------------------------------------------------- dependencies


def test_single_row_unit_carries_the_row() -> None:
    m = Rows()
    row = m.add("a", sv="3")
    (unit,) = plan(m.specs)
    assert unit == CopyUnit(unit_id=0, rows=(row,), call=CopyRequest(
        datastore_id=DS, source_image_set_id=iid("a"), source_version_id="3",
        destination_image_set_id=None, destination_version_id=None, copiable_attributes=None,
        force=False, promote_to_primary=False), after=())
    assert unit.image_sets() == (iid("a"),)


def test_independent_rows_have_no_dependencies() -> None:
    m = Rows()
    m.add("a", "b")
    m.add("c", "d", force=True)
    m.add("e")
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], ()), (2, [3], ())]


def test_chain() -> None:
    m = Rows()
    m.add("a", "b")  # 0
    m.add("b", "c")  # 1: b
    m.add("c", "d")  # 2: c
    m.add("x")       # 3
    m.add("d")       # 4: d
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,)), (3, [4], ()),
                                    (4, [5], (2,))]


def test_shared_destination_runs_in_manifest_order() -> None:
    m = Rows()
    m.add("a", "d")
    m.add("b", "d")
    m.add("c", "d")
    units = plan(m.specs)
    assert shape(units) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,))]
    assert units[2].image_sets() == (iid("c"), iid("d"))


def test_shared_source_is_serialised_too() -> None:
    # a source is LOCKED while it is copied, so two copies from it cannot overlap
    m = Rows()
    m.add("a")
    m.add("a", "b")
    m.add("a")
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,))]


def test_dag_dependencies() -> None:
    m = Rows()
    m.add("a", "d")  # 0
    m.add("a", "e")  # 1: after 0 (a)
    m.add("b", "e")  # 2: after 1 (e)
    m.add("c", "d")  # 3: after 0 (d)
    m.add("e", "d")  # 4: after 2 (e) and 3 (d)
    m.add("b", "a")  # 5: after 2 (b) and 1 (a)
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,)), (3, [4], (0,)),
                                    (4, [5], (2, 3)), (5, [6], (1, 2))]


def test_after_is_deduplicated() -> None:
    m = Rows()
    m.add("a", "b")
    m.add("a", "b", force=True)  # both image sets last touched by unit 0
    m.add("b", "a")
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,))]


def test_image_sets_are_per_datastore() -> None:
    m = Rows()
    m.add("a", "b")
    m.add("a", "b", ds=DS2)
    m.add("b", ds=DS2)
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], ()), (2, [3], (1,))]


def test_cross_batch_dependencies() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add("b", "e")
    m.add("a", "d", sub("1.1/2"))  # would merge with row 1 in one batch
    m.add("e", "f")
    planner = Planner()
    first = planner.add_batch(m.specs[:2])
    second = planner.add_batch(m.specs[2:])
    assert planner.next_unit_id == 4
    assert shape(first) == [(0, [1], ()), (1, [2], ())]
    assert shape(second) == [(2, [3], (0,)), (3, [4], (1,))]
    assert planner.add_batch([]) == []
    assert shape(plan(m.specs)) == [(0, [1, 3], ()), (1, [2], ()), (2, [4], (1,))]


def test_ids_are_deterministic_and_in_first_row_order() -> None:
    rng = random.Random(7)
    m = random_manifest(rng, 300)
    one, two = plan(m), plan(list(m))
    assert one == two
    assert [u.unit_id for u in one] == list(range(len(one)))
    assert [u.rows[0].manifest_row for u in one] == sorted(u.rows[0].manifest_row for u in one)


# ---------------------------------------------------------------- merging


def test_subset_rows_into_one_destination_merge() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"), sv="1", dv="4")
    m.add("a", "d", sub("1.1/2"), sv="9", dv="9")
    m.add("x", "y")
    m.add("a", "d", sub("1.2"))
    units = plan(m.specs)
    assert shape(units) == [(0, [1, 2, 4], ()), (1, [3], ())]
    u = units[0]
    assert u.call.copiable_attributes == sub("1.1/1", "1.1/2", "1.2")
    assert (u.call.source_version_id, u.call.destination_version_id) == ("1", "4")  # the first row's pins
    assert (u.call.datastore_id, u.call.source_image_set_id, u.call.destination_image_set_id) == (DS, iid("a"), iid("d"))


def test_merged_rows_keep_the_order_of_the_image_sets() -> None:
    m = Rows()
    m.add("z", "d")                    # 0
    m.add("a", "d", sub("1.1/1"))      # 1: after 0 (d)
    m.add("q", "a")                    # 2: after 1 (a): blocks further merging into unit 1
    m.add("a", "d", sub("1.1/2"))      # 3: after 1 (d), 2 (a)
    m.add("a", "d", sub("1.1/3"))      # merges into 3
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,)), (3, [4, 5], (1, 2))]


@pytest.mark.parametrize("between", [("a", None), ("a", "x"), ("x", "a"), ("d", None), ("x", "d"),
                                     ("d", "x"), ("d", "a")])
def test_merge_blocked_by_an_intervening_row(between: tuple[str, str | None]) -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add(*between)
    m.add("a", "d", sub("1.1/2"))
    units = plan(m.specs)
    assert [[r.manifest_row for r in u.rows] for u in units] == [[1], [2], [3]]
    # row 3 waits for row 2, and for row 1 through whichever image set row 2 left alone
    assert units[2].after == ((1,) if set(between) == {"a", "d"} else (0, 1))


def test_unrelated_intervening_row_does_not_block() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add("b", "e")
    m.add("x", "b")
    m.add("a", "d", sub("1.1/2"))
    assert shape(plan(m.specs)) == [(0, [1, 4], ()), (1, [2], ()), (2, [3], (1,))]


@pytest.mark.parametrize("second", [
    dict(dst=None, attrs=sub("1.1/2")),                      # new image set: never merged
    dict(dst="d", attrs=None),                               # whole image set copy
    dict(dst="d", attrs=sub("1.1/2"), force=True),
    dict(dst="d", attrs=sub("1.1/2"), promote=True),
    dict(dst="d", attrs=sub("1.1/2"), ds=DS2),
    dict(dst="e", attrs=sub("1.1/2")),
])
def test_no_merge_when_keys_differ(second: dict) -> None:
    m = Rows()
    m.add("a", "d" if second["dst"] else None, sub("1.1/1"))
    m.add("a", **second)
    assert len(plan(m.specs)) == 2


def test_new_image_set_subset_rows_never_merge() -> None:
    m = Rows()
    m.add("a", None, sub("1.1/1"))
    m.add("a", None, sub("1.1/2"))
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,))]


def test_whole_copy_into_destination_blocks_and_does_not_merge() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add("a", "d")
    m.add("a", "d", sub("1.1/2"))
    assert shape(plan(m.specs)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,))]


def test_no_merge_option() -> None:
    m = Rows()
    for i in range(4):
        m.add("a", "d", sub(f"1.1/{i}"))
    assert shape(plan(m.specs, merge=False)) == [(0, [1], ()), (1, [2], (0,)), (2, [3], (1,)), (3, [4], (2,))]
    assert len(Planner(merge=False).add_batch(m.specs)) == 4


def test_merge_limit_rows() -> None:
    m = Rows()
    for i in range(7):
        m.add("a", "d", sub(f"1.1/{i}"))
    units = plan(m.specs, limits=MergeLimits(max_rows=3))
    assert shape(units) == [(0, [1, 2, 3], ()), (1, [4, 5, 6], (0,)), (2, [7], (1,))]
    assert units[1].call.copiable_attributes == sub("1.1/3", "1.1/4", "1.1/5")


def test_merge_limit_instances_is_exact() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1", "1.1/2"))
    m.add("a", "d", sub("1.1/2", "1.1/3"))  # union: 3 instances
    m.add("a", "d", sub("1.2"))             # a whole series counts as 1: 4
    m.add("a", "d", sub("1.1/1"))           # already there: still 4
    m.add("a", "d", sub("1.3/9"))           # 5
    assert shape(plan(m.specs, limits=MergeLimits(max_instances=4))) == [
        (0, [1, 2, 3, 4], ()), (1, [5], (0,))]
    assert len(plan(m.specs, limits=MergeLimits(max_instances=5))) == 1
    assert count_instances(plan(m.specs)[0].call.copiable_attributes or "") == 5


def test_merge_limit_chars_is_exact() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add("a", "d", sub("1.1/2"))
    m.add("a", "d", sub("1.1/3"))
    two = len(sub("1.1/1", "1.1/2"))
    assert shape(plan(m.specs, limits=MergeLimits(max_chars=two))) == [(0, [1, 2], ()), (1, [3], (0,))]
    assert shape(plan(m.specs, limits=MergeLimits(max_chars=two - 1))) == [
        (0, [1], ()), (1, [2], (0,)), (2, [3], (1,))]
    # the new unit (row 3 here) takes further rows
    m.add("a", "d", sub("1.1/4"))
    assert shape(plan(m.specs, limits=MergeLimits(max_chars=two))) == [(0, [1, 2], ()), (1, [3, 4], (0,))]


def test_merge_limits_default_to_the_service_limits() -> None:
    assert MergeLimits() == MergeLimits(max_chars=260_000, max_instances=1000, max_rows=1000)
    m = Rows()
    for i in range(1001):
        m.add("a", "d", sub(f"1.1/{i}"))
    units = plan(m.specs)
    assert [len(u.rows) for u in units] == [1000, 1]


def test_merge_only_within_a_batch() -> None:
    m = Rows()
    for i in range(5):
        m.add("a", "d", sub(f"1.1/{i}"))
    planner = Planner()
    units = planner.add_batch(m.specs[:2]) + planner.add_batch(m.specs[2:])
    assert shape(units) == [(0, [1, 2], ()), (1, [3, 4, 5], (0,))]


# ---------------------------------------------------------------- version pins


def test_pins_only_on_first_touch() -> None:
    m = Rows()
    m.add("a", "d", sv="1", dv="2")     # 0: first touch of a and d
    m.add("b", "d", sv="5", dv="3")     # 1: b first, d not
    m.add("d", "e", sv="3", dv="1")     # 2: d not first (written by 0 and 1), e first
    m.add("a", sv="1")                  # 3: a already touched
    m.add("c", "a", sv="7", dv="1")     # 4: c first, a not
    units = plan(m.specs)
    assert [(u.call.source_version_id, u.call.destination_version_id) for u in units] == [
        ("1", "2"), ("5", None), (None, "1"), (None, None), ("7", None)]


def test_pins_across_batches() -> None:
    m = Rows()
    m.add("a", sv="1")
    m.add("a", "b", sv="1", dv="4")
    planner = Planner()
    (u0,) = planner.add_batch(m.specs[:1])
    (u1,) = planner.add_batch(m.specs[1:])
    assert u0.call.source_version_id == "1"
    assert (u1.call.source_version_id, u1.call.destination_version_id) == (None, "4")


def test_merged_rows_do_not_bring_their_pins() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/1"))
    m.add("a", "d", sub("1.1/2"), sv="4", dv="5")
    (unit,) = plan(m.specs)
    assert (unit.call.source_version_id, unit.call.destination_version_id) == (None, None)


# ---------------------------------------------------------------- attributes


def test_merge_attributes_union() -> None:
    assert merge_attributes(sub("1.1/1"), sub("1.1/2")) == sub("1.1/1", "1.1/2")
    assert merge_attributes(sub("1.1/1"), sub("1.2/1")) == sub("1.1/1", "1.2/1")
    assert merge_attributes(sub("1.1/1", "1.1/2"), sub("1.1")) == sub("1.1")  # whole series absorbs
    assert merge_attributes(sub("1.1"), sub("1.1/5")) == sub("1.1")
    assert merge_attributes(sub("1.1/1"), sub("1.1/1")) == sub("1.1/1")
    # non-canonical input is accepted, the output is canonical
    loose = '{"Study": {"Series": {"1.3": {}}}}'
    assert merge_attributes(loose, sub("1.1/1")) == sub("1.1/1", "1.3")


def test_count_instances() -> None:
    assert count_instances(sub("1.1/1", "1.1/2", "1.2/3")) == 3
    assert count_instances(sub("1.1", "1.2/3")) == 2
    assert count_instances(sub("1.1")) == 1


def random_subset(rng: random.Random) -> str:
    items = []
    for _ in range(rng.randint(1, 3)):
        series = f"1.{rng.randint(1, 3)}"
        if rng.random() < 0.15:
            items.append(series)
        else:
            items.extend(f"{series}/{series}.{rng.randint(1, 12)}" for _ in range(rng.randint(1, 3)))
    return sub(*items)


def reference_union(attrs: Sequence[str]) -> dict[str, frozenset[str] | None]:
    out: dict[str, set[str] | None] = {}
    for a in attrs:
        for uid, body in json.loads(a)["Study"]["Series"].items():
            insts = set(body.get("Instances", {}))
            if not insts or (uid in out and out[uid] is None):
                out[uid] = None
            else:
                out[uid] = (out.get(uid) or set()) | insts
    return {k: (frozenset(v) if v is not None else None) for k, v in out.items()}


def test_merge_attributes_randomised() -> None:
    rng = random.Random(11)
    for _ in range(400):
        parts = [random_subset(rng) for _ in range(rng.randint(2, 5))]
        merged = parts[0]
        for p in parts[1:]:
            merged = merge_attributes(merged, p)
        assert parse_copiable_attributes(merged) == merged  # valid and canonical
        assert reference_union([merged]) == reference_union(parts)
        assert merge_attributes(parts[1], parts[0]) == merge_attributes(parts[0], parts[1])


def test_merge_limit_boundaries_randomised() -> None:
    """The planner's incremental size bookkeeping agrees exactly with the real union."""
    rng = random.Random(5)
    for _ in range(300):
        m = Rows()
        parts = [random_subset(rng) for _ in range(rng.randint(2, 4))]
        for p in parts:
            m.add("a", "d", p)
        prefixes = [parts[0]]
        for p in parts[1:]:
            prefixes.append(merge_attributes(prefixes[-1], p))
        union = prefixes[-1]
        # a union can shrink (a whole series replaces its instances): the limit must hold
        # at every step of the merge
        chars = max(len(p) for p in prefixes)
        instances = max(count_instances(p) for p in prefixes)
        exact = MergeLimits(max_chars=chars, max_instances=instances)
        (unit,) = plan(m.specs, limits=exact)
        assert unit.call.copiable_attributes == union
        sizes = ([len(p) for p in prefixes], [count_instances(p) for p in prefixes])
        tights = (replace(exact, max_chars=chars - 1), replace(exact, max_instances=instances - 1))
        for tight, size in zip(tights, sizes):
            units = plan(m.specs, limits=tight)
            if size.index(max(size)) > 0:  # the merge that reaches the maximum must be refused
                assert len(units) >= 2
            for u in units:
                if len(u.rows) > 1:
                    assert len(u.call.copiable_attributes or "") <= tight.max_chars
                    assert count_instances(u.call.copiable_attributes or "") <= tight.max_instances


# ---------------------------------------------------------------- rows that need no call


def test_rows_that_need_no_call_make_no_unit_but_still_own_the_first_pin() -> None:
    """A rerun feeds done rows too: they make no unit, no unit waits for them, and a later
    row's pin is not taken for the first one (the done row wrote that image set)."""
    m = Rows()
    m.add("a", "d", sub("1.1/0"), sv="1", dv="1")  # done in an earlier run
    m.add("a", "d", sub("1.1/1"), sv="1", dv="2")  # its pins are superseded
    m.add("b", "e", sub("1.2/0"), dv="4")  # not run yet: its pin is the first for e
    units = Planner().add_batch(m.specs, runnable=[False, True, True])
    assert [[r.manifest_row for r in u.rows] for u in units] == [[2], [3]]
    second, third = units
    assert second.after == () and (second.call.source_version_id, second.call.destination_version_id) == (None, None)
    assert third.call.destination_version_id == "4"


def test_a_done_row_between_two_mergeable_rows_does_not_stop_the_merge() -> None:
    m = Rows()
    m.add("a", "d", sub("1.1/0"))
    m.add("a", "d", sub("1.1/1"))  # done: no call
    m.add("a", "d", sub("1.1/2"))
    (unit,) = Planner().add_batch(m.specs, runnable=[True, False, True])
    assert [r.manifest_row for r in unit.rows] == [1, 3]
    assert unit.call.copiable_attributes == sub("1.1/0", "1.1/2")


# ---------------------------------------------------------------- properties


def random_manifest(rng: random.Random, n: int, pool: int = 6, repeat: float = 0.3) -> list[CopySpec]:
    """Random rows over a small pool of image sets; with probability `repeat` a row copies
    another subset along the previous row's path (what merging feeds on)."""
    m = Rows()
    names = "abcdefghijklmnop"[:pool]
    for _ in range(n):
        prev = m.specs[-1] if m.specs else None
        if prev is not None and prev.destination_image_set_id and rng.random() < repeat:
            m.add(prev.source_image_set_id[0], prev.destination_image_set_id[0], random_subset(rng),
                  ds=prev.datastore_id, force=prev.force, promote=prev.promote_to_primary,
                  sv=rng.choice([None, "1"]), dv=rng.choice([None, "1"]))
            continue
        src = rng.choice(names)
        dst = rng.choice([None, None] + [x for x in names if x != src])
        attrs = random_subset(rng) if rng.random() < 0.6 else None
        m.add(src, dst, attrs, ds=DS if rng.random() < 0.85 else DS2, force=rng.random() < 0.2,
              promote=rng.random() < 0.1, sv=rng.choice([None, "1", "2"]), dv=rng.choice([None, "1", "3"]))
    return m.specs


def check_invariants(specs: list[CopySpec], units: list[CopyUnit], limits: MergeLimits,
                     batches: list[list[CopySpec]]) -> None:
    by_id = {u.unit_id: u for u in units}
    # every row in exactly one unit, rows in manifest order within a unit
    rows = sorted(r.manifest_row for u in units for r in u.rows)
    assert rows == [s.manifest_row for s in specs]
    assert [u.unit_id for u in units] == list(range(len(units)))
    batch_of = {s.manifest_row: i for i, b in enumerate(batches) for s in b}
    for u in units:
        nums = [r.manifest_row for r in u.rows]
        assert nums == sorted(nums)
        assert list(u.after) == sorted(set(u.after)) and all(a < u.unit_id for a in u.after)
        first = u.rows[0]
        assert (u.call.datastore_id, u.call.source_image_set_id, u.call.destination_image_set_id, u.call.force,
                u.call.promote_to_primary) == (first.datastore_id, first.source_image_set_id,
                                          first.destination_image_set_id, first.force,
                                          first.promote_to_primary)
        if len(u.rows) == 1:
            assert u.call.copiable_attributes == first.copiable_attributes
            continue
        # a merged unit: same key, subsets into an existing destination, one batch, within limits
        assert u.call.destination_image_set_id is not None
        assert len({batch_of[n] for n in nums}) == 1
        for r in u.rows:
            assert (r.datastore_id, r.source_image_set_id, r.destination_image_set_id, r.force,
                    r.promote_to_primary) == (u.call.datastore_id, u.call.source_image_set_id,
                                              u.call.destination_image_set_id, u.call.force, u.call.promote_to_primary)
            assert r.copiable_attributes is not None
        attrs = u.call.copiable_attributes
        assert attrs is not None and parse_copiable_attributes(attrs) == attrs
        assert reference_union([r.copiable_attributes or "" for r in u.rows]) == reference_union([attrs])
        assert len(attrs) <= limits.max_chars
        assert count_instances(attrs) <= limits.max_instances
        assert len(u.rows) <= limits.max_rows
    # per image set: the units touching it form a chain of direct edges, and their rows
    # keep manifest order (every row of an earlier unit precedes every row of a later one)
    touching: dict[tuple[str, str], list[CopyUnit]] = {}
    for u in units:
        for image_set in u.image_sets():
            touching.setdefault((u.call.datastore_id, image_set), []).append(u)
    for chain in touching.values():
        for earlier, later in zip(chain, chain[1:]):
            assert earlier.unit_id in later.after
            assert max(r.manifest_row for r in earlier.rows) < min(r.manifest_row for r in later.rows)
    # `after` holds only those chain edges
    for u in units:
        for a in u.after:
            assert set(by_id[a].image_sets()) & set(u.image_sets()) and by_id[a].call.datastore_id == u.call.datastore_id
    # pins: the first row's pins, only where it is the first row touching that image set
    seen: set[tuple[str, str]] = set()
    first_touch: dict[int, tuple[bool, bool]] = {}
    for s in specs:
        src = (s.datastore_id, s.source_image_set_id)
        dst = (s.datastore_id, s.destination_image_set_id) if s.destination_image_set_id else None
        first_touch[s.manifest_row] = (src not in seen, dst is not None and dst not in seen)
        seen.add(src)
        if dst:
            seen.add(dst)
    for u in units:
        src_first, dst_first = first_touch[u.rows[0].manifest_row]
        assert u.call.source_version_id == (u.rows[0].source_version_id if src_first else None)
        assert u.call.destination_version_id == (u.rows[0].destination_version_id if dst_first else None)


@pytest.mark.parametrize("seed", range(40))
def test_random_manifests_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    specs = random_manifest(rng, rng.randint(1, 250), pool=rng.randint(2, 8))
    limits = rng.choice([MergeLimits(), MergeLimits(max_chars=300, max_instances=6, max_rows=3),
                         MergeLimits(max_rows=2), MergeLimits(max_instances=4)])
    plan_checked(specs, limits, merge=rng.random() < 0.8, size=rng.choice([1, 3, 17, 1000]))


def plan_checked(specs: list[CopySpec], limits: MergeLimits, *, merge: bool, size: int) -> list[CopyUnit]:
    """The units of `specs` planned in batches of `size`, once they pass check_invariants."""
    batches = [specs[i:i + size] for i in range(0, len(specs), size)]
    planner = Planner(merge=merge, limits=limits)
    units = [u for b in batches for u in planner.add_batch(b)]
    check_invariants(specs, units, limits, batches)
    if not merge:
        assert len(units) == len(specs)
    return units


@pytest.mark.parametrize("seed", range(10))
def test_merging_is_greedy_when_nothing_intervenes(seed: int) -> None:
    """With generous limits, consecutive mergeable rows of one batch always share a unit,
    and the merged plan has exactly the same per-image-set order as the unmerged one."""
    rng = random.Random(100 + seed)
    specs = random_manifest(rng, 200, pool=3)
    units = plan(specs)
    unit_of = {r.manifest_row: u.unit_id for u in units for r in u.rows}
    for a, b in zip(specs, specs[1:]):
        if (a.copiable_attributes and b.copiable_attributes and a.destination_image_set_id
                and (a.datastore_id, a.source_image_set_id, a.destination_image_set_id, a.force,
                     a.promote_to_primary) == (b.datastore_id, b.source_image_set_id,
                                               b.destination_image_set_id, b.force, b.promote_to_primary)):
            assert unit_of[a.manifest_row] == unit_of[b.manifest_row]
    check_invariants(specs, units, MergeLimits(), [specs])
    assert len(units) < len(plan(specs, merge=False))
