"""``vheight compare PRE POST [FOLLOWUP]``: restoration after augmentation, per level and height.

Each annotation is measured with its own calibration (else its film's header,
else in px).  One record per level measured on both PRE and POST and per
height (``interfaces.md``): heights before, after and at follow-up, the four
restoration measures, height lost since the post film, wedge angle and
segmental kyphosis change, grades.

``--format json`` prints ``{"pre", "post", "followup", "levels": [records],
"warnings": [...]}`` and nothing else on stdout; ``csv`` prints the records;
``table`` prints a table of heights and a table of per-level angles, grades
and flags (suspected new fracture, recollapse), and the warnings on stderr.

Films of different patients (``PatientID`` in their headers) are not
compared: exit 1 with one line naming both files and both IDs, unless
``--allow-different-patients``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]

HEIGHT_COLUMNS = (
    "level",
    "height",
    "pre",
    "post",
    "followup",
    "delta",
    "restoration_pct_of_initial",
    "restoration_pct_of_lost",
    "restoration_pct_of_reference",
    "loss_since_post_pct",
    "reference_method",
    "reference_pre",
    "lost_pre",
    "loss_reduction_pct_points",
    "restoration_pct_of_lost_relative",
)
HEIGHT_HEADERS = {
    "restoration_pct_of_initial": "% of initial",
    "restoration_pct_of_lost": "% of lost",
    "restoration_pct_of_reference": "% of ref",
    "loss_since_post_pct": "lost since post %",
    "reference_method": "reference",
    "reference_pre": "ref pre",
    "lost_pre": "lost pre",
    "loss_reduction_pct_points": "loss pre-post pts",
    "restoration_pct_of_lost_relative": "% of lost (rel)",
}
LEVEL_COLUMNS = (
    "level",
    "treated",
    "wedge_angle_pre_deg",
    "wedge_angle_post_deg",
    "wedge_angle_change_deg",
    "wedge_angle_followup_deg",
    "segmental_kyphosis_pre_deg",
    "segmental_kyphosis_post_deg",
    "segmental_kyphosis_change_deg",
    "wedge_ratio_pre",
    "wedge_ratio_post",
    "wedge_ratio_change",
    "grade_pre",
    "grade_post",
    "grade_followup",
    "incident_fracture",
    "recollapse",
    "incident_reason",
)
LEVEL_HEADERS = {
    "wedge_angle_pre_deg": "wedge pre",
    "wedge_angle_post_deg": "wedge post",
    "wedge_angle_change_deg": "wedge change",
    "wedge_angle_followup_deg": "wedge fu",
    "segmental_kyphosis_pre_deg": "segm pre",
    "segmental_kyphosis_post_deg": "segm post",
    "segmental_kyphosis_change_deg": "segm change",
    "wedge_ratio_pre": "Ha/Hp pre",
    "wedge_ratio_post": "Ha/Hp post",
    "wedge_ratio_change": "Ha/Hp change",
    "grade_followup": "grade fu",
    "incident_fracture": "new fracture?",
    "recollapse": "recollapse?",
    "incident_reason": "why",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from vheight.cli._output import add_format_argument
    from vheight.cli.measure import add_reference_argument

    parser = subparsers.add_parser(
        "compare",
        help="compare one patient's films before and after augmentation (and at follow-up)",
        description="Height restoration (four measures), wedge angle and segmental kyphosis "
        "change, grades before and after, and height lost since the post film.",
    )
    parser.add_argument("pre", metavar="PRE", help="annotation of the film before the procedure")
    parser.add_argument("post", metavar="POST", help="annotation of the film after it")
    parser.add_argument(
        "followup", metavar="FOLLOWUP", nargs="?", help="annotation of a later film (optional)"
    )
    parser.add_argument(
        "--allow-different-patients",
        action="store_true",
        help="compare films whose headers name different patients (kept as a warning)",
    )
    add_reference_argument(parser)
    add_format_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vheight.api import compare_files
    from vheight.cli._output import emit_csv, emit_json, emit_table
    from vheight.cli.measure import for_people
    from vheight.comparison import COMPARE_RECORD_KEYS

    result = compare_files(
        args.pre,
        args.post,
        args.followup,
        reference=args.reference,
        allow_different_patients=args.allow_different_patients,
    )
    records = result.records()
    if args.format == "json":
        document = result.to_dict()
        document.update(pre=args.pre, post=args.post, followup=args.followup)
        emit_json(document)
        return 0
    if args.format == "csv":
        emit_csv(records, columns=COMPARE_RECORD_KEYS)
    else:
        films = f"{args.pre} -> {args.post}" + (f" -> {args.followup}" if args.followup else "")
        units = result.unit
        if result.followup_unit != result.unit:
            units += f" (follow-up in {result.followup_unit})"
        days = [
            f"{label} {n} days"
            for label, n in (
                ("pre -> post", result.days_pre_to_post),
                ("post -> follow-up", result.days_post_to_followup),
            )
            if n is not None
        ]
        print(
            f"{films}: {len(result.levels)} level(s) compared, lengths in {units}"
            + (f"; {', '.join(days)}" if days else "")
        )
        for level in result.incident_levels:
            print(f"FLAG: new fracture suspected at {level} (to confirm)")
        for level in result.recollapsed_levels:
            print(f"FLAG: recollapse suspected at {level} (to confirm)")
        if records:
            records = for_people(records)
            emit_table(records, columns=HEIGHT_COLUMNS, headers=HEIGHT_HEADERS)
            print()
            per_level = [r for r in records if r["height"] == "anterior"]
            emit_table(per_level, columns=LEVEL_COLUMNS, headers=LEVEL_HEADERS)
    for warning in result.warnings:
        print(f"vheight compare: warning: {warning}", file=sys.stderr)
    return 0
