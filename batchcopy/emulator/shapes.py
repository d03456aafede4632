"""Request values read against botocore's shapes, for the emulator's wire: text (uri labels,
query strings, headers) and JSON values turned into Python values of their shape
(timestamps as floats, blobs as bytes), then the shape's constraints checked (required,
type, length, pattern, enum, range), each broken one a message shaped like AWS's
("Value 'abc' at 'datastoreId' failed to satisfy constraint: ..."); `validation_message`
joins them ("1 validation error detected: ...").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from botocore.model import Shape

# Values longer than this are cut in messages (sensitive members are never shown).
_MAX_SHOWN_VALUE = 200


class ShapeReader:
    """Reads and checks values of botocore shapes; caches the model's patterns compiled."""

    def __init__(self) -> None:
        self._patterns: dict[str, re.Pattern[str] | None] = {}

    def from_text(
        self, shape: "Shape", text: str, path: str, errors: list[str], header: bool = False
    ) -> Any:
        t = shape.type_name
        if t == "boolean":
            low = text.strip().lower()
            if low in ("true", "false"):
                return low == "true"
            errors.append(_constraint(shape, text, path, "Member must be a boolean (true or false)"))
            return None
        if t in ("integer", "long"):
            try:
                return int(text.strip())
            except ValueError:
                errors.append(_constraint(shape, text, path, "Member must be an integer"))
                return None
        if t in ("float", "double"):
            try:
                return float(text.strip())
            except ValueError:
                errors.append(_constraint(shape, text, path, "Member must be a number"))
                return None
        if t == "timestamp":
            return self.timestamp(shape, text, path, errors)
        if t == "blob":
            return text.encode("utf-8")
        if t == "string" and header and shape.serialization.get("jsonvalue"):
            try:
                return json.loads(base64.b64decode(text))
            except (ValueError, binascii.Error):
                errors.append(_constraint(shape, None, path, "Member must be base64-encoded JSON"))
                return None
        return text

    def timestamp(self, shape: "Shape", value: Any, path: str, errors: list[str]) -> float | None:
        if isinstance(value, bool):
            errors.append(_constraint(shape, value, path, "Member must be a timestamp"))
            return None
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
            from botocore.utils import parse_timestamp

            try:
                parsed = parse_timestamp(value)
            except (ValueError, TypeError):
                errors.append(_constraint(shape, value, path, "Member must be a timestamp"))
                return None
            result: float | None = parsed.timestamp()
            return result
        errors.append(_constraint(shape, None, path, "Member must be a timestamp"))
        return None

    def from_json(self, shape: "Shape", value: Any, path: str, errors: list[str]) -> Any:
        """JSON value -> Python value of `shape` (timestamps float, blobs bytes)."""
        if value is None:
            return None
        t = shape.type_name
        if t == "structure":
            if not isinstance(value, dict):
                errors.append(_constraint(shape, None, path, "Member must be a structure"))
                return None
            out: dict[str, Any] = {}
            for name, member in shape.members.items():
                wire_name = member.serialization.get("name", name)
                if wire_name in value and value[wire_name] is not None:
                    converted = self.from_json(member, value[wire_name], _join(path, name), errors)
                    if converted is not None:
                        out[name] = converted
            return out
        if t == "list":
            if not isinstance(value, list):
                errors.append(_constraint(shape, None, path, "Member must be a list"))
                return None
            return [self.from_json(shape.member, item, f"{path}.{i + 1}.member", errors)
                    for i, item in enumerate(value)]
        if t == "map":
            if not isinstance(value, dict):
                errors.append(_constraint(shape, None, path, "Member must be a map"))
                return None
            return {k: self.from_json(shape.value, v, f"{path}.{k}", errors) for k, v in value.items()}
        if t == "string":
            if not isinstance(value, str):
                errors.append(_constraint(shape, value, path, "Member must be a string"))
                return None
            return value
        if t == "boolean":
            if not isinstance(value, bool):
                errors.append(_constraint(shape, value, path, "Member must be a boolean"))
                return None
            return value
        if t in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(_constraint(shape, value, path, "Member must be an integer"))
                return None
            return value
        if t in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(_constraint(shape, value, path, "Member must be a number"))
                return None
            return float(value)
        if t == "timestamp":
            return self.timestamp(shape, value, path, errors)
        if t == "blob":
            if not isinstance(value, str):
                errors.append(_constraint(shape, None, path, "Member must be a base64 string"))
                return None
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                errors.append(_constraint(shape, None, path, "Member must be a base64 string"))
                return None
        return value  # document and anything newer: as is

    def pattern(self, pattern: str) -> re.Pattern[str] | None:
        if pattern not in self._patterns:
            self._patterns[pattern] = _translate_pattern(pattern)
        return self._patterns[pattern]

    def validate(self, shape: "Shape", value: Any, path: str, errors: list[str]) -> None:
        t = shape.type_name
        meta = shape.metadata
        if t == "structure":
            for name in shape.required_members:
                if value.get(name) is None:
                    errors.append(f"Value null at '{_join(path, name)}' failed to satisfy constraint: "
                                  "Member must not be null")
            if meta.get("union"):
                present = [n for n in shape.members if value.get(n) is not None]
                if len(present) != 1:
                    errors.append(_constraint(shape, None, path or shape.name,
                                              "Union member must have exactly one member set"))
            for name, member in shape.members.items():
                if value.get(name) is not None:
                    self.validate(member, value[name], _join(path, name), errors)
            return
        if t == "list":
            self.check_length(shape, value, len(value), path, errors)
            for i, item in enumerate(value):
                if item is not None:
                    self.validate(shape.member, item, f"{path}.{i + 1}.member", errors)
            return
        if t == "map":
            self.check_length(shape, value, len(value), path, errors)
            for k, v in value.items():
                self.validate(shape.key, k, f"{path}.{k}.member.key", errors)
                if v is not None:
                    self.validate(shape.value, v, f"{path}.{k}.member.value", errors)
            return
        if t == "string":
            self.check_length(shape, value, len(value), path, errors)
            enum = shape.enum if hasattr(shape, "enum") else meta.get("enum")
            if enum and value not in enum:
                errors.append(_constraint(shape, value, path,
                                          f"Member must satisfy enum value set: [{', '.join(enum)}]"))
            pattern = meta.get("pattern")
            if pattern:
                compiled = self.pattern(pattern)
                if compiled is not None and compiled.fullmatch(value) is None:
                    errors.append(_constraint(shape, value, path,
                                              f"Member must satisfy regular expression pattern: {pattern}"))
            return
        if t == "blob":
            self.check_length(shape, value, len(value), path, errors)
            return
        if t in ("integer", "long", "float", "double"):
            if "min" in meta and value < meta["min"]:
                errors.append(_constraint(shape, value, path,
                                          f"Member must have value greater than or equal to {meta['min']}"))
            if "max" in meta and value > meta["max"]:
                errors.append(_constraint(shape, value, path,
                                          f"Member must have value less than or equal to {meta['max']}"))

    @staticmethod
    def check_length(shape: "Shape", value: Any, length: int, path: str, errors: list[str]) -> None:
        meta = shape.metadata
        if "min" in meta and length < meta["min"]:
            errors.append(_constraint(shape, value, path,
                                      f"Member must have length greater than or equal to {meta['min']}"))
        if "max" in meta and length > meta["max"]:
            errors.append(_constraint(shape, value, path,
                                      f"Member must have length less than or equal to {meta['max']}"))


def _translate_pattern(pattern: str) -> re.Pattern[str] | None:
    """Smithy/Java regex -> Python; None when Python cannot express it."""
    translated = pattern.replace(r"\p{ASCII}", r"[\x00-\x7F]")
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _constraint(shape: "Shape", value: Any, path: str, rule: str) -> str:
    return f"{_shown(shape, value)}at '{path}' failed to satisfy constraint: {rule}"


def _shown(shape: "Shape", value: Any) -> str:
    """'Value 'x' ' -- or just 'Value ' for sensitive members and non-scalars."""
    if value is None or shape.metadata.get("sensitive") or isinstance(value, (dict, list, bytes)):
        return "Value "
    if isinstance(value, str):
        text = value if len(value) <= _MAX_SHOWN_VALUE else value[:_MAX_SHOWN_VALUE] + "..."
        return f"Value '{text}' "
    if isinstance(value, bool):
        return f"Value '{str(value).lower()}' "
    return f"Value '{value}' "


def validation_message(errors: list[str]) -> str:
    n = len(errors)
    return f"{n} validation error{'s' if n != 1 else ''} detected: " + "; ".join(errors)
