"""Batch measurement: discovery, error rows, pairing, idempotent output, workers, Dask."""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import math
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from vheight import batch as batch_module
from vheight.api import compare_files, measure_file
from vheight.batch import (
    COMPARE_COLUMNS,
    MEASURE_COLUMNS,
    BatchResult,
    find_annotations,
    run_batch,
)
from vheight.cli import main
from vheight.errors import VHeightError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
LEVELS = ("T12", "L1", "L2", "L3", "L4")
ROWS, COLUMNS = 256, 192


# --------------------------------------------------------------------------------------
# Builders: small CR films (header + real pixel data) and v1 annotation files
# --------------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_film(
    path: Path,
    *,
    patient_id: str | None,
    study: str,
    pixel_spacing: str | None = "0.8\\0.8",
    imager_pixel_spacing: str | None = None,
) -> str:
    """A small CR film; returns its SOP Instance UID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sop_uid = _uid("sop", path.as_posix())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("study", study)
    ds.SeriesInstanceUID = _uid("series", path.as_posix())
    ds.Modality = "CR"
    ds.PatientName = "Phantom^Batch"
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.StudyDate = "20260101"
    ds.ViewPosition = "LL"
    if pixel_spacing is not None:
        ds.PixelSpacing = pixel_spacing
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = imager_pixel_spacing
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256)
    ds.save_as(path, enforce_file_format=True)
    return sop_uid


def vertebrae(anterior_fraction: dict[str, float] | None = None) -> dict[str, dict]:
    """Five stacked vertebrae (pixels); ``anterior_fraction`` compresses some fronts."""
    anterior_fraction = anterior_fraction or {}
    result = {}
    for i, level in enumerate(LEVELS):
        top = 20.0 + 45.0 * i + 0.5 * i
        posterior = 34.0 + 0.7 * i
        anterior = posterior * anterior_fraction.get(level, 0.97)
        middle = posterior * (0.5 + 0.5 * anterior_fraction.get(level, 0.97)) - 0.4
        sa, sm, sp = 60.0 + i, 92.0 + i, 124.0 + i
        result[level] = {
            "superior_anterior": [sa, top + posterior - anterior],
            "superior_middle": [sm, top + (posterior - middle) / 2],
            "superior_posterior": [sp, top],
            "inferior_anterior": [sa + 0.5, top + posterior],
            "inferior_middle": [sm + 0.5, top + posterior - (posterior - middle) / 2],
            "inferior_posterior": [sp + 0.5, top + posterior + 0.3],
        }
    return result


def write_annotation(
    path: Path,
    *,
    film: str | None,
    timepoint: str | None,
    fronts: dict[str, float] | None = None,
    calibration: dict | None = None,
    points: dict | None = None,
    annotator: str = "test",
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": "vheight.annotation",
        "version": 1,
        "image": {"file": film, "sop_instance_uid": None, "rows": ROWS, "columns": COLUMNS},
        "timepoint": timepoint,
        "calibration": calibration,
        "vertebrae": points if points is not None else vertebrae(fronts),
        "treated_levels": ["L1"],
        "patient_position": None,
        "annotator": annotator,
        "created": None,
        "modified": None,
        "notes": "",
    }
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def study(folder: Path, name: str, timepoint: str | None, **film_kwargs) -> Path:
    """A film ``name.dcm`` and its sidecar; returns the annotation path."""
    fronts = {"pre": {"L1": 0.62}, "post": {"L1": 0.86}, "followup": {"L1": 0.8}}
    write_film(folder / f"{name}.dcm", **film_kwargs)
    return write_annotation(
        folder / f"{name}.vheight.json",
        film=f"{name}.dcm",
        timepoint=timepoint,
        fronts=fronts.get(timepoint or "", {"L2": 0.7}),
    )


def build_good(root: Path) -> dict[str, Path]:
    """Studies that all measure; keys name what each exercises."""
    made = {}
    # Patient A: three studies (pre, post, follow-up) -> paired by PatientID.
    for tp in ("pre", "post", "followup"):
        made[f"A-{tp}"] = study(root / "A", tp, tp, patient_id="PA", study=f"A-{tp}")
    # No PatientID, one study holding pre and post in different folders -> by study UID.
    made["B-pre"] = study(root / "B" / "x", "pre", "pre", patient_id=None, study="B")
    made["B-post"] = study(root / "B" / "y", "post", "post", patient_id=None, study="B")
    # No film at all, the annotation's own calibration -> paired by folder.
    cal = {"row_spacing_mm": 0.5, "col_spacing_mm": 0.5, "source": "User", "description": "ruler"}
    made["C-pre"] = write_annotation(
        root / "C" / "pre.vheight.json",
        film=None,
        timepoint="pre",
        fronts={"L1": 0.6},
        calibration=cal,
    )
    made["C-post"] = write_annotation(
        root / "C" / "post.vheight.json",
        film=None,
        timepoint="post",
        fronts={"L1": 0.9},
        calibration=cal,
    )
    # Only a pre film, unusable spacing (real files carry 0\0): measured in px, unpaired.
    made["D-pre"] = study(
        root / "D", "pre", "pre", patient_id="PD", study="D", pixel_spacing="0\\0"
    )
    # One patient treated twice, one folder per treatment -> split by folder.
    for episode in ("2019", "2021"):
        for tp in ("pre", "post"):
            made[f"E{episode}-{tp}"] = study(
                root / "E" / episode,
                tp,
                tp,
                patient_id="PE",
                study=f"E{episode}{tp}",
                pixel_spacing=None,
                imager_pixel_spacing="0.7\\0.7",
            )
    # No timepoint: measured, never paired.
    made["F"] = study(root / "F", "lateral", None, patient_id="PF", study="F")
    return made


def build_bad(root: Path) -> None:
    """Inputs that must each become one error row (see :func:`build_bad_expectations`)."""
    bad = root / "bad"
    study(bad / "truncated", "film", "pre", patient_id="PX", study="X")
    film = bad / "truncated" / "film.dcm"
    film.write_bytes(film.read_bytes()[:500])  # cut inside the header
    write_annotation(bad / "text" / "film.vheight.json", film="film.dcm", timepoint="pre")
    (bad / "text" / "film.dcm").write_text("this is not a DICOM file\n" * 20)
    points = vertebrae()
    points["L2"]["inferior_middle"] = ["a", 3]
    write_annotation(bad / "point" / "film.vheight.json", film=None, timepoint="pre", points=points)
    write_annotation(bad / "missing" / "gone.vheight.json", film="gone.dcm", timepoint="pre")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    build_good(root)
    build_bad(root)
    return root


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    build_good(root)
    return root


@pytest.fixture(scope="module")
def result(folder) -> BatchResult:
    return run_batch(folder, workers=1, progress=False)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


def test_find_annotations_recursive_sorted_skips_hidden(tmp_path):
    for name in (
        "b/2.vheight.json",
        "a/1.vheight.json",
        "a/z/0.vheight.json",
        "c.vheight.json",
        ".cache/x.vheight.json",
        "a/notes.json",
        "a/film.dcm",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = [_rel(p, tmp_path) for p in find_annotations(tmp_path)]
    assert found == ["a/1.vheight.json", "a/z/0.vheight.json", "b/2.vheight.json", "c.vheight.json"]


def test_find_annotations_follows_file_links_not_folder_links(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "deep" / "x.vheight.json").write_text("{}")
    (elsewhere / "y.vheight.json").write_text("{}")
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / ".hidden.vheight.json").write_text("{}")
    (root / "a" / "linked.vheight.json").symlink_to(elsewhere / "y.vheight.json")
    (root / "a" / "broken.vheight.json").symlink_to(tmp_path / "nothing.vheight.json")
    (root / "folder-link").symlink_to(elsewhere, target_is_directory=True)
    (root / "dir.vheight.json").mkdir()  # a folder with the suffix: entered, not a file
    (root / "dir.vheight.json" / "z.vheight.json").write_text("{}")
    found = [_rel(p, root) for p in find_annotations(root)]
    assert found == [
        "a/broken.vheight.json",
        "a/linked.vheight.json",
        "dir.vheight.json/z.vheight.json",
    ]


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(VHeightError, match=r"nowhere: no such folder"):
        run_batch(tmp_path / "nowhere", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        pytest.param({"reference": "median"}, "reference must be one of", id="bad-reference"),
        pytest.param({"workers": 0}, "workers must be", id="zero-workers"),
        pytest.param({"workers": 1.5}, "workers must be", id="fractional-workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        run_batch(tmp_path, progress=False, **kwargs)


def test_bad_executor(good_folder):
    with pytest.raises(TypeError, match="executor must be"):
        run_batch(good_folder, executor=object(), progress=False)


# --------------------------------------------------------------------------------------
# Rows: errors and agreement with the single-file measurement
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["truncated", "not-dicom", "bad-point", "missing-film"])
def test_each_bad_input_is_one_error_row_naming_it(folder, result, case):
    annotation, pattern = build_bad_expectations(folder)[case]
    rows = [r for r in result.measurement_rows if r["annotation"] == _rel(annotation, folder)]
    assert len(rows) == 1
    (row,) = rows
    assert row["error"] is not None
    assert re.search(pattern, row["error"]), row["error"]
    assert all(row[key] is None for key in MEASURE_COLUMNS)
    errors = [e for e in result.error_rows if e["annotation"] == row["annotation"]]
    assert errors == [
        {
            "stage": "measure",
            "subject": None,
            "annotation": row["annotation"],
            "image": row["image"],
            "error": row["error"],
        }
    ]


def build_bad_expectations(root: Path) -> dict[str, tuple[Path, str]]:
    bad = root / "bad"
    return {
        "truncated": (
            bad / "truncated" / "film.vheight.json",
            r"bad/truncated/film\.dcm: (not an image|not a DICOM|.*truncated)",
        ),
        "not-dicom": (bad / "text" / "film.vheight.json", r"bad/text/film\.dcm.*not a DICOM"),
        "bad-point": (
            bad / "point" / "film.vheight.json",
            r"bad/point/film\.vheight\.json.*L2.*inferior_middle",
        ),
        "missing-film": (
            bad / "missing" / "gone.vheight.json",
            r"bad/missing/gone\.vheight\.json.*gone\.dcm.*not found",
        ),
    }


def test_error_count_and_failed_flag(result):
    assert result.n_annotations == 17
    assert result.n_failed == 4
    assert result.failed
    assert sorted(e["annotation"] for e in result.error_rows) == [
        "bad/missing/gone.vheight.json",
        "bad/point/film.vheight.json",
        "bad/text/film.vheight.json",
        "bad/truncated/film.vheight.json",
    ]


def test_rows_match_single_file_measure_field_by_field(folder, result):
    measured = 0
    for path in find_annotations(folder):
        rel = _rel(path, folder)
        rows = [r for r in result.measurement_rows if r["annotation"] == rel]
        if rows[0]["error"] is not None:
            continue
        expected = measure_file(path).records()
        assert len(rows) == len(expected), rel
        for row, record in zip(rows, expected, strict=True):
            assert list(record) == list(MEASURE_COLUMNS) or set(MEASURE_COLUMNS) <= set(record)
            for key, value in record.items():
                assert _same(row[key], value), (rel, record["level"], key, row[key], value)
        measured += 1
    assert measured == 13


def test_warnings_match_single_file_measure(folder, result):
    for path in find_annotations(folder):
        rows = [r for r in result.measurement_rows if r["annotation"] == _rel(path, folder)]
        if rows[0]["error"] is None:
            expected = "; ".join(measure_file(path).warnings) or None
            assert {r["warnings"] for r in rows} == {expected}, path


def test_film_cut_inside_its_pixels_agrees_with_measure_file(tmp_path):
    # Only headers are read: the batch does exactly what the single-file path does.
    annotation = study(tmp_path, "film", "pre", patient_id="PT", study="T")
    film = tmp_path / "film.dcm"
    film.write_bytes(film.read_bytes()[:-5000])
    result = run_batch(tmp_path, workers=1, progress=False)
    try:
        expected = measure_file(annotation).records()
    except VHeightError:
        assert result.n_failed == 1 and "film.dcm" in result.error_rows[0]["error"]
    else:
        assert [{k: r[k] for k in expected[0]} for r in result.measurement_rows] == expected


def test_real_cr_films_headers_only(tmp_path, monkeypatch):
    """pydicom-data CR films: zero and missing spacing, JPEG 2000 never decoded."""
    from pydicom.data import get_testdata_file

    for folder, name, timepoint in [
        ("RG1/uncompressed", "RG1_UNCR.dcm", "pre"),
        ("RG1/j2k", "RG1_J2KR.dcm", "post"),
        ("RG3", "RG3_J2KI.dcm", "pre"),
    ]:
        target = tmp_path / folder / "film.dcm"
        target.parent.mkdir(parents=True)
        target.symlink_to(get_testdata_file(name))
        write_annotation(
            target.with_name("film.vheight.json"), film="film.dcm", timepoint=timepoint
        )

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    result = run_batch(tmp_path, workers=1, progress=False)
    assert not result.failed
    by_annotation = {}
    for row in result.measurement_rows:
        by_annotation.setdefault(row["annotation"], []).append(row)
    for rel, rows in by_annotation.items():
        single = measure_file(tmp_path / rel)
        expected = single.records()
        assert len(rows) == len(expected)
        assert [{k: r[k] for k in rec} for r, rec in zip(rows, expected, strict=True)] == expected
        assert rows[0]["warnings"] == "; ".join(single.warnings)
        assert rows[0]["unit"] == "px"  # PixelSpacing 0\0, or none at all
    assert by_annotation["RG1/j2k/film.vheight.json"][0]["patient_id"] == "9RG1"
    (paired,) = {(r["paired_by"], r["subject"]) for r in result.comparison_rows}
    assert paired == ("patient_id", "9RG1")


def test_identifiers_come_from_the_film_header(folder, result):
    by_annotation = {r["annotation"]: r for r in result.measurement_rows}
    row = by_annotation["A/post.vheight.json"]
    header = pydicom.dcmread(folder / "A" / "post.dcm", stop_before_pixels=True)
    assert row["image"] == "A/post.dcm"
    assert row["patient_id"] == "PA"
    assert row["study_instance_uid"] == header.StudyInstanceUID
    assert row["sop_instance_uid"] == header.SOPInstanceUID
    assert row["timepoint"] == "post"
    no_film = by_annotation["C/pre.vheight.json"]
    assert no_film["image"] is None and no_film["patient_id"] is None
    assert no_film["unit"] == "mm" and no_film["spacing_label"] == "mm User"
    uncalibrated = by_annotation["D/pre.vheight.json"]
    assert uncalibrated["unit"] == "px"
    assert "PixelSpacing" in uncalibrated["warnings"]


def test_rows_sorted_by_annotation_then_level(result):
    keys = [(r["annotation"], r["level"]) for r in result.measurement_rows]
    order = {level: i for i, level in enumerate(LEVELS)}
    assert keys == sorted(keys, key=lambda k: (k[0], order.get(k[1], -1) if k[1] else -1))


# --------------------------------------------------------------------------------------
# Pairing and comparisons
# --------------------------------------------------------------------------------------


def _groups(result: BatchResult) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in result.comparison_rows:
        key = (
            row["paired_by"],
            row["subject"],
            row["pre_annotation"],
            row["post_annotation"],
            row["followup_annotation"],
        )
        groups.setdefault(key, []).append(row)
    return groups


def test_pairing_rule(folder, result):
    b_study = pydicom.dcmread(folder / "B" / "x" / "pre.dcm", stop_before_pixels=True)
    expected = {
        (
            "patient_id",
            "PA",
            "A/pre.vheight.json",
            "A/post.vheight.json",
            "A/followup.vheight.json",
        ),
        (
            "study_instance_uid",
            str(b_study.StudyInstanceUID),
            "B/x/pre.vheight.json",
            "B/y/post.vheight.json",
            None,
        ),
        ("folder", "C", "C/pre.vheight.json", "C/post.vheight.json", None),
        ("patient_id+folder", "PE", "E/2019/pre.vheight.json", "E/2019/post.vheight.json", None),
        ("patient_id+folder", "PE", "E/2021/pre.vheight.json", "E/2021/post.vheight.json", None),
    }
    assert set(_groups(result)) == expected
    assert result.n_comparisons == 5
    assert result.warnings == ()


def test_comparison_rows_match_compare_files(folder, result):
    for (_, _, pre, post, followup), rows in _groups(result).items():
        expected = compare_files(
            folder / pre, folder / post, folder / followup if followup else None
        ).records()
        assert len(rows) == len(expected)
        for row, record in zip(rows, expected, strict=True):
            for key, value in record.items():
                assert _same(row[key], value), (pre, record["level"], key, row[key], value)
            assert row["error"] is None


def test_comparison_identifiers(folder, result):
    rows = _groups(result)[
        ("patient_id", "PA", "A/pre.vheight.json", "A/post.vheight.json", "A/followup.vheight.json")
    ]
    pre = pydicom.dcmread(folder / "A" / "pre.dcm", stop_before_pixels=True)
    post = pydicom.dcmread(folder / "A" / "post.dcm", stop_before_pixels=True)
    assert {r["patient_id"] for r in rows} == {"PA"}
    assert {r["pre_sop_instance_uid"] for r in rows} == {pre.SOPInstanceUID}
    assert {r["post_study_instance_uid"] for r in rows} == {post.StudyInstanceUID}
    assert {r["height"] for r in rows} == {"anterior", "middle", "posterior"}


def test_ambiguous_timepoints_are_not_paired_and_said(tmp_path):
    study(tmp_path / "P", "pre1", "pre", patient_id="PP", study="1")
    study(tmp_path / "P", "pre2", "pre", patient_id="PP", study="2")
    study(tmp_path / "P", "post", "post", patient_id="PP", study="3")
    result = run_batch(tmp_path, workers=1, progress=False)
    assert result.comparison_rows == ()
    assert len(result.warnings) == 1
    assert "not paired" in result.warnings[0] and "P/pre1.vheight.json" in result.warnings[0]
    assert not result.failed


def test_film_annotated_twice_is_said(tmp_path):
    study(tmp_path, "film", None, patient_id="PT", study="T")
    second = tmp_path / "second" / "film.vheight.json"
    write_annotation(second, film="../film.dcm", timepoint=None)
    result = run_batch(tmp_path, workers=1, progress=False)
    assert not result.failed
    uid = pydicom.dcmread(tmp_path / "film.dcm", stop_before_pixels=True).SOPInstanceUID
    assert result.warnings == (
        f"SOP Instance UID {uid} is annotated 2 times (film.vheight.json, "
        "second/film.vheight.json): each annotation is measured separately",
    )
    assert {r["image"] for r in result.measurement_rows} == {"film.dcm"}


def test_refused_comparison_is_an_error_row(tmp_path, monkeypatch):
    from vheight import comparison
    from vheight.errors import MeasurementError

    write_annotation(tmp_path / "pre.vheight.json", film=None, timepoint="pre")
    write_annotation(tmp_path / "post.vheight.json", film=None, timepoint="post")

    def refuse(pre, post, followup=None, **options):
        raise MeasurementError("the films share no level")

    monkeypatch.setattr(comparison, "compare", refuse)
    result = run_batch(tmp_path, workers=1, progress=False)
    assert result.failed and result.n_failed == 0 and result.n_comparisons == 0
    (error,) = result.error_rows
    assert error == {
        "stage": "compare",
        "subject": ".",
        "annotation": "pre.vheight.json + post.vheight.json",
        "image": None,
        "error": "pre.vheight.json + post.vheight.json: cannot compare: the films share no level",
    }
    (row,) = result.comparison_rows
    assert row["error"] == error["error"] and row["pre"] is None and row["level"] is None


# --------------------------------------------------------------------------------------
# Tables and files
# --------------------------------------------------------------------------------------


def test_dataframes_are_tidy(result):
    frame = result.measurements
    assert list(frame.columns[:6]) == [
        "annotation",
        "image",
        "patient_id",
        "study_instance_uid",
        "sop_instance_uid",
        "timepoint",
    ]
    assert list(frame.columns[-2:]) == ["warnings", "error"]
    assert set(MEASURE_COLUMNS) <= set(frame.columns)
    assert len(frame) == 13 * len(LEVELS) + 4
    assert str(frame["grade"].dtype) == "Int64"
    assert str(frame["complete"].dtype) == "boolean"
    assert frame["anterior_height"].dtype == "float64"
    assert frame["error"].notna().sum() == 4
    comparisons = result.comparisons
    assert set(COMPARE_COLUMNS) <= set(comparisons.columns)
    assert len(comparisons) == len(result.comparison_rows)
    stable = {"float64", "Int64", "boolean", "string"}
    for table in (frame, comparisons):
        assert {str(t) for t in table.dtypes} <= stable, table.dtypes
    assert str(comparisons["followup_annotation"].dtype) == "string"
    errors = result.errors
    assert list(errors.columns) == ["stage", "subject", "annotation", "image", "error"]
    assert len(errors) == 4


def test_csv_matches_rows_and_rerun_is_byte_identical(folder, result, tmp_path):
    first = result.write(tmp_path / "first.csv")
    again = run_batch(folder, workers=2, progress=False)
    second = again.write(tmp_path / "second.csv")
    assert first.read_bytes() == second.read_bytes()
    assert (
        result.write(tmp_path / "c1.csv", table="comparisons").read_bytes()
        == again.write(tmp_path / "c2.csv", table="comparisons").read_bytes()
    )
    frame = pd.read_csv(first, keep_default_na=False, na_values=[""])
    assert len(frame) == len(result.measurement_rows)
    for row, (_, back) in zip(result.measurement_rows, frame.iterrows(), strict=True):
        for key in ("anterior_height", "max_loss_pct", "wedge_angle_deg"):
            if row[key] is None:
                assert pd.isna(back[key])
            else:
                assert back[key] == row[key]  # full precision survives the CSV
    text = first.read_text(encoding="utf-8")
    assert "\r" not in text and ",true," in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_cells_follow_the_shared_csv_output(result, tmp_path):
    """The CSV parts the workers format are the bytes of the shared CSV output of
    the table's rows (as ``--format csv`` of every command writes them)."""
    from vheight.cli._output import emit_csv

    for table, rows, columns in (
        ("measurements", result.measurement_rows, result.measurement_columns),
        ("comparisons", result.comparison_rows, result.comparison_columns),
        ("errors", result.error_rows, batch_module.ERROR_COLUMNS),
    ):
        shared = io.StringIO()
        emit_csv(rows, columns=columns, stream=shared)
        written = result.write(tmp_path / f"{table}.csv", table=table)
        assert written.read_text(encoding="utf-8") == shared.getvalue()


def test_parquet_round_trip_and_rerun(folder, result, tmp_path):
    path = result.write(tmp_path / "m.parquet")
    again = run_batch(folder, workers=1, progress=False).write(tmp_path / "n.parquet")
    assert path.read_bytes() == again.read_bytes()
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, result.measurements)
    forced = result.write(tmp_path / "m.dat", format="parquet")
    assert pd.read_parquet(forced).shape == back.shape


def test_write_unknown_table(result, tmp_path):
    with pytest.raises(ValueError, match="table must be"):
        result.write(tmp_path / "x.csv", table="vertebrae")


# --------------------------------------------------------------------------------------
# Speed by design: headers only; pools and executors
# --------------------------------------------------------------------------------------


def test_pixels_are_never_read(good_folder, monkeypatch):
    """Each film's header is read once, stopping before the pixel data (by the lean
    header reader, or by pydicom with ``stop_before_pixels``); nothing decodes pixels."""
    import vheight.dicom

    calls = []
    headers = []
    real = pydicom.dcmread
    real_header = vheight.dicom.read_dicom_info_stream

    def spy(*args, **kwargs):
        calls.append(kwargs.get("stop_before_pixels", False))
        return real(*args, **kwargs)

    def header_spy(stream, **kwargs):
        headers.append(kwargs["name"])
        return real_header(stream, **kwargs)

    def no_pixels(*args, **kwargs):
        raise AssertionError("a batch must not decode pixel data")

    monkeypatch.setattr(pydicom, "dcmread", spy)
    monkeypatch.setattr(vheight.dicom, "read_dicom_info_stream", header_spy)
    monkeypatch.setattr(vheight.dicom, "load_dicom_stream", no_pixels)
    monkeypatch.setattr(vheight.dicom, "film_from_dataset", no_pixels)
    result = run_batch(good_folder, workers=1, progress=False)
    assert not result.failed
    assert len(headers) == 11 and all(calls)


@pytest.mark.parametrize("workers", [pytest.param(2, id="process-pool")])
def test_process_pool_gives_the_same_rows(good_folder, workers):
    one = run_batch(good_folder, workers=1, progress=False)
    many = run_batch(good_folder, workers=workers, progress=False)
    assert many.measurement_rows == one.measurement_rows
    assert many.comparison_rows == one.comparison_rows


def test_pool_without_fork_when_threads_run(good_folder):
    # fork() is unsafe once other threads run: workers then start from a forkserver.
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    try:
        context = batch_module._pool_context()
        assert context is None or context.get_start_method() != "fork"
        pooled = run_batch(good_folder, workers=2, progress=False)
    finally:
        release.set()
        thread.join()
    one = run_batch(good_folder, workers=1, progress=False)
    assert pooled.measurement_rows == one.measurement_rows


def test_any_executor(good_folder):
    one = run_batch(good_folder, workers=1, progress=False)
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = run_batch(good_folder, executor=pool, progress=False)
    assert threaded.measurement_rows == one.measurement_rows
    assert threaded.comparison_rows == one.comparison_rows


@pytest.mark.parametrize(
    ("workers", "cpus", "expected"),
    [
        pytest.param(None, 8, 1, id="default-small-folder-in-process"),
        pytest.param(None, 1, 1, id="default-one-cpu"),
        pytest.param(4, 8, 4, id="explicit"),
        pytest.param(40, 8, 13, id="never-more-than-files"),
    ],
)
def test_worker_count(good_folder, monkeypatch, workers, cpus, expected):
    seen = {}
    real = batch_module._run_chunks

    def spy(*args, **kwargs):
        seen["workers"] = kwargs["workers"]
        return real(*args, **{**kwargs, "workers": 1})

    monkeypatch.setattr(batch_module, "_run_chunks", spy)
    monkeypatch.setattr(batch_module.os, "cpu_count", lambda: cpus)
    run_batch(good_folder, workers=workers, progress=False)
    assert seen["workers"] == expected


def test_failed_task_becomes_error_rows_and_the_rest_go_on(good_folder, monkeypatch):
    real = batch_module._measure_chunk

    def crash_on_d(root, rels, reference):
        if "D/pre.vheight.json" in rels:
            raise RuntimeError("worker lost")
        return real(root, rels, reference)

    monkeypatch.setattr(batch_module, "_measure_chunk", crash_on_d)
    with ThreadPoolExecutor(max_workers=3) as pool:
        result = run_batch(good_folder, executor=pool, progress=False)
    failed = {row["annotation"]: row["error"] for row in result.error_rows}
    assert "D/pre.vheight.json" in failed and 1 <= len(failed) <= 2
    for annotation, error in failed.items():
        assert error.startswith(f"{annotation}: the worker measuring it failed: RuntimeError")
    assert result.n_annotations == 13 and result.n_failed == len(failed)
    assert result.n_vertebrae == (13 - len(failed)) * len(LEVELS)


def test_chunks_cover_every_file_once():
    items = [f"{i}.vheight.json" for i in range(1000)]
    chunks = batch_module._chunks(items, 2)
    assert [x for chunk in chunks for x in chunk] == items
    assert max(len(c) for c in chunks) <= 64 and len(chunks) >= 8
    assert batch_module._chunks(items[:3], 8) == [(items[0],), (items[1],), (items[2],)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("progress", "shown"), [(True, True), (False, False)])
def test_progress_bar_on_stderr(good_folder, monkeypatch, progress, shown):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_batch(good_folder, workers=1, progress=progress)
    text = terminal.getvalue()
    assert ("vheight batch" in text and "13/13" in text) is shown


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def test_cli_clean_folder_exit_0_and_files(good_folder, tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = main(["batch", str(good_folder), "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert out.exists() and (tmp_path / "results-comparisons.csv").exists()
    assert "13 of 13 annotation(s) measured" in captured.err
    assert "comparisons" in captured.out
    expected = run_batch(good_folder, workers=1, progress=False)
    assert out.read_bytes() == expected.write(tmp_path / "expected.csv").read_bytes()


def test_cli_failures_exit_1_listing_each(folder, tmp_path, capsys):
    code = main(
        [
            "batch",
            str(folder),
            "--out",
            str(tmp_path / "r.csv"),
            "--comparisons",
            str(tmp_path / "c.csv"),
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("vheight batch: error:") == 4
    for _, (annotation, _) in build_bad_expectations(folder).items():
        assert _rel(annotation, folder) in captured.err
    assert (tmp_path / "c.csv").exists()


def test_cli_json_is_one_document(good_folder, capsys):
    code = main(["batch", str(good_folder), "--format", "json", "--workers", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    document = json.loads(captured.out)
    assert set(document) == {
        "folder",
        "reference",
        "measurements",
        "comparisons",
        "errors",
        "warnings",
    }
    assert len(document["measurements"]) == 13 * len(LEVELS)
    assert captured.err == ""


def test_cli_csv_stdout_equals_file(good_folder, tmp_path, capsys):
    code = main(["batch", str(good_folder), "--format", "csv", "--workers", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    written = run_batch(good_folder, workers=1, progress=False).write(tmp_path / "r.csv")
    assert captured.out == written.read_text(encoding="utf-8")


def test_cli_table_and_reference(good_folder, capsys):
    code = main(["batch", str(good_folder), "--reference", "posterior", "--workers", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 0
    assert "anterior_height" in captured.out and "restoration_pct_of_lost" in captured.out
    assert "posterior" in captured.out


def test_cli_unwritable_out_fails_before_measuring(good_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch_module, "run_batch", lambda *a, **k: pytest.fail("ran the batch"))
    code = main(["batch", str(good_folder), "--out", str(tmp_path / "no" / "r.csv")])
    assert code == 1
    assert "folder" in capsys.readouterr().err


def test_cli_out_and_comparisons_differ(good_folder, tmp_path, capsys):
    same = str(tmp_path / "r.csv")
    assert main(["batch", str(good_folder), "--out", same, "--comparisons", same]) == 1
    assert "name the same file" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_cli_empty_folder_exit_1(tmp_path, capsys):
    assert main(["batch", str(tmp_path), "-q"]) == 1
    assert "no annotation file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--workers", "0"], id="zero-workers"),
        pytest.param(["--workers", "2", "--scheduler", "tcp://x:1"], id="workers-and-scheduler"),
        pytest.param(["--reference", "median"], id="bad-reference"),
    ],
)
def test_cli_bad_usage_exit_2(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(tmp_path), *argv])
    assert exc.value.code == 2


def test_dask_is_imported_only_when_used(good_folder):
    code = (
        "import sys; from vheight.batch import run_batch; "
        f"run_batch({str(good_folder)!r}, workers=1, progress=False); "
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_cli_bad_scheduler_address(tmp_path, capsys):
    pytest.importorskip("distributed")
    assert main(["batch", str(tmp_path), "--scheduler", "no port here"]) == 1
    assert "cannot reach the Dask scheduler at no port here" in capsys.readouterr().err
    gc.collect()  # nothing of the failed connection is left to finalise later


def test_cli_missing_dask_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["batch", str(tmp_path), "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert 'pip install "vheight[dask]"' in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Dask distributed
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dask_local_cluster_api_and_cli(folder, result, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_dask = run_batch(folder, executor=client, progress=False)
        code = main(
            [
                "batch",
                str(folder),
                "--scheduler",
                cluster.scheduler_address,
                "--out",
                str(tmp_path / "dask.csv"),
                "-q",
            ]
        )
    assert on_dask.measurement_rows == result.measurement_rows
    assert on_dask.comparison_rows == result.comparison_rows
    assert code == 1  # the bad files of the folder
    assert (tmp_path / "dask.csv").read_bytes() == result.write(tmp_path / "local.csv").read_bytes()
    capsys.readouterr()


# --------------------------------------------------------------------------------------
# The benchmark cannot rot
# --------------------------------------------------------------------------------------


def test_benchmark_runs_with_a_tiny_n(tmp_path, capsys):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_batch.py"
    spec = importlib.util.spec_from_file_location("bench_batch", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(
        ["--studies", "6", "--workers", "1", "2", "--repeat", "1", "--dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert figures["studies"] == 6
    assert figures["ratio_1_worker"] > 0 and figures["speedup_2_workers"] > 0
    assert len(figures["ratio_1_worker_rounds"]) == 1
    assert figures["ratio_1_worker_median"] == figures["ratio_1_worker_rounds"][0]
    assert "ratio" in out and "median of the rounds' ratios" in out


# --------------------------------------------------------------------------------------
# Readers: one comparison per subject and reader
# --------------------------------------------------------------------------------------


def _two_readers(root: Path) -> None:
    """Patient P read by two readers (one folder each, the same films), and a
    third reader who annotated only the pre film."""
    for tp, front in (("pre", 0.62), ("post", 0.86)):
        write_film(root / "films" / f"{tp}.dcm", patient_id="P", study=f"P-{tp}")
        for reader, shift in (("alice", 0.0), ("bob", 0.03), ("carol", 0.0)):
            if reader == "carol" and tp == "post":
                continue
            write_annotation(
                root / reader / f"{tp}.vheight.json",
                film=f"../films/{tp}.dcm",
                timepoint=tp,
                fronts={"L1": front + shift},
                annotator=reader,
            )


def test_two_readers_of_one_patient_give_two_comparisons(tmp_path):
    _two_readers(tmp_path)
    result = run_batch(tmp_path, workers=1, progress=False)
    assert not result.failed and result.warnings == ()
    by_file = {r["annotation"]: r["annotator"] for r in result.measurement_rows}
    assert by_file == {
        f"{reader}/{tp}.vheight.json": reader
        for reader in ("alice", "bob", "carol")
        for tp in ("pre", "post")
        if not (reader == "carol" and tp == "post")
    }
    pairs = {
        (r["annotator"], r["pre_annotation"], r["post_annotation"], r["subject"])
        for r in result.comparison_rows
    }
    assert pairs == {
        ("alice", "alice/pre.vheight.json", "alice/post.vheight.json", "P"),
        ("bob", "bob/pre.vheight.json", "bob/post.vheight.json", "P"),
    }
    assert result.n_comparisons == 2
    for reader in ("alice", "bob"):
        rows = [r for r in result.comparison_rows if r["annotator"] == reader]
        expected = compare_files(
            tmp_path / reader / "pre.vheight.json", tmp_path / reader / "post.vheight.json"
        ).records()
        assert [{k: r[k] for k in expected[0]} for r in rows] == expected
    with ThreadPoolExecutor(max_workers=3) as pool:
        pooled = run_batch(tmp_path, executor=pool, progress=False)
    assert _tables(pooled) == _tables(result)


def test_one_reader_with_two_pre_films_is_not_mixed_with_another(tmp_path):
    _two_readers(tmp_path)
    write_annotation(
        tmp_path / "alice" / "again.vheight.json",
        film="../films/pre.dcm",
        timepoint="pre",
        fronts={"L1": 0.6},
        annotator="alice",
    )
    result = run_batch(tmp_path, workers=1, progress=False)
    assert {r["annotator"] for r in result.comparison_rows} == {"bob"}
    (warning,) = [w for w in result.warnings if w.startswith("not paired")]
    assert "patient_id P read by alice" in warning and "alice/again.vheight.json" in warning


# --------------------------------------------------------------------------------------
# A worker process that dies
# --------------------------------------------------------------------------------------

# Set by the tests below before the pool forks: a folder of tokens; the chunk task of
# a B/ file takes one (an atomic unlink) and kills its own worker process with it.
_KILL_SWITCH: dict[str, Path] = {}


def _dying_chunk_task(root, rels, reference):
    if any(rel.startswith("B/") for rel in rels):
        for token in sorted(_KILL_SWITCH["path"].iterdir()):
            try:
                token.unlink()
            except FileNotFoundError:
                continue  # taken by the other worker
            os.kill(os.getpid(), signal.SIGKILL)
    return batch_module._real_chunk_task(root, rels, reference)


@pytest.mark.parametrize(
    ("deaths", "lost"), [pytest.param(1, False, id="retried"), pytest.param(9, True, id="lost")]
)
def test_a_killed_worker_is_replaced_and_its_chunk_run_again(
    good_folder, tmp_path, monkeypatch, deaths, lost
):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the kill switch reaches the workers by fork")
    # Forked workers see the switch (a thread left by another test would otherwise
    # make the pool start its workers from a fork server).
    monkeypatch.setattr(batch_module, "_pool_context", lambda: multiprocessing.get_context("fork"))
    one = run_batch(good_folder, workers=1, progress=False)
    switch = tmp_path / "deaths"
    switch.mkdir()
    for i in range(deaths):
        (switch / str(i)).touch()
    monkeypatch.setitem(_KILL_SWITCH, "path", switch)
    monkeypatch.setattr(batch_module, "_real_chunk_task", batch_module._chunk_task, raising=False)
    monkeypatch.setattr(batch_module, "_chunk_task", _dying_chunk_task)
    pooled = run_batch(good_folder, workers=2, progress=False)
    names = [r["annotation"] for r in pooled.measurement_rows if r["error"] is not None]
    if not lost:
        assert not list(switch.iterdir())  # the worker did die, once
        assert _tables(pooled) == _tables(one)
        return
    assert len(list(switch.iterdir())) <= deaths - 2  # the first run and its retry died
    assert sorted(set(r["annotation"] for r in pooled.measurement_rows)) == sorted(
        set(r["annotation"] for r in one.measurement_rows)
    )
    assert names
    for row in pooled.error_rows:
        assert "the worker measuring it failed: BrokenProcessPool" in row["error"]
    assert len(names) == len(set(names)) == pooled.n_failed


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find workers")
def test_kill_one_worker_of_a_2000_study_batch(tmp_path):
    """``kill -9`` of one pool worker at a random moment: the same bytes as an
    undisturbed run (issue: a killed worker failed most of the batch)."""
    import random

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_batch.py"
    spec = importlib.util.spec_from_file_location("bench_batch", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path / "studies"
    bench.generate(folder, 2000)
    command = [sys.executable, "-m", "vheight", "batch", str(folder), "--workers", "2", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def run(out: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*command, "--out", str(tmp_path / out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    undisturbed = run("calm.csv")
    _, calm_err = undisturbed.communicate(timeout=600)
    assert undisturbed.returncode == 0, calm_err.decode()

    killed = None
    for _attempt in range(5):  # the batch may end before the chosen moment: try again
        disturbed = run("killed.csv")
        delay = random.uniform(0.2, 2.0)
        deadline = time.monotonic() + 60
        while disturbed.poll() is None and time.monotonic() < deadline:
            workers = _children(disturbed.pid)
            if len(workers) >= 2:
                time.sleep(delay)
                workers = _children(disturbed.pid)
                if workers and disturbed.poll() is None:
                    killed = random.choice(workers)
                    os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.01)
        _, err = disturbed.communicate(timeout=600)
        if killed is not None:
            break
    assert killed is not None, "no worker was running to be killed"
    assert disturbed.returncode == 0, err.decode()
    for name in ("calm", "killed"):
        assert (tmp_path / f"{name}.csv").stat().st_size > 0
    assert (tmp_path / "killed.csv").read_bytes() == (tmp_path / "calm.csv").read_bytes()
    assert (tmp_path / "killed-comparisons.csv").read_bytes() == (
        tmp_path / "calm-comparisons.csv"
    ).read_bytes()


# --------------------------------------------------------------------------------------
# Comparisons made by the workers: the same tables as in one process
# --------------------------------------------------------------------------------------


def _tables(result: BatchResult) -> tuple:
    return (
        result.measurement_rows,
        result.comparison_rows,
        result.error_rows,
        result.warnings,
        result.measurement_columns,
        result.comparison_columns,
    )


@pytest.mark.parametrize("max_workers", [pytest.param(2, id="2"), pytest.param(5, id="5")])
def test_worker_comparisons_equal_in_process_ones(folder, max_workers):
    """Pairs measured in one chunk are compared by its worker, pairs spanning chunks
    afterwards on the pool; failed files and refused pairings alike."""
    one = run_batch(folder, workers=1, progress=False)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        pooled = run_batch(folder, executor=pool, progress=False)
    assert _tables(pooled) == _tables(one)


def test_pairs_spanning_chunks_are_compared_on_the_pool(good_folder, monkeypatch):
    one = run_batch(good_folder, workers=1, progress=False)
    spans = []
    real = batch_module._compare_chunk

    def spy(root, groups, reference):
        spans.extend(groups)
        return real(root, groups, reference)

    monkeypatch.setattr(batch_module, "_compare_chunk", spy)
    monkeypatch.setattr(batch_module, "_chunks", lambda items, workers: [(i,) for i in items])
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = run_batch(good_folder, executor=pool, progress=False)
    assert spans and len(spans) == one.n_comparisons
    assert _tables(pooled) == _tables(one)


def test_a_task_that_fails_once_is_run_again(good_folder, monkeypatch):
    one = run_batch(good_folder, workers=1, progress=False)
    failures = {"chunk": 0, "compare": 0}
    chunk_task, compare_chunk = batch_module._chunk_task, batch_module._compare_chunk

    def flaky_chunk(root, rels, reference):
        if "C/pre.vheight.json" in rels and not failures["chunk"]:
            failures["chunk"] += 1
            raise OSError("connection to the worker lost")
        return chunk_task(root, rels, reference)

    def flaky_compare(root, groups, reference):
        if not failures["compare"]:
            failures["compare"] += 1
            raise OSError("connection to the worker lost")
        return compare_chunk(root, groups, reference)

    monkeypatch.setattr(batch_module, "_chunk_task", flaky_chunk)
    monkeypatch.setattr(batch_module, "_compare_chunk", flaky_compare)
    monkeypatch.setattr(batch_module, "_chunks", lambda items, workers: [(i,) for i in items])
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = run_batch(good_folder, executor=pool, progress=False)
    assert failures == {"chunk": 1, "compare": 1}
    assert _tables(pooled) == _tables(one) and not pooled.failed


def test_refused_comparison_in_a_worker(tmp_path, monkeypatch):
    from vheight import comparison
    from vheight.errors import MeasurementError

    write_annotation(tmp_path / "pre.vheight.json", film=None, timepoint="pre")
    write_annotation(tmp_path / "post.vheight.json", film=None, timepoint="post")

    def refuse(pre, post, followup=None, **options):
        raise MeasurementError("the films share no level")

    monkeypatch.setattr(comparison, "compare", refuse)
    one = run_batch(tmp_path, workers=1, progress=False)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = run_batch(tmp_path, executor=pool, progress=False)
    assert _tables(pooled) == _tables(one) and one.error_rows[0]["stage"] == "compare"


def test_workers_send_back_no_measurement_objects(good_folder):
    rels = batch_module._find_relative(good_folder)
    part = batch_module._chunk_task(str(good_folder.resolve()), rels, "adjacent")
    sent = pickle.dumps(part)
    assert part.films and b"Measurement" not in sent and b"Annotation" not in sent
    assert part.compared.keys and all(error is None for error in part.compared.errors)
    columns = pickle.loads(part.table)  # made a typed table only when one is asked for
    assert len(columns) == len(batch_module.MEASUREMENT_COLUMNS)
    rows = len(part.csv.decode().splitlines())
    assert {len(values) for values in columns} == {rows} and rows == len(rels) * len(LEVELS)
    assert part.n_vertebrae == rows


def _large_result_then_killed(marker: str, size: int, delay: float) -> bytes:
    """A task whose worker is killed (the first time) ``delay`` s after its result is
    made: while the result is on its way back (sending 400 MB takes about a second)."""
    import threading

    result = b"x" * size
    if not os.path.exists(marker):
        open(marker, "w").close()
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return result


_KILLED_WHILE_SENDING = """
import sys
sys.path.insert(0, sys.argv[1])
from test_batch import _large_result_then_killed
from vheight.batch import _Runner

for i, delay in enumerate((0.3, 0.45, 0.6)):
    runner = _Runner(None, 2)
    try:
        marker = f"{sys.argv[2]}-{i}"
        (result,) = runner.map(_large_result_then_killed, [(marker, 400_000_000, delay)])
    finally:
        runner.close()
    print(len(result))
"""


def test_a_worker_killed_while_its_result_is_sent_does_not_hang_the_batch(tmp_path):
    """A worker killed with half its result in the pool's pipe left the pool's reader
    waiting for the other half forever (the batch hung); now the task is run again."""
    marker = tmp_path / "killed-once"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_SENDING, str(Path(__file__).parent), str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    assert all(Path(f"{marker}-{i}").exists() for i in range(3))  # each first worker killed
    assert done.stdout.split() == ["400000000"] * 3
