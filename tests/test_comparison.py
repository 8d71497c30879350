"""Pre/post/follow-up comparison: the four restoration formulas and the warnings."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import (
    Similarity,
    column,
    similarity_transforms,
    transform_points,
    vertebra_columns,
)

from vheight.annotation import Annotation, ImageRef
from vheight.calibration import Calibration, SpacingLabel
from vheight.comparison import COMPARE_RECORD_KEYS, compare
from vheight.errors import MeasurementError
from vheight.morphometry import measure

MM = Calibration.user(row_spacing_mm=1.0, col_spacing_mm=1.0, description="1 mm/px")
PROJ = Calibration(
    row_spacing_mm=1.0, col_spacing_mm=1.0, source="ImagerPixelSpacing", label=SpacingLabel.PROJ
)


def film(heights, *, calibration=MM, reference="adjacent", start="T12", source=None, **kw):
    kw.setdefault("treated_levels", ["L1"])
    a = Annotation(vertebrae=column(heights, start=start), **kw)
    return measure(a, calibration, reference=reference, source=source)


def rows(comparison, level, height=None):
    found = [r for r in comparison.records() if r["level"] == level]
    if height is None:
        return found
    (row,) = [r for r in found if r["height"] == height]
    return row


NEIGHBOUR = 29.0


@pytest.mark.parametrize(
    ("h_pre", "h_post", "expected"),
    [
        # Ref_pre = 29 (both neighbours 29).
        pytest.param(
            18.0,
            23.0,
            {
                "delta": 5.0,
                "restoration_pct_of_initial": 100 * 5 / 18,
                "restoration_pct_of_lost": 100 * 5 / 11,
                "restoration_pct_of_reference": 100 * 5 / 29,
            },
            id="lost-11-restored-5",
        ),
        pytest.param(
            14.5,
            29.0,
            {
                "delta": 14.5,
                "restoration_pct_of_initial": 100.0,
                "restoration_pct_of_lost": 100.0,
                "restoration_pct_of_reference": 50.0,
            },
            id="fully-restored",
        ),
        pytest.param(
            20.0,
            19.0,
            {
                "delta": -1.0,
                "restoration_pct_of_initial": -5.0,
                "restoration_pct_of_lost": -100 / 9,
                "restoration_pct_of_reference": -100 / 29,
            },
            id="further-collapse",
        ),
        pytest.param(
            29.0,
            30.0,
            {
                "delta": 1.0,
                "restoration_pct_of_initial": 100 / 29,
                "restoration_pct_of_lost": None,
                "restoration_pct_of_reference": 100 / 29,
            },
            id="nothing-lost-ref-equals-pre",
        ),
        pytest.param(
            31.0,
            31.0,
            {
                "delta": 0.0,
                "restoration_pct_of_initial": 0.0,
                "restoration_pct_of_lost": None,
                "restoration_pct_of_reference": 0.0,
            },
            id="taller-than-reference",
        ),
    ],
)
def test_restoration_formulas(h_pre, h_post, expected):
    n = (NEIGHBOUR, NEIGHBOUR, NEIGHBOUR)
    pre = film([n, (h_pre, 25.0, 29.0), n])
    post = film([n, (h_post, 25.0, 29.0), n])
    r = rows(compare(pre, post), "L1", "anterior")
    assert r["pre"] == pytest.approx(h_pre) and r["post"] == pytest.approx(h_post)
    assert r["reference_method"] == "adjacent"
    assert r["reference_pre"] == pytest.approx(29.0, rel=1e-12)
    assert r["unit"] == "mm"
    for key, value in expected.items():
        if value is None:
            assert r[key] is None, key
        else:
            assert r[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_per_level_fields_and_followup():
    n = (30.0, 30.0, 30.0)
    pre = film([n, (18.0, 22.0, 29.0), n])
    post = film([n, (23.0, 25.0, 29.5), n])
    fu = film([n, (21.0, 24.0, 29.0), n])
    c = compare(pre, post, fu)
    r = rows(c, "L1", "posterior")
    assert r["followup"] == pytest.approx(29.0)
    assert r["loss_since_post_pct"] == pytest.approx(100 * 0.5 / 29.5, rel=1e-9)
    a = rows(c, "L1", "anterior")
    assert a["loss_since_post_pct"] == pytest.approx(100 * 2 / 23, rel=1e-9)
    for key in ("wedge_angle_pre_deg", "wedge_angle_post_deg", "grade_pre", "grade_post"):
        assert a[key] == r[key]
    assert a["wedge_angle_change_deg"] == pytest.approx(
        a["wedge_angle_post_deg"] - a["wedge_angle_pre_deg"], rel=1e-12
    )
    assert a["wedge_angle_change_deg"] < 0  # correction
    assert a["wedge_ratio_change"] == pytest.approx(23 / 29.5 - 18 / 29, rel=1e-9)
    assert a["segmental_kyphosis_change_deg"] == pytest.approx(0.0, abs=1e-12)
    assert (a["grade_pre"], a["grade_post"], a["grade_followup"]) == (2, 1, 2)
    assert a["treated"] is True and rows(c, "T12", "anterior")["treated"] is False
    assert a["segmental_kyphosis_change_deg"] is not None
    assert rows(c, "T12", "anterior")["segmental_kyphosis_change_deg"] is None
    df = pd.DataFrame(c.records())
    assert list(df.columns) == list(COMPARE_RECORD_KEYS) and len(df) == 9
    assert [lc.level for lc in c.levels.values()] == ["T12", "L1", "L2"]


def test_posterior_method_has_no_posterior_reference():
    n = (30.0, 30.0, 30.0)
    pre = film([n, (18.0, 22.0, 29.0), n], reference="posterior")
    post = film([n, (23.0, 25.0, 29.5), n], reference="posterior")
    c = compare(pre, post)
    a, p = rows(c, "L1", "anterior"), rows(c, "L1", "posterior")
    assert a["reference_method"] == "posterior" and a["reference_pre"] == pytest.approx(29.0)
    assert a["restoration_pct_of_lost"] == pytest.approx(100 * 5 / 11, rel=1e-9)
    assert p["reference_pre"] is None
    assert p["restoration_pct_of_lost"] is None and p["restoration_pct_of_reference"] is None
    assert p["restoration_pct_of_initial"] == pytest.approx(100 * 0.5 / 29, rel=1e-9)


def test_fallback_is_reported_per_record():
    pre = film([(18.0, 22.0, 29.0)], start="L1")
    post = film([(23.0, 25.0, 29.5)], start="L1")
    c = compare(pre, post)
    a = rows(c, "L1", "anterior")
    assert a["reference_method"] == "posterior"
    assert a["reference_pre"] == pytest.approx(29.0)
    assert any(w.startswith("pre: L1: no complete adjacent level") for w in c.warnings)


N = (30.0, 30.0, 30.0)
FRACTURE_PRE, FRACTURE_POST = (18.0, 22.0, 29.0), (23.0, 25.0, 29.5)


def _column_films(**post_kw):
    return film([N, FRACTURE_PRE, N]), film([N, FRACTURE_POST, N], **post_kw)


def test_calibration_sources_differ_compares_in_px():
    pre = film([N, FRACTURE_PRE, N], calibration=Calibration.user(row_spacing_mm=0.1))
    post = film([N, FRACTURE_POST, N], calibration=PROJ)
    c = compare(pre, post)
    assert c.unit == "px" and {r["unit"] for r in c.records()} == {"px"}
    a = rows(c, "L1", "anterior")
    assert a["pre"] == pytest.approx(18.0) and a["post"] == pytest.approx(23.0)
    assert a["restoration_pct_of_initial"] == pytest.approx(100 * 5 / 18, rel=1e-9)
    assert c.warnings[0] == (
        "the calibration sources differ (pre mm User from User, post mm Proj from "
        "ImagerPixelSpacing): lengths and deltas are compared in pixels (px), not mm; "
        "the percentages are the comparable figures"
    )
    # The measurements given are kept as they were.
    assert c.pre.unit == "mm"


def test_one_uncalibrated_and_none_calibrated():
    pre = film([N, FRACTURE_PRE, N])
    post = film([N, FRACTURE_POST, N], calibration=Calibration.uncalibrated())
    c = compare(pre, post)
    assert c.unit == "px" and c.warnings[0].startswith("one film is uncalibrated (pre mm User")
    both = compare(
        film([N, FRACTURE_PRE, N], calibration=None), film([N, FRACTURE_POST, N], calibration=None)
    )
    assert both.unit == "px"
    assert both.warnings[0].startswith("no film is calibrated: lengths and deltas are in pixels")
    same = compare(*_column_films())
    assert same.unit == "mm" and not any("calibrat" in w for w in same.warnings)


@pytest.mark.parametrize(
    ("scale", "warned"),
    [
        pytest.param(1.08, True, id="magnified-8pct"),
        pytest.param(0.94, True, id="smaller-6pct"),
        pytest.param(1.04, False, id="within-5pct"),
        pytest.param(1.0, False, id="same"),
    ],
)
def test_adjacent_reference_difference_warning(scale, warned):
    pre = film([N, FRACTURE_PRE, N])
    vert = transform_points(
        column([N, FRACTURE_POST, N], start="T12"), Similarity(0.3, scale, 5, 9)
    )
    post = measure(Annotation(vertebrae=vert, treated_levels=("L1",)), MM)
    c = compare(pre, post)
    messages = [w for w in c.warnings if "adjacent reference heights" in w]
    if warned:
        pct = 100 * (scale - 1)
        assert messages == [
            f"L1: adjacent reference heights (T12+L2) differ by more than 5% between the pre and "
            f"post films: anterior {pct:+.1f} % (30 -> {30 * scale:.4g} mm), middle {pct:+.1f} % "
            f"(30 -> {30 * scale:.4g} mm), posterior {pct:+.1f} % (30 -> {30 * scale:.4g} mm); "
            "magnification or projection difference?"
        ]
    else:
        assert messages == []
    # Untreated levels next to the treated one have no untreated common neighbour: no warning.
    assert not any(w.startswith(("T12:", "L2:")) for w in c.warnings)


def test_patient_position_timepoint_and_same_film_warnings():
    image = ImageRef(sop_instance_uid="1.2.3")
    pre = film([N, FRACTURE_PRE, N], patient_position="standing", timepoint="post", image=image)
    post = film([N, FRACTURE_POST, N], patient_position="supine", timepoint="post", image=image)
    c = compare(pre, post)
    assert (
        "patient position differs: pre standing, post supine (loading changes vertebral heights)"
        in c.warnings
    )
    assert "the pre film is annotated as timepoint 'post', but is used as 'pre'" in c.warnings
    assert "the pre and post annotations are of the same film (1.2.3)" in c.warnings
    unknown = compare(
        film([N, FRACTURE_PRE, N], patient_position="standing"), film([N, FRACTURE_POST, N])
    )
    assert not any("patient position" in w for w in unknown.warnings)


def test_treated_level_missing_or_incomplete_and_one_sided_levels():
    pre = film([N, FRACTURE_PRE, N, N])  # T12..L3
    post_vert = column([N, None, N], start="T12")
    c = compare(pre, measure(Annotation(vertebrae=post_vert, treated_levels=("L1",)), MM))
    assert "L1 is treated but not annotated on the post film" in c.warnings
    assert "L3 is measured on the pre film only: not compared" in c.warnings
    assert [lc for lc in c.levels] == ["T12", "L2"]
    partial = column([N, FRACTURE_POST, N], start="T12")
    partial["L1"] = {k: v for k, v in partial["L1"].items() if k != "inferior_middle"}
    fu = measure(Annotation(vertebrae=partial, treated_levels=("L1",)), MM)
    c = compare(pre, film([N, FRACTURE_POST, N]), fu)
    assert "L1 is treated but incomplete on the followup film" in c.warnings
    assert rows(c, "L1", "anterior")["followup"] is None
    assert rows(c, "L1", "anterior")["loss_since_post_pct"] is None
    # A level treated only according to the post file still counts as treated.
    c = compare(film([N, FRACTURE_PRE, N], treated_levels=[]), film([N, FRACTURE_POST, N]))
    assert rows(c, "L1", "anterior")["treated"] is True


def test_reference_methods_differ_and_nothing_in_common():
    pre = film([N, FRACTURE_PRE, N], reference="adjacent")
    post = film([N, FRACTURE_POST, N], reference="max")
    c = compare(pre, post)
    assert "reference methods differ: pre 'adjacent', post 'max'" in c.warnings
    far = film([N], start="L4", treated_levels=[])
    c = compare(film([N], start="T5", treated_levels=[]), far)
    assert c.records() == [] and c.levels == {}
    assert "no level is measured on both the pre and the post film: nothing compared" in c.warnings


def test_compare_document_and_errors():
    pre, post = _column_films()
    pre = dataclasses.replace(pre, source="a.json")
    doc = compare(pre, post).to_dict()
    assert list(doc) == ["pre", "post", "followup", "levels", "warnings"]
    assert doc["pre"] == "a.json" and doc["post"] is None and doc["followup"] is None
    with pytest.raises(MeasurementError, match="post: expected a Measurement"):
        compare(pre, {"L1": 3})  # type: ignore[arg-type]


def test_fallback_on_one_film_only_is_flagged():
    pre = film([FRACTURE_PRE], start="L1")
    post = film([N, FRACTURE_POST, N])
    c = compare(pre, post)
    assert (
        "L1: reference method used is 'posterior' on the pre film but 'adjacent' on the post film"
        in c.warnings
    )
    assert rows(c, "L1", "anterior")["reference_method"] == "posterior"
    assert [lc for lc in c.levels] == ["L1"]
    assert "T12 is measured on the post film only: not compared" in c.warnings


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vertebra_columns(min_levels=3, max_levels=5), similarity_transforms(scale=False))
def test_same_spine_moved_on_the_film_shows_no_change(vert, motion):
    """A post film of an unchanged spine, shifted and rotated: every delta is zero."""
    pre = measure(Annotation(vertebrae=vert), MM)
    post = measure(Annotation(vertebrae=transform_points(vert, motion)), MM)
    c = compare(pre, post)
    assert len(c.records()) == 3 * len(vert)
    for r in c.records():
        assert r["delta"] == pytest.approx(0.0, abs=1e-9)
        assert r["restoration_pct_of_initial"] == pytest.approx(0.0, abs=1e-9)
        assert r["wedge_angle_change_deg"] == pytest.approx(0.0, abs=1e-9)
        assert r["wedge_ratio_change"] == pytest.approx(0.0, abs=1e-9)
        if r["segmental_kyphosis_change_deg"] is not None:
            assert r["segmental_kyphosis_change_deg"] == pytest.approx(0.0, abs=1e-9)
    assert not any("adjacent reference heights" in w for w in c.warnings)
