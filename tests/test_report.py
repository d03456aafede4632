"""Tests for batchcopy.report: the Parquet report (schema, rows, writing, reading back, s3)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchcopy.report.parquet import (
    REPORT_COLUMNS,
    REPORT_FORMAT_VERSION,
    report_metadata,
    ReportCounts,
    ReportWriter,
    RowResult,
    default_report_path,
    iter_report_rows,
    read_report,
    ReportUploadError,
    report_counts,
    report_schema,
    write_report,
)
from batchcopy.core.specs import CopySpec, Status
from batchcopy.report.summary import build_summary, summary_path, write_summary, write_summary_async


DS = "d" * 32
SRC = "0123456789abcdef0123456789abcdef"
DST = "fedcba9876543210fedcba9876543210"
ATTRS = '{"SchemaVersion":"1.1","Study":{"Series":{"1.2.3":{"Instances":{"1.2.3.4":{}}}}}}'
T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def make_rows(n: int) -> Iterator[RowResult]:
    """n varied rows: every status, with and without destination / subset / timestamps."""
    statuses = list(Status)
    for i in range(1, n + 1):
        status = statuses[i % len(statuses)]
        spec = CopySpec(
            manifest_row=i,
            row_id=f"row-{i}",
            datastore_id=DS,
            source_image_set_id=f"{i:032x}",
            source_version_id=str(i % 3 + 1) if i % 2 else None,
            destination_image_set_id=DST if i % 3 else None,
            destination_version_id="7" if i % 3 == 1 else None,
            copiable_attributes=ATTRS.replace("1.2.3.4", f"1.2.3.{i}") if i % 4 else None,
            force=i % 5 == 0,
            promote_to_primary=i % 7 == 0,
        )
        sent = status not in (Status.NOT_RUN, Status.SKIPPED)
        yield RowResult.from_spec(
            spec,
            status,
            source_version_used=str(i % 3 + 1) if sent else None,
            destination_version_used=("8" if spec.destination_image_set_id else None) if sent else None,
            result_image_set_id=(spec.destination_image_set_id or f"{i:032d}") if sent else None,
            result_version_id=str(i) if sent else None,
            workflow_status={Status.SUCCEEDED: "COPIED", Status.FAILED: "COPY_FAILED"}.get(status),
            error_code={Status.FAILED: "COPY_FAILED", Status.CONFLICT: "ConflictException"}.get(status),
            error_message="Series don't match" if status is Status.FAILED else None,
            attempts=1 + i % 3 if sent else 0,
            throttles=i % 4,
            conflicts=2 if status is Status.CONFLICT else 0,
            call_id=f"call-{i // 3}" if sent else None,
            call_rows=3 if sent else 0,
            started_at=T0 + timedelta(seconds=i) if sent else None,
            sent_at=T0 + timedelta(seconds=i, milliseconds=5) if sent else None,
            finished_at=T0 + timedelta(seconds=i + 30) if sent else None,
            evidence="destination version unchanged" if status is Status.UNKNOWN else None,
        )


# ---------------------------------------------------------------- schema


def test_schema_is_exact() -> None:
    ts = pa.timestamp("ms", tz="UTC")
    expected = [
        ("manifest_row", pa.int64()),
        ("row_id", pa.string()),
        ("status", pa.string()),
        ("datastore_id", pa.string()),
        ("source_image_set_id", pa.string()),
        ("destination_image_set_id", pa.string()),
        ("source_version_id", pa.string()),
        ("destination_version_id", pa.string()),
        ("copiable_attributes", pa.string()),
        ("force", pa.bool_()),
        ("promote_to_primary", pa.bool_()),
        ("source_version_used", pa.string()),
        ("destination_version_used", pa.string()),
        ("result_image_set_id", pa.string()),
        ("result_version_id", pa.string()),
        ("workflow_status", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("attempts", pa.int32()),
        ("throttles", pa.int32()),
        ("conflicts", pa.int32()),
        ("call_id", pa.string()),
        ("call_rows", pa.int32()),
        ("started_at", ts),
        ("sent_at", ts),
        ("finished_at", ts),
        ("evidence", pa.string()),
        ("run_id", pa.int64()),
        ("queue_wait_s", pa.float64()),
        ("copy_duration_s", pa.float64()),
        ("extras", pa.string()),
        ("detection_delay_s", pa.float64()),
    ]
    schema = report_schema()
    assert [(f.name, f.type) for f in schema] == expected
    assert REPORT_COLUMNS == tuple(name for name, _ in expected)
    assert tuple(f.name for f in dataclasses.fields(RowResult)) == REPORT_COLUMNS
    required = {f.name for f in schema if not f.nullable}
    assert required == {
        "manifest_row", "row_id", "status", "force", "promote_to_primary",
        "attempts", "throttles", "conflicts", "call_rows",
    }


def test_new_columns_durations_run_id_extras_and_run_metadata(tmp_path: Path) -> None:
    spec = CopySpec(1, "r1", DS, SRC, extras='{"notes":"left knee"}')
    row = RowResult.from_spec(spec, "SUCCEEDED", run_id=3, started_at=T0,
                              sent_at=T0 + timedelta(seconds=4, milliseconds=250),
                              finished_at=T0 + timedelta(seconds=34, milliseconds=250))
    assert (row.queue_wait_s, row.copy_duration_s, row.run_id) == (4.25, 30.0, 3)
    assert row.extras == '{"notes":"left knee"}' and row.to_spec().extras == row.extras
    assert RowResult(2, "r2", "SKIPPED").queue_wait_s is None  # no call: no durations
    assert RowResult(2, "r2", "FAILED", copy_duration_s=2).copy_duration_s == 2.0
    with pytest.raises(TypeError, match="copy_duration_s"):
        RowResult(2, "r2", "FAILED", copy_duration_s="2")  # type: ignore[arg-type]
    # format 3: the service's duration given, the detection delay beside it (never derived)
    given = RowResult.from_spec(spec, "SUCCEEDED", sent_at=T0, finished_at=T0 + timedelta(
        seconds=3), copy_duration_s=2.04, detection_delay_s=0)
    assert (given.copy_duration_s, given.detection_delay_s) == (2.04, 0.0)
    assert row.detection_delay_s is None
    with pytest.raises(TypeError, match="detection_delay_s"):
        RowResult(2, "r2", "FAILED", detection_delay_s="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_id"):
        RowResult(2, "r2", "FAILED", run_id="2")  # type: ignore[arg-type]
    path = tmp_path / "r.parquet"
    asyncio.run(write_report([row, given], path, run={"run_id": 3, "options": {"merge": True}}))
    assert report_metadata(path) == {"report_version": REPORT_FORMAT_VERSION,
                                     "run": {"run_id": 3, "options": {"merge": True}}}
    assert list(iter_report_rows(path)) == [row, given]


@pytest.mark.parametrize("version,missing", [
    ("1", ("run_id", "queue_wait_s", "copy_duration_s", "extras", "detection_delay_s")),
    ("2", ("detection_delay_s",))])
def test_format_1_and_2_reports_are_still_read(tmp_path: Path, version: str,
                                               missing: tuple[str, ...]) -> None:
    """Reports written before format 3 (no detection delay) and before format 2 (no run_id,
    durations, extras; no run metadata)."""
    rows = list(make_rows(12))
    old_columns = [c for c in REPORT_COLUMNS if c not in missing]
    old_schema = pa.schema([report_schema().field(c) for c in old_columns],
                           metadata={"batchcopy.report_version": version})
    table = pa.Table.from_pylist(
        [{c: (r.status.value if c == "status" else getattr(r, c)) for c in old_columns} for r in rows],
        schema=old_schema)
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    assert report_metadata(path) == {"report_version": version, "run": None}
    back = list(iter_report_rows(path))
    assert [r.row_id for r in back] == [r.row_id for r in rows]
    # durations are derived from the timestamps the old file has; the rest is empty
    assert [r.copy_duration_s for r in back] == [r.copy_duration_s for r in rows]
    assert any(r.copy_duration_s for r in back)
    assert {r.detection_delay_s for r in back} == {None}
    if version == "1":
        assert {r.run_id for r in back} == {None} and {r.extras for r in back} == {None}


def test_written_file_has_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    with ReportWriter(path) as w:
        w.write(make_rows(3))
    assert pq.read_schema(path).remove_metadata().equals(report_schema().remove_metadata())


# ---------------------------------------------------------------- RowResult


def test_from_spec_fills_requested_columns_and_refuses_overrides() -> None:
    spec = CopySpec(4, "r4", DS, SRC, "2", DST, "5", ATTRS, True, True)
    row = RowResult.from_spec(spec, "SUCCEEDED", result_version_id="6")
    assert row.status is Status.SUCCEEDED
    assert (row.manifest_row, row.row_id, row.datastore_id, row.source_image_set_id) == (4, "r4", DS, SRC)
    assert (row.source_version_id, row.destination_image_set_id, row.destination_version_id) == ("2", DST, "5")
    assert (row.copiable_attributes, row.force, row.promote_to_primary) == (ATTRS, True, True)
    assert row.to_spec() == spec
    assert row.to_spec(keep_versions=False) == dataclasses.replace(
        spec, source_version_id=None, destination_version_id=None
    )
    with pytest.raises(TypeError, match="row_id"):
        RowResult.from_spec(spec, Status.FAILED, row_id="other")


def test_row_result_normalises_and_validates() -> None:
    est = timezone(timedelta(hours=-5))
    row = RowResult(
        1, "a", "NOT_RUN",
        started_at=datetime(2026, 1, 1, 7, 0, tzinfo=est),
        sent_at=datetime(2026, 1, 1, 12, 0, 1),  # naive: taken as UTC
        finished_at=1_767_268_802.5,  # epoch seconds
    )
    assert row.status is Status.NOT_RUN
    assert row.started_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert row.started_at.tzinfo is timezone.utc
    assert row.sent_at == datetime(2026, 1, 1, 12, 0, 1, tzinfo=timezone.utc)
    assert row.finished_at == datetime(2026, 1, 1, 12, 0, 2, 500_000, tzinfo=timezone.utc)
    assert RowResult(1, "a", "FAILED", started_at="2026-01-01T12:00:00Z").started_at == datetime(
        2026, 1, 1, 12, tzinfo=timezone.utc
    )
    with pytest.raises(ValueError):
        RowResult(1, "a", "DONE")
    unset = RowResult(1, "a", "NOT_RUN", attempts=None, call_rows=None)  # type: ignore[arg-type]
    assert (unset.attempts, unset.call_rows) == (0, 0)
    with pytest.raises(TypeError, match="attempts"):
        RowResult(1, "a", "FAILED", attempts="2")  # type: ignore[arg-type]
    assert RowResult(1, "a", "FAILED", call_id=17, result_version_id=3).call_id == "17"  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error_message"):
        RowResult(1, "a", "FAILED", error_message=b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="row_id"):
        RowResult(1, None, "FAILED")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="manifest_row"):
        RowResult(None, "a", "FAILED")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="force"):
        RowResult(1, "a", "FAILED", force="true")  # type: ignore[arg-type]


# ---------------------------------------------------------------- round trip


def test_round_trip_values_nulls_and_utc_timestamps(tmp_path: Path) -> None:
    rows = list(make_rows(12))
    path = tmp_path / "out" / "deeper" / "r.parquet"
    counts = asyncio.run(write_report(iter(rows), str(path)))
    assert counts.rows == 12

    df = read_report(path)
    assert list(df.columns) == list(REPORT_COLUMNS)
    assert len(df) == 12
    assert str(df["started_at"].dtype) == "datetime64[ms, UTC]"
    assert df["manifest_row"].dtype == "int64"
    assert df["attempts"].dtype == "int32" and df["call_rows"].dtype == "int32"
    assert df["force"].dtype == bool
    for record, row in zip(df.to_dict("records"), rows):
        for name in REPORT_COLUMNS:
            expected = getattr(row, name)
            got = record[name]
            if expected is None:
                assert pd.isna(got), (name, got)
            elif isinstance(expected, datetime):
                assert got.to_pydatetime() == expected, name
                assert str(got.tz) == "UTC"
            elif isinstance(expected, Status):
                assert got == expected.value
            else:
                assert got == expected, name

    # ...and the streaming reader gives back equal RowResults.
    assert list(iter_report_rows(path, batch_size=5)) == rows


def test_timestamps_are_floored_to_milliseconds(tmp_path: Path) -> None:
    t = datetime(2026, 1, 1, 0, 0, 0, 123_999, tzinfo=timezone.utc)
    path = tmp_path / "r.parquet"
    with ReportWriter(path) as w:
        w.write([RowResult(1, "a", Status.SUCCEEDED, started_at=t)])
    (back,) = iter_report_rows(path)
    assert back.started_at == datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=timezone.utc)


def test_empty_report_is_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    counts = asyncio.run(write_report([], path))
    assert counts.rows == 0
    df = read_report(path)
    assert len(df) == 0 and list(df.columns) == list(REPORT_COLUMNS)


# ---------------------------------------------------------------- streaming


def test_streaming_writer_writes_row_groups_of_the_given_size(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    seen_buffered: list[int] = []
    writer = ReportWriter(path, row_group_rows=7)

    def rows() -> Iterator[RowResult]:
        for row in make_rows(50):
            seen_buffered.append(len(writer._buffer))
            yield row

    writer.write(rows())
    counts = writer.close()
    assert counts.rows == 50
    assert max(seen_buffered) < 7  # never more than one row group held
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 8
    assert [meta.row_group(i).num_rows for i in range(8)] == [7] * 7 + [1]
    assert list(iter_report_rows(path)) == list(make_rows(50))


def test_several_write_calls_append(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    rows = list(make_rows(10))
    with ReportWriter(path, row_group_rows=4) as w:
        w.write(rows[:3])
        w.write(rows[3:])
    assert list(iter_report_rows(path)) == rows


# ---------------------------------------------------------------- atomicity


class Boom(Exception):
    pass


def exploding(n_good: int) -> Iterator[RowResult]:
    yield from make_rows(n_good)
    raise Boom("journal read failed")


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    with pytest.raises(Boom):
        asyncio.run(write_report(exploding(25), path, row_group_rows=10))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_report(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    asyncio.run(write_report(make_rows(4), path))
    before = path.read_bytes()
    with pytest.raises(Boom):
        with ReportWriter(path, row_group_rows=3) as w:
            w.write(exploding(10))
    assert path.read_bytes() == before
    assert not (tmp_path / "r.parquet.tmp").exists()


def test_tmp_file_until_close_and_abort(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    w = ReportWriter(path, row_group_rows=2)
    w.write(make_rows(5))
    assert (tmp_path / "r.parquet.tmp").exists() and not path.exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        w.write(make_rows(1))


# ---------------------------------------------------------------- counts


def test_counts(tmp_path: Path) -> None:
    rows = [
        RowResult(1, "a", Status.SUCCEEDED),
        RowResult(2, "b", Status.FAILED, error_code="COPY_FAILED"),
        RowResult(3, "c", Status.CONFLICT, error_code="ConflictException"),
        RowResult(4, "d", Status.FAILED, error_code="ConflictException"),
        RowResult(5, "e", Status.FAILED, error_code="ConflictException"),
        RowResult(6, "f", Status.NOT_RUN, error_code="AccessDeniedException"),
        RowResult(7, "g", Status.SKIPPED),
    ]
    path = tmp_path / "r.parquet"
    with ReportWriter(path) as w:
        w.write(rows)
        counts = w.close()
    assert counts.rows == 7
    assert counts.by_status == {
        "SUCCEEDED": 1, "FAILED": 3, "CONFLICT": 1, "SKIPPED": 1, "NOT_RUN": 1, "UNKNOWN": 0,
    }
    assert list(counts.by_error_code.items()) == [
        ("ConflictException", 3), ("AccessDeniedException", 1), ("COPY_FAILED", 1),
    ]
    assert not counts.all_done
    assert report_counts(path) == counts

    done = ReportCounts()
    for row in rows[0], rows[6]:
        done.add(row)
    assert done.all_done and ReportCounts().all_done


# ---------------------------------------------------------------- paths


def test_paths() -> None:
    now = datetime(2026, 5, 9, 7, 35, 25, 999_000, tzinfo=timezone(timedelta(hours=2)))
    assert default_report_path("manifests/big.csv", now=now) == Path("reports/big-20260509T053525Z.parquet")
    assert default_report_path("s3://b/in/m.csv.gz", Path("/r"), now=now) == Path("/r/m-20260509T053525Z.parquet")
    assert default_report_path(Path("x/m.parquet"), now=now).name == "m-20260509T053525Z.parquet"
    auto = default_report_path("m.csv")
    assert auto.parent == Path("reports") and auto.name.startswith("m-") and auto.name.endswith("Z.parquet")
    assert summary_path("reports/m-1.parquet") == "reports/m-1.summary.json"
    assert summary_path("s3://b/k/m.parquet") == "s3://b/k/m.summary.json"
    assert summary_path(Path("r/odd")) == "r/odd.summary.json"


# ---------------------------------------------------------------- s3 (moto server on 127.0.0.1)


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    name = f"bc-report-{tmp_path.name.lower().replace('_', '-')}"[:63]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_report_and_summary_round_trip(bucket: str, tmp_path: Path) -> None:
    import boto3

    rows = list(make_rows(20))
    url = f"s3://{bucket}/runs/m-1.parquet"
    stage = tmp_path / "stage"
    counts = asyncio.run(write_report(iter(rows), url, tmp_dir=stage, row_group_rows=6))
    assert counts.rows == 20
    assert list(stage.iterdir()) == []  # the staged copy is gone after the upload

    df = read_report(url)
    assert df["row_id"].tolist() == [r.row_id for r in rows]
    assert str(df["finished_at"].dtype) == "datetime64[ms, UTC]"

    summary = build_summary(counts, {"report": url, "exit_code": 1})
    write_summary(summary, summary_path(url))
    body = boto3.client("s3").get_object(Bucket=bucket, Key="runs/m-1.summary.json")["Body"].read()
    assert json.loads(body) == summary

    async def in_loop() -> None:
        await write_summary_async(summary, f"s3://{bucket}/runs/again.summary.json")
        with pytest.raises(RuntimeError, match="write_summary_async"):
            write_summary(summary, f"s3://{bucket}/runs/never.summary.json")

    asyncio.run(in_loop())
    body = boto3.client("s3").get_object(Bucket=bucket, Key="runs/again.summary.json")["Body"].read()
    assert json.loads(body) == summary


def test_s3_upload_failure_keeps_the_local_report(bucket: str, tmp_path: Path) -> None:
    url = f"s3://{bucket}-missing/m.parquet"
    with pytest.raises(ReportUploadError) as info:
        asyncio.run(write_report(make_rows(5), url, tmp_dir=tmp_path))
    kept = info.value.local_path
    assert kept == tmp_path / "m.parquet" and str(kept) in str(info.value)
    assert list(iter_report_rows(kept)) == list(make_rows(5))


@pytest.mark.parametrize("module", ["batchcopy.report.parquet", "batchcopy.report.summary", "batchcopy.report.retry_manifest"])
def test_import_is_light(module: str) -> None:
    """Runner modules import RowResult (and the summary / retry-manifest helpers) without
    paying for pyarrow/pandas/aioboto3."""
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('pyarrow', 'pandas', 'aioboto3', 'batchcopy.aws.storage') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
