"""What a run spends per row, counted by the emulator: version reads only where a version
is not known (not for carried versions, nor for pins used as hints), and about one
completion poll per copy once the run has learnt how long its copies take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import boto3_config, control_call
from kit.runkit import new_subset_destination, run_manifest, write_manifest

SEED = {"seed": 11, "datastores": 1, "patients": 12, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 2}
FAST = ["--rate", "CopyImageSet=1000", "--rate", "GetImageSet=1000"]


def world(emulator: Any, client_env: dict[str, str],
          patients: int = 12) -> tuple[str, list[dict[str, Any]], Any]:
    import boto3

    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed",
                                   dict(SEED, patients=patients))
    assert status == 200, summary
    store = summary["datastores"][0]
    client = boto3.session.Session().client("medical-imaging", endpoint_url=emulator.endpoint,
                                            region_name="us-east-1", config=boto3_config())
    return store["datastoreId"], store["imageSets"], client


def reads_and_polls(emulator: Any, before: dict[str, Any]) -> tuple[int, int]:
    after = emulator.stats()
    reads = after["latest_version_reads"] - before["latest_version_reads"]
    gets = after["calls"].get("GetImageSet", 0) - before["calls"].get("GetImageSet", 0)
    return reads, gets - reads


@pytest.mark.emulator_config(enforce_rates=False)
@pytest.mark.parametrize("pin", ["none", "hint", "strict"])
def test_carried_and_hinted_versions_are_not_read_again(
        emulator: Any, client_env: dict[str, str], tmp_path: Path, pin: str) -> None:
    ds, sets, client = world(emulator, client_env)
    source = sets[0]
    dest = new_subset_destination(client, ds, source)
    pinned = client.get_image_set(datastoreId=ds, imageSetId=dest)["versionId"]
    # five other image sets (other studies: force) into one destination, one after another
    rows = [{"row_id": f"r{k}", "datastore_id": ds, "source_image_set_id": s["imageSetId"],
             "destination_image_set_id": dest, "force": "true"} for k, s in enumerate(sets[1:6])]
    if pin != "none":
        rows[0]["destination_version_id"] = pinned
    before = emulator.stats()
    res = run_manifest(write_manifest(tmp_path / "m.csv", rows), client_env, tmp_path,
                       "--no-skip-present", *FAST, *(["--pins", pin] if pin != "none" else []))
    assert res.code == 0, res.stderr
    assert [r["status"] for r in res.rows()] == ["SUCCEEDED"] * 5
    reads, _ = reads_and_polls(emulator, before)
    # each source once, the destination once (not at all with a pin used as a hint): rows
    # 2-5 carry the destination version the copy before them made
    assert reads == (5 if pin == "hint" else 6)
    assert emulator.stats()["calls"]["CopyImageSet"] - before["calls"].get("CopyImageSet", 0) == 5


@pytest.mark.emulator_config(enforce_rates=False, copy_base_s=8.0, copy_per_frame_s=0.0,
                             study_consistency_s=0.0)
def test_completion_polls_are_about_one_per_copy(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    # copies of 80 ms (8 s at the tests' time scale); a schedule from 5 ms growing by 1.5x
    # would poll each about 8 times
    ds, sets, _ = world(emulator, client_env, patients=40)
    rows = [{"row_id": f"r{k}", "datastore_id": ds, "source_image_set_id": s["imageSetId"]}
            for k, s in enumerate(sets)]
    before = emulator.stats()
    res = run_manifest(write_manifest(tmp_path / "m.csv", rows), client_env, tmp_path, *FAST,
                       "--max-in-flight", "1", "--poll-first", "0.005", "--poll-max", "2")
    assert res.code == 0, res.stderr
    reads, polls = reads_and_polls(emulator, before)
    assert reads == len(rows)
    # the first copy teaches the waiter (several polls), then about one each
    assert polls <= 1.5 * len(rows), polls
