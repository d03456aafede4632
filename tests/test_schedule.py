"""plan/schedule.py: which units may start, with the plan's DAG and per-data-store slots."""

from __future__ import annotations

import pytest

from batchcopy.plan.units import plan
from batchcopy.plan.schedule import Schedule
from batchcopy.core.specs import CopySpec

DS, DS2 = "d" * 32, "e" * 32
A, B, C, D, E = ("a" * 32, "b" * 32, "c" * 32, "1" * 32, "2" * 32)


def spec(n: int, src: str, dest: str | None = None, ds: str = DS) -> CopySpec:
    return CopySpec(manifest_row=n, row_id=str(n), datastore_id=ds, source_image_set_id=src,
                    destination_image_set_id=dest)


def ids(units: list) -> list[int]:
    return [u.unit_id for u in units]


def test_units_start_when_what_they_come_after_is_terminal() -> None:
    units = plan([spec(1, A, D), spec(2, A, E), spec(3, B, E), spec(4, C, D)])
    s = Schedule(max_in_flight=100)
    for u in units:
        s.add(u)
    first = s.take_ready()
    assert ids(first) == [0]  # everything else touches A, D or E after unit 0
    assert s.take_ready() == []
    s.finish(first[0])
    assert ids(s.take_ready()) == [1, 3]  # A->E and C->D run side by side
    s.finish(units[1])
    assert ids(s.take_ready()) == [2]
    s.finish(units[2])
    s.finish(units[3])
    assert len(s) == 0 and s.done == {0, 1, 2, 3}


def test_copy_slots_per_datastore() -> None:
    units = plan([spec(1, A), spec(2, B), spec(3, C), spec(4, A, ds=DS2)])
    s = Schedule(max_in_flight=2)
    for u in units:
        s.add(u)
    started = s.take_ready()
    assert ids(started) == [0, 1, 3]  # two slots in DS, DS2 is not held up by DS
    assert s.in_flight(DS) == 2 and s.in_flight(DS2) == 1
    s.finish(started[0])
    assert ids(s.take_ready()) == [2]


def test_a_later_batch_may_name_units_that_finished_long_ago() -> None:
    from batchcopy.plan.units import Planner

    planner = Planner()
    s = Schedule(max_in_flight=10)
    (u0,) = planner.add_batch([spec(1, A, D)])
    s.add(u0)
    s.finish(s.take_ready()[0])
    (u1,) = planner.add_batch([spec(2, B, D)])
    assert u1.after == (u0.unit_id,)
    s.add(u1)
    assert ids(s.take_ready()) == [u1.unit_id]


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Schedule(0)
