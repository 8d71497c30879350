"""Proposing the landmarks of a neighbouring level from the complete levels."""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from vheight.annotation import LEVELS, POINT_NAMES, Annotation, level_index
from vheight.calibration import Calibration
from vheight.errors import AnnotationError, CalibrationError
from vheight.refine.directions import (
    centre_of,
    other_endplate,
    outward_of,
    perp,
    unit,
)
from vheight.refine.edges import (
    Edge,
    Field,
    PreparedImage,
    edge_on_average,
    edges_on_strip,
    make_field,
    prepare_image,
    profile_offsets,
    spacing_searchable,
)
from vheight.refine.model import (
    DEFAULT_RADIUS_MM,
    ENDPLATES,
    SIDES,
    RefineFlag,
    RefineResult,
    is_doubt,
)
from vheight.refine.snap import (
    check_radius,
    refine_annotation,
    resolve_inputs,
    search_spacing,
    spacing_note,
)

__all__ = ["predict_level", "propose_level", "propose_level_result"]

# Typical disc height as a fraction of the vertebral body height, used to
# propose a level next to a single annotated one.
_DISC_TO_BODY_RATIO = 0.3
# The thirds of an endplate measured on their own (fractions of its length
# from the posterior corner), and how far each is searched (fraction of the
# predicted body height, either way).
_SEGMENTS = {
    "posterior": np.linspace(0.06, 0.26, 5),
    "middle": np.linspace(0.42, 0.58, 5),
    "anterior": np.linspace(0.74, 0.94, 5),
}
_SEGMENT_WINDOW = 0.4
# Beyond this offset (mm) a third's edge must score this well, and the body
# must keep this fraction of its predicted height there.
_SEGMENT_FREE_MM = 3.0
_SEGMENT_STRONG = 2.0
_SEGMENT_MIN_HEIGHT = 0.45
# A proposed endplate is never aligned closer than this to its neighbour's.
_MIN_DISC_MM = 2.0

# -- propagation ------------------------------------------------------------------------------


def _as_complex(pts: Mapping[str, tuple[float, float]], row_mm: float, col_mm: float) -> np.ndarray:
    return np.array([pts[n][0] * col_mm + 1j * pts[n][1] * row_mm for n in POINT_NAMES])


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``z -> a z + b`` mapping ``src`` onto ``dst``."""
    zs, zd = src - src.mean(), dst - dst.mean()
    a = complex(np.sum(zd * np.conj(zs)) / np.sum(np.abs(zs) ** 2))
    b = complex(dst.mean() - a * src.mean())
    return a, b


def _expm1(x: complex) -> complex:
    """``exp(x) - 1`` without cancellation for small ``x``."""
    if abs(x) < 1e-4:
        return x + x * x / 2 + x * x * x / 6
    return cmath.exp(x) - 1


def _power(a: complex, b: complex, n: float) -> tuple[complex, complex]:
    """The similarity ``z -> a z + b`` applied ``n`` times (``n`` real).

    ``a^n z + b (a^n - 1) / (a - 1)``, with ``a^n = exp(n log a)`` and the
    ratio computed stably when ``a`` is close to 1 (a near translation).
    """
    log_a = complex(math.log(abs(a)), cmath.phase(a))
    if abs(log_a) < 1e-12:
        return 1 + 0j, b * n
    an = cmath.exp(n * log_a)
    return an, b * _expm1(n * log_a) / _expm1(log_a)


def _source_levels(annotation: Annotation, level: str) -> list[str]:
    """The complete levels a proposal for ``level`` starts from (one or two).

    The nearest complete level, and the next nearest, preferably on the
    other side of ``level`` (interpolation rather than extrapolation).
    """
    target = level_index(level)
    complete = [lvl for lvl in annotation.complete_levels if lvl != level]
    if not complete:
        raise AnnotationError(
            f"cannot propose {level}: no complete vertebra (six points) to start from"
        )
    complete.sort(key=lambda lvl: (abs(level_index(lvl) - target), level_index(lvl)))
    first = complete[0]
    others = complete[1:]
    if not others:
        return [first]
    side = level_index(first) - target
    opposite = [lvl for lvl in others if (level_index(lvl) - target) * side < 0]
    return [first, opposite[0] if opposite else others[0]]


def _next_to(za: np.ndarray, *, up: bool, level: str, source: str) -> np.ndarray:
    """A normal vertebra beside the one whose six points are ``za`` (complex mm).

    Its facing endplate is the neighbour's, shifted along the neighbour's
    axis by a typical disc; its height is the larger of the neighbour's
    anterior and posterior heights (a wedge or crush fracture of the
    neighbour is not copied); its endplate concavities are the neighbour's.
    """
    p = dict(zip(POINT_NAMES, za, strict=True))
    axis = (p["superior_anterior"] - p["inferior_anterior"]) + (
        p["superior_posterior"] - p["inferior_posterior"]
    )
    if abs(axis) < 1e-9:
        raise AnnotationError(f"cannot propose {level}: {source} has zero height")
    u = axis / abs(axis)  # towards the head
    height = max(
        abs(p["superior_anterior"] - p["inferior_anterior"]),
        abs(p["superior_posterior"] - p["inferior_posterior"]),
    )
    disc = _DISC_TO_BODY_RATIO * height

    def sag(endplate: str) -> float:
        # How far the middle point lies inside the chord of its endplate, mm.
        a, m, q = (p[f"{endplate}_{k}"] for k in ("anterior", "middle", "posterior"))
        inward = -u if endplate == "superior" else u
        return float(((m - (a + q) / 2) * inward.conjugate()).real)

    out: dict[str, complex] = {}
    if up:
        for side in SIDES:
            out[f"inferior_{side}"] = p[f"superior_{side}"] + u * disc
            out[f"superior_{side}"] = out[f"inferior_{side}"] + u * height
    else:
        for side in SIDES:
            out[f"superior_{side}"] = p[f"inferior_{side}"] - u * disc
            out[f"inferior_{side}"] = out[f"superior_{side}"] - u * height
    for endplate, inward in (("superior", -u), ("inferior", u)):
        chord_mid = (out[f"{endplate}_anterior"] + out[f"{endplate}_posterior"]) / 2
        out[f"{endplate}_middle"] = chord_mid + inward * max(0.0, sag(endplate))
    return np.array([out[n] for n in POINT_NAMES])


def predict_level(
    annotation: Annotation, level: str, calibration: Calibration | None = None
) -> dict[str, tuple[float, float]]:
    """Guess the six landmarks of ``level`` from the complete levels (no image).

    With two complete levels, the similarity (translation, rotation, scale)
    that carries one onto the other is split into per-level steps and applied
    from the nearest complete level, so position, orientation and size trends
    are extrapolated (or interpolated between levels on both sides).  With
    one complete level, a normal vertebra is built beside it: its facing
    endplate shifted along its axis by a typical disc (``0.3`` of the body
    height), as high as the larger of its anterior and posterior heights.

    Raises :class:`AnnotationError` when no level is complete.
    """
    level = str(level)
    target = level_index(level)
    cal = annotation.calibration or calibration
    row_mm, col_mm, _ = search_spacing(annotation, cal)
    if not spacing_searchable(row_mm, col_mm):
        # The prediction is a similarity, the same in any unit: work in
        # units of the larger spacing so that no product under- or overflows.
        unit_mm = max(row_mm, col_mm)
        row_mm, col_mm = row_mm / unit_mm, col_mm / unit_mm
        if not (math.isfinite(row_mm) and math.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
            raise CalibrationError(
                f"cannot predict {level}: pixel spacing {row_mm:g} x {col_mm:g} mm/px is not usable"
            )
    sources = _source_levels(annotation, level)
    a_level = sources[0]
    ia = level_index(a_level)
    za = _as_complex(annotation.vertebrae[a_level], row_mm, col_mm)
    if len(sources) > 1:
        b_level = sources[1]
        ib = level_index(b_level)
        zb = _as_complex(annotation.vertebrae[b_level], row_mm, col_mm)
        a, b = _similarity(za, zb)
        step = _power(a, b, 1.0 / (ib - ia))
        a_n, b_n = _power(*step, float(target - ia))
        z = a_n * za + b_n
    else:
        z = za
        for _ in range(abs(target - ia)):
            z = _next_to(z, up=target < ia, level=level, source=a_level)
    return {
        name: (float(zz.real / col_mm), float(zz.imag / row_mm))
        for name, zz in zip(POINT_NAMES, z, strict=True)
    }


def _align_level(
    image: PreparedImage,
    pts_px: Mapping[str, tuple[float, float]],
    radius_mm: float,
    facing: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Shift each endplate and each wall of a predicted vertebra onto the image.

    Each endplate is searched as a whole (profiles along its predicted
    polyline, averaged) across a window of a quarter of the predicted body
    height (at least the radius), and its three points moved by the offset
    found; then each wall likewise, moving its two corners along the
    endplates.  A part without a clear edge stays as predicted, and so does
    an endplate that the shift would bring within ``_MIN_DISC_MM`` of the
    facing endplate of an annotated neighbour (``facing``: endplate name ->
    that neighbour's facing endplate points).
    """
    pts = {k: image.to_mm(v) for k, v in pts_px.items()}
    heights = [float(np.hypot(*(pts[f"superior_{s}"] - pts[f"inferior_{s}"]))) for s in SIDES]
    window = max(radius_mm, 0.25 * float(np.mean(heights)))
    fld = make_field(image, np.array(list(pts.values())), window + 1.0)
    if fld is None:
        return dict(pts_px)
    t = profile_offsets(image, window)
    centre = centre_of(pts)
    fractions = np.linspace(0.15, 0.85, 9)
    for endplate in ENDPLATES:
        a, m, p = (pts[f"{endplate}_{k}"] for k in ("anterior", "middle", "posterior"))
        tangent = unit(a - p)
        if tangent is None:
            continue
        normal = outward_of(perp(tangent), m, centre, fld)
        if normal is None:
            continue
        path = np.vstack([p, m, a])
        bases = np.array([_along(path, f) for f in fractions])
        edge = edge_on_average(fld, bases, normal, t, endplate=True)
        if edge.flag is not None or edge.offset is None:
            continue
        neighbour = (facing or {}).get(endplate)
        shifted = m + edge.offset * normal
        if neighbour and _disc_gap_mm(image, shifted, normal, neighbour) < _MIN_DISC_MM:
            continue  # the shift would reach the neighbour's facing endplate
        for k in ("anterior", "middle", "posterior"):
            pts[f"{endplate}_{k}"] = pts[f"{endplate}_{k}"] + edge.offset * normal
    # Each third of each endplate measured on its own, so that a wedge,
    # biconcave or crush fracture of the level is found, not assumed away.
    deep = profile_offsets(image, _SEGMENT_WINDOW * float(np.mean(heights)))
    seg_fld = make_field(image, np.array(list(pts.values())), float(deep[-1]) + 1.0)
    for endplate in ENDPLATES if seg_fld is not None else ():
        _align_segments(image, seg_fld, pts, endplate, centre, deep, (facing or {}).get(endplate))
    for side in SIDES:
        top, bottom = pts[f"superior_{side}"], pts[f"inferior_{side}"]
        along = unit(top - bottom)
        if along is None:
            continue
        across = outward_of(perp(along), top, centre, fld)
        if across is None:
            continue
        bases = bottom[None, :] + fractions[:, None] * (top - bottom)[None, :]
        edge = edge_on_average(fld, bases, across, t, endplate=False)
        if edge.flag is None and edge.offset is not None:
            for e in ENDPLATES:
                pts[f"{e}_{side}"] = pts[f"{e}_{side}"] + edge.offset * across
    return {k: image.to_px(v) for k, v in pts.items()}


def _align_segments(
    image: PreparedImage,
    fld: Field,
    pts: dict[str, np.ndarray],
    endplate: str,
    centre: np.ndarray | None,
    t: np.ndarray,
    neighbour: Mapping[str, tuple[float, float]] | None,
) -> None:
    """Move each point of ``endplate`` (mm, in place) onto the edge found on
    the third of the endplate around it (posterior, middle, anterior), each
    searched on its own across ``t``.  Refused: an offset beyond
    ``_SEGMENT_FREE_MM`` on weak evidence, one that leaves the body less than
    ``_SEGMENT_MIN_HEIGHT`` of its predicted height, or one that brings the
    point within ``_MIN_DISC_MM`` of the neighbour's facing endplate."""
    a, m, p = (pts[f"{endplate}_{k}"] for k in ("anterior", "middle", "posterior"))
    tangent = unit(a - p)
    if tangent is None:
        return
    normal = outward_of(perp(tangent), m, centre, fld)
    if normal is None:
        return
    height = float(
        np.mean([np.hypot(*(pts[f"superior_{s}"] - pts[f"inferior_{s}"])) for s in SIDES])
    )
    path = np.vstack([p, m, a])
    moves = {}
    for k, fractions in _SEGMENTS.items():
        bases = np.array([_along(path, f) for f in fractions])
        found = [e for e in edges_on_strip(fld, bases, normal, t, endplate=True) if e.flag is None]
        if len(found) < 3:
            continue
        offsets = np.array([e.offset for e in found], dtype=float)
        if float(np.median(np.abs(offsets - np.median(offsets)))) > 1.0:
            continue  # the profiles of the third disagree
        edge = Edge(float(np.median(offsets)), float(np.median([e.score for e in found])), None)
        if abs(edge.offset) > _SEGMENT_FREE_MM and (edge.score or 0.0) < _SEGMENT_STRONG:
            continue  # a far edge is taken on strong evidence only
        point = pts[f"{endplate}_{k}"] + edge.offset * normal
        other = pts[f"{other_endplate(endplate)}_{k}"]
        if float(np.hypot(*(point - other))) < _SEGMENT_MIN_HEIGHT * height:
            continue  # not a body any more
        if neighbour and _disc_gap_mm(image, point, normal, neighbour) < _MIN_DISC_MM:
            continue
        moves[k] = point
    for k, point in moves.items():
        pts[f"{endplate}_{k}"] = point


def _disc_gap_mm(
    image: PreparedImage,
    point_mm: np.ndarray,
    normal: np.ndarray,
    neighbour: Mapping[str, tuple[float, float]],
) -> float:
    """Signed gap (mm) across the disc from ``point_mm`` to the nearest point of
    an annotated neighbour's facing endplate (``neighbour``, pixels), along
    the endplate's outward ``normal``."""
    return min(float(np.dot(image.to_mm(xy) - point_mm, normal)) for xy in neighbour.values())


def _reject_neighbour_edges(
    result: RefineResult,
    image: PreparedImage,
    level: str,
    aligned: Mapping[str, tuple[float, float]],
    facing: Mapping[str, Mapping[str, tuple[float, float]]],
) -> RefineResult:
    """A proposed point snapped to within ``_MIN_DISC_MM`` (across the disc,
    along its endplate's normal) of the facing point on its side of an
    annotated neighbour found the neighbour's edge, not its own (a faint
    endplate of a crushed body, the neighbour's corner next to it): it is
    put back where it was aligned and flagged ``rejected_edge``."""
    pts = {k: image.to_mm(v) for k, v in aligned.items()}
    centre = centre_of(pts)
    annotation = result.annotation
    moves = []
    for move in result.moves:
        endplate, side = move.point.split("_")
        # The facing point of the same side: across a disc that narrows
        # posteriorly, the neighbour's other points say nothing of this gap.
        neighbour = {k: v for k, v in facing.get(endplate, {}).items() if k.endswith(side)}
        tangent = unit(pts[f"{endplate}_anterior"] - pts[f"{endplate}_posterior"])
        normal = (
            None if tangent is None else outward_of(perp(tangent), pts[move.point], centre, None)
        )
        if (
            move.moved
            and neighbour
            and normal is not None
            and _disc_gap_mm(image, image.to_mm(move.xy), normal, neighbour) < _MIN_DISC_MM
        ):
            move = replace(
                move,
                x=move.x_before,
                y=move.y_before,
                moved=False,
                flag=RefineFlag.REJECTED_EDGE.value,
                distance_mm=None if move.distance_mm is None else 0.0,
            )
            annotation = annotation.with_point(level, move.point, (move.x_before, move.y_before))
        moves.append(move)
    return replace(result, annotation=annotation, moves=tuple(moves))


def _along(path: np.ndarray, fraction: float) -> np.ndarray:
    """The point at ``fraction`` of the length of the polyline ``path``."""
    seg = np.hypot(*np.diff(path, axis=0).T)
    target = fraction * float(seg.sum())
    for i, length in enumerate(seg):
        if target <= length or i == len(seg) - 1:
            return path[i] + (path[i + 1] - path[i]) * (target / length if length else 0.0)
        target -= length
    return path[-1]


def propose_level_result(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
    replace_existing: bool = False,
) -> RefineResult:
    """:func:`propose_level`, with the refinement record of the proposed points.

    In the moves, ``x_before``/``y_before`` are the predicted positions.  A
    level extrapolated from levels on one side only has every point flagged
    ``extrapolated`` (unless a doubt flag says more) and a warning.  A point
    snapped onto an annotated neighbour's facing endplate is put back and
    flagged ``rejected_edge`` (:func:`_reject_neighbour_edges`).
    """
    level = str(level)
    level_index(level)
    if annotation.points(level) and not replace_existing:
        raise AnnotationError(
            f"cannot propose {level}: it already holds {len(annotation.points(level))} "
            "point(s); remove them first"
        )
    cal = annotation.calibration or calibration or getattr(image, "calibration", None)
    radius_mm = check_radius(radius_mm)
    row_mm, col_mm, _ = search_spacing(annotation, cal)
    if not spacing_searchable(row_mm, col_mm):
        raise CalibrationError(f"cannot propose {level}: {spacing_note(row_mm, col_mm)}")
    # Predict from snapped copies of the source levels (they stay as given).
    sources = _source_levels(annotation, level)
    snapped = refine_annotation(annotation, image, cal, levels=sources, radius_mm=radius_mm)
    predicted = predict_level(snapped.annotation, level, cal)
    cal_used, pixels = resolve_inputs(annotation, image, cal)
    row_mm, col_mm, _ = search_spacing(annotation, cal_used)
    prepared = prepare_image(pixels, row_mm, col_mm)
    facing = {}
    for endplate, step in (("superior", -1), ("inferior", 1)):
        index = level_index(level) + step
        if 0 <= index < len(LEVELS):
            other = annotation.points(LEVELS[index])
            facing[endplate] = {
                k: v for k, v in other.items() if k.startswith(other_endplate(endplate))
            }
    aligned = _align_level(prepared, predicted, radius_mm, facing)
    vertebrae = {lvl: dict(pts) for lvl, pts in annotation.vertebrae.items()}
    vertebrae[level] = aligned
    proposed = replace(annotation, vertebrae=vertebrae)
    result = refine_annotation(proposed, image, cal, levels=[level], radius_mm=radius_mm)
    result = _reject_neighbour_edges(result, prepared, level, aligned, facing)
    if _extrapolated(sources, level):
        moves = tuple(
            m if is_doubt(m.flag) else replace(m, flag=RefineFlag.EXTRAPOLATED.value)
            for m in result.moves
        )
        note = (
            f"{level} was extrapolated from {' and '.join(sources)} (no placed level on its "
            "other side): check every point or place it yourself"
        )
        result = replace(result, moves=moves, warnings=(*result.warnings, note))
    return result


def _extrapolated(sources: list[str], level: str) -> bool:
    """True when every source level lies on the same side of ``level``."""
    target = level_index(level)
    sides = {level_index(s) > target for s in sources}
    return len(sides) == 1


def propose_level(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
    replace_existing: bool = False,
) -> Annotation:
    """A new annotation with the six landmarks of ``level`` proposed and refined.

    The landmarks are predicted by :func:`predict_level` from the complete
    levels, then snapped by :func:`refine_annotation` (points without a clear
    edge stay where predicted).  Other levels are unchanged.

    Raises :class:`AnnotationError` when ``level`` already holds points (unless
    ``replace_existing``) or no level is complete.
    """
    return propose_level_result(
        annotation,
        image,
        calibration,
        level,
        radius_mm=radius_mm,
        replace_existing=replace_existing,
    ).annotation
