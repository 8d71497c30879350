"""``vheight info FILM...``: header facts of films, without decoding pixels.

Each FILM is a DICOM, PNG, JPEG or TIFF file, or a folder (searched
recursively; files in it that are not films are skipped, and so, with a
warning, are named pipes, devices and other files that are not regular).  One record per
film: size, modality, photometric interpretation, transfer syntax, bits
stored, frames, UIDs, calibration (``row_spacing_mm``, ``col_spacing_mm``,
``spacing_source``, ``spacing_label``), patient and view position, warnings.

Heavy modules (numpy, pydicom) are imported only when the command runs, so
that listing many films costs little more than reading their headers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "collect_info", "iter_films", "InfoResult"]

TABLE_COLUMNS = (
    "name",
    "format",
    "rows",
    "columns",
    "modality",
    "photometric_interpretation",
    "transfer_syntax_name",
    "bits_stored",
    "row_spacing_mm",
    "col_spacing_mm",
    "spacing_label",
    "view_position",
)

TABLE_HEADERS = {
    "photometric_interpretation": "photometric",
    "transfer_syntax_name": "transfer syntax",
    "bits_stored": "bits",
    "row_spacing_mm": "row mm",
    "col_spacing_mm": "col mm",
    "spacing_label": "label",
    "view_position": "view",
}


@dataclass(slots=True, kw_only=True)
class InfoResult:
    """Records of the films read, one error line per film that failed."""

    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0
    #: Files in folders that are not regular files (FIFOs, devices...), with the reason.
    skipped_special: list[str] = field(default_factory=list)


def iter_films(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, bool]]:
    """``(path, explicit)`` for each argument; folders expand to their files, sorted.

    ``explicit`` is False for files found inside a folder (they may be skipped
    quietly when they are not films).
    """
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            found: list[Path] = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(Path(root, f) for f in files if not f.startswith("."))
            for file in sorted(found):
                yield file, False
        else:
            yield path, True


def collect_info(paths: Sequence[str | os.PathLike]) -> InfoResult:
    """Read the header of every film under ``paths`` (what the command prints)."""
    from vheight.errors import VHeightError
    from vheight.files import regular_file_problem
    from vheight.loader import read_film_info, sniff_format

    result = InfoResult()
    for path, explicit in iter_films(paths):
        if not explicit:
            # Checked before anything opens it: a FIFO would block open().
            problem = regular_file_problem(path, what="film")
            if problem is not None:
                result.skipped_special.append(f"{path}: {problem}")
                continue
        try:
            info = read_film_info(path)
        except VHeightError as exc:
            if not explicit and (
                path.name.upper().startswith("DICOMDIR") or _is_not_a_film(path, sniff_format)
            ):
                result.skipped += 1
                continue
            message = str(exc)
            result.errors.append(message if str(path) in message else f"{message} [{path}]")
            continue
        result.records.append(info.to_dict())
    return result


def _is_not_a_film(path: Path, sniff_format: Any) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return bool(head) and sniff_format(head) is None and head[:2] not in (b"\x02\x00", b"\x08\x00")


def run(args: argparse.Namespace) -> int:
    from vheight.cli._output import emit_csv, emit_json, emit_table

    result = collect_info(args.films)
    for message in result.errors:
        print(f"vheight info: error: {message}", file=sys.stderr)
    single = len(args.films) == 1 and not Path(args.films[0]).is_dir()
    if args.format == "json":
        if single and len(result.records) == 1:
            emit_json(result.records[0])
        else:
            emit_json(result.records)
    elif args.format == "csv":
        if result.records:
            emit_csv(result.records)
    else:
        if single and len(result.records) == 1:
            record = result.records[0]
            emit_table(
                [{"key": k, "value": v} for k, v in record.items() if k != "warnings"],
                columns=("key", "value"),
            )
        elif result.records:
            emit_table(result.records, columns=TABLE_COLUMNS, headers=TABLE_HEADERS)
        for record in result.records:
            for warning in record["warnings"]:
                print(f"vheight info: {record['name']}: warning: {warning}", file=sys.stderr)
    for skipped in result.skipped_special:
        print(f"vheight info: warning: skipped {skipped}", file=sys.stderr)
    if result.skipped:
        print(f"vheight info: skipped {result.skipped} file(s) that are not films", file=sys.stderr)
    if not result.records and not result.errors:
        print("vheight info: error: no films found", file=sys.stderr)
        return 1
    return 1 if result.errors else 0


def register(subparsers: Any) -> None:
    from vheight.cli._output import add_format_argument

    parser = subparsers.add_parser(
        "info",
        help="header facts of films: size, modality, transfer syntax, calibration",
        description=(
            "Print the header facts of DICOM, PNG, JPEG or TIFF films without decoding "
            "their pixels. A folder is searched recursively. Exit code 1 when some "
            "film could not be read (one line per film on stderr; the others are printed)."
        ),
    )
    parser.add_argument("films", nargs="+", metavar="FILM", help="film file or folder")
    add_format_argument(parser)
    parser.set_defaults(handler=run)
