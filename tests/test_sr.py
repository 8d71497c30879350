"""DICOM SR (TID 1500) export and import: exact round trip, highdicom validation, references."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
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
    sr_bytes,
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
    measurements = {m.name.meaning: m for m in l1.get_measurements()}
    ha = measurements["Anterior vertebral body height"]
    assert ha.unit.value == "mm"
    assert ha.value == pytest.approx(records["L1"]["anterior_height"], rel=1e-12)
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
    wedge = measurements["Vertebral wedge ratio (anterior / posterior height)"]
    assert wedge.unit.value == "1"
    assert wedge.value == pytest.approx(records["L1"]["wedge_ratio"], rel=1e-12)
    angle = measurements["Vertebral wedge angle (positive = kyphotic)"]
    assert angle.unit.value == "deg"
    loss = measurements["Maximum vertebral height loss"]
    assert loss.unit.value == "%"
    assert loss.method.meaning.startswith("Reference height: mean of adjacent")
    grades = [e for e in l1.get_qualitative_evaluations() if e.name.value == "VH-GRADE"]
    assert [g.value.value for g in grades] == [f"VH-G{int(records['L1']['grade'])}"]
    landmarks = [m for m in l1.get_measurements() if "landmark" in m.name.meaning]
    assert len(landmarks) == 12
    assert all(m.unit.value == "{pixel}" for m in landmarks)


def test_uncalibrated_real_cr_film_uses_pixel_units():
    film = get_testdata_file("RG1_UNCR.dcm")
    annotation = _rg1_annotation()
    data = sr_bytes(annotation, film)
    groups = _raw_groups(pydicom.dcmread(io.BytesIO(data)))
    heights = [
        item
        for level in annotation.vertebrae
        for name, items in groups[level].items()
        if name.endswith("vertebral body height")
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
    assert not any(n.endswith("height") for n in names)
    assert "Superior anterior landmark, column" in names


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


def test_without_landmark_values_points_come_from_the_height_polylines(pre, pre_sr):
    _path, annotation, _film = pre
    ds = pydicom.dcmread(io.BytesIO(pre_sr))
    (imaging,) = [
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    ]
    for group in imaging.ContentSequence:
        group.ContentSequence = [
            c
            for c in group.ContentSequence
            if "landmark" not in c.ConceptNameCodeSequence[0].CodeMeaning
        ]
    back = annotation_from_sr(ds)
    for level, points in annotation.vertebrae.items():
        assert set(back.vertebrae[level]) == set(points)
        for name, xy in points.items():
            np.testing.assert_allclose(back.vertebrae[level][name], xy, atol=1e-3)  # 32-bit SCOORD


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
    assert len(local) >= 20
    assert len(set(local.values())) == len(local)
