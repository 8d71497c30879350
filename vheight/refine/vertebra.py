"""Refinement of one vertebra: corners, middle points, second chance, corner check
(see the package docstring, "Per point")."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from vheight.annotation import POINT_NAMES
from vheight.refine.directions import (
    centre_of,
    endplate_tangent,
    intersect,
    other_endplate,
    other_side,
    outward_of,
    perp,
    unit,
    wall_tangent,
)
from vheight.refine.edges import (
    Edge,
    Field,
    PreparedImage,
    best_score,
    edge_line,
    edge_on_average,
    edge_threshold,
    edges_on_strip,
    fit_offsets,
    local_maxima,
    majority_flag,
    make_field,
    profile_offsets,
)
from vheight.refine.model import (
    AMBIGUITY_RATIO,
    AMBIGUITY_SEPARATION_MM,
    BACKGROUND_MM,
    CORNERS,
    MIDDLES,
    SIDES,
    Outcome,
    RefineFlag,
    is_doubt,
)

__all__ = ["refine_vertebra"]

# Profile layout for corners: offsets inside the corner along the endplate
# (or the wall) where the edge is sampled, mm.
_STRIP_START_MM = 1.0
_STRIP_END_MM = 6.0
_STRIP_COUNT = 11
_MIDDLE_HALF_WIDTH_MM = 0.5
_MIDDLE_COUNT = 5
# Depths inside the endplate edge (mm) where the end of the cortex is sought
# when the wall next to a corner shows no edge.
_BAND_DEPTHS_MM = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_BAND_AVERAGE_DEPTH_MM = 0.5
# The walls may lean at most this much from the endplate normal to serve as
# the direction a middle point is placed along, degrees.
_MAX_AXIS_TILT_DEG = 20.0
# Offsets inside a corner along the endplate where its final position across
# the endplate is checked, mm, and the largest correction made there, mm.
_NEAR_CORNER_MM = (0.75, 1.0, 1.25)
_NEAR_CORNER_MAX_MM = 0.5
FIXED_POINT_MM = 0.08
"""A refinement pass that moves no point further than this (mm) is final."""

KEEP_MM = 0.25
"""A vertebra whose first pass moves no point further than this (mm) is kept as
placed.  Below it, the edge search cannot tell positions apart: one profile
more or less accepted, or a threshold a percent higher (the noise of a patch
a few pixels larger), moves an endplate line by up to 0.2 mm."""

MAX_PASSES = 5
"""Passes of a vertebra's refinement before a still-moving point is ``unstable``."""

MAX_LOOKS = 2
"""Refines of a vertebra left with unsettled points from where it would be
returned (:func:`refine_vertebra`), until one keeps it."""

# A cortex ending this far (mm) beyond the wall line is a spur, not the corner;
# the wall line is then taken from profiles this far from the corner, mm.
_SPUR_MM = 1.0
_SPUR_WALL_MM = (3.0, 12.0)


def _reach_mm(radius_mm: float) -> float:
    """How far from a landmark its search reads the film, mm: the strips, the
    profiles on either side, and a millimetre for the corner check."""
    return _STRIP_END_MM + 2 * radius_mm + 1.0


def _noise_pad_mm(radius_mm: float) -> float:
    """The noise setting a pass's edge threshold is sampled this far (mm)
    around the points the pass starts from: what the search reads, and the
    reach of the background removed."""
    return _reach_mm(radius_mm) + 1.5 * BACKGROUND_MM


# A corner further than this (mm) beyond the line of its wall
# (:func:`_beyond_wall`) lies on something outside the body.  On the
# benchmark's films no corner found on the body lies more than 1.5 mm behind
# the posterior wall's line or 1.6 mm in front of the anterior wall's (the
# wall's waist, a wedge, a spur's corner, a doubled endplate, the noise of the
# other corners); a band followed onto a pedicle lies 2.5 mm and more behind,
# a spur's tip, the soft tissue's edge or a rib's edge taken for an anterior
# corner 2.4 mm and more in front.
_BEYOND_WALL_MM = 2.0

# A corner search is repeated from the corner found when it moved further, mm.
_REPEAT_MM = 0.5

# -- refinement of one vertebra -------------------------------------------------------------


def _fit_strip(
    fld: Field,
    origin: np.ndarray,
    inward: np.ndarray,
    across: np.ndarray,
    t: np.ndarray,
    *,
    endplate: bool,
    span_mm: tuple[float, float] = (_STRIP_START_MM, _STRIP_END_MM),
) -> tuple[tuple[float, float, float] | None, list[Edge]]:
    """Edge line across ``across`` on profiles 1 to 6 mm (``span_mm``) from
    ``origin`` along ``inward``.

    Only the stretch next to the corner is used: further along, the wall
    meets the pedicle and the endplate may be concave.
    """
    s = np.linspace(span_mm[0], span_mm[1], _STRIP_COUNT)
    bases = origin[None, :] + s[:, None] * inward
    edges = edges_on_strip(fld, bases, across, t, endplate=endplate)
    return fit_offsets(s, edges), edges


def _mostly_doubled(edges: list[Edge]) -> bool:
    """True when most accepted edges of a strip lay midway on a doubled contour."""
    accepted = [e for e in edges if e.flag is None]
    return bool(accepted) and 2 * sum(e.doubled for e in accepted) > len(accepted)


def _wall_corner(
    fld: Field,
    current: np.ndarray,
    plate_point: np.ndarray,
    plate_dir: np.ndarray,
    wall: np.ndarray,
    wall_normal: np.ndarray,
    t: np.ndarray,
    *,
    past_spur: bool = False,
) -> tuple[np.ndarray, float] | None:
    """Intersection of the endplate line with the wall's own edge line, and
    the wall's edge score.

    The line is fitted through the edges of profiles across the wall 1 to 6
    mm from the corner; with ``past_spur``, it is the clearest line over
    profiles :data:`_SPUR_WALL_MM` from the corner, past a spur's base,
    taken together (:func:`edge_line`).  Fitted through the edges each
    profile found there, the line failed where the check needs it: the wall
    of a faint body falls barely above the noise on each profile, and the
    edge of the soft tissue in front of it nearly as much, so too few
    profiles accepted an edge (the spur went unchecked, its tip taken for
    the corner) or those accepted disagreed (a line millimetres inside the
    wall, a normal corner taken for a spur's).
    """
    if past_spur:
        s = np.linspace(*_SPUR_WALL_MM, _STRIP_COUNT)
        wall_fit = edge_line(fld, current, -wall, wall_normal, s, t)
    else:
        wall_fit, _ = _fit_strip(fld, current, -wall, wall_normal, t, endplate=False)
    if wall_fit is None:
        return None
    c, d, wall_score = wall_fit
    wall_point = current + c * wall_normal
    corner = intersect(plate_point, plate_dir, wall_point, -wall + d * wall_normal)
    return None if corner is None else (corner, wall_score)


def _corner_once(
    fld: Field,
    current: np.ndarray,
    tangent: np.ndarray,
    normal: np.ndarray,
    wall: np.ndarray,
    wall_normal: np.ndarray,
    t: np.ndarray,
    *,
    spurs: bool,
) -> tuple[np.ndarray, float, bool, bool] | Outcome:
    """One corner search from ``current`` (see :func:`_refine_corner`):
    ``(corner, score, doubled, spur)``, or the Outcome of a search that found
    no corner (the endplate edge alone, or nothing)."""
    plate, plate_edges = _fit_strip(fld, current, -tangent, normal, t, endplate=True)
    if plate is None:
        return Outcome(current, False, majority_flag(plate_edges), best_score(plate_edges))
    a, b, plate_score = plate
    doubled = _mostly_doubled(plate_edges)
    plate_dir = -tangent + b * normal
    plate_point = current + a * normal
    # The wall edge, searched along the endplate: where the endplate cortex
    # ends, unless that lies beyond the wall's line (a spur).  Failing that,
    # the line of the wall's own edge.
    end = _band_end(fld, plate_point, plate_dir, normal, t, innermost=spurs)
    if end is not None:
        corner, score = end, plate_score
    else:
        near = _wall_corner(fld, current, plate_point, plate_dir, wall, wall_normal, t)
        if near is None:
            return Outcome(
                plate_point, True, RefineFlag.WEAK_WALL_EDGE, plate_score, doubled=doubled
            )
        corner, score = near[0], min(plate_score, near[1])
    if spurs:
        far = _wall_corner(
            fld, current, plate_point, plate_dir, wall, wall_normal, t, past_spur=True
        )
        if far is not None and float(np.dot(corner - far[0], tangent)) > _SPUR_MM:
            return far[0], min(plate_score, far[1]), doubled, True
    return corner, score, doubled, False


def _refine_corner(
    fld: Field,
    start: np.ndarray,
    tangent: np.ndarray,
    normal: np.ndarray,
    wall: np.ndarray,
    wall_normal: np.ndarray,
    radius_mm: float,
    t: np.ndarray,
    *,
    spurs: bool = False,
) -> Outcome:
    """Corner: where the endplate edge (line or parabola, :func:`fit_offsets`)
    meets the wall: the end of the endplate cortex (:func:`_band_end`), else
    the intersection with the wall's edge line.

    A spur (``spurs``: an anterior corner, where osteophytes grow; behind,
    the pedicle and ribs make the wall line unreliable): when the cortex
    ends more than :data:`_SPUR_MM` beyond the line of the wall (profiles
    :data:`_SPUR_WALL_MM` from the corner, past the spur's base), the bone
    beyond the wall is an osteophyte, and the corner is where the endplate
    and wall lines meet (measurements.md).

    ``tangent`` points along the endplate towards the corner's side (out of
    the body), ``normal`` away from the body across the endplate; ``wall``
    points along the wall towards this endplate and ``wall_normal`` out of
    the body across the wall.
    """
    current = start.copy()
    score: float | None = None
    doubled = spur = False
    for attempt in range(2):
        if attempt and float(np.hypot(*(current - start))) <= _REPEAT_MM:
            break  # the strip already lay where the corner is
        found = _corner_once(fld, current, tangent, normal, wall, wall_normal, t, spurs=spurs)
        if isinstance(found, Outcome):
            if attempt:
                break  # the repeat found less than the first search: keep the first
            return found
        current, score, doubled, spur = found
    # Bounded: the corner may move at most the radius across each edge.
    move = current - start
    limit = radius_mm + 0.5
    if abs(float(np.dot(move, normal))) > limit or abs(float(np.dot(move, wall_normal))) > limit:
        return Outcome(start, False, RefineFlag.WEAK_EDGE, score)
    return Outcome(current, True, None, score, doubled=doubled, spur=spur)


def _snap_next_to_corner(
    fld: Field, corner: np.ndarray, plate_dir: np.ndarray, normal: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """The corner moved across the endplate onto the edge right next to it.

    ``plate_dir`` points along the endplate into the body, ``normal`` out of
    it across the endplate.  The endplate line of :func:`_refine_corner`
    comes from profiles 1 to 6 mm inside the corner; an endplate that bends
    there (biconcave, irregular) makes the line miss its end by a fraction of
    a millimetre.  Profiles :data:`_NEAR_CORNER_MM` inside the corner,
    averaged, give the edge there; the corner moves across the endplate by
    that offset when it is accepted and small (a correction of at most
    :data:`_NEAR_CORNER_MAX_MM`, never a new search).
    """
    inward = unit(plate_dir)
    if inward is None:
        return corner
    s = np.array(_NEAR_CORNER_MM)
    bases = corner[None, :] + s[:, None] * inward[None, :]
    edge = edge_on_average(fld, bases, normal, t, endplate=True)
    if edge.flag is not None or edge.offset is None or abs(edge.offset) > _NEAR_CORNER_MAX_MM:
        return corner
    return corner + edge.offset * normal


def _inner_offsets(fld: Field, bases: np.ndarray, outward: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The offsets ``t`` cut :data:`AMBIGUITY_SEPARATION_MM` past the innermost
    strong fall of the profiles through ``bases`` along ``outward`` (averaged):
    a local maximum above the threshold and at least :data:`AMBIGUITY_RATIO`
    as strong as the strongest, that is one of the falls that make the search
    ambiguous.  ``t`` itself when there is none, or no fall beyond it."""
    pts = bases[:, None, :] + t[None, :, None] * outward[None, None, :]
    fall = fld.falls(pts, outward)[0].mean(axis=0)
    if not np.all(np.isfinite(fall)):
        return t
    peaks = local_maxima(fall[None, :])[0]
    strong = np.nonzero(peaks >= max(fld.threshold, AMBIGUITY_RATIO * fall.max()))[0]
    if strong.size < 2:
        return t
    return t[t <= t[strong[0]] + AMBIGUITY_SEPARATION_MM]


def _band_end(
    fld: Field,
    plate_point: np.ndarray,
    plate_dir: np.ndarray,
    normal: np.ndarray,
    t: np.ndarray,
    *,
    innermost: bool = False,
) -> np.ndarray | None:
    """Where the endplate's bright cortex ends along the endplate, or None.

    The wall next to a corner often shows no edge of its own (a pedicle
    against the posterior wall, a faint anterior wall), but the endplate's
    cortex ends there.  Profiles along the endplate edge line, inside it
    (within the cortex) at each of :data:`_BAND_DEPTHS_MM`, are searched
    outward for the fall at the end of the cortex; a robust line through
    those ends, against depth, is followed to depth 0 (the edge line), so a
    wall that leans or is waisted next to the corner is followed to the
    corner.  When too few depths agree, the profiles up to
    :data:`_BAND_AVERAGE_DEPTH_MM` are averaged instead.  Returns that point
    on the edge line.

    ``innermost`` (an anterior corner): of two falls of a size along the
    band, the inner one is taken (:func:`_inner_offsets`), not neither.  In
    front of the anterior wall lies soft tissue (the anterior longitudinal
    ligament, prevertebral muscle) denser than the fat beyond it: its edge,
    a few millimetres in front of the wall and parallel to it, is a second
    fall along the band where the bone is faint (an osteoporotic body).
    The band's cortex ends at the wall, the first fall from inside; without
    this choice the search found the two ambiguous, fell back on the
    wall's own edge line, and that followed the soft tissue's edge (the
    wall's fall there is weaker still): a corner 3 mm in front of the body
    on an edge barely above the noise.  An osteophyte gives no such pair
    (the band runs on into the spur to its tip, one fall), and a spur's
    corner is settled on the wall line anyway (:func:`_corner_once`).
    """
    outward = unit(-plate_dir)
    if outward is None:
        return None
    depths = np.array(_BAND_DEPTHS_MM)
    bases = plate_point[None, :] - depths[:, None] * normal[None, :]
    if innermost:
        t = _inner_offsets(fld, bases, outward, t)
    ends = edges_on_strip(fld, bases, outward, t, endplate=False)
    fit = fit_offsets(depths, ends, curved=False)
    if fit is not None:
        return plate_point + fit[0] * outward
    shallow = bases[depths <= _BAND_AVERAGE_DEPTH_MM]
    edge = edge_on_average(fld, shallow, outward, t, endplate=False)
    if edge.flag is not None or edge.offset is None:
        return None
    return plate_point + edge.offset * outward


def _refine_middle(
    fld: Field,
    start: np.ndarray,
    anchor: np.ndarray,
    tangent: np.ndarray,
    normal: np.ndarray,
    axis: np.ndarray,
    t: np.ndarray,
) -> Outcome:
    """Middle point: on the line through ``anchor`` (midpoint of the corners)
    along ``axis`` (the vertebra's axis, outward; the endplate ``normal`` when
    the walls give none), at the start's offset across the endplate, snapped
    along that line."""
    depth = float(np.dot(start - anchor, normal)) / float(np.dot(axis, normal))
    base = anchor + depth * axis
    u = np.linspace(-_MIDDLE_HALF_WIDTH_MM, _MIDDLE_HALF_WIDTH_MM, _MIDDLE_COUNT)
    bases = base[None, :] + u[:, None] * tangent
    edge = edge_on_average(fld, bases, axis, t, endplate=True)
    if edge.flag is not None or edge.offset is None:
        return Outcome(start, False, edge.flag, edge.score)
    return Outcome(base + edge.offset * axis, True, None, edge.score, doubled=edge.doubled)


def _body_axis(geometry: Mapping[str, np.ndarray], normal: np.ndarray) -> np.ndarray:
    """The vertebra's axis, oriented like ``normal``: the mean direction of
    its anterior and posterior walls (corner to corner), or ``normal`` when a
    corner is missing or the walls lean more than :data:`_MAX_AXIS_TILT_DEG`
    from the endplate normal (implausible landmarks)."""
    walls = []
    for side in SIDES:
        top = geometry.get(f"superior_{side}")
        bottom = geometry.get(f"inferior_{side}")
        if top is None or bottom is None:
            return normal
        wall = unit(top - bottom)
        if wall is None:
            return normal
        walls.append(wall if float(np.dot(wall, normal)) > 0 else -wall)
    axis = unit(walls[0] + walls[1])
    if axis is None or float(np.dot(axis, normal)) < math.cos(math.radians(_MAX_AXIS_TILT_DEG)):
        return normal
    return axis


def _refine_lone(fld: Field, start: np.ndarray, t: np.ndarray) -> Outcome:
    """A point with no neighbours to give a direction: search along the
    dominant edge orientation around it, bright side taken as inside."""
    r = float(t[-1])
    grid = np.linspace(-r, r, 9)
    gxx, gyy = np.meshgrid(grid, grid)
    pts = start[None, None, :] + np.stack([gxx, gyy], axis=-1)
    v = fld.sample(pts)
    gx, gy = v[..., 0], v[..., 1]
    ok = np.isfinite(gx) & np.isfinite(gy)
    if not ok.any():
        return Outcome(start, False, RefineFlag.OUTSIDE_IMAGE, None)
    jxx, jyy, jxy = (float(np.sum(v[ok])) for v in (gx * gx, gy * gy, gx * gy))
    theta = 0.5 * math.atan2(2 * jxy, jxx - jyy)
    direction = np.array([math.cos(theta), math.sin(theta)])
    pts = start[None, :] + t[:, None] * direction[None, :]
    deriv = fld.derivative(pts, direction)
    if not np.all(np.isfinite(deriv)):
        return Outcome(start, False, RefineFlag.OUTSIDE_IMAGE, None)
    # Bright inside: the outward direction is the one along which intensity falls.
    outward = -direction if deriv[np.argmax(np.abs(deriv))] > 0 else direction
    # Five parallel profiles, 0.5 mm apart, averaged (as for middle points).
    u = np.linspace(-_MIDDLE_HALF_WIDTH_MM, _MIDDLE_HALF_WIDTH_MM, _MIDDLE_COUNT)
    bases = start[None, :] + u[:, None] * perp(outward)[None, :]
    edge = edge_on_average(fld, bases, outward, t, endplate=False)
    if edge.flag is not None or edge.offset is None:
        return Outcome(start, False, edge.flag, edge.score)
    return Outcome(start + edge.offset * outward, True, None, edge.score)


def _lone_corner(fld: Field, start: np.ndarray, t: np.ndarray) -> Outcome:
    """A corner with no neighbours to give its endplate: moved across the one
    edge it sits on (:func:`_refine_lone`), which says nothing of where
    along that edge the corner lies; so it is flagged ``weak_wall_edge``
    (from 20 clicks around it, it ends on the edge but wherever along it
    each click was)."""
    outcome = _refine_lone(fld, start, t)
    if outcome.moved and outcome.flag is None:
        outcome.flag = RefineFlag.WEAK_WALL_EDGE
    return outcome


def _corner_outcome(
    fld: Field,
    geometry: Mapping[str, np.ndarray],
    name: str,
    start: np.ndarray,
    centre: np.ndarray | None,
    radius_mm: float,
    t: np.ndarray,
) -> Outcome:
    """Refine corner ``name`` from ``start``, directions taken from ``geometry``."""
    endplate, side = name.split("_")
    tangent = endplate_tangent(geometry, endplate, side)
    normal = None if tangent is None else outward_of(perp(tangent), start, centre, fld)
    if tangent is None or normal is None:
        return _lone_corner(fld, start, t)
    if centre is not None:
        # The tangent points out of the body along the endplate.
        flipped = outward_of(tangent, start, centre, None)
        tangent = tangent if flipped is None else flipped
    wall = wall_tangent(geometry, endplate, side)
    if wall is None:
        wall = normal  # the wall is roughly perpendicular to the endplate
    wall = wall if float(np.dot(wall, normal)) > 0 else -wall
    wall_normal = perp(wall)
    wall_normal = wall_normal if float(np.dot(wall_normal, tangent)) > 0 else -wall_normal
    return _refine_corner(
        fld, start, tangent, normal, wall, wall_normal, radius_mm, t, spurs=side == "anterior"
    )


def _middle_outcome(
    fld: Field,
    geometry: Mapping[str, np.ndarray],
    name: str,
    start: np.ndarray,
    centre: np.ndarray | None,
    t: np.ndarray,
    placed: Mapping[str, np.ndarray],
) -> tuple[Outcome, np.ndarray | None]:
    """Refine middle point ``name`` from ``start``; also returns the anchor used
    (midpoint of the corners of its endplate in ``geometry``, when known).
    Without both corners in ``geometry``, the direction comes from the
    landmarks as ``placed`` and the point keeps its place along the endplate."""
    endplate = name.split("_")[0]
    a = geometry.get(f"{endplate}_anterior")
    p = geometry.get(f"{endplate}_posterior")
    anchor = None
    tangent = None
    if a is not None and p is not None:
        tangent = unit(a - p)
        if tangent is not None:
            anchor = 0.5 * (a + p)
    if tangent is None:
        tangent = endplate_tangent(placed, endplate, "anterior")
    if tangent is None:
        return _refine_lone(fld, start, t), None
    normal = outward_of(perp(tangent), start, centre, fld)
    if normal is None:
        return _refine_lone(fld, start, t), None
    if anchor is None:
        return _refine_middle(fld, start, start, tangent, normal, normal, t), None
    axis = _body_axis(geometry, normal)
    return _refine_middle(fld, start, anchor, tangent, normal, axis, t), anchor


def _plate_line(known: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Line through the middle point and the opposite corner of ``name``'s endplate."""
    endplate, side = name.split("_")
    middle = known.get(f"{endplate}_middle")
    opposite = known.get(f"{endplate}_{other_side(side)}")
    if middle is None or opposite is None:
        return None
    direction = unit(middle - opposite)
    return None if direction is None else (opposite, direction)


def _wall_line(known: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Line through the same-side corner of the other endplate, perpendicular to it."""
    endplate, side = name.split("_")
    other = other_endplate(endplate)
    corner = known.get(f"{other}_{side}")
    opposite = known.get(f"{other}_{other_side(side)}")
    if corner is None or opposite is None:
        return None
    chord = unit(corner - opposite)
    return None if chord is None else (corner, perp(chord))


def _corner_seed(
    known: Mapping[str, np.ndarray], name: str, placed: np.ndarray
) -> np.ndarray | None:
    """Where the other landmarks of the vertebra put corner ``name``.

    At the intersection of :func:`_plate_line` and :func:`_wall_line`; when
    only one of them is known, the ``placed`` position moved onto it.
    """
    plate = _plate_line(known, name)
    wall = _wall_line(known, name)
    if plate is not None and wall is not None:
        return intersect(plate[0], plate[1], wall[0], wall[1])
    line = plate or wall
    if line is None:
        return None
    return line[0] + float(np.dot(placed - line[0], line[1])) * line[1]


_RESEEDABLE = (RefineFlag.WEAK_EDGE, RefineFlag.AMBIGUOUS_EDGE, RefineFlag.WEAK_WALL_EDGE)


@dataclass(slots=True)
class _Vertebra:
    """The state of one vertebra's refinement, shared by its steps.

    ``pts``: every landmark as placed (mm); ``refined``: the current
    position of every landmark; ``out``: the outcome of each point refined.
    """

    fld: Field
    pts: dict[str, np.ndarray]
    centre: np.ndarray | None
    radius_mm: float
    t: np.ndarray
    corners: list[str]
    middles: list[str]
    refined: dict[str, np.ndarray]
    out: dict[str, Outcome] = field(default_factory=dict)

    @property
    def limit(self) -> float:
        """The furthest a reseeded point may end from where it was placed, mm."""
        return 2 * self.radius_mm

    def anchors(self) -> dict[str, np.ndarray]:
        """Refined points that may anchor a middle point.

        A corner not found at all gives no "midway": it is left out, so the
        middle point keeps its own place along the endplate.
        """
        return {
            k: v
            for k, v in self.refined.items()
            if not (k in CORNERS and k in self.out and not self.out[k].moved)
        }

    def known(self, exclude: str) -> dict[str, np.ndarray]:
        """Points other than ``exclude`` that are as placed or found without a flag."""
        return {
            k: v
            for k, v in self.refined.items()
            if k != exclude and (k not in self.out or self.out[k].flag is None)
        }

    def set(self, name: str, outcome: Outcome) -> None:
        self.out[name] = outcome
        self.refined[name] = outcome.position


def _first_corners(v: _Vertebra) -> None:
    """Every corner from where it was placed."""
    for name in v.corners:
        v.set(name, _corner_outcome(v.fld, v.pts, name, v.pts[name], v.centre, v.radius_mm, v.t))


def _first_middles(v: _Vertebra) -> None:
    """Every middle point, anchored on the corners found so far."""
    for name in v.middles:
        outcome, _ = _middle_outcome(v.fld, v.anchors(), name, v.pts[name], v.centre, v.t, v.pts)
        v.set(name, outcome)


def _reseed_corner(v: _Vertebra, name: str) -> None:
    """Search a corner whose own search found no edge again, from where the
    vertebra's other points put it (:func:`_corner_seed`)."""
    current = v.out[name]
    if current.flag is RefineFlag.WEAK_WALL_EDGE:
        # The endplate was found: only slide along it to the wall
        # predicted by the other endplate.
        base = current.position
        wall = _wall_line(v.known(name), name)
        endplate, side = name.split("_")
        opposite = v.known(name).get(f"{endplate}_{other_side(side)}")
        along = None if opposite is None else unit(base - opposite)
        if wall is None or along is None:
            return
        seed = intersect(base, along, wall[0], wall[1])
        searched_from = base
    else:
        seed = _corner_seed(v.known(name), name, v.pts[name])
        searched_from = v.pts[name]
    # Only where the first search did not already look.
    if (
        seed is None
        or float(np.hypot(*(seed - searched_from))) < 0.5 * v.radius_mm
        or float(np.hypot(*(seed - v.pts[name]))) > v.limit
    ):
        return
    again = _corner_outcome(v.fld, v.known(name), name, seed, v.centre, v.radius_mm, v.t)
    better = again.flag is None or (again.flag is RefineFlag.WEAK_WALL_EDGE and not current.moved)
    if better and float(np.hypot(*(again.position - v.pts[name]))) <= v.limit:
        again.reseeded = True
        v.set(name, again)


def _reseed_corners(v: _Vertebra) -> None:
    """Second chance, twice over, for every corner without a clear edge."""
    for _ in range(2):
        for name in v.corners:
            if v.out[name].flag in _RESEEDABLE:
                _reseed_corner(v, name)


def _beyond_wall(v: _Vertebra, name: str) -> float | None:
    """How far (mm) corner ``name`` lies beyond the line of its wall: the line
    through the same-side corner of the other endplate, perpendicular to the
    inferior endplate (its chord), out of the body on that side (behind for a
    posterior corner, in front for an anterior one).  A wedge or crush tilts
    the superior endplate, not the walls against the inferior one.  None
    unless the other corners involved were refined in this pass and not
    flagged (a click may lie 2 mm off: the line through one says nothing),
    or are not being refined at all (where the reader put them: a snap of
    one point)."""
    endplate, side = name.split("_")
    reference = f"{other_endplate(endplate)}_{side}"
    near, far = f"inferior_{side}", f"inferior_{other_side(side)}"
    involved = {reference, near, far} - {name}
    if any(n not in v.refined or (n in v.out and v.out[n].flag is not None) for n in involved):
        return None
    out_of_body = unit(v.refined[near] - v.refined[far])
    if out_of_body is None:
        return None
    return float(np.dot(v.refined[name] - v.refined[reference], out_of_body))


def _reject_beyond_walls(v: _Vertebra) -> None:
    """A corner found beyond the line of its wall (:func:`_beyond_wall`) is on
    something outside the body; it is put back where it was placed and
    flagged ``rejected_edge``.

    More than :data:`_BEYOND_WALL_MM` behind (the superior posterior corner:
    the inferior corners are clear of the pedicles): the endplate's band
    followed onto a pedicle column rising flush with the endplate.  As far
    in front (either anterior corner, against the other): a spur's tip, the
    edge of the soft tissue in front of the body, or a rib's edge crossing
    the corner, taken for the corner.
    """
    for name in ("superior_posterior", "superior_anterior", "inferior_anterior"):
        if name not in v.corners or v.out[name].flag is not None:
            continue
        beyond = _beyond_wall(v, name)
        if beyond is not None and beyond > _BEYOND_WALL_MM:
            v.set(name, Outcome(v.pts[name], False, RefineFlag.REJECTED_EDGE, v.out[name].score))


def _check_corners(v: _Vertebra) -> None:
    """Each corner found is checked across its endplate once more, next to it
    along the chord of the refined corners (steadier than the chord of the
    corners as placed): across, along, across."""
    for name in v.corners:
        endplate, side = name.split("_")
        other = f"{endplate}_{other_side(side)}"
        if v.out[name].flag is not None or other not in v.refined:
            continue
        if other in v.out and v.out[other].flag is not None:
            continue
        tangent = unit(v.refined[name] - v.refined[other])
        if tangent is None:
            continue
        normal = outward_of(perp(tangent), v.refined[name], v.centre, v.fld)
        if normal is None:
            continue
        position = _snap_next_to_corner(v.fld, v.refined[name], -tangent, normal, v.t)
        # Not along onto the end of the cortex when that is a spur's.
        end = None if v.out[name].spur else _band_end(v.fld, position, -tangent, normal, v.t)
        if end is not None and float(np.hypot(*(end - position))) <= _NEAR_CORNER_MAX_MM:
            position = _snap_next_to_corner(v.fld, end, -tangent, normal, v.t)
        v.out[name].position = position
        v.refined[name] = position


def _final_middles(v: _Vertebra) -> None:
    """The middle points re-anchored on the final corners (a second chance
    from the anchor when their own search found nothing)."""
    for name in v.middles:
        first = v.out[name]
        outcome, anchor = _middle_outcome(
            v.fld, v.anchors(), name, v.pts[name], v.centre, v.t, v.pts
        )
        if outcome.flag in _RESEEDABLE and anchor is not None:
            again, _ = _middle_outcome(v.fld, v.anchors(), name, anchor, v.centre, v.t, v.pts)
            if again.flag is None and float(np.hypot(*(again.position - v.pts[name]))) <= v.limit:
                again.reseeded = True
                outcome = again
        v.set(name, outcome if outcome.flag is None or first.flag is not None else first)


def _one_pass(
    fld: Field,
    image: PreparedImage,
    pts: dict[str, np.ndarray],
    names: list[str],
    radius_mm: float,
) -> dict[str, Outcome]:
    """One refinement of the points ``names`` from ``pts`` (mm): corners, middle
    points, second chance, corner check, middle points again.

    The edge threshold is the noise around ``pts`` (:func:`edge_threshold`,
    :func:`_noise_pad_mm`), whatever patch ``fld`` covers: a pass is a
    function of its start and the image alone, so the pass that verified a
    fixed point is repeated exactly by a second refine from it.
    """
    at = np.array(list(pts.values()))
    fld = replace(fld, threshold=edge_threshold(fld, at, _noise_pad_mm(radius_mm)))
    v = _Vertebra(
        fld=fld,
        pts=pts,
        centre=centre_of(pts) if len(pts) >= 3 else None,
        radius_mm=radius_mm,
        t=profile_offsets(image, radius_mm),
        corners=[n for n in names if n in CORNERS],
        middles=[n for n in names if n in MIDDLES],
        refined=dict(pts),
    )
    _first_corners(v)
    _first_middles(v)
    _reseed_corners(v)
    _reject_beyond_walls(v)
    _check_corners(v)
    _final_middles(v)
    return v.out


def _moved_beyond(
    out: Mapping[str, Outcome], pts: Mapping[str, np.ndarray], tolerance_mm: float
) -> set[str]:
    """Points of ``out`` further than ``tolerance_mm`` from ``pts``."""
    return {n for n, o in out.items() if float(np.hypot(*(o.position - pts[n]))) > tolerance_mm}


def _converge(
    fld: Field,
    image: PreparedImage,
    pts: dict[str, np.ndarray],
    names: list[str],
    radius_mm: float,
) -> tuple[dict[str, Outcome], dict[str, RefineFlag]]:
    """Passes from ``pts`` until one moves no point more than :data:`FIXED_POINT_MM`
    (at most :data:`MAX_PASSES`); the outcomes, and the points not settled
    with the flag each is to be left with.

    The result is the position a pass started from and did not leave: a
    fixed point.  When the first pass moves no point further than
    :data:`KEEP_MM`, the points already lie where the edges put them, to
    the precision of the search, and every point keeps exactly its place:
    refining a refined vertebra moves nothing at all.

    Not settled: a point still moving (``unstable``), and a point a pass
    moved without a doubt that a later pass, from where it was moved, finds
    with one (a weak wall, an ambiguous or no edge) and no later pass finds
    without: the edge it was moved onto is not one the search finds from
    there, so nothing supports where it ended (before, it kept the earlier
    pass's position, millimetres off, unflagged, or flagged ``weak_wall_edge``
    with its place along the endplate taken from the earlier pass).

    Passes that still move points, but none further than :data:`KEEP_MM`
    from where one began (points wandering or cycling by less than the
    search can tell apart), leave that start as the result when the passes
    run out, the points still moving flagged ``unstable`` but kept there: a
    second refine keeps that vertebra.  Put back where they were placed, the
    others refined around them, the vertebra was no fixed point: a second
    refine from the clicks of the benchmark's films moved a point more than
    0.1 mm after 12 of 240 refines (up to 3.4 mm).

    A point found on an edge outside the body (``rejected_edge``) goes back
    where it was placed for the passes that follow, not to where the pass
    began: left on that edge, the others were refined around it.
    """
    out = _one_pass(fld, image, pts, names, radius_mm)
    if not _moved_beyond(out, pts, KEEP_MM):
        for n in names:
            out[n].position = pts[n].copy()
        return out, {}
    moving = set(names)
    doubted: dict[str, RefineFlag] = {}
    kept: dict[str, Outcome] | None = None
    for _ in range(MAX_PASSES - 1):
        current = {**pts, **{n: out[n].position for n in names}}
        again = _one_pass(fld, image, current, names, radius_mm)
        for n in names:
            if again[n].flag is RefineFlag.REJECTED_EDGE:
                # The edge it was moved onto is not the body's: back to where
                # these passes began (where it was placed, or where an earlier
                # refine of the vertebra left it), for the passes that follow
                # too (left where the pass began, the others were refined
                # around it).
                again[n].position = pts[n].copy()
        moving = _moved_beyond(again, current, FIXED_POINT_MM)
        for n in names:
            flag = again[n].flag
            if is_doubt(flag) and out[n].moved and not is_doubt(out[n].flag):
                doubted[n] = flag
            elif not is_doubt(flag) and again[n].moved:
                doubted.pop(n, None)
        if moving and not doubted and not _moved_beyond(again, current, KEEP_MM):
            kept = {
                n: replace(
                    again[n],
                    position=current[n].copy(),
                    # where ``current`` came from (``pts`` is where these
                    # passes began, not always where the point was placed)
                    moved=out[n].moved or bool(np.any(current[n] != pts[n])),
                    flag=RefineFlag.UNSTABLE if n in moving else again[n].flag,
                )
                for n in names
            }
        if not moving:
            # ``current`` is a fixed point (the pass from it moved nothing):
            # it is the result, so that refining it again leaves it there.
            break
        for n in names:
            if again[n].flag is RefineFlag.REJECTED_EDGE:
                out[n] = again[n]
            elif again[n].moved:
                again[n].reseeded = again[n].reseeded or out[n].reseeded
                out[n] = again[n]
    if moving and kept is not None:
        # Still moving, but a pass from ``kept`` moved nothing further than
        # KEEP_MM: a second refine keeps it.  It is the result, the points
        # that pass still moved flagged ``unstable``.
        return kept, {}
    return out, {n: RefineFlag.UNSTABLE for n in moving} | doubted


def refine_vertebra(
    image: PreparedImage,
    pts_px: Mapping[str, tuple[float, float]],
    names: Iterable[str],
    radius_mm: float,
) -> dict[str, Outcome]:
    """Refine the points ``names`` of one vertebra given all its points.

    One pass (:func:`_one_pass`): every corner from where it was placed, then
    every middle point; a point whose own search found no edge (its edge may
    lie beyond the radius) is searched again from where the refined points
    of its vertebra put it (:func:`_corner_seed`; a middle point from the
    chord between the refined corners), and then marked ``reseeded``; such a
    point moves at most twice the radius.  Each corner found is then checked
    along the chord of the refined corners of its endplate (across, along,
    across: :func:`_snap_next_to_corner`, :func:`_band_end`), and the middle
    points are re-anchored on the final corners.

    Stable by construction: the pass is repeated from its own result until
    no point moves more than :data:`FIXED_POINT_MM` (at most
    :data:`MAX_PASSES` passes), and a vertebra whose first pass moves no
    point more than :data:`KEEP_MM` is kept as it is, so refining a refined
    vertebra leaves it where it is.  A point still moving has no single
    position the edge evidence supports: it is put back where it was placed,
    flagged ``unstable``, and one whose move a later pass doubts
    (:func:`_converge`) with that doubt.  The other points were refined
    around where it had been, so the vertebra returned may not be a fixed
    point.  It is therefore refined again from there, the search a second
    refine would run, and returned once that refine keeps it (moves no point
    more than :data:`FIXED_POINT_MM`, leaves none unsettled); else the
    refine's result is looked at the same way, :data:`MAX_LOOKS` times, and
    the last returned.
    """
    pts = {k: image.to_mm(xy) for k, xy in pts_px.items()}
    wanted = set(names)
    names = [n for n in POINT_NAMES if n in wanted and n in pts]
    if not names:
        return {}
    out, unsettled = _settle(image, pts, names, radius_mm)
    for _ in range(MAX_LOOKS):
        if not unsettled:
            break
        at = {**pts, **{n: out[n].position for n in names}}
        again, unsettled = _settle(image, at, names, radius_mm)
        if not unsettled and not _moved_beyond(again, at, FIXED_POINT_MM):
            break  # a second refine returns ``again``: ``out`` is (nearly) a fixed point
        out = {n: replace(o, moved=bool(np.any(o.position != pts[n]))) for n, o in again.items()}
    return out


def _settle(
    image: PreparedImage,
    pts: dict[str, np.ndarray],
    names: list[str],
    radius_mm: float,
) -> tuple[dict[str, Outcome], dict[str, RefineFlag]]:
    """The passes of :func:`_converge` from ``pts``; the outcomes (the points
    not settled put back where they were placed, with their flags) and the
    points not settled."""
    # The patch holds the noise window of every pass: a pass starts at most
    # about twice the radius (and a millimetre) from where a point was placed.
    span = _reach_mm(radius_mm) + 2 * radius_mm + 1.0
    # Each pass takes its own threshold (:func:`_one_pass`).
    fld = make_field(image, np.array(list(pts.values())), span, threshold=False)
    if fld is None:
        return {n: Outcome(pts[n], False, RefineFlag.OUTSIDE_IMAGE, None) for n in names}, {}
    out, unsettled = _converge(fld, image, pts, names, radius_mm)
    for n, flag in unsettled.items():
        out[n] = Outcome(pts[n], False, flag, out[n].score)
    return out, unsettled
