"""Accuracy and speed of landmark refinement on phantom films.

For each phantom film (seeds, facing directions, doses and fractured levels
that the tests do not use), the true landmarks are perturbed with Gaussian
noise (``--sigma-mm`` per axis, default 1.5 mm) and refined with the default
radius; the point error (mm, distance to the true landmark) is summarised
before and after, with the error of the anterior, middle and posterior
heights.  A second run perturbs by ``--small-sigma-mm`` (0.1 mm) and reports
the largest final error of the points that started within 0.2 mm of the
truth.  Time per point is the wall (and CPU) time of ``refine_annotation``
divided by the number of points (one film, all levels, one call).

Run::

    .venv/bin/python benchmarks/bench_refine.py            # full (about half a minute)
    .venv/bin/python benchmarks/bench_refine.py --quick    # two films
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

import numpy as np

from vheight.annotation import Annotation, ImageRef
from vheight.calibration import Calibration
from vheight.phantom import FilmSpec, Fracture, render_film
from vheight.refine import DEFAULT_RADIUS_MM, refine_annotation

# Films the tests do not use: other seeds, both facings, three doses, fractures.
FILMS = [
    {"seed": 101, "facing": "right", "dose": 1.0},
    {"seed": 102, "facing": "left", "dose": 1.0},
    {"seed": 103, "facing": "right", "dose": 0.3},
    {"seed": 104, "facing": "left", "dose": 3.0},
    {"seed": 105, "facing": "right", "dose": 1.0, "fractures": ("L1:wedge:35",)},
    {"seed": 106, "facing": "left", "dose": 0.5, "fractures": ("T12:biconcave:30",)},
    {"seed": 107, "facing": "right", "dose": 1.0, "fractures": ("L2:crush:25",)},
    {"seed": 108, "facing": "left", "dose": 1.0, "rotation_deg": 8.0},
]

HEIGHTS = (
    ("anterior", "superior_anterior", "inferior_anterior"),
    ("middle", "superior_middle", "inferior_middle"),
    ("posterior", "superior_posterior", "inferior_posterior"),
)


def _fracture(text: str) -> Fracture:
    level, kind, loss = text.split(":")
    return Fracture(level=level, kind=kind, loss_pct=float(loss))


def make_film(params: dict) -> tuple[np.ndarray, Annotation, Calibration, str]:
    """Pixels (bright = bone), true annotation, calibration and a label."""
    kwargs = {k: v for k, v in params.items() if k != "fractures"}
    spec = FilmSpec(fractures=tuple(_fracture(f) for f in params.get("fractures", ())), **kwargs)
    film = render_film(spec)
    pixels = film.pixels.astype(np.float32)
    if spec.photometric.value == "MONOCHROME1":
        pixels = -pixels
    truth = Annotation(
        image=ImageRef(rows=pixels.shape[0], columns=pixels.shape[1]),
        vertebrae={level: dict(pts) for level, pts in film.landmarks.items()},
    )
    cal = Calibration.user(row_spacing_mm=film.row_spacing_mm, col_spacing_mm=film.col_spacing_mm)
    label = ", ".join(f"{k}={v}" for k, v in params.items())
    return pixels, truth, cal, label


def perturb(truth: Annotation, cal: Calibration, sigma_mm: float, rng) -> Annotation:
    vertebrae = {
        level: {
            name: (
                x + rng.normal(0.0, sigma_mm) / cal.col_spacing_mm,
                y + rng.normal(0.0, sigma_mm) / cal.row_spacing_mm,
            )
            for name, (x, y) in pts.items()
        }
        for level, pts in truth.vertebrae.items()
    }
    return replace(truth, vertebrae=vertebrae)


def point_errors(annotation: Annotation, truth: Annotation, cal: Calibration) -> np.ndarray:
    out = []
    for level, pts in truth.vertebrae.items():
        for name, (x, y) in pts.items():
            px, py = annotation.vertebrae[level][name]
            out.append(math.hypot((px - x) * cal.col_spacing_mm, (py - y) * cal.row_spacing_mm))
    return np.array(out)


def height_errors(annotation: Annotation, truth: Annotation, cal: Calibration) -> np.ndarray:
    def height(a: Annotation, level: str, top: str, bottom: str) -> float:
        (x0, y0), (x1, y1) = a.vertebrae[level][top], a.vertebrae[level][bottom]
        return math.hypot((x1 - x0) * cal.col_spacing_mm, (y1 - y0) * cal.row_spacing_mm)

    return np.array(
        [
            abs(height(annotation, level, top, bottom) - height(truth, level, top, bottom))
            for level in truth.vertebrae
            for _, top, bottom in HEIGHTS
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigma-mm", type=float, default=1.5)
    parser.add_argument("--small-sigma-mm", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=4, help="perturbations per film")
    parser.add_argument("--radius-mm", type=float, default=DEFAULT_RADIUS_MM)
    parser.add_argument("--quick", action="store_true", help="two films only")
    args = parser.parse_args(argv)

    films = FILMS[:2] if args.quick else FILMS
    rng = np.random.default_rng(2026)
    before, after, h_before, h_after, flags = [], [], [], [], []
    small_start, small_final = [], []
    seconds, cpu, points = 0.0, 0.0, 0
    print(f"refinement benchmark: {len(films)} phantom films, radius {args.radius_mm} mm")
    for params in films:
        pixels, truth, cal, label = make_film(params)
        film_after = []
        for _ in range(args.draws):
            start = perturb(truth, cal, args.sigma_mm, rng)
            t0, c0 = time.perf_counter(), time.process_time()
            result = refine_annotation(start, pixels, cal, radius_mm=args.radius_mm)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            points += len(result.moves)
            before.append(point_errors(start, truth, cal))
            after.append(point_errors(result.annotation, truth, cal))
            film_after.append(after[-1])
            h_before.append(height_errors(start, truth, cal))
            h_after.append(height_errors(result.annotation, truth, cal))
            flags.extend(m.flag for m in result.moves)

            start = perturb(truth, cal, args.small_sigma_mm, rng)
            t0, c0 = time.perf_counter(), time.process_time()
            result = refine_annotation(start, pixels, cal, radius_mm=args.radius_mm)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            points += len(result.moves)
            small_start.append(point_errors(start, truth, cal))
            small_final.append(point_errors(result.annotation, truth, cal))
        fa = np.concatenate(film_after)
        print(
            f"  {label}: {len(truth.vertebrae)} levels, after refinement median "
            f"{np.median(fa):.3f} mm, p95 {np.percentile(fa, 95):.3f} mm"
        )

    b, a = np.concatenate(before), np.concatenate(after)
    hb, ha = np.concatenate(h_before), np.concatenate(h_after)
    ss, sf = np.concatenate(small_start), np.concatenate(small_final)
    near = sf[ss <= 0.2]
    flagged = sum(f is not None for f in flags)
    print()
    print(f"perturbation sigma {args.sigma_mm} mm per axis, {b.size} points")
    print(f"  point error before: median {np.median(b):.3f} mm, p95 {np.percentile(b, 95):.3f} mm")
    print(f"  point error after:  median {np.median(a):.3f} mm, p95 {np.percentile(a, 95):.3f} mm")
    print(
        f"  height error before: median {np.median(hb):.3f} mm, p95 {np.percentile(hb, 95):.3f} mm"
    )
    print(
        f"  height error after:  median {np.median(ha):.3f} mm, p95 {np.percentile(ha, 95):.3f} mm"
    )
    print(f"  points flagged (left alone or moved across the endplate only): {flagged}")
    print(f"perturbation sigma {args.small_sigma_mm} mm: {near.size} points started within 0.2 mm")
    print(
        f"  their final error: max {near.max():.3f} mm, p99 {np.percentile(near, 99):.3f} mm, "
        f"share within 0.2 mm {100 * np.mean(near <= 0.2):.1f} %"
    )
    print(
        f"time per point: {1000 * seconds / points:.2f} ms wall, {1000 * cpu / points:.2f} ms CPU "
        f"({points} points, one refine_annotation call per film and perturbation)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
