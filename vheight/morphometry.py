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
    - ``nearest_normal`` (v1.1): above and below, the nearest complete level
      that is normal (not treated, ``Ha/Hp >= 0.8`` and ``Hm/Hp >= 0.8``),
      at most two levels away on each side; ``Ref_h`` = mean of the same
      height of those (one or two) levels.
    With ``adjacent``, ``max`` or ``nearest_normal`` and no level to compare
    with, the vertebra falls back to ``posterior``; its ``reference_method``
    says ``posterior`` and a warning names it.  ``reference_levels`` names
    the levels whose heights made the reference (the level itself for
    ``posterior``).

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
    "mean_heights",
    "NORMAL_RATIO",
    "NEAREST_NORMAL_REACH",
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
    NEAREST_NORMAL = "nearest_normal"


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
    reference_levels
        The levels whose heights made the reference, anatomical order (the
        level itself for ``posterior``; empty when incomplete).
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
    reference_levels: tuple[str, ...] = ()
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
        value: float | None = getattr(self, _fields(name)[0])
        return value

    def reference(self, name: str) -> float | None:
        """Reference height ``Ref_h`` of ``anterior``, ``middle`` or ``posterior``."""
        value: float | None = getattr(self, _fields(name)[1])
        return value

    def adjacent(self, name: str) -> float | None:
        """Mean ``anterior``, ``middle`` or ``posterior`` height of the adjacent levels."""
        value: float | None = getattr(self, _fields(name)[2])
        return value

    def loss(self, name: str) -> float | None:
        """Height loss in percent of ``anterior``, ``middle`` or ``posterior``."""
        value: float | None = getattr(self, _fields(name)[3])
        return value


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
        "reference_levels": ",".join(v.reference_levels) if v.complete else None,
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
_Refs = tuple[float | None, float | None, float | None]

#: ``nearest_normal``: a level is normal when both ratios are at least this (loss of
#: anterior and middle height against its own posterior height below 20 %)...
NORMAL_RATIO = 0.8
#: ...and it is looked for at most this many levels away on each side.
NEAREST_NORMAL_REACH = 2


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


def mean_heights(triples: list[_Triple]) -> _Triple:
    """Mean of each height over one or two levels: ``sum(values) / len(values)``,
    written out for the two cases (the same floating-point steps as the references)."""
    if len(triples) == 1:
        return triples[0]
    (a1, m1, p1), (a2, m2, p2) = triples
    return ((a1 + a2) / 2, (m1 + m2) / 2, (p1 + p2) / 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Film:
    """What every vertebra of one film needs to know of the others while measuring.

    ``points``: every annotated level's points; ``heights``: the three heights of
    each complete level (measured once, reused as the neighbours' references);
    ``treated``: the treated levels; ``row``/``col``: spacing in mm per pixel.
    """

    points: Mapping[str, Mapping[str, tuple[float, float]]]
    heights: Mapping[str, _Triple]
    treated: frozenset[str]
    row: float
    col: float

    def neighbour(self, level: str, step: int) -> str | None:
        """The level ``step`` places from ``level`` in ``T1..L5`` (None past the ends)."""
        i = level_index(level) + step
        return LEVELS[i] if 0 <= i < len(LEVELS) else None

    def is_normal(self, level: str) -> bool:
        """Complete, untreated, ``Ha/Hp >= 0.8`` and ``Hm/Hp >= 0.8`` (``nearest_normal``).

        The ratios are compared rounded to 6 decimals, like the grade's losses.
        """
        if level in self.treated or level not in self.heights:
            return False
        ha, hm, hp = self.heights[level]
        return hp > 0 and round(ha / hp, 6) >= NORMAL_RATIO and round(hm / hp, 6) >= NORMAL_RATIO

    def nearest_normal(self, level: str) -> tuple[str, ...]:
        """Above and below, the nearest normal level within :data:`NEAREST_NORMAL_REACH`."""
        found = []
        for direction in (-1, 1):
            for distance in range(1, NEAREST_NORMAL_REACH + 1):
                candidate = self.neighbour(level, direction * distance)
                if candidate is not None and self.is_normal(candidate):
                    found.append(candidate)
                    break
        return tuple(found)


def _parse_method(reference: str | ReferenceMethod) -> ReferenceMethod:
    try:
        return ReferenceMethod(str(reference))
    except ValueError:
        raise MeasurementError(
            f"unknown reference method {reference!r}: expected one of "
            f"{', '.join(m.value for m in ReferenceMethod)}"
        ) from None


def _calibration_to_use(annotation: Annotation, calibration: Calibration | None) -> Calibration:
    """The annotation's own calibration, else the one given, else uncalibrated."""
    if annotation.calibration is not None:
        cal = annotation.calibration
    elif calibration is not None:
        cal = calibration
    else:
        cal = Calibration.uncalibrated()
    if not isinstance(cal, Calibration):
        raise MeasurementError(f"expected a Calibration, found {type(cal).__name__}")
    return cal


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reference:
    """The reference of one vertebra: method used, ``Ref_h`` per height, levels it came from."""

    method: ReferenceMethod
    heights: _Refs
    levels: tuple[str, ...]


def _reference(
    method: ReferenceMethod, level: str, own: _Triple, neighbours: tuple[str, ...], film: _Film
) -> _Reference:
    """``Ref_h`` of ``level`` under ``method`` (``measurements.md``), with its fallback.

    ``neighbours``: the adjacent complete levels.  Without the levels a method
    needs (no neighbour; no normal level for ``nearest_normal``), the vertebra
    falls back to ``posterior``.
    """
    hp = own[2]
    if method is ReferenceMethod.NEAREST_NORMAL:
        chosen = film.nearest_normal(level)
    elif method is ReferenceMethod.POSTERIOR:
        chosen = ()
    else:
        chosen = neighbours
    if not chosen:
        return _Reference(method=ReferenceMethod.POSTERIOR, heights=(hp, hp, None), levels=(level,))
    mean = mean_heights([film.heights[n] for n in chosen])
    if method is not ReferenceMethod.MAX:
        return _Reference(method=method, heights=mean, levels=chosen)
    # The larger of the adjacent and the own posterior reference, per height; the
    # posterior height keeps the adjacent one.  The level itself made the reference
    # wherever its posterior height won.
    own_won = hp > mean[0] or hp > mean[1]
    levels = tuple(sorted({*chosen, level}, key=level_index)) if own_won else chosen
    return _Reference(
        method=method, heights=(max(mean[0], hp), max(mean[1], hp), mean[2]), levels=levels
    )


def _fallback_warning(level: str, method: ReferenceMethod) -> str:
    if method is ReferenceMethod.NEAREST_NORMAL:
        why = (
            f"no normal level (untreated, Ha/Hp and Hm/Hp >= {NORMAL_RATIO}) within "
            f"{NEAREST_NORMAL_REACH} levels above or below"
        )
    else:
        why = "no complete adjacent level to compare with"
    return (
        f"{level}: {why}; height loss uses its own posterior height as reference "
        f"(reference_method 'posterior' instead of '{method.value}')"
    )


def _wedge_angles(level: str, film: _Film) -> tuple[float, float | None]:
    """The vertebra's wedge angle and, with both neighbours complete, the segmental kyphosis."""
    points = film.points[level]
    row, col = film.row, film.col
    wedge = kyphotic_angle_deg(
        points["superior_anterior"],
        points["superior_posterior"],
        points["inferior_anterior"],
        points["inferior_posterior"],
        row_spacing_mm=row,
        col_spacing_mm=col,
    )
    above, below = film.neighbour(level, -1), film.neighbour(level, 1)
    if above not in film.heights or below not in film.heights:
        return wedge, None
    assert above is not None and below is not None  # complete levels
    up, low = film.points[above], film.points[below]
    segmental = kyphotic_angle_deg(
        up["superior_anterior"],
        up["superior_posterior"],
        low["inferior_anterior"],
        low["inferior_posterior"],
        row_spacing_mm=row,
        col_spacing_mm=col,
    )
    return wedge, segmental


def _grade_of(losses: _Refs) -> tuple[float | None, Grade | None, DeformityType | None]:
    """Largest loss, its Genant grade and the deformity type it names."""
    present = losses if None not in losses else [v for v in losses if v is not None]
    max_loss = max(present) if present else None  # type: ignore[type-var]
    grade = genant_grade(max_loss)
    kind = deformity_type(dict(zip(HEIGHTS, losses, strict=True)), grade) if grade else None
    return max_loss, grade, kind


def _measure_incomplete(
    level: str, points: Mapping[str, Any], treated: bool
) -> tuple[VertebraMeasurement, str]:
    missing = tuple(n for n in POINT_NAMES if n not in points)
    warning = (
        f"{level}: incomplete ({len(points)} of 6 points, missing "
        f"{', '.join(missing)}): not measured"
    )
    return (
        VertebraMeasurement(level=level, complete=False, treated=treated, missing_points=missing),
        warning,
    )


def _measure_vertebra(
    level: str, method: ReferenceMethod, film: _Film
) -> tuple[VertebraMeasurement, list[str]]:
    """One complete vertebra: heights, ratios, angles, reference, losses and grade."""
    warnings: list[str] = []
    adjacent_levels = (film.neighbour(level, -1), film.neighbour(level, 1))
    neighbours = tuple(n for n in adjacent_levels if n is not None and n in film.heights)
    for n in adjacent_levels:
        if n is not None and n in film.points and n not in film.heights:
            warnings.append(
                f"{level}: adjacent level {n} is incomplete and is not used as a reference"
            )
    own = film.heights[level]
    ha, hm, hp = own
    adjacent = mean_heights([film.heights[n] for n in neighbours]) if neighbours else None
    ref = _reference(method, level, own, neighbours, film)
    if ref.method is not method:
        warnings.append(_fallback_warning(level, method))
    if not hp > 0:
        warnings.append(f"{level}: posterior height is zero: ratios and losses not computed")
    ref_a, ref_m, ref_p = ref.heights
    losses = (loss_pct(ha, ref_a), loss_pct(hm, ref_m), loss_pct(hp, ref_p))
    max_loss, grade, kind = _grade_of(losses)
    wedge, segmental = _wedge_angles(level, film)
    vertebra = VertebraMeasurement(
        level=level,
        complete=True,
        treated=level in film.treated,
        anterior_height=ha,
        middle_height=hm,
        posterior_height=hp,
        wedge_ratio=_ratio(ha, hp),
        mid_ratio=_ratio(hm, hp),
        # Hp / mean(Hp of the adjacent levels)
        crush_ratio=_ratio(hp, None if adjacent is None else adjacent[2]),
        wedge_angle_deg=wedge,
        segmental_kyphosis_deg=segmental,
        reference_method=ref.method,
        reference_anterior=ref_a,
        reference_middle=ref_m,
        reference_posterior=ref_p,
        reference_levels=ref.levels,
        adjacent_anterior=None if adjacent is None else adjacent[0],
        adjacent_middle=None if adjacent is None else adjacent[1],
        adjacent_posterior=None if adjacent is None else adjacent[2],
        anterior_loss_pct=losses[0],
        middle_loss_pct=losses[1],
        posterior_loss_pct=losses[2],
        max_loss_pct=max_loss,
        grade=grade,
        deformity_type=kind,
        neighbours=neighbours,
    )
    return vertebra, warnings


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
        ``"adjacent"`` (default), ``"posterior"``, ``"max"`` or ``"nearest_normal"``.
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
    method = _parse_method(reference)
    cal = _calibration_to_use(annotation, calibration)
    warnings: list[str] = []
    if not cal.is_calibrated:
        warnings.append(
            "uncalibrated: lengths are in pixels (px), not millimetres; "
            "ratios, height losses and angles are valid"
        )
    row, col = cal.row_spacing_mm, cal.col_spacing_mm
    # The landmarks are read once into plain dicts: every point is used several times.
    points = {lvl: dict(pts.items()) for lvl, pts in annotation.vertebrae.items()}
    complete = {lvl: pts for lvl, pts in points.items() if len(pts) == 6}
    film = _Film(
        points=points,
        heights={lvl: _heights(pts, row, col) for lvl, pts in complete.items()},
        treated=frozenset(annotation.treated_levels),
        row=row,
        col=col,
    )
    results: dict[str, VertebraMeasurement] = {}
    for level, level_points in points.items():
        if level in complete:
            results[level], notes = _measure_vertebra(level, method, film)
            warnings.extend(notes)
        else:
            results[level], note = _measure_incomplete(level, level_points, level in film.treated)
            warnings.append(note)
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
