"""Calibration rules 1-6 of measurements.md ("Which spacing"), labels and validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from vheight.calibration import (
    Calibration,
    SpacingLabel,
    calibration_from_header,
    spacing_problem,
)
from vheight.errors import CalibrationError

# Each case: header values -> (label, row mm, col mm, source); None = uncalibrated.
RULES = [
    # Rule 2: PixelSpacing with a calibration type.
    pytest.param(
        {"pixel_spacing": [0.1, 0.12], "pixel_spacing_calibration_type": "GEOMETRY"},
        ("mm ERMF", 0.1, 0.12, "PixelSpacing (GEOMETRY)"),
        id="rule2-geometry",
    ),
    pytest.param(
        {"pixel_spacing": [0.1, 0.1], "pixel_spacing_calibration_type": "FIDUCIAL"},
        ("mm Calibrated", 0.1, 0.1, "PixelSpacing (FIDUCIAL)"),
        id="rule2-fiducial",
    ),
    pytest.param(
        {
            "pixel_spacing": [0.1, 0.1],
            "pixel_spacing_calibration_type": " geometry ",
            "imager_pixel_spacing": [0.15, 0.15],
            "estimated_radiographic_magnification_factor": 1.5,
        },
        ("mm ERMF", 0.1, 0.1, "PixelSpacing (GEOMETRY)"),
        id="rule2-wins-over-ermf",
    ),
    # Rule 3: magnification correction of ImagerPixelSpacing.
    pytest.param(
        {"imager_pixel_spacing": [0.15, 0.18], "estimated_radiographic_magnification_factor": 1.2},
        ("mm ERMF", 0.125, 0.15, "ImagerPixelSpacing/ERMF"),
        id="rule3-ermf",
    ),
    pytest.param(
        {
            "imager_pixel_spacing": [0.2, 0.2],
            "distance_source_to_detector_mm": 1500,
            "distance_source_to_patient_mm": 1200,
        },
        ("mm ERMF", 0.16, 0.16, "ImagerPixelSpacing*SOD/SID"),
        id="rule3-sid-sod",
    ),
    pytest.param(
        {
            "imager_pixel_spacing": [0.2, 0.2],
            "estimated_radiographic_magnification_factor": 1.0,
            "distance_source_to_detector_mm": 1000,
            "distance_source_to_patient_mm": 800,
        },
        ("mm ERMF", 0.16, 0.16, "ImagerPixelSpacing*SOD/SID"),
        id="rule3-ermf-1-then-distances",
    ),
    pytest.param(
        {
            "imager_pixel_spacing": [0.2, 0.2],
            "estimated_radiographic_magnification_factor": 1.25,
            "distance_source_to_detector_mm": 1000,
            "distance_source_to_patient_mm": 500,
        },
        ("mm ERMF", 0.16, 0.16, "ImagerPixelSpacing/ERMF"),
        id="rule3-ermf-before-distances",
    ),
    pytest.param(
        {"imager_pixel_spacing": [0.2, 0.2], "estimated_radiographic_magnification_factor": "1.25"},
        ("mm ERMF", 0.16, 0.16, "ImagerPixelSpacing/ERMF"),
        id="rule3-ermf-as-text",
    ),
    # Rule 4: detector plane, or a differing PixelSpacing.
    pytest.param(
        {"imager_pixel_spacing": [0.139, 0.139]},
        ("mm Proj", 0.139, 0.139, "ImagerPixelSpacing"),
        id="rule4-proj",
    ),
    pytest.param(
        {
            "imager_pixel_spacing": [0.139, 0.139],
            "estimated_radiographic_magnification_factor": 0.9,
        },
        ("mm Proj", 0.139, 0.139, "ImagerPixelSpacing"),
        id="rule4-ermf-below-1-ignored",
    ),
    pytest.param(
        {
            "imager_pixel_spacing": [0.2, 0.2],
            "distance_source_to_detector_mm": 1000,
            "distance_source_to_patient_mm": 1000,
        },
        ("mm Proj", 0.2, 0.2, "ImagerPixelSpacing"),
        id="rule4-sod-equals-sid",
    ),
    pytest.param(
        {"imager_pixel_spacing": [0.2, 0.2], "distance_source_to_detector_mm": 1000},
        ("mm Proj", 0.2, 0.2, "ImagerPixelSpacing"),
        id="rule4-only-sid",
    ),
    pytest.param(
        {"imager_pixel_spacing": [0.139, 0.139], "pixel_spacing": [0.139, 0.139]},
        ("mm Proj", 0.139, 0.139, "ImagerPixelSpacing"),
        id="rule4-same-pixel-spacing",
    ),
    pytest.param(
        {"imager_pixel_spacing": [0.139, 0.139], "pixel_spacing": [0.12, 0.12]},
        ("mm Calibrated", 0.12, 0.12, "PixelSpacing"),
        id="rule4-differing-pixel-spacing",
    ),
    pytest.param(
        {"imager_pixel_spacing": [0.139, 0.139], "pixel_spacing": [0.0, 0.0]},
        ("mm Proj", 0.139, 0.139, "ImagerPixelSpacing"),
        id="rule4-zero-pixel-spacing-ignored",
    ),
    # Rule 5: PixelSpacing alone.
    pytest.param(
        {"pixel_spacing": [0.143, 0.143]},
        ("mm", 0.143, 0.143, "PixelSpacing"),
        id="rule5",
    ),
    pytest.param(
        {"pixel_spacing": [0.143, 0.15], "pixel_spacing_calibration_type": "OTHER"},
        ("mm", 0.143, 0.15, "PixelSpacing"),
        id="rule5-unknown-type",
    ),
    # Rule 6: nothing usable.
    pytest.param({}, ("px", 1.0, 1.0, "None"), id="rule6-nothing"),
    pytest.param({"pixel_spacing": [0, 0]}, ("px", 1.0, 1.0, "None"), id="rule6-zero"),
    pytest.param({"pixel_spacing": [-0.1, 0.1]}, ("px", 1.0, 1.0, "None"), id="rule6-negative"),
    pytest.param({"pixel_spacing": [math.nan, 0.1]}, ("px", 1.0, 1.0, "None"), id="rule6-nan"),
    pytest.param({"pixel_spacing": [math.inf, 0.1]}, ("px", 1.0, 1.0, "None"), id="rule6-inf"),
    pytest.param({"pixel_spacing": [0.1]}, ("px", 1.0, 1.0, "None"), id="rule6-one-value"),
    pytest.param({"pixel_spacing": [0.1, 0.1, 0.1]}, ("px", 1.0, 1.0, "None"), id="rule6-three"),
    pytest.param({"pixel_spacing": "abc"}, ("px", 1.0, 1.0, "None"), id="rule6-text"),
    pytest.param(
        {"imager_pixel_spacing": [0, 0], "pixel_spacing_calibration_type": "GEOMETRY"},
        ("px", 1.0, 1.0, "None"),
        id="rule6-zero-imager",
    ),
]


@pytest.mark.parametrize(("header", "expected"), RULES)
def test_calibration_rules(header, expected):
    calibration, warnings = calibration_from_header(**header)
    label, row, col, source = expected
    assert calibration.label.value == label
    assert calibration.row_spacing_mm == pytest.approx(row)
    assert calibration.col_spacing_mm == pytest.approx(col)
    assert calibration.source == source
    assert calibration.unit == ("px" if label == "px" else "mm")
    assert calibration.is_calibrated == (label != "px")
    if label == "px":
        assert warnings and "measurements are in pixels" in warnings[-1]
    unusable = [v for k, v in header.items() if "spacing" in k and not k.endswith("type")]
    if any(
        isinstance(v, str) or len(v) != 2 or not all(x > 0 and math.isfinite(x) for x in v)
        for v in unusable
    ):
        assert any("ignored" in w for w in warnings)
    else:
        assert all("ignored" not in w for w in warnings)


_KEYWORDS = {
    "pixel_spacing": "PixelSpacing",
    "pixel_spacing_calibration_type": "PixelSpacingCalibrationType",
    "imager_pixel_spacing": "ImagerPixelSpacing",
    "estimated_radiographic_magnification_factor": "EstimatedRadiographicMagnificationFactor",
    "distance_source_to_detector_mm": "DistanceSourceToDetector",
    "distance_source_to_patient_mm": "DistanceSourceToPatient",
}


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS:UserWarning")
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        case
        for case in RULES
        if not any(
            isinstance(v, float) and not math.isfinite(v)
            for v in [
                x
                for value in case.values[0].values()
                for x in (value if isinstance(value, list) else [value])
            ]
        )
        and case.values[0].get("pixel_spacing") != "abc"
    ],
)
def test_calibration_rules_from_a_pydicom_dataset(header, expected):
    ds = Dataset()
    for key, value in header.items():
        setattr(ds, _KEYWORDS[key], value)
    calibration, _ = Calibration.from_dataset(ds)
    assert calibration.label.value == expected[0]
    assert calibration.row_spacing_mm == pytest.approx(expected[1])
    assert calibration.col_spacing_mm == pytest.approx(expected[2])


def test_real_zero_spacing_string_from_a_file_header():
    ds = Dataset()
    ds.PixelSpacing = "0.000\\0.000"  # as in pydicom-data's RG1 films
    calibration, warnings = Calibration.from_dataset(ds)
    assert calibration.label is SpacingLabel.PX
    assert warnings[0].startswith("PixelSpacing = 0.000\\0.000 is not usable")


def test_every_label_and_its_text():
    assert [label.value for label in SpacingLabel] == [
        "mm User",
        "mm ERMF",
        "mm Calibrated",
        "mm Proj",
        "mm",
        "px",
    ]
    assert str(SpacingLabel.PROJ) == "mm Proj"


# -- rule 1 and constructors --------------------------------------------------------------------


def test_user_calibration_rule_1():
    user = Calibration.user(row_spacing_mm=0.15, description="typed in")
    assert user.label is SpacingLabel.USER and user.source == "User"
    assert user.col_spacing_mm == 0.15 and user.describe().startswith("0.15 x 0.15 mm/px (mm User")
    assert Calibration.user(row_spacing_mm=0.1, col_spacing_mm=0.2).aspect == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("p", "q", "length_mm", "aspect", "row", "col"),
    [
        pytest.param((0, 0), (100, 0), 25.4, 1.0, 0.254, 0.254, id="horizontal"),
        pytest.param((10, 10), (10, 210), 50.0, 1.0, 0.25, 0.25, id="vertical"),
        pytest.param((0, 0), (30, 40), 10.0, 1.0, 0.2, 0.2, id="diagonal-3-4-5"),
        pytest.param((0, 0), (0, 100), 20.0, 2.0, 0.2, 0.1, id="vertical-tall-pixels"),
        pytest.param((0, 0), (100, 0), 20.0, 2.0, 0.4, 0.2, id="horizontal-tall-pixels"),
    ],
)
def test_from_known_length(p, q, length_mm, aspect, row, col):
    cal = Calibration.from_known_length(p, q, length_mm, aspect=aspect)
    assert cal.label is SpacingLabel.USER
    assert cal.row_spacing_mm == pytest.approx(row) and cal.col_spacing_mm == pytest.approx(col)
    dx = (q[0] - p[0]) * cal.col_spacing_mm
    dy = (q[1] - p[1]) * cal.row_spacing_mm
    assert math.hypot(dx, dy) == pytest.approx(length_mm)


@given(
    p=st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)),
    d=st.tuples(st.floats(1, 1e4), st.floats(-1e4, 1e4)),
    length_mm=st.floats(0.1, 1000),
    aspect=st.floats(0.25, 4),
)
def test_known_length_is_reproduced_in_mm(p, d, length_mm, aspect):
    q = (p[0] + d[0], p[1] + d[1])
    col = length_mm / math.hypot(q[0] - p[0], (q[1] - p[1]) * aspect)
    if spacing_problem(col * aspect, col) is not None:
        with pytest.raises(CalibrationError, match="outside the plausible range"):
            Calibration.from_known_length(p, q, length_mm, aspect=aspect)
        return
    cal = Calibration.from_known_length(p, q, length_mm, aspect=aspect)
    dx = (q[0] - p[0]) * cal.col_spacing_mm
    dy = (q[1] - p[1]) * cal.row_spacing_mm
    assert math.hypot(dx, dy) == pytest.approx(length_mm, rel=1e-9)
    assert cal.aspect == pytest.approx(aspect, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"length_mm": 0}, "known length must be > 0 mm", id="zero-length"),
        pytest.param({"length_mm": -5}, "known length must be > 0 mm", id="negative-length"),
        pytest.param({"length_mm": 10, "aspect": 0}, "aspect ratio must be > 0", id="aspect"),
        pytest.param({"length_mm": 10, "q": (3, 3)}, "zero length", id="same-point"),
    ],
)
def test_from_known_length_refuses_bad_input(kwargs, match):
    args = {"p": (3, 3), "q": (13, 3), **kwargs}
    with pytest.raises(CalibrationError, match=match):
        Calibration.from_known_length(args.pop("p"), args.pop("q"), **args)


def test_from_dict_round_trip_and_errors():
    cal = Calibration.from_dict(
        {"row_spacing_mm": 0.15, "col_spacing_mm": 0.16, "source": "User", "description": "ruler"}
    )
    assert cal.label is SpacingLabel.USER and cal.description == "ruler"
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict({"row_spacing_mm": 0.1, "col_spacing_mm": 0.1}).source == "User"
    with pytest.raises(CalibrationError, match="needs 'row_spacing_mm' and 'col_spacing_mm'"):
        Calibration.from_dict({"row_spacing_mm": 0.1})
    with pytest.raises(CalibrationError, match="boolean"):
        Calibration.from_dict({"row_spacing_mm": True, "col_spacing_mm": 0.1})
    with pytest.raises(
        CalibrationError, match=r"row_spacing_mm must be a finite number > 0, found 0"
    ):
        Calibration.from_dict({"row_spacing_mm": 0, "col_spacing_mm": 0.1})


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "x", None, True])
def test_constructor_refuses_unusable_spacing(bad):
    with pytest.raises(CalibrationError, match="must be a finite number > 0"):
        Calibration(row_spacing_mm=bad, col_spacing_mm=0.1, label=SpacingLabel.MM)


def test_uncalibrated_must_be_unit_spacing():
    assert Calibration.uncalibrated().describe() == "uncalibrated (px)"
    with pytest.raises(CalibrationError, match="uncalibrated"):
        Calibration(row_spacing_mm=0.2, col_spacing_mm=0.2, label="px")


def test_calibration_module_is_pure():
    import ast
    import inspect

    import vheight.calibration as module

    tree = ast.parse(inspect.getsource(module))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"pydicom", "numpy", "streamlit", "PIL", "os", "pathlib", "io"}


def test_an_unreadable_header_value_counts_as_absent():
    class Header:
        ImagerPixelSpacing = (0.139, 0.139)

        @property
        def PixelSpacing(self):  # noqa: N802 - DICOM keyword
            raise ValueError("'0.1x' is not a valid DS")

    calibration, warnings = Calibration.from_dataset(Header())
    assert calibration.label is SpacingLabel.PROJ
    assert warnings == ["PixelSpacing cannot be read ('0.1x' is not a valid DS): ignored"]
