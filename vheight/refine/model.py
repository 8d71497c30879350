"""Constants, flags and result records of landmark refinement."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vheight.annotation import Annotation
from vheight.calibration import Calibration

__all__ = [
    "DEFAULT_RADIUS_MM",
    "SMOOTHING_MM",
    "FINE_SMOOTHING_MM",
    "BACKGROUND_MM",
    "EDGE_NOISE_FACTOR",
    "MIN_CONTRAST_FRACTION",
    "AMBIGUITY_RATIO",
    "AMBIGUITY_SEPARATION_MM",
    "NOMINAL_SPACING_MM",
    "ENDPLATES",
    "SIDES",
    "CORNERS",
    "MIDDLES",
    "RefineFlag",
    "NOTE_FLAGS",
    "is_doubt",
    "PointMove",
    "RefineResult",
    "Outcome",
]

DEFAULT_RADIUS_MM = 4.0
"""Default search radius around each landmark, millimetres (clicks 3 mm off are
common at the opening zoom: with 1.5 mm per axis, 3 % land beyond 4 mm, 14 %
beyond 3 mm)."""

SMOOTHING_MM = 0.5
"""Standard deviation of the Gaussian smoothing before differentiation, mm."""

FINE_SMOOTHING_MM = 0.25
"""Smoothing of the final localisation, within ``SMOOTHING_MM`` of the edge found, mm.

A thin bright cortex pulls the peak of a heavily smoothed gradient outwards
(its inner, rising edge overlaps); the edge found at ``SMOOTHING_MM`` is
therefore located again on a less smoothed gradient nearby."""

BACKGROUND_MM = 2.0
"""Scale of the slow intensity trend removed before differentiation, mm."""

EDGE_NOISE_FACTOR = 3.0
"""An edge must be this many noise standard deviations of the gradient strong."""

MIN_CONTRAST_FRACTION = 0.02
"""An edge must be a step of at least this fraction of the film's dynamic range."""

AMBIGUITY_RATIO = 0.7
"""A second distinct edge at least this fraction as strong makes a point ambiguous."""

AMBIGUITY_SEPARATION_MM = 1.0
"""Two edges closer than this (mm) along a profile are the same edge."""

NOMINAL_SPACING_MM = 0.15
"""Spacing assumed for an uncalibrated film when no vertebra gives a scale, mm/px."""

ENDPLATES = ("superior", "inferior")
SIDES = ("anterior", "posterior")
CORNERS = tuple(f"{e}_{s}" for e in ENDPLATES for s in SIDES)
MIDDLES = ("superior_middle", "inferior_middle")


class RefineFlag(enum.StrEnum):
    """Why a landmark was not (fully) moved, or what to know about where it went.

    ``doubled`` and ``spur_excluded`` are notes on a point that was moved
    (:data:`NOTE_FLAGS`); every other flag is a doubt.
    """

    WEAK_EDGE = "weak_edge"
    """No edge above the noise threshold within the radius: point left alone."""
    AMBIGUOUS_EDGE = "ambiguous_edge"
    """Two distinct edges of similar strength (double contour): point left alone."""
    WEAK_WALL_EDGE = "weak_wall_edge"
    """Corner: endplate edge found, wall edge not; moved along the endplate normal only
    (a corner alone on its level: moved across the one edge it sits on only)."""
    OUTSIDE_IMAGE = "outside_image"
    """The search region leaves the image: point left alone."""
    EXTRAPOLATED = "extrapolated"
    """A proposed point predicted from levels on one side only (extrapolation):
    place it yourself or check it (on real films such proposals are often
    several millimetres off)."""
    UNSTABLE = "unstable"
    """Refining from its own result kept moving the point (no single position
    the edges support, e.g. between two candidate contours): left alone; or,
    when it moved by no more than 0.25 mm from pass to pass (less than the
    search tells apart), left where the last such pass began."""
    DOUBLED = "doubled"
    """Moved: the endplate shows two contours (a tilted or concave endplate's
    two rims), the point lies midway between them (measurements.md)."""
    SPUR_EXCLUDED = "spur_excluded"
    """Moved: corner where the endplate and wall lines meet; the bone beyond
    (an osteophyte) was left out (measurements.md)."""
    REJECTED_EDGE = "rejected_edge"
    """The edge found lies outside the body's expected outline, so it is not
    the body's: a corner more than 2 mm beyond the line of its wall (a
    superior posterior corner on the pedicle column behind the body; an
    anterior corner on a spur's tip, the soft tissue's edge or a rib's edge in
    front of it); a proposed point snapped to within 2 mm of an annotated
    neighbour's facing point on its side (the neighbour's edge across the
    disc).  Rejected: point left alone
    (a proposed point: where it was aligned)."""
    SPACING_OUT_OF_RANGE = "spacing_out_of_range"
    """The pixel spacing is outside the range the search works with
    (``edges.SEARCHABLE_SPACING_MM``): point left alone."""

    def __str__(self) -> str:
        return self.value


NOTE_FLAGS: frozenset[str] = frozenset({RefineFlag.DOUBLED.value, RefineFlag.SPUR_EXCLUDED.value})
"""Flags that describe how a moved point was placed, not a doubt about it."""


def is_doubt(flag: str | None) -> bool:
    """True when ``flag`` (a :class:`RefineFlag` or its value) is a doubt about
    a point: a flag, and not a note (:data:`NOTE_FLAGS`)."""
    return bool(flag) and flag not in NOTE_FLAGS


@dataclass(frozen=True, slots=True, kw_only=True)
class PointMove:
    """How one landmark was refined.

    Attributes
    ----------
    level, point
        The landmark.
    x_before, y_before, x, y
        Position before and after refinement, pixels (module convention).
    dx_px, dy_px, distance_px
        The move, pixels.
    distance_mm
        The move in millimetres; None on an uncalibrated film.
    moved
        True when the point was moved.
    flag
        None when the edge was found, else a :class:`RefineFlag` value.
    edge_score
        Strength of the edge found divided by the acceptance threshold
        (>= 1 accepted); None when no profile could be sampled.
    reseeded
        True when no edge lay within the radius of the point as placed and
        it was found from where the vertebra's other refined landmarks put
        it instead (the move may then reach twice the radius).
    """

    level: str
    point: str
    x_before: float
    y_before: float
    x: float
    y: float
    distance_mm: float | None
    moved: bool
    flag: str | None = None
    edge_score: float | None = None
    reseeded: bool = False

    @property
    def dx_px(self) -> float:
        return self.x - self.x_before

    @property
    def dy_px(self) -> float:
        return self.y - self.y_before

    @property
    def distance_px(self) -> float:
        return math.hypot(self.dx_px, self.dy_px)

    @property
    def xy(self) -> tuple[float, float]:
        """The refined position ``(x, y)``, pixels."""
        return (self.x, self.y)

    def to_record(self) -> dict[str, Any]:
        """One output record (JSON keys = CSV columns)."""
        return {
            "level": self.level,
            "point": self.point,
            "x_before": self.x_before,
            "y_before": self.y_before,
            "x": self.x,
            "y": self.y,
            "dx_px": self.dx_px,
            "dy_px": self.dy_px,
            "distance_px": self.distance_px,
            "distance_mm": self.distance_mm,
            "moved": self.moved,
            "flag": self.flag,
            "edge_score": self.edge_score,
            "reseeded": self.reseeded,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RefineResult:
    """The refined annotation and one :class:`PointMove` per landmark considered.

    Attributes
    ----------
    annotation
        A new annotation with the refined points (the input is never changed).
    moves
        One record per landmark considered, anatomical order.
    calibration
        The calibration used (the annotation's own, else the one given).
    spacing_mm
        ``(row, col)`` spacing used for the search, mm/px (nominal when
        uncalibrated).
    radius_mm
        The search radius, mm.
    warnings
        Human-readable notes (nominal spacing, image size mismatch...).
    """

    annotation: Annotation
    moves: tuple[PointMove, ...]
    calibration: Calibration
    spacing_mm: tuple[float, float]
    radius_mm: float
    warnings: tuple[str, ...] = ()

    def records(self) -> list[dict[str, Any]]:
        """One dict per move (``pandas.DataFrame(result.records())`` works)."""
        return [m.to_record() for m in self.moves]

    def move(self, level: str, point: str) -> PointMove:
        """The record of one landmark; KeyError when it was not considered."""
        for m in self.moves:
            if m.level == level and m.point == point:
                return m
        raise KeyError(f"{level} {point} was not refined")

    @property
    def moved_count(self) -> int:
        return sum(m.moved for m in self.moves)

    @property
    def flagged_count(self) -> int:
        """Points with any flag (a doubt or a note such as ``doubled``)."""
        return sum(m.flag is not None for m in self.moves)

    @property
    def doubtful_count(self) -> int:
        """Points flagged with a doubt (not only a note, :data:`NOTE_FLAGS`)."""
        return sum(is_doubt(m.flag) for m in self.moves)


@dataclass(slots=True)
class Outcome:
    position: np.ndarray  # mm
    moved: bool
    flag: RefineFlag | None
    score: float | None
    reseeded: bool = False
    doubled: bool = False  # placed midway on a doubled contour
    spur: bool = False  # a spur beyond the wall line was left out
