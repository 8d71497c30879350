"""Grayscale softcopy presentation state: graphics, references, and display polarity."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom_validators import dciodvfy_errors, dcmpschk
from _report_series import COLUMNS, write_series
from pydicom.data import get_testdata_file

from vheight.annotation import Annotation, ImageRef, load_annotation
from vheight.errors import SRExportError
from vheight.gsps import LAYERS, build_gsps, expected_object_counts, gsps_bytes, write_gsps
from vheight.loader import load_film


@pytest.fixture(scope="module", params=["MONOCHROME2", "MONOCHROME1"])
def case(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param.lower())
    paths = write_series(folder, ("pre",), photometric=request.param)
    annotation = load_annotation(paths["pre"])
    film = folder / "pre.dcm"
    data = gsps_bytes(annotation, film)
    return request.param, annotation, film, pydicom.dcmread(io.BytesIO(data))


def _display(pr: pydicom.Dataset, film: pydicom.Dataset) -> np.ndarray:
    """What a viewer shows, per PS3.4 N.2: modality LUT -> presentation VOI -> presentation LUT."""
    values = pydicom.pixels.apply_modality_lut(film.pixel_array, film).astype(np.float64)
    voi = pr.SoftcopyVOILUTSequence[0]
    c, w = float(voi.WindowCenter), float(voi.WindowWidth)
    shown = np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)  # LINEAR window
    if pr.PresentationLUTShape == "INVERSE":
        shown = 1.0 - shown
    return shown


def test_graphics_count_and_layers(case):
    _photometric, annotation, _film, pr = case
    graphics = sum(len(a.get("GraphicObjectSequence", [])) for a in pr.GraphicAnnotationSequence)
    texts = sum(len(a.get("TextObjectSequence", [])) for a in pr.GraphicAnnotationSequence)
    assert (graphics, texts) == expected_object_counts(annotation) == (5 * 11, 5 * 4)
    assert len(pr.GraphicAnnotationSequence) == 5
    layers = [layer.GraphicLayer for layer in pr.GraphicLayerSequence]
    assert set(layers) <= set(LAYERS)
    # L1 of the pre film is wedged: grade 3 (severe), the others normal.
    by_layer = {}
    for ann in pr.GraphicAnnotationSequence:
        label = [
            t.UnformattedTextValue
            for t in ann.TextObjectSequence
            if "grade" in t.UnformattedTextValue
        ]
        by_layer[label[0].split()[0]] = ann.GraphicLayer
    assert by_layer == {
        "T11": "GRADE_0",
        "T12": "GRADE_0",
        "L1": "GRADE_3",
        "L2": "GRADE_0",
        "L3": "GRADE_0",
    }
    texts = [
        t.UnformattedTextValue for a in pr.GraphicAnnotationSequence for t in a.TextObjectSequence
    ]
    assert any(t.startswith("Ha ") and t.endswith(" mm") for t in texts)


def test_references_the_film_and_its_study(case):
    _photometric, _annotation, film, pr = case
    film_ds = pydicom.dcmread(film, stop_before_pixels=True)
    assert pr.SOPClassUID == pydicom.uid.GrayscaleSoftcopyPresentationStateStorage
    assert pr.Modality == "PR"
    assert pr.StudyInstanceUID == film_ds.StudyInstanceUID
    assert pr.PatientID == film_ds.PatientID
    series = pr.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == film_ds.SeriesInstanceUID
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == film_ds.SOPInstanceUID
    for ann in pr.GraphicAnnotationSequence:
        ref = ann.ReferencedImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == film_ds.SOPInstanceUID


def test_points_are_landmarks_in_dicom_pixel_coordinates(case):
    _photometric, annotation, _film, pr = case
    first = pr.GraphicAnnotationSequence[0]
    points = [
        np.array(o.GraphicData) for o in first.GraphicObjectSequence if o.GraphicType == "POINT"
    ]
    expected = [np.array(xy) + 0.5 for xy in annotation.vertebrae["T11"].values()]
    assert all(o.GraphicAnnotationUnits == "PIXEL" for o in first.GraphicObjectSequence)
    np.testing.assert_allclose(points, expected, atol=1e-3)
    lines = [o for o in first.GraphicObjectSequence if o.GraphicType == "POLYLINE"]
    assert sorted(o.NumberOfGraphicPoints for o in lines) == [2, 2, 2, 3, 3]


def test_display_keeps_bone_bright_for_both_photometric_interpretations(case):
    photometric, _annotation, film, pr = case
    film_ds = pydicom.dcmread(film)
    expected_shape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    assert pr.PresentationLUTShape == expected_shape
    shown = _display(pr, film_ds)
    reference = load_film(film).pixels  # vheight's own display: bone bright
    corr = np.corrcoef(shown.ravel(), reference.ravel())[0, 1]
    assert corr > 0.99
    assert np.mean(np.abs(shown - reference)) < 0.02


def test_real_monochrome1_film_keeps_its_window_and_is_inverted():
    path = get_testdata_file("RG1_UNCR.dcm")
    annotation = Annotation(
        image=ImageRef(rows=1955, columns=1841),
        vertebrae={
            "L1": {
                "superior_anterior": (700.0, 420.0),
                "superior_middle": (840.0, 405.0),
                "superior_posterior": (980.0, 400.0),
                "inferior_anterior": (702.0, 630.0),
                "inferior_middle": (841.0, 626.0),
                "inferior_posterior": (982.0, 631.0),
            }
        },
    )
    pr = build_gsps(annotation, path)
    assert pr.PresentationLUTShape == "INVERSE"
    voi = pr.SoftcopyVOILUTSequence[0]
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (15000.0, 30000.0)
    film_ds = pydicom.dcmread(path)
    shown = _display(pr, film_ds)
    reference = load_film(path).pixels
    assert np.corrcoef(shown[::4, ::4].ravel(), reference[::4, ::4].ravel())[0, 1] > 0.99
    buffer = io.BytesIO()
    pr.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert back.SOPInstanceUID == pr.SOPInstanceUID
    assert float(back.SoftcopyVOILUTSequence[0].WindowWidth) == 30000.0


def test_film_without_window_gets_one_from_its_pixels(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    film = tmp_path / "pre.dcm"
    ds = pydicom.dcmread(film)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(film)
    pr = build_gsps(load_annotation(paths["pre"]), film)
    voi = pr.SoftcopyVOILUTSequence[0]
    assert voi.WindowCenterWidthExplanation == "vheight auto"
    values = ds.pixel_array
    assert values.min() <= float(voi.WindowCenter) <= values.max()
    assert 1 <= float(voi.WindowWidth) <= float(values.max()) - float(values.min()) + 1


def test_landmark_off_the_film_is_clamped_to_its_edge(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    annotation = load_annotation(paths["pre"]).with_point("T11", "superior_anterior", (-20.0, 95.0))
    pr = build_gsps(annotation, tmp_path / "pre.dcm")
    point = pr.GraphicAnnotationSequence[0].GraphicObjectSequence[0]
    assert list(point.GraphicData) == [0.0, pytest.approx(95.5)]


def test_incomplete_vertebra_goes_on_the_incomplete_layer(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    annotation = load_annotation(paths["pre"]).without_point("L3", "inferior_posterior")
    out = write_gsps(annotation, tmp_path / "pre.dcm", tmp_path / "pr.dcm")
    pr = pydicom.dcmread(out)
    last = pr.GraphicAnnotationSequence[-1]
    assert last.GraphicLayer == "INCOMPLETE"
    assert [t.UnformattedTextValue for t in last.TextObjectSequence] == ["L3 incomplete (5/6)"]
    assert (
        sum(len(a.GraphicObjectSequence) for a in pr.GraphicAnnotationSequence)
        == expected_object_counts(annotation)[0]
    )


def test_refuses_another_film(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    annotation = load_annotation(paths["pre"])
    wrong = replace(annotation, image=replace(annotation.image, columns=COLUMNS + 3))
    with pytest.raises(SRExportError, match="columns"):
        build_gsps(wrong, tmp_path / "pre.dcm")


def test_every_mandatory_module_has_its_type_1_and_2_attributes(case):
    """A dciodvfy-like check against the IOD tables highdicom ships (PS3.3)."""
    from highdicom._standard_utils import (
        check_required_attributes,
        get_iod_module_map,
        get_sop_class_iod_map,
    )

    _photometric, _annotation, _film, pr = case
    iod = get_sop_class_iod_map()[pr.SOPClassUID]
    modules = [m["key"] for m in get_iod_module_map()[iod] if m["usage"] == "M"]
    for module in modules:
        check_required_attributes(pr, module)
    assert {
        "presentation-state-identification",
        "presentation-state-relationship",
        "displayed-area",
        "softcopy-presentation-lut",
    } <= set(modules)


def test_film_objects_from_files_and_uploads(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    annotation = load_annotation(paths["pre"])
    film_path = tmp_path / "pre.dcm"
    from_file = gsps_bytes(annotation, load_film(film_path))
    assert pydicom.dcmread(io.BytesIO(from_file)).Modality == "PR"
    from_bytes = gsps_bytes(annotation, film_path.read_bytes())
    assert pydicom.dcmread(io.BytesIO(from_bytes)).Modality == "PR"
    with pytest.raises(SRExportError, match="not read from a file; pass the DICOM file's bytes"):
        build_gsps(annotation, load_film(film_path.read_bytes()))


SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


@pytest.mark.parametrize(
    ("body_part", "laterality"),
    [
        pytest.param("LSPINE", None, id="spine-unpaired"),
        pytest.param("EXTREMITY", "R", id="paired-right"),
        pytest.param(None, None, id="no-body-part"),
    ],
)
def test_series_copies_body_part_and_laterality_as_dciodvfy_requires(
    tmp_path, body_part, laterality
):
    paths = write_series(tmp_path, ("pre",))
    film = tmp_path / "pre.dcm"
    ds = pydicom.dcmread(film)
    if body_part is None:
        del ds.BodyPartExamined
    else:
        ds.BodyPartExamined = body_part
    if laterality is not None:
        ds.Laterality = laterality
    ds.save_as(film)
    out = write_gsps(load_annotation(paths["pre"]), film, tmp_path / "pr.dcm")
    pr = pydicom.dcmread(out)
    assert pr.SeriesDescription == "vheight landmarks and heights"
    assert pr.get("BodyPartExamined") == body_part
    if laterality is not None:
        assert pr.Laterality == laterality
    elif body_part is None:
        assert "Laterality" in pr and not pr.Laterality  # Type 2C, unknown
    else:
        assert "Laterality" not in pr
    assert dciodvfy_errors(out) == []
    dcmpschk(out)


def test_sample_film_presentation_state_passes_dciodvfy_and_dcmpschk(tmp_path):
    annotation = load_annotation(SAMPLES / "pre.vheight.json")
    out = write_gsps(annotation, SAMPLES / "pre.dcm", tmp_path / "pr.dcm")
    assert dciodvfy_errors(out) == []
    dcmpschk(out)


def test_one_series_per_film_and_reader_and_replacing_counts_up(tmp_path):
    paths = write_series(tmp_path, ("pre",))
    annotation = load_annotation(paths["pre"])
    film = tmp_path / "pre.dcm"
    first = build_gsps(replace(annotation, annotator="A"), film)
    again = build_gsps(replace(annotation, annotator="A"), film, replaces=first)
    other = build_gsps(replace(annotation, annotator="B"), film)
    assert first.SeriesInstanceUID == again.SeriesInstanceUID != other.SeriesInstanceUID
    assert (first.InstanceNumber, again.InstanceNumber) == (1, 2)
    assert first.SOPInstanceUID != again.SOPInstanceUID
