"""The emulator's control routes under /_emulator/, for tests and demos, and the live
config's partial update behind them.

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

import dataclasses
import json
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from batchcopy.emulator import assumptions
from batchcopy.emulator.config import EmulatorConfig, FaultSpec
from batchcopy.emulator.errors import ServiceError, ValidationException
from batchcopy.emulator.wire import RestJsonWire, WireResponse

if TYPE_CHECKING:  # pragma: no cover
    from batchcopy.emulator.model import HealthImaging


class Controlled(Protocol):
    """What the control routes drive: server.EmulatorService."""

    model: HealthImaging

    @property
    def config(self) -> EmulatorConfig: ...

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def set_faults(self, faults: list[FaultSpec], fault_seed: int | None = None) -> None: ...

    def update_config(self, update: dict[str, Any]) -> None: ...

    def set_clock(self, offset_s: float | None = None,
                  advance_s: float | None = None) -> dict[str, float]: ...


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


class ControlRoutes:
    """The /_emulator/ handlers of one service."""

    def __init__(self, service: Controlled) -> None:
        self.service = service

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_emulator/reset", self._reset)
        router.add_post("/_emulator/seed", self._seed)
        router.add_get("/_emulator/stats", self._stats)
        router.add_post("/_emulator/faults", self._faults)
        router.add_get("/_emulator/config", self._config_get)
        router.add_post("/_emulator/config", self._config_post)
        router.add_get("/_emulator/imagesets/{datastoreId}/{imageSetId}", self._snapshot)
        router.add_get("/_emulator/health", self._health)
        router.add_get("/_emulator/copies", self._copies)
        router.add_get("/_emulator/assumptions", self._assumptions)
        router.add_get("/_emulator/clock", self._clock_get)
        router.add_post("/_emulator/clock", self._clock_post)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return _json({"ok": True})

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self.service.reset()
        return _json({"ok": True})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.service.stats())

    async def _copies(self, request: web.Request) -> web.StreamResponse:
        return _json({"copies": self.service.model.copies()})

    async def _seed(self, request: web.Request) -> web.StreamResponse:
        from batchcopy.emulator.seed import SeedSpec, seed

        try:
            body = await _json_body(request)
            spec = SeedSpec(**body)
        except (TypeError, ValueError) as exc:
            return _error(ValidationException(f"Bad seed spec: {exc}"))
        try:
            return _json(seed(self.service.model, spec))
        except ServiceError as exc:
            return _error(exc)

    async def _faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            faults = [FaultSpec(**f) for f in body.get("faults") or []]
            # validate kinds the way EmulatorConfig.from_dict does
            EmulatorConfig.from_dict({"faults": [dataclasses.asdict(f) for f in faults]})
            seed = body.get("fault_seed")
            self.service.set_faults(faults, None if seed is None else int(seed))
        except (TypeError, ValueError, AttributeError) as exc:
            return _error(ValidationException(f"Bad fault spec: {exc}"))
        return _json({"faults": [dataclasses.asdict(f) for f in self.service.config.faults],
                      "fault_seed": self.service.config.fault_seed})

    async def _config_get(self, request: web.Request) -> web.StreamResponse:
        return _json(public_config(self.service.config))

    async def _config_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            self.service.update_config(body)
        except (TypeError, ValueError, AttributeError) as exc:
            return _error(ValidationException(f"Bad config update: {exc}"))
        return _json(public_config(self.service.config))

    async def _assumptions(self, request: web.Request) -> web.StreamResponse:
        return _json({"assumptions": assumptions.describe(self.service.config.assume)})

    async def _clock_get(self, request: web.Request) -> web.StreamResponse:
        return _json(self.service.model.clock())

    async def _clock_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            unknown = sorted(set(body) - {"offset_s", "advance_s"})
            if unknown:
                raise ValueError(f"unknown keys {unknown}; expected offset_s and/or advance_s")
            return _json(self.service.set_clock(body.get("offset_s"), body.get("advance_s")))
        except (TypeError, ValueError) as exc:
            return _error(ValidationException(f"Bad clock setting: {exc}"))

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        try:
            snap = self.service.model.snapshot_image_set(request.match_info["datastoreId"],
                                                 request.match_info["imageSetId"])
        except ServiceError as exc:
            return _error(exc)
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
    return to_aiohttp(WireResponse(status, {"Content-Type": "application/json"},
                                    json.dumps(document).encode("utf-8")))


def _error(exc: ServiceError) -> web.Response:
    return to_aiohttp(RestJsonWire.serialize_error(exc))


def to_aiohttp(answer: WireResponse) -> web.Response:
    headers = dict(answer.headers)
    headers["x-amzn-RequestId"] = str(uuid.uuid4())
    return web.Response(status=answer.status, body=answer.body, headers=headers)
