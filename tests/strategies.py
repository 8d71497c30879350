"""Hypothesis strategies shared by the vheight tests.

- ``json_values``: any JSON value (``st.recursive``), for garbage-input tests.
- ``vertebra_columns``: realistic lateral columns of 1-6 consecutive
  vertebrae (six landmarks each, pixel coordinates), built in a canonical
  frame and then rotated, scaled and shifted onto a film.
- ``vertebra`` / ``column``: plain builders of hand-computable vertebrae
  (vertical heights, exact in floating point) for table-driven tests.
- ``similarity_transforms``: a random rotation, translation and isotropic
  scale, applied to every landmark by :func:`transform_points`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import strategies as st

from vheight.annotation import LEVELS, POINT_NAMES

__all__ = [
    "json_values",
    "json_documents",
    "annotation_like_dicts",
    "Similarity",
    "similarity_transforms",
    "transform_points",
    "mirror_points",
    "vertebra_columns",
    "vertebra",
    "column",
]

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)

#: Any JSON value, nested up to a modest depth.
json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

_keys = st.sampled_from(
    [
        "format",
        "version",
        "image",
        "timepoint",
        "calibration",
        "vertebrae",
        "treated_levels",
        "patient_position",
        "annotator",
        "created",
        "modified",
        "notes",
    ]
)
_point_values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=3),
    st.tuples(st.floats(-50, 3000), st.floats(-50, 3000)).map(list),
    json_values,
)

#: Dicts that look like annotation files but may be wrong anywhere.
annotation_like_dicts = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["vheight.annotation", "other"]) | json_values,
        "version": st.sampled_from([1, 2, 0, 1.0, True]) | json_values,
        "vertebrae": st.dictionaries(
            st.sampled_from([*LEVELS, "T13", "l1", ""]),
            st.dictionaries(st.sampled_from([*POINT_NAMES, "tip"]), _point_values, max_size=7)
            | json_values,
            max_size=4,
        )
        | json_values,
    },
    optional={
        "image": st.fixed_dictionaries(
            {},
            optional={
                "rows": st.integers(-5, 4000) | json_values,
                "columns": st.integers(-5, 4000) | json_values,
                "file": json_values,
            },
        )
        | json_values,
        "timepoint": st.sampled_from(["pre", "post", "followup", "later"]) | json_values,
        "calibration": st.fixed_dictionaries(
            {"row_spacing_mm": json_values, "col_spacing_mm": json_values}
        )
        | json_values,
        "treated_levels": st.lists(st.sampled_from([*LEVELS, "X"]) | json_values, max_size=3)
        | json_values,
        "patient_position": st.sampled_from(["standing", "upside-down"]) | json_values,
        "annotator": json_values,
        "created": json_values,
        "notes": json_values,
    },
)

#: A whole top-level JSON document (object or anything else).
json_documents = st.one_of(
    annotation_like_dicts,
    json_values,
    st.dictionaries(_keys | st.text(max_size=8), json_values, max_size=8),
)


def vertebra(x0, y0, ha, hm, hp, depth=40.0):
    """Six landmarks facing left (anterior at x0), posterior corners at y0 and y0 + hp.

    All three heights are vertical, so they equal ``ha``, ``hm``, ``hp`` px exactly.
    """
    return {
        "superior_anterior": (x0, y0 + hp - ha),
        "superior_middle": (x0 + depth / 2, y0 + (hp - hm) / 2),
        "superior_posterior": (x0 + depth, y0),
        "inferior_anterior": (x0, y0 + hp),
        "inferior_middle": (x0 + depth / 2, y0 + (hp + hm) / 2),
        "inferior_posterior": (x0 + depth, y0 + hp),
    }


def column(heights, *, start="T11", x0=500.0, y0=300.0, gap=8.0):
    """Consecutive levels from ``start``; ``heights`` is a list of (ha, hm, hp) or None."""
    i = LEVELS.index(start)
    out, y = {}, y0
    for offset, h in enumerate(heights):
        if h is not None:
            out[LEVELS[i + offset]] = vertebra(x0, y, *h)
        y += (h[2] if h else 30.0) + gap
    return out


@dataclass(frozen=True)
class Similarity:
    """Rotation by ``angle_rad`` about the origin, scale, then shift (pixels)."""

    angle_rad: float
    scale: float
    dx: float
    dy: float

    def apply(self, xy: tuple[float, float]) -> tuple[float, float]:
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        x, y = xy
        return (
            self.scale * (c * x - s * y) + self.dx,
            self.scale * (s * x + c * y) + self.dy,
        )


def similarity_transforms(*, scale: bool = True) -> st.SearchStrategy[Similarity]:
    return st.builds(
        Similarity,
        angle_rad=st.floats(-math.pi, math.pi),
        scale=st.floats(0.5, 2.0) if scale else st.just(1.0),
        dx=st.floats(-500, 500),
        dy=st.floats(-500, 500),
    )


def transform_points(vertebrae, transform: Similarity):
    """Apply ``transform`` to every landmark of a level -> name -> xy mapping."""
    return {
        level: {name: transform.apply(xy) for name, xy in points.items()}
        for level, points in vertebrae.items()
    }


def mirror_points(vertebrae, *, width: float):
    """Mirror every landmark horizontally (patient facing the other way)."""
    return {
        level: {name: (width - 1 - xy[0], xy[1]) for name, xy in points.items()}
        for level, points in vertebrae.items()
    }


@st.composite
def vertebra_columns(draw, *, min_levels: int = 1, max_levels: int = 6, facing_left=None):
    """A column of consecutive vertebrae, six landmarks each, in pixel coordinates.

    Built in a canonical frame (the column runs down +y, anterior towards -x
    when facing left) with realistic body sizes (depth 25-45 px units, height
    15-35, anterior and middle heights 45-110 % of the posterior one, a small
    tilt per level), then rotated by up to 30 degrees, scaled and shifted to
    lie well inside a 3000 x 3000 film.  Returns a ``level -> name -> (x, y)``
    dict.
    """
    n = draw(st.integers(min_levels, max_levels))
    start = draw(st.integers(0, len(LEVELS) - n))
    levels = LEVELS[start : start + n]
    left = draw(st.booleans()) if facing_left is None else facing_left
    unit = draw(st.floats(4.0, 10.0))  # px per canonical unit
    y = 0.0
    column = {}
    for level in levels:
        depth = draw(st.floats(25, 45))
        hp = draw(st.floats(15, 35))
        ha = hp * draw(st.floats(0.45, 1.1))
        hm = hp * draw(st.floats(0.45, 1.1))
        tilt = math.radians(draw(st.floats(-12, 12)))
        # Anterior at x = 0, posterior at x = depth (facing left), before tilt.
        raw = {
            "superior_anterior": (0.0, hp - ha),
            "superior_middle": (depth / 2, (hp - hm) / 2),
            "superior_posterior": (depth, 0.0),
            "inferior_anterior": (0.0, hp),
            "inferior_middle": (depth / 2, (hp + hm) / 2),
            "inferior_posterior": (depth, hp),
        }
        c, s = math.cos(tilt), math.sin(tilt)
        points = {}
        for name, (px, py) in raw.items():
            rx, ry = c * px - s * py, s * px + c * py
            if not left:
                rx = -rx
            points[name] = (rx * unit, (ry + y) * unit)
        column[level] = points
        y += hp + draw(st.floats(4, 10))
    angle = math.radians(draw(st.floats(-30, 30)))
    c, s = math.cos(angle), math.sin(angle)
    xs = [p[0] for pts in column.values() for p in pts.values()]
    ys = [p[1] for pts in column.values() for p in pts.values()]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    ox, oy = draw(st.floats(1200, 1800)), draw(st.floats(1200, 1800))
    return {
        level: {
            name: (
                c * (x - cx) - s * (y - cy) + ox,
                s * (x - cx) + c * (y - cy) + oy,
            )
            for name, (x, y) in points.items()
        }
        for level, points in column.items()
    }
