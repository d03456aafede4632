"""Reconciliation without HTTP: did an unanswered CopyImageSet happen? Decided on the
emulator's service model (tests/kit/modelapi.py), with destinations made long before the call,
so image-set timestamps cannot be what decides."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from batchcopy.run.reconcile import Reconciler
from batchcopy.core.specs import CopyRequest
from kit.modelapi import LOST, ModelApi, once, world

HOUR = 3600.0


def attrs(*pairs: tuple[str, str]) -> str:
    series: dict[str, Any] = {}
    for s, i in pairs:
        series.setdefault(s, {"Instances": {}})["Instances"][i] = {}
    return json.dumps({"SchemaVersion": "1.1", "Study": {"Series": series}})


def sops(image_set: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, i) for s, ids in image_set["series"].items() for i in ids]


def latest(api: ModelApi, ds: str, image_set: str) -> str:
    return asyncio.run(api.get_image_set(ds, image_set))["versionId"]


def settle(api: ModelApi) -> None:
    api.clock.offset += 1.0  # every copy of the model (2 ms at its time scale) has ended


def copy(api: ModelApi, req: CopyRequest) -> dict[str, Any]:
    answer = asyncio.run(api.copy_image_set(req))
    settle(api)
    return answer


def old_destination(api: ModelApi, ds: str, source: dict[str, Any]) -> str:
    """A destination made an hour before the call under test (its first instance)."""
    api.clock.offset = -HOUR
    answer = copy(api, CopyRequest(ds, source["imageSetId"], "1", None, None,
                                   attrs(sops(source)[0]), False, False))
    api.clock.offset = 0.0
    return answer["destinationImageSetProperties"]["imageSetId"]


def into(ds: str, source: dict[str, Any], dest: str, version: str, *picked: tuple[str, str],
         force: bool = False) -> CopyRequest:
    return CopyRequest(ds, source["imageSetId"], "1", dest, version,
                       attrs(*picked) if picked else None, force, False)


def lost(api: ModelApi, req: CopyRequest) -> float:
    """Send `req`, execute it, lose the answer; return the moment it was sent."""
    api.faults.append(once("CopyImageSet", LOST))
    sent_at = time.time()
    with pytest.raises(Exception):
        asyncio.run(api.copy_image_set(req))
    settle(api)
    return sent_at


def verdict(api: ModelApi, req: CopyRequest, sent_at: float, known: set[str] | None = None) -> Any:
    return asyncio.run(Reconciler(api, lock_wait_s=1).reconcile(req, sent_at,
                                                                known_results=known or set()))


@pytest.mark.parametrize("merged", [False, True])
def test_a_lost_copy_into_a_destination_made_hours_before_is_found(merged: bool) -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    named = latest(api, ds, dest)
    picked = sops(src)[1:4] if merged else sops(src)[1:2]
    req = into(ds, src, dest, named, *picked)
    v = verdict(api, req, lost(api, req))
    assert v.happened is True, v.evidence
    assert (v.image_set_id, v.version_id) == (dest, latest(api, ds, dest))
    assert f"holding all {len(picked)} instance(s)" in v.evidence


def test_a_copy_that_never_arrived_did_not_happen() -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    req = into(ds, src, dest, latest(api, ds, dest), sops(src)[1])
    v = verdict(api, req, time.time())  # the request was never executed
    assert v.happened is False and "no version after" in v.evidence


def test_another_writers_copy_after_the_named_version_is_not_taken_for_ours() -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    named = latest(api, ds, dest)
    copy(api, into(ds, src, dest, named, sops(src)[2]))  # an outside writer, other instances
    req = into(ds, src, dest, named, sops(src)[1])  # ours: stale now, refused by the service
    v = verdict(api, req, time.time() - 1)
    assert v.happened is False and "lacks 1 of the 1 instance(s)" in v.evidence


def test_a_lost_copy_that_failed_is_adopted_as_failed() -> None:
    api, store = world()
    ds, a, b = store["datastoreId"], store["imageSets"][0], store["imageSets"][1]
    dest = old_destination(api, ds, a)
    req = into(ds, b, dest, latest(api, ds, dest), sops(b)[0])  # another study, no force
    v = verdict(api, req, lost(api, req))
    assert v.happened is True and "COPY_FAILED" in v.evidence
    assert "this source's Patient attributes differ from the destination's" in v.evidence
    got = asyncio.run(api.get_image_set(ds, dest, v.version_id))
    assert got["imageSetWorkflowStatus"] == "COPY_FAILED"


def test_another_writers_failed_copy_after_the_named_version_is_undecidable() -> None:
    """The call named version v; an outside writer's copy got v+1 first and failed (another
    patient, no force), so the call itself was refused. A failed copy writes no instances
    and this call's own content explains nothing of the failure: never adopted (the row
    would end FAILED with the other writer's message, never retried), never resent."""
    api, store = world()
    ds, a, b = store["datastoreId"], store["imageSets"][0], store["imageSets"][1]
    dest = old_destination(api, ds, a)
    named = latest(api, ds, dest)
    copy(api, into(ds, b, dest, named, sops(b)[0]))  # the outside writer's: COPY_FAILED
    req = into(ds, a, dest, named, sops(a)[1])  # ours: same patient, refused as stale
    v = verdict(api, req, time.time() - 1)
    assert v.happened is None, v.evidence
    assert "ended COPY_FAILED (INVALID_REQUEST: Patient" in v.evidence
    assert "may be this call's copy or another writer's" in v.evidence


def test_a_lost_copy_into_a_new_image_set_is_found_and_a_twin_is_undecidable() -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    req = CopyRequest(ds, src["imageSetId"], "1", None, None, attrs(*sops(src)[:2]), False, False)
    sent_at = lost(api, req)
    v = verdict(api, req, sent_at)
    assert v.happened is True and v.image_set_id not in (None, src["imageSetId"])
    # an identical copy by someone else meanwhile: two candidates, never a guess
    copy(api, req)
    twin = verdict(api, req, sent_at)
    assert twin.happened is None and "several image sets" in twin.evidence
    # unless the journal knows one of them (this run adopted it before)
    known = verdict(api, req, sent_at, known={v.image_set_id})
    assert known.happened is True and known.image_set_id != v.image_set_id


def test_a_new_image_set_made_before_the_call_is_not_adopted() -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    req = CopyRequest(ds, src["imageSetId"], "1", None, None, attrs(sops(src)[0]), False, False)
    api.clock.offset = -HOUR
    copy(api, req)  # the same copy, an hour ago (an earlier run whose journal was lost)
    api.clock.offset = 0.0
    v = verdict(api, req, time.time())
    assert v.happened is False and "no image set created since the call" in v.evidence


def test_checks_that_cannot_be_made_are_undecidable_never_a_guess() -> None:
    api, store = world()
    ds, src = store["datastoreId"], store["imageSets"][0]
    dest = old_destination(api, ds, src)
    req = into(ds, src, dest, latest(api, ds, dest), sops(src)[1])
    from kit.modelapi import service_error

    api.faults.append(lambda op, p: service_error("InternalServerException", 500)
                      if op == "ListImageSetVersions" else None)
    v = verdict(api, req, time.time())
    assert v.happened is None and "could not check" in v.evidence
