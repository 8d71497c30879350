"""``vheight phantom OUTDIR``: synthetic lateral spine films with their true landmarks.

Writes DICOM films (DX For Presentation by default) and, beside each, the
true six-point landmarks as a v1 annotation file (FILM.vheight.json).
With --series: a pre / post-kyphoplasty / follow-up series of one patient
(pre.dcm, post.dcm, followup.dcm); with no other option it reproduces the
bundled sample_images exactly.  Otherwise --count films are written as
phantom_SEED.dcm, for consecutive seeds starting at --seed.

The films are synthetic: no real patient, no anatomical variation beyond
what the generator draws.  One record per film is printed (--format).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from vheight.cli._output import add_format_argument, emit_csv, emit_json, emit_table

__all__ = ["register", "run"]

TABLE_COLUMNS = (
    "file",
    "timepoint",
    "rows",
    "columns",
    "row_spacing_mm",
    "col_spacing_mm",
    "facing",
    "levels",
    "fractures",
    "cement",
)


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected ROWSxCOLS, e.g. 2000x1500")
    return int(match.group(1)), int(match.group(2))


def _spacing(text: str) -> tuple[float, float]:
    parts = re.split(r"[xX\\,]", text.strip())
    try:
        values = [float(p) for p in parts if p.strip()]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(0 < v < 10 for v in values):
        raise argparse.ArgumentTypeError(
            f"spacing {text!r}: expected MM or ROWxCOL in mm, e.g. 0.17 or 0.15x0.18"
        )
    return values[0], values[1]


def _fracture(text: str) -> Any:
    from vheight.phantom.spec import parse_fracture

    try:
        return parse_fracture(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _levels(text: str) -> tuple[str, ...]:
    from vheight.phantom.spec import parse_levels

    try:
        return parse_levels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic lateral spine films (DICOM) with their true landmarks",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="folder to write into (created)")
    parser.add_argument(
        "--seed", type=int, default=None, help="patient seed (default 2026 for --series, else 0)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=1,
        help="number of films, with consecutive seeds (not with --series)",
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="pre / post-kyphoplasty / follow-up series of one patient "
        "(L1 wedge 30 %% treated, T12 biconcave 21 %% untreated, a new L2 wedge fracture "
        "of 25 %% at follow-up)",
    )
    parser.add_argument(
        "--new-fracture",
        default=None,
        metavar="LEVEL:KIND:LOSS|none",
        help="with --series: the new fracture on the follow-up film (default L2:wedge:25; "
        "'none' for a follow-up without one)",
    )
    parser.add_argument(
        "--spacing",
        type=_spacing,
        default=None,
        metavar="MM",
        help="pixel spacing in the patient plane, MM or ROWxCOL (default 0.17; "
        "with --series the detector pitch, default 0.19)",
    )
    parser.add_argument(
        "--ermf",
        type=float,
        default=None,
        help="estimated radiographic magnification factor (default 1.12)",
    )
    parser.add_argument(
        "--spacing-tags",
        default="imager+ermf",
        choices=("imager+ermf", "imager", "pixel", "pixel+geometry", "none"),
        help="which spacing attributes the header carries (default imager+ermf; "
        "'pixel' writes PixelSpacing only, as a CR film)",
    )
    parser.add_argument(
        "--photometric", default="MONOCHROME2", choices=("MONOCHROME1", "MONOCHROME2")
    )
    parser.add_argument(
        "--bits", type=int, default=12, choices=(10, 12, 14, 16), help="BitsStored (16 allocated)"
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="ROWSxCOLS",
        help="image size in pixels (default 2000x1500)",
    )
    parser.add_argument(
        "--facing",
        default="right",
        choices=("left", "right"),
        help="side of the image the patient faces (anterior)",
    )
    parser.add_argument(
        "--levels",
        type=_levels,
        default=None,
        metavar="T10-L4",
        help="annotated levels, consecutive (default T10-L4)",
    )
    parser.add_argument(
        "--fracture",
        type=_fracture,
        action="append",
        default=[],
        metavar="LEVEL:KIND:LOSS",
        help="a deformity, e.g. L1:wedge:30 (kinds wedge, biconcave, crush; "
        "loss in %% of the adjacent reference); repeatable",
    )
    parser.add_argument(
        "--cement",
        action="append",
        default=[],
        metavar="LEVEL",
        help="draw PMMA cement in LEVEL (repeatable)",
    )
    parser.add_argument(
        "--dose",
        type=float,
        default=1.0,
        help="relative detector dose; noise scales as 1/sqrt(dose)",
    )
    parser.add_argument(
        "--modality",
        choices=("DX", "CR"),
        default=None,
        help="SOP class (default DX, or CR without ImagerPixelSpacing)",
    )
    parser.add_argument(
        "--compression",
        default=None,
        choices=("none", "rle", "j2k", "jpegls"),
        help="lossless transfer syntax (default none; j2k for --series)",
    )
    add_format_argument(parser)
    parser.set_defaults(handler=run)


def _series_plan(new_fracture: str | None) -> Any:
    """The sample plan, with ``--new-fracture`` (``LEVEL:KIND:LOSS`` or ``none``) applied."""
    import dataclasses

    from vheight.phantom import SAMPLE_PLAN, parse_fracture

    if new_fracture is None:
        return SAMPLE_PLAN
    if new_fracture.strip().lower() == "none":
        return dataclasses.replace(SAMPLE_PLAN, new_level=None)
    f = parse_fracture(new_fracture)
    return dataclasses.replace(
        SAMPLE_PLAN, new_level=f.level, new_kind=f.kind, new_loss_pct=f.loss_pct
    )


def run(args: argparse.Namespace) -> int:
    from vheight.phantom import FilmSpec, generate_series, write_film

    outdir = Path(args.outdir)
    common: dict[str, Any] = {
        "photometric": args.photometric,
        "bits_stored": args.bits,
        "facing": args.facing,
        "spacing_tags": args.spacing_tags,
        "dose": args.dose,
    }
    if args.modality:
        common["modality"] = args.modality
    if args.size:
        common["rows"], common["columns"] = args.size
    if args.spacing:
        common["row_spacing_mm"], common["col_spacing_mm"] = args.spacing
    if args.levels:
        common["levels"] = args.levels
    try:
        if args.series:
            if args.fracture or args.cement or args.ermf or args.count != 1:
                print(
                    "vheight phantom: error: --series defines its own fractures, cement and "
                    "magnification; --fracture, --cement, --ermf and --count do not apply",
                    file=sys.stderr,
                )
                return 2
            kwargs = dict(common)
            kwargs["compression"] = args.compression or "j2k"
            seed = 2026 if args.seed is None else args.seed
            written = list(
                generate_series(outdir, seed=seed, plan=_series_plan(args.new_fracture), **kwargs)
            )
        else:
            if args.new_fracture is not None:
                print("vheight phantom: error: --new-fracture needs --series", file=sys.stderr)
                return 2
            if args.count < 1:
                print("vheight phantom: error: --count must be at least 1", file=sys.stderr)
                return 2
            if args.ermf is not None:
                common["ermf"] = args.ermf
            common["fractures"] = tuple(args.fracture)
            common["cement_levels"] = tuple(c.upper() for c in args.cement)
            common["compression"] = args.compression or "none"
            first = 0 if args.seed is None else args.seed
            written = []
            for seed in range(first, first + args.count):
                spec = FilmSpec(seed=seed, **common)
                written.append(write_film(spec, outdir / f"phantom_{seed:04d}.dcm"))
    except ValueError as exc:
        print(f"vheight phantom: error: {exc}", file=sys.stderr)
        return 2
    records = [w.record() for w in written]
    if args.format == "json":
        emit_json({"outdir": str(outdir), "films": records})
    elif args.format == "csv":
        emit_csv(records)
    else:
        emit_table(records, columns=TABLE_COLUMNS)
    return 0
