"""Helpers for the emulator's HTTP tests: seed, pick assumption readings, copy, wait, errors.

Every wait is a bounded loop on a state the client can see, never a sleep for a duration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

WAIT_TIMEOUT_S = 20.0
Control = Callable[..., tuple[int, Any]]


def seed(control: Control, **fields: Any) -> dict[str, Any]:
    """Seed one data store (fields override a small spec); its summary."""
    spec = {"seed": 31, "patients": 2, "studies_per_patient": 2, "series_per_study": 2,
            "instances_per_series": 2, "frames_per_instance": 1, **fields}
    status, summary = control("POST", "/_emulator/seed", spec)
    assert status == 200, summary
    return dict(summary["datastores"][0])


def assume(control: Control, **readings: str | None) -> dict[str, str]:
    """Pick readings live (None restores a default); the config's assume map after it."""
    status, config = control("POST", "/_emulator/config", {"assume": readings})
    assert status == 200, config
    return dict(config["assume"])


def subset(series: dict[str, list[str] | None]) -> str:
    """copiableAttributes selecting whole series (None) or the named SOP instances."""
    out = {uid: {} if sops is None else {"Instances": {sop: {} for sop in sops}}
           for uid, sops in series.items()}
    return json.dumps({"SchemaVersion": "1.1", "Study": {"Series": out}})


def copy_info(src_version: str = "1", dst: str | None = None, dst_version: str | None = None,
              attrs: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"sourceImageSet": {"latestVersionId": src_version}}
    if attrs is not None:
        info["sourceImageSet"]["DICOMCopies"] = {"copiableAttributes": attrs}
    if dst is not None:
        info["destinationImageSet"] = {"imageSetId": dst, "latestVersionId": dst_version or "1"}
    return info


def copy(client: Any, ds: str, src: str, src_version: str = "1", dst: str | None = None,
         dst_version: str | None = None, attrs: str | None = None, **flags: bool) -> dict[str, Any]:
    return dict(client.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                                      copyImageSetInformation=copy_info(src_version, dst, dst_version, attrs),
                                      **flags))


def wait_active(client: Any, ds: str, *image_sets: str) -> dict[str, dict[str, Any]]:
    """GetImageSet of each image set once it is no longer LOCKED."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    out: dict[str, dict[str, Any]] = {}
    for image_set in image_sets:
        while True:
            props = dict(client.get_image_set(datastoreId=ds, imageSetId=image_set))
            if props["imageSetState"] != "LOCKED":
                out[image_set] = props
                break
            assert time.monotonic() < deadline, f"{image_set} still LOCKED ({props['imageSetWorkflowStatus']})"
            time.sleep(0.01)
    return out


def versions(client: Any, ds: str, image_set: str) -> list[dict[str, Any]]:
    pages = client.get_paginator("list_image_set_versions").paginate(datastoreId=ds, imageSetId=image_set)
    return [item for page in pages for item in page["imageSetPropertiesList"]]


def error_of(exc: ClientError) -> tuple[str, int, str]:
    return (exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"],
            exc.response["Error"]["Message"])


def epoch(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value)


class AwsCli:
    """The installed AWS CLI v1 as a subprocess, pointed at the emulator."""

    def __init__(self, endpoint: str, region: str) -> None:
        aws = shutil.which("aws")
        assert aws is not None, "AWS CLI not installed"
        self.aws, self.endpoint, self.region = aws, endpoint, region

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, AWS_DISABLE_HOST_PREFIX_INJECTION="true", AWS_PAGER="")
        proc = subprocess.run(
            [self.aws, "medical-imaging", *args, "--endpoint-url", self.endpoint, "--region", self.region,
             "--output", "json"], env=env, capture_output=True, text=True, timeout=60)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.run(*args).stdout))
