"""`batchcopy undo`: take back what a manifest's runs copied, from their journal.

    plan      the journal's finished copy calls + the latest version of each image set they
              wrote (GetImageSet) -> undo_plan.plan_undo: one revert per destination
              (UpdateImageSetMetadata revertToVersionId), one delete per new image set
              (DeleteImageSet), or a CONFLICT when another writer has written since
    store     the plan in the ledger (journal/undo.py); an unfinished plan is resumed as it is
    execute   each action: check the image set is still where the plan left it, journal
              SENT, send (one attempt; paced by the operation's quota), wait for the end
              (UPDATED / DELETED); retry throttles and 5xx; a call without a usable answer
              is reconciled (did the revert or the delete happen?) before anything is resent
    report    one row per manifest row: what was done for it, and why not

The undo is a run: the journal's run lock, the machine's holds on the image sets, pacing,
SIGINT/SIGTERM (stop sending, let calls in flight end), exit codes as `run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batchcopy.aws.api import ImagingApi, SendingApi
from batchcopy.aws.retry import (
    Backoff,
    ErrorKind,
    classify,
    error_code,
    error_message,
    is_locked_read,
    through_locks,
)
from batchcopy.undo.plan import (
    DELETE,
    REVERT,
    Action,
    Latest,
    plan_undo,
    safe_target,
    with_cautions,
)
from batchcopy.journal.s3io import StateUnavailable
from batchcopy.core.callstate import ACTION_FINAL, ACTION_OPEN, ActionState
from batchcopy.journal.undo import StoredAction, UndoStore
from batchcopy.run.outcome import action_ended
from batchcopy.run.waiter import CopyWaiter



@dataclass
class UndoSettings:
    force: bool = False
    max_attempts: int = 5
    max_in_flight: int = 50
    lock_wait_s: float = 120.0
    stop_grace_s: float = 60.0
    backoff: Backoff = Backoff()


async def latest_versions(api: ImagingApi, targets: set[tuple[str, str]], *,
                          lock_wait_s: float = 120.0) -> dict[tuple[str, str], Latest]:
    """The latest version and state of every image set (a missing one reads DELETED; one
    whose reads answer 409 past `lock_wait_s` reads LOCKED)."""
    out: dict[tuple[str, str], Latest] = {}

    async def one(ds: str, image_set: str) -> None:
        try:
            got = await through_locks(lambda: api.get_image_set(ds, image_set),
                                      operation="GetImageSet", wait_s=lock_wait_s)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                out[(ds, image_set)] = Latest("", "DELETED")
                return
            if is_locked_read(exc, "GetImageSet"):  # still LOCKED: the plan leaves it alone
                out[(ds, image_set)] = Latest("", "LOCKED")
                return
            raise
        out[(ds, image_set)] = Latest(str(got["versionId"]), str(got.get("imageSetState", "")),
                                      got.get("isPrimary"))

    await asyncio.gather(*(one(ds, i) for ds, i in sorted(targets)))
    return out


async def make_plan(api: ImagingApi, store: UndoStore, *, force: bool) -> list[Action]:
    """The plan (reads only): plan_undo over the image sets' latest versions; reverts moved
    off failed versions; what cannot be restored said in the notes."""
    calls = store.done_calls()
    targets = {(c.request.datastore_id, c.result_image_set_id) for c in calls}
    latest = await latest_versions(api, targets)
    actions = plan_undo(calls, latest, force=force)
    for a in actions:
        if a.kind == REVERT and a.target_version is not None:
            listed = await through_locks(
                lambda: api.list_image_set_versions(a.datastore_id, a.image_set_id),
                operation="ListImageSetVersions", wait_s=120.0)
            statuses = {str(v["versionId"]): str(v.get("ImageSetWorkflowStatus")
                                                 or v.get("imageSetWorkflowStatus") or "")
                        for v in listed}
            target = safe_target(a.target_version, statuses)
            if target != a.target_version:
                a.note += (f" (version {a.target_version} is {statuses[a.target_version]}: "
                           f"reverting to version {target}, the last before it that did not "
                           f"fail, which holds the same content)")
                a.target_version = target
    sources = {(c.request.datastore_id, c.request.source_image_set_id)
               for c in calls if c.request.promote_to_primary}
    return with_cautions(actions, calls, latest, await latest_versions(api, sources))


class UndoRunner:
    def __init__(self, api: SendingApi, store: UndoStore, waiter: CopyWaiter,
                 settings: UndoSettings,
                 on_finished: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.store = store
        self.waiter = waiter
        self.s = settings
        self.on_finished = on_finished or (lambda state: None)
        self.stopping = asyncio.Event()
        self.stop_reason: str | None = None
        self.abort_message: str | None = None
        self._slots = asyncio.Semaphore(settings.max_in_flight)

    def request_stop(self, reason: str, message: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.abort_message = reason, message
        self.stopping.set()

    async def run(self, actions: Sequence[StoredAction]) -> None:
        todo = [a for a in actions if a.state not in ACTION_FINAL]
        async with self.waiter.running(), asyncio.TaskGroup() as tg:
            for stored in todo:
                tg.create_task(self._one(stored))

    async def _one(self, stored: StoredAction) -> None:
        async with self._slots:
            if stored.state in ACTION_OPEN:  # a crash left it sent: did it happen?
                if await self._reconcile(stored):
                    return
            attempts = stored.attempts
            while not self.stopping.is_set():
                moved = await self._precondition(stored)
                if moved is not None:
                    await self.store.move(stored.action_id, ActionState.CONFLICT, evidence=moved)
                    self.on_finished("CONFLICT")
                    return
                await self.api.limiter.bucket(_operation(stored)).acquire()
                if self.stopping.is_set():
                    return
                try:
                    await self.store.sent(stored.action_id)
                except StateUnavailable as exc:  # not recorded where the state lives: not sent
                    self.request_stop("aborted", f"the state cannot be written: {exc}")
                    return
                attempts += 1
                try:
                    answer = await self._send(stored)
                except Exception as exc:
                    kind = classify(exc, operation=_operation(stored))
                    if kind is ErrorKind.UNEXPECTED:
                        raise
                    code, msg = error_code(exc), error_message(exc)
                    if kind is ErrorKind.AMBIGUOUS:
                        await self.store.move(stored.action_id, ActionState.AMBIGUOUS, error_code=code,
                                              error_message=msg)
                        if await self._reconcile(stored):
                            return
                        continue
                    if kind in (ErrorKind.THROTTLE, ErrorKind.TRANSIENT, ErrorKind.CONFLICT) \
                            and attempts < self.s.max_attempts:
                        await self.store.move(stored.action_id, ActionState.PLANNED, error_code=code,
                                              error_message=msg)
                        await asyncio.sleep(self.s.backoff.delay(attempts))
                        continue  # a conflict: the precondition says whether it changed
                    final = (ActionState.FAILED if kind is ErrorKind.REFUSED
                             else ActionState.PLANNED)
                    await self.store.move(stored.action_id, final, error_code=code,
                                          error_message=msg)
                    if final is ActionState.FAILED:
                        self.on_finished(final.value)
                    if kind is ErrorKind.RUN_FATAL:
                        self.request_stop("aborted", f"{code}: {msg}")
                    return
                await self._answered(stored, answer)
                return

    async def _send(self, stored: StoredAction) -> str:
        """Send the action; return the version it writes (a delete: the current one)."""
        a = stored.action
        if a.kind == REVERT:
            got = await self.api.send_once(
                "UpdateImageSetMetadata", datastoreId=a.datastore_id, imageSetId=a.image_set_id,
                latestVersionId=a.expected_latest,
                updateImageSetMetadataUpdates={"revertToVersionId": a.target_version})
            return str(got["latestVersionId"])
        await self.api.send_once("DeleteImageSet", datastoreId=a.datastore_id,
                                 imageSetId=a.image_set_id)
        return a.expected_latest

    async def _answered(self, stored: StoredAction, version: str,
                        evidence: str | None = None) -> None:
        await self.store.move(stored.action_id, ActionState.ANSWERED, result_version_id=version,
                              **({"evidence": evidence} if evidence else {}))
        a = stored.action
        result = None
        try:
            if a.kind == REVERT:
                result = await self.waiter.wait(a.datastore_id, a.image_set_id, version)
                ended = result.workflow_status
            else:
                ended = await self._deleted(a.datastore_id, a.image_set_id)
        except Exception as exc:
            if classify(exc, operation="GetImageSet") is ErrorKind.UNEXPECTED:
                raise
            return  # stays ANSWERED: the next undo waits for it
        final = action_ended(ended)
        if final is ActionState.DONE:
            await self.store.done(stored, version, ended)
        else:
            await self.store.move(stored.action_id, final, workflow_status=ended,
                                  error_code=ended, error_message=getattr(result, "message", None))
        self.on_finished(final.value)

    async def _deleted(self, ds: str, image_set: str) -> str:
        delay = 0.02
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.lock_wait_s
        while True:
            try:
                got = await self._look(ds, image_set)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return "DELETED"
                raise
            if got.get("imageSetState") == "DELETED":
                return "DELETED"
            if loop.time() > deadline:
                raise TimeoutError(f"image set {image_set} still {got.get('imageSetState')}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _precondition(self, stored: StoredAction) -> str | None:
        """None if the image set is still where the plan found it; else what changed.
        Waits out a lock (another writer's, or an earlier attempt of this action)."""
        a = stored.action
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.lock_wait_s
        delay = 0.02
        while True:
            got = await self._look(a.datastore_id, a.image_set_id)
            if got.get("imageSetState") != "LOCKED":
                break
            if loop.time() > deadline:
                return f"{a.image_set_id} stayed LOCKED ({got.get('imageSetWorkflowStatus')})"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if got.get("imageSetState") == "DELETED":
            return f"{a.image_set_id} has been deleted since the plan"
        if str(got["versionId"]) != a.expected_latest:
            return (f"{a.image_set_id} is at version {got['versionId']} now, not the "
                    f"{a.expected_latest} the plan found: another writer; nothing was changed")
        return None

    async def _look(self, ds: str, image_set: str) -> dict[str, Any]:
        """GetImageSet; a 409 (a service refusing reads of a LOCKED image set) reads LOCKED."""
        try:
            got: dict[str, Any] = dict(await self.api.get_image_set(ds, image_set))
        except Exception as exc:
            if is_locked_read(exc, "GetImageSet"):
                return {"imageSetState": "LOCKED", "imageSetWorkflowStatus": "(409 to a read)"}
            raise
        return got

    async def _reconcile(self, stored: StoredAction) -> bool:
        """A sent action whose answer never came: True if it happened (then finished),
        False if not (back to PLANNED: sent again)."""
        a = stored.action
        if a.kind == DELETE:
            got: dict[str, Any]
            try:
                got = dict(await through_locks(
                    lambda: self.api.get_image_set(a.datastore_id, a.image_set_id),
                    operation="GetImageSet", wait_s=self.s.lock_wait_s))
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                got = {"imageSetState": "DELETED"}
            if got.get("imageSetState") == "DELETED" or \
                    got.get("imageSetWorkflowStatus") == "DELETING":
                await self._answered(stored, a.expected_latest)
                return True
            await self.store.move(stored.action_id, ActionState.PLANNED,
                                  evidence="the delete did not happen: sent again")
            return False
        versions = await through_locks(
            lambda: self.api.list_image_set_versions(a.datastore_id, a.image_set_id),
            operation="ListImageSetVersions", wait_s=self.s.lock_wait_s)
        later = sorted((v for v in versions if int(v["versionId"]) > int(a.expected_latest)),
                       key=lambda v: int(v["versionId"]))
        if not later:
            await self.store.move(stored.action_id, ActionState.PLANNED,
                                  evidence="the revert did not happen: sent again")
            return False
        first = later[0]
        status = str(first.get("ImageSetWorkflowStatus") or first.get("imageSetWorkflowStatus"))
        if status == "UPDATING":
            status = (await self.waiter.wait(a.datastore_id, a.image_set_id,
                                             str(first["versionId"]))).workflow_status
        ours = status == "UPDATE_FAILED" or (
            status == "UPDATED" and await self._holds_target(a, str(first["versionId"])))
        if ours:
            content = " with the content the revert brings back" if status == "UPDATED" else ""
            await self._answered(stored, str(first["versionId"]), evidence=(
                f"version {first['versionId']} is an update made after the plan's "
                f"{a.expected_latest}{content}: the revert happened"))
            return True
        await self.store.move(stored.action_id, ActionState.CONFLICT, evidence=(
            f"version {first['versionId']} ({status}) of {a.image_set_id} is another writer's: "
            "the revert did not happen, and the image set changed since the plan"))
        self.on_finished("CONFLICT")
        return True

    async def _holds_target(self, a: Any, version: str) -> bool:
        """Whether `version` has the content of the version the revert brings back (an
        update ending UPDATE_FAILED keeps the content it had: also ours if so)."""
        async def doc(version: str | None) -> Any:
            return await through_locks(
                lambda: self.api.get_image_set_metadata(a.datastore_id, a.image_set_id, version),
                operation="GetImageSetMetadata", wait_s=self.s.lock_wait_s)

        made, target = await doc(version), await doc(a.target_version)
        return bool(_content(made) == _content(target))


def _content(doc: dict[str, Any]) -> Any:
    return (doc.get("Patient"), (doc.get("Study") or {}).get("DICOM"),
            (doc.get("Study") or {}).get("Series"))


def _operation(stored: StoredAction) -> str:
    return "UpdateImageSetMetadata" if stored.action.kind == REVERT else "DeleteImageSet"
