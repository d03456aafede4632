"""Service semantics of the emulator (batchcopy.emulator.model), without HTTP.

Every test owns the clock: copies complete when the test moves it.
Every answer is checked against the operation's botocore output shape.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from batchcopy.emulator import dicom
from batchcopy.emulator.config import EmulatorConfig
from batchcopy.emulator.errors import (
    ConflictException,
    ResourceNotFoundException,
    ServiceError,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)
from batchcopy.emulator.model import HealthImaging
from batchcopy.emulator.seed import SeedSpec, seed

T0 = 1_700_000_000.0
SPEC = SeedSpec(seed=3, patients=2, studies_per_patient=2, series_per_study=2,
                instances_per_series=3, frames_per_instance=1)
ID = re.compile(r"[0-9a-z]{32}")


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# ---------------------------------------------------------------- shape conformance
@functools.cache
def service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("medical-imaging")


def _conforms(shape: Any, value: Any, path: str) -> None:
    t = shape.type_name
    if t == "structure":
        assert isinstance(value, dict), path
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{path}: members not in {shape.name}: {unknown}"
        for name in shape.required_members:
            assert name in value, f"{path}: required {name} missing"
        for name, member in value.items():
            if member is not None:
                _conforms(shape.members[name], member, f"{path}.{name}")
    elif t == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _conforms(shape.member, item, f"{path}[{i}]")
    elif t == "map":
        assert isinstance(value, dict), path
        for k, v in value.items():
            _conforms(shape.value, v, f"{path}[{k}]")
    elif t == "string":
        assert isinstance(value, str), path
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in enum"
        pattern = shape.metadata.get("pattern")
        if pattern and "\\p" not in pattern:
            assert re.fullmatch(pattern, value), f"{path}: {value!r} !~ {pattern}"
    elif t == "timestamp":
        assert isinstance(value, float), path
    elif t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), path
    elif t == "boolean":
        assert isinstance(value, bool), path
    elif t == "blob":
        assert isinstance(value, bytes), path


def call(m: HealthImaging, op: str, **params: Any) -> dict[str, Any]:
    """model.call + check the answer against the output shape (and errors against the list)."""
    op_model = service_model().operation_model(op)
    try:
        result = m.call(op, params)
    except ServiceError as exc:
        assert exc.code in {e.name for e in op_model.error_shapes}, (op, exc.code)
        raise
    _conforms(op_model.output_shape, result, op)
    return result


# ---------------------------------------------------------------- fixtures / helpers
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world(clock: FakeClock) -> Iterator[tuple[HealthImaging, dict[str, Any]]]:
    m = HealthImaging(EmulatorConfig(), clock)
    summary = seed(m, SPEC)
    yield m, summary["datastores"][0]


def copy(m: HealthImaging, ds: str, src: str, src_version: str = "1", dst: str | None = None,
         dst_version: str = "1", attrs: Any = None, **flags: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"sourceImageSet": {"latestVersionId": src_version}}
    if attrs is not None:
        text = attrs if isinstance(attrs, str) else json.dumps(attrs)
        info["sourceImageSet"]["DICOMCopies"] = {"copiableAttributes": text}
    if dst is not None:
        info["destinationImageSet"] = {"imageSetId": dst, "latestVersionId": dst_version}
    return call(m, "CopyImageSet", datastoreId=ds, sourceImageSetId=src,
                copyImageSetInformation=info, **flags)


def subset(series: dict[str, list[str] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for uid, sops in series.items():
        out[uid] = {} if sops is None else {"Instances": {sop: {} for sop in sops}}
    return {"SchemaVersion": "1.1", "Study": {"Series": out}}


def get(m: HealthImaging, ds: str, iset: str, version: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"datastoreId": ds, "imageSetId": iset}
    if version is not None:
        params["versionId"] = version
    return call(m, "GetImageSet", **params)


def metadata(m: HealthImaging, ds: str, iset: str, version: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"datastoreId": ds, "imageSetId": iset}
    if version is not None:
        params["versionId"] = version
    out = call(m, "GetImageSetMetadata", **params)
    assert out["contentType"] == "application/json" and out["contentEncoding"] == "gzip"
    return json.loads(gzip.decompress(out["imageSetMetadataBlob"]))


def instances(m: HealthImaging, ds: str, iset: str) -> dict[str, list[str]]:
    return m.snapshot_image_set(ds, iset)["instances"]


def finish(clock: FakeClock) -> None:
    clock.advance(3600)


def sets(store: dict[str, Any]) -> list[dict[str, Any]]:
    return store["imageSets"]


# ---------------------------------------------------------------- seed
def test_seed_is_deterministic_per_seed() -> None:
    def ids(spec: SeedSpec) -> list[Any]:
        m = HealthImaging(EmulatorConfig(), FakeClock())
        return [(d["datastoreId"], [(s["imageSetId"], s["series"]) for s in d["imageSets"]])
                for d in seed(m, spec)["datastores"]]

    assert ids(SPEC) == ids(SPEC)
    other = ids(SeedSpec(**{**SPEC.__dict__, "seed": 4}))
    assert other != ids(SPEC)
    flat = {x for store in ids(SPEC) + other for x in [store[0]] + [s[0] for s in store[1]]}
    assert len(flat) == 2 * (1 + 4)  # no id shared between the two seeds


def test_seed_shape_and_state(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    assert ID.fullmatch(store["datastoreId"])
    assert len(sets(store)) == SPEC.patients * SPEC.studies_per_patient
    for s in sets(store):
        assert ID.fullmatch(s["imageSetId"])
        assert re.fullmatch(r"1\.2\.826\.0\.1\.3680043\.8\.498\.\d+", s["studyInstanceUID"])
        assert len(s["studyInstanceUID"]) <= 64
        assert len(s["series"]) == 2 and all(len(v) == 3 for v in s["series"].values())
        assert s["frames"] == 6
        g = get(m, store["datastoreId"], s["imageSetId"])
        assert (g["versionId"], g["imageSetState"], g["imageSetWorkflowStatus"], g["isPrimary"]) == \
            ("1", "ACTIVE", "CREATED", True)
    ds = call(m, "GetDatastore", datastoreId=store["datastoreId"])["datastoreProperties"]
    assert ds["datastoreStatus"] == "ACTIVE" and ds["datastoreName"] == SPEC.datastore_name


def test_seed_twice_and_into_existing_datastore(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(), clock)
    first = seed(m, SPEC)["datastores"][0]
    second = seed(m, SPEC)["datastores"][0]
    assert first["datastoreId"] != second["datastoreId"]
    extra = seed(m, SeedSpec(seed=3, patients=1, studies_per_patient=1,
                             datastore_id=first["datastoreId"]))["datastores"][0]
    assert extra["datastoreId"] == first["datastoreId"]
    assert m.stats()["image_sets"] == 4 + 4 + 1
    with pytest.raises(ValueError):
        SeedSpec(patients=-1)
    with pytest.raises(ResourceNotFoundException):
        seed(m, SeedSpec(datastore_id="0" * 32))


# ---------------------------------------------------------------- data stores
def test_datastore_lifecycle_and_pagination(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(region="eu-west-1", account_id="111122223333"), clock)
    made = [call(m, "CreateDatastore", datastoreName=f"ds-{i}", clientToken=f"tok{i}")
            for i in range(5)]
    assert all(d["datastoreStatus"] == "ACTIVE" and ID.fullmatch(d["datastoreId"]) for d in made)
    again = call(m, "CreateDatastore", datastoreName="ds-0", clientToken="tok0")
    assert again["datastoreId"] == made[0]["datastoreId"]  # client token: idempotent
    props = call(m, "GetDatastore", datastoreId=made[2]["datastoreId"])["datastoreProperties"]
    assert props["datastoreArn"] == \
        f"arn:aws:medical-imaging:eu-west-1:111122223333:datastore/{made[2]['datastoreId']}"
    assert props["createdAt"] == props["updatedAt"] == T0

    seen, token, pages = [], None, 0
    while True:
        kwargs: dict[str, Any] = {"maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = call(m, "ListDatastores", **kwargs)
        pages += 1
        seen += [d["datastoreId"] for d in page["datastoreSummaries"]]
        token = page.get("nextToken")
        if not token or pages > 10:
            break
    assert pages == 3 and seen == [d["datastoreId"] for d in made]
    assert call(m, "ListDatastores", datastoreStatus="DELETING")["datastoreSummaries"] == []
    for bad in ("garbage", "eyJ4Ijox.0000"):
        with pytest.raises(ValidationException):
            call(m, "ListDatastores", nextToken=bad)

    gone = call(m, "DeleteDatastore", datastoreId=made[0]["datastoreId"])
    assert gone["datastoreStatus"] == "DELETING"
    with pytest.raises(ResourceNotFoundException):
        call(m, "GetDatastore", datastoreId=made[0]["datastoreId"])
    with pytest.raises(ResourceNotFoundException):
        call(m, "DeleteDatastore", datastoreId=made[0]["datastoreId"])


def test_delete_datastore_with_image_sets_conflicts(world: tuple[HealthImaging, dict[str, Any]],
                                                    clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    with pytest.raises(ConflictException):
        call(m, "DeleteDatastore", datastoreId=ds)
    for s in sets(store):
        call(m, "DeleteImageSet", datastoreId=ds, imageSetId=s["imageSetId"])
    with pytest.raises(ConflictException):  # still DELETING
        call(m, "DeleteDatastore", datastoreId=ds)
    finish(clock)
    assert call(m, "DeleteDatastore", datastoreId=ds)["datastoreStatus"] == "DELETING"


# ---------------------------------------------------------------- CopyImageSet: the answer
def test_copy_without_destination_answers_like_the_cli_page(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, src = store["datastoreId"], sets(store)[0]["imageSetId"]
    clock.advance(100)
    out = copy(m, ds, src)
    assert out["datastoreId"] == ds
    d, s = out["destinationImageSetProperties"], out["sourceImageSetProperties"]
    assert ID.fullmatch(d["imageSetId"]) and d["imageSetId"] != src
    assert (d["latestVersionId"], d["imageSetState"], d["imageSetWorkflowStatus"]) == \
        ("2", "LOCKED", "COPYING")
    assert d["createdAt"] == d["updatedAt"] == T0 + 100
    arn = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{ds}/imageset/{d['imageSetId']}"
    assert d["imageSetArn"] == arn
    assert (s["imageSetId"], s["latestVersionId"], s["imageSetState"], s["imageSetWorkflowStatus"]) == \
        (src, "1", "LOCKED", "COPYING_WITH_READ_ONLY_ACCESS")
    assert s["createdAt"] == T0 and s["updatedAt"] == T0 + 100
    assert set(d) == set(s) == {"imageSetId", "latestVersionId", "imageSetState",
                                "imageSetWorkflowStatus", "createdAt", "updatedAt", "imageSetArn"}
    assert get(m, ds, d["imageSetId"])["isPrimary"] is False


def test_copy_into_destination_answers_latest_plus_one(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, src = store["datastoreId"], sets(store)[0]["imageSetId"]
    first = copy(m, ds, src)["destinationImageSetProperties"]
    finish(clock)
    made_at = first["createdAt"]
    out = copy(m, ds, src, dst=first["imageSetId"], dst_version="2")
    d = out["destinationImageSetProperties"]
    assert (d["imageSetId"], d["latestVersionId"], d["imageSetState"], d["imageSetWorkflowStatus"]) == \
        (first["imageSetId"], "3", "LOCKED", "COPYING")
    assert d["createdAt"] == made_at and d["updatedAt"] == clock.t
    assert out["sourceImageSetProperties"]["latestVersionId"] == "1"


# ---------------------------------------------------------------- CopyImageSet: completion
def test_copy_completes_after_its_duration(world: tuple[HealthImaging, dict[str, Any]],
                                           clock: FakeClock) -> None:
    m, store = world
    ds, src = store["datastoreId"], sets(store)[0]
    new = copy(m, ds, src["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    duration = 2.0 + 6 * 0.02  # base + frames * per_frame (time_scale 1)
    clock.advance(duration - 0.01)
    assert get(m, ds, new)["imageSetState"] == "LOCKED"
    assert m.stats()["copies_in_flight"] == 1
    clock.advance(0.02)
    g = get(m, ds, new)
    assert (g["versionId"], g["imageSetState"], g["imageSetWorkflowStatus"]) == ("2", "ACTIVE", "COPIED")
    assert g["updatedAt"] == round(T0 + duration, 3)
    sg = get(m, ds, src["imageSetId"])
    assert (sg["versionId"], sg["imageSetState"], sg["imageSetWorkflowStatus"]) == ("1", "ACTIVE", "COPIED")
    assert instances(m, ds, new) == {k: sorted(v) for k, v in src["series"].items()}
    versions = call(m, "ListImageSetVersions", datastoreId=ds, imageSetId=new)["imageSetPropertiesList"]
    assert [(v["versionId"], v["ImageSetWorkflowStatus"]) for v in versions] == \
        [("2", "COPIED"), ("1", "CREATED")]
    assert metadata(m, ds, new, "1")["Study"]["Series"] == {}
    st = m.stats()
    assert (st["copies_requested"], st["copies_executed"], st["copies_succeeded"],
            st["copies_failed"], st["copies_in_flight"]) == (1, 1, 1, 0, 0)


def test_set_clock_offsets_stamps_and_finishes_due_copies(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, src = store["datastoreId"], sets(store)[0]["imageSetId"]
    assert m.clock() == {"offset_s": 0.0, "now": T0}
    assert m.set_clock(offset_s=100.0) == {"offset_s": 100.0, "now": T0 + 100}
    new = copy(m, ds, src)["destinationImageSetProperties"]
    assert new["createdAt"] == T0 + 100
    assert m.set_clock(advance_s=2.0)["offset_s"] == 102.0  # the copy needs 2.12 s
    assert get(m, ds, new["imageSetId"])["imageSetState"] == "LOCKED"
    m.set_clock(advance_s=0.2)
    done = get(m, ds, new["imageSetId"])
    assert (done["imageSetState"], done["updatedAt"]) == ("ACTIVE", round(T0 + 100 + 2.12, 3))
    with pytest.raises(ValueError):
        m.set_clock(advance_s=float("nan"))
    m.reset()
    assert m.clock()["offset_s"] == 0.0


def test_time_scale_shortens_copies(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(time_scale=0.01), clock)
    store = seed(m, SPEC)["datastores"][0]
    ds = store["datastoreId"]
    new = copy(m, ds, sets(store)[0]["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    clock.advance(0.0213)
    assert get(m, ds, new)["imageSetWorkflowStatus"] == "COPIED"


def test_copies_complete_in_completion_order(world: tuple[HealthImaging, dict[str, Any]],
                                             clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b = sets(store)[0], sets(store)[1]
    series = next(iter(b["series"]))
    small = copy(m, ds, b["imageSetId"], attrs=subset({series: b["series"][series][:1]}))
    big = copy(m, ds, a["imageSetId"])
    finish(clock)
    t_small = get(m, ds, small["destinationImageSetProperties"]["imageSetId"])["updatedAt"]
    t_big = get(m, ds, big["destinationImageSetProperties"]["imageSetId"])["updatedAt"]
    assert t_small == round(T0 + 2.02, 3) and t_big == round(T0 + 2.12, 3)


# ---------------------------------------------------------------- metadata agreement
def _study_pair(store: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(patient 1 study 1, patient 1 study 2, patient 2 study 1)."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for s in sets(store):
        by_patient.setdefault(s["patientId"], []).append(s)
    p1, p2 = list(by_patient.values())
    return p1[0], p1[1], p2[0]


def test_study_mismatch_ends_copy_failed_without_adding(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b, _ = _study_pair(store)
    before = instances(m, ds, b["imageSetId"])
    out = copy(m, ds, a["imageSetId"], dst=b["imageSetId"])
    assert out["destinationImageSetProperties"]["latestVersionId"] == "2"
    finish(clock)
    g = get(m, ds, b["imageSetId"])
    assert (g["versionId"], g["imageSetState"], g["imageSetWorkflowStatus"]) == ("2", "ACTIVE", "COPY_FAILED")
    assert g["message"] == "INVALID_REQUEST: Study of SourceImageSet and DestinationImageSet don't match."
    assert instances(m, ds, b["imageSetId"]) == before
    assert metadata(m, ds, b["imageSetId"]) == metadata(m, ds, b["imageSetId"], "1")
    assert get(m, ds, a["imageSetId"])["imageSetWorkflowStatus"] == "COPIED"
    versions = call(m, "ListImageSetVersions", datastoreId=ds, imageSetId=b["imageSetId"])
    failed = versions["imageSetPropertiesList"][0]
    assert failed["ImageSetWorkflowStatus"] == "COPY_FAILED" and "Study" in failed["message"]
    assert "message" not in versions["imageSetPropertiesList"][1]
    st = m.stats()
    assert (st["copies_executed"], st["copies_succeeded"], st["copies_failed"]) == (1, 0, 1)


def test_a_failed_version_read_by_a_copy_keeps_its_status(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b, _ = _study_pair(store)
    copy(m, ds, a["imageSetId"], dst=b["imageSetId"])  # another study: b v2 COPY_FAILED
    finish(clock)
    failed = get(m, ds, b["imageSetId"])
    out = copy(m, ds, b["imageSetId"], src_version="2")  # the failed version as a source
    assert out["sourceImageSetProperties"]["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    during = call(m, "ListImageSetVersions", datastoreId=ds, imageSetId=b["imageSetId"])
    assert [v["ImageSetWorkflowStatus"] for v in during["imageSetPropertiesList"]] == \
        ["COPYING_WITH_READ_ONLY_ACCESS", "CREATED"]
    assert "message" not in during["imageSetPropertiesList"][0]
    finish(clock)
    after = get(m, ds, b["imageSetId"])
    assert (after["imageSetWorkflowStatus"], after["message"], after["updatedAt"]) == \
        ("COPY_FAILED", failed["message"], failed["updatedAt"])
    # a successful version that a copy reads reads COPIED (the CLI's get-image-set example)
    assert get(m, ds, a["imageSetId"])["imageSetWorkflowStatus"] == "COPIED"


def test_patient_mismatch_message(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, _, c = _study_pair(store)
    copy(m, ds, a["imageSetId"], dst=c["imageSetId"])
    finish(clock)
    assert get(m, ds, c["imageSetId"])["message"].startswith("INVALID_REQUEST: Patient of SourceImageSet")


def test_series_mismatch_message(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a = sets(store)[0]
    doc = metadata(m, ds, a["imageSetId"])
    # A second image set of the same study whose copy of one series says otherwise.
    series_uid = next(iter(doc["Study"]["Series"]))
    altered = dicom.make_content(doc["Patient"]["DICOM"], doc["Study"]["DICOM"], {
        series_uid: {"DICOM": {**doc["Study"]["Series"][series_uid]["DICOM"], "Modality": "XA"},
                     "Instances": {}}})
    other = m.import_image_set(ds, altered)
    copy(m, ds, a["imageSetId"], dst=other, attrs=subset({series_uid: None}))
    finish(clock)
    g = get(m, ds, other)
    assert g["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert g["message"] == "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."


def test_force_keeps_destination_metadata_and_adds_instances(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, _, c = _study_pair(store)
    dest_doc = metadata(m, ds, c["imageSetId"])
    series_uid = next(iter(a["series"]))
    sop = a["series"][series_uid][1]
    copy(m, ds, a["imageSetId"], dst=c["imageSetId"], attrs=subset({series_uid: [sop]}), force=True)
    finish(clock)
    g = get(m, ds, c["imageSetId"])
    assert (g["versionId"], g["imageSetWorkflowStatus"], g["overrides"]) == ("2", "COPIED", {"forced": True})
    doc = metadata(m, ds, c["imageSetId"])
    assert doc["Patient"] == dest_doc["Patient"] and doc["Study"]["DICOM"] == dest_doc["Study"]["DICOM"]
    assert list(doc["Study"]["Series"][series_uid]["Instances"]) == [sop]
    assert set(doc["Study"]["Series"]) == set(dest_doc["Study"]["Series"]) | {series_uid}


def test_merge_back_into_same_study_succeeds(world: tuple[HealthImaging, dict[str, Any]],
                                             clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a = sets(store)[0]
    s1, s2 = list(a["series"])
    part = copy(m, ds, a["imageSetId"], attrs=subset({s1: a["series"][s1][:1]}))
    new = part["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    copy(m, ds, a["imageSetId"], dst=new, dst_version="2", attrs=subset({s2: None}))
    finish(clock)
    assert get(m, ds, new)["imageSetWorkflowStatus"] == "COPIED"
    assert instances(m, ds, new) == {s1: a["series"][s1][:1], s2: sorted(a["series"][s2])}


# ---------------------------------------------------------------- subsets
def test_subset_single_instance(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    series_uid = next(iter(a["series"]))
    sop = a["series"][series_uid][2]
    new = copy(m, ds, a["imageSetId"], attrs=subset({series_uid: [sop]}))
    finish(clock)
    nid = new["destinationImageSetProperties"]["imageSetId"]
    assert instances(m, ds, nid) == {series_uid: [sop]}
    assert m.snapshot_image_set(ds, nid)["frames"] == 1


@pytest.mark.parametrize("form", ["no-instances-key", "empty-instances"])
def test_subset_whole_series(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock,
                             form: str) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    series_uid = list(a["series"])[1]
    entry: dict[str, Any] = {} if form == "no-instances-key" else {"Instances": {}}
    attrs = {"Study": {"Series": {series_uid: entry}}}  # SchemaVersion is optional
    new = copy(m, ds, a["imageSetId"], attrs=attrs)["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    assert instances(m, ds, new) == {series_uid: sorted(a["series"][series_uid])}


# ---------------------------------------------------------------- duplicates
def test_same_sop_in_same_series_is_replaced_not_duplicated(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    series_uid = next(iter(a["series"]))
    sop = a["series"][series_uid][0]
    new = copy(m, ds, a["imageSetId"], attrs=subset({series_uid: [sop]}))
    nid = new["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    copy(m, ds, a["imageSetId"], dst=nid, dst_version="2", attrs=subset({series_uid: None}))
    finish(clock)
    assert get(m, ds, nid)["imageSetWorkflowStatus"] == "COPIED"
    assert instances(m, ds, nid) == {series_uid: sorted(a["series"][series_uid])}
    assert m.snapshot_image_set(ds, nid)["frames"] == 3


def test_same_sop_under_another_series_fails(world: tuple[HealthImaging, dict[str, Any]],
                                             clock: FakeClock) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    doc = metadata(m, ds, a["imageSetId"])
    s1 = next(iter(doc["Study"]["Series"]))
    sop = next(iter(doc["Study"]["Series"][s1]["Instances"]))
    clash = dicom.make_content(doc["Patient"]["DICOM"], doc["Study"]["DICOM"], {
        "1.2.3.4.5": {"DICOM": {"SeriesInstanceUID": "1.2.3.4.5", "Modality": "OT"},
                      "Instances": {sop: doc["Study"]["Series"][s1]["Instances"][sop]}}})
    other = m.import_image_set(ds, clash)
    copy(m, ds, a["imageSetId"], dst=other, attrs=subset({s1: [sop]}), force=True)
    finish(clock)
    g = get(m, ds, other)
    assert g["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert sop in g["message"] and "another Series" in g["message"]
    assert instances(m, ds, other) == {"1.2.3.4.5": [sop]}


# ---------------------------------------------------------------- synchronous refusals
def test_validation_errors(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(max_copiable_attributes_chars=2000), clock)
    store = seed(m, SPEC)["datastores"][0]
    ds, a = store["datastoreId"], sets(store)[0]
    src = a["imageSetId"]
    series_uid = next(iter(a["series"]))
    bad: list[tuple[Any, str]] = [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"Study": {"Series": {series_uid: {}}}, "Patient": {}}, "unknown keys"),
        ({"SchemaVersion": "9.9", "Study": {"Series": {series_uid: {}}}}, "SchemaVersion"),
        ({"SchemaVersion": "1.1"}, "Study"),
        ({"Study": {"Series": {}}}, "Series"),
        ({"Study": {"Series": {series_uid: []}}}, series_uid),
        ({"Study": {"Series": {series_uid: {"Instances": []}}}}, series_uid),
        (subset({"1.2.3.999": None}), "1.2.3.999"),
        (subset({series_uid: ["1.2.3.888"]}), "1.2.3.888"),
        ("{" + " " * 2100 + "}", "limit is 2000"),
    ]
    for attrs, needle in bad:
        with pytest.raises(ValidationException) as err:
            copy(m, ds, src, attrs=attrs)
        assert needle in err.value.message, (attrs, err.value.message)
    with pytest.raises(ValidationException):
        copy(m, ds, src, dst=src)
    assert m.stats()["copies_requested"] == 0
    assert get(m, ds, src)["imageSetState"] == "ACTIVE"


def test_not_found(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    ds, src = store["datastoreId"], sets(store)[0]["imageSetId"]
    with pytest.raises(ResourceNotFoundException):
        copy(m, "f" * 32, src)
    with pytest.raises(ResourceNotFoundException):
        copy(m, ds, "e" * 32)
    with pytest.raises(ResourceNotFoundException):
        copy(m, ds, src, dst="d" * 32)


def test_stale_versions_conflict(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b = sets(store)[0], sets(store)[1]
    with pytest.raises(ConflictException, match="source"):
        copy(m, ds, a["imageSetId"], src_version="2")
    new = copy(m, ds, a["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    with pytest.raises(ConflictException, match="destination"):
        copy(m, ds, b["imageSetId"], dst=new, dst_version="1")  # latest is "2"
    with pytest.raises(ConflictException, match="source"):
        copy(m, ds, new, src_version="1")


def test_locked_image_sets_conflict(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b, c = (s["imageSetId"] for s in sets(store)[:3])
    new = copy(m, ds, a)["destinationImageSetProperties"]["imageSetId"]
    with pytest.raises(ConflictException, match="LOCKED"):
        copy(m, ds, a)  # source locked
    with pytest.raises(ConflictException, match="LOCKED"):
        copy(m, ds, b, dst=a)  # locked (as a source) used as destination
    with pytest.raises(ConflictException, match="LOCKED"):
        copy(m, ds, b, dst=new, dst_version="2")  # destination still copying
    with pytest.raises(ConflictException, match="LOCKED"):
        copy(m, ds, new, src_version="2")
    with pytest.raises(ConflictException):
        call(m, "DeleteImageSet", datastoreId=ds, imageSetId=a)
    # the source stays readable; the version being written does not
    assert metadata(m, ds, a)["ImageSetID"] == a
    with pytest.raises(ConflictException):
        metadata(m, ds, new)
    assert metadata(m, ds, new, "1")["Study"]["Series"] == {}
    finish(clock)
    copy(m, ds, c, dst=new, dst_version="2", force=True)
    assert m.stats()["copies_requested"] == 2


def test_frame_quota(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(max_frames_per_copy=5), clock)
    store = seed(m, SPEC)["datastores"][0]
    ds, a = store["datastoreId"], sets(store)[0]
    with pytest.raises(ServiceQuotaExceededException, match="6 image frames"):
        copy(m, ds, a["imageSetId"])
    series_uid = next(iter(a["series"]))
    copy(m, ds, a["imageSetId"], attrs=subset({series_uid: None}))  # 3 frames: fine


def test_concurrency_quota_per_datastore(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(max_concurrent_copies_per_datastore=2), clock)
    store = seed(m, SPEC)["datastores"][0]
    other = seed(m, SeedSpec(seed=9, patients=1, studies_per_patient=1))["datastores"][0]
    ds = store["datastoreId"]
    ids = [s["imageSetId"] for s in sets(store)]
    copy(m, ds, ids[0])
    copy(m, ds, ids[1])
    with pytest.raises(ServiceQuotaExceededException, match="2 copies"):
        copy(m, ds, ids[2])
    copy(m, other["datastoreId"], sets(other)[0]["imageSetId"])  # another data store: own quota
    finish(clock)
    copy(m, ds, ids[2])
    assert m.stats()["copies_requested"] == 4


# ---------------------------------------------------------------- promoteToPrimary
def test_promote_without_destination_makes_primary(world: tuple[HealthImaging, dict[str, Any]],
                                                   clock: FakeClock) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]["imageSetId"]
    out = copy(m, ds, a, promoteToPrimary=True)["destinationImageSetProperties"]
    assert out["latestVersionId"] == "2"
    finish(clock)
    assert get(m, ds, out["imageSetId"])["isPrimary"] is True


def test_promote_into_primary_destination_is_in_place(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a = sets(store)[0]
    s1, s2 = list(a["series"])
    part = copy(m, ds, a["imageSetId"], attrs=subset({s1: None}), promoteToPrimary=True)
    primary = part["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    out = copy(m, ds, a["imageSetId"], dst=primary, dst_version="2", attrs=subset({s2: None}),
               promoteToPrimary=True)["destinationImageSetProperties"]
    assert (out["imageSetId"], out["latestVersionId"]) == (primary, "3")
    finish(clock)
    assert get(m, ds, primary)["isPrimary"] is True
    assert set(instances(m, ds, primary)) == {s1, s2}


def test_promote_into_non_primary_destination_makes_new_primary(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a = sets(store)[0]
    s1, s2 = list(a["series"])
    part = copy(m, ds, a["imageSetId"], attrs=subset({s1: None}))
    plain = part["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    assert get(m, ds, plain)["isPrimary"] is False
    before = m.snapshot_image_set(ds, plain)
    out = copy(m, ds, a["imageSetId"], dst=plain, dst_version="2", attrs=subset({s2: None}),
               promoteToPrimary=True)["destinationImageSetProperties"]
    assert out["imageSetId"] not in (plain, a["imageSetId"]) and out["latestVersionId"] == "2"
    assert out["createdAt"] == clock.t
    finish(clock)
    promoted = get(m, ds, out["imageSetId"])
    assert (promoted["isPrimary"], promoted["imageSetWorkflowStatus"]) == (True, "COPIED")
    assert set(instances(m, ds, out["imageSetId"])) == {s1, s2}
    after = m.snapshot_image_set(ds, plain)
    assert after["versions"] == before["versions"] and after["instances"] == before["instances"]


# ---------------------------------------------------------------- reads
def test_get_image_set_versions_and_not_found(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]["imageSetId"]
    assert get(m, ds, a, "1")["versionId"] == "1"
    with pytest.raises(ResourceNotFoundException):
        get(m, ds, a, "2")
    with pytest.raises(ResourceNotFoundException):
        metadata(m, ds, a, "7")
    with pytest.raises(ResourceNotFoundException):
        get(m, ds, "0" * 32)
    with pytest.raises(ValidationException):
        get(m, ds, a, "one")


def test_metadata_document_shape(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    doc = metadata(m, ds, a["imageSetId"])
    assert list(doc)[:3] == ["SchemaVersion", "DatastoreID", "ImageSetID"]
    assert (doc["SchemaVersion"], doc["DatastoreID"], doc["ImageSetID"]) == ("1.1", ds, a["imageSetId"])
    assert doc["Patient"]["DICOM"]["PatientID"] == a["patientId"]
    assert doc["Study"]["DICOM"]["StudyInstanceUID"] == a["studyInstanceUID"]
    for series_uid, sops in a["series"].items():
        series = doc["Study"]["Series"][series_uid]
        assert series["DICOM"]["SeriesInstanceUID"] == series_uid and series["DICOM"]["Modality"]
        assert sorted(series["Instances"]) == sorted(sops)
        for sop, inst in series["Instances"].items():
            assert inst["DICOM"]["SOPInstanceUID"] == sop
            (frame,) = inst["ImageFrames"]
            assert re.fullmatch(r"[0-9a-f]{32}", frame["ID"]) and frame["FrameSizeInBytes"] > 0
            blob = call(m, "GetImageFrame", datastoreId=ds, imageSetId=a["imageSetId"],
                        imageFrameInformation={"imageFrameId": frame["ID"]})
            assert len(blob["imageFrameBlob"]) == frame["FrameSizeInBytes"]
            assert blob["imageFrameBlob"] == dicom.frame_bytes(frame["ID"], frame["FrameSizeInBytes"])
    with pytest.raises(ResourceNotFoundException):
        call(m, "GetImageFrame", datastoreId=ds, imageSetId=a["imageSetId"],
             imageFrameInformation={"imageFrameId": "a" * 32})


def test_list_versions_newest_first_paginated(world: tuple[HealthImaging, dict[str, Any]],
                                              clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b, c = (s["imageSetId"] for s in sets(store)[:3])
    for i, src in enumerate([b, c, b, c]):  # into `a`: Study/Patient mismatches -> COPY_FAILED
        copy(m, ds, src, dst=a, dst_version=str(i + 1))
        finish(clock)
    got, token, rounds, tokens = [], None, 0, []
    while rounds < 10:
        rounds += 1
        kwargs: dict[str, Any] = {"datastoreId": ds, "imageSetId": a, "maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = call(m, "ListImageSetVersions", **kwargs)
        got += page["imageSetPropertiesList"]
        token = page.get("nextToken")
        if not token:
            break
        tokens.append(token)
    assert rounds == 3
    assert [v["versionId"] for v in got] == ["5", "4", "3", "2", "1"]
    for v in got:
        assert "ImageSetWorkflowStatus" in v and "imageSetWorkflowStatus" not in v
        assert v["createdAt"] == T0 and v["isPrimary"] is True
    assert all(v["ImageSetWorkflowStatus"] == "COPY_FAILED" and v["message"] for v in got[:4])
    assert got[4]["ImageSetWorkflowStatus"] == "CREATED" and "message" not in got[4]
    with pytest.raises(ValidationException):  # a token of another image set
        call(m, "ListImageSetVersions", datastoreId=ds, imageSetId=b, nextToken=tokens[0])


# ---------------------------------------------------------------- SearchImageSets
def search(m: HealthImaging, ds: str, *filters: dict[str, Any], sort: dict[str, str] | None = None,
           **kw: Any) -> dict[str, Any]:
    criteria: dict[str, Any] = {}
    if filters:
        criteria["filters"] = list(filters)
    if sort:
        criteria["sort"] = sort
    return call(m, "SearchImageSets", datastoreId=ds, searchCriteria=criteria, **kw)


def eq(attr: str, value: Any) -> dict[str, Any]:
    return {"operator": "EQUAL", "values": [{attr: value}]}


def hits(result: dict[str, Any]) -> list[str]:
    return [s["imageSetId"] for s in result["imageSetsMetadataSummaries"]]


def test_search_filters(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    a, b, c = sets(store)[0], sets(store)[1], sets(store)[2]
    doc = metadata(m, ds, b["imageSetId"])
    assert hits(search(m, ds, eq("DICOMStudyInstanceUID", a["studyInstanceUID"]))) == [a["imageSetId"]]
    assert set(hits(search(m, ds, eq("DICOMPatientId", a["patientId"])))) == \
        {s["imageSetId"] for s in sets(store) if s["patientId"] == a["patientId"]}
    assert hits(search(m, ds, eq("DICOMSeriesInstanceUID", next(iter(c["series"]))))) == [c["imageSetId"]]
    assert hits(search(m, ds, eq("DICOMAccessionNumber", doc["Study"]["DICOM"]["AccessionNumber"]))) == \
        [b["imageSetId"]]
    assert b["imageSetId"] in hits(search(m, ds, eq("DICOMStudyId", doc["Study"]["DICOM"]["StudyID"])))
    study_date = doc["Study"]["DICOM"]["StudyDate"]
    assert b["imageSetId"] in hits(search(m, ds, eq("DICOMStudyDateAndTime", {"DICOMStudyDate": study_date})))

    clock.advance(10)
    new = copy(m, ds, a["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    finish(clock)
    assert hits(search(m, ds, eq("isPrimary", False))) == [new]
    assert new not in hits(search(m, ds, eq("isPrimary", True)))
    assert hits(search(m, ds, eq("createdAt", T0 + 10))) == [new]
    between = {"operator": "BETWEEN", "values": [{"createdAt": T0 + 5}, {"createdAt": T0 + 20}]}
    assert hits(search(m, ds, between)) == [new]
    upd = {"operator": "BETWEEN", "values": [{"updatedAt": T0 + 1}, {"updatedAt": clock.t}]}
    assert set(hits(search(m, ds, upd))) == {new, a["imageSetId"]}  # the source was updated too
    both = search(m, ds, upd, eq("isPrimary", True))
    assert hits(both) == [a["imageSetId"]]
    summary = both["imageSetsMetadataSummaries"][0]
    assert summary["version"] == 1 and summary["isPrimary"] is True
    tags = summary["DICOMTags"]
    assert (tags["DICOMPatientId"], tags["DICOMStudyInstanceUID"]) == (a["patientId"], a["studyInstanceUID"])
    assert (tags["DICOMNumberOfStudyRelatedSeries"], tags["DICOMNumberOfStudyRelatedInstances"]) == (2, 6)

    for bad in ({"operator": "EQUAL", "values": [{"createdAt": T0}, {"createdAt": T0}]},
                {"operator": "BETWEEN", "values": [{"DICOMPatientId": "x"}, {"DICOMPatientId": "y"}]},
                {"operator": "BETWEEN", "values": [{"createdAt": T0}, {"updatedAt": T0}]},
                {"operator": "EQUAL", "values": [{"createdAt": T0, "updatedAt": T0}]}):
        with pytest.raises(ValidationException):
            search(m, ds, bad)


def test_search_sort_pagination_and_deleted(world: tuple[HealthImaging, dict[str, Any]],
                                            clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    ids = [s["imageSetId"] for s in sets(store)]
    for i, iset in enumerate(ids):  # distinct updatedAt: lock each as a copy source in turn
        clock.advance(10)
        copy(m, ds, iset)
        finish(clock)
    everything = hits(search(m, ds))
    assert len(everything) == 8
    default = [s["imageSetId"] for s in sorted(
        search(m, ds)["imageSetsMetadataSummaries"], key=lambda s: (s["updatedAt"], s["imageSetId"]),
        reverse=True)]
    assert everything == default  # default: updatedAt DESC
    asc = search(m, ds, sort={"sortField": "createdAt", "sortOrder": "ASC"})
    assert asc["sort"] == {"sortField": "createdAt", "sortOrder": "ASC"}
    created = [s["createdAt"] for s in asc["imageSetsMetadataSummaries"]]
    assert created == sorted(created)
    by_study = search(m, ds, sort={"sortField": "DICOMStudyDateAndTime", "sortOrder": "DESC"})
    keys = [dicom.study_datetime_key(s["DICOMTags"].get("DICOMStudyDate"),
                                     s["DICOMTags"].get("DICOMStudyTime"))
            for s in by_study["imageSetsMetadataSummaries"]]
    assert keys == sorted(keys, reverse=True)

    paged, token, rounds = [], None, 0
    while rounds < 10:
        rounds += 1
        kw: dict[str, Any] = {"maxResults": 3}
        if token:
            kw["nextToken"] = token
        page = search(m, ds, **kw)
        paged += hits(page)
        token = page.get("nextToken")
        if not token:
            break
    assert rounds == 3 and paged == everything
    first = search(m, ds, maxResults=3)
    with pytest.raises(ValidationException):  # token bound to its criteria
        search(m, ds, eq("isPrimary", True), nextToken=first["nextToken"])
    with pytest.raises(ValidationException):
        search(m, ds, nextToken=first["nextToken"][:-1] + "x")

    call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[0])
    assert ids[0] in hits(search(m, ds))  # LOCKED / DELETING: still there
    finish(clock)
    assert ids[0] not in hits(search(m, ds)) and len(hits(search(m, ds))) == 7


# ---------------------------------------------------------------- DeleteImageSet
def test_delete_image_set_is_asynchronous_and_keeps_history(
        world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, a, b = store["datastoreId"], sets(store)[0]["imageSetId"], sets(store)[1]["imageSetId"]
    copy(m, ds, b, dst=a)  # another study: ends COPY_FAILED, a failure the history keeps
    finish(clock)
    clock.advance(5)
    out = call(m, "DeleteImageSet", datastoreId=ds, imageSetId=a)
    assert (out["imageSetState"], out["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    g = get(m, ds, a)
    assert (g["imageSetState"], g["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert "deletedAt" not in g and m.stats()["deletes_in_flight"] == 1
    assert metadata(m, ds, a)["ImageSetID"] == a  # still readable while it is deleted
    for fn in (lambda: call(m, "DeleteImageSet", datastoreId=ds, imageSetId=a),
               lambda: copy(m, ds, a, src_version="2"), lambda: copy(m, ds, b, dst=a, dst_version="2")):
        with pytest.raises(ConflictException):  # LOCKED: no other write
            fn()
    clock.advance(0.999)
    assert get(m, ds, a)["imageSetState"] == "LOCKED"
    clock.advance(0.001)  # delete_s = 1 s (time_scale 1)
    g = get(m, ds, a)
    assert (g["imageSetState"], g["deletedAt"]) == ("DELETED", T0 + 3606)
    assert g["updatedAt"] == round(T0 + 2.12, 3)  # the version's own: the deletion wrote none
    assert (g["versionId"], g["imageSetWorkflowStatus"]) == ("2", "COPY_FAILED")  # not rewritten
    assert g["message"].startswith("INVALID_REQUEST: Study")
    listed = call(m, "ListImageSetVersions", datastoreId=ds, imageSetId=a)["imageSetPropertiesList"]
    assert [(v["versionId"], v["ImageSetWorkflowStatus"], v["imageSetState"]) for v in listed] == \
        [("2", "COPY_FAILED", "DELETED"), ("1", "CREATED", "DELETED")]
    assert all(v["deletedAt"] == T0 + 3606 for v in listed)
    for fn in (lambda: metadata(m, ds, a), lambda: copy(m, ds, a, src_version="2"),
               lambda: call(m, "DeleteImageSet", datastoreId=ds, imageSetId=a),
               lambda: copy(m, ds, b, dst=a, dst_version="2")):
        with pytest.raises(ResourceNotFoundException):
            fn()
    assert m.stats()["image_sets"] == 3 and m.stats()["deletes_requested"] == 1


def test_delete_refuses_a_locked_image_set_and_caps_concurrent_deletes(clock: FakeClock) -> None:
    m = HealthImaging(EmulatorConfig(max_concurrent_deletes_per_datastore=2), clock)
    store = seed(m, SPEC)["datastores"][0]
    ds, ids = store["datastoreId"], [s["imageSetId"] for s in sets(store)]
    copy(m, ds, ids[0])
    with pytest.raises(ConflictException):  # the source of a running copy
        call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[0])
    call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[1])
    call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[2])
    with pytest.raises(ThrottlingException):
        call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[3])
    finish(clock)
    call(m, "DeleteImageSet", datastoreId=ds, imageSetId=ids[3])


# ---------------------------------------------------------------- the rest of the API
def test_unsupported_operations_raise_modelled_errors(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]["imageSetId"]
    with pytest.raises(ValidationException, match="not supported"):
        call(m, "StartDICOMImportJob", datastoreId=ds, dataAccessRoleArn="arn:aws:iam::123456789012:role/x",
             clientToken="t", inputS3Uri="s3://in-bucket/x", outputS3Uri="s3://out-bucket/y")
    with pytest.raises(ResourceNotFoundException):
        call(m, "GetDICOMImportJob", datastoreId=ds, jobId="abc")
    assert call(m, "ListDICOMImportJobs", datastoreId=ds) == {"jobSummaries": []}
    with pytest.raises(ValidationException):
        m.call("NoSuchOperation", {})


def test_tags(world: tuple[HealthImaging, dict[str, Any]]) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]["imageSetId"]
    arn = get(m, ds, a)["imageSetArn"]
    call(m, "TagResource", resourceArn=arn, tags={"team": "x", "env": "dev"})
    call(m, "UntagResource", resourceArn=arn, tagKeys=["env"])
    assert call(m, "ListTagsForResource", resourceArn=arn) == {"tags": {"team": "x"}}
    ds_arn = call(m, "GetDatastore", datastoreId=ds)["datastoreProperties"]["datastoreArn"]
    assert call(m, "ListTagsForResource", resourceArn=ds_arn) == {"tags": {}}
    with pytest.raises(ResourceNotFoundException):
        call(m, "ListTagsForResource", resourceArn=arn.replace(a, "0" * 32))


def test_reset_and_thread_safety(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    ids = [s["imageSetId"] for s in sets(store)]
    errors: list[Exception] = []

    def worker(iset: str) -> None:
        try:
            copy(m, ds, iset)
            for _ in range(50):
                search(m, ds)
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and m.stats()["copies_in_flight"] == 4
    m.reset()
    assert m.stats() == {"copies_requested": 0, "copies_executed": 0, "copies_succeeded": 0,
                         "copies_failed": 0, "copies_in_flight": 0, "frames_copied": 0,
                         "updates_requested": 0, "updates_succeeded": 0, "updates_failed": 0,
                         "updates_in_flight": 0, "deletes_requested": 0, "deletes_in_flight": 0,
                         "datastores": 0, "image_sets": 0, "image_set_versions": 0}
    json.dumps(m.stats())


def test_snapshot_is_json(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds, a = store["datastoreId"], sets(store)[0]
    new = copy(m, ds, a["imageSetId"])["destinationImageSetProperties"]["imageSetId"]
    snap = m.snapshot_image_set(ds, new)
    json.dumps(snap)
    assert (snap["state"], snap["latestVersionId"], snap["workflowStatus"]) == ("LOCKED", "2", "COPYING")
    finish(clock)
    snap = m.snapshot_image_set(ds, new)
    assert [v["versionId"] for v in snap["versions"]] == ["1", "2"]
    assert snap["instances"] == {k: sorted(v) for k, v in a["series"].items()}
    with pytest.raises(ResourceNotFoundException):
        m.snapshot_image_set(ds, "0" * 32)


# ---------------------------------------------------------------- UpdateImageSetMetadata
def update(m: HealthImaging, ds: str, iset: str, latest: str, updatable: Any = None, removable: Any = None,
           **flags: Any) -> dict[str, Any]:
    blobs = {key: json.dumps(doc).encode() for key, doc in (("updatableAttributes", updatable),
                                                           ("removableAttributes", removable))
             if doc is not None}
    return call(m, "UpdateImageSetMetadata", datastoreId=ds, imageSetId=iset, latestVersionId=latest,
                updateImageSetMetadataUpdates={"DICOMUpdates": blobs}, **flags)


def _one_instance(store: dict[str, Any]) -> tuple[str, str, str, str]:
    a = sets(store)[0]
    (s1, sops1), (s2, _) = a["series"].items()
    return a["imageSetId"], s1, sops1[0], s2


@pytest.mark.parametrize(("case", "force", "outcome"), [
    pytest.param("generated", True, "FrameSizeInBytes is generated by HealthImaging and cannot be updated.",
                 id="generated"),
    pytest.param("uid_elsewhere", True, "SOPInstanceUID belongs to the Instance level, not the Series level.",
                 id="uid_elsewhere"),
    pytest.param("remove_uid", True, "StudyInstanceUID cannot be removed.", id="remove_uid"),
    pytest.param("private", False, "Instance level private element 00191001 can only be updated with force.",
                 id="private"),
    pytest.param("private", True, "UPDATED", id="private_forced"),
    pytest.param("study_id", False, "Updating StudyID requires force.", id="study_id"),
    pytest.param("study_id", True, "UPDATED", id="study_id_forced"),
    pytest.param("series_clash", True, "already exists in the image set.", id="series_clash"),
    pytest.param("remove_then_update", False, "UPDATED", id="remove_then_update"),
])
def test_update_constraints(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock, case: str,
                            force: bool, outcome: str) -> None:
    m, store = world
    ds = store["datastoreId"]
    iset, s1, sop, s2 = _one_instance(store)
    docs: dict[str, tuple[Any, Any]] = {
        "generated": ({"Study": {"Series": {s1: {"Instances": {sop: {"DICOM": {"FrameSizeInBytes": 1}}}}}}}, None),
        "uid_elsewhere": ({"Study": {"Series": {s1: {"DICOM": {"SOPInstanceUID": "1.2"}}}}}, None),
        "remove_uid": (None, {"Study": {"DICOM": {"StudyInstanceUID": ""}}}),
        "private": ({"Study": {"Series": {s1: {"Instances": {sop: {"DICOM": {"00191001": "x"},
                                                                   "DICOMVRs": {"00191001": "LO"}}}}}}}, None),
        "study_id": ({"Study": {"DICOM": {"StudyID": "S9"}}}, None),
        "series_clash": ({"Study": {"Series": {s1: {"DICOM": {"SeriesInstanceUID": s2}}}}}, None),
        "remove_then_update": ({"Study": {"DICOM": {"StudyDescription": "new"}}},
                               {"Study": {"DICOM": {"StudyDescription": ""}, "Series": {s2: {}}}}),
    }
    before = metadata(m, ds, iset)
    update(m, ds, iset, "1", *docs[case], force=force)
    finish(clock)
    g = get(m, ds, iset)
    if outcome != "UPDATED":
        assert g["imageSetWorkflowStatus"] == "UPDATE_FAILED"
        assert g["message"].startswith("INVALID_REQUEST: ") and g["message"].endswith(outcome)
        assert metadata(m, ds, iset)["Study"] == before["Study"]
        return
    assert g["imageSetWorkflowStatus"] == "UPDATED"
    doc = metadata(m, ds, iset)
    if case == "private":
        inst = doc["Study"]["Series"][s1]["Instances"][sop]
        assert (inst["DICOM"]["00191001"], inst["DICOMVRs"]) == ("x", {"00191001": "LO"})
        assert "DICOMVRs" not in before["Study"]["Series"][s1]["Instances"][sop]  # v1 untouched
    elif case == "study_id":
        assert doc["Study"]["DICOM"]["StudyID"] == "S9" and g["overrides"] == {"forced": True}
    else:
        assert doc["Study"]["DICOM"]["StudyDescription"] == "new" and set(doc["Study"]["Series"]) == {s1}


def test_update_refusals_at_once(world: tuple[HealthImaging, dict[str, Any]], clock: FakeClock) -> None:
    m, store = world
    ds = store["datastoreId"]
    iset, _, _, _ = _one_instance(store)
    change = {"Study": {"DICOM": {"StudyDescription": "x"}}}
    with pytest.raises(ValidationException, match="includeStudyImageSets"):
        update(m, ds, iset, "1", change, includeStudyImageSets=True)
    with pytest.raises(ConflictException, match="latestVersionId 2"):
        update(m, ds, iset, "2", change)
    with pytest.raises(ResourceNotFoundException):
        call(m, "UpdateImageSetMetadata", datastoreId=ds, imageSetId=iset, latestVersionId="1",
             updateImageSetMetadataUpdates={"revertToVersionId": "3"})
    out = update(m, ds, iset, "1", change)
    assert (out["latestVersionId"], out["imageSetState"], out["imageSetWorkflowStatus"]) == \
        ("2", "LOCKED", "UPDATING")
    assert out["createdAt"] == T0 and out["updatedAt"] == clock.t
    clock.advance(0.999)  # update_s = 1 s
    assert get(m, ds, iset)["imageSetState"] == "LOCKED"
    clock.advance(0.001)
    assert get(m, ds, iset)["imageSetWorkflowStatus"] == "UPDATED"
    assert m.stats()["updates_succeeded"] == 1
