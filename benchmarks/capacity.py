"""4. Client capacity: quotas off, near-instant copies, ROWS rows. How many rows per second
the client itself sustains (journal, HTTP, polling, report), what each row costs in CPU,
its peak RSS, and where the time goes (cProfile top 15, from a second, profiled run of
PROFILE_ROWS rows: the profiler slows the run, so it is timed apart).

Rows alternate a whole copy and a series copy of distinct image sets (so chains exist:
a series copy waits for the whole copy of the same source).

    python benchmarks/capacity.py [--rows 20000] [--profile-rows 5000]
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Emulator, batchcopy_cmd, measure, run_batchcopy, save, table, write_csv  # noqa: E402

FAST = ["--rate", "CopyImageSet=1000000", "--rate", "GetImageSet=1000000",
        "--poll-first", "0.005", "--poll-max", "0.05"]


def capacity_rows(datastore_id: str, sets: list[dict[str, Any]], rows: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for s in sets:
        base = {"datastore_id": datastore_id, "source_image_set_id": s["imageSetId"]}
        out.append(base)
        out.append({**base, "series_instance_uid": next(iter(s["series"]))})
        if len(out) >= rows:
            break
    return [{"row_id": f"o{i}", **r} for i, r in enumerate(out[:rows])]


def profile_summary(path: Path, top: int = 15) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path), stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in sorted(
            stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:  # type: ignore[attr-defined]
        where = filename.split("site-packages/")[-1].split("/batchcopy/")[-1]
        rows.append({"function": f"{where}:{line}({func})", "calls": ncalls,
                     "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3),
                     "share": round(tottime / total, 4) if total else 0.0})
    return rows


def run(rows: int = 20000, profile_rows: int = 5000,
        results_dir: Path | None = None) -> dict[str, Any]:
    config = {"copy_base_s": 0.001, "copy_per_frame_s": 0.0,
              "max_concurrent_copies_per_datastore": 100000}
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp, Emulator(
            config, no_rate_limits=True) as emu:
        work = Path(tmp)
        seeded = emu.seed(seed=5, patients=max(1, -(-rows // 2)), studies_per_patient=1,
                          series_per_study=2, instances_per_series=1)
        store = seeded["datastores"][0]
        all_rows = capacity_rows(store["datastoreId"], store["imageSets"], rows)
        manifest = write_csv(work / "capacity.csv", all_rows)
        before = emu.stats()["copies_executed"]
        proc, summary = run_batchcopy(manifest, emu, work, "capacity", *FAST)
        copies = emu.stats()["copies_executed"] - before
        # the profiled run: fresh image sets (the seed again), fewer rows
        emu.reset()
        seeded = emu.seed(seed=6, patients=max(1, -(-profile_rows // 2)), studies_per_patient=1,
                          series_per_study=2, instances_per_series=1)
        store = seeded["datastores"][0]
        small = write_csv(work / "profile.csv",
                          capacity_rows(store["datastoreId"], store["imageSets"], profile_rows))
        prof = work / "run.prof"
        measure([*batchcopy_cmd()[:1], "-m", "cProfile", "-o", str(prof), "-m", "batchcopy",
                 "run", str(small), "--report", str(work / "p.parquet"),
                 "--journal", str(work / "p.journal.sqlite"), "--quiet", *FAST], env=emu.env())
        top = profile_summary(prof)
    n = len(all_rows)
    result = {"params": {"rows": n, "profile_rows": profile_rows, "emulator": config},
              "goals": {"rows_per_s_min": 500, "cpu_ms_per_row_max": 2.0},
              "rows": n, "copies_executed": copies, "wall_s": proc.wall_s,
              "rows_per_s": n / proc.wall_s, "cpu_s": proc.cpu_s,
              "cpu_ms_per_row": 1000 * proc.cpu_s / n, "peak_rss_mib": proc.peak_rss_mib,
              "run_summary_counts": summary.get("counts"), "profile_top15": top}
    print(table(f"Client capacity: quotas off, instant copies, {n} rows",
                ["rows/s (goal >= 500)", "CPU ms/row (goal <= 2)", "peak RSS MiB", "wall s",
                 "copies"],
                [[f"{result['rows_per_s']:.0f}", f"{result['cpu_ms_per_row']:.2f}",
                  f"{proc.peak_rss_mib:.0f}", f"{proc.wall_s:.1f}", copies]]))
    print()
    print(table(f"cProfile top 15 by own time ({profile_rows} rows, profiled run)",
                ["function", "calls", "own s", "share"],
                [[r["function"], r["calls"], r["tottime_s"], f"{100 * r['share']:.1f}%"]
                 for r in top]))
    save("capacity", result, **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--profile-rows", type=int, default=5000)
    args = ap.parse_args()
    run(args.rows, args.profile_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
