"""Manifest reading and validation: formats, per-row rules, cross-row rules, streaming."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchcopy.manifest.scan import (
    COLUMNS,
    ManifestError,
    ManifestInvalid,
    ValidationReport,
    read_specs,
    validate,
)
from batchcopy.core.specs import CopySpec
from batchcopy.manifest.rules import MAX_ATTRIBUTES_CHARS, canonical_attributes, parse_copiable_attributes

DS = "d" * 32
DS2 = "e" * 32
A = "a" * 32
B = "b" * 32
C = "c" * 32


def write_csv(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    path = tmp_path / name
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def all_specs(path: Path, **kw: object) -> list[CopySpec]:
    return [s for batch in read_specs(path, **kw) for s in batch]  # type: ignore[arg-type]


def errors_of(tmp_path: Path, text: str, **kw: object) -> list[ManifestError]:
    report = validate(write_csv(tmp_path, text), **kw)  # type: ignore[arg-type]
    return report.errors


def one_error(tmp_path: Path, text: str, **kw: object) -> ManifestError:
    errs = errors_of(tmp_path, text, **kw)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


HEAD = "datastore_id,source_image_set_id,destination_image_set_id,source_version_id,destination_version_id"


# ---------------------------------------------------------------- reading


def test_reads_every_column(tmp_path: Path) -> None:
    attrs = json.dumps({"Study": {"Series": {"1.2.3": {"Instances": {"1.2.3.4": {}}}}}}, indent=2)
    text = (
        ",".join(COLUMNS) + "\n"
        + f'r-1,{DS},{A},1,{B},7,"{attrs.replace(chr(34), chr(34) * 2)}",,,TRUE,no\n'
        + f",{DS},{A},,,,,1.2.9,,,\n"
        + f" r3 , {DS} ,{C},,{B},,,1.2.3,1.2.3.5,y,Yes\n"
    )
    specs = all_specs(write_csv(tmp_path, text))
    assert specs[0] == CopySpec(
        manifest_row=1, row_id="r-1", datastore_id=DS, source_image_set_id=A, source_version_id="1",
        destination_image_set_id=B, destination_version_id="7",
        copiable_attributes='{"SchemaVersion":"1.1","Study":{"Series":{"1.2.3":{"Instances":{"1.2.3.4":{}}}}}}',
        force=True, promote_to_primary=False,
    )
    assert specs[1] == CopySpec(
        manifest_row=2, row_id="2", datastore_id=DS, source_image_set_id=A,
        copiable_attributes='{"SchemaVersion":"1.1","Study":{"Series":{"1.2.9":{"Instances":{}}}}}',
    )
    assert specs[2].row_id == "r3" and specs[2].datastore_id == DS  # cells are stripped
    assert specs[2].copiable_attributes == canonical_attributes({"1.2.3": ["1.2.3.5"]})
    assert specs[2].force and specs[2].promote_to_primary


def test_minimal_manifest_with_default_datastore(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"source_image_set_id\n{A}\n{B}\n")
    specs = all_specs(path, default_datastore_id=DS)
    assert [(s.manifest_row, s.row_id, s.datastore_id, s.source_image_set_id) for s in specs] == [
        (1, "1", DS, A), (2, "2", DS, B)]
    assert specs[0].copiable_attributes is None and not specs[0].force
    # a row's own data store wins over the default; an empty cell takes the default
    path = write_csv(tmp_path, f"datastore_id,source_image_set_id\n{DS2},{A}\n,{B}\n")
    assert [s.datastore_id for s in all_specs(path, default_datastore_id=DS)] == [DS2, DS]


@pytest.mark.parametrize("word,value", [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Y", True), ("y", True),
    ("false", False), ("False", False), ("0", False), ("NO", False), ("n", False), ("", False),
])
def test_booleans(tmp_path: Path, word: str, value: bool) -> None:
    path = write_csv(tmp_path, f"datastore_id,source_image_set_id,force,promote_to_primary\n{DS},{A},{word},{word}\n")
    (spec,) = all_specs(path)
    assert spec.force is value and spec.promote_to_primary is value


def test_csv_gz_and_bom(tmp_path: Path) -> None:
    text = "\ufeff" + f"datastore_id,source_image_set_id\n{DS},{A}\n"
    for name in ("m.csv.gz", "m.CSV"):
        (spec,) = all_specs(write_csv(tmp_path, text, name))
        assert spec.source_image_set_id == A


def test_blank_lines_are_not_rows_but_lines_stay_exact(tmp_path: Path) -> None:
    text = f"datastore_id,source_image_set_id\n{DS},{A}\n\n,\n{DS},bad\n{DS},{B}\n\n"
    path = write_csv(tmp_path, text)
    report = validate(path)
    assert report.rows == 3
    (err,) = report.errors
    assert (err.row, err.line, err.column) == (2, 5, "source_image_set_id")


def test_read_specs_batches_stream(tmp_path: Path) -> None:
    rows = "".join(f"{DS},{A},{i}\n" for i in range(1, 8))
    path = write_csv(tmp_path, "datastore_id,source_image_set_id,source_version_id\n" + rows)
    batches = list(read_specs(path, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [s.manifest_row for b in batches for s in b] == list(range(1, 8))


def test_read_specs_yields_good_batches_then_raises_with_all_errors_of_the_bad_one(tmp_path: Path) -> None:
    rows = [f"{DS},{A}"] * 3 + [f"{DS},x1", f"{DS},{A}", f"{DS},x2"] + [f"{DS},x3"]
    path = write_csv(tmp_path, "datastore_id,source_image_set_id\n" + "\n".join(rows) + "\n")
    it = read_specs(path, batch_size=3)
    assert len(next(it)) == 3
    with pytest.raises(ManifestInvalid) as info:
        next(it)
    assert [(e.row, e.line) for e in info.value.errors] == [(4, 5), (6, 7)]  # not row 7 (next batch)


def test_parquet_typed_columns(tmp_path: Path) -> None:
    table = pa.table({
        "row_id": pa.array([10, None, 12], pa.int64()),
        "datastore_id": [DS, DS, None],
        "source_image_set_id": [A, A, B],
        "source_version_id": pa.array([1, None, 3], pa.int64()),
        "destination_image_set_id": [B, None, C],
        "destination_version_id": pa.array([2.0, None, None], pa.float64()),
        "series_instance_uid": ["1.2", None, ""],
        "force": pa.array([True, None, False], pa.bool_()),
        "promote_to_primary": pa.array([0, 1, None], pa.int8()),
    })
    for name in ("m.parquet", "m.pq"):
        path = tmp_path / name
        pq.write_table(table, path, row_group_size=2)
        specs = all_specs(path, default_datastore_id=DS2, batch_size=2)
        assert [(s.row_id, s.source_version_id, s.destination_version_id, s.force, s.promote_to_primary)
                for s in specs] == [("10", "1", "2", True, False), ("2", None, None, False, True),
                                    ("12", "3", None, False, False)]
        assert specs[2].datastore_id == DS2
        assert specs[0].copiable_attributes == canonical_attributes({"1.2": None})


def test_parquet_bad_types(tmp_path: Path) -> None:
    table = pa.table({
        "datastore_id": [DS, DS],
        "source_image_set_id": pa.array([5, None], pa.int64()),
        "force": pa.array([2, 1], pa.int64()),
    })
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    report = validate(path)
    assert [(e.row, e.line, e.column) for e in report.errors] == [
        (1, None, "source_image_set_id"), (1, None, "force"), (2, None, "source_image_set_id")]
    assert "expected text, got int 5" in report.errors[0].message
    assert "not a boolean" in report.errors[1].message and "2" in report.errors[1].message


def test_all_null_parquet_row_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"datastore_id": [DS, None, DS], "source_image_set_id": [A, None, B]}), path)
    assert [s.manifest_row for s in all_specs(path)] == [1, 2]


# ---------------------------------------------------------------- file-level problems


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError):
        list(read_specs(tmp_path / "none.parquet"))
    bad = tmp_path / "m.xlsx"
    bad.write_text("x")
    with pytest.raises(ManifestInvalid, match="unknown manifest format"):
        validate(bad)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(ManifestInvalid, match="no header"):
        validate(write_csv(tmp_path, ""))
    path = write_csv(tmp_path, "datastore_id,source_image_set_id\n\n")
    report = validate(path)
    assert report.rows == 0 and not report.ok
    assert [e.message for e in report.errors] == ["the manifest has no rows"]
    with pytest.raises(ManifestInvalid, match="no rows"):
        list(read_specs(path))
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"datastore_id": pa.array([], pa.string()),
                             "source_image_set_id": pa.array([], pa.string())}), path)
    assert [e.message for e in validate(path).errors] == ["the manifest has no rows"]


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    path.write_text("datastore_id,source_image_set_id\n")
    with pytest.raises(ManifestInvalid, match="not a Parquet file .it reads as text"):
        validate(path)


def test_missing_required_column_is_one_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"datastore_id,destination_image_set_id\n{DS},{B}\n{DS},{B}\n")
    with pytest.raises(ManifestInvalid) as info:
        validate(path)
    (err,) = info.value.errors
    assert err.column == "source_image_set_id" and err.row is None
    assert str(err) == f"{path}: column 'source_image_set_id': required column is missing"
    with pytest.raises(ManifestInvalid):
        list(read_specs(path))


def test_missing_datastore_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"source_image_set_id\n{A}\n")
    with pytest.raises(ManifestInvalid) as info:
        validate(path)
    (err,) = info.value.errors
    assert err.column == "datastore_id" and "--datastore-id" in err.message
    assert validate(path, default_datastore_id=DS).ok
    with pytest.raises(ManifestInvalid, match="--datastore-id is not a data store id"):
        validate(path, default_datastore_id="nope")


def test_unknown_columns_named_with_suggestions(tmp_path: Path) -> None:
    text = f"datastore_id,sorce_image_set_id,source_image_set_id,Force,colour\n{DS},x,{A},1,red\n"
    report = validate(write_csv(tmp_path, text))
    msgs = {e.column: e.message for e in report.errors}
    option = "; to keep columns of your own, pass --extra-columns ignore"
    assert msgs["sorce_image_set_id"] == "unknown column (did you mean 'source_image_set_id'?)" + option
    assert msgs["Force"] == "unknown column (did you mean 'force'?)" + option
    assert msgs["colour"].startswith("unknown column (accepted: row_id, datastore_id")
    assert msgs["colour"].endswith(option)
    assert report.rows == 1 and len(report.errors) == 3  # the row itself is fine
    with pytest.raises(ManifestInvalid, match="sorce_image_set_id"):
        list(read_specs(write_csv(tmp_path, text)))


def test_duplicate_column_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ManifestInvalid, match="appears twice"):
        validate(write_csv(tmp_path, f"datastore_id,source_image_set_id,datastore_id\n{DS},{A},{DS}\n"))


def test_ragged_rows(tmp_path: Path) -> None:
    head = "datastore_id,source_image_set_id\n"
    # a longer first row: the header is probably short of a name; fatal, before any row
    path = write_csv(tmp_path, head + f"\n{DS},{A},extra\n{DS},{A}\n")
    with pytest.raises(ManifestInvalid, match=r"row 1 \(line 3\): 3 cells, but the header has 2 columns"):
        validate(path)
    with pytest.raises(ManifestInvalid):
        list(read_specs(path))
    # a longer later row is that row's error; the rows after it are still read
    path = write_csv(tmp_path, head + f"{DS},{A}\n{DS},{B},extra\n{DS},x\n")
    with pytest.raises(ManifestInvalid, match=r"row 2 \(line 3\): 3 cells"):
        list(read_specs(path))
    report = validate(path)
    assert [(e.row, e.line, e.column) for e in report.errors] == [(2, 3, None), (3, 4, "source_image_set_id")]
    # a short row is padded with empty cells
    path = write_csv(tmp_path, f"datastore_id,source_image_set_id,force\n{DS},{A}\n")
    assert all_specs(path)[0].force is False


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"datastore_id,source_image_set_id\n" + DS.encode() + b",\xff\xfe\n")
    with pytest.raises(ManifestInvalid, match="not UTF-8"):
        list(read_specs(path))
    (err,) = validate(path).errors
    assert (err.row, err.line, err.column) == (1, 2, "source_image_set_id") and "byte 0xff" in err.message


# ---------------------------------------------------------------- per-row rules


def test_error_text_names_file_row_line_column_value(tmp_path: Path) -> None:
    err = one_error(tmp_path, f"datastore_id,source_image_set_id\n{DS},{A}\n{DS},{A}x\n",
                    display_name="manifests/m.csv")
    assert str(err) == ("manifests/m.csv: row 2 (line 3), column 'source_image_set_id': not an image set id "
                        f"(expected 32 characters [0-9a-z]): '{A}x'")


def test_long_values_are_truncated(tmp_path: Path) -> None:
    err = one_error(tmp_path, f"datastore_id,source_image_set_id\n{DS},{'Z' * 500}\n")
    assert "(500 characters)" in err.message and len(err.message) < 200


@pytest.mark.parametrize("cells,column,fragment", [
    (f",{A},,,", "datastore_id", "or pass --datastore-id"),
    (f"{DS.upper()},{A},,,", "datastore_id", "not a data store id"),
    (f"{DS},,,,", "source_image_set_id", "missing source image set id"),
    (f"{DS},{A[:31]},,,", "source_image_set_id", "not an image set id"),
    (f"{DS},{A},{B}-,,", "destination_image_set_id", "not an image set id"),
    (f"{DS},{A},{A},,", "destination_image_set_id", "destination is the source"),
    (f"{DS},{A},,v1,", "source_version_id", "not a version id"),
    (f"{DS},{A},{B},,-1", "destination_version_id", "not a version id"),
    (f"{DS},{A},,,3", "destination_version_id", "without destination_image_set_id"),
])
def test_row_rules(tmp_path: Path, cells: str, column: str, fragment: str) -> None:
    err = one_error(tmp_path, f"{HEAD}\n{cells}\n")
    assert err.column == column and fragment in err.message and err.row == 1 and err.line == 2


def test_all_problems_of_a_row_are_reported(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, f"{HEAD},force\nx,y,z,v,w,maybe\n")
    assert [e.column for e in errs] == [
        "datastore_id", "source_image_set_id", "source_version_id", "destination_image_set_id",
        "destination_version_id", "force"]


SUB_HEAD = "datastore_id,source_image_set_id,destination_image_set_id,copiable_attributes,series_instance_uid,sop_instance_uid"


def csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@pytest.mark.parametrize("attrs,fragment", [
    ("{not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"Study": {"Series": {"1.2": {}}}, "Extra": 1}', "unexpected key 'Extra'"),
    ('{"SchemaVersion": "1.0", "Study": {"Series": {"1.2": {}}}}', "SchemaVersion must be '1.1'"),
    ('{"SchemaVersion": "1.1"}', '"Study": {"Series"'),
    ('{"Study": {"Series": []}}', '"Study": {"Series"'),
    ('{"Study": {"Series": {}}}', "name at least one series"),
    ('{"Study": {"DICOM": {}, "Series": {"1.2": {}}}}', "Study: unexpected key 'DICOM'"),
    ('{"Study": {"Series": {"1.2a": {}}}}', "not a DICOM series UID"),
    ('{"Study": {"Series": {"1..2": {}}}}', "not a DICOM series UID"),
    ('{"Study": {"Series": {"' + "1." * 32 + '1": {}}}}', "at most 64"),
    ('{"Study": {"Series": {"1.2": []}}}', "must be an object"),
    ('{"Study": {"Series": {"1.2": {"DICOM": {}}}}}', "unexpected key 'DICOM'"),
    ('{"Study": {"Series": {"1.2": {"Instances": ["1.3"]}}}}', "Instances must be an object"),
    ('{"Study": {"Series": {"1.2": {"Instances": {"x": {}}}}}}', "not a DICOM SOP instance UID"),
    ('{"Study": {"Series": {"1.2": {"Instances": {"1.3": {"a": 1}}}}}}', "must be {}"),
    ('{"Study": {"Series": {"1.2": {}, "1.2": {}}}}', "duplicate key '1.2'"),
    ('{"Study": {"Series": {"1.2": {"Instances": {"9": {}}}, "1.3": {"Instances": {"9": {}}}}}}',
     "listed under two series"),
])
def test_copiable_attributes_rules(tmp_path: Path, attrs: str, fragment: str) -> None:
    err = one_error(tmp_path, f"{SUB_HEAD}\n{DS},{A},{B},{csv_cell(attrs)},,\n")
    assert err.column == "copiable_attributes" and fragment in err.message, err.message


def test_copiable_attributes_canonical_forms() -> None:
    whole = canonical_attributes({"1.2": None})
    assert whole == '{"SchemaVersion":"1.1","Study":{"Series":{"1.2":{"Instances":{}}}}}'
    for form in ('{"Study":{"Series":{"1.2":{}}}}', '{"Study":{"Series":{"1.2":{"Instances":{}}}}}',
                 '{ "SchemaVersion" : "1.1", "Study": {"Series": {"1.2": {"Instances": {}}}}}'):
        assert parse_copiable_attributes(form) == whole
    two = parse_copiable_attributes('{"Study":{"Series":{"1.3":{"Instances":{"9.1":{},"1.1":{}}},"1.2":{}}}}')
    assert two == ('{"SchemaVersion":"1.1","Study":{"Series":{"1.2":{"Instances":{}},'
                   '"1.3":{"Instances":{"1.1":{},"9.1":{}}}}}}')


def test_copiable_attributes_length_limit() -> None:
    def attrs(n: int) -> str:
        return canonical_attributes({"1.2": [f"1.2.{i:060d}" for i in range(n)]})
    n = 1
    while len(attrs(n)) <= MAX_ATTRIBUTES_CHARS:
        n *= 2
    lo, hi = n // 2, n  # lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(attrs(mid)) <= MAX_ATTRIBUTES_CHARS else (lo, mid)
    assert parse_copiable_attributes(attrs(lo)) == attrs(lo)
    with pytest.raises(ValueError, match="too long"):
        parse_copiable_attributes(attrs(hi))


@pytest.mark.parametrize("attrs,series,sop,column,fragment", [
    ('{"Study":{"Series":{"1.2":{}}}}', "1.2", "", "series_instance_uid", "not both"),
    ("", "", "1.2.3", "sop_instance_uid", "needs series_instance_uid"),
    ("", "1.2.", "", "series_instance_uid", "not a DICOM series UID"),
    ("", "1.2", "abc", "sop_instance_uid", "not a DICOM SOP instance UID"),
    ("", "1.2 1.3", "1.2.7", "sop_instance_uid", "needs a single series_instance_uid"),
    ("", "1.2 1.x", "", "series_instance_uid", "characters): '1.x'"),
])
def test_friendly_subset_columns(tmp_path: Path, attrs: str, series: str, sop: str, column: str,
                                 fragment: str) -> None:
    err = one_error(tmp_path, f"{SUB_HEAD}\n{DS},{A},{B},{csv_cell(attrs)},{series},{sop}\n")
    assert err.column == column and fragment in err.message


def test_friendly_columns_equal_the_json_form(tmp_path: Path) -> None:
    attrs = csv_cell('{"Study":{"Series":{"1.2":{"Instances":{"1.2.7":{}}}}}}')
    path = write_csv(tmp_path, f"{SUB_HEAD}\n{DS},{A},{B},,1.2,1.2.7\n{DS},{A},{B},{attrs},,\n")
    first, second = all_specs(path)
    assert first.copiable_attributes == second.copiable_attributes
    assert first.is_subset


# ---------------------------------------------------------------- cross-row rules


def test_duplicate_row_id_names_both_rows(tmp_path: Path) -> None:
    text = (f"row_id,datastore_id,source_image_set_id,destination_image_set_id\nx,{DS},{A},\ny,{DS},{B},\n"
            f",{DS},{C},\nx,{DS},{A},{B}\n3,{DS},{C},{A}\n")
    errs = errors_of(tmp_path, text)
    assert [(e.row, e.line, e.column, e.message) for e in errs] == [
        (4, 5, "row_id", "duplicate row_id: row 4 has the same row_id as row 1"),
        (5, 6, "row_id", "duplicate row_id: row 5 has the same row_id as row 3"),  # row 3's default id is "3"
    ]


def test_repeated_rows(tmp_path: Path) -> None:
    sub = csv_cell('{"Study":{"Series":{"1.2":{}}}}')
    text = (f"datastore_id,source_image_set_id,destination_image_set_id,copiable_attributes,force,source_version_id\n"
            f"{DS},{A},{B},{sub},1,\n"      # 1
            f"{DS},{A},{B},{sub},0,\n"      # 2 differs by force
            f"{DS},{A},,,,\n"               # 3 new image set
            f"{DS},{A},{C},{sub},1,\n"      # 4 other destination
            f"{DS},{A},,,,\n"               # 5 repeats 3 (a second new image set)
            f"{DS},{A},{B},{sub},yes,1\n"   # 6 repeats 1 (a pin does not make it different)
            f"{DS2},{A},{B},{sub},1,\n"     # 7 other data store
            f"{DS},{A},{B},{sub},true,\n")  # 8 repeats 1 too
    errs = errors_of(tmp_path, text)
    assert [(e.row, e.message.split(" (")[0]) for e in errs] == [
        (5, "row 5 repeats row 3"), (6, "row 6 repeats row 1"), (8, "row 8 repeats row 1")]


def test_contradictory_source_pins(tmp_path: Path) -> None:
    text = (f"{HEAD}\n{DS},{A},,1,\n{DS},{A},{C},1,\n{DS},{A},{B},2,\n"   # rows 1-3: A pinned 1, 1, 2
            f"{DS},{C},,1,\n{DS},{B},{C},,\n{DS},{C},{A},,\n{DS},{C},{B},2,\n")  # C pinned 1 and 2 but written
    errs = errors_of(tmp_path, text)
    assert errs == []  # A is written by row 6, C by row 5: later pins are superseded
    text = f"{HEAD}\n{DS},{A},,1,\n{DS},{A},{C},1,\n{DS},{A},{B},2,\n{DS2},{A},,3,\n{DS},{A},{C},3,\n"
    errs = errors_of(tmp_path, text)
    assert [(e.row, e.column) for e in errs] == [
        (3, "source_version_id"), (5, None), (5, "source_version_id")]  # row 5 also repeats row 2
    assert f"pins image set {A} at version '2' but row 1 pins it at '1'" in errs[0].message


def test_report_counts(tmp_path: Path) -> None:
    text = (f"datastore_id,source_image_set_id,destination_image_set_id,series_instance_uid\n"
            f"{DS},{A},{B},1.2\n{DS},{A},,\n{DS2},{A},{C},1.3\n")
    report = validate(write_csv(tmp_path, text))
    assert report == ValidationReport(path=str(tmp_path / "m.csv"), rows=3, errors=[], datastores=2,
                                      image_sets=4, subset_rows=2)
    assert report.ok


def test_max_errors(tmp_path: Path) -> None:
    rows = "".join(f"{DS},bad{i}\n" for i in range(30))
    report = validate(write_csv(tmp_path, "datastore_id,source_image_set_id\n" + rows), max_errors=10)
    assert len(report.errors) == 10 and report.more_errors == 20 and not report.ok
    assert report.errors[0].row == 1


def test_manifest_invalid_lists_twenty() -> None:
    errs = [ManifestError("m.csv", i, "force", "bad", i + 1) for i in range(1, 26)]
    text = str(ManifestInvalid(errs))
    assert text.count("\n") == 20 and text.endswith("... and 5 more")
    assert text.splitlines()[0] == "m.csv: row 1 (line 2), column 'force': bad"
    assert str(ManifestError("m.csv", None, None, "no rows")) == "m.csv: no rows"
    assert str(ManifestError("m.csv", 4, None, "x")) == "m.csv: row 4: x"


def test_several_whole_series_in_one_friendly_cell_are_one_subset(tmp_path: Path) -> None:
    """`series_instance_uid` may list whole series separated by spaces: one row, one call,
    one new image set holding all of them (rows making new image sets never merge)."""
    attrs = csv_cell('{"Study":{"Series":{"1.3":{},"1.2":{}}}}')
    path = write_csv(tmp_path, f"{SUB_HEAD}\n{DS},{A},,,1.2  1.3,\n{DS},{A},{B},{attrs},,\n")
    listed, json_form = all_specs(path)
    assert listed.copiable_attributes == json_form.copiable_attributes == canonical_attributes(
        {"1.2": None, "1.3": None})
