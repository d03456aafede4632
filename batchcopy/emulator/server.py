"""The emulator's HTTP server: aiohttp app, control routes, start/stop helpers.

Per API request, in this order:
    route match (wire.py; no match -> 404 UnknownOperationException, JSON)
    -> count the call -> authentication + deny list (auth.py, when config.auth is set)
    -> request quota (quotas.py) -> injected faults (faults.py)
    -> parse + validate (wire.py) -> model.call (fast, lock-protected: run in the loop)
    -> serialise (wire.py).
Every answer carries `x-amzn-RequestId`; every error is JSON with `x-amzn-ErrorType`.
An unexpected exception in the model answers 500 InternalServerException and its
traceback goes to stderr (logger "batchcopy.emulator.server").

Control routes under /_emulator/ are never authenticated, throttled or faulted:
    POST /_emulator/reset                 forget data, counters, bucket and fault state, clock offset
    POST /_emulator/seed                  body: SeedSpec fields -> seed summary
    GET  /_emulator/stats                 model stats + calls/throttled/faults_fired,
                                          latency_added_s_by_operation,
                                          refusals_lost_by_operation (lost_response that
                                          dropped a refusal), and
                                          latest_version_reads (GetImageSet without a version)
    POST /_emulator/faults                body: {"faults": [FaultSpec...], "fault_seed"?: n}
    GET  /_emulator/config                the live EmulatorConfig as JSON
    POST /_emulator/config                partial update (see `apply_config_update`)
    GET  /_emulator/imagesets/{datastoreId}/{imageSetId}   model.snapshot_image_set
    GET  /_emulator/assumptions           every assumption switch: readings, default, evidence,
                                          current value (set them with POST /_emulator/config
                                          {"assume": {NAME: VALUE or null}})
    GET  /_emulator/clock                 {"offset_s", "now"}: the emulated clock
    POST /_emulator/clock                 body {"offset_s"?: X, "advance_s"?: N}: set the offset to
                                          X, then add N; pending work now due completes
    GET  /_emulator/copies                every accepted copy's life (timeline.py): accepted_at,
                                          ended_at, seen_ended_at (the first GetImageSet that
                                          showed it ended), reads_running
    GET  /_emulator/health                {"ok": true}
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from batchcopy.emulator import arrivals, assumptions
from batchcopy.emulator.auth import SignedRequest, authenticate, check_allowed
from batchcopy.emulator.config import EmulatorConfig, FaultSpec
from batchcopy.emulator.errors import InternalServerException, ServiceError, ValidationException
from batchcopy.emulator.faults import HTML_503, FaultInjector
from batchcopy.emulator.quotas import QuotaEnforcer
from batchcopy.emulator.wire import (
    RestJsonWire,
    UnknownOperationException,
    WireResponse,
    error_response,
)

if TYPE_CHECKING:  # pragma: no cover
    from batchcopy.emulator.model import HealthImaging

logger = logging.getLogger("batchcopy.emulator.server")

CLIENT_MAX_SIZE = 16 * 1024 * 1024  # copiableAttributes alone may be 260,000 characters
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 1.0


def _new_model(config: EmulatorConfig) -> "HealthImaging":
    from batchcopy.emulator.model import HealthImaging

    return HealthImaging(config)


def apply_config_update(config: EmulatorConfig, update: dict[str, Any]) -> None:
    """Apply a partial update to a live config, in place (everything holds this object).

    Keys are EmulatorConfig fields. `rates` is merged per operation
    ({"CopyImageSet": {"rate": 1, "burst": 2}}) and `assume` per switch
    ({"stale_version": "validation"}); in both null removes an override. Every other
    key replaces the field (`faults` the whole list, `auth` the whole AuthConfig or null).
    Raises ValueError/TypeError on bad input, leaving the config untouched.
    """
    merged = config.to_dict()
    update = dict(update)
    for key in ("rates", "assume"):
        if key in update:
            merged[key] = _merge_overrides(merged.get(key) or {}, update.pop(key) or {}, key)
    merged.update(update)
    fresh = EmulatorConfig.from_dict(merged)
    for f in dataclasses.fields(EmulatorConfig):
        setattr(config, f.name, getattr(fresh, f.name))


def _merge_overrides(current: dict[str, Any], changes: Any, key: str) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise ValueError(f"{key} must be an object, not {changes!r}")
    merged = dict(current)
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def public_config(config: EmulatorConfig) -> dict[str, Any]:
    """The config as JSON for the control route, secret access keys redacted."""
    data = config.to_dict()
    if data.get("auth"):
        data["auth"]["keys"] = {key: "<redacted>" for key in data["auth"]["keys"]}
    return data


class EmulatorService:
    """The request pipeline around one model, and the aiohttp app serving it."""

    def __init__(self, model: "HealthImaging") -> None:
        self.model = model
        self.wire = RestJsonWire()
        self.quotas = QuotaEnforcer(model.config)
        self.faults = FaultInjector(model.config)
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._latest_reads = 0  # GetImageSet without a version: a client reading the latest

    @property
    def config(self) -> EmulatorConfig:
        return self.model.config

    # ------------------------------------------------------------------ state
    def stats(self) -> dict[str, Any]:
        out = dict(self.model.stats())
        with self._calls_lock:
            out["calls"] = dict(self._calls)
            out["latest_version_reads"] = self._latest_reads
        out["throttled"] = self.quotas.throttle_counts()
        out.update(self.faults.counts())
        return out

    def reset(self) -> None:
        self.model.reset()
        self.quotas.reset()
        self.faults.restart()
        with self._calls_lock:
            self._calls.clear()
            self._latest_reads = 0

    def set_faults(self, faults: list[FaultSpec], fault_seed: int | None = None) -> None:
        with self.model.lock:
            self.config.faults = list(faults)
            if fault_seed is not None:
                self.config.fault_seed = int(fault_seed)
        self.faults.restart(counters=False)

    def update_config(self, update: dict[str, Any]) -> None:
        with self.model.lock:
            apply_config_update(self.config, update)
        self.quotas.reset(counters=False)
        self.faults.restart(counters=False)

    def set_clock(self, offset_s: float | None = None, advance_s: float | None = None) -> dict[str, float]:
        return self.model.set_clock(offset_s, advance_s)

    # ------------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._json_errors])
        r = app.router
        r.add_post("/_emulator/reset", self._ctl_reset)
        r.add_post("/_emulator/seed", self._ctl_seed)
        r.add_get("/_emulator/stats", self._ctl_stats)
        r.add_post("/_emulator/faults", self._ctl_faults)
        r.add_get("/_emulator/config", self._ctl_config_get)
        r.add_post("/_emulator/config", self._ctl_config_post)
        r.add_get("/_emulator/imagesets/{datastoreId}/{imageSetId}", self._ctl_snapshot)
        r.add_get("/_emulator/health", self._ctl_health)
        r.add_get("/_emulator/copies", self._ctl_copies)
        r.add_get("/_emulator/assumptions", self._ctl_assumptions)
        r.add_get("/_emulator/clock", self._ctl_clock_get)
        r.add_post("/_emulator/clock", self._ctl_clock_post)
        r.add_route("*", "/{tail:.*}", self._api)
        return app

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        """aiohttp's own errors (413, 405...) as JSON, never HTML."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "RequestEntityTooLargeException" if exc.status == 413 else "BadRequestException"
            return _to_aiohttp(error_response(exc.status, code, exc.reason or "Bad request"))

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        match = self.wire.match(request.method, raw_path)
        if match is None:
            err = UnknownOperationException(f"No operation matches {request.method} {request.rel_url.path}")
            return _to_aiohttp(self.wire.serialize_error(err))
        op = match.operation
        with self._calls_lock:
            self._calls[op] += 1
            if op == "GetImageSet" and "version" not in request.rel_url.query:
                self._latest_reads += 1
        decision = None
        try:
            body = await request.read()
            config = self.config
            if config.auth is not None:
                signed = SignedRequest(
                    method=request.method,
                    raw_path=raw_path,
                    raw_query=request.rel_url.raw_query_string,
                    headers=tuple(request.headers.items()),
                    body=body,
                )
                access_key = authenticate(config.auth, config.region, signed, time.time())
                check_allowed(config.auth, access_key, op)
            self.quotas.acquire(op, arrivals.waited(request) if config.kernel_arrivals else 0.0)
            decision = self.faults.decide(op)
            if decision.latency_s > 0:
                await asyncio.sleep(decision.latency_s)
            injected = decision.error()
            if injected is not None:
                raise injected
            if decision.kind == "reset":
                return _drop_connection(request)
            if decision.kind == "html503":
                return web.Response(status=503, body=HTML_503,
                                    headers={"Content-Type": "text/html"})
            query = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
            params = self.wire.parse_request(match, query, request.headers, body)
            result = self.model.call(op, params)
            if decision.kind == "lost_response":
                return _drop_connection(request)
            answer = self.wire.serialize_result(op, result)
        except ServiceError as exc:
            if decision is not None and decision.kind == "lost_response":
                self.faults.refusal_lost(op)
                return _drop_connection(request)  # a refusal can be lost on the way too
            answer = self.wire.serialize_error(exc)
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("emulator: unexpected error in %s", op)
            answer = self.wire.serialize_error(InternalServerException("Internal server error"))
        return _to_aiohttp(answer)

    # ------------------------------------------------------------------ control routes
    async def _ctl_health(self, request: web.Request) -> web.StreamResponse:
        return _json({"ok": True})

    async def _ctl_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json({"ok": True})

    async def _ctl_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.stats())

    async def _ctl_copies(self, request: web.Request) -> web.StreamResponse:
        return _json({"copies": self.model.copies()})

    async def _ctl_seed(self, request: web.Request) -> web.StreamResponse:
        from batchcopy.emulator.seed import SeedSpec, seed

        try:
            body = await _json_body(request)
            spec = SeedSpec(**body)
        except (TypeError, ValueError) as exc:
            return _ctl_error(ValidationException(f"Bad seed spec: {exc}"))
        try:
            return _json(seed(self.model, spec))
        except ServiceError as exc:
            return _ctl_error(exc)

    async def _ctl_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            faults = [FaultSpec(**f) for f in body.get("faults") or []]
            # validate kinds the way EmulatorConfig.from_dict does
            EmulatorConfig.from_dict({"faults": [dataclasses.asdict(f) for f in faults]})
            seed = body.get("fault_seed")
            self.set_faults(faults, None if seed is None else int(seed))
        except (TypeError, ValueError, AttributeError) as exc:
            return _ctl_error(ValidationException(f"Bad fault spec: {exc}"))
        return _json({"faults": [dataclasses.asdict(f) for f in self.config.faults],
                      "fault_seed": self.config.fault_seed})

    async def _ctl_config_get(self, request: web.Request) -> web.StreamResponse:
        return _json(public_config(self.config))

    async def _ctl_config_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            self.update_config(body)
        except (TypeError, ValueError, AttributeError) as exc:
            return _ctl_error(ValidationException(f"Bad config update: {exc}"))
        return _json(public_config(self.config))

    async def _ctl_assumptions(self, request: web.Request) -> web.StreamResponse:
        return _json({"assumptions": assumptions.describe(self.config.assume)})

    async def _ctl_clock_get(self, request: web.Request) -> web.StreamResponse:
        return _json(self.model.clock())

    async def _ctl_clock_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            unknown = sorted(set(body) - {"offset_s", "advance_s"})
            if unknown:
                raise ValueError(f"unknown keys {unknown}; expected offset_s and/or advance_s")
            return _json(self.set_clock(body.get("offset_s"), body.get("advance_s")))
        except (TypeError, ValueError) as exc:
            return _ctl_error(ValidationException(f"Bad clock setting: {exc}"))

    async def _ctl_snapshot(self, request: web.Request) -> web.StreamResponse:
        try:
            snap = self.model.snapshot_image_set(request.match_info["datastoreId"],
                                                 request.match_info["imageSetId"])
        except ServiceError as exc:
            return _ctl_error(exc)
        return _json(snap)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _json(document: Any, status: int = 200) -> web.Response:
    return _to_aiohttp(WireResponse(status, {"Content-Type": "application/json"},
                                    json.dumps(document).encode("utf-8")))


def _ctl_error(exc: ServiceError) -> web.Response:
    return _to_aiohttp(RestJsonWire.serialize_error(exc))


def _to_aiohttp(answer: WireResponse) -> web.Response:
    headers = dict(answer.headers)
    headers["x-amzn-RequestId"] = str(uuid.uuid4())
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the socket without a word: the client sees a connection error."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing can be written any more; aiohttp discards this response.
    return web.Response(status=500)


class EmulatorServer:
    """The emulator on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 *, model: "HealthImaging | None" = None, ssl_context: Any = None) -> None:
        """ssl_context: an ssl.SSLContext to serve HTTPS (tests of certificate checks)."""
        self.model: HealthImaging = model if model is not None else _new_model(config or EmulatorConfig())
        self.service = EmulatorService(self.model)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.endpoint = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> EmulatorConfig:
        return self.model.config

    def start(self) -> "EmulatorServer":
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="batchcopy-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("emulator did not start listening in time")
        if failure:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None
            raise failure[0]
        return self

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self.service.build_app(), access_log=None,
                                     shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        self._listener = await arrivals.serve(self._runner, self.host, self.port,
                                              ssl_context=self.ssl_context)
        self.port = int(self._listener.sockets[0].getsockname()[1])
        scheme = "https" if self.ssl_context is not None else "http"
        self.endpoint = f"{scheme}://{self.host}:{self.port}"

    async def _shutdown(self, runner: web.AppRunner) -> None:
        if self._listener is not None:
            self._listener.close()
        await runner.cleanup()

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(runner), loop)
            try:
                fut.result(STOP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                logger.exception("emulator: error while stopping")
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self) -> dict[str, str]:
        """What a botocore client needs to talk to this emulator (no credentials)."""
        return client_env(self.endpoint, self.config.region)

    def set_faults(self, faults: list[FaultSpec], fault_seed: int | None = None) -> None:
        self.service.set_faults(faults, fault_seed)

    def update_config(self, update: dict[str, Any]) -> None:
        self.service.update_config(update)

    def stats(self) -> dict[str, Any]:
        return self.service.stats()

    def reset(self) -> None:
        self.service.reset()

    def copies(self) -> list[dict[str, Any]]:
        """Every accepted copy's life (timeline.py), as GET /_emulator/copies lists them."""
        return self.model.copies()

    def set_clock(self, offset_s: float | None = None, advance_s: float | None = None) -> dict[str, float]:
        """Set the emulated clock's offset and/or advance it (seconds); {"offset_s", "now"}."""
        return self.service.set_clock(offset_s, advance_s)


def client_env(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": endpoint,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_DEFAULT_REGION": region,
    }


async def serve_forever(
    config: EmulatorConfig,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    model: "HealthImaging | None" = None,
    on_ready: Callable[[str, EmulatorService], None] | None = None,
) -> None:
    """Serve until cancelled (the CLI's `batchcopy emulator serve`)."""
    service = EmulatorService(model if model is not None else _new_model(config))
    runner = web.AppRunner(service.build_app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    listener = None
    try:
        listener = await arrivals.serve(runner, host, port)
        bound_port = int(listener.sockets[0].getsockname()[1])
        if on_ready is not None:
            on_ready(f"http://{host}:{bound_port}", service)
        await asyncio.Event().wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
