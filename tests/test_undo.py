"""`batchcopy undo`: the plan (pure), and end to end over HTTP: a run taken back to where
it started, outside writes left alone, kill -9 in the middle without reverting twice."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from batchcopy.core.specs import CopyRequest
from batchcopy.undo.plan import DELETE, NONE, REVERT, DoneCall, Latest, plan_undo
from kit.resumekit import Running, journal_rows, read_report, seed_world
from kit.runkit import patiently, run_cli, run_manifest, wait_active, write_manifest
from test_resume import SEED, build_scene

DS = "d" * 32
UNDO_FAST = ["--rate", "UpdateImageSetMetadata=20", "--rate", "DeleteImageSet=20",
             "--poll-first", "0.02", "--poll-max", "0.2"]


# ---- the plan ----------------------------------------------------------------------------
def call(n: int, dest: str | None, named: str | None, made: str, result: str | None = None,
         status: str = "COPIED", promote: bool = False) -> DoneCall:
    req = CopyRequest(DS, "s" * 32, "1", dest, named, None, False, promote)
    return DoneCall(n, (f"k{n}",), req, result or dest or f"{n:032d}", made, status)


def test_a_chain_into_one_destination_is_one_revert_to_the_version_before_it() -> None:
    calls = [call(1, "D", "3", "4"), call(2, "D", "4", "5", status="COPY_FAILED"),
             call(3, "D", "5", "6")]
    (a,) = plan_undo(calls, {(DS, "D"): Latest("6", "ACTIVE")})
    assert (a.kind, a.expected_latest, a.target_version, a.call_ids) == (REVERT, "6", "3", [1, 2, 3])


def test_a_destination_written_since_the_run_is_left_alone_unless_forced() -> None:
    calls = [call(1, "D", "3", "4"), call(2, "D", "4", "5")]
    (a,) = plan_undo(calls, {(DS, "D"): Latest("6", "ACTIVE")})
    assert a.kind == NONE and "written since" in a.note and a.row_keys == ["k1", "k2"]
    (f,) = plan_undo(calls, {(DS, "D"): Latest("6", "ACTIVE")}, force=True)
    assert (f.kind, f.expected_latest, f.target_version) == (REVERT, "6", "3") and "loses" in f.note


def test_a_foreign_version_inside_the_chain_splits_it() -> None:
    # another writer made version 5 between the run's copies (a refreshed conflict)
    calls = [call(1, "D", "3", "4"), call(2, "D", "5", "6"), call(3, "D", "6", "7")]
    revert, left = plan_undo(calls, {(DS, "D"): Latest("7", "ACTIVE")})
    assert (revert.kind, revert.target_version, revert.call_ids) == (REVERT, "5", [2, 3])
    assert (left.kind, left.call_ids) == (NONE, [1]) and "another writer" in left.note


def test_new_image_sets_are_deleted_only_if_untouched_since() -> None:
    calls = [call(1, None, None, "2"), call(2, None, None, "2"),
             call(3, "P", "1", "2", result="N", promote=True)]  # promoted: a new image set N
    latest = {(DS, f"{1:032d}"): Latest("2", "ACTIVE"), (DS, f"{2:032d}"): Latest("3", "ACTIVE"),
              (DS, "N"): Latest("2", "ACTIVE")}
    one, two, promoted = plan_undo(calls, latest)
    assert one.kind == DELETE and two.kind == NONE and "written since" in two.note
    assert promoted.kind == DELETE and "promoted" in promoted.note


# ---- end to end ----------------------------------------------------------------------------
def metadata(client: Any, ds: str, image_set: str) -> dict[str, Any]:
    blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set)["imageSetMetadataBlob"].read()
    doc = json.loads(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)
    doc.pop("ImageSetID", None)
    return doc


def all_image_sets(client: Any, ds: str) -> dict[str, dict[str, Any]]:
    """Every image set's latest version and state, through the public API."""
    found = {}
    for page in client.get_paginator("search_image_sets").paginate(datastoreId=ds, searchCriteria={}):
        for s in page["imageSetsMetadataSummaries"]:
            got = client.get_image_set(datastoreId=ds, imageSetId=s["imageSetId"])
            found[s["imageSetId"]] = {"version": got["versionId"], "state": got["imageSetState"]}
    return found


def ran(emulator: Any, env: dict[str, str], tmp: Path) -> tuple[Any, Any, dict[str, Any], Path]:
    """The crash-test scene (new copies, chains into two destinations, forced copies), run."""
    w = seed_world(emulator, env, SEED)
    scene = build_scene(w)
    client = w.client()
    w.wait_idle()
    before = {"sets": all_image_sets(client, w.ds),
              "d1": metadata(client, w.ds, scene.d1), "d2": metadata(client, w.ds, scene.d2)}
    journal = tmp / "run.journal.sqlite"
    res = run_manifest(write_manifest(tmp / "m.csv", scene.rows), w.env, tmp, journal=journal)
    assert res.code == 0, res.stderr
    w.wait_idle()
    return w, scene, before, journal


def undo(w: Any, tmp: Path, source: Path, *extra: str) -> Any:
    return run_cli(["undo", str(source), "--report", str(tmp / "undo.parquet"), *UNDO_FAST,
                    *extra], w.env, cwd=tmp)


def test_undo_takes_a_run_back_and_changes_nothing_else(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, scene, before, journal = ran(emulator, client_env, tmp_path)
    client = w.client()
    created = {r["result_image_set_id"] for r in read_report(tmp_path / "report.parquet")
               if r["result_image_set_id"] not in (scene.d1, scene.d2)}
    # --dry-run first: the plan, nothing changed
    dry = undo(w, tmp_path, journal, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert len(created) == 10  # 4 whole copies and 6 series copies into new image sets
    assert f"2 revert(s), {len(created)} delete(s)" in dry.stderr
    assert "nothing was changed" in dry.stderr
    assert w.stats()["updates_requested"] == w.stats()["deletes_requested"] == 0
    # from the report: its summary names the journal
    res = undo(w, tmp_path, tmp_path / "report.parquet", "--yes")
    assert res.returncode == 0, res.stderr
    w.wait_idle()
    assert w.stats()["updates_requested"] == 2 and w.stats()["deletes_requested"] == len(created)
    # every destination's content is what it was before the run
    assert metadata(client, w.ds, scene.d1) == before["d1"]
    assert metadata(client, w.ds, scene.d2) == before["d2"]
    # every image set the run created is deleted, and nothing else changed
    after = all_image_sets(client, w.ds)
    assert set(after) == set(before["sets"])
    for image_set, was in before["sets"].items():
        if image_set in (scene.d1, scene.d2):
            assert int(after[image_set]["version"]) > int(was["version"])  # the revert's version
        else:
            assert after[image_set] == was, image_set
    for image_set in created:
        assert client.get_image_set(datastoreId=w.ds, imageSetId=image_set)["imageSetState"] == "DELETED"
    report = read_report(tmp_path / "undo.parquet")
    assert [r["row_id"] for r in report] == [r["row_id"] for r in scene.rows]
    assert {r["status"] for r in report} == {"SUCCEEDED"}
    # the rows are not done any more: a rerun of the manifest would copy them again
    assert journal_rows(journal, "SELECT DISTINCT status, error_code FROM rows") == [("NOT_RUN", "Undone")]
    # and undoing again has nothing left to do
    again = undo(w, tmp_path, journal, "--yes")
    assert again.returncode == 0 and "no copy to take back" in again.stderr


def test_an_outside_write_after_the_run_is_left_untouched(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, scene, before, journal = ran(emulator, client_env, tmp_path)
    client = w.client()
    # someone copies into d1 after the run
    src = w.sets[0]
    series = next(iter(src["series"]))
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {series: {"Instances": {
        src["series"][series][0]: {}}}}}})
    latest = wait_active(client, w.ds, scene.d1)["versionId"]
    patiently(lambda: client.copy_image_set(
        datastoreId=w.ds, sourceImageSetId=src["imageSetId"], force=True, copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": attrs}},
            "destinationImageSet": {"imageSetId": scene.d1, "latestVersionId": latest}}))
    touched = wait_active(client, w.ds, scene.d1)
    res = undo(w, tmp_path, journal, "--yes")
    assert res.returncode == 1, res.stderr
    report = {r["row_id"]: r for r in read_report(tmp_path / "undo.parquet")}
    into_d1 = [r for r in scene.rows if r.get("destination_image_set_id") == scene.d1]
    for row in into_d1:
        r = report[row["row_id"]]
        assert r["status"] == "CONFLICT" and "written since" in r["evidence"], r
    assert client.get_image_set(datastoreId=w.ds, imageSetId=scene.d1)["versionId"] == touched["versionId"]
    assert metadata(client, w.ds, scene.d2) == before["d2"]  # the rest was undone
    assert {r["status"] for k, r in report.items() if k not in {x["row_id"] for x in into_d1}} == {"SUCCEEDED"}


@pytest.mark.emulator_config(update_s=50.0, delete_s=50.0)  # 0.5 s each: time to kill
def test_kill_9_during_undo_then_again_reverts_nothing_twice(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, scene, before, journal = ran(emulator, client_env, tmp_path)
    client = w.client()
    open_at_kill = []
    for round_ in range(3):  # kill as soon as another change is out
        base = w.stats()["updates_requested"] + w.stats()["deletes_requested"]
        proc = Running(["undo", str(journal), "--yes", "--report", str(tmp_path / "undo.parquet"),
                        *UNDO_FAST], w.env, tmp_path, f"undo{round_}")
        if not proc.wait_until(lambda: w.stats()["updates_requested"]
                               + w.stats()["deletes_requested"] > base):
            break
        proc.kill()
        open_at_kill.append(journal_rows(journal, "SELECT count(*) FROM undo_actions WHERE state "
                                                  "IN ('SENT', 'ANSWERED', 'AMBIGUOUS')")[0][0])
    assert len(open_at_kill) == 3 and all(open_at_kill), open_at_kill  # changes were out
    res = undo(w, tmp_path, journal, "--yes")
    assert res.returncode == 0, res.stderr
    w.wait_idle()
    stats = w.stats()
    actions = journal_rows(journal, "SELECT kind, count(*) FROM undo_actions GROUP BY kind")
    assert dict(actions) == {"REVERT": 2, "DELETE": 10}
    assert stats["updates_requested"] == 2 and stats["deletes_requested"] == 10  # none twice
    assert metadata(client, w.ds, scene.d1) == before["d1"]
    assert metadata(client, w.ds, scene.d2) == before["d2"]
    assert {r["status"] for r in read_report(tmp_path / "undo.parquet")} == {"SUCCEEDED"}


def test_undo_off_a_terminal_without_yes_changes_nothing(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """Destructive commands never act off a terminal without --yes: exit 2, one line, not
    a single request (the plan's reads included), nothing reverted or deleted."""
    w, scene, before, journal = ran(emulator, client_env, tmp_path)
    calls = w.api_calls()
    res = undo(w, tmp_path, journal)  # a subprocess: stdin and stderr are pipes
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--yes" in lines[0] and "nothing was changed" in lines[0], lines
    assert w.api_calls() == calls
    assert w.stats()["updates_requested"] == w.stats()["deletes_requested"] == 0
    assert not (tmp_path / "undo.parquet").exists()
    # --dry-run needs no --yes: it changes nothing
    assert undo(w, tmp_path, journal, "--dry-run").returncode == 0
    assert w.stats()["updates_requested"] == w.stats()["deletes_requested"] == 0
