"""``vheight batch FOLDER``: every annotation under a folder, measured and paired.

Without ``--out`` the tables go to stdout in the chosen ``--format``: ``table``
(key columns of the measurements, then of the comparisons), ``csv`` (every
column of the measurement table) or ``json`` (one document holding the
``measurements``, ``comparisons``, ``errors`` and ``warnings`` records).
With ``--out`` the measurement table is written there (CSV, or Parquet for a
``.parquet`` suffix), the comparison table to ``--comparisons`` (default: the
``--out`` name with ``-comparisons`` added before the suffix) and stdout gets
a summary in the chosen format.  Progress, errors and the final summary line
go to stderr.  Exit code 1 when any file failed (or none was found).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vheight.cli._output import add_format_argument, emit_csv, emit_json, emit_table
from vheight.errors import VHeightError

__all__ = ["register", "run"]

# Columns shown by --format table (the files and csv/json carry all of them).
_TABLE_MEASUREMENT_COLUMNS = (
    "annotation",
    "timepoint",
    "level",
    "unit",
    "anterior_height",
    "middle_height",
    "posterior_height",
    "wedge_angle_deg",
    "max_loss_pct",
    "grade",
    "treated",
    "error",
)
_TABLE_COMPARISON_COLUMNS = (
    "subject",
    "level",
    "height",
    "unit",
    "pre",
    "post",
    "followup",
    "delta",
    "restoration_pct_of_lost",
    "wedge_angle_change_deg",
    "error",
)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {value}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="measure every annotation under a folder; pair pre/post films",
        description=(
            "Measure every *.vheight.json under FOLDER (recursive), reading only the "
            "films' headers, on a local process pool or a Dask cluster. One row per "
            "vertebra; pre/post(/followup) annotations of the same patient (PatientID, "
            "else StudyInstanceUID, else folder) are compared. A file that fails becomes "
            "an error row and the rest go on; exit code 1 when anything failed."
        ),
    )
    parser.add_argument("folder", metavar="FOLDER", help="folder searched for *.vheight.json")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write the measurement table here (CSV; Parquet for a .parquet suffix)",
    )
    parser.add_argument(
        "--comparisons",
        metavar="FILE",
        help="write the comparison table here (default with --out: OUT-comparisons.SUFFIX)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="local worker processes (default: the number of CPUs, one per 32 files "
        "for a small folder; 1 = no pool)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help='run on a Dask distributed scheduler, e.g. tcp://host:8786 (needs "vheight[dask]")',
    )
    parser.add_argument(
        "--reference",
        choices=("adjacent", "posterior", "max"),
        default="adjacent",
        help="reference height of the height loss (default: adjacent)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no summary line on stderr (errors are still listed)",
    )
    add_format_argument(parser)
    parser.set_defaults(handler=run)


def _comparisons_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}-comparisons{out.suffix}")


def run(args: argparse.Namespace) -> int:
    from vheight.batch import dask_client, run_batch

    targets = [Path(p) for p in (args.out, args.comparisons) if p]
    for target in targets:  # fail before the work, not after it
        folder = target.parent
        if not folder.is_dir():
            raise VHeightError(f"{target}: cannot write there, folder {folder} does not exist")
    if (
        args.out
        and args.comparisons
        and Path(args.out).resolve() == Path(args.comparisons).resolve()
    ):
        raise VHeightError(f"{args.out}: --out and --comparisons name the same file")
    kwargs: dict[str, Any] = {"reference": args.reference, "progress": not args.quiet}
    if args.scheduler:
        with dask_client(args.scheduler) as client:
            result = run_batch(args.folder, executor=client, **kwargs)
    else:
        result = run_batch(args.folder, workers=args.workers, **kwargs)

    written: dict[str, str] = {}
    if args.out:
        out = Path(args.out)
        written["out"] = str(result.write(out))
        comparisons = Path(args.comparisons) if args.comparisons else _comparisons_path(out)
        written["comparisons_out"] = str(result.write(comparisons, table="comparisons"))
    elif args.comparisons:
        written["comparisons_out"] = str(result.write(args.comparisons, table="comparisons"))

    if args.out:
        summary = {**result.summary(), **written}
        if args.format == "json":
            emit_json(
                {**summary, "errors": list(result.error_rows), "warnings": list(result.warnings)}
            )
        elif args.format == "csv":
            emit_csv([summary])
        else:
            _emit_summary_table(summary)
    elif args.format == "json":
        emit_json(
            {
                "folder": str(result.folder),
                "reference": result.reference,
                "measurements": list(result.measurement_rows),
                "comparisons": list(result.comparison_rows),
                "errors": list(result.error_rows),
                "warnings": list(result.warnings),
            }
        )
    elif args.format == "csv":
        result.write_csv(sys.stdout)
    else:
        _emit_tables(result.measurement_rows, result.comparison_rows)

    for row in result.error_rows:
        print(f"vheight batch: error: {row['error']}", file=sys.stderr)
    for message in result.warnings:
        print(f"vheight batch: warning: {message}", file=sys.stderr)
    if result.n_annotations == 0:
        print(
            f"vheight batch: error: no annotation file (*.vheight.json) under {args.folder}",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        summary = result.summary()
        line = (
            f"vheight batch: {summary['measured']} of {summary['annotations']} annotation(s) "
            f"measured ({summary['vertebrae']} vertebrae), {summary['comparisons']} "
            f"comparison(s), {summary['errors']} error(s)"
        )
        if written:
            line += "; wrote " + ", ".join(written.values())
        print(line, file=sys.stderr)
    return 1 if result.failed else 0


def _emit_summary_table(summary: Mapping[str, Any]) -> None:
    emit_table(
        [{"item": key, "value": value} for key, value in summary.items()],
        columns=("item", "value"),
    )


def _emit_tables(
    measurements: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]]
) -> None:
    if measurements:
        emit_table(measurements, columns=_TABLE_MEASUREMENT_COLUMNS)
    if comparisons:
        sys.stdout.write("\n")
        emit_table(comparisons, columns=_TABLE_COMPARISON_COLUMNS)
