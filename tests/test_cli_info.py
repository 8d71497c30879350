"""``vheight info``: formats, several films and folders, failures, and the benchmark script."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from test_dicom import make_dataset, smooth_image, write_dicom

from vheight.cli import main

INFO_KEYS = {
    "rows",
    "columns",
    "modality",
    "photometric_interpretation",
    "transfer_syntax_uid",
    "transfer_syntax_name",
    "row_spacing_mm",
    "col_spacing_mm",
    "spacing_source",
    "spacing_label",
    "patient_position",
    "view_position",
    "sop_class_uid",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "bits_stored",
    "number_of_frames",
    "warnings",
    "name",
    "path",
    "format",
}


@pytest.fixture
def films(tmp_path) -> Path:
    folder = tmp_path / "films"
    (folder / "sub").mkdir(parents=True)
    write_dicom(
        make_dataset(ImagerPixelSpacing=[0.139, 0.139], ViewPosition="LL"), folder / "lateral.dcm"
    )
    write_dicom(make_dataset(PixelSpacing=[0.0, 0.0]), folder / "sub" / "zero.dcm")
    Image.fromarray(smooth_image(bits=8)).save(folder / "photo.png")
    (folder / "README.txt").write_text("not a film\n")
    (folder / ".hidden.dcm").write_text("hidden\n")
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["info", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_of_one_film_is_one_object(capsys, films):
    code, out, err = run(capsys, str(films / "lateral.dcm"), "--format", "json")
    assert code == 0
    record = json.loads(out)
    assert INFO_KEYS <= set(record)
    assert record["rows"] == 96 and record["columns"] == 80
    assert record["modality"] == "DX"
    assert record["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert record["transfer_syntax_name"] == "Explicit VR Little Endian"
    assert record["row_spacing_mm"] == pytest.approx(0.139)
    assert record["spacing_label"] == "mm Proj" and record["spacing_source"] == "ImagerPixelSpacing"
    assert record["view_position"] == "LL" and record["warnings"] == []


def test_table_of_one_film_lists_every_fact(capsys, films):
    code, out, err = run(capsys, str(films / "sub" / "zero.dcm"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["key", "value"]
    facts = dict(line.split(None, 1) for line in lines[2:] if len(line.split(None, 1)) == 2)
    assert facts["spacing_label"] == "px" and facts["rows"] == "96"
    assert "PixelSpacing = 0.0\\0.0 is not usable" in err or "PixelSpacing = 0\\0" in err
    assert "warning" in err


def test_folder_csv_skips_non_films_quietly(capsys, films):
    code, out, err = run(capsys, str(films), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["path"]).name for r in rows] == ["lateral.dcm", "photo.png", "zero.dcm"]
    assert {r["format"] for r in rows} == {"DICOM", "PNG"}
    assert "skipped 1 file(s) that are not films" in err


def test_folder_table_has_one_row_per_film(capsys, films):
    code, out, err = run(capsys, str(films))
    assert code == 0
    lines = out.splitlines()
    assert "transfer syntax" in lines[0] and "label" in lines[0]
    assert len(lines) == 2 + 3
    assert any("mm Proj" in line for line in lines)


def test_failures_exit_1_but_good_films_are_printed(capsys, films, tmp_path):
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"\x01garbage" * 30)
    missing = tmp_path / "missing.dcm"
    code, out, err = run(
        capsys, str(films / "lateral.dcm"), str(bad), str(missing), "--format", "json"
    )
    assert code == 1
    records = json.loads(out)
    assert [r["name"] for r in records] == ["lateral.dcm"]
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 2
    assert "garbage.dcm: not a DICOM file (no DICM preamble" in errors[0]
    assert "missing.dcm: no such file" in errors[1]


def test_nothing_found_is_a_failure(capsys, tmp_path):
    code, out, err = run(capsys, str(tmp_path), "--format", "json")
    assert code == 1 and json.loads(out) == [] and "no films found" in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "x.dcm", "--format", "xml"])
    assert exit_info.value.code == 2


def test_info_does_not_import_pixel_decoders_at_parse_time():
    import subprocess
    import sys

    code = (
        "import argparse, sys; import vheight.cli.info as info; "
        "info.register(argparse.ArgumentParser().add_subparsers()); "
        "print(sorted(m for m in ('pydicom', 'numpy', 'PIL', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_benchmark_script_runs_at_a_tiny_size(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--size", "64", "--films", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "uncompressed" in out and "JPEG 2000 lossless" in out
    assert "vheight info (in-process)" in out and out.count("CPU time ratio") == 5
