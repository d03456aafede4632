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


# ---- every kind of answer, botocore's path and the light path side by side ----------------
HTML = {"Content-Type": "text/html"}
JSON = {"Content-Type": "application/json"}
ANSWERS: list[tuple[int, dict[str, str], bytes]] = [
    (503, HTML, b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head></html>"),
    (502, HTML, b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>"),
    (504, HTML, b""),
    (500, JSON, b""),
    (503, {**JSON, "x-amzn-ErrorType": "ServiceUnavailableException"}, b'{"message": "busy"}'),
    (400, JSON, b'{"Code": "ValidationException", "Message": "capital C"}'),
    (400, JSON, b'{"code": "ValidationException", "message": "lower case"}'),
    (409, JSON, b'{"__type": "com.amazonaws.medicalimaging#ConflictException:http://x", '
                b'"message": "a namespaced type"}'),
    (429, {**JSON, "x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/"},
     b'{"message": "Rate exceeded"}'),
    (403, HTML, b"<html><body><h1>403 Forbidden</h1>Request blocked by a WAF.</body></html>"),
    (404, HTML, b"<html><head><title>404 Not Found</title></head></html>"),
    (404, JSON, b'{"message": "no code at all"}'),
    (400, {"Content-Type": "text/plain"}, b"Bad Request"),
    (200, HTML, b"<html><body>Please log in to the proxy</body></html>"),
    (200, JSON, b""),
    (200, JSON, b"[]"),
]


def _served(answers: list[tuple[int, dict[str, str], bytes]]) -> Any:
    from kit.httpkit import Canned

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        return answers[int(path.split("/")[4], 16) % len(answers)]  # the image set id says which

    return Canned(answer)


def _comparable(outcome: Any) -> Any:
    """A result or error without what differs per exchange (the Date header) and without
    botocore's retry handler's note (MaxAttemptsReached: its retries are off, ours decide)."""
    if isinstance(outcome, BaseException):
        response = getattr(outcome, "response", None)
        if response is None:
            return type(outcome).__name__
        kind, outcome = type(outcome).__name__, response
    else:
        kind = "answer"
    meta = {k: v for k, v in outcome["ResponseMetadata"].items() if k != "MaxAttemptsReached"}
    meta["HTTPHeaders"] = {k: v for k, v in meta["HTTPHeaders"].items() if k != "date"}
    return kind, {**outcome, "ResponseMetadata": meta}


@pytest.mark.parametrize("operation", ["GetImageSet", "CopyImageSet"])
def test_every_kind_of_answer_reads_as_botocore_reads_it(
        client_env: dict[str, str], operation: str) -> None:
    """Load balancers' and proxies' HTML pages, empty bodies, Code / code / __type: the
    light path raises what botocore's client raises (class, code, message, status,
    modelled fields, metadata) and answers what it answers."""
    from botocore import xform_name

    ds = "d" * 32

    def params(case: int) -> dict[str, Any]:
        image_set = f"{case:032x}"
        if operation == "GetImageSet":
            return {"datastoreId": ds, "imageSetId": image_set}
        return {"datastoreId": ds, "sourceImageSetId": image_set,
                "copyImageSetInformation": {"sourceImageSet": {"latestVersionId": "1"}}}

    async def main(endpoint: str) -> list[tuple[Any, Any]]:
        out = []
        async with open_client(ClientSettings(endpoint_url=endpoint)) as client:
            light = LightCalls(client)
            method = getattr(client, xform_name(operation))
            for case in range(len(ANSWERS)):
                pair = []
                for call in (lambda: method(**params(case)),
                             lambda: light.call(operation, params(case))):
                    try:
                        pair.append(_comparable(await call()))
                    except Exception as exc:  # noqa: BLE001 - compared below
                        pair.append(_comparable(exc))
                out.append((pair[0], pair[1]))
        return out

    with _served(ANSWERS) as server:
        results = asyncio.run(main(server.endpoint))
    assert len(server.requests) == 2 * len(ANSWERS)
    for (status, _, body), (botocore_said, light_said) in zip(ANSWERS, results):
        assert light_said == botocore_said, (status, body)
    codes = [said[1]["Error"]["Code"] for said, _ in results if said[0] != "answer"
             and isinstance(said, tuple)]
    # the HTML and empty 5xx pages carry their status as the code, as botocore reads them
    assert codes[:4] == ["503", "502", "504", "500"]
    assert "ValidationException" in codes and "ConflictException" in codes


@pytest.mark.emulator_config(enforce_rates=False)
def test_a_load_balancers_html_503_is_transient_on_both_paths(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    """The emulator's html503 fault (nothing executed): botocore and the light path both
    read it as code 503, which retry.classify() takes for 'not executed, try again' even
    for CopyImageSet."""
    from batchcopy.aws.retry import ErrorKind, classify

    ds = seeded["datastores"][0]["datastoreId"]
    a = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    emulator.set_faults([FaultSpec(kind="html503", operation="*")])
    get = both(emulator.endpoint, "GetImageSet", {"datastoreId": ds, "imageSetId": a})
    assert get[0] == get[1] and get[1][0] == {"Code": "503", "Message": "Service Unavailable"}
    copy = {"datastoreId": ds, "sourceImageSetId": a,
            "copyImageSetInformation": {"sourceImageSet": {"latestVersionId": "1"}}}
    errors = []
    for light in (False, True):
        async def main() -> None:
            async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
                try:
                    if light:
                        await LightCalls(client).call("CopyImageSet", copy)
                    else:
                        await client.copy_image_set(**copy)
                except ClientError as exc:
                    errors.append(exc)
        asyncio.run(main())
    assert [classify(e, operation="CopyImageSet") for e in errors] == [ErrorKind.TRANSIENT] * 2
    assert emulator.stats()["copies_requested"] == 0
    assert emulator.stats()["faults_fired"] == {"html503": 4}


def test_debug_keeps_the_light_path_and_logs_its_calls(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any]) -> None:
    """--debug investigates the path a run really takes: the light path stays on and logs
    each exchange (operation, status or error code, latency) as botocore's hooks would."""
    import io

    from batchcopy.aws.client import ImagingApi
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.console import logs

    ds = seeded["datastores"][0]["datastoreId"]
    a = seeded["datastores"][0]["imageSets"][0]["imageSetId"]
    emulator.set_faults([FaultSpec(kind="html503", operation="GetImageSet", count=1)])
    out = io.StringIO()
    setup = logs.configure(level="debug", fmt="json", stream=out)
    try:
        async def main() -> bool:
            async with open_client(ClientSettings(endpoint_url=emulator.endpoint)) as client:
                logs.attach_api_logging(client)
                api = ImagingApi(client, RateLimiter())
                await api.get_image_set(ds, a)  # the 503 page, then the answer
                return api._light is not None
        light = asyncio.run(main())
    finally:
        setup.close()
    import json as _json
    api_lines = [r for r in map(_json.loads, out.getvalue().splitlines()) if r["event"] == "api"]
    assert light
    assert [(r["operation"], r["http_status"], r["error_code"]) for r in api_lines] == [
        ("GetImageSet", 503, "503"), ("GetImageSet", 200, None)]
    assert emulator.stats()["calls"]["GetImageSet"] == 2


def test_a_200_page_that_is_not_the_service_is_tried_again_not_a_bug(client_env: dict[str, str]) -> None:
    """A captive portal's 200 HTML page where GetImageSet should answer: botocore's parse
    gives an answer without versionId; ImagingApi calls it unreadable (tried again, then a
    passing failure), never a KeyError that would stop a run as a bug."""
    from batchcopy.aws.client import ImagingApi
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.aws.retry import Backoff, ErrorKind, UnreadableAnswer, classify
    from kit.httpkit import Canned

    page = (200, {"Content-Type": "text/html"}, b"<html><body>Log in to the network</body></html>")
    with Canned(lambda method, path: page) as portal:
        async def main() -> BaseException:
            async with open_client(ClientSettings(endpoint_url=portal.endpoint)) as client:
                api = ImagingApi(client, RateLimiter(), max_attempts=3, backoff=Backoff(0.001, 0.002))
                try:
                    await api.get_image_set("d" * 32, "a" * 32)
                except Exception as exc:  # noqa: BLE001 - inspected below
                    return exc
            raise AssertionError("answered")
        exc = asyncio.run(main())
        seen = len(portal.requests)
    assert isinstance(exc, UnreadableAnswer) and seen == 3
    assert classify(exc, operation="GetImageSet") is ErrorKind.TRANSIENT
    assert classify(exc, operation="CopyImageSet") is ErrorKind.AMBIGUOUS
