"""What taking a run back means, image set by image set. Pure: no I/O.

From the journal's finished copy calls (what each named and what it made) and the latest
version of every image set they wrote (read just before), `plan_undo` returns actions:

* **Into an existing destination** D, the run's calls c1..cn (call order) each named a
  version and made the next. Walking back from the newest: if D's latest version is not
  the one cn made, someone wrote D since: every row into D is a CONFLICT (with `force`:
  revert anyway, saying which versions are lost). Otherwise the newest calls whose
  versions follow each other without a foreign version in between form one segment,
  undone by ONE UpdateImageSetMetadata `revertToVersionId` to the version the segment's
  first call named: D's content is then what it was before them. Calls before a foreign
  version cannot be reverted without losing it: CONFLICT (with `force`: revert to the
  first call's version).
* **Into a new image set** (no destination, or promote-to-primary answering a new image
  set): DeleteImageSet, only if its latest version is still the one the copy made and it
  is not being written; else CONFLICT (with `force`: delete anyway, saying what is lost).

Calls that ended COPY_FAILED made a version too: they count for the segments (their rows
have nothing of their own to undo). A promote-to-primary copy reverted in place keeps the
image set primary: a revert restores content, not the hierarchy (said in the note).

What undo cannot restore is said in the plan and the report (`caution`, appended to the
notes by `with_cautions`): a revert the service may refuse (a primary destination, whose
Patient- and Series-level metadata the developer guide says cannot be updated), and what a
promotion may have changed besides its result (the primary flag of its source or of
another image set of the study: no API sets it back). A revert never names a failed
version (`safe_target`): the last version before it that did not fail has its content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from batchcopy.core.specs import CopyRequest

REVERT, DELETE, NONE = "REVERT", "DELETE", "NONE"


@dataclass(frozen=True)
class DoneCall:
    """A finished CopyImageSet call of the journal."""

    call_id: int
    row_keys: tuple[str, ...]
    request: CopyRequest
    result_image_set_id: str
    result_version_id: str
    workflow_status: str  # COPIED | COPY_FAILED

    @property
    def into_existing(self) -> bool:
        return self.request.destination_image_set_id == self.result_image_set_id


@dataclass(frozen=True)
class Latest:
    version_id: str
    state: str  # ACTIVE | LOCKED | DELETED
    is_primary: bool | None = None  # what GetImageSet said (None: not known)


@dataclass
class Action:
    kind: str  # REVERT | DELETE | NONE (a CONFLICT: nothing will be done)
    datastore_id: str
    image_set_id: str
    expected_latest: str  # the version the image set must still be at
    target_version: str | None  # REVERT: the version whose content comes back
    call_ids: list[int] = field(default_factory=list)
    row_keys: list[str] = field(default_factory=list)
    note: str = ""  # what the action means, or why nothing is done

    @property
    def conflict(self) -> bool:
        return self.kind == NONE


def plan_undo(calls: Sequence[DoneCall], latest: Mapping[tuple[str, str], Latest], *,
              force: bool = False) -> list[Action]:
    actions: list[Action] = []
    chains: dict[tuple[str, str], list[DoneCall]] = {}
    for call in sorted(calls, key=lambda c: c.call_id):
        key = (call.request.datastore_id, call.result_image_set_id)
        if call.into_existing:
            chains.setdefault(key, []).append(call)
        else:
            actions.append(_delete(call, latest.get(key), force))
    for key, chain in chains.items():
        actions.extend(_revert(chain, latest.get(key), force))
    return actions


def _delete(call: DoneCall, now: Latest | None, force: bool) -> Action:
    ds, image_set = call.request.datastore_id, call.result_image_set_id
    made = call.result_version_id
    base = dict(datastore_id=ds, image_set_id=image_set, target_version=None,
                call_ids=[call.call_id], row_keys=list(call.row_keys))
    if now is None or now.state == "DELETED":
        return Action(NONE, expected_latest=made, note=f"image set {image_set} is already "
                      "deleted: nothing to undo", **base)  # type: ignore[arg-type]
    if now.state == "LOCKED":
        return Action(NONE, expected_latest=now.version_id, note=f"image set {image_set} is "
                      "being written by another writer: try again later", **base)  # type: ignore[arg-type]
    promoted = " (the promoted primary image set the copy answered)" if \
        call.request.destination_image_set_id else ""
    if now.version_id == made:
        return Action(DELETE, expected_latest=made, note=f"delete image set {image_set}, made by "
                      f"the copy{promoted}", **base)  # type: ignore[arg-type]
    if force:
        return Action(DELETE, expected_latest=now.version_id, note=(
            f"delete image set {image_set}{promoted} although it was written since the copy "
            f"(version {made} -> {now.version_id}): --force loses those versions"), **base)  # type: ignore[arg-type]
    return Action(NONE, expected_latest=now.version_id, note=(
        f"image set {image_set} was written since the copy made version {made} (it is at "
        f"{now.version_id}): not deleted (--force to delete anyway)"), **base)  # type: ignore[arg-type]


def _revert(chain: list[DoneCall], now: Latest | None, force: bool) -> list[Action]:
    ds, dest = chain[0].request.datastore_id, chain[0].result_image_set_id
    last = chain[-1]

    def action(kind: str, calls: Sequence[DoneCall], expected: str, target: str | None,
               note: str) -> Action:
        return Action(kind, ds, dest, expected, target, [c.call_id for c in calls],
                      [k for c in calls for k in c.row_keys], note)

    if now is None or now.state == "DELETED":
        return [action(NONE, chain, last.result_version_id, None,
                       f"destination {dest} is deleted: nothing to revert")]
    if now.state == "LOCKED":
        return [action(NONE, chain, now.version_id, None,
                       f"destination {dest} is being written by another writer: try again later")]
    primary = " (a revert restores content; the image set stays primary)" if any(
        c.request.promote_to_primary for c in chain) else ""
    if now.version_id != last.result_version_id:
        if force:
            first = chain[0]
            return [action(REVERT, chain, now.version_id, first.request.destination_version_id,
                           f"revert {dest} to version {first.request.destination_version_id} "
                           f"although it was written since this run's last copy (version "
                           f"{last.result_version_id} -> {now.version_id}): --force loses "
                           f"those versions{primary}")]
        return [action(NONE, chain, now.version_id, None,
                       f"destination {dest} was written since this run's last copy made version "
                       f"{last.result_version_id} (it is at {now.version_id}): not reverted "
                       f"(--force to revert anyway)")]
    start = len(chain) - 1
    while start > 0 and chain[start - 1].result_version_id == chain[start].request.destination_version_id:
        start -= 1
    segment, before = chain[start:], chain[:start]
    target = segment[0].request.destination_version_id
    if before and force:
        first = chain[0]
        return [action(REVERT, chain, now.version_id, first.request.destination_version_id,
                       f"revert {dest} to version {first.request.destination_version_id}, before "
                       f"this run's first copy; --force loses the version(s) another writer "
                       f"made in between (from {before[-1].result_version_id} to "
                       f"{segment[0].request.destination_version_id}){primary}")]
    out = [action(REVERT, segment, now.version_id, target,
                  f"revert {dest} to version {target}, the version before this run's "
                  f"{len(segment)} copy call(s) into it{primary}")]
    if before:
        out.append(action(NONE, before, now.version_id, None, (
            f"another writer made version {segment[0].request.destination_version_id} of {dest} "
            f"after this copy: reverting it would lose that version (--force to revert anyway)")))
    return out


FAILED_WORKFLOWS = frozenset({"COPY_FAILED", "UPDATE_FAILED", "IMPORT_FAILED"})
CANNOT = "undo cannot restore"


def safe_target(target: str, statuses: Mapping[str, str]) -> str:
    """The version to revert to instead of `target` when `target` failed (a failed version
    holds the content before it, and a service may refuse to revert to it): the newest
    earlier version that did not fail. `statuses`: version id -> workflow status."""
    number = int(target)
    while str(number) in statuses and statuses[str(number)] in FAILED_WORKFLOWS and number > 1:
        number -= 1
    return str(number)


def with_cautions(actions: Sequence[Action], calls: Sequence[DoneCall],
                  latest: Mapping[tuple[str, str], Latest],
                  sources: Mapping[tuple[str, str], Latest]) -> list[Action]:
    """The actions, their notes saying what undo cannot restore. `sources`: the latest of
    each promote-to-primary copy's source, read now."""
    by_id = {c.call_id: c for c in calls}
    for a in actions:
        cautions = []
        now = latest.get((a.datastore_id, a.image_set_id))
        if a.kind == REVERT and now is not None and now.is_primary:
            cautions.append(f"{a.image_set_id} is primary, and the service may refuse to revert a "
                            f"primary image set: then the row is FAILED and {CANNOT} its content")
        for call_id in a.call_ids:
            call = by_id.get(call_id)
            if call is None or not call.request.promote_to_primary:
                continue
            src = call.request.source_image_set_id
            seen = sources.get((call.request.datastore_id, src))
            flag = ("" if seen is None or seen.is_primary is None else
                    f" (source {src} is {'still' if seen.is_primary else 'no longer'} primary)")
            cautions.append(f"the promotion may have changed which image sets of the study are "
                            f"primary{flag}: {CANNOT} that")
            break
        if cautions:
            a.note += "; " + "; ".join(cautions)
    return list(actions)
