"""The last defence that needs no journal (--skip-present, run/present.py): a rerun whose
state directory is gone sends no CopyImageSet for rows whose copy the data store already
holds, new image sets included; an image set that only looks like the copy (an extra
instance, a changed attribute, an import duplicate, a superset) is not taken for it.

The real CLI in a subprocess against the emulator in this process; counts, never times."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from kit.resumekit import seed_world
from kit.runkit import FAST, latest, patiently, run_cli, wait_active, write_manifest

PRE_RUN_SEARCH = 1  # a run with rows to send reads one page of SearchImageSets first (preflight)
SEED = {"seed": 61, "datastores": 1, "patients": 3, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 2, "frames_per_instance": 1}


def new_copy_rows(w: Any) -> list[dict[str, Any]]:
    """Whole copies and series copies of every image set, each into a new image set, and
    one instance of the first into a new image set."""
    rows: list[dict[str, Any]] = []
    for k, s in enumerate(w.sets):
        rows.append({"row_id": f"w{k}", "source_image_set_id": s["imageSetId"]})
        for j, series in enumerate(s["series"]):
            rows.append({"row_id": f"s{k}{j}", "source_image_set_id": s["imageSetId"],
                         "series_instance_uid": series})
    first = w.sets[0]
    series = next(iter(first["series"]))
    rows.append({"row_id": "i0", "source_image_set_id": first["imageSetId"],
                 "series_instance_uid": series, "sop_instance_uid": first["series"][series][0]})
    return [{"datastore_id": w.ds, **r} for r in rows]


def run_with_state(w: Any, manifest: Path, report: Path, tmp: Path, *extra: str) -> Any:
    """`batchcopy run` with its default journal, in the state directory of client_env."""
    return run_cli(["run", str(manifest), "--report", str(report), *FAST, *extra], w.env, cwd=tmp)


def metadata(client: Any, ds: str, image_set: str) -> dict[str, Any]:
    blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set)["imageSetMetadataBlob"]
    return dict(json.loads(gzip.decompress(blob.read())))


def report_rows(report: Path) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in pq.read_table(report).to_pylist()}


def lose_state(w: Any) -> None:
    state = Path(w.env["BATCHCOPY_STATE_DIR"])
    assert (state / "ledger.sqlite").exists()  # the default state's ledger
    shutil.rmtree(state)


@pytest.fixture
def done(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    w = seed_world(emulator, client_env, SEED)
    rows = new_copy_rows(w)
    manifest = write_manifest(tmp_path / "m.csv", rows)
    first = run_with_state(w, manifest, tmp_path / "first.parquet", tmp_path)
    assert first.returncode == 0, first.stderr
    made = report_rows(tmp_path / "first.parquet")
    assert {r["status"] for r in made.values()} == {"SUCCEEDED"}
    assert len({r["result_image_set_id"] for r in made.values()}) == len(rows)
    w.wait_idle()
    return {"w": w, "rows": rows, "manifest": manifest, "made": made, "tmp": tmp_path}


def test_a_rerun_with_its_state_directory_deleted_sends_no_copy(done: dict[str, Any]) -> None:
    w, tmp, made = done["w"], done["tmp"], done["made"]
    lose_state(w)
    copies, searches = w.copy_calls(), w.stats()["calls"].get("SearchImageSets", 0)
    again = run_with_state(w, done["manifest"], tmp / "again.parquet", tmp)
    assert again.returncode == 0, again.stderr
    assert w.copy_calls() == copies  # new image sets included: whole, series and instance rows
    rows = report_rows(tmp / "again.parquet")
    assert set(rows) == set(made)
    for row_id, r in rows.items():
        assert r["status"] == "SKIPPED", (row_id, r["error_code"], r["error_message"])
        # each row is matched with its own copy, named in the evidence
        assert r["result_image_set_id"] == made[row_id]["result_image_set_id"], row_id
        assert f"image set {r['result_image_set_id']} version " in r["evidence"]
        assert "already holds exactly the" in r["evidence"]
    # SearchImageSets on the study, one page a row: inside its own quota (and the pre-run
    # check's one page)
    assert w.stats()["calls"]["SearchImageSets"] - searches == len(rows) + PRE_RUN_SEARCH
    assert json.loads((tmp / "again.summary.json").read_text())["rows_already_present"] == len(rows)
    # the image sets found are what the rows asked for: verify reads them back
    checked = run_cli(["verify", str(tmp / "again.parquet"), "--out", str(tmp / "v.parquet")],
                      w.env, cwd=tmp)
    assert checked.returncode == 0, checked.stderr
    assert {r["status"] for r in report_rows(tmp / "v.parquet").values()} == {"SUCCEEDED"}


def test_a_copy_that_differs_is_copied_again(done: dict[str, Any]) -> None:
    w, tmp, made = done["w"], done["tmp"], done["made"]
    c = w.client()
    a, b = w.sets[0], w.sets[1]
    a_series = list(a["series"])
    # an extra instance in the copy of a's first series (another series of a, copied in)
    extra = made["s00"]["result_image_set_id"]
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {
        a_series[1]: {"Instances": {a["series"][a_series[1]][0]: {}}}}}})
    patiently(lambda: c.copy_image_set(
        datastoreId=w.ds, sourceImageSetId=a["imageSetId"], copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": latest(c, w.ds, a["imageSetId"]),
                               "DICOMCopies": {"copiableAttributes": attrs}},
            "destinationImageSet": {"imageSetId": extra,
                                    "latestVersionId": latest(c, w.ds, extra)}}))
    wait_active(c, w.ds, extra)
    # an attribute changed: an instance of b's first series, in b itself (its copies keep
    # the old value, and stay ACTIVE / COPIED)
    b_series = next(iter(b["series"]))
    sop = b["series"][b_series][0]
    change = {"SchemaVersion": 1.1, "Study": {"Series": {b_series: {"Instances": {
        sop: {"DICOM": {"InstanceNumber": 99}}}}}}}
    c.update_image_set_metadata(
        datastoreId=w.ds, imageSetId=b["imageSetId"],
        latestVersionId=latest(c, w.ds, b["imageSetId"]),
        updateImageSetMetadataUpdates={"DICOMUpdates": {
            "updatableAttributes": json.dumps(change).encode()}})
    w.emulator.set_clock(advance_s=60)
    assert wait_active(c, w.ds, b["imageSetId"])["imageSetWorkflowStatus"] == "UPDATED"
    w.wait_idle()
    lose_state(w)
    copies = w.copies_requested()
    again = run_with_state(w, done["manifest"], tmp / "again.parquet", tmp)
    assert again.returncode == 0, again.stderr
    rows = report_rows(tmp / "again.parquet")
    copied = {k for k, r in rows.items() if r["status"] == "SUCCEEDED"}
    # s00's copy holds one instance too many; b's whole copy and its first series' copy
    # hold the old attribute; b's second series is unchanged
    assert copied == {"s00", "w1", "s10"}, {k: r["status"] for k, r in rows.items()}
    assert {r["status"] for k, r in rows.items() if k not in copied} == {"SKIPPED"}
    assert w.copies_requested() - copies == 3  # accepted copies (a throttled call is none)
    for k in copied:
        assert rows[k]["result_image_set_id"] != made[k]["result_image_set_id"]


def test_look_alikes_are_not_the_rows_copy(emulator: Any, client_env: dict[str, str],
                                           tmp_path: Path) -> None:
    """No copy made yet, but image sets of the study that resemble one: an import that
    duplicated the source (IMPORTED, non-primary), a non-primary copy for a row that
    promotes, a copy holding the instances and more. Every row is copied."""
    w = seed_world(emulator, client_env, SEED)
    a, b = w.sets[0], w.sets[1]
    series = list(a["series"])
    c = w.client()
    # b imported again: the service keeps the duplicate non-primary, IMPORTED
    doc = metadata(c, w.ds, b["imageSetId"])
    emulator.model.import_image_set(w.ds, {"Patient": doc["Patient"], "Study": doc["Study"]},
                                    is_primary=False, workflow="IMPORTED")
    # a whole, non-primary copy of a: a superset of a's series
    whole = patiently(lambda: c.copy_image_set(
        datastoreId=w.ds, sourceImageSetId=a["imageSetId"], copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": latest(c, w.ds, a["imageSetId"])}}))
    wait_active(c, w.ds, whole["destinationImageSetProperties"]["imageSetId"])
    wait_active(c, w.ds, a["imageSetId"])
    rows = [{"row_id": "b-whole", "source_image_set_id": b["imageSetId"]},
            {"row_id": "a-whole-primary", "source_image_set_id": a["imageSetId"],
             "promote_to_primary": "true"},
            {"row_id": "a-series", "source_image_set_id": a["imageSetId"],
             "series_instance_uid": series[0]},
            {"row_id": "a-one", "source_image_set_id": a["imageSetId"],
             "series_instance_uid": series[1], "sop_instance_uid": a["series"][series[1]][0]}]
    w.wait_idle()
    copies = w.copies_requested()
    manifest = write_manifest(tmp_path / "m.csv", [{"datastore_id": w.ds, **r} for r in rows])
    res = run_with_state(w, manifest, tmp_path / "r.parquet", tmp_path)
    assert res.returncode == 0, res.stderr
    out = report_rows(tmp_path / "r.parquet")
    assert {k: r["status"] for k, r in out.items()} == {r["row_id"]: "SUCCEEDED" for r in rows}
    assert w.copies_requested() - copies == len(rows)


def test_two_rows_with_the_same_content_need_two_copies(emulator: Any, client_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """A whole copy and a copy of every series of the same image set make the same content:
    the first run makes both; with the state lost, each is matched with one of them, and
    with one of them deleted, one is copied again."""
    w = seed_world(emulator, client_env, SEED)
    a = w.sets[0]
    both = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {s: {} for s in a["series"]}}})
    rows = [{"row_id": "whole", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"]},
            {"row_id": "every-series", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
             "copiable_attributes": both}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    first = run_with_state(w, manifest, tmp_path / "r1.parquet", tmp_path)
    assert first.returncode == 0, first.stderr
    made = report_rows(tmp_path / "r1.parquet")
    assert {r["status"] for r in made.values()} == {"SUCCEEDED"}  # the journal knew the first
    w.wait_idle()
    lose_state(w)
    copies = w.copies_requested()
    second = run_with_state(w, manifest, tmp_path / "r2.parquet", tmp_path)
    assert second.returncode == 0, second.stderr
    out = report_rows(tmp_path / "r2.parquet")
    assert {r["status"] for r in out.values()} == {"SKIPPED"} and w.copies_requested() == copies
    assert {r["result_image_set_id"] for r in out.values()} == \
        {r["result_image_set_id"] for r in made.values()}
    c = w.client()
    c.delete_image_set(datastoreId=w.ds, imageSetId=made["whole"]["result_image_set_id"])
    w.emulator.set_clock(advance_s=60)
    w.wait_idle()
    lose_state(w)
    third = run_with_state(w, manifest, tmp_path / "r3.parquet", tmp_path)
    assert third.returncode == 0, third.stderr
    out = report_rows(tmp_path / "r3.parquet")
    assert sorted(r["status"] for r in out.values()) == ["SKIPPED", "SUCCEEDED"]
    assert w.copies_requested() - copies == 1


def test_no_skip_present_copies_without_looking(done: dict[str, Any]) -> None:
    w, tmp = done["w"], done["tmp"]
    lose_state(w)
    copies, searches = w.copies_requested(), w.stats()["calls"].get("SearchImageSets", 0)
    again = run_with_state(w, done["manifest"], tmp / "again.parquet", tmp, "--no-skip-present")
    assert again.returncode == 0, again.stderr
    assert w.copies_requested() - copies == len(done["rows"])
    # one SearchImageSets: the pre-run check of the runtime host (aws/preflight.py), no row's
    assert w.stats()["calls"].get("SearchImageSets", 0) == searches + PRE_RUN_SEARCH
