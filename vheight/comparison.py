"""Before / after augmentation, and follow-up: restoration, its loss, new fractures (pure).

For every level measured (complete) on both the pre and the post film, and
for each height ``h`` (anterior, middle, posterior), following
``measurements.md`` (McKiernan et al., Spine 2003;28:2517 give four methods
that differ up to four-fold, so all four are reported):

- ``delta = H_post - H_pre``
- ``restoration_pct_of_initial = 100 * delta / H_pre``
- ``restoration_pct_of_lost = 100 * delta / (Ref_pre - H_pre)``, null when
  ``Ref_pre <= H_pre`` (nothing was lost)
- ``restoration_pct_of_reference = 100 * delta / Ref_pre``
- ``lost_pre = Ref_pre - H_pre`` (v1.1)
- ``loss_reduction_pct_points = loss_pct_pre - loss_pct_post`` and
  ``restoration_pct_of_lost_relative = 100 * (loss_pct_pre - loss_pct_post) /
  loss_pct_pre`` (null when ``loss_pct_pre <= 0``): each film's own loss
  against its own reference, so independent of magnification (v1.1)
- with a follow-up film, ``loss_since_post_pct = 100 * (H_post - H_follow) / H_post``

``Ref_pre`` is the pre-film reference height of the method actually used for
that vertebra on the pre film (``reference_method``; null for the posterior
height under the ``posterior`` method, and then so are the figures that need
it).  Per level: wedge angle before, after and its change (``post - pre``,
negative = correction), segmental kyphosis change, wedge ratio change, grades
before and after, and the flags below.

Same patient, right order (v1.1)
--------------------------------
The films' header facts (:class:`FilmFacts`, plain values: the caller reads
the headers) are checked when both values are known: different
``PatientID`` (or issuer) raise :class:`~vheight.errors.ComparisonError`
unless ``allow_different_patients`` (then a warning); acquisition dates out
of the order pre <= post <= follow-up, and different ``ViewPosition`` /
``PatientOrientation``, are warnings.  ``days_pre_to_post`` and
``days_post_to_followup`` are calendar days between the films' dates.

Units (v1.1)
------------
Every film calibrated: lengths in mm, each film measured with its own
calibration; different calibration labels (``mm ERMF`` against ``mm Proj``)
add a warning naming both.  Pre or post uncalibrated: every length in px,
with a warning.  Only the follow-up uncalibrated: pre/post stay in mm, the
follow-up heights and ``loss_since_post_pct`` are in px
(``followup_unit = "px"``), with a warning.

New fractures and recollapse (v1.1)
-----------------------------------
Every untreated level measured on the pre film and on the latest film
(follow-up, else post) gets ``incident_fracture``: a height decreased by at
least 20 % and at least 4 mm (on px the 20 % alone, with a warning), or the
grade went from 0 to 1 or more; ``incident_reason`` says which.  Treated
levels with a follow-up get ``recollapse``: ``loss_since_post_pct >= 15``
for any height.  Percentages and millimetres are compared rounded to 6
decimals, like the grade.  Each flag adds a warning; they are suggestions
for the radiologist to confirm.

Warnings (``Comparison.warnings``)
----------------------------------
Patients, dates and views (above); calibration differences; adjacent
reference heights differing by more than 5 % between two films in the same
unit (using the neighbours measured on both films: a magnification or
projection difference); patient position differing when known on both; a
treated level missing or incomplete on a film; a level annotated on one of
pre/post only; timepoints that contradict their role; the same film given
twice; different reference methods; a vertebra whose reference method fell
back on one film only; the flags.  Each film's own measurement warnings
follow, prefixed by its role (``pre: ...``).
"""

from __future__ import annotations

import datetime as _dt
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vheight.annotation import LEVELS, FrozenMap
from vheight.errors import ComparisonError, MeasurementError
from vheight.morphometry import HEIGHTS, Measurement, VertebraMeasurement, mean_heights
from vheight.tables import COMPARE_RECORD_KEYS, COMPARE_SPEC_KEYS

# A vertebra's three heights, reference heights and losses, in HEIGHTS order.
_heights_of = operator.attrgetter("anterior_height", "middle_height", "posterior_height")
_references_of = operator.attrgetter(
    "reference_anterior", "reference_middle", "reference_posterior"
)
_losses_of = operator.attrgetter("anterior_loss_pct", "middle_loss_pct", "posterior_loss_pct")
_NO_HEIGHTS = (None, None, None)

__all__ = [
    "COMPARE_RECORD_KEYS",
    "SPEC_COMPARE_RECORD_KEYS",
    "V1_1_COMPARE_RECORD_KEYS",
    "REFERENCE_TOLERANCE",
    "INCIDENT_DECREASE_PCT",
    "INCIDENT_DECREASE_MM",
    "RECOLLAPSE_PCT",
    "ROLES",
    "MIN_LOST_MM",
    "MIN_LOST_FRACTION",
    "percent_of_lost_meaningful",
    "FilmFacts",
    "parse_dicom_datetime",
    "HeightComparison",
    "LevelComparison",
    "Comparison",
    "compare",
]

#: Adjacent reference heights may differ by this fraction between films before a warning.
REFERENCE_TOLERANCE = 0.05
#: An incident fracture: a height decreased by at least this many percent...
INCIDENT_DECREASE_PCT = 20.0
#: ...and by at least this many mm (calibrated films; Black et al., the FIT criteria).
INCIDENT_DECREASE_MM = 4.0
#: A treated level recollapsed: at least this many percent of a height lost since post.
RECOLLAPSE_PCT = 15.0
#: ``restoration_pct_of_lost`` is shown only when at least this many mm were lost...
MIN_LOST_MM = 1.0
#: ...or, in px, this fraction of the reference height (``measurements.md``).
MIN_LOST_FRACTION = 0.05
#: The films of a comparison, in time order.
ROLES: tuple[str, ...] = ("pre", "post", "followup")

#: Keys of one ``compare`` output record named by ``interfaces.md`` (v1 and v1.1), in order.
SPEC_COMPARE_RECORD_KEYS: tuple[str, ...] = COMPARE_SPEC_KEYS
#: Keys added to the ``compare`` record by ``interfaces.md`` v1.1, in order: the last
#: keys of a record (so that no earlier column moves).
V1_1_COMPARE_RECORD_KEYS: tuple[str, ...] = (
    "followup_unit",
    "lost_pre",
    "loss_reduction_pct_points",
    "restoration_pct_of_lost_relative",
    "days_pre_to_post",
    "days_post_to_followup",
    "incident_fracture",
    "incident_reason",
    "recollapse",
)
# COMPARE_RECORD_KEYS (imported above): the keys of one record, in order, the
# columns defined in vheight.tables.


# -- film facts ---------------------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip(" \x00")
    return text or None


def parse_dicom_datetime(date: Any = None, time: Any = None) -> _dt.datetime | None:
    """A DICOM date (``DA``, ``YYYYMMDD``) and time (``TM``, ``HHMMSS.FFFFFF``) as a
    naive datetime, or a ``DT`` value (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) given as ``date``.

    The time may be cut short (``HH``, ``HHMM``); a time zone offset is ignored
    (the films of one patient come from one site).  None when the date is
    missing or not a valid date; an unreadable time counts as midnight.
    """
    text = _text(date)
    if text is None:
        return None
    if len(text) > 8 and time is None:  # a DT value
        zone = re.search(r"[+\-]\d{4}$", text)
        if zone:
            text = text[: zone.start()]
        text, time = text[:8], text[8:] or None
    match = _DATE.match(text)
    if match is None:
        return None
    try:
        day = _dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
    clock = _dt.time()
    time_text = _text(time)
    timed = _TIME.match(time_text) if time_text else None
    if timed is not None:
        try:
            clock = _dt.time(
                int(timed[1]),
                int(timed[2] or 0),
                min(int(timed[3] or 0), 59),
                int((timed[4] or "0").ljust(6, "0")),
            )
        except ValueError:
            clock = _dt.time()
    return _dt.datetime.combine(day, clock)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilmFacts:
    """The header facts of one film that a comparison checks (plain values).

    Attributes
    ----------
    name
        The film's name for messages (its file), when known.
    patient_id, issuer_of_patient_id
        ``PatientID`` and ``IssuerOfPatientID``.
    acquired
        When the film was taken: ``AcquisitionDateTime``, else ``ContentDate``
        + ``ContentTime``, else ``StudyDate`` + ``StudyTime``.
    view_position, patient_orientation
        ``ViewPosition`` (e.g. ``LL``) and ``PatientOrientation`` (e.g. ``A\\F``).

    Unknown values are None and are not checked.
    """

    name: str | None = None
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    acquired: _dt.datetime | None = None
    view_position: str | None = None
    patient_orientation: str | None = None

    @classmethod
    def from_header(cls, info: Any, *, name: str | None = None) -> FilmFacts:
        """The facts of a film's header summary (e.g. :class:`vheight.film.FilmInfo`).

        ``info`` is read by attribute name (``patient_id``,
        ``issuer_of_patient_id``, ``acquisition_datetime``, ``content_date``,
        ``content_time``, ``study_date``, ``study_time``, ``view_position``,
        ``patient_orientation``, ``name``); a missing attribute is unknown.
        """

        def get(attribute: str) -> str | None:
            return _text(getattr(info, attribute, None))

        acquired = (
            parse_dicom_datetime(get("acquisition_datetime"))
            or parse_dicom_datetime(get("content_date"), get("content_time"))
            or parse_dicom_datetime(get("study_date"), get("study_time"))
        )
        return cls(
            name=name or get("name"),
            patient_id=get("patient_id"),
            issuer_of_patient_id=get("issuer_of_patient_id"),
            acquired=acquired,
            view_position=get("view_position"),
            patient_orientation=get("patient_orientation"),
        )


_UNKNOWN_FACTS = FilmFacts()


# -- results ------------------------------------------------------------------------------


def _pct(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or not denominator > 0:
        return None
    return 100.0 * numerator / denominator


def _diff(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return after - before


def percent_of_lost_meaningful(record: Mapping[str, Any]) -> bool:
    """Whether a record's ``restoration_pct_of_lost`` (and its relative form) is worth
    showing: ``lost_pre`` at least 1 mm, or 5 % of ``reference_pre`` in px.

    Below that, too little height was lost for the share restored to mean
    anything (``measurements.md``); the record keeps the number.
    """
    lost, reference = record.get("lost_pre"), record.get("reference_pre")
    if lost is None or lost != lost:
        return False
    if str(record.get("unit")) == "mm":
        return _at_least(float(lost), MIN_LOST_MM)
    return reference is not None and _at_least(float(lost), MIN_LOST_FRACTION * float(reference))


def _at_least(value: float, threshold: float) -> bool:
    """``value >= threshold`` after rounding to 6 decimals (as the grade's thresholds)."""
    return round(value, 6) >= threshold


@dataclass(frozen=True, slots=True, kw_only=True)
class HeightComparison:
    """One height of one level across films.

    Lengths are in ``Comparison.unit``, except ``followup`` (and the
    ``loss_since_post_pct`` made from it) in ``Comparison.followup_unit``.
    """

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
    lost_pre: float | None = None
    loss_reduction_pct_points: float | None = None
    restoration_pct_of_lost_relative: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelComparison:
    """One level across films: angles, ratios, grades, flags and the three heights.

    ``incident_fracture`` / ``incident_reason``: untreated levels measured on
    the pre and the latest film (None otherwise); ``recollapse``: treated
    levels with a follow-up (None otherwise).
    """

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
    incident_fracture: bool | None = None
    incident_reason: str | None = None
    recollapse: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Pre / post (/ follow-up) comparison of one patient's films.

    Attributes
    ----------
    pre, post, followup
        The measurements compared, as given (``followup`` may be None).
    unit
        ``"mm"`` or ``"px"`` for the lengths of the records (module docstring).
    followup_unit
        The unit of the follow-up lengths: ``unit``, or ``"px"`` when only the
        follow-up film is uncalibrated.
    levels
        Level -> :class:`LevelComparison`, levels complete on pre and post,
        anatomical order.
    warnings
        Comparison warnings, then each film's measurement warnings prefixed
        by its role.
    facts
        The header facts of (pre, post, followup) used for the checks.
    days_pre_to_post, days_post_to_followup
        Calendar days between the films' dates (None when a date is unknown).
    """

    pre: Measurement
    post: Measurement
    followup: Measurement | None
    unit: str
    levels: Mapping[str, LevelComparison]
    warnings: tuple[str, ...] = ()
    followup_unit: str | None = None
    facts: tuple[FilmFacts, ...] = ()
    days_pre_to_post: int | None = None
    days_post_to_followup: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", FrozenMap(self.levels))
        if self.followup_unit is None:
            object.__setattr__(self, "followup_unit", self.unit)

    @property
    def incident_levels(self) -> tuple[str, ...]:
        """The levels flagged as a suspected new fracture, anatomical order."""
        return tuple(lc.level for lc in self.levels.values() if lc.incident_fracture)

    @property
    def recollapsed_levels(self) -> tuple[str, ...]:
        """The treated levels flagged as recollapsed, anatomical order."""
        return tuple(lc.level for lc in self.levels.values() if lc.recollapse)

    def records(self) -> list[dict[str, Any]]:
        """One record per level and height (keys :data:`COMPARE_RECORD_KEYS`)."""
        rows = []
        for lc in self.levels.values():
            for hc in lc.heights.values():
                rows.append(_record(self, lc, hc))
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


def _record(c: Comparison, lc: LevelComparison, hc: HeightComparison) -> dict[str, Any]:
    """The ``compare`` output record of one height of one level (:data:`COMPARE_RECORD_KEYS`)."""
    return {
        "level": lc.level,
        "height": hc.height,
        "unit": c.unit,
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
        "followup_unit": c.followup_unit,
        "lost_pre": hc.lost_pre,
        "loss_reduction_pct_points": hc.loss_reduction_pct_points,
        "restoration_pct_of_lost_relative": hc.restoration_pct_of_lost_relative,
        "days_pre_to_post": c.days_pre_to_post,
        "days_post_to_followup": c.days_post_to_followup,
        "incident_fracture": lc.incident_fracture,
        "incident_reason": lc.incident_reason,
        "recollapse": lc.recollapse,
    }


# -- the steps of a comparison ---------------------------------------------------------------


def _checked_films(
    pre: Measurement, post: Measurement, followup: Measurement | None
) -> dict[str, Measurement]:
    """The films by role (``pre``, ``post`` and, when given, ``followup``)."""
    for role, m in zip(ROLES, (pre, post, followup), strict=True):
        if m is not None and not isinstance(m, Measurement):
            raise MeasurementError(
                f"{role}: expected a Measurement (vheight.measure), found {type(m).__name__}"
            )
    films = {"pre": pre, "post": post}
    if followup is not None:
        films["followup"] = followup
    return films


def _checked_facts(
    facts: Sequence[FilmFacts | None] | Mapping[str, FilmFacts | None] | None,
    films: Mapping[str, Measurement],
) -> dict[str, FilmFacts]:
    """The facts by role, unknown (all None) where not given."""
    if facts is None:
        given: dict[str, FilmFacts | None] = {}
    elif isinstance(facts, Mapping):
        unknown = set(facts) - set(ROLES)
        if unknown:
            raise MeasurementError(
                f"facts: unknown role(s) {', '.join(sorted(unknown))}: expected {', '.join(ROLES)}"
            )
        given = dict(facts)
    else:
        given = dict(zip(ROLES, facts, strict=False))
    out = {}
    for role in films:
        value = given.get(role)
        if value is not None and not isinstance(value, FilmFacts):
            raise MeasurementError(
                f"facts of the {role} film: expected FilmFacts, found {type(value).__name__}"
            )
        out[role] = value or _UNKNOWN_FACTS
    return out


def _film_label(role: str, m: Measurement, facts: FilmFacts) -> str:
    """How messages name a film: its annotation (else its film), else its role."""
    return m.source or facts.name or f"the {role} film"


def _patient_key(facts: FilmFacts) -> tuple[str, str | None] | None:
    return None if facts.patient_id is None else (facts.patient_id, facts.issuer_of_patient_id)


def _describe_patient(facts: FilmFacts) -> str:
    issuer = f", issuer {facts.issuer_of_patient_id}" if facts.issuer_of_patient_id else ""
    return f"patient ID {facts.patient_id}{issuer}"


def _patient_check(
    films: Mapping[str, Measurement], facts: Mapping[str, FilmFacts], *, allow: bool
) -> list[str]:
    """Different patients raise :class:`ComparisonError` (or warn when ``allow``)."""
    warnings: list[str] = []
    roles = list(films)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            fa, fb = facts[a], facts[b]
            if fa.patient_id is None or fb.patient_id is None:
                continue
            issuers_differ = (
                fa.issuer_of_patient_id is not None
                and fb.issuer_of_patient_id is not None
                and fa.issuer_of_patient_id != fb.issuer_of_patient_id
            )
            if fa.patient_id == fb.patient_id and not issuers_differ:
                continue
            names = (
                f"{_film_label(a, films[a], fa)} ({a}, {_describe_patient(fa)}) and "
                f"{_film_label(b, films[b], fb)} ({b}, {_describe_patient(fb)})"
            )
            if not allow:
                raise ComparisonError(
                    f"{names} belong to different patients: not compared "
                    "(allow_different_patients / --allow-different-patients compares anyway)"
                )
            warnings.append(f"{names} belong to different patients: compared on request")
    return warnings


def _days(later: _dt.datetime | None, earlier: _dt.datetime | None) -> int | None:
    if later is None or earlier is None:
        return None
    return (later.date() - earlier.date()).days


def _date_checks(facts: Mapping[str, FilmFacts]) -> list[str]:
    """A warning when the films' dates are not in the order pre <= post <= follow-up."""
    dated = [(role, facts[role].acquired) for role in facts if facts[role].acquired is not None]
    for (a, when_a), (b, when_b) in zip(dated, dated[1:], strict=False):
        assert when_a is not None and when_b is not None
        if when_b < when_a:
            listed = ", ".join(f"{role} {when:%Y-%m-%d %H:%M}" for role, when in dated if when)
            return [
                f"the films' dates are not in the order pre <= post <= follow-up ({listed}): "
                f"the {b} film was taken before the {a} film; check the timepoints"
            ]
    return []


def _view_checks(facts: Mapping[str, FilmFacts]) -> list[str]:
    """A warning per pair of films whose view position or patient orientation differ."""
    warnings: list[str] = []
    roles = list(facts)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            for attribute, label in (
                ("view_position", "view position (ViewPosition)"),
                ("patient_orientation", "patient orientation (PatientOrientation)"),
            ):
                va, vb = getattr(facts[a], attribute), getattr(facts[b], attribute)
                if va is not None and vb is not None and va != vb:
                    warnings.append(
                        f"{label} differs: {a} {va}, {b} {vb}; heights of different "
                        "projections do not compare"
                    )
    return warnings


@dataclass(frozen=True, slots=True, kw_only=True)
class _Units:
    """The units of a comparison and the measurements in them, by role."""

    unit: str
    followup_unit: str
    films: Mapping[str, Measurement] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _describe_cal(m: Measurement) -> str:
    cal = m.calibration
    if not cal.is_calibrated:
        return "uncalibrated (px)"
    return f"{cal.label.value} from {cal.source}"


def _units(films: Mapping[str, Measurement]) -> _Units:
    """mm when every film is calibrated (each its own); px when pre or post is not;
    an uncalibrated follow-up alone in px (``followup_unit``)."""
    calibrated = {role: m.calibration.is_calibrated for role, m in films.items()}
    described = ", ".join(f"{role} {_describe_cal(m)}" for role, m in films.items())
    if all(calibrated.values()):
        labels = {m.spacing_label for m in films.values()}
        warnings: tuple[str, ...] = ()
        if len(labels) > 1:
            warnings = (
                f"the calibration labels differ ({described}): lengths stay in mm, each film "
                "with its own calibration, but detector-plane spacing (mm Proj) includes "
                "5-20 % magnification; loss_reduction_pct_points and "
                "restoration_pct_of_lost_relative do not depend on it",
            )
        return _Units(unit="mm", followup_unit="mm", films=dict(films), warnings=warnings)
    if not any(calibrated.values()):
        return _Units(
            unit="px",
            followup_unit="px",
            films=dict(films),
            warnings=(
                "no film is calibrated: lengths and deltas are in pixels (px), "
                "comparable only if the films share pixel size and magnification",
            ),
        )
    if calibrated["pre"] and calibrated["post"]:  # only the follow-up is uncalibrated
        return _Units(
            unit="mm",
            followup_unit="px",
            films={**films, "followup": films["followup"]},
            warnings=(
                f"the follow-up film is uncalibrated ({described}): pre/post lengths stay in "
                "mm; the follow-up heights and the loss since post are in pixels (px), "
                "measured against the post film in px",
            ),
        )
    return _Units(
        unit="px",
        followup_unit="px",
        films={role: m.in_pixels() for role, m in films.items()},
        warnings=(
            f"one film is uncalibrated ({described}): lengths and deltas are compared in "
            "pixels (px), not mm; the percentages are the comparable figures",
        ),
    )


def _film_checks(films: Mapping[str, Measurement]) -> list[str]:
    """Timepoints against roles, the same film twice, patient position, reference methods."""
    warnings: list[str] = []
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
    return warnings


def _treated_levels(films: Mapping[str, Measurement]) -> frozenset[str]:
    """The levels treated according to any of the films."""
    return frozenset(level for m in films.values() for level in m.treated_levels)


def _complete_levels(m: Measurement | None) -> frozenset[str]:
    if m is None:
        return frozenset()
    return frozenset(level for level, v in m.vertebrae.items() if v.complete)


def _level_checks(films: Mapping[str, Measurement], treated: frozenset[str]) -> list[str]:
    """Treated levels missing or incomplete on a film; levels on one of pre/post only."""
    warnings: list[str] = []
    for level in (lvl for lvl in LEVELS if lvl in treated):
        for role, m in films.items():
            v = m.vertebrae.get(level)
            if v is None:
                warnings.append(f"{level} is treated but not annotated on the {role} film")
            elif not v.complete:
                warnings.append(f"{level} is treated but incomplete on the {role} film")
    pre_levels, post_levels = _complete_levels(films["pre"]), _complete_levels(films["post"])
    for level in LEVELS:
        if level in treated:
            continue
        if level in pre_levels and level not in post_levels:
            warnings.append(f"{level} is measured on the pre film only: not compared")
        elif level in post_levels and level not in pre_levels:
            warnings.append(f"{level} is measured on the post film only: not compared")
    return warnings


def _height_comparisons(
    vp: VertebraMeasurement,
    vq: VertebraMeasurement,
    vf: VertebraMeasurement | None,
    vq_follow: VertebraMeasurement | None,
) -> dict[str, HeightComparison]:
    """The three heights of a level: ``vp`` pre, ``vq`` post, ``vf`` follow-up, and
    ``vq_follow`` the post film in the follow-up's unit (for the loss since post)."""
    method = str(vp.reference_method)
    followups = _NO_HEIGHTS if vf is None else _heights_of(vf)
    posts_for_followup = _NO_HEIGHTS if vq_follow is None else _heights_of(vq_follow)
    out = {}
    for h, h_pre, h_post, ref_pre, loss_pre, loss_post, h_fol, h_post_f in zip(
        HEIGHTS,
        _heights_of(vp),
        _heights_of(vq),
        _references_of(vp),
        _losses_of(vp),
        _losses_of(vq),
        followups,
        posts_for_followup,
        strict=True,
    ):
        assert h_pre is not None and h_post is not None  # complete on both
        delta = h_post - h_pre
        reduction = _diff(loss_pre, loss_post) if loss_post is not None else None
        out[h] = HeightComparison(
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
            loss_since_post_pct=(
                None if h_fol is None or h_post_f is None else _pct(h_post_f - h_fol, h_post_f)
            ),
            lost_pre=None if ref_pre is None else ref_pre - h_pre,
            loss_reduction_pct_points=reduction,
            restoration_pct_of_lost_relative=(
                None if reduction is None or loss_pre is None else _pct(reduction, loss_pre)
            ),
        )
    return out


def _incident(
    level: str, first: VertebraMeasurement, last: VertebraMeasurement, latest: str, unit: str
) -> tuple[bool, str | None]:
    """An untreated level's new fracture from ``first`` (pre) to ``last`` (``latest``).

    A height decreased by at least 20 % and 4 mm (only the 20 % in px), or grade
    0 -> 1 or more.  Returns the flag and the reason (None when not flagged).
    """
    reasons = []
    for h, before, after in zip(HEIGHTS, _heights_of(first), _heights_of(last), strict=True):
        if before is None or after is None or not before > 0:
            continue
        decrease = before - after
        decrease_pct = 100.0 * decrease / before
        if not _at_least(decrease_pct, INCIDENT_DECREASE_PCT):
            continue
        if unit == "mm" and not _at_least(decrease, INCIDENT_DECREASE_MM):
            continue
        reasons.append(f"{h} height -{decrease_pct:.1f} % (-{decrease:.2f} {unit}) since pre")
    grade_first, grade_last = _grade(first), _grade(last)
    if grade_first == 0 and grade_last is not None and grade_last >= 1:
        reasons.append(f"grade {grade_first} -> {grade_last} ({latest})")
    return bool(reasons), ("; ".join(reasons) or None)


def _recollapse(heights: Mapping[str, HeightComparison]) -> tuple[bool | None, list[str]]:
    """A treated level's recollapse: at least 15 % of a height lost since post."""
    losses = {h: hc.loss_since_post_pct for h, hc in heights.items()}
    if all(v is None for v in losses.values()):
        return None, []
    lost = [
        f"{h} {value:.1f} %"
        for h, value in losses.items()
        if value is not None and _at_least(value, RECOLLAPSE_PCT)
    ]
    return bool(lost), lost


def _compare_level(
    level: str,
    units: _Units,
    treated: frozenset[str],
    in_followup_unit: Mapping[str, Measurement],
) -> tuple[LevelComparison, list[str]]:
    """One level complete on pre and post: heights, angles, grades and the flags."""
    warnings: list[str] = []
    films = units.films
    vp, vq = films["pre"].vertebrae[level], films["post"].vertebrae[level]
    fol = in_followup_unit.get("followup")
    vf = fol.vertebrae.get(level) if fol is not None else None
    if vf is not None and not vf.complete:
        vf = None
    if fol is not None and vf is None and level not in treated and level in fol.vertebrae:
        warnings.append(f"{level} is incomplete on the followup film: no follow-up figures")
    if vp.reference_method is not vq.reference_method:
        warnings.append(
            f"{level}: reference method used is '{vp.reference_method}' on the pre film "
            f"but '{vq.reference_method}' on the post film"
        )
    vq_follow = None if vf is None else in_followup_unit["post"].vertebrae[level]
    heights = _height_comparisons(vp, vq, vf, vq_follow)

    incident: bool | None = None
    reason: str | None = None
    recollapse: bool | None = None
    if level in treated:
        recollapse, lost = _recollapse(heights)
        if recollapse:
            warnings.append(
                f"recollapse suspected at {level} (treated): {', '.join(lost)} of the height "
                f"lost since the post film (>= {RECOLLAPSE_PCT:g} %); for the radiologist "
                "to confirm"
            )
    else:
        latest, last = ("followup", vf) if fol is not None else ("post", vq)
        first = in_followup_unit["pre"].vertebrae[level] if latest == "followup" else vp
        if last is not None:
            unit = units.followup_unit if latest == "followup" else units.unit
            incident, reason = _incident(level, first, last, latest, unit)
            if incident:
                warnings.append(
                    f"new fracture suspected at {level} ({reason}); for the radiologist to confirm"
                )
    comparison = LevelComparison(
        level=level,
        treated=level in treated,
        heights=FrozenMap(heights),
        wedge_angle_pre_deg=_required(vp.wedge_angle_deg),
        wedge_angle_post_deg=_required(vq.wedge_angle_deg),
        wedge_angle_followup_deg=None if vf is None else vf.wedge_angle_deg,
        wedge_angle_change_deg=_required(vq.wedge_angle_deg) - _required(vp.wedge_angle_deg),
        segmental_kyphosis_pre_deg=vp.segmental_kyphosis_deg,
        segmental_kyphosis_post_deg=vq.segmental_kyphosis_deg,
        segmental_kyphosis_change_deg=_diff(vq.segmental_kyphosis_deg, vp.segmental_kyphosis_deg),
        wedge_ratio_pre=vp.wedge_ratio,
        wedge_ratio_post=vq.wedge_ratio,
        wedge_ratio_change=_diff(vq.wedge_ratio, vp.wedge_ratio),
        grade_pre=_grade(vp),
        grade_post=_grade(vq),
        grade_followup=None if vf is None else _grade(vf),
        incident_fracture=incident,
        incident_reason=reason,
        recollapse=recollapse,
    )
    return comparison, warnings


def compare(
    pre: Measurement,
    post: Measurement,
    followup: Measurement | None = None,
    *,
    facts: Sequence[FilmFacts | None] | Mapping[str, FilmFacts | None] | None = None,
    allow_different_patients: bool = False,
) -> Comparison:
    """Compare the measurements of one patient's films taken before and after augmentation.

    Parameters
    ----------
    pre, post
        Measurements of the films before and after the procedure.
    followup
        Optional later film; adds ``followup`` heights, ``loss_since_post_pct``
        and ``recollapse``, and is the latest film for ``incident_fracture``.
    facts
        The films' header facts, as ``(pre, post, followup)`` or by role;
        unknown facts (None, or not given) are not checked.
    allow_different_patients
        Compare films of different patients anyway (with a warning).

    Returns
    -------
    Comparison
        Records per level and height, and warnings (module docstring).

    Raises
    ------
    ComparisonError
        The films belong to different patients (``PatientID`` or its issuer
        differ) and ``allow_different_patients`` is false.
    """
    films = _checked_films(pre, post, followup)
    film_facts = _checked_facts(facts, films)
    warnings = _patient_check(films, film_facts, allow=allow_different_patients)
    warnings += _date_checks(film_facts)
    warnings += _view_checks(film_facts)
    units = _units(films)
    warnings += units.warnings
    warnings += _film_checks(films)
    treated = _treated_levels(films)
    warnings += _level_checks(films, treated)
    # The follow-up and what it is set against, in the follow-up's unit.
    in_followup_unit = (
        {role: m.in_pixels() for role, m in units.films.items()}
        if units.followup_unit != units.unit
        else dict(units.films)
    )
    common = _complete_levels(films["pre"]) & _complete_levels(films["post"])
    levels: dict[str, LevelComparison] = {}
    notes: dict[str, list[str]] = {}
    for level in (lvl for lvl in LEVELS if lvl in common):
        levels[level], notes[level] = _compare_level(level, units, treated, in_followup_unit)
    if any(lc.incident_fracture is not None for lc in levels.values()):
        warnings += _incident_unit_warnings(units, "followup" in films)
    # A treated or newly fractured neighbour changed for a reason: not a magnification.
    changed = treated | {lc.level for lc in levels.values() if lc.incident_fracture}
    for level in levels:
        warnings += _reference_warnings(level, units.films, changed, units)
        warnings += notes[level]
    if not levels:
        warnings.append("no level is measured on both the pre and the post film: nothing compared")
    for role, m in films.items():
        warnings.extend(f"{role}: {w}" for w in m.warnings)
    acquired = {role: f.acquired for role, f in film_facts.items()}
    return Comparison(
        pre=pre,
        post=post,
        followup=followup,
        unit=units.unit,
        followup_unit=units.followup_unit if followup is not None else units.unit,
        levels=levels,
        warnings=tuple(dict.fromkeys(warnings)),
        facts=tuple(film_facts.values()),
        days_pre_to_post=_days(acquired["post"], acquired["pre"]),
        days_post_to_followup=_days(acquired.get("followup"), acquired["post"]),
    )


def _incident_unit_warnings(units: _Units, has_followup: bool) -> list[str]:
    """Why the new-fracture check could not use its 4 mm criterion (lengths in px)."""
    if has_followup and units.followup_unit == "px" and units.unit == "mm":
        return [
            "a new fracture is flagged on the 20 % decrease alone on the follow-up film "
            "(in px: the 4 mm criterion needs mm)"
        ]
    if units.unit == "px":
        return [
            "lengths are in px: a new fracture is flagged on the 20 % decrease alone "
            "(the 4 mm criterion needs mm)"
        ]
    return []


def _required(value: float | None) -> float:
    if value is None:  # pragma: no cover - complete vertebrae always have a wedge angle
        raise MeasurementError("a complete vertebra lacks its wedge angle")
    return value


def _grade(v: VertebraMeasurement) -> int | None:
    return None if v.grade is None else int(v.grade)


def _reference_warnings(
    level: str, films: Mapping[str, Measurement], changed: frozenset[str], units: _Units
) -> list[str]:
    """Adjacent reference heights of ``level`` differing by > 5 % between two films.

    Only neighbours complete on both films and not in ``changed`` (the levels
    treated on any film, and those flagged as a new fracture) are averaged, so
    that a level annotated on one film only, or a level whose height really
    changed, does not fake a difference.  Films in different units are not
    set against each other.
    """
    warnings: list[str] = []
    roles = list(films)
    unit_of = {"pre": units.unit, "post": units.unit, "followup": units.followup_unit}
    for i, a in enumerate(roles):
        vertebrae_a = films[a].vertebrae
        va = vertebrae_a.get(level)
        if va is None or not va.complete:
            continue
        for b in roles[i + 1 :]:
            if unit_of[a] != unit_of[b]:
                continue
            vertebrae_b = films[b].vertebrae
            vb = vertebrae_b.get(level)
            if vb is None or not vb.complete:
                continue
            common = [n for n in va.neighbours if n in vb.neighbours and n not in changed]
            if not common:
                continue
            found = []
            # Neighbours are complete vertebrae: their heights are numbers.
            means_a = mean_heights([_heights_of(vertebrae_a[n]) for n in common])
            means_b = mean_heights([_heights_of(vertebrae_b[n]) for n in common])
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
