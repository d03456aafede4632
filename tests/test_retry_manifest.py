"""Tests for batchcopy.retry_manifest: the manifest of the rows to retry."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
from pathlib import Path

import pandas as pd

from batchcopy.report.parquet import iter_report_rows, write_report
from batchcopy.report.retry_manifest import FAILED_MANIFEST_COLUMNS, write_failed_manifest
from batchcopy.core.specs import Status
from test_report import DS, make_rows


def test_failed_manifest_round_trip(tmp_path: Path) -> None:
    rows = list(make_rows(24))
    report = tmp_path / "r.parquet"
    asyncio.run(write_report(rows, report))
    out = tmp_path / "retry" / "m.retry.csv"
    n = write_failed_manifest(iter_report_rows(report), out)
    retry = [r for r in rows if r.status in (Status.FAILED, Status.CONFLICT, Status.UNKNOWN, Status.NOT_RUN)]
    assert n == len(retry) == 16

    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == list(FAILED_MANIFEST_COLUMNS)
    assert df["row_id"].tolist() == [r.row_id for r in retry]
    assert df["datastore_id"].tolist() == [DS] * n
    assert df["source_image_set_id"].tolist() == [r.source_image_set_id for r in retry]
    assert df["destination_image_set_id"].tolist() == [r.destination_image_set_id or "" for r in retry]
    assert df["copiable_attributes"].tolist() == [r.copiable_attributes or "" for r in retry]
    assert set(df["source_version_id"]) == {""} and set(df["destination_version_id"]) == {""}
    assert df["force"].tolist() == ["true" if r.force else "false" for r in retry]
    assert df["promote_to_primary"].tolist() == ["true" if r.promote_to_primary else "false" for r in retry]
    assert {"true", "false"} == set(df["force"])  # both values occur
    # pandas' own inference reads the booleans as booleans
    assert pd.read_csv(out)["force"].dtype == bool


def test_failed_manifest_options(tmp_path: Path) -> None:
    rows = list(make_rows(12))
    out = tmp_path / "pins.csv.gz"
    n = write_failed_manifest(rows, out, statuses=[Status.CONFLICT], keep_versions=True)
    conflicts = [r for r in rows if r.status is Status.CONFLICT]
    assert n == len(conflicts) == 2
    with gzip.open(out, "rt") as fh:
        df = pd.read_csv(fh, dtype=str, keep_default_na=False)
    assert df["source_version_id"].tolist() == [r.source_version_id or "" for r in conflicts]
    assert df["destination_version_id"].tolist() == [r.destination_version_id or "" for r in conflicts]
    assert not (tmp_path / "pins.csv.gz.tmp").exists()

    empty = tmp_path / "none.csv"
    assert write_failed_manifest([r for r in rows if r.status is Status.SUCCEEDED], empty) == 0
    assert empty.read_text() == ",".join(FAILED_MANIFEST_COLUMNS) + "\n"


def test_failed_manifest_reads_back_as_the_same_specs(tmp_path: Path) -> None:
    from batchcopy.manifest.scan import read_specs, validate

    rows = list(make_rows(30))
    for name, keep in (("retry.csv", False), ("retry-pinned.csv.gz", True)):
        out = tmp_path / name
        n = write_failed_manifest(rows, out, keep_versions=keep)
        retry = [r for r in rows if r.status.value in ("FAILED", "CONFLICT", "UNKNOWN", "NOT_RUN")]
        assert n == len(retry) == 20
        specs = [s for batch in read_specs(out, batch_size=7) for s in batch]
        # the retry manifest numbers its own rows; row_id carries the original identity
        expected = [
            dataclasses.replace(r.to_spec(keep_versions=keep), manifest_row=i)
            for i, r in enumerate(retry, start=1)
        ]
        assert specs == expected
        report = validate(out)
        assert report.ok, [str(e) for e in report.errors]
        assert report.rows == n


def test_failed_manifest_in_the_form_of_its_manifest(tmp_path: Path) -> None:
    """Columns and delimiter of the manifest; subsets in the friendly cells when they fit
    (one instance, whole series), else in copiable_attributes (added when missing);
    row_id and datastore_id added when the manifest had none; the curator's columns kept."""
    from batchcopy.core.specs import CopySpec
    from batchcopy.manifest.rules import canonical_attributes
    from batchcopy.manifest.scan import read_specs, validate
    from batchcopy.report.parquet import RowResult

    subsets = [canonical_attributes({"1.2": ["1.2.7"]}), canonical_attributes({"1.2": None, "1.3": None}),
               canonical_attributes({"1.2": ["1.2.7", "1.2.8"]}), None]
    rows = [RowResult.from_spec(CopySpec(manifest_row=i, row_id=str(i), datastore_id=DS,
                                         source_image_set_id=f"{i:032x}", copiable_attributes=attrs,
                                         extras='{"notes":"n%d","Patient Name":"Doe"}' % i),
                                Status.FAILED)
             for i, attrs in enumerate(subsets, start=1)]
    form = {"columns": ["source_image_set_id", "notes", "series_instance_uid", "sop_instance_uid",
                        "Patient Name", ""], "delimiter": ";"}
    out = tmp_path / "retry.csv"
    assert write_failed_manifest(rows, out, form=form) == 4
    with out.open(newline="", encoding="utf-8") as fh:
        header, *lines = list(csv.reader(fh, delimiter=";"))
    assert header == ["row_id", "datastore_id", "source_image_set_id", "notes", "series_instance_uid",
                      "sop_instance_uid", "Patient Name", "copiable_attributes"]
    cells = [dict(zip(header, line)) for line in lines]
    assert [(c["series_instance_uid"], c["sop_instance_uid"]) for c in cells] == \
        [("1.2", "1.2.7"), ("1.2 1.3", ""), ("", ""), ("", "")]
    assert [c["copiable_attributes"] for c in cells] == ["", "", subsets[2], ""]
    assert [c["notes"] for c in cells] == ["n1", "n2", "n3", "n4"]
    specs = [s for b in read_specs(out, extra_columns="ignore") for s in b]
    assert [s.copiable_attributes for s in specs] == subsets
    assert validate(out, extra_columns="ignore").ok
