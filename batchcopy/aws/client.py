"""One shared aioboto3 HealthImaging client, and typed calls that go through the limiter.

`open_client()` builds the single client a run shares across all its tasks, with
botocore's own retries switched off for every operation (`total_max_attempts=1`):
we retry ourselves, by error kind, and CopyImageSet must never be retried blindly
(botocore would retry it after a read timeout or a dropped connection and could
make a second copy).

`ImagingApi` wraps the client. Every HTTP attempt first takes a token from the
operation's bucket in the `RateLimiter`, and its send time is spaced again from
botocore's `before-send` event (after signing, right before the bytes leave), so
the gaps the service sees are the gaps we meant; a throttle slows the bucket down
(AIMD: a lone throttle of a spaced send is jitter, see ratelimit), a success lets
it recover. CopyImageSet (and any other non-idempotent
operation) gets exactly one attempt; the runner classifies what went wrong and
decides. Idempotent reads are retried here on THROTTLE / TRANSIENT errors with
jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from batchcopy.aws.api import ImageSetProperties
from batchcopy.aws.lightcalls import OPERATIONS as LIGHT_OPERATIONS
from batchcopy.aws.lightcalls import LightCalls
from batchcopy.aws.quotawatch import QuotaWatch
from batchcopy.aws.ratelimit import RateLimiter, TokenBucket
from batchcopy.aws.retry import (
    NON_IDEMPOTENT,
    THROTTLE_LIMIT,
    Backoff,
    ErrorKind,
    UnreadableAnswer,
    classify,
    error_code,
    is_retryable,
)
from batchcopy.aws.sendtimes import PACE, SENDING, SPACED, trace_writes, traced
from batchcopy.aws.useragent import cache_user_agent
from batchcopy.core.specs import CopyRequest

SERVICE = "medical-imaging"
PAGE_SIZE = 50  # the service's maximum maxResults for both paginated reads
# what each read always answers: a 2xx without it is not the service's (UnreadableAnswer);
# a CopyImageSet answer that cannot be read is run/calls.py's (ambiguous, reconciled)
ANSWERS = {"GetImageSet": "versionId",
           "GetImageSetMetadata": "imageSetMetadataBlob", "GetDatastore": "datastoreProperties",
           "ListImageSetVersions": "imageSetPropertiesList",
           "SearchImageSets": "imageSetsMetadataSummaries"}


@dataclass(frozen=True)
class ClientSettings:
    endpoint_url: str | None = None  # else botocore's: AWS_ENDPOINT_URL[_MEDICAL_IMAGING], profile
    region: str | None = None
    profile: str | None = None
    max_pool_connections: int = 50
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@asynccontextmanager
async def open_client(settings: ClientSettings) -> AsyncIterator[Any]:
    """Yield one aiobotocore medical-imaging client; close it on exit.

    The endpoint and the runtime- host prefix are botocore's to decide, by its own rule
    (aws/endpoints.py): nothing here depends on which route named the endpoint. TLS is
    verified on every path, host name included, through proxies too (aws/tls.py)."""
    import aioboto3
    from aiobotocore.config import AioConfig

    from batchcopy.aws.tls import VerifiedSession

    config = AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        http_session_cls=VerifiedSession,
    )
    session = aioboto3.Session(profile_name=settings.profile)
    async with session.client(SERVICE, region_name=settings.region,
                              endpoint_url=settings.endpoint_url, config=config) as client:
        cache_user_agent(client)
        yield client


@dataclass
class CallStats:
    """Counts per operation: HTTP attempts, throttled answers (and of those, the ones
    taken for jitter: rate kept), retries made, and failed attempts by error code."""

    calls: Counter[str] = field(default_factory=Counter)
    throttles: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    jitter: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {name: dict(sorted(getattr(self, name).items()))
                for name in ("calls", "throttles", "jitter", "retries", "errors")}


def light_calls(client: Any) -> LightCalls | None:
    """The light path for `client`, or None: a client without botocore's insides (a test
    double) has nothing to borrow, and BATCHCOPY_LIGHT_CALLS=0 sends every call through
    botocore (a way out, should an endpoint ever need something only botocore does). With
    API logging on (DEBUG) the light path logs its own calls, as botocore's hooks do."""
    from batchcopy.console import logs

    if (not LightCalls.usable(client)
            or os.environ.get("BATCHCOPY_LIGHT_CALLS", "").strip().lower() in {"0", "false", "no", "off"}):
        return None
    return LightCalls(client, observer=logs.api_observer())


Reader = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _register_send_hook(client: Any, hook: Callable[..., Awaitable[None]]) -> bool:
    """Register `hook` on the client's `before-send.medical-imaging` events (every
    operation: botocore's emitter matches by prefix); False for a client without
    botocore events (a test double)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None or not hasattr(events, "register"):
        return False
    events.register(f"before-send.{SERVICE}", hook)
    return True


class ImagingApi:
    """Typed HealthImaging calls over one shared client, paced by a RateLimiter."""

    def __init__(
        self,
        client: Any,
        limiter: RateLimiter,
        *,
        stats: CallStats | None = None,
        max_attempts: int = 5,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        light: bool = True,
        quota: QuotaWatch | None = None,
    ) -> None:
        """light: GetImageSet and CopyImageSet without botocore's request machinery
        (aws/lightcalls.py), where the client allows it. quota: what throttles say about
        the account's quota (aws/quotawatch.py): told of every acceptance and throttle."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.client = client
        self.limiter = limiter
        self.stats = stats if stats is not None else CallStats()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._light = light_calls(client) if light else None
        self._hooked = _register_send_hook(client, self._before_send)
        self._pairs_refused = False  # SearchImageSets refused two filters together once
        self.quota = quota if quota is not None else QuotaWatch()

    def throttled_out(self, operation: str) -> bool:
        """The service refused the last STREAK_LIMIT requests of `operation`, accepting none:
        a throttled call gives up (its rows are NOT_RUN: the next run tries again)."""
        return self.quota.exhausted(operation)

    async def _before_send(self, event_name: str = "", **_: Any) -> None:
        """botocore `before-send.medical-imaging.<Operation>`: space the send itself, here
        or (the client's sessions traced) once its connection is ready (_ready).

        Returns None, so botocore goes on to send the request it just signed."""
        operation = event_name.rsplit(".", 1)[-1]
        bucket = self.limiter.bucket(operation)
        if not bucket.unlimited:
            trace_writes(self.client)
            if traced(self.client):
                PACE.set(bucket)
            elif await bucket.space() is not None:
                SENDING.set((bucket, bucket.sends))
        SPACED.set(True)

    # ---------------------------------------------------------------- core
    async def _attempt(self, operation: str, bucket: TokenBucket, params: dict[str, Any],
                       read: Reader | None, *, paced: bool = True) -> dict[str, Any]:
        """One paced HTTP attempt, with its bookkeeping; raises what the client raised."""
        light = self._light if operation in LIGHT_OPERATIONS else None
        if light is None:
            from botocore import xform_name

            method = getattr(self.client, xform_name(operation))
        if paced:
            await bucket.acquire()
        if not self._hooked:  # a client without botocore events: space before the call
            await bucket.space()
        self.stats.calls[operation] += 1
        spaced = SPACED.set(not self._hooked)
        pace = PACE.set(None)
        try:
            response: dict[str, Any] = await (
                light.call(operation, params, before_send=self._before_send)
                if light is not None else method(**params))
            missing = ANSWERS.get(operation)
            if missing is not None and missing not in response:
                raise UnreadableAnswer(operation, missing)
            if read is not None:
                response = await read(response)
        except Exception as exc:
            self.stats.errors[error_code(exc)] += 1
            if classify(exc, operation=operation) is ErrorKind.THROTTLE:
                self.stats.throttles[operation] += 1
                halved = bucket.on_throttle(spaced=SPACED.get())
                if not halved and not bucket.unlimited:
                    self.stats.jitter[operation] += 1
                self.quota.throttled(operation, halved=halved,
                                     configured=self.limiter.configured().get(
                                         operation, (math.inf, 1.0))[0])
            raise
        finally:
            SPACED.reset(spaced)
            PACE.reset(pace)  # set and left unused: the request never reached a connection
        bucket.on_success()
        self.quota.accepted(operation, bucket.now())
        return response

    async def _call(self, operation: str, params: dict[str, Any],
                    read: Reader | None = None) -> dict[str, Any]:
        bucket = self.limiter.bucket(operation)
        attempts = 1 if operation in NON_IDEMPOTENT else self.max_attempts
        failed = throttled = 0  # pacing owns throttles: they use up no attempt
        while True:
            try:
                return await self._attempt(operation, bucket, params, read)
            except Exception as exc:
                kind = classify(exc, operation=operation)
                if kind is ErrorKind.THROTTLE:
                    throttled += 1
                else:
                    failed += 1
                if (not is_retryable(kind) or failed >= attempts or operation in NON_IDEMPOTENT
                        or throttled >= THROTTLE_LIMIT or self.throttled_out(operation)):
                    raise
            self.stats.retries[operation] += 1
            await self._sleep(self.backoff.delay(max(failed, throttled) - 1, self._rng))

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call `operation` (botocore name, e.g. "GetImageSet") with its input members.

        Idempotent operations are retried on TRANSIENT errors up to max_attempts, and on
        throttles (which pacing owns: they use up no attempt) up to THROTTLE_LIMIT, or
        until the service has refused STREAK_LIMIT requests in a row (throttled_out);
        non-idempotent ones (NON_IDEMPOTENT) get one attempt.
        Other errors, and the last one, are raised unchanged.
        """
        return await self._call(operation, params)

    async def send_once(self, operation: str, **params: Any) -> dict[str, Any]:
        """One attempt whose quota token the caller has already taken (as for
        copy_image_set(paced=False): the caller journals it as sent first)."""
        return await self._attempt(operation, self.limiter.bucket(operation), params, None,
                                   paced=False)

    # ---------------------------------------------------------------- copy
    async def copy_image_set(self, request: CopyRequest, *, paced: bool = True) -> dict[str, Any]:
        """Start one copy: exactly one HTTP attempt, never retried here.

        paced=False: the caller has already taken the CopyImageSet token (the runner
        does, so that its journal records "sent" right before the request leaves,
        not before a wait for the quota).
        """
        bucket = self.limiter.bucket("CopyImageSet")
        return await self._attempt("CopyImageSet", bucket, request.params(), None, paced=paced)

    # ---------------------------------------------------------------- reads
    async def get_image_set(self, datastore_id: str, image_set_id: str,
                            version: str | None = None) -> ImageSetProperties:
        params: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version is not None:
            params["versionId"] = version
        # the service's answer (ANSWERS: a 2xx without versionId is UnreadableAnswer)
        return cast(ImageSetProperties, await self._call("GetImageSet", params))

    async def poll_image_set(self, datastore_id: str, image_set_id: str,
                             version: str) -> dict[str, Any]:
        """One GetImageSet attempt of a version, whose token the caller has taken (the
        waiter takes one, then picks which copy to look at); never retried here."""
        return await self._attempt("GetImageSet", self.limiter.bucket("GetImageSet"), {
            "datastoreId": datastore_id, "imageSetId": image_set_id, "versionId": version},
            None, paced=False)

    async def latest_version(self, datastore_id: str, image_set_id: str) -> tuple[str, str, str]:
        """(versionId, imageSetState, imageSetWorkflowStatus) of the latest version."""
        found = await self.get_image_set(datastore_id, image_set_id)
        return (str(found["versionId"]), str(found.get("imageSetState", "")),
                str(found.get("imageSetWorkflowStatus", "")))

    async def _pages(self, operation: str, params: dict[str, Any], key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        token: str | None = None
        while True:
            page_params = dict(params, maxResults=PAGE_SIZE)
            if token is not None:
                page_params["nextToken"] = token
            page = await self._call(operation, page_params)
            items.extend(page.get(key) or [])
            token = page.get("nextToken")
            if not token or token in seen:  # a repeated token would loop forever
                return items
            seen.add(token)

    async def list_image_set_versions(self, datastore_id: str, image_set_id: str) -> list[dict[str, Any]]:
        return await self._pages(
            "ListImageSetVersions",
            {"datastoreId": datastore_id, "imageSetId": image_set_id},
            "imageSetPropertiesList")

    async def search_image_sets(self, datastore_id: str, search_criteria: dict[str, Any]) -> list[dict[str, Any]]:
        return [found async for page in self.search_pages(datastore_id, search_criteria)
                for found in page]

    async def search_pages(self, datastore_id: str, search_criteria: dict[str, Any],
                           page_size: int = PAGE_SIZE) -> AsyncIterator[list[dict[str, Any]]]:
        """SearchImageSets page by page (the summaries of each). Two filters the service
        refuses together (which pairs it takes is not documented) are sent as one, the
        other checked on each summary (aws/search.py); once refused, a pair is not sent
        again by this client."""
        from botocore.exceptions import ClientError

        from batchcopy.aws import search

        filters = list(search_criteria.get("filters") or [])
        local: list[dict[str, Any]] = []
        if len(filters) == 2 and self._pairs_refused:
            filters, local = search.split(filters)
        token: str | None = None
        seen: set[str] = set()
        while True:
            criteria = {k: v for k, v in search_criteria.items() if k != "filters"}
            if filters:
                criteria["filters"] = filters
            params: dict[str, Any] = {"datastoreId": datastore_id, "maxResults": page_size,
                                      "searchCriteria": criteria}
            if token is not None:
                params["nextToken"] = token
            try:
                page = await self._call("SearchImageSets", params)
            except ClientError as exc:
                if (token is None and len(filters) == 2 and not local
                        and error_code(exc) == "ValidationException"):
                    self._pairs_refused = True
                    filters, local = search.split(filters)
                    continue
                raise
            found = page.get("imageSetsMetadataSummaries") or []
            yield [s for s in found if all(search.matches(s, f) for f in local)]
            token = page.get("nextToken")
            if not token or token in seen:  # a repeated token would loop forever
                return
            seen.add(token)

    async def get_image_set_metadata(self, datastore_id: str, image_set_id: str,
                                     version: str | None = None) -> dict[str, Any]:
        """The image set's metadata document, gunzipped and decoded.

        The body is read inside the retried attempt, so a connection lost
        while streaming it is retried like any other transient failure.
        """
        params: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        if version is not None:
            params["versionId"] = version

        async def read(response: dict[str, Any]) -> dict[str, Any]:
            body = response["imageSetMetadataBlob"]
            try:
                data: bytes = await body.read()
            finally:
                body.close()
            return {"document": data, "contentEncoding": response.get("contentEncoding")}

        raw = await self._call("GetImageSetMetadata", params, read)
        data = raw["document"]
        if raw.get("contentEncoding") == "gzip" or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        document: dict[str, Any] = json.loads(data)
        return document
