"""The runner under every plausible reading of the service: the emulator's assumption
switches (batchcopy/emulator/assumptions.py), one alternative at a time against the
defaults, end to end over HTTP with the real CLI.

For each reading, a run of a scene with chains, merges, a forced copy, a mismatch, a row
naming an absent instance, a promote-to-primary copy and new image sets, under lost
answers, killed after its first calls, resumed, then rerun, then rerun with its journal lost
(the rows into new image sets find their copies); and a conflict scene (stale
versions and locked image sets from an outside writer). Every report row is checked
against the emulator's state read through the public API (GetImageSet,
GetImageSetMetadata), and every copy the service executed must be one journaled call:
0 duplicates.

BATCHCOPY_MATRIX=pairs adds every pair of alternatives of different switches (slow);
BATCHCOPY_MATRIX=random:N adds N random combinations of all switches (seeded).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from batchcopy.emulator.assumptions import SWITCHES
from batchcopy.emulator.config import FaultSpec
from conftest import DUMMY_CREDENTIALS, boto3_config
from kit.resumekit import Running, call_states, journal_rows, read_report, seed_world
from kit.runkit import FAST, patiently, run_cli, run_manifest, wait_active, write_manifest

SEED = {"seed": 41, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 4, "frames_per_instance": 1}
Combo = dict[str, str]


def alternatives() -> list[Combo]:
    """{} (the defaults) and every non-default reading alone; more with BATCHCOPY_MATRIX."""
    single = [{s.name: v} for s in SWITCHES for v in s.values if v != s.default]
    combos: list[Combo] = [{}, *single]
    mode = os.environ.get("BATCHCOPY_MATRIX", "")
    if mode == "pairs":
        combos += [{**a, **b} for a, b in itertools.combinations(single, 2) if a.keys() != b.keys()]
    elif mode.startswith("random:"):
        rng = random.Random(7)
        combos += [{s.name: rng.choice(s.values) for s in SWITCHES}
                   for _ in range(int(mode.split(":", 1)[1]))]
    return combos


def ident(combo: Combo) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(combo.items())) or "defaults"


def sops(image_set: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, ids in image_set["series"].items() for i in ids]


def one(series: str, sop: str) -> dict[str, str]:
    return {"series_instance_uid": series, "sop_instance_uid": sop}


def subset_copy(client: Any, ds: str, source: dict[str, Any], *, promote: bool = False) -> str:
    """A new image set holding the source's first instance (made by an outside client)."""
    s, i = sops(source)[0]
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {s: {"Instances": {i: {}}}}}})
    answer = patiently(lambda: client.copy_image_set(
        datastoreId=ds, sourceImageSetId=source["imageSetId"], promoteToPrimary=promote,
        copyImageSetInformation={"sourceImageSet": {
            "latestVersionId": wait_active(client, ds, source["imageSetId"])["versionId"],
            "DICOMCopies": {"copiableAttributes": attrs}}}))
    dest = answer["destinationImageSetProperties"]["imageSetId"]
    wait_active(client, ds, dest)
    wait_active(client, ds, source["imageSetId"])
    return str(dest)


def metadata(client: Any, ds: str, image_set: str, version: str) -> dict[str, Any]:
    blob = client.get_image_set_metadata(datastoreId=ds, imageSetId=image_set,
                                         versionId=version)["imageSetMetadataBlob"].read()
    return json.loads(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)


def held(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s, i) for s, body in doc["Study"]["Series"].items() for i in body.get("Instances", {})}


def build_scene(w: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows and, per row_id, what must be true afterwards."""
    c = w.client()
    a, b, c2, d = w.sets[0], w.sets[1], w.sets[2], w.sets[3]
    dest_a, dest_b = subset_copy(c, w.ds, a), subset_copy(c, w.ds, b)
    non_primary = subset_copy(c, w.ds, a)  # a copy without promoteToPrimary: not primary
    rows: list[dict[str, Any]] = []
    expect: dict[str, Any] = {}

    def add(row_id: str, source: dict[str, Any], want: Any, **kw: Any) -> None:
        rows.append({"row_id": row_id, "datastore_id": w.ds,
                     "source_image_set_id": source["imageSetId"], **kw})
        expect[row_id] = want

    add("new-whole", c2, ("SUCCEEDED", set(sops(c2))))
    add("new-series", c2, ("SUCCEEDED", {p for p in sops(c2) if p[0] == sops(c2)[0][0]}),
        series_instance_uid=sops(c2)[0][0])
    for k, p in enumerate(sops(a)[1:3]):  # merged into one call
        add(f"a-{k}", a, ("SUCCEEDED", {p}), destination_image_set_id=dest_a, **one(*p))
    s, i = sops(a)[1]
    add("absent", a, ("FAILED", "SubsetNotInSource"), destination_image_set_id=dest_a,
        **one(s, i + ".9"))
    for k, p in enumerate(sops(b)[1:3]):
        add(f"b-{k}", b, ("SUCCEEDED", {p}), destination_image_set_id=dest_b, **one(*p))
    add("forced", d, ("SUCCEEDED", set(sops(d))), destination_image_set_id=dest_a, force="true")
    add("mismatch", d, ("FAILED", "COPY_FAILED"), destination_image_set_id=dest_b,
        **one(*sops(d)[1]))
    add("promote", a, ("SUCCEEDED", {sops(a)[2]}), destination_image_set_id=non_primary,
        promote_to_primary="true", **one(*sops(a)[2]))
    return rows, expect


def check_truth(w: Any, report: list[dict[str, Any]], expect: dict[str, Any]) -> None:
    """Each row's status, against what the service shows through its public API."""
    c = w.client()
    assert [r["row_id"] for r in report] == list(expect)
    for r in report:
        status, detail = expect[r["row_id"]]
        got = "SUCCEEDED" if r["status"] == "SKIPPED" and status == "SUCCEEDED" else r["status"]
        assert got == status, (r["row_id"], r["status"], r["error_code"], r["evidence"])
        if r["error_code"] == "SubsetNotInSource":
            assert detail == "SubsetNotInSource" and r["call_id"] is None
            continue
        version = c.get_image_set(datastoreId=w.ds, imageSetId=r["result_image_set_id"],
                                  versionId=r["result_version_id"])
        if status == "SUCCEEDED":
            assert version["imageSetWorkflowStatus"] == "COPIED", (r["row_id"], version)
            doc = metadata(c, w.ds, r["result_image_set_id"], r["result_version_id"])
            assert detail <= held(doc), r["row_id"]
        else:
            assert version["imageSetWorkflowStatus"] == detail == r["workflow_status"]


def executed_once(w: Any, journal: Path, setup_copies: int) -> None:
    """Every copy the service executed is one journaled call that ended: no duplicate."""
    w.wait_idle()
    done = journal_rows(journal, "SELECT count(*) FROM calls WHERE state = 'DONE'")[0][0]
    assert w.copies_requested() - setup_copies == done, call_states(journal)
    assert set(call_states(journal)) <= {"DONE", "VOID", "REJECTED"}, call_states(journal)


@pytest.mark.parametrize("combo", alternatives(), ids=ident)
def test_scene_under_every_reading(emulator_factory: Any, client_env: dict[str, str],
                                   tmp_path: Path, combo: Combo) -> None:
    emulator = emulator_factory(assume=combo)
    w = seed_world(emulator, client_env, SEED)
    rows, expect = build_scene(w)
    w.wait_idle()
    setup = w.copies_requested()
    manifest = write_manifest(tmp_path / "m.csv", rows)
    journal, report = tmp_path / "j.sqlite", tmp_path / "r.parquet"
    # lost answers all along: reconciliation decides what happened, under this reading
    emulator.set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet",
                                   probability=0.35)], fault_seed=len(ident(combo)))
    first = Running(["run", str(manifest), "--journal", str(journal), "--report", str(report),
                     *FAST], w.env, tmp_path, "first")
    if first.wait_until(lambda: len(journal_rows(journal, "SELECT 1 FROM calls")) >= 3):
        first.kill()  # killed after its first calls: the next run settles them
    else:
        assert first.wait() in (0, 1), first.stderr()
    resumed = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
    emulator.set_faults([])
    out = read_report(report)
    # exit 1 when the rows that fail on purpose were decided by this run (the first may have
    # decided them before it was killed, or finished): only this run's failures count
    latest = journal_rows(journal, "SELECT max(run_id) FROM runs")[0][0]
    mine = [r for r in out if r["status"] == "FAILED" and r["run_id"] == latest]
    assert resumed.code == (1 if mine else 0), resumed.stderr
    check_truth(w, out, expect)
    executed_once(w, journal, setup)
    # and a plain rerun: nothing sent, every status as true as before
    calls = w.copy_calls()
    again = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
    assert again.code == 0, again.stderr  # earlier runs' FAILED rows are named, not alerted
    assert "2 FAILED from earlier runs" in again.stderr
    assert w.copy_calls() == calls
    check_truth(w, read_report(report), expect)
    # and with the journal lost: the rows into new image sets find their copies (run/present.py)
    made = {r["row_id"]: r["result_image_set_id"] for r in out}
    lost = run_manifest(manifest, w.env, tmp_path, journal=tmp_path / "lost.sqlite",
                        report=tmp_path / "lost.parquet")
    assert lost.code in (0, 1), lost.stderr
    found = {}
    for r in read_report(tmp_path / "lost.parquet"):
        if r["row_id"].startswith("new-"):
            assert r["status"] == "SKIPPED", (r["row_id"], r["status"], r["error_message"])
            found[r["row_id"]] = r["result_image_set_id"]
    # each matched with a copy of its own (when image sets are series, the whole copy and
    # the series copy hold the same: either may be found for either)
    assert sorted(found.values()) == sorted(made[k] for k in found)


CONFLICT_SWITCHES = ("stale_version", "locked", "version_order", "version_timestamps")


@pytest.mark.parametrize("combo", [c for c in alternatives() if not c or set(c) & set(CONFLICT_SWITCHES)],
                         ids=ident)
def test_outside_writers_under_every_reading(emulator_factory: Any, client_env: dict[str, str],
                                             tmp_path: Path, combo: Combo) -> None:
    """A stale version and a locked destination, however the service answers them."""
    emulator = emulator_factory(assume=combo)
    w = seed_world(emulator, client_env, SEED)
    c = w.client()
    a = w.sets[0]
    dest = subset_copy(c, w.ds, a)
    pinned = c.get_image_set(datastoreId=w.ds, imageSetId=dest)["versionId"]
    outside = subset_copy_into(c, w.ds, a, dest, pinned, sops(a)[1])  # the pin is stale now
    w.wait_idle()
    setup = w.copies_requested()

    def row(k: int, **kw: Any) -> dict[str, Any]:
        return {"row_id": f"r{k}", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
                "destination_image_set_id": dest, **one(*sops(a)[k]), **kw}

    # strict pins: a stale pin is CONFLICT, nothing sent, the destination unchanged
    strict = run_manifest(write_manifest(tmp_path / "strict.csv", [row(2, destination_version_id=pinned)]),
                          w.env, tmp_path, journal=tmp_path / "strict.sqlite",
                          report=tmp_path / "strict.parquet")
    (r,) = read_report(tmp_path / "strict.parquet")
    assert strict.code == 1 and r["status"] == "CONFLICT" and r["error_code"] == "StaleVersionPin"
    assert f"latest version is {outside}" in r["error_message"] and w.copies_requested() == setup
    # pins as hints: the service sees the stale version; the runner refreshes and copies
    hint = run_manifest(write_manifest(tmp_path / "hint.csv", [row(2, destination_version_id=pinned)]),
                        w.env, tmp_path, "--pins", "hint", journal=tmp_path / "hint.sqlite",
                        report=tmp_path / "hint.parquet")
    assert hint.code == 0, hint.stderr
    (r,) = read_report(tmp_path / "hint.parquet")
    assert r["status"] == "SUCCEEDED" and r["conflicts"] == 1
    check_truth(w, [r], {"r2": ("SUCCEEDED", {sops(a)[2]})})
    executed_once(w, tmp_path / "hint.sqlite", setup)
    # a destination LOCKED by an outside copy that lasts until the test moves the clock; the
    # row names (as a hint) the version before it: stale and locked at once
    before_lock = c.get_image_set(datastoreId=w.ds, imageSetId=dest)["versionId"]
    other = w.sets[2]  # another source: only the destination is locked
    emulator.update_config({"copy_base_s": 1e6})
    subset_copy_into(c, w.ds, other, dest, before_lock, sops(other)[0], wait=False, force=True)
    emulator.update_config({"copy_base_s": SEED_COPY_BASE_S})
    setup = w.copies_requested()
    sent = w.stats()["calls"].get("CopyImageSet", 0)
    locked = Running(["run", str(write_manifest(tmp_path / "locked.csv", [row(3, destination_version_id=before_lock)])),
                      "--journal", str(tmp_path / "locked.sqlite"), "--report",
                      str(tmp_path / "locked.parquet"), "--pins", "hint", *FAST], w.env, tmp_path,
                     "locked")
    # refused (however this reading says it), the runner waits out the lock; the test then
    # lets the outside copy end
    assert locked.wait_until(lambda: w.stats()["calls"].get("CopyImageSet", 0) > sent)
    emulator.set_clock(advance_s=2e4)
    assert locked.wait() == 0, locked.stderr()
    (r,) = read_report(tmp_path / "locked.parquet")
    assert r["status"] == "SUCCEEDED" and r["conflicts"] >= 1
    assert int(r["destination_version_used"]) > int(before_lock)
    check_truth(w, [r], {"r3": ("SUCCEEDED", {sops(a)[3]})})
    executed_once(w, tmp_path / "locked.sqlite", setup)


SEED_COPY_BASE_S = 2.0  # the emulator's default copy duration (seconds, before time_scale)


def subset_copy_into(client: Any, ds: str, source: dict[str, Any], dest: str, version: str,
                     pick: tuple[str, str], *, wait: bool = True, force: bool = False) -> str:
    """An outside writer copies one instance into dest; returns the version it made."""
    s, i = pick
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {s: {"Instances": {i: {}}}}}})
    answer = patiently(lambda: client.copy_image_set(
        datastoreId=ds, sourceImageSetId=source["imageSetId"], force=force, copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": attrs}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": version}}))
    if wait:
        wait_active(client, ds, dest)
    return str(answer["destinationImageSetProperties"]["latestVersionId"])


def test_the_matrix_covers_every_reading() -> None:
    covered = {(k, v) for combo in alternatives() for k, v in combo.items()}
    every = {(s.name, v) for s in SWITCHES for v in s.values if v != s.default}
    assert every <= covered
    assert DUMMY_CREDENTIALS and boto3_config  # the fixtures' helpers this module relies on


UNDO_SWITCHES = ("revert_primary", "revert_to_failed", "promote_side_effects")


@pytest.mark.parametrize("combo", [c for c in alternatives() if not c or set(c) & set(UNDO_SWITCHES)],
                         ids=ident)
def test_undo_under_every_reading(emulator_factory: Any, client_env: dict[str, str],
                                  tmp_path: Path, combo: Combo) -> None:
    """Undo where the service may refuse or may change more than the copy's result: a
    primary destination (a revert may be refused), a destination whose version before the
    run is COPY_FAILED (a revert to it may be refused), a promotion (it may have demoted
    other image sets). Whatever the reading, undo takes back what it can, never names a
    failed version, and says in its plan and report what it cannot restore."""
    from test_undo import metadata as content

    emulator = emulator_factory(assume=combo)
    w = seed_world(emulator, client_env, SEED)
    c = w.client()
    a, b, d = w.sets[0], w.sets[1], w.sets[3]
    primary = b["imageSetId"]  # seeded image sets are primary
    failed_into = subset_copy(c, w.ds, a)  # non-primary; then an outside copy that fails
    v = c.get_image_set(datastoreId=w.ds, imageSetId=failed_into)["versionId"]
    subset_copy_into(c, w.ds, d, failed_into, v, sops(d)[0])  # another patient: COPY_FAILED
    assert c.get_image_set(datastoreId=w.ds, imageSetId=failed_into)["imageSetWorkflowStatus"] \
        == "COPY_FAILED"
    w.wait_idle()
    before = {i: content(c, w.ds, i) for i in (primary, failed_into)}
    rows = [{"row_id": "into-primary", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
             "destination_image_set_id": primary, "force": "true", **one(*sops(a)[1])},
            {"row_id": "after-failed", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
             "destination_image_set_id": failed_into, **one(*sops(a)[2])},
            {"row_id": "promoted", "datastore_id": w.ds, "source_image_set_id": d["imageSetId"],
             "promote_to_primary": "true"}]
    run = run_manifest(write_manifest(tmp_path / "m.csv", rows), w.env, tmp_path)
    assert run.code == 0, run.stderr
    w.wait_idle()
    dry = run_cli(["undo", str(run.journal), "--dry-run"], w.env, cwd=tmp_path)
    assert dry.returncode == 0 and "undo cannot restore" in dry.stderr, dry.stderr
    done = run_cli(["undo", str(run.journal), "--yes", "--report", str(tmp_path / "undo.parquet"),
                    "--rate", "UpdateImageSetMetadata=20", "--rate", "DeleteImageSet=20",
                    "--poll-first", "0.02", "--poll-max", "0.2"], w.env, cwd=tmp_path)
    w.wait_idle()
    report = {r["row_id"]: r for r in read_report(tmp_path / "undo.parquet")}
    refused = combo.get("revert_primary") == "refused"
    assert done.returncode == (1 if refused else 0), done.stderr
    # a primary destination: reverted, or (refused) FAILED, saying undo cannot restore it
    if refused:
        r = report["into-primary"]
        assert (r["status"], r["error_code"]) == ("FAILED", "ValidationException")
        assert "undo cannot restore" in r["evidence"]
    else:
        assert report["into-primary"]["status"] == "SUCCEEDED"
        assert content(c, w.ds, primary) == before[primary]
    # the version before the run failed: the revert names the good one before it
    r = report["after-failed"]
    assert r["status"] == "SUCCEEDED", r
    assert int(r["to_version"]) < int(v) + 1 and content(c, w.ds, failed_into) == before[failed_into]
    # the promotion's result is deleted; what it may have changed besides is said
    r = report["promoted"]
    assert r["status"] == "SUCCEEDED" and "undo cannot restore" in r["evidence"], r
    demoted = combo.get("promote_side_effects") in ("source_demoted", "study_demoted")
    assert ("no longer primary" in r["evidence"]) is demoted, r["evidence"]


@pytest.mark.parametrize("reading", ["answer", "conflict"])
def test_reads_of_locked_image_sets_are_looked_at_again(
        emulator_factory: Any, client_env: dict[str, str], tmp_path: Path, reading: str) -> None:
    """Copies long enough that every poll, every version read of a chain and every
    reconciliation (answers lost) meets a LOCKED image set: under `conflict` those reads
    answer 409, and a 409 to a read is "still locked, look again": every row SUCCEEDED,
    none UNKNOWN or NOT_RUN, each copy made once."""
    emulator = emulator_factory(assume={"reads_while_locked": reading}, copy_base_s=30.0)
    w = seed_world(emulator, client_env, SEED)
    c = w.client()
    a, b = w.sets[0], w.sets[1]
    dest = subset_copy(c, w.ds, a)
    w.wait_idle()
    setup = w.copies_requested()
    rows = [{"row_id": f"a{k}", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
             "destination_image_set_id": dest, **one(*p)} for k, p in enumerate(sops(a)[1:4])]
    rows += [{"row_id": f"new{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
             for k, s in enumerate((b, w.sets[2]))]
    # the answers of two copies are lost: each is reconciled while its copy runs
    emulator.set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet", count=1),
                         FaultSpec(kind="lost_response", operation="CopyImageSet", after=3,
                                   count=1)])
    res = run_manifest(write_manifest(tmp_path / "m.csv", rows), w.env, tmp_path, "--no-merge")
    emulator.set_faults([])
    assert res.code == 0, res.stderr
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    assert res.summary()["reconciled_calls"] == 2, res.summary()
    conflicts = res.summary()["api"]["errors"].get("ConflictException", 0)
    assert (conflicts > 0) is (reading == "conflict"), res.summary()["api"]
    executed_once(w, res.journal, setup)
