"""A manifest's header and the columns it names: the known columns, the required ones, and
columns of your own (refused, or with --extra-columns ignore carried per row; a name too
close to a known one is taken for a typo); problems that stop the read (a column named
twice, a required one missing, a CSV header read with the wrong delimiter) apart from the
others; and cells in columns the header leaves unnamed.
"""

from __future__ import annotations

import difflib
from typing import Any

from batchcopy.manifest.cells import BOOL_COLUMNS, ID_RE, TEXT_COLUMNS, show

COLUMNS = TEXT_COLUMNS + BOOL_COLUMNS  # every column a manifest may have
REQUIRED_COLUMNS = ("source_image_set_id",)  # plus datastore_id without a default
EXTRA_COLUMNS_MODES = ("error", "ignore")
_TYPO_CUTOFF = 0.85  # with extra_columns="ignore", a name this close to a known column is a typo


def header_problems(
    header: list[str], default_datastore_id: str | None, extra_columns: str, source: Any,
) -> tuple[list[tuple[str | None, str]], list[tuple[str | None, str]], list[tuple[int, str]]]:
    """(fatal problems: the columns cannot be read; other problems; the extra columns
    carried in CopySpec.extras as (position, name))."""
    fatal: list[tuple[str | None, str]] = []
    other: list[tuple[str | None, str]] = []
    extras: list[tuple[int, str]] = []
    hint = _delimiter_hint(header, source)
    if hint:
        return [(None, hint)], [], []
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:  # a spreadsheet's empty column: skipped (a cell in it is a row's problem)
            continue
        if name in seen:
            fatal.append((name, "appears twice in the header"))
        elif name not in COLUMNS:
            guess = _close_column(name, 0.6)
            if extra_columns == "ignore":
                typo = _close_column(name, _TYPO_CUTOFF)
                if typo:
                    other.append((name, f"unknown column, too close to {typo!r} to be carried as a column "
                                        "of your own: rename it"))
                else:
                    extras.append((i - 1, name))
            else:
                said = f"did you mean {guess!r}?" if guess else f"accepted: {', '.join(COLUMNS)}"
                other.append((name, f"unknown column ({said}); to keep columns of your own, pass "
                                    "--extra-columns ignore"))
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            fatal.append((name, "required column is missing"))
    if "datastore_id" not in seen and not default_datastore_id:
        fatal.append(("datastore_id", "column is missing (add it, or pass --datastore-id)"))
    if default_datastore_id is not None and not ID_RE.fullmatch(default_datastore_id):
        fatal.append(("datastore_id", f"--datastore-id is not a data store id (expected 32 characters "
                                      f"[0-9a-z]): {show(default_datastore_id)}"))
    return fatal, other, extras


def _close_column(name: str, cutoff: float) -> str | None:
    normal = name.strip().lower().replace(" ", "_").replace("-", "_")
    if normal in COLUMNS:
        return normal
    guess = difflib.get_close_matches(normal, COLUMNS, n=1, cutoff=cutoff)
    return guess[0] if guess else None


def _delimiter_hint(header: list[str], source: Any) -> str | None:
    """For a CSV header read as one unknown column holding another delimiter: what to pass."""
    used = getattr(source, "delimiter", None)
    if used is None or len(header) != 1 or header[0] in COLUMNS:
        return None
    from batchcopy.manifest.csvfile import DELIMITERS, delimiter_option

    found = [d for d in DELIMITERS if d != used and d in header[0]]
    if not found:
        return None
    how = "sniffed" if source.sniffed else "given"
    return (f"the header reads as one column {show(header[0])} with the delimiter {delimiter_option(used)} "
            f"({how}): if the delimiter is {delimiter_option(found[0])}, pass --delimiter "
            f"{delimiter_option(found[0])}")


def unnamed_cells(cols: list[list[Any]], unnamed: list[int], i: int) -> list[tuple[str | None, str]]:
    """Cells in columns the header leaves unnamed (a spreadsheet's empty trailing columns
    are fine while they stay empty): each a problem of the row, saying what to do."""
    out: list[tuple[str | None, str]] = []
    for pos in unnamed:
        value = cols[pos][i]
        if value is None or value != value or (isinstance(value, str) and not value.strip()):
            continue
        out.append((None, f"header column {pos + 1} has no name, but this row has "
                          f"{show(str(value))} in it: name the column (and pass --extra-columns "
                          "ignore to keep it) or empty the cell"))
    return out
