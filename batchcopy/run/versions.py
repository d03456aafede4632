"""Which version of an image set a copy names: carried, pinned, or read.

* **Carried**: the version a copy of this run returned (or that a settled call wrote).
  Used as is: no read.
* **Pinned** by the manifest (`source_version_id`, `destination_version_id`), on the first
  row of the manifest that touches the image set (plan/units.py drops later pins). With strict
  pins (the default) a pin is a precondition: the latest version is read and, if it is not
  the pin, the row ends CONFLICT naming the latest version, with nothing sent. As a hint
  (`--pins hint`) the pin is used without a read, and a conflict refreshes it like any
  other version.
* **Read** with GetImageSet otherwise, waiting out a LOCKED image set (another writer's
  copy) for at most `lock_wait_s`, whether the service shows it LOCKED or answers 409.

`forget()` drops what is known after a conflict or an unknown outcome: the next use reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from batchcopy.aws.retry import is_locked_read


class StalePin(Exception):
    """A pinned version is not the image set's latest."""

    def __init__(self, role: str, image_set_id: str, pinned: str, latest: str) -> None:
        self.role, self.image_set_id, self.pinned, self.latest = role, image_set_id, pinned, latest
        super().__init__(f"the manifest pins {role} image set {image_set_id} at version {pinned}, "
                         f"but its latest version is {latest}: nothing was copied (update the "
                         f"pin, or pass --pins hint to treat pins as hints)")


class VersionBook:
    def __init__(self, api: Any, *, strict_pins: bool = True, lock_wait_s: float = 600.0,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.api = api
        self.strict_pins = strict_pins
        self.lock_wait_s = lock_wait_s
        self._sleep = sleep
        self._known: dict[tuple[str, str], str] = {}
        self._refreshed: set[tuple[str, str]] = set()  # a hint pin proved stale: read instead

    def carry(self, datastore_id: str, image_set_id: str, version: str) -> None:
        self._known[(datastore_id, image_set_id)] = str(version)

    def forget(self, datastore_id: str, *image_set_ids: str | None) -> None:
        """Drop what is known: the next resolve reads (a hint pin is not used again)."""
        for image_set_id in image_set_ids:
            if image_set_id:
                self._known.pop((datastore_id, image_set_id), None)
                self._refreshed.add((datastore_id, image_set_id))

    def known(self, datastore_id: str, image_set_id: str) -> str | None:
        return self._known.get((datastore_id, image_set_id))

    async def resolve(self, datastore_id: str, image_set_id: str, pin: str | None,
                      role: str) -> str:
        key = (datastore_id, image_set_id)
        if key in self._known:
            return self._known[key]
        if pin is not None and not self.strict_pins:
            if key not in self._refreshed:
                self._known[key] = pin
                return pin
            pin = None
        latest = await self.read(datastore_id, image_set_id)
        if pin is not None and latest != pin:
            raise StalePin(role, image_set_id, pin, latest)
        self._known[key] = latest
        return latest

    async def read(self, datastore_id: str, image_set_id: str) -> str:
        """The latest version, once the image set is not LOCKED (or the wait ran out). A
        service that answers reads of a LOCKED image set with 409 is LOCKED too: after the
        wait that 409 is raised (the caller's conflict)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        delay = 0.05
        while True:
            try:
                got = await self.api.get_image_set(datastore_id, image_set_id)
            except Exception as exc:
                if not is_locked_read(exc, "GetImageSet") or loop.time() + delay > deadline:
                    raise
            else:
                if got.get("imageSetState") != "LOCKED" or loop.time() + delay > deadline:
                    return str(got["versionId"])
            await self._sleep(delay)
            delay = min(delay * 2, 5.0)
