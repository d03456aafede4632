"""6. Start-up: `batchcopy --help`, `batchcopy run --help` and `batchcopy validate` of a
3-row manifest, each as a fresh process, best and median of REPEAT (goal <= 0.4 s).

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import batchcopy_cmd, measure, save, table, write_csv  # noqa: E402


def run(repeat: int = 5, results_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        tiny = write_csv(Path(tmp) / "tiny.csv", [
            {"row_id": f"t{i}", "datastore_id": "0" * 32, "source_image_set_id": f"{i:032x}"}
            for i in range(3)])
        commands = {"batchcopy --help": ["--help"], "batchcopy run --help": ["run", "--help"],
                    "batchcopy validate (3 rows)": ["validate", str(tiny)]}
        out: dict[str, Any] = {}
        for name, args in commands.items():
            runs = [measure([*batchcopy_cmd(), *args]) for _ in range(repeat)]
            walls = [r.wall_s for r in runs]
            out[name] = {"min_s": min(walls), "median_s": statistics.median(walls),
                         "peak_rss_mib": max(r.peak_rss_mib for r in runs)}
    result = {"params": {"repeat": repeat}, "goals": {"validate_small_s_max": 0.4},
              "commands": out}
    print(table(f"Start-up (fresh process, best / median of {repeat})",
                ["command", "best s", "median s", "peak RSS MiB"],
                [[k, f"{v['min_s']:.2f}", f"{v['median_s']:.2f}", f"{v['peak_rss_mib']:.0f}"]
                 for k, v in out.items()]))
    save("startup", result, **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    run(ap.parse_args().repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
