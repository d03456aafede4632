"""Pacing and merging, measured side by side in one run against the bundled emulator.

1. Pacing: client and emulator agree on the CopyImageSet quota (default 10/s, burst 1,
   real time). A few hundred distinct rows should get zero throttles and a wall time
   close to calls / rate. Prints the ratio.
2. Merging: the same subset rows into shared destinations with and without --no-merge:
   calls made and wall time, and their ratios.

    python benchmarks/pacing.py [--rows 300] [--rate 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--merge-rows", type=int, default=120)
    args = ap.parse_args()

    from batchcopy.emulator.config import EmulatorConfig, RateQuota
    from batchcopy.emulator.seed import SeedSpec, seed
    from batchcopy.emulator.server import EmulatorServer

    config = EmulatorConfig(rates={"CopyImageSet": RateQuota(args.rate, 1)},
                            copy_base_s=0.05, copy_per_frame_s=0.001,
                            max_concurrent_copies_per_datastore=100)
    with EmulatorServer(config) as server, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        summary = seed(server.model, SeedSpec(seed=3, patients=20, studies_per_patient=2,
                                              series_per_study=2, instances_per_series=4))
        store = summary["datastores"][0]
        ds, sets = store["datastoreId"], store["imageSets"]
        env = {**os.environ, **server.client_env(), "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench"}

        # 1. pacing at equal quotas
        rows = distinct_rows(ds, sets, args.rows)
        manifest = write(tmp / "pacing.csv", rows)
        before = server.stats()
        result = run(manifest, env, tmp, "pacing", args.rate)
        after = server.stats()
        calls = result["copy_calls"]
        ideal = max(calls - 1, 1) / args.rate  # burst 1: the first call is free
        throttles = after["throttled"].get("CopyImageSet", 0) - before["throttled"].get("CopyImageSet", 0)
        print(f"pacing: {len(rows)} rows, {calls} CopyImageSet calls at {args.rate:g}/s "
              f"(client and emulator agree)")
        print(f"  throttles seen by the emulator: {throttles}")
        print(f"  copy-call span {result['span_s']:.2f}s vs (calls-1)/rate {ideal:.2f}s: "
              f"ratio {result['span_s'] / ideal:.3f}")
        print(f"  whole run wall time {result['wall_s']:.2f}s (includes waiting for the last "
              f"copies and start-up); achieved {result['achieved']} calls/s")

        # 2. merging: subset rows into shared destinations
        dests = [s for s in sets[:10]]
        merge_rows = subset_rows(ds, sets[10:], dests, args.merge_rows)
        m_manifest = write(tmp / "merge.csv", merge_rows)
        merged = run(m_manifest, env, tmp, "merged", args.rate)
        unmerged = run(m_manifest, env, tmp, "unmerged", args.rate, "--no-merge")
        print(f"merging: {len(merge_rows)} subset rows into {len(dests)} destinations (--force)")
        print(f"  merged:   {merged['copy_calls']} calls, {merged['wall_s']:.2f}s")
        print(f"  unmerged: {unmerged['copy_calls']} calls, {unmerged['wall_s']:.2f}s")
        print(f"  calls ratio unmerged/merged {unmerged['copy_calls'] / merged['copy_calls']:.1f}x, "
              f"wall time ratio {unmerged['wall_s'] / merged['wall_s']:.1f}x "
              f"(at the default 0.25/s quota the {unmerged['copy_calls'] - merged['copy_calls']} "
              f"calls saved are {4 * (unmerged['copy_calls'] - merged['copy_calls']) / 60:.0f} minutes)")
    return 0


def distinct_rows(ds: str, sets: list[dict[str, Any]], n: int) -> list[dict[str, str]]:
    rows = [{"source_image_set_id": s["imageSetId"]} for s in sets]
    rows += [{"source_image_set_id": s["imageSetId"], "series_instance_uid": series}
             for s in sets for series in s["series"]]
    rows += [{"source_image_set_id": s["imageSetId"], "series_instance_uid": series,
              "sop_instance_uid": sop}
             for s in sets for series, sops in s["series"].items() for sop in sops]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} distinct rows available")
    return [{"row_id": f"p{i}", "datastore_id": ds, **r} for i, r in enumerate(rows[:n])]


def subset_rows(ds: str, sources: list[dict[str, Any]], dests: list[dict[str, Any]],
                n: int) -> list[dict[str, str]]:
    rows = []
    for k, src in enumerate(sources):
        dest = dests[k % len(dests)]
        for series, sops in src["series"].items():
            for sop in sops:
                rows.append({"row_id": f"m{len(rows)}", "datastore_id": ds,
                             "source_image_set_id": src["imageSetId"],
                             "destination_image_set_id": dest["imageSetId"],
                             "series_instance_uid": series, "sop_instance_uid": sop,
                             "force": "true"})
                if len(rows) >= n:
                    return rows
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    cols = sorted({c for r in rows for c in r})
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def run(manifest: Path, env: dict[str, str], tmp: Path, name: str, rate: float,
        *extra: str) -> dict[str, Any]:
    report = tmp / f"{name}.parquet"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "batchcopy", "run", str(manifest), "--report", str(report),
         "--journal", str(tmp / f"{name}.journal.sqlite"), "--rate", f"CopyImageSet={rate:g}",
         "--poll-first", "0.05", "--poll-max", "0.5", "--quiet", *extra],
        env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"{name}: exit {proc.returncode}")
    summary = json.loads(Path(str(report).removesuffix(".parquet") + ".summary.json").read_text())
    calls = summary["copy_calls"]
    achieved = summary["copy_rate"]["achieved_per_s"]
    span = (calls - 1) / achieved if achieved else 0.0
    return {"copy_calls": calls, "wall_s": wall, "span_s": span, "achieved": achieved}


if __name__ == "__main__":
    sys.exit(main())
