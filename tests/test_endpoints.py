"""One endpoint rule, botocore's: whichever route names the endpoint (--endpoint-url, the
environment, the profile), image-set calls go where botocore sends them, the light path
included, and the set-ups the host prefix breaks are refused in one line before any call."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchcopy.aws.client import ClientSettings, open_client
from batchcopy.aws.endpoints import EndpointError, check, resolve
from batchcopy.aws.lightcalls import LightCalls
from kit.runkit import write_manifest

VPCE = "https://vpce-0a1b2c3d4e5f-abcdefgh.runtime-medical-imaging.eu-west-1.vpce.amazonaws.com"
REGIONAL = "https://medical-imaging.eu-west-1.amazonaws.com"
ROUTES = ("flag", "env", "profile")


def configure(route: str, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *,
              disable: bool) -> str | None:
    """Name `url` by one route; host prefix injection disabled in the profile if `disable`.
    Returns what --endpoint-url would be."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_MEDICAL_IMAGING", "AWS_PROFILE",
                 "AWS_DISABLE_HOST_PREFIX_INJECTION", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    lines = ["[default]", "region = eu-west-1"]
    if disable:
        lines.append("disable_host_prefix_injection = true")
    if route == "profile":
        lines.append(f"endpoint_url = {url}")
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    if route == "env":
        monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", url)
    return url if route == "flag" else None


def botocore_url(endpoint_url: str | None) -> str:
    """The URL botocore's own client sends GetImageSet to (caught before it leaves)."""
    import botocore.session

    class Sent(Exception):
        pass

    client = botocore.session.Session().create_client("medical-imaging", region_name="eu-west-1",
                                                      endpoint_url=endpoint_url)

    def stop(request: Any, **_: Any) -> None:
        raise Sent(request.url)

    client.meta.events.register("before-send.medical-imaging.GetImageSet", stop)
    try:
        client.get_image_set(datastoreId="d" * 32, imageSetId="a" * 32)
    except Sent as sent:
        return str(sent.args[0]).split("/datastore/")[0]
    raise AssertionError("botocore sent nothing")


def light_origin(endpoint_url: str | None) -> str:
    async def main() -> str:
        async with open_client(ClientSettings(endpoint_url=endpoint_url, region="eu-west-1")) as c:
            return str(LightCalls(c)._origin)
    return asyncio.run(main())


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("url,disable,runtime", [
    (REGIONAL, False, "https://runtime-medical-imaging.eu-west-1.amazonaws.com"),
    (VPCE, True, VPCE),
])
def test_every_route_sends_where_botocore_sends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                route: str, url: str, disable: bool,
                                                runtime: str) -> None:
    """The regional host by any route keeps the runtime- prefix; a VPC endpoint name by any
    route works once host prefix injection is off. The light path agrees with botocore."""
    flag = configure(route, url, monkeypatch, tmp_path, disable=disable)
    endpoint = resolve(profile=None, region="eu-west-1", endpoint_url=flag)
    check(endpoint)
    assert endpoint.runtime_url == runtime
    assert botocore_url(flag) == runtime == light_origin(flag)


@pytest.mark.parametrize("route", ROUTES)
def test_a_vpc_endpoint_name_with_the_prefix_on_is_refused_by_every_route(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, route: str) -> None:
    flag = configure(route, VPCE, monkeypatch, tmp_path, disable=False)
    endpoint = resolve(profile=None, region="eu-west-1", endpoint_url=flag)
    assert endpoint.kind == "vpc-endpoint" and endpoint.prefix == "runtime-"
    with pytest.raises(EndpointError, match="AWS_DISABLE_HOST_PREFIX_INJECTION=true"):
        check(endpoint)


def test_the_default_endpoint_and_a_runtime_host_named_by_mistake(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure("flag", REGIONAL, monkeypatch, tmp_path, disable=False)
    default = resolve(profile=None, region="eu-west-1", endpoint_url=None)
    assert (default.kind, default.source) == ("default", "default")
    assert default.runtime_url == "https://runtime-medical-imaging.eu-west-1.amazonaws.com"
    twice = resolve(profile=None, region="eu-west-1",
                    endpoint_url="https://runtime-medical-imaging.eu-west-1.amazonaws.com")
    with pytest.raises(EndpointError, match="name medical-imaging.eu-west-1.amazonaws.com instead"):
        check(twice)


def test_a_loopback_endpoint_without_the_setting_is_one_line_and_no_call(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any], tmp_path: Path) -> None:
    """The emulator named without AWS_DISABLE_HOST_PREFIX_INJECTION: botocore (and the AWS
    CLI) would send image-set calls to runtime-127.0.0.1; said before anything is sent."""
    import os

    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{
        "row_id": "r1", "datastore_id": ds["datastoreId"],
        "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    env = {k: v for k, v in os.environ.items() if k != "AWS_DISABLE_HOST_PREFIX_INJECTION"}
    proc = subprocess.run([sys.executable, "-m", "batchcopy", "run", str(manifest), "--quiet",
                           "--journal", "j.sqlite", "--report", "r.parquet"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "runtime-127.0.0.1 is no host" in lines[0]
    assert "AWS_DISABLE_HOST_PREFIX_INJECTION=true" in lines[0]
    assert sum(emulator.stats()["calls"].values()) == 0
    assert not (tmp_path / "j.sqlite").exists()
