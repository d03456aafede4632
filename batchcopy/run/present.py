"""Is a new image set's copy already in the data store? The last defence that needs no journal.

A row that would make a new image set (no destination) is **present** when its data store
holds an image set that is exactly what the row's copy would make, found like this:

* SearchImageSets on the source's StudyInstanceUID (every page), inside that operation's
  quota; the source itself is left out;
* the candidate's latest version is ACTIVE and ended COPIED: it was made (or last written)
  by a copy. An import that duplicated the data (IMPORTED, often a non-primary image set),
  an update (UPDATED) or a failed copy (COPY_FAILED) is not the row's copy;
* primary, if the row promotes to primary (any, if it does not);
* it holds exactly the instances the row selects from the source at the version it would
  name (the same series and SOP Instance UIDs, none more, none fewer) with the same DICOM
  attributes at every level: Patient, Study, each Series, each instance (compared as one
  digest of the canonical JSON). A superset, another subset or a changed attribute is not
  present: the row is copied;
* it is not the result of another row's call in this journal (a manifest may ask for two
  copies with the same content; the row's own earlier copy counts: a `--fresh` rerun finds
  it), nor an image set this run already counted as another row's copy (`claims`, kept
  per content digest: two such rows need two such image sets).

A candidate being written (LOCKED: a copy running now, perhaps another machine's copy of
this very row) is waited for (bounded); still locked then, the answer is `Busy`, and the
row is not run (the next run looks again). Image sets this run's own calls are writing,
reading or made lately (`own`) are other rows' copies (or their sources): neither waited
for nor read.

Cost per row: one SearchImageSets request per 50 image sets of the study, the source's
metadata (cached per version), and for each candidate version not seen before in this run
and not this run's own one GetImageSet and, if it is a copy, one GetImageSetMetadata
(both cached by version: a version's content never changes). Never a CopyImageSet token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

from batchcopy.aws.api import ImagingApi
from batchcopy.run.precheck import selection

Digest = tuple[str, int]  # (sha256 of the content's canonical JSON, instances)
_CACHE = 4096  # candidate versions remembered (their digests, not their documents)
_CLAIMS = 20_000  # content digests whose claimed image sets are remembered (about 5 MB)


@dataclass(frozen=True)
class Present:
    image_set_id: str
    version_id: str
    instances: int
    evidence: str


@dataclass(frozen=True)
class Busy:
    evidence: str


def _dicom(node: Any) -> dict[str, Any]:
    return dict((node or {}).get("DICOM") or {})


def content_digest(doc: dict[str, Any], attrs: str | None = None) -> Digest:
    """The digest of what `attrs` selects from `doc` (everything when None), as the new
    image set a copy of it would hold: Patient, Study, the selected series and instances,
    DICOM attributes only (image frames are not compared)."""
    picked = selection(doc, attrs)
    study = doc.get("Study") or {}
    all_series = study.get("Series") or {}
    series: dict[str, Any] = {}
    for (uid, sop), instance in picked.items():
        entry = series.setdefault(uid, {"DICOM": _dicom(all_series.get(uid)), "Instances": {}})
        entry["Instances"][sop] = _dicom(instance)
    canonical = json.dumps({"Patient": _dicom(doc.get("Patient")), "Study": _dicom(study),
                            "Series": series}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), len(picked)


def study_uid(doc: dict[str, Any]) -> str:
    return str(_dicom(doc.get("Study")).get("StudyInstanceUID") or "")


class PresenceFinder:
    """`find()` over an ImagingApi-like object (search_image_sets, get_image_set,
    get_image_set_metadata). `known(datastore, key)` gives the image sets this journal's
    calls made, but for those of the row `key` (read only when something matched); `own`
    holds those this run's calls are writing or reading now, or made lately
    (context.OwnImageSets): never read."""

    def __init__(self, api: ImagingApi, *, known: Callable[[str, str | None], Iterable[str]],
                 own: Container[tuple[str, str]] = frozenset(), lock_wait_s: float = 120.0,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.api = api
        self.known = known
        self.own = own
        self.lock_wait_s = lock_wait_s
        self._sleep = sleep
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, Digest | None]] = OrderedDict()
        self.claims: OrderedDict[str, set[str]] = OrderedDict()

    async def find(self, datastore_id: str, source_id: str, source_version: str,
                   source_doc: dict[str, Any], attrs: str | None, *,
                   primary: bool = False, key: str | None = None) -> Present | Busy | None:
        want = content_digest(source_doc, attrs)
        if not want[1]:
            return None
        study = study_uid(source_doc)
        if not study:
            return None
        criteria = {"filters": [{"values": [{"DICOMStudyInstanceUID": study}],
                                 "operator": "EQUAL"}]}
        matches: list[tuple[str, str]] = []
        for summary in await self.api.search_image_sets(datastore_id, criteria):
            cand = str(summary.get("imageSetId") or "")
            if (not cand or cand == source_id or (datastore_id, cand) in self.own
                    or (primary and summary.get("isPrimary") is False)):
                continue
            # SearchImageSets answers `version` as an integer: a key, not a version id
            seen = await self._look(datastore_id, cand, str(summary.get("version", "")), want)
            if isinstance(seen, Busy):
                return seen
            if seen is not None:
                matches.append((cand, seen))
        if not matches:
            return None
        taken = self.claims.get(want[0], set())
        free = [m for m in matches if m[0] not in taken]
        if free:
            made = set(self.known(datastore_id, key))  # read only when something matched
            free = [m for m in free if m[0] not in made]
        if not free:
            return None
        image_set, version = free[0]
        self._claim(want[0], image_set)
        return Present(image_set, version, want[1], (
            f"image set {image_set} version {version} (ACTIVE, COPIED: made by a copy) already "
            f"holds exactly the {want[1]} instance(s) this row copies from {source_id} version "
            f"{source_version}, with the same Patient, Study, Series and instance attributes: "
            f"not copied again (--no-skip-present to copy)"))

    async def _look(self, ds: str, cand: str, listed: str, want: Digest) -> str | Busy | None:
        """The candidate's version if it holds `want`; Busy while it is being written."""
        cached = self._seen.get((ds, cand, listed))
        if cached is None:
            got = await self._settled(ds, cand)
            if got is None:
                return Busy(f"image set {cand} of the same study is being written (LOCKED) "
                            f"after {self.lock_wait_s:.0f}s: it may be another run's copy of "
                            f"this row; not copied now, the next run looks again")
            version, status = got
            digest = None
            if status == "COPIED":
                digest = content_digest(await self.api.get_image_set_metadata(ds, cand, version))
            cached = (version, digest)
            self._remember((ds, cand, listed), cached)
            if listed != version:
                self._remember((ds, cand, version), cached)
        version, digest = cached
        return version if digest == want else None

    async def _settled(self, ds: str, image_set: str) -> tuple[str, str] | None:
        """(latest version, its workflow status) once the image set is not LOCKED."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        delay = 0.05
        while True:
            got = await self.api.get_image_set(ds, image_set)
            state = got.get("imageSetState")
            if state != "LOCKED":  # a DELETED image set is no copy of anything
                status = str(got.get("imageSetWorkflowStatus") or "")
                return str(got["versionId"]), status if state == "ACTIVE" else str(state)
            if loop.time() + delay > deadline:
                return None
            await self._sleep(delay)
            delay = min(delay * 2, 5.0)

    def _remember(self, key: tuple[str, str, str], value: tuple[str, Digest | None]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > _CACHE:
            self._seen.popitem(last=False)

    def _claim(self, digest: str, image_set: str) -> None:
        self.claims.setdefault(digest, set()).add(image_set)
        self.claims.move_to_end(digest)
        while len(self.claims) > _CLAIMS:
            self.claims.popitem(last=False)
