"""Helpers for `s3://` state tests: a bucket of one's own on moto's server (optionally behind
the fault proxy), the environment that points clients at it, and looks into the state from
"another machine" (an empty cache of its own)."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import DUMMY_CREDENTIALS


def new_bucket(moto_endpoint: str) -> str:
    import boto3

    name = f"state-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                 **_creds()).create_bucket(Bucket=name)
    return name


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_creds())


def keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in s3_client(endpoint).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix):
        out.extend(o["Key"] for o in page.get("Contents") or ())
    return out


def machine_env(base: dict[str, str], tmp: Path, name: str, s3_endpoint: str) -> dict[str, str]:
    """The environment of another "machine": its own empty state directory."""
    return {**base, "BATCHCOPY_STATE_DIR": str(tmp / f"machine-{name}"),
            "AWS_ENDPOINT_URL_S3": s3_endpoint}


def state_calls(url: str, tmp: Path, monkeypatch: Any,
                endpoint: str) -> tuple[Counter[str], Counter[str]]:
    """(calls by state, rows by status) of the ledger in S3, read from an empty cache."""
    from batchcopy.journal.state import open_for_reading, resolve

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp / f"reader-{uuid.uuid4().hex[:6]}"))
    opened = open_for_reading(resolve(url))
    try:
        db = opened.journal.db
        calls = Counter(dict(db.execute("SELECT state, count(*) FROM calls GROUP BY state")))
        rows = Counter(dict(db.execute("SELECT status, count(*) FROM rows GROUP BY status")))
    finally:
        opened.close()
    return calls, rows
