"""Behaviours the public documentation leaves open, each a switch with named readings.

No test can reach the real service, so wherever the service model, the CLI examples and
the developer guide allow more than one reading, the emulator implements each plausible
one and lets the caller pick: `EmulatorConfig.assume` maps a switch NAME to a reading
VALUE; a name left out takes the switch's default (today's reading, kept unless the
evidence says otherwise). Select them with `batchcopy emulator serve --assume NAME=VALUE`,
`"assume": {...}` in the config JSON, or live with `POST /_emulator/config
{"assume": {...}}`; `batchcopy emulator assumptions` and `GET /_emulator/assumptions`
list them. ASSUMPTIONS.md says which tests cover each reading.

This module is data plus validation; model.py reads the values through
`EmulatorConfig.reading(NAME)` where the behaviour forks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

CLI_EXAMPLES = "awscli/examples/medical-imaging"


@dataclass(frozen=True)
class Reading:
    value: str
    meaning: str


@dataclass(frozen=True)
class Switch:
    name: str
    behaviour: str  # what the documentation leaves open, in one line
    readings: tuple[Reading, ...]
    default: str
    evidence: str  # the doc page or CLI example the readings come from

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(r.value for r in self.readings)

    def meaning(self, value: str) -> str:
        return next(r.meaning for r in self.readings if r.value == value)


def _switch(name: str, behaviour: str, default: str, evidence: str,
            *readings: tuple[str, str]) -> Switch:
    switch = Switch(name, behaviour, tuple(Reading(v, m) for v, m in readings), default, evidence)
    assert default in switch.values, (name, default)
    return switch


SWITCHES: tuple[Switch, ...] = (
    _switch(
        "new_copy_version", "the version a copy into a new image set answers", "2",
        f"{CLI_EXAMPLES}/copy-image-set.rst: example 1 answers latestVersionId \"2\" for a new "
        "image set; example 2 names that image set with latestVersionId \"1\" and answers "
        "\"2\"; both cannot hold literally",
        ("2", "the new image set's version 1 is ACTIVE / CREATED (Patient and Study, no series) "
              "and the copy writes version 2: a copy answers latest + 1 whether or not the "
              "destination existed, as example 1 answers"),
        ("1", "the copy writes version 1 of the new image set (COPYING, then COPIED); example 2, "
              "naming version \"1\" of the image set example 1 made, then works literally")),
    _switch(
        "stale_version",
        "a latestVersionId that is not the latest (CopyImageSet source or destination, "
        "UpdateImageSetMetadata)", "conflict",
        "not documented: the API reference says only 'the latest version identifier'; both "
        "operations list ConflictException and ValidationException",
        ("conflict", "409 ConflictException at once; nothing happens"),
        ("copy_failed", "accepted: a new version is made and ends COPY_FAILED (UPDATE_FAILED for "
                        "an update) with a message saying the version was not the latest"),
        ("validation", "400 ValidationException at once; nothing happens")),
    _switch(
        "locked", "a write naming a LOCKED image set (copy source or destination, update, delete)",
        "conflict",
        "developer guide (copy-image-set, update-image-set-metadata): 'You cannot perform other "
        "write operations on a LOCKED image set', the error unnamed; the status "
        "COPYING_WITH_READ_ONLY_ACCESS hints that a copy's source stays readable",
        ("conflict", "409 ConflictException at once"),
        ("validation", "400 ValidationException at once"),
        ("shared_source", "an image set LOCKED only because copies read it "
                          "(COPYING_WITH_READ_ONLY_ACCESS) may be the source of another copy; "
                          "every other lock answers 409 ConflictException")),
    _switch(
        "missing_subset_key",
        "a series or SOP instance named in copiableAttributes (or in an update) that the "
        "image set does not hold", "validation",
        "not documented for copies; developer guide, DICOM metadata constraints: an update "
        "cannot name a Series absent from the image set, how it fails unsaid",
        ("validation", "400 ValidationException at once, naming the UID"),
        ("copy_failed", "accepted; the new version ends COPY_FAILED (UPDATE_FAILED for an "
                        "update) with a message naming the UID")),
    _switch(
        "promote_non_primary", "promoteToPrimary with a destination that is not primary", "new_id",
        "service model, CopyImageSetRequest.promoteToPrimary: 'a new primary image set ID will "
        "be returned as the destination image set'; whether an existing destination is "
        "promoted in place is not said",
        ("new_id", "a new primary image set answers as the destination (its versions per "
                   "new_copy_version); the old destination is left as it was"),
        ("in_place", "the destination itself gets the new version, now primary")),
    _switch(
        "copy_limit_unit", "what the per-copy limit (max_frames_per_copy, 1,000) counts", "frames",
        "quota page (healthimaging-notes.md): 'at most 1,000 image frames per CopyImageSet "
        "request'; a copy selects SOP instances, so instances is the other plausible unit",
        ("frames", "the image frames of the selected instances"),
        ("instances", "the selected SOP instances")),
    _switch(
        "copy_limit_error", "the error of a copy over the per-copy limit", "quota",
        "not documented; CopyImageSet lists ServiceQuotaExceededException and ValidationException",
        ("quota", "402 ServiceQuotaExceededException naming the count, the unit and the limit"),
        ("quota_terse", "402 ServiceQuotaExceededException 'Service quota exceeded': no count, "
                        "no unit"),
        ("validation", "400 ValidationException naming the count, the unit and the limit")),
    _switch(
        "concurrency_limit_error",
        "the error of one copy (or update) too many running in a data store (100 each)", "quota",
        "quota page (healthimaging-notes.md): 100 concurrent CopyImageSet and 100 concurrent "
        "UpdateImageSetMetadata per data store; the error is not documented",
        ("quota", "402 ServiceQuotaExceededException naming how many run"),
        ("quota_terse", "402 ServiceQuotaExceededException 'Service quota exceeded', word for word "
                        "what copy_limit_error=quota_terse says"),
        ("throttling", "429 ThrottlingException 'Rate exceeded', like a request-rate throttle")),
    _switch(
        "duplicate_sop",
        "a copied SOP Instance UID that the destination already holds in the same series",
        "replace",
        "developer guide, copy-image-set: 'CopyImageSet requires SOP Instance UIDs to be unique "
        "within an image set'; whether a copy replaces the instance or fails is not said",
        ("replace", "the copied instance replaces it (copying the same instances again only "
                    "makes a new version); in another series the copy ends COPY_FAILED"),
        ("copy_failed", "the copy ends COPY_FAILED 'SOP Instance UID ... already exists in "
                        "DestinationImageSet.' (so a copy that already happened fails when resent)")),
    _switch(
        "search_visibility", "when SearchImageSets finds an image set a copy creates",
        "immediate",
        "not documented; the search page says nothing of image sets whose creating copy "
        "still runs",
        ("immediate", "from the moment the copy is accepted (LOCKED, still being written)"),
        ("when_active", "only once the copy that creates it has ended (COPIED or COPY_FAILED)")),
    _switch(
        "search_filter_pairs", "which two SearchImageSets filters may be combined", "any",
        "service model: SearchCriteria.filters takes 1 to 2 filters, nothing says which; "
        f"{CLI_EXAMPLES}/search-image-sets.rst example 4 is the only pair shown (EQUAL "
        "DICOMSeriesInstanceUID with BETWEEN updatedAt)",
        ("any", "any two filters, ANDed"),
        ("documented", "only the pair of example 4; any other two filters answer 400 "
                       "ValidationException (one filter is always fine)")),
    _switch(
        "search_between_upper", "whether a SearchImageSets BETWEEN includes its upper bound",
        "inclusive",
        "the API reference: 'All date range queries must be input as (lowerBound, "
        f"upperBound)'; {CLI_EXAMPLES}/search-image-sets.rst example 2: a DICOMStudyTime left "
        "out means 00:00 of that date; whether the upper bound itself matches is not said",
        ("inclusive", "lowerBound <= value <= upperBound"),
        ("exclusive", "lowerBound <= value < upperBound (a study on the upper date at 00:00 "
                      "is left out, and with the time left out every study of that date)")),
    _switch(
        "study_consistency", "whether a copied destination passes through "
        "UPDATING_FOR_STUDY_CONSISTENCY", "off",
        "service model: ImageSetWorkflowStatus lists UPDATING_FOR_STUDY_CONSISTENCY and no page "
        "describes it; the 2025 guide's primary hierarchy keeps a study's image sets consistent",
        ("off", "a copy ends COPIED as soon as its content is written"),
        ("on", "after a successful copy writes its content the destination stays LOCKED, its new "
               "version UPDATING_FOR_STUDY_CONSISTENCY, for study_consistency_s (1 s, scaled), "
               "then ACTIVE / COPIED; the source is released when the content is written; a "
               "failed copy ends COPY_FAILED directly")),
    _switch(
        "image_set_model",
        "what an image set holds (seeding) and what copies and updates may do to a primary one",
        "study",
        "developer guide, understanding-image-sets (2025): image sets 'resemble a DICOM Series', "
        "imports that conflict with primary image sets stay non-primary; "
        "update-image-set-metadata: 'The Patient and Series level metadata elements can not be "
        "updated for primary image sets', nor (even with force) the Study/Series/SOP Instance UIDs; "
        "copy-image-set: with force the destination keeps its Patient/Study/Series metadata",
        ("study", "one image set per study holding its series; a copy adds series to any "
                  "destination; updates may change Patient/Series attributes and, with force, UIDs"),
        ("series", "one image set per series; a primary image set stays one series: copying "
                   "another series into it ends COPY_FAILED 'Series of SourceImageSet and "
                   "DestinationImageSet don't match.', or with force its instances join the "
                   "destination's series; updates of a primary image set may not touch Patient or "
                   "Series attributes nor UIDs, force or not (they end UPDATE_FAILED)")),
    _switch(
        "version_timestamps", "createdAt and updatedAt of a version (GetImageSet, "
        "ListImageSetVersions)", "image_set_created",
        f"{CLI_EXAMPLES}/list-image-set-versions.rst: four versions share one createdAt, each "
        "with its own updatedAt; copy-image-set.rst example 2: the destination keeps the "
        "createdAt of example 1; get-image-set.rst: version 1's updatedAt is days after createdAt",
        ("image_set_created", "createdAt is the image set's creation on every version; updatedAt "
                              "is the version's own"),
        ("image_set_both", "every version shows the image set's createdAt and its latest updatedAt"),
        ("per_version", "createdAt is when the version was made; updatedAt is the version's own")),
    _switch(
        "version_order", "the order of ListImageSetVersions", "newest_first",
        f"{CLI_EXAMPLES}/list-image-set-versions.rst lists 4, 3, 2, 1; the API reference "
        "names no order",
        ("newest_first", "the latest version first"),
        ("oldest_first", "version 1 first")),
    _switch(
        "copy_failed_message", "the spacing of INVALID_REQUEST failure messages", "single_space",
        f"{CLI_EXAMPLES}/list-image-set-versions.rst prints 'INVALID_REQUEST:  Series of "
        "SourceImageSet and DestinationImageSet don't match.' (two spaces)",
        ("single_space", "'INVALID_REQUEST: <reason>' (the double space read as a typo)"),
        ("double_space", "'INVALID_REQUEST:  <reason>', exactly as the CLI example prints it")),
    _switch(
        "schema_version", "the type of copiableAttributes' SchemaVersion", "string_only",
        "copy-image-set example 3 sends \"SchemaVersion\":\"1.1\" (a string); every "
        f"{CLI_EXAMPLES}/update-image-set-metadata.rst example sends SchemaVersion 1.1 (a number)",
        ("string_only", "copiableAttributes' SchemaVersion, when present, must be the string \"1.1\""),
        ("number_ok", "the number 1.1 is accepted too, as the update-image-set-metadata "
                      "examples write it")),
)

SWITCHES += (
    _switch(
        "reads_while_locked",
        "GetImageSet, ListImageSetVersions and GetImageSetMetadata of a LOCKED image set "
        "(a copy, an update or a deletion running on it)", "answer",
        "service model: every image-set operation lists ConflictException, the reads "
        "included; the copy examples show a LOCKED image set read with GetImageSet, evidence "
        "that does not tell the operations or the image sets (source or destination) apart",
        ("answer", "reads answer as usual: the image set shows LOCKED with its activity"),
        ("conflict", "the three reads answer 409 ConflictException while the image set is "
                     "LOCKED (SearchImageSets, on the data store, still answers)")),
    _switch(
        "revert_primary",
        "UpdateImageSetMetadata revertToVersionId on a primary image set", "allowed",
        "developer guide, update-image-set-metadata: 'The Patient and Series level metadata "
        "elements can not be updated for primary image sets'; whether a revert counts as "
        "such an update is not said",
        ("allowed", "the revert makes a new version with the named version's content"),
        ("refused", "400 ValidationException at once: a primary image set's metadata cannot "
                    "be updated, reverts included")),
    _switch(
        "revert_to_failed",
        "UpdateImageSetMetadata revertToVersionId naming a COPY_FAILED or UPDATE_FAILED "
        "version", "allowed",
        "not documented either way: the API reference says revertToVersionId names 'the "
        "image set version identifier to revert to'",
        ("allowed", "the revert makes a new version with the failed version's content (the "
                    "content before the failed operation)"),
        ("validation", "400 ValidationException at once: a failed version cannot be "
                       "reverted to")),
    _switch(
        "promote_side_effects",
        "what a successful promoteToPrimary copy changes besides the image set it answers",
        "none",
        "service model, CopyImageSetRequest.promoteToPrimary: 'promote the given image set "
        "to the primary DICOM hierarchy'; which image set 'the given' one is (the source, "
        "the destination) and what happens to a primary image set already there is not said",
        ("none", "only the image set the copy answers is primary; nothing else changes"),
        ("source_demoted", "the copy's source is no longer primary (it was moved into the "
                           "hierarchy): its latest version reads isPrimary false"),
        ("study_demoted", "every other primary image set of the study is no longer primary "
                          "(one primary image set per study)")),
)

REGISTRY: Mapping[str, Switch] = MappingProxyType({s.name: s for s in SWITCHES})


def validate(assume: Mapping[str, Any]) -> dict[str, str]:
    """A plain copy of `assume` after checking every name and value against the registry.

    Raises ValueError naming the choices: the known switches for an unknown name, the
    readings for an unknown value.
    """
    if not isinstance(assume, Mapping):
        raise ValueError(f"assume must be an object of NAME: VALUE, not {assume!r}")
    out: dict[str, str] = {}
    for name, value in assume.items():
        switch = REGISTRY.get(name)
        if switch is None:
            raise ValueError(f"unknown assumption {name!r}; the switches are: {', '.join(REGISTRY)}")
        if value not in switch.values:
            raise ValueError(f"unknown reading {value!r} of assumption {name!r}; "
                             f"choose one of: {', '.join(switch.values)}")
        out[name] = value
    return out


def parse_assignment(text: str) -> tuple[str, str]:
    """'NAME=VALUE' -> (name, value), both checked against the registry (ValueError)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    name, value = name.strip(), value.strip()
    validate({name: value})
    return name, value


def current(assume: Mapping[str, str]) -> dict[str, str]:
    """Every switch's value: the given ones over the defaults."""
    return {name: assume.get(name, switch.default) for name, switch in REGISTRY.items()}


def describe(assume: Mapping[str, str]) -> list[dict[str, Any]]:
    """The registry as JSON-able rows, with each switch's current value."""
    values = current(assume)
    return [{"name": s.name, "behaviour": s.behaviour, "value": values[s.name], "default": s.default,
             "readings": {r.value: r.meaning for r in s.readings}, "evidence": s.evidence}
            for s in SWITCHES]
