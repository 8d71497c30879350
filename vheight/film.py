"""Films: the stored values, the header facts and the calibration of one radiograph.

Coordinates follow ``measurements.md``: a point is ``(x, y)`` in pixels of the
full-resolution image, ``x`` the column, ``y`` the row, and the centre of the
top-left pixel is ``(0, 0)``.  :attr:`Film.stored`, :attr:`Film.display` and
:attr:`Film.pixels` are indexed ``[row, column]`` = ``[y, x]`` on that same grid.

The grayscale display pipeline follows DICOM PS3.3 C.11 and PS3.4 N.2:

1. *stored values* (unused high bits masked, sign extended) ->
2. *modality LUT*: rescale slope and intercept, or a Modality LUT Sequence ->
3. *VOI*: a window (centre, width; ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``)
   or a VOI LUT, chosen among the presets the header offers (``auto``
   percentiles when it offers none) ->
4. MONOCHROME1 films are inverted, so that dense bone is always bright.

A film keeps its stored values (read-only, as decoded) and computes its
display images from them when first asked:

* :attr:`Film.display`: the 8-bit image a viewer shows (``uint8``, 0-255),
  the display LUT of the film's window applied to the stored values;
* :attr:`Film.pixels`: the same pipeline as read-only ``float32`` in ``[0, 1]``.

:meth:`Film.render` and :meth:`Film.render_display` re-window without
decoding again.  When the whole pipeline is linear (the usual case) it runs as
one multiply-add with saturation over the image.  Image processing
(:mod:`vheight.refine`) works on :attr:`Film.modality_values`, which do not
depend on the window.

This module holds the model and the pipeline only (numpy arrays in, numpy
arrays out; no file is read here): :mod:`vheight.loader` reads films.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vheight.calibration import Calibration

__all__ = [
    "FilmFormat",
    "VOIFunction",
    "WindowPreset",
    "ModalityTransform",
    "FilmInfo",
    "Film",
    "render_pixels",
    "render_display",
    "auto_window",
    "value_range",
    "luminance",
]

#: Percentiles of the modality values spanned by the ``auto`` window.
AUTO_PERCENTILES = (0.5, 99.5)


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
            out = np.empty(values.shape, np.float32)
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


@dataclass(frozen=True, slots=True, kw_only=True, weakref_slot=True)
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
        The preset :attr:`display` and :attr:`pixels` are rendered with (the
        first of ``windows``).
    stored
        Read-only stored values of the displayed frame (gray; RGB films hold
        their luminance), kept for re-windowing.
    modality
        Stored values -> modality values.
    invert
        True for MONOCHROME1 (inverted after VOI so that bone is bright).
    stored_range
        ``(min, max)`` of ``stored`` (computed when not given).

    The display images are computed from ``stored`` on first use and kept:
    :attr:`display` (8-bit) and :attr:`pixels` (float32 in ``[0, 1]``).
    """

    info: FilmInfo
    calibration: Calibration
    windows: tuple[WindowPreset, ...]
    window: WindowPreset
    stored: np.ndarray = field(repr=False, compare=False)
    modality: ModalityTransform = field(default_factory=ModalityTransform)
    invert: bool = False
    stored_range: tuple[float, float] | None = field(default=None, repr=False, compare=False)
    _rendered: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        stored = self.stored
        if stored.ndim != 2:
            raise ValueError(f"Film.stored must be 2-D, found shape {stored.shape}")
        if stored.flags.writeable:
            stored = stored.view()
            stored.flags.writeable = False
            object.__setattr__(self, "stored", stored)
        if self.stored_range is None:
            object.__setattr__(self, "stored_range", value_range(stored))

    # -- convenience ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def rows(self) -> int:
        return int(self.stored.shape[0])

    @property
    def columns(self) -> int:
        return int(self.stored.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` in pixels."""
        return (self.rows, self.columns)

    @property
    def display(self) -> np.ndarray:
        """Read-only ``uint8`` ``[row, column]`` display image (0-255; bright = dense)."""
        image = self._rendered.get("display")
        if image is None:
            image = self._rendered["display"] = render_display(
                self.stored,
                self.modality,
                self.window,
                invert=self.invert,
                stored_range=self.stored_range,
            )
        return image

    @property
    def pixels(self) -> np.ndarray:
        """Read-only float32 ``[row, column]`` display values in ``[0, 1]``; bright = dense."""
        image = self._rendered.get("pixels")
        if image is None:
            image = self._rendered["pixels"] = render_pixels(
                self.stored,
                self.modality,
                self.window,
                invert=self.invert,
                stored_range=self.stored_range,
            )
        return image

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.info.warnings

    @property
    def modality_values(self) -> np.ndarray:
        """Read-only float32 modality values (rescale or Modality LUT applied)."""
        return _readonly(self.modality.apply(self.stored))

    def with_calibration(self, calibration: Calibration | None) -> Film:
        """The same film with another calibration (``None``: back to the header's).

        The display images are shared: they do not depend on the calibration.
        """
        film = dataclasses.replace(self, calibration=calibration or self.info.calibration)
        object.__setattr__(film, "_rendered", self._rendered)
        return film

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

    def render_display(self, *, window: WindowChoice = None, invert: bool = False) -> np.ndarray:
        """8-bit display image under another window (see :meth:`render`).

        Returns
        -------
        Read-only ``uint8`` ``[row, column]`` array, 0-255.
        """
        preset = self.resolve_window(window)
        if preset is self.window and not invert:
            return self.display
        return render_display(
            self.stored,
            self.modality,
            preset,
            invert=self.invert != invert,
            stored_range=self.stored_range,
        )


# -- the display pipeline ----------------------------------------------------------------


def _folded_affine(
    modality: ModalityTransform, window: WindowPreset, *, invert: bool
) -> tuple[float, float] | None:
    """``(scale, offset)`` of the whole pipeline ``stored -> [0, 1]``, when it is linear.

    A linear modality transform followed by a linear window (and an optional
    inversion) is one multiply-add before the clip to ``[0, 1]``.
    """
    affine = window.affine() if modality.lut is None else None
    if affine is None:
        return None
    scale = modality.slope * affine[0]
    offset = modality.intercept * affine[0] + affine[1]
    if invert:
        scale, offset = -scale, 1.0 - offset
    return scale, offset


def render_pixels(
    stored: np.ndarray,
    modality: ModalityTransform,
    window: WindowPreset,
    *,
    invert: bool,
    stored_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Stored values -> read-only float32 display values in ``[0, 1]``.

    A linear pipeline (:func:`_folded_affine`) is one pass over the image.
    """
    affine = _folded_affine(modality, window, invert=invert)
    if affine is not None:
        return _readonly(_affine_to(stored, *affine, np.float32, stored_range=stored_range))
    values = modality.apply(stored)
    out = window.apply(values, out=values if values.dtype == np.float32 else None)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    return _readonly(out)


def render_display(
    stored: np.ndarray,
    modality: ModalityTransform,
    window: WindowPreset,
    *,
    invert: bool,
    stored_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Stored values -> read-only ``uint8`` display image (0-255): the 8-bit display LUT.

    Equal to ``round(255 * render_pixels(...))`` within one grey level (the
    rounding of a value exactly between two levels may differ).  A linear
    pipeline is one saturating multiply-add from the stored values straight to
    8 bits; other pipelines go through :func:`render_pixels`.
    """
    affine = _folded_affine(modality, window, invert=invert)
    if affine is not None:
        scale, offset = affine
        return _readonly(_affine_to(stored, scale * 255.0, offset * 255.0, np.uint8))
    unit = render_pixels(stored, modality, window, invert=invert, stored_range=stored_range)
    out = np.multiply(unit, np.float32(255.0))
    np.rint(out, out=out)
    return _readonly(out.astype(np.uint8))


# The dtypes OpenCV's arithmetic takes as input.
_CV_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "int32", "float32", "float64"})


def value_range(array: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of an array, ignoring NaN (``(0, 0)`` when empty or all NaN)."""
    if array.size == 0:
        return 0.0, 0.0
    if array.ndim == 2 and array.dtype.kind in "iu" and array.dtype.name in _CV_DTYPES:
        import cv2

        if array.dtype.isnative:
            low, high = cv2.minMaxLoc(array)[:2]  # one pass for both
            return float(low), float(high)
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)] if not np.isfinite(array).all() else array
        if finite.size == 0:
            return 0.0, 0.0
        return float(finite.min()), float(finite.max())
    return float(array.min()), float(array.max())


def _affine_to(
    stored: np.ndarray,
    scale: float,
    offset: float,
    dtype: type[np.float32] | type[np.uint8],
    *,
    stored_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """``stored * scale + offset`` as a new array of ``dtype``, saturated to its range.

    ``uint8``: rounded and saturated to 0-255.  ``float32``: clipped to
    ``[0, 1]``; the extremes of ``stored`` tell which side (if any) needs
    clipping.  OpenCV does the multiply-add with the type conversion in one
    pass over the image when it takes the dtype.
    """
    import cv2

    native = stored.dtype.isnative and stored.dtype.name in _CV_DTYPES
    if dtype is np.uint8:
        if native and stored.size:
            return cv2.addWeighted(stored, scale, stored, 0.0, offset, dtype=cv2.CV_8U)
        out = np.multiply(stored, np.float32(scale), dtype=np.float32)
        out += np.float32(offset)
        np.clip(out, 0.0, 255.0, out=out)
        np.rint(out, out=out)
        return out.astype(np.uint8)
    low_in, high_in = stored_range if stored_range is not None else value_range(stored)
    ends = (low_in * scale + offset, high_in * scale + offset)
    need_low, need_high = min(ends) < 0.0, max(ends) > 1.0
    if native and stored.size:
        out = cv2.addWeighted(stored, scale, stored, 0.0, offset, dtype=cv2.CV_32F)
        if need_high:
            cv2.threshold(out, 1.0, 1.0, cv2.THRESH_TRUNC, dst=out)
        if need_low:
            cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)
        return out
    out = np.multiply(stored, np.float32(scale), dtype=np.float32)
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


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(..., 3)`` RGB array, float32."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(np.asarray(rgb[..., :3], dtype=np.float32) @ weights)
