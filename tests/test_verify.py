"""`batchcopy verify` and `run --verify`: the real CLI in a subprocess against the
emulator over HTTP, plus the comparisons on their own."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchcopy.verify.check import CHANGED, DIFFERENT, MISSING, by_sop, check_present, check_unchanged
from conftest import control_call
from kit.runkit import latest, new_subset_destination, run_cli, run_manifest, wait_active, write_manifest

SEED = {"seed": 3, "datastores": 1, "patients": 3, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 3, "frames_per_instance": 1}


def all_sops(source: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, sops in source["series"].items() for i in sops]


def verify_rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in pq.read_table(path).to_pylist()}


@pytest.fixture
def copied(emulator: Any, client_env: dict[str, str], boto3_client: Any,
           tmp_path: Path) -> dict[str, Any]:
    """A run with --verify: subset rows merged into one call into an existing destination,
    and a whole copy into a new image set. Every row verified, exit 0."""
    status, seeded = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    assert status == 200, seeded
    store = seeded["datastores"][0]
    ds, src, other = store["datastoreId"], store["imageSets"][0], store["imageSets"][1]
    dest = new_subset_destination(boto3_client, ds, src)  # holds the source's first instance
    rest = all_sops(src)[1:]
    rows = [{"row_id": f"s{k}", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
             "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}
            for k, (s, i) in enumerate(rest)]
    rows.append({"row_id": "whole", "datastore_id": ds, "source_image_set_id": other["imageSetId"]})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    res = run_manifest(manifest, client_env, tmp_path, "--verify")
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    assert len({r["call_id"] for r in res.rows() if r["row_id"] != "whole"}) == 1  # merged
    checked = verify_rows(tmp_path / "report-verify.parquet")
    assert set(checked) == {r["row_id"] for r in rows}
    assert {r["status"] for r in checked.values()} == {"SUCCEEDED"}
    assert all(r["evidence"].startswith("verified: ") for r in checked.values())
    assert "plus the copied instances, nothing else changed" in checked["s0"]["evidence"]
    assert "batchcopy: --verify: checking" in res.stderr and "Verified: every row" in res.stderr
    return {"ds": ds, "src": src, "dest": dest, "rest": rest, "rows": rows, "res": res,
            "env": client_env, "client": boto3_client, "emulator": emulator, "tmp": tmp_path}


def remove_instance(c: dict[str, Any], series: str, sop: str) -> str:
    """An outside writer removes one instance from the destination (a new version)."""
    client, ds, dest = c["client"], c["ds"], c["dest"]
    removable = {"SchemaVersion": 1.1, "Study": {"Series": {series: {"Instances": {sop: {}}}}}}
    client.update_image_set_metadata(
        datastoreId=ds, imageSetId=dest, latestVersionId=latest(client, ds, dest),
        updateImageSetMetadataUpdates={"DICOMUpdates": {"removableAttributes": json.dumps(removable).encode()}})
    c["emulator"].set_clock(advance_s=60)
    got = wait_active(client, ds, dest)
    assert got["imageSetWorkflowStatus"] == "UPDATED", got
    return str(got["versionId"])


def test_verify_catches_a_destination_that_lacks_an_instance(copied: dict[str, Any]) -> None:
    c, tmp = copied, copied["tmp"]
    series, sop = c["rest"][1]  # copied by row s1
    now = remove_instance(c, series, sop)
    out, retry = tmp / "v.parquet", tmp / "again.csv"
    proc = run_cli(["verify", str(c["res"].journal), "--out", str(out), "--failed-manifest", str(retry),
                    "-o", "json"], c["env"], cwd=tmp)
    assert proc.returncode == 1, proc.stderr
    got = json.loads(proc.stdout)
    assert got["rows"] == len(c["rows"]) and got["by_status"]["FAILED"] == 1
    (bad,) = got["problems"]["FAILED"]["rows"]
    assert bad["row_id"] == "s1" and bad["error_code"] == MISSING
    made = verify_rows(c["res"].report)["s1"]["result_version_id"]
    assert (f"1 of 1 instance(s) missing from {c['dest']} version {now} (latest): "
            f"SOP {sop} (series {series}); the copy's version {made} held it: removed since") \
        == bad["message"]
    # the rows merged with it, and the other copy, still verify
    rows = verify_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        **{r["row_id"]: "SUCCEEDED" for r in c["rows"]}, "s1": "FAILED"}
    with retry.open(newline="") as fh:
        assert [r["row_id"] for r in csv.DictReader(fh)] == ["s1"]
    # the table says the same, for a person
    table = run_cli(["verify", str(c["res"].report), "--out", str(tmp / "v2.parquet")], c["env"], cwd=tmp)
    assert table.returncode == 1, table.stderr
    assert f"checked {len(c['rows'])} done row(s)" in table.stdout
    line = next(ln for ln in table.stdout.splitlines() if " s1 " in ln)
    assert MISSING in line and sop in line and "removed since" in line


def test_verify_catches_a_copy_that_changed_more_than_it_asked(copied: dict[str, Any]) -> None:
    """A report claiming the merged copy named an older version of the destination (as if
    an outside writer had slipped in between): the version it made holds an instance that
    neither that version nor the copy had."""
    from batchcopy.report.parquet import iter_report_rows, write_report

    c, tmp = copied, copied["tmp"]
    rows = list(iter_report_rows(c["res"].report))
    named = int(rows[0].destination_version_used)
    bent = [dataclasses.replace(r, destination_version_used=str(named - 1))
            if r.row_id == "s0" else r for r in rows]
    report = tmp / "bent.parquet"
    asyncio.run(write_report(bent, report))
    proc = run_cli(["verify", str(report), "--out", str(tmp / "v.parquet"), "-o", "json"], c["env"], cwd=tmp)
    assert proc.returncode == 1, proc.stderr
    (bad,) = json.loads(proc.stdout)["problems"]["FAILED"]["rows"]
    first_series, first_sop = all_sops(c["src"])[0]  # version 1 of dest is empty: it came later
    assert bad["row_id"] == "s0" and bad["error_code"] == CHANGED
    assert f"(the version it named) plus the copied instances: added SOP {first_sop} " \
           f"(series {first_series})" in bad["message"]


def test_verify_of_rows_not_done_checks_nothing(copied: dict[str, Any]) -> None:
    from batchcopy.report.parquet import iter_report_rows, write_report

    c, tmp = copied, copied["tmp"]
    rows = [dataclasses.replace(r, status="FAILED") for r in iter_report_rows(c["res"].report)]
    report = tmp / "failed.parquet"
    asyncio.run(write_report(rows, report))
    proc = run_cli(["verify", str(report), "--out", str(tmp / "v.parquet")], c["env"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert f"not checked, as not done: {len(rows)} FAILED" in proc.stdout
    assert "Nothing to verify: no row is done" in proc.stdout


# ---------------------------------------------------------------- the comparisons alone

def doc(series: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"Study": {"Series": {uid: {"Instances": {sop: {"DICOM": d} for sop, d in sops.items()}}
                                 for uid, sops in series.items()}}}


def test_check_present_names_missing_and_differing_instances() -> None:
    source = doc({"1.1": {"a": {"X": 1}, "b": {"X": 2}, "c": {"X": 3}}})
    wanted = {("1.1", sop): inst for sop, (_, inst) in by_sop(source).items()}
    dest = by_sop(doc({"1.1": {"a": {"X": 1}}, "9.9": {"b": {"X": 5}}}))  # b filed elsewhere
    found = check_present(wanted, dest, "d version 4")
    assert [(f.code, f.text) for f in found] == [
        (MISSING, "1 of 3 instance(s) missing from d version 4: SOP c (series 1.1)"),
        (DIFFERENT, "1 instance(s) in d version 4 differ from the source: SOP b (series 1.1): X")]
    assert check_present(wanted, by_sop(source), "d") == []


def test_check_unchanged_names_added_lost_and_altered() -> None:
    before = by_sop(doc({"1": {"keep": {"A": 1}, "lost": {"A": 1}, "edit": {"A": 1}, "over": {"A": 1}}}))
    after = by_sop(doc({"1": {"keep": {"A": 1}, "edit": {"A": 2}, "over": {"A": 9}, "new": {"A": 1},
                              "extra": {"A": 1}}}))
    found = check_unchanged(before, after, {"new", "over"}, "v3", "v4")
    assert found is not None and found.code == CHANGED
    assert found.text == ("v4 (made by the copy) is not v3 (the version it named) plus the copied "
                          "instances: added SOP extra (series 1); lost SOP lost (series 1); "
                          "altered SOP edit (series 1): A")
    assert check_unchanged(before, by_sop(doc({"1": {"keep": {"A": 1}, "lost": {"A": 1},
                                                      "edit": {"A": 1}, "over": {"A": 7}}})),
                           {"over"}, "v3", "v4") is None


def test_verify_checks_rows_skipped_as_already_present(copied: dict[str, Any]) -> None:
    """A fresh journal over the same rows: the subset rows are SKIPPED as present (no copy,
    no call); verify checks them against the destination all the same."""
    c, tmp = copied, copied["tmp"]
    subset = [r for r in c["rows"] if r["row_id"] != "whole"]
    manifest = write_manifest(tmp / "again.csv", subset)
    res = run_manifest(manifest, c["env"], tmp, "--fresh", report=tmp / "again.parquet",
                       journal=tmp / "again.sqlite")
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert {r["status"] for r in rows} == {"SKIPPED"} and {r["call_id"] for r in rows} == {None}
    series, sop = c["rest"][0]  # row s0's instance
    remove_instance(c, series, sop)
    proc = run_cli(["verify", str(res.report), "--out", str(tmp / "v.parquet"), "-o", "json"],
                   c["env"], cwd=tmp)
    assert proc.returncode == 1, proc.stderr
    got = json.loads(proc.stdout)
    assert got["rows_checked"] == len(subset) and got["by_status"]["SUCCEEDED"] == len(subset) - 1
    (bad,) = got["problems"]["FAILED"]["rows"]
    assert bad["row_id"] == "s0" and bad["error_code"] == MISSING and sop in bad["message"]
