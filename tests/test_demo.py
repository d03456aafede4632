"""`batchcopy demo` as a new user runs it: each thing said once, its counts explained."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_says_each_thing_once_and_explains_its_copy_count(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["BATCHCOPY_STATE_DIR"] = str(tmp_path / "state")
    res = subprocess.run([sys.executable, "-m", "batchcopy", "demo"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    err = res.stderr
    reports = sorted((tmp_path / "reports").glob("demo-*.parquet"))
    assert len(reports) == 1
    assert err.count("report:  ") == 1 and err.count("summary: ") == 1
    assert err.count("read it: ") == 1 and err.count("journal: ") == 1
    m = re.search(r"the emulator executed (\d+) copies: (\d+) the demo made itself to prepare "
                  r"the curated destinations, (\d+) from the run's CopyImageSet calls for the "
                  r"(\d+) rows \((\d+) merged calls carried (\d+) rows: (\d+) calls saved", err)
    assert m, err
    executed, prepared, run_calls, rows, merged, carried, saved = map(int, m.groups())
    assert executed == prepared + run_calls and prepared == 2
    assert run_calls == rows - saved and saved == carried - merged > 0
    assert "fails on purpose" in err
