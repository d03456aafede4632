"""The assumption switches: how they are selected (config JSON, `serve --assume`, the live
config route), how they are listed (`batchcopy emulator assumptions`, GET
/_emulator/assumptions), and what a client sees under each reading of the switches
that are not about one operation's state machine (listing order, message spacing,
SchemaVersion's type). The copy, update and delete switches have files of their own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kit.emukit import assume, copy, epoch, error_of, seed, subset, versions, wait_active
from typer.testing import CliRunner

from batchcopy.emulator.assumptions import REGISTRY, SWITCHES, parse_assignment, validate
from batchcopy.emulator.cli import emulator_app, parse_assume
from batchcopy.emulator.config import EmulatorConfig

pytestmark = pytest.mark.emulator_config(enforce_rates=False)


# ---------------------------------------------------------------- the registry and its selection
def test_registry_rows_are_complete() -> None:
    assert len({s.name for s in SWITCHES}) == len(SWITCHES) == len(REGISTRY)
    for switch in SWITCHES:
        assert switch.name.isidentifier() and switch.name == switch.name.lower()
        assert len(switch.readings) >= 2 and switch.default in switch.values
        assert switch.evidence and switch.behaviour
        assert all(r.meaning for r in switch.readings)


def test_unknown_names_and_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="version_order") as info:
        validate({"no_such_switch": "x"})
    assert "unknown assumption 'no_such_switch'" in str(info.value)
    with pytest.raises(ValueError, match="newest_first, oldest_first"):
        validate({"version_order": "sideways"})
    with pytest.raises(ValueError, match="oldest_first"):
        EmulatorConfig.from_dict({"assume": {"version_order": "sideways"}})
    assert EmulatorConfig.from_dict({"assume": {"version_order": "oldest_first"}}).reading(
        "version_order") == "oldest_first"
    assert EmulatorConfig().reading("version_order") == "newest_first"
    assert parse_assignment(" version_order = oldest_first ") == ("version_order", "oldest_first")
    import typer

    for bad in ("version_order", "version_order=sideways", "nope=1"):
        with pytest.raises(typer.BadParameter):
            parse_assume(bad)


def test_config_route_merges_per_name_and_lists_them(control: Any) -> None:
    assert assume(control, version_order="oldest_first") == {"version_order": "oldest_first"}
    assert assume(control, copy_failed_message="double_space") == \
        {"version_order": "oldest_first", "copy_failed_message": "double_space"}
    assert assume(control, version_order=None) == {"copy_failed_message": "double_space"}
    status, body = control("POST", "/_emulator/config", {"assume": {"version_order": "sideways"}})
    assert status == 400 and "newest_first, oldest_first" in body["message"]
    status, body = control("POST", "/_emulator/config", {"assume": {"bogus": "x"}})
    assert status == 400 and "unknown assumption 'bogus'" in body["message"]
    status, listed = control("GET", "/_emulator/assumptions")
    assert status == 200
    rows = {row["name"]: row for row in listed["assumptions"]}
    assert set(rows) == set(REGISTRY)
    assert rows["copy_failed_message"]["value"] == "double_space"
    assert rows["version_order"]["value"] == rows["version_order"]["default"] == "newest_first"
    assert set(rows["version_order"]["readings"]) == {"newest_first", "oldest_first"}
    assert "list-image-set-versions" in rows["version_order"]["evidence"]


def test_assumptions_command_table_json_and_live(emulator: Any, control: Any) -> None:
    runner = CliRunner()
    table = runner.invoke(emulator_app, ["assumptions"])
    assert table.exit_code == 0, table.output
    for switch in SWITCHES:
        assert f"{switch.name} = {switch.default}" in table.output
        assert switch.evidence in table.output
        for reading in switch.readings:
            assert reading.value in table.output and reading.meaning in table.output
    as_json = runner.invoke(emulator_app, ["assumptions", "--json"])
    assert as_json.exit_code == 0
    assert [row["name"] for row in json.loads(as_json.output)] == [s.name for s in SWITCHES]
    assume(control, version_order="oldest_first")
    live = runner.invoke(emulator_app, ["assumptions", "--json", "--endpoint-url", emulator.endpoint])
    assert live.exit_code == 0, live.output
    assert {r["name"]: r["value"] for r in json.loads(live.output)}["version_order"] == "oldest_first"


# ---------------------------------------------------------------- version_order
@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_version_order(boto3_client: Any, control: Any, order: str) -> None:
    assume(control, version_order=order)
    store = seed(control)
    ds = store["datastoreId"]
    src, dst = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    for version in ("1", "2"):
        copy(boto3_client, ds, src, dst=dst, dst_version=version, force=True)
        wait_active(boto3_client, ds, src, dst)
    pages = list(boto3_client.get_paginator("list_image_set_versions").paginate(
        datastoreId=ds, imageSetId=dst, PaginationConfig={"PageSize": 1}))
    listed = [item["versionId"] for page in pages for item in page["imageSetPropertiesList"]]
    assert listed == (["3", "2", "1"] if order == "newest_first" else ["1", "2", "3"])
    first = boto3_client.list_image_set_versions(datastoreId=ds, imageSetId=dst, maxResults=1)
    assume(control, version_order="oldest_first" if order == "newest_first" else "newest_first")
    with pytest.raises(ClientError) as info:  # a cursor belongs to the order it was made in
        boto3_client.list_image_set_versions(datastoreId=ds, imageSetId=dst, nextToken=first["nextToken"])
    assert error_of(info.value)[:2] == ("ValidationException", 400)


# ---------------------------------------------------------------- copy_failed_message
@pytest.mark.parametrize(("reading", "prefix"), [
    pytest.param("single_space", "INVALID_REQUEST: ", id="single_space"),
    pytest.param("double_space", "INVALID_REQUEST:  ", id="double_space")])
def test_copy_failed_message(boto3_client: Any, control: Any, reading: str, prefix: str) -> None:
    assume(control, copy_failed_message=reading)
    store = seed(control)
    ds = store["datastoreId"]
    a, b = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]  # two studies
    copy(boto3_client, ds, a, dst=b)
    failed = wait_active(boto3_client, ds, a, b)[b]
    assert failed["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert failed["message"] == f"{prefix}Study of SourceImageSet and DestinationImageSet don't match."
    assert versions(boto3_client, ds, b)[0]["message"] == failed["message"]


# ---------------------------------------------------------------- schema_version
@pytest.mark.parametrize("reading", ["string_only", "number_ok"])
def test_schema_version(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, schema_version=reading)
    store = seed(control)
    ds, src = store["datastoreId"], store["imageSets"][0]
    series_uid = next(iter(src["series"]))
    as_number = subset({series_uid: None}).replace('"SchemaVersion": "1.1"', '"SchemaVersion": 1.1')
    assert '"SchemaVersion": 1.1,' in as_number
    copy(boto3_client, ds, src["imageSetId"], attrs=subset({series_uid: None}))  # the string: always
    wait_active(boto3_client, ds, src["imageSetId"])
    if reading == "string_only":
        with pytest.raises(ClientError) as info:
            copy(boto3_client, ds, src["imageSetId"], attrs=as_number)
        code, status, message = error_of(info.value)
        assert (code, status) == ("ValidationException", 400) and "SchemaVersion 1.1" in message
        assert emulator.stats()["copies_requested"] == 1
    else:
        out = copy(boto3_client, ds, src["imageSetId"], attrs=as_number)
        assert out["destinationImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING"
        assert emulator.stats()["copies_requested"] == 2


# ---------------------------------------------------------------- version_timestamps
@pytest.mark.emulator_config(enforce_rates=False, copy_base_s=3600.0)
@pytest.mark.parametrize("reading", ["image_set_created", "image_set_both", "per_version"])
def test_version_timestamps(emulator: Any, boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, version_timestamps=reading)
    store = seed(control)
    ds = store["datastoreId"]
    src, dst = store["imageSets"][0]["imageSetId"], store["imageSets"][1]["imageSetId"]
    seeded_at = epoch(boto3_client.get_image_set(datastoreId=ds, imageSetId=dst)["createdAt"])
    emulator.set_clock(advance_s=1000)
    copied_at = epoch(copy(boto3_client, ds, src, dst=dst, force=True)
                      ["destinationImageSetProperties"]["updatedAt"])
    emulator.set_clock(advance_s=1000)  # the copy ends 36 s after it began
    finished_at = copied_at + 36.0
    assert copied_at - seeded_at >= 1000
    by_version = {v["versionId"]: (epoch(v["createdAt"]), epoch(v["updatedAt"]))
                  for v in versions(boto3_client, ds, dst)}
    got = boto3_client.get_image_set(datastoreId=ds, imageSetId=dst, versionId="1")
    assert (epoch(got["createdAt"]), epoch(got["updatedAt"])) == by_version["1"]  # both views agree
    expected = {
        "image_set_created": {"1": (seeded_at, seeded_at), "2": (seeded_at, finished_at)},
        "image_set_both": {"1": (seeded_at, finished_at), "2": (seeded_at, finished_at)},
        "per_version": {"1": (seeded_at, seeded_at), "2": (copied_at, finished_at)},
    }[reading]
    for version, (created, updated) in expected.items():
        assert by_version[version] == (pytest.approx(created, abs=0.01), pytest.approx(updated, abs=0.01))


# ---------------------------------------------------------------- SearchImageSets
def _search(client: Any, ds: str, *filters: dict[str, Any]) -> list[str]:
    pages = client.get_paginator("search_image_sets").paginate(
        datastoreId=ds, searchCriteria={"filters": list(filters)})
    return sorted(s["imageSetId"] for page in pages for s in page["imageSetsMetadataSummaries"])


@pytest.mark.parametrize("reading", ["any", "documented"])
def test_search_filter_pairs(boto3_client: Any, control: Any, reading: str) -> None:
    from datetime import datetime, timedelta, timezone

    assume(control, search_filter_pairs=reading)
    store = seed(control)
    ds, first = store["datastoreId"], store["imageSets"][0]
    now = datetime.now(timezone.utc)
    recent = {"operator": "BETWEEN", "values": [{"updatedAt": now - timedelta(days=1)},
                                                {"updatedAt": now + timedelta(days=1)}]}
    series = {"operator": "EQUAL", "values": [{"DICOMSeriesInstanceUID": next(iter(first["series"]))}]}
    study = {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": first["studyInstanceUID"]}]}
    assert _search(boto3_client, ds, series, recent) == [first["imageSetId"]]  # example 4's pair
    assert _search(boto3_client, ds, study) == [first["imageSetId"]]  # one filter: always
    if reading == "any":
        assert _search(boto3_client, ds, study, recent) == [first["imageSetId"]]
        return
    with pytest.raises(ClientError) as info:
        _search(boto3_client, ds, study, recent)
    code, status, message = error_of(info.value)
    assert (code, status) == ("ValidationException", 400)
    assert "BETWEEN updatedAt" in message and "EQUAL DICOMStudyInstanceUID" in message


@pytest.mark.parametrize("reading", ["inclusive", "exclusive"])
def test_search_between_upper(boto3_client: Any, control: Any, reading: str) -> None:
    assume(control, search_between_upper=reading)
    store = seed(control)
    ds = store["datastoreId"]
    summaries = boto3_client.search_image_sets(datastoreId=ds)["imageSetsMetadataSummaries"]
    target = summaries[0]
    date, time = target["DICOMTags"]["DICOMStudyDate"], target["DICOMTags"]["DICOMStudyTime"]

    def between(low: str, high: str, high_time: str | None = None) -> list[str]:
        upper: dict[str, str] = {"DICOMStudyDate": high}
        if high_time is not None:
            upper["DICOMStudyTime"] = high_time
        return _search(boto3_client, ds, {"operator": "BETWEEN", "values": [
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": low}}, {"DICOMStudyDateAndTime": upper}]})

    same_day = [s["imageSetId"] for s in summaries if s["DICOMTags"]["DICOMStudyDate"] == date]
    # the study's own date and time as the upper bound: in only when the bound is inclusive
    assert (target["imageSetId"] in between("19000101", date, time)) is (reading == "inclusive")
    # a time left out is 00:00 (search-image-sets.rst example 2): that day's studies are later
    assert not set(same_day) & set(between("19000101", date)) or time == "000000"
    assert set(same_day) <= set(between("19000101", date, "235959.999999"))
