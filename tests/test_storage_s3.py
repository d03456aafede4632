"""aws/storage.py against moto's S3 server on 127.0.0.1 (real HTTP, real aioboto3 client)."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path

import boto3
import pytest

from batchcopy.aws import storage
from batchcopy.manifest.scan import read_specs

DS = "d" * 32
SRC = "a" * 32


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_endpoint


@pytest.fixture
def bucket(s3_env: str, request: pytest.FixtureRequest) -> str:
    name = "bc-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_parse_s3() -> None:
    assert storage.parse_s3("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x.csv") and not storage.is_s3("S3x")
    for bad in ("s3://", "s3://bucket", "s3://bucket/", "s3:///key", "/local/path", "https://b/k"):
        with pytest.raises(ValueError):
            storage.parse_s3(bad)


def test_download_local_path_is_returned_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("x\n")
    assert asyncio.run(storage.download(str(f), tmp_path / "dl")) == f
    with pytest.raises(FileNotFoundError):
        asyncio.run(storage.download(str(tmp_path / "missing.csv"), tmp_path / "dl"))


def test_upload_download_round_trip(bucket: str, tmp_path: Path) -> None:
    # bigger than one read chunk, binary, so streaming and byte-exactness are both exercised
    payload = bytes(range(256)) * 9000 + b"tail"
    src = tmp_path / "report.parquet"
    src.write_bytes(payload)
    url = f"s3://{bucket}/runs/1/report.parquet"
    asyncio.run(storage.upload(src, url))
    assert boto3.client("s3").get_object(Bucket=bucket, Key="runs/1/report.parquet")["Body"].read() == payload

    got = asyncio.run(storage.download(url, tmp_path / "dl"))
    assert got == tmp_path / "dl" / "report.parquet"
    assert got.read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["report.parquet"]  # no partial left


def test_download_missing_object_or_bucket(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        asyncio.run(storage.download(f"s3://{bucket}/nope.csv", tmp_path))
    with pytest.raises(FileNotFoundError):
        asyncio.run(storage.download("s3://bc-no-such-bucket-here/m.csv", tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_upload_to_missing_bucket(s3_env: str, tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(FileNotFoundError):
        asyncio.run(storage.upload(f, "s3://bc-no-such-bucket-either/x.json"))


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.csv.gz"])
def test_manifest_from_s3(bucket: str, tmp_path: Path, name: str) -> None:
    text = "datastore_id,source_image_set_id,series_instance_uid\n" + "".join(
        f"{DS},{SRC},1.2.{i}\n" for i in range(5)
    )
    data = gzip.compress(text.encode()) if name.endswith(".gz") else text.encode()
    boto3.client("s3").put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
    url = f"s3://{bucket}/in/{name}"
    local = asyncio.run(storage.download(url, tmp_path))
    batches = list(read_specs(local, display_name=url, batch_size=2))
    specs = [s for b in batches for s in b]
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [s.manifest_row for s in specs] == [1, 2, 3, 4, 5]
    assert all(s.datastore_id == DS and s.source_image_set_id == SRC for s in specs)
    assert specs[4].copiable_attributes == (
        '{"SchemaVersion":"1.1","Study":{"Series":{"1.2.4":{"Instances":{}}}}}'
    )
