"""Everything that can be checked before the first copy, each failure one line (the cause
and the next step), exit 2, nothing recorded as a row's answer.

Locally, before the journal is touched: the endpoint URL, the profile, the region, the
credentials (resolved *and* not expired: a credential_process, an SSO session or an
assumed role is made to produce them now), the endpoint and host prefix botocore will
use (aws/endpoints.py), the report destination and free disk space.

Then, cheaply and read-only, once the manifest says what the run will touch
(`check_service`): the endpoint answers as HealthImaging (GetDatastore on the control
plane; one small SearchImageSets on the runtime host, which the run's calls use), and
every data store of the rows to run exists and is ACTIVE there. A connection
that is refused, a TLS certificate that does not verify, a web page instead of the API,
expired or refused credentials: each is one line and a few attempts, not a run of
warnings.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from batchcopy.aws.storage import is_s3, parse_s3

if TYPE_CHECKING:
    from batchcopy.aws.api import ImagingApi
    from batchcopy.aws.client import ClientSettings
    from batchcopy.aws.endpoints import Endpoint

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
    check_fresh(credentials, profile)
    return str(resolved)


def check_fresh(credentials: Any, profile: str | None) -> None:
    """The credentials can be had now and are not expired: a credential_process, an SSO
    session or an assumed role is asked for them here (botocore would ask at the first
    call, and an expired answer then was a bug report, exit 70)."""
    import datetime as dt

    from botocore import exceptions as bx

    from batchcopy.aws.retry import error_message

    login = f"aws sso login{f' --profile {profile}' if profile else ''}"
    try:
        credentials.get_frozen_credentials()
    except (bx.SSOError, bx.TokenRetrievalError, bx.NoAuthTokenError) as exc:
        raise SetupError(f"the AWS SSO session is expired or missing ({type(exc).__name__}): "
                         f"run `{login}`, then run again; nothing was sent") from None
    except RuntimeError as exc:  # botocore: "refreshed credentials are still expired"
        raise SetupError(f"the AWS credentials are expired ({error_message(exc)}): refresh "
                         "them (the credential_process, `aws sso login`, a new session "
                         "token), then run again; nothing was sent") from None
    except bx.ClientError as exc:  # an assumed role refused
        raise SetupError(f"the AWS credentials could not be obtained: {error_message(exc)} "
                         "(the role to assume, or its source credentials); nothing was sent") from None
    except bx.BotoCoreError as exc:
        raise SetupError(f"the AWS credentials could not be obtained: {error_message(exc)}; "
                         "nothing was sent") from None
    expiry = getattr(credentials, "_expiry_time", None)
    if expiry is not None and expiry <= dt.datetime.now(dt.timezone.utc):
        raise SetupError(f"the AWS credentials expired at {expiry.isoformat()}: refresh them, "
                         "then run again; nothing was sent")


def resolve_endpoint(profile: str | None, region: str, endpoint_url: str | None) -> Endpoint:
    """The endpoint and host prefix botocore will use (aws/endpoints.py), refused in one
    line when the prefix cannot work with it."""
    from batchcopy.aws.endpoints import EndpointError, check, resolve

    try:
        endpoint = resolve(profile=profile, region=region, endpoint_url=endpoint_url)
        check(endpoint)
    except EndpointError as exc:
        raise SetupError(str(exc)) from None
    return endpoint


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


def _check_bucket(url: str, what: str = "the report's") -> None:
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
            raise SetupError(f"{what} bucket {bucket!r} does not exist") from None
        raise SetupError(f"cannot use {what} bucket {bucket!r}: {code}") from None
    except bx.BotoCoreError as exc:
        raise SetupError(f"cannot reach {what} bucket {bucket!r}: {exc}") from None


def check_manifest_destination(out: str) -> None:
    """`select --out`: a manifest name (.csv, .csv.gz, .parquet, .pq) in a writable
    directory, or an s3:// object whose bucket answers."""
    if not out.lower().endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        raise SetupError(f"--out {out!r}: the manifest's name must end in .csv, .csv.gz, "
                         ".parquet or .pq (its format)")
    if is_s3(out):
        _check_bucket(out, "the manifest's")
        return
    path = Path(out).expanduser()
    if path.is_dir():
        raise SetupError(f"--out {out!r} is a directory; give a file name")
    writable_dir(path.parent, f"the manifest's directory {str(path.parent)!r}")


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


# ---- the service, read-only, before the first copy -----------------------------------------
PREFLIGHT_ATTEMPTS = 3  # a refused connection costs three tries, not a run of warnings


async def service_checked(settings: ClientSettings,
                          rates: dict[str, tuple[float, float | None]], endpoint: Endpoint,
                          datastores: list[str], probe: tuple[str, str] | None) -> list[str]:
    """check_service over a client of its own (a few attempts, short timeouts); nothing to
    check when the run has no data store to touch."""
    from batchcopy.aws.client import ImagingApi, open_client
    from batchcopy.aws.ratelimit import RateLimiter
    from batchcopy.aws.retry import Backoff

    if not datastores:
        return []
    async with open_client(replace(settings, connect_timeout=5.0, read_timeout=30.0)) as client:
        api = ImagingApi(client, RateLimiter(rates), max_attempts=PREFLIGHT_ATTEMPTS,
                         backoff=Backoff(0.2, 1.0))
        return await check_service(api, endpoint, datastores, probe)


async def check_service(api: ImagingApi, endpoint: Endpoint, datastores: list[str],
                        probe: tuple[str, str] | None) -> list[str]:
    """GetDatastore of every data store the run touches (exists, ACTIVE), then one small
    SearchImageSets in the first row's data store (the runtime host, where the run's calls
    go, answers as HealthImaging; the run's own reads are not spent). Returns notes on
    what could not be checked (a GetDatastore permission the run does not need); SetupError
    on the first answer that says the set-up is wrong."""
    from batchcopy.aws.retry import error_code

    notes: list[str] = []
    for ds in datastores:
        try:
            got = await api.call("GetDatastore", datastoreId=ds)
            status = str(got["datastoreProperties"]["datastoreStatus"])
        except Exception as exc:
            note = _datastore_refusal(exc, ds, endpoint)
            notes.append(note)
            continue
        if status != "ACTIVE":
            raise SetupError(f"data store {ds} is {status}, not ACTIVE: copies into it would "
                             "fail; wait for it, or fix the manifest's datastore_id")
    if probe is not None:  # SearchImageSets: a runtime operation, one small page
        ds = probe[0]
        try:
            got = await api.call("SearchImageSets", datastoreId=ds, searchCriteria={},
                                 maxResults=1)
            got["imageSetsMetadataSummaries"]
        except Exception as exc:
            if _answered_by_the_service(exc):
                return notes
            if error_code(exc) == "ResourceNotFoundException":
                raise _missing(ds, endpoint) from None
            raise _refusal(exc, f"SearchImageSets in {ds} (the runtime API)", endpoint,
                           runtime=True) from None
    return notes


def _answered_by_the_service(exc: BaseException) -> bool:
    """A modelled refusal (a validation error, a conflict): the runtime API is there. A data
    store missing there too is the data store check's business."""
    from batchcopy.aws.retry import ErrorKind, classify, error_code

    return (classify(exc, operation="SearchImageSets") in (ErrorKind.REFUSED, ErrorKind.CONFLICT)
            and error_code(exc) != "ResourceNotFoundException")


def _datastore_refusal(exc: BaseException, ds: str, endpoint: Endpoint) -> str:
    """Why GetDatastore did not say ACTIVE: a note when the run may still go (the role may
    not read data stores; a VPC endpoint of the runtime API may not serve the control
    plane), else SetupError."""
    from batchcopy.aws.retry import error_code, is_not_the_service

    code = error_code(exc)
    if code == "ResourceNotFoundException":
        raise _missing(ds, endpoint) from None
    if code in ("AccessDeniedException", "AccessDenied"):
        return (f"GetDatastore is not allowed (the run does not need it): data store {ds} "
                "was not checked to be ACTIVE")
    if endpoint.kind == "vpc-endpoint" and is_not_the_service(code, None):
        return (f"{endpoint.host} does not serve GetDatastore (a runtime VPC endpoint): data "
                f"store {ds} was not checked to be ACTIVE")
    raise _refusal(exc, f"GetDatastore of {ds}", endpoint, runtime=False)


def _missing(ds: str, endpoint: Endpoint) -> SetupError:
    return SetupError(f"data store {ds} (of the manifest's rows) is not at {endpoint.url}: the "
                      f"region, the account (profile) or the endpoint is wrong; nothing was "
                      f"sent, no row was recorded (`batchcopy doctor MANIFEST` shows each "
                      f"setting)")


def _refusal(exc: BaseException, what: str, endpoint: Endpoint, *,
             runtime: bool) -> SetupError:
    """One line: what failed, why, and what to change."""
    from botocore import exceptions as bx

    from batchcopy.aws.retry import (
        ErrorKind, classify, error_code, error_message, is_not_the_service, is_run_fatal_code)

    url = endpoint.runtime_url if runtime else endpoint.url
    code, message = error_code(exc), error_message(exc)
    if isinstance(exc, bx.SSLError):
        return SetupError(f"TLS: the certificate of {url} does not verify ({_ssl_reason(exc)}): "
                          "nothing was sent; check the endpoint's host name, AWS_CA_BUNDLE, or "
                          "a TLS-inspecting proxy")
    if isinstance(exc, bx.ProxyConnectionError):
        return SetupError(f"cannot reach the proxy for {url}: {message} (HTTPS_PROXY); nothing "
                          "was sent")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError,
                        bx.ConnectionClosedError, bx.ReadTimeoutError)):
        return SetupError(f"cannot reach {url} ({what}, {PREFLIGHT_ATTEMPTS} attempts): "
                          f"{_reason(exc)}; check the endpoint (from {endpoint.source}), the "
                          "region and the network; nothing was sent")
    if is_not_the_service(code, None) or isinstance(exc, (KeyError, TypeError, ValueError)):
        return SetupError(f"{url} does not answer as HealthImaging ({what}: {code}: {message}); "
                          f"check the endpoint (from {endpoint.source}), its runtime- host "
                          "prefix and any proxy; nothing was sent")
    if is_run_fatal_code(code):
        return SetupError(f"{what} was refused: {code}: {message} (the credentials or the "
                          "role's permissions; `batchcopy doctor MANIFEST` checks each); "
                          "nothing was sent")
    kind = classify(exc, operation="GetImageSet")
    if kind in (ErrorKind.THROTTLE, ErrorKind.TRANSIENT):
        return SetupError(f"{url} answered {code} to {what} ({PREFLIGHT_ATTEMPTS} attempts): "
                          "try again later; nothing was sent")
    return SetupError(f"{what} failed: {code}: {message}; nothing was sent")


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "kwargs", {}).get("error")
    text = str(inner) if inner is not None else str(exc)
    return " ".join(text.split())[:300]


def _ssl_reason(exc: BaseException) -> str:
    """The verifier's own words ("Hostname mismatch, certificate is not valid for 'x'")."""
    text = _reason(exc)
    marker = "certificate verify failed:"
    at = text.find(marker)
    return text[at + len(marker):].split("(_ssl.c")[0].strip(" .") if at >= 0 else text
