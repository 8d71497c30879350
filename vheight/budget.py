"""The pixel budget: how large an image vheight agrees to decode.

Checked from what a file states (DICOM header, JPEG 2000 codestream, PNG,
JPEG or TIFF header) before any pixel is decoded, so that a small file that
claims a huge image (a decompression bomb) is refused with one clear error
instead of exhausting memory.
"""

from __future__ import annotations

import os

from vheight.errors import ImageReadError

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "pixel_budget", "check_pixel_budget"]

#: Largest image decoded by default (pixels, all frames and samples counted).
DEFAULT_MAX_PIXELS = 100_000_000

#: Environment variable that sets the pixel budget (a whole number of pixels).
MAX_PIXELS_ENV = "VHEIGHT_MAX_PIXELS"


def pixel_budget(value: int | None = None) -> int:
    """The pixel budget in force: ``value``, else ``$VHEIGHT_MAX_PIXELS``, else 100 MP.

    Raises :class:`ImageReadError` when the setting is not a whole number > 0.
    """
    if value is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise ImageReadError(
                f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels"
            ) from None
        source = MAX_PIXELS_ENV
    else:
        source = "max_pixels"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImageReadError(f"{source} must be a whole number of pixels > 0, found {value!r}")
    return value


def check_pixel_budget(
    name: str,
    *,
    rows: int,
    columns: int,
    frames: int = 1,
    samples: int = 1,
    limit: int,
    stated_by: str = "header",
) -> None:
    """Refuse an image larger than ``limit`` pixels before it is decoded.

    ``rows x columns x frames x samples`` as the file states them
    (``stated_by``: ``"header"``, ``"JPEG 2000 codestream"``...).
    """
    total = int(rows) * int(columns) * max(int(frames), 1) * max(int(samples), 1)
    if total <= limit:
        return
    size = f"{int(columns)} x {int(rows)} px"
    if frames > 1:
        size += f" x {int(frames)} frames"
    if samples > 1:
        size += f" x {int(samples)} samples"
    raise ImageReadError(
        f"{name}: image too large to decode: the {stated_by} states {size} "
        f"({total / 1e6:.1f} megapixels), more than the limit of {limit / 1e6:g} megapixels "
        f"(raise it with {MAX_PIXELS_ENV} or max_pixels=)"
    )
