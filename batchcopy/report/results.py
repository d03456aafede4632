"""The report's rows, derived from the journal: one per row of the current manifest.

How ledger statuses read in the report of the latest run:
    PENDING with an open call   UNKNOWN ("resume to settle": the run ended while its copy
                                was out; the next run settles it, never resends blindly)
    PENDING otherwise           NOT_RUN
    SUCCEEDED or SKIPPED in an earlier run of this journal   SKIPPED (not copied again)
    anything else               as recorded
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from batchcopy.journal.journal import OUTCOME_COLUMNS, Journal
from batchcopy.report.rows import RowResult
from batchcopy.core.specs import SPEC_FIELDS, CopySpec, Status

OPEN_CALL_EVIDENCE = ("its CopyImageSet call was sent but the run ended before it was "
                      "settled; the next run of this manifest settles it (it is never resent "
                      "blindly)")


def journal_results(journal: Journal) -> Iterator[RowResult]:
    latest = journal.latest_run()
    in_open_calls = journal.open_call_keys()
    for row in journal.iter_report_rows():
        yield _result(row, latest, in_open_calls)


def _result(row: dict[str, Any], latest: int | None, in_open_calls: dict[str, int]) -> RowResult:
    status_text, evidence = row["status"], row["evidence"]
    if status_text == "PENDING":
        if row["key"] in in_open_calls:
            status = Status.UNKNOWN
            row = {**row, "call_id": in_open_calls[row["key"]]}
            evidence = OPEN_CALL_EVIDENCE
        else:
            status = Status.NOT_RUN
    else:
        status = Status(status_text)
    if status in (Status.SUCCEEDED, Status.SKIPPED) and row["run_id"] not in (None, latest):
        evidence = (f"done in run {row['run_id']} of this journal; not copied again"
                    + (f" ({evidence})" if evidence and status is Status.SKIPPED else ""))
        status = Status.SKIPPED
    spec = CopySpec(**{**{name: row[name] for name in SPEC_FIELDS},
                       "force": bool(row["force"]), "promote_to_primary": bool(row["promote_to_primary"]),
                       "extras": row.get("extras")})
    outcome = {name: row[name] for name in OUTCOME_COLUMNS if name != "status"}
    return RowResult.from_spec(spec, status, **{**outcome, "evidence": evidence,
                                                "run_id": row.get("run_id")})
