"""The forecast behind `batchcopy plan` and run's confirmation: calls, merges, chains and
time, computed streaming (pure, no HTTP), and the human durations they are told in."""

from __future__ import annotations

import pytest

from batchcopy.core.durations import human_duration, parse_duration
from batchcopy.plan.forecast import Forecaster
from batchcopy.plan.units import Planner
from batchcopy.core.specs import CopySpec
from test_plan import DS, DS2, Rows, iid, sub


def known_manifest() -> list[CopySpec]:
    """Seven rows whose plan is worked out by hand:

        r1  S1 -> new                call 1
        r2  S1 -> D1 series a        call 2, after call 1 (S1); r3 merges into it
        r3  S1 -> D1 series b        call 2
        r4  S2 -> D1 series c        call 3, after call 2 (D1)          chain 1-2-3
        r5  S3 -> new                call 4
        r6  S1 series a -> new       call 5, after call 2 (S1)          chain 1-2-5
        r7  S9 -> new (data store 2) call 6
    """
    rows = Rows()
    rows.add("1")
    rows.add("1", "D", sub("1.1"))
    rows.add("1", "D", sub("1.2"))
    rows.add("2", "D", sub("2.1"))
    rows.add("3")
    rows.add("1", None, sub("1.1"))
    rows.add("9", ds=DS2)
    return rows.specs


def test_figures_of_a_known_manifest() -> None:
    fc = Forecaster()
    fc.add_batch(known_manifest())
    f = fc.figures()
    t = f.total
    assert (t.rows, t.calls, t.merged_calls, t.rows_in_merged_calls) == (7, 6, 1, 2)
    assert (t.new_image_set_calls, t.existing_destination_calls, t.chained_calls) == (4, 2, 3)
    assert f.longest is not None
    assert (f.longest.calls, f.longest.last_row_id, f.longest.image_set_id) == (3, "r4", iid("D"))
    assert [(s.datastore_id, s.rows, s.calls, s.longest_chain) for s in f.stores] == [
        (DS, 6, 5, 3), (DS2, 1, 1, 1)]
    # at 0.5 calls/s, 5 s a copy: sending takes (6 - 1) / 0.5 = 10 s (+ the last copy, 5 s);
    # the chain of 3 takes 3 x max(2 s, 5 s) = 15 s
    assert f.send_seconds(0.5) == 10.0
    assert f.chain_seconds(0.5, 5.0) == 15.0
    assert f.seconds(0.5, 5.0) == 15.0
    # a raised quota does not shorten the chain: it becomes the bound
    assert f.seconds(100.0, 5.0) == 15.0
    # at the default quota the sending is the bound: 5 / 0.25 + 5
    assert f.seconds(0.25, 5.0) == 25.0
    shape = f.as_dict(0.5, 5.0)
    assert shape["calls"] == 6 and shape["calls_saved"] == 1
    assert shape["longest_chain"] == {"calls": 3, "datastore_id": DS, "image_set_id": iid("D"),
                                      "last_row_id": "r4", "seconds": 15.0}
    assert shape["time"]["seconds"] == 15.0 and shape["time"]["human"] == "15 s"
    assert [d["datastore_id"] for d in shape["datastores"]] == [DS, DS2]


def test_row_plans_say_what_each_row_does() -> None:
    plans = {p.row_id: p for p in Forecaster(rows=True).add_batch(known_manifest())}
    assert plans["r1"].call == 1 and plans["r1"].destination_image_set_id is None
    assert plans["r2"].merged_with == ("r3",) and plans["r3"].merged_with == ("r2",)
    assert plans["r2"].after_rows == ("r1",) and plans["r2"].call == plans["r3"].call == 2
    assert plans["r4"].after_rows == ("r3",) and plans["r4"].destination_image_set_id == iid("D")
    assert plans["r6"].after_rows == ("r3",) and plans["r6"].subset
    assert plans["r7"].after_rows == () and plans["r7"].datastore_id == DS2
    text = plans["r4"].describe()
    assert "call 3" in text and iid("D") in text and "waits for the copy of r3" in text
    assert plans["r2"].as_dict()["action"] == "into_existing"
    assert plans["r5"].as_dict()["action"] == "new_image_set"


def test_streaming_in_batches_gives_the_figures_of_one_batch_but_merges_within_batches() -> None:
    specs = known_manifest()
    whole = Forecaster()
    whole.add_batch(specs)
    split = Forecaster()
    for i in range(0, len(specs), 2):  # r2 and r3 land in two batches: merging is per batch
        split.add_batch(specs[i:i + 2])
    a, b = whole.figures(), split.figures()
    assert (a.total.calls, a.longest.calls if a.longest else 0) == (6, 3)
    assert (b.total.calls, b.longest.calls if b.longest else 0) == (7, 4)  # r3 no longer merges
    assert b.total.chained_calls == 4


def test_rows_done_before_make_no_call_but_still_order_the_rest() -> None:
    specs = known_manifest()
    runnable = [False, False, False, True, True, True, True]
    fc = Forecaster()
    fc.add_batch(specs, runnable)
    f = fc.figures()
    assert f.rows_not_runnable == 3 and f.total.calls == 4 and f.total.rows == 4
    # the same units the runner's planner makes
    units = Planner().add_batch(specs, runnable)
    assert f.total.calls == len(units)
    assert f.total.chained_calls == sum(bool(u.after) for u in units) == 0


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (0.4, "under 1 s"), (28, "28 s"), (59.6, "1 min"), (125, "2 min 5 s"),
    (3600, "1 h"), (11_400, "3 h 10 min"), (90_000, "1 day 1 h"), (200_000, "2 days 8 h"),
    (910_000 / 0.25, "42 days"), (None, "unknown"), (float("inf"), "unknown"),
])
def test_human_durations(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize("text, seconds", [
    ("3600", 3600), ("90s", 90), ("90m", 5400), ("6h", 21_600), ("1h30m", 5400), ("2d", 172_800),
    ("1.5h", 5400), (" 10 min ", 600),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1h30", "-5", "soon", "5 parsecs"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
