"""Plane geometry of landmarks in millimetre space (pure: numbers in, numbers out).

Coordinates
-----------
A point is ``(x, y)`` in pixels of the full-resolution image: ``x`` the
column (to the right), ``y`` the row (down), centre of the top-left pixel at
``(0, 0)``.  Pixels may be anisotropic: ``col_spacing_mm`` is the width of a
pixel (along ``x``), ``row_spacing_mm`` its height (along ``y``).  Every
length and angle here is computed after scaling ``x`` by ``col_spacing_mm``
and ``y`` by ``row_spacing_mm`` ("mm space"); with both spacings 1 the unit
is the pixel.

Angles
------
:func:`kyphotic_angle_deg` is the signed angle between two endplate lines
(``measurements.md``): with ``u`` the upper line (anterior minus posterior
corner), ``v`` the lower line and ``w`` the vector from the midpoint of the
upper corners to the midpoint of the lower corners,
``delta = wrap(atan2(v) - atan2(u))`` into ``(-180, 180]`` and the angle is
``-delta * sign(cross(u, w))``.  It is positive when the lines converge
anteriorly (kyphosis, anterior wedging), whether the patient faces left or
right on the film: mirroring the film flips both ``delta`` and the cross
product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "to_mm",
    "distance_mm",
    "midpoint",
    "cross",
    "direction_deg",
    "wrap_deg",
    "kyphotic_angle_deg",
]

Point = Sequence[float]


def to_mm(
    p: Point, *, row_spacing_mm: float = 1.0, col_spacing_mm: float = 1.0
) -> tuple[float, float]:
    """Pixel point ``(x, y)`` scaled to mm space: ``(x * col_spacing_mm, y * row_spacing_mm)``."""
    return (float(p[0]) * col_spacing_mm, float(p[1]) * row_spacing_mm)


def distance_mm(
    p: Point, q: Point, *, row_spacing_mm: float = 1.0, col_spacing_mm: float = 1.0
) -> float:
    """Distance between pixel points ``p`` and ``q``, in mm (in px when spacings are 1).

    ``dx = (qx - px) * col_spacing_mm``, ``dy = (qy - py) * row_spacing_mm``,
    ``hypot(dx, dy)``.
    """
    dx = (float(q[0]) - float(p[0])) * col_spacing_mm
    dy = (float(q[1]) - float(p[1])) * row_spacing_mm
    return math.hypot(dx, dy)


def midpoint(p: Point, q: Point) -> tuple[float, float]:
    """Midpoint of two points (any unit)."""
    return ((float(p[0]) + float(q[0])) / 2.0, (float(p[1]) + float(q[1])) / 2.0)


def cross(a: Point, b: Point) -> float:
    """z component of the cross product, ``a.x * b.y - a.y * b.x``."""
    return float(a[0]) * float(b[1]) - float(a[1]) * float(b[0])


def direction_deg(a: Point) -> float:
    """Direction of vector ``a``, ``atan2(a.y, a.x)`` in degrees, in ``(-180, 180]``."""
    return math.degrees(math.atan2(float(a[1]), float(a[0])))


def wrap_deg(angle_deg: float) -> float:
    """``angle_deg`` wrapped into ``(-180, 180]`` degrees."""
    wrapped = math.fmod(angle_deg, 360.0)
    if wrapped > 180.0:
        wrapped -= 360.0
    elif wrapped <= -180.0:
        wrapped += 360.0
    return wrapped


def kyphotic_angle_deg(
    upper_anterior: Point,
    upper_posterior: Point,
    lower_anterior: Point,
    lower_posterior: Point,
    *,
    row_spacing_mm: float = 1.0,
    col_spacing_mm: float = 1.0,
) -> float:
    """Signed angle between two endplate lines, degrees; positive = kyphotic.

    Parameters
    ----------
    upper_anterior, upper_posterior
        Pixel corners of the upper line (for the wedge angle of one vertebra,
        its superior endplate; for segmental kyphosis, the superior endplate
        of the level above).
    lower_anterior, lower_posterior
        Pixel corners of the lower line (inferior endplate of the same
        vertebra, or of the level below).
    row_spacing_mm, col_spacing_mm
        Pixel size; the angle is measured in mm space.

    Returns
    -------
    float
        ``-wrap(atan2(v) - atan2(u)) * sign(cross(u, w))`` in degrees, in
        ``[-180, 180]``; 0 when ``u`` and ``w`` are parallel (degenerate).
    """
    # The same steps as to_mm, midpoint, direction_deg and cross, written out
    # (this runs for every vertebra of every film of a batch).
    sax, say = float(upper_anterior[0]) * col_spacing_mm, float(upper_anterior[1]) * row_spacing_mm
    spx, spy = (
        float(upper_posterior[0]) * col_spacing_mm,
        float(upper_posterior[1]) * row_spacing_mm,
    )
    iax, iay = float(lower_anterior[0]) * col_spacing_mm, float(lower_anterior[1]) * row_spacing_mm
    ipx, ipy = (
        float(lower_posterior[0]) * col_spacing_mm,
        float(lower_posterior[1]) * row_spacing_mm,
    )
    ux, uy = sax - spx, say - spy  # u: upper line, anterior minus posterior corner
    vx, vy = iax - ipx, iay - ipy  # v: lower line
    # w: from the midpoint of the upper corners to the midpoint of the lower corners
    wx = (iax + ipx) / 2.0 - (sax + spx) / 2.0
    wy = (iay + ipy) / 2.0 - (say + spy) / 2.0
    delta = wrap_deg(math.degrees(math.atan2(vy, vx)) - math.degrees(math.atan2(uy, ux)))
    c = ux * wy - uy * wx  # cross(u, w)
    sign = 1.0 if c > 0 else -1.0 if c < 0 else 0.0
    angle = -delta * sign
    return angle + 0.0  # no negative zero
