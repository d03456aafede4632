"""`batchcopy doctor MANIFEST`: read-only checks as a table of ✓ / ✗ with next steps; exit 0
when the run can go, 2 when a check failed. Against the emulator (HealthImaging) and moto's
server (STS; moto has neither the IAM policy simulator nor HealthImaging's quotas, so those
two read "not readable" there, and a canned server answers them where a test needs it).
Each check has a test that makes it fail; none sends a CopyImageSet."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchcopy.cli import root as cli
from kit.httpkit import Canned
from kit.runkit import write_manifest

DENY_METADATA = {"keys": {"testing": "testing"}, "deny": {"testing": ["GetImageSetMetadata"]}}


@pytest.fixture
def env(client_env: dict[str, str], moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for service in ("STS", "IAM", "SERVICE_QUOTAS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", moto_endpoint)
    return client_env


def manifest(tmp: Path, seeded: dict[str, Any], **change: str) -> Path:
    ds = seeded["datastores"][0]
    row = {"row_id": "r1", "datastore_id": ds["datastoreId"],
           "source_image_set_id": ds["imageSets"][0]["imageSetId"], **change}
    return write_manifest(tmp / "m.csv", [row])


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    """(exit code, {check name: check} from --output json, the text table)."""
    runner = CliRunner()
    as_json = runner.invoke(cli.app, ["doctor", *args, "--output", "json"], prog_name="batchcopy")
    as_text = runner.invoke(cli.app, ["doctor", *args], prog_name="batchcopy")
    assert as_json.exit_code == as_text.exit_code, (as_json.output, as_text.output)
    checks = {c["name"]: c for c in json.loads(as_json.stdout)["checks"]}
    return as_json.exit_code, checks, as_text.stdout


def failed(checks: dict[str, Any]) -> list[str]:
    return [name for name, c in checks.items() if c["ok"] is False]


def test_the_run_can_go(emulator: Any, env: dict[str, str], seeded: dict[str, Any],
                        tmp_path: Path) -> None:
    code, checks, text = doctor(str(manifest(tmp_path, seeded)))
    assert code == 0, text
    assert failed(checks) == []
    for name in ("manifest", "AWS settings", "endpoint", "TLS", "identity", "data stores",
                 "first row", "permission GetImageSet", "permission GetImageSetMetadata",
                 "permission ListImageSetVersions", "permission SearchImageSets"):
        assert checks[name]["ok"] is True, (name, checks[name])
    assert "account 123456789012" in checks["identity"]["detail"]
    assert checks["permission CopyImageSet"]["ok"] is None  # moto has no simulator
    assert "not readable" in checks["quotas"]["detail"]
    assert "✓ first row" in text and "the run can go" in text
    stats = emulator.stats()
    assert stats["copies_requested"] == 0 and "CopyImageSet" not in stats["calls"]


def test_an_invalid_manifest_fails(emulator: Any, env: dict[str, str], seeded: dict[str, Any],
                                   tmp_path: Path) -> None:
    code, checks, _ = doctor(str(manifest(tmp_path, seeded, source_image_set_id="not-an-id")))
    assert code == 2 and failed(checks) == ["manifest"]


def test_expired_credentials_fail(emulator: Any, env: dict[str, str], seeded: dict[str, Any],
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = json.dumps({"Version": 1, "AccessKeyId": "AKIAOLD", "SecretAccessKey": "s",
                         "SessionToken": "t", "Expiration": "2020-01-01T00:00:00Z"})
    (tmp_path / "creds.py").write_text(f"print({answer!r})\n")
    (tmp_path / "config").write_text(f"[profile old]\nregion = us-east-1\ncredential_process = "
                                     f"{sys.executable} {tmp_path / 'creds.py'}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    code, checks, text = doctor(str(manifest(tmp_path, seeded)), "--profile", "old")
    assert code == 2 and failed(checks) == ["AWS settings"], text
    assert "expired" in checks["AWS settings"]["detail"] and "AKIAOLD" not in text


def test_an_endpoint_the_host_prefix_breaks_fails(emulator: Any, env: dict[str, str],
                                                  seeded: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DISABLE_HOST_PREFIX_INJECTION")
    code, checks, _ = doctor(str(manifest(tmp_path, seeded)))
    assert code == 2 and failed(checks) == ["endpoint"]
    assert "AWS_DISABLE_HOST_PREFIX_INJECTION=true" in checks["endpoint"]["detail"]


def test_a_wrong_host_certificate_fails_tls(env: dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from batchcopy.emulator.server import EmulatorServer
    from conftest import make_config
    from kit.tlskit import Authority

    ca = Authority(tmp_path)
    server = EmulatorServer(make_config(), ssl_context=ca.server_context("wrong.example")).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", f"https://localhost:{server.port}")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca.bundle))
        code, checks, _ = doctor("--datastore-id", "d" * 32)
    finally:
        server.stop()
    assert code == 2 and "TLS" in failed(checks)
    assert "Hostname mismatch" in checks["TLS"]["detail"]


def test_an_unreachable_sts_fails_identity(emulator: Any, env: dict[str, str],
                                           seeded: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{s.getsockname()[1]}")
    code, checks, _ = doctor(str(manifest(tmp_path, seeded)))
    assert code == 2 and failed(checks) == ["identity"]


def test_a_data_store_the_endpoint_lacks_fails(emulator: Any, env: dict[str, str],
                                               seeded: dict[str, Any], tmp_path: Path) -> None:
    code, checks, _ = doctor(str(manifest(tmp_path, seeded, datastore_id="e" * 32)))
    assert code == 2 and "data stores" in failed(checks)
    assert f"data store {'e' * 32}" in checks["data stores"]["detail"]


def test_a_first_row_without_its_source_fails(emulator: Any, env: dict[str, str],
                                              seeded: dict[str, Any], tmp_path: Path) -> None:
    code, checks, _ = doctor(str(manifest(tmp_path, seeded, source_image_set_id="f" * 32)))
    assert code == 2 and failed(checks) == ["first row"]
    assert "ResourceNotFoundException" in checks["first row"]["detail"]


@pytest.mark.emulator_config(auth=DENY_METADATA)
def test_a_missing_read_permission_fails(emulator: Any, env: dict[str, str],
                                         seeded: dict[str, Any], tmp_path: Path) -> None:
    code, checks, _ = doctor(str(manifest(tmp_path, seeded)))
    assert code == 2 and failed(checks) == ["permission GetImageSetMetadata"]
    assert "medical-imaging:GetImageSetMetadata" in checks["permission GetImageSetMetadata"]["next_step"]


SIMULATED = b"""<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>%s
</EvaluationResults></SimulatePrincipalPolicyResult>
<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"""
RESULT = (b"<member><EvalActionName>medical-imaging:%s</EvalActionName><EvalResourceName>*"
          b"</EvalResourceName><EvalDecision>%s</EvalDecision></member>")


def test_the_policy_simulator_denying_copies_fails(emulator: Any, env: dict[str, str],
                                                   seeded: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    decisions = {b"CopyImageSet": b"implicitDeny", b"GetImageSet": b"allowed"}
    body = SIMULATED % b"".join(RESULT % kv for kv in decisions.items())
    with Canned(lambda method, path: (200, {"Content-Type": "text/xml"}, body)) as iam:
        monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", iam.endpoint)
        code, checks, _ = doctor(str(manifest(tmp_path, seeded)))
    assert code == 2 and failed(checks) == ["permission CopyImageSet"]
    assert "implicitDeny" in checks["permission CopyImageSet"]["detail"]


def test_a_quota_below_the_configured_rate_fails(emulator: Any, env: dict[str, str],
                                                 seeded: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    listed = {"Quotas": [
        {"ServiceCode": "medical-imaging", "QuotaName": "Rate of CopyImageSet requests",
         "QuotaCode": "L-11111111", "Value": 0.25, "Unit": "None", "Adjustable": True},
        {"ServiceCode": "medical-imaging", "QuotaName": "Rate of GetImageSet requests",
         "QuotaCode": "L-22222222", "Value": 25.0, "Unit": "None", "Adjustable": True}]}
    answer = (200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(listed).encode())
    with Canned(lambda method, path: answer) as quotas:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", quotas.endpoint)
        code, checks, text = doctor(str(manifest(tmp_path, seeded)), "--rate", "CopyImageSet=5")
    assert code == 2 and failed(checks) == ["quota CopyImageSet"], text
    assert "pass --rate CopyImageSet=0.25" in checks["quota CopyImageSet"]["next_step"]
    assert checks["quota GetImageSet"]["ok"] is True
