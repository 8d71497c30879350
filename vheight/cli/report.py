"""``vheight report ANNOTATION... --out report.pdf``: printable PDF report.

The annotations are measured (calibration: the annotation's own, else the
film header's), grouped by patient and ordered pre, post, follow-up; each
patient gets a summary or pre/post/follow-up comparison page and one page per
film with the annotated film and its measurement table.  ``--deidentify``
prints no patient name, ID, study date or file name.

Exit code 1 (one line per film on stderr) when a film that an annotation
names could not be read; the report is still written, its page for that film
saying why.
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
        "report",
        help="printable PDF report: annotated films, measurements, comparison",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "annotations",
        nargs="+",
        metavar="ANNOTATION",
        help="annotation files (*.vheight.json); films found through image.file",
    )
    parser.add_argument("--out", default="report.pdf", help="PDF to write (default: report.pdf)")
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default="adjacent",
        help="reference height method for height loss (default: adjacent)",
    )
    parser.add_argument(
        "--deidentify",
        action="store_true",
        help="print no patient name, ID, study date or file name",
    )
    add_format_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vheight.report import pdf_bytes, prepare_films, save_pdf

    groups = prepare_films([Path(a) for a in args.annotations], reference=args.reference)
    data = pdf_bytes(groups, reference=args.reference, deidentify=args.deidentify)
    out = save_pdf(data, args.out)
    # A film that an annotation names but that could not be read: the report is
    # written (the page says why), and the command says so and exits 1.
    unread = [
        item
        for group in groups
        for item in group
        if item.film is None and item.annotation.image.file
    ]
    for item in unread:
        reason = next(
            (w for w in item.warnings if "not found" in w or "could not be read" in w),
            "the film could not be read",
        )
        print(f"vheight report: error: {reason}", file=sys.stderr)
    record = {
        "out": str(out),
        "patients": len(groups),
        "films": sum(len(g) for g in groups),
        "deidentified": bool(args.deidentify),
        "reference": args.reference,
    }
    if args.format == "json":
        emit_json(record)
    elif args.format == "csv":
        emit_csv([record])
    else:
        emit_table([record])
    return 1 if unread else 0
