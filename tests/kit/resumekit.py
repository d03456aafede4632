"""Helpers for the resume / stop / lock tests: the real CLI as a background process that
the test can kill at a chosen moment, read-only looks into its journal while it runs, and
the emulator's view of what was copied."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import DUMMY_CREDENTIALS, boto3_config, control_call
from kit.runkit import FAST

POLL_S = 0.02  # waits are on states the tests read; polling faster only costs CPU


@dataclass
class World:
    emulator: Any
    env: dict[str, str]
    ds: str
    sets: list[dict[str, Any]]

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "medical-imaging", endpoint_url=self.emulator.endpoint,
            region_name=self.emulator.config.region, config=boto3_config(),
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def stats(self) -> dict[str, Any]:
        return self.emulator.stats()

    def copies_requested(self) -> int:
        return int(self.stats()["copies_requested"])

    def api_calls(self) -> int:
        return sum(self.stats()["calls"].values())

    def copy_calls(self) -> int:
        return int(self.stats()["calls"].get("CopyImageSet", 0))

    def snapshot(self, image_set_id: str) -> dict[str, Any]:
        status, snap = control_call(self.emulator.endpoint, "GET",
                                    f"/_emulator/imagesets/{self.ds}/{image_set_id}")
        assert status == 200, snap
        return snap

    def wait_idle(self, limit_s: float = 20.0) -> None:
        """Until every copy the emulator started has ended."""
        deadline = time.monotonic() + limit_s
        while self.stats()["copies_in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)


def seed_world(emulator: Any, env: dict[str, str], spec: dict[str, Any]) -> World:
    status, summary = control_call(emulator.endpoint, "POST", "/_emulator/seed", spec)
    assert status == 200, summary
    store = summary["datastores"][0]
    full_env = {**env, **emulator.client_env()}
    return World(emulator, full_env, store["datastoreId"], store["imageSets"])


def env_for(emulator: Any, base: dict[str, str]) -> dict[str, str]:
    return {**base, **emulator.client_env()}


class Running:
    """`python -m batchcopy run ...` in the background, its output in files."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, tag: str) -> None:
        self.out = cwd / f"{tag}.stdout"
        self.err = cwd / f"{tag}.stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "batchcopy", *args], cwd=cwd,
                                         env={**os.environ, **env}, stdout=out, stderr=err)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Poll `predicate` while the process lives: True once it holds, False if the
        process ended first. A bounded wait (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while self.alive:
            if predicate():
                return True
            assert time.monotonic() < deadline, f"timed out; stderr:\n{self.stderr()}"
            time.sleep(POLL_S)
        return False


class OnATerminal(Running):
    """`python -m batchcopy ...` as the session leader of a pseudo-terminal, its stdin,
    stdout and stderr on it (what runs in an SSH session); `hang_up()` closes the
    terminal's other side, as sshd does when the connection drops: the kernel sends SIGHUP
    and the terminal reads as hung up. Output is drained meanwhile (a full terminal would
    block the run)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        import pty
        import threading

        self.err = cwd / "terminal.out"
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "batchcopy", *args], cwd=cwd,
                                     env={**os.environ, **env}, stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        """Drain the terminal; never blocked in read(): a read in progress would keep the
        terminal open after hang_up() closes it (the kernel hangs up on the last close)."""
        import select

        with self.err.open("wb") as out:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.master], [], [], POLL_S)
                if not ready:
                    continue
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the other side is gone
                    return
                if not chunk:
                    return
                out.write(chunk)
                out.flush()

    def hang_up(self) -> None:
        if self.master >= 0:
            self._stop.set()
            self._drain.join(timeout=10)
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> "OnATerminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.hang_up()
        if self.alive:
            self.kill()


def _controlling_terminal() -> None:
    """In the child, after setsid: make stdin (the terminal) its controlling terminal."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_args(manifest: Path, journal: Path, report: Path, *extra: str,
             resume: bool = False) -> list[str]:
    return ["run", str(manifest), "--journal", str(journal), "--report", str(report),
            *FAST, *(["--resume"] if resume else []), *extra]


def start(manifest: Path, env: dict[str, str], tmp: Path, tag: str, *extra: str,
          journal: Path, report: Path, resume: bool = False) -> Running:
    return Running(run_args(manifest, journal, report, *extra, resume=resume), env, tmp, tag)


# ---- the journal, read-only, while a run may be writing it --------------------------------
def journal_rows(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not journal.exists():
        return []
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        db.close()


def call_states(journal: Path) -> Counter[str]:
    return Counter({s: n for s, n in journal_rows(journal, "SELECT state, count(*) FROM calls "
                                                           "GROUP BY state")})


def row_states(journal: Path) -> Counter[str]:
    return Counter({s: n for s, n in journal_rows(journal, "SELECT status, count(*) FROM rows "
                                                           "GROUP BY status")})


def runs_started(journal: Path) -> int:
    return len(journal_rows(journal, "SELECT run_id FROM runs"))


def read_report(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def read_summary(report: Path) -> dict[str, Any]:
    return json.loads(Path(str(report).removesuffix(".parquet") + ".summary.json").read_text())


def instance_set(snapshot: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset((s, i) for s, sops in snapshot["instances"].items() for i in sops)


def distinct_copies(w: World, n: int, prefix: str = "r") -> list[dict[str, Any]]:
    """n rows of new copies, no two alike: every image set whole (independent of each
    other), then single series (chained behind the whole copy of their image set)."""
    rows = [{"source_image_set_id": s["imageSetId"]} for s in w.sets]
    rows += [{"source_image_set_id": s["imageSetId"], "series_instance_uid": ser}
             for s in w.sets for ser in s["series"]]
    assert len(rows) >= n, "seed more image sets"
    return [{"row_id": f"{prefix}{i}", "datastore_id": w.ds, **r} for i, r in enumerate(rows[:n])]


def copy_job(emulator: Any, env: dict[str, str], tmp: Path, spec: dict[str, Any], n: int,
             tag: str) -> tuple[World, list[dict[str, Any]], Path, Path, Path, int]:
    """A seeded world, a manifest of n distinct copies, journal and report paths named by
    tag, and the emulator's count of copies requested so far."""
    from kit.runkit import write_manifest

    w = seed_world(emulator, env, spec)
    rows = distinct_copies(w, n)
    manifest = write_manifest(tmp / "m.csv", rows)
    return (w, rows, manifest, tmp / f"{tag}.journal.sqlite", tmp / f"{tag}.parquet",
            w.copies_requested())
