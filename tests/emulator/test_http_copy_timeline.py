"""The emulator's timeline of copies over HTTP (GET /_emulator/copies): when each copy was
accepted, when it really ended, when a GetImageSet first showed it ended, and how many
answers showed it running. The clock is moved, never waited on."""

from __future__ import annotations

from typing import Any

import pytest
from kit.emukit import assume, copy, seed

# Copies that take 100 s (x0.01 = 1 s) and 200 s with a long copy: only the clock ends them.
pytestmark = pytest.mark.emulator_config(enforce_rates=False, copy_base_s=100.0,
                                         copy_per_frame_s=0.0, study_consistency_s=50.0)


def records(control: Any) -> list[dict[str, Any]]:
    status, body = control("GET", "/_emulator/copies")
    assert status == 200
    return list(body["copies"])


def test_a_copy_is_accepted_ends_and_is_seen(boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    answer = copy(boto3_client, ds, src)
    dest = answer["destinationImageSetProperties"]
    new, version = dest["imageSetId"], dest["latestVersionId"]
    (record,) = records(control)
    assert (record["image_set_id"], record["version_id"]) == (new, version)
    assert record["source_image_set_id"] == src and record["datastore_id"] == ds
    assert record["accepted_at"] == pytest.approx(dest["updatedAt"].timestamp(), abs=0.002)
    assert record["ended_at"] is None and record["seen_ended_at"] is None

    boto3_client.get_image_set(datastoreId=ds, imageSetId=new, versionId=version)
    boto3_client.get_image_set(datastoreId=ds, imageSetId=new)  # the latest: the same version
    assert records(control)[0]["reads_running"] == 2

    control("POST", "/_emulator/clock", {"advance_s": 1.5})  # the copy's 1 s is over
    (record,) = records(control)
    assert record["ended_at"] == pytest.approx(record["accepted_at"] + 1.0, abs=1e-6)
    assert record["workflow_status"] == "COPIED" and record["seen_ended_at"] is None
    ended = boto3_client.get_image_set(datastoreId=ds, imageSetId=new, versionId=version)
    # the service stamps the end: the client reads the copy's duration from updatedAt
    assert ended["updatedAt"].timestamp() == pytest.approx(record["ended_at"], abs=0.002)
    (record,) = records(control)
    assert record["seen_ended_at"] >= record["ended_at"] + 0.5  # seen half a second late
    seen = record["seen_ended_at"]
    boto3_client.get_image_set(datastoreId=ds, imageSetId=new, versionId=version)
    assert records(control)[0]["seen_ended_at"] == seen  # the first sight only
    assert records(control)[0]["reads_running"] == 2

    control("POST", "/_emulator/reset")
    assert records(control) == []


def test_a_failed_copy_and_study_consistency_end_when_the_version_is_released(
        boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    a, b, c = (s["imageSetId"] for s in store["imageSets"][:3])
    assume(control, study_consistency="on")
    copy(boto3_client, ds, a)  # a new image set: COPIED after the consistency phase
    copy(boto3_client, ds, b, dst=store["imageSets"][2]["imageSetId"])  # another study: fails
    control("POST", "/_emulator/clock", {"advance_s": 1.2})
    done, failed = records(control)
    assert failed["image_set_id"] == c and failed["workflow_status"] == "COPY_FAILED"
    assert failed["ended_at"] == pytest.approx(failed["accepted_at"] + 1.0, abs=1e-6)
    assert done["ended_at"] is None  # content written, the version still in progress
    control("POST", "/_emulator/clock", {"advance_s": 0.5})
    done = records(control)[0]
    assert done["workflow_status"] == "COPIED"
    assert done["ended_at"] == pytest.approx(done["accepted_at"] + 1.5, abs=1e-6)
