"""The script a user would write instead of batchcopy: boto3, a thread pool, adaptive retries.

For each manifest row: read the latest version of the source (and of the destination,
if any), then CopyImageSet. No waiting for copies to finish, no ordering of rows that
touch the same image set, no merging. botocore's adaptive retry mode paces throttled
calls on its own. Prints one JSON line: rows, ok, failed, error codes, wall seconds.

    AWS_ENDPOINT_URL_MEDICAL_IMAGING=... python benchmarks/naive_boto3.py manifest.csv [--workers 10]
"""

import argparse
import csv
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--workers", type=int, default=10)
    args = ap.parse_args()
    with open(args.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))

    client = boto3.client("medical-imaging", config=Config(
        retries={"mode": "adaptive"}, max_pool_connections=args.workers))

    def latest(ds: str, image_set: str) -> str:
        return client.get_image_set(datastoreId=ds, imageSetId=image_set)["versionId"]

    def copy(row: dict) -> str:
        ds, src = row["datastore_id"], row["source_image_set_id"]
        source = {"latestVersionId": latest(ds, src)}
        series, sop = row.get("series_instance_uid"), row.get("sop_instance_uid")
        if series:
            instances = {sop: {}} if sop else {}
            source["DICOMCopies"] = {"copiableAttributes": json.dumps(
                {"SchemaVersion": "1.1", "Study": {"Series": {series: {"Instances": instances}}}})}
        info = {"sourceImageSet": source}
        dest = row.get("destination_image_set_id")
        if dest:
            info["destinationImageSet"] = {"imageSetId": dest, "latestVersionId": latest(ds, dest)}
        client.copy_image_set(datastoreId=ds, sourceImageSetId=src,
                              copyImageSetInformation=info,
                              force=row.get("force", "").lower() == "true")
        return "ok"

    def safe(row: dict) -> str:
        try:
            return copy(row)
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    started = time.monotonic()
    with ThreadPoolExecutor(args.workers) as pool:
        outcomes = Counter(pool.map(safe, rows))
    wall = time.monotonic() - started
    ok = outcomes.pop("ok", 0)
    print(json.dumps({"rows": len(rows), "ok": ok, "failed": len(rows) - ok,
                      "errors": dict(outcomes), "wall_s": round(wall, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
