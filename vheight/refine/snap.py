"""Refinement of an annotation: search spacing, inputs, and the public snapping API."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from vheight.annotation import LEVELS, POINT_NAMES, Annotation, level_index
from vheight.calibration import Calibration
from vheight.errors import AnnotationError
from vheight.refine.edges import (
    SEARCHABLE_SPACING_MM,
    PreparedImage,
    image_array,
    prepare_image,
    spacing_searchable,
)
from vheight.refine.model import (
    DEFAULT_RADIUS_MM,
    ENDPLATES,
    NOMINAL_SPACING_MM,
    Outcome,
    PointMove,
    RefineFlag,
    RefineResult,
)
from vheight.refine.vertebra import (
    refine_vertebra,
)

__all__ = ["search_spacing", "resolve_inputs", "check_radius", "refine_annotation", "refine_point"]

# Typical adult vertebral endplate depth (anterior-posterior, mm), used only to
# guess a nominal pixel spacing on uncalibrated films: a search radius in
# millimetres needs a scale.  Rounded values; the guess is good to about 25 %.
_TYPICAL_ENDPLATE_DEPTH_MM: dict[str, float] = {
    "T1": 16.0, "T2": 17.0, "T3": 18.0, "T4": 19.0, "T5": 20.0, "T6": 22.0,
    "T7": 24.0, "T8": 25.0, "T9": 27.0, "T10": 28.0, "T11": 30.0, "T12": 31.0,
    "L1": 33.0, "L2": 34.0, "L3": 35.0, "L4": 35.0, "L5": 35.0,
}  # fmt: skip

# -- calibration --------------------------------------------------------------------------


def search_spacing(
    annotation: Annotation, calibration: Calibration | None
) -> tuple[float, float, list[str]]:
    """``(row_mm, col_mm, warnings)`` used to turn millimetres into pixels.

    The calibration's spacing when calibrated.  On an uncalibrated film, the
    annotated endplates are compared with typical adult endplate depths to
    guess a nominal isotropic spacing (else :data:`NOMINAL_SPACING_MM`), and a
    warning says so.
    """
    if calibration is not None and calibration.is_calibrated:
        return calibration.row_spacing_mm, calibration.col_spacing_mm, []
    ratios = []
    for level, pts in annotation.vertebrae.items():
        for endplate in ENDPLATES:
            a = pts.get(f"{endplate}_anterior")
            p = pts.get(f"{endplate}_posterior")
            if a is not None and p is not None:
                depth_px = math.hypot(a[0] - p[0], a[1] - p[1])
                if depth_px > 1:
                    ratios.append(_TYPICAL_ENDPLATE_DEPTH_MM[level] / depth_px)
    if ratios:
        spacing = float(np.median(ratios))
        note = (
            f"uncalibrated film: searching with a nominal {spacing:.3g} mm/px guessed from "
            "typical endplate depths; distances are reported in pixels only"
        )
    else:
        spacing = NOMINAL_SPACING_MM
        note = (
            f"uncalibrated film and no complete endplate: searching with a nominal "
            f"{spacing:g} mm/px; distances are reported in pixels only"
        )
    return spacing, spacing, [note]


def resolve_inputs(
    annotation: Annotation, image: Any, calibration: Calibration | None
) -> tuple[Calibration, np.ndarray]:
    cal = annotation.calibration or calibration or getattr(image, "calibration", None)
    if cal is None:
        cal = Calibration.uncalibrated()
    pixels = image_array(image)
    rows, cols = annotation.image.rows, annotation.image.columns
    if rows is not None and cols is not None and (rows, cols) != pixels.shape:
        raise AnnotationError(
            f"the annotation was made on a {rows} x {cols} image but the film given is "
            f"{pixels.shape[0]} x {pixels.shape[1]} (rows x columns): give the film it was "
            "made on"
        )
    return cal, pixels


def check_radius(radius_mm: float) -> float:
    if isinstance(radius_mm, bool) or not (
        isinstance(radius_mm, (int, float)) and math.isfinite(radius_mm) and radius_mm > 0
    ):
        raise ValueError(f"radius_mm must be a finite number > 0, found {radius_mm!r}")
    return float(radius_mm)


_SAME_PX = 1e-6
"""A point no further than this (px) from where it was placed has not moved."""


def point_move(
    level: str, name: str, before: tuple[float, float], outcome: Outcome, image: PreparedImage,
    calibrated: bool,
) -> PointMove:  # fmt: skip
    x, y = image.to_px(outcome.position) if outcome.moved else before
    # A point kept where it was (a vertebra already on its edges keeps every
    # point) comes back through mm with a rounding error of 1e-13 px: not moved.
    moved = bool(outcome.moved) and math.hypot(x - before[0], y - before[1]) > _SAME_PX
    if not moved:
        x, y = before
    dist_mm = None
    if calibrated:
        dist_mm = math.hypot((x - before[0]) * image.col_mm, (y - before[1]) * image.row_mm)
    return PointMove(
        level=level,
        point=name,
        x_before=float(before[0]),
        y_before=float(before[1]),
        x=float(x),
        y=float(y),
        distance_mm=dist_mm,
        moved=moved,
        flag=_flag(outcome),
        edge_score=outcome.score,
        reseeded=outcome.reseeded,
    )


def _flag(outcome: Outcome) -> str | None:
    """The flag of a move: the doubt, else the note (spur, then doubled)."""
    if outcome.flag is not None:
        return outcome.flag.value
    if outcome.spur:
        return RefineFlag.SPUR_EXCLUDED.value
    if outcome.doubled:
        return RefineFlag.DOUBLED.value
    return None


# -- public API -----------------------------------------------------------------------------


def refine_annotation(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None = None,
    *,
    levels: Iterable[str] | None = None,
    points: Iterable[str] | None = None,
    radius_mm: float = DEFAULT_RADIUS_MM,
) -> RefineResult:
    """Snap landmarks to the cortical endplate edge near them.

    Parameters
    ----------
    annotation
        The landmarks (pixels, module convention).  Never changed.
    image
        A :class:`vheight.film.Film` or a 2-D array, bright = dense bone, the
        full-resolution image the landmarks were placed on.
    calibration
        Used when the annotation has none (the film's own otherwise); None and
        no calibration anywhere means uncalibrated (nominal search spacing).
    levels
        Levels to refine (default: every annotated level).
    points
        Point names to refine (default: all six).  Points not refined still
        give the directions of those that are.
    radius_mm
        How far each edge is searched on either side of the landmark, mm.

    Returns
    -------
    RefineResult
        The new annotation and one :class:`PointMove` per landmark considered.
    """
    radius_mm = check_radius(radius_mm)
    cal, pixels = resolve_inputs(annotation, image, calibration)
    row_mm, col_mm, warnings = search_spacing(annotation, cal)
    wanted_levels = _check_levels(levels, annotation)
    wanted_points = _check_points(points)
    if not spacing_searchable(row_mm, col_mm):
        return _unsearchable(
            annotation, cal, row_mm, col_mm, radius_mm, warnings, wanted_levels, wanted_points
        )
    prepared = prepare_image(pixels, row_mm, col_mm)
    vertebrae = {lvl: dict(pts) for lvl, pts in annotation.vertebrae.items()}
    moves: list[PointMove] = []
    for level in wanted_levels:
        pts = annotation.vertebrae.get(level)
        if not pts:
            continue
        outcomes = refine_vertebra(prepared, pts, wanted_points, radius_mm)
        for name in POINT_NAMES:
            if name not in outcomes:
                continue
            move = point_move(level, name, pts[name], outcomes[name], prepared, cal.is_calibrated)
            moves.append(move)
            vertebrae[level][name] = move.xy
    new = replace(annotation, vertebrae=vertebrae)
    return RefineResult(
        annotation=new,
        moves=tuple(moves),
        calibration=cal,
        spacing_mm=(row_mm, col_mm),
        radius_mm=radius_mm,
        warnings=tuple(warnings),
    )


def spacing_note(row_mm: float, col_mm: float) -> str:
    """The warning given when the spacing cannot be searched."""
    lo, hi = SEARCHABLE_SPACING_MM
    return (
        f"pixel spacing {row_mm:.6g} x {col_mm:.6g} mm/px (rows x columns) is outside the "
        f"{lo:g}-{hi:g} mm/px the edge search works with: no point was moved; check the "
        "film's pixel spacing or the annotation's calibration"
    )


def _unsearchable(
    annotation: Annotation,
    cal: Calibration,
    row_mm: float,
    col_mm: float,
    radius_mm: float,
    warnings: list[str],
    levels: list[str],
    points: list[str],
) -> RefineResult:
    """Every point considered, left alone and flagged ``spacing_out_of_range``."""
    moves = [
        PointMove(
            level=level,
            point=name,
            x_before=float(xy[0]),
            y_before=float(xy[1]),
            x=float(xy[0]),
            y=float(xy[1]),
            distance_mm=0.0 if cal.is_calibrated else None,
            moved=False,
            flag=RefineFlag.SPACING_OUT_OF_RANGE.value,
        )
        for level in levels
        for name in POINT_NAMES
        if name in points and (xy := annotation.vertebrae.get(level, {}).get(name)) is not None
    ]
    return RefineResult(
        annotation=annotation,
        moves=tuple(moves),
        calibration=cal,
        spacing_mm=(row_mm, col_mm),
        radius_mm=radius_mm,
        warnings=(*warnings, spacing_note(row_mm, col_mm)),
    )


def refine_point(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    point: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
) -> PointMove:
    """Snap one landmark (the editor's snap action).

    The other points of the level, as placed, give the directions; a level
    holding this point alone is searched along the dominant edge orientation
    around it.  Apply the result with
    ``annotation.with_point(level, point, move.xy)`` when ``move.moved``.

    Raises :class:`AnnotationError` when the point is not placed.
    """
    level = str(level)
    point = str(point)
    level_index(level)
    if point not in annotation.points(level):
        raise AnnotationError(f"{level} {point}: the point is not placed, nothing to refine")
    result = refine_annotation(
        annotation, image, calibration, levels=[level], points=[point], radius_mm=radius_mm
    )
    return result.move(level, point)


def _check_levels(levels: Iterable[str] | None, annotation: Annotation) -> list[str]:
    if levels is None:
        return list(annotation.levels)
    wanted = [str(lvl) for lvl in levels]
    for lvl in wanted:
        level_index(lvl)
    return [lvl for lvl in LEVELS if lvl in wanted]


def _check_points(points: Iterable[str] | None) -> list[str]:
    if points is None:
        return list(POINT_NAMES)
    wanted = [str(p) for p in points]
    bad = [p for p in wanted if p not in POINT_NAMES]
    if bad:
        raise AnnotationError(
            f"unknown point name(s) {', '.join(map(repr, bad))}: expected {', '.join(POINT_NAMES)}"
        )
    return wanted
