"""Batch memory: peak resident memory of ``vheight batch`` against the number of studies.

Generates the largest folder once (the studies of ``bench_batch.py``: a CR film
with a vendor-like header and 192 x 160 16-bit pixels and a five-vertebra
annotation per study, two studies per patient; films written from a template
with the identifiers patched in, which is what makes 100 000 studies quick to
make), gives each smaller size its own folder of hard links to the first
studies, then runs ``vheight batch FOLDER --out results.csv --workers W -q`` on
each size, in a fresh interpreter, and samples the resident memory (RSS) of its
process tree every 50 ms:

- ``parent``: the peak RSS of the ``vheight batch`` process itself (from the
  kernel, ``ru_maxrss``);
- ``tree``: the peak of the sum of the RSS of the process and its workers
  (pages shared after ``fork`` are counted once per process, so this
  overstates).

Prints the figures, the slope of a least-squares line through them (MiB per
1000 studies) and how far each point lies from that line.

    .venv/bin/python benchmarks/bench_batch_memory.py --sizes 10000 30000 100000 --dir /tmp/mem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_batch  # noqa: E402

# Fixed-length placeholders patched into the template films (same length, so the
# DICOM element lengths do not change).
_PATIENT = "P999999"


def _uid(kind: str, index: int, timepoint: int) -> str:
    digit = {"sop": 1, "study": 2, "series": 3}[kind]
    return f"2.25.{digit}{timepoint}{index:09d}"


def _templates(folder: Path) -> dict[str, bytes]:
    """One film per timepoint, its identifiers replaced by the placeholders."""
    rng = np.random.default_rng(0)
    out = {}
    for t, timepoint in enumerate(("pre", "post")):
        path = folder / f"template-{timepoint}.dcm"
        bench_batch._film(path, patient=0, timepoint=timepoint, rng=rng)
        ds = pydicom.dcmread(path)
        ds.PatientID = _PATIENT
        ds.PatientName = f"Bench^{_PATIENT}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("sop", 999999999, t)
        ds.StudyInstanceUID = _uid("study", 999999999, t)
        ds.SeriesInstanceUID = _uid("series", 999999999, t)
        ds.save_as(path, enforce_file_format=True)
        out[timepoint] = path.read_bytes()
        path.unlink()
    return out


def generate(folder: Path, studies: int) -> None:
    """``studies`` studies under ``folder`` (``P000000/pre``, ``P000000/post``, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    templates = _templates(folder)
    rng = np.random.default_rng(1)
    for index in range(studies):
        patient, t = divmod(index, 2)
        timepoint = ("pre", "post")[t]
        film = templates[timepoint]
        film = film.replace(_PATIENT.encode(), f"P{patient:06d}".encode())
        for kind in ("sop", "study", "series"):
            film = film.replace(_uid(kind, 999999999, t).encode(), _uid(kind, patient, t).encode())
        study = folder / f"P{patient:06d}" / timepoint
        study.mkdir(parents=True, exist_ok=True)
        (study / "lateral.dcm").write_bytes(film)
        document = bench_batch._annotation("lateral.dcm", timepoint, patient, rng)
        document["image"]["sop_instance_uid"] = _uid("sop", patient, t)
        (study / "lateral.vheight.json").write_text(json.dumps(document, indent=2))


def _linked(source: Path, target: Path, studies: int) -> None:
    """A folder of hard links to the first ``studies`` studies of ``source``."""
    if target.is_dir():
        return
    for index in range(studies):
        patient, t = divmod(index, 2)
        rel = Path(f"P{patient:06d}") / ("pre", "post")[t]
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in ("lateral.dcm", "lateral.vheight.json"):
            os.link(source / rel / name, target / rel / name)


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants (0 once gone)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        pending += [int(c) for c in children.split()]
    return total


def measure(folder: Path, out: Path, workers: int) -> dict[str, Any]:
    """Run the batch on ``folder`` and sample its memory."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    command = [sys.executable, "-m", "vheight", "batch", str(folder), "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--workers", str(workers), "-q"], env=env, stdout=subprocess.DEVNULL
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"vheight batch failed with exit code {process.returncode}")
    return {
        "seconds": time.perf_counter() - start,
        "parent_peak_mib": usage.ru_maxrss / 1024,
        "tree_peak_mib": peak / 2**20,
        "csv_mib": (
            out.stat().st_size + out.with_name(f"{out.stem}-comparisons.csv").stat().st_size
        )
        / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", help="where to generate (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vheight-mem-"))
    sizes = sorted(args.sizes)
    try:
        largest = base / f"studies-{sizes[-1]}"
        if not largest.is_dir():
            start = time.perf_counter()
            generate(largest, sizes[-1])
            print(f"generated {sizes[-1]} studies in {time.perf_counter() - start:.0f} s")
        figures: dict[int, dict[str, Any]] = {}
        for size in sizes:
            folder = largest if size == sizes[-1] else base / f"studies-{size}"
            _linked(largest, folder, size)
            figures[size] = measure(folder, base / f"results-{size}.csv", args.workers)
        n = np.array(sizes, dtype=float)
        print(
            f"vheight batch memory, --workers {args.workers}, {os.cpu_count()} CPU(s), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print("   studies   parent peak MiB   tree peak MiB   CSV MiB   seconds")
        for size, f in figures.items():
            print(
                f"  {size:8d}   {f['parent_peak_mib']:15.0f}   {f['tree_peak_mib']:13.0f}"
                f"   {f['csv_mib']:7.0f}   {f['seconds']:7.1f}"
            )
        result: dict[str, Any] = {"figures": figures}
        if len(sizes) >= 2:
            for key in ("parent_peak_mib", "tree_peak_mib"):
                y = np.array([figures[s][key] for s in sizes])
                slope, intercept = np.polyfit(n, y, 1)
                worst = float(np.max(np.abs(y - (slope * n + intercept)) / y))
                result[key] = {"slope_per_1000": slope * 1000, "intercept": intercept}
                print(
                    f"  {key}: {slope * 1000:.1f} MiB per 1000 studies + {intercept:.0f} MiB "
                    f"(points within {worst:.1%} of the line)"
                )
        return result
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
