"""`batchcopy demo`: the whole product in a minute, with no AWS account.

1. start the bundled HealthImaging emulator on 127.0.0.1 (a raised CopyImageSet quota,
   which the client is told too, so the two agree and nothing is throttled);
2. seed a data store with synthetic patients, studies, series and instances;
3. prepare two "curated" destinations (subset copies of two studies, made through the API);
4. write manifests/demo.csv: new copies, chained subset copies into the curated
   destinations (merged where they can be), a forced copy across studies, and one
   row whose study does not match its destination, which fails asynchronously;
5. run it like any manifest, with progress, and say where the report is.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEMO_MANIFEST = Path("manifests/demo.csv")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(*, rows: int = 40, copy_rate: float = 8.0, keep_running: bool = False,
             reports_dir: Path = Path("reports"), manifest_path: Path = DEMO_MANIFEST,
             progress: str = "auto") -> int:
    from batchcopy.emulator.config import EmulatorConfig, RateQuota
    from batchcopy.emulator.seed import SeedSpec, seed
    from batchcopy.emulator.server import EmulatorServer

    config = EmulatorConfig(
        rates={"CopyImageSet": RateQuota(copy_rate, max(1.0, copy_rate))},
        copy_base_s=0.5, copy_per_frame_s=0.02)
    server = EmulatorServer(config).start()
    try:
        env = server.client_env()
        os.environ.update(env)
        # the emulator accepts any credentials unless configured otherwise; use dummy
        # ones only when the environment has none (never printed)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
        say(f"batchcopy demo: emulator listening on {server.endpoint} "
            f"(CopyImageSet quota raised to {copy_rate:g}/s)")
        summary = seed(server.model, SeedSpec(seed=7, patients=6, studies_per_patient=2,
                                              series_per_study=2, instances_per_series=4))
        store = summary["datastores"][0]
        image_sets = store["imageSets"]
        say(f"batchcopy demo: seeded data store {store['datastoreId']} with "
            f"{len(image_sets)} image sets (one per study)")
        curated = _prepare_destinations(store["datastoreId"], image_sets[:2])
        time.sleep(1.0)  # let the emulator's CopyImageSet bucket refill after the setup calls
        written = write_demo_manifest(manifest_path, store["datastoreId"], image_sets, curated,
                                      rows=rows)
        say(f"batchcopy demo: wrote {manifest_path} ({written} rows)")
        from batchcopy.commands.run import JobOptions, run_job
        from batchcopy.run.runner import RunSettings

        # a fresh emulator each time: the demo's own state, its rows started over too (never
        # the state directory's ledger, which a run of yours may be holding)
        from batchcopy.journal.holds import state_dir

        opts = JobOptions(manifest=str(manifest_path), reports_dir=reports_dir, fresh=True,
                          state=str(state_dir() / "demo"),
                          # the client keeps the published burst of 1: sends spread evenly,
                          # so the emulator's burst absorbs any jitter
                          rates={"CopyImageSet": (copy_rate, None)},
                          endpoint_url=server.endpoint, progress=progress,
                          log_interval_s=5.0, poll_first_s=0.3, poll_max_s=2.0,
                          settings=RunSettings(stop_grace_s=10.0))
        say(f"batchcopy demo: running `batchcopy run {manifest_path} --rate "
            f"CopyImageSet={copy_rate:g}` against the emulator")
        code = run_job(opts)
        latest = sorted(reports_dir.glob("demo-*.parquet"))
        say(_explain_counts(server.stats(), latest[-1] if latest else None, written, len(curated)))
        # one row fails on purpose (a study mismatch without --force): exit code 1 is expected
        if code == 1 and _only_expected_failure(latest[-1] if latest else None):
            say("batchcopy demo: every row succeeded except 'mismatch-1', which fails on purpose "
                "(its study does not match the destination and it has no force flag)")
            if keep_running:
                _hold(server)
            return 0
        if keep_running:
            _hold(server)
        return code
    finally:
        server.stop()


def _explain_counts(stats: dict[str, Any], report: Path | None, rows: int,
                    prepared: int) -> str:
    """Why the emulator's copy count is not the manifest's row count."""
    from batchcopy.report.summary import read_summary, summary_path

    executed = stats.get("copies_executed")
    try:
        summary = read_summary(summary_path(report)) if report else {}
    except (OSError, ValueError):
        summary = {}
    accepted = summary.get("accepted_copy_calls")
    if accepted is None:
        return f"batchcopy demo: the emulator executed {executed} copies for {rows} rows"
    text = (f"batchcopy demo: the emulator executed {executed} copies: {prepared} the demo made "
            f"itself to prepare the curated destinations, {accepted} from the run's "
            f"CopyImageSet calls for the {rows} rows")
    merged, carried = summary.get("merged_calls") or 0, summary.get("rows_in_merged_calls") or 0
    if merged:
        text += (f" ({merged} merged calls carried {carried} rows: {carried - merged} calls "
                 f"saved, {4 * (carried - merged)} s at the default quota of 0.25/s)")
    present = summary.get("rows_already_present") or 0
    if present:
        text += f"; {present} rows were already in their destination and made no call"
    return text


def _hold(server: Any) -> None:
    say(f"batchcopy demo: emulator still running at {server.endpoint}; Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _only_expected_failure(report: Path | None) -> bool:
    if report is None:
        return False
    import pyarrow.parquet as pq

    table = pq.read_table(report, columns=["row_id", "status"]).to_pylist()
    bad = [r["row_id"] for r in table if r["status"] not in ("SUCCEEDED", "SKIPPED")]
    return bad == ["mismatch-1"]


def _prepare_destinations(datastore_id: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Curated destinations: a new image set holding the first instance of each source."""
    import boto3
    from botocore.config import Config

    client = boto3.client("medical-imaging", config=Config(inject_host_prefix=False))
    out = []
    for src in sources:
        first_series = next(iter(src["series"]))
        first_sop = src["series"][first_series][0]
        attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {
            first_series: {"Instances": {first_sop: {}}}}}})
        resp = _call_with_patience(lambda: client.copy_image_set(
            datastoreId=datastore_id, sourceImageSetId=src["imageSetId"],
            copyImageSetInformation={"sourceImageSet": {
                "latestVersionId": "1", "DICOMCopies": {"copiableAttributes": attrs}}}))
        dest = resp["destinationImageSetProperties"]["imageSetId"]
        _wait_active(client, datastore_id, dest)
        _wait_active(client, datastore_id, src["imageSetId"])
        out.append({"imageSetId": dest, "from": src, "sop": first_sop})
    say(f"batchcopy demo: prepared {len(out)} curated destination image sets")
    return out


def _call_with_patience(fn: Any) -> Any:
    from botocore.exceptions import ClientError

    for _ in range(50):
        try:
            return fn()
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ThrottlingException":
                raise
            time.sleep(0.2)
    return fn()


def _wait_active(client: Any, datastore_id: str, image_set_id: str) -> None:
    for _ in range(200):
        got = client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
        if got["imageSetState"] == "ACTIVE":
            return
        time.sleep(0.1)
    raise RuntimeError(f"image set {image_set_id} stayed locked")


def write_demo_manifest(path: Path, datastore_id: str, image_sets: list[dict[str, Any]],
                        curated: list[dict[str, Any]], *, rows: int) -> int:
    """The demo manifest. Returns the number of rows written."""
    out: list[dict[str, str]] = []

    def row(row_id: str, source: str, **kw: str) -> None:
        out.append({"row_id": row_id, "datastore_id": datastore_id,
                    "source_image_set_id": source, **kw})

    # chained subset copies into curated destinations, one row per instance
    # (rows from one source into one destination are merged into one call)
    for n, dest in enumerate(curated, start=1):
        src = dest["from"]
        k = 0
        for series_uid, sops in src["series"].items():
            for sop in sops:
                if sop == dest["sop"]:
                    continue
                k += 1
                row(f"curate-d{n}-{k}", src["imageSetId"],
                    destination_image_set_id=dest["imageSetId"], series_instance_uid=series_uid,
                    sop_instance_uid=sop)
        # a forced copy across studies into the same destination (next version in the chain)
        other = image_sets[2 + n]
        series_uid = next(iter(other["series"]))
        row(f"forced-{n}", other["imageSetId"], destination_image_set_id=dest["imageSetId"],
            series_instance_uid=series_uid, force="true")
    # one row that fails asynchronously: a different study, no force
    other = image_sets[-1]
    series_uid = next(iter(other["series"]))
    row("mismatch-1", other["imageSetId"], destination_image_set_id=curated[0]["imageSetId"],
        series_instance_uid=series_uid, sop_instance_uid=other["series"][series_uid][0])
    # new image sets: whole copies of the seeded image sets, then one new image set
    # per series (no two rows alike: a repeated row would be refused as duplicate work)
    news: list[tuple[str, dict[str, str]]] = [(s["imageSetId"], {}) for s in image_sets]
    news += [(s["imageSetId"], {"series_instance_uid": series})
             for s in image_sets for series in s["series"]]
    for n, (source, extra) in enumerate(news, start=1):
        if len(out) >= rows:
            break
        row(f"new-{n}", source, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["row_id", "datastore_id", "source_image_set_id", "destination_image_set_id",
               "series_instance_uid", "sop_instance_uid", "force"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in out:
            writer.writerow({c: r.get(c, "") for c in columns})
    return len(out)
