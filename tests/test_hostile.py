"""Hostile input: one finding per test, each failing on the code before it was handled.

Findings (memory bombs, hangs, tracebacks): implausible pixel spacings, images
larger than the pixel budget, FIFOs / devices / ``/proc`` files / hostile
``image.file`` paths, PALETTE COLOR films without a usable LUT, landmarks far
outside the film, header-only DICOM files, unreadable films in ``report``,
stale temporary files of interrupted saves, and uploads kept after reading.

Commands that could block or grow without bound run in a subprocess under a
timeout and ``resource.setrlimit(RLIMIT_AS)``, so that a regression fails the
test instead of taking the test run down.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from test_dicom import dicom_bytes, make_dataset, smooth_image

from vheight.calibration import Calibration, SpacingLabel, calibration_from_header
from vheight.errors import AnnotationError, CalibrationError, DicomReadError, ImageReadError
from vheight.files import STALE_TEMP_SECONDS, regular_file_problem, write_atomic
from vheight.loader import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, load_film, read_film_info

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ANNOTATION = ROOT / "sample_images" / "pre.vheight.json"
GIB = 1 << 30


def _limit_memory(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def run_vheight(
    *args: str, cwd: Path, timeout: float = 90, memory: int = 3 * GIB, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``vheight ARGS`` in a subprocess with a time and address-space limit."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vheight", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        preexec_fn=_limit_memory(memory),
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _annotation(folder: Path, name: str = "film", **changes) -> Path:
    """The sample annotation with ``image`` fields / ``calibration`` changed, in ``folder``."""
    data = json.loads(SAMPLE_ANNOTATION.read_text())
    data["image"]["sop_instance_uid"] = None
    for key, value in changes.items():
        if key == "calibration":
            data["calibration"] = value
        else:
            data["image"][key] = value
    path = folder / f"{name}.vheight.json"
    path.write_text(json.dumps(data))
    return path


def _testdata(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing from pydicom-data"
    return path


# -- 1. pixel spacing out of the plausible range --------------------------------------------


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        pytest.param({"pixel_spacing": ["1e-300", "1e-300"]}, "PixelSpacing", id="tiny"),
        pytest.param({"pixel_spacing": ["1e300", "1e300"]}, "PixelSpacing", id="huge"),
        pytest.param(
            {
                "imager_pixel_spacing": ["1e300", "1e300"],
                "estimated_radiographic_magnification_factor": "1.1",
            },
            "ImagerPixelSpacing/ERMF",
            id="ermf-huge",
        ),
        pytest.param(
            {
                "imager_pixel_spacing": ["0.15", "0.15"],
                "estimated_radiographic_magnification_factor": "1e300",
            },
            "ImagerPixelSpacing/ERMF",
            id="ermf-underflow",
        ),
        pytest.param(
            {"pixel_spacing": ["0.005", "0.2"], "pixel_spacing_calibration_type": "GEOMETRY"},
            "PixelSpacing (GEOMETRY)",
            id="geometry-row-too-fine",
        ),
        pytest.param({"pixel_spacing": ["0.2", "12"]}, "column spacing 12", id="column-coarse"),
    ],
)
def test_implausible_header_spacing_is_px_with_a_warning(header, fragment):
    calibration, warnings = calibration_from_header(**header)
    assert calibration.label is SpacingLabel.PX and calibration.unit == "px"
    assert any(fragment in w and "plausible range 0.01-10 mm/px" in w for w in warnings), warnings


@pytest.mark.parametrize("spacing", [0.01, 0.139, 10.0])
def test_plausible_spacings_at_the_edges_are_kept(spacing):
    calibration, warnings = calibration_from_header(pixel_spacing=[spacing, spacing])
    assert calibration.row_spacing_mm == spacing and not warnings


@pytest.mark.parametrize("spacing", [1e-320, 1e-6, 0.0099, 10.5, 1e300])
def test_a_user_calibration_out_of_range_is_refused(spacing):
    with pytest.raises(CalibrationError, match="outside the plausible range 0.01-10 mm/px"):
        Calibration.user(row_spacing_mm=spacing)
    with pytest.raises(CalibrationError, match="plausible range"):
        Calibration.from_dict({"row_spacing_mm": 0.1, "col_spacing_mm": spacing})


def test_measure_on_a_film_with_spacing_1e300_is_in_px(tmp_path):
    ds = make_dataset(PixelSpacing=["1e300", "1e300"], PixelSpacingCalibrationType="GEOMETRY")
    ds.Rows, ds.Columns = 96, 80
    film = tmp_path / "film.dcm"
    film.write_bytes(dicom_bytes(ds))
    annotation = _annotation(tmp_path, file="film.dcm", rows=None, columns=None)
    done = run_vheight("measure", "--format", "json", str(annotation), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["unit"] == "px" and document["spacing_label"] == "px"
    assert max(v["anterior_height"] for v in document["vertebrae"]) < 1e4
    assert "plausible range" in json.dumps(document["warnings"])


@pytest.mark.parametrize("spacing", [1e-320, 1e-6])
def test_refine_with_a_tiny_annotation_calibration_is_one_line(tmp_path, spacing):
    film = tmp_path / "pre.dcm"
    film.write_bytes((ROOT / "sample_images" / "pre.dcm").read_bytes())
    calibration = {"row_spacing_mm": spacing, "col_spacing_mm": spacing, "source": "User"}
    annotation = _annotation(tmp_path, file="pre.dcm", calibration=calibration)
    done = run_vheight("refine", str(annotation), cwd=tmp_path, timeout=120, memory=2 * GIB)
    assert_one_line_error(done, "film.vheight.json", "calibration", "plausible range")


# -- 2. the pixel budget, checked before decoding -------------------------------------------


def _j2k_with_size(rows: int, columns: int, *, header: bool) -> bytes:
    """RG3_J2KR.dcm with its codestream's SIZ size (and, if ``header``, Rows/Columns) changed."""
    ds = pydicom.dcmread(_testdata("RG3_J2KR.dcm"))
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    at = frame.index(b"\xff\x4f\xff\x51") + 4
    fields = list(struct.unpack_from(">HHIIIIIIIIH", frame, at))
    fields[2], fields[3] = columns + fields[4], rows + fields[5]  # Xsiz, Ysiz (origin kept)
    fields[6], fields[7] = columns, rows  # one tile
    frame = frame[:at] + struct.pack(">HHIIIIIIIIH", *fields) + frame[at + 38 :]
    ds.PixelData = pydicom.encaps.encapsulate([frame])
    if header:
        ds.Rows, ds.Columns = rows, columns
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("header", "stated"),
    [
        pytest.param(True, "header", id="header-and-codestream"),
        pytest.param(False, "codestream", id="codestream-only"),
    ],
)
def test_jpeg2000_bomb_is_refused_before_decoding(tmp_path, header, stated):
    path = tmp_path / "bomb.dcm"
    path.write_bytes(_j2k_with_size(30000, 30000, header=header))
    assert path.stat().st_size < 2_000_000
    code = (
        "import sys\n"
        "from vheight.errors import ImageReadError\n"
        "from vheight.loader import load_film\n"
        "try:\n"
        f"    load_film({str(path)!r})\n"
        "except ImageReadError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit_memory(2 * GIB),
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "bomb.dcm: image too large to decode" in done.stdout
    assert "30000 x 30000 px" in done.stdout and "limit of 100 megapixels" in done.stdout
    assert stated in done.stdout
    assert time.monotonic() - started < 60


def test_uncompressed_header_bomb_is_refused(tmp_path):
    ds = make_dataset(smooth_image(16, 16))
    ds.Rows, ds.Columns = 30000, 30000  # 32 KB of pixel data claiming 1.8 GB
    with pytest.raises(ImageReadError, match=r"x\.dcm: image too large .* 30000 x 30000 px"):
        load_film(dicom_bytes(ds), name="x.dcm")
    info = read_film_info(dicom_bytes(ds), name="x.dcm")  # the header alone is fine
    assert info.rows == 30000


def test_png_bomb_is_refused_from_its_header(tmp_path):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("L", (12000, 12000)).save(path, optimize=True)
    assert path.stat().st_size < 1_000_000
    code = (
        "import sys\n"
        "from vheight.errors import ImageReadError\n"
        "from vheight.loader import load_film\n"
        "try:\n"
        f"    load_film({str(path)!r})\n"
        "except ImageReadError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit_memory(1 * GIB),
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "big.png: image too large to decode" in done.stdout and "12000 x 12000" in done.stdout


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        pytest.param(".tif", {"compression": "tiff_deflate"}, id="tiff"),
        pytest.param(".jpg", {"quality": 10}, id="jpeg"),
    ],
)
def test_tiff_and_jpeg_bombs_are_one_line(tmp_path, suffix, options):
    from PIL import Image

    path = tmp_path / f"big{suffix}"
    Image.new("L", (15000, 15000)).save(path, **options)  # 225 MP in a few hundred KB
    assert path.stat().st_size < 3_000_000
    for command in ("info", "measure"):
        args = [command, str(path)]
        if command == "measure":
            annotation = _annotation(tmp_path, file=path.name, rows=None, columns=None)
            args = [command, str(annotation)]
        done = run_vheight(*args, cwd=tmp_path, timeout=120)
        assert_one_line_error(done, f"big{suffix}: image too large to decode")


def test_a_large_film_within_the_budget_gives_no_stray_warning(tmp_path):
    from PIL import Image

    path = tmp_path / "large.png"
    Image.new("L", (10000, 9500)).save(path, optimize=True)  # 95 MP: over Pillow's warning
    done = run_vheight("info", str(path), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DecompressionBombWarning" not in done.stderr
    assert "9500" in done.stdout


def test_the_budget_is_a_setting(monkeypatch):
    data = dicom_bytes(make_dataset())  # 96 x 80
    assert DEFAULT_MAX_PIXELS == 100_000_000
    with pytest.raises(ImageReadError, match=r"more than the limit of 0.005 megapixels"):
        load_film(data, name="x.dcm", max_pixels=5000)
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")
    with pytest.raises(ImageReadError, match=rf"raise it with {MAX_PIXELS_ENV}"):
        load_film(data, name="x.dcm")
    assert load_film(data, max_pixels=96 * 80).rows == 96
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageReadError, match=rf"{MAX_PIXELS_ENV}='lots' is not a whole number"):
        load_film(data)


# -- 3. only regular files ------------------------------------------------------------------


@pytest.fixture
def hostile_folder(tmp_path):
    (tmp_path / "film.dcm").write_bytes(dicom_bytes(make_dataset()))
    os.mkfifo(tmp_path / "fifo.dcm")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    return tmp_path


def test_info_on_a_folder_skips_a_fifo_with_a_warning(hostile_folder):
    done = run_vheight("info", "--format", "json", ".", cwd=hostile_folder, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)] == ["film.dcm"]
    assert "skipped fifo.dcm: is a named pipe (FIFO), not a regular file" in done.stderr
    assert "skipped loop1: the path is a loop of symbolic links" in done.stderr


def test_info_on_a_fifo_is_one_line(hostile_folder):
    done = run_vheight("info", "fifo.dcm", cwd=hostile_folder, timeout=60)
    assert_one_line_error(done, "fifo.dcm: is a named pipe (FIFO)")


@pytest.mark.parametrize(
    ("image_file", "fragment"),
    [
        pytest.param("fifo.dcm", "named pipe", id="fifo"),
        pytest.param("film\x00.dcm", "NUL byte", id="nul"),
        pytest.param("a" * 5000, "characters long (at most 4096)", id="5000-chars"),
        pytest.param("/proc/self/mem", "system file", id="proc-self-mem"),
        pytest.param("loop1", "loop of symbolic links", id="symlink-loop"),
        pytest.param("/dev/zero", "device", id="device"),
    ],
)
@pytest.mark.parametrize("command", ["refine", "report"])
def test_hostile_image_file_is_one_line(hostile_folder, image_file, fragment, command):
    annotation = _annotation(hostile_folder, file=image_file, rows=None, columns=None)
    args = [command, str(annotation)]
    if command == "report":
        args += ["--out", str(hostile_folder / "report.pdf")]
    done = run_vheight(*args, cwd=hostile_folder, timeout=120)
    assert_one_line_error(done, fragment)


def test_annotation_that_is_a_fifo_is_refused(hostile_folder):
    os.mkfifo(hostile_folder / "fifo.vheight.json")
    done = run_vheight("measure", "fifo.vheight.json", cwd=hostile_folder, timeout=60)
    assert_one_line_error(done, "fifo.vheight.json: 1 problem:", "is a named pipe (FIFO)")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("x\x00y", "the path contains a NUL byte", id="nul"),
        pytest.param("a" * 5000, "the path is 5000 characters long (at most 4096)", id="long"),
        pytest.param("/proc/self/status", "is a system file", id="proc"),
        pytest.param("/dev/null", "is a device, not a regular file", id="device"),
        pytest.param("/nonexistent/x.dcm", "no such file", id="missing"),
    ],
)
def test_regular_file_problems(path, expected):
    assert expected in regular_file_problem(path)


# -- 4. one line instead of a traceback ----------------------------------------------------


def _palette(**lut_changes) -> bytes:
    ds = make_dataset(smooth_image(bits=8, seed=7).astype(np.uint8), bits_stored=8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    table = np.arange(256, dtype="<u2") * 257
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    for keyword, value in lut_changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return dicom_bytes(ds)


def test_sound_palette_colour_film_loads():
    film = load_film(_palette(), name="palette.dcm")
    assert film.stored.shape == (96, 80)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"RedPaletteColorLookupTableDescriptor": None}, id="missing-descriptor"),
        pytest.param({"GreenPaletteColorLookupTableData": None}, id="missing-data"),
        pytest.param({"RedPaletteColorLookupTableDescriptor": [256, 0, 99]}, id="uint99"),
        pytest.param({"RedPaletteColorLookupTableData": b"\x01"}, id="one-byte-table"),
    ],
)
def test_palette_colour_film_without_a_usable_lut_is_one_error(changes):
    with pytest.raises(DicomReadError, match=r"palette\.dcm: PALETTE COLOR film whose colour"):
        load_film(_palette(**changes), name="palette.dcm")


@pytest.mark.parametrize(
    "points",
    [
        pytest.param({"superior_anterior": [1e15, 1e15]}, id="1e15"),
        pytest.param({"superior_anterior": [-5e3, 400.0]}, id="left-of-the-film"),
    ],
)
def test_report_with_landmarks_far_outside_the_film_is_one_line(tmp_path, points):
    (tmp_path / "pre.dcm").write_bytes((ROOT / "sample_images" / "pre.dcm").read_bytes())
    path = _annotation(tmp_path, file="pre.dcm", rows=None, columns=None)
    data = json.loads(path.read_text())
    data["vertebrae"]["T10"].update(points)
    path.write_text(json.dumps(data))
    done = run_vheight("report", str(path), "--out", str(tmp_path / "r.pdf"), cwd=tmp_path)
    assert_one_line_error(done, "pre.dcm: landmark T10 superior_anterior", "lies outside")


def test_render_refuses_landmarks_far_outside(tmp_path):
    from vheight.annotation import load_annotation
    from vheight.render import render_annotated

    annotation = load_annotation(SAMPLE_ANNOTATION)
    pixels = np.zeros((20, 30), np.uint8)  # far smaller than the film it was drawn on
    with pytest.raises(AnnotationError, match=r"lies outside the 30 x 20 px film"):
        render_annotated(pixels, annotation)


# -- 6. smaller: header-only files, report exit code, stale temporary files, uploads ---------


def test_header_only_dicom_is_an_error_row_in_batch(tmp_path):
    from vheight.batch import run_batch

    data = dicom_bytes(make_dataset())
    header_only = data[: data.rindex(b"\xe0\x7f\x10\x00")]  # cut before Pixel Data
    (tmp_path / "film.dcm").write_bytes(header_only)
    _annotation(tmp_path, file="film.dcm", rows=None, columns=None)
    result = run_batch(tmp_path, workers=1, progress=False)
    (row,) = result.error_rows
    assert (
        "film.dcm: no pixel data" in row["error"] and "truncated after its header" in row["error"]
    )
    assert all(r["error"] == row["error"] for r in result.measurement_rows)  # no measured row


def test_report_exits_1_when_a_film_cannot_be_read(tmp_path):
    (tmp_path / "film.dcm").write_bytes(b"not a film at all" * 20)
    annotation = _annotation(tmp_path, file="film.dcm", rows=None, columns=None)
    done = run_vheight("report", str(annotation), "--out", str(tmp_path / "r.pdf"), cwd=tmp_path)
    assert_one_line_error(done, "film.dcm could not be read", "not a DICOM file")
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")  # still written


def test_stale_temporary_files_of_interrupted_saves_are_cleaned(tmp_path):
    target = tmp_path / "a.vheight.json"
    old = time.time() - STALE_TEMP_SECONDS - 60
    stale = [tmp_path / ".a.vheight.json.abcd1234.tmp", tmp_path / ".a.vheight.json.zz_9yy8x.tmp"]
    fresh = tmp_path / ".a.vheight.json.fresh123.tmp"  # a save running right now
    others = [tmp_path / ".b.vheight.json.abcd1234.tmp", tmp_path / ".a.vheight.json.notours.tmp.x"]
    for path in (*stale, fresh, *others):
        path.write_bytes(b"half written")
    for path in (*stale, *others):
        os.utime(path, (old, old))
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in others)


def test_a_failed_upload_leaves_the_uploader_empty(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VHEIGHT_STORE", str(tmp_path / "store"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    nonce = at.session_state["vh.upload.nonce"] if "vh.upload.nonce" in at.session_state else None
    uploader = at.sidebar.file_uploader[0]
    key = uploader.key
    uploader.set_value(("big.bin", b"not a film " * 50_000, "application/octet-stream")).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "big.bin: not a DICOM file" in at.error[0].value.replace("\\", "")
    assert at.sidebar.file_uploader[0].key != key  # a fresh uploader: the bytes are released
    assert key not in at.session_state
    if nonce is not None:
        assert at.session_state["vh.upload.nonce"] == nonce + 1
