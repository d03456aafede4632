"""Service limits met by the runner: a merged call too large for the frame quota is split,
the concurrent-copies quota is waited out, and --max-in-flight keeps under it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import control_call
from kit.runkit import instances, new_subset_destination, run_manifest, write_manifest

SEED = {"seed": 21, "datastores": 1, "patients": 2, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 4, "frames_per_instance": 1}


def seeded(emulator: Any) -> tuple[str, list[dict[str, Any]]]:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", SEED)
    assert status == 200
    store = summary["datastores"][0]
    return store["datastoreId"], store["imageSets"]


@pytest.mark.emulator_config(max_frames_per_copy=3)
def test_merged_call_over_the_frame_quota_is_split(emulator: Any, client_env: dict[str, str],
                                                   boto3_client: Any, tmp_path: Path) -> None:
    ds, sets = seeded(emulator)
    src = sets[0]
    dest = new_subset_destination(boto3_client, ds, src)
    sops = [(s, i) for s, ids in src["series"].items() for i in ids][1:]  # 7 instances
    manifest = write_manifest(tmp_path / "m.csv", [
        {"row_id": f"r{k}", "datastore_id": ds, "source_image_set_id": src["imageSetId"],
         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i}
        for k, (s, i) in enumerate(sops)])
    res = run_manifest(manifest, client_env, tmp_path)
    assert res.code == 0, res.stderr
    rows = res.rows()
    assert {r["status"] for r in rows} == {"SUCCEEDED"}
    assert all(r["call_rows"] <= 3 for r in rows)  # each call that went through fits the quota
    assert res.summary()["split_calls"] >= 1
    status, snap = control_call(emulator.endpoint, "GET", f"/_emulator/imagesets/{ds}/{dest}")
    assert instances(snap) == {(s, i) for s, ids in src["series"].items() for i in ids}


@pytest.mark.emulator_config(max_concurrent_copies_per_datastore=1, copy_base_s=30)
def test_concurrent_copy_quota_is_waited_out(emulator: Any, client_env: dict[str, str],
                                             tmp_path: Path) -> None:
    ds, sets = seeded(emulator)
    rows = [{"row_id": f"c{k}", "datastore_id": ds, "source_image_set_id": s["imageSetId"],
             "series_instance_uid": series}
            for k, (s, series) in enumerate((s, series) for s in sets for series in s["series"])]
    rows += [{"row_id": f"w{k}", "datastore_id": ds, "source_image_set_id": s["imageSetId"]}
             for k, s in enumerate(sets)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    res = run_manifest(manifest, client_env, tmp_path, "--max-attempts", "50")
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    assert sum(r["attempts"] for r in res.rows()) > len(rows)  # the quota was hit and retried
    assert emulator.stats()["copies_executed"] == len(rows)
    # with --max-in-flight at the service's number, the quota is never hit (a new journal,
    # and --no-skip-present: the copies are there, this run makes them again)
    res2 = run_manifest(manifest, client_env, tmp_path, "--max-in-flight", "1", "--no-skip-present",
                        report=tmp_path / "r2.parquet", journal=tmp_path / "j2.sqlite")
    assert res2.code == 0, res2.stderr
    assert sum(r["attempts"] for r in res2.rows()) == len(rows)
