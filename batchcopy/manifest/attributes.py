"""copiableAttributes, the subset of a source a copy takes: parsed and checked
(`parse_copiable_attributes`), written in its canonical form (`canonical_attributes`) and
read back as a series -> instances map (`series_map`).

As this project reads it (no JSON schema is published):
``{"SchemaVersion": "1.1", "Study": {"Series": {"<SeriesUID>": {"Instances":
{"<SOPUID>": {}}}}}}``. SchemaVersion is optional on input ("1.1" if given); at least
one series; a series with no or empty "Instances" means the whole series. UIDs are
digits and dots, at most 64 characters. The canonical form, which every CopySpec
carries and every merge produces, is compact JSON with sorted keys, always with
``"SchemaVersion":"1.1"``, and a whole series written as ``{"Instances":{}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from batchcopy.core.limits import COPIABLE_ATTRIBUTES_CHARS
from batchcopy.manifest.cells import RuleError, check_uid, show

# The valid copiableAttributes shape nests 6 objects deep (top, Study, Series, a series,
# Instances, an instance); anything much deeper is refused before json.loads, whose
# recursion a deep enough document would exhaust.
MAX_JSON_DEPTH = 16
SCHEMA_VERSION = "1.1"

SeriesMap = dict[str, "set[str] | None"]  # series UID -> instance UIDs, None = whole series


def canonical_attributes(series: Mapping[str, Iterable[str] | None]) -> str:
    """The canonical copiableAttributes string for a series -> instances map."""
    body: dict[str, dict[str, dict[str, Any]]] = {uid: {"Instances": {sop: {} for sop in (insts or ())}} for uid, insts in series.items()}
    doc = {"SchemaVersion": SCHEMA_VERSION, "Study": {"Series": body}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def series_map(attrs: str) -> SeriesMap:
    """Parse a canonical (or any valid) copiableAttributes string into a SeriesMap."""
    doc = json.loads(attrs)
    out: SeriesMap = {}
    for uid, body in doc["Study"]["Series"].items():
        insts = (body or {}).get("Instances") or {}
        out[uid] = set(insts) if insts else None
    return out


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RuleError(f"duplicate key {show(key)} in the JSON")
        out[key] = value
    return out


def _only_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise RuleError(f"{where}: unexpected key {show(extra[0])} (expected {', '.join(allowed)})")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets outside JSON strings nest deeper than `limit` (cheap: no parsing)."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKEN_RE.finditer(text):
        ch = token.group()
        if ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth -= 1
    return False


_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def parse_copiable_attributes(text: str) -> str:
    """Validate a copiableAttributes JSON string; return its canonical form."""
    if json_depth_exceeds(text):
        raise RuleError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels (a valid copiableAttributes "
                        f"is 6 deep): {show(text)}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise RuleError(f"not valid JSON ({exc.msg} at character {exc.pos}): {show(text)}") from None
    if not isinstance(doc, dict):
        raise RuleError(f'must be a JSON object like {{"Study": {{"Series": {{...}}}}}}: {show(text)}')
    _only_keys(doc, ("SchemaVersion", "Study"), "top level")
    if "SchemaVersion" in doc and doc["SchemaVersion"] != SCHEMA_VERSION:
        raise RuleError(f"SchemaVersion must be {SCHEMA_VERSION!r}, got {show(doc['SchemaVersion'])}")
    study = doc.get("Study")
    if not isinstance(study, dict) or not isinstance(study.get("Series"), dict):
        raise RuleError('needs "Study": {"Series": {...}} naming the series to copy')
    _only_keys(study, ("Series",), "Study")
    series_in: dict[str, Any] = study["Series"]
    if not series_in:
        raise RuleError("Study.Series is empty: name at least one series")
    series: SeriesMap = {}
    owner: dict[str, str] = {}
    for uid, body in series_in.items():
        check_uid(uid, "series")
        where = f"Study.Series[{uid!r}]"
        if not isinstance(body, dict):
            raise RuleError(f"{where} must be an object, got {show(body)}")
        _only_keys(body, ("Instances",), where)
        insts = body.get("Instances", {})
        if not isinstance(insts, dict):
            raise RuleError(f"{where}.Instances must be an object, got {show(insts)}")
        for sop, value in insts.items():
            check_uid(sop, "SOP instance")
            if value != {}:
                raise RuleError(f"{where}.Instances[{sop!r}] must be {{}}, got {show(value)}")
            if sop in owner:
                raise RuleError(f"instance {sop!r} is listed under two series ({owner[sop]!r} and {uid!r})")
            owner[sop] = uid
        series[uid] = set(insts) if insts else None
    canonical = canonical_attributes(series)
    if len(canonical) > COPIABLE_ATTRIBUTES_CHARS:
        raise RuleError(
            f"too long: {len(canonical):,} characters (the service accepts at most {COPIABLE_ATTRIBUTES_CHARS:,})"
        )
    return canonical
