"""Agreement between readers (``measurements.md``, "Agreement between readers").

Hand-computed tables for every statistic (Shrout & Fleiss 1979 Table 2 for the
ICCs, worked kappas with their weights), the figures of pingouin, scikit-learn
and statsmodels checked against them, two simulated readers of phantom films
whose noise is known, the bad inputs, and the ``vheight agreement`` command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vheight.agreement import (
    QUANTITIES,
    Reading,
    agreement,
    agreement_files,
    bland_altman,
    cv_rms,
    grade_agreement,
    icc,
    read_readings,
    simulate_reader,
    write_bland_altman_plots,
)
from vheight.annotation import Annotation, ImageRef, load_annotation, save_annotation
from vheight.api import resolve_calibration
from vheight.calibration import Calibration
from vheight.cli import main
from vheight.morphometry import measure

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


# -- ICC ------------------------------------------------------------------------------------


def test_shrout_fleiss_table_2():
    result = icc(SHROUT_FLEISS)
    # Their Table 3: ICC(2,1) = 0.29, ICC(3,1) = 0.71; Table 2's mean squares.
    assert round(result.icc_2_1, 2) == 0.29
    assert round(result.icc_3_1, 2) == 0.71
    assert round(result.ms_rows, 2) == 11.24  # BMS
    assert round(result.ms_columns, 2) == 32.49  # JMS
    assert round(result.ms_error, 2) == 1.02  # EMS
    assert result.warnings == ()
    lo2, hi2 = result.icc_2_1_ci
    lo3, hi3 = result.icc_3_1_ci
    assert lo2 < result.icc_2_1 < hi2 and lo3 < result.icc_3_1 < hi3


def test_icc_matches_pingouin():
    pingouin = pytest.importorskip("pingouin")
    import pandas as pd

    rng = np.random.default_rng(3)
    tables = [SHROUT_FLEISS, rng.normal(size=(12, 2)) + rng.normal(size=(12, 1)) * 3]
    tables.append(rng.normal(size=(9, 3)) + np.arange(9)[:, None])
    for table in tables:
        n, k = table.shape
        long = pd.DataFrame(
            {"t": np.repeat(np.arange(n), k), "r": np.tile(np.arange(k), n), "y": table.ravel()}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pingouin on pandas 3
            theirs = pingouin.intraclass_corr(data=long, targets="t", raters="r", ratings="y")
        theirs = theirs.set_index("Type")
        ours = icc(table)
        for name, row in (("icc_2_1", "ICC(A,1)"), ("icc_3_1", "ICC(C,1)")):
            assert getattr(ours, name) == pytest.approx(theirs.loc[row, "ICC"], rel=1e-12)
            # pingouin rounds its intervals to two decimals.
            assert getattr(ours, f"{name}_ci") == pytest.approx(
                list(theirs.loc[row, "CI95"]), abs=0.005 + 1e-12
            )


def test_icc_by_hand():
    # y = [[1, 2], [3, 5], [6, 6]]: grand mean 23/6, row means 3/2, 4, 6, column means 10/3, 13/3.
    # SS rows = 2 * 61/12 = 61/6 (MSR 61/6), SS columns = 3/2 (MSC 3/2), SS total 137/6,
    # SS error = 137/6 - 61/3 - 3/2 = 1 (MSE 1/2).
    result = icc([[1, 2], [3, 5], [6, 6]])
    assert result.ms_rows == pytest.approx(61 / 6, rel=1e-12)
    assert result.ms_columns == pytest.approx(3 / 2, rel=1e-12)
    assert result.ms_error == pytest.approx(1 / 2, rel=1e-12)
    # ICC(3,1) = (61/6 - 1/2) / (61/6 + 1/2) = 29/32; ICC(2,1) = (58/6) / (64/6 + 2/3) = 29/34.
    assert result.icc_3_1 == pytest.approx(29 / 32, rel=1e-12)
    assert result.icc_2_1 == pytest.approx(29 / 34, rel=1e-12)


def test_icc_3_1_interval_by_hand():
    # McGraw & Wong case 3A: F = MSR/MSE = 61/3 with (2, 2) df; F(0.975; 2, 2) = 39.
    result = icc([[1, 2], [3, 5], [6, 6]])
    f_obs = (61 / 6) / (1 / 2)
    f_low, f_high = f_obs / 39.0, f_obs * 39.0
    low, high = (f_low - 1) / (f_low + 1), (f_high - 1) / (f_high + 1)
    assert result.icc_3_1_ci == pytest.approx((low, high), rel=1e-9)


@pytest.mark.parametrize(
    ("table", "message", "icc3"),
    [
        pytest.param(np.full((5, 2), 7.0), "no variance", None, id="no-variance"),
        pytest.param([[1.0, 2.0]], "two vertebrae or more", None, id="one-vertebra"),
        pytest.param([[1.0], [2.0]], "two readers", None, id="one-reader"),
        pytest.param([[1, 2], [3, 4], [5, 6]], "agree exactly", 1.0, id="constant-offset"),
    ],
)
def test_icc_undefined_is_none_with_a_warning(table, message, icc3):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never a numpy warning, never a crash
        result = icc(table, name="wedge_ratio")
    assert result.icc_3_1 == icc3
    assert result.icc_2_1_ci is None and result.icc_3_1_ci is None
    assert any(message in w and w.startswith("wedge_ratio") for w in result.warnings)


def test_constant_offset_lowers_absolute_agreement_only():
    result = icc([[1, 2], [3, 4], [5, 6]])
    # MSR = 8, MSC = 1.5, MSE = 0: ICC(2,1) = 8 / (8 + 2 * 1.5 / 3) = 8/9.
    assert result.icc_2_1 == pytest.approx(8 / 9, rel=1e-12)


@given(
    st.lists(
        st.tuples(st.floats(-100, 100), st.floats(-5, 5), st.floats(-5, 5)),
        min_size=3,
        max_size=20,
    ),
    st.floats(0.1, 10),
    st.floats(-50, 50),
)
def test_icc_unchanged_by_units_and_origin(rows, scale, shift):
    y = np.array([[t + a, t + b] for t, a, b in rows])
    base = icc(y)
    moved = icc(y * scale + shift)
    for name in ("icc_2_1", "icc_3_1"):
        a, b = getattr(base, name), getattr(moved, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert b == pytest.approx(a, rel=1e-6, abs=1e-9)


# -- Bland-Altman, SEM, CV ------------------------------------------------------------------


def test_bland_altman_by_hand():
    # Differences 1, 2, 0: bias 1, SD 1, limits 1 -+ 1.96.
    ba = bland_altman([1, 3, 6], [2, 5, 6])
    assert (ba.n, ba.bias, ba.sd) == (3, pytest.approx(1.0), pytest.approx(1.0))
    assert (ba.loa_low, ba.loa_high) == (pytest.approx(-0.96), pytest.approx(2.96))
    one = bland_altman([1.0], [1.5])
    assert (one.bias, one.sd, one.loa_low) == (pytest.approx(0.5), None, None)


def test_cv_rms_by_hand():
    # Per-vertebra CVs: 100 * sqrt(0.5) / 1.5, 100 * sqrt(2) / 4, 0; RMS of the three.
    expected = math.sqrt(((100 * math.sqrt(0.5) / 1.5) ** 2 + (100 * math.sqrt(2) / 4) ** 2) / 3)
    assert cv_rms([[1, 2], [3, 5], [6, 6]]) == pytest.approx(expected, rel=1e-12)
    assert cv_rms([[1, 2], [-1, 1]]) is None  # a mean of zero: no CV


@given(st.lists(st.tuples(st.floats(1, 100), st.floats(1, 100)), min_size=2, max_size=30))
def test_sem_is_the_residual_mean_square_for_two_readers(pairs):
    # SEM = SD_diff / sqrt(2) equals sqrt(MSE) of the two-way ANOVA when k = 2.
    y = np.array(pairs)
    ba = bland_altman(y[:, 0], y[:, 1])
    result = icc(y)
    assert ba.sd / math.sqrt(2) == pytest.approx(math.sqrt(result.ms_error), rel=1e-6, abs=1e-9)


# -- the grade ------------------------------------------------------------------------------

# Two readers, six vertebrae.  Marginals: first 0:3 1:1 2:1 3:1, second 0:2 1:2 3:2.
GRADES_A = [0, 0, 1, 2, 3, 0]
GRADES_B = [0, 1, 1, 3, 3, 0]


def _weighted_kappa_by_hand(a, b, weight):
    """1 - observed / expected disagreement, exact fractions."""
    n = len(a)
    observed = sum(Fraction(weight(i, j)) for i, j in zip(a, b, strict=True)) / n
    pa = {c: Fraction(a.count(c), n) for c in range(4)}
    pb = {c: Fraction(b.count(c), n) for c in range(4)}
    expected = sum(pa[i] * pb[j] * Fraction(weight(i, j)) for i in range(4) for j in range(4))
    return 1 - observed / expected


def test_kappas_by_hand():
    record, notes = grade_agreement(np.column_stack([GRADES_A, GRADES_B]))
    assert notes == []
    # Linear disagreement weights |i - j| / 3: observed 1/9, expected 4/9 -> 3/4.
    linear = _weighted_kappa_by_hand(GRADES_A, GRADES_B, lambda i, j: Fraction(abs(i - j), 3))
    assert linear == Fraction(3, 4)
    # Quadratic weights (i - j)^2 / 9: observed 1/27, expected 1/3 -> 8/9.
    quadratic = _weighted_kappa_by_hand(GRADES_A, GRADES_B, lambda i, j: Fraction((i - j) ** 2, 9))
    assert quadratic == Fraction(8, 9)
    assert record["kappa_linear"] == pytest.approx(float(linear), rel=1e-12)
    assert record["kappa_quadratic"] == pytest.approx(float(quadratic), rel=1e-12)
    # Fleiss: P-bar = 4/6; category shares 5, 3, 1, 3 of 12 -> P-e = 44/144; kappa = 0.52.
    assert record["fleiss_kappa"] == pytest.approx(0.52, rel=1e-12)
    assert record["percent_agreement"] == pytest.approx(100 * 4 / 6)
    assert record["fracture_agreement_pct"] == pytest.approx(100 * 5 / 6)
    assert record["n"] == 6


def test_kappa_weights_span_every_grade_even_when_unused():
    # Grade 2 is never given: the linear weights are still 1/3 per grade step (labels 0-3).
    record, _ = grade_agreement(np.column_stack([[0, 1, 3, 3], [0, 3, 3, 1]]))
    expected = _weighted_kappa_by_hand([0, 1, 3, 3], [0, 3, 3, 1], lambda i, j: abs(i - j) / 3)
    assert record["kappa_linear"] == pytest.approx(float(expected), rel=1e-9)


def test_three_readers_have_fleiss_but_no_cohen_kappa():
    grades = np.column_stack([GRADES_A, GRADES_B, GRADES_A])
    record, _ = grade_agreement(grades)
    assert record["kappa_linear"] is None and record["kappa_quadratic"] is None
    assert record["fleiss_kappa"] is not None
    assert record["percent_agreement"] == pytest.approx(100 * 4 / 6)


def test_one_grade_everywhere_gives_no_kappa_and_no_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record, notes = grade_agreement(np.zeros((5, 2), dtype=int))
    assert record["percent_agreement"] == 100.0
    assert record["kappa_linear"] is None and record["fleiss_kappa"] is None
    assert any("kappa undefined" in n for n in notes)


# -- simulated readers of phantom films -----------------------------------------------------

SD_MM = 0.3


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> list[tuple[Path, Annotation, Calibration]]:
    folder = tmp_path_factory.mktemp("truth")
    code = main(
        [
            "phantom", str(folder), "--count", "5", "--spacing", "0.3",
            "--fracture", "L1:wedge:30", "--fracture", "T12:biconcave:22",
            "--fracture", "L3:crush:24", "--format", "json",
        ]
    )  # fmt: skip
    assert code == 0
    films = []
    for path in sorted(folder.glob("*.vheight.json")):
        annotation = load_annotation(path)
        calibration, _ = resolve_calibration(annotation, annotation_path=path)
        assert calibration.is_calibrated
        films.append((path, annotation, calibration))
    return films


def _readings(truth, readers, *, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _, annotation, calibration in truth:
        for name, offsets in readers.items():
            read = simulate_reader(
                annotation, calibration, reader=name, sd_mm=SD_MM, height_offset_mm=offsets,
                rng=rng,
            )  # fmt: skip
            out.append(
                Reading(
                    film=annotation.image.sop_instance_uid,
                    reader=name,
                    measurement=measure(read, calibration),
                )
            )
    return out


def _true_heights(truth, quantity):
    return np.array(
        [
            getattr(measure(a, c)[level], quantity)
            for _, a, c in truth
            for level in a.complete_levels
        ]
    )


def test_two_noisy_readers_agree_as_their_noise_implies(truth):
    result = agreement(_readings(truth, {"alice": {}, "bob": {}}))
    assert result.readers == ("alice", "bob")
    assert result.films == 5
    n = sum(len(a.complete_levels) for _, a, _ in truth)
    assert result.vertebrae == n
    rows = result.quantities.set_index("quantity")
    for quantity in ("anterior_height", "middle_height", "posterior_height"):
        row = rows.loc[quantity]
        assert row["unit"] == "mm" and row["n"] == n
        # Each height moves by sqrt(2) * SD per reader: the difference of two readers has
        # SD 2 * SD_MM, SEM sqrt(2) * SD_MM, and no bias.
        se = 2 * SD_MM / math.sqrt(n)
        assert abs(row["bias"]) < 3 * se
        assert row["sd_diff"] == pytest.approx(2 * SD_MM, rel=0.3)
        assert row["sem"] == pytest.approx(math.sqrt(2) * SD_MM, rel=0.3)
        assert row["loa_high"] - row["loa_low"] == pytest.approx(2 * 1.96 * row["sd_diff"])
        assert row["sdc"] == pytest.approx(1.96 * math.sqrt(2) * row["sem"])
        # ICC = true variance / (true variance + error variance 2 SD^2).
        true_var = _true_heights(truth, quantity).var(ddof=1)
        expected = true_var / (true_var + 2 * SD_MM**2)
        assert row["icc_2_1"] == pytest.approx(expected, abs=0.05)
        assert row["icc_3_1"] == pytest.approx(expected, abs=0.05)
        assert row["icc_2_1_ci_low"] < row["icc_2_1"] < row["icc_2_1_ci_high"]
        assert 0 < row["cv_pct"] < 10
    assert result.grade["n"] == n
    assert result.grade["kappa_quadratic"] is not None
    assert math.isnan(rows.loc["wedge_angle_deg", "cv_pct"])


def test_three_readers_have_no_bland_altman(truth, tmp_path, capsys):
    result = agreement(_readings(truth, {"alice": {}, "bob": {}, "carol": {}}, seed=2))
    assert result.readers == ("alice", "bob", "carol") and result.difference is None
    rows = result.quantities.set_index("quantity")
    anterior = rows.loc["anterior_height"]
    for key in ("bias", "loa_low", "loa_high", "sd_diff"):
        assert math.isnan(anterior[key])
    # SEM: the square root of the residual mean square, about sqrt(2) * SD_MM.
    assert anterior["sem"] == pytest.approx(math.sqrt(2) * SD_MM, rel=0.3)
    assert result.grade["kappa_linear"] is None and result.grade["fleiss_kappa"] is not None
    with pytest.raises(ValueError, match="exactly two readers"):
        write_bland_altman_plots(result, tmp_path)


def test_a_systematic_anterior_offset_shows_as_bias(truth):
    result = agreement(_readings(truth, {"alice": {}, "bob": {"anterior": 1.0}}, seed=1))
    rows = result.quantities.set_index("quantity")
    n = result.vertebrae
    anterior = rows.loc["anterior_height"]
    assert anterior["bias"] == pytest.approx(1.0, abs=3 * 2 * SD_MM / math.sqrt(n))
    assert anterior["icc_3_1"] > anterior["icc_2_1"]
    assert abs(rows.loc["posterior_height", "bias"]) < 3 * 2 * SD_MM / math.sqrt(n)
    pairs = result.pairs("anterior_height")
    assert list(pairs.columns[2:]) == ["alice", "bob", "mean", "difference"]
    assert pairs["difference"].mean() == pytest.approx(anterior["bias"])


def test_without_noise_the_offset_is_exact(truth):
    rng_free = []
    for _, annotation, calibration in truth:
        for name, offsets in (("a", {}), ("b", {"anterior": 1.0})):
            read = simulate_reader(annotation, calibration, reader=name, height_offset_mm=offsets)
            rng_free.append(
                Reading(film=annotation.image.sop_instance_uid, reader=name,
                        measurement=measure(read, calibration))
            )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = agreement(rng_free)
    rows = result.quantities.set_index("quantity")
    assert rows.loc["anterior_height", "bias"] == pytest.approx(1.0, abs=1e-9)
    assert rows.loc["anterior_height", "icc_3_1"] == 1.0
    assert rows.loc["anterior_height", "icc_2_1"] < 1.0
    assert rows.loc["posterior_height", "bias"] == pytest.approx(0.0, abs=1e-9)
    assert any("agree exactly" in w for w in result.warnings)


# -- bad input ------------------------------------------------------------------------------


def _vertebra(x0, y0, height=25.0, width=30.0):
    return {
        "superior_anterior": (x0, y0),
        "superior_middle": (x0 + width / 2, y0 + 1),
        "superior_posterior": (x0 + width, y0),
        "inferior_anterior": (x0, y0 + height),
        "inferior_middle": (x0 + width / 2, y0 + height - 1),
        "inferior_posterior": (x0 + width, y0 + height),
    }


def _annotation(uid, reader, levels, *, shift=0.0, calibration=None):
    return Annotation(
        image=ImageRef(file=None, sop_instance_uid=uid, rows=1000, columns=800),
        vertebrae={
            lv: {k: (x + shift, y) for k, (x, y) in pts.items()} for lv, pts in levels.items()
        },
        annotator=reader,
        calibration=calibration,
        modified="2026-01-01T00:00:00Z",
    )


CAL = Calibration(row_spacing_mm=0.2, col_spacing_mm=0.2, source="User", label="mm User")


def _write(folder: Path, name: str, annotation: Annotation) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return save_annotation(annotation, folder / f"{name}.vheight.json")


def _two_readers(tmp_path: Path) -> Path:
    """Two readers, two films; bob leaves L3 of film 1 incomplete and differs on film 2."""
    levels = {"L1": _vertebra(100, 100, 120), "L2": _vertebra(100, 260, 130, 35)}
    levels3 = {**levels, "L3": _vertebra(100, 430, 110, 38)}
    for reader, shift, skip in (("alice", 0.0, False), ("bob", 0.5, True)):
        film1 = dict(levels3)
        if skip:
            film1["L3"] = {k: v for k, v in film1["L3"].items() if k != "inferior_middle"}
        _write(tmp_path / reader, "f1", _annotation("1.2.3.1", reader, film1, calibration=CAL))
        extra = {"T12": 2.0, "L1": -1.0} if reader == "bob" else {"T12": 0.0, "L1": 0.0}
        film2 = {lv: _vertebra(x, y, h + extra[lv]) for lv, (x, y, h) in
                 (("T12", (90, 80, 100)), ("L1", (95, 220, 118)))}  # fmt: skip
        _write(tmp_path / reader, "f2", _annotation("1.2.3.2", reader, film2, shift=shift,
                                                     calibration=CAL))  # fmt: skip
    return tmp_path


def test_only_vertebrae_every_reader_completed_count(tmp_path):
    result = agreement_files([_two_readers(tmp_path)])
    assert result.readers == ("alice", "bob")
    assert result.films == 2
    assert result.vertebrae == 4  # f1: L1, L2 (bob left L3 incomplete); f2: T12, L1
    assert dict(result.vertebrae_by_reader) == {"alice": 5, "bob": 4}
    assert any("only the 4 every reader completed count" in w for w in result.warnings)
    assert set(result.quantities["n"]) == {4}
    assert set(zip(result.values["film"], result.values["level"], strict=True)) == {
        ("1.2.3.1", "L1"), ("1.2.3.1", "L2"), ("1.2.3.2", "T12"), ("1.2.3.2", "L1"),
    }  # fmt: skip


def test_one_reader_only_shares_nothing(tmp_path):
    _two_readers(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = agreement_files([tmp_path / "alice"])
    assert not result.shared and result.readers == ()
    assert result.quantities["n"].eq(0).all()
    assert any("fewer than two readers share a film" in w for w in result.warnings)
    assert any("read by alice only" in w for w in result.warnings)


def test_films_without_uid_and_readers_without_name_are_left_out(tmp_path):
    _two_readers(tmp_path)
    _write(tmp_path / "carol", "x", _annotation(None, "carol", {"L1": _vertebra(1, 1)}))
    _write(tmp_path / "dave", "y", _annotation("1.2.3.1", "", {"L1": _vertebra(1, 1)}))
    readings, notes, errors = read_readings([tmp_path])
    assert errors == []
    assert {r.reader for r in readings} == {"alice", "bob"}
    assert any("x.vheight.json" in n and "no SOP Instance UID" in n for n in notes)
    assert any("y.vheight.json" in n and "no annotator" in n for n in notes)
    # By folder the nameless reader counts, as "dave".
    readings, _, _ = read_readings([tmp_path], by="folder")
    assert {r.reader for r in readings} == {"alice", "bob", "dave"}


def test_a_quantity_without_variance_is_null_never_a_crash(tmp_path):
    same = {"L1": _vertebra(100, 100), "L2": _vertebra(100, 300), "L3": _vertebra(100, 500)}
    readings = [
        Reading(film="1.2", reader=r, measurement=measure(_annotation("1.2", r, same), CAL))
        for r in ("alice", "bob")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = agreement(readings)
    rows = result.quantities.set_index("quantity")
    assert rows.loc["anterior_height", "n"] == 3
    assert math.isnan(rows.loc["anterior_height", "icc_2_1"])  # NaN in the table
    assert rows.loc["anterior_height", "bias"] == 0.0
    assert any("anterior_height" in w and "no variance" in w for w in result.warnings)
    document = result.to_dict()
    json.dumps(document, allow_nan=False)
    assert document["quantities"][0]["icc_2_1"] is None


def test_two_readings_of_one_film_by_one_reader(tmp_path):
    a = _annotation("1.2.3.9", "alice", {"L1": _vertebra(10, 10)}, calibration=CAL)
    _write(tmp_path / "old", "f", a)
    _write(tmp_path / "new", "f", dataclasses.replace(a, modified="2026-02-01T00:00:00Z"))
    readings, notes, _ = read_readings([tmp_path])
    assert len(readings) == 1 and readings[0].source.endswith("new/f.vheight.json")
    assert any("two annotations of film 1.2.3.9" in n for n in notes)
    # Twice by one reader: by folder, the two readings are compared.
    readings, _, _ = read_readings([tmp_path], by="folder")
    assert sorted(r.reader for r in readings) == ["new", "old"]


def test_uncalibrated_films_leave_the_heights_only(tmp_path):
    levels = {"L1": _vertebra(100, 100, 120), "L2": _vertebra(100, 260, 130, 35)}
    for reader, shift in (("alice", 0.0), ("bob", 1.0)):
        _write(tmp_path / reader, "mm", _annotation("1.1", reader, levels, shift=shift,
                                                     calibration=CAL))  # fmt: skip
        _write(tmp_path / reader, "px", _annotation("1.2", reader, levels, shift=shift))
    result = agreement_files([tmp_path])
    rows = result.quantities.set_index("quantity")
    assert rows.loc["anterior_height", "n"] == 2 and rows.loc["anterior_height", "unit"] == "mm"
    assert rows.loc["wedge_ratio", "n"] == 4
    assert any("uncalibrated (px)" in w and "1.2" in w for w in result.warnings)


def test_known_calibrations_calibrate_films_that_are_not_beside_their_annotations(tmp_path):
    levels = {"L1": _vertebra(100, 100, 120), "L2": _vertebra(100, 260, 130, 35)}
    for reader, shift in (("alice", 0.0), ("bob", 1.0)):
        _write(tmp_path / reader, "f", _annotation("1.7", reader, levels, shift=shift))
    assert set(agreement_files([tmp_path]).quantities["unit"]) >= {"px"}
    readings, _, _ = read_readings([tmp_path], calibrations={"1.7": CAL})
    assert {r.measurement.unit for r in readings} == {"mm"}
    heights = [r.measurement["L1"].anterior_height for r in readings]
    assert heights == [pytest.approx(120 * 0.2)] * 2


def test_malformed_files_are_errors_and_the_rest_go_on(tmp_path):
    _two_readers(tmp_path)
    (tmp_path / "bob" / "broken.vheight.json").write_text("{not json", encoding="utf-8")
    result = agreement_files([tmp_path])
    assert result.shared and result.vertebrae == 4
    assert len(result.errors) == 1 and "broken.vheight.json" in result.errors[0]


def test_plots_one_png_per_quantity(tmp_path):
    result = agreement_files([_two_readers(tmp_path / "in")])
    written = write_bland_altman_plots(result, tmp_path / "plots")
    assert [p.name for p in written] == [f"bland_altman_{q}.png" for q in QUANTITIES]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# -- the command ----------------------------------------------------------------------------


def test_cli_json(tmp_path, capsys):
    folder = _two_readers(tmp_path / "in")
    assert main(["agreement", str(folder), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["readers"] == ["alice", "bob"]
    assert (document["films"], document["vertebrae"]) == (2, 4)
    assert [q["quantity"] for q in document["quantities"]] == list(QUANTITIES)
    first = document["quantities"][0]
    for key in ("unit", "n", "icc_2_1", "icc_2_1_ci", "icc_3_1", "icc_3_1_ci", "bias",
                "loa_low", "loa_high", "sem", "sdc", "cv_pct"):  # fmt: skip
        assert key in first
    assert len(first["icc_2_1_ci"]) == 2
    assert set(document["grade"]) >= {
        "percent_agreement", "kappa_linear", "kappa_quadratic", "fleiss_kappa",
        "fracture_agreement_pct",
    }  # fmt: skip
    assert "only the 4 every reader completed count" in err


def test_cli_table_csv_and_plots(tmp_path, capsys):
    folder = _two_readers(tmp_path / "in")
    assert main(["agreement", str(folder), "--plot", str(tmp_path / "plots")]) == 0
    out, err = capsys.readouterr()
    assert "readers: alice, bob" in out and "ICC(2,1)" in out and "anterior_height" in out
    assert "Fleiss kappa" in out
    assert len(list((tmp_path / "plots").glob("bland_altman_*.png"))) == len(QUANTITIES)
    assert main(["agreement", str(folder), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("quantity,unit,n,icc_2_1,icc_2_1_ci_low")
    assert len(lines) == 1 + len(QUANTITIES) + 1 and lines[-1].startswith("grade,")


def test_cli_by_folder_and_files(tmp_path, capsys):
    folder = _two_readers(tmp_path / "in")
    files = [str(p) for p in sorted(folder.rglob("*.vheight.json"))]
    assert main(["agreement", *files, "--by", "folder", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["readers"] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["alice"], 1, "fewer than two readers share a film", id="one-reader"),
        pytest.param(["missing"], 1, "no such file or folder", id="missing"),
    ],
)
def test_cli_failures(tmp_path, capsys, args, code, message):
    folder = _two_readers(tmp_path / "in")
    assert main(["agreement", *(str(folder / a) for a in args)]) == code
    assert message in capsys.readouterr().err


def test_cli_bad_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["agreement", ".", "--by", "colour"])
    assert exc.value.code == 2


def test_cli_exit_1_when_a_file_failed(tmp_path, capsys):
    folder = _two_readers(tmp_path / "in")
    (folder / "bob" / "broken.vheight.json").write_text("[]", encoding="utf-8")
    assert main(["agreement", str(folder), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["vertebrae"] == 4
    assert "broken.vheight.json" in err


def test_import_vheight_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, vheight; heavy = [m for m in ('pandas', 'scipy', 'sklearn', 'statsmodels',"
        " 'matplotlib', 'pingouin') if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
