"""The pieces of an `s3://` state against moto's server, in this process: the log replays
into the same ledger on an empty machine, segments are claimed once, a lost answer is
recognised as our own write, snapshots compact the log, the lease is held, refused and
taken over once expired, and a committer that cannot reach S3 refuses urgent writes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from batchcopy.core.specs import CopyRequest, CopySpec, Status
from batchcopy.journal.calls import RowOutcome
from batchcopy.journal.lease import Holder, Lease, LeaseHeld, read_lease
from batchcopy.journal.s3io import S3, S3Settings, StateUnavailable
from batchcopy.journal.s3log import LogConflict, S3Log, seg_key
from batchcopy.journal.state import Location, open_for_reading, open_for_writing
from kit.s3faults import FaultProxy
from kit.statekit import keys, new_bucket

DS = "d" * 32


@pytest.fixture
def state(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-a"))
    return f"s3://{new_bucket(moto_endpoint)}/team/state/"


def specs(n: int) -> list[CopySpec]:
    return [CopySpec(manifest_row=i + 1, row_id=f"r{i}", datastore_id=DS,
                     source_image_set_id=f"{i:032x}") for i in range(n)]


def dump(db: sqlite3.Connection) -> dict[str, list[Any]]:
    return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("runs", "manifest", "rows", "calls", "undo_actions")}


def stage(journal: Any, rows: list[CopySpec]) -> int:
    """Stage `rows` as the manifest and start a run: its id."""
    journal.begin_manifest()
    journal.stage(rows)
    journal.commit_manifest()
    return int(journal.start_run("m.csv"))


def write_some(opened: Any, rows: list[CopySpec]) -> None:
    """A run's writes: staging, a call sent and answered, rows finished, a sweep."""
    journal = opened.journal
    run = stage(journal, rows)

    async def go() -> None:
        journal.start_writer()
        try:
            req = CopyRequest(DS, rows[0].source_image_set_id, "1", None, None, None, False, False)
            call = await journal.call_sent(run, req, [rows[0].key], time.time())
            await journal.call_answered(call, "n" * 32, "2")
            await journal.finish_rows(run, [rows[0].key], RowOutcome(Status.SUCCEEDED, call_id=call),
                                      done_call=(call, "COPIED", None))
            await journal.mark_pending_not_run(run, "stopped")
        finally:
            journal.stop_writer()

    asyncio.run(go())
    journal.end_run(run, 0, {"ok": True})


def test_the_log_replays_into_the_same_ledger_on_an_empty_machine(
        state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = Location("s3", state)
    opened = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=30)
    try:
        write_some(opened, specs(5))
        mine = dump(opened.journal.db)
    finally:
        opened.close()
    assert keys(state_endpoint(), bucket_of(state), "team/state/lease") == []  # given back
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-b"))
    other = open_for_reading(location)
    try:
        assert dump(other.journal.db) == mine
        assert other.journal.manifest_statuses() == {"SUCCEEDED": 1, "NOT_RUN": 4}
    finally:
        other.close()
    # a rerun of the same manifest logs a few statements, not a snapshot
    snapshots = keys(state_endpoint(), bucket_of(state), "team/state/snapshots/")
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-c"))
    opened = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=30)
    try:
        journal = opened.journal
        stage(journal, specs(5))
        assert journal.manifest_statuses() == {"SUCCEEDED": 1, "PENDING": 4}
    finally:
        opened.close()
    assert keys(state_endpoint(), bucket_of(state), "team/state/snapshots/") == snapshots
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-b"))
    other = open_for_reading(location)  # machine b's cache catches up from the log
    try:
        assert other.journal.manifest_statuses() == {"SUCCEEDED": 1, "PENDING": 4}
    finally:
        other.close()
    # another manifest: a snapshot, and a segment naming it (its blob is gone once copied)
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-c"))
    opened = open_for_writing(location, Holder("run", "m2.csv"), lease_ttl_s=30)
    try:
        stage(opened.journal, specs(7))
        asyncio.run(opened.journal.finish_rows(2, [specs(7)[6].key], RowOutcome(Status.FAILED)))
    finally:
        opened.close()
    assert keys(state_endpoint(), bucket_of(state), "team/state/stage/") == []
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-b"))
    other = open_for_reading(location)  # replays past the staged segment, from its snapshot
    try:
        assert other.journal.manifest_statuses() == {"SUCCEEDED": 1, "PENDING": 5, "FAILED": 1}
    finally:
        other.close()



def test_a_manifest_form_reaches_every_machine_even_with_the_same_rows(
        state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rows from a file of another form (a TSV of the CSV's rows): report
    --failed-manifest on another machine writes the form of the latest manifest."""
    location = Location("s3", state)
    for machine, delimiter in (("machine-a", ","), ("machine-c", "\t")):
        monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / machine))
        opened = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=30)
        try:
            journal = opened.journal
            journal.begin_manifest()
            journal.stage(specs(3))
            journal.set_manifest_form({"kind": "csv", "delimiter": delimiter})
            journal.commit_manifest()
        finally:
            opened.close()
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-b"))
    other = open_for_reading(location)
    try:
        assert other.journal.manifest_form() == {"kind": "csv", "delimiter": "\t"}
    finally:
        other.close()


def state_endpoint() -> str:
    import os

    return os.environ["AWS_ENDPOINT_URL_S3"]


def bucket_of(url: str) -> str:
    return url[len("s3://"):].split("/", 1)[0]


def test_a_segment_is_claimed_once_and_a_lost_answer_is_our_own_write(
        state: str, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FaultProxy(moto_endpoint).start()
    try:
        s3 = S3(state, settings=S3Settings(read_timeout_s=1.0, retry_for_s=20))
        direct = S3(state)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        flaky = S3(state, settings=S3Settings(read_timeout_s=1.0, retry_for_s=20))
        one, two = S3Log(s3, tmp_path), S3Log(flaky, tmp_path)
        one.append([["INSERT INTO meta VALUES ('a', '1')", []]])
        with pytest.raises(LogConflict):  # the second writer's view is one segment behind
            two.append([["INSERT INTO meta VALUES ('b', '2')", []]])
        two.seq = one.seq
        for kind in ("lost", "timeout", "error_after", "landed412"):
            proxy.set(only=("/log/",), times=1, hold_s=1.5, **{kind: 1.0})
            two.append([["INSERT INTO meta VALUES (?, ?)", [kind, "x"]]])  # landed once
            assert proxy.counts[kind] == 1
        proxy.set(only=("/log/",), times=2, refused412=1.0)  # a 412 with nothing there: retried
        two.append([["INSERT INTO meta VALUES ('c', '3')", []]])
        assert two.seq == 6 and [k for k in direct.keys("log/")] == [seg_key(i) for i in range(1, 7)]
    finally:
        proxy.stop()


def test_snapshots_compact_the_log(state: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHCOPY_S3_COMPACT_EVERY", "3")
    location = Location("s3", state)
    opened = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=30)
    try:
        journal = opened.journal
        run = stage(journal, specs(10))
        for i in range(10):  # one segment each: a compaction every three
            asyncio.run(journal.finish_rows(run, [specs(10)[i].key], RowOutcome(Status.SUCCEEDED)))
            journal.committer.log.finish()  # (its upload, in a thread, done before the next)
        mine = dump(journal.db)
    finally:
        opened.close()
    s3 = S3(state)
    assert len(s3.keys("snapshots/")) <= 2 and len(s3.keys("log/")) <= 6
    monkeypatch.setenv("BATCHCOPY_STATE_DIR", str(tmp_path / "machine-b"))
    other = open_for_reading(location)
    try:
        assert dump(other.journal.db) == mine
    finally:
        other.close()


def test_the_lease_is_held_refused_and_taken_over_once_expired(state: str) -> None:
    s3 = S3(state)
    first = Lease(s3, Holder("run", "a.csv"), ttl_s=5.0)
    first.acquire()
    assert first.valid()
    with pytest.raises(LeaseHeld) as held:
        Lease(s3, Holder("run", "b.csv"), ttl_s=1.0).acquire()
    assert "a.csv" in str(held.value) and "expires at" in str(held.value)
    # the first holder dies (kill -9): its keeper stops, nothing is given back
    first._stop.set()  # noqa: SLF001
    first._thread.join()  # noqa: SLF001
    deadline = time.monotonic() + 20
    while not read_lease(s3).expired:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    second = Lease(s3, Holder("run", "b.csv"), ttl_s=30.0)
    second.acquire()
    assert second.taken_over is not None and second.taken_over.holder.manifest == "a.csv"
    assert not first.valid()  # its own clock ran out before S3's did
    second.release()
    assert read_lease(s3) is None


def test_a_committer_that_cannot_reach_s3_refuses_urgent_writes_and_keeps_the_rest_local(
        state: str, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FaultProxy(moto_endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    monkeypatch.setenv("BATCHCOPY_S3_RETRY_FOR", "2")
    location = Location("s3", state)
    opened = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=60)
    said: list[str] = []
    try:
        journal = opened.journal
        journal.committer.on_unavailable.append(said.append)
        rows = specs(3)
        run = stage(journal, rows)
        proxy.block()
        req = CopyRequest(DS, rows[0].source_image_set_id, "1", None, None, None, False, False)
        with pytest.raises(StateUnavailable):
            asyncio.run(journal.call_sent(run, req, [rows[0].key], time.time()))
        assert said and "cannot write" in said[0]
        asyncio.run(journal.mark_pending_not_run(run, "the state cannot be written"))
        assert journal.manifest_statuses() == {"NOT_RUN": 3}  # the report's truth, locally
        assert journal.count_calls() == 0
    finally:
        proxy.block(False)
        opened.close()
        proxy.stop()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    again = open_for_writing(location, Holder("run", "m.csv"), lease_ttl_s=60)  # same machine
    try:  # the diverged cache is rebuilt from S3: rows PENDING, as S3 last had them
        assert again.journal.manifest_statuses() == {"PENDING": 3}
    finally:
        again.close()
