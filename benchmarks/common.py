"""What every benchmark shares: the emulator in its own process, child processes measured
with their own resource usage, manifests, tables and the JSON results.

Nothing here imports batchcopy: the client under test always runs as `batchcopy ...` in a
child process (start-up included), the emulator as `batchcopy emulator serve` in another.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Dummy credentials for the emulator only (it does not check signatures unless told to).
DUMMY_CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_DISABLE_HOST_PREFIX_INJECTION": "true"}


def batchcopy_cmd() -> list[str]:
    return [sys.executable, "-m", "batchcopy"]


# ------------------------------------------------------------------ child processes
@dataclass
class Measured:
    """A finished child process: exit code, wall seconds, CPU seconds, peak RSS (MiB)."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    stdout: str = ""
    stderr: str = ""
    samples: dict[str, float] = field(default_factory=dict)


def rss_mib(pid: int) -> float | None:
    """The current resident set size of a live process, from /proc (None once gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def niced(nice: int) -> Callable[[], None] | None:
    """A preexec_fn that sets a child's nice value (< 0 needs the privilege; without it
    the child runs at the default priority), or None for 0."""
    if not nice:
        return None

    def lift() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass

    return lift


def measure(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            watch: Callable[[int], None] | None = None, check: bool = True,
            nice: int = 0) -> Measured:
    """Run `cmd`; its own CPU time and peak RSS come from wait4 (this child only, not
    every child this process ever had). `watch(pid)` runs in a thread meanwhile."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=err,
                            preexec_fn=niced(nice))
    watcher = None
    if watch is not None:
        watcher = threading.Thread(target=watch, args=(proc.pid,), daemon=True)
        watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if watcher is not None:
        watcher.join(timeout=5)
    out.seek(0)
    err.seek(0)
    result = Measured(proc.returncode, wall, usage.ru_utime + usage.ru_stime,
                      usage.ru_maxrss / 1024, out.read().decode(errors="replace"),
                      err.read().decode(errors="replace"))
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))}... exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return result


class Hogs:
    """N busy-loop processes beside the benchmark (the 'machine loaded' condition)."""

    def __init__(self, n: int, nice: int = 0) -> None:
        self.n = n
        self.nice = nice
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Hogs:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                               preexec_fn=niced(self.nice)))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ the emulator
class Emulator:
    """`batchcopy emulator serve` on 127.0.0.1, any free port, in its own process."""

    def __init__(self, config: dict[str, Any] | None = None, *, no_rate_limits: bool = False,
                 rates: Iterable[str] = (), priority: int = 0) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-emulator-")
        self.config = config or {}
        self.args = ["--host", "127.0.0.1", "--port", "0"]
        if self.config:
            path = Path(self._dir.name) / "config.json"
            path.write_text(json.dumps(self.config))
            self.args += ["--config", str(path)]
        for rate in rates:
            self.args += ["--rate", rate]
        if no_rate_limits:
            self.args.append("--no-rate-limits")
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.priority = priority  # a nice value; < 0 needs the privilege to raise priority

    def __enter__(self) -> Emulator:
        nice = self.priority

        def lift() -> None:
            if nice:
                try:
                    os.setpriority(os.PRIO_PROCESS, 0, nice)
                except OSError:
                    pass  # not allowed: run at the default priority (the JSON says which)

        self.proc = subprocess.Popen([*batchcopy_cmd(), "emulator", "serve", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, preexec_fn=lift)
        self.priority = os.getpriority(os.PRIO_PROCESS, self.proc.pid) if nice else 0
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.endpoint = line.split("listening on", 1)[1].strip()
        # drain the rest of its stdout so it never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as resp:
            return json.loads(resp.read() or b"null")

    def seed(self, **spec: Any) -> dict[str, Any]:
        return self.control("POST", "/_emulator/seed", spec)  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.control("POST", "/_emulator/reset", {})

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "/_emulator/stats")  # type: ignore[no-any-return]

    def copies(self) -> list[dict[str, Any]]:
        """Every accepted copy's life: accepted_at, ended_at, seen_ended_at (emulator clock)."""
        return self.control("GET", "/_emulator/copies")["copies"]  # type: ignore[no-any-return]

    def image_set(self, datastore_id: str, image_set_id: str) -> dict[str, Any]:
        return self.control(  # type: ignore[no-any-return]
            "GET", f"/_emulator/imagesets/{datastore_id}/{image_set_id}")

    def env(self) -> dict[str, str]:
        """Environment for a client process: endpoint, no host prefix, dummy creds."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**env, **DUMMY_CREDS, "AWS_ENDPOINT_URL_MEDICAL_IMAGING": self.endpoint,
                "AWS_ENDPOINT_URL": self.endpoint}


def throttles(stats: dict[str, Any], op: str = "CopyImageSet") -> int:
    return int(stats.get("throttled", {}).get(op, 0))


def calls(stats: dict[str, Any], op: str = "CopyImageSet") -> int:
    return int(stats.get("calls", {}).get(op, 0))


# ------------------------------------------------------------------ batchcopy run
def run_batchcopy(manifest: Path, emulator: Emulator, work: Path, name: str, *extra: str,
                  watch: Callable[[int], None] | None = None,
                  nice: int = 0) -> tuple[Measured, dict[str, Any]]:
    """`batchcopy run` as a user runs it; return the measured process and its summary."""
    report = work / f"{name}.parquet"
    result = measure([*batchcopy_cmd(), "run", str(manifest), "--report", str(report),
                      "--journal", str(work / f"{name}.journal.sqlite"), "--quiet", *extra],
                     env=emulator.env(), watch=watch, nice=nice)
    summary_path = work / f"{name}.summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result, summary


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    cols: list[str] = []
    for row in rows:
        cols.extend(c for c in row if c not in cols)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------ repeats, tables, JSON
def summarise(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated measurements (a single run: all three equal)."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table (pastes into the README as it is)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]}


def save(name: str, data: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    payload = {"benchmark": name, "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
