"""`batchcopy verify SOURCE` and `run --verify`: does each done row's destination hold
what the row asked for? (rclone's `check`, for CopyImageSet.)

For every SUCCEEDED or SKIPPED row of a journal or report (SKIPPED: done by an earlier
run, or already present), with GetImageSetMetadata and GetImageSet inside their quotas
(through ImagingApi and the RateLimiter: concurrent, paced, retried on throttles):

* **present now**: every instance the row selects from its source, at the source
  version the copy named, is in the destination's *latest* version with the source's
  DICOM attributes. An instance is looked up by SOP Instance UID in any series (an
  image set that is a series may file it under its own). When one is missing, the
  version the copy made says whether the copy lacked it or it was removed since.
* **nothing else changed** (copies, into an existing destination or a new image set):
  the version the copy made is the version it named (empty for a new image set) plus
  the instances its call copied (every row the call carried: merged rows share a call),
  and nothing else: no instance lost, added or altered.

A mismatch makes the row FAILED in verify's own report (error codes below) with the
series and instances named; a check that could not be made (a read refused, throttled
out, an image set that stayed locked) UNKNOWN; a verified row SUCCEEDED with what was checked as its
evidence. Rows that are not done are not checked (counted as such). Credentials or
access refused stop the check (exit 3). Exit 0 when every checked row verified, 1
otherwise, like `run`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import (AsyncIterator, Callable, Coroutine, Iterable, Iterator,
                             MutableMapping)
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from batchcopy.aws.api import ImagingApi
from batchcopy.aws.retry import through_locks
from batchcopy.run.precheck import missing_from, selection
from batchcopy.report.rows import RowResult
from batchcopy.core.specs import Status

CHECKED = (Status.SUCCEEDED, Status.SKIPPED)
MISSING = "MissingInstances"
DIFFERENT = "AttributesDiffer"
CHANGED = "DestinationChanged"
NOT_FOUND = "DestinationNotFound"
NOT_IN_SOURCE = "SubsetNotInSource"
SHOWN = 5  # instances named per message, then "and N more"
# a read answered 409 (an image set LOCKED by a copy, on a service that says so) is looked
# at again for this long before the row is UNKNOWN ("busy: verify again")
LOCK_WAIT_S = 120.0
K = TypeVar("K")
V = TypeVar("V")

Instances = dict[str, tuple[str, dict[str, Any]]]  # SOP UID -> (series UID, instance doc)

VERIFY_MEANING = {
    Status.FAILED: "the destination does not hold what the row asked for, or the copy changed "
                   "more than it should have; copy these rows again (--failed-manifest) or "
                   "look at the image sets named",
    Status.CONFLICT: "(not used by verify)",
    Status.UNKNOWN: "could not be checked (a read failed or an image set was busy); verify again",
    Status.NOT_RUN: "(not used by verify)",
    "ok": "Verified: every row checked holds what it asked for in its destination.",
    "empty": "Nothing to verify: no row is done (SUCCEEDED or SKIPPED).",
}


class VerifyAborted(Exception):
    """Credentials or access refused: nothing more can be checked."""


# ---------------------------------------------------------------- pure comparisons

def by_sop(doc: dict[str, Any] | None) -> Instances:
    series = ((doc or {}).get("Study") or {}).get("Series") or {}
    return {sop: (uid, inst) for uid, s in series.items()
            for sop, inst in ((s or {}).get("Instances") or {}).items()}


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _differing(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    a, b = a or {}, b or {}
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class Finding:
    code: str
    text: str


def check_present(wanted: dict[tuple[str, str], dict[str, Any]], dest: Instances,
                  where: str) -> list[Finding]:
    """Instances of `wanted` ((series, SOP) -> source instance) missing from or different
    in `dest`, described against `where` (e.g. "d1 version 7 (latest)")."""
    missing, differ = [], []
    for (uid, sop), inst in wanted.items():
        there = dest.get(sop)
        if there is None:
            missing.append(f"SOP {sop} (series {uid})")
            continue
        keys = _differing(inst.get("DICOM"), there[1].get("DICOM"))
        if keys:
            differ.append(f"SOP {sop} (series {uid}): {', '.join(keys)}")
    out = []
    if missing:
        out.append(Finding(MISSING, f"{len(missing)} of {len(wanted)} instance(s) missing from "
                                    f"{where}: {_named(missing)}"))
    if differ:
        out.append(Finding(DIFFERENT, f"{len(differ)} instance(s) in {where} differ from the "
                                      f"source: {_named(differ)}"))
    return out


def check_unchanged(before: Instances, after: Instances, copied: set[str], named: str,
                    made: str) -> Finding | None:
    """The version a copy made (`after`) is `before` plus the SOPs it `copied`, nothing else."""
    added = [f"SOP {sop} (series {uid})" for sop, (uid, _) in after.items()
             if sop not in before and sop not in copied]
    lost = [f"SOP {sop} (series {uid})" for sop, (uid, _) in before.items()
            if sop not in copied and sop not in after]
    altered = [f"SOP {sop} (series {uid}): {', '.join(keys)}"
               for sop, (uid, inst) in before.items()
               if sop not in copied and sop in after
               and (keys := _differing(inst.get("DICOM"), after[sop][1].get("DICOM")))]
    parts = [f"{label} {_named(items)}" for label, items in
             (("added", added), ("lost", lost), ("altered", altered)) if items]
    if not parts:
        return None
    return Finding(CHANGED, f"{made} (made by the copy) is not {named} (the version it named) plus "
                            f"the copied instances: " + "; ".join(parts))


# ---------------------------------------------------------------- reading, cached

class Documents:
    """Metadata documents by (data store, image set, version) and latest versions by
    image set, each read once however many rows ask at the same time (LRU-bounded).

    A read is a task of the task group the rows are checked in (`owner`), not of the row
    that asked first: a row that stops waiting does not cancel what others wait for, and
    the group sees every read end."""

    def __init__(self, api: ImagingApi, size: int = 64) -> None:
        self.api = api
        self.size = size
        self.owner: asyncio.TaskGroup | None = None
        self._docs: OrderedDict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = OrderedDict()
        self._latest: dict[tuple[str, str], asyncio.Future[str]] = {}

    async def _once(self, table: MutableMapping[K, asyncio.Future[V]], key: K,
                    make: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """table[key]'s read, started by `make` if none is under way or done; the
        documents' table (the only OrderedDict) is kept to `size`, least recent out."""
        fut = table.get(key)
        if fut is None:
            if self.owner is None:
                raise RuntimeError("Documents read outside verify_rows' task group")
            fut = self.owner.create_task(make())
            table[key] = fut
            if isinstance(table, OrderedDict):
                while len(table) > self.size:
                    table.popitem(last=False)
        elif isinstance(table, OrderedDict):
            table.move_to_end(key)
        try:
            return await asyncio.shield(fut)
        except Exception:
            if table.get(key) is fut:
                del table[key]  # a failed read is tried again by the next row
            raise

    async def doc(self, ds: str, image_set: str, version: str) -> dict[str, Any]:
        return await self._once(self._docs, (ds, image_set, version), lambda: through_locks(
            lambda: self.api.get_image_set_metadata(ds, image_set, version),
            operation="GetImageSetMetadata", wait_s=LOCK_WAIT_S))

    async def latest(self, ds: str, image_set: str) -> str:
        async def read() -> str:
            return str((await self.api.latest_version(ds, image_set))[0])

        return await self._once(self._latest, (ds, image_set), lambda: through_locks(
            read, operation="GetImageSet", wait_s=LOCK_WAIT_S))


# ---------------------------------------------------------------- one row

@dataclass
class Verifier:
    docs: Documents
    call_attributes: dict[str, list[str | None]] = field(default_factory=dict)
    reads_failed: int = 0

    async def check(self, row: RowResult) -> RowResult:
        from batchcopy.aws.retry import error_code, error_message, raise_unless_passing

        try:
            status, code, message, evidence = await self._check(row)
        except Exception as exc:
            raise_unless_passing(exc, "GetImageSetMetadata", VerifyAborted)
            self.reads_failed += 1
            status, code, evidence = Status.UNKNOWN, error_code(exc), None
            message = f"could not verify ({code}): {error_message(exc)}"
        return dataclasses.replace(row, status=status, error_code=code, error_message=message,
                                   evidence=evidence)

    async def _check(self, row: RowResult) -> tuple[Status, str | None, str | None, str | None]:
        from batchcopy.aws.retry import error_code, error_message

        ds = row.datastore_id or ""
        dest = row.result_image_set_id or row.destination_image_set_id
        if not dest:
            return (Status.UNKNOWN, "NothingToCheck", "the row names no destination image set "
                    "(no copy result recorded)", None)
        src, src_v = row.source_image_set_id or "", row.source_version_used or row.source_version_id
        note = ""
        if not src_v:
            src_v = await self.docs.latest(ds, src)
            note = f" (the copy's source version is not recorded: compared with the latest, {src_v})"
        source = await self.docs.doc(ds, src, src_v)
        gone = missing_from(source, row.copiable_attributes) if row.copiable_attributes else None
        if gone is not None:
            return (Status.FAILED, NOT_IN_SOURCE, f"{gone} is not in source {src} version "
                    f"{src_v}: the row cannot have been copied as asked", None)
        wanted = selection(source, row.copiable_attributes)
        try:
            latest = await self.docs.latest(ds, dest)
            latest_doc = await self.docs.doc(ds, dest, latest)
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return (Status.FAILED, NOT_FOUND, f"destination {dest} cannot be read: "
                    f"{error_message(exc)}", None)
        made = row.result_version_id if row.result_image_set_id == dest else None
        where = f"{dest} version {latest} (latest)"
        findings = check_present(wanted, by_sop(latest_doc), where)
        if findings and made and made != latest and findings[0].code == MISSING:
            made_doc = await self.docs.doc(ds, dest, made)
            lacked = any(f.code == MISSING for f in
                         check_present(wanted, by_sop(made_doc), f"version {made}"))
            them = "it" if findings[0].text.startswith("1 of") else "them"
            findings[0].text += (f"; the copy's version {made} "
                                 + (f"lacked {them} too" if lacked else f"held {them}: removed since"))
        checked = [f"{len(wanted)} instance(s) of source {src} version {src_v}{note} are in {where} "
                   "with the source's attributes"]
        if row.call_id and made:
            changed = await self._unchanged(row, ds, dest, made, source)
            if changed is not None:
                findings.append(changed)
            else:
                named = row.destination_version_used if row.destination_image_set_id else None
                checked.append(f"version {made} is " + (f"version {named}" if named else
                                                         "the new image set")
                               + " plus the copied instances, nothing else changed")
        if findings:
            return (Status.FAILED, findings[0].code, "; ".join(f.text for f in findings), None)
        return Status.SUCCEEDED, None, None, "verified: " + "; ".join(checked)

    async def _unchanged(self, row: RowResult, ds: str, dest: str, made: str,
                         source: dict[str, Any]) -> Finding | None:
        named = row.destination_version_used if row.destination_image_set_id else None
        if row.destination_image_set_id and not named:
            return None  # the version the copy named is not recorded: nothing to compare with
        before = by_sop(await self.docs.doc(ds, dest, named)) if named else {}
        after = by_sop(await self.docs.doc(ds, dest, made))
        attrs = self.call_attributes.get(row.call_id or "", [row.copiable_attributes])
        copied = {sop for a in attrs for (_, sop) in selection(source, a)}
        label = f"version {named} of {dest}" if named else "an empty new image set"
        return check_unchanged(before, after, copied, label, f"version {made} of {dest}")


# ---------------------------------------------------------------- many rows

def call_attributes(rows: Iterable[RowResult]) -> dict[str, list[str | None]]:
    """The copiable attributes of every row of each call that carried several rows."""
    out: dict[str, list[str | None]] = {}
    for row in rows:
        if row.call_id and row.call_rows > 1 and row.status in CHECKED:
            out.setdefault(row.call_id, []).append(row.copiable_attributes)
    return out


@dataclass
class Tally:
    checked: int = 0
    not_checked: dict[str, int] = field(default_factory=dict)  # status -> rows

    def skip(self, row: RowResult) -> None:
        self.not_checked[row.status.value] = self.not_checked.get(row.status.value, 0) + 1


async def verify_rows(rows: Iterable[RowResult], verifier: Verifier, tally: Tally, *,
                      concurrency: int = 16, batch: int = 2000) -> AsyncIterator[list[RowResult]]:
    """Check the done rows of `rows`, `concurrency` at a time, yielding their verdicts in
    order, a batch at a time (rows that are not done are counted in `tally`)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(row: RowResult) -> RowResult:
        async with gate:
            return await verifier.check(row)

    for chunk in _chunks(rows, batch):
        todo = []
        for row in chunk:
            if row.status in CHECKED:
                todo.append(row)
            else:
                tally.skip(row)
        if not todo:
            continue
        try:
            async with asyncio.TaskGroup() as group:
                verifier.docs.owner = group
                tasks = [group.create_task(one(r)) for r in todo]
        except BaseExceptionGroup as eg:
            aborted = eg.subgroup(VerifyAborted)
            if aborted is not None:
                raise aborted.exceptions[0] from None
            raise
        tally.checked += len(tasks)
        yield [t.result() for t in tasks]


def _chunks(rows: Iterable[RowResult], size: int) -> Iterator[list[RowResult]]:
    chunk: list[RowResult] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()
