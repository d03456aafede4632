"""Everything that can be checked before the first API call, each failure one line (the
cause and the next step): the endpoint URL, the profile, region and credentials, the
report destination and free disk space. `run` calls these before it touches the journal,
so a setup mistake sends nothing and leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from batchcopy.aws.storage import is_s3, parse_s3

REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
BYTES_PER_ROW = 2048  # journal (~1 KiB a row with its calls) and report, generously
MIN_FREE = 16 << 20


class SetupError(Exception):
    """A setup mistake found before any call: one line, exit code 2."""


def check_endpoint(url: str | None) -> None:
    if url is None:
        return
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SetupError(f"--endpoint-url {url!r} is not a URL like https://host[:port] "
                         "(check the flag or AWS_ENDPOINT_URL_MEDICAL_IMAGING)")
    try:
        parsed.port
    except ValueError:
        raise SetupError(f"--endpoint-url {url!r} has a bad port") from None


def check_aws(profile: str | None, region: str | None) -> str:
    """The region the run will use, once profile, region and credentials resolve."""
    import botocore.session
    from botocore import exceptions as bx

    try:
        session = botocore.session.Session(profile=profile)
        # AWS_REGION, which the other AWS SDKs read, after botocore's own sources
        resolved = (region or session.get_config_variable("region")
                    or os.environ.get("AWS_REGION", "").strip() or None)
        credentials = session.get_credentials()
    except bx.ProfileNotFound as exc:
        # without --profile, the name came from AWS_PROFILE (or AWS_DEFAULT_PROFILE)
        name = profile or exc.kwargs.get("profile")
        source = "" if profile else " (from AWS_PROFILE)"
        raise SetupError(f"AWS profile {name!r}{source} is not in your AWS config "
                         "(see `aws configure list-profiles`)") from None
    except (bx.BotoCoreError, ValueError) as exc:
        raise SetupError(f"AWS configuration: {exc}") from None
    if not resolved:
        raise SetupError("no AWS region: pass --region, set AWS_DEFAULT_REGION (or AWS_REGION), "
                         "or set a region in your AWS profile")
    if not REGION_RE.fullmatch(resolved):
        raise SetupError(f"{resolved!r} is not an AWS region name (e.g. us-east-1)")
    if credentials is None:
        raise SetupError("no AWS credentials found: configure a profile (aws configure), set "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --profile")
    return str(resolved)


def check_report_destination(dest: str) -> None:
    """A local report's directory is (or can be made) writable and the name ends .parquet;
    an s3:// report's bucket answers HeadBucket."""
    if not dest.lower().endswith(".parquet"):
        raise SetupError(f"--report {dest!r} must end with .parquet")
    if is_s3(dest):
        _check_bucket(dest)
        return
    path = Path(dest)
    if path.is_dir():
        raise SetupError(f"--report {dest!r} is a directory; give a file name ending .parquet")
    writable_dir(path.parent, f"the report's directory {str(path.parent)!r}")


def writable_dir(directory: Path, what: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SetupError(f"{what} is a file, not a directory; choose another path") from None
    except OSError as exc:
        raise SetupError(f"cannot create {what}: {exc.strerror or exc}; choose another path") from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".batchcopy-probe-"):
            pass
    except OSError as exc:
        raise SetupError(f"cannot write in {what}: {exc.strerror or exc}; choose another path") from None


def check_space(directories: list[Path], rows: int) -> None:
    need = MIN_FREE + rows * BYTES_PER_ROW
    for directory in directories:
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            continue
        if free < need:
            raise SetupError(f"only {free >> 20} MiB free in {directory}; a run of {rows} rows "
                             f"needs about {need >> 20} MiB for its journal and report")


def _check_bucket(url: str) -> None:
    try:
        bucket, _ = parse_s3(url)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    import boto3
    from botocore import exceptions as bx

    try:
        boto3.session.Session().client("s3").head_bucket(Bucket=bucket)
    except bx.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise SetupError(f"the report's bucket {bucket!r} does not exist") from None
        raise SetupError(f"cannot use the report's bucket {bucket!r}: {code}") from None
    except bx.BotoCoreError as exc:
        raise SetupError(f"cannot reach the report's bucket {bucket!r}: {exc}") from None


def check_journal_path(text: str) -> Path:
    if is_s3(text) or "://" in text:
        raise SetupError(f"--journal {text!r}: a journal must be a local path (it is a SQLite "
                         "database written before every call); for a ledger in S3 give "
                         "--state s3://bucket/prefix/")
    path = Path(text)
    if path.is_dir():
        raise SetupError(f"--journal {text!r} is a directory; give a file name")
    # the nearest existing ancestor decides whether the journal's directory can be made
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SetupError(f"--journal {text!r} cannot be created: {str(ancestor)!r} is a file, not a "
                         "directory; choose another --journal")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SetupError(f"--journal {text!r} cannot be created: no permission to write in "
                         f"{str(ancestor)!r}; choose another --journal")
    return path
