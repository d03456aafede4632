"""`batchcopy report` over a real run: the table, the JSON (against the run's journal),
the report's new columns and the summary's context. The real CLI in a subprocess, the
emulator over HTTP."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import control_call
from kit.runkit import FAST, run_cli, write_manifest

# meant to keep this module on one worker (its module fixture made once); under pytest 9.2
# with pytest-xdist 3.8 the mark groups nothing, so each worker that runs these tests makes
# the fixture once (one small run, seconds)
pytestmark = pytest.mark.xdist_group("report-cli")

SEED = {"seed": 5, "datastores": 1, "patients": 4, "studies_per_patient": 1,
        "series_per_study": 2, "instances_per_series": 2, "frames_per_instance": 1}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with successes, two kinds of failure and a curator's `notes` column, shared by
    the tests of this module (they only read it)."""
    from batchcopy.emulator.config import EmulatorConfig
    from batchcopy.emulator.server import EmulatorServer

    from conftest import DUMMY_CREDENTIALS, TEST_TIME_SCALE

    tmp = tmp_path_factory.mktemp("ran")
    server = EmulatorServer(EmulatorConfig.from_dict({"time_scale": TEST_TIME_SCALE})).start()
    try:
        status, seeded = control_call(server.endpoint, "POST", "/_emulator/seed", SEED)
        assert status == 200, seeded
        store = seeded["datastores"][0]
        ds, sets = store["datastoreId"], store["imageSets"]
        first_series = next(iter(sets[0]["series"]))
        rows = [{"row_id": f"ok-{i}", "datastore_id": ds, "source_image_set_id": s["imageSetId"],
                 "notes": f"case {i}"} for i, s in enumerate(sets[:3])]
        rows.append({"row_id": "mismatch", "datastore_id": ds,  # another patient, no force
                     "source_image_set_id": sets[1]["imageSetId"],
                     "destination_image_set_id": sets[2]["imageSetId"], "notes": "wrong patient"})
        rows.append({"row_id": "absent", "datastore_id": ds, "source_image_set_id": sets[0]["imageSetId"],
                     "series_instance_uid": first_series, "sop_instance_uid": "1.2.3.999",
                     "notes": "typo"})
        manifest = write_manifest(tmp / "curated.csv", rows, ("notes",))
        env = {**server.client_env(), **DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": server.config.region,
               "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
               "BATCHCOPY_STATE_DIR": str(tmp / "state")}
        report, journal = tmp / "run.parquet", tmp / "run.journal.sqlite"
        proc = run_cli(["run", str(manifest), "--report", str(report), "--journal", str(journal),
                        "--extra-columns", "ignore", *FAST], env, cwd=tmp)
        assert proc.returncode == 1, proc.stderr
    finally:
        server.stop()
    return {"tmp": tmp, "env": env, "report": report, "journal": journal, "rows": rows}


def ledger(journal: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(journal)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(
            "SELECT m.row_id, m.extras, r.status, r.error_code, r.error_message, r.run_id "
            "FROM manifest m JOIN rows r ON r.key = m.key ORDER BY m.manifest_row")]
    finally:
        db.close()


def test_report_json_from_the_journal_matches_the_journal(ran: dict[str, Any]) -> None:
    out = ran["tmp"] / "rebuilt.parquet"
    proc = run_cli(["report", str(ran["journal"]), "--output", "json", "--out", str(out)],
                   ran["env"], cwd=ran["tmp"])
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)  # stdout is the JSON alone
    rows = ledger(ran["journal"])
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert got["rows"] == len(rows) == 5
    assert {k: v for k, v in got["by_status"].items() if v} == by_status == {"SUCCEEDED": 3, "FAILED": 2}
    assert got["ok"] is False
    failed = [r for r in rows if r["status"] == "FAILED"]
    listed = got["problems"]["FAILED"]["rows"]
    assert got["problems"]["FAILED"]["total"] == 2
    assert [(p["row_id"], p["error_code"], p["message"]) for p in listed] == \
        [(r["row_id"], r["error_code"], r["error_message"]) for r in failed]
    assert {p["row_id"]: p["error_code"] for p in listed} == {"mismatch": "COPY_FAILED",
                                                             "absent": "SubsetNotInSource"}
    assert all(p["message"] for p in listed)
    assert [json.loads(p["extras"]) for p in listed] == [{"notes": "wrong patient"}, {"notes": "typo"}]
    assert got["problems"]["CONFLICT"]["rows"] == [] and got["not_run"]["causes"] == []
    # the run's context: its id, options and the versions that ran it
    run = got["run"]
    assert run["run_id"] == rows[0]["run_id"] == 1 and run["exit_code"] == 1
    assert run["options"]["extra_columns"] == "ignore" and run["options"]["settings"]["merge"] is True
    assert set(run["versions"]) >= {"batchcopy", "boto3", "botocore", "aioboto3", "pyarrow", "python"}
    assert got["durations"]["copy_duration_s"]["n"] == 3
    assert got["report"] == str(out) and out.exists()
    assert "report rebuilt" in proc.stderr


def test_report_table_lists_failures_with_their_messages(ran: dict[str, Any]) -> None:
    proc = run_cli(["report", str(ran["report"])], ran["env"], cwd=ran["tmp"])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "5 rows: 3 SUCCEEDED, 2 FAILED" in text
    assert "run 1 of " in text and "exit 1 (ROWS_FAILED)" in text
    failed = {r["row_id"]: r for r in ledger(ran["journal"]) if r["status"] == "FAILED"}
    for row_id, r in failed.items():  # one line per failed row: id, code and the full message
        line = next(ln for ln in text.splitlines() if f" {row_id} " in ln)
        assert r["error_code"] in line and r["error_message"] in line
    assert "Nothing went wrong" not in text
    assert "copy duration" in text


def test_run_writes_the_new_columns_and_context(ran: dict[str, Any]) -> None:
    from batchcopy.report.parquet import REPORT_FORMAT_VERSION, report_metadata

    rows = pq.read_table(ran["report"]).to_pylist()
    assert [r["row_id"] for r in rows] == [r["row_id"] for r in ran["rows"]]
    assert {r["run_id"] for r in rows} == {1}
    assert [json.loads(r["extras"]) for r in rows] == [{"notes": r["notes"]} for r in ran["rows"]]
    for r in rows:
        if r["status"] == "SUCCEEDED":
            assert r["copy_duration_s"] > 0 and r["queue_wait_s"] >= 0
            # the service's duration and how late the run saw its end: together no longer
            # than from sending the call to finishing the row
            assert r["detection_delay_s"] >= 0
            assert r["copy_duration_s"] + r["detection_delay_s"] <= (
                r["finished_at"] - r["sent_at"]).total_seconds() + 0.002
    absent = next(r for r in rows if r["row_id"] == "absent")
    assert absent["copy_duration_s"] is None  # failed before a call was sent
    meta = report_metadata(ran["report"])
    assert meta["report_version"] == REPORT_FORMAT_VERSION and meta["run"]["run_id"] == 1
    summary = json.loads(ran["report"].with_name("run.summary.json").read_text())
    assert summary["run_id"] == 1 and summary["options"]["manifest"].endswith("curated.csv")
    pacing = summary["pacing"]["CopyImageSet"]  # diagnostics of the send timer
    assert pacing["sends"] >= 3 and pacing["late_sends"] >= 0
    assert summary["versions"]["python"].count(".") == 2
    assert summary["started_at"] <= summary["finished_at"]


def test_report_of_a_clean_run_says_nothing_went_wrong(ran: dict[str, Any]) -> None:
    from batchcopy.report.parquet import iter_report_rows, write_report
    import asyncio

    clean = ran["tmp"] / "clean.parquet"
    rows = [r for r in iter_report_rows(ran["report"]) if r.status.value == "SUCCEEDED"]
    asyncio.run(write_report(rows, clean))
    proc = run_cli(["report", str(clean)], ran["env"], cwd=ran["tmp"])
    assert proc.returncode == 0, proc.stderr
    assert "Nothing went wrong" in proc.stdout and "FAILED" not in proc.stdout
    js = json.loads(run_cli(["report", str(clean), "-o", "json"], ran["env"], cwd=ran["tmp"]).stdout)
    assert js["ok"] is True and js["problems"]["FAILED"]["rows"] == []


def test_report_groups_not_run_rows_by_cause(tmp_path: Path) -> None:
    import asyncio

    from batchcopy.report.parquet import write_report
    from batchcopy.report.rows import RowResult

    rows = [RowResult(i, f"r{i}", "NOT_RUN", error_message="run interrupted before this row was started")
            for i in range(1, 6)]
    rows += [RowResult(6, "r6", "NOT_RUN", error_code="ThrottlingException",
                       error_message="Rate exceeded (after 5 attempt(s); no copy was made)"),
             RowResult(7, "r7", "UNKNOWN", evidence="its CopyImageSet call was sent but ...")]
    path = tmp_path / "r.parquet"
    asyncio.run(write_report(rows, path))
    proc = run_cli(["report", str(path)], {}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.split()[:1] == ["5"] and "run interrupted" in ln and "r1, r2, r3, ..." in ln
               for ln in lines)
    assert any(ln.split()[:2] == ["1", "ThrottlingException"] for ln in lines)
    assert any(" r7 " in ln and "its CopyImageSet call was sent" in ln for ln in lines)
    js = json.loads(run_cli(["report", str(path), "-o", "json"], {}, cwd=tmp_path).stdout)
    assert [(c["rows"], c["error_code"]) for c in js["not_run"]["causes"]] == \
        [(5, None), (1, "ThrottlingException")]
    assert js["not_run"]["causes"][0]["row_ids"] == [f"r{i}" for i in range(1, 6)]


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_cli(["report", str(tmp_path / "nope.parquet")], {}, cwd=tmp_path)
    assert proc.returncode == 2 and "report not found" in proc.stderr
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    proc = run_cli(["report", str(bad)], {}, cwd=tmp_path)
    assert proc.returncode == 2 and "not a readable batchcopy report" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the HTML page

# what would make a browser fetch something (a reference to an id in the page is not)
EXTERNAL = re.compile(r"""\bsrc\s*=|\bhref\s*=\s*(?!["']?#)|url\(\s*(?!["']?#)|@import|<script|<link|<iframe|<object|<embed""", re.I)
SVG_NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars",
                  # any fetch the page tried would go to a proxy that is not there: offline
                  "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed, so the HTML page is not rendered here: .ci/run "
                "installs Debian's chromium package (apt-get install -y chromium)")


def render(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def test_html_page_is_self_contained_and_renders_offline_in_chromium(ran: dict[str, Any]) -> None:
    from PIL import Image

    tmp = ran["tmp"]
    page = tmp / "page" / "run.html"
    proc = run_cli(["report", str(ran["journal"]), "--out", str(tmp / "html.parquet"),
                    "--html", str(page)], ran["env"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert f"HTML report (one self-contained file, works offline): {page}" in proc.stdout
    text = page.read_text(encoding="utf-8")
    # nothing to fetch: no script, stylesheet, image or frame; the only URLs are SVG's namespaces
    assert EXTERNAL.findall(text) == []
    in_tags = " ".join(re.findall(r"<[^>]+>", text))  # text (the endpoint in the options) aside
    assert set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]+", in_tags, re.I)) == SVG_NAMESPACES
    assert len(text) < 400_000

    dom = render(page, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for chart in ("chart-progress", "chart-durations", "chart-causes"):
        assert re.search(rf'<figure class="chart" id="{chart}"><svg', html), chart
    assert "quota line: 20 CopyImageSet calls/s" in html  # the run's --rate, drawn as text
    table = html[html.index('<table class="failures" data-status="FAILED"'):]
    table = table[:table.index("</table>")]
    failed = [r for r in ledger(ran["journal"]) if r["status"] == "FAILED"]
    assert table.count('<tr class="group" data-rows="1">') == len(failed)  # all different
    for r in failed:
        assert f"<td>{r['row_id']}</td>" in table and r["error_code"] in table
    assert "notes: wrong patient" in table  # the curator's extra column

    shot = tmp / "page" / "run.png"
    proc = render(page, tmp, f"--screenshot={shot}", "--window-size=1200,1800")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20) or []
        assert rgb.size == (1200, 1800)
    white = sum(n for n, c in colors if c == (255, 255, 255))
    assert white < 0.97 * 1200 * 1800 and len(colors) > 50  # not a blank page
    counts = {c: n for n, c in colors}
    # the FAILED tile and bar (#c62828) and the SUCCEEDED tile (#2e7d32) were painted
    assert counts.get((0xC6, 0x28, 0x28), 0) > 500 and counts.get((0x2E, 0x7D, 0x32), 0) > 500


def test_html_without_matplotlib_says_how_to_install_it(ran: dict[str, Any], tmp_path: Path) -> None:
    fake = tmp_path / "nompl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**ran["env"], "PYTHONPATH": str(fake.parent)}
    proc = run_cli(["report", str(ran["report"]), "--html", str(tmp_path / "p.html")], env, cwd=tmp_path,
                   process=True)  # PYTHONPATH is read when a process starts
    assert proc.returncode == 2
    assert "pip install 'batchcopy[report]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.html").exists()


@pytest.mark.parametrize("source", ["report", "journal"])
def test_failed_manifest_keeps_the_manifests_columns_and_form(ran: dict[str, Any], source: str) -> None:
    """The rows to retry come back as the curator wrote them: the friendly series/SOP cells
    (not a JSON blob), their own `notes`, the manifest's columns in its order."""
    import csv

    from kit.runkit import COLUMNS

    retry = ran["tmp"] / f"retry-{source}.csv"
    proc = run_cli(["report", str(ran[source]), "--failed-manifest", str(retry),
                    *(["--out", str(ran["tmp"] / "rebuilt-form.parquet")] if source == "journal" else [])],
                   ran["env"], cwd=ran["tmp"])
    assert proc.returncode == 0, proc.stderr
    with retry.open(newline="", encoding="utf-8") as fh:
        header, *lines = list(csv.reader(fh))
    assert header == [*COLUMNS, "notes"]
    got = {line[0]: dict(zip(header, line)) for line in lines}
    assert sorted(got) == ["absent", "mismatch"]
    asked = {r["row_id"]: r for r in ran["rows"]}
    absent = got["absent"]
    assert (absent["series_instance_uid"], absent["sop_instance_uid"], absent["copiable_attributes"]) == \
        (asked["absent"]["series_instance_uid"], "1.2.3.999", "")
    assert absent["notes"] == "typo" and got["mismatch"]["notes"] == "wrong patient"
    assert got["mismatch"]["destination_image_set_id"] == asked["mismatch"]["destination_image_set_id"]
    check = run_cli(["validate", str(retry), "--extra-columns", "ignore"], ran["env"], cwd=ran["tmp"])
    assert check.returncode == 0 and "2 rows OK" in check.stdout, check.stderr


MEASURE = ("<script>addEventListener('load', () => document.body.insertAdjacentHTML('beforeend',"
           "'<p id=\"measured\">' + document.documentElement.scrollWidth + ' ' + innerWidth + "
           "'</p>'))</script></body>")


def test_html_groups_identical_failures_lists_created_and_skipped_and_fits_800_px(
        emulator: Any, client_env: dict[str, str], boto3_client: Any, tmp_path: Path) -> None:
    from kit.runkit import new_subset_destination

    status, seeded = control_call(emulator.endpoint, "POST", "/_emulator/seed",
                                  {**SEED, "patients": 8})
    assert status == 200, seeded
    store = seeded["datastores"][0]
    ds, sets = store["datastoreId"], store["imageSets"]
    dest = new_subset_destination(boto3_client, ds, sets[0])  # holds sets[0]'s first instance
    series, sops = next(iter(sets[0]["series"].items()))
    rows = [{"row_id": f"new-{i}", "datastore_id": ds, "source_image_set_id": s["imageSetId"],
             "notes": f"case {i}"} for i, s in enumerate(sets[:2])]
    rows.append({"row_id": "present", "datastore_id": ds, "source_image_set_id": sets[0]["imageSetId"],
                 "destination_image_set_id": dest, "series_instance_uid": series,
                 "sop_instance_uid": sops[0], "notes": "there already"})
    rows += [{"row_id": f"mismatch-{i}", "datastore_id": ds, "source_image_set_id": s["imageSetId"],
              "destination_image_set_id": dest, "notes": "another patient"}  # no force
             for i, s in enumerate(sets[2:8])]
    manifest = write_manifest(tmp_path / "m.csv", rows, ("notes",))
    proc = run_cli(["run", str(manifest), "--report", str(tmp_path / "r.parquet"), "--journal",
                    str(tmp_path / "j.sqlite"), "--extra-columns", "ignore", *FAST],
                   client_env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = {r["row_id"]: r for r in pq.read_table(tmp_path / "r.parquet").to_pylist()}
    assert {out[f"mismatch-{i}"]["status"] for i in range(6)} == {"FAILED"}
    assert len({out[f"mismatch-{i}"]["error_message"] for i in range(6)}) == 1  # identical
    page = tmp_path / "page.html"
    proc = run_cli(["report", str(tmp_path / "r.parquet"), "--html", str(page)], client_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text(encoding="utf-8")
    assert EXTERNAL.findall(text) == []  # the page itself stays script-free
    measured = tmp_path / "measured.html"
    measured.write_text(text.replace("</body>", MEASURE), encoding="utf-8")
    dom = render(measured, tmp_path, "--dump-dom", "--window-size=800,1000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    width, window = map(int, re.search(r'<p id="measured">(\d+) (\d+)</p>', html).groups())  # type: ignore[union-attr]
    assert window == 800 and width <= window, (width, window)  # no sideways scroll
    failures = html[html.index('<table class="failures" data-status="FAILED"'):]
    failures = failures[:failures.index("</table>")]
    assert failures.count('<tr class="group"') == 1 and 'data-rows="6"' in failures
    assert "6 rows" in failures and "mismatch-0, mismatch-1" in failures
    assert "FAILED (6 rows, 1 kind of failure)" in html
    created = html[html.index('<table class="created"'):]
    created = created[:created.index("</table>")]
    for i in range(2):
        assert out[f"new-{i}"]["result_image_set_id"] in created
    assert "2 image set(s) created by this run" in html
    skipped = html[html.index('<table class="skipped"'):]
    skipped = skipped[:skipped.index("</table>")]
    assert "already present in the destination" in skipped and "present" in skipped
    assert out["present"]["evidence"].split(",")[0] in skipped
