"""Scale: memory of a million-row manifest, and the runner's own overhead per copy.

1. Memory (each step in its own process, peak RSS): reading + planning a manifest of
   --rows rows in batches (what `batchcopy run` does) against materialising every row
   as a CopySpec at once (what a naive loop does). Prints both and their ratio, plus the
   time to validate, to plan, to record the rows in a journal and to write the report.
   Also the one pass a run makes (scan_manifest: rows and report together) and
   `batchcopy validate` of a 3-row manifest as a user runs it (start-up included).
2. Overhead: a run of --run-rows rows against the emulator with its quotas off and
   near-instant copies: how many copies per second the runner itself sustains (journal
   commits, HTTP, polling), i.e. the ceiling for raised quotas.

    python benchmarks/scale.py [--rows 1000000] [--run-rows 3000] [--manifest-only]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DS = "0" * 32


def ident(n: int, salt: str) -> str:
    return hashlib.md5(f"{salt}{n}".encode()).hexdigest()


def make_manifest(path: Path, rows: int) -> None:
    """Mostly new copies of distinct image sets; every 10th row a subset into a
    destination shared with its neighbours (so chains and merges exist)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row_id", "datastore_id", "source_image_set_id", "destination_image_set_id",
                     "series_instance_uid", "sop_instance_uid"])
        for i in range(rows):
            if i % 10 == 0:
                w.writerow([f"r{i}", DS, ident(i // 100, "src"), ident(i // 1000, "dst"),
                            "1.2.3", f"1.2.3.{i}"])
            else:
                w.writerow([f"r{i}", DS, ident(i, "src"), "", "", ""])


def step(name: str, manifest: str, tmp: str) -> None:
    """Run inside a child process; print JSON with seconds and peak RSS."""
    started = time.monotonic()
    from batchcopy.manifest import read_specs, scan_manifest, validate
    from batchcopy.plan import Planner

    out: dict[str, object] = {}
    if name == "tiny-cli":  # the only child of this process: RUSAGE_CHILDREN is the CLI's peak
        tiny = Path(tmp) / "tiny.csv"
        with tiny.open("w", newline="") as fh:
            csv.writer(fh).writerows([["row_id", "datastore_id", "source_image_set_id"]]
                                     + [[f"t{i}", DS, ident(i, "tiny")] for i in range(3)])
        walls = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "batchcopy", "validate", str(tiny)], check=True,
                           capture_output=True)
            walls.append(time.monotonic() - t0)
        out["best_of_3_s"] = round(min(walls), 2)
        out["cli_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    elif name == "scan":
        scan = scan_manifest(Path(manifest))
        out["rows"] = sum(len(batch) for batch in scan)
        out["errors"] = len(scan.report.errors)
    elif name == "validate":
        report = validate(Path(manifest))
        out["rows"] = report.rows
        out["errors"] = len(report.errors)
    elif name == "stream-plan":
        planner = Planner()
        units = 0
        for batch in read_specs(Path(manifest)):
            units += len(planner.add_batch(batch))
        out["units"] = units
    elif name == "materialise":
        specs = [s for batch in read_specs(Path(manifest)) for s in batch]
        out["rows"] = len(specs)
    elif name == "journal+report":
        import asyncio

        from batchcopy.journal import Journal
        from batchcopy.report import write_report
        from batchcopy.results import journal_results

        journal = Journal(Path(tmp) / "bench.journal.sqlite")
        t0 = time.monotonic()
        journal.begin_manifest()
        for batch in read_specs(Path(manifest)):
            journal.stage(batch)
        journal.commit_manifest()
        out["journal_s"] = round(time.monotonic() - t0, 2)
        run_id = journal.start_run(manifest)
        asyncio.run(journal.mark_pending_not_run(run_id, "benchmark"))
        t1 = time.monotonic()
        counts = asyncio.run(write_report(journal_results(journal), str(Path(tmp) / "bench.parquet")))
        out["report_s"] = round(time.monotonic() - t1, 2)
        out["report_rows"] = counts.rows
        out["journal_mb"] = round(os.path.getsize(journal.path) / 2**20, 1)
    out["seconds"] = round(time.monotonic() - started, 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def child(name: str, manifest: Path, tmp: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--step", name, str(manifest), str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def overhead(run_rows: int, tmp: Path) -> None:
    from batchcopy.emulator.config import EmulatorConfig
    from batchcopy.emulator.seed import SeedSpec, seed
    from batchcopy.emulator.server import EmulatorServer

    config = EmulatorConfig(enforce_rates=False, copy_base_s=0.001, copy_per_frame_s=0.0,
                            max_concurrent_copies_per_datastore=100)
    with EmulatorServer(config) as server:
        summary = seed(server.model, SeedSpec(seed=5, patients=max(1, run_rows // 2),
                                              studies_per_patient=1, series_per_study=2,
                                              instances_per_series=1))
        store = summary["datastores"][0]
        rows = []
        for s in store["imageSets"]:
            rows.append({"source_image_set_id": s["imageSetId"]})
            for series in s["series"]:
                rows.append({"source_image_set_id": s["imageSetId"], "series_instance_uid": series})
        rows = rows[:run_rows]
        manifest = tmp / "overhead.csv"
        with manifest.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["row_id", "datastore_id", "source_image_set_id",
                                               "series_instance_uid"])
            w.writeheader()
            for i, r in enumerate(rows):
                w.writerow({"row_id": f"o{i}", "datastore_id": store["datastoreId"], **r})
        env = {**os.environ, **server.client_env(), "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench"}
        rates = ["--rate", "CopyImageSet=100000", "--rate", "GetImageSet=100000"]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "batchcopy", "run", str(manifest), "--report",
             str(tmp / "overhead.parquet"), "--journal", str(tmp / "overhead.journal.sqlite"),
             *rates, "--poll-first", "0.005", "--poll-max", "0.05", "--quiet"],
            env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"overhead run failed ({proc.returncode}):\n{proc.stderr}")
        stats = server.stats()
        print(f"overhead: {len(rows)} rows, {stats['copies_executed']} copies, quotas off: "
              f"{wall:.1f}s wall, {len(rows) / wall:.0f} rows/s "
              f"({1000 * wall / len(rows):.2f} ms per copy, journal and polling included); "
              f"GetImageSet calls per copy {stats['calls'].get('GetImageSet', 0) / len(rows):.2f}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        step(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--run-rows", type=int, default=3000)
    ap.add_argument("--manifest-only", action="store_true",
                    help="only validate, scan and the 3-row CLI validate (no plan, journal or run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        manifest = tmp / "big.csv"
        t0 = time.monotonic()
        make_manifest(manifest, args.rows)
        print(f"manifest: {args.rows} rows, {manifest.stat().st_size / 2**20:.0f} MiB CSV, "
              f"written in {time.monotonic() - t0:.1f}s")
        steps = ("validate", "scan", "tiny-cli") if args.manifest_only else (
            "validate", "scan", "tiny-cli", "stream-plan", "materialise", "journal+report")
        results = {name: child(name, manifest, tmp) for name in steps}
        for name, r in results.items():
            print(f"  {name:15s} {json.dumps(r)}")
        if args.manifest_only:
            return 0
        ratio = results["materialise"]["peak_rss_mb"] / results["stream-plan"]["peak_rss_mb"]
        print(f"memory: streaming plan peak {results['stream-plan']['peak_rss_mb']} MB vs all rows "
              f"as objects {results['materialise']['peak_rss_mb']} MB: ratio {ratio:.2f}x")
        overhead(args.run_rows, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
