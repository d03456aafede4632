"""UpdateImageSetMetadata over HTTP: the CLI page's examples, revert, stale versions, locks,
the request quota and the concurrent-update quota. boto3 and the AWS CLI v1.

Updates are modelled to take an hour (update_s 3600, x0.01 = 36 s) where a test needs
to see the LOCKED / UPDATING state; the emulated clock ends them.
"""

from __future__ import annotations

import gzip
import json
import shutil
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kit.emukit import AwsCli, assume, copy, error_of, seed, versions

from batchcopy.emulator.config import RateQuota

SLOW = {"enforce_rates": False, "update_s": 3600.0, "copy_base_s": 3600.0}
pytestmark = pytest.mark.emulator_config(**SLOW)
ANSWER_KEYS = {"latestVersionId", "imageSetWorkflowStatus", "updatedAt", "imageSetId", "imageSetState",
               "createdAt", "datastoreId"}  # the CLI examples' output, word for word


def update(client: Any, ds: str, image_set: str, latest: str, *, updatable: Any = None,
           removable: Any = None, revert: str | None = None, force: bool = False) -> dict[str, Any]:
    if revert is not None:
        updates: dict[str, Any] = {"revertToVersionId": revert}
    else:
        updates = {"DICOMUpdates": {
            key: json.dumps(doc).encode() for key, doc in (("updatableAttributes", updatable),
                                                           ("removableAttributes", removable))
            if doc is not None}}
    return dict(client.update_image_set_metadata(
        datastoreId=ds, imageSetId=image_set, latestVersionId=latest, force=force,
        updateImageSetMetadataUpdates=updates))


def metadata(client: Any, ds: str, image_set: str, version: str | None = None) -> dict[str, Any]:
    kwargs = {"versionId": version} if version else {}
    blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set, **kwargs)["imageSetMetadataBlob"]
    return dict(json.loads(gzip.decompress(blob.read())))


def finish_all(emulator: Any) -> None:
    emulator.set_clock(advance_s=3600)


def test_update_then_revert(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    out = update(boto3_client, ds, image_set, "1",
                 updatable={"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "MX^MX"}}})
    assert set(out) - {"ResponseMetadata"} == ANSWER_KEYS
    assert (out["latestVersionId"], out["imageSetState"], out["imageSetWorkflowStatus"]) == \
        ("2", "LOCKED", "UPDATING")
    with pytest.raises(ClientError) as info:  # the version being written is not readable yet
        metadata(boto3_client, ds, image_set)
    assert error_of(info.value)[:2] == ("ConflictException", 409)
    finish_all(emulator)
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=image_set)
    assert (got["versionId"], got["imageSetState"], got["imageSetWorkflowStatus"]) == ("2", "ACTIVE", "UPDATED")
    assert metadata(boto3_client, ds, image_set)["Patient"]["DICOM"]["PatientName"] == "MX^MX"
    original = metadata(boto3_client, ds, image_set, "1")
    assert original["Patient"]["DICOM"]["PatientName"] != "MX^MX"

    out = update(boto3_client, ds, image_set, "2", revert="1")
    assert out["latestVersionId"] == "3"
    finish_all(emulator)
    reverted = metadata(boto3_client, ds, image_set)
    assert (reverted["Patient"], reverted["Study"]) == (original["Patient"], original["Study"])
    assert [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in versions(boto3_client, ds, image_set)] == \
        [("3", "UPDATED"), ("2", "UPDATED"), ("1", "CREATED")]
    stats = emulator.stats()
    assert (stats["updates_requested"], stats["updates_succeeded"], stats["updates_in_flight"]) == (2, 2, 0)


def test_remove_instance_and_series_and_forced_uid(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds, image_set = store["datastoreId"], store["imageSets"][0]
    (s1, sops1), (s2, _) = image_set["series"].items()
    iid = image_set["imageSetId"]
    update(boto3_client, ds, iid, "1", force=True,
           removable={"SchemaVersion": 1.1, "Study": {"Series": {s1: {"Instances": {sops1[0]: {}}},
                                                                 s2: {}}}})
    finish_all(emulator)
    assert emulator.model.snapshot_image_set(ds, iid)["instances"] == {s1: sorted(sops1[1:])}
    renamed = sops1[1] + ".9"
    update(boto3_client, ds, iid, "2", updatable={"Study": {"Series": {s1: {"Instances": {
        sops1[1]: {"DICOM": {"SOPInstanceUID": renamed}}}}}}})  # without force: fails
    finish_all(emulator)
    failed = boto3_client.get_image_set(datastoreId=ds, imageSetId=iid)
    assert (failed["imageSetWorkflowStatus"], failed["message"]) == \
        ("UPDATE_FAILED", "INVALID_REQUEST: Updating SOPInstanceUID requires force.")
    update(boto3_client, ds, iid, "3", force=True, updatable={"Study": {"Series": {s1: {"Instances": {
        sops1[1]: {"DICOM": {"SOPInstanceUID": renamed}}}}}}})
    finish_all(emulator)
    done = boto3_client.get_image_set(datastoreId=ds, imageSetId=iid)
    assert (done["versionId"], done["imageSetWorkflowStatus"], done["overrides"]) == \
        ("4", "UPDATED", {"forced": True})
    assert emulator.model.snapshot_image_set(ds, iid)["instances"] == {s1: [renamed]}


@pytest.mark.parametrize("reading", ["conflict", "copy_failed", "validation"])
def test_update_stale_version(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, stale_version=reading)
    store = seed(control)
    ds, iid = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    change = {"Study": {"DICOM": {"StudyDescription": "x"}}}
    update(boto3_client, ds, iid, "1", updatable=change)
    finish_all(emulator)
    if reading == "copy_failed":
        assert update(boto3_client, ds, iid, "1", updatable=change)["latestVersionId"] == "3"
        finish_all(emulator)
        got = boto3_client.get_image_set(datastoreId=ds, imageSetId=iid)
        assert got["imageSetWorkflowStatus"] == "UPDATE_FAILED"
        assert "latestVersionId 1 is not the latest version" in got["message"]
        return
    with pytest.raises(ClientError) as info:
        update(boto3_client, ds, iid, "1", updatable=change)
    assert error_of(info.value)[:2] == (("ConflictException", 409) if reading == "conflict"
                                        else ("ValidationException", 400))
    assert emulator.stats()["updates_requested"] == 1


def test_locked_both_ways(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    a, b = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    change = {"Study": {"DICOM": {"StudyDescription": "x"}}}
    copy(boto3_client, ds, a)  # a is read by a running copy
    update(boto3_client, ds, b, "1", updatable=change)  # b is being updated
    for attempt in (lambda: update(boto3_client, ds, a, "1", updatable=change),
                    lambda: update(boto3_client, ds, b, "2", updatable=change),
                    lambda: copy(boto3_client, ds, b, src_version="2"),
                    lambda: boto3_client.delete_image_set(datastoreId=ds, imageSetId=b)):
        with pytest.raises(ClientError) as info:
            attempt()
        code, status, message = error_of(info.value)
        assert (code, status) == ("ConflictException", 409) and "is LOCKED" in message
    assert boto3_client.get_image_set(datastoreId=ds, imageSetId=b)["imageSetWorkflowStatus"] == "UPDATING"
    finish_all(emulator)
    update(boto3_client, ds, b, "2", updatable=change)


def test_bad_requests_are_refused_at_once(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds, iid = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    blob = json.dumps({"Study": {"DICOM": {"StudyDescription": "x"}}}).encode()
    # both members of the union: botocore refuses to send it, so send it by hand
    both = {"revertToVersionId": "1", "DICOMUpdates": {"updatableAttributes": "e30="}}
    req = urllib.request.Request(
        f"{emulator.endpoint}/datastore/{ds}/imageSet/{iid}/updateImageSetMetadata?latestVersion=1",
        data=json.dumps(both).encode(), method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(req, timeout=10)
    assert raw.value.code == 400 and raw.value.headers["x-amzn-ErrorType"] == "ValidationException"
    bad: list[dict[str, Any]] = [
        {"DICOMUpdates": {"updatableAttributes": b"{not json"}},
        {"DICOMUpdates": {"updatableAttributes": json.dumps({"Study": {"Colour": 1}}).encode()}},
        {"DICOMUpdates": {"updatableAttributes": json.dumps({"SchemaVersion": 2}).encode()}},
        {"DICOMUpdates": {}},
    ]
    for updates in bad:
        with pytest.raises(ClientError) as info:
            boto3_client.update_image_set_metadata(datastoreId=ds, imageSetId=iid, latestVersionId="1",
                                                   updateImageSetMetadataUpdates=updates)
        assert error_of(info.value)[:2] == ("ValidationException", 400), updates
    with pytest.raises(ClientError) as info:
        update(boto3_client, ds, iid, "1", revert="9")
    assert error_of(info.value)[:2] == ("ResourceNotFoundException", 404)
    assert emulator.stats()["updates_requested"] == 0


@pytest.mark.parametrize("reading", ["validation", "copy_failed"])
def test_update_naming_a_missing_series(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, missing_subset_key=reading)
    store = seed(control)
    ds, iid = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    ghost = "1.2.826.0.1.3680043.8.498.999"
    change = {"Study": {"Series": {ghost: {"DICOM": {"SeriesDescription": "x"}}}}}
    if reading == "validation":
        with pytest.raises(ClientError) as info:
            update(boto3_client, ds, iid, "1", updatable=change)
        assert error_of(info.value)[:2] == ("ValidationException", 400) and ghost in error_of(info.value)[2]
        return
    update(boto3_client, ds, iid, "1", updatable=change)
    finish_all(emulator)
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=iid)
    assert got["imageSetWorkflowStatus"] == "UPDATE_FAILED" and ghost in got["message"]


@pytest.mark.emulator_config(rates={"UpdateImageSetMetadata": RateQuota(0.0025, 1)})  # 0.25/s at x0.01
def test_update_request_quota(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    change = {"Study": {"DICOM": {"StudyDescription": "x"}}}
    update(boto3_client, ds, store["imageSets"][0]["imageSetId"], "1", updatable=change)
    with pytest.raises(ClientError) as info:  # burst 1, one token every 4 s
        update(boto3_client, ds, store["imageSets"][1]["imageSetId"], "1", updatable=change)
    assert error_of(info.value) == ("ThrottlingException", 429, "Rate exceeded")
    assert emulator.stats()["throttled"] == {"UpdateImageSetMetadata": 1}
    assert emulator.stats()["updates_requested"] == 1


@pytest.mark.emulator_config(**SLOW, max_concurrent_updates_per_datastore=1)
def test_concurrent_updates_per_datastore(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control)
    ds = store["datastoreId"]
    change = {"Study": {"DICOM": {"StudyDescription": "x"}}}
    update(boto3_client, ds, store["imageSets"][0]["imageSetId"], "1", updatable=change)
    with pytest.raises(ClientError) as info:
        update(boto3_client, ds, store["imageSets"][1]["imageSetId"], "1", updatable=change)
    assert error_of(info.value)[:2] == ("ServiceQuotaExceededException", 402)
    other = seed(control, seed=32, patients=1, studies_per_patient=1)  # its own data store, its own quota
    update(boto3_client, other["datastoreId"], other["imageSets"][0]["imageSetId"], "1", updatable=change)
    finish_all(emulator)
    update(boto3_client, ds, store["imageSets"][1]["imageSetId"], "1", updatable=change)


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_cli_examples(emulator: Any, control: Any, client_env: Any, tmp_path: Any) -> None:
    """Examples 1, 2, 5, 3 and 4 of `aws medical-imaging update-image-set-metadata`, as printed
    (SchemaVersion 1.1 as a number), on seeded ids. CLI v1 has no --cli-binary-format: it
    sends the blob text as given, which is what raw-in-base64-out asks of CLI v2."""
    store = seed(control)
    ds, target = store["datastoreId"], store["imageSets"][0]
    iid = target["imageSetId"]
    series_uid, sops = next(iter(target["series"].items()))
    cli = AwsCli(emulator.endpoint, client_env["AWS_DEFAULT_REGION"])

    def run(latest: str, updates: dict[str, Any], *flags: str) -> dict[str, Any]:
        path = tmp_path / "metadata-updates.json"
        path.write_text(json.dumps(updates))
        out = cli.json("update-image-set-metadata", "--datastore-id", ds, "--image-set-id", iid,
                       "--latest-version-id", latest, "--update-image-set-metadata-updates",
                       f"file://{path}", *flags)
        assert set(out) == ANSWER_KEYS
        assert (out["imageSetState"], out["imageSetWorkflowStatus"]) == ("LOCKED", "UPDATING")
        finish_all(emulator)
        return out

    instance = f'{{"{series_uid}": {{"Instances": {{"{sops[0]}": {{}}}}}}}}'
    examples = [
        ({"DICOMUpdates": {"updatableAttributes":
                           '{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"MX^MX"}}}'}}, ()),
        ({"DICOMUpdates": {"removableAttributes":
                           '{"SchemaVersion":1.1,"Study":{"DICOM":{"StudyDescription":"CHEST"}}}'}}, ()),
        ({"DICOMUpdates": {"updatableAttributes": '{"SchemaVersion": 1.1,"Study": {"Series": {"%s": '
                           '{"Instances": {"%s": {"DICOM": {"001910F9": "97"},"DICOMVRs": {"001910F9": "DS"}}}}}}}'
                           % (series_uid, sops[1])}}, ("--force",)),
        ({"DICOMUpdates": {"removableAttributes":
                           '{"SchemaVersion": 1.1,"Study": {"Series": %s}}' % instance}}, ("--force",)),
    ]
    for n, (updates, flags) in enumerate(examples, start=1):
        assert run(str(n), updates, *flags)["latestVersionId"] == str(n + 1)
    got = cli.json("get-image-set", "--datastore-id", ds, "--image-set-id", iid)
    assert (got["versionId"], got["imageSetWorkflowStatus"]) == ("5", "UPDATED")
    snap = emulator.model.snapshot_image_set(ds, iid)
    assert sops[0] not in snap["instances"][series_uid]
    assert run("5", {"revertToVersionId": "1"})["latestVersionId"] == "6"  # example 4
    assert emulator.model.snapshot_image_set(ds, iid)["instances"] == \
        {uid: sorted(s) for uid, s in target["series"].items()}
    assert [v["ImageSetWorkflowStatus"] for v in versions_cli(cli, ds, iid)] == ["UPDATED"] * 5 + ["CREATED"]


def versions_cli(cli: AwsCli, ds: str, iid: str) -> list[dict[str, Any]]:
    return list(cli.json("list-image-set-versions", "--datastore-id", ds, "--image-set-id", iid)
                ["imageSetPropertiesList"])
