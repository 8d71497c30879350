"""Directions of one vertebra in millimetre space: tangents, normals, intersections."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vheight.refine.edges import (
    Field,
)

__all__ = [
    "unit",
    "perp",
    "cross",
    "other_side",
    "other_endplate",
    "outward_of",
    "endplate_tangent",
    "wall_tangent",
    "centre_of",
    "intersect",
]

# -- geometry of one vertebra ---------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else None


def perp(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


def cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def other_side(side: str) -> str:
    return "posterior" if side == "anterior" else "anterior"


def other_endplate(endplate: str) -> str:
    return "inferior" if endplate == "superior" else "superior"


def outward_of(
    direction: np.ndarray, origin: np.ndarray, centre: np.ndarray | None, fld: Field | None
) -> np.ndarray | None:
    """``direction`` or its opposite, whichever points away from the body.

    Uses the centre of the landmarks when it lies clearly to one side,
    otherwise the image (bone, inside, is brighter than the disc outside).
    """
    if centre is not None:
        side = float(np.dot(origin - centre, direction))
        if abs(side) > 2.0:
            return direction if side > 0 else -direction
    if fld is not None:
        offsets = np.linspace(1.0, 3.0, 5)
        ahead = fld.intensity(origin[None, :] + offsets[:, None] * direction[None, :])
        behind = fld.intensity(origin[None, :] - offsets[:, None] * direction[None, :])
        if np.all(np.isfinite(ahead)) and np.all(np.isfinite(behind)):
            return -direction if ahead.mean() > behind.mean() else direction
    if centre is not None and abs(float(np.dot(origin - centre, direction))) > 1e-6:
        return direction if float(np.dot(origin - centre, direction)) > 0 else -direction
    return None


def endplate_tangent(pts: Mapping[str, np.ndarray], endplate: str, side: str) -> np.ndarray | None:
    """Unit vector along the endplate of ``endplate``, pointing towards ``side``."""
    own = pts.get(f"{endplate}_{side}")
    for a, b in (
        (own, pts.get(f"{endplate}_{other_side(side)}")),
        (pts.get(f"{other_endplate(endplate)}_{side}"),
         pts.get(f"{other_endplate(endplate)}_{other_side(side)}")),
        (own, pts.get(f"{endplate}_middle")),
        (pts.get(f"{endplate}_middle"), pts.get(f"{endplate}_{other_side(side)}")),
    ):  # fmt: skip
        if a is not None and b is not None:
            u = unit(a - b)
            if u is not None:
                return u
    return None


def wall_tangent(pts: Mapping[str, np.ndarray], endplate: str, side: str) -> np.ndarray | None:
    """Unit vector along the ``side`` wall, pointing towards ``endplate``."""
    for s in (side, other_side(side)):
        a = pts.get(f"{endplate}_{s}")
        b = pts.get(f"{other_endplate(endplate)}_{s}")
        if a is not None and b is not None:
            u = unit(a - b)
            if u is not None:
                return u
    return None


def centre_of(pts: Mapping[str, np.ndarray]) -> np.ndarray | None:
    if not pts:
        return None
    return np.mean(np.array(list(pts.values())), axis=0)


def intersect(p1: np.ndarray, u1: np.ndarray, p2: np.ndarray, u2: np.ndarray) -> np.ndarray | None:
    """Intersection of the lines ``p1 + s u1`` and ``p2 + s u2``."""
    den = cross(u1, u2)
    if abs(den) < 0.3 * float(np.hypot(*u1) * np.hypot(*u2)):
        return None
    s = cross(p2 - p1, u2) / den
    return p1 + s * u1
