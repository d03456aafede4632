"""Crash safety: kill -9 at many points, resume, and end exactly as an uninterrupted run;
cron re-runs, changed rows, the retry manifest and --max-duration.

Every test runs the real CLI in a subprocess against the emulator in this process (which
outlives the runner it kills). Kill points are chosen from what the journal and the
emulator show, not from sleeps."""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchcopy.emulator.config import FaultSpec
from kit.resumekit import (World, call_states, copy_job, distinct_copies, instance_set, journal_rows,
                       read_report, read_summary, row_states, runs_started, seed_world, start)
from kit.runkit import FAST, new_subset_destination, run_cli, run_manifest, write_manifest

SEED = {"seed": 23, "datastores": 1, "patients": 6, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 3, "frames_per_instance": 1}
SLOW_COPIES = {"copy_base_s": 20.0}  # 0.2 s per copy at the tests' time scale
DONE = {"SUCCEEDED", "SKIPPED"}
WIDE = {"seed": 29, "datastores": 1, "patients": 12, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 1, "frames_per_instance": 1}


def sops(image_set: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, ids in image_set["series"].items() for i in ids]


def series(image_set: dict[str, Any], k: int) -> str:
    return list(image_set["series"])[k]


@dataclass
class Scene:
    """A seeded emulator with two existing destinations, and the manifest for it."""

    world: World
    d1: str
    d2: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def build_scene(world: World) -> Scene:
    """New copies, chained subset copies into two destinations, forced copies: 22 rows.

    Destinations hold instances of studies 4 and 5 only, new copies are of studies 0-3,
    so no destination ever looks like a new copy to reconciliation."""
    client = world.client()
    s = world.sets
    d1 = new_subset_destination(client, world.ds, s[4])
    d2 = new_subset_destination(client, world.ds, s[5])
    d1_version = client.get_image_set(datastoreId=world.ds, imageSetId=d1)["versionId"]
    scene = Scene(world, d1, d2)

    def add(row_id: str, source: dict[str, Any], **kw: Any) -> None:
        scene.rows.append({"row_id": row_id, "datastore_id": world.ds,
                           "source_image_set_id": source["imageSetId"], **kw})

    def into(dest: str, source: dict[str, Any], k: int) -> dict[str, Any]:
        ser, sop = sops(source)[k]
        return {"destination_image_set_id": dest, "series_instance_uid": ser,
                "sop_instance_uid": sop}

    add("new-0", s[0])
    add("d1-1", s[4], source_version_id="1", destination_version_id=d1_version, **into(d1, s[4], 1))
    add("new-1", s[1])
    add("d2-1", s[5], **into(d2, s[5], 1))
    add("d1-2", s[4], **into(d1, s[4], 2))
    add("d2-2", s[5], **into(d2, s[5], 2))
    add("d1-3", s[4], **into(d1, s[4], 3))
    add("new-2", s[2])
    add("d2-f", s[1], destination_image_set_id=d2, force="true")
    add("d1-4", s[4], **into(d1, s[4], 4))
    add("d2-3", s[5], **into(d2, s[5], 3))
    add("new-3", s[3])
    add("d1-5", s[4], **into(d1, s[4], 5))
    add("d2-4", s[5], **into(d2, s[5], 4))
    add("ser-0", s[0], series_instance_uid=series(s[0], 0))
    add("d1-f", s[0], destination_image_set_id=d1, force="true")
    add("d2-5", s[5], **into(d2, s[5], 5))
    add("ser-1", s[1], series_instance_uid=series(s[1], 0))
    add("ser-2", s[2], series_instance_uid=series(s[2], 0))
    add("ser-3", s[3], series_instance_uid=series(s[3], 0))
    add("ser-2b", s[2], series_instance_uid=series(s[2], 1))
    add("ser-3b", s[3], series_instance_uid=series(s[3], 1))
    return scene


def outcome_by_row(scene: Scene, report: list[dict[str, Any]]) -> dict[str, Any]:
    """What each row left behind, comparable across emulators: the instance set of the
    image set it wrote (new image set ids depend on the order of creation)."""
    w = scene.world
    out: dict[str, Any] = {}
    for r in report:
        out[r["row_id"]] = instance_set(w.snapshot(r["result_image_set_id"]))
    for name, dest in (("D1", scene.d1), ("D2", scene.d2)):
        snap = w.snapshot(dest)
        out[name] = (instance_set(snap), snap["latestVersionId"],
                     [v["workflowStatus"] for v in snap["versions"]])
    return out


# ---- kill points --------------------------------------------------------------------------
@dataclass
class Base:
    """What the journal and emulator showed when a round started."""

    max_call: int
    runs: int
    copies: int
    fired: dict[str, dict[str, int]]


def fired(world: World, op: str, kind: str) -> int:
    return int(world.stats()["faults_fired_by_operation"].get(op, {}).get(kind, 0))


def new_calls(journal: Path, base: Base, state: str) -> int:
    return len(journal_rows(journal, "SELECT call_id FROM calls WHERE call_id > ? AND state = ?",
                            (base.max_call, state)))


@dataclass
class KillPoint:
    name: str
    trigger: Callable[[World, Path, Base], bool]  # kill the runner once this holds
    faults: list[FaultSpec] = field(default_factory=list)  # active during the round
    held_request: bool = False  # a request is still held by the service at the kill


def slow(op: str) -> FaultSpec:  # holds every `op` request 0.5 s at the service
    return FaultSpec(kind="latency", operation=op, latency_s=50)


# reconciliation's first read (of a destination's versions, or of the source's metadata)
# is slow during these rounds: the kill lands while it runs
RECONCILE_SLOW = [slow("ListImageSetVersions"), slow("GetImageSetMetadata")]

KILL_POINTS = [
    KillPoint("first call journaled",
              lambda w, j, b: bool(journal_rows(j, "SELECT 1 FROM calls WHERE call_id > ?",
                                                (b.max_call,)))),
    KillPoint("a copy answered and in progress",
              lambda w, j, b: new_calls(j, b, "ANSWERED") >= 1),
    KillPoint("request sent, held by the service (SENT)",
              lambda w, j, b: fired(w, "CopyImageSet", "latency") > b.fired.get(
                  "CopyImageSet", {}).get("latency", 0),
              [FaultSpec(kind="latency", operation="CopyImageSet", latency_s=30, count=1)],
              held_request=True),
    KillPoint("copy made, response lost, reconciling (AMBIGUOUS)",
              lambda w, j, b: new_calls(j, b, "AMBIGUOUS") >= 1,
              [FaultSpec(kind="lost_response", operation="CopyImageSet", count=1), *RECONCILE_SLOW]),
    KillPoint("resumed run reconciling an open call",
              lambda w, j, b: runs_started(j) > b.runs and (
                  fired(w, "ListImageSetVersions", "latency")
                  + fired(w, "GetImageSetMetadata", "latency")
                  > sum(b.fired.get(op, {}).get("latency", 0)
                        for op in ("ListImageSetVersions", "GetImageSetMetadata"))),
              list(RECONCILE_SLOW)),
    KillPoint("connection reset before the copy ran (AMBIGUOUS)",
              lambda w, j, b: new_calls(j, b, "AMBIGUOUS") >= 1,
              [FaultSpec(kind="reset", operation="CopyImageSet", count=1), *RECONCILE_SLOW]),
    KillPoint("3 more copies", lambda w, j, b: w.copies_requested() >= b.copies + 3),
    KillPoint("2 more copies", lambda w, j, b: w.copies_requested() >= b.copies + 2),
    KillPoint("1 more copy", lambda w, j, b: w.copies_requested() >= b.copies + 1),
]


def base_of(world: World, journal: Path) -> Base:
    max_call = journal_rows(journal, "SELECT coalesce(max(call_id), 0) FROM calls")
    stats = world.stats()
    return Base(max_call[0][0] if max_call else 0, runs_started(journal),
                int(stats["copies_requested"]), stats["faults_fired_by_operation"])


Kills = list[tuple[str, Counter[str]]]  # (kill point, the journal's calls by state)


def kill_and_resume(scene: Scene, manifest: Path, tmp: Path, *extra: str) -> tuple[int, Kills, int]:
    """Run the manifest, killing it with SIGKILL at each KILL_POINT in turn and resuming
    each time, until a run ends by itself. Returns (exit code, kills, runs)."""
    w = scene.world
    journal, report = tmp / "kill.journal.sqlite", tmp / "kill.parquet"
    kills: Kills = []
    runs = 0
    for i, point in enumerate([*KILL_POINTS, None]):
        w.emulator.set_faults(point.faults if point else [])
        base = base_of(w, journal)
        proc = start(manifest, w.env, tmp, f"round{i}", *extra, journal=journal, report=report,
                     resume=i > 0)
        runs += 1
        if point is not None and proc.wait_until(lambda: point.trigger(w, journal, base)):
            copies_at_kill = w.copies_requested()
            proc.kill()
            kills.append((point.name, call_states(journal)))
            w.emulator.set_faults([])
            if point.held_request:  # as the network would, deliver it before resuming
                deadline = time.monotonic() + 2
                while w.copies_requested() == copies_at_kill and time.monotonic() < deadline:
                    time.sleep(0.01)
            continue
        code = proc.wait(timeout=60)
        w.emulator.set_faults([])
        return code, kills, runs
    raise AssertionError("unreachable")


@pytest.mark.parametrize("merge", ["--merge", "--no-merge"])
@pytest.mark.emulator_config(**SLOW_COPIES)
def test_sigkill_at_many_points_then_resume_equals_an_uninterrupted_run(
        emulator: Any, emulator_factory: Callable[..., Any], client_env: dict[str, str],
        tmp_path: Path, merge: str) -> None:
    # the reference: the same seed and setup on a fresh emulator, one uninterrupted run
    ref_world = seed_world(emulator_factory(**SLOW_COPIES), client_env, SEED)
    ref_scene = build_scene(ref_world)
    world = seed_world(emulator, client_env, SEED)
    scene = build_scene(world)
    assert (scene.d1, scene.d2, scene.rows) == (ref_scene.d1, ref_scene.d2, ref_scene.rows)
    (tmp_path / "ref").mkdir()
    ref_manifest = write_manifest(tmp_path / "ref" / "m.csv", ref_scene.rows)
    before_ref = ref_world.copies_requested()
    ref = run_manifest(ref_manifest, ref_world.env, tmp_path / "ref", merge)
    assert ref.code == 0, ref.stderr
    ref_world.wait_idle()
    ref_copies = ref_world.copies_requested() - before_ref
    assert ref_copies == (15 if merge == "--merge" else 22)  # the plan: merges save 7 calls

    manifest = write_manifest(tmp_path / "m.csv", scene.rows)
    before = world.copies_requested()
    code, kills, runs = kill_and_resume(scene, manifest, tmp_path, merge)
    journal = tmp_path / "kill.journal.sqlite"
    last_err = (tmp_path / f"round{runs - 1}.stderr").read_text()
    assert code == 0, last_err
    print(f"\n{merge}: {len(kills)} kills, {runs} runs")
    for name, states in kills:
        print(f"  killed at {name!r}: calls {dict(states)}")

    report = read_report(tmp_path / "kill.parquet")
    assert [r["row_id"] for r in report] == [r["row_id"] for r in scene.rows]
    assert Counter(r["status"] for r in report).keys() <= DONE, [
        (r["row_id"], r["status"], r["evidence"]) for r in report if r["status"] not in DONE]
    assert row_states(journal) == Counter({"SUCCEEDED": len(scene.rows)})
    calls = call_states(journal)  # every call closed: done, or proved not to have happened
    assert set(calls) <= {"DONE", "VOID", "REJECTED"}, calls

    # exactly once: the service made as many copies as the uninterrupted run, no more
    world.wait_idle()
    stats, ref_stats = world.stats(), ref_world.stats()
    assert stats["copies_requested"] - before == ref_copies
    assert stats["copies_executed"] == stats["copies_requested"]
    assert stats["copies_failed"] == ref_stats["copies_failed"] == 0
    for key in ("image_sets", "image_set_versions"):
        assert stats[key] == ref_stats[key], key
    # and the same contents: every row's result, both destinations (versions included)
    assert outcome_by_row(scene, report) == outcome_by_row(ref_scene, ref.rows())
    assert read_summary(tmp_path / "kill.parquet")["by_status"].get("SKIPPED", 0) > 0
    n = len(scene.rows)
    assert f"{n}/{n} rows done" in last_err  # rows settled on resume are counted once

    # and the kills did land where they were aimed
    assert len(kills) >= 6, kills
    seen = {name: states for name, states in kills}
    assert seen["request sent, held by the service (SENT)"]["SENT"] >= 1
    assert seen["copy made, response lost, reconciling (AMBIGUOUS)"]["AMBIGUOUS"] >= 1
    assert seen["a copy answered and in progress"]["ANSWERED"] >= 1


# ---- kill -9 at random moments, with faults, over destinations hours old ---------------------
CHAOS = [FaultSpec(kind="throttle", operation="*", probability=0.08),
         FaultSpec(kind="internal", operation="*", probability=0.03),
         FaultSpec(kind="unavailable", operation="*", probability=0.02),
         FaultSpec(kind="reset", operation="CopyImageSet", probability=0.08),
         FaultSpec(kind="lost_response", operation="CopyImageSet", probability=0.15),
         FaultSpec(kind="latency", operation="*", probability=0.1, latency_s=20)]


def aged_scene(emulator: Any, env: dict[str, str]) -> Scene:
    """The scene, its data and destinations made two hours before the runs."""
    emulator.set_clock(offset_s=-7200)
    scene = build_scene(seed_world(emulator, env, SEED))
    emulator.set_clock(offset_s=0)
    return scene


@pytest.mark.parametrize("chaos_seed", [1, 2])
@pytest.mark.emulator_config(**SLOW_COPIES)
def test_sigkill_at_random_moments_with_faults_on_old_data_copies_exactly_once(
        emulator: Any, emulator_factory: Callable[..., Any], client_env: dict[str, str],
        tmp_path: Path, chaos_seed: int) -> None:
    import random

    ref_world = emulator_factory(**SLOW_COPIES)
    ref_scene = aged_scene(ref_world, client_env)
    (tmp_path / "ref").mkdir()
    ref = run_manifest(write_manifest(tmp_path / "ref" / "m.csv", ref_scene.rows),
                       ref_scene.world.env, tmp_path / "ref")
    assert ref.code == 0, ref.stderr
    ref_scene.world.wait_idle()
    scene = aged_scene(emulator, client_env)
    w = scene.world
    manifest = write_manifest(tmp_path / "m.csv", scene.rows)
    journal, report = tmp_path / "chaos.journal.sqlite", tmp_path / "chaos.parquet"
    rng = random.Random(chaos_seed)
    w.emulator.set_faults(CHAOS, fault_seed=chaos_seed)
    kills = 0
    for round_ in range(12):
        proc = start(manifest, w.env, tmp_path, f"chaos{round_}", journal=journal, report=report)
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)  # after start-up, mid-run
        while proc.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        if not proc.alive:
            break
        proc.kill()
        kills += 1
    w.emulator.set_faults([])
    final = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
    assert final.code == 0, final.stderr
    out = read_report(report)
    # 0 lost rows, 0 untrue statuses: one row each, every one done, contents as the reference
    assert [r["row_id"] for r in out] == [r["row_id"] for r in scene.rows]
    assert {r["status"] for r in out} <= DONE
    assert set(call_states(journal)) <= {"DONE", "VOID", "REJECTED"}
    w.wait_idle()
    # 0 duplicates: as many copies as the uninterrupted, fault-free run
    assert w.copies_requested() == ref_scene.world.copies_requested()
    assert outcome_by_row(scene, out) == outcome_by_row(ref_scene, ref.rows())
    print(f"\nchaos seed {chaos_seed}: {kills} kills, faults fired "
          f"{w.stats()['faults_fired']}, calls {dict(call_states(journal))}")


# ---- cron, changed rows, the retry manifest, --max-duration ------------------------------
PACED = ("--rate", "CopyImageSet=4")


def test_cron_reruns_of_the_same_manifest_do_no_work_twice(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """The cron habit: the same command every night, no flags. The default state's ledger
    knows the rows by what they copy, so nights 2 and 3 skip every row without a single API
    call."""
    w = seed_world(emulator, client_env, SEED)
    scene = build_scene(w)
    manifest = write_manifest(tmp_path / "nightly.csv", scene.rows)
    n = len(scene.rows)

    def night() -> Any:
        proc = run_cli(["run", str(manifest), "--report", str(tmp_path / "nightly.parquet"),
                        *FAST], w.env, cwd=tmp_path)
        return proc, read_report(tmp_path / "nightly.parquet")

    proc, first = night()
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in first} == {"SUCCEEDED"}
    journals = [tmp_path / "batchcopy-state" / "ledger.sqlite"]
    assert journals[0].exists()
    w.wait_idle()
    copies, calls = w.copies_requested(), w.api_calls()
    for number in (2, 3):
        proc, out = night()
        assert proc.returncode == 0, proc.stderr
        assert [r["row_id"] for r in out] == [r["row_id"] for r in scene.rows]
        assert {r["status"] for r in out} == {"SKIPPED"}
        assert all("done in run 1" in r["evidence"] for r in out)
        assert w.copies_requested() == copies and w.api_calls() == calls  # not even a read
        assert f"{n}/{n} rows done" in proc.stderr
        assert runs_started(journals[0]) == number
    # --resume says the same, and insists the journal exists
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journals[0])
    assert res.code == 0 and w.api_calls() == calls, res.stderr
    # starting over is explicit: --fresh looks at every row of the manifest again
    res = run_manifest(manifest, w.env, tmp_path, "--fresh", journal=journals[0])
    assert "--fresh: the rows of" in res.stderr and journals[0].exists()
    # ... where the service's state allows: d1-1's pins are stale now (a conflict, nothing
    # copied), the subset rows find their instances already in place, and the rows into new
    # image sets find their copies (the presence check needs no journal): nothing copied
    assert res.code == 1, res.stderr
    assert w.copies_requested() == copies
    out = {r["row_id"]: r for r in res.rows()}
    assert [k for k, r in out.items() if r["status"] not in DONE] == ["d1-1"]
    assert out["d1-1"]["status"] == "CONFLICT" and out["d1-1"]["error_code"] == "StaleVersionPin"
    assert "already in" in out["d1-2"]["evidence"]
    assert "already holds exactly the" in out["new-0"]["evidence"]


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_an_edited_manifest_copies_new_work_once_and_never_repeats_done_work(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """Rows are matched to the journal by what they copy, not by row_id or position: a
    killed run resumed with the manifest reordered, renumbered, with fresh pins, with one
    row edited, copies the edited row as new work and nothing twice."""
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, WIDE, 18, "c")
    run = start(manifest, w.env, tmp_path, "first", *PACED, journal=journal, report=report)
    assert run.wait_until(lambda: w.copies_requested() >= before + 2)
    run.kill()
    edited = [dict(r, row_id=f"renamed-{k}") for k, r in enumerate(reversed(rows))]
    for r in edited:  # regenerated with pins: the first row touching each source pins it
        r["source_version_id"] = "1"
    # the first row of the original manifest (copied before the kill: the first sent),
    # edited: new work, while its original copy is not repeated
    edited[-1]["force"] = "true"
    write_manifest(manifest, edited)
    res = run_manifest(manifest, w.env, tmp_path, journal=journal, report=report)
    assert res.code == 0, res.stderr
    out = res.rows()
    assert [r["row_id"] for r in out] == [r["row_id"] for r in edited]
    assert {r["status"] for r in out} <= DONE
    w.wait_idle()
    # every distinct copy exactly once: the original rows, and the edited one as new work
    assert w.copies_requested() - before == len(rows) + 1


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.emulator_config(auth={"keys": {"testing": "testing"}})
def test_failed_manifest_round_trip(emulator: Any, client_env: dict[str, str],
                                    tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    client = w.client()
    dest = new_subset_destination(client, w.ds, w.sets[0])
    # a subset of another patient's study into dest without force: COPY_FAILED (mismatch)
    bad = {"row_id": "mismatch", "datastore_id": w.ds, "source_image_set_id": w.sets[1]["imageSetId"],
           "destination_image_set_id": dest, "series_instance_uid": series(w.sets[1], 0)}
    rows = [bad, *distinct_copies(w, 16, "n")[2:]]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    journal, report = tmp_path / "f.journal.sqlite", tmp_path / "f.parquet"
    before = w.copies_requested()
    run = start(manifest, w.env, tmp_path, "first", *PACED, journal=journal, report=report)
    # once the mismatch is known, the credentials lose CopyImageSet: the run aborts
    assert run.wait_until(lambda: journal_rows(
        journal, "SELECT 1 FROM manifest m JOIN rows r ON r.key = m.key "
                 "WHERE m.row_id = 'mismatch' AND r.status = 'FAILED'") != [])
    w.emulator.update_config({"auth": {"keys": {"testing": "testing"},
                                       "deny": {"testing": ["CopyImageSet"]}}})
    assert run.wait(timeout=60) == 3, run.stderr()
    out = read_report(report)
    by_id = {r["row_id"]: r for r in out}
    assert by_id["mismatch"]["error_code"] == "COPY_FAILED"
    codes = Counter(r["error_code"] for r in out if r["status"] == "FAILED")
    assert codes == Counter({"COPY_FAILED": 1})  # the only final answer from the service
    statuses = Counter(r["status"] for r in out)
    assert statuses["NOT_RUN"] >= 3 and statuses["SUCCEEDED"] >= 1
    # refused for access: no copy made, retried by the next run
    assert [r["status"] for r in out if r["error_code"] == "AccessDeniedException"] == ["NOT_RUN"]
    retry_ids = [r["row_id"] for r in out if r["status"] in ("FAILED", "CONFLICT", "UNKNOWN", "NOT_RUN")]

    retry = tmp_path / "retry.csv"
    rep = run_cli(["report", str(journal), "--failed-manifest", str(retry), "--out",
                   str(tmp_path / "rebuilt.parquet")], w.env, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert f"{len(retry_ids)} row(s) to retry" in rep.stdout
    retry_rows = read_csv(retry)
    assert [r["row_id"] for r in retry_rows] == retry_ids
    for r in retry_rows:  # the rows as the manifest asked for them
        orig = next(o for o in rows if o["row_id"] == r["row_id"])
        assert r["source_image_set_id"] == orig["source_image_set_id"]
        assert r["destination_image_set_id"] == orig.get("destination_image_set_id", "")

    # fix the causes: give the permission back, force the mismatching row
    w.emulator.update_config({"auth": {"keys": {"testing": "testing"}}})
    for r in retry_rows:
        if r["row_id"] == "mismatch":
            r["force"] = "true"
    with retry.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(retry_rows[0]))
        writer.writeheader()
        writer.writerows(retry_rows)
    (tmp_path / "retry").mkdir()
    res = run_manifest(retry, w.env, tmp_path / "retry")
    assert res.code == 0, res.stderr
    assert [r["row_id"] for r in res.rows()] == retry_ids
    assert {r["status"] for r in res.rows()} == {"SUCCEEDED"}
    w.wait_idle()
    # every row copied once, plus the copy that failed on the mismatch
    assert w.copies_requested() - before == len(rows) + 1
    assert set(sops(w.sets[1])[:3]) <= instance_set(w.snapshot(dest))


@pytest.mark.emulator_config(copy_base_s=50.0)
def test_max_duration_stops_dispatching_exits_5_and_nightly_windows_finish_the_job(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w, rows, manifest, journal, report, before = copy_job(
        emulator, client_env, tmp_path, WIDE, 18, "d")
    res = run_manifest(manifest, w.env, tmp_path, *PACED, "--max-duration", "1s",
                       journal=journal, report=report)
    assert res.code == 5, res.stderr
    out = res.rows()
    statuses = Counter(r["status"] for r in out)
    assert len(out) == len(rows) and set(statuses) <= {"SUCCEEDED", "NOT_RUN"}, statuses
    # 1 s at 4 copies/s (burst 1) is at most 5 copies, although 12 rows were ready
    assert 1 <= statuses["SUCCEEDED"] <= 6, statuses
    for r in out:
        if r["status"] == "NOT_RUN":
            assert "--max-duration reached" in r["error_message"] and r["call_id"] is None
    assert res.summary()["stop_reason"] == "time-limit"
    w.wait_idle()
    assert w.copies_requested() - before == statuses["SUCCEEDED"]  # in flight: finished
    # further windows of 1 s each finish the job, with no copy made twice
    codes = []
    for _ in range(12):
        res = run_manifest(manifest, w.env, tmp_path, "--rate", "CopyImageSet=8",
                           "--max-duration", "1s", "--resume", journal=journal, report=report)
        codes.append(res.code)
        if res.code == 0:
            break
        assert res.code == 5, res.stderr
    assert codes[-1] == 0, codes
    assert {r["status"] for r in res.rows()} <= DONE
    w.wait_idle()
    assert w.copies_requested() - before == len(rows)


def test_time_limit_exit_code_only_when_rows_are_left(tmp_path: Path) -> None:
    import asyncio

    from batchcopy.commands.run import decide_exit
    from batchcopy.journal.journal import Journal, RowOutcome
    from batchcopy.core.specs import CopySpec, ExitCode, Status

    specs = [CopySpec(manifest_row=i, row_id=f"r{i}", datastore_id="d" * 32,
                      source_image_set_id=f"{i:032x}") for i in (1, 2)]
    one, two = [s.key for s in specs]
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.start_run("m.csv")
        journal.begin_manifest()
        journal.stage(specs)
        journal.commit_manifest()

        def finish(key: str, status: Status) -> None:
            asyncio.run(journal.finish_rows(run, [key], RowOutcome(status)))

        finish(one, Status.SUCCEEDED)
        asyncio.run(journal.mark_pending_not_run(run, "--max-duration reached"))
        assert decide_exit("time-limit", journal) is ExitCode.TIME_LIMIT
        # the limit struck while the last copy was finishing: nothing is left to resume
        finish(two, Status.SUCCEEDED)
        assert decide_exit("time-limit", journal) is ExitCode.OK
        finish(two, Status.FAILED)
        assert decide_exit("time-limit", journal) is ExitCode.ROWS_FAILED
        assert decide_exit("interrupted", journal) is ExitCode.INTERRUPTED
        assert decide_exit("internal-error", journal) is ExitCode.INTERNAL
