"""Film model, window math, sources (path, bytes, upload) and PNG/JPEG/TIFF films."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_dicom import dicom_bytes, make_dataset, smooth_image

from vheight.calibration import Calibration, SpacingLabel
from vheight.errors import DicomReadError, ImageReadError
from vheight.film import (
    Film,
    FilmFormat,
    ModalityTransform,
    VOIFunction,
    WindowPreset,
    auto_window,
    render_display,
    render_pixels,
    value_range,
)
from vheight.loader import load_film, read_film_info, sniff_format

# -- window math (DICOM PS3.3 C.11.2.1.2) ---------------------------------------------------

WINDOW_CASES = [
    # function, center, width, x, expected y in [0, 1]
    pytest.param("LINEAR", 2048, 4096, 2047.5, 0.5, id="linear-centre"),
    pytest.param("LINEAR", 2048, 4096, 0, 0.0, id="linear-bottom"),
    pytest.param("LINEAR", 2048, 4096, 4095.5, 1.0, id="linear-top"),
    pytest.param("LINEAR", 100, 11, 94.5, 0.0, id="linear-lower-edge"),  # c - 0.5 - (w-1)/2
    pytest.param("LINEAR", 100, 11, 104.5, 1.0, id="linear-upper-edge"),  # c - 0.5 + (w-1)/2
    pytest.param("LINEAR", 100, 11, 95.0, 0.05, id="linear-inside"),
    pytest.param("LINEAR", 100, 11, 99.5, 0.5, id="linear-mid"),
    pytest.param("LINEAR", 100, 1, 99.5, 0.0, id="linear-threshold-low"),
    pytest.param("LINEAR", 100, 1, 99.6, 1.0, id="linear-threshold-high"),
    pytest.param("LINEAR_EXACT", 100, 10, 95, 0.0, id="exact-bottom"),
    pytest.param("LINEAR_EXACT", 100, 10, 100, 0.5, id="exact-centre"),
    pytest.param("LINEAR_EXACT", 100, 10, 102.5, 0.75, id="exact-quarter"),
    pytest.param("LINEAR_EXACT", 100, 0.5, 100.125, 0.75, id="exact-narrow"),
    pytest.param("SIGMOID", 100, 10, 100, 0.5, id="sigmoid-centre"),
    pytest.param("SIGMOID", 100, 10, 105, 1 / (1 + math.exp(-2)), id="sigmoid-plus-half-width"),
    pytest.param("SIGMOID", 100, 1, -60000, 0.0, id="sigmoid-far-below"),
    pytest.param("SIGMOID", 100, 1, 60000, 1.0, id="sigmoid-far-above"),
]


@pytest.mark.parametrize(("function", "center", "width", "x", "expected"), WINDOW_CASES)
def test_window_functions_by_hand(function, center, width, x, expected):
    preset = WindowPreset(center=center, width=width, function=function)
    y = preset.apply(np.array([x], dtype=np.float64))
    assert y.dtype == np.float32
    assert float(y[0]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("function", "width"),
    [
        pytest.param("LINEAR", 0.5, id="linear-below-1"),
        pytest.param("LINEAR_EXACT", 0, id="zero"),
        pytest.param("SIGMOID", -3, id="negative"),
    ],
)
def test_unusable_window_width_is_refused(function, width):
    with pytest.raises(ValueError, match="window width must be"):
        WindowPreset(center=0, width=width, function=function)


def test_voi_lut_preset_looks_up_and_clamps():
    table = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32)
    preset = WindowPreset(center=12, width=4, lut_first_mapped=10, lut=table, explanation="L")
    y = preset.apply(np.array([0, 10, 11, 12, 13, 99], dtype=np.float32))
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    assert preset.label().startswith("L (LUT")
    assert preset.affine() is None


@given(
    slope=st.floats(0.01, 10),
    intercept=st.floats(-2000, 2000),
    center=st.floats(-3000, 6000),
    width=st.floats(1, 8000),
    invert=st.booleans(),
    function=st.sampled_from(["LINEAR", "LINEAR_EXACT"]),
)
def test_folded_single_pass_equals_the_step_by_step_pipeline(
    slope, intercept, center, width, invert, function
):
    stored = (np.arange(0, 4096, 7, dtype=np.uint16)).reshape(1, -1)
    modality = ModalityTransform(slope=slope, intercept=intercept)
    window = WindowPreset(center=center, width=width, function=function)
    fast = render_pixels(stored, modality, window, invert=invert)
    step = window.apply(stored.astype(np.float64) * slope + intercept).astype(np.float64)
    if invert:
        step = 1.0 - step
    np.testing.assert_allclose(fast, step, atol=2e-4)
    assert fast.dtype == np.float32 and not fast.flags.writeable
    assert float(fast.min()) >= 0.0 and float(fast.max()) <= 1.0


@given(
    slope=st.floats(0.01, 10),
    intercept=st.floats(-2000, 2000),
    center=st.floats(-3000, 6000),
    width=st.floats(1, 8000),
    invert=st.booleans(),
    function=st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID"]),
    dtype=st.sampled_from([np.uint16, np.int16, np.uint8, np.float32]),
)
def test_8_bit_display_is_the_float_pipeline_rounded(
    slope, intercept, center, width, invert, function, dtype
):
    stored = (np.arange(0, 4096, 7) % (250 if dtype == np.uint8 else 4096)).astype(dtype)
    stored = stored.reshape(1, -1)
    modality = ModalityTransform(slope=slope, intercept=intercept)
    window = WindowPreset(center=center, width=width, function=function)
    display = render_display(stored, modality, window, invert=invert)
    unit = render_pixels(stored, modality, window, invert=invert)
    assert display.dtype == np.uint8 and not display.flags.writeable
    expected = np.rint(unit.astype(np.float64) * 255.0)
    assert np.abs(display.astype(np.float64) - expected).max() <= 1.0


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        pytest.param(np.array([[3, 9], [1, 4]], np.uint16), (1.0, 9.0), id="uint16"),
        pytest.param(np.array([[-3, 9]], np.int16), (-3.0, 9.0), id="int16"),
        pytest.param(np.array([[np.nan, 2.0, -1.5]], np.float32), (-1.5, 2.0), id="nan"),
        pytest.param(np.array([[np.inf, 2.0]], np.float64), (2.0, 2.0), id="inf"),
        pytest.param(np.full((2, 2), np.nan, np.float32), (0.0, 0.0), id="all-nan"),
        pytest.param(np.zeros((0, 3), np.uint8), (0.0, 0.0), id="empty"),
    ],
)
def test_value_range(array, expected):
    assert value_range(array) == expected


def test_modality_lut_transform():
    transform = ModalityTransform(lut_first_mapped=-2, lut=np.array([10, 20, 30], np.float32))
    values = transform.apply(np.array([[-5, -2, -1, 0, 7]], dtype=np.int16))
    np.testing.assert_array_equal(values, [[10, 10, 20, 30, 30]])
    assert not transform.is_identity and ModalityTransform().is_identity
    with pytest.raises(ValueError, match="rescale slope"):
        ModalityTransform(slope=0.0)


def test_auto_window_spans_the_percentiles():
    stored = np.arange(10000, dtype=np.uint16).reshape(100, 100)
    preset = auto_window(stored, ModalityTransform(slope=2.0))
    low, high = np.percentile(stored * 2.0, [0.5, 99.5])
    assert preset.explanation == "auto" and preset.function is VOIFunction.LINEAR_EXACT
    assert preset.center == pytest.approx((low + high) / 2)
    assert preset.width == pytest.approx(high - low)


# -- the Film object ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def film() -> Film:
    ds = make_dataset(
        smooth_image(bits=12, seed=21),
        ImagerPixelSpacing=[0.15, 0.15],
        WindowCenter=[2048, 1000],
        WindowWidth=[4096, 500],
        WindowCenterWidthExplanation=["FULL", "NARROW"],
    )
    return load_film(dicom_bytes(ds), name="lateral.dcm")


def test_film_is_frozen_and_read_only(film):
    with pytest.raises(dataclasses.FrozenInstanceError):
        film.calibration = Calibration.uncalibrated()
    arrays = (film.pixels, film.display, film.stored, film.modality_values, film.render(window=1))
    for array in (*arrays, film.render_display(window=1)):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0, 0] = 0
    assert film.name == "lateral.dcm" and (film.rows, film.columns) == (96, 80)


def test_render_default_is_the_pixels_and_names_are_case_insensitive(film):
    assert film.render() is film.pixels
    assert film.render_display() is film.display and film.display.dtype == np.uint8
    np.testing.assert_allclose(film.display, np.rint(film.pixels * 255.0), atol=1)
    np.testing.assert_allclose(
        film.render_display(window=1), np.rint(film.render(window=1) * 255.0), atol=1
    )
    np.testing.assert_array_equal(film.render(window="narrow"), film.render(window=1))
    np.testing.assert_array_equal(film.render(window=film.windows[1]), film.render(window=1))
    inverted = film.render(invert=True)
    np.testing.assert_allclose(inverted, 1.0 - film.pixels, atol=1e-6)
    auto = film.render(window="auto")
    assert float(auto.min()) == 0.0 and float(auto.max()) == 1.0
    with pytest.raises(ValueError, match="lateral.dcm: a window width must be > 0"):
        film.render(window=(100, 0))


def test_with_calibration_keeps_pixels_and_header(film):
    user = Calibration.user(row_spacing_mm=0.2, description="ruler")
    calibrated = film.with_calibration(user)
    assert calibrated.calibration is user and calibrated.calibration.label is SpacingLabel.USER
    assert calibrated.pixels is film.pixels
    assert calibrated.info.calibration.label is SpacingLabel.PROJ
    assert calibrated.with_calibration(None).calibration == film.info.calibration


@pytest.mark.parametrize(
    "user",
    [
        pytest.param(Calibration.user(row_spacing_mm=0.1), id="calibration"),
        pytest.param({"row_spacing_mm": 0.1, "col_spacing_mm": 0.1, "source": "User"}, id="dict"),
    ],
)
def test_user_calibration_rule_1_wins_over_the_header(user):
    data = dicom_bytes(
        make_dataset(PixelSpacing=[0.3, 0.3], PixelSpacingCalibrationType="GEOMETRY")
    )
    assert load_film(data).calibration.label is SpacingLabel.ERMF
    film = load_film(data, calibration=user)
    assert film.calibration.label is SpacingLabel.USER
    assert film.calibration.label.value == "mm User"
    assert film.calibration.row_spacing_mm == 0.1
    assert film.info.calibration.row_spacing_mm == pytest.approx(0.3)


# -- sources ------------------------------------------------------------------------------------


def test_path_bytes_and_file_object_give_the_same_film(tmp_path):
    data = dicom_bytes(make_dataset(WindowCenter=2048, WindowWidth=4096))
    path = tmp_path / "same.dcm"
    path.write_bytes(data)
    from_path = load_film(path)
    from_str = load_film(str(path))
    from_bytes = load_film(data)
    from_memoryview = load_film(memoryview(data))
    with open(path, "rb") as fh:
        from_file = load_film(fh)
    for other in (from_str, from_bytes, from_memoryview, from_file):
        np.testing.assert_array_equal(other.pixels, from_path.pixels)
    assert from_path.info.name == "same.dcm" and from_path.info.path == str(path)
    assert from_bytes.info.name == "<upload>" and from_bytes.info.path is None
    assert from_file.info.name == "same.dcm"
    assert load_film(data, name="upload.dcm").info.name == "upload.dcm"


def test_text_mode_file_object_is_refused(tmp_path):
    path = tmp_path / "t.dcm"
    path.write_text("x")
    with open(path) as fh, pytest.raises(ImageReadError, match="binary mode"):
        load_film(fh)


def test_source_of_the_wrong_type():
    with pytest.raises(TypeError, match="a film source must be a path, bytes or a binary file"):
        load_film(42)


def test_folder_is_not_a_film(tmp_path):
    with pytest.raises(ImageReadError, match="is a folder, not a film"):
        load_film(tmp_path)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"\x00" * 128 + b"DICM", FilmFormat.DICOM, id="dicom"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, FilmFormat.PNG, id="png"),
        pytest.param(b"\xff\xd8\xff\xe0", FilmFormat.JPEG, id="jpeg"),
        pytest.param(b"II*\x00", FilmFormat.TIFF, id="tiff-le"),
        pytest.param(b"MM\x00*", FilmFormat.TIFF, id="tiff-be"),
        pytest.param(b"hello world", None, id="text"),
    ],
)
def test_sniff_format(head, expected):
    assert sniff_format(head) is expected


def test_garbage_bytes_are_not_a_film():
    with pytest.raises(DicomReadError, match=r"scan\.bin: not a DICOM file \(no DICM preamble"):
        load_film(b"\x01\x02garbage" * 50, name="scan.bin")


# -- PNG, JPEG, TIFF ------------------------------------------------------------------------------


def _encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GRAY8 = smooth_image(60, 70, bits=8, seed=30)
GRAY16 = smooth_image(60, 70, bits=16, seed=31)
RGB = np.stack([GRAY8, np.roll(GRAY8, 5, axis=1), 255 - GRAY8], axis=-1)
RGBA = np.concatenate([RGB, np.full(GRAY8.shape + (1,), 200, np.uint8)], axis=-1)
LUMA = RGB.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

RASTER_CASES = [
    pytest.param("PNG", GRAY8, GRAY8.astype(np.float32) / 255, 0.0, 8, id="png-gray8"),
    pytest.param("PNG", GRAY16, None, 0.0, 16, id="png-gray16"),
    pytest.param("PNG", RGB, LUMA / 255, 1e-5, 8, id="png-rgb"),
    pytest.param("PNG", RGBA, LUMA / 255, 1e-5, 8, id="png-rgba"),
    pytest.param("JPEG", GRAY8, GRAY8.astype(np.float32) / 255, 0.05, 8, id="jpeg-gray"),
    pytest.param("JPEG", RGB, LUMA / 255, 0.06, 8, id="jpeg-rgb"),
    pytest.param("TIFF", GRAY8, GRAY8.astype(np.float32) / 255, 0.0, 8, id="tiff-gray8"),
    pytest.param("TIFF", GRAY16, None, 0.0, 16, id="tiff-gray16"),
    pytest.param("TIFF", RGB, LUMA / 255, 1e-5, 8, id="tiff-rgb"),
]


@pytest.mark.parametrize(("fmt", "array", "expected", "tolerance", "bits"), RASTER_CASES)
def test_raster_films(tmp_path, fmt, array, expected, tolerance, bits):
    path = tmp_path / f"photo.{fmt.lower()}"
    path.write_bytes(_encode(array, fmt))
    film = load_film(path)
    assert film.info.format.value == fmt
    assert (film.info.rows, film.info.columns) == (60, 70)
    assert film.info.bits_stored == bits
    assert film.calibration.label is SpacingLabel.PX
    assert any("no pixel spacing" in w for w in film.warnings)
    assert film.pixels.dtype == np.float32 and not film.pixels.flags.writeable
    if expected is None:  # 16-bit: the auto window over the stored values
        assert film.window.explanation == "auto"
        np.testing.assert_array_equal(film.stored, array)
        assert float(film.pixels.min()) == 0.0 and float(film.pixels.max()) == 1.0
    else:
        assert film.window.explanation == "full range"
        np.testing.assert_allclose(film.pixels, expected, atol=tolerance + 1e-6)
    info = read_film_info(path)
    assert info.format.value == fmt and info.rows == 60 and info.columns == 70
    calibrated = load_film(path, calibration=Calibration.user(row_spacing_mm=0.25))
    assert calibrated.calibration.label is SpacingLabel.USER


def test_photo_upload_as_bytes():
    film = load_film(_encode(GRAY8, "PNG"), name="phone.png")
    assert film.info.name == "phone.png" and film.info.format is FilmFormat.PNG


def test_corrupt_png_names_the_file(tmp_path):
    data = _encode(GRAY8, "PNG")
    path = tmp_path / "broken.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"broken\.png: cannot (read|decode) the PNG image"):
        load_film(path)


def test_multi_page_tiff_uses_the_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    first, second = Image.fromarray(GRAY8), Image.fromarray(255 - GRAY8)
    first.save(path, save_all=True, append_images=[second])
    film = load_film(path)
    assert film.info.number_of_frames == 2
    np.testing.assert_array_equal(film.stored, GRAY8)
    assert any("2 frames" in w for w in film.warnings)


@pytest.mark.parametrize("written", ["film.dcm", "./film.dcm", "sub//film.dcm", "sub/./film.dcm"])
def test_film_info_names_the_path_as_pathlib_does(tmp_path, monkeypatch, written):
    from pathlib import Path

    (tmp_path / "sub").mkdir()
    data = dicom_bytes(make_dataset())
    (tmp_path / "film.dcm").write_bytes(data)
    (tmp_path / "sub" / "film.dcm").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    info = read_film_info(written)
    assert (info.name, info.path) == (Path(written).name, str(Path(written)))
    missing = written.replace("film", "nothing")
    with pytest.raises(ImageReadError) as raised:
        read_film_info(missing)
    assert str(raised.value) == f"nothing.dcm: no such file ({Path(missing)})"


def test_film_module_is_the_model_only():
    """film.py imports no reader (no cycle film -> dicom -> film) and does no file I/O."""
    import ast
    from pathlib import Path

    import vheight.film

    tree = ast.parse(Path(vheight.film.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {"vheight.dicom", "vheight.loader", "vheight.raster", "pydicom", "PIL"} & imported
    assert not {"io", "os", "pathlib", "threading", "concurrent.futures"} & imported
