"""CopyImageSet under each reading of its assumption switches, as boto3 sees it over HTTP.

Copies here are modelled to take an hour (copy_base_s 3600, x0.01 = 36 s), so nothing
finishes by itself during a test: the emulated clock (set_clock) finishes them, and
every state is observed before and after, never timed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kit.emukit import assume, copy, error_of, seed, subset, versions

SLOW = {"enforce_rates": False, "copy_base_s": 3600.0}
pytestmark = pytest.mark.emulator_config(**SLOW)


def finish_all(emulator: Any) -> None:
    emulator.set_clock(advance_s=3600)


def state(client: Any, ds: str, image_set: str, version: str | None = None) -> tuple[str, str]:
    kwargs = {"versionId": version} if version else {}
    got = client.get_image_set(datastoreId=ds, imageSetId=image_set, **kwargs)
    return got["imageSetState"], got["imageSetWorkflowStatus"]


# ---------------------------------------------------------------- new_copy_version
@pytest.mark.parametrize("reading", ["2", "1"])
def test_new_copy_version(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, new_copy_version=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    out = copy(boto3_client, ds, src)["destinationImageSetProperties"]
    new = out["imageSetId"]
    assert (out["latestVersionId"], out["imageSetState"], out["imageSetWorkflowStatus"]) == \
        (reading, "LOCKED", "COPYING")
    finish_all(emulator)
    listed = [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in versions(boto3_client, ds, new)]
    assert listed == ([("2", "COPIED"), ("1", "CREATED")] if reading == "2" else [("1", "COPIED")])
    # the next copy into it names what the first one answered and gets latest + 1
    again = copy(boto3_client, ds, src, dst=new, dst_version=reading)["destinationImageSetProperties"]
    assert again["latestVersionId"] == str(int(reading) + 1)


# ---------------------------------------------------------------- stale_version
@pytest.mark.parametrize("reading", ["conflict", "copy_failed", "validation"])
def test_stale_destination_version(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, stale_version=reading)
    store = seed(control)
    ds = store["datastoreId"]
    src, dst = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    copy(boto3_client, ds, src, dst=dst, force=True)  # dst -> version 2
    finish_all(emulator)
    before = emulator.stats()["copies_requested"]
    if reading == "copy_failed":
        out = copy(boto3_client, ds, src, dst=dst, dst_version="1", force=True)
        assert out["destinationImageSetProperties"]["latestVersionId"] == "3"
        finish_all(emulator)
        failed = boto3_client.get_image_set(datastoreId=ds, imageSetId=dst)
        assert (failed["versionId"], failed["imageSetWorkflowStatus"]) == ("3", "COPY_FAILED")
        assert failed["message"].startswith("INVALID_REQUEST: latestVersionId 1 is not the latest version")
        snap = emulator.model.snapshot_image_set(ds, dst)
        assert snap["versions"][2]["instanceCount"] == snap["versions"][1]["instanceCount"]  # nothing added
        assert emulator.stats()["copies_requested"] == before + 1
        return
    with pytest.raises(ClientError) as info:
        copy(boto3_client, ds, src, dst=dst, dst_version="1", force=True)
    code, status, message = error_of(info.value)
    assert (code, status) == (("ConflictException", 409) if reading == "conflict"
                              else ("ValidationException", 400))
    assert "latestVersionId 1 is not the latest version" in message
    assert emulator.stats()["copies_requested"] == before
    assert [v["versionId"] for v in versions(boto3_client, ds, dst)] == ["2", "1"]


def test_stale_source_version_under_copy_failed(emulator: Any, boto3_client: Any, control: Any) -> None:
    assume(control, stale_version="copy_failed")
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    new = copy(boto3_client, ds, src, src_version="7")["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=new)
    assert got["imageSetWorkflowStatus"] == "COPY_FAILED" and "source image set" in got["message"]
    assert emulator.model.snapshot_image_set(ds, new)["instances"] == {}


# ---------------------------------------------------------------- locked
@pytest.mark.parametrize("reading", ["conflict", "validation", "shared_source"])
def test_locked(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, locked=reading)
    store = seed(control)
    ds = store["datastoreId"]
    src, other = store["imageSets"][0]["imageSetId"], store["imageSets"][2]["imageSetId"]
    new = copy(boto3_client, ds, src)["destinationImageSetProperties"]["imageSetId"]
    refused = ("ValidationException", 400) if reading == "validation" else ("ConflictException", 409)

    # a second copy reading the source that a running copy reads
    if reading == "shared_source":
        second = copy(boto3_client, ds, src)
        assert second["sourceImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    else:
        with pytest.raises(ClientError) as info:
            copy(boto3_client, ds, src)
        code, status, message = error_of(info.value)
        assert (code, status) == refused and "LOCKED (COPYING_WITH_READ_ONLY_ACCESS)" in message
    # an image set being written is locked under every reading, as source or destination
    for attempt in (lambda: copy(boto3_client, ds, new, src_version="2"),
                    lambda: copy(boto3_client, ds, other, dst=new, dst_version="2", force=True),
                    lambda: copy(boto3_client, ds, other, dst=src, force=True)):
        with pytest.raises(ClientError) as info:
            attempt()
        assert error_of(info.value)[:2] == refused
    with pytest.raises(ClientError) as info:
        boto3_client.delete_image_set(datastoreId=ds, imageSetId=src)
    assert error_of(info.value)[:2] == refused
    finish_all(emulator)
    assert state(boto3_client, ds, src) == ("ACTIVE", "COPIED")
    assert emulator.stats()["copies_succeeded"] == (2 if reading == "shared_source" else 1)


# ---------------------------------------------------------------- missing_subset_key
@pytest.mark.parametrize("reading", ["validation", "copy_failed"])
def test_missing_subset_key(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, missing_subset_key=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    series_uid, sops = next(iter(src["series"].items()))
    ghost = "1.2.826.0.1.3680043.8.498.999"
    attrs = subset({series_uid: [sops[0], ghost]})
    if reading == "validation":
        with pytest.raises(ClientError) as info:
            copy(boto3_client, ds, src["imageSetId"], attrs=attrs)
        code, status, message = error_of(info.value)
        assert (code, status) == ("ValidationException", 400) and ghost in message
        assert emulator.stats()["copies_requested"] == 0
        return
    new = copy(boto3_client, ds, src["imageSetId"], attrs=attrs)["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=new)
    assert got["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert got["message"].startswith("INVALID_REQUEST: SOP instance ") and ghost in got["message"]
    assert emulator.model.snapshot_image_set(ds, new)["instances"] == {}  # nothing copied


# ---------------------------------------------------------------- promote_non_primary
@pytest.mark.parametrize("reading", ["new_id", "in_place"])
def test_promote_non_primary(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, promote_non_primary=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    s1, s2 = list(src["series"])
    plain = copy(boto3_client, ds, src["imageSetId"], attrs=subset({s1: None}))
    plain_id = plain["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    assert boto3_client.get_image_set(datastoreId=ds, imageSetId=plain_id)["isPrimary"] is False
    out = copy(boto3_client, ds, src["imageSetId"], dst=plain_id, dst_version="2",
               attrs=subset({s2: None}), promoteToPrimary=True)["destinationImageSetProperties"]
    finish_all(emulator)
    promoted = out["imageSetId"]
    if reading == "new_id":
        assert promoted != plain_id and out["latestVersionId"] == "2"
        assert [v["versionId"] for v in versions(boto3_client, ds, plain_id)] == ["2", "1"]  # untouched
    else:
        assert promoted == plain_id and out["latestVersionId"] == "3"
        assert boto3_client.get_image_set(datastoreId=ds, imageSetId=plain_id, versionId="2")["isPrimary"] is False
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=promoted)
    assert (got["isPrimary"], got["imageSetWorkflowStatus"]) == (True, "COPIED")
    assert set(emulator.model.snapshot_image_set(ds, promoted)["instances"]) == {s1, s2}


# ---------------------------------------------------------------- copy_limit_unit / copy_limit_error
LIMITED = {**SLOW, "max_frames_per_copy": 3}


@pytest.mark.emulator_config(**LIMITED)
@pytest.mark.parametrize("unit", ["frames", "instances"])
def test_copy_limit_unit(emulator: Any, boto3_client: Any, control: Any, unit: str) -> None:
    assume(control, copy_limit_unit=unit)
    store = seed(control, frames_per_instance=2)  # 2 series x 2 instances x 2 frames
    ds, src = store["datastoreId"], store["imageSets"][0]
    series_uid = next(iter(src["series"]))
    two_instances = subset({series_uid: None})  # 2 instances, 4 frames
    if unit == "frames":
        with pytest.raises(ClientError) as info:
            copy(boto3_client, ds, src["imageSetId"], attrs=two_instances)
        assert "4 image frames" in error_of(info.value)[2]
    else:
        copy(boto3_client, ds, src["imageSetId"], attrs=two_instances)
        finish_all(emulator)
        with pytest.raises(ClientError) as info:  # the whole image set: 4 instances
            copy(boto3_client, ds, src["imageSetId"])
        assert "4 SOP instances" in error_of(info.value)[2]
    assert error_of(info.value)[:2] == ("ServiceQuotaExceededException", 402)


@pytest.mark.emulator_config(**LIMITED)
@pytest.mark.parametrize(("reading", "code", "status"), [
    pytest.param("quota", "ServiceQuotaExceededException", 402, id="quota"),
    pytest.param("quota_terse", "ServiceQuotaExceededException", 402, id="quota_terse"),
    pytest.param("validation", "ValidationException", 400, id="validation")])
def test_copy_limit_error(emulator: Any, boto3_client: Any, control: Any, reading: str, code: str,
                          status: int) -> None:
    assume(control, copy_limit_error=reading)
    store = seed(control)  # 4 frames per image set
    with pytest.raises(ClientError) as info:
        copy(boto3_client, store["datastoreId"], store["imageSets"][0]["imageSetId"])
    got_code, got_status, message = error_of(info.value)
    assert (got_code, got_status) == (code, status)
    if reading == "quota_terse":
        assert message == "Service quota exceeded"
    else:
        assert message == "The copy selects 4 image frames; the limit per CopyImageSet is 3"
    assert emulator.stats()["copies_requested"] == 0


# ---------------------------------------------------------------- concurrency_limit_error
@pytest.mark.emulator_config(**SLOW, max_concurrent_copies_per_datastore=1)
@pytest.mark.parametrize(("reading", "code", "status"), [
    pytest.param("quota", "ServiceQuotaExceededException", 402, id="quota"),
    pytest.param("quota_terse", "ServiceQuotaExceededException", 402, id="quota_terse"),
    pytest.param("throttling", "ThrottlingException", 429, id="throttling")])
def test_concurrency_limit_error(emulator: Any, boto3_client: Any, control: Any, reading: str, code: str,
                                 status: int) -> None:
    assume(control, concurrency_limit_error=reading)
    store = seed(control)
    ds, sets = store["datastoreId"], [s["imageSetId"] for s in store["imageSets"]]
    copy(boto3_client, ds, sets[0])
    with pytest.raises(ClientError) as info:
        copy(boto3_client, ds, sets[1])
    got_code, got_status, message = error_of(info.value)
    assert (got_code, got_status) == (code, status)
    expected = {"quota": "1 copies are already running in datastore",
                "quota_terse": "Service quota exceeded", "throttling": "Rate exceeded"}[reading]
    assert message.startswith(expected)
    finish_all(emulator)
    copy(boto3_client, ds, sets[1])  # room again


@pytest.mark.emulator_config(**SLOW, max_concurrent_copies_per_datastore=1, max_frames_per_copy=3)
def test_terse_quota_errors_cannot_be_told_apart(boto3_client: Any, control: Any) -> None:
    assume(control, copy_limit_error="quota_terse", concurrency_limit_error="quota_terse")
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    series_uid, sops = next(iter(src["series"].items()))
    with pytest.raises(ClientError) as too_big:
        copy(boto3_client, ds, src["imageSetId"])  # 4 frames > 3
    copy(boto3_client, ds, src["imageSetId"], attrs=subset({series_uid: sops[:1]}))
    with pytest.raises(ClientError) as too_many:
        copy(boto3_client, ds, store["imageSets"][1]["imageSetId"],
             attrs=json.dumps({"Study": {"Series": {next(iter(store["imageSets"][1]["series"])): {}}}}))
    assert error_of(too_big.value) == error_of(too_many.value) == \
        ("ServiceQuotaExceededException", 402, "Service quota exceeded")


# ---------------------------------------------------------------- study_consistency
@pytest.mark.emulator_config(**SLOW, study_consistency_s=3600.0)
@pytest.mark.parametrize("reading", ["off", "on"])
def test_study_consistency(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, study_consistency=reading)
    store = seed(control)
    ds = store["datastoreId"]
    src, other_study = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    new = copy(boto3_client, ds, src)["destinationImageSetProperties"]["imageSetId"]
    failing = copy(boto3_client, ds, store["imageSets"][2]["imageSetId"], dst=other_study)
    emulator.set_clock(advance_s=40)  # the copies (36 s) are written
    assert state(boto3_client, ds, src) == ("ACTIVE", "COPIED")  # the source is free either way
    assert state(boto3_client, ds, other_study) == ("ACTIVE", "COPY_FAILED")  # no consistency pass
    assert failing["destinationImageSetProperties"]["latestVersionId"] == "2"
    assert emulator.stats()["copies_succeeded"] == 1
    if reading == "off":
        assert state(boto3_client, ds, new) == ("ACTIVE", "COPIED")
        return
    assert state(boto3_client, ds, new) == ("LOCKED", "UPDATING_FOR_STUDY_CONSISTENCY")
    with pytest.raises(ClientError) as info:  # still LOCKED for writes
        copy(boto3_client, ds, src, dst=new, dst_version="2")
    assert error_of(info.value)[:2] == ("ConflictException", 409)
    emulator.set_clock(advance_s=40)
    assert state(boto3_client, ds, new) == ("ACTIVE", "COPIED")
    assert [v["ImageSetWorkflowStatus"] for v in versions(boto3_client, ds, new)] == ["COPIED", "CREATED"]


# ---------------------------------------------------------------- duplicate_sop
@pytest.mark.parametrize("reading", ["replace", "copy_failed"])
def test_duplicate_sop(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, duplicate_sop=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    series_uid, sops = next(iter(src["series"].items()))
    new = copy(boto3_client, ds, src["imageSetId"], attrs=subset({series_uid: sops[:1]}))
    new_id = new["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    # the same instance again (a resent copy), plus one the destination lacks
    copy(boto3_client, ds, src["imageSetId"], dst=new_id, dst_version="2", attrs=subset({series_uid: sops}))
    finish_all(emulator)
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=new_id)
    held = emulator.model.snapshot_image_set(ds, new_id)["instances"][series_uid]
    if reading == "replace":
        assert got["imageSetWorkflowStatus"] == "COPIED" and held == sorted(sops)
    else:
        assert (got["imageSetWorkflowStatus"], got["message"]) == (
            "COPY_FAILED", f"INVALID_REQUEST: SOP Instance UID {sops[0]} already exists in DestinationImageSet.")
        assert held == sops[:1]


# ---------------------------------------------------------------- search_visibility
@pytest.mark.parametrize("reading", ["immediate", "when_active"])
def test_search_visibility(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, search_visibility=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    new = copy(boto3_client, ds, src["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    criteria = {"filters": [{"values": [{"DICOMStudyInstanceUID": src["studyInstanceUID"]}],
                             "operator": "EQUAL"}]}

    def found() -> set[str]:
        out = boto3_client.search_image_sets(datastoreId=ds, searchCriteria=criteria)
        return {s["imageSetId"] for s in out["imageSetsMetadataSummaries"]}

    assert found() == ({src["imageSetId"], new} if reading == "immediate" else {src["imageSetId"]})
    finish_all(emulator)
    assert found() == {src["imageSetId"], new}
