"""Before the first copy, cheaply and read-only: set-up mistakes that used to look like a
bug (exit 70) or like the service's final answer (every row FAILED) are one line, exit 2,
nothing sent and nothing recorded; fixed, the same command copies every row.

    a data store the endpoint does not have (a second emulator: the wrong region/account)
    a web server's HTML 404 page as the endpoint
    expired credentials from a credential_process profile; an SSO profile never logged in
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kit.httpkit import Canned, html_404
from kit.resumekit import seed_world
from kit.runkit import run_cli, run_manifest, write_manifest

SEED = {"seed": 11, "datastores": 1, "patients": 3, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 2, "frames_per_instance": 1}


def one_line(proc: Any) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    code = proc.returncode if hasattr(proc, "returncode") else proc.code
    assert code == 2 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def manifest_of(w: Any, tmp: Path) -> Path:
    return write_manifest(tmp / "m.csv", [
        {"row_id": f"r{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
        for k, s in enumerate(w.sets)])


def test_an_endpoint_without_the_data_store_stops_before_any_copy(
        emulator_factory: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    right = emulator_factory()
    wrong = emulator_factory()  # another region or account: it has no such data store
    w = seed_world(right, client_env, SEED)
    manifest = manifest_of(w, tmp_path)
    first = run_manifest(manifest, {**w.env, **wrong.client_env()}, tmp_path)
    line = one_line(first)
    assert f"data store {w.ds}" in line and "is not at" in line and "region" in line
    assert wrong.stats()["calls"] == {"GetDatastore": 1}  # read-only, and only that
    assert not first.journal.exists() and not first.report.exists()  # no row recorded
    again = run_manifest(manifest, w.env, tmp_path)
    assert again.code == 0, again.stderr
    assert {r["status"] for r in again.rows()} == {"SUCCEEDED"} and len(again.rows()) == 3
    assert right.stats()["copies_succeeded"] == 3


def test_a_web_servers_404_page_as_the_endpoint(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any], tmp_path: Path) -> None:
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{
        "row_id": "r1", "datastore_id": ds["datastoreId"],
        "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    with Canned(html_404) as web:
        proc = run_cli(["run", str(manifest), "--journal", "j.sqlite", "--report", "r.parquet",
                        "--quiet"], {**client_env, "AWS_ENDPOINT_URL_MEDICAL_IMAGING": web.endpoint},
                       cwd=tmp_path, timeout=30)  # a bound, not a timing: it answers at once
        seen = list(web.requests)
    line = one_line(proc)
    assert f"{web.endpoint} does not answer as HealthImaging" in line and "404" in line
    assert len(seen) == 1 and seen[0][0] == "GET"  # one GetDatastore, no retry, no copy
    assert not (tmp_path / "j.sqlite").exists()
    assert sum(emulator.stats()["calls"].values()) == 0


def aws_config(tmp: Path, text: str) -> dict[str, str]:
    config = tmp / "aws-config"
    config.write_text(text)
    return {"AWS_CONFIG_FILE": str(config)}


def test_expired_credentials_from_a_credential_process_profile(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any], tmp_path: Path) -> None:
    """botocore's 'refreshed credentials are still expired' was a bug report (exit 70)."""
    answer = json.dumps({"Version": 1, "AccessKeyId": "AKIAEXPIRED", "SecretAccessKey": "s",
                         "SessionToken": "t", "Expiration": "2020-01-01T00:00:00Z"})
    script = tmp_path / "creds.py"
    script.write_text(f"print({answer!r})\n")
    env = {k: v for k, v in client_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(aws_config(tmp_path, f"[profile stale]\nregion = us-east-1\n"
                                    f"credential_process = {sys.executable} {script}\n"))
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{
        "row_id": "r1", "datastore_id": ds["datastoreId"],
        "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    proc = run_cli(["run", str(manifest), "--profile", "stale", "--journal", "j.sqlite",
                    "--report", "r.parquet"], env, cwd=tmp_path, timeout=60)
    line = one_line(proc)
    assert "credentials are expired" in line and "nothing was sent" in line
    assert "AKIAEXPIRED" not in proc.stderr  # never a credential in the output
    assert sum(emulator.stats()["calls"].values()) == 0
    assert not (tmp_path / "j.sqlite").exists()


def test_an_sso_profile_never_logged_in(
        emulator: Any, client_env: dict[str, str], seeded: dict[str, Any], tmp_path: Path) -> None:
    """The SSO case was a traceback."""
    env = {k: v for k, v in client_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(aws_config(tmp_path, "[profile sso]\nregion = us-east-1\nsso_session = corp\n"
                                    "sso_account_id = 123456789012\nsso_role_name = Copier\n"
                                    "[sso-session corp]\nsso_region = us-east-1\n"
                                    "sso_start_url = https://corp.awsapps.com/start\n"),
               HOME=str(tmp_path))  # no ~/.aws/sso/cache here
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{
        "row_id": "r1", "datastore_id": ds["datastoreId"],
        "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    proc = subprocess.run([sys.executable, "-m", "batchcopy", "run", str(manifest), "--profile",
                           "sso", "--journal", "j.sqlite", "--report", "r.parquet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    line = one_line(proc)
    assert "SSO session is expired or missing" in line and "aws sso login --profile sso" in line
    assert sum(emulator.stats()["calls"].values()) == 0
