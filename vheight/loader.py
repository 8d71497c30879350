"""Reading films: a path, ``bytes`` or an upload in, a :class:`~vheight.film.Film` out.

:func:`load_film` and :func:`read_film_info` are the one way in.  They open
the source, tell its format from its first bytes (:func:`sniff_format`) and
hand the stream to :mod:`vheight.dicom` (DICOM, with or without the 128-byte
preamble) or :mod:`vheight.raster` (PNG, JPEG, TIFF, read by Pillow).

Before a single pixel is decoded, the image size stated by the file (DICOM
Rows x Columns x frames x samples, the JPEG 2000 codestream's SIZ header,
the PNG/JPEG/TIFF header) is checked against the *pixel budget*:
:data:`DEFAULT_MAX_PIXELS` (100 megapixels), or the ``max_pixels`` keyword,
or the environment variable ``VHEIGHT_MAX_PIXELS`` (a whole number of
pixels).  A larger film is refused with an :class:`~vheight.errors.ImageReadError`
naming the file, its size and the limit.

A path is opened only when it is a regular file
(:func:`vheight.files.require_regular_file`): a FIFO, a device or a
``/proc`` file is refused before ``open()``, which could block or never end.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vheight.budget import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, check_pixel_budget, pixel_budget
from vheight.calibration import Calibration
from vheight.errors import DicomReadError, ImageReadError
from vheight.files import require_regular_file
from vheight.film import Film, FilmFormat, FilmInfo

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "FilmSource",
    "load_film",
    "read_film_info",
    "sniff_format",
    "pixel_budget",
    "check_pixel_budget",
]

#: Largest upload (bytes or file object) :func:`load_film` accepts by default.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

FilmSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


_MAGIC: tuple[tuple[bytes, FilmFormat], ...] = (
    (b"\x89PNG\r\n\x1a\n", FilmFormat.PNG),
    (b"\xff\xd8\xff", FilmFormat.JPEG),
    (b"II*\x00", FilmFormat.TIFF),
    (b"MM\x00*", FilmFormat.TIFF),
    (b"II+\x00", FilmFormat.TIFF),  # BigTIFF
    (b"MM\x00+", FilmFormat.TIFF),
)


def sniff_format(head: bytes) -> FilmFormat | None:
    """Format from a file's first 132 bytes: DICM preamble or PNG/JPEG/TIFF magic."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FilmFormat.DICOM
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def looks_like_raw_dicom(head: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble (e.g. old ACR-NEMA style)."""
    # Little endian tag of group 0x0002 or 0x0008 followed by an explicit VR or a length.
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Opened:
    """A film source opened for reading: a seekable binary stream and names."""

    stream: BinaryIO
    name: str
    path: str | None
    head: bytes

    def close(self) -> None:
        self.stream.close()


def _open_source(source: FilmSource, *, name: str | None, max_bytes: int | None) -> _Opened:
    """Open ``source`` (path, bytes, or binary file object) as a seekable stream."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        require_regular_file(path, name=name, what="film", error=ImageReadError)
        shown = name or path.name
        try:
            stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by the caller
            head = stream.read(132)
            stream.seek(0)
        except OSError as exc:
            raise ImageReadError(f"{shown}: cannot read ({exc.strerror or exc})") from None
        return _Opened(stream=stream, name=shown, path=str(path), head=head)

    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        shown = name or "<upload>"
        size = memoryview(source).nbytes
        if size > limit:
            raise ImageReadError(_too_big(shown, size, limit))
        data = bytes(source) if not isinstance(source, bytes) else source
    elif hasattr(source, "read"):
        shown = name or os.path.basename(str(getattr(source, "name", "") or "")) or "<upload>"
        data = source.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageReadError(f"{shown}: the file object must be opened in binary mode")
        if len(data) > limit:
            raise ImageReadError(_too_big(shown, None, limit))
        data = bytes(data)
    else:
        raise TypeError(
            f"a film source must be a path, bytes or a binary file object, "
            f"found {type(source).__name__}"
        )
    if not data:
        raise ImageReadError(f"{shown}: the file is empty (0 bytes)")
    return _Opened(stream=io.BytesIO(data), name=shown, path=None, head=data[:132])


def _too_big(name: str, size: int | None, limit: int) -> str:
    found = f"{size / 2**20:.1f} MiB" if size is not None else "more than that"
    return (
        f"{name}: upload too large ({found}; the limit is {limit / 2**20:.0f} MiB); "
        "open it from a path instead, or raise max_bytes"
    )


def _not_a_film(opened: _Opened) -> ImageReadError:
    if not opened.head:
        return DicomReadError(f"{opened.name}: the file is empty (0 bytes)")
    return DicomReadError(
        f"{opened.name}: not a DICOM file (no DICM preamble at byte 128) and not a "
        "PNG, JPEG or TIFF image either"
    )


def _format_of(opened: _Opened) -> tuple[FilmFormat, bool]:
    """The film's format and, for DICOM, whether it lacks the preamble (read with force)."""
    fmt = sniff_format(opened.head)
    if fmt is not None:
        return fmt, False
    if looks_like_raw_dicom(opened.head):
        return FilmFormat.DICOM, True
    raise _not_a_film(opened)


def load_film(
    source: FilmSource,
    *,
    name: str | None = None,
    calibration: Calibration | Mapping[str, Any] | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Film:
    """Read a film (DICOM of any transfer syntax, PNG, JPEG, TIFF) for display.

    Parameters
    ----------
    source
        A path (a regular file), ``bytes``, or a binary file object (e.g. an upload).
    name
        Name used in messages and :attr:`FilmInfo.name` (default: the file name,
        or ``"<upload>"``).
    calibration
        A user calibration (rule 1, ``mm User``): it replaces the header's.
        A mapping is read with :meth:`Calibration.from_dict`.
    max_bytes
        Largest ``bytes`` / file object accepted (default 512 MiB); paths are
        not limited.
    max_pixels
        The pixel budget (default ``$VHEIGHT_MAX_PIXELS`` or 100 megapixels),
        checked from the headers before decoding.

    Raises
    ------
    ImageReadError, DicomReadError
        Naming the film and what is wrong with it.
    """
    limit = pixel_budget(max_pixels)
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = Calibration.from_dict(calibration)
    opened = _open_source(source, name=name, max_bytes=max_bytes)
    try:
        fmt, force = _format_of(opened)
        if fmt is FilmFormat.DICOM:
            from vheight import dicom

            film = dicom.load_dicom_stream(
                opened.stream, name=opened.name, path=opened.path, force=force, max_pixels=limit
            )
        else:
            from vheight import raster

            film = raster.load_raster(
                opened.stream, name=opened.name, path=opened.path, fmt=fmt, max_pixels=limit
            )
    finally:
        opened.close()
    if calibration is not None:
        film = film.with_calibration(calibration)
    return film


def read_film_info(source: FilmSource, *, name: str | None = None) -> FilmInfo:
    """Header facts of a film without decoding its pixels.

    DICOM is read with ``stop_before_pixels=True`` (a file without a Pixel
    Data element, e.g. one truncated after its header, is refused);
    PNG/JPEG/TIFF headers with Pillow's lazy open.  Accepts what
    :func:`load_film` accepts.
    """
    opened = _open_source(source, name=name, max_bytes=None)
    try:
        fmt, force = _format_of(opened)
        if fmt is FilmFormat.DICOM:
            from vheight import dicom

            return dicom.read_dicom_info_stream(
                opened.stream, name=opened.name, path=opened.path, force=force
            )
        from vheight import raster

        return raster.read_raster_info(opened.stream, name=opened.name, path=opened.path, fmt=fmt)
    finally:
        opened.close()
