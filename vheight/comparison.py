"""Before / after augmentation, and follow-up: restoration and its loss (pure).

For every level measured (complete) on both the pre and the post film, and
for each height ``h`` (anterior, middle, posterior), following
``measurements.md`` (McKiernan et al., Spine 2003;28:2517 give four methods
that differ up to four-fold, so all four are reported):

- ``delta = H_post - H_pre``
- ``restoration_pct_of_initial = 100 * delta / H_pre``
- ``restoration_pct_of_lost = 100 * delta / (Ref_pre - H_pre)``, null when
  ``Ref_pre <= H_pre`` (nothing was lost)
- ``restoration_pct_of_reference = 100 * delta / Ref_pre``
- with a follow-up film, ``loss_since_post_pct = 100 * (H_post - H_follow) / H_post``

``Ref_pre`` is the pre-film reference height of the method actually used for
that vertebra on the pre film (``reference_method``; null for the posterior
height under the ``posterior`` method, and then so are the two percentages
that need it).  Per level: wedge angle before, after and its change
(``post - pre``, negative = correction), segmental kyphosis change, wedge
ratio change, grades before and after.

Units
-----
Lengths are compared in mm only when every film is calibrated from the same
source with the same label (e.g. all ``mm User``).  When the films differ in
calibration source, or one is uncalibrated, mm from different sources are not
subtracted: every film is re-measured in pixels, the records say
``unit = "px"``, and a warning explains why (pixel deltas assume the same
detector pixel size and magnification; percentages are then the
comparable figures).

Warnings (``Comparison.warnings``)
----------------------------------
Calibration differences; adjacent reference heights differing by more than
5 % between two films (using the neighbours measured on both films: a
magnification or projection difference); patient position differing when
known on both; a treated level missing or incomplete on a film; a level
annotated on one of pre/post only; timepoints that contradict their role;
the same film given twice; different reference methods; a vertebra whose
reference method fell back on one film only.  Each film's own measurement
warnings follow, prefixed by its role (``pre: ...``).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vheight.annotation import LEVELS, FrozenMap
from vheight.errors import MeasurementError
from vheight.morphometry import HEIGHTS, Measurement, VertebraMeasurement, _mean_heights
from vheight.tables import COMPARE_RECORD_KEYS, COMPARE_SPEC_KEYS

# A vertebra's three heights and their reference heights, in HEIGHTS order.
_heights_of = operator.attrgetter("anterior_height", "middle_height", "posterior_height")
_references_of = operator.attrgetter(
    "reference_anterior", "reference_middle", "reference_posterior"
)
_NO_HEIGHTS = (None, None, None)

__all__ = [
    "COMPARE_RECORD_KEYS",
    "SPEC_COMPARE_RECORD_KEYS",
    "REFERENCE_TOLERANCE",
    "HeightComparison",
    "LevelComparison",
    "Comparison",
    "compare",
]

#: Adjacent reference heights may differ by this fraction between films before a warning.
REFERENCE_TOLERANCE = 0.05

#: Keys of one ``compare`` output record named by ``interfaces.md``, in order.
SPEC_COMPARE_RECORD_KEYS: tuple[str, ...] = COMPARE_SPEC_KEYS
# COMPARE_RECORD_KEYS (imported above): the keys of one record, in order, the
# specified ones then added fields; the columns are defined in vheight.tables.


def _pct(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or not denominator > 0:
        return None
    return 100.0 * numerator / denominator


def _diff(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return after - before


@dataclass(frozen=True, slots=True, kw_only=True)
class HeightComparison:
    """One height of one level across films (lengths in ``Comparison.unit``)."""

    height: str
    pre: float
    post: float
    followup: float | None
    reference_method: str
    reference_pre: float | None
    delta: float
    restoration_pct_of_initial: float | None
    restoration_pct_of_lost: float | None
    restoration_pct_of_reference: float | None
    loss_since_post_pct: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelComparison:
    """One level across films: angles, ratios, grades and the three heights."""

    level: str
    treated: bool
    heights: Mapping[str, HeightComparison]
    wedge_angle_pre_deg: float
    wedge_angle_post_deg: float
    wedge_angle_followup_deg: float | None
    wedge_angle_change_deg: float
    segmental_kyphosis_pre_deg: float | None
    segmental_kyphosis_post_deg: float | None
    segmental_kyphosis_change_deg: float | None
    wedge_ratio_pre: float | None
    wedge_ratio_post: float | None
    wedge_ratio_change: float | None
    grade_pre: int | None
    grade_post: int | None
    grade_followup: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Pre / post (/ follow-up) comparison of one patient's films.

    Attributes
    ----------
    pre, post, followup
        The measurements compared, as given (``followup`` may be None).
    unit
        ``"mm"`` or ``"px"`` for every length of the records (see module
        docstring: mixed calibrations are compared in px).
    levels
        Level -> :class:`LevelComparison`, levels complete on pre and post,
        anatomical order.
    warnings
        Comparison warnings, then each film's measurement warnings prefixed
        by its role.
    """

    pre: Measurement
    post: Measurement
    followup: Measurement | None
    unit: str
    levels: Mapping[str, LevelComparison]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", FrozenMap(self.levels))

    def records(self) -> list[dict[str, Any]]:
        """One record per level and height (keys :data:`COMPARE_RECORD_KEYS`)."""
        rows = []
        for lc in self.levels.values():
            # The figures of the level, the same on its three rows (the records' last keys).
            per_level = {
                "wedge_angle_pre_deg": lc.wedge_angle_pre_deg,
                "wedge_angle_post_deg": lc.wedge_angle_post_deg,
                "wedge_angle_change_deg": lc.wedge_angle_change_deg,
                "segmental_kyphosis_change_deg": lc.segmental_kyphosis_change_deg,
                "grade_pre": lc.grade_pre,
                "grade_post": lc.grade_post,
                "treated": lc.treated,
                "wedge_angle_followup_deg": lc.wedge_angle_followup_deg,
                "segmental_kyphosis_pre_deg": lc.segmental_kyphosis_pre_deg,
                "segmental_kyphosis_post_deg": lc.segmental_kyphosis_post_deg,
                "wedge_ratio_pre": lc.wedge_ratio_pre,
                "wedge_ratio_post": lc.wedge_ratio_post,
                "wedge_ratio_change": lc.wedge_ratio_change,
                "grade_followup": lc.grade_followup,
            }
            for hc in lc.heights.values():
                rows.append(
                    {
                        "level": lc.level,
                        "height": hc.height,
                        "unit": self.unit,
                        "pre": hc.pre,
                        "post": hc.post,
                        "followup": hc.followup,
                        "delta": hc.delta,
                        "restoration_pct_of_initial": hc.restoration_pct_of_initial,
                        "restoration_pct_of_lost": hc.restoration_pct_of_lost,
                        "restoration_pct_of_reference": hc.restoration_pct_of_reference,
                        "loss_since_post_pct": hc.loss_since_post_pct,
                        "reference_method": hc.reference_method,
                        "reference_pre": hc.reference_pre,
                        **per_level,
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The ``vheight compare --format json`` document."""
        return {
            "pre": self.pre.source,
            "post": self.post.source,
            "followup": None if self.followup is None else self.followup.source,
            "levels": self.records(),
            "warnings": list(self.warnings),
        }


def _calibration_key(m: Measurement) -> tuple[str, str]:
    return (m.calibration.label.value, m.calibration.source)


def _describe_cal(m: Measurement) -> str:
    cal = m.calibration
    if not cal.is_calibrated:
        return "uncalibrated (px)"
    return f"{cal.label.value} from {cal.source}"


def compare(pre: Measurement, post: Measurement, followup: Measurement | None = None) -> Comparison:
    """Compare the measurements of one patient's films taken before and after augmentation.

    Parameters
    ----------
    pre, post
        Measurements of the films before and after the procedure.
    followup
        Optional later film; adds ``followup`` heights and ``loss_since_post_pct``.

    Returns
    -------
    Comparison
        Records per level and height, and warnings (module docstring).
    """
    for role, m in (("pre", pre), ("post", post), ("followup", followup)):
        if m is not None and not isinstance(m, Measurement):
            raise MeasurementError(
                f"{role}: expected a Measurement (vheight.measure), found {type(m).__name__}"
            )
    films: dict[str, Measurement] = {"pre": pre, "post": post}
    if followup is not None:
        films["followup"] = followup
    warnings: list[str] = []

    # -- units -----------------------------------------------------------------------------
    keys = {_calibration_key(m) for m in films.values()}
    calibrated = [m.calibration.is_calibrated for m in films.values()]
    if len(keys) == 1:
        unit = pre.unit
        if not any(calibrated):
            warnings.append(
                "no film is calibrated: lengths and deltas are in pixels (px), "
                "comparable only if the films share pixel size and magnification"
            )
        compared = dict(films)
    else:
        unit = "px"
        described = ", ".join(f"{role} {_describe_cal(m)}" for role, m in films.items())
        reason = (
            "one film is uncalibrated" if not all(calibrated) else "the calibration sources differ"
        )
        warnings.append(
            f"{reason} ({described}): lengths and deltas are compared in pixels (px), not mm; "
            "the percentages are the comparable figures"
        )
        compared = {role: m.in_pixels() for role, m in films.items()}

    # -- film-level checks -----------------------------------------------------------------
    for role, m in films.items():
        if m.timepoint is not None and m.timepoint != role:
            warnings.append(
                f"the {role} film is annotated as timepoint '{m.timepoint}', "
                f"but is used as '{role}'"
            )
    roles = list(films)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            uid_a = films[a].annotation.image.sop_instance_uid
            uid_b = films[b].annotation.image.sop_instance_uid
            if uid_a and uid_a == uid_b:
                warnings.append(f"the {a} and {b} annotations are of the same film ({uid_a})")
            pos_a, pos_b = films[a].patient_position, films[b].patient_position
            if pos_a and pos_b and pos_a != pos_b:
                warnings.append(
                    f"patient position differs: {a} {pos_a}, {b} {pos_b} "
                    "(loading changes vertebral heights)"
                )
            if films[a].reference is not films[b].reference:
                warnings.append(
                    f"reference methods differ: {a} '{films[a].reference.value}', "
                    f"{b} '{films[b].reference.value}'"
                )

    # -- levels ----------------------------------------------------------------------------
    treated: set[str] = set()
    for m in films.values():
        treated.update(m.treated_levels)
    for level in (lvl for lvl in LEVELS if lvl in treated):
        for role, m in films.items():
            v = m.vertebrae.get(level)
            if v is None:
                warnings.append(f"{level} is treated but not annotated on the {role} film")
            elif not v.complete:
                warnings.append(f"{level} is treated but incomplete on the {role} film")
    pre_levels = {lvl for lvl, v in pre.vertebrae.items() if v.complete}
    post_levels = {lvl for lvl, v in post.vertebrae.items() if v.complete}
    for level in LEVELS:
        if level in treated:
            continue
        if level in pre_levels and level not in post_levels:
            warnings.append(f"{level} is measured on the pre film only: not compared")
        elif level in post_levels and level not in pre_levels:
            warnings.append(f"{level} is measured on the post film only: not compared")

    cpre, cpost = compared["pre"], compared["post"]
    cfol = compared.get("followup")
    levels: dict[str, LevelComparison] = {}
    for level in LEVELS:
        if level not in pre_levels or level not in post_levels:
            continue
        vp, vq = cpre.vertebrae[level], cpost.vertebrae[level]
        vf = cfol.vertebrae.get(level) if cfol is not None else None
        if vf is not None and not vf.complete:
            vf = None
        if cfol is not None and vf is None and level not in treated and level in cfol.vertebrae:
            warnings.append(f"{level} is incomplete on the followup film: no follow-up figures")
        if vp.reference_method is not vq.reference_method:
            warnings.append(
                f"{level}: reference method used is '{vp.reference_method}' on the pre film "
                f"but '{vq.reference_method}' on the post film"
            )
        warnings.extend(_reference_warnings(level, compared, treated))
        heights = {}
        method = str(vp.reference_method)
        followups = _NO_HEIGHTS if vf is None else _heights_of(vf)
        for h, h_pre, h_post, ref_pre, h_fol in zip(
            HEIGHTS, _heights_of(vp), _heights_of(vq), _references_of(vp), followups, strict=True
        ):
            assert h_pre is not None and h_post is not None  # complete on both
            delta = h_post - h_pre
            heights[h] = HeightComparison(
                height=h,
                pre=h_pre,
                post=h_post,
                followup=h_fol,
                reference_method=method,
                reference_pre=ref_pre,
                delta=delta,
                restoration_pct_of_initial=_pct(delta, h_pre),
                restoration_pct_of_lost=(
                    None if ref_pre is None or ref_pre <= h_pre else _pct(delta, ref_pre - h_pre)
                ),
                restoration_pct_of_reference=_pct(delta, ref_pre),
                loss_since_post_pct=None if h_fol is None else _pct(h_post - h_fol, h_post),
            )
        levels[level] = LevelComparison(
            level=level,
            treated=level in treated,
            heights=FrozenMap(heights),
            wedge_angle_pre_deg=_required(vp.wedge_angle_deg),
            wedge_angle_post_deg=_required(vq.wedge_angle_deg),
            wedge_angle_followup_deg=None if vf is None else vf.wedge_angle_deg,
            wedge_angle_change_deg=_required(vq.wedge_angle_deg) - _required(vp.wedge_angle_deg),
            segmental_kyphosis_pre_deg=vp.segmental_kyphosis_deg,
            segmental_kyphosis_post_deg=vq.segmental_kyphosis_deg,
            segmental_kyphosis_change_deg=_diff(
                vq.segmental_kyphosis_deg, vp.segmental_kyphosis_deg
            ),
            wedge_ratio_pre=vp.wedge_ratio,
            wedge_ratio_post=vq.wedge_ratio,
            wedge_ratio_change=_diff(vq.wedge_ratio, vp.wedge_ratio),
            grade_pre=_grade(vp),
            grade_post=_grade(vq),
            grade_followup=None if vf is None else _grade(vf),
        )
    if not levels:
        warnings.append("no level is measured on both the pre and the post film: nothing compared")
    for role, m in films.items():
        warnings.extend(f"{role}: {w}" for w in m.warnings)
    return Comparison(
        pre=pre,
        post=post,
        followup=followup,
        unit=unit,
        levels=levels,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _required(value: float | None) -> float:
    if value is None:  # pragma: no cover - complete vertebrae always have a wedge angle
        raise MeasurementError("a complete vertebra lacks its wedge angle")
    return value


def _grade(v: VertebraMeasurement) -> int | None:
    return None if v.grade is None else int(v.grade)


def _reference_warnings(
    level: str, films: Mapping[str, Measurement], treated: set[str]
) -> list[str]:
    """Adjacent reference heights of ``level`` differing by > 5 % between two films.

    Only untreated neighbours complete on both films are averaged, so that a
    level annotated on one film only, or a treated level whose height the
    procedure changed, does not fake a difference.  ``treated``: the levels
    treated on any of the films.
    """
    warnings: list[str] = []
    roles = list(films)
    for i, a in enumerate(roles):
        vertebrae_a = films[a].vertebrae
        va = vertebrae_a.get(level)
        if va is None or not va.complete:
            continue
        for b in roles[i + 1 :]:
            vertebrae_b = films[b].vertebrae
            vb = vertebrae_b.get(level)
            if vb is None or not vb.complete:
                continue
            common = [n for n in va.neighbours if n in vb.neighbours and n not in treated]
            if not common:
                continue
            found = []
            # Neighbours are complete vertebrae: their heights are numbers.
            means_a = _mean_heights([_heights_of(vertebrae_a[n]) for n in common])
            means_b = _mean_heights([_heights_of(vertebrae_b[n]) for n in common])
            for h, ra, rb in zip(HEIGHTS, means_a, means_b, strict=True):
                if ra > 0 and abs(rb - ra) / ra > REFERENCE_TOLERANCE:
                    unit = films[a].unit
                    found.append(f"{h} {100 * (rb - ra) / ra:+.1f} % ({ra:.4g} -> {rb:.4g} {unit})")
            if found:
                warnings.append(
                    f"{level}: adjacent reference heights ({'+'.join(common)}) differ by more "
                    f"than {REFERENCE_TOLERANCE:.0%} between the {a} and {b} films: "
                    f"{', '.join(found)}; magnification or projection difference?"
                )
    return warnings
