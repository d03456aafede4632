"""The pure parts of `batchcopy select`: --where parsing, the SearchImageSets criteria it
makes (one EQUAL and one BETWEEN at most, one search per listed value), the checks of
summaries and series, and the rows of one source within the 1,000-frame limit."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from batchcopy.query import where
from batchcopy.query.rows import SeriesInfo, rows_for, series_of

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


def q(*texts: str) -> where.Query:
    return where.parse(texts)


def test_parsing_names_operators_lists_files_and_ranges(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("# patients\nP1\n\nP2\n")
    query = where.parse(["patientid=@ids.txt", "StudyDate=20190101-", "modality = ct , mr",
                         "SeriesDescription~*AX*", "IsPrimary=yes", "UpdatedAt>=2024-03-01"],
                        base=tmp_path)
    names = [(c.field.name, c.op, c.values) for c in query.conditions]
    assert names[0] == ("PatientID", "=", ("P1", "P2"))
    assert names[1] == ("StudyDate", "=", (("20190101", where.FAR_FUTURE),))
    assert names[2] == ("Modality", "=", ("ct", "mr"))
    assert names[3] == ("SeriesDescription", "~", ("*AX*",))
    assert names[4] == ("IsPrimary", "=", (True,))
    assert names[5][:2] == ("UpdatedAt", ">=")
    assert where.parse_one("StudyDate=2019-01-05").values == ("20190105",)
    assert [c.field.name for c in query.study] == ["PatientID", "StudyDate", "IsPrimary", "UpdatedAt"]


def test_criteria_narrow_with_one_equal_and_one_between() -> None:
    searches = where.criteria(q("PatientID=P1,P2", "AccessionNumber=A9", "StudyDate>=20190101",
                                "StudyDate<20200101", "Modality=CT"), NOW)
    assert len(searches) == 1  # the accession number narrows more than the patients
    (equal, between) = searches[0]["filters"]
    assert equal == {"operator": "EQUAL", "values": [{"DICOMAccessionNumber": "A9"}]}
    assert [v["DICOMStudyDateAndTime"] for v in between["values"]] == [
        {"DICOMStudyDate": "20190101", "DICOMStudyTime": "000000"},
        {"DICOMStudyDate": "20191231", "DICOMStudyTime": "235959.999999"}]
    assert searches[0]["sort"] == {"sortField": "createdAt", "sortOrder": "ASC"}
    per_patient = where.criteria(q("PatientID=P1,P2,P1"), NOW)
    assert [s["filters"][0]["values"][0]["DICOMPatientId"] for s in per_patient] == ["P1", "P2"]
    assert where.criteria(q("Modality=CT"), NOW) == [{"sort": {"sortField": "createdAt",
                                                               "sortOrder": "ASC"}}]
    (updated,) = where.criteria(q("UpdatedAt>=2024-03-01"), NOW)[0]["filters"]
    low, high = (v["updatedAt"] for v in updated["values"])
    assert low < datetime(2024, 3, 1, tzinfo=timezone.utc) and high.timestamp() > NOW


def test_summaries_and_series_are_checked_as_written() -> None:
    summary = {"imageSetId": "x", "isPrimary": False, "updatedAt": datetime(2024, 3, 2, tzinfo=timezone.utc),
               "DICOMTags": {"DICOMPatientId": "P1", "DICOMStudyDate": "20191231"}}
    assert where.study_matches(summary, q("PatientID=P0,P1", "StudyDate=20190101-20191231"))
    assert not where.study_matches(summary, q("StudyDate<20191231"))
    assert where.study_matches(summary, q("StudyDate!=20190101-20190601", "UpdatedAt=2024-03-02"))
    assert not where.study_matches(summary, q("IsPrimary=true"))
    assert not where.study_matches(summary, q("AccessionNumber=A1"))  # absent: no match
    series = {"Modality": "CT", "BodyPartExamined": "CHEST", "SeriesDescription": "Axial 1mm",
              "SeriesInstanceUID": "1.2.3"}
    assert where.series_matches(series, q("modality=ct", "SeriesDescription~*axial*"))
    assert not where.series_matches(series, q("BodyPartExamined!=chest"))
    assert where.series_matches(series, q("SeriesInstanceUID=1.2.4,1.2.3"))


def test_rows_keep_each_call_within_1000_frames() -> None:
    small = [SeriesInfo(f"1.{i}", {}, 10, 400) for i in range(3)]
    one = rows_for("d" * 32, "s" * 32, "3", small[:2])
    assert [r["series_instance_uid"] for r in one.rows] == ["1.0 1.1"] and not one.split
    assert one.rows[0]["row_id"] == "s" * 32 and one.rows[0]["source_version_id"] == ""
    three = rows_for("d" * 32, "s" * 32, "3", small, pin=True)
    assert [r["series_instance_uid"] for r in three.rows] == ["1.0 1.1", "1.2"] and three.split
    assert [r["row_id"] for r in three.rows] == ["s" * 32 + "-1", "s" * 32 + "-2"]
    assert {r["source_version_id"] for r in three.rows} == {"3"}
    huge = SeriesInfo("1.9", {}, 3, 1500, ("1.9.1", "1.9.2", "1.9.3"))
    new = rows_for("d" * 32, "s" * 32, "3", [huge, small[0]])
    assert new.left_out == ["1.9"] and [r["series_instance_uid"] for r in new.rows] == ["1.0"]
    into = rows_for("d" * 32, "s" * 32, "3", [huge, small[0]], into="t" * 32, force=True)
    assert [(r["series_instance_uid"], r["sop_instance_uid"]) for r in into.rows] == [
        ("1.9", "1.9.1"), ("1.9", "1.9.2"), ("1.9", "1.9.3"), ("1.0", "")]
    assert {r["force"] for r in into.rows} == {"true"} and not into.split


def test_series_of_counts_frames_and_keeps_instances_only_when_too_big() -> None:
    doc = {"Study": {"Series": {
        "1.2": {"DICOM": {"Modality": "CT"}, "Instances": {
            "1.2.1": {"ImageFrames": [{}, {}]}, "1.2.2": {}}},
        "1.3": {"DICOM": {"Modality": "MR"},
                "Instances": {f"1.3.{i}": {"ImageFrames": [{}]} for i in range(1001)}}}}}
    first, second = series_of(doc)
    assert (first.uid, first.instances, first.frames, first.sops) == ("1.2", 2, 3, ())
    assert first.attributes == {"Modality": "CT", "SeriesInstanceUID": "1.2"}
    assert second.frames == 1001 and len(second.sops) == 1001


@pytest.mark.parametrize("text", ["StudyDate>20190101-20200101", "UpdatedAt=yesterday",
                                  "IsPrimary=maybe", "StudyDate~2019*", "Nope=1"])
def test_bad_conditions_say_what_is_accepted(text: str) -> None:
    with pytest.raises(where.WhereError, match=r"--where"):
        where.parse_one(text)
