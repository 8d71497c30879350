"""Shared output of the subcommands: ``--format table|json|csv``.

``json`` prints one JSON document on stdout and nothing else there; ``csv``
prints a header and one row per record; ``table`` aligns columns for people.
Floats are printed in full in JSON and CSV (no rounding: those are for
machines), and to 4 significant digits in tables.  The cells of JSON and CSV
follow :mod:`vheight.tables`, as every table vheight writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from vheight.tables import to_jsonable, write_json, write_records_csv

__all__ = ["add_format_argument", "emit_json", "emit_csv", "emit_table", "to_jsonable"]

FORMATS = ("table", "json", "csv")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="output format: an aligned table for people (default), one JSON document, or CSV",
    )


def emit_json(document: Any, *, stream: TextIO | None = None) -> None:
    write_json(document, stream or sys.stdout)


def _columns(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key, None)
    return list(seen)


def emit_csv(
    records: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> None:
    records = list(records)
    write_records_csv(records, _columns(records, columns), stream or sys.stdout)


def _table_cell(value: Any) -> str:
    value = to_jsonable(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def emit_table(
    records: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Aligned plain-text table; numbers right-aligned."""
    records = list(records)
    stream = stream or sys.stdout
    cols = _columns(records, columns)
    headers = headers or {}
    head = [headers.get(c, c) for c in cols]
    rows = [[_table_cell(r.get(c)) for c in cols] for r in records]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(head)]
    numeric = [
        all(isinstance(to_jsonable(r.get(c)), (int, float)) or r.get(c) is None for r in records)
        for c in cols
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if num else cell.ljust(width)
            for cell, width, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    stream.write(line(head) + "\n")
    stream.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        stream.write(line(row) + "\n")
