"""The light request path (aws/lightcalls.py) answers as botocore does, over real HTTP,
signed so that the emulator's SigV4 check accepts it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchcopy.aws.client import ClientSettings, open_client
from batchcopy.emulator.config import FaultSpec
from batchcopy.aws.lightcalls import LightCalls

AUTH = {"keys": {"testing": "testing"}, "expired_tokens": ["old-token"]}


def both(endpoint: str, operation: str, params: dict[str, Any],
         light_params: dict[str, Any] | None = None) -> list[Any]:
    """[botocore's answer or error, the light path's (to light_params if given)], each with
    ResponseMetadata dropped."""
    from botocore import xform_name

    async def main() -> list[Any]:
        out = []
        async with open_client(ClientSettings(endpoint_url=endpoint)) as client:
            light = LightCalls(client)
            for call in (lambda: getattr(client, xform_name(operation))(**params),
                         lambda: light.call(operation, light_params or params)):
                try:
                    got = await call()
                    got.pop("ResponseMetadata")
                    out.append(got)
                except ClientError as exc:
                    out.append((exc.response["Error"], exc.response["ResponseMetadata"]["HTTPStatusCode"],
                                exc.operation_name))
        return out

    return asyncio.run(main())


@pytest.mark.emulator_config(auth=AUTH, enforce_rates=False)
def test_reads_copies_and_errors_match_botocore(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    store = seeded["datastores"][0]
    ds, sets = store["datastoreId"], store["imageSets"]
    a, b, c = (s["imageSetId"] for s in sets[:3])
    botocore_answer, light_answer = both(emulator.endpoint, "GetImageSet",
                                         {"datastoreId": ds, "imageSetId": a})
    assert light_answer == botocore_answer and light_answer["versionId"] == "1"
    assert light_answer["createdAt"].tzinfo is not None  # a datetime, as botocore parses it
    got = both(emulator.endpoint, "GetImageSet", {"datastoreId": ds, "imageSetId": a, "versionId": "1"})
    assert got[0] == got[1]
    missing = both(emulator.endpoint, "GetImageSet", {"datastoreId": ds, "imageSetId": "f" * 32})
    assert missing[0] == missing[1] and missing[1][1] == 404
    copy = {"datastoreId": ds, "sourceImageSetId": b, "promoteToPrimary": False,
            "copyImageSetInformation": {"sourceImageSet": {"latestVersionId": "1"}}}
    botocore_copy, light_copy = both(emulator.endpoint, "CopyImageSet", copy,
                                     dict(copy, sourceImageSetId=c))  # b is LOCKED meanwhile
    assert isinstance(light_copy, dict) and light_copy.keys() == botocore_copy.keys(), light_copy
    assert light_copy["sourceImageSetProperties"]["imageSetId"] == c
    assert light_copy["sourceImageSetProperties"]["latestVersionId"] == "1"
    assert light_copy["destinationImageSetProperties"]["imageSetState"] == \
        botocore_copy["destinationImageSetProperties"]["imageSetState"]
    stale = dict(copy, copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"},
                                                 "destinationImageSet": {"imageSetId": a,
                                                                         "latestVersionId": "9"}})
    conflict = both(emulator.endpoint, "CopyImageSet", stale)
    assert conflict[0] == conflict[1] and conflict[1][0]["Code"] in ("ConflictException",
                                                                      "ValidationException")
    emulator.set_faults([FaultSpec(kind="throttle", operation="GetImageSet", count=2)])
    throttled = both(emulator.endpoint, "GetImageSet", {"datastoreId": ds, "imageSetId": a})
    assert throttled[0] == throttled[1] and throttled[1][0]["Code"] == "ThrottlingException"
    assert emulator.stats()["calls"]["CopyImageSet"] == 4  # two copies, two refusals


@pytest.mark.emulator_config(auth=AUTH)
def test_signature_uses_the_session_token_and_wrong_keys_are_refused(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ds = seeded["datastores"][0]["datastoreId"]
    a = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    params = {"datastoreId": ds, "imageSetId": a}
    monkeypatch.setenv("AWS_SESSION_TOKEN", "old-token")
    expired = both(emulator.endpoint, "GetImageSet", params)
    assert expired[0] == expired[1] and expired[1][0]["Code"] == "ExpiredTokenException"
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    forged = both(emulator.endpoint, "GetImageSet", params)
    assert forged[0] == forged[1] and forged[1][1] == 403


def test_a_run_sends_its_hot_calls_on_the_light_path(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    from batchcopy.aws.client import ImagingApi
    from batchcopy.aws.ratelimit import RateLimiter

    ds = seeded["datastores"][0]["datastoreId"]
    a = seeded["datastores"][0]["imageSets"][0]["imageSetId"]

    async def main() -> tuple[bool, int]:
        async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
            hooked = 0

            def count(**_: Any) -> None:
                nonlocal hooked
                hooked += 1

            client.meta.events.register("before-send.medical-imaging", count)
            api = ImagingApi(client, RateLimiter())
            await api.get_image_set(ds, a)
            return api._light is not None, hooked

    light, hooked = asyncio.run(main())
    assert light and hooked == 0  # botocore's request path was not used
    assert emulator.stats()["calls"]["GetImageSet"] == 1


@pytest.mark.emulator_config(enforce_rates=False)
@pytest.mark.parametrize("light", [True, False])
def test_the_light_path_is_spaced_by_the_send_hook_like_botocore(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, light: bool) -> None:
    """Pacing spaces a request when it is about to leave (botocore's before-send); the
    light path skips botocore, so it must call the same hook itself: every GetImageSet
    and CopyImageSet it sends goes through the bucket's spacing. BATCHCOPY_LIGHT_CALLS=0
    sends them through botocore, spaced by the hook there."""
    if not light:
        monkeypatch.setenv("BATCHCOPY_LIGHT_CALLS", "0")
    from batchcopy.aws.client import ImagingApi
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.core.specs import CopyRequest

    store = seeded["datastores"][0]
    ds, sets = store["datastoreId"], store["imageSets"]

    async def main() -> tuple[bool, int, int]:
        async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
            api = ImagingApi(client, RateLimiter({"GetImageSet": (50.0, 1.0),
                                                  "CopyImageSet": (50.0, 1.0)}))
            for _ in range(3):
                await api.get_image_set(ds, sets[0]["imageSetId"])
            await api.copy_image_set(CopyRequest(
                datastore_id=ds, source_image_set_id=sets[1]["imageSetId"],
                source_version_id="1", destination_image_set_id=None,
                destination_version_id=None, copiable_attributes=None, force=False,
                promote_to_primary=False))
            return (api._light is not None, api.limiter.bucket("GetImageSet").sends,
                    api.limiter.bucket("CopyImageSet").sends)

    light_on, reads, copies = asyncio.run(main())
    assert light_on is light
    assert (reads, copies) == (3, 1)
    assert emulator.stats()["calls"]["CopyImageSet"] == 1
