"""Every benchmark at a tiny size: it completes and produces its figures (keys present,
numbers finite). Never a timing: the figures of a tiny run on a shared machine mean
nothing, only that the benchmark still works."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402

# one worker runs this module: its module fixture is made once, not once per worker
pytestmark = pytest.mark.xdist_group("benchmarks")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def figures(results: Path, name: str) -> dict[str, Any]:
    data = json.loads((results / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["machine"]["cpus"]
    return data  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-results")
    assert run_all.main(["--quick", "--hogs", "1", "--results-dir", str(out)]) == 0
    return out


def test_startup(results: Path) -> None:
    commands = figures(results, "startup")["commands"]
    assert len(commands) == 3
    for figs in commands.values():
        assert all(finite(figs[k]) for k in ("min_s", "median_s", "peak_rss_mib"))


def test_pacing(results: Path) -> None:
    data = figures(results, "pacing")
    assert set(data["by_hogs"]) == {"0", "1"}
    for run in data["runs"]:
        assert run["accepted"] >= 1 and run["throttles"] >= 0
        assert run["calls"] == run["accepted"] + run["throttles"]
        for key in ("pace_ratio", "wall_ratio", "span_s", "wall_s", "ideal_s"):
            assert finite(run[key]), key


def test_curation(results: Path) -> None:
    data = figures(results, "curation")
    tools = {"batchcopy", "batchcopy-no-merge", "naive-boto3"}
    if shutil.which("aws"):
        tools.add("aws-cli-v1")
    assert set(data["per_tool"]) == tools
    for run in data["runs"]:
        for key in ("wall_s", "wall_s_full_manifest", "calls_per_row", "throttles", "wrong_rows"):
            assert finite(run[key]), (run["tool"], key)
    assert data["per_tool"]["aws-cli-v1"]["extrapolated"] if "aws-cli-v1" in tools else True
    by_tool = {r["tool"]: r for r in data["runs"]}
    assert by_tool["batchcopy"]["wrong_rows"] == 0
    assert by_tool["batchcopy"]["calls_per_row"] < by_tool["batchcopy-no-merge"]["calls_per_row"]
    for ratio in data["ratios"].values():
        assert finite(ratio["min"]) and finite(ratio["median"])


def test_capacity(results: Path) -> None:
    data = figures(results, "capacity")
    for key in ("rows_per_s", "cpu_ms_per_row", "peak_rss_mib", "wall_s"):
        assert finite(data[key]), key
    assert data["copies_executed"] == data["rows"]
    assert 0 < len(data["profile_top15"]) <= 15


def test_scale(results: Path) -> None:
    data = figures(results, "scale")
    for command in ("validate", "plan"):
        assert finite(data[command]["wall_s"]) and finite(data[command]["peak_rss_mib"])
    run = data["run"]
    for key in ("rss_at_10pct_mib", "rss_at_100pct_mib", "peak_rss_mib", "growth_to_peak_mib"):
        assert finite(run[key]), key


def test_present(results: Path) -> None:
    data = figures(results, "present")
    assert [p["phase"] for p in data["phases"]] == ["first run", "journal", "no-state", "no-state-copy"]
    for phase in data["phases"]:
        assert finite(phase["wall_s"]) and finite(phase["all_calls_per_row"])
    by = {p["phase"]: p for p in data["phases"]}
    assert by["journal"]["all_calls_per_row"] == 0
    assert data["no_state_copy_calls"] == 0  # the defence held: nothing copied again
    assert by["no-state"]["rows_already_present"] == data["params"]["rows"]
    assert by["no-state-copy"]["calls"]["CopyImageSet"] >= data["params"]["rows"]
    assert all(finite(v) for v in data["ratios"].values())


def test_selection(results: Path) -> None:
    data = figures(results, "selection")
    runs = data["runs"]
    for name in ("fixed", "cold", "warm"):
        for key in ("wall_s", "cpu_s", "peak_rss_mib", "image_sets_per_s"):
            assert finite(runs[name][key]), (name, key)
    assert runs["cold"]["metadata_reads"] >= data["image_sets"] and runs["warm"]["metadata_reads"] == 0
    assert runs["resumed"]["interrupt_exit"] in (0, 130) and data["resumed_manifest_identical"]
    assert finite(data["extrapolated_100k"]["cold_min"])


def test_throughput(results: Path) -> None:
    data = figures(results, "throughput")
    tools = {(r["tool"], r["hogs"]) for r in data["runs"]}
    assert tools == {("batchcopy", 0), ("batchcopy", 1), ("naive-boto3", 0), ("naive-boto3", 1)}
    for run in data["runs"]:
        assert run["calls"] == run["accepted"] + run["throttles"]
        for key in ("span_ratio", "ideal_s", "longest_stall_s", "get_image_set_per_copy",
                    "polls_per_copy", "wall_s"):
            assert finite(run[key]), (run["tool"], key)
        if run["tool"] == "batchcopy":  # every copy made, and its end seen by the client
            assert run["accepted"] == run["copies"]
            assert run["ends_unseen"] == 0 and run["exit_code"] == 0
            for key in ("detection_median_s", "detection_p95_s", "detection_max_s"):
                assert finite(run[key]), key


def test_state(results: Path) -> None:
    data = figures(results, "state_s3")
    sbs = data["side_by_side"]
    assert {r["state"] for r in sbs["runs"]} == {"local", "s3"}
    for run in sbs["runs"]:
        assert run["accepted"] >= 1 and finite(run["wall_s"])
        if run["state"] == "s3":
            for key in ("s3_requests_per_copy", "bytes_up_per_copy", "segments_per_copy"):
                assert finite(run[key]), key
    assert finite(sbs["ratio_min"]) and finite(sbs["ratio_median"])
    opened = data["open"]
    for key in ("open_wall_s", "open_peak_rss_mib", "open_s3_requests", "open_bytes_down",
                "snapshot_bytes_per_row"):
        assert finite(opened[key]), key
