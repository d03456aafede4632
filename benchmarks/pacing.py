"""1. Pacing at equal quotas: client and emulator both CopyImageSet RATE/s burst 1.

A 1,000-row mix (per source image set: a whole copy, a series copy, three instances
merged into one destination: 5 rows -> 3 calls, so ~600 calls) run by `batchcopy run`
against `batchcopy emulator serve` in its own process, optionally with N busy-loop CPU
hogs beside them. Figures:

  throttles   CopyImageSet 429s counted by the emulator (goal 0)
  accepted    CopyImageSet calls the emulator accepted (calls - throttles)
  pace ratio  span of the accepted calls / ((accepted - 1) / rate)   (goal <= 1.03)
              the span is first to last accepted answer, as the run's summary measures it
  wall ratio  the whole process (start-up, last copies, report) / ((accepted - 1) / rate)

GetImageSet (version reads and completion polls) is raised to 250/s on both sides, in
proportion to the published quotas (25/s against CopyImageSet's 0.25/s), so that reads
do not pace the copies.

    python benchmarks/pacing.py [--rows 1000] [--rate 10] [--hogs 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Emulator, Hogs, calls, run_batchcopy, save, summarise, table, throttles, write_csv  # noqa: E402

READ_RATE = 250.0


def mix_rows(datastore_id: str, sets: list[dict[str, Any]], rows: int) -> list[dict[str, str]]:
    """Per source: whole copy, one series copy, three instances into a destination."""
    sources, dests = sets[: len(sets) // 2], sets[len(sets) // 2:]
    out: list[dict[str, str]] = []
    for src, dest in zip(sources, dests):
        series = list(src["series"].items())
        sid = src["imageSetId"]
        base = {"datastore_id": datastore_id, "source_image_set_id": sid}
        out.append({**base})
        out.append({**base, "series_instance_uid": series[0][0]})
        uid, sops = series[-1]
        for sop in sops[:3]:
            out.append({**base, "destination_image_set_id": dest["imageSetId"],
                        "series_instance_uid": uid, "sop_instance_uid": sop, "force": "true"})
    out = out[:rows]
    return [{"row_id": f"p{i}", **r} for i, r in enumerate(out)]


def once(rows: int, rate: float, hogs: int, work: Path, service_nice: int = 0) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=work))  # a journal of its own: a repeat must not resume
    config = {"copy_base_s": 0.05, "copy_per_frame_s": 0.001,
              "max_concurrent_copies_per_datastore": 100}
    quota = [f"CopyImageSet={rate:g}/1", f"GetImageSet={READ_RATE:g}/{READ_RATE:g}"]
    with Emulator(config, rates=quota, priority=service_nice) as emu:
        sources = -(-rows // 5)
        seeded = emu.seed(seed=3, patients=2 * sources, studies_per_patient=1,
                          series_per_study=2, instances_per_series=3)
        store = seeded["datastores"][0]
        manifest = write_csv(work / "pacing.csv", mix_rows(store["datastoreId"],
                                                           store["imageSets"], rows))
        before = emu.stats()
        with Hogs(hogs):
            proc, summary = run_batchcopy(
                manifest, emu, work, f"pacing-{hogs}", "--rate", f"CopyImageSet={rate:g}",
                "--rate", f"GetImageSet={READ_RATE:g}/{READ_RATE:g}",
                "--poll-first", "0.05", "--poll-max", "0.5")
        after = emu.stats()
    made = calls(after) - calls(before)
    refused = throttles(after) - throttles(before)
    accepted = made - refused
    ideal = max(accepted - 1, 1) / rate
    achieved = (summary.get("copy_rate") or {}).get("achieved_per_s") or 0.0
    span = (accepted - 1) / achieved if achieved else float("nan")
    return {"rows": rows, "hogs": hogs, "rate": rate, "calls": made, "throttles": refused,
            "accepted": accepted, "ideal_s": ideal, "span_s": span, "wall_s": proc.wall_s,
            "pace_ratio": span / ideal, "wall_ratio": proc.wall_s / ideal,
            "client_cpu_s": proc.cpu_s, "service_nice": emu.priority}


def run(rows: int = 1000, rate: float = 10.0, hogs: tuple[int, ...] = (0, 2),
        repeat: int = 1, results_dir: Path | None = None) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
        for _ in range(repeat):
            for n in hogs:  # side by side: idle and loaded in the same repeat
                runs.append(once(rows, rate, n, Path(tmp)))
    by_hogs = {}
    for n in hogs:
        mine = [r for r in runs if r["hogs"] == n]
        by_hogs[str(n)] = {key: summarise([r[key] for r in mine])
                           for key in ("throttles", "pace_ratio", "wall_ratio", "span_s",
                                       "wall_s", "accepted", "calls")}
    result = {"params": {"rows": rows, "rate": rate, "burst": 1, "hogs": list(hogs),
                         "repeat": repeat, "read_rate": READ_RATE},
              "goals": {"throttles": 0, "pace_ratio_max": 1.03},
              "runs": runs, "by_hogs": by_hogs}
    print(table(f"Pacing at equal quotas (CopyImageSet {rate:g}/s burst 1, {rows} rows; "
                f"min / median of {repeat})",
                ["CPU hogs", "calls", "accepted", "throttles", "pace ratio (goal <= 1.03)",
                 "wall ratio", "wall s"],
                [[n, f"{s['calls']['median']:.0f}", f"{s['accepted']['median']:.0f}",
                  f"{s['throttles']['min']:.0f} / {s['throttles']['median']:.0f}",
                  f"{s['pace_ratio']['min']:.3f} / {s['pace_ratio']['median']:.3f}",
                  f"{s['wall_ratio']['min']:.3f} / {s['wall_ratio']['median']:.3f}",
                  f"{s['wall_s']['median']:.1f}"] for n, s in by_hogs.items()]))
    save("pacing", result, **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--hogs", type=int, nargs="+", default=[0, 2],
                    help="CPU hogs beside the run; several values run side by side")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    run(args.rows, args.rate, tuple(args.hogs), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
