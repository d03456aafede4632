"""`batchcopy emulator serve|seed|stats` (the typer sub-app), against a real process."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from typer.testing import CliRunner

from batchcopy.emulator.cli import emulator_app, parse_fault, parse_rate

RUN_APP = "from batchcopy.emulator.cli import emulator_app; emulator_app()"


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[str, list[str]]]:
    """`serve` in a child process on a free port; yields (endpoint, stdout lines so far)."""
    config_file = tmp_path / "emulator.json"
    config_file.write_text(json.dumps({"time_scale": 0.01, "max_frames_per_copy": 500,
                                       "assume": {"copy_failed_message": "double_space"}}))
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_APP, "serve", "--port", "0", "--config", str(config_file),
         "--rate", "GetDatastore=0.01/1", "--fault", "internal:ListImageSetVersions:1,count=1",
         "--seed", "5", "--seed-patients", "2", "--seed-studies", "1",
         "--assume", "version_order=oldest_first"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    endpoint = ""
    deadline = time.monotonic() + 30
    try:
        while not any(line.startswith("  export AWS_DEFAULT_REGION") for line in seen):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"serve printed only {seen}"
            try:
                seen.append(lines.get(timeout=remaining))
            except queue.Empty:
                continue
            if seen[-1].startswith("HealthImaging emulator listening on "):
                endpoint = seen[-1].rsplit(" ", 1)[1]
        yield endpoint, seen
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_prints_env_seeds_and_applies_options(served: tuple[str, list[str]], monkeypatch: Any) -> None:
    endpoint, out = served
    assert endpoint.startswith("http://127.0.0.1:")
    assert f"  export AWS_ENDPOINT_URL_MEDICAL_IMAGING={endpoint}" in out
    assert "  export AWS_DISABLE_HOST_PREFIX_INJECTION=true" in out
    assert any(line.startswith("seeded data store ") and line.endswith(": 2 image sets") for line in out)

    client = boto3.session.Session().client(
        "medical-imaging", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(inject_host_prefix=False, retries={"total_max_attempts": 1}))
    stores = client.list_datastores()["datastoreSummaries"]
    assert len(stores) == 1
    ds = stores[0]["datastoreId"]
    client.get_datastore(datastoreId=ds)
    with pytest.raises(client.exceptions.ThrottlingException):  # --rate GetDatastore=0.01/1
        client.get_datastore(datastoreId=ds)

    # `seed` and `stats` talk to it through the control routes
    monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", endpoint)
    runner = CliRunner()
    result = runner.invoke(emulator_app, ["seed", "--seed", "9", "--patients", "1", "--studies", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert len(summary["datastores"][0]["imageSets"]) == 3
    result = runner.invoke(emulator_app, ["stats", "--endpoint-url", endpoint])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["datastores"] == 2
    assert stats["throttled"] == {"GetDatastore": 1}
    _, config = _get(endpoint, "/_emulator/config")
    assert config["time_scale"] == 0.01 and config["max_frames_per_copy"] == 500
    assert config["faults"][0]["kind"] == "internal" and config["faults"][0]["count"] == 1
    assert config["assume"] == {"copy_failed_message": "double_space",  # the config file
                                "version_order": "oldest_first"}  # --assume


def test_serve_refuses_an_unknown_reading() -> None:
    result = CliRunner().invoke(emulator_app, ["serve", "--assume", "version_order=sideways"])
    assert result.exit_code == 2 and "oldest_first" in result.output


def _get(endpoint: str, path: str) -> tuple[int, Any]:
    import urllib.request

    with urllib.request.urlopen(endpoint + path, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_seed_without_an_endpoint_is_a_usage_error(monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", raising=False)
    result = CliRunner().invoke(emulator_app, ["seed"])
    assert result.exit_code == 2


def test_seed_against_nothing_fails_cleanly() -> None:
    result = CliRunner().invoke(emulator_app, ["stats", "--endpoint-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1


def test_option_parsers() -> None:
    op, quota = parse_rate("CopyImageSet=0.5/3")
    assert (op, quota.rate, quota.burst) == ("CopyImageSet", 0.5, 3)
    assert parse_rate("CopyImageSet=2")[1].burst == 1  # the operation's default burst
    spec = parse_fault("latency:GetImageSet:0.5,latency_s=2,count=3,after=1")
    assert (spec.kind, spec.operation, spec.probability, spec.latency_s, spec.count, spec.after) == \
        ("latency", "GetImageSet", 0.5, 2.0, 3, 1)
    assert parse_fault("reset").operation == "*"
    import typer

    for bad in ("explode:CopyImageSet", "throttle:CopyImageSet:x", "throttle:*:1,bogus=1"):
        with pytest.raises(typer.BadParameter):
            parse_fault(bad)
    for bad in ("CopyImageSet", "CopyImageSet=0", "CopyImageSet=a/b"):
        with pytest.raises(typer.BadParameter):
            parse_rate(bad)
