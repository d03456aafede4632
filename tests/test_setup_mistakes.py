"""Setup mistakes a new user makes before the first call: command-line values, AWS
settings, journals, report destinations and the other commands (`report`, `plan`,
`emulator serve`). Each goes through the real CLI against the emulator and must end
in one line on stderr naming the cause (and the file where one applies), exit 2, no
traceback, no call counted by the emulator and nothing left behind in the work
directory (no journal a later run would pick up).

Malformed manifests are the corpus of tests/bad_inputs (test_bad_manifests.py);
journals refused by --resume are in test_reruns.py; those are not repeated here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bad_inputs import CASES as MANIFEST_CASES
from kit.runkit import write_manifest

# the journal of a run that is refused: it must never be there afterwards
JOURNAL = "run.journal.sqlite"


@dataclass
class Setup:
    """What a case may use: the work directory, a valid one-row manifest, the emulator."""

    tmp: Path
    manifest: Path
    emulator: Any
    env: dict[str, str]

    def file(self, name: str, data: bytes = b"x") -> Path:
        path = self.tmp / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path

    def journal_bytes(self) -> bytes:
        """A real, healthy journal (created by our Journal class; no API call) as bytes."""
        from batchcopy.journal.journal import Journal

        path = self.tmp / "inputs" / "healthy.journal.sqlite"
        path.parent.mkdir(exist_ok=True)
        journal = Journal(path)
        journal.close()
        for suffix in ("-wal", "-shm", ".lock"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        data = path.read_bytes()
        path.unlink()
        return data


def run_args(s: Setup, *extra: str, report: str = "report.parquet", journal: str = JOURNAL) -> list[str]:
    return ["run", str(s.manifest), "--report", report, "--journal", journal, "--quiet", *extra]


def page_corrupted(data: bytes) -> bytes:
    """Every page after the first overwritten with a pattern: a header that reads, pages that do not."""
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 2 * page, "the healthy journal has a single page: nothing to corrupt"
    return data[:page] + b"\xa5" * (len(data) - page)


def without_region(s: Setup) -> dict[str, str]:
    env = {k: v for k, v in s.env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    env["HOME"] = str(s.tmp / "empty-home")  # no ~/.aws/config to find a region in
    (s.tmp / "empty-home").mkdir(exist_ok=True)
    return env


@dataclass(frozen=True)
class Mistake:
    name: str
    kind: str  # cli | aws | journal | report | command
    args: Callable[[Setup], list[str]]
    expect: tuple[str, ...]  # fragments of the one line
    env: Callable[[Setup], dict[str, str]] | None = None
    files_named: Callable[[Setup], str] | None = None  # a path the line must name


def parquet_manifest(s: Setup) -> str:
    """The setup's manifest as Parquet (a manifest a report could overwrite)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = s.tmp / "inputs" / "m.parquet"
    if not path.exists():
        pq.write_table(pacsv.read_csv(s.manifest), path)
    return str(path)


def link_to(s: Setup, name: str, target: Path) -> str:
    """inputs/<name>, a symbolic link to `target` (which may not exist yet)."""
    link = s.tmp / "inputs" / name
    if not link.is_symlink():
        link.symlink_to(target)
    return str(link)


def read_only_state(s: Setup) -> dict[str, str]:
    """A state directory no process may write, root included: root ignores permission bits
    and CI has no mounts to make, but sysfs refuses new files to everyone (EPERM, or EROFS
    where /sys is mounted read-only), as a read-only state directory does."""
    return {**s.env, "BATCHCOPY_STATE_DIR": "/sys/fs"}


def _rate(value: str) -> Callable[[Setup], list[str]]:
    return lambda s: run_args(s, "--rate", value)


def _report(path: Callable[[Setup], str]) -> Callable[[Setup], list[str]]:
    return lambda s: run_args(s, report=path(s))


def _journal(path: Callable[[Setup], str], *extra: str) -> Callable[[Setup], list[str]]:
    return lambda s: run_args(s, *extra, journal=path(s))


MISTAKES = [
    # ---- command-line values
    Mistake("cli-max-duration-negative", "cli", lambda s: run_args(s, "--max-duration", "-5"),
            ("--max-duration", "not a duration", "'-5'")),
    Mistake("cli-max-duration-zero", "cli", lambda s: run_args(s, "--max-duration", "0"),
            ("--max-duration", "must be more than 0")),
    Mistake("cli-max-duration-zero-minutes", "cli", lambda s: run_args(s, "--max-duration", "0m"),
            ("--max-duration", "must be more than 0")),
    Mistake("cli-max-duration-word", "cli", lambda s: run_args(s, "--max-duration", "soon"),
            ("--max-duration", "not a duration", "90m")),
    Mistake("cli-rate-negative", "cli", _rate("CopyImageSet=-1"), ("--rate", "CopyImageSet", "> 0", "'-1'")),
    Mistake("cli-rate-zero", "cli", _rate("CopyImageSet=0"), ("--rate", "CopyImageSet", "> 0", "'0'")),
    Mistake("cli-rate-nan", "cli", _rate("CopyImageSet=nan"), ("--rate", "finite", "'nan'")),
    Mistake("cli-rate-infinite", "cli", _rate("GetImageSet=inf"), ("--rate", "finite", "'inf'")),
    Mistake("cli-burst-zero", "cli", _rate("CopyImageSet=5/0"), ("--rate", "burst of CopyImageSet", ">= 1")),
    Mistake("cli-rate-unknown-operation", "cli", _rate("CopyImage=3"),
            ("--rate", "unknown operation 'CopyImage'", "CopyImageSet")),
    Mistake("cli-rate-file-missing", "cli", lambda s: run_args(s, "--rate-file", str(s.tmp / "rates.json")),
            ("--rate-file", "No such file"), files_named=lambda s: "rates.json"),
    Mistake("cli-rate-file-not-json", "cli",
            lambda s: run_args(s, "--rate-file", str(s.file("rates.json", b"CopyImageSet: 5"))),
            ("--rate-file", "not valid JSON"), files_named=lambda s: str(s.tmp / "inputs" / "rates.json")),
    Mistake("cli-rate-file-zero", "cli",
            lambda s: run_args(s, "--rate-file", str(s.file("rates.json", b'{"CopyImageSet": 0}'))),
            ("--rate-file", "CopyImageSet", "> 0")),
    Mistake("cli-retry-backoff-zero", "cli", lambda s: run_args(s, "--retry-backoff", "0"),
            ("--retry-backoff", "0 < BASE <= CAP", "'0'")),
    Mistake("cli-retry-backoff-word", "cli", lambda s: run_args(s, "--retry-backoff", "fast"),
            ("--retry-backoff", "'fast'", "0.5/20")),
    Mistake("cli-retry-backoff-cap-below-base", "cli", lambda s: run_args(s, "--retry-backoff", "2/1"),
            ("--retry-backoff", "'2/1'")),
    Mistake("cli-plan-rate-negative", "cli", lambda s: ["plan", str(s.manifest), "--rate", "CopyImageSet=-2"],
            ("--rate", "> 0", "'-2'")),
    Mistake("cli-log-file-is-the-manifest", "cli",
            lambda s: run_args(s, "--log-file", link_to(s, "run.log", s.manifest)),
            ("the log file (--log-file)", "is the same file as the manifest", "after resolving symlinks",
             "give another --log-file")),
    Mistake("cli-log-file-is-the-report", "cli", lambda s: run_args(s, "--log-file", "report.parquet"),
            ("the log file (--log-file) report.parquet is the same file as the report (--report)",)),
    Mistake("cli-log-file-under-a-file", "cli",
            lambda s: run_args(s, "--log-file", str(s.file("plain") / "run.log")),
            ("--log-file", "Not a directory"), files_named=lambda s: str(s.tmp / "inputs" / "plain")),
    # usage errors typer/click find (ranges, unknown names, missing arguments): one line too
    Mistake("cli-log-interval-below-range", "cli", lambda s: run_args(s, "--log-interval", "0"),
            ("batchcopy run:", "--log-interval", "0.1", "batchcopy run --help")),
    Mistake("cli-stop-grace-negative", "cli", lambda s: run_args(s, "--stop-grace", "-1"),
            ("batchcopy run:", "--stop-grace")),
    Mistake("cli-unknown-option", "cli", lambda s: run_args(s, "--no-merges"),
            ("batchcopy run:", "No such option: --no-merges", "--no-merge")),
    Mistake("cli-dry-run-points-to-plan", "cli", lambda s: run_args(s, "--dry-run"),
            ("batchcopy run:", "--dry-run", "no dry run", "batchcopy plan MANIFEST")),
    Mistake("cli-n-points-to-plan", "cli", lambda s: run_args(s, "-n"),
            ("batchcopy run:", "-n", "batchcopy plan MANIFEST")),
    Mistake("cli-retries-means-max-attempts", "cli", lambda s: run_args(s, "--retries", "3"),
            ("batchcopy run:", "No such option: --retries", "did you mean --max-attempts?")),
    Mistake("cli-unknown-command", "cli", lambda s: ["rnu", str(s.manifest)],
            ("batchcopy:", "No such command 'rnu'", "batchcopy --help")),
    Mistake("cli-missing-argument", "cli", lambda s: ["run", "--quiet"],
            ("batchcopy run:", "Missing argument", "MANIFEST")),
    # ---- AWS settings
    Mistake("aws-no-region-anywhere", "aws", lambda s: run_args(s), ("no AWS region", "--region"),
            env=without_region),
    Mistake("aws-no-region-default-journal", "aws",
            lambda s: ["run", str(s.manifest), "--report", "report.parquet", "--quiet"],
            ("no AWS region", "AWS_DEFAULT_REGION"), env=without_region),
    Mistake("aws-unknown-profile", "aws", lambda s: run_args(s, "--profile", "nosuch"),
            ("AWS profile 'nosuch'", "list-profiles")),
    Mistake("aws-unknown-profile-in-env", "aws", lambda s: run_args(s), ("'nosuch'",),
            env=lambda s: {**s.env, "AWS_PROFILE": "nosuch"}),
    Mistake("aws-bad-region", "aws", lambda s: run_args(s, "--region", "not a region!"),
            ("'not a region!'", "not an AWS region", "us-east-1")),
    Mistake("aws-endpoint-not-a-url", "aws", lambda s: run_args(s, "--endpoint-url", "not-a-url"),
            ("--endpoint-url 'not-a-url'", "https://host")),
    Mistake("aws-endpoint-ftp", "aws", lambda s: run_args(s, "--endpoint-url", "ftp://example.com"),
            ("--endpoint-url 'ftp://example.com'", "https://host")),
    Mistake("aws-endpoint-no-host", "aws", lambda s: run_args(s, "--endpoint-url", "http://"),
            ("--endpoint-url 'http://'",)),
    Mistake("aws-endpoint-env-not-a-url", "aws", lambda s: run_args(s), ("'not-a-url'", "AWS_ENDPOINT_URL"),
            env=lambda s: {**s.env, "AWS_ENDPOINT_URL_MEDICAL_IMAGING": "not-a-url"}),
    # ---- journals (those --resume refuses are in test_reruns.py)
    Mistake("journal-under-a-file", "journal", _journal(lambda s: str(s.file("plain") / "j.sqlite")),
            ("--journal", "is a file, not a directory"), files_named=lambda s: str(s.tmp / "inputs" / "plain")),
    Mistake("journal-is-a-directory", "journal", _journal(lambda s: str(s.tmp / "inputs")),
            ("--journal", "is a directory")),
    Mistake("journal-in-proc", "journal", _journal(lambda s: "/proc/batchcopy/j.sqlite"),
            ("--journal", "/proc/batchcopy/j.sqlite", "cannot be created")),
    Mistake("journal-garbage", "journal",
            _journal(lambda s: str(s.file("g.sqlite", b"\x00garbage" * 100))),
            ("not a batchcopy journal", "--journal"), files_named=lambda s: str(s.tmp / "inputs" / "g.sqlite")),
    Mistake("journal-text-file", "journal",
            _journal(lambda s: str(s.file("notes.sqlite", b"row_id,datastore_id\n"))),
            ("not a batchcopy journal",), files_named=lambda s: str(s.tmp / "inputs" / "notes.sqlite")),
    Mistake("journal-truncated", "journal",
            _journal(lambda s: str(s.file("t.sqlite", (lambda d: d[: len(d) // 2])(s.journal_bytes())))),
            ("cannot be used", "--fresh"), files_named=lambda s: str(s.tmp / "inputs" / "t.sqlite")),
    Mistake("journal-page-corrupted", "journal",
            _journal(lambda s: str(s.file("p.sqlite", page_corrupted(s.journal_bytes())))),
            ("cannot be used", "malformed", "--fresh"), files_named=lambda s: str(s.tmp / "inputs" / "p.sqlite")),
    Mistake("journal-page-corrupted-resume", "journal",
            _journal(lambda s: str(s.file("p.sqlite", page_corrupted(s.journal_bytes()))), "--resume"),
            ("cannot be used", "malformed"), files_named=lambda s: str(s.tmp / "inputs" / "p.sqlite")),
    Mistake("journal-header-corrupted", "journal",
            _journal(lambda s: str(s.file("h.sqlite", (lambda d: d[:16] + b"\x00\x03" + d[18:])(s.journal_bytes())))),
            ("cannot be used", "not a database"), files_named=lambda s: str(s.tmp / "inputs" / "h.sqlite")),
    Mistake("journal-is-the-report", "journal", lambda s: run_args(s, report="run.parquet", journal="run.parquet"),
            ("the report (--report) run.parquet is the same file as the journal run.parquet",
             "give another --report")),
    Mistake("journal-is-the-log-file", "journal", lambda s: run_args(s, "--log-file", JOURNAL),
            ("the log file (--log-file)", "is the same file as the journal", "give another --log-file")),
    Mistake("journal-state-directory-read-only", "journal", lambda s: run_args(s),
            ("the state directory /sys/fs cannot be written", "BATCHCOPY_STATE_DIR", "nothing was sent"),
            env=read_only_state),
    Mistake("journal-default-in-a-read-only-state-directory", "journal",
            lambda s: ["run", str(s.manifest), "--report", "report.parquet", "--quiet"],
            ("the state directory /sys/fs cannot be written", "--state", "nothing was sent"),
            env=read_only_state),
    # ---- report destinations
    Mistake("report-is-the-parquet-manifest", "report",
            lambda s: ["run", parquet_manifest(s), "--report", parquet_manifest(s), "--journal", JOURNAL,
                       "--quiet"],
            ("the report (--report)", "is the same file as the manifest", "give another --report"),
            files_named=lambda s: str(s.tmp / "inputs" / "m.parquet")),
    Mistake("report-is-a-link-to-the-journal", "report",
            lambda s: run_args(s, report=link_to(s, "r.parquet", s.tmp / JOURNAL)),
            ("the report (--report)", "is the same file as the journal", "after resolving symlinks")),
    Mistake("report-summary-is-the-journal", "report",
            lambda s: run_args(s, report="r.parquet", journal="r.summary.json"),
            ("the report's summary r.summary.json is the same file as the journal", "give another --report")),
    Mistake("report-under-a-file", "report", _report(lambda s: str(s.file("plain") / "r.parquet")),
            ("report's directory", "is a file, not a directory"),
            files_named=lambda s: str(s.tmp / "inputs" / "plain")),
    Mistake("report-in-proc", "report", _report(lambda s: "/proc/batchcopy-report/r.parquet"),
            ("report's directory", "/proc/batchcopy-report")),
    Mistake("report-on-a-directory", "report", _report(lambda s: str(s.tmp / "inputs") + "/"),
            ("--report",), files_named=lambda s: str(s.tmp / "inputs")),
    Mistake("report-existing-directory-named-parquet", "report",
            _report(lambda s: str((lambda p: (p.mkdir(), p)[1])(s.tmp / "r.parquet"))),
            ("--report", "is a directory")),
    Mistake("report-wrong-extension", "report", _report(lambda s: "r.txt"), ("--report 'r.txt'", ".parquet")),
    Mistake("report-csv-extension", "report", _report(lambda s: "r.csv"), ("--report 'r.csv'", ".parquet")),
    Mistake("report-s3-without-key", "report", _report(lambda s: "s3://"), ("--report 's3://'",)),
    Mistake("report-s3-without-bucket", "report", _report(lambda s: "s3:///r.parquet"), ("s3:///r.parquet",)),
    # ---- the other commands
    Mistake("command-report-of-a-garbage-journal", "command",
            lambda s: ["report", str(s.file("g.sqlite", b"\x00garbage" * 100))],
            ("not a batchcopy journal",), files_named=lambda s: str(s.tmp / "inputs" / "g.sqlite")),
    Mistake("command-report-of-a-truncated-journal", "command",
            lambda s: ["report", str(s.file("t.journal.sqlite", s.journal_bytes()[:1000]))],
            ("t.journal.sqlite",)),
    Mistake("command-report-of-a-directory", "command", lambda s: ["report", str(s.tmp / "inputs") + "/"],
            ("inputs",)),
    Mistake("command-emulator-serve-on-a-busy-port", "command",
            lambda s: ["emulator", "serve", "--port", str(s.emulator.port)],
            ("cannot listen on 127.0.0.1", "already in use", "--port")),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_setup_mistake_is_one_line_exit_2_and_nothing_sent(
        mistake: Mistake, emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
        tmp_path: Path) -> None:
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{"row_id": "r1", "datastore_id": ds["datastoreId"],
                                                    "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    (tmp_path / "inputs").mkdir()
    s = Setup(tmp_path, manifest, emulator, dict(client_env))
    args = mistake.args(s)
    env = mistake.env(s) if mistake.env else s.env
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    full_env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "batchcopy", *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=120)
    said = f"{mistake.name}: exit {proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"
    assert proc.returncode == 2, said
    assert "Traceback" not in proc.stderr, said
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, said
    assert all(fragment in lines[0] for fragment in mistake.expect), said
    if mistake.files_named:
        assert mistake.files_named(s) in lines[0], said
    assert sum(emulator.stats()["calls"].values()) == 0, emulator.stats()["calls"]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes in a read-only directory; the /proc and under-a-file cases cover it")
def test_report_in_a_read_only_directory(emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
                                         tmp_path: Path) -> None:
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{"row_id": "r1", "datastore_id": ds["datastoreId"],
                                                    "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = subprocess.run([sys.executable, "-m", "batchcopy", "run", str(manifest), "--report",
                               str(locked / "r.parquet"), "--journal", JOURNAL, "--quiet"],
                              cwd=tmp_path, env={**os.environ, **client_env}, capture_output=True, text=True,
                              timeout=120)
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 2 and "cannot write in the report's directory" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / JOURNAL).exists()
    assert sum(emulator.stats()["calls"].values()) == 0


def test_a_busy_port_is_really_busy_for_the_serve_case(emulator: Any) -> None:
    # the serve case above relies on the fixture's port being taken: check that premise
    with socket.socket() as sock, pytest.raises(OSError):
        sock.bind(("127.0.0.1", emulator.port))


def test_the_bad_input_corpus_has_at_least_60_kinds() -> None:
    kinds = {m.kind for m in MISTAKES}
    assert kinds == {"cli", "aws", "journal", "report", "command"}
    assert len({m.name for m in MISTAKES}) == len(MISTAKES)
    # manifests (tests/bad_inputs) + the mistakes here, not counting test_reruns' journals
    assert len(MANIFEST_CASES) + len(MISTAKES) >= 60


def test_copiable_attributes_above_the_csv_field_limit_are_valid(emulator: Any, client_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """Not a mistake: above the csv module's 131,072-character field limit, within the
    service's 260,000 (issue 8: it was refused as 'cannot read the csv header')."""
    from batchcopy.core.limits import COPIABLE_ATTRIBUTES_CHARS
    from batchcopy.manifest.attributes import canonical_attributes

    attrs = canonical_attributes({"1.2": {f"1.2.{i:060d}" for i in range(2800)}})
    assert 131_072 < len(attrs) <= COPIABLE_ATTRIBUTES_CHARS  # 196,066 characters
    manifest = write_manifest(tmp_path / "big.csv", [{
        "row_id": "big", "datastore_id": "d" * 32, "source_image_set_id": "a" * 32,
        "destination_image_set_id": "b" * 32, "copiable_attributes": attrs}])
    proc = subprocess.run([sys.executable, "-m", "batchcopy", "validate", str(manifest)], cwd=tmp_path,
                          env={**os.environ, **client_env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sum(emulator.stats()["calls"].values()) == 0


def test_aws_region_alone_is_enough(emulator: Any, client_env: dict[str, str], seeded: dict[str, Any],
                                    tmp_path: Path) -> None:
    """AWS_REGION (what the other AWS SDKs read; botocore reads AWS_DEFAULT_REGION) names
    the region when nothing else does."""
    ds = seeded["datastores"][0]
    manifest = write_manifest(tmp_path / "m.csv", [{"row_id": "r1", "datastore_id": ds["datastoreId"],
                                                    "source_image_set_id": ds["imageSets"][0]["imageSetId"]}])
    s = Setup(tmp_path, manifest, emulator, dict(client_env))
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")}
    env.update(without_region(s), AWS_REGION="us-west-2")
    proc = subprocess.run([sys.executable, "-m", "batchcopy", *run_args(s)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert emulator.stats()["calls"]["CopyImageSet"] == 1
