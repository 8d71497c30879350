"""Pixel spacing calibration of projection radiographs (pure, no I/O).

Coordinates follow ``measurements.md``: a point is ``(x, y)`` in pixels of the
full-resolution image, ``x`` the column (to the right), ``y`` the row (down).
A :class:`Calibration` holds the row spacing (distance between the centres of
adjacent rows, mm) and the column spacing (mm), in that DICOM order, and says
where they came from through :attr:`Calibration.source` and
:attr:`Calibration.label`.

The choice among header attributes follows DICOM PS3.3 section 10.7 (Basic
Pixel Spacing Calibration Macro):

1. a user calibration wins (``mm User``);
2. ``PixelSpacing`` with ``PixelSpacingCalibrationType`` GEOMETRY -> ``mm ERMF``,
   FIDUCIAL -> ``mm Calibrated``;
3. ``ImagerPixelSpacing`` / ERMF when ERMF > 1, or / (SID / SOD) when both
   distances are known and SOD < SID -> ``mm ERMF``;
4. ``ImagerPixelSpacing`` otherwise -> ``mm Proj``, unless a different
   ``PixelSpacing`` is also present -> ``mm Calibrated``;
5. ``PixelSpacing`` alone -> ``mm`` (calibration status unknown);
6. nothing usable -> uncalibrated, ``px``.

A spacing that is zero, negative, not finite or has the wrong number of values
is not usable: it is reported as a warning string, never raised.

A calibrated spacing must also be plausible for a radiograph: between
:data:`MIN_SPACING_MM` (0.01) and :data:`MAX_SPACING_MM` (10) mm per pixel in
both axes, after any magnification correction.  A header spacing outside that
range is ignored with a warning (the film is measured in ``px``); a
:class:`Calibration` outside it cannot be built (:class:`CalibrationError`), so
no measurement is ever given in millimetres from such a spacing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vheight.errors import CalibrationError

__all__ = [
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
    "SpacingLabel",
    "Calibration",
    "HEADER_KEYWORDS",
    "calibration_from_header",
    "spacing_problem",
]


#: Smallest plausible pixel spacing of a radiograph, mm per pixel.
MIN_SPACING_MM = 0.01

#: Largest plausible pixel spacing of a radiograph, mm per pixel.
MAX_SPACING_MM = 10.0

#: The header attributes :meth:`Calibration.from_dataset` reads, by DICOM keyword, in
#: the order it reads them, each with the :func:`calibration_from_header` parameter it
#: fills.  A reader that reads only some of a header's elements reads at least these.
HEADER_KEYWORDS: Mapping[str, str] = {
    "PixelSpacing": "pixel_spacing",
    "PixelSpacingCalibrationType": "pixel_spacing_calibration_type",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "EstimatedRadiographicMagnificationFactor": "estimated_radiographic_magnification_factor",
    "DistanceSourceToDetector": "distance_source_to_detector_mm",
    "DistanceSourceToPatient": "distance_source_to_patient_mm",
}


def spacing_problem(row_spacing_mm: float, col_spacing_mm: float) -> str | None:
    """Why a (row, column) spacing is not a plausible radiograph's, or None."""
    for axis, value in (("row", row_spacing_mm), ("column", col_spacing_mm)):
        if not MIN_SPACING_MM <= value <= MAX_SPACING_MM:
            return (
                f"{axis} spacing {value:.6g} mm/px is outside the plausible range "
                f"{MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm/px of a radiograph"
            )
    return None


class SpacingLabel(enum.StrEnum):
    """How trustworthy a spacing is, as printed beside every measurement."""

    USER = "mm User"
    ERMF = "mm ERMF"
    CALIBRATED = "mm Calibrated"
    PROJ = "mm Proj"
    MM = "mm"
    PX = "px"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Row and column pixel spacing in millimetres, with its provenance.

    Parameters
    ----------
    row_spacing_mm, col_spacing_mm
        Millimetres per pixel along a column (between rows) and along a row
        (between columns).  Both 1.0 when uncalibrated.
    source
        Where the spacing came from: ``"User"``, ``"PixelSpacing"``,
        ``"PixelSpacing (GEOMETRY)"``, ``"PixelSpacing (FIDUCIAL)"``,
        ``"ImagerPixelSpacing"``, ``"ImagerPixelSpacing/ERMF"``,
        ``"ImagerPixelSpacing*SOD/SID"`` or ``"None"``.
    label
        The :class:`SpacingLabel` printed beside measurements.
    description
        Free text, e.g. ``"25.4 mm marker"`` for a user calibration.
    """

    row_spacing_mm: float = 1.0
    col_spacing_mm: float = 1.0
    source: str = "None"
    label: SpacingLabel = SpacingLabel.PX
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", SpacingLabel(self.label))
        for name in ("row_spacing_mm", "col_spacing_mm"):
            value = getattr(self, name)
            if not _usable(value):
                raise CalibrationError(f"{name} must be a finite number > 0, found {value!r}")
            object.__setattr__(self, name, float(value))
        if self.label is SpacingLabel.PX and (
            self.row_spacing_mm != 1.0 or self.col_spacing_mm != 1.0
        ):
            raise CalibrationError(
                "an uncalibrated ('px') calibration must have spacing 1.0 in both axes, "
                f"found {self.row_spacing_mm!r} x {self.col_spacing_mm!r}"
            )
        if self.label is not SpacingLabel.PX:
            problem = spacing_problem(self.row_spacing_mm, self.col_spacing_mm)
            if problem is not None:
                raise CalibrationError(problem)

    # -- constructors --------------------------------------------------------------

    @classmethod
    def uncalibrated(cls) -> Calibration:
        """Spacing 1 in both axes, unit ``px``."""
        return cls()

    @classmethod
    def user(
        cls, *, row_spacing_mm: float, col_spacing_mm: float | None = None, description: str = ""
    ) -> Calibration:
        """A spacing the user typed in or derived from a line of known length."""
        return cls(
            row_spacing_mm=row_spacing_mm,
            col_spacing_mm=row_spacing_mm if col_spacing_mm is None else col_spacing_mm,
            source="User",
            label=SpacingLabel.USER,
            description=description,
        )

    @classmethod
    def from_known_length(
        cls,
        p: Sequence[float],
        q: Sequence[float],
        length_mm: float,
        *,
        aspect: float = 1.0,
        description: str = "",
    ) -> Calibration:
        """Isotropic-ratio user calibration from a line of known length.

        ``p`` and ``q`` are ``(x, y)`` pixel points; ``aspect`` is the ratio
        row spacing / column spacing of the film (1 for square pixels).
        """
        if not _usable(length_mm):
            raise CalibrationError(f"the known length must be > 0 mm, found {length_mm!r}")
        if not _usable(aspect):
            raise CalibrationError(f"the pixel aspect ratio must be > 0, found {aspect!r}")
        dx = float(q[0]) - float(p[0])
        dy = (float(q[1]) - float(p[1])) * aspect
        length_col_units = math.hypot(dx, dy)
        if not length_col_units > 0:
            raise CalibrationError("the calibration line has zero length: draw two distinct points")
        col = float(length_mm) / length_col_units
        return cls.user(
            row_spacing_mm=col * aspect,
            col_spacing_mm=col,
            description=description or f"{float(length_mm):g} mm line",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """From the annotation file's ``calibration`` object (a user calibration).

        Raises :class:`CalibrationError` when a spacing is missing or unusable.
        """
        try:
            row = data["row_spacing_mm"]
            col = data["col_spacing_mm"]
        except (KeyError, TypeError) as exc:
            raise CalibrationError(
                "calibration needs 'row_spacing_mm' and 'col_spacing_mm'"
            ) from exc
        if isinstance(row, bool) or isinstance(col, bool):
            raise CalibrationError("calibration spacings must be numbers, found a boolean")
        source = str(data.get("source") or "User")
        label = _LABEL_BY_SOURCE.get(source, SpacingLabel.USER)
        return cls(
            row_spacing_mm=row,
            col_spacing_mm=col,
            source=source,
            label=label,
            description=str(data.get("description") or ""),
        )

    @classmethod
    def from_dataset(cls, ds: Any) -> tuple[Calibration, list[str]]:
        """Calibration from a DICOM dataset's header, and the warnings met.

        ``ds`` is anything with DICOM keyword attributes (a pydicom
        ``Dataset``) holding at least the attributes :data:`HEADER_KEYWORDS`
        names; pixel data is never touched.  An attribute whose value
        cannot be read (e.g. ``PixelSpacing = "abc"``) counts as absent, with
        a warning.
        """
        read_warnings: list[str] = []

        def attribute(keyword: str) -> Any:
            try:
                return getattr(ds, keyword, None)
            except (ValueError, TypeError, OverflowError) as exc:
                read_warnings.append(f"{keyword} cannot be read ({exc}): ignored")
                return None

        calibration, warnings = calibration_from_header(
            **{parameter: attribute(keyword) for keyword, parameter in HEADER_KEYWORDS.items()}
        )
        return calibration, read_warnings + warnings

    # -- derived -------------------------------------------------------------------

    @property
    def unit(self) -> str:
        """``"mm"`` when calibrated, else ``"px"``."""
        return "px" if self.label is SpacingLabel.PX else "mm"

    @property
    def is_calibrated(self) -> bool:
        return self.label is not SpacingLabel.PX

    @property
    def aspect(self) -> float:
        """Row spacing divided by column spacing (1 for square pixels)."""
        return self.row_spacing_mm / self.col_spacing_mm

    def to_dict(self) -> dict[str, Any]:
        """The annotation file's ``calibration`` object."""
        return {
            "row_spacing_mm": self.row_spacing_mm,
            "col_spacing_mm": self.col_spacing_mm,
            "source": self.source,
            "description": self.description,
        }

    def describe(self) -> str:
        """One line for people, e.g. ``0.139 x 0.139 mm/px (mm ERMF, ...)``."""
        if not self.is_calibrated:
            return "uncalibrated (px)"
        return (
            f"{self.row_spacing_mm:.4g} x {self.col_spacing_mm:.4g} mm/px "
            f"({self.label.value}, from {self.source})"
        )


_LABEL_BY_SOURCE: dict[str, SpacingLabel] = {
    "User": SpacingLabel.USER,
}


def _usable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _pair(value: Any, keyword: str, warnings: list[str]) -> tuple[float, float] | None:
    """A usable (row, col) spacing pair, or None with a warning explaining why."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        values = [value]
    else:
        values = list(value)
    if len(values) != 2:
        warnings.append(
            f"{keyword} has {len(values)} value(s) {values!r}, expected 2 (row\\column): ignored"
        )
        return None
    if not all(_usable(v) for v in values):
        shown = "\\".join(str(v) for v in values)
        warnings.append(
            f"{keyword} = {shown} is not usable (zero, negative or not a number): ignored"
        )
        return None
    return float(values[0]), float(values[1])


def _scalar(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 1:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def calibration_from_header(
    *,
    pixel_spacing: Any = None,
    pixel_spacing_calibration_type: Any = None,
    imager_pixel_spacing: Any = None,
    estimated_radiographic_magnification_factor: Any = None,
    distance_source_to_detector_mm: Any = None,
    distance_source_to_patient_mm: Any = None,
) -> tuple[Calibration, list[str]]:
    """Choose the spacing of a projection radiograph from its header values.

    Implements rules 2 to 6 of the module docstring (the user rule 1 is the
    caller's: a user calibration simply replaces the result).  Returns the
    calibration and a list of human-readable warnings (empty when clean).
    """
    warnings: list[str] = []
    chosen = _choose(
        pixel_spacing=pixel_spacing,
        pixel_spacing_calibration_type=pixel_spacing_calibration_type,
        imager_pixel_spacing=imager_pixel_spacing,
        estimated_radiographic_magnification_factor=estimated_radiographic_magnification_factor,
        distance_source_to_detector_mm=distance_source_to_detector_mm,
        distance_source_to_patient_mm=distance_source_to_patient_mm,
        warnings=warnings,
    )
    if chosen is not None:
        problem = spacing_problem(chosen["row_spacing_mm"], chosen["col_spacing_mm"])
        if problem is None:
            return Calibration(**chosen), warnings
        warnings.append(f"{chosen['source']}: {problem}: ignored")
    # Rule 6: nothing usable.
    if not warnings:
        warnings.append("no pixel spacing in the header: measurements are in pixels")
    else:
        warnings.append("no usable pixel spacing: measurements are in pixels")
    return Calibration.uncalibrated(), warnings


def _choose(
    *,
    pixel_spacing: Any,
    pixel_spacing_calibration_type: Any,
    imager_pixel_spacing: Any,
    estimated_radiographic_magnification_factor: Any,
    distance_source_to_detector_mm: Any,
    distance_source_to_patient_mm: Any,
    warnings: list[str],
) -> dict[str, Any] | None:
    """The :class:`Calibration` fields rules 2-5 choose, or None (rule 6)."""
    ps = _pair(pixel_spacing, "PixelSpacing", warnings)
    ips = _pair(imager_pixel_spacing, "ImagerPixelSpacing", warnings)
    cal_type = str(pixel_spacing_calibration_type or "").strip().upper()

    # Rule 2: PixelSpacing explicitly calibrated.
    if ps is not None and cal_type in ("GEOMETRY", "FIDUCIAL"):
        label = SpacingLabel.ERMF if cal_type == "GEOMETRY" else SpacingLabel.CALIBRATED
        return dict(
            row_spacing_mm=ps[0],
            col_spacing_mm=ps[1],
            source=f"PixelSpacing ({cal_type})",
            label=label,
        )

    if ips is not None:
        # Rule 3: magnification correction.
        ermf = _scalar(estimated_radiographic_magnification_factor)
        if ermf is not None and ermf > 1:
            return dict(
                row_spacing_mm=ips[0] / ermf,
                col_spacing_mm=ips[1] / ermf,
                source="ImagerPixelSpacing/ERMF",
                label=SpacingLabel.ERMF,
                description=f"ERMF {ermf:g}",
            )
        sid = _scalar(distance_source_to_detector_mm)
        sod = _scalar(distance_source_to_patient_mm)
        if sid is not None and sod is not None and 0 < sod < sid:
            factor = sid / sod
            return dict(
                row_spacing_mm=ips[0] / factor,
                col_spacing_mm=ips[1] / factor,
                source="ImagerPixelSpacing*SOD/SID",
                label=SpacingLabel.ERMF,
                description=f"SID {sid:g} mm, SOD {sod:g} mm, ERMF {factor:.4g}",
            )
        # Rule 4: detector plane, or a differing PixelSpacing that was calibrated.
        if ps is not None and not (
            math.isclose(ps[0], ips[0], rel_tol=1e-9) and math.isclose(ps[1], ips[1], rel_tol=1e-9)
        ):
            return dict(
                row_spacing_mm=ps[0],
                col_spacing_mm=ps[1],
                source="PixelSpacing",
                label=SpacingLabel.CALIBRATED,
                description="PixelSpacing differs from ImagerPixelSpacing",
            )
        return dict(
            row_spacing_mm=ips[0],
            col_spacing_mm=ips[1],
            source="ImagerPixelSpacing",
            label=SpacingLabel.PROJ,
            description="at the detector: includes X-ray magnification",
        )

    # Rule 5: PixelSpacing alone, status unknown.
    if ps is not None:
        return dict(
            row_spacing_mm=ps[0],
            col_spacing_mm=ps[1],
            source="PixelSpacing",
            label=SpacingLabel.MM,
        )

    return None
