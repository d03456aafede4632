"""7. Throughput at the quota: many independent new copies, the scenario users meet.

COPIES whole image sets (two instances of one frame each; the emulator's default copy
model, 2 s + 0.02 s per frame, so 2.04 s a copy) copied into new image sets, client and
emulator both at CopyImageSet RATE/s burst 1, GetImageSet at its published 25/s burst 50
on both sides (version reads and completion polls share it), the service's 100 copies in
flight per data store; idle and with N CPU hogs beside it, and the naive boto3 thread pool
(benchmarks/naive_boto3.py) on the same manifest and emulator settings in the same run.

Every figure comes from the emulator (its counters and its timeline of copies,
GET /_emulator/copies), not from the client's own account:

  span ratio      first to last accepted copy / ((accepted - 1) / rate): the quota's own
                  limit is (n - burst) / rate seconds for n calls   (goal idle <= 1.03,
                  hogs <= 1.06)
  throttles       CopyImageSet 429s                          (goal idle 0, hogs <= 1%);
                  halvings: those the client did not take for jitter (it halved its rate)
  stalls          gaps between consecutive accepted copies longer than two send intervals:
                  how many, the longest
  detection       a copy's end (as the service has it) to the first GetImageSet that showed
                  it ended: median / p95 / max                 (goal <= 0.5 s / <= 2 s)
  GetImageSet     per accepted copy: every call (version reads and polls), and the polls
                  alone (reads naming a version)                (goal polls <= 1.5)
  wall            the client process, start-up and report included
  timer late      how late the client's send timer woke (median / p95 ms, from the run's
                  summary): every late send delays the ones after it at burst 1

`--nice N` runs the emulator, the client and the hogs at nice N (N < 0 needs the
privilege): on a machine busy with other work it puts them ahead of that work, as on an
otherwise idle machine, while the hogs still compete with the client on equal terms.
The JSON says which nice value each run had.

    python benchmarks/throughput.py [--copies 300 3000] [--rate 10] [--hogs 0 2]
                                    [--naive-max 300] [--nice -10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HERE, Emulator, Hogs, calls, measure, run_batchcopy, save, table, throttles, write_csv)

INSTANCES = 2  # per image set: one series of two one-frame instances -> a 2.04 s copy


def whole_copies(datastore_id: str, sets: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"row_id": f"t{i}", "datastore_id": datastore_id,
             "source_image_set_id": s["imageSetId"]} for i, s in enumerate(sets)]


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timeline_figures(copies: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Span, stalls and detection delays from the emulator's timeline of accepted copies."""
    accepted = sorted(c["accepted_at"] for c in copies)
    n = len(accepted)
    ideal = max(n - 1, 1) / rate
    span = accepted[-1] - accepted[0] if n > 1 else 0.0
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    stalls = [g for g in gaps if g > 2.0 / rate]
    delays = [c["seen_ended_at"] - c["ended_at"] for c in copies
              if c["seen_ended_at"] is not None and c["ended_at"] is not None]
    unseen = sum(1 for c in copies if c["seen_ended_at"] is None)
    return {"accepted": n, "ideal_s": ideal, "span_s": span, "span_ratio": span / ideal,
            "median_gap_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
            "stalls": len(stalls), "longest_stall_s": max(stalls, default=0.0),
            "detection_median_s": quantile(delays, 0.5), "detection_p95_s": quantile(delays, 0.95),
            "detection_max_s": max(delays, default=float("nan")), "ends_unseen": unseen,
            "reads_while_running": sum(c["reads_running"] for c in copies)}


def once(tool: str, emu: Emulator, copies: int, rate: float, hogs: int,
         work: Path, nice: int = 0) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=work))  # a journal of its own
    emu.reset()
    seeded = emu.seed(seed=5, patients=copies, studies_per_patient=1, series_per_study=1,
                      instances_per_series=INSTANCES)
    store = seeded["datastores"][0]
    manifest = write_csv(work / "copies.csv", whole_copies(store["datastoreId"],
                                                           store["imageSets"]))
    with Hogs(hogs, nice):
        if tool == "batchcopy":
            proc, summary = run_batchcopy(manifest, emu, work, "throughput",
                                          "--rate", f"CopyImageSet={rate:g}", nice=nice)
        else:
            proc = measure([sys.executable, str(HERE / "naive_boto3.py"), str(manifest)],
                           env=emu.env(), nice=nice)
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = emu.stats()
    figures = timeline_figures(emu.copies(), rate)
    n = max(figures["accepted"], 1)
    gets = calls(stats, "GetImageSet")
    out = {"tool": tool, "copies": copies, "hogs": hogs, "rate": rate, "nice": nice,
           "calls": calls(stats), "throttles": throttles(stats),
           "get_image_set_per_copy": gets / n,
           "polls_per_copy": (gets - int(stats.get("latest_version_reads", 0))) / n,
           "get_image_set_throttles": throttles(stats, "GetImageSet"),
           "wall_s": proc.wall_s, "client_cpu_s": proc.cpu_s, **figures}
    if tool == "naive-boto3":
        out["naive_report"] = summary
    else:
        out["exit_code"] = summary.get("exit_code")
        api = summary.get("api") or {}
        out["halvings"] = (int((api.get("throttles") or {}).get("CopyImageSet", 0))
                           - int((api.get("jitter") or {}).get("CopyImageSet", 0)))
        out["pacing"] = (summary.get("pacing") or {}).get("CopyImageSet")
    return out


def _late(pacing: dict[str, Any] | None) -> str:
    if not pacing or pacing.get("timer_late_ms_p50") is None:
        return "-"
    return f"{pacing['timer_late_ms_p50']:.1f} / {pacing['timer_late_ms_p95']:.1f}"


def run(sizes: tuple[int, ...] = (300, 3000), rate: float = 10.0, hogs: tuple[int, ...] = (0, 2),
        naive_max: int = 300, results_dir: Path | None = None, nice: int = 0) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp, Emulator(
            rates=[f"CopyImageSet={rate:g}/1"], priority=nice) as emu:
        nice = emu.priority  # what the emulator got: 0 without the privilege
        for n_hogs in hogs:
            for size in sizes:
                runs.append(once("batchcopy", emu, size, rate, n_hogs, Path(tmp), nice))
                if size <= naive_max:  # side by side: same emulator, same load, same run
                    runs.append(once("naive-boto3", emu, size, rate, n_hogs, Path(tmp), nice))
    result = {"params": {"copies": list(sizes), "rate": rate, "burst": 1, "hogs": list(hogs),
                         "nice": nice,
                         "instances_per_copy": INSTANCES, "copy_s": 2.0 + 0.02 * INSTANCES,
                         "get_image_set_quota": [25, 50], "naive_max": naive_max},
              "goals": {"span_ratio_idle": 1.03, "span_ratio_hogs": 1.06, "throttles_idle": 0,
                        "throttles_hogs_per_300": 3, "detection_median_s": 0.5,
                        "detection_p95_s": 2.0, "polls_per_copy": 1.5},
              "runs": runs}
    print(table(f"Throughput at the quota: new whole copies ({INSTANCES} instances, 2.04 s "
                f"each), CopyImageSet {rate:g}/s burst 1 on both sides, GetImageSet 25/s "
                f"burst 50{f', everything at nice {nice}' if nice else ''}",
                ["tool", "copies", "CPU hogs", "span ratio", "throttles (halvings)",
                 "stalls (longest s)",
                 "detection median / p95 / max s", "GetImageSet per copy (polls)",
                 "send timer late ms", "wall s"],
                [[r["tool"], r["accepted"], r["hogs"], f"{r['span_ratio']:.3f}",
                  f"{r['throttles']} ({r['halvings']})" if "halvings" in r else r["throttles"],
                  f"{r['stalls']} ({r['longest_stall_s']:.2f})",
                  "-" if r["tool"] != "batchcopy" else
                  f"{r['detection_median_s']:.2f} / {r['detection_p95_s']:.2f} / "
                  f"{r['detection_max_s']:.2f}",
                  f"{r['get_image_set_per_copy']:.2f} ({r['polls_per_copy']:.2f})",
                  _late(r.get("pacing")), f"{r['wall_s']:.1f}"] for r in runs]))
    save("throughput" if not nice else f"throughput-nice{nice}", result,
         **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--hogs", type=int, nargs="+", default=[0, 2],
                    help="CPU hogs beside the run; several values run side by side")
    ap.add_argument("--naive-max", type=int, default=300,
                    help="run the naive boto3 pool on manifests up to this many copies")
    ap.add_argument("--nice", type=int, default=0,
                    help="nice value of the emulator, the client and the hogs")
    args = ap.parse_args()
    run(tuple(args.copies), args.rate, tuple(args.hogs), args.naive_max, nice=args.nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
