"""A corpus of malformed manifests: CSV, CSV.gz and Parquet files that must each end in
one clear error (exit 2, the file named, row and column where one applies, no
traceback, nothing sent).

Every case is built in memory from a fixed seed, so the corpus needs no stored files:
`CASES` lists them, `write_case` puts one in a folder, and

    python tests/bad_inputs/__init__.py OUTDIR

writes them all, to look at or to feed to the CLI by hand. `expect` holds the
fragments the error must show besides the file name (the row and line as
"row R (line L)", the column as "column 'name'", and a word of the cause).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DS = "d" * 32
A = "a" * 32
B = "b" * 32
HEAD = ("row_id,datastore_id,source_image_set_id,source_version_id,destination_image_set_id,"
        "destination_version_id,copiable_attributes,force")
GOOD = f"r1,{DS},{A},,,,,"  # a valid row of HEAD
SUBSET = '{"Study":{"Series":{"1.2":{"Instances":{"1.2.3":{}}}}}}'


@dataclass(frozen=True)
class BadCase:
    name: str  # test id; the prefix is the format: csv-, gz-, pq- or path-
    filename: str
    build: Callable[[], bytes] | None  # the file's bytes; None: make a folder of that name
    expect: tuple[str, ...]


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return "".join(line + "\n" for line in lines).encode(encoding)


def cell(text: str) -> str:
    """A quoted CSV cell."""
    return '"' + text.replace('"', '""') + '"'


def row(**cells: str) -> str:
    """A row of HEAD: a valid one with `cells` replaced (values written as given)."""
    values = dict(zip(HEAD.split(","), GOOD.split(",")))
    values.update(cells)
    return ",".join(values.values())


def parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def table(**columns: Any) -> Any:
    import pyarrow as pa

    return pa.table(columns)


def noise(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def many_rows(n: int) -> bytes:
    return csv_bytes(HEAD, *(row(row_id=f"r{i}", source_image_set_id=f"{i:032x}") for i in range(n)))


def flip(data: bytes, at: int) -> bytes:
    """`data` with the bytes at `at`..`at`+8 inverted."""
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 8]) + data[at + 8:]


def bad_crc(gz: bytes) -> bytes:
    """A gzip member whose CRC-32 (the first half of its 8-byte trailer) is wrong."""
    return gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:]


def xlsx_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    return out.getvalue()


def parquet_with_invalid_utf8() -> bytes:
    import pyarrow as pa

    ids = pa.array([b"r1", b"caf\xe9"], pa.binary()).view(pa.string())  # Arrow does not check on view
    return parquet_bytes(pa.table({"row_id": ids, "datastore_id": [DS, DS], "source_image_set_id": [A, B]}))


def parquet_corrupt_data() -> bytes:
    """A Parquet file whose column data (not its footer) is overwritten."""
    import pyarrow as pa

    n = 5000
    data = parquet_bytes(pa.table({"row_id": [f"r{i}" for i in range(n)], "datastore_id": [DS] * n,
                                   "source_image_set_id": [f"{i:032x}" for i in range(n)]}))
    return data[:4] + noise(len(data) // 2, seed=3) + data[4 + len(data) // 2:]


DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000
TOO_LONG_ATTRS = json.dumps({"Study": {"Series": {"1.2": {"Instances": {
    f"1.2.{i:060d}": {} for i in range(4000)}}}}})  # about 276,000 characters in canonical form
WHERE_1 = ("row 1 (line 2)",)
WHERE_2 = ("row 2 (line 3)",)


def _csv_cases() -> list[BadCase]:
    c = "m.csv"
    return [
        BadCase("csv-empty-file", c, lambda: b"", ("empty file",)),
        BadCase("csv-blank-lines-only", c, lambda: b"\n\n\r\n   \n", ("the first line is empty",)),
        BadCase("csv-blank-first-line", c, lambda: csv_bytes("", HEAD, GOOD), ("the first line is empty",)),
        BadCase("csv-header-only", c, lambda: csv_bytes(HEAD), ("no rows",)),
        BadCase("csv-header-then-blank-lines", c, lambda: csv_bytes(HEAD, "", ",,,,,,,", "  "), ("no rows",)),
        BadCase("csv-random-binary", c, lambda: noise(4096), ("binary data",)),
        BadCase("csv-utf16-bom", c, lambda: csv_bytes(HEAD, GOOD, encoding="utf-16"), ("UTF-16",)),
        BadCase("csv-utf16-no-bom", c, lambda: csv_bytes(HEAD, GOOD, encoding="utf-16-le"), ("UTF-16",)),
        BadCase("csv-utf32", c, lambda: csv_bytes(HEAD, GOOD, encoding="utf-32"), ("UTF-32",)),
        BadCase("csv-latin1-cell", c, lambda: csv_bytes(HEAD, row(row_id="café"), encoding="latin-1"),
                (*WHERE_1, "column 'row_id'", "not UTF-8")),
        BadCase("csv-latin1-header", c, lambda: csv_bytes(HEAD + ",remarqué", GOOD + ",x", encoding="latin-1"),
                ("line 1", "not UTF-8")),
        BadCase("csv-is-parquet", c, lambda: parquet_bytes(table(source_image_set_id=[A])), ("Parquet file",)),
        BadCase("csv-is-xlsx", c, xlsx_bytes, ("ZIP archive",)),
        BadCase("csv-no-line-break", c, lambda: b"x" * 70_000, ("no line break",)),
        BadCase("csv-header-spans-lines", c, lambda: csv_bytes('"row\nid",datastore_id,source_image_set_id',
                                                               f"r1,{DS},{A}"), ("header spans lines",)),
        BadCase("csv-cr-line-endings", c, lambda: f"{HEAD}\r{GOOD}\r{row(row_id='r2', force='maybe')}\r".encode(),
                (*WHERE_2, "column 'force'")),
        BadCase("csv-duplicate-column", c, lambda: csv_bytes(HEAD + ",force", GOOD + ",1"),
                ("column 'force'", "appears twice")),
        BadCase("csv-missing-required-column", c, lambda: csv_bytes("row_id,datastore_id", f"r1,{DS}"),
                ("column 'source_image_set_id'", "required column is missing")),
        BadCase("csv-unknown-column", c, lambda: csv_bytes(HEAD + ",sorce_version_id", GOOD + ",1"),
                ("column 'sorce_version_id'", "did you mean", "--extra-columns ignore")),
        BadCase("csv-unnamed-column-with-a-cell", c, lambda: csv_bytes(HEAD + ",", GOOD + ",left knee"),
                (*WHERE_1, "header column 9 has no name", "'left knee'", "--extra-columns ignore")),
        BadCase("csv-first-row-too-long", c, lambda: csv_bytes(HEAD, GOOD + ",extra"), (*WHERE_1, "9 cells")),
        BadCase("csv-later-row-too-long", c, lambda: csv_bytes(HEAD, GOOD, row(row_id="r2") + ",extra"),
                (*WHERE_2, "9 cells")),
        BadCase("csv-semicolons-in-comma-rows", c, lambda: csv_bytes(HEAD.replace(",", ";"), GOOD),
                (*WHERE_1, "column 'source_image_set_id'")),
        BadCase("csv-nul-in-cell", c, lambda: csv_bytes(HEAD, row(row_id="r\x001")),
                (*WHERE_1, "column 'row_id'", "U+0000")),
        BadCase("csv-escape-in-cell", c, lambda: csv_bytes(HEAD, row(source_image_set_id=A + "\x1b")),
                (*WHERE_1, "column 'source_image_set_id'", "U+001B")),
        BadCase("csv-line-break-in-row-id", c, lambda: csv_bytes(HEAD, row(row_id=cell("r\n1")), row(row_id="r2")),
                (*WHERE_1, "column 'row_id'", "line break")),
        BadCase("csv-bad-row-after-multiline-cell", c, lambda: csv_bytes(
            HEAD, row(copiable_attributes=cell(json.dumps(json.loads(SUBSET), indent=1))),  # lines 2-12
            row(row_id="r2", source_image_set_id="x")), ("row 2 (line 13)", "column 'source_image_set_id'")),
        BadCase("csv-unclosed-quote-at-end", c, lambda: csv_bytes(HEAD, GOOD, row(row_id="r2", source_version_id='"3')),
                (*WHERE_2, "quote in this row is never closed")),
        BadCase("csv-unclosed-quote-swallows-rest", c,
                lambda: csv_bytes(HEAD, row(row_id='"r1'), row(row_id="r2"), row(row_id="r3")),
                (*WHERE_1, "quote in this row is never closed")),
        BadCase("csv-record-of-12-mib", c, lambda: csv_bytes(HEAD, GOOD, row(row_id="r2", copiable_attributes=cell(
            " " * (12 << 20) + SUBSET))), ("at or after line 3", "too long to read")),
        BadCase("csv-deep-json-array", c, lambda: csv_bytes(HEAD, row(copiable_attributes=cell(DEEP_ARRAY))),
                (*WHERE_1, "column 'copiable_attributes'", "nested deeper")),
        BadCase("csv-deep-json-object", c, lambda: csv_bytes(HEAD, row(copiable_attributes=cell(DEEP_OBJECT))),
                (*WHERE_1, "column 'copiable_attributes'", "nested deeper")),
        BadCase("csv-invalid-json", c, lambda: csv_bytes(HEAD, row(copiable_attributes=cell('{"Study": '))),
                (*WHERE_1, "column 'copiable_attributes'", "not valid JSON")),
        BadCase("csv-attributes-too-long", c, lambda: csv_bytes(HEAD, row(copiable_attributes=cell(TOO_LONG_ATTRS))),
                (*WHERE_1, "column 'copiable_attributes'", "too long")),
        BadCase("csv-version-400-digits", c, lambda: csv_bytes(HEAD, row(source_version_id="7" * 400)),
                (*WHERE_1, "column 'source_version_id'", "not a version id")),
        BadCase("csv-version-above-int32", c, lambda: csv_bytes(HEAD, row(source_version_id="2147483648")),
                (*WHERE_1, "column 'source_version_id'", "not a version id")),
        BadCase("csv-version-arabic-digits", c, lambda: csv_bytes(HEAD, row(source_version_id="١٢")),
                (*WHERE_1, "column 'source_version_id'", "not a version id")),
        BadCase("csv-bad-datastore-id", c, lambda: csv_bytes(HEAD, row(datastore_id=DS.upper())),
                (*WHERE_1, "column 'datastore_id'")),
        BadCase("csv-bad-boolean", c, lambda: csv_bytes(HEAD, row(force="maybe")), (*WHERE_1, "column 'force'")),
        BadCase("csv-destination-is-source", c, lambda: csv_bytes(HEAD, row(destination_image_set_id=A)),
                (*WHERE_1, "column 'destination_image_set_id'")),
        BadCase("csv-duplicate-row-id", c, lambda: csv_bytes(HEAD, GOOD, row(source_image_set_id=B)),
                (*WHERE_2, "column 'row_id'", "duplicate row_id")),
        BadCase("csv-row-id-too-long", c, lambda: csv_bytes(HEAD, row(row_id="x" * 300)),
                (*WHERE_1, "column 'row_id'", "longer than 256")),
    ]


def _gz_cases() -> list[BadCase]:
    g = "m.csv.gz"
    big = many_rows(3000)  # well past the 64 KiB head read before the reader starts
    return [
        BadCase("gz-empty-file", g, lambda: b"", ("empty file",)),
        BadCase("gz-not-gzip", g, lambda: csv_bytes(HEAD, GOOD), ("not gzip-compressed",)),
        BadCase("gz-truncated-in-head", g, lambda: gzip.compress(csv_bytes(HEAD, GOOD))[:-12], ("truncated",)),
        BadCase("gz-truncated-after-head", g, lambda: gzip.compress(big)[: len(gzip.compress(big)) * 3 // 4],
                ("truncated",)),
        BadCase("gz-corrupt-deflate", g, lambda: flip(gzip.compress(big), len(gzip.compress(big)) // 2),
                ("gzip data is corrupt",)),
        BadCase("gz-crc-mismatch", g, lambda: bad_crc(gzip.compress(csv_bytes(HEAD, GOOD))),
                ("gzip data is corrupt",)),
        BadCase("gz-trailing-garbage", g, lambda: gzip.compress(csv_bytes(HEAD, GOOD)) + b"not gzip at all",
                ("gzip data is corrupt",)),
        BadCase("gz-binary-inside", g, lambda: gzip.compress(noise(4096)), ("binary data",)),
        BadCase("gz-header-only", g, lambda: gzip.compress(csv_bytes(HEAD)), ("no rows",)),
        BadCase("gz-empty-inside", g, lambda: gzip.compress(b""), ("empty file",)),
        BadCase("gz-double-gzip", g, lambda: gzip.compress(gzip.compress(csv_bytes(HEAD, GOOD))),
                ("gzip-compressed twice",)),
        BadCase("gz-utf16-inside", g, lambda: gzip.compress(csv_bytes(HEAD, GOOD, encoding="utf-16")), ("UTF-16",)),
        BadCase("gz-latin1-far-in", g, lambda: gzip.compress(big + csv_bytes(row(row_id="café"), encoding="latin-1")),
                ("row 3001 (line 3002)", "column 'row_id'", "not UTF-8")),
        BadCase("gz-nul-in-cell", g, lambda: gzip.compress(csv_bytes(HEAD, GOOD, row(row_id="r\x002"))),
                (*WHERE_2, "column 'row_id'", "U+0000")),
    ]


def _parquet_cases() -> list[BadCase]:
    import pyarrow as pa

    p = "m.parquet"
    good = parquet_bytes(table(row_id=["r1", "r2"], datastore_id=[DS, DS], source_image_set_id=[A, B]))
    return [
        BadCase("pq-empty-file", p, lambda: b"", ("empty file",)),
        BadCase("pq-truncated", p, lambda: good[: len(good) // 2], ("truncated Parquet",)),
        BadCase("pq-footer-only-magic", p, lambda: b"PAR1" + noise(600) + b"PAR1", ("corrupt Parquet",)),
        BadCase("pq-corrupt-data", p, parquet_corrupt_data, ("Parquet",)),
        BadCase("pq-is-csv", p, lambda: csv_bytes(HEAD, GOOD), ("reads as text",)),
        BadCase("pq-random-binary", p, lambda: noise(4096), ("not a Parquet file",)),
        BadCase("pq-zero-rows", p, lambda: parquet_bytes(table(datastore_id=pa.array([], pa.string()),
                                                               source_image_set_id=pa.array([], pa.string()))),
                ("no rows",)),
        BadCase("pq-all-null-rows", p, lambda: parquet_bytes(table(
            datastore_id=pa.array([None, None], pa.string()), source_image_set_id=pa.array([None, None], pa.string()))),
            ("no rows",)),
        BadCase("pq-no-columns", p, lambda: parquet_bytes(pa.table({})), ("required column is missing",)),
        BadCase("pq-missing-required-column", p, lambda: parquet_bytes(table(datastore_id=[DS])),
                ("column 'source_image_set_id'", "required column is missing")),
        BadCase("pq-duplicate-column", p, lambda: parquet_bytes(pa.Table.from_arrays(
            [pa.array([DS]), pa.array([A]), pa.array([DS])], ["datastore_id", "source_image_set_id", "datastore_id"])),
            ("column 'datastore_id'", "appears twice")),
        BadCase("pq-unknown-column", p, lambda: parquet_bytes(table(datastore_id=[DS], source_image_set_id=[A],
                                                                    colour=["red"])),
                ("column 'colour'", "--extra-columns ignore")),
        BadCase("pq-int-image-set-id", p, lambda: parquet_bytes(table(datastore_id=[DS], source_image_set_id=[5])),
                ("row 1", "column 'source_image_set_id'", "expected text")),
        BadCase("pq-struct-image-set-id", p, lambda: parquet_bytes(table(
            datastore_id=[DS], source_image_set_id=[{"id": A}])), ("row 1", "column 'source_image_set_id'", "expected text")),
        BadCase("pq-bad-boolean", p, lambda: parquet_bytes(table(datastore_id=[DS], source_image_set_id=[A],
                                                                 force=pa.array([2], pa.int64()))),
                ("row 1", "column 'force'", "not a boolean")),
        BadCase("pq-nul-in-cell", p, lambda: parquet_bytes(table(row_id=["r\x001"], datastore_id=[DS],
                                                                 source_image_set_id=[A])),
                ("row 1", "column 'row_id'", "U+0000")),
        BadCase("pq-dictionary-nul-in-cell", p, lambda: parquet_bytes(table(
            row_id=pa.array(["r1", "r\x002"]).dictionary_encode(), datastore_id=[DS, DS], source_image_set_id=[A, B])),
            ("row 2", "column 'row_id'", "U+0000")),
        BadCase("pq-invalid-utf8", p, parquet_with_invalid_utf8, ("row 2", "column 'row_id'", "not UTF-8")),
        BadCase("pq-deep-json", p, lambda: parquet_bytes(table(datastore_id=[DS], source_image_set_id=[A],
                                                               copiable_attributes=[DEEP_OBJECT])),
                ("row 1", "column 'copiable_attributes'", "nested deeper")),
        BadCase("pq-version-13-digits", p, lambda: parquet_bytes(table(
            datastore_id=[DS], source_image_set_id=[A], source_version_id=pa.array([10**12], pa.int64()))),
            ("row 1", "column 'source_version_id'", "not a version id")),
    ]


def _path_cases() -> list[BadCase]:
    return [
        BadCase("path-directory", "m.csv", None, ("is a directory",)),
        BadCase("path-unknown-extension", "m.xlsx", xlsx_bytes, ("unknown manifest format",)),
    ]


CASES: list[BadCase] = _csv_cases() + _gz_cases() + _parquet_cases() + _path_cases()


def write_case(case: BadCase, directory: Path) -> Path:
    """Write `case` under directory/<case name>/ and return its path."""
    folder = directory / case.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    if case.build is None:
        path.mkdir()
    else:
        path.write_bytes(case.build())
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bad-manifests")
    for case in CASES:
        print(write_case(case, out))
