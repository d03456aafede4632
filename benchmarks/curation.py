"""2 + 3. A curation manifest (DESTS destinations x 5 subset rows): batchcopy with and
without merging, against what a user would run instead, on the same manifest and the
same emulator settings, side by side in one run.

Each destination receives five instances of one source image set (force=true), the
rows grouped by destination as a curator writes them. Per tool the emulator is reset
and seeded again (same seed: same image sets), then:

  batchcopy           `batchcopy run` (merging on: five rows -> one call)
  batchcopy-no-merge  `batchcopy run --no-merge`
  naive-boto3         benchmarks/naive_boto3.py: thread pool, retries={'mode': 'adaptive'},
                      no waiting for copies, no ordering, no merging
  aws-cli-v1          `aws medical-imaging copy-image-set` in a bash loop (get-image-set for
                      the versions first), CLI_ROWS rows only: wall and calls per row are
                      extrapolated to the whole manifest and labelled so

Wrong rows are counted by the emulator: a row is right when its instance is in its
destination's latest version at the end (read back through /_emulator/imagesets).
Throttles are the emulator's CopyImageSet 429 count.

    python benchmarks/curation.py [--dests 200] [--rate 10] [--cli-rows 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HERE, Emulator, calls, measure, run_batchcopy, save, summarise, table, throttles, write_csv)

READ_RATE = 250.0
PER_DEST = 5
CLI_LOOP = r"""
set -u
tail -n +2 "$1" | while IFS=, read -r row_id ds src dest series sop force; do
  sv=$(aws medical-imaging get-image-set --datastore-id "$ds" --image-set-id "$src" \
       --query versionId --output text)
  dv=$(aws medical-imaging get-image-set --datastore-id "$ds" --image-set-id "$dest" \
       --query versionId --output text)
  attrs="{\\\"SchemaVersion\\\":\\\"1.1\\\",\\\"Study\\\":{\\\"Series\\\":{\\\"$series\\\":{\\\"Instances\\\":{\\\"$sop\\\":{}}}}}}"
  aws medical-imaging copy-image-set --datastore-id "$ds" --source-image-set-id "$src" \
    --copy-image-set-information "{\"sourceImageSet\":{\"latestVersionId\":\"$sv\",\"DICOMCopies\":{\"copiableAttributes\":\"$attrs\"}},\"destinationImageSet\":{\"imageSetId\":\"$dest\",\"latestVersionId\":\"$dv\"}}" \
    --force > /dev/null || echo "row $row_id failed" >&2
done
"""


def curation_rows(datastore_id: str, sets: list[dict[str, Any]], dests: int) -> list[dict[str, str]]:
    sources, targets = sets[:dests], sets[dests:2 * dests]
    rows: list[dict[str, str]] = []
    for src, dest in zip(sources, targets):
        uid, sops = next(iter(src["series"].items()))
        for sop in sops[:PER_DEST]:
            rows.append({"row_id": f"c{len(rows)}", "datastore_id": datastore_id,
                         "source_image_set_id": src["imageSetId"],
                         "destination_image_set_id": dest["imageSetId"],
                         "series_instance_uid": uid, "sop_instance_uid": sop, "force": "true"})
    return rows


def wrong_rows(emu: Emulator, rows: list[dict[str, str]]) -> int:
    """Rows whose instance is not in their destination's latest version."""
    present: dict[str, set[str]] = {}
    wrong = 0
    for row in rows:
        dest = row["destination_image_set_id"]
        if dest not in present:
            snap = emu.image_set(row["datastore_id"], dest)
            present[dest] = {sop for sops in snap["instances"].values() for sop in sops}
        wrong += row["sop_instance_uid"] not in present[dest]
    return wrong


def fresh(emu: Emulator, dests: int, work: Path, name: str) -> tuple[Path, list[dict[str, str]]]:
    emu.reset()
    seeded = emu.seed(seed=11, patients=2 * dests, studies_per_patient=1, series_per_study=1,
                      instances_per_series=PER_DEST)
    store = seeded["datastores"][0]
    rows = curation_rows(store["datastoreId"], store["imageSets"], dests)
    return write_csv(work / f"{name}.csv", rows), rows


def tool_run(tool: str, emu: Emulator, dests: int, rate: float, cli_rows: int,
             work: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=work))  # a journal of its own: a repeat must not resume
    manifest, rows = fresh(emu, dests, work, tool)
    rate_args = ["--rate", f"CopyImageSet={rate:g}",
                 "--rate", f"GetImageSet={READ_RATE:g}/{READ_RATE:g}",
                 "--poll-first", "0.05", "--poll-max", "0.5"]
    extrapolated = False
    if tool == "batchcopy":
        proc, _ = run_batchcopy(manifest, emu, work, tool, *rate_args)
    elif tool == "batchcopy-no-merge":
        proc, _ = run_batchcopy(manifest, emu, work, tool, *rate_args, "--no-merge")
    elif tool == "naive-boto3":
        proc = measure([sys.executable, str(HERE / "naive_boto3.py"), str(manifest)],
                       env=emu.env())
    else:
        rows = rows[:cli_rows]
        manifest = write_csv(work / "cli.csv", rows)
        env = emu.env()
        script = work / "cli_loop.sh"
        script.write_text(CLI_LOOP)
        proc = measure(["bash", str(script), str(manifest)],
                       env={**env, "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1"}
                       | {"PATH": env.get("PATH", "")}, check=True)
        extrapolated = True
    stats = emu.stats()
    made = calls(stats)
    out = {"tool": tool, "rows": len(rows), "calls": made, "throttles": throttles(stats),
           "accepted": made - throttles(stats), "wrong_rows": wrong_rows(emu, rows),
           "wall_s": proc.wall_s, "cpu_s": proc.cpu_s, "extrapolated": extrapolated}
    out["calls_per_row"] = out["accepted"] / len(rows)
    full = dests * PER_DEST
    out["wall_s_full_manifest"] = proc.wall_s * full / len(rows)
    if tool == "naive-boto3":
        out["report"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def run(dests: int = 200, rate: float = 10.0, cli_rows: int = 20, repeat: int = 1,
        tools: tuple[str, ...] = ("batchcopy", "batchcopy-no-merge", "naive-boto3", "aws-cli-v1"),
        results_dir: Path | None = None) -> dict[str, Any]:
    if shutil.which("aws") is None:
        tools = tuple(t for t in tools if t != "aws-cli-v1")
    config = {"copy_base_s": 0.05, "copy_per_frame_s": 0.001,
              "max_concurrent_copies_per_datastore": 100}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-curation-") as tmp, Emulator(
            config, rates=[f"CopyImageSet={rate:g}/1",
                           f"GetImageSet={READ_RATE:g}/{READ_RATE:g}"]) as emu:
        for i in range(repeat):
            for tool in tools:
                runs.append({"repeat": i, **tool_run(tool, emu, dests, rate, cli_rows,
                                                     Path(tmp))})
    per_tool: dict[str, dict[str, Any]] = {}
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        per_tool[tool] = {k: summarise([r[k] for r in mine])
                          for k in ("wall_s", "wall_s_full_manifest", "calls_per_row",
                                    "throttles", "wrong_rows", "calls")}
        per_tool[tool]["extrapolated"] = mine[0]["extrapolated"]
        per_tool[tool]["rows"] = mine[0]["rows"]
    ratios: dict[str, dict[str, float]] = {}
    for other in ("batchcopy-no-merge", "naive-boto3", "aws-cli-v1"):
        if other in tools and "batchcopy" in tools:
            values = [b["wall_s_full_manifest"] / o["wall_s_full_manifest"]
                      for b, o in zip([r for r in runs if r["tool"] == "batchcopy"],
                                      [r for r in runs if r["tool"] == other])]
            ratios[f"batchcopy/{other}"] = summarise(values)
    result = {"params": {"destinations": dests, "rows_per_destination": PER_DEST,
                         "rate": rate, "burst": 1, "read_rate": READ_RATE, "cli_rows": cli_rows,
                         "repeat": repeat, "emulator": config},
              "goals": {"batchcopy/naive-boto3 wall": 0.5},
              "runs": runs, "per_tool": per_tool, "ratios": ratios}
    print(table(f"Curation manifest: {dests} destinations x {PER_DEST} rows, CopyImageSet "
                f"{rate:g}/s burst 1 (median of {repeat})",
                ["tool", "rows run", "CopyImageSet calls/row", "throttles", "wrong rows",
                 "wall s", "wall s, whole manifest"],
                [[t, s["rows"], f"{s['calls_per_row']['median']:.2f}",
                  f"{s['throttles']['median']:.0f}", f"{s['wrong_rows']['median']:.0f}",
                  f"{s['wall_s']['median']:.1f}",
                  f"{s['wall_s_full_manifest']['median']:.1f}"
                  + (" (extrapolated)" if s["extrapolated"] else "")]
                 for t, s in per_tool.items()]))
    print()
    print(table("Wall-time ratios, same run (min / median)", ["ratio", "min", "median"],
                [[k, f"{v['min']:.3f}", f"{v['median']:.3f}"] for k, v in ratios.items()]))
    save("curation", result, **({"results_dir": results_dir} if results_dir else {}))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dests", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--cli-rows", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    run(args.dests, args.rate, args.cli_rows, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
