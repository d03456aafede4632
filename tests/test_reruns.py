"""The paths users take, end to end over HTTP: lost answers into destinations made hours
before, reruns after passing failures, lost/empty/corrupt/foreign journals, two runs at
once. Every test counts what the emulator executed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchcopy.emulator.config import FaultSpec
from kit.resumekit import Running, journal_rows, seed_world
from kit.runkit import FAST, new_subset_destination, run_cli, run_manifest, write_manifest

SEED = {"seed": 31, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 4, "frames_per_instance": 1}
TWO_HOURS = 7200.0


def sops(image_set: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, ids in image_set["series"].items() for i in ids]


def aged_world(emulator: Any, env: dict[str, str]) -> Any:
    """Data and destinations created two hours before the run."""
    emulator.set_clock(offset_s=-TWO_HOURS)
    w = seed_world(emulator, env, SEED)
    w.dests = [new_subset_destination(w.client(), w.ds, s) for s in w.sets[:2]]
    emulator.set_clock(offset_s=0)
    return w


def subset_rows(w: Any) -> list[dict[str, Any]]:
    """Three subset rows into each of the two old destinations (merged unless --no-merge),
    and two new image sets."""
    rows = []
    for k, (src, dest) in enumerate(zip(w.sets[:2], w.dests)):
        for j, (s, i) in enumerate(sops(src)[1:4]):
            rows.append({"row_id": f"d{k}-{j}", "datastore_id": w.ds, "source_image_set_id": src["imageSetId"],
                         "destination_image_set_id": dest, "series_instance_uid": s, "sop_instance_uid": i})
    for k, src in enumerate(w.sets[2:4]):
        rows.append({"row_id": f"new-{k}", "datastore_id": w.ds, "source_image_set_id": src["imageSetId"]})
    return rows


@pytest.mark.parametrize("merge", ["--merge", "--no-merge"])
def test_lost_answers_into_hours_old_destinations_make_no_duplicate(
        emulator: Any, client_env: dict[str, str], tmp_path: Path, merge: str) -> None:
    w = aged_world(emulator, client_env)
    rows = subset_rows(w)
    manifest = write_manifest(tmp_path / "m.csv", rows)
    before = w.copies_requested()
    # every answer to CopyImageSet is lost: each copy happens, its answer never arrives
    emulator.set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet")])
    res = run_manifest(manifest, w.env, tmp_path, merge)
    emulator.set_faults([])
    assert res.code == 0, res.stderr
    out = res.rows()
    assert {r["status"] for r in out} == {"SUCCEEDED"}
    assert all("the copy happened" in r["evidence"] for r in out)
    w.wait_idle()
    calls = 2 + (2 if merge == "--merge" else 6)  # two new image sets, and the subset calls
    assert w.copies_requested() - before == calls  # each found, none made twice
    for k, dest in enumerate(w.dests):
        held = {(s, i) for s, ids in w.snapshot(dest)["instances"].items() for i in ids}
        assert set(sops(w.sets[k])[:4]) == held


def test_a_lost_refusal_after_another_writers_failed_copy_is_unknown_not_failed(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """The row names version v of its destination (a pin used as a hint); an outside
    writer's copy took v+1 and failed (another patient, no force), so the service refuses
    the row's call as stale, and that refusal never arrives. The version after v is no
    proof of the row's copy: the row is UNKNOWN with what was seen, not FAILED with the
    other writer's message, and no run resends it blindly."""
    from kit.runkit import latest, patiently, wait_active

    w = aged_world(emulator, client_env)
    c, a, b, dest = w.client(), w.sets[0], w.sets[1], w.dests[0]
    named = latest(c, w.ds, dest)
    s, i = sops(b)[0]
    patiently(lambda: c.copy_image_set(
        datastoreId=w.ds, sourceImageSetId=b["imageSetId"], copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": latest(c, w.ds, b["imageSetId"]), "DICOMCopies": {
                "copiableAttributes": json.dumps({"Study": {"Series": {s: {"Instances": {i: {}}}}}})}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": named}}))
    assert wait_active(c, w.ds, dest)["imageSetWorkflowStatus"] == "COPY_FAILED"
    w.wait_idle()
    def sent() -> int:  # CopyImageSet requests the service looked at (not throttled)
        stats = w.stats()
        return int(stats["calls"].get("CopyImageSet", 0)) - int(stats["throttled"].get("CopyImageSet", 0))

    before, calls = w.copies_requested(), sent()
    s, i = sops(a)[1]
    manifest = write_manifest(tmp_path / "m.csv", [{
        "row_id": "r", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
        "destination_image_set_id": dest, "destination_version_id": named,
        "series_instance_uid": s, "sop_instance_uid": i}])
    emulator.set_faults([FaultSpec(kind="lost_response", operation="CopyImageSet", count=1)])
    res = run_manifest(manifest, w.env, tmp_path, "--pins", "hint")
    emulator.set_faults([])
    assert emulator.stats()["refusals_lost_by_operation"] == {"CopyImageSet": 1}
    assert res.code == 1, res.stderr
    (row,) = res.rows()
    assert row["status"] == "UNKNOWN", (row["status"], row["error_message"], row["evidence"])
    assert "may be this call's copy or another writer's" in row["evidence"]
    assert w.copies_requested() == before  # refused: nothing was copied
    again = run_manifest(manifest, w.env, tmp_path, "--pins", "hint")
    assert again.code == 1 and again.rows()[0]["status"] == "UNKNOWN"
    assert sent() - calls == 1  # never resent


def test_a_row_naming_an_absent_instance_fails_alone_without_a_copy_call(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = aged_world(emulator, client_env)
    rows = [r for r in subset_rows(w) if r["row_id"].startswith("d0")]
    bad = dict(rows[1], row_id="bad", sop_instance_uid=rows[1]["sop_instance_uid"] + ".9")
    manifest = write_manifest(tmp_path / "m.csv", [rows[0], bad, *rows[1:]])
    before = w.copies_requested()
    res = run_manifest(manifest, w.env, tmp_path)
    assert res.code == 1, res.stderr
    out = {r["row_id"]: r for r in res.rows()}
    assert out.pop("bad")["error_code"] == "SubsetNotInSource"
    assert {r["status"] for r in out.values()} == {"SUCCEEDED"}
    assert len({r["call_id"] for r in out.values()}) == 1  # the good rows still travel together
    w.wait_idle()
    assert w.copies_requested() - before == 1


# ---- passing failures: nothing copied, and the next run copies -------------------------
def rerun_succeeds(w: Any, manifest: Path, tmp: Path, first: Any, before: int) -> None:
    """After a run that made no copy, the same command copies every row once."""
    assert {r["status"] for r in first.rows()} == {"NOT_RUN"}, first.stderr
    assert all(r["error_code"] for r in first.rows() if r["call_id"] is not None)
    w.wait_idle()
    assert w.copies_requested() == before
    again = run_manifest(manifest, w.env, tmp)
    assert again.code == 0, again.stderr
    assert {r["status"] for r in again.rows()} == {"SUCCEEDED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(again.rows())


def new_copies(w: Any, tmp: Path) -> Path:
    return write_manifest(tmp / "m.csv", [
        {"row_id": f"n{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
        for k, s in enumerate(w.sets)])


@pytest.mark.emulator_config(auth={"keys": {"testing": "testing"}, "deny": {"testing": ["CopyImageSet"]}})
def test_rows_refused_for_access_run_on_the_next_run(emulator: Any, client_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest, before = new_copies(w, tmp_path), w.copies_requested()
    first = run_manifest(manifest, w.env, tmp_path)
    assert first.code == 3 and "AccessDeniedException" in first.stderr, first.stderr
    emulator.update_config({"auth": {"keys": {"testing": "testing"}}})  # permission granted
    rerun_succeeds(w, manifest, tmp_path, first, before)


def refused_before_copying(w: Any, manifest: Path, tmp: Path, first: Any, before: int,
                           *said: str) -> None:
    """A set-up the pre-run checks refuse: one line naming the cause, exit 2, no copy sent,
    no row recorded (the journal this run made is gone); the fixed set-up copies every row."""
    lines = [line for line in first.stderr.splitlines() if line.strip()]
    assert first.code == 2 and len(lines) == 1, first.stderr
    assert all(part in lines[0] for part in said), lines[0]
    assert "nothing was sent" in lines[0]
    assert w.copy_calls() == 0 and not first.journal.exists() and not first.report.exists()
    again = run_manifest(manifest, w.env, tmp)
    assert again.code == 0, again.stderr
    assert {r["status"] for r in again.rows()} == {"SUCCEEDED"}
    w.wait_idle()
    assert w.copies_requested() - before == len(again.rows())


@pytest.mark.parametrize("problem", ["bad-secret", "expired-token"])
@pytest.mark.emulator_config(auth={"keys": {"testing": "testing"}, "expired_tokens": ["old-token"]})
def test_rows_stopped_by_credentials_run_once_they_are_fixed(
        emulator: Any, client_env: dict[str, str], tmp_path: Path, problem: str) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest, before = new_copies(w, tmp_path), w.copies_requested()
    broken = dict(w.env, AWS_SECRET_ACCESS_KEY="wrong") if problem == "bad-secret" else \
        dict(w.env, AWS_SESSION_TOKEN="old-token")
    first = run_manifest(manifest, broken, tmp_path)
    refused_before_copying(w, manifest, tmp_path, first, before,
                           "InvalidSignature" if problem == "bad-secret" else "ExpiredToken")


def test_rows_that_exhausted_their_throttles_run_on_the_next_run(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    """Throttles use up no attempt, but a service that refuses every request ends the
    run's calls once it has refused STREAK_LIMIT in a row: the rows are NOT_RUN."""
    w = seed_world(emulator, client_env, SEED)
    manifest, before = new_copies(w, tmp_path), w.copies_requested()
    emulator.set_faults([FaultSpec(kind="throttle", operation="CopyImageSet")])
    first = run_manifest(manifest, w.env, tmp_path, "--max-attempts", "2",
                         "--retry-backoff", "0.02/0.1")
    emulator.set_faults([])
    assert first.code == 1, first.stderr
    assert {r["error_code"] for r in first.rows()} == {"ThrottlingException"}
    rerun_succeeds(w, manifest, tmp_path, first, before)


def test_rows_stopped_by_a_down_endpoint_run_once_it_is_back(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    import socket

    w = seed_world(emulator, client_env, SEED)
    manifest, before = new_copies(w, tmp_path), w.copies_requested()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    first = run_manifest(manifest, dict(w.env, AWS_ENDPOINT_URL_MEDICAL_IMAGING=down), tmp_path,
                         "--max-attempts", "2")
    # it cost three connection attempts, one line: not a run of warnings and retries
    refused_before_copying(w, manifest, tmp_path, first, before, f"cannot reach {down}",
                           "3 attempts")


# ---- journals that are not what --resume needs ------------------------------------------
@pytest.mark.parametrize("state", ["missing", "empty", "garbage", "truncated", "not-a-journal",
                                   "foreign"])
def test_resume_with_an_unusable_journal_is_refused_before_any_call(
        emulator: Any, client_env: dict[str, str], tmp_path: Path, state: str) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest = new_copies(w, tmp_path)
    journal = tmp_path / "j.journal.sqlite"
    if state == "empty":
        journal.write_bytes(b"")
    elif state == "garbage":
        journal.write_bytes(b"\x00garbage" * 100)
    elif state in ("truncated", "foreign"):
        # a ledger that knows none of this manifest's copies (a series of an image set)
        other = write_manifest(tmp_path / "other.csv", [
            {"row_id": "x", "datastore_id": w.ds, "source_image_set_id": w.sets[0]["imageSetId"],
             "series_instance_uid": next(iter(w.sets[0]["series"]))}])
        assert run_manifest(other, w.env, tmp_path, journal=journal).code == 0
        if state == "truncated":
            data = journal.read_bytes()
            journal.write_bytes(data[: len(data) // 2])
    elif state == "not-a-journal":
        sqlite3.connect(journal).execute("CREATE TABLE t (x)").connection.commit()
    calls = w.api_calls()
    res = run_manifest(manifest, w.env, tmp_path, "--resume", journal=journal)
    assert res.code == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(journal) in res.stderr
    assert w.api_calls() == calls


def test_a_journal_on_s3_is_refused(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    res = run_cli(["run", str(new_copies(w, tmp_path)), "--journal", "s3://bucket/j.sqlite", *FAST],
                  w.env, cwd=tmp_path)
    assert res.returncode == 2 and "must be a local path" in res.stderr
    assert not (tmp_path / "s3:").exists() and w.api_calls() == 0


# ---- two runs at once ------------------------------------------------------------------
# copies that last until the test moves the emulator's clock: the first run is surely live
@pytest.mark.emulator_config(copy_base_s=1e6)
def test_two_runs_over_the_same_image_sets_never_both_copy(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest = new_copies(w, tmp_path)
    before = w.copies_requested()
    first_journal = tmp_path / "first.sqlite"
    first = Running(["run", str(manifest), "--journal", str(first_journal), "--report",
                     str(tmp_path / "first.parquet"), *FAST], w.env, tmp_path, "first")
    assert first.wait_until(lambda: bool(journal_rows(first_journal, "SELECT 1 FROM calls")))
    # the same manifest with another journal, and another manifest sharing one image set
    other = write_manifest(tmp_path / "other.csv", [
        {"row_id": "o", "datastore_id": w.ds, "source_image_set_id": w.sets[0]["imageSetId"],
         "series_instance_uid": next(iter(w.sets[0]["series"]))}])
    for m, j in ((manifest, "second.sqlite"), (other, "third.sqlite")):
        res = run_manifest(m, w.env, tmp_path, journal=tmp_path / j, report=tmp_path / f"{j}.parquet")
        assert res.code == 4, res.stderr
        assert f"pid {first.proc.pid}" in res.stderr and str(first_journal) in res.stderr
    emulator.set_clock(advance_s=1e7)  # the first run's copies end
    emulator.update_config({"copy_base_s": 2.0})  # and copies take their usual time again
    assert first.wait() == 0, first.stderr()
    w.wait_idle()
    assert w.copies_requested() - before == len(w.sets)
    # once the first run has ended, its image sets are free again
    res = run_manifest(other, w.env, tmp_path, journal=tmp_path / "fourth.sqlite")
    assert res.code == 0, res.stderr


@pytest.mark.emulator_config(copy_base_s=60.0)
def test_a_killed_runs_holds_do_not_block_the_next_run(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    manifest = new_copies(w, tmp_path)
    journal = tmp_path / "j.sqlite"
    run = Running(["run", str(manifest), "--journal", str(journal), *FAST], w.env, tmp_path, "k")
    assert run.wait_until(lambda: bool(journal_rows(journal, "SELECT 1 FROM calls")))
    run.kill()
    res = run_manifest(manifest, w.env, tmp_path, journal=tmp_path / "other.sqlite")
    assert res.code != 4, res.stderr
    holds = json.loads(json.dumps(journal_rows(
        tmp_path / "batchcopy-state" / "holds.sqlite", "SELECT count(*) FROM holds")))
    assert holds == [[0]]


# ---- a bug inside the run -----------------------------------------------------------------
def test_an_internal_error_exits_70_and_no_sent_row_reads_not_run(
        emulator: Any, client_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The job in this process, with the journal's second ANSWERED write made to raise."""
    from batchcopy.commands.run import JobOptions, run_job
    from batchcopy.journal.journal import Journal
    from batchcopy.aws.ratefile import parse_rate
    from batchcopy.core.specs import ExitCode

    w = seed_world(emulator, client_env, SEED)
    manifest = new_copies(w, tmp_path)
    real = Journal.call_answered
    seen = {"n": 0}

    async def broken(self: Journal, call_id: int, image_set_id: str, version_id: str) -> None:
        seen["n"] += 1
        if seen["n"] == 2:
            raise RuntimeError("journal write failed (injected)")
        await real(self, call_id, image_set_id, version_id)

    monkeypatch.setattr(Journal, "call_answered", broken)
    op, rate, burst = parse_rate("CopyImageSet=20")
    report = tmp_path / "r.parquet"
    code = run_job(JobOptions(manifest=str(manifest), report=str(report), progress="off",
                              journal=str(tmp_path / "j.sqlite"), rates={op: (rate, burst)},
                              poll_first_s=0.02, poll_max_s=0.2))
    err = capsys.readouterr().err
    assert code == ExitCode.INTERNAL == 70, err
    assert "internal error" in err and "journal write failed (injected)" in err
    import pyarrow.parquet as pq

    rows = pq.read_table(report).to_pylist()
    assert len(rows) == len(w.sets)
    for r in rows:
        if r["call_id"] is not None:  # its call was sent: settled, or unknown; never NOT_RUN
            assert r["status"] in ("SUCCEEDED", "UNKNOWN"), r
        else:
            assert r["status"] == "NOT_RUN" and "internal error" in r["error_message"]
    w.wait_idle()
    assert sum(r["status"] == "SUCCEEDED" for r in rows) <= w.copies_requested()
    monkeypatch.setattr(Journal, "call_answered", real)  # the next run settles the rest
    code = run_job(JobOptions(manifest=str(manifest), report=str(report), progress="off",
                              journal=str(tmp_path / "j.sqlite"), rates={op: (rate, burst)},
                              poll_first_s=0.02, poll_max_s=0.2))
    assert code == 0, capsys.readouterr().err
    w.wait_idle()
    assert w.copies_requested() == len(w.sets)
