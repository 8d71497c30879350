"""Accuracy, stability and speed of landmark refinement, per feature.

Films: phantom films with what real lateral films show (``Realism.typical``:
anterior osteophyte spurs, doubled endplate contours, concavities up to 2 mm,
an osteoporotic level, ribs and bowel gas across the spine), some with a
fracture, two with a soft-tissue edge 3 mm in front of every level's anterior
wall (``Realism.soft_tissue_edges``), at seeds, facings and doses the tests do
not use; and the real CR films of ``pydicom-data`` (a chest and a leg: real
cortical edges, not spines).

Figures (targets in brackets):

- from clicks (the true points perturbed by ``--sigma-mm`` per axis): point
  error median [<= 0.4 mm] and p95 [<= 1.0 mm], share of points made worse by
  more than 0.5 mm [none], per feature (spur corner, doubled endplate, deep
  concavity, osteoporotic level, fractured level, anterior corner with a
  soft-tissue edge in front, plain), and the error of the points left
  without a doubt (no flag, or only a note), with how many end more than
  1 mm from the true point, and how many of the points beyond the p95 are
  flagged with a doubt;
- from the true points: p95 movement [<= 0.5 mm]; the median offset of the
  spur corners (``spur_excluded``) along the endplate;
- anterior height bias from clicks [+-0.3 mm]; Genant grade of the snapped
  points equal to the true grade [>= 95 %];
- proposal next to and at a fractured level: median point error
  [<= 1.0 mm], grade agreement [>= 90 %]; extrapolation from two levels
  [median <= 2 mm, or flagged];
- a second refine moves no point more than 0.1 mm (phantom and CR films): of
  one refine per film, and of every refine from clicks (how many moved a
  point, and whether its level had a point the first refine flagged with a
  doubt);
- from 20 starts, share of unflagged landmarks with a median spread of at
  most 0.5 mm [>= 80 %]; on the CR films, where every point is alone on its
  level and so moved across its edge only (``weak_wall_edge``), how many end
  within 0.5 mm of one line along the edge (median distance to it): that
  they reach the same edge from every start, wherever along it;
- time per point [< 10 ms on one core].

Run::

    .venv/bin/python benchmarks/bench_refine.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_refine.py --quick    # two films, fewer draws
    .venv/bin/python benchmarks/bench_refine.py --seed 99 --film-seed-offset 100  # other films
    .venv/bin/python benchmarks/bench_refine.py --dump outcomes.json  # every outcome, as JSON
    .venv/bin/python benchmarks/bench_refine.py --one-core  # the time per point on one core

``--one-core`` limits numpy's and OpenCV's threads to one (the environment is
set before the process starts: the script runs itself again with it), so that the
CPU time per point is one core's.  ``--dump`` writes every point of every
refinement and proposal the benchmark makes (position, flag, score) in the order
made: two runs of different code on the same arguments give the same file when
the code gives the same results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np

from vheight.annotation import Annotation, ImageRef
from vheight.calibration import Calibration
from vheight.morphometry import measure
from vheight.phantom import FilmSpec, Fracture, Realism, render_film
from vheight.refine import (
    DEFAULT_RADIUS_MM,
    is_doubt,
    propose_level_result,
    refine_annotation,
)

LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4")

FILMS = [
    {"seed": 301, "facing": "right", "dose": 1.0},
    {"seed": 302, "facing": "left", "dose": 0.5},
    {"seed": 303, "facing": "right", "dose": 1.0, "fractures": ("L1:wedge:35",)},
    {"seed": 304, "facing": "left", "dose": 1.0, "fractures": ("L2:biconcave:30",)},
    {"seed": 305, "facing": "right", "dose": 2.0, "fractures": ("T12:crush:28",)},
    {"seed": 306, "facing": "left", "dose": 1.0, "rotation_deg": 7.0},
    {"seed": 307, "facing": "right", "dose": 1.0, "soft_tissue_edges": LEVELS},
    {"seed": 308, "facing": "left", "dose": 0.5, "soft_tissue_edges": LEVELS},
]

HEIGHTS = (
    ("anterior", "superior_anterior", "inferior_anterior"),
    ("middle", "superior_middle", "inferior_middle"),
    ("posterior", "superior_posterior", "inferior_posterior"),
)

FEATURES = (
    "spur corner",
    "doubled endplate",
    "deep concavity",
    "osteoporotic",
    "fractured",
    "soft-tissue edge",
    "plain",
)


ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Thread limits of numpy's libraries, read when they load (before the process starts)."""


def one_core(argv: list[str], *, replace_process: bool) -> int | None:
    """Run on one core: the script again with :data:`ONE_CORE_ENV` when the
    environment lacks it, then OpenCV's threads limited to one.

    From the command line (``replace_process``) the script replaces this
    process; called from another program, it runs as a child and its exit
    code is returned (None: this process already runs on one core).
    """
    if any(os.environ.get(k) != v for k, v in ONE_CORE_ENV.items()):
        command = [sys.executable, __file__, *argv]
        env = {**os.environ, **ONE_CORE_ENV}
        sys.stdout.flush()
        if replace_process:
            os.execve(sys.executable, command, env)
        return subprocess.run(command, env=env, check=False).returncode
    import cv2

    cv2.setNumThreads(1)
    return None


OUTCOMES: list[dict] = []
"""Every move of every refinement made by :func:`main` (written by ``--dump``)."""


def record(call: str, result):
    """``result`` (a RefineResult), its moves appended to :data:`OUTCOMES` under ``call``."""
    OUTCOMES.extend(
        {
            "call": call,
            "level": m.level,
            "point": m.point,
            "x": m.x,
            "y": m.y,
            "moved": m.moved,
            "flag": m.flag,
            "edge_score": m.edge_score,
            "reseeded": m.reseeded,
        }
        for m in result.moves
    )
    return result


def _fracture(text: str) -> Fracture:
    level, kind, loss = text.split(":")
    return Fracture(level=level, kind=kind, loss_pct=float(loss))


def make_film(params: dict):
    """Pixels (bright = bone), true annotation, calibration, spec and a label."""
    kwargs = {k: v for k, v in params.items() if k not in ("fractures", "soft_tissue_edges")}
    realism = replace(
        Realism.typical(params["seed"], LEVELS),
        soft_tissue_edges=params.get("soft_tissue_edges", ()),
    )
    spec = FilmSpec(
        rows=2300,
        columns=1500,
        levels=LEVELS,
        fractures=tuple(_fracture(f) for f in params.get("fractures", ())),
        realism=realism,
        **kwargs,
    )
    film = render_film(spec)
    pixels = film.pixels.astype(np.float32)
    truth = Annotation(
        image=ImageRef(rows=pixels.shape[0], columns=pixels.shape[1]),
        vertebrae={level: dict(pts) for level, pts in film.landmarks.items()},
    )
    cal = Calibration.user(row_spacing_mm=film.row_spacing_mm, col_spacing_mm=film.col_spacing_mm)
    label = ", ".join(f"{k}={v}" for k, v in params.items())
    return pixels, truth, cal, spec, label


def features_of(spec: FilmSpec, level: str, name: str) -> list[str]:
    """The features a true point shows (empty: plain)."""
    realism = spec.realism
    endplate, where = name.split("_")
    out = []
    if where == "anterior" and realism.feature("osteophytes", level, endplate) >= 1.5:
        out.append("spur corner")
    if realism.feature("doubled", level, endplate) > 0:
        out.append("doubled endplate")
    if where == "middle" and realism.feature("concavities", level, endplate) >= 1.2:
        out.append("deep concavity")
    if level in realism.low_contrast_levels:
        out.append("osteoporotic")
    if spec.fracture_at(level) is not None:
        out.append("fractured")
    if where == "anterior" and level in realism.soft_tissue_edges:
        out.append("soft-tissue edge")
    return out or ["plain"]


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


def distance(a, b, cal: Calibration) -> float:
    return math.hypot((a[0] - b[0]) * cal.col_spacing_mm, (a[1] - b[1]) * cal.row_spacing_mm)


def height(a: Annotation, level: str, top: str, bottom: str, cal: Calibration) -> float:
    return distance(a.vertebrae[level][top], a.vertebrae[level][bottom], cal)


def along_endplate(truth: Annotation, move, cal: Calibration) -> float:
    """Offset (mm) of ``move`` from its true point along the chord of its true
    endplate, positive out of the body (beyond the corner)."""
    pts = truth.vertebrae[move.level]
    endplate, side = move.point.split("_")
    other = "posterior" if side == "anterior" else "anterior"
    scale = np.array([cal.col_spacing_mm, cal.row_spacing_mm])
    own = np.array(pts[move.point]) * scale
    chord = own - np.array(pts[f"{endplate}_{other}"]) * scale
    return float((np.array(move.xy) * scale - own) @ chord / np.linalg.norm(chord))


def grades(annotation: Annotation, cal: Calibration) -> dict[str, int | None]:
    m = measure(annotation, cal)
    return {lv: (None if v.grade is None else int(v.grade)) for lv, v in m.vertebrae.items()}


def summary(values) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "no points"
    return f"median {np.median(v):.3f} mm, p95 {np.percentile(v, 95):.3f} mm (n={v.size})"


def spread(positions: np.ndarray, cal: Calibration) -> float:
    """Median distance (mm) of end positions (n, 2) px to their coordinate-wise median."""
    med = np.median(positions, axis=0)
    return float(np.median([distance(p, med, cal) for p in positions]))


def across_spread(positions: np.ndarray, cal: Calibration) -> float:
    """Median distance (mm) of end positions (n, 2) px to the straight line that
    fits them best (their principal axis): how far apart they end across the
    edge they were moved onto, wherever along it."""
    mm = positions * np.array([cal.col_spacing_mm, cal.row_spacing_mm])
    centred = mm - mm.mean(axis=0)
    normal = np.linalg.svd(centred, full_matrices=False)[2][-1]
    return float(np.median(np.abs(centred @ normal)))


def convergence(annotation: Annotation, image, cal: Calibration, starts: int, sigma, rng, radius):
    """Landmarks not flagged with a doubt in most runs (notes such as ``doubled``
    do not count as doubts) whose 20-start spread is <= 0.5 mm, and the
    across-edge spreads (:func:`across_spread`) of those flagged
    ``weak_wall_edge`` in most runs (moved across their edge only, or kept
    where they already lay on it)."""
    ends = defaultdict(list)
    flags = defaultdict(int)
    across_only = defaultdict(int)
    for _ in range(starts):
        result = record(
            "start",
            refine_annotation(perturb(annotation, cal, sigma, rng), image, cal, radius_mm=radius),
        )
        for m in result.moves:
            ends[(m.level, m.point)].append((m.x, m.y))
            flags[(m.level, m.point)] += is_doubt(m.flag)
            across_only[(m.level, m.point)] += m.flag == "weak_wall_edge"
    kept = [k for k in ends if flags[k] <= starts // 2]
    spreads = [spread(np.array(ends[k]), cal) for k in kept]
    ok = sum(s <= 0.5 for s in spreads)
    across = [across_spread(np.array(ends[k]), cal) for k in ends if across_only[k] > starts // 2]
    return ok, len(kept), len(ends), spreads, across


def idempotence(start: Annotation, image, cal, radius) -> tuple[float, int]:
    once = record("once", refine_annotation(start, image, cal, radius_mm=radius))
    twice = record("twice", refine_annotation(once.annotation, image, cal, radius_mm=radius))
    moves = [m.distance_mm if m.distance_mm is not None else m.distance_px for m in twice.moves]
    return (max(moves) if moves else 0.0), len(moves)


def without(annotation: Annotation, levels) -> Annotation:
    return replace(
        annotation,
        vertebrae={lv: p for lv, p in annotation.vertebrae.items() if lv not in levels},
    )


def propose_error(truth, pixels, cal, keep_out, target, radius):
    """Point errors and (proposed grade, true grade) of ``target`` proposed with
    the levels ``keep_out`` removed (target among them)."""
    start = without(truth, keep_out)
    result = record(
        f"propose {target}", propose_level_result(start, pixels, cal, target, radius_mm=radius)
    )
    errs = [
        distance(result.annotation.vertebrae[target][n], p, cal)
        for n, p in truth.vertebrae[target].items()
    ]
    # grade with the true neighbours, as a reader would have them
    full = replace(
        truth,
        vertebrae={**truth.vertebrae, target: dict(result.annotation.vertebrae[target])},
    )
    flagged = any(m.flag == "extrapolated" for m in result.moves)
    return errs, (grades(full, cal)[target], grades(truth, cal)[target]), flagged


def cr_films():
    try:
        from pydicom.data import get_testdata_file

        from vheight.loader import load_film
    except ImportError:
        return []
    out = []
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
        path = get_testdata_file(name)
        if path:
            out.append((name, load_film(path)))
    return out


def edge_points_on(film, rng) -> Annotation:
    """One point per level (17) near strong cortical edges of a film (Canny on a
    smoothed copy), each alone on its level: searched along the edge's normal."""
    import cv2

    values = np.asarray(film.modality_values, dtype=np.float32)
    values = -values if film.invert else values
    small = cv2.resize(values, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(small, [1, 99])
    img8 = (np.clip((small - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    edges = cv2.Canny(cv2.GaussianBlur(img8, (0, 0), 2.0), 40, 100)
    ys, xs = np.nonzero(edges)
    pick = rng.choice(xs.size, size=17, replace=False)
    from vheight.annotation import LEVELS as ALL_LEVELS

    vertebrae = {
        level: {"superior_anterior": (float(xs[k] * 4 + 1.5), float(ys[k] * 4 + 1.5))}
        for level, k in zip(ALL_LEVELS, pick, strict=True)
    }
    rows, cols = values.shape
    return Annotation(image=ImageRef(rows=rows, columns=cols), vertebrae=vertebrae)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigma-mm", type=float, default=1.5)
    parser.add_argument("--draws", type=int, default=4, help="perturbations per film")
    parser.add_argument("--starts", type=int, default=20, help="starts of the convergence test")
    parser.add_argument("--radius-mm", type=float, default=DEFAULT_RADIUS_MM)
    parser.add_argument("--quick", action="store_true", help="two films, two draws, 10 starts")
    parser.add_argument("--films", type=int, default=len(FILMS), help="the first N films only")
    parser.add_argument("--no-cr", action="store_true", help="leave out the CR films")
    parser.add_argument(
        "--one-core", action="store_true", help="numpy's and OpenCV's threads limited to one"
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the clicks (phantom and CR films)"
    )
    parser.add_argument(
        "--dump", metavar="PATH", help="write every outcome (position, flag, score) as JSON"
    )
    parser.add_argument(
        "--film-seed-offset",
        type=int,
        default=0,
        help="added to every film's seed: other films of the same kinds (a check on other data)",
    )
    args = parser.parse_args(argv)
    if args.one_core:
        code = one_core(sys.argv[1:] if argv is None else argv, replace_process=argv is None)
        if code is not None:
            return code
    OUTCOMES.clear()
    if args.quick:
        args.draws, args.starts = 2, 10
    films = FILMS[:2] + FILMS[2:3] if args.quick else FILMS[: args.films]
    films = [{**f, "seed": f["seed"] + args.film_seed_offset} for f in films]
    radius = args.radius_mm
    rng = np.random.default_rng(args.seed)

    err_before, err_after = defaultdict(list), defaultdict(list)
    worse = defaultdict(int)
    sure = []  # errors of the points left without a doubt (no flag, or a note)
    spur_along = []  # spur corners snapped from the true points: offset out along the endplate
    truth_moves, ant_bias, grade_pairs, flags = [], [], [], []
    second, conv_ok, conv_kept, conv_all, spreads_all = [], 0, 0, 0, []
    second_all, second_levels = [], []  # second refine of each refine from clicks
    prop_next, prop_at, grade_next, grade_at = [], [], [], []
    extra_err, extra_flagged, extra_count = [], 0, 0
    seconds, cpu, points = 0.0, 0.0, 0
    print(f"refinement benchmark: {len(films)} realistic phantom films, radius {radius} mm")
    for params in films:
        pixels, truth, cal, spec, label = make_film(params)
        film_start = len(err_after["all"])
        true_grades = grades(truth, cal)
        for _ in range(args.draws):
            start = perturb(truth, cal, args.sigma_mm, rng)
            t0, c0 = time.perf_counter(), time.process_time()
            result = refine_annotation(start, pixels, cal, radius_mm=radius)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            record("clicks", result)
            points += len(result.moves)
            for m in result.moves:
                t = truth.vertebrae[m.level][m.point]
                b = distance(start.vertebrae[m.level][m.point], t, cal)
                a = distance((m.x, m.y), t, cal)
                for f in features_of(spec, m.level, m.point):
                    err_before[f].append(b)
                    err_after[f].append(a)
                    worse[f] += a > b + 0.5
                err_before["all"].append(b)
                err_after["all"].append(a)
                worse["all"] += a > b + 0.5
                if not is_doubt(m.flag):
                    sure.append(a)
                flags.append(m.flag)
            for level in truth.vertebrae:
                ant_bias.append(
                    height(result.annotation, level, "superior_anterior", "inferior_anterior", cal)
                    - height(truth, level, "superior_anterior", "inferior_anterior", cal)
                )
            snapped = grades(result.annotation, cal)
            grade_pairs.extend((snapped[lv], true_grades[lv]) for lv in true_grades)
            # a second refine of every refine from clicks
            again = refine_annotation(result.annotation, pixels, cal, radius_mm=radius)
            doubted = {m.level for m in result.moves if is_doubt(m.flag)}
            moving = {m.level for m in again.moves if m.distance_mm > 0.1}
            second_all.append(max(m.distance_mm for m in again.moves))
            second_levels.extend(level in doubted for level in moving)
        # from the true points
        result = record("truth", refine_annotation(truth, pixels, cal, radius_mm=radius))
        truth_moves.extend(m.distance_mm for m in result.moves)
        spur_along.extend(
            along_endplate(truth, m, cal) for m in result.moves if m.flag == "spur_excluded"
        )
        # a second refine
        worst, _ = idempotence(perturb(truth, cal, args.sigma_mm, rng), pixels, cal, radius)
        second.append(worst)
        # 20 starts
        ok, kept, total, spreads, _ = convergence(
            truth, pixels, cal, args.starts, args.sigma_mm, rng, radius
        )
        conv_ok, conv_kept, conv_all = conv_ok + ok, conv_kept + kept, conv_all + total
        spreads_all.extend(spreads)
        # proposals at and next to a fracture
        for f in spec.fractures:
            i = LEVELS.index(f.level)
            errs, pair, _ = propose_error(truth, pixels, cal, {f.level}, f.level, radius)
            prop_at.extend(errs)
            grade_at.append(pair)
            for j in (i - 1, i + 1):
                if 0 < j < len(LEVELS) - 1:
                    errs, pair, _ = propose_error(
                        truth, pixels, cal, {LEVELS[j]}, LEVELS[j], radius
                    )
                    prop_next.extend(errs)
                    grade_next.append(pair)
        # extrapolation from two levels (both directions)
        for kept_levels, target in ((("L1", "L2"), "L3"), (("L1", "L2"), "T12")):
            drop = set(LEVELS) - set(kept_levels)
            errs, _, flagged = propose_error(truth, pixels, cal, drop, target, radius)
            extra_count += 1
            extra_flagged += flagged
            extra_err.extend(errs)
        print(
            f"  {label}: after refinement {summary(err_after['all'][film_start:])}; "
            f"second refine max {worst:.3f} mm; converged {ok}/{kept} unflagged of {total}"
        )

    print()
    print(f"from clicks, sigma {args.sigma_mm} mm per axis ({len(err_after['all'])} points):")
    for f in ("all", *FEATURES):
        if not err_after[f]:
            continue
        n = len(err_after[f])
        print(
            f"  {f:17s} before {summary(err_before[f])}\n"
            f"  {'':17s} after  {summary(err_after[f])}; made worse by > 0.5 mm: "
            f"{worse[f]} ({100 * worse[f] / n:.1f} %)"
        )
    counts = defaultdict(int)
    for fl in flags:
        counts[fl or "none"] += 1
    print("  flags: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    silent = sum(e > 1.0 for e in sure)
    cut = np.percentile(err_after["all"], 95)
    beyond = [fl for e, fl in zip(err_after["all"], flags, strict=True) if e > cut]
    doubted = sum(is_doubt(fl) for fl in beyond)
    print(
        f"  beyond the p95: {len(beyond)} points, {doubted} of them flagged with a doubt "
        f"(left where clicked, or moved across the edge only)"
    )
    print(
        f"  points without a doubt (no flag, or a note): {summary(sure)}; more than 1 mm "
        f"from the true point: {silent} ({100 * silent / len(err_after['all']):.1f} % of all)"
    )
    tm = np.array(truth_moves, dtype=float)
    print(
        f"from the true points: movement median {np.median(tm):.3f} mm, p95 "
        f"{np.percentile(tm, 95):.3f} mm, max {tm.max():.3f} mm"
    )
    if spur_along:
        print(
            f"  spur corners ({len(spur_along)}, spur_excluded): offset along the endplate, out "
            f"of the body, median {np.median(spur_along):+.3f} mm"
        )
    ab = np.array(ant_bias)
    print(f"anterior height bias from clicks: mean {ab.mean():+.3f} mm (sd {ab.std():.3f} mm)")
    valid = [(a, b) for a, b in grade_pairs if b is not None]
    agree = sum(a == b for a, b in valid)
    share = 100 * agree / len(valid)
    print(f"Genant grade agreement from clicks: {agree}/{len(valid)} ({share:.1f} %)")

    def grade_share(pairs):
        valid = [(a, b) for a, b in pairs if b is not None]
        return f"{sum(a == b for a, b in valid)}/{len(valid)}"

    print(f"proposal at a fractured level: {summary(prop_at)}")
    print(f"  grade agreement {grade_share(grade_at)}")
    print(f"proposal next to a fractured level: {summary(prop_next)}")
    print(f"  grade agreement {grade_share(grade_next)}")
    print(
        f"proposal by extrapolation from two levels: {extra_flagged}/{extra_count} flagged "
        f"extrapolated; all {summary(extra_err)}"
    )
    print(f"second refine, phantom: max move per film {', '.join(f'{s:.3f}' for s in second)} mm")
    moved_twice = sum(s > 0.1 for s in second_all)
    print(
        f"  of every refine from clicks: {moved_twice}/{len(second_all)} moved a point > 0.1 mm "
        f"(max {max(second_all):.3f} mm); levels moving, {sum(second_levels)} of "
        f"{len(second_levels)} with a point the first refine flagged with a doubt"
    )
    sa = np.array(spreads_all) if spreads_all else np.zeros(1)
    print(
        f"20 starts, phantom: {conv_ok}/{conv_kept} unflagged landmarks converge to a median "
        f"spread <= 0.5 mm ({100 * conv_ok / max(conv_kept, 1):.1f} %; {conv_all - conv_kept} "
        f"flagged in most runs)"
    )
    print(f"  spread median {np.median(sa):.3f} mm, p95 {np.percentile(sa, 95):.3f} mm")
    for index, (name, film) in enumerate([] if args.no_cr else cr_films()):
        crng = np.random.default_rng([args.seed, index])
        start = edge_points_on(film, crng)
        nominal = 0.15  # these films carry no spacing: distances in units of 0.15 mm/px
        cal_n = Calibration.user(row_spacing_mm=nominal, col_spacing_mm=nominal)
        first = record(f"{name} once", refine_annotation(start, film, cal_n, radius_mm=radius))
        twice = record(
            f"{name} twice", refine_annotation(first.annotation, film, cal_n, radius_mm=radius)
        )
        worst = max(m.distance_mm for m in twice.moves)
        big = sum(m.distance_mm > 0.1 for m in twice.moves)
        ok, kept, total, _, across = convergence(
            first.annotation, film, cal_n, args.starts, args.sigma_mm, crng, radius
        )
        across_median = float(np.median(across)) if across else float("nan")
        print(
            f"CR film {name} ({total} points on cortical edges, each alone, at a nominal "
            f"{nominal} mm/px): second refine max {worst:.3f} mm, {big} moved > 0.1 mm; "
            f"20 starts: {ok}/{kept} unflagged converge ({total - kept} flagged in most runs); "
            f"across their edge only (weak_wall_edge) in most runs: "
            f"{sum(a <= 0.5 for a in across)}/{len(across)} end within 0.5 mm of one line "
            f"along the edge (median distance {across_median:.3f} mm)"
        )
    print(
        f"time per point: {1000 * seconds / points:.2f} ms wall, {1000 * cpu / points:.2f} ms CPU "
        f"({points} points, one refine_annotation call per film and perturbation; "
        f"{'one core' if args.one_core else 'threads not limited'})"
    )
    if args.dump is not None:
        with open(args.dump, "w", encoding="utf-8") as out:
            json.dump(OUTCOMES, out, indent=0)
        print(f"{len(OUTCOMES)} outcomes written to {args.dump}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
