"""What an undo did, for people: the plan before it runs, and its Parquet report after, one
row per manifest row (explicit schema)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchcopy.undo.plan import CANNOT, DELETE, NONE, REVERT, Action
from batchcopy.journal.undo import UNDONE_CODE, UndoStore

COLUMNS = (("manifest_row", "int64"), ("row_id", "string"), ("status", "string"),
           ("action", "string"), ("datastore_id", "string"), ("image_set_id", "string"),
           ("from_version", "string"), ("to_version", "string"), ("result_version_id", "string"),
           ("workflow_status", "string"), ("error_code", "string"), ("error_message", "string"),
           ("evidence", "string"), ("original_status", "string"), ("original_call_id", "int64"))

# an action's state -> the status of its rows
BY_STATE = {"DONE": "SUCCEEDED", "CONFLICT": "CONFLICT", "FAILED": "FAILED", "PLANNED": "NOT_RUN",
            "SENT": "UNKNOWN", "AMBIGUOUS": "UNKNOWN", "ANSWERED": "UNKNOWN"}


def describe_plan(actions: Sequence[Action]) -> str:
    if not actions:
        return "batchcopy undo: the journal records no copy to take back"
    kinds = Counter(a.kind for a in actions)
    lines = [f"batchcopy undo: plan: {kinds[REVERT]} revert(s), {kinds[DELETE]} delete(s), "
             f"{kinds[NONE]} image set(s) left alone (conflict)"]
    for a in actions:
        rows = len(a.row_keys)
        mark = {REVERT: "revert", DELETE: "delete", NONE: "leave "}[a.kind]
        lines.append(f"  {mark} {a.image_set_id} ({rows} row(s)): {a.note}")
    cannot = [a for a in actions if CANNOT in a.note]
    if cannot:
        lines.append(f"  what undo cannot restore: see the {len(cannot)} note(s) saying so "
                     "above (also in the undo's report, evidence column)")
    return "\n".join(lines)


def undo_rows(journal: Any, store: UndoStore, plan_id: int) -> list[dict[str, Any]]:
    by_key = store.action_rows(plan_id)
    out = []
    for row in journal.iter_report_rows():
        line = by_key.get(row["key"])
        base = {"manifest_row": row["manifest_row"], "row_id": row["row_id"],
                "datastore_id": row["datastore_id"], "original_status": row["status"],
                "original_call_id": row["call_id"]}
        if line is None:
            out.append({**base, "status": "SKIPPED", "action": "NONE",
                        "evidence": _nothing(row)})
            continue
        status = BY_STATE[line["state"]]
        evidence = line["evidence"] or line["note"]
        if status == "SUCCEEDED" and row["status"] == "FAILED":
            status, evidence = "SKIPPED", ("nothing of its own to undo (its copy failed); its "
                                           f"version went with the revert: {line['note']}")
        out.append({**base, "status": status, "action": line["kind"],
                    "image_set_id": line["image_set_id"], "from_version": line["expected_latest"],
                    "to_version": line["target_version"],
                    "result_version_id": line["result_version_id"],
                    "workflow_status": line["workflow_status"], "error_code": line["error_code"],
                    "error_message": line["error_message"], "evidence": evidence})
    return out


def _nothing(row: dict[str, Any]) -> str:
    if row["error_code"] == UNDONE_CODE:
        return "already undone by an earlier undo"
    if row["status"] == "UNKNOWN" or row["status"] == "PENDING":
        return ("nothing to undo yet: the row is UNKNOWN (its copy may exist); run the manifest "
                "again to settle it, then undo")
    if row["status"] == "SKIPPED":
        return "nothing to undo: no copy was made (the instances were already present)"
    return f"nothing to undo: the row is {row['status']} (no copy was made by this journal)"


def write_undo_report(journal: Any, store: UndoStore, plan_id: int, dest: str) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = undo_rows(journal, store, plan_id)
    types = {"int64": pa.int64(), "string": pa.string()}
    schema = pa.schema([pa.field(n, types[t]) for n, t in COLUMNS],
                       metadata={"batchcopy.undo_report_version": "1"})
    table = pa.Table.from_pylist([{n: r.get(n) for n, _ in COLUMNS} for r in rows], schema=schema)
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return dict(Counter(r["status"] for r in rows))
