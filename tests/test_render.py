"""Landmarks and heights drawn over a film: array in, array out."""

from __future__ import annotations

import numpy as np
import pytest
from _report_series import COLUMNS, ROWS, vertebrae_for
from hypothesis import given, settings
from hypothesis import strategies as st

from vheight.annotation import Annotation, ImageRef
from vheight.calibration import Calibration
from vheight.morphometry import measure
from vheight.render import GRADE_COLORS, INCOMPLETE_COLOR, TREATED_COLOR, render_annotated, to_rgb8


def _annotation(**changes) -> Annotation:
    data = dict(
        image=ImageRef(rows=ROWS, columns=COLUMNS), timepoint="pre", vertebrae=vertebrae_for("pre")
    )
    data.update(changes)
    return Annotation(**data)


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    pixels = np.full((ROWS, COLUMNS), 0.3, np.float32)
    pixels.flags.writeable = False
    return pixels


def _near(image: np.ndarray, xy, radius: int = 2) -> np.ndarray:
    x, y = int(round(xy[0])), int(round(xy[1]))
    return image[y - radius : y + radius + 1, x - radius : x + radius + 1].reshape(-1, 3)


def _has_colour(pixels: np.ndarray, rgb, tol: int = 6) -> bool:
    return bool(np.any(np.all(np.abs(pixels.astype(int) - np.array(rgb)) <= tol, axis=1)))


def test_returns_a_new_rgb_uint8_array_and_leaves_inputs_alone(film):
    annotation = _annotation()
    out = render_annotated(film, annotation, measure(annotation))
    assert out.shape == (ROWS, COLUMNS, 3) and out.dtype == np.uint8
    assert out.flags.writeable
    assert np.all(film == np.float32(0.3))
    assert not np.shares_memory(out, film)


@pytest.mark.parametrize(
    ("level", "grade"),
    [
        pytest.param("L1", 3, id="wedged-L1-grade-3"),
        pytest.param("T12", 0, id="normal-T12-grade-0"),
    ],
)
def test_landmarks_are_drawn_in_the_grade_colour_at_their_place(film, level, grade):
    annotation = _annotation()
    m = measure(annotation)
    assert m.record(level)["grade"] == grade
    out = render_annotated(film, annotation, m, legend=False)
    for xy in annotation.vertebrae[level].values():
        assert _has_colour(_near(out, xy), GRADE_COLORS[grade]), xy


def test_incomplete_vertebra_is_grey_and_labelled(film):
    annotation = _annotation().without_point("L3", "inferior_posterior")
    out = render_annotated(film, annotation, legend=False)
    for xy in annotation.vertebrae["L3"].values():
        assert _has_colour(_near(out, xy), INCOMPLETE_COLOR)


def test_treated_level_is_outlined(film):
    plain = render_annotated(film, _annotation(), legend=False)
    treated = render_annotated(film, _annotation(treated_levels=("L1",)), legend=False)
    assert not _has_colour(plain.reshape(-1, 3), TREATED_COLOR, tol=20)
    assert _has_colour(treated.reshape(-1, 3), TREATED_COLOR, tol=20)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        pytest.param({"max_size": 400}, (400, 280), id="downscaled"),
        pytest.param({"max_size": 4000}, (ROWS, COLUMNS), id="never-enlarged-by-max-size"),
        pytest.param({"scale": 1.5}, (1200, 840), id="enlarged-by-scale"),
    ],
)
def test_output_size_and_landmark_positions_follow_the_scale(film, kwargs, shape):
    annotation = _annotation()
    out = render_annotated(film, annotation, legend=False, **kwargs)
    assert out.shape[:2] == shape
    sx, sy = shape[1] / COLUMNS, shape[0] / ROWS
    xy = annotation.vertebrae["L1"]["inferior_posterior"]
    shown = ((xy[0] + 0.5) * sx - 0.5, (xy[1] + 0.5) * sy - 0.5)
    assert _has_colour(_near(out, shown, radius=1), GRADE_COLORS[3], tol=40)


def test_measures_with_the_film_calibration_when_no_measurement_is_given():
    class FakeFilm:
        pixels = np.full((ROWS, COLUMNS), 0.5, np.float32)
        calibration = Calibration.user(row_spacing_mm=0.16)

    annotation = _annotation()
    drawn = render_annotated(FakeFilm(), annotation)
    expected = render_annotated(
        FakeFilm.pixels, annotation, measure(annotation, Calibration.user(row_spacing_mm=0.16))
    )
    assert np.array_equal(drawn, expected)
    # Uncalibrated (px) values print other text than mm values.
    assert not np.array_equal(drawn, render_annotated(FakeFilm.pixels, annotation))


def test_patient_facing_right_is_drawn_too(film):
    mirrored = {
        level: {name: (COLUMNS - 1 - x, y) for name, (x, y) in pts.items()}
        for level, pts in vertebrae_for("pre").items()
    }
    annotation = _annotation(vertebrae=mirrored)
    out = render_annotated(film, annotation, legend=False)
    for xy in mirrored["L1"].values():
        assert _has_colour(_near(out, xy), GRADE_COLORS[3])


def test_empty_annotation_draws_only_the_legend(film):
    out = render_annotated(film, Annotation(image=ImageRef(rows=ROWS, columns=COLUMNS)))
    assert np.all(out[ROWS // 2 :, :] == to_rgb8(film)[ROWS // 2 :, :])
    assert not np.all(out == to_rgb8(film))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"max_size": 8}, "max_size must be at least 16", id="tiny-max-size"),
        pytest.param({"scale": 0.0}, "scale must be a number", id="zero-scale"),
        pytest.param({"line_scale": 100.0}, "line_scale must be in", id="huge-lines"),
    ],
)
def test_bad_options_are_refused(film, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_annotated(film, _annotation(), **kwargs)


def test_to_rgb8_maps_the_unit_interval():
    grey = np.array([[0.0, 0.5, 1.0, 2.0]], np.float32)
    rgb = to_rgb8(grey)
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 255]


_POINT = st.tuples(
    st.floats(min_value=-0.09 * COLUMNS, max_value=1.09 * COLUMNS - 1, allow_nan=False),
    st.floats(min_value=-0.09 * ROWS, max_value=1.09 * ROWS - 1, allow_nan=False),
)


@settings(max_examples=25, deadline=None)
@given(
    points=st.lists(_POINT, min_size=1, max_size=6),
    max_size=st.one_of(st.none(), st.integers(min_value=16, max_value=900)),
)
def test_any_landmarks_anywhere_draw_without_error(points, max_size):
    """Degenerate, partial and off-film vertebrae are drawn, never raise."""
    from vheight.annotation import POINT_NAMES

    pixels = np.zeros((ROWS, COLUMNS), np.float32)
    vertebra = dict(zip(POINT_NAMES, points, strict=False))
    annotation = Annotation(image=ImageRef(rows=ROWS, columns=COLUMNS), vertebrae={"L1": vertebra})
    out = render_annotated(pixels, annotation, max_size=max_size)
    longest = max(ROWS, COLUMNS) if max_size is None else min(max_size, max(ROWS, COLUMNS))
    assert max(out.shape[:2]) == longest
    assert out.any()
