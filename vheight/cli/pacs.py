"""``vheight pacs``: work from a DICOM archive over DICOMweb.

::

    vheight pacs search URL [--patient-id ID] [--accession N] [--study UID]
    vheight pacs pull URL --study UID OUTDIR
    vheight pacs push URL ANNOTATION... [--image FILM] [--gsps]

``search`` lists the studies (QIDO-RS) with their films and vheight results;
``pull`` retrieves a study's films (WADO-RS) and turns each film's current
vheight SR into a sidecar annotation beside it; ``push`` stores the SR (and
the presentation state with ``--gsps``) of each annotation (STOW-RS), naming
the result it replaces.  Options of all three: ``--user``/``--password``
(or ``VHEIGHT_PACS_USER``/``VHEIGHT_PACS_PASSWORD``), ``--token``,
``--timeout``.  Any fault prints one line naming the server and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from vheight.cli._output import add_format_argument, emit_csv, emit_json, emit_table

__all__ = ["register"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="DICOMweb root, e.g. http://pacs:8042/dicom-web")
    parser.add_argument("--user", help="user name (default: $VHEIGHT_PACS_USER)")
    parser.add_argument("--password", help="password (default: $VHEIGHT_PACS_PASSWORD)")
    parser.add_argument("--token", help="bearer token instead of a user and password")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server to connect or send more (default: 30)",
    )
    add_format_argument(parser)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pacs",
        help="search a DICOM archive (DICOMweb), pull films and results, push results",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    search = actions.add_parser("search", help="list studies, their films and vheight results")
    _common(search)
    search.add_argument("--patient-id", help="Patient ID")
    search.add_argument("--accession", help="Accession Number")
    search.add_argument("--study", help="Study Instance UID")
    search.set_defaults(handler=_search)

    pull = actions.add_parser(
        "pull", help="retrieve a study's films and their current vheight annotations"
    )
    _common(pull)
    pull.add_argument("--study", required=True, help="Study Instance UID")
    pull.add_argument("outdir", metavar="OUTDIR", help="folder to write (created or added to)")
    pull.add_argument(
        "--transfer-syntax",
        default="*",
        help="transfer syntax UID to ask for (default: * = as the archive stores the film)",
    )
    pull.set_defaults(handler=_pull)

    push = actions.add_parser("push", help="store the SR (and GSPS) of annotations")
    _common(push)
    push.add_argument("annotations", metavar="ANNOTATION", nargs="+", help="*.vheight.json files")
    push.add_argument("--image", help="the DICOM film (one annotation; default: its image.file)")
    push.add_argument(
        "--gsps", action="store_true", help="also store a grayscale presentation state"
    )
    push.add_argument(
        "--reference",
        choices=("adjacent", "posterior", "max"),
        default="adjacent",
        help="reference height method (default: adjacent)",
    )
    push.set_defaults(handler=_push, _parser=push)


def _archive(args: argparse.Namespace) -> Any:
    from vheight.pacs import Archive

    return Archive(
        args.url,
        user=args.user or os.environ.get("VHEIGHT_PACS_USER") or None,
        password=args.password or os.environ.get("VHEIGHT_PACS_PASSWORD") or None,
        token=args.token,
        timeout=args.timeout,
    )


def _emit(records: list[dict[str, Any]], document: Any, fmt: str) -> None:
    if fmt == "json":
        emit_json(document)
    elif fmt == "csv":
        emit_csv(records)
    elif records:
        emit_table(records)


def _search(args: argparse.Namespace) -> int:
    archive = _archive(args)
    studies = archive.search(
        patient_id=args.patient_id, accession=args.accession, study_uid=args.study
    )
    if args.study and not studies:
        from vheight.errors import PacsError

        raise PacsError(f"{archive.url}: study {args.study} not found")
    rows = []
    for study in studies:
        base = {
            "patient_id": study.patient_id,
            "patient_name": study.patient_name,
            "study_date": study.study_date,
            "accession": study.accession_number,
            "study": study.study_instance_uid,
        }
        for film in study.films:
            current = [r for r in study.current_results() if r.facts.film == film.sop_instance_uid]
            rows.append(
                base
                | {
                    "kind": "film",
                    "modality": film.modality,
                    "date": film.date,
                    "series": film.series_description,
                    "sop_instance_uid": film.sop_instance_uid,
                    "reader": ", ".join(sorted(r.facts.reader or "" for r in current)),
                    "current": None,
                }
            )
        for result in study.results:
            rows.append(
                base
                | {
                    "kind": "result",
                    "modality": "SR",
                    "date": result.facts.content_datetime[:8],
                    "series": result.facts.timepoint or "",
                    "sop_instance_uid": result.facts.sop_instance_uid,
                    "reader": result.facts.reader,
                    "current": result.current,
                }
            )
    if not studies and args.format == "table":
        print(f"{archive.url}: no study matches", file=sys.stderr)
    _emit(rows, {"server": archive.url, "studies": [s.to_dict() for s in studies]}, args.format)
    return 0


def _pull(args: argparse.Namespace) -> int:
    archive = _archive(args)
    pulled = archive.pull(args.study, args.outdir, transfer_syntax=args.transfer_syntax)
    rows = [
        {
            "film": str(p.path),
            "sop_instance_uid": p.film.sop_instance_uid,
            "date": p.film.date,
            "annotations": ", ".join(str(a) for a in p.annotations),
            "readers": ", ".join(p.readers),
        }
        for p in pulled
    ]
    _emit(
        rows,
        {
            "server": archive.url,
            "study": args.study,
            "outdir": args.outdir,
            "films": [
                {
                    "film": str(p.path),
                    "sop_instance_uid": p.film.sop_instance_uid,
                    "date": p.film.date,
                    "annotations": [str(a) for a in p.annotations],
                    "readers": list(p.readers),
                }
                for p in pulled
            ],
        },
        args.format,
    )
    return 0


def _push(args: argparse.Namespace) -> int:
    from vheight.errors import VHeightError

    if args.image and len(args.annotations) > 1:
        args._parser.error("--image goes with one ANNOTATION")
    archive = _archive(args)
    records = []
    failed = 0
    for path in args.annotations:
        try:
            record = archive.push(path, image=args.image, gsps=args.gsps, reference=args.reference)
        except VHeightError as exc:
            message = str(exc)
            print(f"vheight pacs: error: {message}", file=sys.stderr)
            failed += 1
            if message.startswith(archive.url):
                return 1  # the server itself failed: the other files would fail alike
            continue
        records.append(record.to_dict())
    _emit(records, {"server": archive.url, "stored": records}, args.format)
    return 1 if failed else 0
