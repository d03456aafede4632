"""restJson1 for the emulator, built from botocore's own service model.

Nothing here is retyped from the API reference: routes come from each operation's
`http.method` + `http.requestUri`, request members are read from where the input
shape says they live (uri label, querystring, header, JSON body or payload) and
validated against the shape's constraints (required, type, length, pattern, enum,
range) with messages shaped like AWS's ("1 validation error detected: Value
'abc' at 'datastoreId' failed to satisfy constraint: ..."). Output is written
per the output shape: header members as headers, a blob payload as the raw body
(GetImageSetMetadata's gzip document, GetImageFrame's bytes), everything else as
a JSON body with timestamps as epoch seconds and None omitted.

Reading values against their shapes (types, constraints, AWS's messages) is shapes.py's.
This module knows nothing of aiohttp: it works on method, raw (still
percent-encoded) path, decoded query pairs, a header mapping and body bytes,
and returns `WireResponse` values. server.py does the HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from batchcopy.emulator.errors import ServiceError, ValidationException
from batchcopy.emulator.shapes import ShapeReader, validation_message

if TYPE_CHECKING:  # pragma: no cover
    from botocore.model import OperationModel, ServiceModel, Shape

SERVICE_NAME = "medical-imaging"
_LABEL = re.compile(r"\{([A-Za-z0-9_]+)(\+?)\}")


class SerializationException(ServiceError):
    """The request body is not JSON, or not the JSON the shape describes."""

    code, status = "SerializationException", 400


class UnknownOperationException(ServiceError):
    """No operation of the service model has this method + path."""

    code, status = "UnknownOperationException", 404


def load_service_model() -> "ServiceModel":
    """The medical-imaging service model shipped with the installed botocore."""
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@dataclass(frozen=True)
class Route:
    operation: str
    method: str
    template: str
    labels: tuple[str, ...]
    pattern: re.Pattern[str]
    greedy_pattern: re.Pattern[str] | None  # fallback: slash-bearing labels unencoded


@dataclass(frozen=True)
class RouteMatch:
    operation: str
    uri_params: dict[str, str]  # label -> percent-decoded value


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _compile_route(op: "OperationModel") -> Route:
    template = op.http["requestUri"].split("?", 1)[0]
    input_shape = op.input_shape
    labels: list[str] = []
    strict: list[str] = []
    greedy: list[str] = []
    has_greedy_fallback = False
    pos = 0
    for m in _LABEL.finditer(template):
        literal = re.escape(template[pos:m.start()])
        strict.append(literal)
        greedy.append(literal)
        name, plus = m.group(1), m.group(2)
        labels.append(name)
        if plus:
            strict.append("(.+)")
            greedy.append("(.+)")
        else:
            strict.append("([^/]+)")
            member_pattern = _label_member_pattern(input_shape, name)
            # ARNs (tag routes) contain '/': botocore percent-encodes them, but a
            # hand-written client may not. Allow a greedy match as a fallback.
            if "/" in member_pattern:
                greedy.append("(.+)")
                has_greedy_fallback = True
            else:
                greedy.append("([^/]+)")
        pos = m.end()
    tail = re.escape(template[pos:])
    strict.append(tail)
    greedy.append(tail)
    return Route(
        operation=op.name,
        method=op.http["method"].upper(),
        template=template,
        labels=tuple(labels),
        pattern=re.compile("".join(strict)),
        greedy_pattern=re.compile("".join(greedy)) if has_greedy_fallback else None,
    )


def _label_member_pattern(input_shape: "Shape | None", label: str) -> str:
    if input_shape is None:
        return ""
    for member in input_shape.members.values():
        ser = member.serialization
        if ser.get("location") == "uri" and ser.get("name") == label:
            return str(member.metadata.get("pattern", ""))
    return ""


class RestJsonWire:
    """Route table, request parser/validator and response writer of one service model."""

    def __init__(self, service_model: "ServiceModel | None" = None) -> None:
        self.service_model = service_model or load_service_model()
        self.routes: tuple[Route, ...] = tuple(
            _compile_route(self.service_model.operation_model(name))
            for name in self.service_model.operation_names
        )
        self.shapes = ShapeReader()

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self.service_model.operation_names)

    def operation_model(self, operation: str) -> "OperationModel":
        return self.service_model.operation_model(operation)

    # ------------------------------------------------------------------ routing
    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The operation for a method and a raw (percent-encoded) path, or None."""
        method = method.upper()
        for use_greedy in (False, True):
            for route in self.routes:
                if route.method != method:
                    continue
                pattern = route.greedy_pattern if use_greedy else route.pattern
                if pattern is None:
                    continue
                m = pattern.fullmatch(raw_path)
                if m:
                    values = {name: unquote(value) for name, value in zip(route.labels, m.groups())}
                    return RouteMatch(route.operation, values)
        return None

    # ------------------------------------------------------------------ requests
    def parse_request(
        self,
        match: RouteMatch,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """The operation's input members as Python values, validated.

        `query` is the decoded query pairs (repeats allowed), `headers` a
        case-insensitive mapping. Raises ValidationException / SerializationException.
        """
        op = self.operation_model(match.operation)
        shape = op.input_shape
        if shape is None:
            return {}
        errors: list[str] = []
        query_pairs = list(query)
        params: dict[str, Any] = {}
        claimed_query: set[str] = set()
        payload_name = shape.serialization.get("payload")
        body_members: dict[str, Shape] = {}
        for name, member in shape.members.items():
            ser = member.serialization
            location = ser.get("location")
            wire_name = ser.get("name", name)
            if location == "uri":
                if wire_name in match.uri_params:
                    params[name] = self.shapes.from_text(member, match.uri_params[wire_name], name, errors)
            elif location == "querystring":
                if member.type_name == "map":
                    continue  # filled below from the unclaimed keys
                claimed_query.add(wire_name)
                values = [v for k, v in query_pairs if k == wire_name]
                if not values:
                    continue
                if member.type_name == "list":
                    params[name] = [
                        self.shapes.from_text(member.member, v, f"{name}.member", errors) for v in values
                    ]
                else:
                    params[name] = self.shapes.from_text(member, values[0], name, errors)
            elif location == "header":
                value = headers.get(wire_name)
                if value is not None:
                    params[name] = self.shapes.from_text(member, value, name, errors, header=True)
            elif location == "headers":
                prefix = wire_name.lower()
                found = {k[len(prefix):]: v for k, v in headers.items() if k.lower().startswith(prefix)}
                if found:
                    params[name] = found
            elif location is None and name != payload_name:
                body_members[name] = member
        for name, member in shape.members.items():
            if member.serialization.get("location") == "querystring" and member.type_name == "map":
                rest = {k: v for k, v in query_pairs if k not in claimed_query}
                if rest:
                    params[name] = rest
        if payload_name:
            member = shape.members[payload_name]
            if member.type_name in ("blob", "string"):
                if body:
                    params[payload_name] = body if member.type_name == "blob" else body.decode("utf-8")
            elif body.strip():
                document = self._load_json(body)
                value = self.shapes.from_json(member, document, payload_name, errors)
                if value is not None:
                    params[payload_name] = value
        elif body_members and body.strip():
            document = self._load_json(body)
            if not isinstance(document, dict):
                raise SerializationException("Request body must be a JSON object")
            for name, member in body_members.items():
                wire_name = member.serialization.get("name", name)
                if wire_name in document and document[wire_name] is not None:
                    value = self.shapes.from_json(member, document[wire_name], name, errors)
                    if value is not None:
                        params[name] = value
        if not errors:
            self.shapes.validate(shape, params, "", errors)
        if errors:
            raise ValidationException(validation_message(errors))
        return params

    @staticmethod
    def _load_json(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationException(f"Malformed JSON request body: {exc.__class__.__name__}") from None

    # ------------------------------------------------------------------ responses
    def serialize_result(self, operation: str, result: Mapping[str, Any] | None) -> WireResponse:
        """The model's output dict as an HTTP answer, per the operation's output shape."""
        op = self.operation_model(operation)
        status = int(op.http.get("responseCode", 200))
        shape = op.output_shape
        result = result or {}
        headers: dict[str, str] = {}
        if shape is None:
            return WireResponse(status, {"Content-Type": "application/json"}, b"{}")
        payload_name = shape.serialization.get("payload")
        body_values: dict[str, Any] = {}
        for name, member in shape.members.items():
            value = result.get(name)
            if value is None:
                continue
            ser = member.serialization
            location = ser.get("location")
            wire_name = ser.get("name", name)
            if location == "header":
                headers[wire_name] = _header_text(member, value)
            elif location == "headers":
                for k, v in value.items():
                    headers[f"{wire_name}{k}"] = str(v)
            elif location == "statusCode":
                status = int(value)
            elif location is None and name != payload_name:
                body_values[wire_name] = _to_json(member, value)
        if payload_name:
            member = shape.members[payload_name]
            value = result.get(payload_name)
            if member.type_name in ("blob", "string"):
                if isinstance(value, str):
                    value = value.encode("utf-8")
                headers.setdefault("Content-Type", "application/octet-stream")
                return WireResponse(status, headers, bytes(value or b""))
            document = _to_json(member, value) if value is not None else {}
            headers.setdefault("Content-Type", "application/json")
            return WireResponse(status, headers, _dumps(document))
        headers.setdefault("Content-Type", "application/json")
        return WireResponse(status, headers, _dumps(body_values))

    @staticmethod
    def serialize_error(error: ServiceError) -> WireResponse:
        """status + `x-amzn-ErrorType: Code` + `{"message": ...}`."""
        return error_response(error.status, error.code, error.message)


def error_response(status: int, code: str, message: str) -> WireResponse:
    return WireResponse(
        status,
        {"Content-Type": "application/json", "x-amzn-ErrorType": code},
        _dumps({"message": message}),
    )


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return float(round(value.timestamp(), 3))
    return round(float(value), 3)


def _header_text(shape: "Shape", value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        from email.utils import formatdate

        return formatdate(_epoch(value), usegmt=True)
    if shape.type_name == "string" and shape.serialization.get("jsonvalue"):
        return base64.b64encode(_dumps(value)).decode("ascii")
    return str(value)


def _to_json(shape: "Shape", value: Any) -> Any:
    t = shape.type_name
    if t == "structure":
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            v = value.get(name)
            if v is not None:
                out[member.serialization.get("name", name)] = _to_json(member, v)
        return out
    if t == "list":
        return [_to_json(shape.member, v) for v in value]
    if t == "map":
        return {k: _to_json(shape.value, v) for k, v in value.items() if v is not None}
    if t == "timestamp":
        return _epoch(value)
    if t == "blob":
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode("ascii")
    if t in ("integer", "long"):
        return int(value)
    if t in ("float", "double"):
        return float(value)
    return value
