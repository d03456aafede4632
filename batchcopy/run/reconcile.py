"""Did a CopyImageSet call that got no usable answer happen?

CopyImageSet has no idempotency token, so after a timeout, a dropped connection, a 500 or
a crash between "sent" and "answered" the runner must look before it resends. The checks
use per-version evidence and content, never image-set timestamps (`createdAt` is the image
set's creation on every version, so it says nothing about a version):

* **Into an existing destination D**, the call named D's latest version v. If it was
  accepted, it made the first version after v (version ids are compared as numbers; no
  "+1" arithmetic is assumed). So look at that version only:
  - none after v: it did not happen;
  - still being written (COPYING...): wait until it settles (bounded);
  - not a copy (an update, an import): another writer's, so the call, naming a stale v,
    was refused: it did not happen;
  - last updated before the call was sent (less a clock-skew margin; a version's
    `updatedAt` only ever moves forward, so this can only clear, never convict): not ours;
  - COPY_FAILED: a failed copy writes no instances, so it may be ours or another writer's
    (which got in first, and ours was refused). Ours only if what it holds or what it
    failed on is this call's own: it holds the instances the call adds, or its message
    names a level of the metadata this source and the named destination version disagree
    on, or a SOP instance the call copies. Else undecidable;
  - COPIED: ours only if it holds every instance the call asked for (GetImageSetMetadata of
    that version against the source's metadata at the version the call named).
* **For a new image set**: once the source is no longer LOCKED (a copy still running keeps
  it locked, and a search may not show the image set it creates before it ends), search
  the data store for image sets of the study created since the call was sent (an image set's own creation time is what `createdAt` does mean), leave
  out the source, the destination and the image sets this journal already knows, and
  compare each settled candidate's instances with what the call asked for. One match: it
  happened. None: it did not. Several, or one that failed: undecidable.
* A promote-to-primary copy into an existing destination may answer with a new image set:
  when the destination shows nothing, the new-image-set search runs too.

Undecidable (or the checks themselves failing) gives UNKNOWN with the evidence: the runner
never resends blindly. A read answered 409 (a service that refuses reads of a LOCKED image
set) is a lock, waited out like one (`lock_wait_s`), never a failed check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from batchcopy.aws.retry import is_locked_read, through_locks
from batchcopy.core.specs import CopyRequest

COPY_STATES = frozenset({"COPYING", "COPIED", "COPY_FAILED"})
ENDED_COPY = frozenset({"COPIED", "COPY_FAILED"})
IN_PROGRESS = frozenset({"COPYING", "COPYING_WITH_READ_ONLY_ACCESS", "UPDATING",
                         "UPDATING_FOR_STUDY_CONSISTENCY", "DELETING", "IMPORTING"})
# SigV4 refuses requests whose clock is off by more than 15 minutes
CLOCK_SKEW_S = 900.0

Instances = set[tuple[str, str]]  # (series UID, SOP instance UID)


@dataclass(frozen=True)
class Verdict:
    happened: bool | None  # None: undecidable
    image_set_id: str | None
    version_id: str | None
    evidence: str


def undecided(evidence: str) -> Verdict:
    return Verdict(None, None, None, evidence)


def did_not(evidence: str) -> Verdict:
    return Verdict(False, None, None, evidence)


class Reconciler:
    """The checks above over an ImagingApi-like object (get_image_set,
    list_image_set_versions, get_image_set_metadata, search_image_sets)."""

    def __init__(self, api: Any, *, skew_s: float = CLOCK_SKEW_S, lock_wait_s: float = 120.0,
                 now: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.api = api
        self.skew_s = skew_s
        self.lock_wait_s = lock_wait_s
        self._now = now or (lambda: datetime.now(timezone.utc).timestamp())
        self._sleep = sleep

    async def reconcile(self, request: CopyRequest, sent_at: float, *,
                        known_results: set[str]) -> Verdict:
        try:
            if request.destination_image_set_id:
                verdict = await self._existing_destination(request, sent_at)
                if verdict.happened is False and request.promote_to_primary:
                    alt = await self._new_image_set(request, sent_at, known_results)
                    if alt.happened is not False:
                        return alt
                return verdict
            return await self._new_image_set(request, sent_at, known_results)
        except Exception as exc:  # the checks could not be made: never guess
            return undecided(f"could not check whether the copy happened: "
                             f"{type(exc).__name__}: {exc}")

    # ---- into an existing destination -----------------------------------------
    async def _existing_destination(self, request: CopyRequest, sent_at: float) -> Verdict:
        ds, dest = request.datastore_id, request.destination_image_set_id
        assert dest is not None and request.destination_version_id is not None
        named = int(request.destination_version_id)
        versions = await self._unlocked(lambda: self.api.list_image_set_versions(ds, dest),
                                        "ListImageSetVersions")
        later = sorted((v for v in versions if _number(v) > named), key=_number)
        if not later:
            return did_not(f"destination {dest} has no version after {named}, the version the "
                           f"call named: the copy did not happen")
        first = str(later[0]["versionId"])
        status = _status(later[0])
        if status in IN_PROGRESS:
            settled = await self._settled(ds, dest, first)
            if settled is None:
                return undecided(f"version {first} of {dest} is still {status} after "
                                 f"{self.lock_wait_s:.0f}s: cannot tell yet whether it is this copy")
            status = settled
        if status not in ENDED_COPY:
            return did_not(f"the version after {named} of {dest} is {first} ({status}), not a "
                           f"copy: another writer made it, so the call (naming {named}) was "
                           f"refused")
        updated = _epoch(later[0].get("updatedAt"))
        if updated is not None and updated < sent_at - self.skew_s:
            return did_not(f"version {first} of {dest} was last updated before the call was "
                           f"sent: another writer made it")
        if status == "COPY_FAILED":
            return await self._failed_copy(request, first, later[0])
        expected = await self._expected(request)
        held = _instances(await self._metadata(ds, dest, first))
        missing = expected - held
        if missing:
            return did_not(f"version {first} of {dest} is a copy but lacks {len(missing)} of the "
                           f"{len(expected)} instance(s) the call asked for: another writer's copy")
        return Verdict(True, dest, first,
                       f"version {first} of {dest}, the first after the {named} the call named, "
                       f"is a copy holding all {len(expected)} instance(s) it asked for: the "
                       f"copy happened")

    async def _failed_copy(self, request: CopyRequest, first: str,
                           version: dict[str, Any]) -> Verdict:
        """The first version after the one the call named ended COPY_FAILED: this call's
        copy, or another writer's (which got in first, so this call was refused)? A failed
        copy writes no instances, so it is adopted only when what it holds or what it failed
        on is this call's own: it holds the instances the call asked for, or its message
        names what this call's own content would fail on (a level of the metadata this
        source and this destination version disagree on, a SOP instance this call copies).
        Else: undecidable."""
        ds, dest = request.datastore_id, str(request.destination_image_set_id)
        named = request.destination_version_id
        where = (f"version {first} of {dest}, the first after the {named} the call named, is a "
                 f"copy that ended COPY_FAILED")
        message = str(version.get("message") or "")
        if not message:
            message = str((await self.api.get_image_set(ds, dest, first)).get("message") or "")
        source = await self.api.get_image_set_metadata(ds, request.source_image_set_id,
                                                       request.source_version_id)
        before = await self.api.get_image_set_metadata(ds, dest, named)
        expected = _expected_instances(source, request.copiable_attributes)
        held = _instances(await self.api.get_image_set_metadata(ds, dest, first))
        new = expected - _instances(before)
        if new and new <= held:
            return Verdict(True, dest, first, f"{where} and holds the {len(new)} instance(s) "
                                              f"the call added: the call made it")
        why = failure_explained(message, source, before, expected, request.force)
        if why is not None:
            return Verdict(True, dest, first, f"{where} ({message}); {why}: the call made it")
        return undecided(f"{where} ({message or 'no message'}); a failed copy writes no "
                         f"instances, and nothing in it is this call's own: it may be this "
                         f"call's copy or another writer's. Not resent; look at "
                         f"ListImageSetVersions of {dest}")

    # ---- into a new image set ---------------------------------------------------
    async def _new_image_set(self, request: CopyRequest, sent_at: float,
                             known: set[str]) -> Verdict:
        ds = request.datastore_id
        # a copy still running (ours or not) keeps its source LOCKED, and a search may not
        # show the image set it creates until it ends: look once the source is free
        if await self._settled_latest(ds, request.source_image_set_id) is None:
            return undecided(f"source {request.source_image_set_id} is still LOCKED after "
                             f"{self.lock_wait_s:.0f}s: a copy from it is running, cannot look yet")
        source_meta = await self._metadata(ds, request.source_image_set_id,
                                           request.source_version_id)
        expected = _expected_instances(source_meta, request.copiable_attributes)
        studies = {_study_uid(source_meta)}
        if request.destination_image_set_id:  # promote to primary: a new image set from D
            dest_meta = await self._metadata(ds, request.destination_image_set_id,
                                             request.destination_version_id)
            expected |= _instances(dest_meta)
            studies.add(_study_uid(dest_meta))
        skip = set(known) | {request.source_image_set_id}
        if request.destination_image_set_id:
            skip.add(request.destination_image_set_id)
        # only the lower bound matters; the upper one is far enough for any clock skew
        window = [{"createdAt": _dt(sent_at - self.skew_s)},
                  {"createdAt": _dt(self._now() + 86_400)}]
        candidates: list[str] = []
        for study in sorted(s for s in studies if s):
            criteria = {"filters": [
                {"values": [{"DICOMStudyInstanceUID": study}], "operator": "EQUAL"},
                {"values": window, "operator": "BETWEEN"}]}
            for found in await self.api.search_image_sets(ds, criteria):
                cand = found["imageSetId"]
                if cand not in skip and cand not in candidates:
                    candidates.append(cand)
        matches: list[tuple[str, str]] = []
        failed: list[str] = []
        for cand in candidates:
            got = await self._settled_latest(ds, cand)
            if got is None:
                return undecided(f"image set {cand} appeared after the call and is still being "
                                 f"written: cannot compare it yet")
            version, status = got
            if status == "COPY_FAILED":
                failed.append(cand)
            elif status == "COPIED":
                held = _instances(await self._metadata(ds, cand, version))
                if held == expected:
                    matches.append((cand, version))
        if len(matches) > 1:
            return undecided("several image sets created since the call match it: "
                             + ", ".join(m[0] for m in matches))
        if matches:
            cand, version = matches[0]
            return Verdict(True, cand, version,
                           f"image set {cand} was created after the call and holds exactly the "
                           f"{len(expected)} instance(s) it asked for: the copy happened")
        if failed:
            return undecided(f"image set(s) {', '.join(failed)} of the study were created after "
                             f"the call and ended COPY_FAILED: cannot tell whether one is this copy")
        return did_not(f"no image set created since the call holds the {len(expected)} "
                       f"instance(s) it asked for ({len(candidates)} candidate(s) checked): "
                       f"the copy did not happen")

    # ---- helpers -----------------------------------------------------------------
    async def _expected(self, request: CopyRequest) -> Instances:
        meta = await self._metadata(request.datastore_id, request.source_image_set_id,
                                    request.source_version_id)
        return _expected_instances(meta, request.copiable_attributes)

    async def _unlocked(self, read: Callable[[], Awaitable[Any]], operation: str) -> Any:
        return await through_locks(read, operation=operation, wait_s=self.lock_wait_s,
                                   sleep=self._sleep)

    async def _metadata(self, ds: str, image_set_id: str, version: str | None) -> Any:
        return await self._unlocked(
            lambda: self.api.get_image_set_metadata(ds, image_set_id, version),
            "GetImageSetMetadata")

    async def _look(self, ds: str, image_set_id: str, version: str | None = None) -> Any:
        """GetImageSet, or None while it answers 409 (LOCKED, on a service that says so)."""
        try:
            return await self.api.get_image_set(ds, image_set_id, version)
        except Exception as exc:
            if is_locked_read(exc, "GetImageSet"):
                return None
            raise

    async def _wait(self, probe: Callable[[], Awaitable[tuple[bool, Any]]]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        delay = 0.05
        while True:
            done, value = await probe()
            if done:
                return value
            if loop.time() + delay > deadline:
                return None
            await self._sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _settled(self, ds: str, image_set_id: str, version: str) -> str | None:
        """The workflow status of `version` once nothing runs on it."""
        async def probe() -> tuple[bool, Any]:
            got = await self._look(ds, image_set_id, version)
            if got is None:
                return False, None
            status = str(got.get("imageSetWorkflowStatus") or "")
            return status not in IN_PROGRESS, status
        return await self._wait(probe)

    async def _settled_latest(self, ds: str, image_set_id: str) -> tuple[str, str] | None:
        """(latest version, its workflow status) once the image set is not LOCKED."""
        async def probe() -> tuple[bool, Any]:
            got = await self._look(ds, image_set_id)
            if got is None:
                return False, None
            settled = got.get("imageSetState") != "LOCKED"
            return settled, (str(got["versionId"]), str(got.get("imageSetWorkflowStatus")))
        return await self._wait(probe)


def _number(version: dict[str, Any]) -> int:
    return int(str(version["versionId"]))


def _status(version: dict[str, Any]) -> str:
    return str(version.get("ImageSetWorkflowStatus") or version.get("imageSetWorkflowStatus") or "")


def _study_uid(meta: dict[str, Any]) -> str:
    return str(((meta.get("Study") or {}).get("DICOM") or {}).get("StudyInstanceUID") or "")


def _instances(meta: dict[str, Any]) -> Instances:
    out: Instances = set()
    for series_uid, series in ((meta.get("Study") or {}).get("Series") or {}).items():
        for sop in (series.get("Instances") or {}):
            out.add((series_uid, sop))
    return out


def _expected_instances(source_meta: dict[str, Any], attrs: str | None) -> Instances:
    have = _instances(source_meta)
    if not attrs:
        return have
    wanted: Instances = set()
    series = json.loads(attrs).get("Study", {}).get("Series", {})
    for series_uid, body in series.items():
        instances = (body or {}).get("Instances") or {}
        if instances:
            wanted.update((series_uid, sop) for sop in instances)
        else:
            wanted.update(i for i in have if i[0] == series_uid)
    return wanted


def _dicom(node: Any) -> dict[str, Any]:
    return dict((node or {}).get("DICOM") or {})


def failure_explained(message: str, source: dict[str, Any], dest: dict[str, Any],
                      expected: Instances, force: bool) -> str | None:
    """Why this call, copying `expected` of `source` into `dest` (the version it named),
    would itself fail with `message`; None when its content does not explain it."""
    for level in ("Patient", "Study", "Series"):
        if f"{level} of SourceImageSet and DestinationImageSet don't match" not in message:
            continue
        if force:
            return None  # a forced copy does not compare the levels
        if level != "Series":
            mine, theirs = _dicom(dest.get(level)), _dicom(source.get(level))
            if mine and mine != theirs:
                return f"this source's {level} attributes differ from the destination's"
            return None
        held = ((dest.get("Study") or {}).get("Series")) or {}
        given = ((source.get("Study") or {}).get("Series")) or {}
        series = {uid for uid, _ in expected}
        if any(uid in held and _dicom(held[uid]) != _dicom(given.get(uid)) for uid in series):
            return "a series this call copies has other attributes in the destination"
        if held and series - set(held):
            return "this call copies a series the destination (one series) does not hold"
        return None
    named = [sop for _, sop in expected if sop in message]
    if named:
        return f"the message names SOP instance {named[0]}, which this call copies"
    return None


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
