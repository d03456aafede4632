"""`batchcopy run --state s3://...`: the real CLI in subprocesses ("machines" with state
directories of their own), the emulator for HealthImaging, moto's server for S3 (behind the
fault proxy where S3 misbehaves).

    kill -9, then an empty machine after the lease expires finishes: each row copied once
    two machines started together: one runs, the other exits 4 (one live run per state)
    S3 faults of every kind on every request: 0 duplicates, 0 lost rows
    S3 gone for good mid-run: exit 3 naming S3, nothing sent that S3 does not record
    the lease taken by another writer: exit 3, and the ledger stays whole
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kit.resumekit import Running, distinct_copies, read_report, seed_world
from kit import runkit
from kit.runkit import FAST, write_manifest
from kit.s3faults import FaultProxy
from kit.statekit import machine_env, new_bucket, s3_client, state_calls

SEED = {"seed": 61, "datastores": 1, "patients": 9, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 1, "frames_per_instance": 1}
PACED = ("--rate", "CopyImageSet=4")  # 9 rows take about 2 s to send: time to act in between
TTL = ("--lease-ttl", "5")


def job(emulator: Any, client_env: dict[str, str], tmp: Path, moto: str,
        n: int = 9) -> tuple[Any, Path, str]:
    w = seed_world(emulator, client_env, SEED)
    manifest = write_manifest(tmp / "m.csv", distinct_copies(w, n))
    return w, manifest, f"s3://{new_bucket(moto)}/batchcopy/"


def copied_once(w: Any, n: int) -> None:
    """Every copy the emulator was asked for has ended, and each of the n rows made one."""
    w.wait_idle()
    assert w.copies_requested() == n and w.stats()["copies_succeeded"] == n


def run_cli(args: list[str], env: dict[str, str], *, cwd: Path) -> Any:
    """The CLI in a process of its own: a state's lease is renewed by a thread on time, and
    in this process it would share one interpreter with moto's server (on a loaded machine
    renewals came late past the tests' 5 s lease and a run stopped, its lease lost)."""
    return runkit.run_cli(args, env, cwd=cwd, process=True)


def run_args(manifest: Path, state: str, report: Path, *extra: str) -> list[str]:
    ttl = () if "--lease-ttl" in extra else TTL
    return ["run", str(manifest), "--state", state, "--report", str(report), *FAST, *ttl, *extra]


def wait_lease_expired(moto: str, state: str, monkeypatch: pytest.MonkeyPatch,
                       limit_s: float = 30.0) -> None:
    from batchcopy.journal.lease import read_lease
    from batchcopy.journal.s3io import S3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto)
    s3 = S3(state)
    deadline = time.monotonic() + limit_s
    while True:
        info = read_lease(s3)
        if info is None or info.expired:
            return
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)


@pytest.mark.emulator_config(copy_base_s=50.0)  # 0.5 s copies: some are in flight at the kill
def test_kill_9_then_an_empty_machine_finishes_after_the_lease_expires(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint)
    extra = ("--no-merge", "--no-skip-present")
    first = Running(run_args(manifest, state, tmp_path / "a.parquet", *PACED, *extra),
                    machine_env(w.env, tmp_path, "a", moto_endpoint), tmp_path, "a")
    assert first.wait_until(lambda: w.copies_requested() >= 3)
    first.kill()
    sent = w.copies_requested()
    assert 3 <= sent < 9
    # too early: the dead run's lease is still live, and names its holder
    early = run_cli(run_args(manifest, state, tmp_path / "early.parquet", *extra),
                    machine_env(w.env, tmp_path, "b", moto_endpoint), cwd=tmp_path)
    if early.returncode == 4:  # (on a very slow machine the lease may be gone already)
        assert "is held by the run of" in early.stderr and f"pid {first.proc.pid}" in early.stderr
        assert w.copies_requested() == sent
    wait_lease_expired(moto_endpoint, state, monkeypatch)
    second = run_cli(run_args(manifest, state, tmp_path / "b.parquet", *extra),
                     machine_env(w.env, tmp_path, "c", moto_endpoint), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # the run that found the dead run's lease expired took it over: the second, or on a very
    # slow machine already the early one
    assert "took over the expired lease" in (second.stderr if early.returncode == 4
                                             else early.stderr + second.stderr)
    rows = read_report(tmp_path / "b.parquet")
    assert len(rows) == 9 and {r["status"] for r in rows} <= {"SUCCEEDED", "SKIPPED"}
    copied_once(w, 9)  # CopyImageSet calls accepted = rows: none twice
    calls, statuses = state_calls(state, tmp_path, monkeypatch, moto_endpoint)
    assert statuses == Counter({"SUCCEEDED": 9}) and set(calls) <= {"DONE", "REJECTED", "VOID"}


@pytest.mark.emulator_config(copy_base_s=1e6)  # copies last until the clock moves
def test_two_machines_started_together_one_runs_the_other_exits_4(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path) -> None:
    """One live run per state: the second finds the lease live and exits 4 at once, before
    its manifest is staged (sharing the work would need two writers of one log)."""
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint)
    runs = [Running(run_args(manifest, state, tmp_path / f"{m}.parquet"),
                    machine_env(w.env, tmp_path, m, moto_endpoint), tmp_path, m) for m in "ab"]
    deadline = time.monotonic() + 60
    while all(r.alive for r in runs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    loser = next(r for r in runs if not r.alive)
    winner = next(r for r in runs if r is not loser)
    assert loser.wait() == 4, loser.stderr()
    assert "is held by the run of" in loser.stderr() and f"pid {winner.proc.pid}" in loser.stderr()
    assert winner.wait_until(lambda: w.copies_requested() >= 9)
    emulator.set_clock(advance_s=1e7)
    emulator.update_config({"copy_base_s": 2.0})
    assert winner.wait() == 0, winner.stderr()
    copied_once(w, 9)


@pytest.mark.emulator_config(copy_base_s=20.0)
def test_s3_faults_of_every_kind_lose_nothing_and_copy_nothing_twice(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint, n=18)
    proxy = FaultProxy(moto_endpoint).start()
    try:
        proxy.set(seed=7, hold_s=1.5, error=0.06, error_after=0.04, timeout=0.02, lost=0.04,
                  refused412=0.08, landed412=0.08)
        env = {**machine_env(w.env, tmp_path, "a", proxy.url), "BATCHCOPY_S3_TIMEOUT": "1"}
        # a lease that outlives a few one-second timeouts in a row
        first = run_cli(run_args(manifest, state, tmp_path / "a.parquet", "--lease-ttl", "30"),
                        env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        injected = {k: n for k, n in proxy.counts.items() if n}
        assert len(injected) >= 4, injected
        rows = read_report(tmp_path / "a.parquet")
        assert len(rows) == 18 and {r["status"] for r in rows} == {"SUCCEEDED"}
        copied_once(w, 18)
        # another machine, through the same faults: everything is known, 0 calls
        calls = w.copy_calls()
        env_b = {**env, "BATCHCOPY_STATE_DIR": str(tmp_path / "machine-b")}
        again = run_cli(run_args(manifest, state, tmp_path / "b.parquet", "--lease-ttl", "30"),
                        env_b, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert w.copy_calls() == calls
        assert {r["status"] for r in read_report(tmp_path / "b.parquet")} == {"SKIPPED"}
    finally:
        proxy.stop()
    _, statuses = state_calls(state, tmp_path, monkeypatch, moto_endpoint)
    assert statuses == Counter({"SUCCEEDED": 18})


@pytest.mark.emulator_config(copy_base_s=20.0)
def test_s3_gone_mid_run_exits_3_naming_it_and_sends_nothing_it_does_not_record(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint, n=18)
    proxy = FaultProxy(moto_endpoint).start()
    try:
        env = {**machine_env(w.env, tmp_path, "a", proxy.url), "BATCHCOPY_S3_RETRY_FOR": "2"}
        run = Running(run_args(manifest, state, tmp_path / "a.parquet", *PACED), env, tmp_path, "a")
        assert run.wait_until(lambda: w.copies_requested() >= 3)
        proxy.block()
        assert run.wait(timeout=60) == 3, run.stderr()
        errors = [line for line in run.stderr().splitlines() if "ERROR" in line]
        assert len(errors) == 1 and state in errors[0] and "cannot be written" in errors[0], errors
        rows = read_report(tmp_path / "a.parquet")
        by = Counter(r["status"] for r in rows)
        assert by["NOT_RUN"] >= 1 and set(by) <= {"SUCCEEDED", "NOT_RUN", "UNKNOWN"}, by
        assert all(state in r["error_message"] for r in rows if r["status"] == "NOT_RUN")
        w.wait_idle()
        copies = w.copy_calls()
    finally:
        proxy.block(False)
        proxy.stop()
    calls, _ = state_calls(state, tmp_path, monkeypatch, moto_endpoint)
    assert copies <= sum(calls.values())  # every request that left was recorded in S3 first
    wait_lease_expired(moto_endpoint, state, monkeypatch)
    again = run_cli(run_args(manifest, state, tmp_path / "b.parquet"),
                    machine_env(w.env, tmp_path, "b", moto_endpoint), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    copied_once(w, 18)


@pytest.mark.emulator_config(copy_base_s=1e6)
def test_a_run_whose_lease_is_taken_stops_at_once_with_exit_3(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint)
    run = Running(run_args(manifest, state, tmp_path / "a.parquet", *PACED, "--stop-grace", "0"),
                  machine_env(w.env, tmp_path, "a", moto_endpoint), tmp_path, "a")
    assert run.wait_until(lambda: w.copies_requested() >= 2)
    bucket, prefix = state[len("s3://"):].split("/", 1)
    s3_client(moto_endpoint).put_object(Bucket=bucket, Key=f"{prefix}lease.json",
                                        Body=b'{"holder": {"host": "elsewhere"}, "ttl_s": 120}')
    assert run.wait(timeout=60) == 3, run.stderr()
    assert "taken by another run" in run.stderr()
    copies = w.copy_calls()
    calls, _ = state_calls(state, tmp_path, monkeypatch, moto_endpoint)
    assert copies <= sum(calls.values()) and w.copies_requested() < 9


@pytest.mark.emulator_config(copy_base_s=1e6)
def test_status_report_verify_and_undo_read_the_state_from_any_machine(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path) -> None:
    import json

    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint)
    run = Running(run_args(manifest, state, tmp_path / "a.parquet"),
                  machine_env(w.env, tmp_path, "a", moto_endpoint), tmp_path, "a")
    assert run.wait_until(lambda: w.copies_requested() >= 9)
    elsewhere = machine_env(w.env, tmp_path, "b", moto_endpoint)

    def status() -> dict[str, Any]:
        proc = run_cli(["status", state, "--output", "json"], elsewhere, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    deadline = time.monotonic() + 30
    while (live := status())["calls_open"] < 9:  # answers reach S3 within half a second
        assert time.monotonic() < deadline, live
    assert live["holder"]["live"] and live["holder"]["pid"] == run.proc.pid
    assert live["holder"]["renewed_at"] and live["holder"]["expires_at"]
    assert live["rows"] == 9 and live["rows_left"] == 9 and live["copy_rate_per_s"] > 0
    assert live["time_left_s"] is not None and live["run"]["finished_at"] is None
    emulator.set_clock(advance_s=1e7)
    emulator.update_config({"copy_base_s": 2.0})
    assert run.wait() == 0, run.stderr()
    done = status()
    assert done["holder"] is None and done["by_status"] == {"SUCCEEDED": 9}
    assert done["calls_open"] == 0 and done["run"]["exit_code"] == 0
    text = run_cli(["status", state], elsewhere, cwd=tmp_path)
    assert "held by: nobody" in text.stdout and "9 SUCCEEDED" in text.stdout, text.stdout

    shown = run_cli(["report", state, "-o", "json"], elsewhere, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["by_status"]["SUCCEEDED"] == 9
    checked = run_cli(["verify", "--state", state, "--out", str(tmp_path / "v.parquet")],
                      elsewhere, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    # undo from a third machine, through the report's summary (it names the state)
    third = machine_env(w.env, tmp_path, "c", moto_endpoint)
    undone = run_cli(["undo", str(tmp_path / "a.parquet"), "--yes", "--lease-ttl", "5",
                      "--rate", "DeleteImageSet=20", "--poll-first", "0.02"], third, cwd=tmp_path)
    assert undone.returncode == 0, undone.stderr
    assert w.stats()["deletes_requested"] == 9
    after = run_cli(["status", state, "-o", "json"], elsewhere, cwd=tmp_path)
    assert json.loads(after.stdout)["by_status"] == {"NOT_RUN": 9}  # the next run copies again


@pytest.mark.parametrize("args,said", [
    (["--state", "s3://no-such-bucket-here/p/"], ("no-such-bucket-here", "NoSuchBucket")),
    (["--state", "STATE", "--journal", "j.sqlite"], ("--journal and --state",)),
    (["--state", "m.csv"], ("--state", "is a file")),
    (["--state", "ftp://host/x/"], ("--state", "s3://bucket/prefix/")),
], ids=["no-bucket", "state-and-journal", "state-is-a-file", "not-s3"])
def test_a_state_that_cannot_be_used_is_one_line_exit_2_and_nothing_sent(
        emulator: Any, client_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
        args: list[str], said: tuple[str, ...]) -> None:
    w, manifest, state = job(emulator, client_env, tmp_path, moto_endpoint, n=2)
    args = [state if a == "STATE" else str(manifest) if a == "m.csv" else a for a in args]
    proc = run_cli(["run", str(manifest), *args, "--quiet"],
                   machine_env(w.env, tmp_path, "a", moto_endpoint), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert all(s in lines[0] for s in said) and "Traceback" not in proc.stderr, lines
    assert w.api_calls() == 0
