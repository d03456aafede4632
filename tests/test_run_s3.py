"""`batchcopy run s3://...manifest --report s3://...`: manifest and report on moto's S3
server, copies on the emulator, all over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest

from conftest import control_call
from kit.resumekit import Running, journal_rows
from kit.runkit import FAST, run_cli

SEED = {"seed": 5, "datastores": 1, "patients": 3, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 2, "frames_per_instance": 1}


def test_s3_manifest_and_report(emulator: Any, client_env: dict[str, str], moto_endpoint: str,
                                tmp_path: Path) -> None:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    assert status == 200
    store = summary["datastores"][0]
    env = {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="run-s3-manifests")
    lines = ["row_id,datastore_id,source_image_set_id"]
    lines += [f"s{i},{store['datastoreId']},{s['imageSetId']}" for i, s in enumerate(store["imageSets"])]
    s3.put_object(Bucket="run-s3-manifests", Key="in/nightly.csv", Body="\n".join(lines).encode())

    proc = run_cli(["run", "s3://run-s3-manifests/in/nightly.csv", "--report",
                    "s3://run-s3-manifests/out/nightly.parquet", "--journal", str(tmp_path / "j.sqlite"),
                    *FAST], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    body = s3.get_object(Bucket="run-s3-manifests", Key="out/nightly.parquet")["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [r["row_id"] for r in rows] == [f"s{i}" for i in range(len(store["imageSets"]))]
    assert {r["status"] for r in rows} == {"SUCCEEDED"}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="run-s3-manifests")["Contents"]}
    assert "out/nightly.summary.json" in keys
    assert emulator.stats()["copies_executed"] == len(rows)

    # reading the report back from s3 with the report command
    shown = run_cli(["report", "s3://run-s3-manifests/out/nightly.parquet"], env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{len(rows)} rows" in shown.stdout and "SUCCEEDED" in shown.stdout


def test_missing_s3_manifest_is_a_usage_error(emulator: Any, client_env: dict[str, str],
                                              moto_endpoint: str, tmp_path: Path) -> None:
    env = {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="run-s3-empty")
    proc = run_cli(["run", "s3://run-s3-empty/nope.csv", "--journal", str(tmp_path / "j.sqlite")], env,
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "s3://run-s3-empty/nope.csv" in proc.stderr
    assert sum(emulator.stats()["calls"].values()) == 0


def test_a_missing_report_bucket_is_a_setup_error_before_any_call(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path) -> None:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    store = summary["datastores"][0]
    manifest = tmp_path / "m.csv"
    manifest.write_text("row_id,datastore_id,source_image_set_id\n"
                        f"u0,{store['datastoreId']},{store['imageSets'][0]['imageSetId']}\n")
    env = {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    proc = run_cli(["run", str(manifest), "--report", "s3://no-such-bucket/r.parquet",
                    "--journal", str(tmp_path / "j.sqlite"), *FAST], env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no-such-bucket" in proc.stderr and "Traceback" not in proc.stderr
    assert sum(emulator.stats()["calls"].values()) == 0
    assert not (tmp_path / "j.sqlite").exists()  # no journal left behind


@pytest.mark.emulator_config(copy_base_s=30.0)  # 0.3 s copies: time to pull the bucket away
def test_report_upload_failure_keeps_the_report_locally(emulator: Any, client_env: dict[str, str],
                                                         moto_endpoint: str, tmp_path: Path) -> None:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    store = summary["datastores"][0]
    manifest = tmp_path / "m.csv"
    manifest.write_text("row_id,datastore_id,source_image_set_id\n"
                        f"u0,{store['datastoreId']},{store['imageSets'][0]['imageSetId']}\n")
    env = {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="vanishing-reports")
    journal = tmp_path / "j.sqlite"
    run = Running(["run", str(manifest), "--report", "s3://vanishing-reports/r.parquet",
                   "--journal", str(journal), *FAST], env, tmp_path, "upload")
    # the bucket disappears while the copy is out (after the pre-flight check)
    assert run.wait_until(lambda: bool(journal_rows(journal, "SELECT 1 FROM calls")))
    s3.delete_bucket(Bucket="vanishing-reports")
    assert run.wait() == 0, run.stderr()
    assert "could not upload the report" in run.stderr()
    kept = tmp_path / "reports" / "r.parquet"
    assert kept.exists()
    assert [r["status"] for r in pq.read_table(kept).to_pylist()] == ["SUCCEEDED"]
