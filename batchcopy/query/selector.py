"""One select over a data store: search, check, read, choose, in search order.

    search   SearchImageSets with the narrowest criteria (query/where.py), page by page, in
             a task of its own: it runs ahead of the reads (25 requests/s of 50 summaries
             against 50 metadata reads/s), so the number of candidates is soon known
    check    each summary against every study condition; an image set seen twice (one
             search per listed value, or a page boundary moving) is taken once
    read     GetImageSetMetadata of the version the search saw (its `version` is an
             integer there, a string here), `concurrency` at a time, in a window of
             candidates taken in order; paced by the client's RateLimiter like every call;
             already read (the cache, a select stopped before) is not read again
    choose   the series matching every series condition -> rows (query/rows.py); the
             rows of each source go out in search order, `limit` sources at most

A read refused as not found (deleted since the search) is counted as gone; one failing
after the client's retries is counted unreadable (the select is incomplete: the same
command again reads only those); credentials or access refused stop it (SelectAborted).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchcopy.query import where
from batchcopy.query.cache import SeriesCache
from batchcopy.query.rows import Chosen, SeriesInfo, rows_for, series_of, whole_rows

if TYPE_CHECKING:
    from batchcopy.aws.api import SearchingApi


class SelectAborted(Exception):
    """Credentials or access refused: nothing more can be read."""


@dataclass
class Tally:
    """What a select has done so far (read by the progress line while it runs)."""

    pages: int = 0
    found: int = 0  # distinct image sets the searches answered
    candidates: int = 0  # of those, matching every study condition
    search_done: bool = False
    examined: int = 0  # candidates decided
    reads: int = 0  # GetImageSetMetadata calls that answered
    cached: int = 0  # candidates decided from the cache
    selected: int = 0  # sources written
    rows: int = 0
    no_match: int = 0  # read: no series matched
    gone: int = 0  # not found any more
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image set, why)
    split: list[str] = field(default_factory=list)  # sources written as several new image sets
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (source, series) over the limit
    limited: bool = False  # stopped at --limit
    not_primary: int = 0  # sources written that are not primary image sets (copies)


@dataclass(frozen=True)
class Candidate:
    image_set_id: str
    version: str | None  # None if the search gave none (then the latest is read)
    primary: bool | None = None


@dataclass
class Selector:
    api: SearchingApi
    datastore_id: str
    query: where.Query
    into: str | None = None
    force: bool = False
    pin: bool = False
    limit: int | None = None
    cache: SeriesCache = field(default_factory=lambda: SeriesCache(None))
    concurrency: int = 16
    now: float = 0.0
    tally: Tally = field(default_factory=Tally)

    async def run(self, emit: Callable[[list[dict[str, str]]], None]) -> Tally:
        """Select; `emit(rows)` once per selected source, in search order."""
        candidates: list[Candidate] = []
        more = asyncio.Event()
        gate = asyncio.Semaphore(self.concurrency)
        async with asyncio.TaskGroup() as tg:
            searcher = tg.create_task(self._search(candidates, more))
            window: deque[asyncio.Task[Chosen | None]] = deque()
            taken = 0
            while True:
                room = 4 * self.concurrency  # with --limit, no more reads than sources to go
                if self.limit is not None:
                    room = min(room, self.limit - self.tally.selected)
                while len(window) < room and taken < len(candidates):
                    window.append(tg.create_task(self._decide(candidates[taken], gate)))
                    taken += 1
                if not window:
                    if self.tally.search_done:
                        break
                    more.clear()
                    await more.wait()
                    continue
                chosen = await window.popleft()
                self.tally.examined += 1
                if chosen is not None and chosen.rows:
                    emit(chosen.rows)
                    self.tally.selected += 1
                    self.tally.rows += len(chosen.rows)
                    self.tally.not_primary += chosen.primary is False
                    if self.limit is not None and self.tally.selected >= self.limit:
                        self.tally.limited = True
                        searcher.cancel()
                        for task in window:
                            task.cancel()
                        break
        self.cache.commit()
        return self.tally

    async def _search(self, out: list[Candidate], more: asyncio.Event) -> None:
        seen: set[str] = set()
        try:
            for criteria in where.criteria(self.query, self.now):
                async for page in self.api.search_pages(self.datastore_id, criteria):
                    self.tally.pages += 1
                    for summary in page:
                        found = summary["imageSetId"]
                        if found in seen:
                            continue
                        seen.add(found)
                        self.tally.found += 1
                        if found == self.into or not where.study_matches(summary, self.query):
                            continue
                        version = summary.get("version")
                        out.append(Candidate(found, None if version is None else str(version),
                                             summary.get("isPrimary")))
                        self.tally.candidates += 1
                    more.set()
        finally:
            self.tally.search_done = True
            more.set()

    async def _decide(self, candidate: Candidate, gate: asyncio.Semaphore) -> Chosen | None:
        chosen = await self._choose(candidate, gate)
        if chosen is not None:
            chosen.primary = candidate.primary
        return chosen

    async def _choose(self, candidate: Candidate, gate: asyncio.Semaphore) -> Chosen | None:
        ds, source, version = self.datastore_id, candidate.image_set_id, candidate.version
        if not self.query.series:
            return whole_rows(ds, source, version or "", into=self.into, force=self.force,
                              pin=self.pin and version is not None)
        series = self.cache.get(source, version) if version is not None else None
        if series is not None:
            self.tally.cached += 1
        else:
            series = await self._read(source, version, gate)
            if series is None:
                return None
        matching = [s for s in series if where.series_matches(s.attributes, self.query)]
        if not matching:
            self.tally.no_match += 1
            return None
        chosen = rows_for(ds, source, version or "", matching, into=self.into, force=self.force,
                          pin=self.pin and version is not None)
        if chosen.split:
            self.tally.split.append(source)
        self.tally.left_out.extend((source, uid) for uid in chosen.left_out)
        return chosen

    async def _read(self, source: str, version: str | None,
                    gate: asyncio.Semaphore) -> list[SeriesInfo] | None:
        from batchcopy.aws.retry import error_code, error_message, raise_unless_passing

        try:
            async with gate:
                document = await self.api.get_image_set_metadata(self.datastore_id, source, version)
        except Exception as exc:
            raise_unless_passing(exc, "GetImageSetMetadata", SelectAborted)
            if error_code(exc) == "ResourceNotFoundException":
                self.tally.gone += 1
            else:
                self.tally.unreadable.append((source, f"{error_code(exc)}: {error_message(exc)}"))
            return None
        self.tally.reads += 1
        series = series_of(document)
        if version is not None:
            self.cache.put(source, version, series)
        return series
