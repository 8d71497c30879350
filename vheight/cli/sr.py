"""``vheight sr``: DICOM Structured Report (TID 1500) and presentation state export, and SR import.

Export::

    vheight sr ANNOTATION [--image FILM] [--out SR.dcm] [--gsps GSPS.dcm] [--reference METHOD]

writes the measurement report of the annotated film (``--out``; over an
earlier vheight SR of the same film and reader, the new one names it as its
predecessor and joins its series) and/or a
grayscale softcopy presentation state showing the landmarks and heights over
the film in any DICOM viewer (``--gsps``).  The film is ``--image`` or the
annotation's ``image.file`` (relative to the annotation's folder); it must be
the DICOM film the annotation was drawn on.

Import::

    vheight sr --read SR.dcm [--out FILM.vheight.json] [--image-file FILM.dcm]

restores the annotation recorded in such a report (printed as JSON on stdout
without ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vheight.cli._output import add_format_argument, emit_csv, emit_json, emit_table

__all__ = ["register", "run"]

REFERENCES = ("adjacent", "posterior", "max", "nearest_normal")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sr",
        help="export a DICOM SR measurement report / presentation state, or read an SR back",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "examples: vheight sr pre.vheight.json --out pre_sr.dcm --gsps pre_pr.dcm; "
            "vheight sr --read pre_sr.dcm --out pre.vheight.json"
        ),
    )
    parser.add_argument("annotation", nargs="?", help="annotation file (*.vheight.json) to export")
    parser.add_argument("--image", help="the DICOM film (default: the annotation's image.file)")
    parser.add_argument(
        "--out", help="SR file to write (export) or annotation file to write (--read)"
    )
    parser.add_argument(
        "--gsps", metavar="PATH", help="also write a grayscale softcopy presentation state"
    )
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default="adjacent",
        help="reference height method (default: adjacent)",
    )
    parser.add_argument("--read", metavar="SR", help="read an SR document back into an annotation")
    parser.add_argument("--image-file", help="image.file of the restored annotation (with --read)")
    add_format_argument(parser)
    parser.set_defaults(handler=run, _parser=parser)


def _film_path(annotation_path: Path, annotation: Any, image: str | None) -> Path:
    from vheight.errors import AnnotationError

    if image:
        return Path(image)
    if not annotation.image.file:
        raise AnnotationError(
            f"{annotation_path}: image.file is not set: pass the DICOM film with --image"
        )
    return annotation_path.parent / annotation.image.file


def _emit(record: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit_json(record)
    elif fmt == "csv":
        emit_csv([record])
    else:
        emit_table([record])


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    if bool(args.read) == bool(args.annotation):
        parser.error("give either ANNOTATION (export) or --read SR (import)")
    if args.read:
        return _read(args)
    if not args.out and not args.gsps:
        parser.error("nothing to write: give --out SR.dcm and/or --gsps GSPS.dcm")
    from vheight.annotation import load_annotation
    from vheight.gsps import write_gsps
    from vheight.sr import write_sr

    annotation_path = Path(args.annotation)
    annotation = load_annotation(annotation_path)
    film = _film_path(annotation_path, annotation, args.image)
    record: dict[str, Any] = {
        "annotation": str(annotation_path),
        "image": str(film),
        "levels": len(annotation.vertebrae),
        "sr": None,
        "gsps": None,
    }
    if args.out:
        record["sr"] = str(
            write_sr(
                annotation,
                film,
                args.out,
                reference=args.reference,
                predecessor=_replaced(Path(args.out), annotation),
            )
        )
    if args.gsps:
        record["gsps"] = str(write_gsps(annotation, film, args.gsps, reference=args.reference))
    _emit(record, args.format)
    return 0


def _replaced(out: Path, annotation: Any) -> Any:
    """The vheight SR of the same film and reader that ``out`` holds, or None."""
    import pydicom

    from vheight.sr import reader_name, sr_facts

    if not out.is_file():
        return None
    try:
        ds = pydicom.dcmread(out)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        return None  # not a DICOM file: simply replaced
    if str(ds.get("SOPClassUID", "")) != pydicom.uid.ComprehensiveSRStorage:
        return None
    facts = sr_facts(ds)
    same = (
        facts.is_vheight
        and facts.film == annotation.image.sop_instance_uid
        and facts.reader == reader_name(annotation.annotator)
    )
    return ds if same else None


def _read(args: argparse.Namespace) -> int:
    from vheight.annotation import dumps_annotation, save_annotation
    from vheight.sr import annotation_from_sr

    annotation = annotation_from_sr(Path(args.read), image_file=args.image_file)
    if not args.out:
        sys.stdout.write(dumps_annotation(annotation))
        if not dumps_annotation(annotation).endswith("\n"):
            sys.stdout.write("\n")
        return 0
    out = save_annotation(annotation, args.out)
    _emit(
        {
            "sr": str(args.read),
            "out": str(out),
            "levels": len(annotation.vertebrae),
            "points": sum(len(p) for p in annotation.vertebrae.values()),
            "timepoint": annotation.timepoint,
        },
        args.format,
    )
    return 0
