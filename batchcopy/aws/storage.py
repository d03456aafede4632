"""Local paths and s3:// URLs for manifests and reports.

S3 goes through aioboto3 (imported on first use). The client honours the usual AWS
environment, including AWS_ENDPOINT_URL_S3 (tests point it at moto's server).
Downloads stream to a temporary file beside the destination and are renamed into
place when complete, so a failed download never leaves a half file under the
final name. A missing bucket or key raises FileNotFoundError, like a missing path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def parse_s3(url: str) -> tuple[str, str]:
    """"s3://bucket/some/key" -> ("bucket", "some/key"); ValueError if malformed."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ValueError(f"an s3 URL needs a bucket and a key (s3://bucket/key): {url!r}")
    return bucket, key


def _missing(exc: Exception) -> bool:
    response: Any = getattr(exc, "response", None)
    code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in _MISSING


async def download(url: str, dest_dir: Path) -> Path:
    """An s3:// URL -> a local copy in dest_dir (same file name as the key's last part);
    a local path -> that path (FileNotFoundError if it does not exist)."""
    if not is_s3(url):
        path = Path(url)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {url}")
        return path
    bucket, key = parse_s3(url)
    name = key.rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"the s3 URL names a prefix, not an object: {url!r}")
    import aioboto3
    from botocore.exceptions import ClientError

    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    partial = dest_dir / f".{name}.part"
    try:
        async with aioboto3.Session().client("s3") as s3:
            try:
                response = await s3.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    raise FileNotFoundError(f"no such S3 object: {url}") from None
                raise
            body = response["Body"]
            with open(partial, "wb") as fh:
                async with body:  # releases the connection
                    while chunk := await body.read(_CHUNK):
                        fh.write(chunk)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


async def upload(local: Path, url: str) -> None:
    """Upload a local file to an s3:// URL (one PUT, the file streamed from disk)."""
    bucket, key = parse_s3(url)
    if key.endswith("/"):
        raise ValueError(f"the s3 URL names a prefix, not an object: {url!r}")
    import aioboto3
    from botocore.exceptions import ClientError

    async with aioboto3.Session().client("s3") as s3:
        with open(local, "rb") as fh:
            try:
                await s3.put_object(Bucket=bucket, Key=key, Body=fh)
            except ClientError as exc:
                if _missing(exc):
                    raise FileNotFoundError(f"no such S3 bucket: {bucket}") from None
                raise
