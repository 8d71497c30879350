"""``vheight refine ANNOTATION``: snap landmarks to the endplate edges, propose levels.

Each landmark is moved to the cortical endplate edge near it (within
``--radius-mm``), corners to the corner of the body outline, middle points
midway between the corners on the endplate.  One record per landmark says how
far it moved and why it was left alone when it was (``flag``).  ``--propose
LEVEL`` adds the six landmarks of a level next to complete ones, snapped the
same way.  The refined annotation is written only with ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

TABLE_COLUMNS = (
    "level",
    "point",
    "x",
    "y",
    "dx_px",
    "dy_px",
    "distance_px",
    "distance_mm",
    "moved",
    "flag",
)

TABLE_HEADERS = {
    "dx_px": "dx px",
    "dy_px": "dy px",
    "distance_px": "moved px",
    "distance_mm": "moved mm",
}


def _split(values: list[str] | None) -> list[str] | None:
    """Comma-separated values of repeated options, in order."""
    if not values:
        return None
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _levels(values: list[str] | None) -> list[str] | None:
    """Levels of ``--levels``: names and ranges, e.g. ``T12,L1`` or ``T10-L3``."""
    from vheight.annotation import LEVELS, level_index

    items = _split(values)
    if items is None:
        return None
    out: list[str] = []
    for item in items:
        if "-" in item:
            first, last = (level_index(v.strip().upper()) for v in item.split("-", 1))
            out.extend(LEVELS[min(first, last) : max(first, last) + 1])
        else:
            out.append(item.upper())
    return out


def _film_path(args: argparse.Namespace, annotation: Any, annotation_path: Path) -> Path:
    from vheight.errors import AnnotationError

    if args.image:
        return Path(args.image)
    if annotation.image.file:
        return annotation_path.parent / annotation.image.file
    raise AnnotationError(
        f"{annotation_path}: the annotation names no film (image.file): give --image FILM"
    )


def run(args: argparse.Namespace) -> int:
    from vheight.annotation import load_annotation, save_annotation
    from vheight.cli._output import emit_csv, emit_json, emit_table
    from vheight.loader import load_film
    from vheight.refine import NOTE_FLAGS, is_doubt, propose_level_result, refine_annotation

    annotation_path = Path(args.annotation)
    annotation = load_annotation(annotation_path)
    film_path = _film_path(args, annotation, annotation_path)
    film = load_film(film_path)
    levels = _levels(args.levels)
    points = _split(args.points)
    proposals = [p.upper() for p in _split(args.propose) or []]

    moves: list[dict[str, Any]] = []
    warnings: list[str] = []
    result = None
    # Existing levels first, so that proposals start from snapped neighbours.
    if not proposals or levels is not None or points is not None:
        result = refine_annotation(
            annotation, film, None, levels=levels, points=points, radius_mm=args.radius_mm
        )
        annotation = result.annotation
        moves.extend({**r, "proposed": False} for r in result.records())
        warnings.extend(w for w in result.warnings if w not in warnings)
    for level in proposals:
        result = propose_level_result(
            annotation, film, None, level, radius_mm=args.radius_mm, replace_existing=args.replace
        )
        annotation = result.annotation
        moves.extend({**r, "proposed": True} for r in result.records())
        warnings.extend(w for w in result.warnings if w not in warnings)
    assert result is not None
    calibration = result.calibration

    out_path = None
    if args.out:
        out_path = save_annotation(annotation, args.out)

    if args.format == "json":
        emit_json(
            {
                "annotation": str(annotation_path),
                "image": str(film_path),
                "out": None if out_path is None else str(out_path),
                "unit": calibration.unit,
                "spacing_label": calibration.label.value,
                "radius_mm": result.radius_mm,
                "proposed": proposals,
                "moves": moves,
                "warnings": warnings,
            }
        )
    elif args.format == "csv":
        emit_csv(moves)
    else:
        emit_table(moves, columns=(*TABLE_COLUMNS, "proposed"), headers=TABLE_HEADERS)
    for warning in warnings:
        print(f"vheight refine: warning: {warning}", file=sys.stderr)
    moved = sum(1 for m in moves if m["moved"])
    flagged = sum(1 for m in moves if is_doubt(m["flag"]))
    noted = sum(1 for m in moves if m["flag"] in NOTE_FLAGS)
    where = f"written to {out_path}" if out_path else "not written (give --out FILE)"
    print(
        f"vheight refine: {moved} of {len(moves)} point(s) moved, {flagged} flagged, "
        f"{noted} placed by a convention (doubled, spur_excluded); "
        f"annotation {where}",
        file=sys.stderr,
    )
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mm, found {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"the radius must be > 0 mm, found {text!r}")
    return value


def register(subparsers: Any) -> None:
    from vheight.cli._output import add_format_argument

    parser = subparsers.add_parser(
        "refine",
        help="snap landmarks to the endplate edges; propose the landmarks of a level",
        description=(
            "Move each landmark of ANNOTATION to the cortical endplate edge near it (corners to "
            "the corner of the body outline, middle points midway between the corners on the "
            "endplate) and print how far each moved. Points without a clear edge within the "
            "radius are left alone and flagged (weak_edge, ambiguous_edge, weak_wall_edge: moved "
            "across the endplate only, outside_image, unstable: snapping again kept moving it, "
            "rejected_edge: the edge found lies outside the body's outline, e.g. on the pedicle "
            "or in front of the body, spacing_out_of_range); points placed by a convention say so"
            " (doubled: midway between two endplate contours, spur_excluded: corner on the body's"
            " outline, not on an osteophyte). A proposal extrapolated from levels on one side "
            "only is flagged extrapolated. With --propose LEVEL, the six landmarks of LEVEL are "
            "predicted from the complete levels (position, orientation and size trend) and "
            "snapped. The refined annotation "
            "is written only with --out (which may be ANNOTATION itself)."
        ),
    )
    parser.add_argument("annotation", metavar="ANNOTATION", help="annotation file (.vheight.json)")
    parser.add_argument(
        "--image",
        metavar="FILM",
        help="the film the landmarks were placed on (default: the annotation's image.file)",
    )
    parser.add_argument("--out", metavar="FILE", help="write the refined annotation here")
    parser.add_argument(
        "--radius-mm",
        type=_positive,
        default=4.0,
        metavar="R",
        help="search radius around each landmark, mm (default 4)",
    )
    parser.add_argument(
        "--levels",
        action="append",
        metavar="LEVELS",
        help="refine only these levels: names and ranges, comma-separated (e.g. T12,L1 or "
        "T10-L3); repeatable",
    )
    parser.add_argument(
        "--points",
        action="append",
        metavar="NAMES",
        help="refine only these point names, comma-separated (e.g. superior_anterior)",
    )
    parser.add_argument(
        "--propose",
        action="append",
        metavar="LEVEL",
        help=(
            "propose and snap the six landmarks of LEVEL from the complete levels; "
            "repeatable, in order (e.g. --propose T11 --propose T10). Other levels are "
            "then refined (first) only if --levels or --points is given"
        ),
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="with --propose: replace the points a proposed level already holds",
    )
    add_format_argument(parser)
    parser.set_defaults(handler=run)
