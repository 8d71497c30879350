"""Films: display-ready pixels, the header facts and the calibration of one radiograph.

Coordinates follow ``measurements.md``: a point is ``(x, y)`` in pixels of the
full-resolution image, ``x`` the column, ``y`` the row, and the centre of the
top-left pixel is ``(0, 0)``.  :attr:`Film.pixels` is indexed ``[row, column]``
= ``[y, x]`` on that same grid.

The grayscale display pipeline follows DICOM PS3.3 C.11 and PS3.4 N.2:

1. *stored values* (unused high bits masked, sign extended) ->
2. *modality LUT*: rescale slope and intercept, or a Modality LUT Sequence ->
3. *VOI*: a window (centre, width; ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``)
   or a VOI LUT, chosen among the presets the header offers (``auto``
   percentiles when it offers none) ->
4. MONOCHROME1 films are inverted, so that dense bone is always bright.

The result is a read-only ``float32`` array in ``[0, 1]``.  The stored values
are kept with the film (read-only), so :meth:`Film.render` re-windows without
decoding again.  When the whole pipeline is linear (the usual case) it runs as
one multiply-add and one clip over the image.

:func:`load_film` and :func:`read_film_info` accept a path, ``bytes`` or a
binary file object (an upload): DICOM is read by :mod:`vheight.dicom`, PNG,
JPEG and TIFF by Pillow.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from vheight import buffers
from vheight.calibration import Calibration
from vheight.errors import ImageReadError

__all__ = [
    "FilmFormat",
    "VOIFunction",
    "WindowPreset",
    "ModalityTransform",
    "FilmInfo",
    "Film",
    "FilmSource",
    "DEFAULT_MAX_BYTES",
    "load_film",
    "read_film_info",
    "sniff_format",
    "render_pixels",
    "auto_window",
    "value_range",
]

#: Largest upload (bytes or file object) :func:`load_film` accepts by default.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

#: Percentiles of the modality values spanned by the ``auto`` window.
AUTO_PERCENTILES = (0.5, 99.5)

FilmSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO
_T = TypeVar("_T")


class FilmFormat(enum.StrEnum):
    """File format a film was read from."""

    DICOM = "DICOM"
    PNG = "PNG"
    JPEG = "JPEG"
    TIFF = "TIFF"

    def __str__(self) -> str:
        return self.value


class VOIFunction(enum.StrEnum):
    """DICOM VOI LUT Function (0028,1056) of a window."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"

    def __str__(self) -> str:
        return self.value


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowPreset:
    """One VOI transform: a window, or a VOI LUT.

    Parameters
    ----------
    center, width
        Window centre and width in modality units (e.g. the rescaled values).
        For a VOI LUT they describe the range of input values it maps.
    explanation
        The header's Window Center & Width Explanation or LUT Explanation,
        ``"auto"`` for the percentile default, ``"manual"`` for user values.
    function
        ``LINEAR`` (DICOM's default), ``LINEAR_EXACT`` or ``SIGMOID``.
    lut_first_mapped, lut
        For a VOI LUT: the first input value mapped and the table's output
        already scaled to ``[0, 1]`` (read-only float32).  ``None`` for windows.
    """

    center: float
    width: float
    explanation: str = ""
    function: VOIFunction = VOIFunction.LINEAR
    lut_first_mapped: int | None = None
    lut: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "function", VOIFunction(self.function))
        center, width = float(self.center), float(self.width)
        if not math.isfinite(center) or not math.isfinite(width):
            raise ValueError(f"window centre and width must be finite, found {center} / {width}")
        if self.lut is None:
            usable = width >= 1.0 if self.function is VOIFunction.LINEAR else width > 0.0
            if not usable:
                raise ValueError(
                    f"window width must be >= 1 ({self.function.value}) or > 0, found {width}"
                )
        else:
            lut = np.asarray(self.lut, dtype=np.float32)
            if lut.ndim != 1 or lut.size == 0:
                raise ValueError("a VOI LUT must be a non-empty 1-D table")
            if self.lut_first_mapped is None:
                raise ValueError("a VOI LUT needs its first mapped input value")
            object.__setattr__(self, "lut", _readonly(lut))
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "width", width)

    @property
    def is_lut(self) -> bool:
        return self.lut is not None

    def label(self) -> str:
        """Short text for a picker, e.g. ``"BONE (C 1500, W 3000)"``."""
        if self.is_lut:
            return f"{self.explanation or 'VOI LUT'} (LUT, {self.lut.size} entries)"
        name = self.explanation or "window"
        return f"{name} (C {self.center:g}, W {self.width:g})"

    def affine(self) -> tuple[float, float] | None:
        """``(scale, offset)`` with ``y = clip(x * scale + offset, 0, 1)``, if linear."""
        if self.is_lut or self.function is VOIFunction.SIGMOID:
            return None
        if self.function is VOIFunction.LINEAR_EXACT:
            scale = 1.0 / self.width
            return scale, 0.5 - self.center * scale
        if self.width <= 1.0:  # a threshold: y = 1 above c - 0.5
            return None
        scale = 1.0 / (self.width - 1.0)
        return scale, 0.5 - (self.center - 0.5) * scale

    def apply(self, values: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Map modality values to ``[0, 1]`` (float32); ``out`` may be ``values``."""
        values = np.asarray(values)
        if out is None:
            out = buffers.empty(values.shape, np.float32)
        if self.is_lut:
            first = int(self.lut_first_mapped or 0)
            index = np.rint(values, out=np.empty(values.shape, np.float64)) - first
            np.clip(index, 0, self.lut.size - 1, out=index)
            np.take(self.lut, index.astype(np.intp), out=out)
            return out
        affine = self.affine()
        if affine is not None:
            np.multiply(values, np.float32(affine[0]), out=out, dtype=np.float32)
            out += np.float32(affine[1])
            np.clip(out, 0.0, 1.0, out=out)
            return out
        if self.function is VOIFunction.SIGMOID:
            np.subtract(values, np.float32(self.center), out=out, dtype=np.float32)
            out *= np.float32(-4.0 / self.width)
            np.clip(out, -80.0, 80.0, out=out)  # exp stays finite; y is 0 or 1 there anyway
            np.exp(out, out=out)
            out += np.float32(1.0)
            np.reciprocal(out, out=out)
            return out
        # LINEAR with width 1: a threshold at c - 0.5.
        out[...] = values > self.center - 0.5
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ModalityTransform:
    """Stored values -> modality values (rescale, or a Modality LUT).

    Parameters
    ----------
    slope, intercept
        Rescale Slope and Rescale Intercept (``value = stored * slope + intercept``).
    lut_first_mapped, lut
        A Modality LUT Sequence instead: first stored value mapped and the
        output table (read-only float32).
    unit
        Rescale Type or LUT type (``"US"`` unspecified, ``"OD"``, ``"HU"``...).
    """

    slope: float = 1.0
    intercept: float = 0.0
    lut_first_mapped: int | None = None
    lut: np.ndarray | None = field(default=None, repr=False, compare=False)
    unit: str = ""

    def __post_init__(self) -> None:
        slope, intercept = float(self.slope), float(self.intercept)
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0.0:
            raise ValueError(f"rescale slope/intercept unusable: {slope} / {intercept}")
        object.__setattr__(self, "slope", slope)
        object.__setattr__(self, "intercept", intercept)
        if self.lut is not None:
            object.__setattr__(self, "lut", _readonly(np.asarray(self.lut, dtype=np.float32)))

    @property
    def is_identity(self) -> bool:
        return self.lut is None and self.slope == 1.0 and self.intercept == 0.0

    def apply(self, stored: np.ndarray) -> np.ndarray:
        """Modality values of ``stored`` as a new float32 array."""
        stored = np.asarray(stored)
        if self.lut is not None:
            index = stored.astype(np.int64) - int(self.lut_first_mapped or 0)
            np.clip(index, 0, self.lut.size - 1, out=index)
            return np.take(self.lut, index)
        out = np.multiply(stored, np.float32(self.slope), dtype=np.float32)
        if self.intercept != 0.0:
            out += np.float32(self.intercept)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FilmInfo:
    """Header facts of a film, read without decoding its pixels.

    ``rows`` and ``columns`` are the image size in pixels; ``calibration`` is
    the header's (:meth:`Calibration.from_dataset` rules 2-6, uncalibrated for
    PNG/JPEG/TIFF); ``warnings`` are sentences for people.
    """

    name: str
    path: str | None = None
    format: FilmFormat = FilmFormat.DICOM
    rows: int
    columns: int
    modality: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    study_date: str | None = None
    photometric_interpretation: str | None = None
    transfer_syntax_uid: str | None = None
    transfer_syntax_name: str | None = None
    bits_stored: int | None = None
    number_of_frames: int = 1
    patient_position: str | None = None
    view_position: str | None = None
    calibration: Calibration = field(default_factory=Calibration.uncalibrated)
    # When and how the film was taken, and whose it is (a comparison checks them).
    issuer_of_patient_id: str | None = None
    study_time: str | None = None
    content_date: str | None = None
    content_time: str | None = None
    acquisition_datetime: str | None = None
    patient_orientation: str | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", FilmFormat(self.format))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    def to_dict(self) -> dict[str, Any]:
        """The ``vheight info`` record (JSON keys = CSV columns)."""
        cal = self.calibration
        return {
            "name": self.name,
            "path": self.path,
            "format": self.format.value,
            "rows": self.rows,
            "columns": self.columns,
            "modality": self.modality,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "study_date": self.study_date,
            "photometric_interpretation": self.photometric_interpretation,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "transfer_syntax_name": self.transfer_syntax_name,
            "bits_stored": self.bits_stored,
            "number_of_frames": self.number_of_frames,
            "patient_position": self.patient_position,
            "view_position": self.view_position,
            "row_spacing_mm": cal.row_spacing_mm if cal.is_calibrated else None,
            "col_spacing_mm": cal.col_spacing_mm if cal.is_calibrated else None,
            "spacing_source": cal.source,
            "spacing_label": cal.label.value,
            "unit": cal.unit,
            "warnings": list(self.warnings),
        }


WindowChoice = WindowPreset | int | str | tuple[float, float] | Sequence[float] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Film:
    """A film ready for display and measurement.

    Parameters
    ----------
    info
        Header facts (:class:`FilmInfo`).
    calibration
        The calibration in force: a user calibration if one was given
        (``mm User``), else the header's.
    windows
        The VOI presets the header offers, in header order (windows, then VOI
        LUTs), or a single ``auto`` preset when it offers none.
    window
        The preset :attr:`pixels` was rendered with (the first of ``windows``).
    pixels
        Read-only float32 ``[row, column]`` array in ``[0, 1]``; bright = dense.
    stored
        Read-only stored values of the displayed frame (gray; RGB films hold
        their luminance), kept for re-windowing.
    modality
        Stored values -> modality values.
    invert
        True for MONOCHROME1 (inverted after VOI so that bone is bright).
    """

    info: FilmInfo
    calibration: Calibration
    windows: tuple[WindowPreset, ...]
    window: WindowPreset
    pixels: np.ndarray = field(repr=False, compare=False)
    stored: np.ndarray = field(repr=False, compare=False)
    modality: ModalityTransform = field(default_factory=ModalityTransform)
    invert: bool = False
    stored_range: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        if self.stored_range is None:
            object.__setattr__(self, "stored_range", value_range(self.stored))
        for name in ("pixels", "stored"):
            array = getattr(self, name)
            if array.ndim != 2:
                raise ValueError(f"Film.{name} must be 2-D, found shape {array.shape}")
            if array.flags.writeable:
                array = array.view()
                array.flags.writeable = False
                object.__setattr__(self, name, array)

    # -- convenience ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.info.warnings

    @property
    def modality_values(self) -> np.ndarray:
        """Read-only float32 modality values (rescale or Modality LUT applied)."""
        return _readonly(self.modality.apply(self.stored))

    def with_calibration(self, calibration: Calibration | None) -> Film:
        """The same film with another calibration (``None``: back to the header's)."""
        return dataclasses.replace(self, calibration=calibration or self.info.calibration)

    # -- display --------------------------------------------------------------------

    def auto_window(self) -> WindowPreset:
        """The ``auto`` preset: percentiles 0.5 to 99.5 of the modality values."""
        return auto_window(self.stored, self.modality)

    def resolve_window(self, window: WindowChoice = None) -> WindowPreset:
        """The preset meant by ``window`` (see :meth:`render`)."""
        if window is None:
            return self.window
        if isinstance(window, WindowPreset):
            return window
        if isinstance(window, bool):
            raise TypeError("window must be a preset, an index, a name or (center, width)")
        if isinstance(window, int):
            try:
                return self.windows[window]
            except IndexError:
                raise IndexError(
                    f"{self.name}: window {window} out of range, the film has "
                    f"{len(self.windows)} preset(s)"
                ) from None
        if isinstance(window, str):
            wanted = window.strip().casefold()
            for preset in self.windows:
                if preset.explanation.strip().casefold() == wanted:
                    return preset
            if wanted == "auto":
                return self.auto_window()
            offered = ", ".join(repr(p.explanation) for p in self.windows)
            raise KeyError(f"{self.name}: no window named {window!r}; the film offers {offered}")
        center, width = (float(v) for v in window)
        if not width > 0:
            raise ValueError(f"{self.name}: a window width must be > 0, found {width:g}")
        return WindowPreset(
            center=center, width=width, explanation="manual", function=VOIFunction.LINEAR_EXACT
        )

    def render(self, *, window: WindowChoice = None, invert: bool = False) -> np.ndarray:
        """Display pixels under another window.

        Parameters
        ----------
        window
            ``None`` (the default preset), a :class:`WindowPreset`, an index
            into :attr:`windows`, a preset's explanation (``"auto"`` for the
            percentile window), or a manual ``(center, width)`` in modality units.
        invert
            Invert the result once more (a display toggle).

        Returns
        -------
        Read-only float32 ``[row, column]`` array in ``[0, 1]``.
        """
        preset = self.resolve_window(window)
        if preset is self.window and not invert:
            return self.pixels
        return render_pixels(
            self.stored,
            self.modality,
            preset,
            invert=self.invert != invert,
            stored_range=self.stored_range,
        )


# -- the display pipeline ----------------------------------------------------------------


def render_pixels(
    stored: np.ndarray,
    modality: ModalityTransform,
    window: WindowPreset,
    *,
    invert: bool,
    stored_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Stored values -> read-only float32 display values in ``[0, 1]``.

    A linear modality transform followed by a linear window (and an optional
    inversion) is folded into one multiply-add: one pass over the image.
    """
    affine = window.affine() if modality.lut is None else None
    if affine is not None:
        scale = modality.slope * affine[0]
        offset = modality.intercept * affine[0] + affine[1]
        if invert:
            scale, offset = -scale, 1.0 - offset
        return _readonly(_affine_to_unit(stored, scale, offset, stored_range=stored_range))
    values = modality.apply(stored)
    out = window.apply(values, out=values if values.dtype == np.float32 else None)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    return _readonly(out)


# Images at least this large are processed in two halves of rows, the top half on
# a helper thread (OpenCV releases the GIL): a 3000 x 3000 film loads about a
# fifth faster on two cores (benchmarks/bench_load.py).
SPLIT_MIN_PIXELS = 1 << 21

# The cores this process may run on (a scheduler may allow fewer than the machine has).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_HELPER_NAME = "vheight-film"
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _forget_helper() -> None:  # a forked child has no helper thread, only its record
    global _helper
    _helper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def by_row_halves(work: Callable[[slice], _T], rows: int, size: int) -> list[_T]:
    """``work(rows)`` for the top and bottom halves of an image's rows, in parallel.

    ``work`` must be safe to run on two threads for disjoint row slices.  An
    image smaller than :data:`SPLIT_MIN_PIXELS` (or a machine with one core)
    is done in one call, ``work(slice(0, rows))``.  Returns the results, top
    first; an exception in either half is raised after both have finished.
    """
    if (
        size < SPLIT_MIN_PIXELS
        or rows < 2
        or _CPUS < 2
        or threading.current_thread().name.startswith(_HELPER_NAME)  # no waiting on itself
    ):
        return [work(slice(0, rows))]
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_HELPER_NAME)
        helper = _helper
    half = rows // 2
    top = helper.submit(work, slice(0, half))
    try:
        bottom = work(slice(half, rows))
    finally:
        wait([top])
    return [top.result(), bottom]


_CV_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "int32", "float32", "float64"})


def value_range(array: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of an array in one pass (OpenCV when it handles the dtype)."""
    if array.size == 0:
        return 0.0, 0.0
    if array.ndim == 2 and array.dtype.isnative and array.dtype.name in _CV_DTYPES:
        import cv2

        ranges = by_row_halves(
            lambda rows: cv2.minMaxLoc(array[rows])[:2], array.shape[0], array.size
        )
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if math.isfinite(low) and math.isfinite(high):
            return float(low), float(high)
        finite = array[np.isfinite(array)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return float(np.nanmin(array)), float(np.nanmax(array))


def _affine_to_unit(
    stored: np.ndarray,
    scale: float,
    offset: float,
    *,
    stored_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """``clip(stored * scale + offset, 0, 1)`` as a new float32 array.

    The extremes of ``stored`` tell which side (if any) needs clipping, so a
    window that spans the data costs one pass.  OpenCV does the multiply-add
    with the type conversion in a single pass when it handles the dtype.
    """
    native = stored.dtype.isnative and stored.dtype.name in _CV_DTYPES
    low_in, high_in = stored_range if stored_range is not None else value_range(stored)
    ends = (low_in * scale + offset, high_in * scale + offset)
    need_low, need_high = min(ends) < 0.0, max(ends) > 1.0
    if native and stored.ndim == 2 and stored.size:
        import cv2

        out = buffers.empty(stored.shape, np.float32)

        def convert(rows: slice) -> None:
            part = out[rows]
            cv2.addWeighted(
                stored[rows], scale, stored[rows], 0.0, offset, dst=part, dtype=cv2.CV_32F
            )
            if need_high:
                cv2.threshold(part, 1.0, 1.0, cv2.THRESH_TRUNC, dst=part)
            if need_low:
                cv2.threshold(part, 0.0, 0.0, cv2.THRESH_TOZERO, dst=part)

        by_row_halves(convert, stored.shape[0], stored.size)
        return out
    out = np.multiply(stored, np.float32(scale), out=buffers.empty(stored.shape), dtype=np.float32)
    out += np.float32(offset)
    if need_low or need_high:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def auto_window(
    stored: np.ndarray, modality: ModalityTransform, *, max_samples: int = 1 << 20
) -> WindowPreset:
    """Window spanning percentiles 0.5-99.5 of the modality values (``auto``).

    Computed on a regular subsample of at most about ``max_samples`` pixels.
    """
    step = max(1, int(math.sqrt(stored.size / max_samples)))
    sample = modality.apply(stored[::step, ::step]).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return WindowPreset(center=0.5, width=1.0, explanation="auto", function="LINEAR_EXACT")
    low, high = (float(v) for v in np.percentile(sample, AUTO_PERCENTILES))
    if not high > low:
        low, high = float(sample.min()), float(sample.max())
    width = high - low if high > low else 1.0
    return WindowPreset(
        center=(low + high) / 2.0, width=width, explanation="auto", function="LINEAR_EXACT"
    )


# -- sources -----------------------------------------------------------------------------

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


@dataclass(frozen=True, slots=True, kw_only=True)
class _Opened:
    """A film source opened for reading: a seekable binary stream and names."""

    stream: BinaryIO
    name: str
    path: str | None
    head: bytes
    owned: bool

    def close(self) -> None:
        if self.owned:
            self.stream.close()


# The buffer a film is opened with: one read brings in the first chunk the lean DICOM
# header reader asks for (vheight.dicom reads in chunks of this size).
HEADER_CHUNK = 16384


def _as_written(source: object) -> bool:
    """True when ``source`` is a POSIX path string that :class:`~pathlib.Path` keeps
    exactly as written: no empty or ``.`` part, no trailing slash."""
    return (
        type(source) is str
        and os.sep == "/"
        and source not in ("", ".")
        and "//" not in source
        and "/./" not in source
        and not source.startswith("./")
        and not source.endswith(("/", "/."))
    )


def _open_source(source: FilmSource, *, name: str | None, max_bytes: int | None) -> _Opened:
    """Open ``source`` (path, bytes, or binary file object) as a seekable stream."""
    if isinstance(source, (str, os.PathLike)):
        # A path that Path() would keep as written is used as it is (many films in a
        # batch); any other is normalised by Path, for the name and the path shown.
        path: str | Path = source if _as_written(source) else Path(source)  # type: ignore[arg-type]
        shown = name or (path.rpartition("/")[2] if isinstance(path, str) else path.name)
        try:
            # A header of up to 16 KiB comes in with one read, and opening it skips the
            # terminal check of default buffering.
            stream: BinaryIO = open(path, "rb", buffering=HEADER_CHUNK)  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            raise ImageReadError(f"{shown}: no such file ({path})") from None
        except IsADirectoryError:
            raise ImageReadError(f"{shown}: is a folder, not a film ({path})") from None
        except OSError as exc:
            raise ImageReadError(f"{shown}: cannot open ({exc.strerror or exc})") from None
        head = stream.read(132)
        stream.seek(0)
        return _Opened(stream=stream, name=shown, path=str(path), head=head, owned=True)

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
    return _Opened(stream=io.BytesIO(data), name=shown, path=None, head=data[:132], owned=True)


def _too_big(name: str, size: int | None, limit: int) -> str:
    found = f"{size / 2**20:.1f} MiB" if size is not None else "more than that"
    return (
        f"{name}: upload too large ({found}; the limit is {limit / 2**20:.0f} MiB); "
        "open it from a path instead, or raise max_bytes"
    )


def _not_a_film(opened: _Opened) -> ImageReadError:
    from vheight.errors import DicomReadError

    if not opened.head:
        return DicomReadError(f"{opened.name}: the file is empty (0 bytes)")
    return DicomReadError(
        f"{opened.name}: not a DICOM file (no DICM preamble at byte 128) and not a "
        "PNG, JPEG or TIFF image either"
    )


def _renamed_warning(opened: _Opened, fmt: FilmFormat) -> list[str]:
    suffix = Path(opened.name).suffix.lower()
    if suffix in (".dcm", ".dicom", ".dic"):
        return [f"{opened.name} is a {fmt.value} image, not DICOM: read as {fmt.value}"]
    return []


def load_film(
    source: FilmSource,
    *,
    name: str | None = None,
    calibration: Calibration | Mapping[str, Any] | None = None,
    max_bytes: int | None = None,
) -> Film:
    """Read a film (DICOM of any transfer syntax, PNG, JPEG, TIFF) for display.

    Parameters
    ----------
    source
        A path, ``bytes``, or a binary file object (e.g. an upload).
    name
        Name used in messages and :attr:`FilmInfo.name` (default: the file name,
        or ``"<upload>"``).
    calibration
        A user calibration (rule 1, ``mm User``): it replaces the header's.
        A mapping is read with :meth:`Calibration.from_dict`.
    max_bytes
        Largest ``bytes`` / file object accepted (default 512 MiB); paths are
        not limited.

    Raises
    ------
    ImageReadError, DicomReadError
        Naming the film and what is wrong with it.
    """
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = Calibration.from_dict(calibration)
    opened = _open_source(source, name=name, max_bytes=max_bytes)
    try:
        fmt = sniff_format(opened.head)
        if fmt is FilmFormat.DICOM or (fmt is None and _looks_like_raw_dicom(opened.head)):
            from vheight import dicom

            film = dicom.load_dicom_stream(
                opened.stream, name=opened.name, path=opened.path, force=fmt is None
            )
        elif fmt is None:
            raise _not_a_film(opened)
        else:
            film = _load_raster(opened, fmt)
    finally:
        opened.close()
    if calibration is not None:
        film = film.with_calibration(calibration)
    return film


def read_film_info(source: FilmSource, *, name: str | None = None) -> FilmInfo:
    """Header facts of a film without decoding its pixels.

    DICOM is read with ``stop_before_pixels=True``; PNG/JPEG/TIFF headers with
    Pillow's lazy open.  Accepts what :func:`load_film` accepts.
    """
    opened = _open_source(source, name=name, max_bytes=None)
    try:
        fmt = sniff_format(opened.head)
        if fmt is FilmFormat.DICOM or (fmt is None and _looks_like_raw_dicom(opened.head)):
            from vheight import dicom

            return dicom.read_dicom_info_stream(
                opened.stream, name=opened.name, path=opened.path, force=fmt is None
            )
        if fmt is None:
            raise _not_a_film(opened)
        info, _ = _raster_info(opened, fmt, decode=False)
        return info
    finally:
        opened.close()


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble (e.g. old ACR-NEMA style)."""
    # Little endian tag of group 0x0002 or 0x0008 followed by an explicit VR or a length.
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"


# -- PNG, JPEG, TIFF ------------------------------------------------------------------


def _raster_info(opened: _Opened, fmt: FilmFormat, *, decode: bool) -> tuple[FilmInfo, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(opened.stream)
        if decode:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{opened.name}: cannot read the {fmt.value} image ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{opened.name}: image too large to read safely ({exc})") from None
    bits = {"1": 1, "L": 8, "LA": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8}.get(
        image.mode
    )
    if image.mode.startswith("I;16") or image.mode == "I":
        bits = 16
    warnings = _renamed_warning(opened, fmt)
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        warnings.append(f"{opened.name} has {frames} frames: showing the first")
    warnings.append(
        f"{opened.name} is a {fmt.value} image: no pixel spacing, measurements are in "
        "pixels unless a calibration is given"
    )
    info = FilmInfo(
        name=opened.name,
        path=opened.path,
        format=fmt,
        rows=image.height,
        columns=image.width,
        photometric_interpretation="MONOCHROME2"
        if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA")
        else "RGB",
        bits_stored=bits,
        number_of_frames=frames,
        warnings=tuple(warnings),
    )
    return info, image


def _load_raster(opened: _Opened, fmt: FilmFormat) -> Film:

    info, image = _raster_info(opened, fmt, decode=True)
    try:
        mode = image.mode
        if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LA", "La", "RGBa", "LAB", "HSV"):
            if mode in ("LA", "La"):
                gray = np.asarray(image.getchannel(0), dtype=np.uint8)
            else:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
                gray = _luminance(rgb)
            full_scale = 255.0
        elif mode == "1":
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
            full_scale = 255.0
        elif mode == "L":
            gray = np.asarray(image, dtype=np.uint8)
            full_scale = 255.0
        elif mode.startswith("I;16") or mode == "I":
            gray = np.asarray(image)
            if gray.dtype.byteorder not in ("=", "|"):
                gray = gray.astype(gray.dtype.newbyteorder("="))
            full_scale = 65535.0
        elif mode == "F":
            gray = np.asarray(image, dtype=np.float32)
            full_scale = None
        else:
            raise ImageReadError(f"{opened.name}: unsupported {fmt.value} pixel mode {mode!r}")
    except (OSError, ValueError) as exc:
        raise ImageReadError(
            f"{opened.name}: cannot decode the {fmt.value} image ({exc})"
        ) from None
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
    stored_range = value_range(stored)
    pixels = render_pixels(stored, modality, window, invert=False, stored_range=stored_range)
    return Film(
        info=info,
        calibration=info.calibration,
        windows=(window,),
        window=window,
        pixels=pixels,
        stored=stored,
        modality=modality,
        invert=False,
        stored_range=stored_range,
    )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(..., 3)`` RGB array, float32."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(rgb[..., :3] @ weights, dtype=np.float32)
