"""GetImageSet and CopyImageSet, the calls a run makes per row, without botocore's
per-request machinery.

With quotas raised, botocore's request path (a dozen event hooks, the serializer, the
user-agent, the signer's generic canonicalisation, the parser) costs several times the
HTTP exchange itself. These two operations have a fixed shape (a POST to a path made of
ids, at most two query flags, a small JSON body and a small JSON answer), so they are
built here directly, signed with SigV4 (the signing key cached per day), and sent
through the client's own aiohttp session (`http_session.send`), which keeps every
network failure the same botocore exception that `retry.classify()` sorts. A JSON
answer below 300 is read here (timestamps as datetimes, as botocore's parser gives them);
every other answer (an error, an empty body, a load balancer's or a proxy's HTML page, a
body that is not JSON) goes through the client's own botocore parser and is raised as the
modelled exception botocore's client raises, so the code, message, status and modelled
fields are botocore's own (an HTML 503 page is code "503", as botocore says it).

The client's endpoint, host prefix ("runtime-" unless injection is off), region and
credentials (refreshed like botocore's, via `get_frozen_credentials`) are used. Anything
else goes through botocore as before. `observer` (API logging at DEBUG) hears of every
exchange: the operation, the HTTP status and error code or the exception, the latency.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import quote, urlsplit

OPERATIONS = frozenset({"GetImageSet", "CopyImageSet"})
_TIMESTAMPS = ("createdAt", "updatedAt", "deletedAt")
_SERVICE = "medical-imaging"
_UA = "batchcopy"


class Observer(Protocol):
    """What API logging hears of each exchange (console/logs.py's api_* functions)."""

    def answered(self, operation: str, status: int, code: str | None,
                 latency_ms: float) -> None: ...

    def failed(self, operation: str, exc: BaseException, latency_ms: float) -> None: ...


class LightCalls:
    def __init__(self, client: Any, observer: Observer | None = None) -> None:
        from botocore.awsrequest import AWSPreparedRequest
        from botocore.utils import parse_timestamp

        self._prepared = AWSPreparedRequest
        self._parse_ts = parse_timestamp
        self._observer = observer
        self._exceptions = client.exceptions
        self._parser = client._endpoint._response_parser_factory.create_parser(
            client.meta.service_model.protocol)
        meta = client.meta
        self._service_model = meta.service_model
        url = urlsplit(meta.endpoint_url)
        host = url.netloc
        for default in (":443", ":80"):  # what aiohttp sends as Host, and so what is signed
            if host.endswith(default) and url.scheme == ("https" if default == ":443" else "http"):
                host = host[: -len(default)]
        op = meta.service_model.operation_model("GetImageSet")
        prefix = (op.endpoint or {}).get("hostPrefix") or ""
        if prefix and meta.config.inject_host_prefix:
            host = prefix + host
        self._origin = f"{url.scheme}://{host}"
        self._host = host
        self._path = url.path.rstrip("/")
        self._region = meta.region_name
        self._send = client._endpoint.http_session.send
        self._credentials = client._request_signer._credentials
        self._user_agent = client._user_agent_creator.to_string()
        self._keys: dict[tuple[str, str], bytes] = {}

    @staticmethod
    def usable(client: Any) -> bool:
        """Whether the client has what this path needs (a botocore that still exposes it)."""
        try:
            return (client._endpoint.http_session is not None
                    and client._endpoint._response_parser_factory is not None
                    and client._request_signer._credentials is not None
                    and client.meta.config.signature_version in (None, "v4"))
        except AttributeError:
            return False

    async def call(self, operation: str, params: dict[str, Any], *,
                   before_send: Callable[..., Awaitable[None]] | None = None) -> dict[str, Any]:
        """before_send: awaited once the request is signed, just before it leaves, with
        botocore's `before-send` event name (the client's pacing hook, as botocore would)."""
        ds = quote(params["datastoreId"], safe="")
        if operation == "GetImageSet":
            path = f"/datastore/{ds}/imageSet/{quote(params['imageSetId'], safe='')}/getImageSet"
            query = [("version", params["versionId"])] if "versionId" in params else []
            body = b""
        else:
            path = (f"/datastore/{ds}/imageSet/{quote(params['sourceImageSetId'], safe='')}"
                    "/copyImageSet")
            query = [(k, "true" if params[k] else "false")
                     for k in ("force", "promoteToPrimary") if k in params]
            body = json.dumps(params["copyImageSetInformation"], separators=(",", ":")).encode()
        return await self._exchange(operation, self._path + path, sorted(query), body,
                                    before_send)

    async def _exchange(self, operation: str, path: str, query: list[tuple[str, str]],
                        body: bytes,
                        before_send: Callable[..., Awaitable[None]] | None) -> dict[str, Any]:
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
        headers = await self._signed_headers(path, qs, body)
        url = self._origin + path + (f"?{qs}" if qs else "")
        request = self._prepared("POST", url, headers, body, False)
        if before_send is not None:
            await before_send(event_name=f"before-send.{_SERVICE}.{operation}")
        started = time.monotonic()
        try:
            response = await self._send(request)
            raw = await response.content
        except Exception as exc:
            if self._observer is not None:
                self._observer.failed(operation, exc, _ms(started))
            raise
        status = int(response.status_code)
        data = _json_object(raw) if status < 300 else None
        if data is None:  # an error, or an answer only botocore's parser knows how to read
            data = await self._botocore_parse(operation, response, raw)
        else:
            _timestamps(data, self._parse_ts)
            data["ResponseMetadata"] = {
                "RequestId": response.headers.get("x-amzn-requestid", ""),
                "HTTPStatusCode": status, "HTTPHeaders": dict(response.headers),
                "RetryAttempts": 0}
        if self._observer is not None:
            code = (data.get("Error") or {}).get("Code") if status >= 300 else None
            self._observer.answered(operation, status, code, _ms(started))
        if status >= 300:
            error = data.get("Error") or {}
            raise self._exceptions.from_code(error.get("QueryErrorCode") or error.get("Code"))(
                data, operation)
        return data

    async def _botocore_parse(self, operation: str, response: Any, raw: bytes) -> dict[str, Any]:
        """The answer as the client's botocore parser reads it, with the modelled error's
        fields as botocore's endpoint adds them (aiobotocore's _add_modeled_error_fields)."""
        model = self._service_model.operation_model(operation)
        answer = {"headers": response.headers, "status_code": int(response.status_code),
                  "body": raw, "context": {"operation_name": operation}}
        parsed: dict[str, Any] = await self._parser.parse(answer, model.output_shape)
        code = (parsed.get("Error") or {}).get("Code")
        shape = self._service_model.shape_for_error_code(code) if code is not None else None
        if shape is not None:
            parsed.update(await self._parser.parse(answer, shape))
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = 0
        return parsed

    async def _signed_headers(self, path: str, qs: str, body: bytes) -> dict[str, str]:
        creds = await self._credentials.get_frozen_credentials()
        now = dt.datetime.now(dt.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-date": stamp}
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        if body:
            headers["content-type"] = "application/json"
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join([
            "POST", quote(path, safe="/-_.~"), qs,
            "".join(f"{n}:{headers[n]}\n" for n in names), signed,
            hashlib.sha256(body).hexdigest()])
        scope = f"{day}/{self._region}/{_SERVICE}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._key(creds.secret_key, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        headers["User-Agent"] = self._user_agent
        headers["Content-Length"] = str(len(body))
        del headers["host"]  # aiohttp sets it from the URL (the same value)
        return headers

    def _key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self._region, _SERVICE, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys.clear()
            key = self._keys[(secret, day)] = k
        return key


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object body (what the service answers), else None (botocore's parser then)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _timestamps(data: dict[str, Any], parse: Any) -> None:
    """Timestamps as datetimes: epoch seconds (what the service sends) directly, in UTC (the
    same instant botocore's parser gives, without dateutil's per-call cost); text by it."""
    for name in _TIMESTAMPS:
        value = data.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            data[name] = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        elif value is not None:
            data[name] = parse(value)
    for nested in ("sourceImageSetProperties", "destinationImageSetProperties"):
        if isinstance(data.get(nested), dict):
            _timestamps(data[nested], parse)
