"""Request validation over HTTP: shapes from botocore's model, AWS-style messages."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

GOOD_ID = "0123456789abcdef0123456789abcdef"
# Quotas come before validation on the server; these tests are about validation only.
pytestmark = pytest.mark.emulator_config(enforce_rates=False)

PATTERN_RULE = "failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-z]{32}"


@pytest.fixture
def loose_client(emulator: Any, client_env: Any) -> Any:
    """A client that lets bad parameters through, so the server has to catch them."""
    return boto3.session.Session().client(
        "medical-imaging", endpoint_url=emulator.endpoint, region_name="us-east-1",
        config=Config(inject_host_prefix=False, retries={"total_max_attempts": 1},
                      parameter_validation=False))


def validation_message(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    assert err["Error"]["Code"] == "ValidationException", err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(err["Error"]["Message"])


def raw(emulator: Any, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(emulator.endpoint + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def copy_info(version: str = "1", dest: str | None = None, attrs: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"latestVersionId": version}
    if attrs is not None:
        source["DICOMCopies"] = {"copiableAttributes": attrs}
    info: dict[str, Any] = {"sourceImageSet": source}
    if dest is not None:
        info["destinationImageSet"] = {"imageSetId": dest, "latestVersionId": "1"}
    return info


def test_bad_datastore_id_in_uri(boto3_client: Any) -> None:
    msg = validation_message(boto3_client.get_datastore, datastoreId="not-a-datastore-id")
    assert msg == ("1 validation error detected: Value 'not-a-datastore-id' at 'datastoreId' " + PATTERN_RULE)


def test_bad_ids_in_copy_are_all_reported(boto3_client: Any) -> None:
    msg = validation_message(
        boto3_client.copy_image_set, datastoreId="UPPERCASE0123456789ABCDEF0123456",
        sourceImageSetId="short", copyImageSetInformation=copy_info(dest="x" * 31))
    assert msg.startswith("3 validation errors detected: ")
    assert f"Value 'UPPERCASE0123456789ABCDEF0123456' at 'datastoreId' {PATTERN_RULE}" in msg
    assert f"Value 'short' at 'sourceImageSetId' {PATTERN_RULE}" in msg
    assert f"at 'copyImageSetInformation.destinationImageSet.imageSetId' {PATTERN_RULE}" in msg


def test_bad_version_id(boto3_client: Any, seeded: Any) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    src = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    msg = validation_message(boto3_client.copy_image_set, datastoreId=ds, sourceImageSetId=src,
                             copyImageSetInformation=copy_info(version="latest"))
    assert "at 'copyImageSetInformation.sourceImageSet.latestVersionId'" in msg
    assert "regular expression pattern: \\d+" in msg
    assert emulator_stats_copies(boto3_client) == 0


def emulator_stats_copies(client: Any) -> int:
    status, _, stats = raw_endpoint(client.meta.endpoint_url, "GET", "/_emulator/stats")
    assert status == 200
    return int(stats["copies_requested"])


def raw_endpoint(endpoint: str, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    with urllib.request.urlopen(urllib.request.Request(endpoint + path, method=method), timeout=10) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read())


def test_copiable_attributes_length_limits(loose_client: Any, seeded: Any) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    src = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    empty = validation_message(loose_client.copy_image_set, datastoreId=ds, sourceImageSetId=src,
                               copyImageSetInformation=copy_info(attrs=""))
    assert "copyImageSetInformation.sourceImageSet.DICOMCopies.copiableAttributes" in empty
    assert "Member must have length greater than or equal to 1" in empty
    huge = validation_message(loose_client.copy_image_set, datastoreId=ds, sourceImageSetId=src,
                              copyImageSetInformation=copy_info(attrs="x" * 260_001))
    assert "Member must have length less than or equal to 260000" in huge
    assert "x" * 50 not in huge  # a sensitive member's value is not echoed


@pytest.mark.parametrize("attrs", [
    "this is not json",
    json.dumps({"SchemaVersion": "1.1", "Study": {"Series": "not-a-map"}}),
    json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {"1.2.3": {"Instances": {"4.5.6": {}}}}}}),
])
def test_bad_copiable_attributes_document(boto3_client: Any, seeded: Any, attrs: str) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    src = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    dst = seeded["datastores"][0]["imageSets"][1]["imageSetId"]
    with pytest.raises(ClientError) as info:
        boto3_client.copy_image_set(datastoreId=ds, sourceImageSetId=src, force=True,
                                    copyImageSetInformation=copy_info(dest=dst, attrs=attrs))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_integer_range(loose_client: Any) -> None:
    msg = validation_message(loose_client.list_datastores, maxResults=51)
    assert msg == ("1 validation error detected: Value '51' at 'maxResults' failed to satisfy constraint: "
                   "Member must have value less than or equal to 50")
    msg = validation_message(loose_client.list_datastores, maxResults=0)
    assert "Member must have value greater than or equal to 1" in msg


def test_enum(loose_client: Any) -> None:
    msg = validation_message(loose_client.list_datastores, datastoreStatus="SLEEPING")
    assert "Member must satisfy enum value set: [CREATING, CREATE_FAILED, ACTIVE, DELETING, DELETED]" in msg


def test_missing_payload_is_null(emulator: Any) -> None:
    status, headers, body = raw(emulator, "POST", f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet")
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert body == {"message": "1 validation error detected: Value null at 'copyImageSetInformation' "
                               "failed to satisfy constraint: Member must not be null"}


def test_missing_nested_required_member(emulator: Any) -> None:
    status, headers, body = raw(emulator, "POST", f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet",
                                json.dumps({"destinationImageSet": {"imageSetId": GOOD_ID}}).encode())
    assert status == 400
    assert "Value null at 'copyImageSetInformation.sourceImageSet'" in body["message"]
    assert "Value null at 'copyImageSetInformation.destinationImageSet.latestVersionId'" in body["message"]


def test_bad_boolean_in_query(emulator: Any) -> None:
    status, headers, body = raw(emulator, "POST",
                                f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet?force=maybe",
                                json.dumps(copy_info()).encode())
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    assert "at 'force'" in body["message"]


def test_wrong_json_type(emulator: Any) -> None:
    status, headers, body = raw(emulator, "POST", f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet",
                                json.dumps({"sourceImageSet": {"latestVersionId": 1}}).encode())
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    assert "copyImageSetInformation.sourceImageSet.latestVersionId" in body["message"]


def test_malformed_json(emulator: Any) -> None:
    status, headers, body = raw(emulator, "POST", f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet",
                                b"{not json")
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "SerializationException"
    assert "message" in body


@pytest.mark.parametrize("method,path", [
    ("GET", "/"),
    ("GET", "/nothing/here"),
    ("PUT", "/datastore"),
    ("GET", f"/datastore/{GOOD_ID}/imageSet/{GOOD_ID}/copyImageSet"),
    ("POST", "/_emulator/nope"),
])
def test_unknown_route_is_json(emulator: Any, method: str, path: str) -> None:
    status, headers, body = raw(emulator, method, path, b"" if method in ("PUT", "POST") else None)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert headers["x-amzn-RequestId"]
    assert "message" in body


def test_every_answer_has_a_request_id(boto3_client: Any) -> None:
    ok = boto3_client.list_datastores()
    assert ok["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as info:
        boto3_client.get_datastore(datastoreId=GOOD_ID)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert info.value.response["ResponseMetadata"]["RequestId"]
