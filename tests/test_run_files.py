"""run/files.py alone: which paths are one file (no CLI, no server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchcopy.aws.preflight import SetupError
from batchcopy.run.files import Part, check_distinct, check_run_files


def test_a_hard_link_a_symlink_and_a_relative_path_are_the_file_they_lead_to(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"PAR1")
    os.link(manifest, tmp_path / "hard.parquet")
    (tmp_path / "soft.parquet").symlink_to(manifest)
    monkeypatch.chdir(tmp_path)
    for report in ("hard.parquet", "soft.parquet", "m.parquet", "./sub/../m.parquet"):
        with pytest.raises(SetupError, match="the report \\(--report\\) .* is the same file as the manifest"):
            check_run_files(str(manifest), report, tmp_path / "j.sqlite", None)
    check_run_files(str(manifest), "other.parquet", tmp_path / "j.sqlite", None)


def test_the_journal_companions_and_s3_urls() -> None:
    with pytest.raises(SetupError, match="the log file .*x.sqlite-wal is the same file as the journal"):
        check_run_files("m.csv", "r.parquet", Path("x.sqlite"), "x.sqlite-wal")
    with pytest.raises(SetupError, match="give another --report"):
        check_run_files("s3://b/m.parquet", "s3://b/m.parquet", Path("j.sqlite"), None)
    check_run_files("s3://b/m.parquet", "s3://b/r.parquet", Path("j.sqlite"), None)
    # one part's own files never clash with each other
    check_distinct([Part("the journal", "j"), Part("the journal", "j")])
