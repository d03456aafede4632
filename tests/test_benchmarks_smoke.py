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


BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402



def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def figures(results: Path, name: str) -> dict[str, Any]:
    data = json.loads((results / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["machine"]["cpus"]
    return data  # type: ignore[no-any-return]


def check_startup(results: Path) -> None:
    commands = figures(results, "startup")["commands"]
    assert len(commands) == 3
    for figs in commands.values():
        assert all(finite(figs[k]) for k in ("min_s", "median_s", "peak_rss_mib"))


def check_pacing(results: Path) -> None:
    data = figures(results, "pacing")
    assert set(data["by_hogs"]) == {"0", "1"}
    for run in data["runs"]:
        assert run["accepted"] >= 1 and run["throttles"] >= 0
        assert run["calls"] == run["accepted"] + run["throttles"]
        for key in ("pace_ratio", "wall_ratio", "span_s", "wall_s", "ideal_s"):
            assert finite(run[key]), key


def check_curation(results: Path) -> None:
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


def check_capacity(results: Path) -> None:
    data = figures(results, "capacity")
    for key in ("rows_per_s", "cpu_ms_per_row", "peak_rss_mib", "wall_s"):
        assert finite(data[key]), key
    assert data["copies_executed"] == data["rows"]
    assert 0 < len(data["profile_top15"]) <= 15


def check_scale(results: Path) -> None:
    data = figures(results, "scale")
    for command in ("validate", "plan"):
        assert finite(data[command]["wall_s"]) and finite(data[command]["peak_rss_mib"])
    run = data["run"]
    for key in ("rss_at_10pct_mib", "rss_at_100pct_mib", "peak_rss_mib", "growth_to_peak_mib"):
        assert finite(run[key]), key


def check_present(results: Path) -> None:
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


def check_selection(results: Path) -> None:
    data = figures(results, "selection")
    runs = data["runs"]
    for name in ("fixed", "cold", "warm"):
        for key in ("wall_s", "cpu_s", "peak_rss_mib", "image_sets_per_s"):
            assert finite(runs[name][key]), (name, key)
    assert runs["cold"]["metadata_reads"] >= data["image_sets"] and runs["warm"]["metadata_reads"] == 0
    assert runs["resumed"]["interrupt_exit"] in (0, 130) and data["resumed_manifest_identical"]
    assert finite(data["extrapolated_100k"]["cold_min"])


def check_throughput(results: Path) -> None:
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


def check_state(results: Path) -> None:
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


CHECKS = [check_startup, check_pacing, check_curation, check_capacity, check_scale, check_present, check_selection, check_throughput, check_state]


def test_every_benchmark_runs_at_a_tiny_size_and_gives_its_figures(tmp_path: Path) -> None:
    """One test, not one per benchmark: run_all takes minutes, and a module fixture shared by
    several tests is made once per xdist worker (the `xdist_group` mark that kept them on one
    worker does nothing under pytest 9.2 with pytest-xdist 3.8: CI ran all the benchmarks four
    times, 140 s each). Every check runs, and each failure is named."""
    assert run_all.main(["--quick", "--hogs", "1", "--results-dir", str(tmp_path)]) == 0
    failed = []
    for check in CHECKS:
        try:
            check(tmp_path)
        except (AssertionError, KeyError, FileNotFoundError) as exc:
            failed.append(f"{check.__name__}: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)
