"""7. The defence that needs no journal: what a rerun costs when the state is gone.

A manifest of rows that make new image sets (per seeded image set: a whole copy and a
copy of each of its series; 1,000 rows by default) is run once. Then, side by side on
the same emulator and data:

  journal        the same command again: the journal says every row is done
  no-state       a new, empty journal (the state directory was lost): the presence check
                 (--skip-present, the default) must find every row's copy: 0 CopyImageSet
  no-state-copy  the same with --no-skip-present: what a lost state cost before (every
                 row copied again; these duplicates are the benchmark's own)

For each: wall, CopyImageSet calls, and calls per row by operation (from the emulator's
counters). The read quotas are the service's published defaults (SearchImageSets and
GetImageSet 25/s, GetImageSetMetadata 50/s); CopyImageSet is raised to RATE/s (the
default 0.25/s would make no-state-copy take hours: its wall at the default quota is
given, computed from its calls).

    python benchmarks/present.py [--sets 200] [--series 4] [--rate 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Emulator, run_batchcopy, save, table, write_csv  # noqa: E402

DEFAULT_COPY_RATE = 0.25  # the service's published CopyImageSet quota
OPERATIONS = ("CopyImageSet", "SearchImageSets", "GetImageSet", "GetImageSetMetadata")


def rows_of(store: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for s in store["imageSets"]:
        rows.append({"row_id": f"w{len(rows)}", "datastore_id": store["datastoreId"],
                     "source_image_set_id": s["imageSetId"]})
        for series in s["series"]:
            rows.append({"row_id": f"s{len(rows)}", "datastore_id": store["datastoreId"],
                         "source_image_set_id": s["imageSetId"], "series_instance_uid": series})
    return rows


def phase(emu: Emulator, manifest: Path, work: Path, name: str, journal: str, rows: int,
          args: list[str]) -> dict[str, Any]:
    before = emu.stats()["calls"]
    proc, summary = run_batchcopy(manifest, emu, work, journal, *args)
    after = emu.stats()["calls"]
    calls = {op: int(after.get(op, 0)) - int(before.get(op, 0)) for op in OPERATIONS}
    statuses = summary.get("by_status") or summary.get("statuses") or {}
    return {"phase": name, "rows": rows, "wall_s": proc.wall_s, "cpu_s": proc.cpu_s,
            "calls": calls, "calls_per_row": {op: n / rows for op, n in calls.items()},
            "all_calls_per_row": sum(calls.values()) / rows, "statuses": statuses,
            "rows_already_present": summary.get("rows_already_present")}


def run(sets: int = 200, series: int = 4, rate: float = 10.0,
        results_dir: Path | None = None) -> dict[str, Any]:
    config = {"copy_base_s": 0.05, "copy_per_frame_s": 0.001}
    client = ["--rate", f"CopyImageSet={rate:g}", "--poll-first", "0.05", "--poll-max", "0.5"]
    with tempfile.TemporaryDirectory(prefix="bench-present-") as tmp, Emulator(
            config, rates=[f"CopyImageSet={rate:g}/1"]) as emu:
        work = Path(tmp)
        store = emu.seed(seed=17, patients=sets, studies_per_patient=1, series_per_study=series,
                         instances_per_series=2)["datastores"][0]
        rows = rows_of(store)
        manifest = write_csv(work / "new-sets.csv", rows)
        n = len(rows)
        phases = [phase(emu, manifest, work, "first run", "first", n, client)]
        phases.append(phase(emu, manifest, work, "journal", "first", n, client))
        phases.append(phase(emu, manifest, work, "no-state", "lost", n, client))
        phases.append(phase(emu, manifest, work, "no-state-copy", "lost-copy", n,
                            [*client, "--no-skip-present"]))
    by = {p["phase"]: p for p in phases}
    copy_again = by["no-state-copy"]
    result = {
        "params": {"sets": sets, "series_per_set": series, "rows": n, "copy_rate": rate,
                   "emulator": config},
        "goals": {"no-state CopyImageSet calls": 0},
        "phases": phases,
        "no_state_copy_calls": by["no-state"]["calls"]["CopyImageSet"],
        "no_state_calls_per_row": by["no-state"]["all_calls_per_row"],
        "ratios": {
            "no-state wall / no-state-copy wall": by["no-state"]["wall_s"] / copy_again["wall_s"],
            "no-state wall / copying again at the default quota":
                by["no-state"]["wall_s"] / (copy_again["calls"]["CopyImageSet"] / DEFAULT_COPY_RATE),
        },
    }
    print(table(f"A rerun of {n} new-image-set rows ({sets} image sets x (1 + {series}) rows), "
                f"CopyImageSet {rate:g}/s, reads at the published quotas",
                ["phase", "wall s", *(f"{op}/row" for op in OPERATIONS), "all calls/row"],
                [[p["phase"], f"{p['wall_s']:.1f}",
                  *(f"{p['calls_per_row'][op]:.2f}" for op in OPERATIONS),
                  f"{p['all_calls_per_row']:.2f}"] for p in phases]))
    print()
    print(table("Ratios, same run", ["ratio", "value"],
                [[k, f"{v:.3f}"] for k, v in result["ratios"].items()]))
    save("present", result, **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=200)
    ap.add_argument("--series", type=int, default=4)
    ap.add_argument("--rate", type=float, default=10.0)
    args = ap.parse_args()
    run(args.sets, args.series, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
