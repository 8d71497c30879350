"""The field the edge search samples (``vheight.refine.edges``): bilinear samples,
the noise threshold, the patch's layers; and the refinement benchmark's outputs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vheight.refine.edges import (
    Field,
    edge_line,
    edge_threshold,
    edges_on_strip,
    make_field,
    prepare_image,
    profile_offsets,
)
from vheight.refine.model import EDGE_NOISE_FACTOR, SMOOTHING_MM

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(5)
    pixels = rng.normal(100.0, 4.0, size=(700, 600)).astype(np.float32)
    pixels[300:, 200:450] += 40.0  # a bright body with two edges
    return prepare_image(pixels, 0.15, 0.15)


@pytest.fixture(scope="module")
def points_mm():
    return np.array([[35.0, 46.0], [66.0, 46.0], [50.0, 55.0]])


def _bilinear(layers: np.ndarray, rows: float, cols: float) -> np.ndarray:
    """One bilinear sample of every layer, written out by hand (the last row and
    column as the far side of the cell before them)."""
    layers = layers.astype(float)
    h, w, _ = layers.shape
    r, c = min(math.floor(rows), h - 2), min(math.floor(cols), w - 2)
    fr, fc = rows - r, cols - c
    return (
        layers[r, c] * (1 - fr) * (1 - fc)
        + layers[r, c + 1] * (1 - fr) * fc
        + layers[r + 1, c] * fr * (1 - fc)
        + layers[r + 1, c + 1] * fr * fc
    )


def test_samples_are_bilinear_in_every_layer_and_nan_outside(image):
    rng = np.random.default_rng(8)
    layers = rng.normal(size=(40, 30, 5)).astype(np.float32)
    fld = Field(image=image, row0=100, col0=200, layers=layers, threshold=1.0)
    grid = np.array([[3.25, 7.5], [0.25, 0.5], [38.9, 28.1], [38.5, 28.75], [12.0, 5.75]])
    pts_mm = np.stack([(grid[:, 1] + 200) * 0.15, (grid[:, 0] + 100) * 0.15], axis=-1)
    outside = np.array([[-1.0, 5.0], [200.0, 300.0]]) * 0.15
    values = fld.sample(np.concatenate([pts_mm, outside]).reshape(7, 1, 2))
    assert values.shape == (7, 1, 5)
    for k, (rows, cols) in enumerate(grid):
        np.testing.assert_allclose(values[k, 0], _bilinear(layers, rows, cols), rtol=1e-12)
    assert np.all(np.isnan(values[5:]))


def test_the_threshold_is_the_noise_of_the_gradients_on_the_sampled_grid(image, points_mm):
    fld = make_field(image, points_mm, 10.0)
    pad_mm = 12.0
    ys, xs = image.to_grid(points_mm)
    step = round(0.5 / 0.15)  # every 0.5 mm, on multiples of the step
    pad = math.ceil(pad_mm / 0.15)
    h, w, _ = fld.layers.shape
    rows = np.arange(math.ceil(ys.min()) - pad, math.floor(ys.max()) + pad + 1)
    cols = np.arange(math.ceil(xs.min()) - pad, math.floor(xs.max()) + pad + 1)
    rows = rows[(rows % step == 0) & (rows >= fld.row0) & (rows < fld.row0 + h)] - fld.row0
    cols = cols[(cols % step == 0) & (cols >= fld.col0) & (cols < fld.col0 + w)] - fld.col0
    comps = np.concatenate([fld.layers[np.ix_(rows, cols, [k])].ravel() for k in (0, 1)]).astype(
        float
    )
    mad = 1.4826 * np.median(np.abs(comps - np.median(comps)))
    floor = image.contrast_floor / (math.sqrt(2 * math.pi) * SMOOTHING_MM)
    expected = max(EDGE_NOISE_FACTOR * mad, floor)
    assert edge_threshold(fld, points_mm, pad_mm) == pytest.approx(expected, rel=1e-6)


def test_a_field_made_without_its_threshold_has_the_same_layers(image, points_mm):
    full = make_field(image, points_mm, 10.0)
    bare = make_field(image, points_mm, 10.0, threshold=False)
    assert bare.threshold == 0.0 and full.threshold > 0
    assert (bare.row0, bare.col0) == (full.row0, full.col0)
    assert np.array_equal(bare.layers, full.layers)
    assert edge_threshold(bare, points_mm, 10.0 + 3.0) == full.threshold


def _faint_wall(step: float, seed: int):
    """A wall ``x = 37.5 + 0.1 (y - 37.5)`` mm, bright (by ``step``) on its left,
    in noise of 4: the profiles across it start at ``(37, 30)`` and run down it
    from 3 to 12 mm; returns the field, the strip, and the wall's true offset
    at the strip's centre (7.5 mm down)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:500, 0:500] * 0.15
    pixels = 100 + step * (x < 37.5 + 0.1 * (y - 37.5)) + rng.normal(0, 4.0, (500, 500))
    image = prepare_image(pixels.astype(np.float32), 0.15, 0.15)
    origin = np.array([37.0, 30.0])
    fld = make_field(image, origin[None], 20.0)
    strip = (origin, np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.linspace(3.0, 12.0, 11))
    return fld, strip, profile_offsets(image, 4.0), 0.5


def test_a_faint_wall_is_found_where_the_profiles_agree_on_it():
    """A step barely above the noise: single profiles accept it or not, and
    those accepted scatter (up to 0.44 mm); the line through all of them
    together lies on it, and pure noise gives none."""
    errors, accepted = [], []
    for seed in range(12):
        fld, (origin, inward, across, s), t, true = _faint_wall(2.0, seed)
        line = edge_line(fld, origin, inward, across, s, t)
        if line is not None:
            errors.append(abs(line[0] + 7.5 * line[1] - true))
        edges = edges_on_strip(fld, origin + s[:, None] * inward, across, t, endplate=False)
        accepted.append(sum(e.flag is None for e in edges))
        noise, (origin, inward, across, s), t, _ = _faint_wall(0.0, seed)
        assert edge_line(noise, origin, inward, across, s, t) is None, seed
    assert np.median(accepted) <= 4  # most profiles see no edge
    assert len(errors) >= 9 and max(errors) <= 0.1, errors


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_refine", ROOT / "benchmarks" / "bench_refine.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_dumps_every_outcome_it_makes(tmp_path, capsys):
    bench = _bench()
    path = tmp_path / "outcomes.json"
    args = ["--films", "1", "--draws", "1", "--starts", "1", "--no-cr", "--dump", str(path)]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    outcomes = json.loads(path.read_text())
    calls = {o["call"] for o in outcomes}
    # clicks, truth, a second refine, one start, two extrapolations
    assert {"clicks", "truth", "once", "twice", "start", "propose L3", "propose T12"} <= calls
    clicks = [o for o in outcomes if o["call"] == "clicks"]
    assert len(clicks) == 36 and f"{len(outcomes)} outcomes written" in out
    assert all(isinstance(o["x"], float) and isinstance(o["y"], float) for o in outcomes)
    assert "CPU" in out
