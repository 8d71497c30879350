"""Distances and signed endplate angles in mm space, hand-computed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vheight.geometry import cross, direction_deg, distance_mm, kyphotic_angle_deg, wrap_deg


@pytest.mark.parametrize(
    ("p", "q", "row", "col", "expected"),
    [
        pytest.param((0, 0), (3, 4), 1.0, 1.0, 5.0, id="iso-3-4-5"),
        pytest.param((10.5, 20.25), (10.5, 120.25), 0.15, 0.15, 15.0, id="vertical-0.15mm"),
        pytest.param((0, 0), (30, 40), 0.2, 0.1, math.sqrt(73), id="aniso-row0.2-col0.1"),
        pytest.param((0, 0), (0, 100), 0.2, 0.1, 20.0, id="aniso-vertical-uses-row"),
        pytest.param((0, 0), (100, 0), 0.2, 0.1, 10.0, id="aniso-horizontal-uses-col"),
        pytest.param((5, 5), (5, 5), 0.3, 0.3, 0.0, id="same-point"),
    ],
)
def test_distance_mm(p, q, row, col, expected):
    assert distance_mm(p, q, row_spacing_mm=row, col_spacing_mm=col) == pytest.approx(
        expected, rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize(
    ("angle", "expected"),
    [
        pytest.param(0.0, 0.0, id="0"),
        pytest.param(180.0, 180.0, id="180-kept"),
        pytest.param(-180.0, 180.0, id="-180-becomes-180"),
        pytest.param(190.0, -170.0, id="190"),
        pytest.param(-190.0, 170.0, id="-190"),
        pytest.param(359.0, -1.0, id="359"),
        pytest.param(-345.9637565320735, 14.036243467926479, id="-346"),
        pytest.param(540.0, 180.0, id="540"),
    ],
)
def test_wrap_deg(angle, expected):
    assert wrap_deg(angle) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(st.floats(-1e6, 1e6))
def test_wrap_deg_range(angle):
    wrapped = wrap_deg(angle)
    assert -180.0 < wrapped <= 180.0
    turns = (angle - wrapped) / 360.0
    assert turns == pytest.approx(round(turns), abs=1e-6)


def test_cross_and_direction():
    assert cross((1, 0), (0, 1)) == 1.0
    assert cross((0, 1), (1, 0)) == -1.0
    assert direction_deg((-1, 0)) == 180.0
    assert direction_deg((0, 1)) == 90.0


ATAN_QUARTER = math.degrees(math.atan(0.25))  # 14.036243467926479


@pytest.mark.parametrize(
    ("sa", "sp", "ia", "ip", "row", "col", "expected"),
    [
        # Facing left (anterior at small x): anterior height 30, posterior 40, depth 40.
        pytest.param(
            (0, 10), (40, 0), (0, 40), (40, 40), 1, 1, ATAN_QUARTER, id="wedge-facing-left"
        ),
        # The same vertebra mirrored (facing right): same sign.
        pytest.param(
            (40, 10), (0, 0), (40, 40), (0, 40), 1, 1, ATAN_QUARTER, id="wedge-facing-right"
        ),
        # Anterior taller than posterior: lordotic, negative.
        pytest.param((0, 0), (40, 10), (0, 40), (40, 40), 1, 1, -ATAN_QUARTER, id="lordotic"),
        pytest.param((40, 0), (0, 10), (40, 40), (0, 40), 1, 1, -ATAN_QUARTER, id="lordotic-right"),
        pytest.param((0, 0), (40, 0), (0, 40), (40, 40), 1, 1, 0.0, id="parallel"),
        # Both endplates tilted by the same amount: parallel, zero.
        pytest.param((0, 0), (40, -10), (0, 40), (40, 30), 1, 1, 0.0, id="parallel-tilted"),
        # Rotated 180 degrees (film upside down): still kyphotic.
        pytest.param(
            (0, -10), (-40, 0), (0, -40), (-40, -40), 1, 1, ATAN_QUARTER, id="upside-down"
        ),
        # Anisotropic pixels: the 10 px anterior drop is 5 mm with 0.5 mm rows, depth 40 mm.
        pytest.param(
            (0, 10),
            (40, 0),
            (0, 40),
            (40, 40),
            0.5,
            1.0,
            math.degrees(math.atan(5 / 40)),
            id="aniso-row-0.5",
        ),
        pytest.param(
            (0, 10),
            (40, 0),
            (0, 40),
            (40, 40),
            1.0,
            0.5,
            math.degrees(math.atan(10 / 20)),
            id="aniso-col-0.5",
        ),
        # Superior endplate 10 deg kyphotic tilt, inferior -5 deg: 15 deg total.
        pytest.param(
            (0, 40 * math.tan(math.radians(10))),
            (40, 0),
            (0, 40),
            (40, 40 + 40 * math.tan(math.radians(5))),
            1,
            1,
            15.0,
            id="tilts-10-plus-5",
        ),
    ],
)
def test_kyphotic_angle(sa, sp, ia, ip, row, col, expected):
    angle = kyphotic_angle_deg(sa, sp, ia, ip, row_spacing_mm=row, col_spacing_mm=col)
    assert angle == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kyphotic_angle_degenerate_is_zero_not_error():
    assert kyphotic_angle_deg((0, 0), (0, 0), (0, 0), (0, 0)) == 0.0
    assert math.copysign(1.0, kyphotic_angle_deg((0, 0), (40, 0), (0, 40), (40, 40))) == 1.0


@given(
    st.floats(-math.pi, math.pi),
    st.floats(-40, 40),
    st.floats(-40, 40),
    st.booleans(),
)
def test_angle_formula_matches_tilts(rotation, upper_tilt_deg, lower_tilt_deg, facing_left):
    """Endplates tilted by known angles give their difference, at any film rotation."""
    depth, height = 40.0, 35.0
    s = -1.0 if facing_left else 1.0
    # Anterior corner at x = s * depth; positive tilt drops the anterior end (kyphotic).
    up_t, low_t = math.radians(upper_tilt_deg), math.radians(lower_tilt_deg)
    sp, ip = (0.0, 0.0), (0.0, height)
    sa = (s * depth * math.cos(up_t), depth * math.sin(up_t))
    ia = (s * depth * math.cos(low_t), height - depth * math.sin(low_t))
    c, n = math.cos(rotation), math.sin(rotation)

    def rot(p):
        return (c * p[0] - n * p[1], n * p[0] + c * p[1])

    angle = kyphotic_angle_deg(rot(sa), rot(sp), rot(ia), rot(ip))
    assert angle == pytest.approx(upper_tilt_deg + lower_tilt_deg, abs=1e-9)
