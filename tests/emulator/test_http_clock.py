"""The emulated clock over HTTP: /_emulator/clock and EmulatorServer.set_clock.

What a client sees: GetImageSet's createdAt/updatedAt follow the emulated clock, and
moving the clock forward finishes pending copies at once (no waiting).
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import SMALL_SEED

TWO_HOURS = 7200.0
# Copies that would take an hour of real time (x0.01 = 36 s): only the clock ends them.
pytestmark = pytest.mark.emulator_config(enforce_rates=False, copy_base_s=3600.0)


def epoch(value: Any) -> float:
    return float(value.timestamp())


def test_clock_route_reads_sets_and_advances(control: Any) -> None:
    status, clock = control("GET", "/_emulator/clock")
    assert status == 200 and clock["offset_s"] == 0.0
    status, clock = control("POST", "/_emulator/clock", {"offset_s": TWO_HOURS})
    assert status == 200 and clock["offset_s"] == TWO_HOURS
    status, clock = control("POST", "/_emulator/clock", {"advance_s": 30})
    assert status == 200 and clock["offset_s"] == TWO_HOURS + 30
    status, both = control("POST", "/_emulator/clock", {"offset_s": 10, "advance_s": 5})
    assert status == 200 and both["offset_s"] == 15.0
    assert control("GET", "/_emulator/clock")[1]["offset_s"] == 15.0
    for bad in ({"offset_s": "soon"}, {"advance_s": True}, {"advance_s": float("inf")}, {"rewind_s": 1}):
        status, body = control("POST", "/_emulator/clock", bad)
        assert status == 400 and "Bad clock setting" in body["message"], bad
    assert control("POST", "/_emulator/reset")[0] == 200
    assert control("GET", "/_emulator/clock")[1]["offset_s"] == 0.0  # reset forgets the offset


def test_seeded_data_ages_when_the_clock_moves_forward(boto3_client: Any, seeded: Any,
                                                      control: Any) -> None:
    store = seeded["datastores"][0]
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    before = boto3_client.get_image_set(datastoreId=ds, imageSetId=image_set)
    _, clock = control("POST", "/_emulator/clock", {"offset_s": TWO_HOURS})
    now = clock["now"]
    after = boto3_client.get_image_set(datastoreId=ds, imageSetId=image_set)
    assert epoch(after["createdAt"]) == epoch(before["createdAt"])  # stamps do not move
    assert now - epoch(after["createdAt"]) >= TWO_HOURS
    assert now - epoch(after["updatedAt"]) >= TWO_HOURS


def test_negative_offset_while_seeding_makes_data_old(emulator: Any, boto3_client: Any,
                                                      control: Any) -> None:
    control("POST", "/_emulator/clock", {"offset_s": -TWO_HOURS})
    status, summary = control("POST", "/_emulator/seed", SMALL_SEED)
    assert status == 200
    now = emulator.set_clock(offset_s=0)["now"]
    store = summary["datastores"][0]
    got = boto3_client.get_image_set(datastoreId=store["datastoreId"],
                                     imageSetId=store["imageSets"][0]["imageSetId"])
    assert now - epoch(got["createdAt"]) >= TWO_HOURS


def test_advancing_the_clock_finishes_pending_copies(emulator: Any, boto3_client: Any,
                                                     seeded: Any) -> None:
    store = seeded["datastores"][0]
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    out = boto3_client.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                                      copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}})
    new = out["destinationImageSetProperties"]["imageSetId"]
    accepted_at = epoch(out["destinationImageSetProperties"]["updatedAt"])
    assert boto3_client.get_image_set(datastoreId=ds, imageSetId=new)["imageSetState"] == "LOCKED"
    assert emulator.stats()["copies_in_flight"] == 1
    reading = emulator.set_clock(advance_s=60)  # 36 s of modelled copy time at time_scale 0.01
    assert reading["offset_s"] == 60
    assert emulator.stats()["copies_in_flight"] == 0
    done = boto3_client.get_image_set(datastoreId=ds, imageSetId=new)
    assert (done["imageSetState"], done["imageSetWorkflowStatus"]) == ("ACTIVE", "COPIED")
    # the completion is stamped at its modelled time, not when somebody looked
    assert epoch(done["updatedAt"]) == pytest.approx(accepted_at + 36.0, abs=0.5)
    source = boto3_client.get_image_set(datastoreId=ds, imageSetId=src)
    assert (source["imageSetState"], source["imageSetWorkflowStatus"]) == ("ACTIVE", "COPIED")
