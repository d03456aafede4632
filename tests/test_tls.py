"""TLS verified on every path: the emulator served over HTTPS on 127.0.0.1 with a
certificate of the test's own CA (AWS_CA_BUNDLE), named `localhost` or a wrong host, reached
directly and through a local CONNECT proxy (HTTPS_PROXY). A run against the right
certificate copies, botocore's calls and the light path's alike; a certificate for another
host is refused in one line, exit 2, before any request reaches the service, with or without
the proxy (aiobotocore alone checks no host name, and through a proxy no certificate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchcopy.emulator.server import EmulatorServer
from conftest import DUMMY_CREDENTIALS, make_config
from kit.runkit import FAST, write_manifest
from kit.tlskit import Authority, ConnectProxy

SEED = {"seed": 5, "datastores": 1, "patients": 2, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 2, "frames_per_instance": 1}


def served(tmp_path: Path, *names: str) -> tuple[EmulatorServer, Authority]:
    ca = Authority(tmp_path)
    server = EmulatorServer(make_config(), ssl_context=ca.server_context(*names)).start()
    return server, ca


def env(server: EmulatorServer, ca: Authority, tmp_path: Path, proxy: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith("AWS_")}
    out.update(DUMMY_CREDENTIALS, AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL_MEDICAL_IMAGING=f"https://localhost:{server.port}",
               AWS_DISABLE_HOST_PREFIX_INJECTION="true", AWS_CA_BUNDLE=str(ca.bundle),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               BATCHCOPY_STATE_DIR=str(tmp_path / "state"))
    if proxy:
        out["HTTPS_PROXY"] = proxy
    return out


def run(server: EmulatorServer, ca: Authority, tmp_path: Path, proxy: str | None) -> Any:
    from batchcopy.emulator.seed import SeedSpec, seed

    store = seed(server.model, SeedSpec(**SEED))["datastores"][0]
    rows = [{"row_id": f"r{k}", "datastore_id": store["datastoreId"],
             "source_image_set_id": s["imageSetId"]} for k, s in enumerate(store["imageSets"])]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    return subprocess.run([sys.executable, "-m", "batchcopy", "run", str(manifest), "--journal",
                           str(tmp_path / "j.sqlite"), "--report", str(tmp_path / "r.parquet"),
                           *FAST], cwd=tmp_path, env=env(server, ca, tmp_path, proxy),
                          capture_output=True, text=True, timeout=120)


def run_served(tmp_path: Path, name: str, via: str) -> tuple[Any, dict[str, Any], list[str]]:
    """A run against the emulator serving a certificate for `name`, directly or through the
    proxy: (the process, the emulator's stats, the proxy's tunnels)."""
    server, ca = served(tmp_path, name)
    try:
        with ConnectProxy() as proxy:
            proc = run(server, ca, tmp_path, proxy.url if via == "proxy" else None)
            tunnels = list(proxy.tunnels)
        assert all(t == f"localhost:{server.port}" for t in tunnels)
        return proc, server.stats(), tunnels
    finally:
        server.stop()


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_the_right_certificate_copies(tmp_path: Path, via: str) -> None:
    proc, stats, tunnels = run_served(tmp_path, "localhost", via)
    assert proc.returncode == 0, proc.stderr
    assert stats["copies_succeeded"] == 2 and stats["calls"]["GetImageSet"] >= 1
    assert stats["calls"]["GetDatastore"] == 1  # botocore's path, as well as the light one
    assert bool(tunnels) is (via == "proxy")


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_a_certificate_for_another_host_is_refused(tmp_path: Path, via: str) -> None:
    """Signed by the trusted CA, but for wrong.example: refused before any request."""
    proc, stats, tunnels = run_served(tmp_path, "wrong.example", via)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "TLS: the certificate of https://localhost" in lines[0]
    assert "Hostname mismatch" in lines[0] and "nothing was sent" in lines[0]
    assert sum(stats["calls"].values()) == 0
    assert bool(tunnels) is (via == "proxy")  # the proxy carried it; the check was ours
    assert not (tmp_path / "j.sqlite").exists()
