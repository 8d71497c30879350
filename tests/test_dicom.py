"""DICOM films: transfer syntaxes, the display pipeline, header facts, bad inputs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from vheight.calibration import SpacingLabel
from vheight.dicom import decoder_plugins
from vheight.errors import DicomReadError, ImageReadError
from vheight.film import Film
from vheight.loader import load_film, read_film_info

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


# -- builders (also used by test_film.py and test_cli_info.py) ------------------------


def smooth_image(rows: int = 96, columns: int = 80, *, bits: int = 12, seed: int = 0) -> np.ndarray:
    """Anatomy-like smooth content plus a little noise, unsigned, within ``bits``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    top = 2**bits - 1
    image = 0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 0.01, (rows, columns))
    return np.clip(image * top, 0, top).astype(np.uint16 if bits > 8 else np.uint8)


def make_dataset(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    modality: str = "DX",
    sop_class: str = DX_STORAGE,
    **attributes,
) -> Dataset:
    """A small projection radiograph; ``attributes`` are DICOM keywords."""
    if pixels is None:
        pixels = smooth_image(bits=bits_stored)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "VH-TEST"
    ds.PatientName = "Test^Film"
    ds.StudyDate = "20260102"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom(ds: Dataset, path: Path) -> Path:
    path.write_bytes(dicom_bytes(ds))
    return path


def _testdata(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing from pydicom / pydicom-data"
    return path


_REFERENCE_CACHE: dict[str, Film] = {}


def real_film(name: str) -> Film:
    """Cached: the pydicom-data radiographs take a moment to decode."""
    if name not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[name] = load_film(_testdata(name))
    return _REFERENCE_CACHE[name]


# -- decoders ---------------------------------------------------------------------------


def test_every_radiograph_transfer_syntax_has_a_decoder_here():
    plugins = decoder_plugins()
    for uid in (
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGBaseline8Bit,
        UID("1.2.840.10008.1.2.4.51"),  # JPEG Extended
        UID("1.2.840.10008.1.2.4.57"),  # JPEG Lossless
        UID("1.2.840.10008.1.2.4.70"),  # JPEG Lossless SV1
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        HTJ2KLossless,
        UID("1.2.840.10008.1.2.4.202"),
        UID("1.2.840.10008.1.2.4.203"),
    ):
        assert uid.name in plugins, uid.name
        if uid.is_compressed:
            assert plugins[uid.name], f"no plugin installed for {uid.name}"
    assert "pylibjpeg" in plugins[HTJ2KLossless.name]
    assert "pyjpegls" in plugins[JPEGLSLossless.name]


# -- real radiographs (pydicom-data) ------------------------------------------------------

RG_FILMS = [
    pytest.param(name, id=name)
    for name in (
        "RG1_UNCR.dcm",
        "RG1_UNCI.dcm",
        "RG1_J2KR.dcm",
        "RG1_J2KI.dcm",
        "RG3_UNCR.dcm",
        "RG3_UNCI.dcm",
        "RG3_J2KR.dcm",
        "RG3_J2KI.dcm",
    )
]


@pytest.mark.parametrize("name", RG_FILMS)
def test_real_cr_films_load_monochrome1_uncalibrated(name):
    film = real_film(name)
    rows, columns = (1955, 1841) if name.startswith("RG1") else (1760, 1760)
    assert film.pixels.shape == (rows, columns) == (film.info.rows, film.info.columns)
    assert film.pixels.dtype == np.float32
    assert not film.pixels.flags.writeable and not film.stored.flags.writeable
    assert 0.0 <= float(film.pixels.min()) and float(film.pixels.max()) <= 1.0
    assert film.invert is True and film.info.photometric_interpretation == "MONOCHROME1"
    assert film.info.modality == "CR"
    assert film.calibration.label is SpacingLabel.PX
    assert film.info.to_dict()["spacing_label"] == "px"
    if name.startswith("RG1"):
        assert any("PixelSpacing = 0.000\\0.000 is not usable" in w for w in film.warnings)
        assert film.windows[0].center == 15000 and film.windows[0].width == 30000
        assert film.info.bits_stored == 15
    else:
        assert any("no pixel spacing" in w for w in film.warnings)
        assert film.info.bits_stored == 10


@pytest.mark.parametrize("stem", ["RG1", "RG3"])
def test_jpeg2000_lossless_equals_uncompressed_exactly(stem):
    plain = real_film(f"{stem}_UNCR.dcm")
    j2k = real_film(f"{stem}_J2KR.dcm")
    assert j2k.info.transfer_syntax_uid == JPEG2000Lossless
    assert np.array_equal(j2k.stored, plain.stored)
    assert np.array_equal(j2k.pixels, plain.pixels)
    lossy = real_film(f"{stem}_J2KI.dcm")
    assert lossy.info.transfer_syntax_uid == JPEG2000
    assert float(np.mean(np.abs(lossy.pixels - plain.pixels))) < 0.01


def test_chest_is_displayed_with_bright_bones():
    """RG1 is a PA chest: the spine/mediastinum band is brighter than the lungs."""
    pixels = real_film("RG1_UNCR.dcm").pixels
    rows, columns = pixels.shape
    band = slice(int(rows * 0.25), int(rows * 0.6))
    centre = pixels[band, int(columns * 0.46) : int(columns * 0.54)].mean()
    right_lung = pixels[band, int(columns * 0.22) : int(columns * 0.34)].mean()
    left_lung = pixels[band, int(columns * 0.66) : int(columns * 0.78)].mean()
    assert centre > right_lung + 0.08 and centre > left_lung + 0.08
    # Without the MONOCHROME1 inversion the lungs would be the bright part.
    raw = real_film("RG1_UNCR.dcm").render(invert=True)
    assert (
        raw[band, int(columns * 0.46) : int(columns * 0.54)].mean()
        < raw[band, int(columns * 0.22) : int(columns * 0.34)].mean()
    )


def test_window_matches_pydicom_reference_windowing():
    film = real_film("RG1_UNCR.dcm")
    ds = pydicom.dcmread(_testdata("RG1_UNCR.dcm"))
    reference = apply_voi_lut(ds.pixel_array, ds).astype(np.float64) / (2**15 - 1)
    np.testing.assert_allclose(film.pixels, 1.0 - reference, atol=2e-5)
    assert np.array_equal(film.stored, ds.pixel_array)


def test_pydicom_cr_with_imager_pixel_spacing_and_rescale():
    path = _testdata("dicomdirtests/77654033/CR1/6154")
    film = load_film(path)
    ds = pydicom.dcmread(path)
    assert film.calibration.label is SpacingLabel.PROJ
    assert film.calibration.row_spacing_mm == pytest.approx(0.1)
    assert film.calibration.source == "ImagerPixelSpacing"
    assert film.modality.slope == pytest.approx(0.684) and film.modality.intercept == 200
    np.testing.assert_allclose(film.modality_values, ds.pixel_array * 0.684 + 200, rtol=1e-6)
    # pydicom windows into the rescaled range [intercept, (2**12 - 1) * slope + intercept]
    low, high = 200.0, (2**12 - 1) * 0.684 + 200.0
    reference = (apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) - low) / (high - low)
    np.testing.assert_allclose(film.pixels, 1.0 - reference, atol=1e-5)
    info = read_film_info(path)
    assert info.view_position == "LL" and info.calibration == film.calibration


def test_modality_lut_sequence_matches_pydicom():
    path = _testdata("mlut_18.dcm")
    film = load_film(path)
    ds = pydicom.dcmread(path)
    assert film.modality.lut is not None
    np.testing.assert_allclose(film.modality_values, apply_modality_lut(ds.pixel_array, ds))
    assert film.windows[0].explanation == "auto"


def test_voi_lut_sequence_matches_pydicom():
    path = _testdata("vlut_04.dcm")
    film = load_film(path)
    ds = pydicom.dcmread(path)
    assert film.windows[0].is_lut
    reference = apply_voi_lut(ds.pixel_array, ds).astype(np.float64) / 65535.0
    np.testing.assert_allclose(film.pixels, reference, atol=1e-6)


PYDICOM_ENCODED = [
    pytest.param("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70", id="jpeg-lossless-sv1-16bit"),
    pytest.param(
        "JPGLosslessP14SV1_1s_1f_8b.dcm", "1.2.840.10008.1.2.4.70", id="jpeg-lossless-8bit"
    ),
    pytest.param("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, id="jpeg-ls-signed"),
    pytest.param("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless, id="jpeg-ls-near"),
    pytest.param("MR_small_RLE.dcm", RLELossless, id="rle-signed"),
    pytest.param("emri_small_big_endian.dcm", ExplicitVRBigEndian, id="big-endian"),
    pytest.param("image_dfl.dcm", DeflatedExplicitVRLittleEndian, id="deflated"),
    pytest.param("J2K_pixelrep_mismatch.dcm", JPEG2000Lossless, id="j2k-sign-mismatch"),
    pytest.param("693_J2KI.dcm", JPEG2000, id="j2k-lossy-14bit"),
]


@pytest.mark.parametrize(("name", "syntax"), PYDICOM_ENCODED)
def test_pydicom_test_files_decode_like_pydicom(name, syntax):
    path = _testdata(name)
    film = load_film(path)
    ds = pydicom.dcmread(path)
    frame = ds.pixel_array if int(ds.get("NumberOfFrames") or 1) == 1 else ds.pixel_array[0]
    assert film.info.transfer_syntax_uid == syntax
    assert film.info.transfer_syntax_name == UID(syntax).name
    assert np.array_equal(film.stored, frame)
    assert film.pixels.shape == frame.shape[:2]
    assert film.pixels.dtype == np.float32


def test_palette_colour_without_preamble_becomes_gray():
    film = load_film(_testdata("OT-PAL-8-face.dcm"))
    assert film.info.photometric_interpretation == "PALETTE COLOR"
    assert film.pixels.shape == (480, 640)
    assert film.stored.dtype == np.float32 and film.pixels.std() > 0.1


@pytest.mark.parametrize(
    "name",
    ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "SC_rgb_small_odd_big_endian.dcm"],
)
def test_colour_secondary_captures_become_luminance(name):
    path = _testdata(name)
    film = load_film(path)
    ds = pydicom.dcmread(path)
    rgb = ds.pixel_array.astype(np.float32)  # pydicom converts YBR to RGB
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(film.stored, expected, atol=1e-3)
    assert film.window.explanation == "full range"
    np.testing.assert_allclose(film.pixels, expected / 255.0, atol=1e-5)


# -- synthetic films: every transfer syntax we can encode ------------------------------------


def _jpeg_baseline(ds: Dataset) -> Dataset:
    from PIL import Image

    frame = ds.pixel_array
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def _htj2k_routed(ds: Dataset) -> Dataset:
    # No HTJ2K encoder is installed: a JPEG 2000 Part 1 codestream is decodable by
    # every HTJ2K (Part 15) decoder, so this checks the routing to pylibjpeg.
    ds.compress(JPEG2000Lossless)
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    return ds


def _htj2k(ds: Dataset) -> Dataset:
    # A real High-Throughput JPEG 2000 codestream (with its CAP marker), reversible,
    # encoded by OpenJPH through imagecodecs (a test dependency).
    import imagecodecs

    codestream = imagecodecs.htj2k_encode(ds.pixel_array, level=0)
    assert codestream[:4] == b"\xff\x4f\xff\x51" and b"\xff\x50" in codestream[:200]
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    return ds


def _big_endian(ds: Dataset) -> Dataset:
    ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    return ds


def _syntax(uid: UID):
    def convert(ds: Dataset) -> Dataset:
        ds.file_meta.TransferSyntaxUID = uid
        return ds

    return convert


def _compress(uid: UID, **options):
    def convert(ds: Dataset) -> Dataset:
        ds.compress(uid, **options)
        return ds

    return convert


SYNTHETIC_SYNTAXES = [
    pytest.param(_syntax(ExplicitVRLittleEndian), ExplicitVRLittleEndian, 12, 0, id="explicit-le"),
    pytest.param(_syntax(ImplicitVRLittleEndian), ImplicitVRLittleEndian, 12, 0, id="implicit-le"),
    pytest.param(_big_endian, ExplicitVRBigEndian, 12, 0, id="explicit-be"),
    pytest.param(
        _syntax(DeflatedExplicitVRLittleEndian),
        DeflatedExplicitVRLittleEndian,
        12,
        0,
        id="deflated",
    ),
    pytest.param(_compress(RLELossless), RLELossless, 12, 0, id="rle"),
    pytest.param(_compress(JPEGLSLossless), JPEGLSLossless, 12, 0, id="jpeg-ls"),
    pytest.param(
        _compress(JPEGLSNearLossless, jls_error=3), JPEGLSNearLossless, 12, 3, id="jpeg-ls-near"
    ),
    pytest.param(_compress(JPEG2000Lossless), JPEG2000Lossless, 12, 0, id="j2k-lossless"),
    pytest.param(_compress(JPEG2000, j2k_cr=[8]), JPEG2000, 12, 160, id="j2k-lossy"),
    pytest.param(_htj2k_routed, HTJ2KLossless, 12, 0, id="htj2k-lossless-part1-codestream"),
    pytest.param(_htj2k, HTJ2KLossless, 12, 0, id="htj2k-lossless"),
    pytest.param(_jpeg_baseline, JPEGBaseline8Bit, 8, 10, id="jpeg-baseline"),
]


@pytest.mark.parametrize(("convert", "syntax", "bits", "tolerance"), SYNTHETIC_SYNTAXES)
def test_synthetic_film_in_each_transfer_syntax(tmp_path, convert, syntax, bits, tolerance):
    original = smooth_image(bits=bits, seed=3)
    ds = convert(
        make_dataset(original, bits_stored=bits, WindowCenter=2**bits // 2, WindowWidth=2**bits)
    )
    path = write_dicom(ds, tmp_path / "film.dcm")
    film = load_film(path)
    assert film.info.transfer_syntax_uid == syntax
    assert read_film_info(path).transfer_syntax_name == syntax.name
    error = np.abs(film.stored.astype(np.int64) - original.astype(np.int64))
    if tolerance == 0:
        assert np.array_equal(film.stored, original)
    else:
        assert 0 < error.max() <= tolerance or error.mean() < tolerance / 4
    expected = np.clip((original - (2**bits // 2 - 0.5)) / (2**bits - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(film.pixels, expected, atol=tolerance / 2**bits + 1e-6)


# -- the display pipeline on synthetic films -----------------------------------------------


def test_rescale_and_every_window_with_its_explanation():
    pixels = smooth_image(bits=12, seed=5)
    ds = make_dataset(
        pixels,
        RescaleSlope=2.0,
        RescaleIntercept=-1000.0,
        RescaleType="US",
        WindowCenter=[2000.0, 3000.0, 500.0],
        WindowWidth=[4000.0, 2000.0, 1000.0],
        WindowCenterWidthExplanation=["SOFT", "BONE", "DARK"],
    )
    film = load_film(dicom_bytes(ds), name="windows.dcm")
    values = pixels * 2.0 - 1000.0
    np.testing.assert_allclose(film.modality_values, values)
    assert [w.explanation for w in film.windows] == ["SOFT", "BONE", "DARK"]
    assert film.window.explanation == "SOFT"
    for index, (center, width) in enumerate([(2000, 4000), (3000, 2000), (500, 1000)]):
        expected = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
        np.testing.assert_allclose(film.render(window=index), expected, atol=1e-5)
        by_name = film.render(window=film.windows[index].explanation.lower())
        np.testing.assert_allclose(by_name, expected, atol=1e-5)
    np.testing.assert_array_equal(film.render(), film.pixels)
    manual = film.render(window=(1500.0, 100.0))
    np.testing.assert_allclose(manual, np.clip((values - 1500) / 100 + 0.5, 0, 1), atol=1e-5)
    assert not manual.flags.writeable
    with pytest.raises(KeyError, match="windows.dcm: no window named 'LUNG'"):
        film.render(window="LUNG")
    with pytest.raises(IndexError, match="windows.dcm: window 7 out of range"):
        film.render(window=7)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions_match_pydicom(function):
    pixels = smooth_image(bits=12, seed=6)
    ds = make_dataset(pixels, WindowCenter=1800, WindowWidth=1200, VOILUTFunction=function)
    film = load_film(dicom_bytes(ds))
    assert film.window.function.value == function
    reference = apply_voi_lut(pixels, ds).astype(np.float64) / (2**12 - 1)
    np.testing.assert_allclose(film.pixels, reference, atol=3e-5)


def test_monochrome1_is_the_inverse_of_monochrome2():
    pixels = smooth_image(bits=12, seed=7)
    mono2 = load_film(dicom_bytes(make_dataset(pixels, WindowCenter=2048, WindowWidth=4096)))
    mono1 = load_film(
        dicom_bytes(
            make_dataset(pixels, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096)
        )
    )
    assert mono1.invert and not mono2.invert
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)
    np.testing.assert_allclose(mono1.render(invert=True), mono2.pixels, atol=1e-6)


def test_unused_high_bits_are_masked(tmp_path):
    clean = smooth_image(bits=12, seed=8)
    dirty = clean | np.uint16(0xA000)  # garbage in bits 13 and 15, above Bits Stored 12
    ds = make_dataset(clean, WindowCenter=2048, WindowWidth=4096)
    ds.PixelData = dirty.tobytes()
    path = write_dicom(ds, tmp_path / "dirty.dcm")
    film = load_film(path)
    assert np.array_equal(film.stored, clean)
    reference = load_film(dicom_bytes(make_dataset(clean, WindowCenter=2048, WindowWidth=4096)))
    np.testing.assert_array_equal(film.pixels, reference.pixels)
    # and pydicom agrees on what the stored values are
    assert np.array_equal(pydicom.dcmread(path).pixel_array, clean)


def test_signed_values_are_sign_extended_from_bits_stored():
    values = np.array([[-2048, -1, 0, 2047]] * 4, dtype=np.int16)
    ds = make_dataset(values, bits_stored=12, WindowCenter=0, WindowWidth=4096)
    # Garbage above bit 12 in the two non-negative values.
    raw = values.view(np.uint16).copy()
    raw[:, 2:] |= np.uint16(0x7000)
    ds.PixelData = raw.tobytes()
    film = load_film(dicom_bytes(ds))
    assert film.stored.dtype.kind == "i"
    assert np.array_equal(film.stored, values)


def test_rgb_synthetic_film_is_converted_to_gray():
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ds = make_dataset(
        rgb, photometric="RGB", bits_stored=8, modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7"
    )
    film = load_film(dicom_bytes(ds))
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(film.stored, expected, rtol=1e-6)
    assert film.pixels.shape == (40, 50)


def test_multi_frame_shows_the_first_frame_with_a_warning():
    frames = np.stack([smooth_image(bits=12, seed=s) for s in (10, 11, 12)])
    ds = make_dataset(frames, WindowCenter=2048, WindowWidth=4096)
    assert ds.NumberOfFrames == 3
    film = load_film(dicom_bytes(ds), name="cine.dcm")
    assert np.array_equal(film.stored, frames[0])
    assert film.info.number_of_frames == 3
    assert any("cine.dcm has 3 frames: the first is shown" in w for w in film.warnings)


def test_film_without_window_gets_the_auto_percentile_window():
    pixels = smooth_image(bits=12, seed=13)
    film = load_film(dicom_bytes(make_dataset(pixels)))
    assert [w.explanation for w in film.windows] == ["auto"]
    low, high = np.percentile(pixels, [0.5, 99.5])
    assert film.window.center == pytest.approx((low + high) / 2, rel=1e-3)
    assert film.window.width == pytest.approx(high - low, rel=1e-3)
    assert float((film.pixels == 0).mean()) == pytest.approx(0.005, abs=0.004)
    assert float((film.pixels == 1).mean()) == pytest.approx(0.005, abs=0.004)


def test_constant_film_does_not_break_the_auto_window():
    film = load_film(dicom_bytes(make_dataset(np.full((8, 8), 300, np.uint16))))
    assert np.isfinite(film.pixels).all()


# -- header facts and calibration through the file -------------------------------------------

CALIBRATION_FILES = [
    pytest.param({"ImagerPixelSpacing": [0.15, 0.15]}, "mm Proj", 0.15, id="proj"),
    pytest.param(
        {"ImagerPixelSpacing": [0.15, 0.15], "EstimatedRadiographicMagnificationFactor": 1.2},
        "mm ERMF",
        0.125,
        id="ermf",
    ),
    pytest.param(
        {
            "ImagerPixelSpacing": [0.2, 0.2],
            "DistanceSourceToDetector": 1500,
            "DistanceSourceToPatient": 1200,
        },
        "mm ERMF",
        0.16,
        id="sid-sod",
    ),
    pytest.param(
        {"PixelSpacing": [0.1, 0.1], "PixelSpacingCalibrationType": "FIDUCIAL"},
        "mm Calibrated",
        0.1,
        id="fiducial",
    ),
    pytest.param(
        {"PixelSpacing": [0.11, 0.11], "PixelSpacingCalibrationType": "GEOMETRY"},
        "mm ERMF",
        0.11,
        id="geometry",
    ),
    pytest.param(
        {"ImagerPixelSpacing": [0.139, 0.139], "PixelSpacing": [0.12, 0.12]},
        "mm Calibrated",
        0.12,
        id="pixel-spacing-differs",
    ),
    pytest.param({"PixelSpacing": [0.1, 0.1]}, "mm", 0.1, id="pixel-spacing-only"),
    pytest.param({"PixelSpacing": [0.0, 0.0]}, "px", 1.0, id="zero"),
    pytest.param({"PixelSpacing": [-0.1, 0.1]}, "px", 1.0, id="negative"),
    pytest.param({}, "px", 1.0, id="none"),
]


@pytest.mark.parametrize(("attributes", "label", "row_mm"), CALIBRATION_FILES)
def test_header_calibration_read_from_file(tmp_path, attributes, label, row_mm):
    path = write_dicom(make_dataset(**attributes), tmp_path / "cal.dcm")
    info = read_film_info(path)
    assert info.calibration.label.value == label
    assert info.calibration.row_spacing_mm == pytest.approx(row_mm)
    record = info.to_dict()
    assert record["spacing_label"] == label
    assert (record["row_spacing_mm"] is None) == (label == "px")
    assert load_film(path).calibration == info.calibration


def test_nan_spacing_is_a_warning_not_a_crash(tmp_path):
    ds = make_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that 'NaN' is not a valid DS
        ds.PixelSpacing = ["NaN", "NaN"]
        path = write_dicom(ds, tmp_path / "nan.dcm")
    film = load_film(path)
    assert film.calibration.label is SpacingLabel.PX
    assert any("PixelSpacing" in w and "not usable" in w for w in film.warnings)


def test_unreadable_spacing_text_is_a_warning(tmp_path):
    ds = make_dataset(ImagerPixelSpacing=[0.139, 0.139])
    path = write_dicom(ds, tmp_path / "abc.dcm")
    data = path.read_bytes().replace(b"0.139\\0.139 ", b"abc\\defghij ")
    assert b"abc\\defghij" in data
    path.write_bytes(data)
    info = read_film_info(path)
    assert info.calibration.label is SpacingLabel.PX
    assert any("ImagerPixelSpacing = abc\\defghij is not usable" in w for w in info.warnings)


def test_header_facts_are_kept():
    ds = make_dataset(
        ImagerPixelSpacing=[0.139, 0.139],
        ViewPosition="LL",
        PatientPosition="HFS",
        WindowCenter=2048,
        WindowWidth=4096,
    )
    info = read_film_info(dicom_bytes(ds), name="lateral.dcm")
    assert info.name == "lateral.dcm" and info.path is None
    assert (info.rows, info.columns) == (96, 80)
    assert info.modality == "DX" and info.sop_class_uid == DX_STORAGE
    assert info.sop_instance_uid == ds.SOPInstanceUID
    assert info.study_instance_uid == ds.StudyInstanceUID
    assert info.series_instance_uid == ds.SeriesInstanceUID
    assert info.patient_id == "VH-TEST" and info.patient_name == "Test^Film"
    assert info.study_date == "20260102"
    assert info.photometric_interpretation == "MONOCHROME2"
    assert info.transfer_syntax_uid == ExplicitVRLittleEndian
    assert info.transfer_syntax_name == "Explicit VR Little Endian"
    assert info.bits_stored == 12 and info.number_of_frames == 1
    assert info.view_position == "LL" and info.patient_position == "HFS"
    assert info.calibration.label is SpacingLabel.PROJ
    assert info.warnings == ()


def test_read_film_info_never_decodes_pixels(monkeypatch):
    import pydicom.pixels.decoders.base as base

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(base.Decoder, "as_array", refuse)
    info = read_film_info(_testdata("RG1_J2KR.dcm"))
    assert info.rows == 1955


# -- bad inputs -------------------------------------------------------------------------------


def test_text_file_is_not_a_dicom_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    with pytest.raises(DicomReadError, match=r"notes\.dcm: not a DICOM file \(no DICM preamble"):
        load_film(path)
    with pytest.raises(DicomReadError, match=r"notes\.dcm: not a DICOM file"):
        read_film_info(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.dcm: the file is empty"):
        load_film(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"ghost\.dcm: no such file"):
        load_film(tmp_path / "ghost.dcm")


def test_truncated_pixel_data(tmp_path):
    data = dicom_bytes(make_dataset(WindowCenter=2048, WindowWidth=4096))
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(DicomReadError, match=r"cut\.dcm: .*truncated"):
        load_film(path)


def test_truncated_header(tmp_path):
    data = dicom_bytes(make_dataset(ImagerPixelSpacing=[0.1, 0.1]))
    path = tmp_path / "stub.dcm"
    path.write_bytes(data[:300])
    with pytest.raises(DicomReadError, match=r"stub\.dcm: the DICOM file is truncated or corrupt"):
        load_film(path)


def test_truncated_jpeg2000_film(tmp_path):
    ds = make_dataset()
    ds.compress(JPEG2000Lossless)
    data = dicom_bytes(ds)
    path = tmp_path / "cut_j2k.dcm"
    path.write_bytes(data[:-200])
    with pytest.raises(DicomReadError, match=r"cut_j2k\.dcm: the DICOM file is truncated"):
        load_film(path)


def test_corrupt_jpeg2000_codestream(tmp_path):
    ds = make_dataset()
    ds.compress(JPEG2000Lossless)
    # A codestream that starts right (SOC, SIZ marker) and then is noise.
    noise = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + noise])
    path = write_dicom(ds, tmp_path / "broken_j2k.dcm")
    with pytest.raises(
        DicomReadError,
        match=r"broken_j2k\.dcm: .*decode the pixel data.*"
        r"JPEG 2000 Image Compression \(Lossless Only\)",
    ):
        load_film(path)


def test_dicom_without_pixel_data(tmp_path):
    ds = make_dataset()
    del ds.PixelData
    path = write_dicom(ds, tmp_path / "nopix.dcm")
    with pytest.raises(DicomReadError, match=r"nopix\.dcm: no pixel data \(7FE0,0010\)"):
        load_film(path)
    with pytest.raises(DicomReadError, match=r"nopix\.dcm: no pixel data .*truncated after"):
        read_film_info(path)  # a header alone is not a film (batch: an error row)


def test_dicom_that_is_not_an_image(tmp_path):
    ds = make_dataset()
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    path = write_dicom(ds, tmp_path / "report.dcm")
    with pytest.raises(DicomReadError, match=r"report\.dcm: not an image: no Rows/Columns"):
        read_film_info(path)


def test_dicom_holding_none_of_the_header_facts_is_not_an_image(tmp_path):
    """Nothing of INFO_KEYWORDS in the data set: not mistaken for an empty (corrupt) one."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageComments = "no identifiers, no size"
    path = write_dicom(ds, tmp_path / "bare.dcm")
    with pytest.raises(DicomReadError, match=r"bare\.dcm: not an image: no Rows/Columns"):
        read_film_info(path)


def test_unsupported_photometric_interpretation(tmp_path):
    ds = make_dataset()
    ds.PhotometricInterpretation = "HSV"
    path = write_dicom(ds, tmp_path / "hsv.dcm")
    with pytest.raises(
        DicomReadError, match=r"hsv\.dcm: unsupported photometric interpretation 'HSV'"
    ):
        load_film(path)


def test_unknown_transfer_syntax(tmp_path):
    data = dicom_bytes(make_dataset())
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit_le) == 1
    path = tmp_path / "odd.dcm"
    path.write_bytes(data.replace(explicit_le, b"1.2.826.0.1.99999.7\x00"))
    with pytest.raises(
        DicomReadError,
        match=r"odd\.dcm: transfer syntax .*1\.2\.826\.0\.1\.99999\.7.* not supported",
    ):
        load_film(path)


def test_12_bit_jpeg_extended_has_no_permissive_decoder():
    # Only the GPL pylibjpeg-libjpeg decodes 12-bit JPEG Extended; it is not a dependency.
    with pytest.raises(
        DicomReadError,
        match=r"JPGExtended\.dcm: no installed decoder could decode the pixel data "
        r"\(.*12-bit.*\) \[JPEG Extended \(Process 2 and 4\)",
    ):
        load_film(_testdata("JPGExtended.dcm"))


def test_no_decoder_available_names_file_and_syntax(tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    ds = make_dataset()
    ds.compress(RLELossless)
    path = write_dicom(ds, tmp_path / "rle.dcm")
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(
        DicomReadError, match=r"rle\.dcm: no decoder available for transfer syntax RLE Lossless"
    ):
        load_film(path)


def test_jpeg_renamed_dcm_is_read_as_jpeg_with_a_warning(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.dcm"
    Image.fromarray(smooth_image(bits=8)).save(path, format="JPEG")
    film = load_film(path)
    assert film.info.format.value == "JPEG"
    assert any("photo.dcm is a JPEG image, not DICOM" in w for w in film.warnings)
    assert film.calibration.label is SpacingLabel.PX


def test_oversize_upload_is_refused():
    data = dicom_bytes(make_dataset())
    with pytest.raises(ImageReadError, match=r"big\.dcm: upload too large .*limit is 0 MiB"):
        load_film(data, name="big.dcm", max_bytes=1000)
    with pytest.raises(ImageReadError, match=r"<upload>: upload too large"):
        load_film(io.BytesIO(data), max_bytes=1000)
    assert load_film(data, max_bytes=len(data)).rows == 96


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        pytest.param(None, "Doe^John", id="default"),
        pytest.param("ISO_IR 100", "Müller^Jürgen", id="latin-1"),
        pytest.param("ISO_IR 192", "Müller^Jürgen", id="utf-8"),
        pytest.param("ISO_IR 144", "Иванов^Иван", id="cyrillic"),
    ],
)
def test_header_facts_from_a_file_equal_those_of_the_decoded_dataset(tmp_path, charset, name):
    ds = make_dataset(
        ImagerPixelSpacing=[0.139, 0.14],
        EstimatedRadiographicMagnificationFactor=1.1,
        ViewPosition="LATERAL",
    )
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    path = write_dicom(ds, tmp_path / "facts.dcm")
    from_file = read_film_info(path)  # raw elements, decoded directly
    from vheight.dicom import info_from_dataset

    converted = pydicom.dcmread(path, stop_before_pixels=True)
    converted.decode()
    for element in converted:  # force pydicom's own conversion of every element
        _ = element.value
    from_dataset = info_from_dataset(converted, name="facts.dcm", path=str(path))
    assert from_file == from_dataset
    assert from_file.patient_name == name
    assert from_file.calibration.row_spacing_mm == pytest.approx(0.139 / 1.1)


def _j2k_dataset() -> Dataset:
    ds = make_dataset(smooth_image(64, 48, bits=12, seed=40))
    ds.compress(JPEG2000Lossless)
    return ds


@pytest.mark.parametrize(
    ("corrupt", "sound"),
    [
        pytest.param(lambda frame, ds: frame, True, id="sound"),
        pytest.param(lambda frame, ds: frame[: len(frame) // 2], False, id="truncated"),
        pytest.param(lambda frame, ds: b"\xff\x4f\xff\x51" + bytes(100), False, id="garbage-siz"),
        pytest.param(lambda frame, ds: frame[:2] + frame[4:], False, id="no-siz"),
        pytest.param(lambda frame, ds: setattr(ds, "Rows", 32) or frame, False, id="rows-disagree"),
    ],
)
def test_jpeg2000_header_check_guards_the_fast_decoder(corrupt, sound):
    from vheight.dicom import _j2k_header_ok, info_from_dataset

    ds = _j2k_dataset()
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([corrupt(frame, ds)])
    assert _j2k_header_ok(ds, info_from_dataset(ds, name="x.dcm")) is sound


def test_corrupt_jpeg2000_body_is_an_error_not_a_crash(tmp_path):
    ds = _j2k_dataset()
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    noise = np.random.default_rng(3).integers(0, 256, len(frame) - 200, dtype=np.uint8)
    ds.PixelData = encapsulate([frame[:200] + noise.tobytes()[:-2] + b"\xff\xd9"])
    path = write_dicom(ds, tmp_path / "noisy_j2k.dcm")
    try:
        film = load_film(path)  # a decoder may tolerate the noise ...
    except DicomReadError as exc:  # ... or say so, naming file and syntax
        assert "noisy_j2k.dcm" in str(exc) and "JPEG 2000" in str(exc)
    else:
        assert film.pixels.shape == (64, 48)


# -- uncompressed pixel data: the first frame, as pydicom decodes it ------------------


def _native_variants() -> list:
    odd = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9)  # 63 bytes: a pad byte follows
    signed = np.array([[-2048, -1, 0, 2047]] * 5, dtype=np.int16)
    frames = np.stack([smooth_image(bits=12, seed=s) for s in (20, 21)])
    implicit = make_dataset(smooth_image(bits=14, seed=22), bits_stored=14)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    big = make_dataset(smooth_image(bits=12, seed=26), bits_stored=12)
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    return [
        pytest.param(make_dataset(bits_stored=12), id="16-bit"),
        pytest.param(make_dataset(odd, bits_stored=8), id="8-bit-odd-length"),
        pytest.param(make_dataset(signed, bits_stored=12), id="signed"),
        pytest.param(make_dataset(frames, bits_stored=12), id="multi-frame"),
        pytest.param(implicit, id="implicit-vr"),
        pytest.param(big, id="big-endian"),
    ]


@pytest.mark.parametrize("ds", _native_variants())
def test_uncompressed_first_frame_equals_pydicoms(ds, tmp_path):
    path = tmp_path / "native.dcm"
    ds.save_as(path, enforce_file_format=True)
    film = load_film(path)
    reference = pydicom.dcmread(path).pixel_array
    reference = reference[0] if reference.ndim == 3 else reference
    assert film.stored.dtype == reference.dtype.newbyteorder("=")
    assert np.array_equal(film.stored, reference)
    assert not film.stored.flags.writeable
    from_bytes = load_film(path.read_bytes())
    np.testing.assert_array_equal(from_bytes.pixels, film.pixels)


def _with_pixel_length(data: bytes, delta: int) -> bytes:
    """Explicit VR little endian file bytes with Pixel Data ``delta`` bytes longer."""
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    length = int.from_bytes(data[at + 8 : at + 12], "little") + delta
    return data[: at + 8] + length.to_bytes(4, "little") + data[at + 12 :] + b"\x00" * delta


def test_padded_and_cut_uncompressed_pixel_data():
    pixels = smooth_image(bits=12, seed=24)
    longer = _with_pixel_length(dicom_bytes(make_dataset(pixels, bits_stored=12)), 64)
    film = load_film(longer, name="padded.dcm")
    assert np.array_equal(film.stored, pixels)
    with pytest.raises(DicomReadError, match=r"cut\.dcm: .*truncated"):
        load_film(dicom_bytes(make_dataset(pixels))[:-100], name="cut.dcm")


def test_header_is_read_by_pydicom_only(monkeypatch):
    """One header reader: what pydicom's dcmread(stop_before_pixels=True) gives, of the
    elements a FilmInfo is made of (specific_tags)."""
    from pydicom.tag import Tag

    import vheight.dicom as vdicom

    calls: list[dict] = []
    real = pydicom.dcmread

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(vdicom.pydicom, "dcmread", spy)
    info = read_film_info(_testdata("RG1_UNCR.dcm"))
    tags = sorted(Tag(keyword) for keyword in vdicom.INFO_KEYWORDS)
    assert calls == [{"force": False, "stop_before_pixels": True, "specific_tags": tags}]
    ds = real(_testdata("RG1_UNCR.dcm"), stop_before_pixels=True)
    assert info == vdicom.info_from_dataset(ds, name="RG1_UNCR.dcm", path=info.path)


def test_header_facts_read_only_the_elements_info_keywords_names():
    """info_from_dataset looks at no element INFO_KEYWORDS leaves out (it would be
    missing from a header read with specific_tags), calibration included."""
    from pydicom.datadict import keyword_for_tag

    import vheight.dicom as vdicom
    from vheight.calibration import HEADER_KEYWORDS

    looked_at: set[str] = set()

    class Spy(pydicom.FileDataset):
        def __contains__(self, name):
            looked_at.add(keyword_for_tag(name) if not isinstance(name, str) else name)
            return super().__contains__(name)

        def __getattr__(self, name):
            if name[:1].isupper():
                looked_at.add(name)
            return super().__getattr__(name)

    ds = pydicom.dcmread(_testdata("RG1_UNCR.dcm"), stop_before_pixels=True)
    spy = Spy(ds.filename, ds, file_meta=ds.file_meta)
    vdicom.info_from_dataset(spy, name="RG1_UNCR.dcm")
    assert looked_at - {"SpecificCharacterSet"} <= set(vdicom.INFO_KEYWORDS)
    assert set(HEADER_KEYWORDS) <= set(vdicom.INFO_KEYWORDS)


def _info_or_error(path: str) -> object:
    try:
        return read_film_info(path)
    except (ImageReadError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _testdata_films() -> list[str]:
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = sorted(get_testdata_files("*"))
    films = [n for n in names if Path(n).suffix.lower() in (".dcm", "") and Path(n).is_file()]
    return films + [str(p) for p in sorted(Path(__file__).parents[1].glob("sample_images/*.dcm"))]


def test_header_facts_read_with_specific_tags_equal_those_of_the_whole_header(monkeypatch):
    """Reading only INFO_KEYWORDS' elements changes no fact, calibration, warning or
    error of any film of pydicom's and pydicom-data's test files or the samples."""
    import vheight.dicom as vdicom

    real = pydicom.dcmread

    def whole(*args, specific_tags=None, **kwargs):
        return real(*args, **kwargs)

    films = _testdata_films()
    assert any(Path(f).name == "RG1_UNCR.dcm" for f in films)
    differences = []
    for film in films:
        narrow = _info_or_error(film)
        with monkeypatch.context() as patched:
            patched.setattr(vdicom.pydicom, "dcmread", whole)
            broad = _info_or_error(film)
        if narrow != broad:
            differences.append((Path(film).name, narrow, broad))
    assert differences == []


@pytest.mark.parametrize("name", RG_FILMS)
def test_real_cr_films_header_calibration_and_warnings(name):
    """read_film_info (specific_tags) gives the real CR films the calibration and
    warnings of their whole header: PixelSpacing 0\\0 (RG1), no spacing (RG3)."""
    info = read_film_info(_testdata(name))
    film = real_film(name)
    assert info.calibration == film.calibration == film.info.calibration
    assert info.calibration.label is SpacingLabel.PX
    assert info.warnings == film.info.warnings
    if name.startswith("RG1"):
        assert any("PixelSpacing = 0.000\\0.000 is not usable" in w for w in info.warnings)
    else:
        assert any("no pixel spacing in the header" in w for w in info.warnings)
    assert (info.patient_id, info.modality, info.bits_stored) == (
        film.info.patient_id,
        "CR",
        15 if name.startswith("RG1") else 10,
    )


def test_films_loaded_on_several_threads_keep_their_own_warnings():
    from concurrent.futures import ThreadPoolExecutor

    pixels = smooth_image(bits=12, seed=25)
    plain = dicom_bytes(make_dataset(pixels, bits_stored=12, PixelSpacing=[0.125, 0.125]))
    padded = plain.replace(b"0.125\\0.125", b"0.12x\\0.125")  # pydicom warns on it
    assert padded != plain
    filters, show = list(warnings.filters), warnings.showwarning

    def load(i: int) -> tuple[bool, bool]:
        film = load_film(padded if i % 2 else plain, name=f"film{i}.dcm")
        return bool(i % 2), any("0.12x" in w for w in film.warnings)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(load, range(200)))
    assert all(expected == found for expected, found in results)
    assert warnings.filters == filters and warnings.showwarning is show
