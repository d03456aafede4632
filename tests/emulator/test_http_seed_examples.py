"""The three examples of the `aws medical-imaging copy-image-set` page, over HTTP, through
boto3, aioboto3 (one shared client) and the installed AWS CLI v1.

Same keys, states and version arithmetic as the page (source stays "1", destination
becomes latest + 1, LOCKED/COPYING and LOCKED/COPYING_WITH_READ_ONLY_ACCESS at once);
then GetImageSet shows ACTIVE/COPIED, ListImageSetVersions the versions (with the capital
`ImageSetWorkflowStatus`), and a copy between studies without `force` ends COPY_FAILED with
an INVALID_REQUEST message, like the CLI's list-image-set-versions example.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from typing import Any

import pytest


PAGE_PROPERTY_KEYS = {"latestVersionId", "imageSetWorkflowStatus", "updatedAt", "imageSetId",
                      "imageSetState", "createdAt"}
PAGE_TOP_KEYS = {"destinationImageSetProperties", "sourceImageSetProperties", "datastoreId"}
ID = re.compile(r"[0-9a-z]{32}")
POLL_TIMEOUT_S = 20.0

# This test is about copy semantics, not request quotas (test_http_quotas.py covers those).
pytestmark = pytest.mark.emulator_config(enforce_rates=False)


class Boto3Api:
    def __init__(self, client: Any) -> None:
        self.c = client

    async def copy(self, ds: str, src: str, info: dict[str, Any], force: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"force": True} if force else {}
        return dict(self.c.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                                          copyImageSetInformation=info, **kwargs))

    async def get(self, ds: str, image_set: str, version: str | None = None) -> dict[str, Any]:
        kwargs = {"versionId": version} if version else {}
        return dict(self.c.get_image_set(datastoreId=ds, imageSetId=image_set, **kwargs))

    async def versions(self, ds: str, image_set: str) -> list[dict[str, Any]]:
        pages = self.c.get_paginator("list_image_set_versions").paginate(datastoreId=ds, imageSetId=image_set)
        return [item for page in pages for item in page["imageSetPropertiesList"]]


class AioApi:
    def __init__(self, client: Any) -> None:
        self.c = client

    async def copy(self, ds: str, src: str, info: dict[str, Any], force: bool = False) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"force": True} if force else {}
        return dict(await self.c.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                                                copyImageSetInformation=info, **kwargs))

    async def get(self, ds: str, image_set: str, version: str | None = None) -> dict[str, Any]:
        kwargs = {"versionId": version} if version else {}
        return dict(await self.c.get_image_set(datastoreId=ds, imageSetId=image_set, **kwargs))

    async def versions(self, ds: str, image_set: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        async for page in self.c.get_paginator("list_image_set_versions").paginate(
                datastoreId=ds, imageSetId=image_set):
            items.extend(page["imageSetPropertiesList"])
        return items


class CliApi:
    """The system AWS CLI v1 (its own botocore), as a subprocess."""

    def __init__(self, aws: str, endpoint: str, region: str) -> None:
        self.aws, self.endpoint, self.region = aws, endpoint, region

    def run(self, *args: str) -> dict[str, Any]:
        env = dict(os.environ, AWS_DISABLE_HOST_PREFIX_INJECTION="true", AWS_PAGER="")
        proc = subprocess.run(
            [self.aws, "medical-imaging", *args, "--endpoint-url", self.endpoint, "--region", self.region,
             "--output", "json"],
            env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    async def copy(self, ds: str, src: str, info: dict[str, Any], force: bool = False) -> dict[str, Any]:
        args = ["copy-image-set", "--datastore-id", ds, "--source-image-set-id", src,
                "--copy-image-set-information", json.dumps(info)]
        return self.run(*args, *(["--force"] if force else []))

    async def get(self, ds: str, image_set: str, version: str | None = None) -> dict[str, Any]:
        return self.run("get-image-set", "--datastore-id", ds, "--image-set-id", image_set,
                        *(["--version-id", version] if version else []))

    async def versions(self, ds: str, image_set: str) -> list[dict[str, Any]]:
        return list(self.run("list-image-set-versions", "--datastore-id", ds,
                             "--image-set-id", image_set)["imageSetPropertiesList"])


def epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def check_copy_answer(out: dict[str, Any], ds: str, source: str, dest_version: str,
                      dest_id: str | None) -> str:
    assert set(out) - {"ResponseMetadata"} == PAGE_TOP_KEYS
    assert out["datastoreId"] == ds
    for key in ("sourceImageSetProperties", "destinationImageSetProperties"):
        assert PAGE_PROPERTY_KEYS <= set(out[key]) <= PAGE_PROPERTY_KEYS | {"imageSetArn"}
    src, dst = out["sourceImageSetProperties"], out["destinationImageSetProperties"]
    assert (src["imageSetId"], src["latestVersionId"]) == (source, "1")
    assert (src["imageSetState"], src["imageSetWorkflowStatus"]) == ("LOCKED", "COPYING_WITH_READ_ONLY_ACCESS")
    assert (dst["imageSetState"], dst["imageSetWorkflowStatus"]) == ("LOCKED", "COPYING")
    assert dst["latestVersionId"] == dest_version
    assert ID.fullmatch(dst["imageSetId"])
    if dest_id is not None:
        assert dst["imageSetId"] == dest_id
    assert epoch(src["createdAt"]) <= epoch(src["updatedAt"])
    assert epoch(dst["createdAt"]) <= epoch(dst["updatedAt"])
    return str(dst["imageSetId"])


async def wait_active(api: Any, ds: str, *image_sets: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    out: dict[str, dict[str, Any]] = {}
    for image_set in image_sets:
        while True:
            props = await api.get(ds, image_set)
            if props["imageSetState"] == "ACTIVE":
                out[image_set] = props
                break
            assert time.monotonic() < deadline, f"{image_set} still {props['imageSetState']}"
            await asyncio.sleep(0.01)
    return out


async def example_3(api: Any, ds: str, source_info: dict[str, Any],
                    third: str) -> tuple[dict[str, Any], str, str]:
    """Example 3: the source's first instance into `third`, forced. (GetImageSet of `third`
    once the copy has ended, the series UID, the SOP Instance UID.)"""
    source = source_info["imageSetId"]
    series_uid, sops = next(iter(source_info["series"].items()))
    attrs = json.dumps({"SchemaVersion": "1.1",
                        "Study": {"Series": {series_uid: {"Instances": {sops[0]: {}}}}}},
                       separators=(",", ":"))
    out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1",
                                                         "DICOMCopies": {"copiableAttributes": attrs}},
                                      "destinationImageSet": {"imageSetId": third, "latestVersionId": "1"}},
                         force=True)
    check_copy_answer(out, ds, source, dest_version="2", dest_id=third)
    done = await wait_active(api, ds, source, third)
    return done[third], series_uid, sops[0]


async def page_examples(api: Any, emulator: Any, seeded: dict[str, Any]) -> None:
    store = seeded["datastores"][0]
    ds = store["datastoreId"]
    source, other, third = (s["imageSetId"] for s in store["imageSets"][:3])
    source_info = store["imageSets"][0]

    # Example 1: a copy without a destination makes a new image set.
    out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1"}})
    new = check_copy_answer(out, ds, source, dest_version="2", dest_id=None)
    assert new not in {source, other, third}
    new_props = out["destinationImageSetProperties"]
    assert epoch(new_props["createdAt"]) == epoch(new_props["updatedAt"])  # as on the page
    done = await wait_active(api, ds, source, new)
    assert (done[new]["versionId"], done[new]["imageSetWorkflowStatus"]) == ("2", "COPIED")
    assert (done[source]["versionId"], done[source]["imageSetWorkflowStatus"]) == ("1", "COPIED")

    # Example 2: with a destination (another study, no force): answered at once like the
    # page, then the new version fails asynchronously.
    out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1"},
                                      "destinationImageSet": {"imageSetId": other, "latestVersionId": "1"}})
    check_copy_answer(out, ds, source, dest_version="2", dest_id=other)
    done = await wait_active(api, ds, source, other)
    failed = done[other]
    assert (failed["versionId"], failed["imageSetWorkflowStatus"]) == ("2", "COPY_FAILED")
    assert failed["message"].startswith("INVALID_REQUEST:")
    assert "of SourceImageSet and DestinationImageSet don't match." in failed["message"]
    versions = await api.versions(ds, other)
    by_id = {v["versionId"]: v for v in versions}
    assert set(by_id) == {"1", "2"}
    assert by_id["2"]["ImageSetWorkflowStatus"] == "COPY_FAILED"  # capital I, as in the model
    assert by_id["2"]["imageSetState"] == "ACTIVE"
    assert by_id["2"]["message"] == failed["message"]
    assert "message" not in by_id["1"]
    assert "imageSetWorkflowStatus" not in by_id["2"]

    # Example 3: one instance into a third image set, forced over the metadata mismatch.
    done3, series_uid, sop = await example_3(api, ds, source_info, third)
    assert (done3["versionId"], done3["imageSetWorkflowStatus"]) == ("2", "COPIED")
    assert done3.get("overrides") == {"forced": True}
    snapshot = emulator.model.snapshot_image_set(ds, third)
    assert sop in snapshot["instances"][series_uid]

    # The same study into the image set of example 1, without force: succeeds, version 3.
    out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1"},
                                      "destinationImageSet": {"imageSetId": new, "latestVersionId": "2"}})
    check_copy_answer(out, ds, source, dest_version="3", dest_id=new)
    await wait_active(api, ds, source, new)
    history = await api.versions(ds, new)
    assert [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in history] == \
        [("3", "COPIED"), ("2", "COPIED"), ("1", "CREATED")]
    old = await api.get(ds, new, version="2")
    assert (old["versionId"], old["imageSetWorkflowStatus"], old["imageSetState"]) == ("2", "COPIED", "ACTIVE")
    assert [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in await api.versions(ds, source)] == \
        [("1", "COPIED")]
    stats = emulator.stats()
    assert stats["copies_requested"] == stats["copies_executed"] == 4
    assert (stats["copies_succeeded"], stats["copies_failed"]) == (3, 1)


def test_page_examples_boto3(emulator: Any, seeded: Any, boto3_client: Any) -> None:
    asyncio.run(page_examples(Boto3Api(boto3_client), emulator, seeded))


def test_page_examples_aioboto3(emulator: Any, seeded: Any, client_env: Any) -> None:
    import aioboto3
    from aiobotocore.config import AioConfig

    async def main() -> None:
        config = AioConfig(inject_host_prefix=False, retries={"total_max_attempts": 1})
        async with aioboto3.Session().client("medical-imaging", endpoint_url=emulator.endpoint,
                                             config=config) as client:
            await page_examples(AioApi(client), emulator, seeded)

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_page_examples_aws_cli(emulator: Any, seeded: Any, client_env: Any) -> None:
    aws = shutil.which("aws")
    assert aws is not None
    asyncio.run(page_examples(CliApi(aws, emulator.endpoint, client_env["AWS_DEFAULT_REGION"]), emulator, seeded))


def test_aioboto3_shared_client_runs_copies_concurrently(emulator: Any, control: Any, client_env: Any) -> None:
    """One aioboto3 client, many tasks: independent copies in parallel, each executed once."""
    import aioboto3
    from aiobotocore.config import AioConfig

    status, summary = control("POST", "/_emulator/seed", {"seed": 11, "patients": 8, "studies_per_patient": 1,
                                                          "series_per_study": 1, "instances_per_series": 2})
    assert status == 200
    store = summary["datastores"][0]
    ds, sources = store["datastoreId"], [s["imageSetId"] for s in store["imageSets"]]

    async def main() -> list[dict[str, Any]]:
        config = AioConfig(inject_host_prefix=False, retries={"total_max_attempts": 1},
                           max_pool_connections=8)
        async with aioboto3.Session().client("medical-imaging", endpoint_url=emulator.endpoint,
                                             config=config) as client:
            api = AioApi(client)
            answers = await asyncio.gather(*(
                api.copy(ds, src, {"sourceImageSet": {"latestVersionId": "1"}}) for src in sources))
            await wait_active(api, ds, *sources)
            return answers

    answers = asyncio.run(main())
    new_ids = {a["destinationImageSetProperties"]["imageSetId"] for a in answers}
    assert len(new_ids) == len(sources) == 8
    assert not new_ids & set(sources)
    stats = emulator.stats()
    assert stats["copies_requested"] == 8
    assert stats["calls"]["CopyImageSet"] == 8


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
@pytest.mark.parametrize("reading", ["2", "1"])
def test_page_examples_chained_as_printed_aws_cli(emulator: Any, seeded: Any, client_env: Any, control: Any,
                                                  reading: str) -> None:
    """The page's example 2 copies into the image set example 1 made (b9a06fef...), naming
    version "1" and answering "2". Under the default `new_copy_version=2` example 1 answers
    "2", so example 2 must name "2" (and answers "3"); under `new_copy_version=1` it runs
    exactly as printed."""
    status, config = control("POST", "/_emulator/config", {"assume": {"new_copy_version": reading}})
    assert status == 200 and config["assume"] == {"new_copy_version": reading}
    aws = shutil.which("aws")
    assert aws is not None
    api = CliApi(aws, emulator.endpoint, client_env["AWS_DEFAULT_REGION"])
    store = seeded["datastores"][0]
    ds = store["datastoreId"]
    source, third = store["imageSets"][0]["imageSetId"], store["imageSets"][2]["imageSetId"]

    async def run() -> None:
        # Example 1, word for word
        out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1"}})
        new = check_copy_answer(out, ds, source, dest_version=reading, dest_id=None)
        made_at = epoch(out["destinationImageSetProperties"]["createdAt"])
        await wait_active(api, ds, source, new)
        # Example 2: the same source into the image set example 1 made
        named = out["destinationImageSetProperties"]["latestVersionId"]
        assert (named == "1") is (reading == "1")  # literally "1" only under new_copy_version=1
        out = await api.copy(ds, source, {"sourceImageSet": {"latestVersionId": "1"},
                                          "destinationImageSet": {"imageSetId": new, "latestVersionId": named}})
        check_copy_answer(out, ds, source, dest_version=str(int(named) + 1), dest_id=new)
        assert epoch(out["destinationImageSetProperties"]["createdAt"]) == made_at  # as on the page
        done = await wait_active(api, ds, source, new)
        assert done[new]["imageSetWorkflowStatus"] == "COPIED"
        done3, _, _ = await example_3(api, ds, store["imageSets"][0], third)
        assert done3["imageSetWorkflowStatus"] == "COPIED"

    asyncio.run(run())
