"""Properties of the planner and the schedule, for manifests hypothesis makes up: random
image sets from small pools (so rows collide), whole and subset copies, new and shared
destinations, two data stores, pins, batches and merge limits; then the real Schedule
driven through random interleavings of starts and finishes.

For every manifest and every interleaving:
* every row is in exactly one call, calls keep manifest order within them, merged calls
  stay within the service limits (tests/test_plan.py's check_invariants);
* no image set is in two calls at once, and no data store has more than max_in_flight;
* the calls touching an image set start in manifest order (chains keep manifest order);
* versions chain: when a call starts, every earlier call writing its destination has
  ended, so it reads the version they left (1 + their number), and only the first call
  touching an image set carries the manifest's pin.

Bounded and deterministic: derandomize=True, a fixed number of examples, no deadline.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchcopy.plan.units import MergeLimits, Planner
from batchcopy.plan.schedule import Schedule
from batchcopy.core.specs import CopySpec
from test_plan import DS, DS2, Rows, plan_checked, sub

NAMES = "abcdefgh"
SERIES = ["1.1", "1.2", "1.3"]
SOPS = ["0", "1", "2", "3"]  # an instance 1.2.3 of series 1.2
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

subsets = st.one_of(
    st.none(),  # the whole image set
    st.lists(st.tuples(st.sampled_from(SERIES), st.sampled_from([None, *SOPS])), min_size=1, max_size=4)
    .map(lambda items: sub(*(s if sop is None else f"{s}/{s}.{sop}" for s, sop in items))),
)


@st.composite
def manifests(draw: Any) -> list[CopySpec]:
    pool = draw(st.integers(2, len(NAMES)))
    names = NAMES[:pool]
    m = Rows()
    for _ in range(draw(st.integers(1, 40))):
        prev = m.specs[-1] if m.specs else None
        if prev is not None and prev.destination_image_set_id and draw(st.booleans()):
            # another subset along the previous row's path: what merging feeds on
            m.add(prev.source_image_set_id[0], prev.destination_image_set_id[0],
                  draw(subsets.filter(lambda a: a is not None)), ds=prev.datastore_id, force=prev.force,
                  promote=prev.promote_to_primary)
            continue
        src = draw(st.sampled_from(names))
        dst = draw(st.one_of(st.none(), st.sampled_from([x for x in names if x != src])))
        m.add(src, dst, draw(subsets), ds=draw(st.sampled_from([DS, DS, DS2])), force=draw(st.booleans()),
              promote=draw(st.booleans()), sv=draw(st.sampled_from([None, "1", "2"])),
              dv=draw(st.sampled_from([None, "1", "3"])))
    return m.specs


limits_choices = st.sampled_from([MergeLimits(), MergeLimits(max_chars=300, max_instances=6, max_rows=3),
                                  MergeLimits(max_rows=2), MergeLimits(max_instances=4)])


@PROPERTY
@given(specs=manifests(), limits=limits_choices, merge=st.booleans(), size=st.sampled_from([1, 3, 17, 1000]),
       max_in_flight=st.integers(1, 4), data=st.data())
def test_plans_and_schedules_keep_every_invariant(specs: list[CopySpec], limits: MergeLimits, merge: bool,
                                                  size: int, max_in_flight: int, data: Any) -> None:
    units = plan_checked(specs, limits, merge=merge, size=size)

    # first row touching each image set (for pins), and the order of calls per image set
    first_row: dict[tuple[str, str], int] = {}
    for s in specs:
        for image_set in s.image_sets():
            first_row.setdefault((s.datastore_id, image_set), s.manifest_row)
    planned: dict[tuple[str, str], list[int]] = {}
    for u in units:
        for image_set in u.image_sets():
            planned.setdefault((u.call.datastore_id, image_set), []).append(u.unit_id)

    schedule = Schedule(max_in_flight)
    for u in units:
        schedule.add(u)
    running: dict[int, Any] = {}
    started: list[int] = []
    writes: Counter[tuple[str, str]] = Counter()  # ended calls per destination: its version - 1
    while schedule or running:
        for u in schedule.take_ready():
            assert u.unit_id not in running and u.unit_id not in started, "a call started twice"
            busy = {(r.call.datastore_id, i) for r in running.values() for i in r.image_sets()}
            mine = {(u.call.datastore_id, i) for i in u.image_sets()}
            assert not busy & mine, f"unit {u.unit_id} shares {busy & mine} with a running call"
            if u.call.destination_image_set_id:
                key = (u.call.datastore_id, u.call.destination_image_set_id)
                earlier = planned[key][:planned[key].index(u.unit_id)]
                earlier_writes = sum(1 for e in earlier if units[e].call.destination_image_set_id == key[1])
                assert writes[key] == earlier_writes  # it reads version 1 + earlier_writes
                if u.call.destination_version_id is not None:
                    assert first_row[key] == u.rows[0].manifest_row
            if u.call.source_version_id is not None:
                assert first_row[(u.call.datastore_id, u.call.source_image_set_id)] == u.rows[0].manifest_row
            running[u.unit_id] = u
            started.append(u.unit_id)
        per_store = Counter(u.call.datastore_id for u in running.values())
        assert all(n <= max_in_flight for n in per_store.values()), per_store
        assert running, "nothing runs and nothing can start: the schedule is stuck"
        # a random call ends (hypothesis picks which: every interleaving is fair game)
        done = running.pop(data.draw(st.sampled_from(sorted(running)), label="ends"))
        if done.call.destination_image_set_id:
            writes[(done.call.datastore_id, done.call.destination_image_set_id)] += 1
        schedule.finish(done)

    assert sorted(started) == [u.unit_id for u in units]  # every call ran, once
    position = {unit_id: k for k, unit_id in enumerate(started)}
    for chain in planned.values():  # chains keep manifest order
        assert [position[c] for c in chain] == sorted(position[c] for c in chain)


@PROPERTY
@given(specs=manifests())
def test_planning_is_deterministic_and_batches_change_only_merging(specs: list[CopySpec]) -> None:
    once = Planner().add_batch(specs)
    assert once == Planner().add_batch(specs)
    # unmerged, the plan is the same whatever the batch size: one call per row, same edges
    whole = Planner(merge=False).add_batch(specs)
    per_row = Planner(merge=False)
    split = [u for s in specs for u in per_row.add_batch([s])]
    assert len(whole) == len(specs)
    assert [(u.unit_id, u.after, u.keys) for u in whole] == [(u.unit_id, u.after, u.keys) for u in split]
