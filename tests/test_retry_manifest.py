"""Tests for batchcopy.retry_manifest: the manifest of the rows to retry."""

from __future__ import annotations

import asyncio
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
