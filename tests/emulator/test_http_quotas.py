"""Server-side quotas over HTTP: request rates (token buckets), concurrent copies per
data store, frames per copy; and the counters of /_emulator/stats."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchcopy.emulator.config import RateQuota


def copy_new(client: Any, ds: str, src: str, **kwargs: Any) -> dict[str, Any]:
    return dict(client.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                                      copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
                                      **kwargs))


def error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def seed(control: Any, **fields: Any) -> dict[str, Any]:
    status, summary = control("POST", "/_emulator/seed", {"seed": 21, **fields})
    assert status == 200, summary
    return dict(summary["datastores"][0])


class ManualClock:
    """The quota buckets' clock, moved by the test: refills without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bucket_clock(emulator: Any) -> ManualClock:
    clock = ManualClock()
    emulator.service.quotas.use_clock(clock)
    return clock


# CopyImageSet at 0.02/s (x100 with time_scale 0.01 -> 2 per second), burst 2.
@pytest.mark.emulator_config(rates={"CopyImageSet": RateQuota(0.02, 2)})
def test_copy_image_set_throttled_beyond_burst(emulator: Any, boto3_client: Any, control: Any,
                                               bucket_clock: ManualClock) -> None:
    store = seed(control, patients=4, studies_per_patient=1, series_per_study=1, instances_per_series=1)
    ds, sources = store["datastoreId"], [s["imageSetId"] for s in store["imageSets"]]
    copy_new(boto3_client, ds, sources[0])
    copy_new(boto3_client, ds, sources[1])  # the burst is 2
    with pytest.raises(ClientError) as info:
        copy_new(boto3_client, ds, sources[2])
    assert error_code(info.value) == ("ThrottlingException", 429)
    assert info.value.response["Error"]["Message"] == "Rate exceeded"
    assert emulator.stats()["copies_requested"] == 2  # the throttled call executed nothing
    bucket_clock.now += 0.45  # one token every 0.5 s: not yet
    with pytest.raises(ClientError):
        copy_new(boto3_client, ds, sources[2])
    bucket_clock.now += 0.05
    copy_new(boto3_client, ds, sources[2])
    stats = emulator.stats()
    assert stats["copies_requested"] == 3
    assert stats["throttled"] == {"CopyImageSet": 2}
    assert stats["calls"]["CopyImageSet"] == 5  # throttled calls are calls too


@pytest.mark.emulator_config(rates={"GetDatastore": RateQuota(0.05, 3)})
def test_sustained_rate_is_the_configured_rate(emulator: Any, boto3_client: Any, seeded: Any,
                                               bucket_clock: ManualClock) -> None:
    ds = seeded["datastores"][0]["datastoreId"]

    def attempts(n: int) -> list[bool]:
        out = []
        for _ in range(n):
            try:
                boto3_client.get_datastore(datastoreId=ds)
                out.append(True)
            except ClientError as exc:
                assert error_code(exc) == ("ThrottlingException", 429)
                out.append(False)
        return out

    assert attempts(4) == [True, True, True, False]  # the burst of 3
    for _ in range(10):  # 5 per second: one token every 0.2 s, never more
        bucket_clock.now += 0.2
        assert attempts(2) == [True, False]
    bucket_clock.now += 10.0  # a long idle refills the burst, not ten seconds' worth
    assert attempts(4) == [True, True, True, False]
    assert emulator.stats()["throttled"]["GetDatastore"] == 12


def test_other_operations_have_their_own_buckets(emulator: Any, boto3_client: Any, seeded: Any) -> None:
    store = seeded["datastores"][0]
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    copy_new(boto3_client, ds, src)
    for _ in range(10):  # GetImageSet's own bucket (burst 50) is untouched by CopyImageSet's
        boto3_client.get_image_set(datastoreId=ds, imageSetId=src)
    assert emulator.stats()["throttled"] == {}


# copies of an hour (36 s at 0.01): they end when the test moves the emulated clock, not before
@pytest.mark.emulator_config(enforce_rates=False, max_concurrent_copies_per_datastore=3, copy_base_s=3600.0)
def test_concurrent_copies_per_datastore(emulator: Any, boto3_client: Any, control: Any) -> None:
    store = seed(control, patients=5, studies_per_patient=1, series_per_study=1, instances_per_series=1)
    ds, sources = store["datastoreId"], [s["imageSetId"] for s in store["imageSets"]]
    for src in sources[:3]:
        copy_new(boto3_client, ds, src)
    with pytest.raises(ClientError) as info:
        copy_new(boto3_client, ds, sources[3])
    assert error_code(info.value) == ("ServiceQuotaExceededException", 402)
    assert emulator.stats()["copies_in_flight"] == 3
    # another data store has its own quota
    other = seed(control, patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=1)
    copy_new(boto3_client, other["datastoreId"], other["imageSets"][0]["imageSetId"])
    # once the running copies end, there is room again
    assert control("POST", "/_emulator/clock", {"advance_s": 7200})[0] == 200
    deadline = time.monotonic() + 10.0  # a safety net: the copies end as soon as the clock moves
    while emulator.stats()["copies_in_flight"]:
        assert time.monotonic() < deadline, emulator.stats()
        time.sleep(0.02)
    copy_new(boto3_client, ds, sources[3])
    assert emulator.stats()["copies_requested"] == 5


@pytest.mark.emulator_config(enforce_rates=False, max_frames_per_copy=3)
def test_frames_per_copy(emulator: Any, boto3_client: Any, control: Any) -> None:
    import json

    store = seed(control, patients=2, studies_per_patient=1, series_per_study=2, instances_per_series=2)
    ds = store["datastoreId"]
    src, dst = store["imageSets"][0], store["imageSets"][1]
    with pytest.raises(ClientError) as info:  # 4 frames > 3
        copy_new(boto3_client, ds, src["imageSetId"])
    assert error_code(info.value) == ("ServiceQuotaExceededException", 402)
    series_uid, sops = next(iter(src["series"].items()))
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {series_uid: {"Instances": {sops[0]: {}}}}}})
    out = boto3_client.copy_image_set(
        datastoreId=ds, sourceImageSetId=src["imageSetId"], force=True,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1",
                                                    "DICOMCopies": {"copiableAttributes": attrs}},
                                 "destinationImageSet": {"imageSetId": dst["imageSetId"], "latestVersionId": "1"}})
    assert out["destinationImageSetProperties"]["latestVersionId"] == "2"
    assert emulator.stats()["copies_requested"] == 1


def test_rates_change_at_runtime_through_the_control_route(emulator: Any, boto3_client: Any,
                                                            control: Any, seeded: Any) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    status, config = control("POST", "/_emulator/config", {"rates": {"GetDatastore": {"rate": 0.01, "burst": 1}}})
    assert status == 200
    assert config["rates"]["GetDatastore"] == {"rate": 0.01, "burst": 1}
    boto3_client.get_datastore(datastoreId=ds)
    with pytest.raises(ClientError) as info:
        boto3_client.get_datastore(datastoreId=ds)
    assert error_code(info.value) == ("ThrottlingException", 429)
    # turn rate limits off entirely
    status, config = control("POST", "/_emulator/config", {"enforce_rates": False})
    assert status == 200 and config["enforce_rates"] is False
    assert config["rates"]["GetDatastore"] == {"rate": 0.01, "burst": 1}  # a partial update
    for _ in range(5):
        boto3_client.get_datastore(datastoreId=ds)
    # null removes an override; bad input is refused as JSON
    status, config = control("POST", "/_emulator/config", {"rates": {"GetDatastore": None}})
    assert status == 200 and "GetDatastore" not in config["rates"]
    status, body = control("POST", "/_emulator/config", {"no_such_setting": 1})
    assert status == 400 and "no_such_setting" in body["message"]
    status, got = control("GET", "/_emulator/config")
    assert status == 200 and got["enforce_rates"] is False and got["time_scale"] == 0.01


# a token every 100 s (time-scaled): the second copy is throttled however slow the machine is
@pytest.mark.emulator_config(rates={"CopyImageSet": RateQuota(0.0001, 1)})
def test_stats_count_calls_and_throttles(emulator: Any, boto3_client: Any, control: Any, seeded: Any) -> None:
    store = seeded["datastores"][0]
    ds, src = store["datastoreId"], store["imageSets"][0]["imageSetId"]
    copy_new(boto3_client, ds, src)
    with pytest.raises(ClientError):  # burst 1: the next one at once is throttled
        copy_new(boto3_client, ds, store["imageSets"][1]["imageSetId"])
    boto3_client.list_datastores()
    boto3_client.list_datastores()
    with pytest.raises(ClientError):
        boto3_client.get_datastore(datastoreId="0123456789abcdef0123456789abcdef")
    status, stats = control("GET", "/_emulator/stats")
    assert status == 200
    assert stats["calls"] == {"CopyImageSet": 2, "ListDatastores": 2, "GetDatastore": 1}
    assert stats["throttled"] == {"CopyImageSet": 1}
    assert stats["copies_requested"] == 1
    for key in ("copies_executed", "copies_succeeded", "copies_failed", "copies_in_flight", "datastores",
                "image_sets", "faults_fired"):
        assert key in stats
    # control routes are not counted, throttled or faulted; reset clears the counters
    for _ in range(20):
        assert control("GET", "/_emulator/stats")[0] == 200
    status, _ = control("POST", "/_emulator/reset")
    assert status == 200
    status, stats = control("GET", "/_emulator/stats")
    assert stats["calls"] == {} and stats["throttled"] == {} and stats["datastores"] == 0
