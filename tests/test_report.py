"""PDF report: pages, printed text, de-identification, inputs from the app, the command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _report_series import PATIENT_ID, PATIENT_NAME, STUDY_DATES, write_series

from vheight.annotation import load_annotation
from vheight.cli import main
from vheight.errors import VHeightError
from vheight.loader import load_film
from vheight.morphometry import measure
from vheight.report import DISCLAIMER, ReportItem, prepare_films, report_bytes, write_report

# Without poppler the text checks are skipped, except in CI where they must run.
pytestmark = pytest.mark.skipif(
    (shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None)
    and os.environ.get("CI") != "true",
    reason="poppler-utils (pdftotext, pdfinfo) not installed",
)


def _text(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout


def _info(pdf: Path) -> dict[str, str]:
    out = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("patient"))


@pytest.fixture(scope="module")
def reports(series, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    paths = [series["followup"], series["pre"], series["post"]]  # order is restored
    normal = write_report(paths, folder / "report.pdf")
    deidentified = write_report(paths, folder / "deid.pdf", deidentify=True)
    return normal, deidentified


def test_one_summary_page_and_one_page_per_film(reports):
    for pdf in reports:
        assert pdf.read_bytes().startswith(b"%PDF-")
        info = _info(pdf)
        assert info["Pages"] == "4"
        assert "(A4)" in info["Page size"]


def test_text_holds_levels_heights_units_grades_and_footer(series, reports):
    text = _text(reports[0])
    pages = text.split("\f")
    assert "Comparison: pre / post / follow-up" in pages[0]
    titles = [
        next(line.strip() for line in p.splitlines() if " — " in line and "vheight" not in line)
        for p in pages[1:4]
    ]
    assert [t.split(" — ")[0] for t in titles] == ["Pre-operative", "Post-operative", "Follow-up"]
    for timepoint, page in zip(("pre", "post", "followup"), pages[1:4], strict=True):
        annotation = load_annotation(series[timepoint])
        film = load_film(series[timepoint].parent / f"{timepoint}.dcm")
        m = measure(annotation, film.calibration)
        assert m.spacing_label == "mm ERMF"
        for rec in m.records():
            row = next(
                line for line in page.splitlines() if line.strip().startswith(rec["level"] + " ")
            )
            for key in ("anterior_height", "middle_height", "posterior_height"):
                assert f"{rec[key]:.1f}" in row, (timepoint, rec["level"], key)
            assert f"{rec['wedge_ratio']:.3f}" in row
        assert "mm ERMF" in page
        assert "Ha" in page and "Hp" in page
    assert "wedge" in pages[1]  # pre-operative L1 deformity type
    flat = " ".join(text.split())
    assert " ".join(DISCLAIMER.split()[:12]) in flat
    from vheight import __version__

    assert text.count(f"vheight {__version__} · generated") == 4  # every page's footer


def test_identified_report_names_the_patient(reports):
    text = _text(reports[0])
    family, given = PATIENT_NAME.split("^")
    assert f"{family}, {given}" in text
    assert PATIENT_ID in text
    assert "2026-01-02" in text and "pre.dcm" in text


def test_deidentified_report_prints_no_name_id_date_or_file(reports):
    text = _text(reports[1])
    family, given = PATIENT_NAME.split("^")
    for secret in (
        family,
        given,
        PATIENT_ID,
        "pre.dcm",
        "post.dcm",
        "followup.dcm",
        *(f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in STUDY_DATES.values()),
        "19480101",
    ):
        assert secret not in text, secret
    assert "Patient 1 (de-identified)" in text
    raw = reports[1].read_bytes()
    assert PATIENT_NAME.encode() not in raw and PATIENT_ID.encode() not in raw
    info = " ".join(_info(reports[1]).values())
    assert family not in info and PATIENT_ID not in info


def test_films_from_the_app_as_objects(series):
    items = []
    for timepoint in ("pre", "post"):
        annotation = load_annotation(series[timepoint])
        film = load_film(series[timepoint].parent / f"{timepoint}.dcm")
        items.append(ReportItem(annotation=annotation, film=film, name=f"{timepoint}.dcm"))
    data = report_bytes(items, reference="max")
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    groups = prepare_films(items, reference="max")
    assert [[f.annotation.timepoint for f in g] for g in groups] == [["pre", "post"]]
    assert str(groups[0][0].measurement.reference) == "max"


def test_two_patients_and_a_missing_film(tmp_path, series):
    other = write_series(tmp_path / "other", ("pre",))
    # A different patient: new ID in the header of the other film.
    import pydicom

    film = tmp_path / "other" / "pre.dcm"
    ds = pydicom.dcmread(film)
    ds.PatientID = "VH-0099"
    ds.PatientName = "Roe^Richard"
    ds.save_as(film)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(series["post"], lonely / "post.vheight.json")  # its film is not there
    pdf = write_report(
        [series["pre"], other["pre"], lonely / "post.vheight.json"], tmp_path / "r.pdf"
    )
    # Patient VH-0042 (pre only), VH-0099 (pre only), the film-less folder: 3 x (summary + 1 film).
    assert _info(pdf)["Pages"] == "6"
    text = _text(pdf)
    assert "Roe, Richard" in text and "VH-0099" in text
    assert "Summary: suggested grade per level" in text
    assert "not found" in text and "Film not available" in text


def test_unknown_reference_and_empty_input_are_refused(series):
    with pytest.raises(VHeightError, match="unknown reference method 'median'"):
        report_bytes([series["pre"]], reference="median")
    with pytest.raises(VHeightError, match="nothing to report"):
        report_bytes([])


def test_cli_report(tmp_path, series, capsys):
    out = tmp_path / "cli.pdf"
    code = main(
        [
            "report",
            str(series["pre"]),
            str(series["post"]),
            "--out",
            str(out),
            "--deidentify",
            "--format",
            "json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {
        "out": str(out),
        "patients": 1,
        "films": 2,
        "deidentified": True,
        "reference": "adjacent",
    }
    assert _info(out)["Pages"] == "3"
    assert PATIENT_ID not in _text(out)


def test_cli_report_bad_annotation_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.vheight.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "x.pdf")]) == 1
    assert "bad.vheight.json" in capsys.readouterr().err
    assert not (tmp_path / "x.pdf").exists()


def test_real_uncalibrated_cr_film_is_reported_in_pixels(tmp_path):
    from pydicom.data import get_testdata_file

    from vheight.annotation import Annotation, ImageRef

    vertebrae = {}
    for i, level in enumerate(("L1", "L2")):
        y = 500.0 + 300.0 * i
        vertebrae[level] = {
            "superior_anterior": (700.0, y + 40.0),
            "superior_middle": (840.0, y + 5.0),
            "superior_posterior": (980.0, y),
            "inferior_anterior": (702.0, y + 230.0),
            "inferior_middle": (841.0, y + 226.0),
            "inferior_posterior": (982.0, y + 231.0),
        }
    annotation = Annotation(image=ImageRef(rows=1955, columns=1841), vertebrae=vertebrae)
    item = ReportItem(
        annotation=annotation, film=get_testdata_file("RG1_UNCR.dcm"), name="RG1_UNCR.dcm"
    )
    pdf = tmp_path / "rg1.pdf"
    pdf.write_bytes(report_bytes([item]))
    text = _text(pdf)
    assert _info(pdf)["Pages"] == "2"
    assert "Spacing: uncalibrated (px) — values in px, label px." in text
    assert "PixelSpacing = 0.000\\0.000 is not usable" in text
    assert "mm" not in text.split("Measurements")[1].split("Warnings")[0]


def test_comparison_warnings_are_printed(tmp_path):
    from dataclasses import replace

    from vheight.calibration import Calibration

    paths = write_series(tmp_path, ("pre", "post"))
    pre = load_annotation(paths["pre"])
    post = replace(load_annotation(paths["post"]), calibration=Calibration.user(row_spacing_mm=0.2))
    items = [ReportItem(annotation=a, folder=str(tmp_path)) for a in (post, pre)]
    pdf = tmp_path / "w.pdf"
    pdf.write_bytes(report_bytes(items))
    first_page = " ".join(_text(pdf).split("\f")[0].split())
    assert "Comparison warnings" in first_page
    assert "the calibration labels differ" in first_page
    assert "Landmarks placed by Test Reader" in first_page
    header = _text(pdf).split("Level")[1].split("T11")[0].split()
    assert header[:3] == ["Height", "mm", "mm"]  # each film in mm with its own calibration


def test_flags_are_printed_one_line_each(tmp_path):
    """The sample follow-up's new L2 fracture: one line on the first page, and its row."""
    samples = Path(__file__).resolve().parent.parent / "sample_images"
    paths = [samples / f"{tp}.vheight.json" for tp in ("pre", "post", "followup")]
    pdf = tmp_path / "flags.pdf"
    pdf.write_bytes(report_bytes(paths))
    first_page = " ".join(_text(pdf).split("\f")[0].split())
    assert first_page.count("New fracture suspected at") == 1
    assert (
        "New fracture suspected at L2 (untreated, pre to follow-up film): anterior height "
        "-34.5 % (-9.00 mm) since pre" in first_page
    )
    assert "Recollapse suspected" not in first_page
    assert "new fracture?" in first_page


def test_a_film_that_is_not_the_annotated_one_is_flagged(tmp_path, series):
    from dataclasses import replace

    annotation = load_annotation(series["pre"])
    wrong = replace(annotation, image=replace(annotation.image, sop_instance_uid="1.2.3.4"))
    item = ReportItem(annotation=wrong, folder=str(series["pre"].parent))
    (group,) = prepare_films([item])
    assert any("is not the annotated one" in w and "1.2.3.4" in w for w in group[0].warnings)


def test_deidentified_warnings_do_not_name_files(tmp_path):
    folder = tmp_path / "Doe_Jane_study"
    paths = write_series(folder, ("pre",))
    (folder / "pre.dcm").rename(folder / "missing.dcm")  # the film is not found: a warning
    data = report_bytes([paths["pre"]], deidentify=True)
    pdf = tmp_path / "d.pdf"
    pdf.write_bytes(data)
    text = _text(pdf)
    assert "<film> not found" in " ".join(text.split())
    assert "Doe_Jane" not in text and "pre.dcm" not in text and "pre.vheight.json" not in text
