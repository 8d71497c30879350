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


def test_calibration_labels_differ_keep_mm_each_with_its_own_calibration():
    pre = film([N, FRACTURE_PRE, N], calibration=Calibration.user(row_spacing_mm=0.1))
    post = film([N, FRACTURE_POST, N], calibration=PROJ)
    c = compare(pre, post)
    assert c.unit == "mm" and c.followup_unit == "mm"
    assert {r["unit"] for r in c.records()} == {"mm"}
    a = rows(c, "L1", "anterior")
    # pre at 0.1 mm/px (rows), post at the PROJ spacing: each film its own mm.
    assert a["pre"] == pytest.approx(pre["L1"].anterior_height)
    assert a["post"] == pytest.approx(post["L1"].anterior_height)
    assert c.warnings[0] == (
        "the calibration labels differ (pre mm User from User, post mm Proj from "
        "ImagerPixelSpacing): lengths stay in mm, each "
        "film with its own calibration, but detector-plane spacing (mm Proj) includes 5-20 % "
        "magnification; loss_reduction_pct_points and restoration_pct_of_lost_relative do not "
        "depend on it"
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
    # An unchanged spine has no new fracture, whatever the reference.
    assert c.incident_levels == ()
    for r in c.records():
        assert r["loss_reduction_pct_points"] in (None, pytest.approx(0.0, abs=1e-9))


# -- v1.1: same patient, right order ---------------------------------------------------------

from datetime import datetime  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

from vheight.comparison import (  # noqa: E402
    V1_1_COMPARE_RECORD_KEYS,
    FilmFacts,
    parse_dicom_datetime,
)
from vheight.errors import ComparisonError, VHeightError  # noqa: E402


def facts(patient="P1", when=None, view="LL", orientation="A\\F", issuer=None, name=None):
    return FilmFacts(
        name=name,
        patient_id=patient,
        issuer_of_patient_id=issuer,
        acquired=None if when is None else datetime.fromisoformat(when),
        view_position=view,
        patient_orientation=orientation,
    )


def test_different_patients_are_not_compared_unless_allowed():
    pre, post = _column_films()
    pre = dataclasses.replace(pre, source="pre.vheight.json")
    post = dataclasses.replace(post, source="other.vheight.json")
    ids = (facts("VH001"), facts("VH999"))
    message = (
        "pre.vheight.json (pre, patient ID VH001) and other.vheight.json (post, patient ID VH999) "
        "belong to different patients: not compared"
    )
    with pytest.raises(ComparisonError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare(pre, post, facts=ids)
    assert issubclass(ComparisonError, VHeightError) and issubclass(ComparisonError, ValueError)
    c = compare(pre, post, facts=ids, allow_different_patients=True)
    assert f"{message.removesuffix(': not compared')}: compared on request" in c.warnings
    assert rows(c, "L1", "anterior")["delta"] == pytest.approx(5.0)
    # The same ID from two issuers is two patients; an unknown ID is not checked.
    with pytest.raises(ComparisonError, match="issuer B"):
        compare(pre, post, facts=(facts("VH001", issuer="A"), facts("VH001", issuer="B")))
    for known in [(facts("VH001"), facts(None)), (facts("VH001", issuer="A"), facts("VH001"))]:
        assert not any("patients" in w for w in compare(pre, post, facts=known).warnings)
    # A different follow-up patient is refused too, by role.
    fu = film([N, (21.0, 24.0, 29.0), N])
    with pytest.raises(ComparisonError, match=r"\(followup, patient ID X\)"):
        compare(pre, post, fu, facts={"pre": facts("VH001"), "followup": facts("X")})


@pytest.mark.parametrize(
    ("dates", "days", "warning"),
    [
        pytest.param(
            ("2026-01-05T09:30", "2026-01-07T10:00", "2026-04-06T09:00"),
            (2, 89),
            None,
            id="in-order",
        ),
        pytest.param(
            ("2026-01-09T09:30", "2026-01-05T09:30", None),
            (-4, None),
            "the films' dates are not in the order pre <= post <= follow-up (pre 2026-01-09 "
            "09:30, post 2026-01-05 09:30): the post film was taken before the pre film; "
            "check the timepoints",
            id="post-before-pre",
        ),
        pytest.param(
            ("2026-01-05T09:30", "2026-01-07T10:00", "2026-01-07T08:00"),
            (2, 0),
            "the films' dates are not in the order pre <= post <= follow-up (pre 2026-01-05 "
            "09:30, post 2026-01-07 10:00, followup 2026-01-07 08:00): the followup film was "
            "taken before the post film; check the timepoints",
            id="followup-hours-before-post",
        ),
        pytest.param((None, "2026-01-07T10:00", None), (None, None), None, id="unknown"),
    ],
)
def test_dates_order_and_days(dates, days, warning):
    pre, post = _column_films()
    fu = film([N, (21.0, 24.0, 29.0), N]) if dates[2] else None
    c = compare(pre, post, fu, facts=[facts(when=d) for d in dates])
    r = rows(c, "L1", "anterior")
    assert (r["days_pre_to_post"], r["days_post_to_followup"]) == days
    assert (c.days_pre_to_post, c.days_post_to_followup) == days
    dated = [w for w in c.warnings if "dates" in w]
    assert dated == ([] if warning is None else [warning])


def test_view_and_orientation_differ_warn():
    pre, post = _column_films()
    c = compare(pre, post, facts=(facts(view="LL"), facts(view="AP", orientation="L\\F")))
    assert (
        "view position (ViewPosition) differs: pre LL, post AP; heights of different "
        "projections do not compare" in c.warnings
    )
    assert any(
        w.startswith("patient orientation (PatientOrientation) differs: pre A\\F, post L\\F")
        for w in c.warnings
    )
    same = compare(pre, post, facts=(facts(), facts(view=None)))
    assert not any("differs" in w for w in same.warnings)


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        pytest.param("20260105", "093000", datetime(2026, 1, 5, 9, 30), id="da-tm"),
        pytest.param("20260105", "0930", datetime(2026, 1, 5, 9, 30), id="tm-hhmm"),
        pytest.param(
            "20260105", "09:30:15.5", datetime(2026, 1, 5, 9, 30, 15, 500000), id="tm-legacy-colons"
        ),
        pytest.param("20260105", None, datetime(2026, 1, 5), id="no-time"),
        pytest.param("20260105", "bad", datetime(2026, 1, 5), id="bad-time-is-midnight"),
        pytest.param(
            "20260105093000.25+0100",
            None,
            datetime(2026, 1, 5, 9, 30, 0, 250000),
            id="dt-with-zone",
        ),
        pytest.param("2026010512", None, datetime(2026, 1, 5, 12), id="dt-hours"),
        pytest.param("20261305", None, None, id="month-13"),
        pytest.param("", "093000", None, id="empty"),
        pytest.param(None, None, None, id="none"),
    ],
)
def test_parse_dicom_datetime(date, time, expected):
    assert parse_dicom_datetime(date, time) == expected


def test_facts_from_a_header_summary():
    class Info:
        name = "pre.dcm"
        patient_id = " VH7 "
        acquisition_datetime = None
        content_date = "20260107"
        content_time = "101500"
        study_date = "20260101"
        view_position = "LL"
        patient_orientation = ["A", "F"]

    f = FilmFacts.from_header(Info())
    assert f == FilmFacts(
        name="pre.dcm",
        patient_id="VH7",
        acquired=datetime(2026, 1, 7, 10, 15),
        view_position="LL",
        patient_orientation="A\\F",
    )
    Info.content_date = None
    assert FilmFacts.from_header(Info()).acquired == datetime(2026, 1, 1)
    Info.acquisition_datetime = "20260108"
    assert FilmFacts.from_header(Info(), name="x").acquired == datetime(2026, 1, 8)
    assert FilmFacts.from_header(object()) == FilmFacts()
    with pytest.raises(MeasurementError, match="facts of the post film: expected FilmFacts"):
        compare(*_column_films(), facts=(None, {"patient_id": "x"}))


# -- v1.1: units -------------------------------------------------------------------------------

HALF = Calibration.user(row_spacing_mm=0.5, col_spacing_mm=0.5)


def test_uncalibrated_followup_leaves_pre_post_in_mm():
    pre = film([N, FRACTURE_PRE, N], calibration=HALF)
    post = film([N, FRACTURE_POST, N], calibration=HALF)
    fu = film([N, (21.0, 24.0, 29.0), N], calibration=None)
    c = compare(pre, post, fu)
    assert (c.unit, c.followup_unit) == ("mm", "px")
    a = rows(c, "L1", "anterior")
    assert (a["unit"], a["followup_unit"]) == ("mm", "px")
    assert a["pre"] == pytest.approx(9.0) and a["post"] == pytest.approx(11.5)
    assert a["delta"] == pytest.approx(2.5) and a["lost_pre"] == pytest.approx(15.0 - 9.0)
    assert a["followup"] == pytest.approx(21.0)  # px
    assert a["loss_since_post_pct"] == pytest.approx(100 * (23 - 21) / 23, rel=1e-9)  # px / px
    assert any(
        w.startswith(
            "the follow-up film is uncalibrated (pre mm User from User, post mm User from User, "
            "followup uncalibrated (px)): pre/post lengths stay in mm"
        )
        for w in c.warnings
    )
    # Without the follow-up: all mm, followup_unit equal to unit.
    both = compare(pre, post)
    assert (both.unit, both.followup_unit) == ("mm", "mm")
    assert {r["followup_unit"] for r in both.records()} == {"mm"}


def test_uncalibrated_pre_makes_everything_px():
    pre = film([N, FRACTURE_PRE, N], calibration=None)
    post = film([N, FRACTURE_POST, N], calibration=HALF)
    fu = film([N, (21.0, 24.0, 29.0), N], calibration=HALF)
    c = compare(pre, post, fu)
    assert (c.unit, c.followup_unit) == ("px", "px")
    a = rows(c, "L1", "anterior")
    assert (a["pre"], a["post"], a["followup"]) == pytest.approx((18.0, 23.0, 21.0))


def _true_losses_film(heights, spacing, label=SpacingLabel.ERMF):
    cal = Calibration(row_spacing_mm=spacing, col_spacing_mm=spacing, source="test", label=label)
    return film(heights, calibration=cal, start="T12")


def test_different_ermf_keeps_mm_and_relative_figures_are_the_true_ones():
    # True heights (mm): neighbours 30, L1 18 / 22 / 29 before and 24 / 25 / 29.5 after.
    # Both films are 0.2 mm/px, but the post film's header claims 0.22 (a wrong
    # magnification): its mm are 10 % too large, its within-film ratios are right.
    px = [tuple(h / 0.2 for h in hs) for hs in (N, (18.0, 22.0, 29.0), N)]
    px_post = [tuple(h / 0.2 for h in hs) for hs in (N, (24.0, 25.0, 29.5), N)]
    pre = _true_losses_film(px, 0.2)
    post = _true_losses_film(px_post, 0.22, SpacingLabel.PROJ)
    c = compare(pre, post)
    assert c.unit == "mm" and any(
        "calibration labels differ (pre mm ERMF from test, post mm Proj from test)" in w
        for w in c.warnings
    )
    true = {  # loss_pre, loss_post from the true heights, reference 30
        "anterior": (40.0, 20.0),
        "middle": (100 * (1 - 22 / 30), 100 * (1 - 25 / 30)),
        "posterior": (100 * (1 - 29 / 30), 100 * (1 - 29.5 / 30)),
    }
    for h, (loss_pre, loss_post) in true.items():
        r = rows(c, "L1", h)
        assert r["loss_reduction_pct_points"] == pytest.approx(loss_pre - loss_post, rel=1e-9)
        assert r["restoration_pct_of_lost_relative"] == pytest.approx(
            100 * (loss_pre - loss_post) / loss_pre, rel=1e-9
        )
    # ...while the mm figures carry the 10 % error: +8.4 mm, not the true +6 mm.
    assert rows(c, "L1", "anterior")["delta"] == pytest.approx(24 * 1.1 - 18, rel=1e-9)


@pytest.mark.parametrize(
    ("height", "lost_pre", "points", "relative"),
    [
        # Ref_pre = 30 for every height; pre 18 / 22 / 29, post 24 / 25 / 29.5.
        pytest.param("anterior", 12.0, 20.0, 50.0, id="anterior"),
        pytest.param("middle", 8.0, 10.0, 37.5, id="middle"),
        pytest.param("posterior", 1.0, 100 * 0.5 / 30, 50.0, id="posterior"),
    ],
)
def test_lost_pre_and_relative_restoration_hand_computed(height, lost_pre, points, relative):
    c = compare(film([N, (18.0, 22.0, 29.0), N]), film([N, (24.0, 25.0, 29.5), N]))
    r = rows(c, "L1", height)
    assert r["lost_pre"] == pytest.approx(lost_pre, rel=1e-12)
    assert r["loss_reduction_pct_points"] == pytest.approx(points, rel=1e-9)
    assert r["restoration_pct_of_lost_relative"] == pytest.approx(relative, rel=1e-9)


def test_nothing_lost_gives_null_relative_restoration():
    # L1 taller than its reference before: loss_pct_pre < 0; equal: 0.
    c = compare(film([N, (32.0, 30.0, 30.0), N]), film([N, (33.0, 30.0, 30.0), N]))
    a, m = rows(c, "L1", "anterior"), rows(c, "L1", "middle")
    assert a["lost_pre"] == pytest.approx(-2.0) and a["restoration_pct_of_lost_relative"] is None
    assert a["loss_reduction_pct_points"] == pytest.approx(
        100 * (1 - 32 / 30) - 100 * (1 - 33 / 30)
    )
    assert m["lost_pre"] == pytest.approx(0.0) and m["restoration_pct_of_lost_relative"] is None
    # The posterior method has no posterior reference: nulls, not errors.
    p = compare(
        film([N, FRACTURE_PRE, N], reference="posterior"),
        film([N, FRACTURE_POST, N], reference="posterior"),
    )
    r = rows(p, "L1", "posterior")
    assert r["lost_pre"] is None and r["loss_reduction_pct_points"] is None
    assert r["restoration_pct_of_lost_relative"] is None


def test_record_keys_gain_the_v1_1_fields_at_the_end():
    c = compare(*_column_films())
    assert list(c.records()[0]) == list(COMPARE_RECORD_KEYS)
    assert COMPARE_RECORD_KEYS[-len(V1_1_COMPARE_RECORD_KEYS) :] == V1_1_COMPARE_RECORD_KEYS


# -- v1.1: new fractures and recollapse -------------------------------------------------------


# T10 normal, T11 the untreated level under test, T12 normal, L1 treated, L2 normal:
# T11's adjacent reference is 30 on every film.
def spine(t11, l1=FRACTURE_PRE, **kw):
    return film([N, t11, N, l1, N], start="T10", **kw)


@pytest.mark.parametrize(
    ("pre_t11", "later_t11", "flagged", "reason"),
    [
        # Already grade 2 before (26.7 % loss): 22 -> 17.6 mm is -20 % and -4.4 mm.
        pytest.param(
            (22.0, 30.0, 30.0),
            (17.6, 30.0, 30.0),
            True,
            "anterior height -20.0 % (-4.40 mm) since pre",
            id="20pct-and-4mm",
        ),
        # 19.5 -> 15.6 mm: -20 % but only -3.9 mm.
        pytest.param((19.5, 30.0, 30.0), (15.6, 30.0, 30.0), False, None, id="20pct-3.9mm"),
        # Grade 1 before (20 %): 24 -> 19.6 mm is -18.3 %, -4.4 mm.
        pytest.param((24.0, 30.0, 30.0), (19.6, 30.0, 30.0), False, None, id="18pct-4.4mm"),
        # Grade 0 (16.7 %) -> 1 (21.7 %), a decrease of 1.5 mm only.
        pytest.param(
            (25.0, 30.0, 30.0),
            (23.5, 30.0, 30.0),
            True,
            "grade 0 -> 1 ({latest})",
            id="grade-0-to-1",
        ),
        # Both criteria: 30 -> 22 mm, grade 0 -> 2 (26.7 %), middle too.
        pytest.param(
            (30.0, 30.0, 30.0),
            (22.0, 24.0, 30.0),
            True,
            "anterior height -26.7 % (-8.00 mm) since pre; middle height -20.0 % (-6.00 mm) "
            "since pre; grade 0 -> 2 ({latest})",
            id="both",
        ),
    ],
)
@pytest.mark.parametrize("latest", ["post", "followup"])
def test_incident_fracture_criteria(pre_t11, later_t11, flagged, reason, latest):
    pre = spine(pre_t11)
    if latest == "post":
        c = compare(pre, spine(later_t11, FRACTURE_POST))
    else:
        c = compare(pre, spine(pre_t11, FRACTURE_POST), spine(later_t11, (21.0, 24.0, 29.0)))
    r = rows(c, "T11", "anterior")
    expected = None if reason is None else reason.format(latest=latest)
    assert (r["incident_fracture"], r["incident_reason"]) == (flagged, expected)
    assert c.incident_levels == (("T11",) if flagged else ())
    assert (
        (f"new fracture suspected at T11 ({expected}); for the radiologist to confirm")
        in c.warnings
    ) is flagged
    # Treated levels are not checked for a new fracture, untreated ones not for recollapse.
    assert rows(c, "L1", "anterior")["incident_fracture"] is None
    assert r["recollapse"] is None
    assert all(x["incident_fracture"] is False for x in c.records() if x["level"] in ("T10", "T12"))


def test_incident_fracture_in_px_uses_the_20pct_alone():
    # 19.5 -> 15.6 px: -20 %, 3.9 px: flagged in px (no mm criterion), with a warning.
    c = compare(
        spine((19.5, 30.0, 30.0), calibration=None),
        spine((15.6, 30.0, 30.0), FRACTURE_POST, calibration=None),
    )
    assert rows(c, "T11", "anterior")["incident_reason"] == (
        "anterior height -20.0 % (-3.90 px) since pre"
    )
    assert (
        "lengths are in px: a new fracture is flagged on the 20 % decrease alone "
        "(the 4 mm criterion needs mm)"
    ) in c.warnings


@pytest.mark.parametrize(
    ("followup_l1", "recollapse"),
    [
        # Post L1 anterior 23: 23 -> 19.55 is 15 % lost since post.
        pytest.param((19.55, 24.0, 29.0), True, id="15pct"),
        pytest.param((19.6, 24.0, 29.0), False, id="14.8pct"),
        pytest.param((23.0, 25.0, 24.0), True, id="posterior-17pct"),
    ],
)
def test_recollapse_at_15pct(followup_l1, recollapse):
    c = compare(spine(N), spine(N, FRACTURE_POST), spine(N, followup_l1))
    r = rows(c, "L1", "anterior")
    assert r["recollapse"] is recollapse
    assert c.recollapsed_levels == (("L1",) if recollapse else ())
    assert (
        any(w.startswith("recollapse suspected at L1 (treated)") for w in c.warnings) is recollapse
    )
    # Without a follow-up, recollapse is unknown.
    assert rows(compare(spine(N), spine(N, FRACTURE_POST)), "L1", "anterior")["recollapse"] is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.floats(0.05, 0.5),
    st.floats(0.8, 1.25),
    st.floats(12.0, 28.0),
    st.floats(15.0, 30.0),
    st.sampled_from(["adjacent", "max", "nearest_normal", "posterior"]),
)
def test_magnification_leaves_relative_figures_unchanged(spacing, factor, h_pre, h_post, method):
    """Scaling one film's spacing (a magnification change) changes its mm, not the
    within-film figures."""
    heights_pre = [N, (h_pre, 26.0, 29.0), N]
    heights_post = [N, (h_post, 27.0, 29.5), N]

    def cal(s):
        return Calibration.user(row_spacing_mm=s, col_spacing_mm=s)

    pre = film(heights_pre, calibration=cal(spacing), reference=method)
    post = film(heights_post, calibration=cal(spacing), reference=method)
    scaled = film(heights_post, calibration=cal(spacing * factor), reference=method)
    for a, b in zip(compare(pre, post).records(), compare(pre, scaled).records(), strict=True):
        for key in ("loss_reduction_pct_points", "restoration_pct_of_lost_relative"):
            if a[key] is None:
                assert b[key] is None
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-9), key


# -- files and the command line -------------------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pydicom  # noqa: E402

from vheight.api import compare_files  # noqa: E402
from vheight.cli import main  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
SERIES = [SAMPLES / f"{tp}.vheight.json" for tp in ("pre", "post", "followup")]


def test_sample_series_flags_exactly_the_new_adjacent_fracture():
    c = compare_files(*SERIES)
    assert c.incident_levels == ("L2",) and c.recollapsed_levels == ()
    l2 = rows(c, "L2", "anterior")
    assert l2["incident_reason"].startswith("anterior height -34.5 % (-9.00 mm) since pre")
    assert l2["incident_reason"].endswith("grade 0 -> 2 (followup)")
    assert (l2["days_pre_to_post"], l2["days_post_to_followup"]) == (2, 90)
    assert [w for w in c.warnings if "suspected" in w] == [
        f"new fracture suspected at L2 ({l2['incident_reason']}); for the radiologist to confirm"
    ]
    # Its fracture is not mistaken for a magnification change of its neighbours.
    assert not any("adjacent reference heights" in w for w in c.warnings)
    assert rows(c, "L1", "anterior")["recollapse"] is False
    # Without the follow-up, nothing is flagged.
    assert compare_files(*SERIES[:2]).incident_levels == ()


def _copy_series(tmp_path, patient_of_post=None):
    for tp in ("pre", "post"):
        shutil.copy(SAMPLES / f"{tp}.vheight.json", tmp_path)
        if tp == "post" and patient_of_post:
            ds = pydicom.dcmread(SAMPLES / "post.dcm")
            ds.PatientID = patient_of_post
            ds.save_as(tmp_path / "post.dcm")
        else:
            shutil.copy(SAMPLES / f"{tp}.dcm", tmp_path)
    return str(tmp_path / "pre.vheight.json"), str(tmp_path / "post.vheight.json")


def test_compare_command_refuses_different_patients_in_one_line(tmp_path, capsys):
    pre, post = _copy_series(tmp_path, patient_of_post="OTHER42")
    assert main(["compare", pre, post, "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err == (
        f"vheight compare: error: {pre} (pre, patient ID VHPHANTOM002026) and {post} (post, "
        "patient ID OTHER42) belong to different patients: not compared "
        "(allow_different_patients / --allow-different-patients compares anyway)\n"
    )
    assert main(["compare", pre, post, "--format", "json", "--allow-different-patients"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert any(
        "belong to different patients: compared on request" in w for w in document["warnings"]
    )
    assert list(document["levels"][0]) == list(COMPARE_RECORD_KEYS)
    (tmp_path / "same").mkdir()
    same_pre, same_post = _copy_series(tmp_path / "same")
    assert main(["compare", same_pre, same_post, "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "lengths in mm; pre -> post 2 days" in out and "FLAG" not in out


def test_compare_command_reports_the_flags(capsys):
    assert main(["compare", *map(str, SERIES), "--reference", "nearest_normal"]) == 0
    out = capsys.readouterr().out
    assert "FLAG: new fracture suspected at L2 (to confirm)" in out
    assert "post -> follow-up 90 days" in out


def test_phantom_series_new_fracture_option(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "x"), "--series", "--new-fracture", "L2:crush"]) == 2
    assert "expected LEVEL:KIND:LOSS" in capsys.readouterr().err
    assert main(["phantom", str(tmp_path / "y"), "--new-fracture", "none"]) == 2
    assert "--new-fracture needs --series" in capsys.readouterr().err


def test_batch_pairs_per_reader_and_carries_the_v1_1_columns(tmp_path):
    from vheight.batch import run_batch

    for reader in ("Reader A", "Reader B"):
        folder = tmp_path / reader.replace(" ", "_")
        folder.mkdir()
        for tp in ("pre", "post", "followup"):
            shutil.copy(SAMPLES / f"{tp}.dcm", folder)
            doc = json.loads((SAMPLES / f"{tp}.vheight.json").read_text(encoding="utf-8"))
            doc["annotator"] = reader
            (folder / f"{tp}.vheight.json").write_text(json.dumps(doc), encoding="utf-8")
    result = run_batch(tmp_path, workers=1, progress=False)
    assert result.n_comparisons == 2 and not result.failed
    frame = result.comparisons
    assert sorted(set(frame["annotator"])) == ["Reader A", "Reader B"]
    assert set(frame["paired_by"]) == {"patient_id"}
    flagged = frame[frame["incident_fracture"].fillna(False)]
    assert sorted(set(zip(flagged["annotator"], flagged["level"], strict=True))) == [
        ("Reader A", "L2"),
        ("Reader B", "L2"),
    ]
    assert set(frame["days_pre_to_post"]) == {2} and set(frame["days_post_to_followup"]) == {90}
    assert str(frame["lost_pre"].dtype) == "float64"
    assert set(frame["followup_unit"]) == {"mm"}
    assert set(result.measurements["annotator"]) == {"Reader A", "Reader B"}
