"""`batchcopy select` against the emulator over HTTP: the manifest it writes copies exactly
the matching series (checked after a real run with GetImageSetMetadata), `validate` and
`plan` take it as it is, it is right under every reading of what SearchImageSets leaves
open, it continues after an interrupt without reading anything twice, and its mistakes
are one line with no call."""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchcopy.cli import root as cli
from batchcopy.commands.select import SelectOptions, run_select
from batchcopy.console.logs import ConsoleOptions
from conftest import control_call
from kit.runkit import run_manifest

SEED = {"seed": 23, "patients": 4, "studies_per_patient": 2, "series_per_study": 3,
        "instances_per_series": 2, "frames_per_instance": 1}
CLI_RATES = ["SearchImageSets=200", "GetImageSetMetadata=500"]  # the emulator runs 100x


def seed(emulator: Any, spec: dict[str, Any] = SEED) -> tuple[str, list[dict[str, Any]]]:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", spec)
    assert status == 200, summary
    store = summary["datastores"][0]
    return store["datastoreId"], store["imageSets"]


def documents(client: Any, ds: str, sets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The truth: each seeded image set's metadata, read with boto3."""
    import gzip
    import json

    out = {}
    for s in sets:
        blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=s["imageSetId"])
        out[s["imageSetId"]] = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
    return out


def series_where(doc: dict[str, Any], **wanted: str) -> set[str]:
    return {uid for uid, s in doc["Study"]["Series"].items()
            if all(s["DICOM"].get(k) == v for k, v in wanted.items())}


def select(ds: str, out: Path | str, *where: str, **options: Any) -> tuple[int, str]:
    from batchcopy.aws.ratefile import parse_rate

    err = io.StringIO()
    rates = {op: (rate, burst) for op, rate, burst in map(parse_rate, CLI_RATES)}
    code = run_select(SelectOptions(datastore_id=ds, out=str(out), where=list(where), rates=rates,
                                    console=ConsoleOptions(progress="off"), **options), stream=err)
    return code, err.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_select_ct_then_run_makes_image_sets_holding_exactly_the_ct_series(
        emulator: Any, client_env: dict[str, str], boto3_client: Any, tmp_path: Path) -> None:
    ds, sets = seed(emulator)
    docs = documents(boto3_client, ds, sets)
    expected = {k: series_where(d, Modality="CT") for k, d in docs.items()}
    expected = {k: v for k, v in expected.items() if v}
    assert any(len(v) == 2 for v in expected.values())  # sources with two CT series: one row each
    out = tmp_path / "ct.csv"
    code, said = select(ds, out, "Modality=CT")
    assert code == 0, said
    rows = read_rows(out)
    assert {r["source_image_set_id"]: set(r["series_instance_uid"].split()) for r in rows} == expected
    assert len(rows) == len(expected) and all(not r["destination_image_set_id"] for r in rows)
    assert f"{len(expected)} source image set(s) selected" in said and "next: batchcopy plan" in said
    # validate and plan take it as it is
    runner = CliRunner()
    checked = runner.invoke(cli.app, ["validate", str(out)])
    assert checked.exit_code == 0 and f"{len(rows)} rows OK" in checked.output, checked.output
    planned = runner.invoke(cli.app, ["plan", str(out)])
    assert planned.exit_code == 0 and f"{len(rows)} calls make new image sets" in planned.output
    # run: every new image set holds exactly the CT series of its source, and nothing else
    before = {s["imageSetId"] for s in sets}
    res = run_manifest(out, client_env, tmp_path)
    assert res.code == 0, res.stderr
    made = {}
    for row in res.rows():
        assert row["status"] == "SUCCEEDED"
        new = row["result_image_set_id"]
        assert new not in before
        made[new] = row["source_image_set_id"]
    assert len(made) == len(rows)
    for new, source in made.items():
        doc = documents(boto3_client, ds, [{"imageSetId": new}])[new]
        assert set(doc["Study"]["Series"]) == expected[source]
        assert {s["DICOM"]["Modality"] for s in doc["Study"]["Series"].values()} == {"CT"}
        for uid, series in doc["Study"]["Series"].items():
            assert set(series["Instances"]) == set(docs[source]["Study"]["Series"][uid]["Instances"])


@pytest.mark.parametrize("reading", ["search_filter_pairs=any", "search_filter_pairs=documented",
                                     "search_between_upper=inclusive",
                                     "search_between_upper=exclusive"])
def test_select_under_every_search_reading(emulator: Any, client_env: dict[str, str],
                                           boto3_client: Any, control: Any, tmp_path: Path,
                                           reading: str) -> None:
    name, value = reading.split("=")
    control("POST", "/_emulator/config", {"assume": {name: value}})
    ds, sets = seed(emulator)
    docs = documents(boto3_client, ds, sets)
    patients = sorted({d["Patient"]["DICOM"]["PatientID"] for d in docs.values()})[:3]
    dates = sorted(d["Study"]["DICOM"]["StudyDate"] for d in docs.values())
    low, high = dates[1], dates[-2]  # both bounds fall on a study: inclusive, as written
    expected = {k: series_where(d, Modality="MR") for k, d in docs.items()
                if d["Patient"]["DICOM"]["PatientID"] in patients
                and low <= d["Study"]["DICOM"]["StudyDate"] <= high}
    expected = {k: v for k, v in expected.items() if v}
    assert expected and len(expected) < len(docs)
    out = tmp_path / "mr.csv"
    code, said = select(ds, out, f"PatientID={','.join(patients)}", f"StudyDate={low}-{high}",
                        "Modality=MR")
    assert code == 0, said
    got = {r["source_image_set_id"]: set(r["series_instance_uid"].split()) for r in read_rows(out)}
    assert got == expected


def test_an_interrupted_select_continues_without_reading_twice(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    ds, sets = seed(emulator, {**SEED, "patients": 12})
    out = tmp_path / "all-ct.csv"
    args = [sys.executable, "-m", "batchcopy", "select", "--datastore-id", ds, "-w", "Modality=CT",
            "-o", str(out), "--rate", "GetImageSetMetadata=8/1", "--concurrency", "2",
            "--progress", "log", "--log-interval", "0.2"]
    proc = subprocess.Popen(args, env=client_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while emulator.stats()["calls"].get("GetImageSetMetadata", 0) < 6:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "select: searched" in stderr and "SIGINT: stopping" in stderr
    assert "the same command continues" in stderr
    assert not out.exists()  # no half manifest
    first = emulator.stats()["calls"]["GetImageSetMetadata"]
    assert first < len(sets)
    code, said = select(ds, out, "Modality=CT")
    assert code == 0, said
    second = emulator.stats()["calls"]["GetImageSetMetadata"] - first
    cached = int(re.search(r"(\d+) from the cache", said).group(1))  # type: ignore[union-attr]
    # what the first answered is not read again; only the reads cut off in flight (at most
    # --concurrency 2) are lost to the interrupt
    assert second + cached == len(sets) and first - 2 <= cached <= first
    fresh = tmp_path / "fresh.csv"
    assert select(ds, fresh, "Modality=CT", cache=False)[0] == 0
    assert read_rows(fresh) == read_rows(out)


def test_select_into_an_existing_image_set_with_force(
        emulator: Any, client_env: dict[str, str], boto3_client: Any, tmp_path: Path) -> None:
    ds, sets = seed(emulator, {**SEED, "patients": 2})
    docs = documents(boto3_client, ds, sets)
    into = sets[0]["imageSetId"]
    out = tmp_path / "chest.csv"
    code, said = select(ds, out, "BodyPartExamined=chest", into=into, force=True, pin=True)
    assert code == 0, said
    rows = read_rows(out)
    expected = {k: series_where(d, BodyPartExamined="CHEST") for k, d in docs.items() if k != into}
    assert {r["source_image_set_id"]: set(r["series_instance_uid"].split()) for r in rows} == \
        {k: v for k, v in expected.items() if v}
    assert {(r["destination_image_set_id"], r["force"], r["source_version_id"]) for r in rows} == \
        {(into, "true", "1")}  # SearchImageSets' integer version, written as text
    res = run_manifest(out, client_env, tmp_path)
    assert res.code == 0, res.stderr
    held = documents(boto3_client, ds, [{"imageSetId": into}])[into]["Study"]["Series"]
    assert set().union(*expected.values()) <= set(held)


def test_select_writes_parquet_to_s3_and_validate_reads_it(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, monkeypatch: Any,
        tmp_path: Path) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket="curation")
    ds, _ = seed(emulator, {**SEED, "patients": 2})
    code, said = select(ds, "s3://curation/mr.parquet", "Modality=MR")
    assert code == 0 and "manifest: s3://curation/mr.parquet" in said, said
    checked = CliRunner().invoke(cli.app, ["validate", "s3://curation/mr.parquet"])
    assert checked.exit_code == 0 and "rows OK" in checked.output, checked.output


@pytest.mark.parametrize("where,options,fragment", [
    (["Modality"], {}, "expected NAME OP VALUE"),
    (["Modaliti=CT"], {}, "did you mean Modality?"),
    (["StudyDate>=2019"], {}, "'2019' is not a date"),
    (["Modality>CT"], {}, "> compares dates and times"),
    (["SeriesInstanceUID=1.2.x"], {}, "not a DICOM UID"),
    (["PatientID=@missing.txt"], {}, "cannot read"),
    (["Modality=CT"], {"out": "ct.txt"}, "must end in .csv"),
    (["Modality=CT"], {"datastore_id": "nope"}, "not a data store id"),
    (["Modality=CT"], {"into": "0" * 32}, "--into 000"),
    (["Modality=CT"], {"datastore_id": "9" * 32}, "not found"),
])
def test_mistakes_are_one_line_exit_2(emulator: Any, client_env: dict[str, str], tmp_path: Path,
                                      monkeypatch: Any, where: list[str], options: dict[str, Any],
                                      fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    ds, _ = seed(emulator, {**SEED, "patients": 1})
    opts = {"datastore_id": ds, "out": str(tmp_path / "m.csv"), **options}
    err = io.StringIO()
    before = sum(emulator.stats()["calls"].values())
    code = run_select(SelectOptions(where=where, console=ConsoleOptions(progress="off"), **opts),
                      stream=err)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert "batchcopy select: " in lines[0]
    calls = sum(emulator.stats()["calls"].values()) - before
    assert calls <= (1 if fragment in ("not found", "--into 000") else 0)  # the call that found it
    assert not list(tmp_path.glob("*.csv"))
