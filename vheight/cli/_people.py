"""Numbers for the table format of ``measure`` and ``compare`` (people, not machines).

Floating-point noise such as ``3.55e-15`` mm for an unchanged height reads as
a real change in a table: table cells are rounded to 9 decimals (far below
any measurable length or angle) and negative zero is shown as 0.  JSON and
CSV keep every digit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["for_people"]


def for_people(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        row = {}
        for key, value in record.items():
            if isinstance(value, float) and not isinstance(value, bool):
                value = round(value, 9) + 0.0
            row[key] = value
        out.append(row)
    return out
