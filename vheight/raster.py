"""PNG, JPEG and TIFF films, read by Pillow: header facts, then pixels.

A raster film carries no pixel spacing: it is uncalibrated (``px``) unless the
user gives a calibration.  Its header is read with Pillow's lazy
:func:`PIL.Image.open` (no pixel decoded), so the pixel budget
(:func:`vheight.loader.check_pixel_budget`) is checked before
:meth:`PIL.Image.Image.load`.  Grey images keep their values (8 or 16 bits);
colour images become their luminance (ITU-R BT.601).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vheight.errors import ImageReadError
from vheight.film import (
    Film,
    FilmFormat,
    FilmInfo,
    ModalityTransform,
    WindowPreset,
    auto_window,
    luminance,
    value_range,
)

__all__ = ["read_raster_info", "load_raster"]

_GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA")
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LA", "La", "RGBa", "LAB", "HSV")


def _open(stream: BinaryIO, *, name: str, fmt: FilmFormat) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        # vheight's own pixel budget decides what is decoded (load_raster);
        # Pillow's warning about a large image would be a second, stray line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except Image.DecompressionBombError as exc:
        # Pillow refuses twice its own limit outright, whatever the budget.
        raise ImageReadError(f"{name}: image too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name}: cannot read the {fmt.value} image ({exc})") from None


def _info(image: Any, *, name: str, path: str | None, fmt: FilmFormat) -> FilmInfo:
    bits = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8}.get(
        image.mode
    )
    if image.mode.startswith("I;16") or image.mode == "I":
        bits = 16
    warnings = []
    if Path(name).suffix.lower() in (".dcm", ".dicom", ".dic"):
        warnings.append(f"{name} is a {fmt.value} image, not DICOM: read as {fmt.value}")
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        warnings.append(f"{name} has {frames} frames: showing the first")
    warnings.append(
        f"{name} is a {fmt.value} image: no pixel spacing, measurements are in "
        "pixels unless a calibration is given"
    )
    return FilmInfo(
        name=name,
        path=path,
        format=fmt,
        rows=image.height,
        columns=image.width,
        photometric_interpretation="MONOCHROME2" if image.mode in _GREY_MODES else "RGB",
        bits_stored=bits,
        number_of_frames=frames,
        warnings=tuple(warnings),
    )


def read_raster_info(
    stream: BinaryIO, *, name: str, path: str | None = None, fmt: FilmFormat
) -> FilmInfo:
    """Header facts of a PNG, JPEG or TIFF stream (no pixel decoded)."""
    image = _open(stream, name=name, fmt=fmt)
    try:
        return _info(image, name=name, path=path, fmt=fmt)
    finally:
        image.close()


def load_raster(
    stream: BinaryIO, *, name: str, path: str | None = None, fmt: FilmFormat, max_pixels: int
) -> Film:
    """Decode a PNG, JPEG or TIFF stream into a :class:`Film` (first frame only)."""
    from vheight.budget import check_pixel_budget

    image = _open(stream, name=name, fmt=fmt)
    try:
        info = _info(image, name=name, path=path, fmt=fmt)
        samples = len(image.getbands())
        check_pixel_budget(
            name, rows=info.rows, columns=info.columns, samples=samples, limit=max_pixels
        )
        gray, full_scale = _gray(image, name=name, fmt=fmt)
    finally:
        image.close()
    modality = ModalityTransform()
    if full_scale == 255.0:
        window = WindowPreset(
            center=127.5, width=255.0, explanation="full range", function="LINEAR_EXACT"
        )
    else:
        window = auto_window(gray, modality)
    stored = np.ascontiguousarray(gray)
    return Film(
        info=info,
        calibration=info.calibration,
        windows=(window,),
        window=window,
        stored=stored,
        modality=modality,
        invert=False,
        stored_range=value_range(stored),
    )


def _gray(image: Any, *, name: str, fmt: FilmFormat) -> tuple[np.ndarray, float | None]:
    """The grey values of the first frame and their full scale (None for float images)."""
    from PIL import Image

    try:
        image.load()
        mode = image.mode
        if mode in _COLOUR_MODES:
            if mode in ("LA", "La"):
                return np.asarray(image.getchannel(0), dtype=np.uint8), 255.0
            return luminance(np.asarray(image.convert("RGB"), dtype=np.float32)), 255.0
        if mode == "1":
            return np.asarray(image.convert("L"), dtype=np.uint8), 255.0
        if mode == "L":
            return np.asarray(image, dtype=np.uint8), 255.0
        if mode.startswith("I;16") or mode == "I":
            gray = np.asarray(image)
            if gray.dtype.byteorder not in ("=", "|"):
                gray = gray.astype(gray.dtype.newbyteorder("="))
            return gray, 65535.0
        if mode == "F":
            return np.asarray(image, dtype=np.float32), None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: image too large to decode ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{name}: cannot decode the {fmt.value} image ({exc})") from None
    raise ImageReadError(f"{name}: unsupported {fmt.value} pixel mode {mode!r}")
