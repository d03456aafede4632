"""7. `batchcopy select` at the published quotas (SearchImageSets 25/s, GetImageSetMetadata
50/s): is a 100,000-image-set select fast enough to need no resume, or must it resume?
Side by side in one run, on the same emulator and data store:

  fixed       `select --limit 1`: start-up, one search page, one read (subtracted below)
  cold        `select -w Modality=CT` with an empty cache: one search page per 50 image sets,
              one metadata read per image set (the quota-bound ideal: N / 50 s)
  warm        the same command again: every read comes from the cache (search only)
  resumed     an empty cache, the select interrupted (SIGINT) half-way, then run again:
              metadata reads over both against N (what an interrupt costs)

Figures: wall, reads/s achieved against the 50/s quota (the ratio), throttles, CPU and
peak RSS; extrapolated to 100,000 image sets (labelled so).

    python benchmarks/selection.py [--image-sets 2000]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Emulator, batchcopy_cmd, calls, measure, save, table, throttles  # noqa: E402

QUOTA = 50.0  # GetImageSetMetadata, requests/s (published default)
BURST = 100  # its burst: the first reads go at once
SEARCH_QUOTA = 25.0  # SearchImageSets, requests/s
TARGET = 100_000


def _select(ds: str, work: Path, name: str) -> list[str]:
    return [*batchcopy_cmd(), "select", "--datastore-id", ds, "-w", "Modality=CT",
            "-o", str(work / f"{name}.csv"), "--progress", "log", "--log-interval", "1"]


def _env(emulator: Emulator, state: Path) -> dict[str, str]:
    return {**emulator.env(), "BATCHCOPY_STATE_DIR": str(state)}


def _reads(emulator: Emulator) -> tuple[int, int, int]:
    stats = emulator.stats()
    return (calls(stats, "GetImageSetMetadata"), calls(stats, "SearchImageSets"),
            throttles(stats, "GetImageSetMetadata") + throttles(stats, "SearchImageSets"))


def _interrupted(emulator: Emulator, cmd: list[str], env: dict[str, str],
                 half: int) -> tuple[int, str]:
    """Start `cmd`, SIGINT it once `half` reads are counted; (exit code, stderr tail)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    while _reads(emulator)[0] < half and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err[-400:]


def run(image_sets: int, *, results_dir: Path | None = None) -> dict[str, Any]:
    patients = max(1, image_sets // 2)
    out: dict[str, Any] = {"image_sets": patients * 2, "quota_per_s": QUOTA}
    with Emulator({"time_scale": 1.0}) as emulator, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = emulator.seed(seed=7, patients=patients, studies_per_patient=2, series_per_study=3,
                              instances_per_series=2, frames_per_instance=1)["datastores"][0]
        ds, n = store["datastoreId"], len(store["imageSets"])
        runs: dict[str, Any] = {}
        for name, state, extra in (("fixed", work / "state-fixed", ["--limit", "1"]),
                                   ("cold", work / "state", []), ("warm", work / "state", [])):
            before = _reads(emulator)
            measured = measure([*_select(ds, work, name), *extra], env=_env(emulator, state))
            after = _reads(emulator)
            reads, pages, throttled = (a - b for a, b in zip(after, before))
            runs[name] = {"wall_s": measured.wall_s, "cpu_s": measured.cpu_s,
                          "peak_rss_mib": measured.peak_rss_mib, "metadata_reads": reads,
                          "search_calls": pages, "throttles": throttled,
                          "image_sets_per_s": n / measured.wall_s}
        cold, fixed = runs["cold"], runs["fixed"]["wall_s"]  # fixed: start-up, a page, a read
        cold["reads_per_s"] = (cold["metadata_reads"] - 1) / max(1e-9, cold["wall_s"] - fixed)
        cold["ratio_to_quota"] = cold["reads_per_s"] / QUOTA
        cold["ideal_s"] = max(0.0, n - BURST) / QUOTA + fixed
        before = _reads(emulator)[0]
        cmd = _select(ds, work, "resumed")
        code, said = _interrupted(emulator, cmd, _env(emulator, work / "state-resume"),
                                  before + n // 2)
        first = _reads(emulator)[0] - before
        measured = measure(cmd, env=_env(emulator, work / "state-resume"))
        total = _reads(emulator)[0] - before
        runs["resumed"] = {"interrupt_exit": code, "interrupt_said": said,
                           "reads_before_interrupt": first,
                           "reads_total": total, "reads_repeated": total - n,
                           "wall_s_after": measured.wall_s}
        same = (work / "cold.csv").read_text() == (work / "resumed.csv").read_text()
        out.update(runs=runs, resumed_manifest_identical=same, image_sets=n,
                   extrapolated_100k={
                       "cold_min": TARGET / min(QUOTA, cold["reads_per_s"]) / 60,
                       "warm_min": (TARGET / 50 / SEARCH_QUOTA + fixed) / 60,
                       "label": "cold: 100,000 reads at the measured steady rate (at most the "
                                "quota); warm: search-bound model, 100,000 / 50 per page at "
                                "25 pages/s, plus the fixed cost measured"})
    print(table(f"select over {n:,} image sets at the published quotas", [
        "run", "wall s", "metadata reads", "search calls", "throttles", "image sets/s", "CPU s",
        "peak RSS MiB"], [(k, r["wall_s"], r["metadata_reads"], r["search_calls"], r["throttles"],
                           r["image_sets_per_s"], r["cpu_s"], r["peak_rss_mib"])
                          for k, r in runs.items() if k != "resumed"]))
    print(f"cold: {cold['reads_per_s']:.1f} reads/s after the fixed {fixed:.1f} s = "
          f"{cold['ratio_to_quota']:.2f} x the {QUOTA:g}/s quota (quota-bound ideal "
          f"{cold['ideal_s']:.0f} s, took {cold['wall_s']:.0f} s)")
    r = runs["resumed"]
    print(f"interrupted after {r['reads_before_interrupt']} reads (exit {r['interrupt_exit']}), "
          f"resumed: {r['reads_total']} reads in all for {n} image sets "
          f"({r['reads_repeated']} read twice); manifest identical: {same}")
    x = out["extrapolated_100k"]
    print(f"100,000 image sets (extrapolated): cold {x['cold_min']:.0f} min, warm "
          f"{x['warm_min']:.1f} min")
    save("selection", out, **({"results_dir": results_dir} if results_dir else {}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-sets", type=int, default=2000)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.image_sets)["extrapolated_100k"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
