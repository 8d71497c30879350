"""Export speed: PDF report, DICOM SR and presentation state of the sample films.

Times, best of ``--repeat`` runs, on ``sample_images/`` (pre, post, follow-up
films with their annotations):

- ``render``: :func:`vheight.render.render_annotated` of one film at full
  resolution (the app's annotated PNG export, before PNG encoding);
- ``report``: :func:`vheight.report.report_bytes` of the three films (loading,
  measuring, rendering, comparison, PDF);
- ``sr write`` / ``sr read``: :func:`vheight.sr.sr_bytes` and
  :func:`vheight.sr.annotation_from_sr` of the pre film (highdicom builds and
  parses the document);
- ``gsps``: :func:`vheight.gsps.gsps_bytes` of the pre film.

Prints one line per step: seconds, and the size of what was produced.

    .venv/bin/python benchmarks/bench_reports.py --repeat 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per step (best is kept)")
    parser.add_argument("--folder", type=Path, default=SAMPLES, help="films and annotations")
    args = parser.parse_args()

    from vheight.annotation import load_annotation
    from vheight.gsps import gsps_bytes
    from vheight.loader import load_film
    from vheight.render import render_annotated
    from vheight.report import report_bytes
    from vheight.sr import annotation_from_sr, sr_bytes

    annotations = [args.folder / f"{t}.vheight.json" for t in ("pre", "post", "followup")]
    pre = load_annotation(annotations[0])
    film_path = args.folder / "pre.dcm"
    film = load_film(film_path)

    rows = []
    seconds, image = _best(lambda: render_annotated(film, pre), args.repeat)
    rows.append(("render", seconds, f"{image.shape[1]} x {image.shape[0]} px RGB"))
    seconds, pdf = _best(lambda: report_bytes(annotations), args.repeat)
    rows.append(("report", seconds, f"{len(pdf) / 1e6:.2f} MB PDF, 3 films"))
    seconds, sr = _best(lambda: sr_bytes(pre, film_path), args.repeat)
    rows.append(("sr write", seconds, f"{len(sr) / 1e3:.0f} kB, {len(pre.vertebrae)} vertebrae"))
    seconds, back = _best(lambda: annotation_from_sr(sr), args.repeat)
    exact = back.vertebrae == pre.vertebrae
    rows.append(("sr read", seconds, f"landmarks identical: {exact}"))
    seconds, pr = _best(lambda: gsps_bytes(pre, film_path), args.repeat)
    rows.append(("gsps", seconds, f"{len(pr) / 1e3:.0f} kB"))

    for name, secs, what in rows:
        print(f"{name:<9} {secs:7.3f} s   {what}")


if __name__ == "__main__":
    main()
