"""Helpers for end-to-end tests: manifests, running the real CLI in a subprocess against
the emulator, reading the report back, preparing destinations through the API."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the emulator in tests runs at time_scale 0.01: CopyImageSet 0.25/s becomes 25/s;
# the client paces at 20/s: at 40 ms intervals loopback jitter would otherwise throttle
FAST = ["--rate", "CopyImageSet=20", "--poll-first", "0.02", "--poll-max", "0.2",
        "--progress", "log", "--log-interval", "1"]

COLUMNS = ["row_id", "datastore_id", "source_image_set_id", "source_version_id",
           "destination_image_set_id", "destination_version_id", "copiable_attributes",
           "series_instance_uid", "sop_instance_uid", "force", "promote_to_primary"]


def write_manifest(path: Path, rows: list[dict[str, Any]], extra_columns: tuple[str, ...] = ()) -> Path:
    """A CSV manifest of `rows`; `extra_columns` (a curator's own, e.g. notes) go after ours."""
    columns = COLUMNS + list(extra_columns)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r.get(c, "") for c in columns})
    return path


@dataclass
class RunResult:
    code: int
    stdout: str
    stderr: str
    report: Path
    journal: Path

    def rows(self) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        return pq.read_table(self.report).to_pylist()

    def summary(self) -> dict[str, Any]:
        return json.loads(Path(str(self.report).removesuffix(".parquet") + ".summary.json").read_text())


# The CLI runs in this process (its main(), argv, environment, working directory and
# output as a subprocess would have them): a new interpreter per command cost most of the
# suite's time. BATCHCOPY_TEST_SUBPROCESS=1 runs every command as a real process instead;
# what needs a process (signals, kill -9, locks between processes, a TTY) starts one itself
# (resumekit.start, `process=True`).
IN_PROCESS = os.environ.get("BATCHCOPY_TEST_SUBPROCESS", "") != "1"


def run_cli(args: list[str], env: dict[str, str], *, cwd: Path, timeout: float = 180,
            process: bool = False) -> subprocess.CompletedProcess[str]:
    """`batchcopy ARGS` with `env` added to the environment, in `cwd`: its exit code and
    output. In this process unless `process` (or BATCHCOPY_TEST_SUBPROCESS=1, or an event
    loop runs here: the CLI runs its own)."""
    if process or not IN_PROCESS or _loop_running():
        full_env = {**os.environ, **env}
        return subprocess.run([sys.executable, "-m", "batchcopy", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    return _in_process(args, env, cwd)


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import contextlib
    import io
    import logging

    from batchcopy.cli.root import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_stdin = sys.stdin
    product_log = logging.getLogger("batchcopy")
    saved_handlers = list(product_log.handlers)
    os.environ.update(env)
    sys.argv = ["batchcopy", *args]
    sys.stdin = io.StringIO("")  # not a terminal, nothing to read: as capture_output's
    code: int = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv, sys.stdin = saved_argv, saved_stdin
        for handler in list(product_log.handlers):  # a run that failed before it tidied up
            if handler not in saved_handlers:
                product_log.removeHandler(handler)
                handler.close()
    return subprocess.CompletedProcess([sys.executable, "-m", "batchcopy", *args], code,
                                       out.getvalue(), err.getvalue())


def run_manifest(manifest: Path, env: dict[str, str], tmp: Path, *extra: str,
                 fast: bool = True, report: Path | None = None,
                 journal: Path | None = None) -> RunResult:
    report = report or tmp / "report.parquet"
    journal = journal or tmp / "run.journal.sqlite"
    args = ["run", str(manifest), "--report", str(report), "--journal", str(journal),
            *(FAST if fast else []), *extra]
    proc = run_cli(args, env, cwd=tmp)
    return RunResult(proc.returncode, proc.stdout, proc.stderr, report, journal)


def new_subset_destination(client: Any, ds: str, source: dict[str, Any]) -> str:
    """A new image set holding the source's first instance (same study: no force needed)."""
    series = next(iter(source["series"]))
    sop = source["series"][series][0]
    attrs = json.dumps({"SchemaVersion": "1.1", "Study": {"Series": {series: {"Instances": {sop: {}}}}}})
    resp = patiently(lambda: client.copy_image_set(
        datastoreId=ds, sourceImageSetId=source["imageSetId"],
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": latest(client, ds, source["imageSetId"]),
                                                    "DICOMCopies": {"copiableAttributes": attrs}}}))
    dest = resp["destinationImageSetProperties"]["imageSetId"]
    wait_active(client, ds, dest)
    wait_active(client, ds, source["imageSetId"])
    return dest


def patiently(call: Any, attempts: int = 100) -> Any:
    """Retry a boto3 call on ThrottlingException (the test clients have retries off)."""
    from botocore.exceptions import ClientError

    for _ in range(attempts - 1):
        try:
            return call()
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ThrottlingException":
                raise
            time.sleep(0.05)
    return call()


def latest(client: Any, ds: str, image_set_id: str) -> str:
    return client.get_image_set(datastoreId=ds, imageSetId=image_set_id)["versionId"]


def wait_active(client: Any, ds: str, image_set_id: str, limit_s: float = 30) -> dict[str, Any]:
    """GetImageSet once the image set is ACTIVE (a 409, under reads_while_locked=conflict,
    is LOCKED too); bounded."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + limit_s
    while True:
        try:
            got = client.get_image_set(datastoreId=ds, imageSetId=image_set_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException" or time.monotonic() > deadline:
                raise
        else:
            if got["imageSetState"] == "ACTIVE" or time.monotonic() > deadline:
                return got
        time.sleep(0.02)


def instances(snapshot: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s, i) for s, sops in snapshot["instances"].items() for i in sops}
