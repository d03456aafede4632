"""5. Scale: `batchcopy validate` and `batchcopy plan` of a ROWS-row manifest (wall, peak
RSS; each its own process, as a user runs it), and a RUN_ROWS-row run against the
emulator (quotas off, instant copies) with the client's RSS sampled when a tenth of the
rows and all of them have been copied, and its peak (the report is written after the
last copy): memory should not grow with the run.

The manifest: mostly whole copies of distinct image sets; every 10th row an instance
into a destination shared with its neighbours (so merges and chains exist).

    python benchmarks/scale.py [--rows 1000000] [--run-rows 100000]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity import FAST, capacity_rows  # noqa: E402
from common import Emulator, batchcopy_cmd, measure, rss_mib, run_batchcopy, save, table, write_csv  # noqa: E402

DS = "0" * 32


def ident(n: int, salt: str) -> str:
    return hashlib.md5(f"{salt}{n}".encode()).hexdigest()


def big_manifest(path: Path, rows: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row_id", "datastore_id", "source_image_set_id", "destination_image_set_id",
                    "series_instance_uid", "sop_instance_uid", "force"])
        for i in range(rows):
            if i % 10 == 0:
                w.writerow([f"r{i}", DS, ident(i // 100, "src"), ident(i // 1000, "dst"),
                            "1.2.3", f"1.2.3.{i}", "true"])
            else:
                w.writerow([f"r{i}", DS, ident(i, "src"), "", "", "", ""])


class RssSampler:
    """Watches a run: the client's RSS when the emulator has executed 10% and 100% of
    the copies (the first sample past each mark; a mark the run passes only as it exits
    gets the last sample taken). The emulator's stats are read at most every
    `stats_every` seconds: they walk every image set under the model's lock."""

    def __init__(self, emu: Emulator, rows: int, start: int) -> None:
        self.emu, self.rows, self.start = emu, rows, start
        self.marks = {"rss_at_10pct_mib": rows // 10, "rss_at_100pct_mib": rows}
        self.samples: dict[str, float] = {}
        self.stats_every = 1.0 if rows >= 10_000 else 0.1

    def __call__(self, pid: int) -> None:
        last, asked = None, 0.0
        while (rss := rss_mib(pid)) is not None:
            last = rss
            if time.monotonic() - asked >= self.stats_every:
                asked = time.monotonic()
                done = self.emu.stats()["copies_executed"] - self.start
                for name, mark in self.marks.items():
                    if name not in self.samples and done >= mark:
                        self.samples[name] = rss
            time.sleep(0.05)
        for name in self.marks:
            if last is not None:
                self.samples.setdefault(name, last)


def run(rows: int = 1_000_000, run_rows: int = 100_000,
        results_dir: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"params": {"rows": rows, "run_rows": run_rows},
                           "goals": {"validate_s_max": 10, "plan_s_max": 12,
                                     "peak_rss_mib_max": 500, "run_rss_growth_mib_max": 20}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        manifest = work / "big.csv"
        big_manifest(manifest, rows)
        out["manifest_mib"] = manifest.stat().st_size / 2**20
        for command in ("validate", "plan"):
            proc = measure([*batchcopy_cmd(), command, str(manifest)], check=False)
            if proc.returncode not in (0, 1):
                raise RuntimeError(f"{command} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
            out[command] = {"wall_s": proc.wall_s, "cpu_s": proc.cpu_s,
                            "peak_rss_mib": proc.peak_rss_mib, "exit": proc.returncode}
        config = {"copy_base_s": 0.001, "copy_per_frame_s": 0.0,
                  "max_concurrent_copies_per_datastore": 100000}
        with Emulator(config, no_rate_limits=True) as emu:
            seeded = emu.seed(seed=7, patients=max(1, -(-run_rows // 2)), studies_per_patient=1,
                              series_per_study=2, instances_per_series=1)
            store = seeded["datastores"][0]
            run_manifest = write_csv(work / "run.csv", capacity_rows(
                store["datastoreId"], store["imageSets"], run_rows))
            sampler = RssSampler(emu, run_rows, emu.stats()["copies_executed"])
            proc, _ = run_batchcopy(run_manifest, emu, work, "scale-run", *FAST, watch=sampler)
        s = sampler.samples
        first = s.get("rss_at_10pct_mib", float("nan"))
        out["run"] = {"rows": run_rows, "wall_s": proc.wall_s, "rows_per_s": run_rows / proc.wall_s,
                      "peak_rss_mib": proc.peak_rss_mib, **s,
                      "growth_to_end_mib": s.get("rss_at_100pct_mib", float("nan")) - first,
                      "growth_to_peak_mib": proc.peak_rss_mib - first}
    v, p, r = out["validate"], out["plan"], out["run"]
    print(table(f"Scale: a {rows:,}-row manifest ({out['manifest_mib']:.0f} MiB CSV)",
                ["command", "wall s", "CPU s", "peak RSS MiB", "goal"],
                [["validate", f"{v['wall_s']:.1f}", f"{v['cpu_s']:.1f}",
                  f"{v['peak_rss_mib']:.0f}", "<= 10 s, <= 500 MiB"],
                 ["plan", f"{p['wall_s']:.1f}", f"{p['cpu_s']:.1f}", f"{p['peak_rss_mib']:.0f}",
                  "<= 12 s, <= 500 MiB"]]))
    print()
    print(table(f"A {run_rows:,}-row run, client RSS (MiB)",
                ["at 10% copied", "at 100% copied", "peak (report included)",
                 "growth 10% -> 100%", "growth 10% -> peak", "rows/s"],
                [[f"{first:.0f}", f"{s.get('rss_at_100pct_mib', float('nan')):.0f}",
                  f"{r['peak_rss_mib']:.0f}", f"{r['growth_to_end_mib']:+.0f}",
                  f"{r['growth_to_peak_mib']:+.0f}", f"{r['rows_per_s']:.0f}"]]))
    save("scale", out, **({"results_dir": results_dir} if results_dir else {}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--run-rows", type=int, default=100_000)
    args = ap.parse_args()
    run(args.rows, args.run_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
