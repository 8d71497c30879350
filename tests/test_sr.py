"""DICOM SR (TID 1500) export and import: exact round trip, highdicom validation, references."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from _dicom_validators import dciodvfy_errors, dsrdump
from _report_series import COLUMNS, ROWS, write_series
from pydicom.data import get_testdata_file

from vheight.annotation import POINT_NAMES, Annotation, ImageRef, load_annotation
from vheight.calibration import Calibration
from vheight.cli import main
from vheight.morphometry import measure
from vheight.sr import (
    ANNOTATION_GROUP_ID,
    SCHEME,
    SRExportError,
    annotation_from_sr,
    build_sr,
    newest_results,
    result_series_uid,
    sr_bytes,
    sr_facts,
    write_sr,
)

STANDARD_SCHEMES = {"DCM", "SCT", "UCUM", "UMLS", "NCIt", "LN", "RFC5646"}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="module")
def pre(series):
    path = series["pre"]
    return path, load_annotation(path), path.parent / "pre.dcm"


@pytest.fixture(scope="module")
def pre_sr(pre):
    _path, annotation, film = pre
    return sr_bytes(annotation, film)


def _rg1_annotation(**changes) -> Annotation:
    """Four vertebrae on the real RG1 CR film (1955 x 1841, PixelSpacing 0\\0, MONOCHROME1)."""
    vertebrae = {}
    for i, level in enumerate(("T12", "L1", "L2", "L3")):
        y = 400.0 + 300.0 * i + 0.123456789
        x = 700.0 + 10.0 * i + 1.0 / 3.0
        vertebrae[level] = {
            "superior_anterior": (x, y + (60.0 if level == "L1" else 10.0)),
            "superior_middle": (x + 140.2, y + 5.55555),
            "superior_posterior": (x + 280.7, y),
            "inferior_anterior": (x + 2.0, y + 230.0),
            "inferior_middle": (x + 141.0, y + 226.0),
            "inferior_posterior": (x + 282.0, y + 231.0),
        }
    data = dict(
        image=ImageRef(file="RG1_UNCR.dcm", rows=1955, columns=1841),
        timepoint="pre",
        vertebrae=vertebrae,
        treated_levels=(),
    )
    data.update(changes)
    return Annotation(**data)


def _raw_groups(ds: pydicom.Dataset) -> dict[str, dict[str, list[pydicom.Dataset]]]:
    """Measurement groups read straight from the pydicom tree: tracking id -> concept -> items."""
    (imaging,) = [
        item
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "126010"  # Imaging Measurements
    ]
    groups = {}
    for group in imaging.ContentSequence:
        assert group.ConceptNameCodeSequence[0].CodeValue == "125007"  # Measurement Group
        items: dict[str, list[pydicom.Dataset]] = {}
        for child in group.ContentSequence:
            items.setdefault(child.ConceptNameCodeSequence[0].CodeMeaning, []).append(child)
        groups[items["Tracking Identifier"][0].TextValue] = items
    return groups


def _unit(item: pydicom.Dataset) -> str:
    return item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue


def _dicom_codes(ds: pydicom.Dataset) -> set[str]:
    """Coding scheme designators used anywhere in the dataset."""
    found: set[str] = set()

    def walk(d: pydicom.Dataset) -> None:
        for element in d:
            if element.VR == "SQ":
                for item in element.value:
                    if "CodingSchemeDesignator" in item and "CodeValue" in item:
                        found.add(str(item.CodingSchemeDesignator))
                    walk(item)

    walk(ds)
    return found


def test_round_trip_points_and_facts_are_exact(pre, pre_sr):
    _path, annotation, _film = pre
    back = annotation_from_sr(pre_sr)
    assert list(back.vertebrae) == list(annotation.vertebrae)
    for level, points in annotation.vertebrae.items():
        assert list(back.vertebrae[level]) == list(points)
        for name, (x, y) in points.items():
            bx, by = back.vertebrae[level][name]
            assert abs(bx - x) <= 1e-6 and abs(by - y) <= 1e-6, (level, name)
    assert back.timepoint == annotation.timepoint == "pre"
    assert back.treated_levels == annotation.treated_levels
    assert back.image == annotation.image
    assert (back.annotator, back.notes) == (annotation.annotator, annotation.notes)
    assert back.calibration is None


def test_round_trip_gives_the_same_measurements(pre, pre_sr):
    _path, annotation, film = pre
    calibration, _ = Calibration.from_dataset(pydicom.dcmread(film, stop_before_pixels=True))
    before = measure(annotation, calibration).records()
    after = measure(annotation_from_sr(pre_sr), calibration).records()
    assert len(before) == len(after) == 5
    for a, b in zip(before, after, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert b[key] == value, key


def test_sr_passes_highdicom_parsing_and_has_the_required_attributes(tmp_path, pre, pre_sr):
    _path, annotation, film = pre
    film_ds = pydicom.dcmread(film, stop_before_pixels=True)
    path = tmp_path / "sr.dcm"
    path.write_bytes(pre_sr)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = report.get_image_measurement_groups()
    assert len(groups) == len(annotation.vertebrae) + 1
    assert groups[0].tracking_identifier == ANNOTATION_GROUP_ID
    ds = pydicom.dcmread(io.BytesIO(pre_sr))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert ds.Modality == "SR"
    for keyword in (
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "ContentDate",
        "ContentTime",
        "CompletionFlag",
        "VerificationFlag",
        "ValueType",
        "ConceptNameCodeSequence",
        "ContentTemplateSequence",
        "PatientID",
        "PatientName",
        "StudyDate",
    ):
        assert keyword in ds, keyword
    assert ds.StudyInstanceUID == film_ds.StudyInstanceUID
    assert ds.PatientID == film_ds.PatientID
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == film_ds.SOPInstanceUID
    # Every coding scheme used is standard or declared.
    declared = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert SCHEME in declared
    assert _dicom_codes(ds) - STANDARD_SCHEMES <= declared


def test_vertebra_groups_hold_coded_heights_ratios_angles_grade(pre, pre_sr):
    _path, annotation, film = pre
    calibration, _ = Calibration.from_dataset(pydicom.dcmread(film, stop_before_pixels=True))
    records = {r["level"]: r for r in measure(annotation, calibration).records()}
    sr = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(io.BytesIO(pre_sr)))
    groups = hd.sr.MeasurementReport.from_sequence(sr.content).get_image_measurement_groups()
    by_level = {g.tracking_identifier: g for g in groups[1:]}
    assert list(by_level) == list(annotation.vertebrae)
    l1 = by_level["L1"]
    assert l1.tracking_uid is not None
    assert l1.finding_sites[0].value.value == "66794005"  # SCT L1 vertebra
    measurements = l1.get_measurements()

    def one(name: tuple[str, str], method: str | None = None) -> hd.sr.Measurement:
        found = [
            m
            for m in measurements
            if (m.name.scheme_designator, m.name.value) == name
            and (method is None or (m.method is not None and m.method.value == method))
        ]
        assert len(found) == 1, (name, method)
        return found[0]

    heights = [
        m for m in measurements if (m.name.scheme_designator, m.name.value) == ("DCM", "121207")
    ]
    modifiers = {}
    for m in heights:
        (site,) = m.finding_sites
        assert site.value.value == "66794005"
        modifier = site.topographical_modifier
        modifiers[(modifier.scheme_designator, modifier.value)] = m
    assert set(modifiers) == {("SCT", "255549009"), ("NCIt", "C25569"), ("SCT", "255551008")}
    ha = modifiers[("SCT", "255549009")]
    assert ha.unit.value == "mm"
    assert ha.value == pytest.approx(records["L1"]["anterior_height"], rel=1e-12)
    hp = modifiers[("SCT", "255551008")]
    assert hp.value == pytest.approx(records["L1"]["posterior_height"], rel=1e-12)
    (coords,) = ha.referenced_coordinates
    assert coords.graphic_type.value == "POLYLINE"
    expected = (
        np.array(
            [
                annotation.vertebrae["L1"]["superior_anterior"],
                annotation.vertebrae["L1"]["inferior_anterior"],
            ]
        )
        + 0.5
    )
    np.testing.assert_allclose(np.asarray(coords.value).reshape(-1, 2), expected, atol=1e-3)
    source = coords.ContentSequence[0].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == annotation.image.sop_instance_uid
    wedge = one(("SCT", "118586006"), "VH-WR")
    assert wedge.unit.value == "1"
    assert wedge.value == pytest.approx(records["L1"]["wedge_ratio"], rel=1e-12)
    assert one(("SCT", "118586006"), "VH-MR").value == pytest.approx(records["L1"]["mid_ratio"])
    angle = one(("SCT", "1483009"), "VH-WA")
    assert angle.unit.value == "deg"
    assert angle.value == pytest.approx(records["L1"]["wedge_angle_deg"], rel=1e-12)
    loss = one((SCHEME, "VH-LX"))
    assert loss.unit.value == "%"
    assert loss.method.meaning.startswith("Reference height: mean of adjacent")
    grades = [e for e in l1.get_qualitative_evaluations() if e.name.value == "VH-GRADE"]
    assert [g.value.value for g in grades] == [f"VH-G{int(records['L1']['grade'])}"]
    # No private concept name where a standard one exists.
    private = {m.name.value for m in measurements if m.name.scheme_designator == SCHEME}
    assert private == {"VH-LA", "VH-LM", "VH-LP", "VH-LX"}


def test_uncalibrated_real_cr_film_uses_pixel_units():
    film = get_testdata_file("RG1_UNCR.dcm")
    annotation = _rg1_annotation()
    data = sr_bytes(annotation, film)
    groups = _raw_groups(pydicom.dcmread(io.BytesIO(data)))
    heights = [
        item
        for level in annotation.vertebrae
        for name, items in groups[level].items()
        if name == "Height"
        for item in items
    ]
    assert len(heights) == 12
    assert {_unit(item) for item in heights} == {"{pixel}"}
    # No spacing is recorded when there is none.
    assert "Vertical Pixel Spacing" not in groups[ANNOTATION_GROUP_ID]
    assert (
        groups[ANNOTATION_GROUP_ID]["Pixel spacing calibration"][0]
        .ConceptCodeSequence[0]
        .CodeMeaning
        == "Spacing px"
    )
    back = annotation_from_sr(data)
    assert (
        back.image.sop_instance_uid == pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID
    )
    assert back.vertebrae == annotation.vertebrae


@pytest.mark.parametrize(
    "calibration",
    [
        pytest.param(
            Calibration.user(row_spacing_mm=0.143, description="25.4 mm marker"), id="user"
        ),
        pytest.param(
            Calibration.user(row_spacing_mm=0.15, col_spacing_mm=0.1), id="user-anisotropic"
        ),
    ],
)
def test_annotation_calibration_round_trips(calibration):
    film = get_testdata_file("RG1_UNCR.dcm")
    annotation = _rg1_annotation(calibration=calibration)
    data = sr_bytes(annotation, film)
    back = annotation_from_sr(data)
    assert back.calibration == calibration
    group = _raw_groups(pydicom.dcmread(io.BytesIO(data)))[ANNOTATION_GROUP_ID]
    spacing = {
        name: float(items[0].MeasuredValueSequence[0].FloatingPointValue)
        for name, items in group.items()
        if name.endswith("Pixel Spacing")
    }
    assert spacing == {
        "Vertical Pixel Spacing": calibration.row_spacing_mm,
        "Horizontal Pixel Spacing": calibration.col_spacing_mm,
    }


def test_incomplete_vertebra_keeps_its_points_and_is_not_measured():
    film = get_testdata_file("RG1_UNCR.dcm")
    annotation = _rg1_annotation()
    for name in POINT_NAMES[3:]:
        annotation = annotation.without_point("L3", name)
    annotation = annotation.with_treated("L1", True)
    data = sr_bytes(annotation, film)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.CompletionFlag == "PARTIAL"
    back = annotation_from_sr(ds)
    assert back.vertebrae["L3"] == annotation.vertebrae["L3"]
    assert len(back.vertebrae["L3"]) == 3
    assert back.treated_levels == ("L1",)
    names = set(_raw_groups(ds)["L3"])
    assert not any(n.endswith("height") or n == "Height" for n in names)


def test_tracking_uid_is_stable_for_a_level_within_a_study(series):
    uids = []
    for timepoint in ("pre", "post"):
        annotation = load_annotation(series[timepoint])
        sr = build_sr(annotation, series[timepoint].parent / f"{timepoint}.dcm")
        groups = _raw_groups(sr)
        uids.append(
            {
                level: groups[level]["Tracking Unique Identifier"][0].UID
                for level in annotation.vertebrae
            }
        )
    assert uids[0] == uids[1]
    assert len(set(uids[0].values())) == len(uids[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"sop_instance_uid": "1.2.3.4"}, "SOP Instance UID 1.2.3.4", id="other-sop-uid"
        ),
        pytest.param({"rows": ROWS + 1}, "rows", id="other-size"),
    ],
)
def test_export_refuses_a_film_that_is_not_the_annotated_one(pre, change, message):
    _path, annotation, film = pre
    wrong = replace(annotation, image=replace(annotation.image, **change))
    with pytest.raises(SRExportError, match=message):
        build_sr(wrong, film)


def test_export_needs_a_dicom_film(tmp_path, pre):
    _path, annotation, _film = pre
    png = tmp_path / "film.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(SRExportError, match="not a DICOM file"):
        build_sr(replace(annotation, image=ImageRef(columns=COLUMNS)), png)


def test_reading_something_that_is_not_an_sr_fails_clearly(pre):
    _path, _annotation, film = pre
    with pytest.raises(SRExportError, match="not a Comprehensive or Enhanced SR"):
        annotation_from_sr(film)
    with pytest.raises(SRExportError, match="not a DICOM file"):
        annotation_from_sr(b"not dicom at all")


def test_write_sr_is_a_file_pydicom_reads(tmp_path, pre):
    _path, annotation, film = pre
    out = write_sr(annotation, film, tmp_path / "deep" / "sr.dcm")
    assert pydicom.dcmread(out).SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert [p.name for p in out.parent.iterdir()] == ["sr.dcm"]


def test_cli_exports_and_reads_back(tmp_path, pre, capsys):
    path, annotation, _film = pre
    sr_path, pr_path = tmp_path / "sr.dcm", tmp_path / "pr.dcm"
    code = main(
        ["sr", str(path), "--out", str(sr_path), "--gsps", str(pr_path), "--format", "json"]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["sr"] == str(sr_path) and record["gsps"] == str(pr_path)
    assert record["levels"] == 5
    out = tmp_path / "back.vheight.json"
    assert main(["sr", "--read", str(sr_path), "--out", str(out)]) == 0
    assert load_annotation(out).vertebrae == annotation.vertebrae
    capsys.readouterr()
    assert main(["sr", "--read", str(sr_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "vheight.annotation"
    assert printed["timepoint"] == "pre"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["sr"], id="nothing"),
        pytest.param(["sr", "a.vheight.json", "--read", "b.dcm"], id="both"),
        pytest.param(["sr", "a.vheight.json"], id="no-output"),
    ],
)
def test_cli_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2


def test_cli_error_exits_1_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"nope")
    assert main(["sr", "--read", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_every_mandatory_module_has_its_type_1_and_2_attributes(pre_sr):
    """A dciodvfy-like check against the IOD tables highdicom ships (PS3.3)."""
    from highdicom._standard_utils import (
        check_required_attributes,
        get_iod_module_map,
        get_sop_class_iod_map,
    )

    ds = pydicom.dcmread(io.BytesIO(pre_sr))
    iod = get_sop_class_iod_map()[ds.SOPClassUID]
    assert iod == "comprehensive-sr"
    checked = []
    for module in get_iod_module_map()[iod]:
        # The content tree's conditional (1C) attributes are flattened in these
        # tables; the tree itself is validated by highdicom's parser above.
        if module["usage"] != "M" or module["key"] == "sr-document-content":
            continue
        check_required_attributes(ds, module["key"])
        checked.append(module["key"])
    assert {"patient", "general-study", "sr-document-general", "sop-common"} <= set(checked)


def test_a_png_film_has_no_dicom_identity(tmp_path, pre):
    import cv2

    from vheight.loader import load_film

    _path, annotation, _film = pre
    png = tmp_path / "film.png"
    cv2.imwrite(str(png), np.zeros((ROWS, COLUMNS), np.uint8))
    bare = replace(annotation, image=ImageRef(rows=ROWS, columns=COLUMNS))
    with pytest.raises(SRExportError, match="film.png: a PNG film has no DICOM identity"):
        build_sr(bare, load_film(png))


def test_image_library_describes_the_film(pre_sr, pre):
    _path, _annotation, film = pre
    film_ds = pydicom.dcmread(film, stop_before_pixels=True)
    ds = pydicom.dcmread(io.BytesIO(pre_sr))
    (library,) = [
        item
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"
    ]
    entry = library.ContentSequence[0].ContentSequence[0]
    assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == film_ds.SOPInstanceUID
    descriptors = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in entry.ContentSequence}
    assert descriptors["Modality"].ConceptCodeSequence[0].CodeValue == "CR"
    assert int(descriptors["Pixel Data Rows"].MeasuredValueSequence[0].NumericValue) == ROWS
    assert int(descriptors["Pixel Data Columns"].MeasuredValueSequence[0].NumericValue) == COLUMNS


def _without_exact_landmarks(data: bytes) -> pydicom.Dataset:
    """The SR with the landmarks taken out of its facts (as software other than vheight writes)."""
    ds = pydicom.dcmread(io.BytesIO(data))

    def walk(items):
        for item in items:
            if item.get("ValueType") == "TEXT" and '"vheight.annotation.facts"' in item.TextValue:
                facts = json.loads(item.TextValue)
                facts.pop("landmarks")
                item.TextValue = json.dumps(facts)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return ds


def test_without_landmark_values_points_come_from_the_height_polylines(pre, pre_sr):
    _path, annotation, _film = pre
    back = annotation_from_sr(_without_exact_landmarks(pre_sr))
    for level, points in annotation.vertebrae.items():
        assert set(back.vertebrae[level]) == set(points)
        for name, xy in points.items():
            np.testing.assert_allclose(back.vertebrae[level][name], xy, atol=1e-3)  # 32-bit SCOORD


OLD_SR = Path(__file__).parent / "data" / "sr" / "pre_private_codes_v0.dcm"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


def test_reads_a_document_written_with_the_old_private_codes():
    """``pre_private_codes_v0.dcm``: vheight 0.x's SR of the sample pre film (99VHEIGHT heights,
    ratios and angles, landmarks as numeric items, no landmarks in the facts)."""
    old = pydicom.dcmread(OLD_SR)
    assert "VH-HA" in str(old.ContentSequence) and "121207" not in str(old.ContentSequence)
    expected = load_annotation(SAMPLES / "pre.vheight.json")
    back = annotation_from_sr(OLD_SR)
    assert list(back.vertebrae) == list(expected.vertebrae)
    for level, points in expected.vertebrae.items():
        for name, xy in points.items():
            np.testing.assert_allclose(back.vertebrae[level][name], xy, rtol=0, atol=1e-9)
    assert back.timepoint == expected.timepoint
    assert back.image.sop_instance_uid == expected.image.sop_instance_uid
    # Its polylines are read too when the landmark items are missing.
    for group in old.ContentSequence[-1].ContentSequence:
        group.ContentSequence = [
            c for c in group.ContentSequence
            if "landmark" not in c.ConceptNameCodeSequence[0].CodeMeaning
        ]  # fmt: skip
    from_lines = annotation_from_sr(old)
    for level, points in expected.vertebrae.items():
        for name, xy in points.items():
            np.testing.assert_allclose(from_lines.vertebrae[level][name], xy, atol=1e-3)
    facts = sr_facts(pydicom.dcmread(OLD_SR))
    assert facts.is_vheight and facts.film == expected.image.sop_instance_uid


def test_local_codes_fit_their_value_representations(pre_sr):
    """Code Value is SH (16 characters), Code Meaning LO (64); every local code is unique."""
    ds = pydicom.dcmread(io.BytesIO(pre_sr))
    local: dict[str, str] = {}

    def walk(d: pydicom.Dataset) -> None:
        for element in d:
            if element.VR == "SQ":
                for item in element.value:
                    if item.get("CodingSchemeDesignator") == SCHEME and "CodeValue" in item:
                        assert len(item.CodeValue) <= 16 and len(item.CodeMeaning) <= 64
                        assert (
                            local.setdefault(item.CodeValue, item.CodeMeaning) == item.CodeMeaning
                        )
                    walk(item)

    walk(ds)
    assert len(local) >= 15  # methods, losses, grades, deformity, treated, spacing
    assert len(set(local.values())) == len(local)


# -- independent validators, character set, versions ---------------------------------------


@pytest.mark.parametrize("source", ["series", "sample"])
def test_dsrdump_and_dciodvfy_accept_the_sr(tmp_path, pre, source):
    if source == "series":
        _path, annotation, film = pre
    else:
        annotation = load_annotation(SAMPLES / "pre.vheight.json")
        film = SAMPLES / "pre.dcm"
    path = write_sr(annotation, film, tmp_path / "sr.dcm")
    dump = dsrdump(path)
    assert dump.count("Measurement Group") >= len(annotation.vertebrae) + 1
    assert '(121207,DCM,"Height")' in dump
    assert dciodvfy_errors(path) == []


READER = "Łukasz Żółć 李"


def test_a_reader_name_outside_the_film_character_set_is_written_in_utf8(tmp_path, pre):
    _path, annotation, film = pre
    film_ds = pydicom.dcmread(film, stop_before_pixels=True)
    film_ds.SpecificCharacterSet = "ISO_IR 100"
    film_ds.PatientName = "Müller^Jürgen"
    path = write_sr(replace(annotation, annotator=READER), film_ds, tmp_path / "sr.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen"
    names = [
        str(item.PersonName) for item in ds.ContentSequence if item.get("ValueType") == "PNAME"
    ]
    assert names == [f"{READER}^"]
    assert sr_facts(ds).reader == READER
    assert annotation_from_sr(path).annotator == READER
    dump = dsrdump(path)
    assert READER in dump and "Müller^Jürgen" in dump
    assert dciodvfy_errors(path) == []


def test_a_reader_name_the_film_character_set_holds_keeps_it(pre):
    _path, annotation, film = pre
    film_ds = pydicom.dcmread(film, stop_before_pixels=True)
    film_ds.SpecificCharacterSet = "ISO_IR 100"
    ds = build_sr(replace(annotation, annotator="Jürgen Groß"), film_ds)
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert build_sr(replace(annotation, annotator="J Doe"), film_ds).SpecificCharacterSet == (
        "ISO_IR 100"
    )


def test_reexport_names_its_predecessor_in_the_same_series(tmp_path, pre):
    _path, annotation, film = pre
    first = build_sr(replace(annotation, annotator="reader A"), film)
    assert first.SeriesInstanceUID == result_series_uid(
        annotation.image.sop_instance_uid, "reader A"
    )
    assert "PredecessorDocumentsSequence" not in first
    edited = annotation.with_point("L1", "superior_anterior", (201.25, 150.5))
    second = build_sr(replace(edited, annotator="reader A"), film, predecessor=first)
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert second.InstanceNumber == first.InstanceNumber + 1
    (study,) = second.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == first.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    other = build_sr(replace(annotation, annotator="reader B"), film)
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    facts = [sr_facts(d) for d in (second, first, other)]
    assert facts[0].predecessors == (first.SOPInstanceUID,)
    current = newest_results(facts)
    film_uid = annotation.image.sop_instance_uid
    assert {k: v.sop_instance_uid for k, v in current.items()} == {
        (film_uid, "reader A"): second.SOPInstanceUID,
        (film_uid, "reader B"): other.SOPInstanceUID,
    }
    path = tmp_path / "second.dcm"
    second.save_as(path, enforce_file_format=True)
    dsrdump(path)
    assert dciodvfy_errors(path) == []


def test_a_predecessor_of_another_reader_or_film_is_refused(pre, series):
    _path, annotation, film = pre
    first = build_sr(replace(annotation, annotator="reader A"), film)
    with pytest.raises(SRExportError, match="reader 'reader A'.*reader 'reader B'"):
        build_sr(replace(annotation, annotator="reader B"), film, predecessor=first)
    post = load_annotation(series["post"])
    with pytest.raises(SRExportError, match="reports another film"):
        build_sr(
            replace(post, annotator="reader A"), series["post"].parent / "post.dcm",
            predecessor=first,
        )  # fmt: skip


def test_newest_results_without_predecessors_takes_the_latest_content():
    def doc(uid: str, when: str, number: int = 1, reader: str = "A") -> object:
        ds = pydicom.Dataset()
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = uid, "1.2", "1.1"
        ds.ContentDate, ds.ContentTime, ds.InstanceNumber = when[:8], when[8:], number
        ds.Manufacturer = "vheight"
        ref = pydicom.Dataset()
        ref.ReferencedSOPInstanceUID = "9.9"
        series = pydicom.Dataset()
        series.ReferencedSOPSequence = [ref]
        study = pydicom.Dataset()
        study.ReferencedSeriesSequence = [series]
        ds.CurrentRequestedProcedureEvidenceSequence = [study]
        return replace(sr_facts(ds), reader=reader)

    docs = [doc("1", "20260101100000"), doc("2", "20260102090000"), doc("3", "20260102090000", 2)]
    assert newest_results(docs)[("9.9", "A")].sop_instance_uid == "3"
    assert newest_results([*docs, doc("4", "20250101000000", reader="B")])[("9.9", "B")]


def test_sr_export_error_lives_in_errors_and_stays_importable_from_sr():
    import vheight.errors
    import vheight.sr

    assert vheight.sr.SRExportError is vheight.errors.SRExportError
    assert issubclass(SRExportError, vheight.errors.VHeightError)
    assert issubclass(SRExportError, ValueError)


def test_cli_export_over_an_earlier_sr_of_the_same_film_replaces_it(tmp_path, pre):
    path, annotation, film = pre
    out = tmp_path / "sr.dcm"
    assert main(["sr", str(path), "--image", str(film), "--out", str(out), "--format", "json"]) == 0
    first = pydicom.dcmread(out)
    assert main(["sr", str(path), "--image", str(film), "--out", str(out), "--format", "json"]) == 0
    second = pydicom.dcmread(out)
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    assert sr_facts(second).predecessors == (first.SOPInstanceUID,)
    assert second.InstanceNumber == first.InstanceNumber + 1
