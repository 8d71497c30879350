"""``vheight agreement FOLDER_OR_FILES...``: how well readers agree on the same films.

Annotations of the same film (matched by SOP Instance UID) made by different
readers -- the annotation's ``annotator``, or with ``--by folder`` the top
folder under each folder given -- are measured and compared, per quantity
(the three heights, wedge ratio, wedge angle, largest height loss) over the
vertebrae every reader completed: ICC(2,1) and ICC(3,1) with 95 % intervals,
Bland-Altman bias and limits (two readers), SEM, smallest detectable change,
CV; and on the Genant grade: percent agreement, Cohen's weighted kappas,
Fleiss' kappa, agreement on "fractured".

``--format json`` prints one document (``interfaces.md``); ``csv`` one row
per quantity and a ``grade`` row; ``table`` two tables and a summary, with
the warnings on stderr.  ``--plot DIR`` writes one Bland-Altman PNG per
quantity (two readers).  Exit 1 when fewer than two readers share a film,
or when some files could not be read (named on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run", "TABLE_HEADERS"]

TABLE_COLUMNS = (
    "quantity",
    "unit",
    "n",
    "icc_2_1",
    "icc_2_1_ci",
    "icc_3_1",
    "icc_3_1_ci",
    "bias",
    "loa_low",
    "loa_high",
    "sem",
    "sdc",
    "cv_pct",
)
TABLE_HEADERS = {
    "icc_2_1": "ICC(2,1)",
    "icc_2_1_ci": "95% CI",
    "icc_3_1": "ICC(3,1)",
    "icc_3_1_ci": "95% CI",
    "loa_low": "LoA low",
    "loa_high": "LoA high",
    "sem": "SEM",
    "sdc": "SDC",
    "cv_pct": "CV %",
}
GRADE_HEADERS = {
    "n": "vertebrae",
    "percent_agreement": "agreement %",
    "kappa_linear": "kappa linear",
    "kappa_quadratic": "kappa quadratic",
    "fleiss_kappa": "Fleiss kappa",
    "fracture_agreement_pct": "fractured agreement %",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from vheight.agreement import BY_CHOICES
    from vheight.cli._output import add_format_argument
    from vheight.cli.measure import add_reference_argument

    parser = subparsers.add_parser(
        "agreement",
        help="agreement between readers of the same films (ICC, Bland-Altman, kappa)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        metavar="FOLDER_OR_FILES",
        nargs="+",
        help="annotation files (*.vheight.json) and folders searched recursively",
    )
    parser.add_argument(
        "--by",
        choices=BY_CHOICES,
        default="annotator",
        help="who read each annotation: its annotator field (default), or the top folder "
        "under each folder given (e.g. readers/alice/..., readers/bob/...)",
    )
    add_reference_argument(parser)
    add_format_argument(parser)
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help="write one Bland-Altman plot per quantity (PNG) into DIR (two readers)",
    )
    parser.set_defaults(handler=run)


def _interval(value: Any) -> str | None:
    if not value:
        return None
    low, high = value
    return f"{low:.2f} to {high:.2f}"


def run(args: argparse.Namespace) -> int:
    from vheight.agreement import GRADE_KEYS, agreement_files, write_bland_altman_plots
    from vheight.cli._output import emit_csv, emit_json, emit_table
    from vheight.cli.measure import for_people

    try:
        result = agreement_files(args.paths, by=args.by, reference=args.reference)
    except FileNotFoundError as exc:
        print(f"vheight agreement: error: {exc}", file=sys.stderr)
        return 1
    records = result.quantity_records()
    grade = dict(result.grade)
    if args.format == "json":
        emit_json(result.to_dict())
    elif args.format == "csv":
        rows: list[dict[str, Any]] = [
            {k: v for k, v in record.items() if not k.endswith("_ci")} for record in records
        ]
        for record, row in zip(records, rows, strict=True):
            for name in ("icc_2_1", "icc_3_1"):
                ci = record[f"{name}_ci"]
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = ci if ci else (None, None)
        rows.append({"quantity": "grade", **{k: grade[k] for k in GRADE_KEYS}})
        from vheight.agreement import QUANTITY_COLUMNS

        emit_csv(rows, columns=[*QUANTITY_COLUMNS, *(k for k in GRADE_KEYS if k != "n")])
    else:
        counts = ", ".join(f"{r} {n}" for r, n in result.vertebrae_by_reader.items())
        print(
            f"readers: {', '.join(result.readers) or 'none'}; films read by every reader: "
            f"{result.films}; vertebrae every reader completed: {result.vertebrae}"
            + (f" (completed: {counts})" if counts else "")
        )
        if result.difference:
            print(f"Bland-Altman differences: {result.difference}; reference {result.reference}")
        if result.shared:
            table = for_people(records)
            for row in table:
                for name in ("icc_2_1_ci", "icc_3_1_ci"):
                    row[name] = _interval(row[name])
            emit_table(table, columns=TABLE_COLUMNS, headers=TABLE_HEADERS)
            print()
            print("Genant grade (quantitative suggestion)")
            emit_table(for_people([grade]), columns=GRADE_KEYS, headers=GRADE_HEADERS)
    if args.plot and result.shared:
        if len(result.readers) == 2:
            for path in write_bland_altman_plots(result, args.plot):
                print(f"vheight agreement: wrote {path}", file=sys.stderr)
        else:
            print(
                "vheight agreement: warning: Bland-Altman plots need exactly two readers "
                f"({len(result.readers)} here): none written",
                file=sys.stderr,
            )
    for warning in result.warnings:
        print(f"vheight agreement: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"vheight agreement: error: {error}", file=sys.stderr)
    if not result.shared:
        print(
            "vheight agreement: error: fewer than two readers share a film"
            + ("" if len(result.readers) < 2 else " read by every reader"),
            file=sys.stderr,
        )
        return 1
    return 1 if result.errors else 0
