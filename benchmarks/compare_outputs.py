"""Outputs of ``vheight info`` and ``vheight measure`` on reference films, to compare.

Records, for the sample series (``sample_images/*.dcm`` and their annotations)
and pydicom-data's ``RG1_*`` / ``RG3_*`` CR films:

* the ``vheight info --format json`` document of every film;
* the ``vheight measure --format json`` document of every sample annotation,
  and of ``pre.vheight.json`` measured with each pydicom-data film's header
  (``--image``);
* a digest of the display pixels and the stored values of every film.

Paths are reduced to file names, so that the record does not depend on where
the repository or pydicom-data is installed.  ``--all-testdata`` adds the
``info`` document (or the error line) of every file of pydicom's test data.

Run on one version of the code with ``--save before.json`` and on another with
``--check before.json``: it prints every difference and exits 1 if any.
``tests/test_outputs.py`` checks the stored record of this repository.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RG_FILMS = (
    "RG1_UNCI.dcm",
    "RG1_UNCR.dcm",
    "RG1_J2KI.dcm",
    "RG1_J2KR.dcm",
    "RG3_UNCI.dcm",
    "RG3_UNCR.dcm",
    "RG3_J2KI.dcm",
    "RG3_J2KR.dcm",
)


def _testdata(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = get_testdata_file(name)
    return Path(found) if found else None


def _run_cli(argv: list[str]) -> tuple[int, Any, str]:
    from vheight.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    text = out.getvalue()
    try:
        document = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        document = text
    return code, document, err.getvalue()


def _scrub(value: Any, paths: dict[str, str]) -> Any:
    """``value`` with every absolute or repository path replaced by its file name."""
    if isinstance(value, dict):
        return {k: _scrub(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, paths) for v in value]
    if isinstance(value, str):
        for long, short in paths.items():
            value = value.replace(long, short)
    return value


def _digest(array: Any) -> str:
    import numpy as np

    array = np.ascontiguousarray(array)
    return f"{array.dtype.str}{list(array.shape)}:" + hashlib.sha256(array.tobytes()).hexdigest()


def films() -> list[Path]:
    found = sorted((REPO / "sample_images").glob("*.dcm"))
    for name in RG_FILMS:
        path = _testdata(name)
        if path is not None:
            found.append(path)
    return found


def collect(*, all_testdata: bool = False) -> dict[str, Any]:
    from vheight.loader import load_film

    record: dict[str, Any] = {"info": {}, "measure": {}, "pixels": {}, "testdata": {}}
    paths: dict[str, str] = {}
    for film in films():
        paths[str(film)] = film.name
        paths[str(film.relative_to(REPO)) if film.is_relative_to(REPO) else str(film)] = film.name
    for film in films():
        code, document, err = _run_cli(["info", "--format", "json", str(film)])
        record["info"][film.name] = _scrub({"exit": code, "out": document, "err": err}, paths)
        loaded = load_film(film)
        record["pixels"][film.name] = {
            "pixels": _digest(loaded.pixels),
            "stored": _digest(loaded.stored),
            "window": loaded.window.label(),
        }
    pre = REPO / "sample_images" / "pre.vheight.json"
    paths[str(pre.parent)] = "sample_images"
    for annotation in sorted((REPO / "sample_images").glob("*.vheight.json")):
        code, document, err = _run_cli(["measure", "--format", "json", str(annotation)])
        record["measure"][annotation.name] = _scrub(
            {"exit": code, "out": document, "err": err}, paths
        )
    for film in films():
        if film.parent == REPO / "sample_images":
            continue
        code, document, err = _run_cli(
            ["measure", "--format", "json", str(pre), "--image", str(film)]
        )
        record["measure"][f"pre+{film.name}"] = _scrub(
            {"exit": code, "out": document, "err": err}, paths
        )
    if all_testdata:
        from pydicom.data import get_testdata_files

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = sorted(get_testdata_files("*"))
        for name in names:
            path = Path(name)
            if path.suffix.lower() not in (".dcm", "") or not path.is_file():
                continue
            code, document, err = _run_cli(["info", "--format", "json", str(path)])
            scrubbed = _scrub(
                {"exit": code, "out": document, "err": err}, {str(path.parent) + "/": ""}
            )
            record["testdata"][path.name] = scrubbed
    return record


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in after:
                found.append(f"{where}/{key}: missing now")
            elif key not in before:
                found.append(f"{where}/{key}: new")
            else:
                found.extend(differences(before[key], after[key], f"{where}/{key}"))
        return found
    if before != after:
        return [f"{where}: {before!r} -> {after!r}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", metavar="JSON", help="write the record to this file")
    parser.add_argument("--check", metavar="JSON", help="compare with a saved record")
    parser.add_argument(
        "--all-testdata", action="store_true", help="also `info` every pydicom test file"
    )
    args = parser.parse_args(argv)
    record = collect(all_testdata=args.all_testdata)
    if args.save:
        Path(args.save).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"saved {args.save}")
    if args.check:
        before = json.loads(Path(args.check).read_text())
        if not args.all_testdata:
            before.pop("testdata", None)
            record.pop("testdata", None)
        found = differences(before, record)
        for line in found:
            print(line)
        print(f"{len(found)} difference(s)")
        return 1 if found else 0
    if not args.save:
        json.dump(record, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
