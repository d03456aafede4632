"""ImagingApi's SearchImageSets over real HTTP when the service refuses two filters together
(`search_filter_pairs=documented`): the pair is sent as one filter and the other checked on
each summary (aws/search.py), with the same answer as under `any`, and only the first
two-filter search spends a refused call. Pure checks of the local filters too."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from batchcopy.aws import search
from batchcopy.aws.client import ClientSettings, ImagingApi, open_client
from batchcopy.aws.ratelimit import RateLimiter
from conftest import control_call

SEED = {"seed": 11, "patients": 3, "studies_per_patient": 2, "series_per_study": 2,
        "instances_per_series": 1}


async def two_searches(endpoint: str, ds: str, criteria: list[dict[str, Any]]) -> list[list[str]]:
    settings = ClientSettings(endpoint_url=endpoint, region="us-east-1")
    async with open_client(settings) as client:
        api = ImagingApi(client, RateLimiter(rate_scale=50))
        out = []
        for one in criteria:
            out.append(sorted(s["imageSetId"] for s in await api.search_image_sets(ds, one)))
        return out


@pytest.mark.parametrize("reading", ["any", "documented"])
def test_a_refused_pair_is_one_filter_and_a_local_check(emulator: Any, client_env: dict[str, str],
                                                         control: Any, reading: str) -> None:
    status, seeded = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    assert status == 200, seeded
    control("POST", "/_emulator/config", {"assume": {"search_filter_pairs": reading}})
    store = seeded["datastores"][0]
    ds, first = store["datastoreId"], store["imageSets"][0]
    now = datetime.now(timezone.utc)
    study = {"operator": "EQUAL", "values": [{"DICOMStudyInstanceUID": first["studyInstanceUID"]}]}
    recent = {"operator": "BETWEEN", "values": [{"createdAt": now - timedelta(days=1)},
                                                {"createdAt": now + timedelta(days=1)}]}
    future = {"operator": "BETWEEN", "values": [{"createdAt": now + timedelta(days=1)},
                                                {"createdAt": now + timedelta(days=2)}]}
    before = emulator.stats()["calls"].get("SearchImageSets", 0)
    got = asyncio.run(two_searches(emulator.endpoint, ds, [{"filters": [study, recent]},
                                                           {"filters": [future, study]}]))
    assert got == [[first["imageSetId"]], []]
    calls = emulator.stats()["calls"]["SearchImageSets"] - before
    assert calls == (2 if reading == "any" else 3)  # one refused call, then one filter each


def test_local_checks_read_the_summary_as_the_service_would() -> None:
    summary = {"imageSetId": "x", "createdAt": datetime(2024, 3, 1, tzinfo=timezone.utc),
               "updatedAt": datetime(2024, 3, 2, tzinfo=timezone.utc), "isPrimary": True,
               "DICOMTags": {"DICOMPatientId": "P1", "DICOMStudyDate": "20190105",
                             "DICOMStudyTime": "140728"}}

    def day(date: str, time: str | None = None) -> dict[str, Any]:
        value = {"DICOMStudyDate": date}
        return {"DICOMStudyDateAndTime": value if time is None else {**value, "DICOMStudyTime": time}}

    def between(low: Any, high: Any) -> dict[str, Any]:
        return {"operator": "BETWEEN", "values": [low, high]}

    assert search.matches(summary, {"operator": "EQUAL", "values": [{"DICOMPatientId": "P1"}]})
    assert not search.matches(summary, {"operator": "EQUAL", "values": [{"DICOMAccessionNumber": "A"}]})
    assert search.matches(summary, between(day("20190101"), day("20190105", "235959.999")))
    assert not search.matches(summary, between(day("20190101"), day("20190105")))  # 00:00 that day
    assert search.matches(summary, {"operator": "EQUAL", "values": [day("20190105")]})
    assert search.matches(summary, between({"updatedAt": "2024-03-01T00:00:00Z"},
                                           {"updatedAt": datetime(2024, 3, 2, tzinfo=timezone.utc)}))
    assert search.matches(summary, {"operator": "EQUAL", "values": [{"isPrimary": True}]})
    series = {"operator": "EQUAL", "values": [{"DICOMSeriesInstanceUID": "1.2"}]}
    kept, local = search.split([between({"updatedAt": 0}, {"updatedAt": 1}), series])
    assert kept == [series] and len(local) == 1  # the tags cannot answer for a series
