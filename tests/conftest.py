"""Shared fixtures: the HealthImaging emulator on 127.0.0.1 and clients pointed at it.

    emulator          an EmulatorServer (time_scale 0.01) started on port 0, stopped after
                      the test; customise it with @pytest.mark.emulator_config(**EmulatorConfig
                      fields), e.g. @pytest.mark.emulator_config(enforce_rates=False)
    emulator_factory  make(config=None, **fields) -> a further started EmulatorServer
    client_env        the emulator's client env + dummy credentials, set in os.environ
    boto3_client      a boto3 medical-imaging client: no host prefix, no retries
    seeded            the emulator seeded with a small SeedSpec; the seed summary
    control           control(method, path, body=None) -> (status, json) on /_emulator/...
    moto_endpoint     moto's S3 server (ThreadedMotoServer) on 127.0.0.1, one per session;
                      tests make their own buckets
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchcopy.emulator.config import EmulatorConfig

TEST_TIME_SCALE = 0.01
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
SMALL_SEED = {"seed": 7, "datastores": 1, "patients": 3, "studies_per_patient": 1,
              "series_per_study": 2, "instances_per_series": 2, "frames_per_instance": 1}


def pytest_configure(config: pytest.Config) -> None:
    # the developer's own config file and BATCHCOPY_CONFIG stay out of every test (and of
    # the CLI processes tests start): settings come from flags, or from what a test sets
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="batchcopy-xdg-")
    os.environ.pop("BATCHCOPY_CONFIG", None)
    config.addinivalue_line(
        "markers", "emulator_config(**fields): EmulatorConfig fields for the `emulator` fixture")


def make_config(config: EmulatorConfig | None = None, **fields: Any) -> EmulatorConfig:
    if config is not None:
        return config
    fields.setdefault("time_scale", TEST_TIME_SCALE)
    return EmulatorConfig.from_dict(fields)


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Any]]:
    from batchcopy.emulator.server import EmulatorServer

    started: list[EmulatorServer] = []

    def make(config: EmulatorConfig | None = None, **fields: Any) -> EmulatorServer:
        server = EmulatorServer(make_config(config, **fields)).start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def emulator(request: pytest.FixtureRequest, emulator_factory: Callable[..., Any]) -> Any:
    marker = request.node.get_closest_marker("emulator_config")
    fields = dict(marker.kwargs) if marker else {}
    return emulator_factory(**fields)


@pytest.fixture
def client_env(emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, str]:
    """os.environ for SDK clients: endpoint, no host prefix, region, dummy credentials."""
    env = dict(emulator.client_env())
    env.update(DUMMY_CREDENTIALS)
    env["AWS_DEFAULT_REGION"] = emulator.config.region
    # keep the developer's own AWS files and profiles out of the tests
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    # default journals and the machine-wide holds of this test only (tests run side by side)
    env["BATCHCOPY_STATE_DIR"] = str(tmp_path / "batchcopy-state")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def boto3_config() -> Any:
    from botocore.config import Config

    # total_max_attempts=1: exactly one attempt (legacy `max_attempts` counts retries).
    return Config(inject_host_prefix=False, retries={"total_max_attempts": 1})


@pytest.fixture
def boto3_client(client_env: dict[str, str], emulator: Any) -> Any:
    import boto3

    return boto3.session.Session().client(
        "medical-imaging", endpoint_url=emulator.endpoint, region_name=client_env["AWS_DEFAULT_REGION"],
        config=boto3_config())


def control_call(endpoint: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def control(emulator: Any) -> Callable[..., tuple[int, Any]]:
    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return control_call(emulator.endpoint, method, path, body)

    return call


@pytest.fixture
def seeded(emulator: Any) -> dict[str, Any]:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SMALL_SEED)
    assert status == 200, summary
    return summary


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
