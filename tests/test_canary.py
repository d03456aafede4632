"""`run --limit N`: a first real run tried small. The first N rows in manifest order, chains
kept whole, then exit 0 with the command that continues; the plain rerun does the rest,
nothing copied twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchcopy.core.specs import CopySpec
from batchcopy.plan.canary import Canary
from kit.resumekit import seed_world
from kit.runkit import run_manifest, write_manifest
from test_assumption_matrix import one, sops, subset_copy

SEED = {"seed": 19, "datastores": 1, "patients": 8, "studies_per_patient": 1,
        "series_per_study": 1, "instances_per_series": 3, "frames_per_instance": 1}
DS = "d" * 32


def spec(n: int, src: str, dst: str | None = None) -> CopySpec:
    return CopySpec(n, f"r{n}", DS, src * 32, destination_image_set_id=None if dst is None else dst * 32)


def test_the_first_rows_and_the_rest_of_their_chains() -> None:
    rows = [spec(1, "a"), spec(2, "b"), spec(3, "c"), spec(4, "a", "x"), spec(5, "e"),
            spec(6, "c", "y"), spec(7, "f", "y"), spec(8, "e", "x")]
    canary = Canary(2)
    taken = [r.row_id for r in rows if canary.take(r)]
    # r1, r2 by count; r4 continues a's chain; r6/r7 belong to c's chain (left out: blocked);
    # r8 touches x (taken by r4) but also e (r5 left out before it): it waits too
    assert taken == ["r1", "r2", "r4"]
    assert (canary.taken, canary.left_out) == (3, 5)


def test_runnable_rows_only_count() -> None:
    rows = [spec(1, "a"), spec(2, "b"), spec(3, "c")]
    assert Canary(1).select(rows, [False, True, True]) == [False, True, False]


def test_a_canary_then_the_rest(emulator: Any, client_env: dict[str, str], tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    c = w.client()
    a = w.sets[0]
    dest = subset_copy(c, w.ds, a)
    w.wait_idle()
    before = w.copies_requested()
    rows = [{"row_id": f"new{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
            for k, s in enumerate(w.sets[1:4])]
    rows += [{"row_id": f"a{k}", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
              "destination_image_set_id": dest, **one(*p)} for k, p in enumerate(sops(a)[1:3])]
    rows += [{"row_id": f"more{k}", "datastore_id": w.ds, "source_image_set_id": s["imageSetId"]}
             for k, s in enumerate(w.sets[4:7])]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    first = run_manifest(manifest, w.env, tmp_path, "--limit", "3")
    assert first.code == 0, first.stderr
    w.wait_idle()
    assert w.copies_requested() - before == 3
    out = {r["row_id"]: r for r in first.rows()}
    assert [k for k, r in out.items() if r["status"] == "SUCCEEDED"] == ["new0", "new1", "new2"]
    left = [r for r in out.values() if r["status"] != "SUCCEEDED"]
    assert {(r["status"], r["error_code"]) for r in left} == {("NOT_RUN", "RunLimit")}
    text = " ".join(line.split(None, 2)[-1] for line in first.stderr.splitlines() if line.strip())
    assert "left by --limit, the canary is done), run the same command without --limit" in text
    command = [line for line in first.stderr.splitlines() if "batchcopy run" in line][-1]
    assert "--limit" not in command and str(manifest) in command
    # the plain rerun: the rest, each once (the two subset rows merge into one call)
    again = run_manifest(manifest, w.env, tmp_path)
    assert again.code == 0, again.stderr
    status = {r["row_id"]: r["status"] for r in again.rows()}
    assert [k for k, v in status.items() if v == "SKIPPED"] == ["new0", "new1", "new2"]
    assert {v for k, v in status.items() if not k.startswith("new")} == {"SUCCEEDED"}
    w.wait_idle()
    assert w.copies_requested() - before == 3 + 1 + 3


def test_a_canary_takes_a_chain_it_starts_whole(emulator: Any, client_env: dict[str, str],
                                                tmp_path: Path) -> None:
    w = seed_world(emulator, client_env, SEED)
    c = w.client()
    a = w.sets[0]
    dest = subset_copy(c, w.ds, a)
    w.wait_idle()
    rows = [{"row_id": f"a{k}", "datastore_id": w.ds, "source_image_set_id": a["imageSetId"],
             "destination_image_set_id": dest, **one(*p)} for k, p in enumerate(sops(a)[1:3])]
    rows.append({"row_id": "other", "datastore_id": w.ds, "source_image_set_id": w.sets[1]["imageSetId"]})
    res = run_manifest(write_manifest(tmp_path / "m.csv", rows), w.env, tmp_path, "--limit", "1")
    assert res.code == 0, res.stderr
    assert [r["status"] for r in res.rows()] == ["SUCCEEDED", "SUCCEEDED", "NOT_RUN"]
