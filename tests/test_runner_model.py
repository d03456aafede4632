"""The runner's decisions without HTTP, in milliseconds: Runner + Journal + CopyWaiter over
the emulator's service model (tests/kit/modelapi.py). Each test counts what the service
executed, and reads every row's status back from the journal."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from batchcopy.journal.journal import Journal
from batchcopy.report.results import journal_results
from batchcopy.run.runner import Runner, RunSettings
from batchcopy.core.specs import CopySpec
from batchcopy.manifest.attributes import canonical_attributes
from batchcopy.run.waiter import CopyWaiter
from kit.modelapi import LOST, ModelApi, once, service_error, world

HOUR = 3600.0
FAST = dict(backoff=__import__("batchcopy.aws.retry", fromlist=["Backoff"]).Backoff(0.001, 0.01),
            lock_wait_s=5.0, stop_grace_s=5.0)


def sops(image_set: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, ids in image_set["series"].items() for i in ids]


def spec(n: int, ds: str, source: dict[str, Any], dest: str | None = None,
         *picked: tuple[str, str], **kw: Any) -> CopySpec:
    attrs = None
    if picked:
        series: dict[str, list[str]] = {}
        for s, i in picked:
            series.setdefault(s, []).append(i)
        attrs = canonical_attributes(series)
    return CopySpec(manifest_row=n, row_id=f"r{n}", datastore_id=ds,
                    source_image_set_id=source["imageSetId"], destination_image_set_id=dest,
                    copiable_attributes=attrs, **kw)


def run(api: ModelApi, specs: list[CopySpec], path: Path, journal_cls: type = Journal,
        **settings: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    """One run of `specs` with the journal at `path` (a rerun continues it)."""
    async def go() -> Any:
        journal = journal_cls(path)
        journal.begin_manifest()
        journal.stage(specs)
        journal.commit_manifest()
        run_id = journal.start_run("m.csv")
        journal.start_writer()
        waiter = CopyWaiter(api, first_poll_s=0.002, max_interval_s=0.02)  # type: ignore[arg-type]
        runner = Runner(journal=journal, api=api, waiter=waiter, run_id=run_id,
                        settings=RunSettings(**{**FAST, **settings}))
        try:
            outcome = await runner.run()
        finally:
            journal.stop_writer()
        rows = {r.row_id: r.__dict__ if hasattr(r, "__dict__") else _asdict(r)
                for r in journal_results(journal)}
        journal.close()
        return outcome, rows
    return asyncio.run(go())


def _asdict(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__dataclass_fields__}


def old_destination(api: ModelApi, ds: str, source: dict[str, Any]) -> str:
    """A destination an hour old holding the source's first instance."""
    api.clock.offset = -HOUR
    attrs = canonical_attributes({sops(source)[0][0]: [sops(source)[0][1]]})
    answer = api.model.call("CopyImageSet", {
        "datastoreId": ds, "sourceImageSetId": source["imageSetId"],
        "copyImageSetInformation": {"sourceImageSet": {"latestVersionId": "1", "DICOMCopies":
                                                       {"copiableAttributes": attrs}}}})
    api.clock.offset = 0.0
    return str(answer["destinationImageSetProperties"]["imageSetId"])


def executed(api: ModelApi) -> int:
    return int(api.model.stats()["copies_requested"])


def statuses(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: r["status"].value for k, r in rows.items()}


@pytest.mark.parametrize("merged", [False, True])
def test_a_lost_answer_into_an_old_destination_makes_one_copy(tmp_path: Path, merged: bool) -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    before = executed(api)
    picks = sops(src)[1:4] if merged else sops(src)[1:2]
    specs = [spec(k + 1, ds, src, dest, p) for k, p in enumerate(picks)]
    api.faults.append(once("CopyImageSet", LOST))
    outcome, rows = run(api, specs, tmp_path / "j.sqlite")
    assert set(statuses(rows).values()) == {"SUCCEEDED"}, rows
    assert executed(api) - before == 1  # the lost copy was found, not made again
    assert outcome.reconciled == 1
    assert all("the copy happened" in r["evidence"] for r in rows.values())


def test_a_merged_call_refused_for_one_row_is_split_and_only_that_row_fails(tmp_path: Path) -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    picks = sops(src)[1:5]
    bad_sop = picks[2][1]
    # the service refuses any call carrying the bad row (something no precheck can see)
    api.faults.append(lambda op, p: service_error("ValidationException", 400, f"bad {bad_sop}")
                      if op == "CopyImageSet" and bad_sop in str(p) else None)
    specs = [spec(k + 1, ds, src, dest, p) for k, p in enumerate(picks)]
    outcome, rows = run(api, specs, tmp_path / "j.sqlite")
    assert statuses(rows) == {"r1": "SUCCEEDED", "r2": "SUCCEEDED", "r3": "FAILED",
                              "r4": "SUCCEEDED"}
    assert rows["r3"]["error_code"] == "ValidationException" and bad_sop in rows["r3"]["error_message"]
    # [1-4] refused -> [1,2] copied, [3,4] refused -> [3] refused, [4] copied
    assert api.calls["CopyImageSet"] == 5 and outcome.splits == 2
    assert rows["r1"]["call_id"] == rows["r2"]["call_id"] != rows["r4"]["call_id"]


def test_a_stale_version_answered_as_a_validation_error_is_refreshed(tmp_path: Path) -> None:
    """A service that refuses a stale version with ValidationException (not 409)."""
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    outside = canonical_attributes({sops(src)[3][0]: [sops(src)[3][1]]})

    def outside_writer_then_refuse(op: str, params: dict[str, Any]) -> Any:
        if op != "CopyImageSet" or api.calls["CopyImageSet"] > 1:
            return None
        named = params["copyImageSetInformation"]["destinationImageSet"]["latestVersionId"]
        api.model.call("CopyImageSet", {
            "datastoreId": ds, "sourceImageSetId": src["imageSetId"],
            "copyImageSetInformation": {
                "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": outside}},
                "destinationImageSet": {"imageSetId": dest, "latestVersionId": named}}})
        return service_error("ValidationException", 400, "latestVersionId is not the latest")

    api.faults.append(outside_writer_then_refuse)
    # a merged call: refreshed as a whole, not split row by row
    specs = [spec(k + 1, ds, src, dest, p) for k, p in enumerate(sops(src)[1:3])]
    outcome, rows = run(api, specs, tmp_path / "j.sqlite")
    assert statuses(rows) == {"r1": "SUCCEEDED", "r2": "SUCCEEDED"}
    assert rows["r1"]["conflicts"] == 1 and api.calls["CopyImageSet"] == 2
    assert outcome.splits == 0 and rows["r1"]["call_id"] == rows["r2"]["call_id"]


@pytest.mark.parametrize("wording", ["quota", "quota_terse"])
def test_a_quota_refusal_within_the_frame_limit_is_waited_out_not_split(
        tmp_path: Path, wording: str) -> None:
    """However the service words it, a merged call within 1,000 frames (the source's
    metadata says how many) refused for quota met the concurrent-copy quota: wait, resend
    (a second refusal splits it: the service's limit may be lower than ours)."""
    api, store = world(assume={"concurrency_limit_error": wording})
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    api.model.config.max_concurrent_copies_per_datastore = 0  # full: every copy refused ...
    refused = {"n": 0}

    def free_after_two(op: str, params: dict[str, Any]) -> Any:
        if op == "CopyImageSet":
            refused["n"] += 1
            if refused["n"] == 2:  # ... until other copies end
                api.model.config.max_concurrent_copies_per_datastore = 100
        return None

    api.faults.append(free_after_two)
    specs = [spec(k + 1, ds, src, dest, p) for k, p in enumerate(sops(src)[1:4])]
    outcome, rows = run(api, specs, tmp_path / "j.sqlite")
    assert set(statuses(rows).values()) == {"SUCCEEDED"}
    assert outcome.splits == 0 and len({r["call_id"] for r in rows.values()}) == 1
    assert api.calls["CopyImageSet"] == 2 and executed(api) == 2  # the destination's + ours


def test_a_lost_new_image_set_is_found_when_search_shows_it_only_once_the_copy_ends(
        tmp_path: Path) -> None:
    # 1 s copies: the search comes long before this one ends
    api, store = world(assume={"search_visibility": "when_active"}, copy_base_s=1000.0)
    ds, src = store["datastoreId"], store["imageSets"][0]
    api.faults.append(once("CopyImageSet", LOST))
    outcome, rows = run(api, [spec(1, ds, src)], tmp_path / "j.sqlite")
    assert statuses(rows) == {"r1": "SUCCEEDED"} and executed(api) == 1


def test_passing_errors_are_not_run_and_the_next_run_copies_them(tmp_path: Path) -> None:
    api, store = world()
    ds, sets = store["datastoreId"], store["imageSets"]
    specs = [spec(k + 1, ds, s) for k, s in enumerate(sets[:3])]
    throttled = lambda op, p: service_error("ThrottlingException", 429) if op == "CopyImageSet" else None  # noqa: E731
    api.faults.append(throttled)
    _, rows = run(api, specs, tmp_path / "j.sqlite", max_attempts=2)
    assert set(statuses(rows).values()) == {"NOT_RUN"}
    assert {r["error_code"] for r in rows.values()} == {"ThrottlingException"}
    assert all("no copy was made" in r["error_message"] for r in rows.values())
    assert executed(api) == 0
    api.faults.remove(throttled)
    _, rows = run(api, specs, tmp_path / "j.sqlite")
    assert set(statuses(rows).values()) == {"SUCCEEDED"} and executed(api) == 3


def test_a_reset_before_execution_is_proved_void_and_sent_once_more(tmp_path: Path) -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    api.faults.append(once("CopyImageSet", ConnectionClosedError(endpoint_url="http://model/")))
    outcome, rows = run(api, [spec(1, ds, src)], tmp_path / "j.sqlite")
    assert statuses(rows) == {"r1": "SUCCEEDED"}
    assert executed(api) == 1 and rows["r1"]["attempts"] == 2 and outcome.reconciled == 1


def test_an_undecidable_loss_is_unknown_and_never_resent(tmp_path: Path) -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    row = spec(1, ds, src, None, *sops(src)[:2])

    sent: list[dict[str, Any]] = []

    def lose_then_twin(op: str, params: dict[str, Any]) -> Any:
        if op == "CopyImageSet" and not sent:
            sent.append(params)
            return LOST
        if op == "SearchImageSets" and len(sent) == 1:  # reconciliation starts looking
            api.clock.offset += 1  # our copy has ended ...
            api.model.call("CopyImageSet", sent[0])  # ... and someone makes the very same
            sent.append(params)
            api.clock.offset += 1
        return None

    api.faults.append(lose_then_twin)
    _, rows = run(api, [row], tmp_path / "j.sqlite")
    assert statuses(rows) == {"r1": "UNKNOWN"} and "several image sets" in rows["r1"]["evidence"]
    made = executed(api)
    _, rows = run(api, [row], tmp_path / "j.sqlite")  # the next run checks again, sends nothing
    assert statuses(rows) == {"r1": "UNKNOWN"} and executed(api) == made
    assert api.calls["CopyImageSet"] == 1


class BrokenJournal(Journal):
    """A journal whose second ANSWERED write fails: a bug inside the run."""

    answered = 0

    async def call_answered(self, call_id: int, image_set_id: str, version_id: str) -> None:
        type(self).answered += 1
        if type(self).answered == 2:
            raise RuntimeError("journal write failed (injected)")
        await super().call_answered(call_id, image_set_id, version_id)


def test_an_internal_error_stops_the_run_and_settles_every_call_it_sent(tmp_path: Path) -> None:
    api, store = world(seed_spec={"patients": 6})
    ds, sets = store["datastoreId"], store["imageSets"]
    specs = [spec(k + 1, ds, s) for k, s in enumerate(sets)]
    BrokenJournal.answered = 0
    outcome, rows = run(api, specs, tmp_path / "j.sqlite", journal_cls=BrokenJournal,
                        max_in_flight_per_datastore=2)
    assert outcome.stop_reason == "internal-error"
    assert "journal write failed (injected)" in (outcome.internal_error or "")
    sent = {r["row_id"] for r in rows.values() if r["call_id"] is not None}
    assert len(sent) >= 2
    for row_id in sent:  # every row whose call was sent is settled, or unknown
        assert rows[row_id]["status"].value in ("SUCCEEDED", "UNKNOWN"), rows[row_id]
    assert Counter(r["status"].value for r in rows.values())["SUCCEEDED"] == executed(api)
    for row in rows.values():
        if row["row_id"] not in sent:
            assert row["status"].value == "NOT_RUN" and "internal error" in row["error_message"]


@pytest.mark.parametrize("throttles,waits", [(1, 0), (2, 1)])
def test_a_copy_throttled_once_is_resent_on_the_next_token_without_a_backoff(
        tmp_path: Path, throttles: int, waits: int) -> None:
    """A lone throttle of a paced CopyImageSet is jitter: the limiter has emptied its bucket,
    so the next token is the wait. A call throttled again backs off as before."""
    from batchcopy.aws.retry import Backoff

    asked: list[int] = []

    class Counting(Backoff):
        def delay(self, attempt: int, rng: Any = None) -> float:
            asked.append(attempt)
            return 0.0

    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    for _ in range(throttles):
        api.faults.append(once("CopyImageSet", service_error("ThrottlingException", 429)))
    outcome, rows = run(api, [spec(1, ds, src)], tmp_path / "j.sqlite", backoff=Counting(0.5, 20.0))
    assert statuses(rows) == {"r1": "SUCCEEDED"}
    assert executed(api) == 1
    assert len(asked) == waits


@pytest.mark.parametrize("answer", ["html-404", "unknown-operation", "datastore-gone"])
def test_a_set_up_that_turns_out_wrong_is_never_a_rows_final_answer(tmp_path: Path,
                                                                    answer: str) -> None:
    """Answers that say the endpoint or the data store is wrong, not the row: the run stops
    (aborted, exit 3), the rows are NOT_RUN, and the next run, the set-up fixed, copies them."""
    api, store = world()
    ds = store["datastoreId"]
    specs = [spec(k + 1, ds, s) for k, s in enumerate(store["imageSets"][:3])]
    wrong = {"html-404": service_error("404", 404, "<html>Not Found</html>"),
             "unknown-operation": service_error("UnknownOperationException", 404),
             "datastore-gone": service_error("ResourceNotFoundException", 404,
                                             f"Datastore {ds} not found")}[answer]
    gone = {"n": 0}

    def fault(operation: str, params: dict[str, Any]) -> Any:
        if operation == "CopyImageSet" or (answer == "datastore-gone" and operation == "GetDatastore"):
            gone["n"] += 1
            return wrong
        return None

    api.faults.append(fault)
    outcome, rows = run(api, specs, tmp_path / "j.sqlite", max_in_flight_per_datastore=1)
    assert outcome.stop_reason == "aborted", outcome
    assert set(statuses(rows).values()) == {"NOT_RUN"}
    assert "the next run retries" in (outcome.abort_message or "")
    assert executed(api) == 0
    api.faults.clear()
    _, rows = run(api, specs, tmp_path / "j.sqlite")
    assert set(statuses(rows).values()) == {"SUCCEEDED"} and executed(api) == 3


def test_an_image_set_not_found_in_a_data_store_that_is_there_is_the_rows_answer(
        tmp_path: Path) -> None:
    api, store = world()
    ds = store["datastoreId"]
    ghost = {"imageSetId": "f" * 32}
    outcome, rows = run(api, [spec(1, ds, ghost), spec(2, ds, store["imageSets"][0])],
                        tmp_path / "j.sqlite")
    assert outcome.stop_reason is None
    assert statuses(rows) == {"r1": "FAILED", "r2": "SUCCEEDED"}
    assert api.calls["GetDatastore"] == 1  # asked once, then known to be there


def test_a_journal_from_before_the_detection_columns_takes_them_and_reports_them(
        tmp_path: Path) -> None:
    """Journals gain copy_duration_s and detection_delay_s when opened (schema version 2
    kept: readers that do not know them ignore them); a run fills them from the service's
    own stamps: its copy durations, 2 ms modelled plus one frame per instance."""
    import sqlite3

    api, store = world()
    ds = store["datastoreId"]
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:  # as a journal of the last release has it
        for column in ("copy_duration_s", "detection_delay_s"):
            db.execute(f"ALTER TABLE rows DROP COLUMN {column}")
    specs = [spec(k + 1, ds, src) for k, src in enumerate(store["imageSets"][:2])]
    _, rows = run(api, specs, path)
    assert set(statuses(rows).values()) == {"SUCCEEDED"}
    for row in rows.values():
        frames = sum(len(v) for v in next(
            s for s in store["imageSets"] if s["imageSetId"] == row["source_image_set_id"]
        )["series"].values())
        assert row["copy_duration_s"] == pytest.approx(0.001 * (2.0 + 0.02 * frames), abs=0.0015)
        assert row["detection_delay_s"] is not None and row["detection_delay_s"] >= 0
