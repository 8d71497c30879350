"""DICOM films in, :class:`~vheight.film.Film` out: the only module that imports pydicom.

Pixel data of every transfer syntax a radiograph arrives in is decoded by
pydicom 3's decoder plugins, first frame only.  The plugin used:

==========================================  =====================================
transfer syntax                             plugin
==========================================  =====================================
Implicit / Explicit VR Little Endian,       pydicom (native: a read-only view on
Explicit VR Big Endian, Deflated            the file's bytes, no copy)
RLE Lossless                                pydicom
JPEG Baseline (8-bit)                       Pillow
JPEG Extended                               GDCM, Pillow (8-bit only: 12-bit
                                            needs the GPL pylibjpeg-libjpeg,
                                            not a dependency, so it is refused
                                            with a clear error)
JPEG Lossless (Process 14, SV1)             GDCM
JPEG-LS Lossless / Near-Lossless            pyjpegls
JPEG 2000 (Lossless Only) / JPEG 2000       GDCM (two threads) when the
                                            codestream header checks out, else
                                            (or if GDCM fails) pylibjpeg-openjpeg
HTJ2K (Lossless, RPCL, lossy)               pylibjpeg-openjpeg
==========================================  =====================================

GDCM aborts the whole process on a JPEG 2000 codestream whose main header is
garbage, instead of raising an error: it gets only codestreams whose SIZ
header agrees with the data set.

Calibration follows :meth:`vheight.calibration.Calibration.from_dataset`; the
display pipeline (modality LUT, VOI, MONOCHROME1 inversion) is
:func:`vheight.film.render_pixels`.  Every failure is a
:class:`~vheight.errors.DicomReadError` naming the file and the problem.
"""

from __future__ import annotations

import functools
import struct
import threading
import warnings
import zlib
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.valuerep import VR as VR_

from vheight import buffers
from vheight.calibration import Calibration, calibration_from_header
from vheight.errors import DicomReadError
from vheight.film import (
    HEADER_CHUNK,
    Film,
    FilmFormat,
    FilmInfo,
    ModalityTransform,
    VOIFunction,
    WindowPreset,
    auto_window,
    load_film,
    read_film_info,
    render_pixels,
    value_range,
)

__all__ = [
    "SUPPORTED_PHOTOMETRIC",
    "load_dicom_stream",
    "read_dicom_info_stream",
    "info_from_dataset",
    "film_from_dataset",
    "decoder_plugins",
    "load_film",
    "read_film_info",
]

#: Photometric interpretations vheight displays (colour ones as their luminance).
SUPPORTED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "YBR_PARTIAL_420",
        "PALETTE COLOR",
    }
)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Everything pydicom (and the codecs under it) raise on bad input.
_READ_ERRORS = (
    InvalidDicomError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    struct.error,
    zlib.error,
)


# The plugin tried for each compressed syntax when it is installed.  GDCM is
# pydicom's first choice for several syntaxes, but it aborts the whole process
# (an uncaught C++ exception) on a JPEG 2000 codestream whose main header is
# garbage, where pylibjpeg-openjpeg raises a Python error instead.  GDCM
# decodes JPEG 2000 with two threads, so it is used when the codestream's SIZ
# header checks out against the data set (see ``_j2k_header_ok``); otherwise,
# and if GDCM fails, pylibjpeg-openjpeg.  GDCM remains the decoder of JPEG
# Lossless, which nothing else installed here decodes.
_J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_PREFERRED_PLUGIN: dict[str, str] = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg",  # HTJ2K RPCL Lossless
    "1.2.840.10008.1.2.4.203": "pylibjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.50": "pillow",  # JPEG Baseline
    "1.2.840.10008.1.2.5": "pydicom",  # RLE Lossless
}


def decoder_plugins() -> dict[str, tuple[str, ...]]:
    """Transfer syntax name -> the decoder plugins available for it here."""
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

    return {
        UID(uid).name: tuple(decoder.available_plugins)
        for uid, (decoder, *_rest) in _PIXEL_DATA_DECODERS.items()
    }


# -- reading --------------------------------------------------------------------------

# pydicom and its decoders report through the warnings module; the warnings of one film
# are caught around its read.  warnings.catch_warnings swaps process-wide state, so two
# threads catching at once (two app sessions opening films) would take each other's
# warnings and could leave the module's state swapped for good: one catch at a time.
_WARNINGS_LOCK = threading.RLock()


def _dcmread(
    stream: BinaryIO, *, name: str, force: bool, header_only: bool
) -> tuple[Dataset, list[str]]:
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(stream, force=force, stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        raise DicomReadError(
            f"{name}: not a DICOM file (no DICM preamble at byte 128 and no readable "
            f"data set): {exc}"
        ) from None
    except _READ_ERRORS as exc:
        raise DicomReadError(
            f"{name}: cannot read the DICOM header: the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})"
        ) from None
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    if len(ds) == 0:
        detail = f" ({notes[0]})" if notes else ""
        raise DicomReadError(
            f"{name}: the DICOM file is truncated or corrupt: no data element could be "
            f"read after the file meta header{detail}"
        )
    return ds, notes[:5]


def read_dicom_info_stream(
    stream: BinaryIO, *, name: str, path: str | None = None, force: bool = False
) -> FilmInfo:
    """Header facts of a DICOM stream, read with ``stop_before_pixels=True``.

    Ordinary files go through the lean reader (the same facts, several times
    faster); anything it does not vouch for is read by pydicom.
    """
    if not force:
        lean = _lean_header(stream)
        if lean is not None:
            texts, syntax = lean
            return _info_from_texts(
                texts, None, lambda: syntax, name=name, path=path, read_warnings=()
            )
        stream.seek(0)
    ds, notes = _dcmread(stream, name=name, force=force, header_only=True)
    return info_from_dataset(ds, name=name, path=path, read_warnings=notes)


def load_dicom_stream(
    stream: BinaryIO, *, name: str, path: str | None = None, force: bool = False
) -> Film:
    """Decode a DICOM stream into a display-ready :class:`Film`.

    The header is read first.  Plain uncompressed grayscale pixel data is then
    read straight into the array the film keeps (:func:`_read_native_frame`);
    anything else is read again whole and decoded by pydicom.
    """
    ds, notes = _dcmread(stream, name=name, force=force, header_only=True)
    frame = _read_native_frame(stream, ds)
    if frame is None:
        stream.seek(0)
        ds, notes = _dcmread(stream, name=name, force=force, header_only=False)
    return film_from_dataset(ds, name=name, path=path, read_warnings=notes, frame=frame)


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _read_native_frame(stream: BinaryIO, ds: Dataset) -> np.ndarray | None:
    """The first frame of plain uncompressed pixel data, read from ``stream``.

    ``stream`` must stand where a ``stop_before_pixels`` read left it: at the
    Pixel Data element.  The frame is read with one copy from the file into
    the array the film keeps; pydicom would read the whole element into
    ``bytes`` and copy it again.

    Only the ordinary case is handled here: little-endian native encoding, one
    sample of 8 or 16 bits allocated, and a Pixel Data length that is exactly
    Rows x Columns x frames (plus the pad byte of an odd length).  Anything
    else, including a file shorter than its Pixel Data length, returns
    ``None`` so that pydicom decodes it and reports its problems.  The array
    is identical to pydicom's (tested).
    """
    implicit, little = ds.original_encoding
    syntax = _transfer_syntax(ds)
    if not little or syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return None
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    if (_int(ds, "SamplesPerPixel") or 1) != 1 or bits not in (8, 16) or not rows or not columns:
        return None
    frames = _int(ds, "NumberOfFrames") or 1
    if frames < 1:
        return None
    head = stream.read(8 if implicit else 12)
    if head[:4] != _PIXEL_DATA_TAG:
        return None
    if implicit:
        length = int.from_bytes(head[4:8], "little") if len(head) == 8 else -1
    elif len(head) == 12 and head[4:6] in (b"OW", b"OB"):
        length = int.from_bytes(head[8:12], "little")
    else:
        return None
    itemsize = bits // 8
    total = rows * columns * itemsize * frames
    if length != total + (total & 1):
        return None
    signed = _int(ds, "PixelRepresentation") == 1
    frame = buffers.empty((rows, columns), f"<{'i' if signed else 'u'}{itemsize}")
    view = memoryview(frame).cast("B")
    done = 0
    while done < view.nbytes:
        got = stream.readinto(view[done:])
        if not got:
            return None
        done += got
    return frame


# -- header facts ----------------------------------------------------------------------


# Header attributes read for every film, with their VR.  Files read from disk
# hold raw (undecoded) elements; these are decoded here directly, which keeps
# ``vheight info`` close to the cost of pydicom's parsing alone.  Anything
# unusual (another character set, an already converted element) goes through
# pydicom's own conversion.
_FAST_ATTRIBUTES: dict[str, tuple[int, str]] = {
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "Modality": (0x00080060, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "PatientPosition": (0x00185100, "CS"),
    "ViewPosition": (0x00185101, "CS"),
    "PatientID": (0x00100020, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PixelSpacing": (0x00280030, "DS"),
    "ImagerPixelSpacing": (0x00181164, "DS"),
    "PixelSpacingCalibrationType": (0x00280A02, "CS"),
    "EstimatedRadiographicMagnificationFactor": (0x00181114, "DS"),
    "DistanceSourceToDetector": (0x00181110, "DS"),
    "DistanceSourceToPatient": (0x00181111, "DS"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "StudyTime": (0x00080030, "TM"),
    "ContentDate": (0x00080023, "DA"),
    "ContentTime": (0x00080033, "TM"),
    "AcquisitionDateTime": (0x0008002A, "DT"),
    "PatientOrientation": (0x00200020, "CS"),
}
_ASCII_VRS = frozenset({"CS", "UI", "DA", "DS", "IS", "AS", "TM", "DT"})
_CHARSET_VRS = frozenset({"SH", "LO", "PN"})
_SIMPLE_CHARSETS = frozenset({b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO 2022 IR 6", b"ISO_IR 192"})
_MISSING = object()


def _raw_elements(ds: Dataset) -> dict[int, Any]:
    """The data set's elements keyed by plain ``int`` tags (cheap lookups)."""
    return {int(tag): element for tag, element in ds._dict.items()}


def _raw_text(ds: Dataset, keyword: str, raw: dict[int, Any] | None = None) -> str | None | object:
    """The text of a raw element, ``None`` if absent, ``_MISSING`` if not raw."""
    tag, vr = _FAST_ATTRIBUTES[keyword]
    elements = ds._dict if raw is None else raw
    element = elements.get(tag)
    if element is None:
        return None
    if not isinstance(element, RawDataElement) or element.VR not in (None, vr):
        return _MISSING
    charset: Any = None
    if vr in _CHARSET_VRS:
        found = elements.get(0x00080005)
        if found is not None:  # present: its value, which must be text to be read here
            value = getattr(found, "value", None)
            charset = _MISSING if value is None else value
    return _decoded(vr, element.value, element.is_little_endian, charset)


def _decoded(vr: str, raw: bytes | None, little_endian: bool, charset: Any) -> str | None | object:
    """The text of a raw value of ``vr``: ``None`` when empty, ``_MISSING`` when only
    pydicom's conversion would give it faithfully.

    ``charset``: the raw value of Specific Character Set (read for ``SH``, ``LO``
    and ``PN`` only), None when the data set has none.
    """
    if raw is None:
        return None
    if vr == "US":
        if len(raw) < 2:
            return None
        return str(struct.unpack("<H" if little_endian else ">H", raw[:2])[0])
    if vr in _CHARSET_VRS:
        charset_raw = b"" if charset is None else charset
        if isinstance(charset_raw, str):  # already converted by pydicom
            charset_raw = charset_raw.encode("latin-1", "replace")
        if (
            not isinstance(charset_raw, bytes)
            or charset_raw.strip(b" \x00") not in _SIMPLE_CHARSETS
        ):
            return _MISSING
        encoding = "utf-8" if b"192" in charset_raw else "latin-1"
        if charset is None:
            return raw.decode(encoding, "replace").strip(" \x00") or None
        # With a Specific Character Set, only text pydicom would give back unchanged
        # (one value, no stray whitespace or NUL, valid bytes); the rest is
        # converted by pydicom.
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            return _MISSING
        shown = text.strip(" \x00")
        if "\\" in text or "\x00" in text.rstrip("\x00 ") or shown != shown.strip():
            return _MISSING
        return shown or None
    return raw.decode("latin-1").strip(" \x00") or None


def _text(ds: Dataset, keyword: str, raw: dict[int, Any] | None = None) -> str | None:
    fast = _raw_text(ds, keyword, raw) if keyword in _FAST_ATTRIBUTES else _MISSING
    if fast is not _MISSING:
        return fast  # type: ignore[return-value]
    try:
        value = ds.get(keyword)
    except _READ_ERRORS:
        return None
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str, raw: dict[int, Any] | None = None) -> int | None:
    text = _text(ds, keyword, raw)
    try:
        return None if text is None else int(float(text))
    except (ValueError, OverflowError):
        return None


_CALIBRATION_KEYWORDS = (
    "PixelSpacing",
    "PixelSpacingCalibrationType",
    "ImagerPixelSpacing",
    "EstimatedRadiographicMagnificationFactor",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
)


def _calibration_from_texts(
    texts: dict[str, Any], ds: Dataset | None
) -> tuple[Calibration, list[str]]:
    """Rules 2-6 from the raw texts; pydicom's conversion of ``ds`` when any is
    ``_MISSING``."""
    values = tuple(texts[k] for k in _CALIBRATION_KEYWORDS)
    if any(v is _MISSING for v in values):
        return Calibration.from_dataset(ds)
    calibration, notes = _calibration_of_texts(*values)
    return calibration, list(notes)


@functools.lru_cache(maxsize=256)
def _calibration_of_texts(
    pixel_spacing: str | None,
    calibration_type: str | None,
    imager_pixel_spacing: str | None,
    magnification: str | None,
    source_to_detector: str | None,
    source_to_patient: str | None,
) -> tuple[Calibration, tuple[str, ...]]:
    """Rules 2-6 from the texts of :data:`_CALIBRATION_KEYWORDS`, in that order.

    Kept for the films that follow: those of one batch mostly share their
    spacing attributes, and a :class:`Calibration` is immutable.
    """

    def multi(text: str | None) -> list[str] | None:
        return None if text is None else text.split("\\")

    calibration, notes = calibration_from_header(
        pixel_spacing=multi(pixel_spacing),
        pixel_spacing_calibration_type=calibration_type,
        imager_pixel_spacing=multi(imager_pixel_spacing),
        estimated_radiographic_magnification_factor=magnification,
        distance_source_to_detector_mm=source_to_detector,
        distance_source_to_patient_mm=source_to_patient,
    )
    return calibration, tuple(notes)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = ds.file_meta if isinstance(ds, FileDataset) else getattr(ds, "file_meta", None)
    element = meta._dict.get(0x00020010) if meta is not None else None
    uid = getattr(element, "value", None)
    if isinstance(uid, bytes):
        uid = uid.decode("latin-1").strip(" \x00")
    if uid:
        return UID(str(uid))
    implicit, little = ds.original_encoding
    if implicit is None:
        return ExplicitVRLittleEndian
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def info_from_dataset(
    ds: Dataset,
    *,
    name: str,
    path: str | None = None,
    read_warnings: Sequence[str] = (),
) -> FilmInfo:
    """:class:`FilmInfo` of a dataset (pixel data is not touched).

    ``read_warnings`` are pydicom's warnings met while reading the file.
    """
    raw = _raw_elements(ds)
    texts = {keyword: _raw_text(ds, keyword, raw) for keyword in _FAST_ATTRIBUTES}
    return _info_from_texts(
        texts, ds, lambda: _transfer_syntax(ds), name=name, path=path, read_warnings=read_warnings
    )


def _int_of(text: str | None) -> int | None:
    try:
        return None if text is None else int(float(text))
    except (ValueError, OverflowError):
        return None


def _info_from_texts(
    texts: dict[str, Any],
    ds: Dataset | None,
    syntax: Any,
    *,
    name: str,
    path: str | None,
    read_warnings: Sequence[str],
) -> FilmInfo:
    """:class:`FilmInfo` from the raw texts of :data:`_FAST_ATTRIBUTES` (``_MISSING``
    where pydicom must convert the element of ``ds``); ``syntax()`` gives the
    transfer syntax."""

    resolved = texts
    if ds is not None and _MISSING in texts.values():
        resolved = {k: _text(ds, k) if v is _MISSING else v for k, v in texts.items()}
    text = resolved.__getitem__

    rows, columns = _int_of(text("Rows")), _int_of(text("Columns"))
    sop_class = text("SOPClassUID")
    if not rows or not columns:
        kind = UID(sop_class).name if sop_class else "unknown SOP class"
        raise DicomReadError(
            f"{name}: not an image: no Rows/Columns in the header ({kind}); "
            "expected a radiograph (CR, DX or another image storage)"
        )
    tsyntax = syntax()
    notes: list[str] = list(read_warnings)
    try:
        calibration, cal_notes = _calibration_from_texts(texts, ds)
    except _READ_ERRORS as exc:
        calibration, cal_notes = (
            Calibration.uncalibrated(),
            [f"pixel spacing attributes unreadable ({exc}): measurements are in pixels"],
        )
    notes.extend(cal_notes)
    frames = _int_of(text("NumberOfFrames")) or 1
    if frames > 1:
        notes.append(f"{name} has {frames} frames: the first is shown and measured")
    ts_name = _transfer_syntax_name(tsyntax)
    return FilmInfo(
        name=name,
        path=path,
        format=FilmFormat.DICOM,
        rows=rows,
        columns=columns,
        modality=text("Modality"),
        sop_class_uid=sop_class,
        sop_instance_uid=text("SOPInstanceUID"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        study_date=text("StudyDate"),
        photometric_interpretation=text("PhotometricInterpretation"),
        transfer_syntax_uid=str(tsyntax),
        transfer_syntax_name=ts_name,
        bits_stored=_int_of(text("BitsStored")),
        number_of_frames=frames,
        patient_position=text("PatientPosition"),
        view_position=text("ViewPosition"),
        calibration=calibration,
        warnings=tuple(notes),
        issuer_of_patient_id=text("IssuerOfPatientID"),
        study_time=text("StudyTime"),
        content_date=text("ContentDate"),
        content_time=text("ContentTime"),
        acquisition_datetime=text("AcquisitionDateTime"),
        patient_orientation=text("PatientOrientation"),
    )


# -- lean header reading -----------------------------------------------------------------
#
# ``vheight info`` and ``vheight batch`` read thousands of headers; pydicom's reader
# builds an element object for every attribute of the file, most of which are never
# looked at.  The lean reader below walks the same bytes with ``struct`` and keeps
# only the attributes :func:`info_from_dataset` reads, as the raw elements pydicom
# itself would have made of them.  It handles the files pydicom reads without any
# remark (DICM preamble, Explicit VR Little Endian data set: uncompressed or
# encapsulated pixel data) and gives up on anything else (implicit VR, big endian,
# deflate, a command set, an unknown VR, undefined lengths outside sequences,
# truncation, another character set, ...), which then goes through pydicom; either
# way the :class:`FilmInfo` is the same.

_LEAN_TAGS = frozenset({*(tag for tag, _vr in _FAST_ATTRIBUTES.values()), 0x00080005})
_LEAN_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_LEAN_VRS = frozenset(vr.encode("ascii") for vr in VR_)
_LEAN_LONG_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_LEAN_TS_REFUSED = frozenset(
    {
        str(ImplicitVRLittleEndian),
        str(ExplicitVRBigEndian),
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    }
)
_LEAN_CHUNK = HEADER_CHUNK  # what a film's open buffer holds: one read
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_unpack_element = struct.Struct("<HH2sH").unpack_from
_unpack_item = struct.Struct("<HHL").unpack_from
_unpack_long = struct.Struct("<L").unpack_from


class _NotLean(Exception):
    """The lean reader cannot vouch for this file: pydicom reads it."""


class _LeanReader:
    __slots__ = ("buf", "read")

    def __init__(self, stream: BinaryIO) -> None:
        self.read = stream.read
        self.buf = b""

    def need(self, end: int) -> bytes:
        """The buffer, holding at least ``end`` bytes of the file."""
        buf = self.buf
        while len(buf) < end:
            chunk = self.read(max(_LEAN_CHUNK, end - len(buf)))
            if not chunk:
                raise _NotLean  # truncated: pydicom reports it
            buf = self.buf = buf + chunk
        return buf

    def elements(
        self,
        pos: int,
        end: int | None,
        *,
        group: int | None = None,
        keep: dict[int, Any] | None = None,
        wanted: frozenset[int] = _LEAN_TAGS,
    ) -> tuple[int, int]:
        """Walk one data set from ``pos``; ``(position after it, elements seen)``.

        ``end``: the data set's end (a defined-length item), or None: it ends at an
        item delimiter (an undefined-length item, ``group`` None) or, at the top
        level, at the pixel data / the end of the file (``keep`` given) or at the
        first element outside ``group`` (the file meta information).
        """
        count = 0
        top = keep is not None
        unpack, vrs, long_vrs, need = _unpack_element, _LEAN_VRS, _LEAN_LONG_VRS, self.need
        item_end, pixel_tags, undefined = _ITEM_END, _LEAN_PIXEL_TAGS, _UNDEFINED
        buf = self.buf
        while True:
            if end is not None and pos >= end:
                if pos != end:
                    raise _NotLean
                return pos, count
            if len(buf) < pos + 8:
                try:
                    buf = need(pos + 8)
                except _NotLean:
                    if top and group is None and len(self.buf) == pos:
                        return pos, count  # the end of the file
                    raise
            tag_group, tag_element, vr, length = unpack(buf, pos)
            tag = tag_group << 16 | tag_element
            if group is not None and tag_group != group:
                return pos, count
            if tag == item_end:
                if top or end is not None:
                    raise _NotLean
                return pos + 8, count
            if top and tag in pixel_tags:
                return pos, count
            if count == 0 and not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B):
                raise _NotLean  # implicit VR where explicit was expected
            if vr not in vrs or (top and tag_group == 0):
                raise _NotLean
            count += 1
            start = pos + 8
            if vr in long_vrs:
                if len(buf) < pos + 12:
                    buf = need(pos + 12)
                length = _unpack_long(buf, start)[0]
                start = pos + 12
            if length == undefined:
                if vr != b"SQ" or (top and tag in wanted):
                    raise _NotLean
                pos = self.sequence(start)
                buf = self.buf
                continue
            pos = start + length
            if top and tag in wanted:
                if len(buf) < pos:
                    buf = need(pos)
                keep[tag] = (vr.decode("ascii"), length, buf[start:pos], start)

    def sequence(self, pos: int) -> int:
        """Skip the items of an undefined-length sequence; the position after it."""
        while True:
            buf = self.need(pos + 8)
            tag_group, tag_element, length = _unpack_item(buf, pos)
            tag = tag_group << 16 | tag_element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                raise _NotLean
            if length == _UNDEFINED:
                pos, _count = self.elements(pos + 8, None)
            else:
                pos, _count = self.elements(pos + 8, pos + 8 + length)


def _lean_header(stream: BinaryIO) -> tuple[dict[str, Any], UID] | None:
    """The raw texts of :data:`_FAST_ATTRIBUTES` and the transfer syntax, exactly as
    from pydicom's header read, or None when only pydicom can read this file
    faithfully."""
    reader = _LeanReader(stream)
    try:
        buf = reader.need(132)
        if buf[128:132] != b"DICM":
            return None
        meta: dict[int, Any] = {}
        pos, _count = reader.elements(
            132, None, group=0x0002, keep=meta, wanted=frozenset({0x00020010})
        )
        syntax = meta.get(0x00020010)
        if syntax is None or syntax[0] != "UI":
            return None
        uid = syntax[2].decode("latin-1").rstrip("\0 ")
        if not uid or uid.strip("0123456789.") or uid in _LEAN_TS_REFUSED:
            return None
        if uid in pydicom.uid.PrivateTransferSyntaxes:
            return None
        kept: dict[int, Any] = {}
        pos, count = reader.elements(pos, None, keep=kept)
    except (_NotLean, struct.error):
        return None
    if count == 0:
        return None  # pydicom explains an empty data set
    charset = kept.get(0x00080005)
    charset_raw = None if charset is None else charset[2]
    texts: dict[str, Any] = {}
    for keyword, (tag, vr) in _FAST_ATTRIBUTES.items():
        element = kept.get(tag)
        text = None if element is None else _decoded(vr, element[2], True, charset_raw)
        if text is _MISSING or (element is not None and element[0] != vr):
            return None  # an unusual VR or character set: pydicom converts it
        texts[keyword] = text
    return texts, _transfer_syntax_uid(uid)


@functools.lru_cache(maxsize=64)
def _transfer_syntax_name(uid: UID) -> str:
    """The name of a transfer syntax UID, or says that it is not one."""
    return uid.name if uid.is_transfer_syntax else f"unknown transfer syntax {uid}"


@functools.lru_cache(maxsize=64)
def _transfer_syntax_uid(uid: str) -> UID:
    """``UID(uid)``, made (and validated by pydicom) once per transfer syntax."""
    return UID(uid)


# -- pixels ----------------------------------------------------------------------------


def _decode_first_frame(ds: Dataset, info: FilmInfo) -> tuple[np.ndarray, str, list[str]]:
    """The first frame, the photometric interpretation it is in, and decoder warnings."""
    from pydicom.pixels import get_decoder

    name = info.name
    tsyntax = UID(info.transfer_syntax_uid or "")
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise DicomReadError(
            f"{name}: no pixel data (7FE0,0010) in the file: it holds no image "
            f"({UID(info.sop_class_uid).name if info.sop_class_uid else 'unknown SOP class'})"
        )
    shown_ts = f"{info.transfer_syntax_name} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DicomReadError(
            f"{name}: transfer syntax {shown_ts} is not supported: no pixel data decoder "
            "exists for it"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in getattr(decoder, "missing_dependencies", []))
        raise DicomReadError(
            f"{name}: no decoder available for transfer syntax {shown_ts}"
            + (f" (missing {missing})" if missing else "")
        )
    options: dict[str, Any] = {"index": 0}
    preferred = _PREFERRED_PLUGIN.get(str(tsyntax))
    if preferred and preferred in decoder.available_plugins:
        options["decoding_plugin"] = preferred
    if not tsyntax.is_encapsulated:
        # A read-only view on the file's bytes; unused high bits are handled below.
        options.update(view_only=True, correct_unused_bits=False)
    first_try = None
    if (
        str(tsyntax) in _J2K_SYNTAXES
        and "gdcm" in decoder.available_plugins
        and _j2k_header_ok(ds, info)
    ):
        first_try = {**options, "decoding_plugin": "gdcm"}
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            array = meta = None
            if first_try is not None:
                try:
                    array, meta = decoder.as_array(ds, **first_try)
                except _READ_ERRORS:
                    array = None
            if array is None:
                array, meta = decoder.as_array(ds, **options)
    except _READ_ERRORS as exc:
        text = str(exc).strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if "less than expected" in text or "truncated" in text.lower():
            problem = "the pixel data is truncated (shorter than Rows x Columns x frames)"
        elif lines and "all available plugins" in lines[0]:
            reasons = "; ".join(lines[1:]) or lines[0]
            problem = f"no installed decoder could decode the pixel data ({reasons})"
        else:
            problem = f"cannot decode the pixel data: {'; '.join(lines) or repr(exc)}"
        raise DicomReadError(f"{name}: {problem} [{shown_ts}]") from None
    photometric = str(meta.get("photometric_interpretation") or info.photometric_interpretation)
    if not array.dtype.isnative:  # Explicit VR Big Endian: one swap, then fast native math
        array = array.astype(array.dtype.newbyteorder("="))
    notes = list(dict.fromkeys(f"decoder: {w.message}" for w in caught))[:5]
    return array, photometric, notes


def _j2k_header_ok(ds: Dataset, info: FilmInfo) -> bool:
    """Whether the first frame's JPEG 2000 codestream looks sound.

    The SIZ marker segment must agree with Rows, Columns and Samples per Pixel,
    have sane tile and component parameters, and the codestream must end with
    the EOC marker.  Anything else goes to the more defensive decoder.
    """
    from pydicom.encaps import get_frame

    try:
        frames = info.number_of_frames
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    except _READ_ERRORS:
        return False
    start = frame.find(b"\xff\x4f\xff\x51", 0, 512)
    if start < 0 or len(frame) < start + 45:
        return False
    try:
        (
            length,
            _capabilities,
            width,
            height,
            x0,
            y0,
            tile_w,
            tile_h,
            tile_x0,
            tile_y0,
            components,
        ) = struct.unpack(">HHIIIIIIIIH", frame[start + 4 : start + 42])
    except struct.error:
        return False
    samples = _int(ds, "SamplesPerPixel") or 1
    if (
        length != 38 + 3 * components
        or components != samples
        or width - x0 != info.columns
        or height - y0 != info.rows
        or not tile_w
        or not tile_h
        or tile_x0 > x0
        or tile_y0 > y0
        or tile_x0 + tile_w <= x0
        or tile_y0 + tile_h <= y0
        or len(frame) < start + 42 + 3 * components
    ):
        return False
    for i in range(components):
        depth, dx, dy = frame[start + 42 + 3 * i : start + 45 + 3 * i]
        if (depth & 0x7F) + 1 > 38 or not dx or not dy:
            return False
    return b"\xff\xd9" in frame[-4:]  # EOC, perhaps followed by a padding byte


def _fix_unused_bits(
    array: np.ndarray, bits_stored: int | None, signed: bool
) -> tuple[np.ndarray, tuple[float, float]]:
    """Mask the bits above Bits Stored (sign-extending signed data), if any are set.

    Returns the corrected array (``array`` itself when nothing was set) and its
    ``(min, max)``.
    """
    extremes = value_range(array)
    if array.dtype.kind not in "iu" or not bits_stored:
        return array, extremes
    container = array.dtype.itemsize * 8
    if bits_stored >= container:
        return array, extremes
    if not signed:
        top = (1 << bits_stored) - 1
        if extremes[1] <= top and extremes[0] >= 0:
            return array, extremes
        kind = np.dtype(f"u{array.dtype.itemsize}")
        out = np.bitwise_and(array.view(kind), kind.type(top))
        return out, value_range(out)
    low, high = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    if extremes[0] >= low and extremes[1] <= high:
        return array, extremes
    kind = np.dtype(f"i{array.dtype.itemsize}")
    shift = container - bits_stored
    out = np.left_shift(array.view(kind), shift)
    np.right_shift(out, shift, out=out)
    return out, value_range(out)


def _lut_table(item: Dataset, *, signed_input: bool) -> tuple[int, int, np.ndarray]:
    """``(first_mapped, bits, table)`` of a Modality/VOI LUT sequence item."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries = descriptor[0] or 65536
    first = descriptor[1]
    if signed_input and first > 32767:
        first -= 65536
    bits = descriptor[2]
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        dtype = "<u1" if bits <= 8 and len(raw) == entries else "<u2"
        table = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    else:
        values = raw if isinstance(raw, Sequence) else [raw]
        table = np.asarray(values, dtype=np.float32)
    table = table[:entries]
    if table.size == 0:
        raise ValueError("empty LUT Data")
    return first, bits, table


def _modality_transform(ds: Dataset, notes: list[str]) -> ModalityTransform:
    signed = _int(ds, "PixelRepresentation") == 1
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        item = ds.ModalityLUTSequence[0]
        try:
            first, _bits, table = _lut_table(item, signed_input=signed)
            return ModalityTransform(
                lut_first_mapped=first, lut=table, unit=_text(item, "ModalityLUTType") or ""
            )
        except _READ_ERRORS as exc:
            notes.append(f"Modality LUT Sequence unusable ({exc}): ignored")
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    try:
        slope_f = 1.0 if slope in (None, "") else float(slope)
        intercept_f = 0.0 if intercept in (None, "") else float(intercept)
        return ModalityTransform(
            slope=slope_f, intercept=intercept_f, unit=_text(ds, "RescaleType") or ""
        )
    except (*_READ_ERRORS,) as exc:
        notes.append(f"Rescale Slope/Intercept {slope!r}/{intercept!r} unusable ({exc}): ignored")
        return ModalityTransform()


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _window_presets(
    ds: Dataset, modality: ModalityTransform, notes: list[str]
) -> list[WindowPreset]:
    presets: list[WindowPreset] = []
    centers = _as_list(ds.get("WindowCenter"))
    widths = _as_list(ds.get("WindowWidth"))
    explanations = _as_list(ds.get("WindowCenterWidthExplanation"))
    function_text = (_text(ds, "VOILUTFunction") or "LINEAR").upper()
    try:
        function = VOIFunction(function_text)
    except ValueError:
        notes.append(f"VOI LUT Function {function_text!r} unknown: LINEAR used")
        function = VOIFunction.LINEAR
    if len(centers) != len(widths):
        notes.append(
            f"{len(centers)} window centre(s) but {len(widths)} width(s): "
            f"the first {min(len(centers), len(widths))} pairs used"
        )
    for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
        explanation = str(explanations[i]).strip() if i < len(explanations) else ""
        try:
            presets.append(
                WindowPreset(
                    center=float(center),
                    width=float(width),
                    explanation=explanation or f"window {i + 1}",
                    function=function,
                )
            )
        except (TypeError, ValueError) as exc:
            notes.append(f"window {i + 1} (centre {center}, width {width}) unusable: {exc}")
    if "VOILUTSequence" in ds:
        signed_input = modality.is_identity and _int(ds, "PixelRepresentation") == 1
        for i, item in enumerate(ds.VOILUTSequence):
            try:
                first, bits, table = _lut_table(item, signed_input=signed_input)
                top = max(float(2**bits - 1), float(table.max()), 1.0)
                explanation = _text(item, "LUTExplanation") or f"VOI LUT {i + 1}"
                presets.append(
                    WindowPreset(
                        center=first + table.size / 2.0,
                        width=float(table.size),
                        explanation=explanation,
                        lut_first_mapped=first,
                        lut=table / np.float32(top),
                    )
                )
            except _READ_ERRORS as exc:
                notes.append(f"VOI LUT {i + 1} unusable ({exc}): ignored")
    return presets


def film_from_dataset(
    ds: Dataset,
    *,
    name: str,
    path: str | None = None,
    read_warnings: Sequence[str] = (),
    frame: np.ndarray | None = None,
) -> Film:
    """Decode the first frame of ``ds`` and build the display-ready :class:`Film`.

    ``frame``, when given, is the first frame already read (stored values, as
    pydicom would decode them); ``ds`` then needs no pixel data.
    """
    info = info_from_dataset(ds, name=name, path=path, read_warnings=read_warnings)
    photometric = (info.photometric_interpretation or "").upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise DicomReadError(
            f"{name}: unsupported photometric interpretation {photometric or '(missing)'!r}; "
            f"expected one of {', '.join(sorted(SUPPORTED_PHOTOMETRIC))}"
        )
    if frame is None:
        array, decoded_photometric, notes = _decode_first_frame(ds, info)
    else:
        array, decoded_photometric, notes = frame, photometric, []
    samples = _int(ds, "SamplesPerPixel") or 1
    signed = _int(ds, "PixelRepresentation") == 1
    stored_range = None
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        stored = _luminance(array)
        modality = ModalityTransform()
        windows = [_full_range_or_auto(stored, info.bits_stored, modality)]
        invert = False
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(np.asarray(array), ds)
        stored = _luminance(rgb)
        modality = ModalityTransform()
        windows = [_full_range_or_auto(stored, 16 if rgb.dtype.itemsize > 1 else 8, modality)]
        invert = False
    elif array.ndim == 2 and samples == 1:
        stored, stored_range = _fix_unused_bits(array, info.bits_stored, signed)
        modality = _modality_transform(ds, notes)
        windows = _window_presets(ds, modality, notes) or [auto_window(stored, modality)]
        invert = decoded_photometric.upper() == "MONOCHROME1"
    else:
        raise DicomReadError(
            f"{name}: unexpected decoded pixel shape {array.shape} for "
            f"{photometric} with {samples} sample(s) per pixel"
        )
    window = windows[0]
    if stored_range is None:
        stored_range = value_range(stored)
    pixels = render_pixels(stored, modality, window, invert=invert, stored_range=stored_range)
    if notes:
        info = _with_warnings(info, notes)
    return Film(
        info=info,
        calibration=info.calibration,
        windows=tuple(windows),
        window=window,
        pixels=pixels,
        stored=stored,
        modality=modality,
        invert=invert,
        stored_range=stored_range,
    )


def _with_warnings(info: FilmInfo, notes: list[str]) -> FilmInfo:
    from dataclasses import replace

    return replace(info, warnings=info.warnings + tuple(notes))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(np.asarray(rgb[..., :3], dtype=np.float32) @ weights)


def _full_range_or_auto(
    stored: np.ndarray, bits: int | None, modality: ModalityTransform
) -> WindowPreset:
    if bits is not None and bits <= 8:
        return WindowPreset(
            center=127.5, width=255.0, explanation="full range", function=VOIFunction.LINEAR_EXACT
        )
    return auto_window(stored, modality)
