"""Reads of a LOCKED image set, reverts the service may refuse, and what a promotion changes
besides its result: each reading of `reads_while_locked`, `revert_primary`,
`revert_to_failed` and `promote_side_effects`, as boto3 sees it over HTTP.

Copies and updates are modelled to take an hour (x0.01 = 36 s): nothing ends by itself
during a test; the emulated clock ends them.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from kit.emukit import assume, copy, error_of, seed, subset

SLOW = {"enforce_rates": False, "copy_base_s": 3600.0, "update_s": 3600.0}
pytestmark = pytest.mark.emulator_config(**SLOW)


def finish_all(emulator: Any) -> None:
    emulator.set_clock(advance_s=3600)


def revert(client: Any, ds: str, image_set: str, latest: str, to: str) -> dict[str, Any]:
    return dict(client.update_image_set_metadata(
        datastoreId=ds, imageSetId=image_set, latestVersionId=latest,
        updateImageSetMetadataUpdates={"revertToVersionId": to}))


def reads(client: Any, ds: str, image_set: str) -> list[Any]:
    """What each of the three reads answers: its status, or (code, HTTP status)."""
    out: list[Any] = []
    for read in (lambda: client.get_image_set(datastoreId=ds, imageSetId=image_set)["imageSetState"],
                 lambda: len(client.list_image_set_versions(
                     datastoreId=ds, imageSetId=image_set)["imageSetPropertiesList"]),
                 lambda: bool(client.get_image_set_metadata(
                     datastoreId=ds, imageSetId=image_set, versionId="1")["imageSetMetadataBlob"].read())):
        try:
            out.append(read())
        except ClientError as exc:
            out.append(error_of(exc)[:2])
    return out


@pytest.mark.parametrize("reading", ["answer", "conflict"])
def test_reads_while_locked(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, reads_while_locked=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    dest = copy(boto3_client, ds, src)["destinationImageSetProperties"]["imageSetId"]
    refused = (("ConflictException", 409),) * 3
    for image_set in (src, dest):  # the copy's source (read) and destination (written)
        got = reads(boto3_client, ds, image_set)
        if reading == "conflict":
            assert tuple(got) == refused, image_set
        else:
            assert got[0] == "LOCKED" and got[1] >= 1, image_set
    # the data store is not locked: searching it still answers
    assert boto3_client.search_image_sets(datastoreId=ds, searchCriteria={})["imageSetsMetadataSummaries"]
    finish_all(emulator)
    assert reads(boto3_client, ds, src) == ["ACTIVE", 1, True]
    assert reads(boto3_client, ds, dest)[0] == "ACTIVE"


@pytest.mark.parametrize("reading", ["allowed", "refused"])
def test_revert_primary(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, revert_primary=reading)
    store = seed(control)
    ds = store["datastoreId"]
    primary, other = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    assert boto3_client.get_image_set(datastoreId=ds, imageSetId=primary)["isPrimary"] is True
    copy(boto3_client, ds, other, dst=primary, force=True)  # primary -> version 2
    finish_all(emulator)
    before = emulator.stats()["updates_requested"]
    if reading == "allowed":
        assert revert(boto3_client, ds, primary, "2", "1")["latestVersionId"] == "3"
        finish_all(emulator)
        got = boto3_client.get_image_set(datastoreId=ds, imageSetId=primary)
        assert (got["versionId"], got["imageSetWorkflowStatus"]) == ("3", "UPDATED")
        return
    with pytest.raises(ClientError) as info:
        revert(boto3_client, ds, primary, "2", "1")
    code, status, message = error_of(info.value)
    assert (code, status) == ("ValidationException", 400) and "primary" in message
    assert emulator.stats()["updates_requested"] == before
    # a non-primary image set is reverted as before
    dest = copy(boto3_client, ds, other)["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    copy(boto3_client, ds, primary, src_version="2", dst=dest, dst_version="2", force=True)
    finish_all(emulator)
    assert revert(boto3_client, ds, dest, "3", "2")["latestVersionId"] == "4"


@pytest.mark.parametrize("reading", ["allowed", "validation"])
def test_revert_to_failed(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, revert_to_failed=reading)
    store = seed(control)
    ds = store["datastoreId"]
    a, b = store["imageSets"][0], store["imageSets"][2]  # different patients: a mismatch
    dest = copy(boto3_client, ds, a["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)
    series = next(iter(b["series"]))
    copy(boto3_client, ds, b["imageSetId"], dst=dest, dst_version="2",
         attrs=subset({series: None}))  # version 3 ends COPY_FAILED (no force)
    finish_all(emulator)
    failed = boto3_client.get_image_set(datastoreId=ds, imageSetId=dest, versionId="3")
    assert failed["imageSetWorkflowStatus"] == "COPY_FAILED"
    copy(boto3_client, ds, a["imageSetId"], dst=dest, dst_version="3",
         attrs=subset({next(iter(a["series"])): None}))  # version 4 COPIED
    finish_all(emulator)
    if reading == "allowed":
        assert revert(boto3_client, ds, dest, "4", "3")["latestVersionId"] == "5"
        return
    with pytest.raises(ClientError) as info:
        revert(boto3_client, ds, dest, "4", "3")
    code, status, message = error_of(info.value)
    assert (code, status) == ("ValidationException", 400) and "COPY_FAILED" in message
    # the version before the failed one (same content) can be reverted to
    assert revert(boto3_client, ds, dest, "4", "2")["latestVersionId"] == "5"


@pytest.mark.parametrize("reading", ["none", "source_demoted", "study_demoted"])
def test_promote_side_effects(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, promote_side_effects=reading)
    store = seed(control, series_per_study=2)
    ds = store["datastoreId"]
    src = store["imageSets"][0]
    other = store["imageSets"][1]  # another study: never demoted
    sibling = copy(boto3_client, ds, src["imageSetId"], promoteToPrimary=True)
    finish_all(emulator)
    sibling_id = sibling["destinationImageSetProperties"]["imageSetId"]
    series = next(iter(src["series"]))
    out = copy(boto3_client, ds, src["imageSetId"], attrs=subset({series: None}),
               promoteToPrimary=True)
    result = out["destinationImageSetProperties"]["imageSetId"]
    finish_all(emulator)

    def primary(image_set: str) -> bool:
        return bool(boto3_client.get_image_set(datastoreId=ds, imageSetId=image_set)["isPrimary"])

    assert primary(result) and primary(other["imageSetId"])
    expect = {"none": (True, True), "source_demoted": (False, True),
              "study_demoted": (False, False)}[reading]
    assert (primary(src["imageSetId"]), primary(sibling_id)) == expect
    # a demotion writes no version
    assert boto3_client.get_image_set(datastoreId=ds, imageSetId=src["imageSetId"])["versionId"] == "1"
