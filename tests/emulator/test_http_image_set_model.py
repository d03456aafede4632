"""The `image_set_model` switch over HTTP: image sets as studies (the default) or as series
(the 2025 developer guide). The same steps under both readings, and what boto3 sees."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kit.emukit import assume, copy, seed, subset, wait_active

pytestmark = pytest.mark.emulator_config(enforce_rates=False)


def update_patient_name(client: Any, ds: str, image_set: str, latest: str) -> dict[str, Any]:
    doc = {"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "MX^MX"}}}
    client.update_image_set_metadata(
        datastoreId=ds, imageSetId=image_set, latestVersionId=latest,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}})
    return wait_active(client, ds, image_set)[image_set]


@pytest.mark.parametrize("reading", ["study", "series"])
def test_seeding(boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, image_set_model=reading)
    store = seed(control, patients=1, studies_per_patient=2, series_per_study=3)
    image_sets = store["imageSets"]
    assert len(image_sets) == (2 if reading == "study" else 6)
    assert all(len(s["series"]) == (3 if reading == "study" else 1) for s in image_sets)
    assert len({s["studyInstanceUID"] for s in image_sets}) == 2
    ds = store["datastoreId"]
    one_series = next(iter(image_sets[-1]["series"]))
    found = boto3_client.search_image_sets(datastoreId=ds, searchCriteria={"filters": [
        {"values": [{"DICOMSeriesInstanceUID": one_series}], "operator": "EQUAL"}]})
    assert [s["imageSetId"] for s in found["imageSetsMetadataSummaries"]] == [image_sets[-1]["imageSetId"]]
    assert all(boto3_client.get_image_set(datastoreId=ds, imageSetId=s["imageSetId"])["isPrimary"]
               for s in image_sets)


@pytest.mark.parametrize("reading", ["study", "series"])
def test_copying_another_series_into_a_primary_image_set(emulator: Any, boto3_client: Any, control: Any,
                                                         reading: str) -> None:
    """A primary image set holding series 1 of a study (made by promoting a copy), then
    series 2 of the same study copied into it, without and with force."""
    # seeded as one study image set under both readings, so the steps below are the same
    store = seed(control, patients=1, studies_per_patient=1, series_per_study=2)
    assume(control, image_set_model=reading)
    ds, src = store["datastoreId"], store["imageSets"][0]
    s1, s2 = list(src["series"])
    made = copy(boto3_client, ds, src["imageSetId"], attrs=subset({s1: None}), promoteToPrimary=True)
    primary = made["destinationImageSetProperties"]["imageSetId"]
    wait_active(boto3_client, ds, src["imageSetId"], primary)
    copy(boto3_client, ds, src["imageSetId"], dst=primary, dst_version="2", attrs=subset({s2: None}))
    plain = wait_active(boto3_client, ds, src["imageSetId"], primary)[primary]
    if reading == "study":
        assert plain["imageSetWorkflowStatus"] == "COPIED"
        assert set(emulator.model.snapshot_image_set(ds, primary)["instances"]) == {s1, s2}
        return
    assert plain["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert plain["message"] == "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."
    copy(boto3_client, ds, src["imageSetId"], dst=primary, dst_version="3", attrs=subset({s2: None}), force=True)
    forced = wait_active(boto3_client, ds, src["imageSetId"], primary)[primary]
    assert forced["imageSetWorkflowStatus"] == "COPIED"
    instances = emulator.model.snapshot_image_set(ds, primary)["instances"]
    assert set(instances) == {s1}  # still one series: the copied instances joined it
    assert set(instances[s1]) == set(src["series"][s1]) | set(src["series"][s2])
    # a non-primary image set is not bound to one series
    loose = copy(boto3_client, ds, src["imageSetId"], attrs=subset({s1: None}))["destinationImageSetProperties"]
    wait_active(boto3_client, ds, src["imageSetId"], loose["imageSetId"])
    copy(boto3_client, ds, src["imageSetId"], dst=loose["imageSetId"], dst_version="2", attrs=subset({s2: None}))
    assert wait_active(boto3_client, ds, loose["imageSetId"])[loose["imageSetId"]]["imageSetWorkflowStatus"] == \
        "COPIED"


@pytest.mark.parametrize("reading", ["study", "series"])
def test_updating_a_primary_image_set(boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, image_set_model=reading)
    store = seed(control, patients=1, studies_per_patient=1)
    ds, primary = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    got = update_patient_name(boto3_client, ds, primary, "1")
    if reading == "study":
        assert got["imageSetWorkflowStatus"] == "UPDATED"
    else:
        assert (got["imageSetWorkflowStatus"], got["message"]) == (
            "UPDATE_FAILED", "INVALID_REQUEST: Patient level attributes cannot be updated on a primary image set.")
    # a non-primary copy takes Patient updates under both readings
    new = copy(boto3_client, ds, primary, src_version="2")["destinationImageSetProperties"]["imageSetId"]
    wait_active(boto3_client, ds, primary, new)
    assert update_patient_name(boto3_client, ds, new, "2")["imageSetWorkflowStatus"] == "UPDATED"
