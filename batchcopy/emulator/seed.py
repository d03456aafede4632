"""Synthetic DICOM hierarchies for the emulator, with deterministic identifiers.

One image set per study (the `image_set_model` switch at `study`), or one per series
(`series`: the 2025 developer guide's "image sets resemble a DICOM Series"); each
version "1", ACTIVE / CREATED, isPrimary true. Every identifier (data store ids, image set
ids, DICOM UIDs, frame ids) is an md5 of the spec's seed and the object's
position, so the same spec on a fresh emulator gives the same ids, and another
seed gives other ids. Seeding the same spec twice into one emulator does not
clash: the second run takes the next free "generation" of ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchcopy.emulator import dicom

if TYPE_CHECKING:  # pragma: no cover
    from batchcopy.emulator.model import HealthImaging

UID_ROOT = "1.2.826.0.1.3680043.8.498."
_MODALITIES = (("CT", "1.2.840.10008.5.1.4.1.1.2", "CHEST"),
               ("MR", "1.2.840.10008.5.1.4.1.1.4", "HEAD"),
               ("CT", "1.2.840.10008.5.1.4.1.1.2", "ABDOMEN"),
               ("MR", "1.2.840.10008.5.1.4.1.1.4", "KNEE"))
_HTJ2K = "1.2.840.10008.1.2.4.202"
_MAX_GENERATIONS = 1000


@dataclass(frozen=True)
class SeedSpec:
    seed: int = 1
    datastores: int = 1
    patients: int = 3
    studies_per_patient: int = 2
    series_per_study: int = 2
    instances_per_series: int = 4
    frames_per_instance: int = 1
    datastore_name: str = "batchcopy-demo"
    datastore_id: str | None = None  # seed into this existing data store instead

    def __post_init__(self) -> None:
        for name in ("seed", "datastores", "patients", "studies_per_patient", "series_per_study",
                     "instances_per_series", "frames_per_instance"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, not {value!r}")
        for name in ("datastores", "patients", "studies_per_patient", "series_per_study",
                     "instances_per_series", "frames_per_instance"):
            if getattr(self, name) < (0 if name == "patients" else 1):
                raise ValueError(f"{name} must be at least {0 if name == 'patients' else 1}")
        if not isinstance(self.datastore_name, str) or not self.datastore_name:
            raise ValueError("datastore_name must be a non-empty string")


def seed(model: "HealthImaging", spec: SeedSpec) -> dict[str, Any]:
    """Create the spec's data stores and image sets in `model`; return a JSON-able summary."""
    with model.lock:
        gen = _free_generation(model, spec)
        stores: list[dict[str, Any]] = []
        targets: list[tuple[str, str, str | None]] = []  # (datastore id, id key, new name)
        if spec.datastore_id is not None:
            targets.append((spec.datastore_id, spec.datastore_id, None))
        else:
            for d in range(spec.datastores):
                named = spec.datastore_name if spec.datastores == 1 else f"{spec.datastore_name}-{d + 1}"
                ds_id = model.add_datastore(named, _hex(spec.seed, gen, "datastore", d))
                targets.append((ds_id, f"ds{d}", named))
        per_series = model.config.reading("image_set_model") == "series"
        for ds_id, ds_key, name in targets:
            image_sets = [entry for p in range(spec.patients) for s in range(spec.studies_per_patient)
                          for entry in _seed_study(model, spec, gen, ds_id, ds_key, p, s, per_series)]
            store: dict[str, Any] = {"datastoreId": ds_id, "imageSets": image_sets}
            if name is not None:
                store["datastoreName"] = name
            stores.append(store)
        return {"seed": spec.seed, "datastores": stores}


def _free_generation(model: "HealthImaging", spec: SeedSpec) -> int:
    for gen in range(_MAX_GENERATIONS):
        if spec.datastore_id is not None:
            if not model.exists(spec.datastore_id):
                from batchcopy.emulator.errors import ResourceNotFoundException

                raise ResourceNotFoundException(f"Datastore {spec.datastore_id} not found")
            probes = (_image_set_id(spec.seed, gen, spec.datastore_id, 0, 0),
                      _image_set_id(spec.seed, gen, spec.datastore_id, 0, 0, 0))
            if not any(model.exists(spec.datastore_id, probe) for probe in probes):
                return gen
        elif not any(model.exists(_hex(spec.seed, gen, "datastore", d))
                     for d in range(spec.datastores)):
            return gen
    raise ValueError("this seed was used too many times in this emulator; reset it")


def _seed_study(model: "HealthImaging", spec: SeedSpec, gen: int, ds_id: str, ds_key: str,
                p: int, s: int, per_series: bool) -> list[dict[str, Any]]:
    """One study: one image set holding its series, or (per_series) one image set per series."""
    def h(*parts: Any) -> str:
        return _hex(spec.seed, gen, ds_key, p, s, *parts)

    def uid(*parts: Any) -> str:
        return _uid(spec.seed, gen, ds_key, p, s, *parts)

    patient_id = f"BC{spec.seed}-{gen}-{ds_key}-P{p + 1:04d}"
    patient = {"PatientID": patient_id, "PatientName": f"Synthetic^Patient{p + 1}",
               "PatientBirthDate": _date(_hex(spec.seed, gen, ds_key, p, "birth"), 1930, 70),
               "PatientSex": "FM"[p % 2]}
    study_uid = uid("study")
    study = {"StudyInstanceUID": study_uid, "StudyID": f"S{p + 1}{s + 1:03d}",
             "AccessionNumber": f"ACC{int(h('acc')[:8], 16) % 10**8:08d}",
             "StudyDate": _date(h("studydate"), 2015, 10),
             "StudyTime": f"{int(h('time')[:4], 16) % 24:02d}{int(h('time')[4:8], 16) % 60:02d}00",
             "StudyDescription": f"Synthetic study {s + 1} of patient {p + 1}"}
    series: dict[str, Any] = {}
    for r in range(spec.series_per_study):
        modality, sop_class, body_part = _MODALITIES[(p + s + r) % len(_MODALITIES)]
        series_uid = uid("series", r)
        instances: dict[str, Any] = {}
        for i in range(spec.instances_per_series):
            sop_uid = uid("instance", r, i)
            frames = [{"ID": h("frame", r, i, f),
                       "FrameSizeInBytes": 1024 + int(h("size", r, i, f)[:4], 16) % 3072,
                       "MinPixelValue": 0, "MaxPixelValue": 4095,
                       "PixelDataChecksumFromBaseToFullResolution": [
                           {"Width": 64, "Height": 64, "Checksum": int(h("sum", r, i, f)[:8], 16)}]}
                      for f in range(spec.frames_per_instance)]
            inst_dicom: dict[str, Any] = {"SOPInstanceUID": sop_uid, "SOPClassUID": sop_class,
                                          "InstanceNumber": i + 1, "Rows": 64, "Columns": 64}
            if spec.frames_per_instance > 1:
                inst_dicom["NumberOfFrames"] = spec.frames_per_instance
            instances[sop_uid] = {"DICOM": inst_dicom, "StoredTransferSyntaxUID": _HTJ2K,
                                  "ImageFrames": frames}
        series[series_uid] = {"DICOM": {"SeriesInstanceUID": series_uid, "Modality": modality,
                                        "SeriesNumber": r + 1, "BodyPartExamined": body_part,
                                        "SeriesDescription": f"{modality} series {r + 1}"},
                              "Instances": instances}
    groups = ([(_image_set_id(spec.seed, gen, ds_key, p, s, r), {uid_: series[uid_]})
               for r, uid_ in enumerate(series)] if per_series
              else [(_image_set_id(spec.seed, gen, ds_key, p, s), series)])
    out = []
    for image_set_id, members in groups:
        model.import_image_set(ds_id, dicom.make_content(patient, study, members),
                               image_set_id=image_set_id, is_primary=True)
        out.append({"imageSetId": image_set_id, "patientId": patient_id, "studyInstanceUID": study_uid,
                    "series": {k: list(v["Instances"]) for k, v in members.items()},
                    "frames": dicom.frame_count(dicom.make_content({}, {}, members))})
    return out


def _digest(*parts: Any) -> str:
    return hashlib.md5("|".join(["batchcopy-seed", *map(str, parts)]).encode()).hexdigest()


def _hex(seed_value: int, gen: int, *parts: Any) -> str:
    """32 characters of [0-9a-f]: fits HealthImaging's [0-9a-z]{32} ids."""
    return _digest(seed_value, gen, *parts)


def _image_set_id(seed_value: int, gen: int, ds_key: str, p: int, s: int, r: int | None = None) -> str:
    """The image set of study s of patient p (or, image sets being series, of its series r)."""
    if r is None:
        return _hex(seed_value, gen, ds_key, p, s, "imageset")
    return _hex(seed_value, gen, ds_key, p, s, "series", r, "imageset")


def _uid(*parts: Any) -> str:
    """A DICOM UID under the project root: 30 digits, no leading zero, 57 characters."""
    n = int(_digest(*parts), 16)
    return UID_ROOT + str(10**29 + n % (9 * 10**29))


def _date(hex_digest: str, first_year: int, years: int) -> str:
    n = int(hex_digest[:8], 16)
    return f"{first_year + n % years:04d}{1 + (n // years) % 12:02d}{1 + (n // 997) % 28:02d}"
