"""10. The ledger in S3: `batchcopy run --state s3://` beside a local state at RATE copies/s,
and opening a ROWS-row state on a machine with an empty disk.

  side by side  one manifest of N whole copies (independent rows), the emulator and the
                client both at CopyImageSet RATE/s burst 1 (GetImageSet 250/s on both), run
                alternately with a local ledger (--journal) and with --state s3://...
                (moto's server in its own process, a new prefix each run); the emulator is
                reset and seeded alike before each run. Figures: wall of each, the ratio
                s3 / local (goal <= 1.05), and from the run's summary (`state_figures`) the
                S3 requests, bytes written and log segments per accepted copy (goal: at most
                one request per copy)
  open          a state of ROWS rows (each a single-instance copy into a destination, the
                heaviest usual row) built in S3 by a child process through batchcopy's own
                journal API (one staged snapshot, then TAIL log segments of finished rows),
                then `batchcopy status --output json` on an empty machine (a state directory
                of its own): wall (goal <= 30 s for 1,000,000 rows), peak RSS, the requests
                and bytes it read (`read` in status's JSON), and bytes per row

    python benchmarks/state_s3.py [--rows 600] [--rate 10] [--repeat 2]
                                  [--open-rows 1000000] [--tail 400]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Emulator, batchcopy_cmd, calls, measure, save, summarise, table,  # noqa: E402
                    throttles, write_csv)

READ_RATE = 250.0
BENCH_CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """moto's S3 server (`python -m moto.server`) on 127.0.0.1, in its own process."""

    def __enter__(self) -> "MotoServer":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket=name)
        return name

    def env(self, base: dict[str, str], state_dir: Path) -> dict[str, str]:
        return {**base, **BENCH_CREDS, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "BATCHCOPY_STATE_DIR": str(state_dir)}


# ------------------------------------------------------------------ side by side
def side_by_side(rows: int, rate: float, repeat: int, work: Path, moto: MotoServer) -> dict[str, Any]:
    config = {"copy_base_s": 0.05, "copy_per_frame_s": 0.001,
              "max_concurrent_copies_per_datastore": 100}
    quota = [f"CopyImageSet={rate:g}/1", f"GetImageSet={READ_RATE:g}/{READ_RATE:g}"]
    bucket = moto.bucket()
    runs: list[dict[str, Any]] = []
    with Emulator(config, rates=quota) as emu:
        for i in range(repeat):
            for where in ("local", "s3"):
                emu.reset()
                store = emu.seed(seed=5, patients=rows, studies_per_patient=1, series_per_study=1,
                                 instances_per_series=1)["datastores"][0]
                manifest = write_csv(work / "copies.csv", [
                    {"row_id": f"c{k}", "datastore_id": store["datastoreId"],
                     "source_image_set_id": s["imageSetId"]}
                    for k, s in enumerate(store["imageSets"][:rows])])
                name = f"{where}-{i}"
                target = (["--journal", str(work / f"{name}.journal.sqlite")] if where == "local"
                          else ["--state", f"s3://{bucket}/{name}/"])
                report = work / f"{name}.parquet"
                before = emu.stats()
                proc = measure([*batchcopy_cmd(), "run", str(manifest), *target, "--report",
                                str(report), "--quiet", "--rate", f"CopyImageSet={rate:g}",
                                "--rate", f"GetImageSet={READ_RATE:g}/{READ_RATE:g}",
                                "--poll-first", "0.05", "--poll-max", "0.5"],
                               env=moto.env(emu.env(), work / f"machine-{name}"))
                after = emu.stats()
                summary = json.loads((work / f"{name}.summary.json").read_text())
                accepted = (calls(after) - calls(before)) - (throttles(after) - throttles(before))
                figs = summary.get("state_figures") or {}
                run: dict[str, Any] = {"state": where, "repeat": i, "rows": rows, "rate": rate,
                                       "wall_s": proc.wall_s, "cpu_s": proc.cpu_s,
                                       "accepted": accepted,
                                       "throttles": throttles(after) - throttles(before)}
                if figs:
                    run.update(s3_requests=figs["s3_requests"], bytes_up=figs["bytes_up"],
                               segments=figs["segment"],
                               s3_requests_per_copy=figs["s3_requests"] / max(accepted, 1),
                               bytes_up_per_copy=figs["bytes_up"] / max(accepted, 1),
                               segments_per_copy=figs["segment"] / max(accepted, 1))
                runs.append(run)
    local = [r["wall_s"] for r in runs if r["state"] == "local"]
    s3 = [r["wall_s"] for r in runs if r["state"] == "s3"]
    return {"runs": runs, "wall_local": summarise(local), "wall_s3": summarise(s3),
            "ratio_min": min(s3) / min(local),
            "ratio_median": summarise(s3)["median"] / summarise(local)["median"]}


# ------------------------------------------------------------------ a big state, opened
def build(url: str, rows: int, tail: int) -> None:
    """In a child process: a `rows`-row state in S3, then `tail` segments of finished rows."""
    import asyncio

    from batchcopy.core.specs import CopySpec, Status
    from batchcopy.journal.calls import RowOutcome
    from batchcopy.journal.lease import Holder
    from batchcopy.journal.state import open_for_writing, resolve

    def spec(i: int) -> CopySpec:
        series = f"1.2.826.0.1.3680043.8.498.{i}"
        attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {series: {
            "Instances": {f"{series}.1": {}}}}}}, separators=(",", ":"), sort_keys=True)
        return CopySpec(manifest_row=i + 1, row_id=f"r{i}", datastore_id="d" * 32,
                        source_image_set_id=f"{i:032x}", destination_image_set_id=f"{i + 7:032x}",
                        copiable_attributes=attrs, force=True)

    opened = open_for_writing(resolve(url), Holder("run", "bench-open.csv"), lease_ttl_s=900)
    try:
        journal = opened.journal
        journal.begin_manifest()
        for start in range(0, rows, 10_000):
            journal.stage([spec(i) for i in range(start, min(rows, start + 10_000))])
        journal.commit_manifest()
        run = journal.start_run("bench-open.csv")
        for i in range(tail):
            asyncio.run(journal.finish_rows(run, [spec(i).key], RowOutcome(
                Status.SUCCEEDED, attempts=1, result_image_set_id=f"{i + 7:032x}",
                result_version_id="2", workflow_status="COPIED", finished_at=time.time())))
    finally:
        opened.close()


def open_big(rows: int, tail: int, work: Path, moto: MotoServer) -> dict[str, Any]:
    url = f"s3://{moto.bucket()}/big/"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    builder = moto.env(base, work / "machine-builder")
    builder["BATCHCOPY_S3_COMPACT_EVERY"] = str(10 * max(tail, 1000))  # keep the tail as a log
    made = measure([sys.executable, __file__, "--build", url, str(rows), str(tail)], env=builder)
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    bucket = url[len("s3://"):].split("/", 1)[0]
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents") or ()]
    snapshot = max((o["Size"] for o in objects if "/snapshots/" in o["Key"]), default=0)
    opened = measure([*batchcopy_cmd(), "status", url, "--output", "json"],
                     env=moto.env(base, work / "machine-empty"))
    status = json.loads(opened.stdout)
    read = status.get("read") or {}
    assert status["rows"] == rows, status["rows"]
    return {"rows": rows, "tail_segments": tail, "build_wall_s": made.wall_s,
            "open_wall_s": opened.wall_s, "open_cpu_s": opened.cpu_s,
            "open_peak_rss_mib": opened.peak_rss_mib, "open_s3_requests": read.get("s3_requests"),
            "open_bytes_down": read.get("bytes_down"), "snapshot_bytes": snapshot,
            "snapshot_bytes_per_row": snapshot / rows,
            "state_bytes": sum(o["Size"] for o in objects),
            "open_s_per_million_rows": opened.wall_s * 1_000_000 / rows}


def run(rows: int, rate: float, repeat: int, open_rows: int, tail: int, *,
        results_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp, MotoServer() as moto:
        work = Path(tmp)
        sbs = side_by_side(rows, rate, repeat, work, moto)
        big = open_big(open_rows, tail, work, moto)
    print(table(f"--state s3:// beside a local state, {rows} whole copies at {rate:g}/s",
                ["state", "repeat", "wall s", "accepted", "throttles", "S3 requests/copy",
                 "bytes up/copy", "segments/copy"],
                [[r["state"], r["repeat"], r["wall_s"], r["accepted"], r["throttles"],
                  r.get("s3_requests_per_copy", "-"), r.get("bytes_up_per_copy", "-"),
                  r.get("segments_per_copy", "-")] for r in sbs["runs"]]))
    print(f"\nwall s3 / local: {sbs['ratio_min']:.3f} (min of each), "
          f"{sbs['ratio_median']:.3f} (median of each); goal <= 1.05\n")
    print(table(f"opening a {open_rows:,}-row state on an empty machine (`batchcopy status`)",
                ["rows", "tail segments", "open wall s", "peak RSS MiB", "S3 requests",
                 "MiB read", "snapshot bytes/row"],
                [[big["rows"], big["tail_segments"], big["open_wall_s"], big["open_peak_rss_mib"],
                  big["open_s3_requests"], (big["open_bytes_down"] or 0) / 2**20,
                  big["snapshot_bytes_per_row"]]]))
    data = {"side_by_side": sbs, "open": big}
    path = save("state_s3", data, results_dir) if results_dir else save("state_s3", data)
    print(f"\nwrote {path}")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--open-rows", type=int, default=1_000_000)
    ap.add_argument("--tail", type=int, default=400)
    ap.add_argument("--build", nargs=3, metavar=("URL", "ROWS", "TAIL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build:
        build(args.build[0], int(args.build[1]), int(args.build[2]))
        return 0
    run(args.rows, args.rate, args.repeat, args.open_rows, args.tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
