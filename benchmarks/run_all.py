"""Run every benchmark, print its tables, write benchmarks/results/<name>.json.

    python benchmarks/run_all.py [--quick] [--repeat 3] [--hogs 2] [--only pacing curation ...]

From a fresh checkout: `python3.11 -m venv .venv && . .venv/bin/activate &&
pip install -e . && python benchmarks/run_all.py`. The AWS CLI baseline runs when `aws`
(v1) is on PATH, and is left out otherwise.

  pacing    1. equal quotas (CopyImageSet 10/s burst 1), 1,000-row mix, idle and with
               --hogs CPU hogs, side by side
  curation  2+3. 200 destinations x 5 rows: batchcopy merged / --no-merge / a naive boto3
               thread pool / the AWS CLI v1 (20 rows, extrapolated), ratios in one run
  capacity  4. quotas off, instant copies, 20,000 rows: rows/s, CPU ms/row, RSS, profile
  scale     5. 1M-row validate and plan; a 100,000-row run with RSS sampled
  startup   6. --help, run --help, validate of a 3-row manifest
  present   7. a 1,000-row rerun of new-image-set rows with its state lost: CopyImageSet
               calls (0), calls per row by operation, wall, beside copying them again
  selection 8. `select` over 2,000 image sets at the published quotas: cold, cached,
               interrupted and resumed; extrapolated to 100,000
  throughput 9. 300 and 3,000 new whole copies at CopyImageSet 10/s burst 1 on both sides,
               idle and with --hogs CPU hogs, beside the naive boto3 pool: span ratio,
               throttles, stalls, detection delay, GetImageSet per copy
  state     10. --state s3:// beside a local state at 10 copies/s (600 rows, twice each): wall
               ratio, S3 requests per copy; a 1M-row state opened on an empty machine

--quick runs tiny sizes (a minute or so; the figures then say little). --repeat N repeats
pacing and curation (min / median reported); the others run once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capacity  # noqa: E402
import curation  # noqa: E402
import pacing  # noqa: E402
import present  # noqa: E402
import scale  # noqa: E402
import selection  # noqa: E402
import startup  # noqa: E402
import state_s3  # noqa: E402
import throughput  # noqa: E402
from common import RESULTS  # noqa: E402

NAMES = ("startup", "pacing", "curation", "capacity", "scale", "present", "selection",
         "throughput", "state")


def plan(quick: bool, repeat: int, hogs: int, results: Path) -> dict[str, Callable[[], Any]]:
    loads = (0, hogs) if hogs else (0,)
    if quick:
        return {
            "startup": lambda: startup.run(1, results_dir=results),
            "pacing": lambda: pacing.run(20, 10.0, loads, repeat, results_dir=results),
            "curation": lambda: curation.run(2, 10.0, 1, repeat, results_dir=results),
            "capacity": lambda: capacity.run(100, 40, results_dir=results),
            "scale": lambda: scale.run(2000, 200, results_dir=results),
            "present": lambda: present.run(3, 2, 10.0, results_dir=results),
            "selection": lambda: selection.run(200, results_dir=results),
            "throughput": lambda: throughput.run((20,), 10.0, loads, 20, results_dir=results),
            "state": lambda: state_s3.run(10, 10.0, 1, 2000, 20, results_dir=results),
        }
    return {
        "startup": lambda: startup.run(max(5, repeat), results_dir=results),
        "pacing": lambda: pacing.run(1000, 10.0, loads, repeat, results_dir=results),
        "curation": lambda: curation.run(200, 10.0, 20, repeat, results_dir=results),
        "capacity": lambda: capacity.run(20000, 5000, results_dir=results),
        "scale": lambda: scale.run(1_000_000, 100_000, results_dir=results),
        "present": lambda: present.run(200, 4, 10.0, results_dir=results),
        "selection": lambda: selection.run(2000, results_dir=results),
        "throughput": lambda: throughput.run((300, 3000), 10.0, loads, 300, results_dir=results),
        "state": lambda: state_s3.run(600, 10.0, max(2, repeat), 1_000_000, 400,
                                      results_dir=results),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes")
    ap.add_argument("--repeat", type=int, default=1, help="repeats of pacing and curation")
    ap.add_argument("--hogs", type=int, default=2, help="CPU hogs for the loaded pacing run")
    ap.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    steps = plan(args.quick, args.repeat, args.hogs, args.results_dir)
    for name in NAMES:
        if name not in args.only:
            continue
        started = time.monotonic()
        print(f"\n== {name} ==", flush=True)
        steps[name]()
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
