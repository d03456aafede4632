"""Every malformed manifest of the corpus (tests/bad_inputs) through the real CLI:
`batchcopy validate FILE` and `batchcopy run FILE` against the emulator each exit 2
with one line naming the file (and the row, line and column where they apply), no
traceback, and the emulator counts no call at all."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import CASES, DS, GOOD, HEAD, BadCase, csv_bytes, write_case

S3_BUCKET = "bad-manifests"


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "batchcopy", *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def commands(target: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "validate": ["validate", target],
        "run": ["run", target, "--datastore-id", DS, "--report", str(tmp / "report.parquet"),
                "--journal", str(tmp / "run.journal.sqlite"), "--quiet"],
    }


def assert_refused(name: str, proc: subprocess.Popen[str], target: str, expect: tuple[str, ...]) -> None:
    out, err = proc.communicate(timeout=180)
    said = f"{name}: exit {proc.returncode}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert proc.returncode == 2, said
    assert "Traceback" not in err, said
    lines = [line for line in err.splitlines() if target in line]
    assert any(all(fragment in line for fragment in expect) for line in lines), said


def assert_nothing_sent(emulator: Any) -> None:
    assert sum(emulator.stats()["calls"].values()) == 0, emulator.stats()["calls"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_manifest_is_refused(case: BadCase, emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    target = str(write_case(case, tmp_path))
    # both commands at once: the case costs one process start, not two
    procs = {name: start(args, client_env, tmp_path) for name, args in commands(target, tmp_path).items()}
    for name, proc in procs.items():
        assert_refused(name, proc, target, case.expect)
    assert_nothing_sent(emulator)
    assert not (tmp_path / "run.journal.sqlite").exists()


def test_missing_local_file(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    target = str(tmp_path / "nowhere.csv")
    for name, args in commands(target, tmp_path).items():
        assert_refused(name, start(args, client_env, tmp_path), target, ("not found",))
    assert_nothing_sent(emulator)


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
    for name, args in commands(str(target), tmp_path).items():
        assert_refused(name, start(args, client_env, tmp_path), str(target),
                       (*expect, "not a regular file", "save it to a file first"))
    assert_nothing_sent(emulator)
    assert not (tmp_path / "run.journal.sqlite").exists()


def test_the_corpus_is_broad() -> None:
    kinds = {case.name.split("-")[0] for case in CASES}
    assert kinds == {"csv", "gz", "pq", "path"} and len(CASES) >= 45
    assert len({case.name for case in CASES}) == len(CASES)


_S3_URL_CASES = [
    # (id, url, fragments, xfail reason for validate or None)
    ("missing-key", f"s3://{S3_BUCKET}/no/such.csv", ("not found",), None),
    ("missing-bucket", "s3://no-such-bucket-here/m.csv", ("not found",), None),
    ("no-bucket", "s3://", (), None),
    ("no-key", f"s3://{S3_BUCKET}/", (), None),
    ("truncated-gz", f"s3://{S3_BUCKET}/in/cut.csv.gz", ("truncated",), None),
]


def _s3_params() -> list[Any]:
    params = []
    for name, url, expect, validate_xfail in _S3_URL_CASES:
        for command in ("validate", "run"):
            marks = [pytest.mark.xfail(strict=True, reason=validate_xfail)] if (
                command == "validate" and validate_xfail) else []
            params.append(pytest.param(command, url, expect, id=f"{command}-{name}", marks=marks))
    return params


@pytest.mark.parametrize("command,url,expect", _s3_params())
def test_bad_s3_manifest_is_refused(command: str, url: str, expect: tuple[str, ...], emulator: Any,
                                    client_env: dict[str, str], moto_endpoint: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=S3_BUCKET)
    s3.put_object(Bucket=S3_BUCKET, Key="in/cut.csv.gz", Body=gzip.compress(csv_bytes(HEAD, GOOD))[:-12])
    env = {**client_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    proc = start(commands(url, tmp_path)[command], env, tmp_path)
    assert_refused(command, proc, url, expect)
    assert_nothing_sent(emulator)
