"""`batchcopy plan` as a user runs it (the real CLI in a subprocess; it calls no service):
its figures for a known manifest, its JSON, the checks it shares with `validate`, run's
rate options, spreadsheet manifests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from test_plan import DS, DS2, iid

COLUMNS = ["row_id", "datastore_id", "source_image_set_id", "destination_image_set_id",
           "series_instance_uid"]
# the manifest of test_forecast.known_manifest, as a user writes it
KNOWN = [
    ["r1", DS, iid("1"), "", ""],
    ["r2", DS, iid("1"), iid("f"), "1.1"],
    ["r3", DS, iid("1"), iid("f"), "1.2"],
    ["r4", DS, iid("2"), iid("f"), "2.1"],
    ["r5", DS, iid("3"), "", ""],
    ["r6", DS, iid("1"), "", "1.1"],
    ["r7", DS2, iid("9"), "", ""],
]


def write(path: Path, rows: list[list[str]], *, delimiter: str = ",",
          columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def batchcopy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchcopy", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_plan_json_figures_of_a_known_manifest(tmp_path: Path) -> None:
    m = write(tmp_path / "m.csv", KNOWN)
    res = batchcopy("plan", str(m), "--rate", "CopyImageSet=0.5", "--copy-seconds", "5",
                    "--rows", "--output", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    plan: dict[str, Any] = json.loads(res.stdout)
    assert plan["valid"] is True and plan["errors"] == [] and plan["manifest"] == str(m)
    assert (plan["rows"], plan["calls"], plan["merged_calls"], plan["rows_in_merged_calls"],
            plan["calls_saved"]) == (7, 6, 1, 2, 1)
    assert (plan["new_image_set_calls"], plan["existing_destination_calls"],
            plan["chained_calls"]) == (4, 2, 3)
    assert plan["longest_chain"] == {"calls": 3, "datastore_id": DS, "image_set_id": iid("f"),
                                     "last_row_id": "r4", "seconds": 15.0}
    # (6 - 1) calls / 0.5 per s = 10 s, + the last copy (5 s); the chain: 3 x 5 s
    assert plan["time"] == {"copy_rate_per_s": 0.5, "assumed_copy_seconds": 5.0,
                            "sending_seconds": 10.0, "seconds": 15.0, "human": "15 s",
                            "rate_source": "--rate"}
    assert [(d["datastore_id"], d["rows"], d["calls"]) for d in plan["datastores"]] == [
        (DS, 6, 5), (DS2, 1, 1)]
    rows = {r["row_id"]: r for r in plan["row_plans"]}
    assert list(rows) == [r[0] for r in KNOWN]
    assert rows["r3"] == {"row_id": "r3", "manifest_row": 3, "call": 2, "datastore_id": DS,
                          "source_image_set_id": iid("1"), "action": "into_existing",
                          "destination_image_set_id": iid("f"), "subset": True,
                          "merged_with": ["r2"], "after_rows": ["r1"]}
    assert rows["r4"]["after_rows"] == ["r3"] and rows["r6"]["action"] == "new_image_set"


def test_plan_text_at_the_default_quota_and_with_a_rate_file(tmp_path: Path) -> None:
    m = write(tmp_path / "m.csv", KNOWN)
    res = batchcopy("plan", str(m), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "7 rows -> 6 CopyImageSet calls: 1 merged call carry 2 rows (1 call saved)" in out
    assert "longest chain is 3 calls, ending with row r4" in out
    # (6 - 1) / 0.25 = 20 s of sending, + one copy (5 s)
    assert "time at CopyImageSet 0.25/s (the published default quota" in out
    assert "about 25 s; sending the calls takes 20 s" in out
    assert "per data store:" in out and DS2 in out
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"CopyImageSet": {"rate": 100, "burst": 5}}))
    fast = batchcopy("plan", str(m), "--rate-file", str(rates), cwd=tmp_path)
    assert fast.returncode == 0, fast.stderr
    # at 100/s the chain is the bound: 3 copies one after another
    assert "time at CopyImageSet 100/s (from --rate)" in fast.stdout
    assert "about 15 s" in fast.stdout and "the longest chain alone takes 15 s" in fast.stdout
    rows = batchcopy("plan", str(m), "--rows", cwd=tmp_path).stdout.splitlines()
    assert rows[0].startswith("row r1: call 1: copies ")
    assert rows[3] == (f"row r4: call 3: copies a subset of {iid('2')} into {iid('f')}; "
                       "waits for the copy of r3 (same image set)")


def test_plan_refuses_what_validate_refuses(tmp_path: Path) -> None:
    m = write(tmp_path / "dup.csv", KNOWN + [["r8", DS, iid("3"), "", ""]])  # r5 again
    val = batchcopy("validate", str(m), cwd=tmp_path)
    plan = batchcopy("plan", str(m), cwd=tmp_path)
    assert val.returncode == plan.returncode == 2
    assert plan.stdout == ""
    said = [line for line in val.stderr.splitlines() if "row 8" in line]
    assert said and all(line in plan.stderr for line in said)
    assert "nothing would be sent" in plan.stderr
    as_json = batchcopy("plan", str(m), "-o", "json", cwd=tmp_path)
    assert as_json.returncode == 2
    body = json.loads(as_json.stdout)
    assert body["valid"] is False and body["error_count"] >= 1 and "calls" not in body
    assert any("row 8" in e for e in body["errors"])


def test_plan_reads_spreadsheet_exports_and_names_the_options(tmp_path: Path) -> None:
    columns = COLUMNS + ["notes"]
    rows = [r + ["checked by A."] for r in KNOWN]
    m = write(tmp_path / "export.csv", rows, delimiter=";", columns=columns)
    extra = batchcopy("plan", str(m), cwd=tmp_path)
    assert extra.returncode == 2 and "--extra-columns ignore" in extra.stderr
    ok = batchcopy("plan", str(m), "--extra-columns", "ignore", "-o", "json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["calls"] == 6  # the semicolons were sniffed
    wrong = batchcopy("plan", str(m), "--delimiter", ",", "--extra-columns", "ignore",
                      cwd=tmp_path)
    assert wrong.returncode == 2 and "pass --delimiter ';'" in wrong.stderr
    bad = batchcopy("plan", str(m), "--delimiter", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "--delimiter: a delimiter is one character" in bad.stderr


@pytest.mark.parametrize("args, said", [
    (["--rate", "CopyImageSet"], "--rate: expected OPERATION=RATE"),
    (["--rate", "Copy=1"], "--rate: unknown operation 'Copy'"),
    (["--rate-file", "missing.json"], "--rate-file:"),
])
def test_plan_rate_errors_name_the_option(tmp_path: Path, args: list[str], said: str) -> None:
    m = write(tmp_path / "m.csv", KNOWN)
    res = batchcopy("plan", str(m), *args, cwd=tmp_path)
    assert res.returncode == 2 and said in res.stderr and "Traceback" not in res.stderr
