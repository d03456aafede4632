"""Every operation of the service model, through boto3 over HTTP; paginators; gzip metadata."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

AUTH_CODES = {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
              "MissingAuthenticationTokenException"}
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
ROLE_ARN = "arn:aws:iam::123456789012:role/ImportRole"

pytestmark = pytest.mark.emulator_config(enforce_rates=False)


def service_model() -> Any:
    return botocore.session.get_session().get_service_model("medical-imaging")


def wait_idle(client: Any, ds: str, *image_set_ids: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for image_set_id in image_set_ids:
        while client.get_image_set(datastoreId=ds, imageSetId=image_set_id)["imageSetState"] != "ACTIVE":
            assert time.monotonic() < deadline, f"{image_set_id} still LOCKED after {timeout}s"
            time.sleep(0.01)


def first_frame(client: Any, ds: str, image_set_id: str) -> str:
    blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set_id)["imageSetMetadataBlob"]
    doc = json.loads(gzip.decompress(blob.read()))
    for series in doc["Study"]["Series"].values():
        for instance in series["Instances"].values():
            return str(instance["ImageFrames"][0]["ID"])
    raise AssertionError("no frame in the seeded image set")


def test_every_operation_answers_something_botocore_parses(boto3_client: Any, seeded: Any) -> None:
    c = boto3_client
    store = seeded["datastores"][0]
    ds = store["datastoreId"]
    sets = [s["imageSetId"] for s in store["imageSets"]]
    src, dst, doomed = sets[0], sets[1], sets[-1]
    arn = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{ds}"
    frame = first_frame(c, ds, src)
    created: dict[str, str] = {}

    def create_datastore() -> Any:
        out = c.create_datastore(datastoreName="ops-test")
        created["id"] = out["datastoreId"]
        return out

    calls: dict[str, Callable[[], Any]] = {
        "CreateDatastore": create_datastore,
        "GetDatastore": lambda: c.get_datastore(datastoreId=ds),
        "ListDatastores": lambda: c.list_datastores(maxResults=10),
        "DeleteDatastore": lambda: c.delete_datastore(datastoreId=created["id"]),
        "CopyImageSet": lambda: c.copy_image_set(
            datastoreId=ds, sourceImageSetId=src, force=True,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"},
                                     "destinationImageSet": {"imageSetId": dst, "latestVersionId": "1"}}),
        "GetImageSet": lambda: c.get_image_set(datastoreId=ds, imageSetId=src, versionId="1"),
        "GetImageSetMetadata": lambda: c.get_image_set_metadata(datastoreId=ds, imageSetId=src),
        "GetImageFrame": lambda: c.get_image_frame(datastoreId=ds, imageSetId=src,
                                                   imageFrameInformation={"imageFrameId": frame}),
        "ListImageSetVersions": lambda: c.list_image_set_versions(datastoreId=ds, imageSetId=src),
        "SearchImageSets": lambda: c.search_image_sets(
            datastoreId=ds, searchCriteria={"filters": [{"values": [{"DICOMPatientId": "nobody"}],
                                                         "operator": "EQUAL"}]}),
        "UpdateImageSetMetadata": lambda: c.update_image_set_metadata(
            datastoreId=ds, imageSetId=doomed, latestVersionId="1",
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(
                {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "x"}}}).encode()}}),
        "DeleteImageSet": lambda: (wait_idle(c, ds, doomed),  # the update above locked it
                                   c.delete_image_set(datastoreId=ds, imageSetId=doomed))[1],
        "StartDICOMImportJob": lambda: c.start_dicom_import_job(
            datastoreId=ds, dataAccessRoleArn=ROLE_ARN, inputS3Uri="s3://input-bucket/in/",
            outputS3Uri="s3://output-bucket/out/"),
        "GetDICOMImportJob": lambda: c.get_dicom_import_job(datastoreId=ds, jobId="0123abcd"),
        "ListDICOMImportJobs": lambda: c.list_dicom_import_jobs(datastoreId=ds, jobStatus="COMPLETED"),
        "TagResource": lambda: c.tag_resource(resourceArn=arn, tags={"project": "batchcopy"}),
        "ListTagsForResource": lambda: c.list_tags_for_resource(resourceArn=arn),
        "UntagResource": lambda: c.untag_resource(resourceArn=arn, tagKeys=["project"]),
    }
    model = service_model()
    assert set(calls) == set(model.operation_names)
    outcomes: dict[str, str] = {}
    for op, call in calls.items():
        try:
            out = call()
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            allowed = {s.name for s in model.operation_model(op).error_shapes} | AUTH_CODES
            assert code in allowed, f"{op} answered {code}, not one of its modelled errors"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] >= 400
            outcomes[op] = code
        else:
            assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
            outcomes[op] = "OK"
    # the operations this project leans on must work, not merely answer
    for op in ("CreateDatastore", "GetDatastore", "ListDatastores", "DeleteDatastore", "CopyImageSet",
               "GetImageSet", "GetImageSetMetadata", "GetImageFrame", "ListImageSetVersions",
               "SearchImageSets", "UpdateImageSetMetadata", "DeleteImageSet", "TagResource",
               "ListTagsForResource", "UntagResource"):
        assert outcomes[op] == "OK", (op, outcomes[op])
    assert c.list_tags_for_resource(resourceArn=arn)["tags"] == {}


def test_get_image_set_metadata_is_gzip_json(boto3_client: Any, seeded: Any) -> None:
    store = seeded["datastores"][0]
    ds, image_set = store["datastoreId"], store["imageSets"][0]
    out = boto3_client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set["imageSetId"])
    assert out["contentType"] == "application/json"
    assert out["contentEncoding"] == "gzip"
    raw = out["imageSetMetadataBlob"].read()
    assert raw[:2] == b"\x1f\x8b"  # the SDK hands over the compressed bytes
    doc = json.loads(gzip.decompress(raw))
    assert doc["SchemaVersion"] == "1.1"
    assert doc["DatastoreID"] == ds and doc["ImageSetID"] == image_set["imageSetId"]
    assert doc["Study"]["DICOM"]["StudyInstanceUID"] == image_set["studyInstanceUID"]
    series = doc["Study"]["Series"]
    assert {uid: sorted(s["Instances"]) for uid, s in series.items()} == \
        {uid: sorted(sops) for uid, sops in image_set["series"].items()}


def test_get_image_frame_streams_bytes(boto3_client: Any, seeded: Any) -> None:
    store = seeded["datastores"][0]
    ds, image_set = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    frame = first_frame(boto3_client, ds, image_set)
    out = boto3_client.get_image_frame(datastoreId=ds, imageSetId=image_set,
                                       imageFrameInformation={"imageFrameId": frame})
    assert out["contentType"] == "application/octet-stream"
    assert len(out["imageFrameBlob"].read()) > 0
    with pytest.raises(ClientError) as info:
        boto3_client.get_image_frame(datastoreId=ds, imageSetId=image_set,
                                     imageFrameInformation={"imageFrameId": UNKNOWN_ID})
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_list_datastores_paginator(boto3_client: Any, control: Any) -> None:
    status, summary = control("POST", "/_emulator/seed", {"seed": 5, "datastores": 3, "patients": 1,
                                                          "studies_per_patient": 1})
    assert status == 200
    expected = {d["datastoreId"] for d in summary["datastores"]}
    pages = list(boto3_client.get_paginator("list_datastores").paginate(PaginationConfig={"PageSize": 1}))
    assert len(pages) == 3
    assert [len(p["datastoreSummaries"]) for p in pages] == [1, 1, 1]
    assert {d["datastoreId"] for p in pages for d in p["datastoreSummaries"]} == expected


def test_search_image_sets_paginator(boto3_client: Any, control: Any) -> None:
    status, summary = control("POST", "/_emulator/seed", {"seed": 6, "patients": 3, "studies_per_patient": 2,
                                                          "series_per_study": 1, "instances_per_series": 1})
    assert status == 200
    store = summary["datastores"][0]
    expected = [s["imageSetId"] for s in store["imageSets"]]
    assert len(expected) == 6
    paginator = boto3_client.get_paginator("search_image_sets")
    pages = list(paginator.paginate(datastoreId=store["datastoreId"], PaginationConfig={"PageSize": 4}))
    assert [len(p["imageSetsMetadataSummaries"]) for p in pages] == [4, 2]
    found = [s["imageSetId"] for p in pages for s in p["imageSetsMetadataSummaries"]]
    assert sorted(found) == sorted(expected)
    assert all(isinstance(s["version"], int) for p in pages for s in p["imageSetsMetadataSummaries"])
    # a filter through the union-typed search values, via the paginator as well
    patient = store["imageSets"][0]["patientId"]
    hits = [s for p in paginator.paginate(
        datastoreId=store["datastoreId"],
        searchCriteria={"filters": [{"values": [{"DICOMPatientId": patient}], "operator": "EQUAL"}]},
        PaginationConfig={"PageSize": 1}) for s in p["imageSetsMetadataSummaries"]]
    assert sorted(h["imageSetId"] for h in hits) == sorted(
        s["imageSetId"] for s in store["imageSets"] if s["patientId"] == patient)
    assert all(h["DICOMTags"]["DICOMPatientId"] == patient for h in hits)


def test_search_by_created_at_between(boto3_client: Any, seeded: Any) -> None:
    import datetime as dt

    store = seeded["datastores"][0]
    now = dt.datetime.now(dt.timezone.utc)
    crit = {"filters": [{"operator": "BETWEEN", "values": [
        {"createdAt": now - dt.timedelta(hours=1)}, {"createdAt": now + dt.timedelta(hours=1)}]}]}
    out = boto3_client.search_image_sets(datastoreId=store["datastoreId"], searchCriteria=crit)
    assert {s["imageSetId"] for s in out["imageSetsMetadataSummaries"]} == \
        {s["imageSetId"] for s in store["imageSets"]}


def test_list_image_set_versions_paginator(boto3_client: Any, seeded: Any) -> None:
    c = boto3_client
    store = seeded["datastores"][0]
    ds = store["datastoreId"]
    src, dst = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    for version in ("1", "2", "3"):
        out = c.copy_image_set(
            datastoreId=ds, sourceImageSetId=src, force=True,
            copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"},
                                     "destinationImageSet": {"imageSetId": dst, "latestVersionId": version}})
        assert out["destinationImageSetProperties"]["latestVersionId"] == str(int(version) + 1)
        wait_idle(c, ds, src, dst)
    pages = list(c.get_paginator("list_image_set_versions").paginate(
        datastoreId=ds, imageSetId=dst, PaginationConfig={"PageSize": 1}))
    assert len(pages) == 4
    items = [item for p in pages for item in p["imageSetPropertiesList"]]
    assert [i["versionId"] for i in items] == ["4", "3", "2", "1"]
    assert [i["ImageSetWorkflowStatus"] for i in items] == ["COPIED", "COPIED", "COPIED", "CREATED"]
    assert all(i["imageSetState"] == "ACTIVE" for i in items)
