"""Batch measurement speed: ``vheight batch`` against reading the headers alone.

Generates N annotated studies once (a CR film with a realistic header and
real pixel data, plus a five-vertebra annotation; half the patients have a
pre and a post film, so pairing and comparison run too), then times, on the
same films in the same run (best of ``--repeat``):

- ``dcmread``: a plain loop of ``pydicom.dcmread(path, stop_before_pixels=True)``
  and ``json.load`` of the annotation over the studies, the least any tool must
  do to read the landmarks and learn the film's calibration;
- ``batch W``: ``vheight batch FOLDER --out results.csv --workers W`` run in
  this process (discovery, annotation parsing, header reading, measuring,
  pairing, comparison, writing both CSV files), for each W of ``--workers``.

Prints the ratio batch(1 worker) / plain loop (the target is at most 2.5:
pixels are never decoded), both as the ratio of the best times and as the median
of each round's own ratio (loop and batch timed back to back, so less swayed by a
shared machine's speed drifting between rounds), and the speed-up from 1 to each
other worker count (target at least 1.7 for 2 workers), likewise as the ratio of
the best times and as the median of the rounds' own speed-ups.

    .venv/bin/python benchmarks/bench_batch.py --studies 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
ROWS, COLUMNS = 192, 160
LEVELS = ("T12", "L1", "L2", "L3", "L4")
POINTS = (
    "superior_anterior",
    "superior_middle",
    "superior_posterior",
    "inferior_anterior",
    "inferior_middle",
    "inferior_posterior",
)


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _film(path: Path, *, patient: int, timepoint: str, rng: np.random.Generator) -> None:
    """A CR film whose header resembles a vendor's (about 4 KB) with 16-bit pixels."""
    sop_uid = _uid("sop", patient, timepoint)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = "VHEIGHT_BENCH"
    meta.SourceApplicationEntityTitle = "CR_READER_01"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "RT"]
    ds.InstanceCreationDate = "20260115"
    ds.InstanceCreationTime = "101500"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260115"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.AccessionNumber = f"ACC{patient:06d}{timepoint[:2].upper()}"
    ds.Modality = "CR"
    ds.Manufacturer = "Example Medical Systems"
    ds.InstitutionName = "Example University Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Example City"
    ds.ReferringPhysicianName = "Referrer^Example"
    ds.StationName = "CRSTATION3"
    ds.StudyDescription = "XR SPINE THORACOLUMBAR 2 VIEWS"
    ds.SeriesDescription = "LAT"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.OperatorsName = "Tech^Example"
    ds.ManufacturerModelName = "CR 30-X"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([Dataset()])
    ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = _uid(
        "pps", patient, timepoint
    )
    ds.PatientName = f"Bench^Patient{patient:05d}"
    ds.PatientID = f"P{patient:06d}"
    ds.PatientBirthDate = "19450101"
    ds.PatientSex = "F"
    ds.PatientAge = "081Y"
    ds.BodyPartExamined = "TLSPINE"
    ds.KVP = "85"
    ds.DistanceSourceToDetector = "1150"
    ds.DistanceSourceToPatient = "1000"
    ds.ExposureTime = "250"
    ds.XRayTubeCurrent = "320"
    ds.Exposure = "80"
    ds.ImagerPixelSpacing = [1.15, 1.15]
    ds.Sensitivity = "200"
    ds.SoftwareVersions = "V5.2.1"
    ds.PlateID = f"{patient % 97:04d}"
    ds.ViewPosition = "LL"
    ds.StudyInstanceUID = _uid("study", patient, timepoint)
    ds.SeriesInstanceUID = _uid("series", patient, timepoint)
    ds.StudyID = f"{patient}"
    ds.SeriesNumber = "1"
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ["A", "F"]
    ds.Laterality = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.PixelSpacing = [1.0, 1.0]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    request = Dataset()
    request.RequestedProcedureID = f"RP{patient:06d}"
    request.ScheduledProcedureStepID = f"SPS{patient:06d}"
    request.ScheduledProcedureStepDescription = "XR SPINE THORACOLUMBAR"
    ds.RequestAttributesSequence = DicomSequence([request])
    ds.PerformedProcedureStepID = f"PPS{patient:06d}"
    ds.PerformedProcedureStepDescription = "XR SPINE THORACOLUMBAR 2 VIEWS"
    # A vendor's private block: processing parameters and an opaque blob.
    block = ds.private_block(0x0029, "EXAMPLE CR PROCESSING", create=True)
    block.add_new(0x10, "LO", "GA 1.0 GT E GC 1.2 GS -0.2")
    block.add_new(0x11, "DS", ["1.5", "0.8", "2.0", "0.4"])
    block.add_new(0x12, "OB", rng.integers(0, 256, 1800, dtype=np.uint8).tobytes())
    block.add_new(0x13, "LO", "EDR SEMI-AUTO S 200 L 2.0")
    ds.PixelData = rng.integers(0, 4096, ROWS * COLUMNS, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _annotation(film: str, timepoint: str, patient: int, rng: np.random.Generator) -> dict:
    vertebrae = {}
    for i, level in enumerate(LEVELS):
        top = 8.0 + 36.0 * i + rng.normal(0, 0.5)
        posterior = 26.0 + 0.6 * i + rng.normal(0, 0.6)
        front = (
            0.96
            if not (level == "L1" and patient % 2 == 0)
            else (0.62 if timepoint == "pre" else 0.84)
        )
        anterior = posterior * (front + rng.normal(0, 0.01))
        middle = posterior * (0.5 + 0.5 * front) - 0.3
        sa, sm, sp = 40.0 + i, 70.0 + i, 100.0 + i
        vertebrae[level] = {
            "superior_anterior": [sa, top + posterior - anterior],
            "superior_middle": [sm, top + (posterior - middle) / 2],
            "superior_posterior": [sp, top],
            "inferior_anterior": [sa + 0.4, top + posterior],
            "inferior_middle": [sm + 0.4, top + posterior - (posterior - middle) / 2],
            "inferior_posterior": [sp + 0.4, top + posterior + 0.2],
        }
    return {
        "format": "vheight.annotation",
        "version": 1,
        "image": {
            "file": film,
            "sop_instance_uid": _uid("sop", patient, timepoint),
            "rows": ROWS,
            "columns": COLUMNS,
        },
        "timepoint": timepoint,
        "calibration": None,
        "vertebrae": vertebrae,
        "treated_levels": ["L1"] if patient % 2 == 0 else [],
        "patient_position": "standing",
        "annotator": "bench",
        "created": "2026-01-15T10:30:00Z",
        "modified": "2026-01-15T10:35:00Z",
        "notes": "",
    }


def generate(folder: Path, studies: int, *, seed: int = 0) -> list[Path]:
    """``studies`` films and annotations under ``folder``; returns the film paths.

    Patients hold two studies each (pre and post), one folder per study.
    """
    rng = np.random.default_rng(seed)
    films = []
    for index in range(studies):
        patient, timepoint = index // 2, ("pre", "post")[index % 2]
        study_dir = folder / f"P{patient:06d}" / timepoint
        study_dir.mkdir(parents=True, exist_ok=True)
        film = study_dir / "lateral.dcm"
        _film(film, patient=patient, timepoint=timepoint, rng=rng)
        document = _annotation(film.name, timepoint, patient, rng)
        (study_dir / "lateral.vheight.json").write_text(json.dumps(document, indent=2))
        films.append(film)
    return films


def _timed(action) -> tuple[float, float]:
    """(wall, CPU of this process) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def _stages(folder: Path, films: Sequence[Path]) -> dict[str, float]:
    """CPU seconds of the single-file steps a batch repeats for every study,
    and of writing the two CSV files of a 1-worker batch of ``folder``."""
    from vheight.annotation import load_annotation
    from vheight.batch import run_batch
    from vheight.comparison import compare
    from vheight.loader import read_film_info
    from vheight.morphometry import measure

    annotations = [film.with_name("lateral.vheight.json") for film in films]
    cpu = time.process_time
    start = cpu()
    infos = [read_film_info(film) for film in films]
    header = cpu() - start
    start = cpu()
    loaded = [load_annotation(path) for path in annotations]
    parse = cpu() - start
    start = cpu()
    measured = []
    for annotation, info in zip(loaded, infos, strict=True):
        measured.append(measure(annotation, info.calibration))
        measured[-1].records()
    measuring = cpu() - start
    start = cpu()
    for pre, post in zip(measured[0::2], measured[1::2], strict=False):
        compare(pre, post).records()
    comparing = cpu() - start
    result = run_batch(folder, workers=1, progress=False)
    with tempfile.TemporaryDirectory() as out:
        start = cpu()
        result.write(Path(out) / "results.csv")
        result.write(Path(out) / "results-comparisons.csv", table="comparisons")
        writing = cpu() - start
    # The floor of the CSV: Python's shortest round-trip text of every float cell.
    floats = [
        value
        for rows, columns in (
            (result.measurement_rows, result.measurement_columns),
            (result.comparison_rows, result.comparison_columns),
        )
        for row in rows
        for value in map(row.get, columns)
        if type(value) is float
    ]
    start = cpu()
    list(map(repr, floats))
    formatting = cpu() - start
    return {
        "read_film_info": header,
        "load_annotation": parse,
        "measure": measuring,
        "compare (pre/post pairs)": comparing,
        "write both CSV files": writing,
        f"  of which repr() of its {len(floats)} floats": formatting,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000, help="annotated films (default 1000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--dir", help="where to generate (default: a temporary folder, removed)")
    parser.add_argument(
        "--command", action="store_true", help="also time the `vheight batch` command end to end"
    )
    args = parser.parse_args(argv)

    from vheight.cli import main as vheight_main

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vheight-bench-"))
    folder = base / "studies"
    try:
        start = time.perf_counter()
        films = generate(folder, args.studies)
        generation_s = time.perf_counter() - start
        header_bytes = [
            pydicom.dcmread(films[0], stop_before_pixels=True)  # warm the page cache too
        ]
        del header_bytes
        film_bytes = os.path.getsize(films[0])

        annotations = [film.with_name("lateral.vheight.json") for film in films]

        def header_loop() -> None:
            for path, annotation in zip(films, annotations, strict=True):
                pydicom.dcmread(path, stop_before_pixels=True)
                with open(annotation, encoding="utf-8") as handle:
                    json.load(handle)

        def batch(workers: int) -> None:
            code = vheight_main(
                [
                    "batch",
                    str(folder),
                    "--out",
                    str(base / "results.csv"),
                    "--workers",
                    str(workers),
                    "--quiet",
                    "--format",
                    "json",
                ]
            )
            if code != 0:
                raise SystemExit(f"vheight batch failed with exit code {code}")

        header_loop()  # warm-up: page cache, imports
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        with open(os.devnull, "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                batch(1)
                # Interleaved, so that load from elsewhere falls on every variant alike.
                for _ in range(args.repeat):
                    runs = [("dcmread", header_loop)] + [
                        (f"batch_{w}", lambda w=w: batch(w)) for w in args.workers
                    ]
                    for name, action in runs:
                        w_s, c_s = _timed(action)
                        wall.setdefault(name, []).append(w_s)
                        cpu.setdefault(name, []).append(c_s)
                # Best of three runs of each step, as the batch's own time is its best
                # (the rest below is the difference of the two).
                runs = [_stages(folder, films) for _ in range(3)]
                stages = {name: min(r[name] for r in runs) for name in runs[0]}
            finally:
                sys.stdout = stdout
        dcmread_s = min(wall["dcmread"])
        batch_s = {w: min(wall[f"batch_{w}"]) for w in args.workers}

        figures: dict[str, Any] = {
            "studies": args.studies,
            "film_bytes": film_bytes,
            "generation_s": generation_s,
            "dcmread_loop_s": dcmread_s,
            "dcmread_loop_cpu_s": min(cpu["dcmread"]),
            **{f"batch_{w}_workers_s": t for w, t in batch_s.items()},
            **{f"{name}_cpu_s": t for name, t in stages.items()},
        }
        one = batch_s.get(1)
        if one is not None:
            figures["batch_1_workers_cpu_s"] = min(cpu["batch_1"])
            figures["ratio_1_worker"] = one / dcmread_s
            figures["ratio_1_worker_cpu"] = min(cpu["batch_1"]) / min(cpu["dcmread"])
            # Each round times the loop and the batch one after the other: the median of
            # the rounds' own ratios is less swayed by the machine's speed drifting
            # between rounds than the ratio of the best times is.
            figures["ratio_1_worker_rounds"] = [
                b / d for b, d in zip(wall["batch_1"], wall["dcmread"], strict=True)
            ]
            figures["ratio_1_worker_median"] = statistics.median(figures["ratio_1_worker_rounds"])
            for w, t in batch_s.items():
                if w != 1:
                    figures[f"speedup_{w}_workers"] = one / t
                    figures[f"ratio_{w}_workers"] = t / dcmread_s
                    figures[f"speedup_{w}_workers_rounds"] = [
                        a / b for a, b in zip(wall["batch_1"], wall[f"batch_{w}"], strict=True)
                    ]
                    figures[f"speedup_{w}_workers_median"] = statistics.median(
                        figures[f"speedup_{w}_workers_rounds"]
                    )
        if args.command:
            vheight = shutil.which("vheight") or str(Path(sys.executable).with_name("vheight"))
            start = time.perf_counter()
            subprocess.run(
                [vheight, "batch", str(folder), "--out", str(base / "cmd.csv"), "-q"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            figures["command_s"] = time.perf_counter() - start

        loop_cpu = figures["dcmread_loop_cpu_s"]
        print(
            f"vheight batch benchmark: {args.studies} studies, films of {film_bytes} bytes "
            f"(header + {ROWS}x{COLUMNS} 16-bit pixels), best of {args.repeat}, "
            f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}"
        )
        print("                                                  wall s    CPU s")
        print(f"  dcmread(stop_before_pixels) + json.load loop   {dcmread_s:8.3f} {loop_cpu:8.3f}")
        for w, t in batch_s.items():
            cpu_text = f"{figures['batch_1_workers_cpu_s']:8.3f}" if w == 1 else ""
            print(f"  vheight batch --workers {w:<2d}                     {t:8.3f} {cpu_text}")
        if one is not None:
            ratio, ratio_cpu = figures["ratio_1_worker"], figures["ratio_1_worker_cpu"]
            print(
                f"  ratio batch(1 worker) / plain loop             {ratio:8.2f} "
                f"{ratio_cpu:8.2f}   (target <= 2.5)"
            )
            rounds = " ".join(f"{r:.2f}" for r in figures["ratio_1_worker_rounds"])
            print(
                f"  median of the rounds' ratios                   "
                f"{figures['ratio_1_worker_median']:8.2f}            (rounds: {rounds})"
            )
            for w in batch_s:
                if w != 1:
                    print(
                        f"  ratio batch({w} workers) / plain loop            "
                        f"{figures[f'ratio_{w}_workers']:8.2f}"
                    )
                    rounds = " ".join(f"{r:.2f}" for r in figures[f"speedup_{w}_workers_rounds"])
                    print(
                        f"  speed-up 1 -> {w} workers                        "
                        f"{figures[f'speedup_{w}_workers']:8.2f}            (target >= 1.7)"
                    )
                    print(
                        f"  median of the rounds' speed-ups                "
                        f"{figures[f'speedup_{w}_workers_median']:8.2f}            "
                        f"(rounds: {rounds})"
                    )
        print("  CPU of the steps of a 1-worker batch, in plain loops (best of three):")
        for name, value in stages.items():
            print(f"    {name:<44s} {value / loop_cpu:8.2f}")
        if one is not None:
            rest = figures["batch_1_workers_cpu_s"] - sum(
                value for name, value in stages.items() if not name.startswith(" ")
            )
            figures["batch_own_cpu_s"] = rest
            print(f"    {'the rest (discovery, paths, pairing, rows)':<44s} {rest / loop_cpu:8.2f}")
        if "command_s" in figures:
            print(f"  `vheight batch` command, start-up included     {figures['command_s']:8.3f}")
        return figures
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
