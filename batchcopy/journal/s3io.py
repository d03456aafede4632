"""S3 as an `s3://` state uses it: a small synchronous client (boto3, called from the
journal's threads, never the run's event loop) with the conditional writes the state
relies on, each retried with backoff.

    create(key, body)         PUT If-None-Match: *  -> the new ETag, or None if the key
                              exists with other content (someone else created it)
    replace(key, body, etag)  PUT If-Match: etag    -> the new ETag, or None if the object
                              changed since `etag` (someone else wrote it)
    get(key)                  -> Obj (body, ETag, Last-Modified, S3's own clock) or None
    keys(prefix, after)       every key under prefix after `after`, in order
    delete(keys), copy(src, dst)

A conditional PUT whose answer was lost (a timeout, a dropped connection, a 5xx after S3
stored it) is sent again; if the retry is refused because the key now exists or moved on,
the object is read back: our own bytes mean the first attempt landed, so the write
succeeded. Every request is retried on throttling (SlowDown, 503), 5xx, 409
ConditionalRequestConflict, timeouts and dropped connections, with jittered exponential
backoff, until `retry_for_s` has passed since the first attempt (or `until`, a deadline on
the monotonic clock, comes first); then StateUnavailable. A missing bucket, refused
access or bad credentials are StateError at once (a set-up mistake, not weather).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CONFLICT = frozenset({"PreconditionFailed", "412"})
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_SETUP = frozenset({"NoSuchBucket", "AccessDenied", "403", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "InvalidBucketName", "AllAccessDisabled",
                    "ExpiredToken", "InvalidToken", "AuthorizationHeaderMalformed",
                    "PermanentRedirect", "301"})


class StateError(Exception):
    """The state cannot be used as given (no such bucket, access refused, not a state)."""


class StateUnavailable(Exception):
    """The state could not be read or written in time (S3 errors, timeouts): nothing that
    depends on the write was done."""


@dataclass(frozen=True)
class S3Settings:
    """Timeouts and retry budget of the state's S3 requests (env: BATCHCOPY_S3_TIMEOUT,
    BATCHCOPY_S3_RETRY_FOR: seconds)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    retry_for_s: float = 60.0
    backoff_s: float = 0.2
    backoff_cap_s: float = 5.0

    @classmethod
    def from_env(cls) -> "S3Settings":
        timeout = _env_float("BATCHCOPY_S3_TIMEOUT")
        retry_for = _env_float("BATCHCOPY_S3_RETRY_FOR")
        base = cls()
        return cls(connect_timeout_s=timeout or base.connect_timeout_s,
                   read_timeout_s=timeout or base.read_timeout_s,
                   retry_for_s=retry_for if retry_for is not None else base.retry_for_s)


def _env_float(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Obj:
    body: bytes
    etag: str
    last_modified: float  # epoch seconds, S3's clock (1 s resolution)
    server_now: float  # the response's Date: S3's clock when it answered


def parse_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix/') (the prefix ends with '/',
    or is empty for a whole bucket)."""
    if not url.startswith("s3://"):
        raise StateError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise StateError(f"--state {url!r}: an s3 state needs a bucket (s3://bucket/prefix/)")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


class S3:
    """One bucket and prefix (see the module doc). Thread-safe: boto3 clients are."""

    def __init__(self, url: str, *, profile: str | None = None,
                 settings: S3Settings | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.s = settings or S3Settings.from_env()
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
        self.client = session.client("s3", config=Config(
            retries={"total_max_attempts": 1}, connect_timeout=self.s.connect_timeout_s,
            read_timeout=self.s.read_timeout_s, max_pool_connections=16))
        self.requests = 0  # every request sent, retries included (for the benchmark)
        self.bytes_up = 0
        self.bytes_down = 0

    def where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    # ---- the operations -----------------------------------------------------------
    def create(self, key: str, body: bytes, *, until: float | None = None) -> str | None:
        def put() -> str | None:
            try:
                return self._put(key, body, IfNoneMatch="*")
            except _Refused:
                return self._ours(key, body)

        return self._retry(put, f"write {self.where(key)}", until)

    def replace(self, key: str, body: bytes, etag: str, *,
                until: float | None = None) -> str | None:
        def put() -> str | None:
            try:
                return self._put(key, body, IfMatch=etag)
            except _Refused:
                return self._ours(key, body, unchanged=etag)
            except _Missing:  # gone (deleted): not ours to replace any more
                return None

        return self._retry(put, f"write {self.where(key)}", until)

    def get(self, key: str, *, until: float | None = None) -> Obj | None:
        return self._retry(lambda: self._get(key), f"read {self.where(key)}", until)

    def keys(self, prefix: str, after: str | None = None, *,
             until: float | None = None) -> list[str]:
        """Keys under `prefix` (relative to the state's prefix), after `after`, in order."""
        def page(token: str | None) -> dict[str, Any]:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
            if token:
                kw["ContinuationToken"] = token
            elif after:
                kw["StartAfter"] = self.prefix + after
            self.requests += 1
            return self._call(lambda: self.client.list_objects_v2(**kw))

        out: list[str] = []
        token: str | None = None
        while True:
            found = self._retry(lambda: page(token), f"list {self.where(prefix)}", until)
            out.extend(o["Key"][len(self.prefix):] for o in found.get("Contents") or ())
            token = found.get("NextContinuationToken")
            if not found.get("IsTruncated") or not token:
                return out

    def download(self, key: str, dest: Path) -> int:
        """Stream `key` into the file `dest` (again from the start after a failure); its size."""
        def one() -> int:
            self.requests += 1
            try:
                got = self._call(lambda: self.client.get_object(Bucket=self.bucket,
                                                                Key=self.prefix + key))
            except _Missing:
                raise FileNotFoundError(self.where(key)) from None
            size = 0
            chunks = got["Body"].iter_chunks(1 << 20)
            with open(dest, "wb") as fh:  # a local disk error is raised as it is
                while True:
                    try:
                        chunk = next(chunks, b"")
                    except Exception as exc:  # the connection dropped mid-body
                        raise _Transient(f"{type(exc).__name__}: {exc}") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    size += len(chunk)
            self.bytes_down += size
            return size

        return self._retry(one, f"read {self.where(key)}", None)

    def upload(self, key: str, src: Path) -> None:
        """One PUT of the file `src` (unconditional: callers name blobs uniquely)."""
        def one() -> None:
            with open(src, "rb") as fh:
                self._put(key, fh)

        self._retry(one, f"write {self.where(key)}", None)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": self.prefix + k} for k in keys[i:i + 1000]]

            def one() -> None:
                self.requests += 1
                self._call(lambda: self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}))

            self._retry(one, f"delete under {self.where()}", None)

    def delete_if(self, key: str, etag: str) -> None:
        """Delete `key` if it is still `etag` (best effort: a lease given back)."""
        self.requests += 1
        try:
            self._call(lambda: self.client.delete_object(Bucket=self.bucket,
                                                         Key=self.prefix + key, IfMatch=etag))
        except (_Refused, _Missing, _Transient):
            pass

    def copy(self, src: str, dst: str) -> None:
        def one() -> None:
            self.requests += 1
            self._call(lambda: self.client.copy_object(
                Bucket=self.bucket, Key=self.prefix + dst,
                CopySource={"Bucket": self.bucket, "Key": self.prefix + src}))

        self._retry(one, f"copy {self.where(src)}", None)

    def check_bucket(self, within_s: float = 10.0) -> None:
        """StateError now if the bucket is missing or refused (a set-up mistake);
        StateUnavailable if S3 does not answer within `within_s`."""
        self.keys("lease", until=time.monotonic() + within_s)

    # ---- plumbing -------------------------------------------------------------------
    def _put(self, key: str, body: Any, **cond: str) -> str:
        self.requests += 1
        self.bytes_up += len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size
        got = self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=self.prefix + key,
                                                        Body=body, **cond))
        return str(got["ETag"])

    def _get(self, key: str) -> Obj | None:
        self.requests += 1
        try:
            got = self._call(lambda: self.client.get_object(Bucket=self.bucket,
                                                            Key=self.prefix + key))
        except _Missing:
            return None
        try:
            body = got["Body"].read()
        except Exception as exc:  # the connection dropped mid-body
            raise _Transient(str(exc)) from None
        self.bytes_down += len(body)
        headers = got["ResponseMetadata"].get("HTTPHeaders", {})
        now = _http_date(headers.get("date")) or time.time()
        return Obj(body, str(got["ETag"]), got["LastModified"].timestamp(), now)

    def _ours(self, key: str, body: bytes, unchanged: str | None = None) -> str | None:
        """After a refused conditional PUT: the ETag if the object holds our bytes (an
        earlier attempt of ours landed), else None (someone else's). A refusal that the
        object does not explain (it is not there; it is still the `unchanged` version the
        PUT named) is tried again."""
        found = self._get(key)
        if found is None:
            raise _Transient("the precondition failed but the object is not there")
        if found.body == body:
            return found.etag
        if unchanged is not None and found.etag == unchanged:
            raise _Transient("the precondition failed but the object has not changed")
        return None

    def _call(self, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _CONFLICT or status == 412:
                raise _Refused(code) from None
            if code in _MISSING:
                raise _Missing(code) from None
            if code in _SETUP:
                raise StateError(f"{self.where()}: {code}: {err.get('Message') or exc}") from None
            if code == "ConditionalRequestConflict" or status == 409 or status >= 500 \
                    or code in ("SlowDown", "RequestTimeout", "Throttling", "InternalError",
                                "ServiceUnavailable", "RequestTimeTooSkewed"):
                raise _Transient(f"{code}: {err.get('Message') or ''}".strip()) from None
            raise StateError(f"{self.where()}: {code}: {err.get('Message') or exc}") from None
        except BotoCoreError as exc:  # timeouts, refused or dropped connections
            raise _Transient(f"{type(exc).__name__}: {exc}") from None

    def _retry(self, fn: Callable[[], T], what: str, until: float | None) -> T:
        start = time.monotonic()
        deadline = start + self.s.retry_for_s
        if until is not None:
            deadline = min(deadline, until)
        attempt = 0
        while True:
            try:
                return fn()
            except _Transient as exc:
                attempt += 1
                wait = random.uniform(0, min(self.s.backoff_cap_s, self.s.backoff_s * 2 ** attempt))
                if time.monotonic() + wait >= deadline:
                    raise StateUnavailable(
                        f"cannot {what}: {exc} (after {attempt} attempt(s) in "
                        f"{time.monotonic() - start:.0f} s)") from None
                time.sleep(wait)


class _Refused(Exception):
    """412: a condition did not hold."""


class _Missing(Exception):
    """404: no such key."""


class _Transient(Exception):
    """Worth another attempt."""


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
