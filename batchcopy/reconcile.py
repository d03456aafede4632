"""Did a CopyImageSet call that got no answer happen?

CopyImageSet has no idempotency token, so after a timeout, a dropped connection or a
crash between "sent" and "answered" the runner must look before it resends:

* Into an existing destination D, the call named D's latest version v. Had it been
  accepted, it made version v+1 with a copy workflow status (COPYING, COPIED or
  COPY_FAILED), created after the request was sent. If D has no version v+1, it did
  not happen. If v+1 exists but is no copy, or predates the request, another writer
  made it, and ours (naming a stale v) was refused: it did not happen either.
* For a new image set: search the data store for image sets of the source's study
  created since the request was sent (less a clock-skew margin), leave out the source
  and image sets this journal already knows, and compare each candidate's instances
  with what the call asked for. One match: it happened (adopt it). None: it did not.
  Several: undecidable.

Undecidable (or the checks themselves failing) gives UNKNOWN with the evidence: the
runner never resends blindly.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

COPY_STATES = frozenset({"COPYING", "COPIED", "COPY_FAILED"})


@dataclass(frozen=True)
class Verdict:
    happened: bool | None  # None: undecidable
    image_set_id: str | None
    version_id: str | None
    evidence: str


@dataclass(frozen=True)
class SentCopy:
    """What was sent (from the journal or the live call)."""

    datastore_id: str
    source_image_set_id: str
    source_version_id: str
    destination_image_set_id: str | None
    destination_version_id: str | None
    copiable_attributes: str | None
    promote_to_primary: bool
    sent_at: float

    @classmethod
    def of(cls, call: Any) -> "SentCopy":
        """From anything carrying these fields by name (a journal CallRecord)."""
        return cls(**{name: getattr(call, name) for name in cls.__dataclass_fields__})


async def reconcile(api: Any, call: SentCopy, *, known_results: set[str],
                    skew_s: float = 300.0, lock_wait_s: float = 120.0) -> Verdict:
    try:
        if call.destination_image_set_id:
            verdict = await _existing_destination(api, call)
            if verdict.happened is False and call.promote_to_primary:
                # promoting into a non-primary destination makes a new primary image set
                alt = await _new_image_set(api, call, known_results, skew_s, lock_wait_s)
                if alt.happened is not False:
                    return alt
            return verdict
        return await _new_image_set(api, call, known_results, skew_s, lock_wait_s)
    except Exception as exc:  # the checks could not be made: never guess
        return Verdict(None, None, None,
                       f"could not check whether the copy happened: "
                       f"{type(exc).__name__}: {exc}")


async def _existing_destination(api: Any, call: SentCopy) -> Verdict:
    dest = call.destination_image_set_id
    sent_v = int(call.destination_version_id or 0)
    versions = await api.list_image_set_versions(call.datastore_id, dest)
    by_id = {str(v["versionId"]): v for v in versions}
    latest = max((int(k) for k in by_id), default=0)
    ours = by_id.get(str(sent_v + 1))
    if ours is None:
        if latest <= sent_v:
            return Verdict(False, None, None,
                           f"destination {dest} is still at version {latest}; the call "
                           f"(naming version {sent_v}) would have made version {sent_v + 1}")
        return Verdict(None, None, None,
                       f"destination {dest} has versions up to {latest} but no "
                       f"version {sent_v + 1}")
    status = ours.get("ImageSetWorkflowStatus") or ours.get("imageSetWorkflowStatus")
    created = _epoch(ours.get("createdAt"))
    if status not in COPY_STATES:
        return Verdict(False, None, None,
                       f"version {sent_v + 1} of {dest} is {status}, not a copy: another "
                       f"writer made it and the call (naming {sent_v}) was refused")
    if created is not None and created < call.sent_at - 300:
        return Verdict(False, None, None,
                       f"version {sent_v + 1} of {dest} predates the call")
    return Verdict(True, dest, str(sent_v + 1),
                   f"destination {dest} has version {sent_v + 1} ({status}) created after "
                   f"the call was sent: the copy happened")


async def _new_image_set(api: Any, call: SentCopy, known: set[str], skew_s: float,
                         lock_wait_s: float) -> Verdict:
    ds = call.datastore_id
    meta = await api.get_image_set_metadata(ds, call.source_image_set_id,
                                            call.source_version_id)
    study_uid = meta["Study"]["DICOM"]["StudyInstanceUID"]
    expected = _expected_instances(meta, call.copiable_attributes)
    now = datetime.now(timezone.utc).timestamp()
    criteria = {"filters": [
        {"values": [{"DICOMStudyInstanceUID": study_uid}], "operator": "EQUAL"},
        {"values": [{"createdAt": _dt(call.sent_at - skew_s)}, {"createdAt": _dt(now + skew_s)}],
         "operator": "BETWEEN"}]}
    found = await api.search_image_sets(ds, criteria)
    skip = set(known) | {call.source_image_set_id}
    if call.destination_image_set_id:
        skip.add(call.destination_image_set_id)
    candidates = [c["imageSetId"] for c in found if c["imageSetId"] not in skip]
    matches: list[tuple[str, str]] = []
    for cand in candidates:
        settled = await _settled_version(api, ds, cand, lock_wait_s)
        if settled is None:
            return Verdict(None, None, None,
                           f"image set {cand} of study {study_uid} appeared after the call and "
                           f"is still locked: cannot compare it yet")
        version, workflow = settled
        if workflow not in COPY_STATES:  # imported or updated: not what a copy makes
            continue
        cmeta = await api.get_image_set_metadata(ds, cand, version)
        if _instances(cmeta) == expected:
            matches.append((cand, version))
    if not matches:
        return Verdict(False, None, None,
                       f"no image set of study {study_uid} created since the call holds the "
                       f"{len(expected)} instance(s) it asked for "
                       f"({len(candidates)} candidate(s) checked)")
    if len(matches) > 1:
        ids = ", ".join(m[0] for m in matches)
        return Verdict(None, None, None,
                       f"several image sets created since the call match it: {ids}")
    cand, version = matches[0]
    return Verdict(True, cand, version,
                   f"image set {cand} (study {study_uid}) was created after the call and holds "
                   f"exactly the {len(expected)} instance(s) it asked for: the copy happened")


async def _settled_version(api: Any, ds: str, image_set_id: str,
                           lock_wait_s: float) -> tuple[str, str] | None:
    """(latest version, its workflow status) once the image set is not LOCKED."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_wait_s
    delay = 0.05
    while True:
        got = await api.get_image_set(ds, image_set_id)
        if got.get("imageSetState") != "LOCKED":
            return str(got["versionId"]), str(got.get("imageSetWorkflowStatus"))
        if loop.time() + delay > deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _instances(meta: dict[str, Any]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for series_uid, series in (meta.get("Study", {}).get("Series") or {}).items():
        for sop in (series.get("Instances") or {}):
            out.add((series_uid, sop))
    return out


def _expected_instances(source_meta: dict[str, Any], attrs: str | None) -> set[tuple[str, str]]:
    have = _instances(source_meta)
    if not attrs:
        return have
    wanted: set[tuple[str, str]] = set()
    series = json.loads(attrs).get("Study", {}).get("Series", {})
    for series_uid, body in series.items():
        instances = (body or {}).get("Instances") or {}
        if instances:
            wanted.update((series_uid, sop) for sop in instances)
        else:
            wanted.update(i for i in have if i[0] == series_uid)
    return wanted


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
