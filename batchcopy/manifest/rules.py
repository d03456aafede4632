"""Manifest rules: one row's cells -> a CopySpec, and the checks that span rows.

Nothing here knows about files: `convert_row` takes the cells of one row (already
read by manifest/scan.py) and returns a CopySpec or the row's problems as
`(column, message)` pairs; `CrossRowChecker` sees every valid row once and reports
`CrossRowProblem`s. manifest/scan.py turns both into ManifestErrors with path and line.

Memory in the cross-row pass is per pinned or written image set (small dicts and a
set keyed by a 64-bit hash) plus packed arrays of 8-byte hashes (each row's id and
content, each image set a row touches) and row and line numbers, sorted or counted
once at the end; no per-row Python objects survive a batch. The price: a
64-bit hash collision (odds about 1 in 10^7 for a million rows) could report a
false duplicate.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batchcopy.core.specs import CopySpec
from batchcopy.manifest.attributes import canonical_attributes, parse_copiable_attributes
from batchcopy.manifest.cells import (BOOL_COLUMNS, COLUMN_ORDER, ID_RE, MAX_ROW_ID_CHARS,
                                      TEXT_COLUMNS, Problem, RuleError, bool_cell, check_id,
                                      check_uid, check_version, show, text_cell)


# ---------------------------------------------------------------- one row


@dataclass(frozen=True)
class RowContext:
    """What every row of one manifest shares."""

    default_datastore_id: str | None = None


def convert_row(
    cells: Mapping[str, Any], row: int, ctx: RowContext, *,
    bad: Iterable[Problem] = (), extras: str | None = None,
) -> CopySpec | list[Problem]:
    """One manifest row -> CopySpec (carrying `extras`), or every problem found in it.

    `bad`: problems the reader found in the raw cells (control characters); the other
    rules of those columns are skipped, as for a mistyped cell.
    """
    problems: list[Problem] = []
    mistyped: list[Problem] = list(bad)  # a bad cell's other rules would only repeat it
    said = {col for col, _ in mistyped}
    text: dict[str, str] = {}
    for col in TEXT_COLUMNS:
        value = cells.get(col)
        if type(value) is str:  # every CSV cell: the hot path of a million-row manifest
            text[col] = value.strip()
            continue
        if value is None:  # a column the manifest does not have
            text[col] = ""
            continue
        try:
            text[col] = text_cell(col, value)
        except RuleError as exc:
            if col not in said:
                mistyped.append((col, str(exc)))
            text[col] = ""
    flags: dict[str, bool] = {}
    for col in BOOL_COLUMNS:
        value = cells.get(col)
        if value is None or value == "":  # absent or empty: the common case, no call
            flags[col] = False
            continue
        try:
            flags[col] = bool_cell(value)
        except RuleError as exc:
            if col not in said:
                mistyped.append((col, str(exc)))

    def rule(col: str, check: Callable[..., Any], *args: Any) -> None:
        try:
            check(*args)
        except RuleError as exc:
            problems.append((col, str(exc)))

    row_id = text["row_id"] or str(row)
    if len(row_id) > MAX_ROW_ID_CHARS:
        problems.append(("row_id", f"longer than {MAX_ROW_ID_CHARS} characters: {show(row_id)}"))
    ds = text["datastore_id"] or (ctx.default_datastore_id or "")
    if not ds:
        problems.append(("datastore_id", "missing data store id (fill the column or pass --datastore-id)"))
    elif not ID_RE.fullmatch(ds):
        rule("datastore_id", check_id, ds, "a data store")
    src = text["source_image_set_id"]
    if not src:
        problems.append(("source_image_set_id", "missing source image set id"))
    elif not ID_RE.fullmatch(src):
        rule("source_image_set_id", check_id, src, "an image set")
    dst = text["destination_image_set_id"]
    if dst:
        if not ID_RE.fullmatch(dst):
            rule("destination_image_set_id", check_id, dst, "an image set")
        if dst == src:
            problems.append(("destination_image_set_id", f"destination is the source image set: {show(dst)}"))
    for col in ("source_version_id", "destination_version_id"):
        if text[col]:
            rule(col, check_version, text[col])
    if text["destination_version_id"] and not dst:
        problems.append(
            ("destination_version_id", "a destination version without destination_image_set_id")
        )
    attrs = _row_subset(text, problems)
    if mistyped:
        bad_columns = {col for col, _ in mistyped}
        problems = mistyped + [p for p in problems if p[0] not in bad_columns]
    if problems:
        return _ordered(problems)
    return CopySpec(
        manifest_row=row,
        row_id=row_id,
        datastore_id=ds,
        source_image_set_id=src,
        source_version_id=text["source_version_id"] or None,
        destination_image_set_id=dst or None,
        destination_version_id=text["destination_version_id"] or None,
        copiable_attributes=attrs,
        force=flags["force"],
        promote_to_primary=flags["promote_to_primary"],
        extras=extras,
    )


def _ordered(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: COLUMN_ORDER.get(p[0] or "", -1))


def _row_subset(text: Mapping[str, str], problems: list[Problem]) -> str | None:
    raw, series, sop = text["copiable_attributes"], text["series_instance_uid"], text["sop_instance_uid"]
    if raw and series:
        problems.append(
            ("series_instance_uid", "give copiable_attributes or series_instance_uid, not both")
        )
        return None
    if sop and not series:
        problems.append(("sop_instance_uid", "sop_instance_uid needs series_instance_uid"))
        return None
    try:
        if raw:
            return parse_copiable_attributes(raw)
    except RuleError as exc:
        problems.append(("copiable_attributes", str(exc)))
        return None
    if not series:
        return None
    several = series.split()  # whole series, separated by spaces: copied together in one call
    if len(several) > 1 and sop:
        problems.append(("sop_instance_uid", "sop_instance_uid needs a single "
                         "series_instance_uid (this row lists several series)"))
        return None
    ok = True
    cells = [("series_instance_uid", uid, "series") for uid in several]
    for col, value, what in [*cells, ("sop_instance_uid", sop, "SOP instance")]:
        if value:
            try:
                check_uid(value, what)
            except RuleError as exc:
                problems.append((col, str(exc)))
                ok = False
    if not ok:
        return None
    if len(several) > 1:
        return canonical_attributes({uid: None for uid in several})
    return canonical_attributes({series: [sop] if sop else None})


# ---------------------------------------------------------------- across rows


@dataclass(frozen=True)
class CrossRowProblem:
    row: int
    line: int | None
    column: str | None
    message: str


class CrossRowChecker:
    """Rules that need the whole manifest: duplicate row ids, repeated rows,
    contradictory source version pins. Feed every valid row, then `finish()`."""

    def __init__(self) -> None:
        self.datastores: set[str] = set()
        self.subset_rows = 0
        self._image_set_hash = array("q")  # counted once at the end: a set of a million ints is ~70 MB
        self._destinations: set[int] = set()
        self._pins: dict[int, tuple[str, int, int | None]] = {}  # image set -> first (pin, row, line)
        self._pin_clash: dict[int, list[tuple[str, str, int, int | None]]] = {}  # (id, pin, row, line)
        self._id_hash = array("q")
        self._key_hash = array("q")
        self._rows = array("q")
        self._lines = array("q")

    def add(self, spec: CopySpec, line: int | None) -> None:
        ds = spec.datastore_id
        self.datastores.add(ds)
        src = hash((ds, spec.source_image_set_id))
        self._image_set_hash.append(src)
        if spec.destination_image_set_id:
            dst = hash((ds, spec.destination_image_set_id))
            self._image_set_hash.append(dst)
            self._destinations.add(dst)
        if spec.is_subset:
            self.subset_rows += 1
        if spec.source_version_id is not None:
            first = self._pins.get(src)
            if first is None:
                self._pins[src] = (spec.source_version_id, spec.manifest_row, line)
            elif first[0] != spec.source_version_id:
                clash = (spec.source_image_set_id, spec.source_version_id, spec.manifest_row, line)
                self._pin_clash.setdefault(src, []).append(clash)
        self._id_hash.append(hash(spec.row_id))
        self._key_hash.append(
            hash(
                (ds, spec.source_image_set_id, spec.destination_image_set_id, spec.copiable_attributes,
                 spec.force, spec.promote_to_primary)
            )
        )
        self._rows.append(spec.manifest_row)
        self._lines.append(line if line is not None else -1)

    @property
    def image_sets(self) -> int:
        """How many distinct image sets (per data store) the rows touch."""
        if not self._image_set_hash:
            return 0
        import numpy as np

        return int(np.unique(np.frombuffer(self._image_set_hash, dtype=np.int64)).size)

    def finish(self) -> list[CrossRowProblem]:
        out: list[CrossRowProblem] = []
        for first, later in _repeats(self._id_hash):
            out.append(self._problem(later, "row_id", f"duplicate row_id: row {self._rows[later]} "
                                     f"has the same row_id as row {self._rows[first]}"))
        for first, later in _repeats(self._key_hash):
            out.append(self._problem(later, None, f"row {self._rows[later]} repeats row {self._rows[first]} "
                                     "(same source, destination, subset and flags): a second copy would "
                                     "duplicate the work"))
        for key, clashes in self._pin_clash.items():
            if key in self._destinations:
                continue  # the image set changes during the run: later pins are superseded
            pin, row, _ = self._pins[key]
            for image_set, other, crow, cline in clashes:
                out.append(CrossRowProblem(
                    crow, cline, "source_version_id",
                    f"row {crow} pins image set {image_set} at version {other!r} but row {row} pins it at "
                    f"{pin!r}, and no row of the manifest writes to it: one of them must fail"))
        out.sort(key=lambda p: p.row)
        return out

    def _problem(self, index: int, column: str | None, message: str) -> CrossRowProblem:
        line = self._lines[index]
        return CrossRowProblem(self._rows[index], None if line < 0 else line, column, message)


def _repeats(hashes: array[int]) -> list[tuple[int, int]]:
    """(index of first occurrence, index of a later occurrence) for every repeated value."""
    if len(hashes) < 2:
        return []
    import numpy as np

    values = np.frombuffer(hashes, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1  # positions equal to their predecessor
    out: list[tuple[int, int]] = []
    first = -1
    prev_pos = -2
    for pos in same.tolist():
        if pos != prev_pos + 1:
            first = int(order[pos - 1])
        out.append((first, int(order[pos])))
        prev_pos = pos
    return out
