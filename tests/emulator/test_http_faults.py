"""Injected faults as botocore sees them, over HTTP; lost responses still execute."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from batchcopy.emulator.config import FaultSpec

pytestmark = pytest.mark.emulator_config(enforce_rates=False)


def copy_into(client: Any, ds: str, src: str, dst: str, dst_version: str) -> dict[str, Any]:
    return dict(client.copy_image_set(
        datastoreId=ds, sourceImageSetId=src, force=True,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"},
                                 "destinationImageSet": {"imageSetId": dst, "latestVersionId": dst_version}}))


def ids(seeded: dict[str, Any]) -> tuple[str, str, str]:
    store = seeded["datastores"][0]
    return store["datastoreId"], store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]


@pytest.mark.parametrize("kind,code,status", [
    ("throttle", "ThrottlingException", 429),
    ("internal", "InternalServerException", 500),
    ("unavailable", "ServiceUnavailableException", 503),
])
def test_error_faults_execute_nothing(emulator: Any, boto3_client: Any, seeded: Any,
                                      kind: str, code: str, status: int) -> None:
    ds, src, dst = ids(seeded)
    emulator.set_faults([FaultSpec(kind, "CopyImageSet", count=1)])
    with pytest.raises(ClientError) as info:
        copy_into(boto3_client, ds, src, dst, "1")
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
    stats = emulator.stats()
    assert stats["copies_requested"] == 0
    assert stats["faults_fired"] == {kind: 1}
    assert stats["faults_fired_by_operation"] == {"CopyImageSet": {kind: 1}}
    # count=1: the next call goes through, against the untouched destination version
    assert copy_into(boto3_client, ds, src, dst, "1")["destinationImageSetProperties"]["latestVersionId"] == "2"


def test_reset_drops_the_connection_before_executing(emulator: Any, boto3_client: Any, seeded: Any) -> None:
    ds, src, dst = ids(seeded)
    emulator.set_faults([FaultSpec("reset", "CopyImageSet", count=1)])
    with pytest.raises(ConnectionClosedError):
        copy_into(boto3_client, ds, src, dst, "1")
    assert emulator.stats()["copies_requested"] == 0
    props = boto3_client.get_image_set(datastoreId=ds, imageSetId=dst)
    assert (props["versionId"], props["imageSetState"]) == ("1", "ACTIVE")
    assert emulator.stats()["faults_fired"] == {"reset": 1}


def test_lost_response_executes_the_copy(emulator: Any, boto3_client: Any, seeded: Any) -> None:
    ds, src, dst = ids(seeded)
    emulator.set_faults([FaultSpec("lost_response", "CopyImageSet", count=1)])
    with pytest.raises(ConnectionClosedError):
        copy_into(boto3_client, ds, src, dst, "1")
    assert emulator.stats()["copies_requested"] == 1  # it happened, the client just never heard
    deadline = time.monotonic() + 10
    while (props := boto3_client.get_image_set(datastoreId=ds, imageSetId=dst))["imageSetState"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (props["versionId"], props["imageSetWorkflowStatus"]) == ("2", "COPIED")
    versions = boto3_client.list_image_set_versions(datastoreId=ds, imageSetId=dst)["imageSetPropertiesList"]
    assert [v["versionId"] for v in versions] == ["2", "1"]
    # a blind retry with the old version id is refused: the evidence a runner must look for
    with pytest.raises(ClientError) as info:
        copy_into(boto3_client, ds, src, dst, "1")
    assert info.value.response["Error"]["Code"] == "ConflictException"


def test_lost_response_loses_a_refusal_too(emulator: Any, boto3_client: Any, seeded: Any) -> None:
    """A 409 whose answer is dropped: the client sees what it sees after an accepted copy
    whose answer was lost, and nothing was executed."""
    ds, src, dst = ids(seeded)
    emulator.set_faults([FaultSpec("lost_response", "CopyImageSet", count=1)])
    with pytest.raises(ConnectionClosedError):
        copy_into(boto3_client, ds, src, dst, "7")  # a stale version: refused
    stats = emulator.stats()
    assert stats["copies_requested"] == 0 and stats["faults_fired"] == {"lost_response": 1}
    assert stats["refusals_lost_by_operation"] == {"CopyImageSet": 1}
    props = boto3_client.get_image_set(datastoreId=ds, imageSetId=dst)
    assert (props["versionId"], props["imageSetState"]) == ("1", "ACTIVE")
    with pytest.raises(ClientError) as info:  # count=1: the next refusal is answered
        copy_into(boto3_client, ds, src, dst, "7")
    assert info.value.response["Error"]["Code"] == "ConflictException"


def test_latency_is_scaled(emulator: Any, boto3_client: Any) -> None:
    emulator.set_faults([FaultSpec("latency", "ListDatastores", latency_s=30.0, count=1)])  # 0.3 s at 0.01
    boto3_client.list_datastores()
    assert emulator.stats()["latency_added_s_by_operation"] == {"ListDatastores": pytest.approx(0.3)}
    boto3_client.list_datastores()  # count=1: the second request is not delayed
    stats = emulator.stats()
    assert stats["latency_added_s_by_operation"] == {"ListDatastores": pytest.approx(0.3)}
    assert stats["faults_fired"] == {"latency": 1}
    assert stats["calls"]["ListDatastores"] == 2


def test_latency_then_error_in_one_request(emulator: Any, boto3_client: Any) -> None:
    emulator.set_faults([FaultSpec("latency", "*", latency_s=20.0, count=1),
                         FaultSpec("internal", "*", count=1)])
    with pytest.raises(ClientError) as info:
        boto3_client.list_datastores()
    assert info.value.response["Error"]["Code"] == "InternalServerException"
    # both rules fired on the one request: the delay, then the error
    stats = emulator.stats()
    assert stats["faults_fired"] == {"latency": 1, "internal": 1}
    assert stats["latency_added_s_by_operation"] == {"ListDatastores": pytest.approx(0.2)}
    assert stats["calls"] == {"ListDatastores": 1}


def test_reset_forgets_the_latency_added(emulator: Any, boto3_client: Any, control: Any) -> None:
    emulator.set_faults([FaultSpec("latency", "ListDatastores", latency_s=1.0)])
    boto3_client.list_datastores()
    assert emulator.stats()["latency_added_s_by_operation"] == {"ListDatastores": pytest.approx(0.01)}
    assert control("POST", "/_emulator/reset")[0] == 200
    assert emulator.stats()["latency_added_s_by_operation"] == {}


def test_after_and_count(emulator: Any, boto3_client: Any) -> None:
    emulator.set_faults([FaultSpec("throttle", "ListDatastores", after=2, count=2)])
    for _ in range(3):  # other operations neither match nor advance `after`
        with pytest.raises(ClientError) as info:
            boto3_client.get_datastore(datastoreId="0123456789abcdef0123456789abcdef")
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    outcomes = []
    for _ in range(6):
        try:
            boto3_client.list_datastores()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["ok", "ok", "ThrottlingException", "ThrottlingException", "ok", "ok"]
    assert emulator.stats()["faults_fired_by_operation"] == {"ListDatastores": {"throttle": 2}}


def test_probability_is_deterministic_per_seed(emulator: Any, boto3_client: Any, control: Any) -> None:
    def pattern(seed: int) -> list[bool]:
        status, _ = control("POST", "/_emulator/faults", {
            "faults": [{"kind": "internal", "operation": "ListDatastores", "probability": 0.5}],
            "fault_seed": seed})
        assert status == 200
        out = []
        for _ in range(24):
            try:
                boto3_client.list_datastores()
                out.append(True)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "InternalServerException"
                out.append(False)
        return out

    first, again, other = pattern(3), pattern(3), pattern(4)
    assert first == again
    assert first != other
    assert 0 < first.count(False) < 24


def test_faults_only_hit_their_operation_and_never_control_routes(emulator: Any, boto3_client: Any,
                                                                   control: Any) -> None:
    status, body = control("POST", "/_emulator/faults", {"faults": [{"kind": "reset", "operation": "GetDatastore"},
                                                                    {"kind": "unavailable"}]})
    assert status == 200 and len(body["faults"]) == 2
    for _ in range(3):
        assert control("GET", "/_emulator/stats")[0] == 200
    with pytest.raises(ClientError) as info:
        boto3_client.list_datastores()  # "*" applies
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    with pytest.raises(ConnectionClosedError):
        boto3_client.get_datastore(datastoreId="0123456789abcdef0123456789abcdef")
    status, body = control("POST", "/_emulator/faults", {"faults": []})
    assert status == 200 and body["faults"] == []
    assert "datastoreSummaries" in boto3_client.list_datastores()
    status, body = control("POST", "/_emulator/faults", {"faults": [{"kind": "explode"}]})
    assert status == 400 and "explode" in body["message"]
