"""Every malformed manifest of the corpus (tests/bad_inputs) against the code that reads
a manifest: `batchcopy validate FILE` and `batchcopy run FILE` against the emulator each
exit 2 with one line naming the file (and the row, line and column where they apply), no
traceback and no exception, the emulator counts no call at all, and no journal is left.

Every case runs through the CLI in this process (kit.runkit.run_cli: its main(), so the
path checks, the scanner (manifest/scan.py, through `validate`'s check and `run`'s
stage_manifest) and the lines the CLI formats from its ManifestErrors are the product's
own). One case per family (a CSV header, a CSV row, a .csv.gz, a Parquet file, a path, an
s3:// URL) also runs as real processes: the console script's exit code and stderr as a
shell sees them.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import CASES, DS, GOOD, HEAD, BadCase, csv_bytes, write_case
from kit.runkit import run_cli

S3_BUCKET = "bad-manifests"
JOURNAL = "run.journal.sqlite"
# the cases also run as real processes: one of each family (what they show -> case)
PROCESS_CASES = {"a CSV header": "csv-missing-required-column", "a CSV row": "csv-bad-boolean",
                 "a .csv.gz": "gz-truncated-after-head", "a Parquet file": "pq-int-image-set-id",
                 "a path": "path-directory"}
PROCESS_S3_CASE = "missing-key"


def commands(target: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "validate": ["validate", target],
        "run": ["run", target, "--datastore-id", DS, "--report", str(tmp / "report.parquet"),
                "--journal", str(tmp / JOURNAL), "--quiet"],
    }


def assert_refused(name: str, code: int, out: str, err: str, target: str, expect: tuple[str, ...]) -> None:
    said = f"{name}: exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert code == 2, said
    assert "Traceback" not in err, said
    # the fragments in what the line says besides the target (whose folder is the case's name)
    lines = [line.replace(target, "") for line in err.splitlines() if target in line]
    assert any(all(fragment in line for fragment in expect) for line in lines), said


def assert_nothing_sent(emulator: Any, tmp: Path) -> None:
    assert sum(emulator.stats()["calls"].values()) == 0, emulator.stats()["calls"]
    assert not (tmp / JOURNAL).exists()


def refuse_in_process(target: str, expect: tuple[str, ...], env: dict[str, str], tmp: Path) -> None:
    """Both commands, in this process, refuse `target` with a line holding `expect`."""
    for name, args in commands(target, tmp).items():
        done = run_cli(args, env, cwd=tmp)
        assert_refused(name, done.returncode, done.stdout, done.stderr, target, expect)


def refuse_as_processes(target: str, expect: tuple[str, ...], env: dict[str, str], tmp: Path) -> None:
    """Both commands, as real processes started at once, refuse `target` likewise."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "batchcopy", *args], cwd=tmp,
                                    env={**os.environ, **env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in commands(target, tmp).items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert_refused(name, proc.returncode, out, err, target, expect)


def case_named(name: str) -> BadCase:
    return next(case for case in CASES if case.name == name)


# ---------------------------------------------------------------- every case, in this process


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_manifest_is_refused(case: BadCase, emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    target = str(write_case(case, tmp_path))
    refuse_in_process(target, case.expect, client_env, tmp_path)
    assert_nothing_sent(emulator, tmp_path)


def test_missing_local_file(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    refuse_in_process(str(tmp_path / "nowhere.csv"), ("not found",), client_env, tmp_path)
    assert_nothing_sent(emulator, tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_named_pipe_or_a_device_is_refused_at_once(kind: str, emulator: Any, client_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    """Not files: a named pipe nobody writes to (reading it would wait for ever) and a
    device (/dev/zero, under a .csv name)."""
    target = tmp_path / "m.csv"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    expect = ("a named pipe (FIFO)",) if kind == "fifo" else ("a device",)
    refuse_in_process(str(target), (*expect, "not a regular file", "save it to a file first"), client_env,
                      tmp_path)
    assert_nothing_sent(emulator, tmp_path)


_S3_URL_CASES = {
    # id: (url, fragments)
    "missing-key": (f"s3://{S3_BUCKET}/no/such.csv", ("not found",)),
    "missing-bucket": ("s3://no-such-bucket-here/m.csv", ("not found",)),
    "no-bucket": ("s3://", ()),
    "no-key": (f"s3://{S3_BUCKET}/", ()),
    "truncated-gz": (f"s3://{S3_BUCKET}/in/cut.csv.gz", ("truncated",)),
}


@pytest.fixture
def s3_env(client_env: dict[str, str], moto_endpoint: str) -> dict[str, str]:
    """client_env with S3 at moto's server, where S3_BUCKET holds a truncated .csv.gz."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=S3_BUCKET)
    s3.put_object(Bucket=S3_BUCKET, Key="in/cut.csv.gz", Body=gzip.compress(csv_bytes(HEAD, GOOD))[:-12])
    return {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}


@pytest.mark.parametrize("name", _S3_URL_CASES)
def test_bad_s3_manifest_is_refused(name: str, emulator: Any, s3_env: dict[str, str], tmp_path: Path) -> None:
    url, expect = _S3_URL_CASES[name]
    refuse_in_process(url, expect, s3_env, tmp_path)
    assert_nothing_sent(emulator, tmp_path)


def test_the_corpus_is_broad() -> None:
    kinds = {case.name.split("-")[0] for case in CASES}
    assert kinds == {"csv", "gz", "pq", "path"} and len(CASES) >= 45
    assert len({case.name for case in CASES}) == len(CASES)
    # the real processes cover every family, a CSV header and a CSV row problem
    assert {name.split("-")[0] for name in PROCESS_CASES.values()} == kinds
    assert not any("row" in e for e in case_named(PROCESS_CASES["a CSV header"]).expect)
    assert any("row" in e for e in case_named(PROCESS_CASES["a CSV row"]).expect)


# ---------------------------------------------------------------- a few as real processes


@pytest.mark.parametrize("name", PROCESS_CASES.values())
def test_bad_manifest_is_refused_by_the_console_script(name: str, emulator: Any, client_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    case = case_named(name)
    refuse_as_processes(str(write_case(case, tmp_path)), case.expect, client_env, tmp_path)
    assert_nothing_sent(emulator, tmp_path)


def test_bad_s3_manifest_is_refused_by_the_console_script(emulator: Any, s3_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    url, expect = _S3_URL_CASES[PROCESS_S3_CASE]
    refuse_as_processes(url, expect, s3_env, tmp_path)
    assert_nothing_sent(emulator, tmp_path)
