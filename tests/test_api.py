"""The file-level API: calibration precedence, measure_file, compare_files, re-exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import vheight
from vheight.api import compare_files, film_path, measure_file, resolve_calibration
from vheight.calibration import Calibration
from vheight.errors import ImageReadError

DATA = Path(__file__).parent / "data" / "annotations"
PRE, POST, FOLLOWUP = (DATA / f"patient7_{t}.vheight.json" for t in ("pre", "post", "followup"))
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_cr(path, *, rows=3000, columns=2400, uid=None, **header):
    """A small-header CR film; pixel data is a 1-row stub (only headers are read)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in header.items():
        setattr(ds, key, value)
    ds.PixelData = np.zeros((rows, columns), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def uncalibrated_copy(tmp_path, source=PRE, **changes):
    doc = json.loads(source.read_text(encoding="utf-8"))
    doc["calibration"] = None
    doc.update(changes)
    path = tmp_path / source.name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_reexports():
    for name in (
        "load_annotation",
        "save_annotation",
        "Annotation",
        "measure",
        "compare",
        "measure_file",
        "compare_files",
        "resolve_calibration",
        "Measurement",
        "Comparison",
        "Calibration",
        "LEVELS",
        "POINT_NAMES",
    ):
        assert hasattr(vheight, name) and name in vheight.__all__
    assert vheight.measure is vheight.morphometry.measure


def test_annotation_calibration_wins_over_header(tmp_path):
    film = write_cr(tmp_path / "pre.dcm", ImagerPixelSpacing=[0.2, 0.2])
    a = vheight.load_annotation(PRE)
    cal, warnings = resolve_calibration(a, annotation_path=PRE, image=film)
    assert cal == a.calibration and warnings == []


@pytest.mark.parametrize(
    ("header", "label", "spacing"),
    [
        pytest.param({"ImagerPixelSpacing": [0.2, 0.2]}, "mm Proj", 0.2, id="proj"),
        pytest.param(
            {"ImagerPixelSpacing": [0.22, 0.22], "EstimatedRadiographicMagnificationFactor": 1.1},
            "mm ERMF",
            0.2,
            id="ermf",
        ),
        pytest.param({"PixelSpacing": [0.2, 0.2]}, "mm", 0.2, id="pixel-spacing"),
    ],
)
def test_header_calibration_through_image_file(tmp_path, header, label, spacing):
    write_cr(tmp_path / "pre.dcm", uid="1.2.826.0.1.3680043.10.1082.7.1", **header)
    path = uncalibrated_copy(tmp_path)
    m = measure_file(path)
    assert m.spacing_label == label and m.unit == "mm"
    l1 = m.record("L1")
    assert l1["anterior_height"] == pytest.approx(180 * spacing, rel=1e-9)
    assert l1["wedge_ratio"] == pytest.approx(18 / 29, rel=1e-9)
    assert m.source == str(path)
    assert not [w for w in m.warnings if "SOP Instance UID" in w]


def test_explicit_image_and_mismatch_warnings(tmp_path):
    film = write_cr(tmp_path / "other.dcm", rows=2000, columns=1500, ImagerPixelSpacing=[0.1, 0.1])
    path = uncalibrated_copy(tmp_path)
    m = measure_file(path, image=film)
    assert m.spacing_label == "mm Proj"
    assert any("names SOP Instance UID 1.2.826.0.1.3680043.10.1082.7.1" in w for w in m.warnings)
    assert any(
        "made on a 2400 x 3000 px image but other.dcm is 1500 x 2000 px" in w for w in m.warnings
    )


def test_zero_spacing_header_is_uncalibrated_with_warning(tmp_path):
    write_cr(tmp_path / "pre.dcm", uid="1.2.826.0.1.3680043.10.1082.7.1", PixelSpacing=[0, 0])
    m = measure_file(uncalibrated_copy(tmp_path))
    assert m.unit == "px"
    assert any(
        w.startswith("pre.dcm: PixelSpacing = 0") and "is not usable" in w for w in m.warnings
    )


def test_real_cr_film_without_spacing(tmp_path):
    data = pytest.importorskip("pydicom.data")
    film = Path(data.get_testdata_file("RG3_UNCR.dcm"))
    shutil.copy(film, tmp_path / "RG3_UNCR.dcm")
    path = uncalibrated_copy(
        tmp_path, image={"file": "RG3_UNCR.dcm", "rows": None, "columns": None}
    )
    m = measure_file(path)
    assert m.unit == "px" and m.record("L1")["anterior_height"] == pytest.approx(180.0)


def test_missing_named_film_is_a_warning_and_missing_explicit_image_an_error(tmp_path):
    path = uncalibrated_copy(tmp_path)
    assert film_path(vheight.load_annotation(path), path) == tmp_path / "pre.dcm"
    m = measure_file(path)
    assert m.unit == "px"
    assert m.warnings[0].startswith("the film 'pre.dcm' named by the annotation was not found")
    with pytest.raises(ImageReadError, match=r"nothere\.dcm: film not found"):
        measure_file(path, image=tmp_path / "nothere.dcm")
    cal, warnings = resolve_calibration(vheight.Annotation())
    assert cal == Calibration.uncalibrated() and warnings == []


def test_compare_files():
    c = compare_files(PRE, POST, FOLLOWUP, reference="max")
    assert c.unit == "mm" and c.pre.source == str(PRE)
    assert {r["reference_method"] for r in c.records()} == {"max"}
    l1 = [r for r in c.records() if r["level"] == "L1"]
    assert l1[0]["restoration_pct_of_lost"] == pytest.approx(100 * 5 / 11, rel=1e-9)


ROOT = Path(__file__).resolve().parent.parent


def test_sample_series_is_measured_with_its_header_calibration():
    pre = measure_file(ROOT / "sample_images" / "pre.vheight.json")
    assert pre.unit == "mm" and pre.spacing_label != "px"
    assert pre.treated_levels == ("L1",) and pre.record("L1")["treated"] is True
    c = compare_files(
        *(ROOT / "sample_images" / f"{t}.vheight.json" for t in ("pre", "post", "followup"))
    )
    l1 = [r for r in c.records() if r["level"] == "L1"]
    assert [r["height"] for r in l1] == ["anterior", "middle", "posterior"]
    assert l1[0]["delta"] > 0  # the kyphoplasty restored some anterior height


def test_readme_api_example_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- section: api -->") :]
    code = section[section.index("```python") + len("```python") :]
    code = code[: code.index("```")]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md (api example)", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("mm ")
    assert "restoration_pct_of_lost" in out and "L1" in out


def test_package_import_is_light_and_heavy_entry_points_load_on_use():
    code = (
        "import sys, vheight\n"
        "heavy = [m for m in ('pydicom', 'pandas', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from vheight.batch import run_batch\n"
        "from vheight.loader import load_film, read_film_info\n"
        "assert vheight.run_batch is run_batch\n"
        "assert vheight.load_film is load_film and vheight.read_film_info is read_film_info\n"
        "assert all(hasattr(vheight, name) for name in vheight.__all__)\n"
        "try:\n"
        "    vheight.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('missing attribute did not raise')\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
