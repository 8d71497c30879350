"""DICOM films in, :class:`~vheight.film.Film` out: the only module that imports pydicom.

Headers are read by :func:`pydicom.dcmread` with ``stop_before_pixels=True``;
header facts alone (:func:`read_dicom_info_stream`) with ``specific_tags`` too,
listing the elements :data:`INFO_KEYWORDS` names (the rest are skipped, never
read); the first frame's pixel data is decoded by pydicom 3's decoder plugins
(:func:`pydicom.pixels.pixel_array`).  The plugin used:

==========================================  =====================================
transfer syntax                             plugin
==========================================  =====================================
Implicit / Explicit VR Little Endian,       pydicom (only the first frame is
Explicit VR Big Endian                      read from the file)
Deflated Explicit VR Little Endian          pydicom (the whole data set)
RLE Lossless                                pydicom
JPEG Baseline (8-bit)                       Pillow
JPEG Extended                               GDCM, Pillow (8-bit only: 12-bit
                                            needs the GPL pylibjpeg-libjpeg,
                                            not a dependency, so it is refused
                                            with a clear error)
JPEG Lossless (Process 14, SV1)             GDCM
JPEG-LS Lossless / Near-Lossless            pyjpegls
JPEG 2000 (Lossless Only) / JPEG 2000       GDCM when the codestream header
                                            checks out, else (or if GDCM fails)
                                            pylibjpeg-openjpeg
HTJ2K (Lossless, RPCL, lossy)               pylibjpeg-openjpeg
==========================================  =====================================

GDCM aborts the whole process on a JPEG 2000 codestream whose main header is
garbage, instead of raising an error: it gets only codestreams whose SIZ
header agrees with the data set.

Before decoding, the size the header states (Rows x Columns x frames x
samples) and, for JPEG 2000, the size the codestream's SIZ marker states are
checked against the pixel budget (:mod:`vheight.loader`).  A file whose header
is not followed by a Pixel Data element (e.g. truncated after the header) is
not a film: :func:`read_dicom_info_stream` refuses it too.

Calibration follows :meth:`vheight.calibration.Calibration.from_dataset`; the
display pipeline (modality LUT, VOI, MONOCHROME1 inversion) is
:mod:`vheight.film`'s.  Every failure is a :class:`~vheight.errors.DicomReadError`
naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from vheight.calibration import HEADER_KEYWORDS, Calibration
from vheight.errors import DicomReadError
from vheight.files import regular_file_problem
from vheight.film import (
    Film,
    FilmFormat,
    FilmInfo,
    ModalityTransform,
    VOIFunction,
    WindowPreset,
    auto_window,
    luminance,
    value_range,
)

__all__ = [
    "SUPPORTED_PHOTOMETRIC",
    "INFO_KEYWORDS",
    "read_dataset",
    "load_dicom_stream",
    "read_dicom_info_stream",
    "info_from_dataset",
    "film_from_dataset",
    "decoder_plugins",
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

#: The header elements a :class:`~vheight.film.FilmInfo` is made of
#: (:func:`info_from_dataset`), calibration included: all that
#: :func:`read_dicom_info_stream` reads of a header.
INFO_KEYWORDS: tuple[str, ...] = (
    "Rows",
    "Columns",
    "SOPClassUID",
    *HEADER_KEYWORDS,
    "NumberOfFrames",
    "Modality",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "PhotometricInterpretation",
    "BitsStored",
    "PatientPosition",
    "ViewPosition",
    "IssuerOfPatientID",
    "StudyTime",
    "ContentDate",
    "ContentTime",
    "AcquisitionDateTime",
    "PatientOrientation",
)
# dcmread's specific_tags for them (Specific Character Set is always read).
_INFO_TAGS: list[int] = sorted(
    tag for tag in map(tag_for_keyword, INFO_KEYWORDS) if tag is not None
)

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
# garbage, where pylibjpeg-openjpeg raises a Python error instead.  GDCM is
# used for JPEG 2000 when the codestream's SIZ header checks out against the
# data set (see ``_j2k_header_ok``); otherwise, and if GDCM fails,
# pylibjpeg-openjpeg.  GDCM remains the decoder of JPEG Lossless, which
# nothing else installed here decodes.
_J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_CODESTREAM_SYNTAXES = _J2K_SYNTAXES | {
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
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
    from pydicom.pixels import get_decoder

    plugins: dict[str, tuple[str, ...]] = {}
    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        plugins[UID(uid).name] = tuple(decoder.available_plugins)
    return plugins


# -- reading --------------------------------------------------------------------------

# pydicom and its decoders report through the warnings module; the warnings of one film
# are caught around its read.  warnings.catch_warnings swaps process-wide state, so two
# threads catching at once (two app sessions opening films) would take each other's
# warnings and could leave the module's state swapped for good: one catch at a time.
_WARNINGS_LOCK = threading.RLock()


@contextmanager
def _caught(notes: list[str], prefix: str = "") -> Iterator[None]:
    """Record the warnings raised inside into ``notes`` (each once)."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for message in dict.fromkeys(str(w.message) for w in caught):
                if f"{prefix}{message}" not in notes:
                    notes.append(f"{prefix}{message}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Header:
    """A header read: the data set (no pixel data), pydicom's remarks, and whether
    a pixel data element follows it in the file."""

    ds: Dataset
    notes: list[str]
    has_pixels: bool


def _read_header(
    stream: BinaryIO, *, name: str, force: bool, tags: list[int] | None = None
) -> _Header:
    """``dcmread(stream, stop_before_pixels=True)`` with errors that name the file.

    ``tags``: read only these elements (``specific_tags``); the others are
    skipped.  pydicom stops at the first pixel data element and leaves
    ``stream`` there, so a byte left to read means the header is followed by
    pixel data; a file that ends with its header (e.g. truncated there) has
    none.
    """
    notes: list[str] = []
    start = stream.tell()
    try:
        with _caught(notes):
            ds = pydicom.dcmread(stream, force=force, stop_before_pixels=True, specific_tags=tags)
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
    if len(ds) == 0 and tags is not None:
        # None of the elements asked for: whether it holds any is the whole read's to say.
        stream.seek(start)
        return _read_header(stream, name=name, force=force)
    if len(ds) == 0:
        detail = f" ({notes[0]})" if notes else ""
        raise DicomReadError(
            f"{name}: the DICOM file is truncated or corrupt: no data element could be "
            f"read after the file meta header{detail}"
        )
    if _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
        # pydicom inflates the whole data set from the stream: look in the whole of it.
        whole = _read_whole(stream, name=name, force=force, notes=[])
        has_pixels = any(keyword in whole for keyword in _PIXEL_KEYWORDS)
    else:
        try:
            has_pixels = bool(stream.read(1))
        except OSError:
            has_pixels = False
    return _Header(ds=ds, notes=notes[:5], has_pixels=has_pixels)


@contextmanager
def _stream_of(source: Any, name: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """A binary stream on a path, ``bytes`` or file object, and the name to show."""
    if isinstance(source, (str, os.PathLike)):
        shown = name or os.path.basename(os.fspath(source)) or str(source)
        problem = regular_file_problem(source)
        if problem == "no such file":
            raise FileNotFoundError(f"{shown}: no such file ({os.fspath(source)})")
        if problem is not None:
            raise DicomReadError(f"{shown}: {problem} ({os.fspath(source)})")
        with open(source, "rb") as stream:
            yield stream, shown
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source)), name or "<upload>"
    elif hasattr(source, "read"):
        yield source, name or os.path.basename(str(getattr(source, "name", "") or "")) or "<upload>"
    else:
        raise TypeError(
            f"a DICOM source must be a path, bytes or a binary file object, "
            f"found {type(source).__name__}"
        )


def read_dataset(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    name: str | None = None,
    pixels: bool = False,
    force: bool = False,
) -> Dataset:
    """The pydicom data set of a DICOM file: its header, or all of it.

    Parameters
    ----------
    source
        A path (a regular file), ``bytes`` or a binary file object.
    name
        Name used in messages (default: the file name, or ``"<upload>"``).
    pixels
        Read the pixel data too (default: the header only,
        ``stop_before_pixels=True``).
    force
        Read a data set without the DICM preamble.

    Raises
    ------
    DicomReadError
        Naming the file: not DICOM, truncated or corrupt.
    FileNotFoundError
        ``source`` is a path to nothing.
    """
    with _stream_of(source, name) as (stream, shown):
        if not pixels:
            return _read_header(stream, name=shown, force=force).ds
        return _read_whole(stream, name=shown, force=force, notes=[])


def _read_whole(stream: BinaryIO, *, name: str, force: bool, notes: list[str]) -> Dataset:
    stream.seek(0)
    try:
        with _caught(notes):
            return pydicom.dcmread(stream, force=force)
    except _READ_ERRORS as exc:
        raise DicomReadError(
            f"{name}: the DICOM file is truncated or corrupt: its pixel data cannot be read "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _no_pixels(name: str, info: FilmInfo) -> DicomReadError:
    kind = UID(info.sop_class_uid).name if info.sop_class_uid else "unknown SOP class"
    return DicomReadError(
        f"{name}: no pixel data (7FE0,0010) in the file: it holds no image ({kind}), "
        "or it is truncated after its header"
    )


def read_dicom_info_stream(
    stream: BinaryIO, *, name: str, path: str | None = None, force: bool = False
) -> FilmInfo:
    """Header facts of a DICOM stream, read with ``stop_before_pixels=True``.

    Only the elements :data:`INFO_KEYWORDS` names are read.  Raises
    :class:`DicomReadError` when no pixel data follows the header.
    """
    header = _read_header(stream, name=name, force=force, tags=_INFO_TAGS)
    info = info_from_dataset(header.ds, name=name, path=path, read_warnings=header.notes)
    if not header.has_pixels:
        raise _no_pixels(name, info)
    return info


def load_dicom_stream(
    stream: BinaryIO,
    *,
    name: str,
    path: str | None = None,
    force: bool = False,
    max_pixels: int | None = None,
) -> Film:
    """Decode the first frame of a DICOM stream into a :class:`Film`.

    The header is read first and checked (an image, a supported photometric
    interpretation, pixel data present, within the pixel budget
    ``max_pixels``, default :func:`vheight.loader.pixel_budget`); then the
    first frame is decoded.
    """
    from vheight.budget import check_pixel_budget, pixel_budget

    limit = pixel_budget(max_pixels)
    header = _read_header(stream, name=name, force=force)
    ds = header.ds
    info = info_from_dataset(ds, name=name, path=path, read_warnings=header.notes)
    _check_photometric(info)
    if not header.has_pixels:
        raise _no_pixels(name, info)
    samples = _int(ds, "SamplesPerPixel") or 1
    check_pixel_budget(
        name,
        rows=info.rows,
        columns=info.columns,
        frames=info.number_of_frames,
        samples=samples,
        limit=limit,
    )
    frame, notes = _decode_first_frame(stream, info, limit=limit, force=force)
    return _film(ds, info, frame, notes)


# -- header facts ----------------------------------------------------------------------


def _text(ds: Dataset, keyword: str) -> str | None:
    """The value of ``keyword`` as text (multiple values joined by ``\\``), None if empty."""
    tag = tag_for_keyword(keyword)  # ds.get(keyword) without its attribute look-up
    try:
        value = ds[tag].value if tag is not None and tag in ds else None
    except _READ_ERRORS:
        return None
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return None if text is None else int(float(text))
    except (ValueError, OverflowError):
        return None


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = None
    if meta is not None:
        try:
            uid = meta.get("TransferSyntaxUID")
        except _READ_ERRORS:
            uid = None
    if uid:
        return UID(str(uid).strip(" \x00"))
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
    notes: list[str] = list(read_warnings)
    # pydicom converts (and may warn about) a value when it is first read.
    with _caught(notes):
        return _info(ds, name=name, path=path, notes=notes)


def _info(ds: Dataset, *, name: str, path: str | None, notes: list[str]) -> FilmInfo:
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    sop_class = _text(ds, "SOPClassUID")
    if not rows or not columns or rows < 0 or columns < 0:
        kind = UID(sop_class).name if sop_class else "unknown SOP class"
        raise DicomReadError(
            f"{name}: not an image: no Rows/Columns in the header ({kind}); "
            "expected a radiograph (CR, DX or another image storage)"
        )
    tsyntax = _transfer_syntax(ds)
    try:
        calibration, cal_notes = Calibration.from_dataset(ds)
    except _READ_ERRORS as exc:
        calibration, cal_notes = (
            Calibration.uncalibrated(),
            [f"pixel spacing attributes unreadable ({exc}): measurements are in pixels"],
        )
    notes.extend(cal_notes)
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        notes.append(f"{name} has {frames} frames: the first is shown and measured")
    ts_name = tsyntax.name if tsyntax.is_transfer_syntax else f"unknown transfer syntax {tsyntax}"
    return FilmInfo(
        name=name,
        path=path,
        format=FilmFormat.DICOM,
        rows=rows,
        columns=columns,
        modality=_text(ds, "Modality"),
        sop_class_uid=sop_class,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_date=_text(ds, "StudyDate"),
        photometric_interpretation=_text(ds, "PhotometricInterpretation"),
        transfer_syntax_uid=str(tsyntax),
        transfer_syntax_name=ts_name,
        bits_stored=_int(ds, "BitsStored"),
        number_of_frames=frames,
        patient_position=_text(ds, "PatientPosition"),
        view_position=_text(ds, "ViewPosition"),
        calibration=calibration,
        warnings=tuple(notes),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        study_time=_text(ds, "StudyTime"),
        content_date=_text(ds, "ContentDate"),
        content_time=_text(ds, "ContentTime"),
        acquisition_datetime=_text(ds, "AcquisitionDateTime"),
        patient_orientation=_text(ds, "PatientOrientation"),
    )


def _check_photometric(info: FilmInfo) -> None:
    photometric = (info.photometric_interpretation or "").upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise DicomReadError(
            f"{info.name}: unsupported photometric interpretation {photometric or '(missing)'!r}; "
            f"expected one of {', '.join(sorted(SUPPORTED_PHOTOMETRIC))}"
        )


# -- pixels ----------------------------------------------------------------------------


def _decoder_of(info: FilmInfo) -> Any:
    from pydicom.pixels import get_decoder

    tsyntax = UID(info.transfer_syntax_uid or "")
    shown_ts = f"{info.transfer_syntax_name} ({tsyntax})"
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DicomReadError(
            f"{info.name}: transfer syntax {shown_ts} is not supported: no pixel data decoder "
            "exists for it"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in getattr(decoder, "missing_dependencies", []))
        raise DicomReadError(
            f"{info.name}: no decoder available for transfer syntax {shown_ts}"
            + (f" (missing {missing})" if missing else "")
        )
    return decoder


def _decode_first_frame(
    stream: BinaryIO, info: FilmInfo, *, limit: int, force: bool
) -> tuple[np.ndarray, list[str]]:
    """The first frame of the film's pixel data (stored values) and decoder warnings.

    Native (uncompressed) pixel data is read from ``stream``: only the first
    frame, as a read-only array on the bytes read.  Compressed pixel data is
    read with the whole data set (:func:`_decode_dataset_frame`).
    """
    from pydicom.pixels import pixel_array

    tsyntax = UID(info.transfer_syntax_uid or "")
    _decoder_of(info)  # a syntax without a decoder is refused before the read
    if tsyntax.is_encapsulated or tsyntax == DeflatedExplicitVRLittleEndian:
        ds = _read_whole(stream, name=info.name, force=force, notes=[])
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):  # pydicom dropped it
            raise DicomReadError(
                f"{info.name}: the DICOM file is truncated or corrupt: its pixel data "
                "element ends before its delimiter"
            )
        return _decode_dataset_frame(ds, info, limit=limit)
    notes: list[str] = []
    stream.seek(0)
    with _decode_errors(info):
        with _caught(notes, "decoder: "):
            array = pixel_array(
                stream,
                index=0,
                transfer_syntax_uid=tsyntax,
                view_only=True,
                correct_unused_bits=False,
            )
    return _native_order(array), notes[:5]


def _decode_dataset_frame(
    ds: Dataset, info: FilmInfo, *, limit: int
) -> tuple[np.ndarray, list[str]]:
    """The first frame of a whole data set's pixel data and decoder warnings.

    A JPEG 2000 codestream's own statement of its size is checked against
    the pixel budget ``limit`` before it is decoded.
    """
    from pydicom.pixels import pixel_array

    from vheight.budget import check_pixel_budget

    tsyntax = UID(info.transfer_syntax_uid or "")
    decoder = _decoder_of(info)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise _no_pixels(info.name, info)
    options: dict[str, Any] = {"index": 0}
    if not tsyntax.is_encapsulated:
        options.update(view_only=True, correct_unused_bits=False)
    preferred = _PREFERRED_PLUGIN.get(str(tsyntax))
    if preferred and preferred in decoder.available_plugins:
        options["decoding_plugin"] = preferred
    first_try = None
    if str(tsyntax) in _CODESTREAM_SYNTAXES:
        frame = _first_frame_bytes(ds, info)
        siz = None if frame is None else _codestream_size(frame)
        if siz is not None:
            width, height, components = siz
            check_pixel_budget(
                info.name,
                rows=height,
                columns=width,
                samples=components,
                limit=limit,
                stated_by="JPEG 2000 codestream",
            )
        if (
            str(tsyntax) in _J2K_SYNTAXES
            and "gdcm" in decoder.available_plugins
            and _j2k_header_ok(ds, info, frame=frame)
        ):
            first_try = {**options, "decoding_plugin": "gdcm"}
    notes: list[str] = []
    with _decode_errors(info):
        with _caught(notes, "decoder: "):
            array = None
            if first_try is not None:
                try:
                    array = pixel_array(ds, **first_try)
                except _READ_ERRORS:
                    array = None
            if array is None:
                array = pixel_array(ds, **options)
    return _native_order(array), notes[:5]


def _native_order(array: np.ndarray) -> np.ndarray:
    """Explicit VR Big Endian: one swap, then fast native math."""
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


@contextmanager
def _decode_errors(info: FilmInfo) -> Iterator[None]:
    """Turn what a decoder raises into one :class:`DicomReadError` line."""
    try:
        yield
    except _READ_ERRORS as exc:
        if isinstance(exc, DicomReadError):
            raise
        text = str(exc).strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if (
            "less than expected" in text
            or "truncated" in text.lower()
            or "insufficient pixel data" in text.lower()
            or "cannot reshape array" in text
        ):
            problem = "the pixel data is truncated (shorter than Rows x Columns x frames)"
        elif lines and "all available plugins" in lines[0]:
            reasons = "; ".join(lines[1:]) or lines[0]
            problem = f"no installed decoder could decode the pixel data ({reasons})"
        else:
            problem = f"cannot decode the pixel data: {'; '.join(lines) or repr(exc)}"
        shown_ts = f"{info.transfer_syntax_name} ({info.transfer_syntax_uid})"
        raise DicomReadError(f"{info.name}: {problem} [{shown_ts}]") from None


def _first_frame_bytes(ds: Dataset, info: FilmInfo) -> bytes | None:
    from pydicom.encaps import get_frame

    try:
        return get_frame(ds.PixelData, 0, number_of_frames=info.number_of_frames)
    except _READ_ERRORS:
        return None


_SIZ = struct.Struct(">HHIIIIIIIIH")


def _siz_fields(frame: bytes) -> tuple[int, ...] | None:
    """The fields of the codestream's SIZ marker segment (after SOC), or None."""
    start = frame.find(b"\xff\x4f\xff\x51", 0, 512)
    if start < 0 or len(frame) < start + 4 + _SIZ.size:
        return None
    return (start, *_SIZ.unpack_from(frame, start + 4))


def _codestream_size(frame: bytes) -> tuple[int, int, int] | None:
    """``(width, height, components)`` a JPEG 2000 codestream states in its SIZ marker."""
    fields = _siz_fields(frame)
    if fields is None:
        return None
    _start, _length, _caps, width, height, x0, y0, *_tiles, components = fields
    return max(width - x0, 0), max(height - y0, 0), components


def _j2k_header_ok(ds: Dataset, info: FilmInfo, *, frame: bytes | None = None) -> bool:
    """Whether the first frame's JPEG 2000 codestream (``frame``, else read from ``ds``)
    looks sound.

    The SIZ marker segment must agree with Rows, Columns and Samples per Pixel,
    have sane tile and component parameters, and the codestream must end with
    the EOC marker.  Anything else goes to the more defensive decoder.
    """
    if frame is None:
        frame = _first_frame_bytes(ds, info)
    fields = None if frame is None else _siz_fields(frame)
    if frame is None or fields is None:
        return False
    (
        start,
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
    ) = fields
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
    max_pixels: int | None = None,
) -> Film:
    """Decode the first frame of a whole data set (pixel data included) into a :class:`Film`."""
    from vheight.budget import check_pixel_budget, pixel_budget

    limit = pixel_budget(max_pixels)
    info = info_from_dataset(ds, name=name, path=path, read_warnings=read_warnings)
    _check_photometric(info)
    check_pixel_budget(
        name,
        rows=info.rows,
        columns=info.columns,
        frames=info.number_of_frames,
        samples=_int(ds, "SamplesPerPixel") or 1,
        limit=limit,
    )
    frame, notes = _decode_dataset_frame(ds, info, limit=limit)
    return _film(ds, info, frame, notes)


def _film(ds: Dataset, info: FilmInfo, array: np.ndarray, notes: list[str]) -> Film:
    """The :class:`Film` of a decoded first frame ``array`` (stored values) and its header."""
    name = info.name
    photometric = (info.photometric_interpretation or "").upper()
    samples = _int(ds, "SamplesPerPixel") or 1
    signed = _int(ds, "PixelRepresentation") == 1
    notes = list(notes)
    stored_range = None
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        stored = luminance(array)
        modality = ModalityTransform()
        windows = [_full_range_or_auto(stored, info.bits_stored, modality)]
        invert = False
    elif photometric == "PALETTE COLOR":
        stored, bits = _palette_luminance(ds, array, name)
        modality = ModalityTransform()
        windows = [_full_range_or_auto(stored, bits, modality)]
        invert = False
    elif array.ndim == 2 and samples == 1:
        stored, stored_range = _fix_unused_bits(array, info.bits_stored, signed)
        modality = _modality_transform(ds, notes)
        windows = _window_presets(ds, modality, notes) or [auto_window(stored, modality)]
        invert = photometric == "MONOCHROME1"
    else:
        raise DicomReadError(
            f"{name}: unexpected decoded pixel shape {array.shape} for "
            f"{photometric} with {samples} sample(s) per pixel"
        )
    if notes:
        info = dataclasses.replace(info, warnings=info.warnings + tuple(notes))
    return Film(
        info=info,
        calibration=info.calibration,
        windows=tuple(windows),
        window=windows[0],
        stored=stored,
        modality=modality,
        invert=invert,
        stored_range=stored_range,
    )


def _palette_luminance(ds: Dataset, array: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Luminance of a PALETTE COLOR frame through its colour LUTs, and its bit depth."""
    from pydicom.pixels import apply_color_lut

    try:
        with _caught([]):
            rgb = apply_color_lut(np.asarray(array), ds)
    except _READ_ERRORS as exc:
        raise DicomReadError(
            f"{name}: PALETTE COLOR film whose colour lookup table is missing or unusable "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise DicomReadError(
            f"{name}: PALETTE COLOR lookup gave an array of shape {rgb.shape}, not RGB"
        )
    return luminance(rgb), 16 if rgb.dtype.itemsize > 1 else 8


def _full_range_or_auto(
    stored: np.ndarray, bits: int | None, modality: ModalityTransform
) -> WindowPreset:
    if bits is not None and bits <= 8:
        return WindowPreset(
            center=127.5, width=255.0, explanation="full range", function=VOIFunction.LINEAR_EXACT
        )
    return auto_window(stored, modality)
