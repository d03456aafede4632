"""`batchcopy run` end to end: the real CLI in a subprocess, real HTTP, the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchcopy.emulator.config import FaultSpec
from kit.runkit import (instances, patiently, new_subset_destination, run_cli, run_manifest, wait_active,
                    write_manifest)
from conftest import control_call

SEED = {"seed": 11, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 3, "frames_per_instance": 1}


@pytest.fixture
def world(emulator: Any, client_env: dict[str, str]) -> dict[str, Any]:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    assert status == 200, summary
    store = summary["datastores"][0]
    return {"ds": store["datastoreId"], "sets": store["imageSets"], "env": client_env,
            "emulator": emulator}


def snapshot(emulator: Any, ds: str, image_set_id: str) -> dict[str, Any]:
    status, snap = control_call(emulator.endpoint, "GET", f"/_emulator/imagesets/{ds}/{image_set_id}")
    assert status == 200, snap
    return snap


def copy_calls(emulator: Any) -> int:
    """CopyImageSet calls the emulator accepted (throttled ones executed nothing)."""
    stats = emulator.stats()
    return stats["calls"].get("CopyImageSet", 0) - stats["throttled"].get("CopyImageSet", 0)


def distinct_new_copies(ds: str, sets: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Whole copies of every image set, then a new copy of each series: no two rows alike."""
    rows = [{"datastore_id": ds, "source_image_set_id": s["imageSetId"]} for s in sets]
    rows += [{"datastore_id": ds, "source_image_set_id": s["imageSetId"], "series_instance_uid": series}
             for s in sets for series in s["series"]]
    return [{"row_id": f"{prefix}{i}", **r} for i, r in enumerate(rows)]


def all_sops(source: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, sops in source["series"].items() for i in sops]


def test_new_copies_all_succeed_one_report_row_each(world: dict[str, Any], tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": f"n{i}", "datastore_id": ds, "source_image_set_id": s["imageSetId"]}
        for i, s in enumerate(sets)])
    res = run_manifest(manifest, world["env"], tmp_path)
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert [r["row_id"] for r in rows] == [f"n{i}" for i in range(len(sets))]
    assert {r["status"] for r in rows} == {"SUCCEEDED"}
    assert all(r["workflow_status"] == "COPIED" for r in rows)
    new_ids = {r["result_image_set_id"] for r in rows}
    assert len(new_ids) == len(sets) and not new_ids & {s["imageSetId"] for s in sets}
    stats = world["emulator"].stats()
    assert stats["copies_executed"] == len(sets) == copy_calls(world["emulator"])
    for r, s in zip(rows, sets):  # each new image set holds its source's instances
        assert instances(snapshot(world["emulator"], ds, r["result_image_set_id"])) == set(all_sops(s))
    summary = res.summary()
    assert summary["rows"] == len(sets) and summary["by_status"]["SUCCEEDED"] == len(sets)


def test_chained_subset_copies_carry_versions_without_conflicts(
        world: dict[str, Any], boto3_client: Any, tmp_path: Path) -> None:
    ds, src = world["ds"], world["sets"][0]
    dest = new_subset_destination(boto3_client, ds, src)
    start_version = int(boto3_client.get_image_set(datastoreId=ds, imageSetId=dest)["versionId"])
    rest = all_sops(src)[1:]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": f"c{k}", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}
        for k, (s, i) in enumerate(rest)])
    calls_before = copy_calls(world["emulator"])
    res = run_manifest(manifest, world["env"], tmp_path, "--no-merge")
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert [r["status"] for r in rows] == ["SUCCEEDED"] * len(rest)
    used = [int(r["destination_version_used"]) for r in rows]
    made = [int(r["result_version_id"]) for r in rows]
    assert used == list(range(start_version, start_version + len(rest)))
    assert made == [u + 1 for u in used]
    assert all(r["conflicts"] == 0 for r in rows)
    assert copy_calls(world["emulator"]) - calls_before == len(rest)  # no conflict retries
    snap = snapshot(world["emulator"], ds, dest)
    assert snap["latestVersionId"] == str(start_version + len(rest))
    assert instances(snap) == set(all_sops(src))


def test_merged_rows_make_fewer_calls_and_report_the_carrying_call(
        world: dict[str, Any], boto3_client: Any, tmp_path: Path) -> None:
    ds, src = world["ds"], world["sets"][1]
    dest = new_subset_destination(boto3_client, ds, src)
    rest = all_sops(src)[1:]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": f"m{k}", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}
        for k, (s, i) in enumerate(rest)])
    before = copy_calls(world["emulator"])
    res = run_manifest(manifest, world["env"], tmp_path)
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert len(rows) == len(rest) >= 3
    assert copy_calls(world["emulator"]) - before == 1
    assert len({r["call_id"] for r in rows}) == 1
    assert {r["call_rows"] for r in rows} == {len(rest)}
    assert instances(snapshot(world["emulator"], ds, dest)) == set(all_sops(src))
    assert res.summary()["merged_calls"] == 1


def test_shared_destination_forced_copies_and_async_copy_failed(
        world: dict[str, Any], boto3_client: Any, tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    dest = new_subset_destination(boto3_client, ds, sets[0])
    others = sets[1:]
    rows_in = [{"row_id": f"f{k}", "datastore_id": ds, "source_image_set_id": o["imageSetId"],
                "destination_image_set_id": dest, "force": "true"} for k, o in enumerate(others)]
    mismatch = others[0]
    series = next(iter(mismatch["series"]))
    rows_in.append({"row_id": "bad", "datastore_id": ds, "source_image_set_id": mismatch["imageSetId"],
                    "destination_image_set_id": dest, "series_instance_uid": series})
    manifest = write_manifest(tmp_path / "m.csv", rows_in)
    # f0 has already put the bad row's series into dest (forced): the presence check would
    # skip it; this test is about the service's asynchronous COPY_FAILED
    res = run_manifest(manifest, world["env"], tmp_path, "--no-skip-present")
    assert res.code == 1, res.stderr
    rows = {r["row_id"]: r for r in res.rows()}
    assert len(rows) == len(rows_in)
    for k in range(len(others)):
        assert rows[f"f{k}"]["status"] == "SUCCEEDED" and rows[f"f{k}"]["force"] is True
    bad = rows["bad"]
    assert bad["status"] == "FAILED" and bad["error_code"] == "COPY_FAILED"
    assert bad["workflow_status"] == "COPY_FAILED"
    assert "INVALID_REQUEST" in bad["error_message"]
    snap = snapshot(world["emulator"], ds, dest)
    expected = {all_sops(sets[0])[0]} | {x for o in others for x in all_sops(o)}
    assert instances(snap) == expected
    # the failed copy still made a version: the chain carried past it
    assert int(snap["latestVersionId"]) == int(bad["result_version_id"])


@pytest.mark.emulator_config(rates={"CopyImageSet": {"rate": 0.05, "burst": 1}})
def test_throttling_at_a_low_server_quota_still_succeeds(world: dict[str, Any], tmp_path: Path) -> None:
    # server: 0.05/s at time_scale 0.01 = 5/s; client paces at 25/s -> throttled, backs off
    ds, sets = world["ds"], world["sets"]
    manifest = write_manifest(tmp_path / "m.csv", distinct_new_copies(ds, sets, "t"))
    res = run_manifest(manifest, world["env"], tmp_path, "--max-attempts", "30")
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert len(rows) == len(sets) * 3 and {r["status"] for r in rows} == {"SUCCEEDED"}
    assert sum(r["throttles"] for r in rows) > 0
    assert res.summary()["api"]["throttles"].get("CopyImageSet", 0) > 0
    assert world["emulator"].stats()["copies_executed"] == len(rows)


def test_outside_writer_conflict_is_refreshed_or_reported(
        world: dict[str, Any], boto3_client: Any, tmp_path: Path) -> None:
    ds, src = world["ds"], world["sets"][2]
    dest = new_subset_destination(boto3_client, ds, src)
    pinned = boto3_client.get_image_set(datastoreId=ds, imageSetId=dest)["versionId"]
    s, i = all_sops(src)[1]
    row = {"row_id": "x", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
           "destination_image_set_id": dest, "destination_version_id": pinned,
           "series_instance_uid": s, "sop_instance_uid": i}
    manifest = write_manifest(tmp_path / "m.csv", [row])
    # an outside writer copies into the destination after the manifest was written
    s2, i2 = all_sops(src)[2]
    attrs = f'{{"SchemaVersion":"1.1","Study":{{"Series":{{"{s2}":{{"Instances":{{"{i2}":{{}}}}}}}}}}}}'
    patiently(lambda: boto3_client.copy_image_set(
        datastoreId=ds, sourceImageSetId=src["imageSetId"], copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": attrs}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": pinned}}))
    wait_active(boto3_client, ds, dest)
    before = snapshot(world["emulator"], ds, dest)
    copies = world["emulator"].stats()["calls"].get("CopyImageSet", 0)
    # strict pins (the default): the stale pin is a CONFLICT naming the latest version,
    # with nothing sent and the destination unchanged
    stale = run_manifest(manifest, world["env"], tmp_path, report=tmp_path / "strict.parquet",
                         journal=tmp_path / "strict.sqlite")
    assert stale.code == 1, stale.stderr
    (r,) = stale.rows()
    assert r["status"] == "CONFLICT" and r["error_code"] == "StaleVersionPin"
    assert f"latest version is {int(pinned) + 1}" in r["error_message"]
    assert world["emulator"].stats()["calls"].get("CopyImageSet", 0) == copies
    assert snapshot(world["emulator"], ds, dest)["versions"] == before["versions"]
    # pins as hints: the service's ConflictException, reported (--on-conflict fail) ...
    failed = run_manifest(manifest, world["env"], tmp_path, "--pins", "hint", "--on-conflict",
                          "fail", report=tmp_path / "fail.parquet", journal=tmp_path / "fail.sqlite")
    assert failed.code == 1, failed.stderr
    (r,) = failed.rows()
    assert r["status"] == "CONFLICT" and r["error_code"] == "ConflictException"
    # ... or refreshed
    refreshed = run_manifest(manifest, world["env"], tmp_path, "--pins", "hint")
    assert refreshed.code == 0, refreshed.stderr
    (r,) = refreshed.rows()
    assert r["status"] == "SUCCEEDED" and r["conflicts"] == 1
    assert int(r["destination_version_used"]) == int(pinned) + 1


@pytest.mark.emulator_config(auth={"keys": {"testing": "testing"}, "deny": {"testing": ["CopyImageSet"]}})
def test_access_denied_aborts_with_exit_3_and_reports_every_row(world: dict[str, Any], tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    manifest = write_manifest(tmp_path / "m.csv", distinct_new_copies(ds, sets, "a"))
    # one unit in flight: the copies that left before the first refusal came back are one
    # (with more, how many leave first is the machine's load, not the runner's rule)
    res = run_manifest(manifest, world["env"], tmp_path, "--max-in-flight", "1")
    assert res.code == 3, res.stderr
    rows = res.rows()
    assert len(rows) == len(sets) * 3
    # no copy was made: every row is NOT_RUN (the next run retries them), the refused one
    # with the service's error code; nothing was sent after it
    assert {r["status"] for r in rows} == {"NOT_RUN"}
    denied = [r for r in rows if r["error_code"] == "AccessDeniedException"]
    assert len(denied) == 1 and denied[0]["attempts"] == 1, denied
    assert world["emulator"].stats()["calls"].get("CopyImageSet", 0) == 1
    assert "AccessDenied" in res.stderr


def test_invalid_manifest_exits_2_and_sends_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    manifest = write_manifest(tmp_path / "bad.csv", [
        {"row_id": "ok", "datastore_id": ds, "source_image_set_id": sets[0]["imageSetId"]},
        {"row_id": "bad", "datastore_id": ds, "source_image_set_id": "not-an-id"}])
    before = sum(world["emulator"].stats()["calls"].values())
    res = run_manifest(manifest, world["env"], tmp_path)
    assert res.code == 2
    assert "bad.csv" in res.stderr and "row 2" in res.stderr and "source_image_set_id" in res.stderr
    assert sum(world["emulator"].stats()["calls"].values()) == before
    assert not res.report.exists()
    val = run_cli(["validate", str(manifest)], world["env"], cwd=tmp_path)
    assert val.returncode == 2 and "row 2" in val.stderr


def test_lost_responses_are_reconciled_not_duplicated(world: dict[str, Any], boto3_client: Any,
                                                      tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    dest = new_subset_destination(boto3_client, ds, sets[3])
    s, i = all_sops(sets[3])[1]
    world["emulator"].set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet", count=2)])
    before = world["emulator"].stats()["copies_requested"]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": "new", "datastore_id": ds, "source_image_set_id": sets[0]["imageSetId"]},
        {"row_id": "into", "datastore_id": ds, "source_image_set_id": sets[3]["imageSetId"],
         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}])
    res = run_manifest(manifest, world["env"], tmp_path)
    assert res.code == 0, res.stderr
    rows = {r["row_id"]: r for r in res.rows()}
    assert rows["new"]["status"] == rows["into"]["status"] == "SUCCEEDED"
    assert "happened" in rows["new"]["evidence"] and "happened" in rows["into"]["evidence"]
    assert world["emulator"].stats()["copies_requested"] - before == 2  # no duplicate copy
    assert res.summary()["reconciled_calls"] == 2


def test_help_does_not_import_heavy_modules(tmp_path: Path) -> None:
    code = ("import sys, runpy; sys.argv=['batchcopy','--help'];\n"
            "try:\n    runpy.run_module('batchcopy', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('pandas','pyarrow','aioboto3','aiobotocore','boto3') if m in sys.modules))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_failure_threshold_aborts_with_exit_3(world: dict[str, Any], tmp_path: Path) -> None:
    ds, sets = world["ds"], world["sets"]
    # well-formed rows naming instances the sources do not hold: each fails on the source's
    # metadata, before any copy call
    bad = [{"row_id": f"b{k}", "datastore_id": ds, "source_image_set_id": sets[k % len(sets)]["imageSetId"],
            "series_instance_uid": "1.2.3", "sop_instance_uid": f"1.2.3.{k}"} for k in range(12)]
    manifest = write_manifest(tmp_path / "m.csv", bad)
    res = run_manifest(manifest, world["env"], tmp_path, "--failure-min-rows", "4",
                       "--max-failure-rate", "0.5", "--max-in-flight", "1")
    assert res.code == 3, res.stderr
    rows = res.rows()
    assert len(rows) == 12
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert 4 <= len(failed) < 12
    assert {r["error_code"] for r in failed} == {"SubsetNotInSource"}
    assert {r["status"] for r in rows} == {"FAILED", "NOT_RUN"}
    assert world["emulator"].stats()["calls"].get("CopyImageSet", 0) == 0
    assert "failure threshold" in res.stderr


def test_outside_writer_during_the_run_conflicts_then_refreshes(
        world: dict[str, Any], boto3_client: Any, tmp_path: Path) -> None:
    """A writer outside batchcopy copies into the destination after the runner read its
    version and before its CopyImageSet executes (held 1 s by a latency fault)."""
    from kit.resumekit import start

    ds, src = world["ds"], world["sets"][1]
    dest = new_subset_destination(boto3_client, ds, src)
    (s1, i1), (s2, i2), (s3, i3) = all_sops(src)[1:4]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": f"r{k}", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}
        for k, (s, i) in enumerate([(s1, i1), (s2, i2)])])
    emu = world["emulator"]
    emu.set_faults([FaultSpec(kind="latency", operation="CopyImageSet", after=1, count=1,
                              latency_s=100)])  # the run's 2nd copy waits 1 s at the service
    base = emu.stats()["calls"].get("CopyImageSet", 0)
    run = start(manifest, world["env"], tmp_path, "outside", "--no-merge",
                journal=tmp_path / "j.sqlite", report=tmp_path / "r.parquet")
    assert run.wait_until(lambda: emu.stats()["calls"].get("CopyImageSet", 0) >= base + 2)
    version = wait_active(boto3_client, ds, dest)["versionId"]
    attrs = f'{{"SchemaVersion":"1.1","Study":{{"Series":{{"{s3}":{{"Instances":{{"{i3}":{{}}}}}}}}}}}}'
    patiently(lambda: boto3_client.copy_image_set(
        datastoreId=ds, sourceImageSetId=src["imageSetId"], copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": attrs}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": version}}))
    assert run.wait(timeout=60) == 0, run.stderr()
    import pyarrow.parquet as pq

    rows = {r["row_id"]: r for r in pq.read_table(tmp_path / "r.parquet").to_pylist()}
    assert rows["r0"]["status"] == rows["r1"]["status"] == "SUCCEEDED"
    assert rows["r0"]["conflicts"] == 0 and rows["r1"]["conflicts"] == 1
    # r1 first named the version r0 made, then (refreshed) the outside writer's
    assert int(rows["r1"]["destination_version_used"]) == int(rows["r0"]["result_version_id"]) + 1
    snap = snapshot(emu, ds, dest)
    assert {(s1, i1), (s2, i2), (s3, i3)} <= instances(snap)
    assert snap["latestVersionId"] == rows["r1"]["result_version_id"]


def test_undecidable_lost_copy_is_unknown_and_never_resent(world: dict[str, Any], boto3_client: Any,
                                                           tmp_path: Path) -> None:
    """The response of a new copy is lost; while the runner looks for the copy, another
    writer makes an identical copy of the same source: two candidates match, the runner
    cannot tell which is its own, reports UNKNOWN with the evidence and sends nothing
    again, on this run or on a resume."""
    from kit.resumekit import start

    ds, src = world["ds"], world["sets"][2]
    emu = world["emulator"]
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": "u", "datastore_id": ds, "source_image_set_id": src["imageSetId"]}])
    # the run's first SearchImageSets is its pre-run check of the runtime host, the second
    # the presence check's, before the copy; the third, the reconciliation's, is slowed down
    searched = emu.stats()["calls"].get("SearchImageSets", 0)
    emu.set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet", count=1),
                    FaultSpec(kind="latency", operation="SearchImageSets", count=1, after=2,
                              latency_s=100)])
    before = emu.stats()["copies_requested"]
    run = start(manifest, world["env"], tmp_path, "undecidable", journal=tmp_path / "j.sqlite",
                report=tmp_path / "r.parquet")
    assert run.wait_until(lambda: emu.stats()["calls"].get("SearchImageSets", 0) >= searched + 3)
    wait_active(boto3_client, ds, src["imageSetId"])
    patiently(lambda: boto3_client.copy_image_set(  # the other writer's identical copy
        datastoreId=ds, sourceImageSetId=src["imageSetId"],
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}}))
    assert run.wait(timeout=60) == 1, run.stderr()
    import pyarrow.parquet as pq

    (row,) = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert row["status"] == "UNKNOWN"
    assert "several image sets" in row["evidence"]
    assert emu.stats()["copies_requested"] - before == 2  # ours (lost) + the other writer's
    again = run_manifest(manifest, world["env"], tmp_path, "--resume",
                         report=tmp_path / "r2.parquet", journal=tmp_path / "j.sqlite")
    assert again.code == 1, again.stderr
    assert [r["status"] for r in again.rows()] == ["UNKNOWN"]
    assert emu.stats()["copies_requested"] - before == 2  # still never resent
