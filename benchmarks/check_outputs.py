"""Same outputs before and after a change: batch, measure and compare, byte for byte.

``save OUT`` runs the outputs below with the code on ``PYTHONPATH`` and keeps
every file under ``OUT``; ``compare OLD NEW`` says whether two such folders hold
the same bytes.  Run ``save`` once with the old code and once with the new
(e.g. the old commit unpacked with ``git archive``), on the same inputs:

- ``vheight batch`` of ``sample_images/``, of an ``edge`` folder (the sample
  series plus a malformed annotation, a missing film, a non-DICOM film and a
  warning holding commas and quotes) and of a generated folder of studies
  (:func:`bench_batch.generate`, seeded), each with ``--out`` (measurement and
  comparison CSV files) on 1 and 2 workers, and with ``--format csv`` and
  ``--format json`` on stdout;
- ``vheight measure`` and ``vheight compare`` of the sample series with
  ``--format csv`` and ``--format json``.

Columns added on purpose may be named with ``--added`` (default
``annotator``): ``compare`` drops such a column of a NEW CSV file (and key of a
JSON document) when the OLD one lacks it, and then wants the remaining bytes
equal.

    PYTHONPATH=/tmp/old python benchmarks/check_outputs.py save /tmp/out-old --inputs /tmp/in
    PYTHONPATH=$PWD python benchmarks/check_outputs.py save /tmp/out-new --inputs /tmp/in
    python benchmarks/check_outputs.py compare /tmp/out-old /tmp/out-new
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_images"


def _inputs(folder: Path, studies: int) -> dict[str, Path]:
    """The input folders (made once, reused by every ``save``)."""
    sys.path.insert(0, str(HERE))
    from bench_batch import generate

    folders = {
        "samples": folder / "samples",
        "edge": folder / "edge",
        "generated": folder / f"generated-{studies}",
    }
    if not folders["samples"].is_dir():
        shutil.copytree(SAMPLES, folders["samples"])
    edge = folders["edge"]
    if not edge.is_dir():
        shutil.copytree(SAMPLES, edge / "series")
        (edge / "bad").mkdir()
        (edge / "bad" / "broken.vheight.json").write_text('{"format": "vheight.annotation", "v')
        points = json.loads((SAMPLES / "pre.vheight.json").read_text())
        points["vertebrae"]["L1"]["superior_anterior"] = ["x", 1]
        points["vertebrae"]["L9"] = {}
        (edge / "bad" / "points.vheight.json").write_text(json.dumps(points))
        missing = json.loads((SAMPLES / "post.vheight.json").read_text())
        missing["image"]["file"] = "not-there.dcm"
        (edge / "bad" / "missing.vheight.json").write_text(json.dumps(missing))
        (edge / "bad" / "text.dcm").write_text("not a DICOM file")
        posing = json.loads((SAMPLES / "post.vheight.json").read_text())
        posing["image"]["file"] = "text.dcm"
        (edge / "bad" / "posing.vheight.json").write_text(json.dumps(posing))
        odd = json.loads((SAMPLES / "pre.vheight.json").read_text())
        odd["image"]["sop_instance_uid"] = "1.2.3"
        odd["calibration"] = {
            "row_spacing_mm": 0.2,
            "col_spacing_mm": 0.2,
            "source": "User",
            "description": 'a "25,4 mm" marker',
        }
        odd["timepoint"] = None
        (edge / "series" / "odd.vheight.json").write_text(json.dumps(odd))
    if not folders["generated"].is_dir():
        generate(folders["generated"], studies)
    return folders


def _vheight(args: Sequence[str], cwd: Path) -> tuple[int, bytes, bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "vheight", *args], cwd=cwd, capture_output=True, check=False
    )
    return done.returncode, done.stdout, done.stderr


def save(out: Path, inputs: Path, studies: int) -> None:
    folders = _inputs(inputs, studies)
    out.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        for workers in (1, 2):
            target = f"batch-{name}-w{workers}.csv"
            code, stdout, stderr = _vheight(
                [
                    "batch",
                    str(folder),
                    "--out",
                    target,
                    "--workers",
                    str(workers),
                    "-q",
                    "--format",
                    "json",
                ],
                out,
            )
            (out / f"batch-{name}-w{workers}.summary.json").write_bytes(stdout)
            (out / f"batch-{name}-w{workers}.code").write_text(str(code))
            (out / f"batch-{name}-w{workers}.stderr").write_bytes(stderr)
        for fmt in ("csv", "json"):
            code, stdout, _stderr = _vheight(
                ["batch", str(folder), "--workers", "1", "-q", "--format", fmt], out
            )
            (out / f"batch-{name}-stdout.{fmt}").write_bytes(stdout)
    samples = folders["samples"]
    runs = {
        "measure-pre": ["measure", "pre.vheight.json"],
        "measure-followup-max": ["measure", "followup.vheight.json", "--reference", "max"],
        "compare": ["compare", "pre.vheight.json", "post.vheight.json"],
        "compare-followup": [
            "compare",
            "pre.vheight.json",
            "post.vheight.json",
            "followup.vheight.json",
            "--reference",
            "posterior",
        ],
    }
    for name, args in runs.items():
        for fmt in ("csv", "json"):
            code, stdout, stderr = _vheight([*args, "--format", fmt], samples)
            (out / f"{name}.{fmt}").write_bytes(stdout)
            (out / f"{name}.{fmt}.stderr").write_bytes(stderr + f"exit {code}\n".encode())


def _csv_without(text: bytes, drop: Sequence[str], keep_from: bytes) -> bytes:
    """``text`` without the columns ``drop`` that the CSV ``keep_from`` lacks.

    Each line is parsed and written again by :mod:`csv`; a line that does not
    come back as written is kept as it is, so that the comparison stays exact.
    """
    old_header = next(csv.reader(io.StringIO(keep_from.decode())), [])
    rows = list(csv.reader(io.StringIO(text.decode(), newline="")))
    if not rows:
        return text
    gone = [i for i, name in enumerate(rows[0]) if name in drop and name not in old_header]
    if not gone:
        return text
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([cell for i, cell in enumerate(row) if i not in gone])
    return buffer.getvalue().encode()


def _json_without(value: Any, drop: Sequence[str], old: Any) -> Any:
    if isinstance(value, dict) and isinstance(old, dict):
        return {
            k: _json_without(v, drop, old.get(k))
            for k, v in value.items()
            if not (k in drop and k not in old)
        }
    if isinstance(value, list) and isinstance(old, list) and len(value) == len(old):
        return [_json_without(v, drop, o) for v, o in zip(value, old, strict=True)]
    return value


def compare(old: Path, new: Path, added: Sequence[str]) -> int:
    names = sorted({p.name for p in old.iterdir()} | {p.name for p in new.iterdir()})
    failures = 0
    for name in names:
        a, b = old / name, new / name
        if not a.is_file() or not b.is_file():
            print(f"only in {'new' if b.is_file() else 'old'}: {name}")
            failures += 1
            continue
        before, after = a.read_bytes(), b.read_bytes()
        if name.endswith(".csv"):
            after = _csv_without(after, added, before)
        elif name.endswith(".json") and before.strip():
            with contextlib.suppress(ValueError):
                old_doc, new_doc = json.loads(before), json.loads(after)
                reduced = _json_without(new_doc, added, old_doc)
                if reduced != new_doc:
                    after = (json.dumps(reduced, indent=2) + "\n").encode()
                    before = (json.dumps(old_doc, indent=2) + "\n").encode()
        same = before == after
        print(f"{'same' if same else 'DIFFERENT'}  {name} ({len(a.read_bytes())} bytes)")
        failures += not same
    print(f"{len(names) - failures} of {len(names)} outputs identical")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    saving = sub.add_parser("save", help="run every output into a folder")
    saving.add_argument("out", type=Path)
    saving.add_argument("--inputs", type=Path, required=True, help="input folders (made once)")
    saving.add_argument("--studies", type=int, default=1000)
    comparing = sub.add_parser("compare", help="compare two saved folders")
    comparing.add_argument("old", type=Path)
    comparing.add_argument("new", type=Path)
    comparing.add_argument("--added", nargs="*", default=["annotator"])
    args = parser.parse_args(argv)
    if args.command == "save":
        save(args.out, args.inputs, args.studies)
        return 0
    return compare(args.old, args.new, args.added)


if __name__ == "__main__":
    raise SystemExit(main())
