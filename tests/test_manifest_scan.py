"""The one-pass manifest API (scan_manifest), the CSV reader's edges (lines, encodings,
gzip, quotes, control characters), spreadsheet manifests (delimiter, extra columns)
and the API limits (version ids, JSON depth, copiableAttributes length)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchcopy.manifest.scan import ManifestInvalid, ValidationReport, read_specs, scan_manifest, validate
from batchcopy.core.specs import SPEC_FIELDS, CopySpec
from batchcopy.manifest.rules import (
    MAX_ATTRIBUTES_CHARS,
    RuleError,
    canonical_attributes,
    check_version,
    parse_copiable_attributes,
)

DS = "d" * 32
A = "a" * 32
B = "b" * 32
C = "c" * 32


def write(tmp_path: Path, text: str | bytes, name: str = "m.csv") -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def where(report: ValidationReport) -> list[tuple[int | None, int | None, str | None]]:
    return [(e.row, e.line, e.column) for e in report.errors]


# ---------------------------------------------------------------- scan_manifest


def test_scan_yields_valid_rows_and_collects_every_problem(tmp_path: Path) -> None:
    rows = [f"r{i},{DS},{f'{i:032x}' if i != 4 else 'bad'},{i}" for i in range(1, 8)] + [f"r1,{DS},{B},"]
    path = write(tmp_path, "row_id,datastore_id,source_image_set_id,source_version_id\n" + "\n".join(rows) + "\n")
    scan = scan_manifest(path, batch_size=3, display_name="in/m.csv")
    with pytest.raises(RuntimeError, match="not finished"):
        scan.report
    batches = [next(iter(scan)), next(iter(scan))]
    assert [e.row for e in scan.errors] == [4]  # per-row problems as they come
    batches += list(scan)
    # row 4 is left out; row 8's problem spans rows: it is only known at the end
    assert [[s.manifest_row for s in b] for b in batches] == [[1, 2, 3], [5, 6], [7, 8]]
    report = scan.report
    assert report.rows == 8 and not report.ok and report.path == "in/m.csv"
    assert [(e.row, e.column) for e in report.errors] == [(4, "source_image_set_id"), (8, "row_id")]
    assert report.errors[1].message == "duplicate row_id: row 8 has the same row_id as row 1"
    assert (report.datastores, report.image_sets, report.subset_rows) == (1, 7, 0)
    assert list(scan) == [] and scan.finish() is report  # one pass: a second iteration reads nothing


def test_scan_batches_are_full_with_blank_and_bad_rows_between(tmp_path: Path) -> None:
    body = "".join(f"{DS},{f'{i:032x}' if i % 5 else 'x'}\n\n" for i in range(1, 21))
    path = write(tmp_path, "datastore_id,source_image_set_id\n" + body)
    scan = scan_manifest(path, batch_size=4)
    sizes = [len(b) for b in scan]
    assert sum(sizes) == 16 and all(size <= 4 for size in sizes)
    assert [e.line for e in scan.report.errors] == [10, 20, 30, 40]  # blank lines counted, not numbered
    assert [e.row for e in scan.report.errors] == [5, 10, 15, 20]


def test_finish_reads_the_rest_after_a_partial_iteration(tmp_path: Path) -> None:
    path = write(tmp_path, "datastore_id,source_image_set_id\n"
                 + "".join(f"{DS},{i:032x}\n" for i in range(1, 11)) + f"{DS},x\n")
    scan = scan_manifest(path, batch_size=2)
    assert len(next(iter(scan))) == 2
    report = scan.finish()
    assert report.rows == 11 and where(report) == [(11, 12, "source_image_set_id")]


def test_scan_of_a_file_unreadable_part_way_records_it_and_stops(tmp_path: Path) -> None:
    # 10 MiB: pyarrow reads two 4 MiB blocks ahead of what it hands out
    body = "".join(f"r{i},{DS},{i:032x}\n" for i in range(150_000)).encode()
    data = gzip.compress(b"row_id,datastore_id,source_image_set_id\n" + body, compresslevel=1)
    path = tmp_path / "m.csv.gz"
    path.write_bytes(data[:-1000])
    scan = scan_manifest(path)
    specs = [s for b in scan for s in b]
    # the rows before the break (how many depends on how far pyarrow's read-ahead got before
    # it met the end: none, under load), never one after it, and the break recorded
    assert len(specs) < 150_000 and [s.manifest_row for s in specs] == list(range(1, len(specs) + 1))
    (err,) = scan.report.errors
    assert err.row is None and err.message == "the gzip data ends early: the file is truncated"
    assert str(err).startswith(str(path))
    with pytest.raises(ManifestInvalid, match="truncated"):
        list(read_specs(path))


def test_header_problems_raise_when_the_scan_opens(tmp_path: Path) -> None:
    with pytest.raises(ManifestInvalid, match="required column is missing"):
        scan_manifest(write(tmp_path, f"datastore_id\n{DS}\n"))
    with pytest.raises(FileNotFoundError):
        scan_manifest(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="extra_columns"):
        scan_manifest(write(tmp_path, f"datastore_id,source_image_set_id\n{DS},{A}\n"), extra_columns="keep")


def test_max_errors_counts_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "datastore_id,source_image_set_id\n" + f"{DS},x\n" * 30)
    scan = scan_manifest(path, max_errors=5)
    assert list(scan) == []
    assert len(scan.report.errors) == 5 and scan.report.more_errors == 25


def test_no_pandas_is_imported(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id\n{DS},{A}\n")
    pq.write_table(pa.table({"datastore_id": [DS], "source_image_set_id": [A]}), tmp_path / "m.parquet")
    code = ("import sys; from pathlib import Path; from batchcopy.manifest.scan import validate; "
            f"assert validate(Path({str(path)!r})).ok; assert validate(Path({str(tmp_path / 'm.parquet')!r})).ok; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- CSV reading


def test_a_copiable_attributes_above_the_csv_module_field_limit(tmp_path: Path) -> None:
    attrs = canonical_attributes({"1.2": [f"1.2.{i:060d}" for i in range(2800)]})
    assert 131_072 < len(attrs) <= MAX_ATTRIBUTES_CHARS  # 185,619 characters
    head = "datastore_id,source_image_set_id,destination_image_set_id,copiable_attributes,force"
    # the second row is short (no force cell): it goes through the reader's padding path
    path = write(tmp_path, f"{head}\n{DS},{A},{B},{quoted(attrs)},1\n{DS},{C},{B},{quoted(attrs)}\n")
    first, second = [s for b in read_specs(path) for s in b]
    assert first.copiable_attributes == attrs == second.copiable_attributes
    assert first.force and not second.force


def test_lines_stay_exact_around_quoted_line_breaks_and_short_rows(tmp_path: Path) -> None:
    attrs = json.dumps({"Study": {"Series": {"1.2": {}}}}, indent=2)  # 7 lines
    text = ("datastore_id,source_image_set_id,copiable_attributes,force\r\n"
            f"{DS},{A},{quoted(attrs)},\r\n"      # lines 2-8
            f"{DS},x\r\n"                         # line 9: short, padded
            "\r\n"                                # line 10: blank
            f'{DS},y,"{{\n}}",0\r\n'              # lines 11-12
            f"{DS},{A},,maybe\r\n")               # line 13
    report = validate(write(tmp_path, text))
    assert where(report) == [(2, 9, "source_image_set_id"), (3, 11, "source_image_set_id"),
                             (3, 11, "copiable_attributes"), (4, 13, "force")]


def test_blank_lines_cost_nothing_and_lines_stay_exact(tmp_path: Path) -> None:
    """600,000 blank lines around rows, a short row and a quoted line break, in reader
    batches far above the small-batch size: no blank line reaches Python as a record
    (counted, not held), the Python heap does not grow with them, and the lines of the
    rows after them are exact (before: ~160 bytes a blank line, 514 MB for 3 MB of them)."""
    import tracemalloc

    from batchcopy.manifest.csvfile import CsvSource

    head = "datastore_id,source_image_set_id,force\n"
    good = "".join(f"{DS},{i:032x},\n" for i in range(5000))  # lines 2-5001
    gap = 300_000
    tail = ("\n" * gap                          # lines 5002-305001
            + f"{DS},x\n"                       # line 305002: short (padded), bad id
            + "\n" * 1000                        # lines 305003-306002
            + f'{DS},"y\n",0\n'                  # lines 306003-306004: a quoted line break, bad id
            + "\n" * gap                         # lines 306005-606004
            + f"{DS},{A},maybe\n")               # line 606005: bad flag
    plain = write(tmp_path, head + good + tail.replace("\n" * gap, "").replace("\n" * 1000, ""), "plain.csv")
    blank = write(tmp_path, head + good + tail, "blank.csv")
    source = CsvSource(blank, None)
    assert sum(raw.size for raw in source.batches()) == 5003  # the blank lines were never records

    def peak(path: Path) -> tuple[int, ValidationReport]:
        tracemalloc.start()
        try:
            report = validate(path)
            return tracemalloc.get_traced_memory()[1], report
        finally:
            tracemalloc.stop()

    plain_peak, _ = peak(plain)
    blank_peak, report = peak(blank)
    assert blank_peak - plain_peak < 2 << 20, (plain_peak, blank_peak)  # before: +27 MB here
    assert report.rows == 5003
    assert where(report) == [(5001, 305002, "source_image_set_id"), (5002, 306003, "source_image_set_id"),
                             (5003, 606005, "force")]


def test_old_mac_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id\r{DS},{A}\r\r{DS},x\r")
    report = validate(path)
    assert report.rows == 2 and where(report) == [(2, 4, "source_image_set_id")]


def test_utf8_bom_and_gzip_are_read(tmp_path: Path) -> None:
    text = "\ufeffdatastore_id,source_image_set_id\n" + f"{DS},{A}\n"
    for name in ("m.csv", "m.csv.gz", "gz-content-named.csv"):
        data = text.encode()
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if "gz" in name else data)
        assert [s.source_image_set_id for b in read_specs(path) for s in b] == [A]


@pytest.mark.parametrize("data,fragment", [
    (b"", "empty file"),
    (b"\n\n  \n", "the first line is empty"),
    ("row_id,source_image_set_id\nr1,x\n".encode("utf-16"), "is UTF-16 text"),
    ("row_id,source_image_set_id\nr1,x\n".encode("utf-16-le"), "looks like UTF-16"),
    (bytes(range(256)) * 8, "binary data"),
    ("datastore_id,source_image_set_id,été\n".encode("latin-1"), "the header is not UTF-8"),
    (b"PAR1" + b"x" * 100, "is a Parquet file"),
])
def test_files_that_are_not_utf8_csv_text(tmp_path: Path, data: bytes, fragment: str) -> None:
    with pytest.raises(ManifestInvalid, match=fragment) as info:
        validate(write(tmp_path, data))
    assert len(info.value.errors) == 1 and str(info.value).startswith(str(tmp_path / "m.csv"))


def test_bytes_that_are_not_utf8_stop_the_read_at_their_row(tmp_path: Path) -> None:
    good = "".join(f"{DS},{i:032x}\n" for i in range(20_000))  # past the first read block
    data = b"datastore_id,source_image_set_id\n" + good.encode() + DS.encode() + b",caf\xe9\n" + good.encode()
    report = validate(write(tmp_path, data))
    assert report.rows == 20_000  # the rows before it
    (err,) = report.errors
    assert (err.row, err.line, err.column) == (20_001, 20_002, "source_image_set_id")
    assert "not UTF-8 text (byte 0xe9" in err.message and "CSV UTF-8" in err.message


def test_a_short_row_that_is_not_utf8_prints_no_traceback(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    hook = sys.unraisablehook
    data = b"datastore_id,source_image_set_id,force\n" + f"{DS},{A},1\n".encode() + b"x,caf\xe9\n"
    (err,) = validate(write(tmp_path, data)).errors
    assert "a record at or after line 2 is not UTF-8" in err.message  # where the failing read began
    assert capfd.readouterr().err == "" and sys.unraisablehook is hook


@pytest.mark.parametrize("gz,fragment", [
    (lambda data: data[:-10], "the gzip data ends early"),
    (lambda data: data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:], "the gzip data is corrupt"),
    (lambda data: data + b"junk", "the gzip data is corrupt"),
    (lambda data: b"", "empty file"),
])
def test_broken_gzip_is_named(tmp_path: Path, gz: object, fragment: str) -> None:
    data = gzip.compress(f"datastore_id,source_image_set_id\n{DS},{A}\n".encode())
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gz(data))  # type: ignore[operator]
    with pytest.raises(ManifestInvalid, match=fragment):
        validate(path)
    path.write_bytes(b"datastore_id,source_image_set_id\n")
    with pytest.raises(ManifestInvalid, match="named .gz but not gzip-compressed"):
        validate(path)


def test_unclosed_quote_is_named_at_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id,force\n{DS},{A},1\n{DS},\"{B},0\n{DS},{C},0\n")
    report = validate(path)
    assert where(report) == [(2, 3, None)] and "never closed" in report.errors[0].message


# ---------------------------------------------------------------- control characters


@pytest.mark.parametrize("column,value,fragment", [
    ("row_id", "r\x001", "control character U+0000 (NUL) at character 2"),
    ("row_id", quoted("r\n1"), "line break U+000A (LF)"),
    ("row_id", quoted("r1\r"), "line break U+000D (CR)"),
    ("source_version_id", quoted("3\n"), "line break U+000A (LF)"),
    ("copiable_attributes", '{"Study":{"Series":{"1.2":{}}}}\x07'.replace('"', '""').join('""'), "U+0007"),
    ("force", "1\x1b", "U+001B (ESC)"),
])
def test_control_characters_are_refused_with_row_and_column(tmp_path: Path, column: str, value: str,
                                                            fragment: str) -> None:
    cells = {"row_id": "r1", "datastore_id": DS, "source_image_set_id": A, "source_version_id": "",
             "copiable_attributes": "", "force": ""}
    cells[column] = value
    report = validate(write(tmp_path, ",".join(cells) + "\n" + ",".join(cells.values()) + "\n"))
    (err,) = report.errors
    assert (err.row, err.line, err.column) == (1, 2, column) and fragment in err.message


def test_tabs_and_json_line_breaks_are_fine(tmp_path: Path) -> None:
    attrs = '{\r\n\t"Study": {"Series": {"1.2": {}}}\n}'
    path = write(tmp_path, f"row_id,datastore_id,source_image_set_id,copiable_attributes\n"
                           f"\tr1\t,{DS},{A},{quoted(attrs)}\n")
    (spec,) = [s for b in read_specs(path) for s in b]
    assert spec.row_id == "r1" and spec.copiable_attributes == canonical_attributes({"1.2": None})


def test_parquet_text_gets_the_same_checks(tmp_path: Path) -> None:
    ids = pa.array([b"r1", b"caf\xe9", b"r3"], pa.binary()).view(pa.string())
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"row_id": ids, "datastore_id": [DS] * 3, "source_image_set_id": [A, B, C]}), path)
    (err,) = validate(path).errors
    assert (err.row, err.column) == (2, "row_id") and "not UTF-8" in err.message
    for row_ids in (pa.array(["r\x001", "r2"]), pa.array(["r\x001", "r2"]).dictionary_encode()):
        pq.write_table(pa.table({"row_id": row_ids, "datastore_id": [DS] * 2, "source_image_set_id": [A, B]}), path)
        (err,) = validate(path).errors
        assert (err.row, err.column) == (1, "row_id") and "NUL" in err.message


@pytest.mark.parametrize("damage,fragment", [
    (lambda data: data[: len(data) // 2], "a truncated Parquet file"),
    (lambda data: b"", "empty file"),
    (lambda data: b"row_id\nr1\n", "it reads as text"),
    (lambda data: bytes(range(256)) * 4, "no Parquet magic bytes"),
])
def test_broken_parquet_is_named(tmp_path: Path, damage: object, fragment: str) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"datastore_id": [DS], "source_image_set_id": [A]}), path)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ManifestInvalid, match=fragment):
        validate(path)


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("value,ok", [
    ("1", True), ("2147483647", True), ("0000000007", True),
    ("2147483648", False), ("99999999999", False), ("7" * 400, False), ("١٢", False), ("１", False), ("1.0", False),
])
def test_version_ids_within_the_api(value: str, ok: bool) -> None:
    if ok:
        assert check_version(value) == value
    else:
        with pytest.raises(RuleError, match="not a version id"):
            check_version(value)


def test_json_nesting_limit() -> None:
    for deep in ("[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, "[" * 17 + "]" * 17):
        with pytest.raises(RuleError, match="nested deeper than 16 levels"):
            parse_copiable_attributes(deep)
    # brackets inside strings do not count; the real problem is then reported
    with pytest.raises(RuleError, match="unexpected key"):
        parse_copiable_attributes('{"Study":{"Series":{"1.2":{}}},"x":"' + "[{" * 50 + '\\"' + '"}')
    with pytest.raises(RuleError, match="must be a JSON object"):  # 16 deep passes the depth check
        parse_copiable_attributes("[" * 16 + "]" * 16)


# ---------------------------------------------------------------- spreadsheets: delimiter


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_sniffed_from_the_header(tmp_path: Path, delimiter: str) -> None:
    head = delimiter.join(["row_id", "datastore_id", "source_image_set_id", "copiable_attributes"])
    attrs = quoted('{"Study":{"Series":{"1.2":{}, "1.3":{}}}}')  # commas inside quotes
    path = write(tmp_path, f"{head}\n" + delimiter.join(["r1", DS, A, attrs]) + "\n")
    (spec,) = [s for b in read_specs(path) for s in b]
    assert spec.row_id == "r1" and spec.copiable_attributes == canonical_attributes({"1.2": None, "1.3": None})


def test_an_explicit_delimiter_wins(tmp_path: Path) -> None:
    path = write(tmp_path, f"row_id;note|datastore_id|source_image_set_id\nr;1|{DS}|{A}\n")
    (spec,) = [s for b in read_specs(path, delimiter="|", extra_columns="ignore") for s in b]
    assert spec.extras == '{"row_id;note":"r;1"}'
    tabbed = write(tmp_path, f"datastore_id\tsource_image_set_id\n{DS}\t{A}\n", "t.csv")
    for name in ("tab", "\\t", "\t"):
        assert validate(tabbed, delimiter=name).ok
    with pytest.raises(ManifestInvalid, match="a delimiter is one character"):
        validate(tabbed, delimiter='"')


def test_one_column_header_with_another_delimiter_names_the_option(tmp_path: Path) -> None:
    # an explicit comma on a semicolon file
    path = write(tmp_path, f"datastore_id;source_image_set_id\n{DS};{A}\n")
    with pytest.raises(ManifestInvalid) as info:
        validate(path, delimiter=",")
    (err,) = info.value.errors
    assert "reads as one column" in err.message and "--delimiter ';'" in err.message and "(given)" in err.message
    # no delimiter given, and a header quoted whole (nothing to sniff outside the quotes)
    path = write(tmp_path, f'"datastore_id;source_image_set_id"\n{DS};{A}\n')
    with pytest.raises(ManifestInvalid, match="--delimiter ';'") as info:
        validate(path)
    assert "delimiter ',' (sniffed)" in str(info.value)


# ---------------------------------------------------------------- spreadsheets: extra columns


def test_extra_columns_are_carried_as_json_in_file_order(tmp_path: Path) -> None:
    text = (f"Patient Name,datastore_id,source_image_set_id,notes,,force\n"
            f"Doe^Jane,{DS},{A},\"say \"\"hi\"\"\n  twice\",,1\n"
            f",{DS},{B},,,\n")
    path = write(tmp_path, text)
    scan = scan_manifest(path, extra_columns="ignore")
    first, second = [s for b in scan for s in b]
    assert scan.report.ok and scan.extra_columns == ["Patient Name", "notes"]  # the unnamed column is skipped
    assert first.extras == '{"Patient Name":"Doe^Jane","notes":"say \\"hi\\"\\n  twice"}' and first.force
    assert json.loads(second.extras or "") == {"Patient Name": "", "notes": ""}
    # without the option: the same file is refused, and the message names the option
    report = validate(path)
    assert {e.column for e in report.errors} == {"Patient Name", "notes"}  # the empty unnamed one is fine
    assert all("--extra-columns ignore" in e.message for e in report.errors if e.column)


def test_no_extra_columns_means_extras_is_none(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id\n{DS},{A}\n")
    (spec,) = [s for b in read_specs(path, extra_columns="ignore") for s in b]
    assert spec.extras is None


def test_extra_columns_close_to_a_known_name_are_still_typos(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id,Force,Source Version ID,sorce_image_set_id,series_uid\n"
                           f"{DS},{A},1,3,x,1.2\n")
    report = validate(path, extra_columns="ignore")
    assert {e.column for e in report.errors} == {"Force", "Source Version ID", "sorce_image_set_id"}
    assert all("rename it" in e.message for e in report.errors)


def test_extra_cells_are_checked_for_control_characters(tmp_path: Path) -> None:
    path = write(tmp_path, f"datastore_id,source_image_set_id,notes\n{DS},{A},a\x00b\n")
    (err,) = validate(path, extra_columns="ignore").errors
    assert (err.row, err.column) == (1, "notes") and "NUL" in err.message


def test_parquet_extra_columns_as_text(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"datastore_id": [DS, DS], "source_image_set_id": [A, B],
                             "batch": pa.array([7, None], pa.int64()), "checked": [True, False]}), path)
    specs = [s for b in read_specs(path, extra_columns="ignore") for s in b]
    assert [s.extras for s in specs] == ['{"batch":"7","checked":"true"}', '{"batch":"","checked":"false"}']


def test_extras_field_keeps_old_constructors_and_spec_fields() -> None:
    spec = CopySpec(4, "r4", DS, A, "2", B, "5", None, True, True)
    assert spec.extras is None
    assert "extras" not in SPEC_FIELDS and SPEC_FIELDS[-1] == "promote_to_primary"
    journal_row = {name: getattr(spec, name) for name in SPEC_FIELDS}  # what the journal stores
    assert CopySpec(**journal_row) == spec


def test_a_spreadsheet_export_with_empty_trailing_columns_is_accepted(tmp_path: Path) -> None:
    """Spreadsheets export the empty columns right of the data as unnamed ones ("A,B,,,")."""
    path = write(tmp_path, f"datastore_id,source_image_set_id,force,,,\n{DS},{A},1,,,\n{DS},{B},,,,\n")
    for mode in ("error", "ignore"):
        scan = scan_manifest(path, extra_columns=mode)  # type: ignore[arg-type]
        specs = [s for b in scan for s in b]
        assert scan.report.ok, [str(e) for e in scan.report.errors]
        assert [s.source_image_set_id for s in specs] == [A, B] and specs[0].force
    # a value under an unnamed header is named, with the fix, on its row
    path = write(tmp_path, f"datastore_id,source_image_set_id,,\n{DS},{A},,\n{DS},{B},,oops\n")
    (err,) = validate(path).errors
    assert err.row == 2 and "header column 4 has no name" in err.message and "'oops'" in err.message
