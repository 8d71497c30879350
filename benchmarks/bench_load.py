"""Film loading speed: vheight against plain pydicom, in the same run.

1. Load to the display array: ``vheight.load_film(path).display`` (the 8-bit
   image a viewer shows) against ``pydicom.dcmread(path).pixel_array`` on a
   SIZE x SIZE 16-bit film (smooth anatomy-like content plus noise).
   Targets: ratio <= 1.5 uncompressed, <= 1.3 JPEG 2000 lossless.  The float32
   ``[0, 1]`` display values (``.pixels``, computed when first asked) are
   timed too, for information.
2. Header facts: ``vheight info`` on a folder of N small films (the same
   function the command calls, in-process) against a plain
   ``dcmread(path, stop_before_pixels=True)`` loop.  No target: the header is
   pydicom's data set, and reading its values (pydicom converts each element
   when first read), the calibration and the record cost about twice the
   plain loop, which reads no value.

Timings are medians of several interleaved repeats.  Run::

    .venv/bin/python benchmarks/bench_load.py            # 3000 x 3000, 500 films
    .venv/bin/python benchmarks/bench_load.py --size 256 --films 20 --repeats 2
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation as DX_STORAGE
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

LOAD_TARGETS = {"uncompressed": 1.5, "JPEG 2000 lossless": 1.3}


def make_film(size: int, *, seed: int = 0, bits_stored: int = 14) -> Dataset:
    """A DX film with smooth content and detector noise (realistic for JPEG 2000)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    top = 2**bits_stored - 1
    body = np.exp(-(((x - 0.5) / 0.28) ** 2)) * 0.6 + 0.2
    spine = np.exp(-(((x - 0.5) / 0.05) ** 2)) * (0.15 + 0.05 * np.sin(y * 60.0))
    image = (body + spine) * top * 0.8 + rng.normal(0.0, top * 0.01, (size, size))
    pixels = np.clip(image, 0, top).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = "BENCH"
    ds.PatientName = "Bench^Film"
    ds.StudyDate = "20260101"
    ds.ViewPosition = "LL"
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.DistanceSourceToDetector = 1800
    ds.DistanceSourceToPatient = 1600
    ds.WindowCenter = top // 2
    ds.WindowWidth = top
    ds.set_pixel_data(pixels, "MONOCHROME2", bits_stored)
    return ds


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call (CPU time is steadier on a busy machine)."""
    gc.collect()
    wall, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    """CPU time of this process (high resolution) and of its finished children."""
    times = os.times()  # 10 ms ticks: used only for the children (whole command runs)
    return time.process_time() + times.children_user + times.children_system


def compare(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[float, float, float, float]:
    """Medians of interleaved runs (one warm-up each).

    Returns wall ours, wall theirs, CPU ours, CPU theirs (seconds).
    """
    ours()
    theirs()
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    for i in range(repeats):
        order = ((ours, a), (theirs, b)) if i % 2 == 0 else ((theirs, b), (ours, a))
        for fn, sink in order:
            sink.append(_timed(fn))
    return (
        statistics.median(t[0] for t in a),
        statistics.median(t[0] for t in b),
        statistics.median(t[1] for t in a),
        statistics.median(t[1] for t in b),
        min(t[0] for t in a),
        min(t[0] for t in b),
    )


def bench_load(folder: Path, size: int, repeats: int, *, bits_stored: int = 14) -> list[tuple]:
    """``(label, target, *times)`` rows: the display array, then the float32 values."""
    from vheight.loader import load_film

    ds = make_film(size, bits_stored=bits_stored)
    plain = folder / "film_uncompressed.dcm"
    ds.save_as(plain, enforce_file_format=True)
    j2k = folder / "film_j2k.dcm"
    ds.compress(JPEG2000Lossless)
    ds.save_as(j2k, enforce_file_format=True)
    rows = []
    for label, path in (("uncompressed", plain), ("JPEG 2000 lossless", j2k)):
        times = compare(
            lambda p=path: load_film(p).display,
            lambda p=path: pydicom.dcmread(p).pixel_array,
            repeats,
        )
        rows.append((f"{label}: display (uint8)", LOAD_TARGETS[label], *times))
        times = compare(
            lambda p=path: load_film(p).pixels,
            lambda p=path: pydicom.dcmread(p).pixel_array,
            repeats,
        )
        rows.append((f"{label}: pixels (float32)", None, *times))
    return rows


def bench_info(folder: Path, films: int, repeats: int, *, cli: bool) -> list[tuple]:
    from vheight.cli.info import collect_info

    folder.mkdir(parents=True, exist_ok=True)
    template = make_film(64, seed=1)
    for i in range(films):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.save_as(folder / f"film_{i:04d}.dcm", enforce_file_format=True)
    paths = sorted(folder.iterdir())

    def plain_loop() -> None:
        for path in paths:
            pydicom.dcmread(path, stop_before_pixels=True)

    def ours() -> None:
        result = collect_info([folder])
        assert len(result.records) == films and not result.errors

    rows = [("vheight info (in-process)", *compare(ours, plain_loop, repeats))]
    if cli:
        command = [sys.executable, "-m", "vheight", "info", "--format", "csv", str(folder)]

        def run_cli() -> None:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

        def run_plain() -> None:
            code = (
                "import sys, pathlib, pydicom\n"
                f"for p in sorted(pathlib.Path({str(folder)!r}).iterdir()):\n"
                "    pydicom.dcmread(p, stop_before_pixels=True)\n"
            )
            subprocess.run([sys.executable, "-c", code], check=True)

        rows.append(("vheight info (command)", *compare(run_cli, run_plain, max(1, repeats // 2))))
    return rows


def _report(
    label: str,
    ours: float,
    theirs: float,
    cpu_ours: float,
    cpu_theirs: float,
    best_ours: float,
    best_theirs: float,
) -> float:
    """Print one comparison; returns the ratio of the median wall times."""
    ratio = ours / theirs
    cpu_ratio = cpu_ours / cpu_theirs if cpu_theirs > 0 else float("nan")
    print(
        f"  {label:34s} vheight {ours * 1e3:8.1f} ms  pydicom {theirs * 1e3:8.1f} ms  "
        f"ratio {ratio:.2f}  (best of each {best_ours / best_theirs:.2f}, "
        f"CPU time ratio {cpu_ratio:.2f})"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3000, help="film side in pixels (3000)")
    parser.add_argument("--films", type=int, default=500, help="films for the info test (500)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (7)")
    parser.add_argument(
        "--bits-stored", type=int, default=14, help="Bits Stored of the large film (14; 9-16)"
    )
    parser.add_argument("--cli", action="store_true", help="also time the vheight command")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    missed = []
    with tempfile.TemporaryDirectory(prefix="vheight-bench-") as tmp:
        folder = Path(tmp)
        print(
            f"load to the display array, {args.size} x {args.size} 16-bit "
            f"({args.bits_stored} bits stored), median of {args.repeats} "
            f"(targets: {', '.join(f'{k} <= {v}x' for k, v in LOAD_TARGETS.items())}):"
        )
        for label, target, *times in bench_load(
            folder, max(args.size, 64), args.repeats, bits_stored=args.bits_stored
        ):
            if _report(label, *times) > (target or float("inf")):
                missed.append(label)
        print(f"header facts of {args.films} films, median of {args.repeats} (no target):")
        for label, *times in bench_info(folder / "many", args.films, args.repeats, cli=args.cli):
            _report(label, *times)
    if missed:
        print("targets missed: " + ", ".join(missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
