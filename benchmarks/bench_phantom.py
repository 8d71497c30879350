"""Speed of the phantom generator, and exactness of its truth.

Renders films of the default size (2000 x 1500, 0.17 mm) for several seeds,
both facing directions and random fractures, and reports the time per film
(render only, wall and CPU time: on a busy machine the CPU time is the
figure to compare; then written as DICOM uncompressed, and rendered again and
written as JPEG 2000 lossless).
Each film's true landmarks are measured with ``vheight.morphometry.measure``
and the header calibration; the largest difference between the requested and
the measured loss, over every fractured level, is printed (it should be
floating-point noise).

Run::

    .venv/bin/python benchmarks/bench_phantom.py            # 12 films
    .venv/bin/python benchmarks/bench_phantom.py --quick    # 3 films
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vheight.api import measure_file
from vheight.phantom import FilmSpec, Fracture, FractureKind, render_film, write_film

NAMED = {"wedge": "anterior", "biconcave": "middle", "crush": "posterior"}
LEVELS = ("T11", "T12", "L1", "L2", "L3")


def _spec(seed: int) -> FilmSpec:
    rng = np.random.default_rng(seed)
    levels = rng.choice(LEVELS, size=int(rng.integers(1, 3)), replace=False)
    fractures = tuple(
        Fracture(
            level=str(lv),
            kind=FractureKind(str(rng.choice([k.value for k in FractureKind]))),
            loss_pct=float(rng.uniform(15, 50)),
        )
        for lv in levels
    )
    return FilmSpec(
        seed=1000 + seed,
        facing="left" if seed % 2 else "right",
        fractures=fractures,
        dose=float(rng.uniform(0.5, 2.0)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 films instead of 12")
    args = parser.parse_args(argv)
    n = 3 if args.quick else 12
    specs = [_spec(i) for i in range(n)]
    render_film(specs[0].replace(seed=999))  # warm imports and caches

    render_s, render_cpu, raw_s, j2k_s, worst = [], [], [], [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            t0, c0 = time.perf_counter(), time.process_time()
            film = render_film(spec)
            render_s.append(time.perf_counter() - t0)
            render_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            written = write_film(film, Path(tmp) / f"raw_{i}.dcm")
            raw_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write_film(film.spec.replace(compression="j2k"), Path(tmp) / f"j2k_{i}.dcm")
            j2k_s.append(time.perf_counter() - t0)
            m = measure_file(written.annotation_path)
            for f in spec.fractures:
                rec = m.record(f.level)
                worst = max(worst, abs(rec[f"{NAMED[f.kind.value]}_loss_pct"] - f.loss_pct))

    def line(name: str, values: list[float]) -> str:
        return f"  {name:<38} mean {statistics.mean(values):.2f} s, max {max(values):.2f} s"

    print(f"phantom benchmark: {n} films 2000 x 1500 at 0.17 mm, random fractures")
    print(line("render (pixels + truth), wall", render_s))
    print(line("render (pixels + truth), CPU", render_cpu))
    print(line("write uncompressed DICOM + sidecar", raw_s))
    print(line("render + write JPEG 2000 lossless", j2k_s))
    print(f"  largest |measured - requested loss|: {worst:.2e} percentage points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
