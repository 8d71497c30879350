"""`vheight refine` stays bounded in memory and time whatever the pixel spacing.

A tiny spacing turned the 0.5 mm smoothing into a kernel of millions of
pixels (22.9 GB, then SIGSEGV in cv2.GaussianBlur); each case here runs the
command in a subprocess under an address-space limit and a time limit, so a
failure cannot take the test run down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest

from vheight.phantom import FilmSpec, write_film

ROOT = Path(__file__).resolve().parents[1]
# Address space of the child: numpy, OpenCV and pydicom mapped plus the film,
# with room for the search (a 1000 x 800 film needs a few tens of MB).
LIMIT_BYTES = 3 * 1024**3
TIME_LIMIT_S = 60.0

_CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from vheight.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bounds")
    spec = FilmSpec(
        seed=3,
        rows=1000,
        columns=800,
        levels=("L1", "L2"),
        spacing_tags="pixel",
        row_spacing_mm=0.2,
        col_spacing_mm=0.2,
    )
    return write_film(spec, folder / "film.dcm")


def _with_header_spacing(written, folder: Path, spacing: str) -> Path:
    ds = pydicom.dcmread(written.path)
    ds.PixelSpacing = [spacing, spacing]
    film = folder / "film.dcm"
    ds.save_as(film)
    annotation = json.loads(written.annotation_path.read_text())
    annotation["image"]["file"] = film.name
    path = folder / "film.vheight.json"
    path.write_text(json.dumps(annotation))
    return path


def _with_calibration(written, folder: Path, spacing: float) -> Path:
    annotation = json.loads(written.annotation_path.read_text())
    annotation["image"]["file"] = str(written.path)
    annotation["calibration"] = {
        "row_spacing_mm": spacing,
        "col_spacing_mm": spacing,
        "source": "User",
        "description": "hostile",
    }
    path = folder / "hostile.vheight.json"
    path.write_text(json.dumps(annotation))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = _CHILD.format(limit=LIMIT_BYTES)
    return subprocess.run(
        [sys.executable, "-c", code, "refine", *args],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        env=env,
        cwd=ROOT,
    )


HEADER_CASES = ["1e-300", "1e-6", "1e-5", "1e300"]
CALIBRATION_CASES = [1e-320, 1e-6, 1e-5, 1e300]


@pytest.mark.parametrize("spacing", HEADER_CASES)
def test_refine_bounded_under_hostile_header_spacing(written, tmp_path, spacing):
    """An implausible header spacing leaves the film uncalibrated: refined in px."""
    annotation = _with_header_spacing(written, tmp_path, spacing)
    done = _run(str(annotation), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = json.loads(done.stdout)
    assert out["moves"], "every point is reported"
    assert all(m["flag"] != "spacing_out_of_range" for m in out["moves"])
    assert any("uncalibrated" in w for w in out["warnings"])


@pytest.mark.parametrize("spacing", CALIBRATION_CASES)
def test_refine_refuses_an_implausible_annotation_calibration_in_one_line(
    written, tmp_path, spacing
):
    annotation = _with_calibration(written, tmp_path, spacing)
    done = _run(str(annotation), "--format", "json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and annotation.name in lines[0], done.stderr
    assert "plausible range" in lines[0]


@pytest.mark.parametrize("spacing", ["1e-6", "1e300"])
def test_propose_under_hostile_header_spacing_is_bounded(written, tmp_path, spacing):
    annotation = _with_header_spacing(written, tmp_path, spacing)
    done = _run(str(annotation), "--propose", "L3")
    assert done.returncode in (0, 1)
    assert "Traceback" not in done.stderr


def test_fine_spacing_is_searched_on_a_binned_grid(written, tmp_path):
    """0.02 mm/px is searchable: the search runs on a grid binned to about
    0.05 mm/px, with bounded kernels, and finishes in bounded memory and time."""
    annotation = _with_calibration(written, tmp_path, 0.02)
    done = _run(str(annotation), "--format", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert all(m["flag"] != "spacing_out_of_range" for m in out["moves"])


@pytest.mark.parametrize("spacing", [1e-320, 1e-9, 1e-5, 1e300])
def test_field_kernels_are_bounded_in_pixels(spacing):
    """The edge field itself bounds its kernels and patch, whatever spacing it is given."""
    import numpy as np

    from vheight.refine.edges import MAX_PATCH_PX, make_field, prepare_image

    pixels = np.random.default_rng(0).normal(size=(300, 400)).astype(np.float32)
    image = prepare_image(pixels, spacing, spacing)
    pts = np.array([[100.0 * spacing, 150.0 * spacing], [300.0 * spacing, 160.0 * spacing]])
    fld = make_field(image, pts, 10.0)
    if fld is not None:
        assert max(fld.layers.shape[:2]) <= MAX_PATCH_PX
