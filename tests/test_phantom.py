"""Synthetic lateral spine films: truth, determinism, DICOM header, samples, command."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vheight.annotation import load_annotation, sidecar_path
from vheight.api import measure_file
from vheight.calibration import Calibration
from vheight.cli import main
from vheight.loader import read_film_info
from vheight.morphometry import measure
from vheight.phantom import (
    Facing,
    FilmSpec,
    Fracture,
    FractureKind,
    SeriesPlan,
    film_annotation,
    parse_fracture,
    parse_levels,
    render_film,
    series_specs,
    write_film,
)
from vheight.phantom.anatomy import build_spine, solve_heights

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"

# Small films: T10-L4 is about 240 mm tall, so 0.5 mm pixels in 600 x 450.
SMALL = dict(rows=600, columns=450, row_spacing_mm=0.5, col_spacing_mm=0.5)

NAMED = {"wedge": "anterior", "biconcave": "middle", "crush": "posterior"}


def small_spec(**changes) -> FilmSpec:
    return FilmSpec(**{**SMALL, **changes})


def _heights_mm(points, row_mm: float, col_mm: float) -> dict[str, float]:
    """measurements.md heights computed directly from the six points."""

    def d(p, q):
        return math.hypot((q[0] - p[0]) * col_mm, (q[1] - p[1]) * row_mm)

    return {
        "anterior": d(points["superior_anterior"], points["inferior_anterior"]),
        "middle": d(points["superior_middle"], points["inferior_middle"]),
        "posterior": d(points["superior_posterior"], points["inferior_posterior"]),
    }


# --------------------------------------------------------------------------- truth


@pytest.mark.parametrize(
    "facing, spacing, fractures",
    [
        pytest.param("right", (0.5, 0.5), ("L1:wedge:30",), id="wedge-30-right"),
        pytest.param("left", (0.5, 0.5), ("L1:wedge:30",), id="wedge-30-left"),
        pytest.param("right", (0.45, 0.55), ("L2:biconcave:22",), id="biconcave-anisotropic"),
        pytest.param("left", (0.55, 0.45), ("T12:crush:35",), id="crush-left-anisotropic"),
        pytest.param(
            "right", (0.5, 0.5), ("T12:biconcave:21", "L1:wedge:30"), id="adjacent-fractures"
        ),
        pytest.param(
            "left",
            (0.5, 0.52),
            ("T11:wedge:45", "T12:crush:25", "L1:biconcave:41"),
            id="three-in-a-row",
        ),
        pytest.param("right", (0.5, 0.5), ("T10:wedge:28",), id="top-level-one-neighbour"),
    ],
)
def test_measuring_the_true_landmarks_gives_the_requested_loss(
    tmp_path, facing, spacing, fractures
):
    spec = small_spec(
        facing=facing, row_spacing_mm=spacing[0], col_spacing_mm=spacing[1], fractures=fractures
    )
    written = write_film(spec, tmp_path / "film.dcm")
    m = measure_file(written.annotation_path)  # calibration from the DICOM header
    assert m.unit == "mm" and m.spacing_label == "mm ERMF"
    for truth in written.film.truth.values():
        rec = m.record(truth.level)
        assert rec["anterior_height"] == pytest.approx(truth.anterior_height_mm, abs=0.01)
        assert rec["middle_height"] == pytest.approx(truth.middle_height_mm, abs=0.01)
        assert rec["posterior_height"] == pytest.approx(truth.posterior_height_mm, abs=0.01)
    for text in fractures:
        f = parse_fracture(text)
        rec = m.record(f.level)
        assert rec["reference_method"] == "adjacent"
        assert rec[f"{NAMED[f.kind.value]}_loss_pct"] == pytest.approx(f.loss_pct, abs=0.1)
        assert rec["max_loss_pct"] == pytest.approx(f.loss_pct, abs=0.1)
        assert rec["deformity_type"] == f.kind.value
        expected_grade = (
            0 if f.loss_pct < 20 else 1 if f.loss_pct < 25 else 2 if f.loss_pct <= 40 else 3
        )
        assert rec["grade"] == expected_grade


@pytest.mark.parametrize("facing", ["left", "right"])
def test_heights_from_landmarks_and_spacing_match_the_truth(facing):
    film = render_film(
        small_spec(
            facing=facing, row_spacing_mm=0.48, col_spacing_mm=0.53, fractures=("L1:wedge:30",)
        )
    )
    for level, points in film.landmarks.items():
        h = _heights_mm(points, film.row_spacing_mm, film.col_spacing_mm)
        t = film.truth[level]
        assert h["anterior"] == pytest.approx(t.anterior_height_mm, abs=1e-9)
        assert h["middle"] == pytest.approx(t.middle_height_mm, abs=1e-9)
        assert h["posterior"] == pytest.approx(t.posterior_height_mm, abs=1e-9)
    l1, t12, l2 = (film.truth[x] for x in ("L1", "T12", "L2"))
    ref = (t12.anterior_height_mm + l2.anterior_height_mm) / 2
    assert 100 * (1 - l1.anterior_height_mm / ref) == pytest.approx(30.0, abs=1e-9)


def test_measure_with_the_header_calibration_in_memory():
    film = render_film(small_spec(fractures=("L3:crush:30",)))
    ann = film_annotation(film, file=None, sop_instance_uid=None)
    cal = Calibration(
        row_spacing_mm=film.row_spacing_mm,
        col_spacing_mm=film.col_spacing_mm,
        source="test",
        label="mm ERMF",
    )
    rec = measure(ann, cal).record("L3")
    assert rec["posterior_loss_pct"] == pytest.approx(30.0, abs=1e-6)
    assert rec["deformity_type"] == "crush"
    assert rec["anterior_loss_pct"] < rec["posterior_loss_pct"]


def test_mirrored_films_are_exact_mirror_images():
    right = render_film(small_spec(fractures=("L1:wedge:30",)))
    left = render_film(small_spec(fractures=("L1:wedge:30",), facing="left"))
    assert np.array_equal(left.pixels, right.pixels[:, ::-1])
    for level, pts in right.landmarks.items():
        for name, (x, y) in pts.items():
            assert left.landmarks[level][name] == pytest.approx((SMALL["columns"] - 1 - x, y))
    # anterior on the side the patient faces
    l1 = left.landmarks["L1"]
    assert l1["superior_anterior"][0] < l1["superior_posterior"][0]
    r1 = right.landmarks["L1"]
    assert r1["superior_anterior"][0] > r1["superior_posterior"][0]


def test_unprojected_spacing_measures_magnified_heights(tmp_path):
    spec = small_spec(spacing_tags="imager", ermf=1.15)
    written = write_film(spec, tmp_path / "proj.dcm")
    m = measure_file(written.annotation_path)
    assert m.spacing_label == "mm Proj"
    t = written.film.truth["L2"]
    assert m.record("L2")["posterior_height"] == pytest.approx(
        1.15 * t.posterior_height_mm, rel=1e-9
    )


def test_biconcave_middle_points_sit_on_the_depressed_endplates():
    film = render_film(small_spec(fractures=("L2:biconcave:35",)))
    t = film.truth["L2"]
    chord_mean = (t.anterior_height_mm + t.posterior_height_mm) / 2
    assert chord_mean - t.middle_height_mm > 0.3 * chord_mean
    pts = film.landmarks["L2"]
    # the middle points lie between the corners, inside the body
    for side in ("superior", "inferior"):
        a, mid, p = (np.array(pts[f"{side}_{n}"]) for n in ("anterior", "middle", "posterior"))
        assert np.dot(mid - a, p - a) > 0 and np.dot(mid - p, a - p) > 0


def test_solve_heights_handles_chains_of_fractures():
    normal = {lv: (24.0, 23.0, 25.0, 0.5, 0.5) for lv in ("T11", "T12", "L1", "L2")}
    fractures = (
        Fracture(level="T12", kind="wedge", loss_pct=30),
        Fracture(level="L1", kind="wedge", loss_pct=20),
    )
    h = solve_heights(normal, ("T11", "T12", "L1", "L2"), fractures)
    assert h["T12"][0] == pytest.approx(0.7 * (h["T11"][0] + h["L1"][0]) / 2)
    assert h["L1"][0] == pytest.approx(0.8 * (h["T12"][0] + h["L2"][0]) / 2)
    assert h["T12"][2] == 25.0  # a wedge keeps its posterior height
    assert h["T12"][1] == pytest.approx((h["T12"][0] + 25.0) / 2 - 1.0)


# --------------------------------------------------------------------------- image


def _profile_peak(img: np.ndarray, point: np.ndarray, direction: np.ndarray) -> float:
    """Offset (px, along ``direction``) of the steepest rise of ``img`` near ``point``."""
    t = np.linspace(-5, 5, 201, dtype=np.float32)
    xy = point[None, :] + t[:, None] * direction[None, :]
    prof = cv2.remap(
        img,
        xy[:, 0].reshape(1, -1).astype(np.float32),
        xy[:, 1].reshape(1, -1).astype(np.float32),
        cv2.INTER_LINEAR,
    ).ravel()
    return float(t[np.argmax(np.gradient(prof))])


@pytest.mark.parametrize("facing", ["right", "left"])
def test_landmarks_lie_on_the_drawn_endplates(facing):
    film = render_film(
        FilmSpec(
            rows=1000,
            columns=750,
            row_spacing_mm=0.34,
            col_spacing_mm=0.34,
            dose=400,
            facing=facing,
            fractures=("L1:wedge:30", "L3:biconcave:30"),
        )
    )
    img = film.pixels.astype(np.float32)
    offsets = []
    for pts in film.landmarks.values():
        for top, bottom in (("superior_middle", "inferior_middle"),):
            a, b = np.array(pts[top]), np.array(pts[bottom])
            inward = (b - a) / np.linalg.norm(b - a)
            offsets.append(_profile_peak(img, a, inward))
            offsets.append(_profile_peak(img, b, -inward))
    offsets = np.array(offsets)
    # the bone edge (steepest rise into the bright body) is within a pixel
    assert np.abs(offsets).max() <= 1.3, offsets
    assert abs(offsets.mean()) <= 0.5, offsets


def test_same_seed_same_film_other_seed_other_film():
    spec = small_spec(fractures=("L1:wedge:30",), cement_levels=("L1",))
    a, b = render_film(spec), render_film(spec)
    assert np.array_equal(a.pixels, b.pixels)
    assert a.landmarks == b.landmarks
    c = render_film(spec.replace(seed=1))
    assert not np.array_equal(a.pixels, c.pixels)
    assert a.landmarks != c.landmarks
    assert not a.pixels.flags.writeable


def test_cement_is_the_densest_thing_in_the_treated_body():
    spec = small_spec(fractures=("L1:wedge:20",), seed=3)
    pre = render_film(spec)
    post = render_film(spec.replace(cement_levels=("L1",)))
    pts = np.array(list(pre.landmarks["L1"].values()), dtype=np.float32)
    mask = np.zeros(pre.pixels.shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    inside = mask.astype(bool)
    assert post.pixels[inside].mean() > pre.pixels[inside].mean() + 0.03 * 4095
    # a good part of the body is brighter than anything on the film before
    brightest_before = np.percentile(pre.pixels, 99.5)
    before = np.mean(pre.pixels[inside] > brightest_before)
    assert np.mean(post.pixels[inside] > brightest_before) > before + 0.15


# --------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize(
    "changes, sop_class, label",
    [
        pytest.param({}, "1.2.840.10008.5.1.4.1.1.1.1", "mm ERMF", id="dx-ermf"),
        pytest.param({"spacing_tags": "pixel"}, "1.2.840.10008.5.1.4.1.1.1", "mm", id="cr-pixel"),
        pytest.param(
            {"spacing_tags": "pixel+geometry"},
            "1.2.840.10008.5.1.4.1.1.1.1",
            "mm ERMF",
            id="pixel-geometry",
        ),
        pytest.param({"spacing_tags": "none"}, "1.2.840.10008.5.1.4.1.1.1", "px", id="none"),
        pytest.param({"modality": "CR"}, "1.2.840.10008.5.1.4.1.1.1", "mm ERMF", id="cr-ermf"),
    ],
)
def test_header_spacing_and_sop_class(tmp_path, changes, sop_class, label):
    written = write_film(small_spec(**changes), tmp_path / "f.dcm")
    ds = pydicom.dcmread(written.path)
    assert ds.SOPClassUID == sop_class
    assert ds.BodyPartExamined == "SPINE" and ds.ViewPosition == "LL"
    info = read_film_info(written.path)
    assert info.calibration.label.value == label
    if label != "px":
        assert info.calibration.row_spacing_mm == pytest.approx(written.film.row_spacing_mm)


@pytest.mark.parametrize(
    "compression, syntax",
    [
        pytest.param("none", "1.2.840.10008.1.2.1", id="explicit-le"),
        pytest.param("rle", "1.2.840.10008.1.2.5", id="rle"),
        pytest.param("j2k", "1.2.840.10008.1.2.4.90", id="j2k-lossless"),
        pytest.param("jpegls", "1.2.840.10008.1.2.4.80", id="jpegls-lossless"),
    ],
)
def test_lossless_compression_round_trips(tmp_path, compression, syntax):
    written = write_film(small_spec(compression=compression, bits_stored=14), tmp_path / "c.dcm")
    ds = pydicom.dcmread(written.path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(ds.pixel_array, written.film.pixels)
    assert ds.BitsStored == 14 and ds.HighBit == 13 and ds.BitsAllocated == 16


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_monochrome1_is_the_inverse_of_monochrome2(bits):
    m2 = render_film(small_spec(bits_stored=bits))
    m1 = render_film(small_spec(bits_stored=bits, photometric="MONOCHROME1"))
    maxval = (1 << bits) - 1
    assert int(m2.pixels.max()) <= maxval
    assert np.array_equal(m1.pixels.astype(np.int64), maxval - m2.pixels.astype(np.int64))
    # bone near 80-90 % of the range, headroom above it for cement
    assert m2.pixels.max() > 0.75 * maxval and m2.pixels.min() < 0.1 * maxval


def test_header_identity_uids_and_windows(tmp_path):
    pre, post, _ = series_specs(**SMALL, compression="none")
    a = write_film(pre, tmp_path / "pre.dcm")
    b = write_film(post, tmp_path / "post.dcm")
    da, db = pydicom.dcmread(a.path), pydicom.dcmread(b.path)
    assert da.StudyInstanceUID == db.StudyInstanceUID
    assert da.SeriesInstanceUID != db.SeriesInstanceUID
    assert da.SOPInstanceUID != db.SOPInstanceUID
    assert da.PatientID == db.PatientID and "PHANTOM" in str(da.PatientName)
    assert da.SeriesDate < db.SeriesDate
    assert len(da.WindowCenter) == len(da.WindowWidth) == 2
    assert da.WindowCenterWidthExplanation[0] == "SPINE"
    assert "SYNTHETIC" in da.ImageComments
    again = write_film(pre, tmp_path / "again.dcm")
    assert pydicom.dcmread(again.path).SOPInstanceUID == da.SOPInstanceUID
    ann = load_annotation(a.annotation_path)
    assert ann.image.file == "pre.dcm" and ann.image.sop_instance_uid == da.SOPInstanceUID
    assert ann.timepoint == "pre" and ann.treated_levels == ("L1",)
    assert ann.calibration is None and ann.patient_position is None
    assert (ann.image.rows, ann.image.columns) == (SMALL["rows"], SMALL["columns"])
    assert sidecar_path(a.path) == a.annotation_path


# --------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "changes, message",
    [
        pytest.param({"fractures": ("L5:wedge:30",)}, "not among the levels", id="fracture-level"),
        pytest.param(
            {"fractures": ("L1:wedge:30", "L1:crush:20")}, "more than one", id="two-fractures"
        ),
        pytest.param({"bits_stored": 8}, "bits_stored", id="bits"),
        pytest.param({"levels": ("T10", "T12")}, "consecutive", id="gap"),
        pytest.param({"ermf": 0.9}, "ermf", id="ermf"),
        pytest.param(
            {"modality": "DX", "spacing_tags": "pixel"}, "ImagerPixelSpacing", id="dx-needs-imager"
        ),
        pytest.param({"cement_levels": ("S1",)}, "cement_levels", id="cement-level"),
    ],
)
def test_invalid_specs_say_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        small_spec(**changes)


def test_a_film_too_small_for_the_levels_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        render_film(FilmSpec(rows=300, columns=300, row_spacing_mm=0.3, col_spacing_mm=0.3))


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("L1:wedge:30", ("L1", FractureKind.WEDGE, 30.0), id="wedge"),
        pytest.param("t12:Biconcave:21.5", ("T12", FractureKind.BICONCAVE, 21.5), id="case"),
        pytest.param("L3:crush:40%", ("L3", FractureKind.CRUSH, 40.0), id="percent"),
    ],
)
def test_parse_fracture(text, expected):
    f = parse_fracture(text)
    assert (f.level, f.kind, f.loss_pct) == expected


@pytest.mark.parametrize("text", ["L1-wedge-30", "L1:split:30", "L1:wedge:80", "S1:wedge:30"])
def test_parse_fracture_rejects(text):
    with pytest.raises(ValueError):
        parse_fracture(text)


def test_parse_levels():
    assert parse_levels("T10-L4") == ("T10", "T11", "T12", "L1", "L2", "L3", "L4")
    assert parse_levels("t12,l1") == ("T12", "L1")
    with pytest.raises(ValueError):
        parse_levels("L4-T10")


# --------------------------------------------------------------------------- series


def test_series_story_restoration_then_partial_loss():
    films = [render_film(s) for s in series_specs(**SMALL)]
    pre, post, follow = (f.truth for f in films)
    assert pre["L1"].anterior_loss_pct == pytest.approx(30.0, abs=1e-9)
    assert post["L1"].anterior_loss_pct == pytest.approx(16.0, abs=1e-9)
    assert pre["T12"].middle_loss_pct == pytest.approx(21.0, abs=1e-9)
    # at follow-up, a new 25 % wedge fracture of L2 (against its follow-up neighbours);
    # L1 keeps the height of a 21 % loss against a follow-up film without it
    assert follow["L2"].anterior_loss_pct == pytest.approx(25.0, abs=1e-9)
    assert pre["L2"].anterior_loss_pct < 5 and post["L2"].anterior_loss_pct < 5
    unbroken = [render_film(s) for s in series_specs(plan=SeriesPlan(new_level=None), **SMALL)]
    assert unbroken[2].truth["L1"].anterior_loss_pct == pytest.approx(21.0, abs=1e-9)
    assert follow["L1"].anterior_height_mm == pytest.approx(
        unbroken[2].truth["L1"].anterior_height_mm
    )
    # the untreated deformity is physically unchanged
    for truth in (post, follow):
        assert truth["T12"].middle_height_mm == pytest.approx(pre["T12"].middle_height_mm)
    assert not pre["L1"].cement and post["L1"].cement and follow["L1"].cement
    # magnification changes between films, the anatomy in mm does not
    spacings = {round(f.row_spacing_mm, 6) for f in films}
    assert len(spacings) == 3
    assert films[0].landmarks["L3"] != films[1].landmarks["L3"]
    assert post["L3"].posterior_height_mm == pytest.approx(pre["L3"].posterior_height_mm)


def _pixel_hash(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<u2").tobytes()).hexdigest()


@pytest.mark.parametrize("timepoint", ["pre", "post", "followup"])
def test_committed_samples_are_reproduced_by_the_documented_command(timepoint):
    """``vheight phantom sample_images --series`` regenerates the committed films."""
    specs = dict(zip(("pre", "post", "followup"), series_specs(compression="j2k"), strict=True))
    film = render_film(specs[timepoint])
    path = SAMPLES / f"{timepoint}.dcm"
    ds = pydicom.dcmread(path)
    committed_pixels = ds.pixel_array
    if _pixel_hash(committed_pixels) != _pixel_hash(film.pixels):
        # Bit-identical on the platform that generated them; another CPU or
        # OpenCV build may round a few float32 values the other way.  Any
        # change of the generator moves far more than this.
        diff = np.abs(committed_pixels.astype(np.int32) - film.pixels.astype(np.int32))
        assert diff.max() <= 3 and diff.mean() <= 0.05, (
            f"{path.name}: pixels differ from a fresh render (max {diff.max()} DN, "
            f"mean {diff.mean():.3f} DN): regenerate with `vheight phantom sample_images --series`"
        )
    committed = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    expected = film_annotation(film, file=path.name, sop_instance_uid=str(ds.SOPInstanceUID))
    assert committed == json.loads(json.dumps(expected.to_dict()))
    assert committed["image"]["file"] == f"{timepoint}.dcm"


def test_sample_truth_as_documented():
    m = {tp: measure_file(SAMPLES / f"{tp}.vheight.json") for tp in ("pre", "post", "followup")}
    l1 = {tp: m[tp].record("L1") for tp in m}
    t12 = {tp: m[tp].record("T12") for tp in m}
    # at follow-up the new L2 fracture drags L1's adjacent reference down: grade 0
    assert [l1[tp]["grade"] for tp in m] == [2, 0, 0]
    assert [m[tp].record("L2")["grade"] for tp in m] == [0, 0, 2]
    assert l1["pre"]["deformity_type"] == "wedge" and l1["pre"]["treated"]
    assert t12["pre"]["grade"] == 1 and t12["pre"]["deformity_type"] == "biconcave"
    assert not t12["pre"]["treated"]
    assert all(r["spacing_label"] == "mm ERMF" for r in l1.values())


# --------------------------------------------------------------------------- command


def test_phantom_command_writes_films_and_sidecars(tmp_path, capsys):
    code = main(
        [
            "phantom",
            str(tmp_path),
            "--size",
            "600x450",
            "--spacing",
            "0.5",
            "--count",
            "2",
            "--seed",
            "7",
            "--fracture",
            "L2:crush:30",
            "--cement",
            "L2",
            "--facing",
            "left",
            "--photometric",
            "MONOCHROME1",
            "--bits",
            "10",
            "--compression",
            "rle",
            "--format",
            "json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(f["file"]).name for f in out["films"]] == ["phantom_0007.dcm", "phantom_0008.dcm"]
    ds = pydicom.dcmread(tmp_path / "phantom_0007.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 10
    assert ds.PatientOrientation == ["P", "F"]
    rec = measure_file(tmp_path / "phantom_0008.vheight.json").record("L2")
    assert rec["posterior_loss_pct"] == pytest.approx(30.0, abs=0.1)


def test_phantom_command_series_anisotropic_spacing(tmp_path, capsys):
    code = main(
        [
            "phantom",
            str(tmp_path),
            "--series",
            "--size",
            "600x450",
            "--spacing",
            "0.5x0.55",
            "--compression",
            "none",
            "--format",
            "csv",
        ]
    )
    assert code == 0
    assert "pre.dcm" in capsys.readouterr().out
    for tp in ("pre", "post", "followup"):
        assert (tmp_path / f"{tp}.vheight.json").exists()
    rec = measure_file(tmp_path / "pre.vheight.json").record("L1")
    assert rec["anterior_loss_pct"] == pytest.approx(30.0, abs=0.1)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--fracture", "L1:bent:30"], id="bad-fracture"),
        pytest.param(["--size", "big"], id="bad-size"),
        pytest.param(["--series", "--fracture", "L1:wedge:30"], id="series-with-fracture"),
        pytest.param(["--fracture", "L5:wedge:30"], id="level-not-drawn"),
    ],
)
def test_phantom_command_rejects_bad_usage(tmp_path, argv, capsys):
    try:
        code = main(
            ["phantom", str(tmp_path), "--size", "600x450", "--spacing", "0.5", *argv]
            if "--size" not in argv
            else ["phantom", str(tmp_path), *argv]
        )
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    assert code == 2
    assert "error" in capsys.readouterr().err


def test_default_film_is_a_2000_by_1500_lateral(tmp_path):
    film = render_film(FilmSpec(seed=11))
    assert film.pixels.shape == (2000, 1500)
    assert film.spec.facing is Facing.RIGHT
    heights = [t.posterior_height_mm for t in film.truth.values()]
    assert 20 <= min(heights) and max(heights) <= 32
    assert heights == sorted(heights) or np.corrcoef(np.arange(len(heights)), heights)[0, 1] > 0.8
    depths = [t.depth_mm for t in film.truth.values()]
    assert 28 <= min(depths) and max(depths) <= 47


def test_readme_phantom_example_runs(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- section: phantom -->") :]
    code = section[section.index("```python") + len("```python") :]
    code = code[: code.index("```")]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (phantom example)", "exec"), {})
    assert "L1:wedge:30" in capsys.readouterr().out
    assert (tmp_path / "out" / "l1_wedge.vheight.json").exists()
    assert {p.name for p in (tmp_path / "out" / "series").iterdir()} >= {
        "pre.dcm",
        "post.dcm",
        "followup.dcm",
        "followup.vheight.json",
    }


# --------------------------------------------------------------------------- properties

_HEIGHT_ATTR = {
    "anterior": "anterior_height_mm",
    "middle": "middle_height_mm",
    "posterior": "posterior_height_mm",
}


@st.composite
def fracture_sets(draw):
    levels = draw(
        st.lists(
            st.sampled_from(["T10", "T11", "T12", "L1", "L2", "L3", "L4"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    return tuple(
        Fracture(
            level=lv,
            kind=draw(st.sampled_from(list(FractureKind))),
            loss_pct=draw(st.floats(min_value=20.0, max_value=60.0)),
        )
        for lv in levels
    )


@given(seed=st.integers(min_value=0, max_value=10_000), fractures=fracture_sets())
def test_any_set_of_fractures_has_its_exact_loss_and_type(seed, fractures):
    try:
        spine = build_spine(FilmSpec(seed=seed, fractures=fractures))
    except ValueError as exc:
        # a chain of consecutive fractures measured against each other may
        # collapse; it is refused with an explanation, never drawn
        assert "consecutive fractures" in str(exc)
        assert len(fractures) >= 2
        return
    by_level = {v.level: v for v in spine.annotated}
    order = ("T10", "T11", "T12", "L1", "L2", "L3", "L4")
    for f in fractures:
        i = order.index(f.level)
        neighbours = [by_level[order[j]] for j in (i - 1, i + 1) if 0 <= j < len(order)]
        v = by_level[f.level]
        losses = {}
        for name, attr in _HEIGHT_ATTR.items():
            ref = sum(getattr(n, attr) for n in neighbours) / len(neighbours)
            losses[name] = 100 * (1 - getattr(v, attr) / ref)
        named = NAMED[f.kind.value]
        assert losses[named] == pytest.approx(f.loss_pct, abs=1e-9)
        # the named height has the largest loss, so it names the deformity type
        assert max(losses, key=losses.get) == named
        # the body stays a body: positive heights, endplates that do not cross
        assert min(v.anterior_height_mm, v.middle_height_mm, v.posterior_height_mm) > 3.0


# -- realism: spurs, doubled endplates, deep concavities, osteoporosis, overlap --------------

REAL_LEVELS = ("L1", "L2", "L3")
REAL = dict(rows=1000, columns=700, row_spacing_mm=0.25, col_spacing_mm=0.25, levels=REAL_LEVELS)


def _profile_along(pixels, start, direction, length_px, step=0.5):
    t = np.arange(0.0, length_px, step)
    xs = start[0] + t * direction[0]
    ys = start[1] + t * direction[1]
    return cv2.remap(
        pixels.astype(np.float32),
        xs.astype(np.float32)[None, :],
        ys.astype(np.float32)[None, :],
        cv2.INTER_LINEAR,
    )[0]


def test_realism_off_leaves_films_and_uids_as_before():
    spec = FilmSpec(**REAL)
    assert spec.identity() == repr(spec).replace(", realism=None)", ")")
    assert "realism" not in spec.identity()
    from vheight.phantom import spec_to_dict

    assert "realism" not in spec_to_dict(spec)


def test_realism_validation_names_the_problem():
    from vheight.phantom import EndplateFeature, Realism

    with pytest.raises(ValueError, match="superior or inferior"):
        EndplateFeature(level="L1", endplate="middle", mm=1.0)
    with pytest.raises(ValueError, match="0 to 8 mm"):
        EndplateFeature(level="L1", endplate="superior", mm=12.0)
    with pytest.raises(ValueError, match="at most one per endplate"):
        Realism(osteophytes=("L1:superior:2", "L1:superior:3"))
    with pytest.raises(ValueError, match=r"realism features at \['T6'\]"):
        FilmSpec(**REAL, realism=Realism(concavities=("T6:inferior:1",)))
    with pytest.raises(ValueError, match="pedicle_columns: the phantom draws T6 to L5, found C2"):
        Realism(pedicle_columns=("C2",))
    with pytest.raises(ValueError, match="pedicle_column_mm must be 0.5 to 8 mm"):
        Realism(pedicle_columns=("L2",), pedicle_column_mm=12.0)
    with pytest.raises(ValueError, match="soft_tissue_edges: the phantom draws T6 to L5, found S1"):
        Realism(soft_tissue_edges=("S1",))
    with pytest.raises(ValueError, match="soft_tissue_edge_mm must be 1 to 8 mm"):
        Realism(soft_tissue_edges=("L2",), soft_tissue_edge_mm=0.5)


def test_spur_adds_bone_beyond_the_true_corner_which_stays_on_the_outline():
    from vheight.phantom import Realism

    plain = render_film(FilmSpec(**REAL, seed=4))
    spur = render_film(FilmSpec(**REAL, seed=4, realism=Realism(osteophytes=("L2:superior:4",))))
    assert plain.landmarks == spur.landmarks  # the corner follows the body, not the spur
    sa = np.array(spur.landmarks["L2"]["superior_anterior"])
    sp = np.array(spur.landmarks["L2"]["superior_posterior"])
    out = (sa - sp) / np.linalg.norm(sa - sp)  # anterior, along the endplate
    up = np.array([out[1], -out[0]]) if out[0] > 0 else np.array([-out[1], out[0]])
    # 1.5 mm beyond the corner, slightly towards the disc: bone with the spur only
    probe = sa + out * (1.5 / 0.25) + up * (0.3 / 0.25)
    x, y = np.round(probe).astype(int)
    window = (slice(y - 1, y + 2), slice(x - 1, x + 2))
    gain = spur.pixels[window].astype(float).mean() - plain.pixels[window].astype(float).mean()
    assert gain > 0.03 * (1 << 12)


def test_pedicle_column_adds_bone_behind_the_posterior_corner_which_stays_on_the_body():
    from vheight.phantom import Realism, spec_to_dict

    plain = render_film(FilmSpec(**REAL, seed=4))
    spec = FilmSpec(**REAL, seed=4, realism=Realism(pedicle_columns=("L2",)))
    column = render_film(spec)
    assert plain.landmarks == column.landmarks  # the corner follows the body
    assert spec_to_dict(spec)["realism"]["pedicle_columns"] == ["L2"]
    sa = np.array(column.landmarks["L2"]["superior_anterior"])
    sp = np.array(column.landmarks["L2"]["superior_posterior"])
    ip = np.array(column.landmarks["L2"]["inferior_posterior"])
    back = (sp - sa) / np.linalg.norm(sp - sa)  # posterior, along the endplate
    down = (ip - sp) / np.linalg.norm(ip - sp)
    gains = []
    for beyond_mm in (1.5, 5.0):  # within the 3.5 mm column, then past it
        probe = sp + back * (beyond_mm / 0.25) + down * (0.8 / 0.25)
        x, y = np.round(probe).astype(int)
        window = (slice(y - 1, y + 2), slice(x - 1, x + 2))
        gains.append(
            column.pixels[window].astype(float).mean() - plain.pixels[window].astype(float).mean()
        )
    assert gains[0] > 0.03 * (1 << 12)
    assert abs(gains[1]) < 0.01 * (1 << 12)


def test_soft_tissue_edge_lies_in_front_of_the_chosen_level_only():
    """A layer brighter than the tissue beyond it from the anterior wall to
    an edge 3 mm in front of the corners, at L2 and nowhere else; the true
    points stay on the body, and the sidecar names it."""
    from vheight.phantom import Realism, spec_to_dict

    plain = render_film(FilmSpec(**REAL, seed=4))
    spec = FilmSpec(**REAL, seed=4, realism=Realism(soft_tissue_edges=("L2",)))
    soft = render_film(spec)
    assert plain.landmarks == soft.landmarks
    assert spec_to_dict(spec)["realism"]["soft_tissue_edges"] == ["L2"]
    assert spec_to_dict(spec)["realism"]["soft_tissue_edge_mm"] == 3.0
    assert "soft_tissue_edges" not in spec_to_dict(FilmSpec(**REAL, realism=Realism()))["realism"]

    def gain(level, beyond_mm):
        pts = soft.landmarks[level]
        sa, sp = np.array(pts["superior_anterior"]), np.array(pts["superior_posterior"])
        ia = np.array(pts["inferior_anterior"])
        out = (sa - sp) / np.linalg.norm(sa - sp)  # anterior, along the endplate
        probe = (sa + ia) / 2 + out * (beyond_mm / 0.25)  # in front of mid-wall
        x, y = np.round(probe).astype(int)
        window = (slice(y - 1, y + 2), slice(x - 1, x + 2))
        return soft.pixels[window].astype(float).mean() - plain.pixels[window].astype(float).mean()

    dn = 1 << 12
    # within the layer (the wall's waist puts mid-wall 1.4 mm behind the
    # corners' line), then 3 mm past its edge
    assert gain("L2", 1.5) > 0.015 * dn
    assert abs(gain("L2", 6.0)) < 0.006 * dn
    for level in ("L1", "L3"):  # nothing in front of the other levels
        assert abs(gain(level, 1.5)) < 0.006 * dn, level


def test_doubled_endplate_shows_two_edges_with_the_truth_midway():
    from vheight.phantom import Realism

    film = render_film(
        FilmSpec(**REAL, seed=5, dose=4.0, realism=Realism(doubled=("L2:superior:2.4",)))
    )
    sm = np.array(film.landmarks["L2"]["superior_middle"])
    im = np.array(film.landmarks["L2"]["inferior_middle"])
    up = (sm - im) / np.linalg.norm(sm - im)
    start = sm - up * (3.0 / 0.25)
    profile = _profile_along(film.pixels, start, up, 6.0 / 0.25)
    smooth = cv2.GaussianBlur(profile[None, :].astype(np.float32), (0, 0), 1.0)[0]
    fall = -np.diff(smooth)  # bright bone to dark disc, going up
    peaks = [i for i in range(1, fall.size - 1) if fall[i] >= fall[i - 1] and fall[i] > fall[i + 1]]
    strong = sorted(peaks, key=lambda i: -fall[i])[:2]
    offsets_mm = sorted((i + 0.5) * 0.5 * 0.25 - 3.0 for i in strong)
    assert offsets_mm[1] - offsets_mm[0] == pytest.approx(2.4, abs=0.6)
    assert 0.5 * (offsets_mm[0] + offsets_mm[1]) == pytest.approx(0.0, abs=0.5)


def test_concavity_sets_the_true_middle_point_and_height():
    from vheight.phantom import Realism

    spec = FilmSpec(**REAL, seed=6, realism=Realism(concavities=("L2:superior:2.0",)))
    v = build_spine(spec).by_level("L2")
    assert v.concavity_sup_mm == pytest.approx(2.0)
    truth = render_film(spec).truth["L2"]
    half = (truth.anterior_height_mm + truth.posterior_height_mm) / 2
    assert truth.middle_height_mm == pytest.approx(half - 2.0 - v.concavity_inf_mm, abs=1e-9)


def test_typical_realism_is_deterministic_and_renders():
    from vheight.phantom import Realism

    a = Realism.typical(9, REAL_LEVELS)
    assert a == Realism.typical(9, REAL_LEVELS)
    assert all(1.5 <= s.mm <= 5.0 for s in a.osteophytes)
    assert all(0.5 <= c.mm <= 2.0 for c in a.concavities)
    film = render_film(FilmSpec(**REAL, seed=9, realism=a))
    assert film.pixels.shape == (1000, 700)
    low = a.low_contrast_levels[0]
    assert low in REAL_LEVELS
