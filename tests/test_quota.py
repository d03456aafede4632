"""A quota below the configured rate: pacing owns the throttles (no row loses an attempt),
and the run says once that the quota looks lower, with the figure to configure.

The emulator keeps AWS's default quotas at time_scale 0.01: CopyImageSet 0.25/s burst 1
becomes 25/s burst 1. The run is told 100/s burst 10: four times what the service takes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from batchcopy.aws.quotawatch import QuotaWatch
from kit.resumekit import seed_world
from kit.runkit import run_manifest, write_manifest

SEED = {"seed": 23, "datastores": 1, "patients": 40, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 1, "frames_per_instance": 1}
RUN = ["--poll-first", "0.02", "--poll-max", "0.2", "--progress", "log", "--log-interval", "1",
       "--retry-backoff", "0.02/0.2"]


def test_a_lower_quota_is_followed_and_said_once(
        emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    assert emulator.config.enforce_rates
    w = seed_world(emulator, client_env, SEED)
    rows = [{"row_id": f"r{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
            for k, s in enumerate(w.sets)]
    res = run_manifest(write_manifest(tmp_path / "m.csv", rows), w.env, tmp_path,
                       "--rate", "CopyImageSet=100/10", "--max-attempts", "2", *RUN, fast=False)
    assert res.code == 0, res.stderr
    out = res.rows()
    assert len(out) == 40 and {r["status"] for r in out} == {"SUCCEEDED"}
    assert w.stats()["throttled"].get("CopyImageSet", 0) > 2  # more than max-attempts per row
    said = [line for line in res.stderr.splitlines() if "quota looks lower" in line]
    assert len(said) == 1, res.stderr
    figure = float(re.search(r"--rate CopyImageSet=([0-9.]+)", said[0]).group(1))
    assert figure < 0.8 * 100 and "100/s configured" in said[0]
    assert res.summary()["quota_looks_lower"] == {"CopyImageSet": res.summary()[
        "quota_looks_lower"]["CopyImageSet"]}
    # every copy the service executed is a row's: none made twice
    assert w.stats()["copies_executed"] == 40


def test_the_watch_waits_for_a_measure_and_speaks_once() -> None:
    said: list[tuple[str, float, float]] = []
    watch = QuotaWatch(lambda *a: said.append(a), window=10, min_accepted=5)
    watch.throttled("CopyImageSet", halved=True, configured=100.0)
    assert said == []  # nothing measured yet: no figure to give
    for k in range(10):
        watch.accepted("CopyImageSet", k * 0.04)  # 25/s
    watch.throttled("CopyImageSet", halved=False, configured=100.0)
    assert said == []  # jitter: no quota signal
    watch.throttled("CopyImageSet", halved=True, configured=100.0)
    watch.throttled("CopyImageSet", halved=True, configured=100.0)
    assert len(said) == 1 and said[0][0] == "CopyImageSet" and round(said[0][1]) == 25
    other = QuotaWatch(lambda *a: said.append(a), window=10, min_accepted=5)
    for k in range(10):
        other.accepted("GetImageSet", k * 0.04)
    other.throttled("GetImageSet", halved=True, configured=26.0)  # at the configured rate
    assert len(said) == 1
    for _ in range(18):  # 19 in a row with the one above
        other.throttled("GetImageSet", halved=False, configured=26.0)
    assert not other.exhausted("GetImageSet")
    other.throttled("GetImageSet", halved=False, configured=26.0)
    assert other.exhausted("GetImageSet")
    other.accepted("GetImageSet", 9.0)
    assert not other.exhausted("GetImageSet")
