"""Vertebral heights, indices, height loss and Genant grade of one film (pure).

Every number follows ``measurements.md`` (v1).  Points are ``(x, y)`` pixels
(see :mod:`vheight.geometry` for the convention); lengths are in mm when the
calibration is known and in px otherwise (``Measurement.unit``).

Per vertebra (six landmarks, standard 6-point morphometry)
    ``anterior_height = d(SA, IA)``, ``middle_height = d(SM, IM)``,
    ``posterior_height = d(SP, IP)``; ``wedge_ratio = Ha / Hp``,
    ``mid_ratio = Hm / Hp``, ``crush_ratio = Hp / mean(Hp of the adjacent
    levels)``; the signed wedge angle and, when the levels directly above and
    below are measured, the segmental kyphosis
    (:func:`vheight.geometry.kyphotic_angle_deg`).

Adjacent levels
    The level directly above and the level directly below in ``T1..L5`` that
    are annotated **and complete** (all six points).  An incomplete
    neighbour has no heights, so it is not used as a reference; a warning
    says so.  The crush ratio, the ``adjacent`` reference and segmental
    kyphosis use only complete neighbours.

Height loss ``loss_pct(h) = 100 * (1 - H_h / Ref_h)``, reference methods
    - ``adjacent`` (default): ``Ref_h`` = mean of the same height of the
      adjacent levels;
    - ``posterior``: ``Ref_a = Ref_m = Hp``; the posterior loss is null;
    - ``max``: the larger of the adjacent and the posterior reference for
      the anterior and middle heights; the posterior height uses the
      adjacent reference.
    With ``adjacent`` or ``max`` and no adjacent level, the vertebra falls
    back to ``posterior``; its ``reference_method`` says ``posterior`` and a
    warning names it.

Grade (Genant's thresholds, a quantitative suggestion for the radiologist)
    ``r = round(max_loss_pct, 6)``: ``r < 20`` -> 0, ``20 <= r < 25`` -> 1,
    ``25 <= r <= 40`` -> 2, ``r > 40`` -> 3.  ``deformity_type`` (grade >= 1
    only): the height with the largest loss, anterior -> ``wedge``, middle ->
    ``biconcave``, posterior -> ``crush``; a tie (equal to 6 decimals) goes to
    the first of these.

A vertebra whose posterior (or reference) height is zero gets null ratios
(and losses) and a warning, never a division error.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vheight.annotation import LEVELS, POINT_NAMES, Annotation, FrozenMap, level_index
from vheight.calibration import Calibration
from vheight.errors import MeasurementError
from vheight.geometry import distance_mm, kyphotic_angle_deg
from vheight.tables import MEASURE_RECORD_KEYS

__all__ = [
    "HEIGHTS",
    "RECORD_KEYS",
    "ReferenceMethod",
    "Grade",
    "DeformityType",
    "VertebraMeasurement",
    "Measurement",
    "measure",
    "genant_grade",
    "deformity_type",
    "loss_pct",
]

#: The three heights, in the order that breaks deformity-type ties.
HEIGHTS: tuple[str, ...] = ("anterior", "middle", "posterior")

#: Keys of one ``measure`` output record, in order (``interfaces.md``).
RECORD_KEYS: tuple[str, ...] = MEASURE_RECORD_KEYS


class ReferenceMethod(enum.StrEnum):
    """How the normal (reference) height of a vertebra is estimated."""

    ADJACENT = "adjacent"
    POSTERIOR = "posterior"
    MAX = "max"


class Grade(enum.IntEnum):
    """Morphometric grade after Genant's height-loss thresholds."""

    NORMAL = 0
    MILD = 1
    MODERATE = 2
    SEVERE = 3


class DeformityType(enum.StrEnum):
    """Which height is lost most."""

    WEDGE = "wedge"
    BICONCAVE = "biconcave"
    CRUSH = "crush"


_DEFORMITY_BY_HEIGHT = {
    "anterior": DeformityType.WEDGE,
    "middle": DeformityType.BICONCAVE,
    "posterior": DeformityType.CRUSH,
}


def loss_pct(height: float, reference: float | None) -> float | None:
    """``100 * (1 - height / reference)``; None without a usable (> 0) reference."""
    if reference is None or not reference > 0:
        return None
    return 100.0 * (1.0 - height / reference)


def genant_grade(max_loss_pct: float | None) -> Grade | None:
    """Genant grade of a height loss in percent (None when the loss is unknown).

    The loss is rounded to 6 decimals first, so 8 mm over 10 mm (19.999999999999996
    in floating point) is 20 % and grade 1.
    """
    if max_loss_pct is None:
        return None
    r = round(max_loss_pct, 6)
    if r < 20:
        return Grade.NORMAL
    if r < 25:
        return Grade.MILD
    if r <= 40:
        return Grade.MODERATE
    return Grade.SEVERE


def deformity_type(
    losses: Mapping[str, float | None], grade: Grade | int | None
) -> DeformityType | None:
    """Deformity named by the largest loss; None below grade 1.

    Losses are compared rounded to 6 decimals, like the grade, so that equal
    heights stay a tie whatever rounding the film's geometry brings; a tie
    goes to the first of :data:`HEIGHTS` (anterior, middle, posterior).
    """
    if grade is None or grade < 1:
        return None
    best: str | None = None
    best_value = 0.0
    for height in HEIGHTS:
        value = losses.get(height)
        if value is None:
            continue
        rounded = round(value, 6)
        if best is None or rounded > best_value:
            best, best_value = height, rounded
    return None if best is None else _DEFORMITY_BY_HEIGHT[best]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True, kw_only=True)
class VertebraMeasurement:
    """Everything measured on one vertebra of one film.

    Lengths are in the unit of the owning :class:`Measurement` (mm or px);
    numbers are None when not computable (incomplete vertebra, missing
    neighbours, zero height).

    Attributes
    ----------
    reference_method
        The method actually used for this vertebra (``posterior`` after a
        fallback); None when incomplete.
    reference_anterior, reference_middle, reference_posterior
        ``Ref_h`` of each height under that method (None where undefined,
        e.g. the posterior reference of the ``posterior`` method).
    adjacent_anterior, adjacent_middle, adjacent_posterior
        Mean height of the adjacent complete levels, whatever the method
        (None without neighbours).
    neighbours
        The adjacent complete levels used as references, anatomical order.
    missing_points
        Point names not yet placed (empty when complete).
    """

    level: str
    complete: bool
    treated: bool
    anterior_height: float | None = None
    middle_height: float | None = None
    posterior_height: float | None = None
    wedge_ratio: float | None = None
    mid_ratio: float | None = None
    crush_ratio: float | None = None
    wedge_angle_deg: float | None = None
    segmental_kyphosis_deg: float | None = None
    reference_method: ReferenceMethod | None = None
    reference_anterior: float | None = None
    reference_middle: float | None = None
    reference_posterior: float | None = None
    adjacent_anterior: float | None = None
    adjacent_middle: float | None = None
    adjacent_posterior: float | None = None
    anterior_loss_pct: float | None = None
    middle_loss_pct: float | None = None
    posterior_loss_pct: float | None = None
    max_loss_pct: float | None = None
    grade: Grade | None = None
    deformity_type: DeformityType | None = None
    neighbours: tuple[str, ...] = ()
    missing_points: tuple[str, ...] = ()

    def height(self, name: str) -> float | None:
        """``anterior``, ``middle`` or ``posterior`` height."""
        return getattr(self, _fields(name)[0])

    def reference(self, name: str) -> float | None:
        """Reference height ``Ref_h`` of ``anterior``, ``middle`` or ``posterior``."""
        return getattr(self, _fields(name)[1])

    def adjacent(self, name: str) -> float | None:
        """Mean ``anterior``, ``middle`` or ``posterior`` height of the adjacent levels."""
        return getattr(self, _fields(name)[2])

    def loss(self, name: str) -> float | None:
        """Height loss in percent of ``anterior``, ``middle`` or ``posterior``."""
        return getattr(self, _fields(name)[3])


#: Per height, its fields of :class:`VertebraMeasurement`: height, reference, adjacent, loss.
_FIELDS: dict[str, tuple[str, str, str, str]] = {
    h: (f"{h}_height", f"reference_{h}", f"adjacent_{h}", f"{h}_loss_pct") for h in HEIGHTS
}


def _fields(name: str) -> tuple[str, str, str, str]:
    try:
        return _FIELDS[name]
    except (KeyError, TypeError):
        raise MeasurementError(
            f"unknown height {name!r}: expected one of {', '.join(HEIGHTS)}"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """The measurements of one annotated film.

    Attributes
    ----------
    unit
        ``"mm"`` or ``"px"`` (uncalibrated).
    spacing_label
        How trustworthy the mm are: ``mm User``, ``mm ERMF``, ``mm Proj``, ...
    calibration
        The calibration used.
    reference
        The reference method requested (per-vertebra ``reference_method``
        says what was used).
    vertebrae
        Level -> :class:`VertebraMeasurement`, every annotated level,
        anatomical order.
    warnings
        Human-readable notes (uncalibrated film, fallbacks, incomplete levels).
    annotation
        The annotation measured.
    source
        A name for the annotation (its file path) when known.
    """

    annotation: Annotation
    calibration: Calibration
    reference: ReferenceMethod
    vertebrae: Mapping[str, VertebraMeasurement]
    warnings: tuple[str, ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertebrae", FrozenMap(self.vertebrae))

    @property
    def unit(self) -> str:
        return self.calibration.unit

    @property
    def spacing_label(self) -> str:
        return self.calibration.label.value

    @property
    def timepoint(self) -> str | None:
        return self.annotation.timepoint

    @property
    def patient_position(self) -> str | None:
        return self.annotation.patient_position

    @property
    def treated_levels(self) -> tuple[str, ...]:
        return self.annotation.treated_levels

    @property
    def levels(self) -> tuple[str, ...]:
        """Measured levels (annotated, complete or not), anatomical order."""
        return tuple(self.vertebrae)

    def __getitem__(self, level: str) -> VertebraMeasurement:
        return self.vertebrae[_known_level(level, self.vertebrae)]

    def record(self, level: str) -> dict[str, Any]:
        """The ``measure`` output record of ``level`` (keys :data:`RECORD_KEYS`)."""
        return _record(self[level], self.unit, self.spacing_label)

    def records(self) -> list[dict[str, Any]]:
        """One ``measure`` record per annotated level (``pandas.DataFrame(records)`` ready)."""
        unit, label = self.unit, self.spacing_label
        return [_record(v, unit, label) for v in self.vertebrae.values()]

    def in_pixels(self) -> Measurement:
        """The same annotation measured uncalibrated (lengths in px), same reference method."""
        if not self.calibration.is_calibrated:
            return self
        return measure(
            dataclasses.replace(self.annotation, calibration=None),
            Calibration.uncalibrated(),
            reference=self.reference,
            source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``vheight measure --format json`` document."""
        return {
            "annotation": self.source,
            "unit": self.unit,
            "spacing_label": self.spacing_label,
            "vertebrae": self.records(),
            "warnings": list(self.warnings),
        }


def _record(v: VertebraMeasurement, unit: str, spacing_label: str) -> dict[str, Any]:
    """The ``measure`` output record of one vertebra (keys :data:`RECORD_KEYS`)."""
    return {
        "level": v.level,
        "complete": v.complete,
        "unit": unit,
        "spacing_label": spacing_label,
        "anterior_height": v.anterior_height,
        "middle_height": v.middle_height,
        "posterior_height": v.posterior_height,
        "wedge_ratio": v.wedge_ratio,
        "mid_ratio": v.mid_ratio,
        "crush_ratio": v.crush_ratio,
        "wedge_angle_deg": v.wedge_angle_deg,
        "segmental_kyphosis_deg": v.segmental_kyphosis_deg,
        "reference_method": None if v.reference_method is None else v.reference_method.value,
        "anterior_loss_pct": v.anterior_loss_pct,
        "middle_loss_pct": v.middle_loss_pct,
        "posterior_loss_pct": v.posterior_loss_pct,
        "max_loss_pct": v.max_loss_pct,
        "grade": None if v.grade is None else int(v.grade),
        "deformity_type": None if v.deformity_type is None else v.deformity_type.value,
        "treated": v.treated,
    }


def _known_level(level: str, vertebrae: Mapping[str, Any]) -> str:
    level = str(level)
    level_index(level)
    if level not in vertebrae:
        raise MeasurementError(
            f"level {level} is not annotated on this film "
            f"(annotated: {', '.join(vertebrae) or 'none'})"
        )
    return level


# Anterior, middle, posterior: a vertebra's three heights, reference heights and losses
# are kept as triples in this order (that of HEIGHTS) while measuring.
_Triple = tuple[float, float, float]


def _heights(points: Mapping[str, tuple[float, float]], row: float, col: float) -> _Triple:
    """The anterior, middle and posterior height: each the distance between the
    superior and the inferior endplate point of that name."""
    return (
        distance_mm(
            points["superior_anterior"],
            points["inferior_anterior"],
            row_spacing_mm=row,
            col_spacing_mm=col,
        ),
        distance_mm(
            points["superior_middle"],
            points["inferior_middle"],
            row_spacing_mm=row,
            col_spacing_mm=col,
        ),
        distance_mm(
            points["superior_posterior"],
            points["inferior_posterior"],
            row_spacing_mm=row,
            col_spacing_mm=col,
        ),
    )


def _mean_heights(triples: list[_Triple]) -> _Triple:
    """Mean of each height over one or two levels: ``sum(values) / len(values)``,
    written out for the two cases (the same floating-point steps)."""
    if len(triples) == 1:
        return triples[0]
    (a1, m1, p1), (a2, m2, p2) = triples
    return ((a1 + a2) / 2, (m1 + m2) / 2, (p1 + p2) / 2)


def _references(
    method: ReferenceMethod, own: _Triple, adjacent: _Triple | None
) -> tuple[ReferenceMethod, tuple[float | None, float | None, float | None]]:
    """Method actually used and ``Ref_h`` per height."""
    hp = own[2]
    if method is ReferenceMethod.POSTERIOR or adjacent is None:
        return ReferenceMethod.POSTERIOR, (hp, hp, None)
    if method is ReferenceMethod.ADJACENT:
        return method, adjacent
    return method, (max(adjacent[0], hp), max(adjacent[1], hp), adjacent[2])


def measure(
    annotation: Annotation,
    calibration: Calibration | None = None,
    *,
    reference: str = "adjacent",
    source: str | None = None,
) -> Measurement:
    """Measure every annotated vertebra of one film.

    Parameters
    ----------
    annotation
        Landmarks in pixels.
    calibration
        Used when the annotation carries no calibration of its own (the
        annotation's wins); None and no own calibration -> uncalibrated (px).
    reference
        ``"adjacent"`` (default), ``"posterior"`` or ``"max"``.
    source
        A name for the annotation (e.g. its path), kept on the result.

    Returns
    -------
    Measurement
        Per-level results and warnings; incomplete vertebrae are listed with
        ``complete=False`` and null numbers.
    """
    if not isinstance(annotation, Annotation):
        raise MeasurementError(f"expected an Annotation, found {type(annotation).__name__}")
    try:
        method = ReferenceMethod(str(reference))
    except ValueError:
        raise MeasurementError(
            f"unknown reference method {reference!r}: expected one of "
            f"{', '.join(m.value for m in ReferenceMethod)}"
        ) from None
    if annotation.calibration is not None:
        cal = annotation.calibration
    elif calibration is not None:
        cal = calibration
    else:
        cal = Calibration.uncalibrated()
    if not isinstance(cal, Calibration):
        raise MeasurementError(f"expected a Calibration, found {type(cal).__name__}")

    warnings: list[str] = []
    if not cal.is_calibrated:
        warnings.append(
            "uncalibrated: lengths are in pixels (px), not millimetres; "
            "ratios, height losses and angles are valid"
        )
    row, col = cal.row_spacing_mm, cal.col_spacing_mm
    # The landmarks are read once into plain dicts: every point is used several times.
    vertebrae = {lvl: dict(pts.items()) for lvl, pts in annotation.vertebrae.items()}
    complete = {lvl: pts for lvl, pts in vertebrae.items() if len(pts) == 6}
    # Heights are measured once per level, then reused as the neighbours' references.
    heights = {lvl: _heights(pts, row, col) for lvl, pts in complete.items()}

    results: dict[str, VertebraMeasurement] = {}
    for level, points in vertebrae.items():
        treated = level in annotation.treated_levels
        if level not in complete:
            missing = tuple(n for n in POINT_NAMES if n not in points)
            warnings.append(
                f"{level}: incomplete ({len(points)} of 6 points, missing "
                f"{', '.join(missing)}): not measured"
            )
            results[level] = VertebraMeasurement(
                level=level, complete=False, treated=treated, missing_points=missing
            )
            continue
        i = level_index(level)
        above = LEVELS[i - 1] if i > 0 else None
        below = LEVELS[i + 1] if i + 1 < len(LEVELS) else None
        neighbours = tuple(n for n in (above, below) if n is not None and n in complete)
        for n in (above, below):
            if n is not None and n in vertebrae and n not in complete:
                warnings.append(
                    f"{level}: adjacent level {n} is incomplete and is not used as a reference"
                )
        own = heights[level]
        ha, hm, hp = own
        # Mean height of the adjacent levels, per height (their heights measured above).
        adjacent = _mean_heights([heights[n] for n in neighbours]) if neighbours else None
        used, refs = _references(method, own, adjacent)
        if used is not method:
            warnings.append(
                f"{level}: no complete adjacent level to compare with; height loss uses its own "
                f"posterior height as reference (reference_method 'posterior' instead of "
                f"'{method.value}')"
            )
        if not hp > 0:
            warnings.append(f"{level}: posterior height is zero: ratios and losses not computed")
        ref_a, ref_m, ref_p = refs
        losses = (loss_pct(ha, ref_a), loss_pct(hm, ref_m), loss_pct(hp, ref_p))
        present = losses if None not in losses else [v for v in losses if v is not None]
        max_loss = max(present) if present else None
        grade = genant_grade(max_loss)
        wedge = kyphotic_angle_deg(
            points["superior_anterior"],
            points["superior_posterior"],
            points["inferior_anterior"],
            points["inferior_posterior"],
            row_spacing_mm=row,
            col_spacing_mm=col,
        )
        segmental = None
        if above in complete and below in complete:
            up, low = complete[above], complete[below]
            segmental = kyphotic_angle_deg(
                up["superior_anterior"],
                up["superior_posterior"],
                low["inferior_anterior"],
                low["inferior_posterior"],
                row_spacing_mm=row,
                col_spacing_mm=col,
            )
        results[level] = VertebraMeasurement(
            level=level,
            complete=True,
            treated=treated,
            anterior_height=ha,
            middle_height=hm,
            posterior_height=hp,
            wedge_ratio=_ratio(ha, hp),
            mid_ratio=_ratio(hm, hp),
            # Hp / mean(Hp of the adjacent levels)
            crush_ratio=_ratio(hp, None if adjacent is None else adjacent[2]),
            wedge_angle_deg=wedge,
            segmental_kyphosis_deg=segmental,
            reference_method=used,
            reference_anterior=ref_a,
            reference_middle=ref_m,
            reference_posterior=ref_p,
            adjacent_anterior=None if adjacent is None else adjacent[0],
            adjacent_middle=None if adjacent is None else adjacent[1],
            adjacent_posterior=None if adjacent is None else adjacent[2],
            anterior_loss_pct=losses[0],
            middle_loss_pct=losses[1],
            posterior_loss_pct=losses[2],
            max_loss_pct=max_loss,
            grade=grade,
            deformity_type=(
                deformity_type(dict(zip(HEIGHTS, losses, strict=True)), grade) if grade else None
            ),
            neighbours=neighbours,
        )
    warnings.extend(_orientation_warnings(complete, cal))
    return Measurement(
        annotation=annotation,
        calibration=cal,
        reference=method,
        vertebrae=results,
        warnings=tuple(warnings),
        source=source,
    )


def _orientation_warnings(
    complete: Mapping[str, Mapping[str, tuple[float, float]]], cal: Calibration
) -> list[str]:
    """Sanity checks on landmark placement (films are read upright: superior is up)."""
    warnings: list[str] = []
    facing: dict[str, int] = {}
    for level, p in complete.items():
        sup_y = (p["superior_anterior"][1] + p["superior_posterior"][1]) / 2
        inf_y = (p["inferior_anterior"][1] + p["inferior_posterior"][1]) / 2
        if sup_y > inf_y:
            warnings.append(
                f"{level}: the superior endplate lies below the inferior one on the film: "
                "superior and inferior points may be swapped"
            )
        ax = (p["superior_anterior"][0] + p["inferior_anterior"][0]) / 2
        px = (p["superior_posterior"][0] + p["inferior_posterior"][0]) / 2
        if ax != px:
            facing[level] = 1 if ax > px else -1
    if facing:
        majority = 1 if sum(facing.values()) > 0 else -1
        if sum(facing.values()) != 0:
            for level, side in facing.items():
                if side != majority:
                    warnings.append(
                        f"{level}: its anterior points lie on the other side from the other "
                        "levels: anterior and posterior points may be swapped"
                    )
    return warnings
