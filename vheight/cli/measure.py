"""``vheight measure ANNOTATION``: heights, ratios, angles, height loss and grade per vertebra.

Calibration: the annotation's own, else the header of the film (``--image``,
or the annotation's ``image.file``), else uncalibrated (lengths in px, said
so).  One record per annotated vertebra (``interfaces.md``); incomplete
vertebrae are listed with ``complete`` false and empty numbers.

``--format json`` prints ``{"annotation", "unit", "spacing_label",
"vertebrae": [records], "warnings": [...]}`` and nothing else on stdout;
``csv`` prints the records; ``table`` prints a summary line, the table, and
the warnings on stderr.  A malformed annotation or unreadable film exits 1
with one line on stderr naming the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from vheight.morphometry import RECORD_KEYS, ReferenceMethod

__all__ = ["register", "run", "for_people", "REFERENCE_CHOICES", "TABLE_COLUMNS"]

REFERENCE_CHOICES = tuple(method.value for method in ReferenceMethod)

#: The record's columns in the table for people; the unit and spacing label are
#: said once, in the line above the table.
TABLE_COLUMNS = tuple(key for key in RECORD_KEYS if key not in ("unit", "spacing_label"))

TABLE_HEADERS = {
    "anterior_height": "Ha",
    "middle_height": "Hm",
    "posterior_height": "Hp",
    "wedge_ratio": "Ha/Hp",
    "mid_ratio": "Hm/Hp",
    "crush_ratio": "crush",
    "wedge_angle_deg": "wedge deg",
    "segmental_kyphosis_deg": "segm deg",
    "reference_method": "reference",
    "anterior_loss_pct": "loss a %",
    "middle_loss_pct": "loss m %",
    "posterior_loss_pct": "loss p %",
    "max_loss_pct": "max loss %",
    "deformity_type": "type",
    "reference_levels": "ref levels",
}


def for_people(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records for the table format: floats rounded to 9 decimals, no negative zero.

    Floating-point noise such as ``3.55e-15`` mm for an unchanged height reads
    as a real change in a table; 1e-9 is far below any measurable length or
    angle.  JSON and CSV keep every digit.
    """
    out = []
    for record in records:
        row = {}
        for key, value in record.items():
            if isinstance(value, float):
                value = round(value, 9) + 0.0
            row[key] = value
        out.append(row)
    return out


def add_reference_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        choices=REFERENCE_CHOICES,
        default="adjacent",
        help="reference height for the height loss: mean of the adjacent levels (default), "
        "the vertebra's own posterior height, the larger of the two, or the nearest normal "
        "level above and below (untreated, Ha/Hp and Hm/Hp >= 0.8, at most two levels away)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from vheight.cli._output import add_format_argument

    parser = subparsers.add_parser(
        "measure",
        help="measure the vertebrae of one annotation file",
        description="Heights, ratios, wedge and segmental kyphosis angles, height loss and "
        "Genant grade of every annotated vertebra.",
    )
    parser.add_argument("annotation", metavar="ANNOTATION", help="a *.vheight.json file")
    parser.add_argument(
        "--image",
        metavar="FILM",
        help="the film whose header gives the calibration (default: the annotation's image.file)",
    )
    add_reference_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vheight.api import measure_file
    from vheight.cli._output import emit_csv, emit_json, emit_table
    from vheight.morphometry import RECORD_KEYS

    result = measure_file(args.annotation, image=args.image, reference=args.reference)
    if args.format == "json":
        document = result.to_dict()
        document["annotation"] = args.annotation
        emit_json(document)
        return 0
    if args.format == "csv":
        emit_csv(result.records(), columns=RECORD_KEYS)
    else:
        print(
            f"{args.annotation}: {len(result.vertebrae)} vertebra(e); lengths in {result.unit}, "
            f"calibration {result.calibration.describe()}; reference {result.reference.value}"
        )
        if result.vertebrae:
            emit_table(for_people(result.records()), columns=TABLE_COLUMNS, headers=TABLE_HEADERS)
        print(
            "grade: Genant's height-loss thresholds, a quantitative suggestion "
            "for the radiologist to confirm"
        )
    for warning in result.warnings:
        print(f"vheight measure: warning: {warning}", file=sys.stderr)
    return 0
