"""Seeded fuzz corpus for ``vheight info`` / ``measure`` / ``report``, run in one process.

Run by ``tests/test_fuzz.py`` in a subprocess under an address-space limit:
``python tests/_fuzz_driver.py WORKDIR SEED``.  Writes hostile films (header
fields set to hostile values, header bytes flipped or cut, and corrupted
JPEG 2000 codestreams of pydicom-data's RG3_J2KR.dcm) with an annotation each,
runs the commands in-process through :func:`vheight.cli.main`, and prints one
JSON record per command run: the case, the command, the exit code, stderr,
the seconds taken and any exception that escaped (with its traceback).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]

# Hostile values by VR: what a broken or malicious header may hold.
HOSTILE_US = [0, 1, 3, 7, 17, 99, 255, 30000, 65535]
HOSTILE_TEXT = ["", "abc", "-1", "0", "nan", "inf", "1e300", "1e-300", "\\\\", "0\\0", "1e-320"]
FIELDS = [
    ("Rows", "US", HOSTILE_US),
    ("Columns", "US", HOSTILE_US),
    ("BitsAllocated", "US", HOSTILE_US),
    ("BitsStored", "US", HOSTILE_US),
    ("HighBit", "US", HOSTILE_US),
    ("PixelRepresentation", "US", [0, 1, 2, 65535]),
    ("SamplesPerPixel", "US", [0, 2, 3, 4, 65535]),
    ("PlanarConfiguration", "US", [0, 1, 7]),
    ("PhotometricInterpretation", "CS", ["", "PALETTE COLOR", "RGB", "YBR_FULL", "HSV", "X" * 16]),
    ("NumberOfFrames", "IS", ["0", "-5", "2", "99999", "abc"]),
    ("PixelSpacing", "DS", HOSTILE_TEXT),
    ("ImagerPixelSpacing", "DS", HOSTILE_TEXT),
    ("EstimatedRadiographicMagnificationFactor", "DS", HOSTILE_TEXT),
    ("DistanceSourceToDetector", "DS", HOSTILE_TEXT),
    ("DistanceSourceToPatient", "DS", HOSTILE_TEXT),
    ("PixelSpacingCalibrationType", "CS", ["GEOMETRY", "FIDUCIAL", "??"]),
    ("WindowCenter", "DS", HOSTILE_TEXT),
    ("WindowWidth", "DS", HOSTILE_TEXT),
    ("RescaleSlope", "DS", HOSTILE_TEXT),
    ("RescaleIntercept", "DS", HOSTILE_TEXT),
    ("VOILUTFunction", "CS", ["SIGMOID", "LINEAR_EXACT", "BOGUS"]),
    ("RedPaletteColorLookupTableDescriptor", "US", [[256, 0, 99], [0, 0, 16], [1, 0, 8]]),
    ("SpecificCharacterSet", "CS", ["ISO_IR 192", "GB18030", "BOGUS"]),
]


def _raw(tag: int, vr: str, value: object) -> RawDataElement:
    """An element written exactly as given, whatever pydicom would say of its value."""
    if vr == "US":
        values = value if isinstance(value, list) else [value]
        data = b"".join(struct.pack("<H", int(v) & 0xFFFF) for v in values)
    else:
        data = str(value).encode("latin-1")
        data += b" " * (len(data) % 2)
    return RawDataElement(tag, vr, len(data), data, 0, False, True)


def small_film(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = "FUZZ"
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.EstimatedRadiographicMagnificationFactor = 1.1
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.set_pixel_data(rng.integers(0, 4096, (200, 150), dtype=np.uint16), "MONOCHROME2", 12)
    return ds


def annotation_for(film: str, scale: float) -> dict:
    data = json.loads((ROOT / "sample_images" / "pre.vheight.json").read_text())
    data["image"] = {"file": film, "sop_instance_uid": None, "rows": None, "columns": None}
    for points in data["vertebrae"].values():
        for name, (x, y) in points.items():
            points[name] = [x * scale, y * scale]
    return data


def header_cases(rng: random.Random, folder: Path, count: int) -> list[tuple[str, Path]]:
    cases = []
    for i in range(count):
        ds = small_film(i)
        changed = []
        for keyword, vr, values in rng.sample(FIELDS, rng.randint(1, 3)):
            value = rng.choice(values)
            if keyword == "RedPaletteColorLookupTableDescriptor":
                ds.PhotometricInterpretation = "PALETTE COLOR"
            ds[tag_for_keyword(keyword)] = _raw(tag_for_keyword(keyword), vr, value)
            changed.append(f"{keyword}={value!r}")
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = bytearray(buffer.getvalue())
        kind = rng.random()
        if kind < 0.2:  # cut somewhere
            cut = rng.randrange(0, len(data))
            data = data[:cut]
            changed.append(f"cut at {cut}")
        elif kind < 0.4:  # flip bytes in the header
            end = min(len(data), 900)
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(132, end)
                data[at] = rng.randrange(256)
            changed.append("header bytes flipped")
        name = f"h{i:02d}"
        (folder / f"{name}.dcm").write_bytes(bytes(data))
        (folder / f"{name}.vheight.json").write_text(
            json.dumps(annotation_for(f"{name}.dcm", 0.07))
        )
        cases.append((f"{name}: " + ", ".join(changed), folder / f"{name}.vheight.json"))
    return cases


def codestream_cases(rng: random.Random, folder: Path, count: int) -> list[tuple[str, Path]]:
    source = pydicom.dcmread(get_testdata_file("RG3_J2KR.dcm"))
    frame = next(pydicom.encaps.generate_frames(source.PixelData, number_of_frames=1))
    siz = frame.index(b"\xff\x4f\xff\x51") + 4
    cases = []
    for i in range(count):
        data = bytearray(frame)
        kind = i % 4
        if kind == 0:  # main header bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(0, 300)] = rng.randrange(256)
            what = "main header bytes flipped"
        elif kind == 1:  # truncated codestream
            data = data[: rng.randrange(10, len(data))]
            what = f"codestream cut to {len(data)} bytes"
        elif kind == 2:  # SIZ fields
            fields = list(struct.unpack_from(">HHIIIIIIIIH", data, siz))
            index = rng.randrange(2, 11)
            fields[index] = rng.choice([0, 1, 30000, 2**31 - 1, 2**32 - 1])
            if index == 10:
                fields[index] = min(fields[index], 65535)
            data[siz : siz + 38] = struct.pack(">HHIIIIIIIIH", *fields)
            what = f"SIZ field {index} = {fields[index]}"
        else:  # body bytes
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(300, len(data))] = rng.randrange(256)
            what = "body bytes flipped"
        ds = pydicom.dcmread(get_testdata_file("RG3_J2KR.dcm"))
        ds.PixelData = pydicom.encaps.encapsulate([bytes(data)])
        name = f"j{i:02d}"
        ds.save_as(folder / f"{name}.dcm")
        (folder / f"{name}.vheight.json").write_text(json.dumps(annotation_for(f"{name}.dcm", 0.8)))
        cases.append((f"{name}: {what}", folder / f"{name}.vheight.json"))
    return cases


def run(argv: list[str]) -> dict:
    from vheight.cli import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    escaped = None
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException:  # noqa: BLE001 - what escapes is the finding
        escaped = traceback.format_exc()
    return {
        "argv": argv,
        "exit": code,
        "stderr": err.getvalue(),
        "seconds": time.perf_counter() - started,
        "escaped": escaped,
    }


def main(workdir: str, seed: str) -> None:
    folder = Path(workdir)
    rng = random.Random(int(seed))
    cases = header_cases(rng, folder, 36)
    reported = {name for name, _ in cases[::4]}
    films = codestream_cases(rng, folder, 12)
    for name, annotation in cases + films:
        film = annotation.with_suffix("").with_suffix(".dcm")
        commands = [
            ["info", "--format", "json", str(film)],
            ["measure", "--format", "json", str(annotation)],
        ]
        if name in reported or name.startswith("j"):
            commands.append(["report", str(annotation), "--out", str(folder / "report.pdf")])
        for argv in commands:
            record = run(argv)
            record["case"] = name
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
