"""The columns of every table vheight writes, and how a table is written.

One place says what each output column is: its name (a key of the output
records, ``interfaces.md``), its type, its unit and the label people see.  The
``measure`` and ``compare`` records, the batch tables, the command line's
``--format csv|json`` and the app's tables all take their columns from here, so
adding a column is one line in the schema below.

Cells
-----
The same rules everywhere (``--format csv`` of every command, the batch CSV
files): an empty cell for null, NaN and infinities; ``true``/``false`` for
booleans; a float in its shortest round-trip form (``repr``); lists and mappings
as JSON; UTF-8, ``\\n`` line ends, minimal quoting (:mod:`csv`).  JSON documents
carry the same values, nulls for non-finite floats.

Tables are :class:`pandas.DataFrame` objects with the schema's dtypes
(``float64``, nullable ``Int64`` and ``boolean``, ``string``); :func:`frame`
builds one from records and :func:`records` gives the records back.  Writing
goes through :mod:`csv`, :mod:`json` and pandas' Parquet writer only; this
module writes to the file object it is given and opens no file itself.
"""

from __future__ import annotations

import csv
import enum
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Dtype",
    "Unit",
    "Column",
    "Schema",
    "MEASURE_RECORD",
    "COMPARE_RECORD",
    "MEASURE_RECORD_KEYS",
    "COMPARE_RECORD_KEYS",
    "COMPARE_SPEC_KEYS",
    "BATCH_FILM",
    "BATCH_PAIR",
    "BATCH_TRAILING",
    "BATCH_MEASUREMENTS",
    "BATCH_COMPARISONS",
    "BATCH_ERRORS",
    "to_jsonable",
    "csv_cell",
    "write_json",
    "write_records_csv",
    "frame",
    "records",
    "write_parquet",
]


class Dtype(enum.StrEnum):
    """Column types, named as pandas names the dtype a table column gets."""

    FLOAT = "float64"
    INT = "Int64"
    BOOL = "boolean"
    TEXT = "string"


class Unit(enum.StrEnum):
    """Units of a column; ``LENGTH`` is mm or px, as the film's calibration says."""

    LENGTH = "length"
    DEGREES = "deg"
    PERCENT = "%"
    DAYS = "days"


@dataclass(frozen=True, slots=True)
class Column:
    """One output column.

    Parameters
    ----------
    name
        The record key and CSV header.
    dtype
        The type of its values.
    unit
        Its unit, None for text, counts, grades and ratios.
    label
        What people see as its header; ``{unit}`` stands for the unit (mm or px
        for a length).
    spec
        True when ``interfaces.md`` names the column, False for one vheight adds.
    """

    name: str
    dtype: Dtype
    unit: Unit | None = None
    label: str = ""
    spec: bool = True

    def header(self, length_unit: str = "mm") -> str:
        """The label with its unit filled in (``length_unit`` for a length)."""
        if self.unit is None:
            return self.label or self.name
        unit = length_unit if self.unit is Unit.LENGTH else self.unit.value
        return (self.label or self.name).format(unit=unit)


@dataclass(frozen=True, slots=True)
class Schema:
    """Columns in output order."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __add__(self, other: Schema) -> Schema:
        return Schema(self.columns + other.columns)

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


_F, _I, _B, _T = Dtype.FLOAT, Dtype.INT, Dtype.BOOL, Dtype.TEXT
_MM, _DEG, _PCT = Unit.LENGTH, Unit.DEGREES, Unit.PERCENT

#: One ``measure`` record per vertebra (``interfaces.md``).
MEASURE_RECORD = Schema(
    (
        Column("level", _T, None, "Level"),
        Column("complete", _B, None, "Complete"),
        Column("unit", _T, None, "Unit"),
        Column("spacing_label", _T, None, "Spacing"),
        Column("anterior_height", _F, _MM, "Ha ({unit})"),
        Column("middle_height", _F, _MM, "Hm ({unit})"),
        Column("posterior_height", _F, _MM, "Hp ({unit})"),
        Column("wedge_ratio", _F, None, "Ha/Hp"),
        Column("mid_ratio", _F, None, "Hm/Hp"),
        Column("crush_ratio", _F, None, "Crush"),
        Column("wedge_angle_deg", _F, _DEG, "Wedge ({unit})"),
        Column("segmental_kyphosis_deg", _F, _DEG, "Segmental ({unit})"),
        Column("reference_method", _T, None, "Reference"),
        Column("anterior_loss_pct", _F, _PCT, "Loss A ({unit})"),
        Column("middle_loss_pct", _F, _PCT, "Loss M ({unit})"),
        Column("posterior_loss_pct", _F, _PCT, "Loss P ({unit})"),
        Column("max_loss_pct", _F, _PCT, "Max loss ({unit})"),
        Column("grade", _I, None, "Grade"),
        Column("deformity_type", _T, None, "Type"),
        Column("treated", _B, None, "Treated"),
    )
)

#: One ``compare`` record per level and height (``interfaces.md``), then vheight's own.
COMPARE_RECORD = Schema(
    (
        Column("level", _T, None, "Level"),
        Column("height", _T, None, "Height"),
        Column("unit", _T, None, "Unit"),
        Column("pre", _F, _MM, "Pre ({unit})"),
        Column("post", _F, _MM, "Post ({unit})"),
        Column("followup", _F, _MM, "Follow-up ({unit})"),
        Column("delta", _F, _MM, "Change post \u2212 pre ({unit})"),
        Column("restoration_pct_of_initial", _F, _PCT, "Restored (% of initial)"),
        Column("restoration_pct_of_lost", _F, _PCT, "Restored (% of lost)"),
        Column("restoration_pct_of_reference", _F, _PCT, "Restored (% of reference)"),
        Column("loss_since_post_pct", _F, _PCT, "Loss since post ({unit})"),
        Column("reference_method", _T, None, "Reference"),
        Column("reference_pre", _F, _MM, "Reference pre ({unit})"),
        Column("wedge_angle_pre_deg", _F, _DEG, "Wedge pre ({unit})"),
        Column("wedge_angle_post_deg", _F, _DEG, "Wedge post ({unit})"),
        Column("wedge_angle_change_deg", _F, _DEG, "Wedge change ({unit})"),
        Column("segmental_kyphosis_change_deg", _F, _DEG, "Segmental change ({unit})"),
        Column("grade_pre", _I, None, "Grade pre"),
        Column("grade_post", _I, None, "Grade post"),
        Column("treated", _B, None, "Treated", spec=False),
        Column("wedge_angle_followup_deg", _F, _DEG, "Wedge follow-up ({unit})", spec=False),
        Column("segmental_kyphosis_pre_deg", _F, _DEG, "Segmental pre ({unit})", spec=False),
        Column("segmental_kyphosis_post_deg", _F, _DEG, "Segmental post ({unit})", spec=False),
        Column("wedge_ratio_pre", _F, None, "Ha/Hp pre", spec=False),
        Column("wedge_ratio_post", _F, None, "Ha/Hp post", spec=False),
        Column("wedge_ratio_change", _F, None, "Ha/Hp change", spec=False),
        Column("grade_followup", _I, None, "Grade follow-up", spec=False),
    )
)

#: Keys of a ``measure`` record, in order.
MEASURE_RECORD_KEYS: tuple[str, ...] = MEASURE_RECORD.names
#: Keys of a ``compare`` record, in order.
COMPARE_RECORD_KEYS: tuple[str, ...] = COMPARE_RECORD.names
#: The ``compare`` keys ``interfaces.md`` names, in order.
COMPARE_SPEC_KEYS: tuple[str, ...] = tuple(c.name for c in COMPARE_RECORD if c.spec)

#: The film's identifiers leading each row of the batch measurement table.
BATCH_FILM = Schema(
    (
        Column("annotation", _T, None, "Annotation"),
        Column("image", _T, None, "Film"),
        Column("patient_id", _T, None, "Patient ID"),
        Column("study_instance_uid", _T, None, "Study Instance UID"),
        Column("sop_instance_uid", _T, None, "SOP Instance UID"),
        Column("timepoint", _T, None, "Timepoint"),
        Column("annotator", _T, None, "Reader"),
    )
)
#: The pairing's identifiers leading each row of the batch comparison table.
BATCH_PAIR = Schema(
    (
        Column("subject", _T, None, "Subject"),
        Column("paired_by", _T, None, "Paired by"),
        Column("patient_id", _T, None, "Patient ID"),
        Column("annotator", _T, None, "Reader"),
        *(
            Column(f"{timepoint}_{key}", _T, None, f"{label} {name}")
            for key, name in (
                ("annotation", "annotation"),
                ("sop_instance_uid", "SOP Instance UID"),
                ("study_instance_uid", "Study Instance UID"),
            )
            for timepoint, label in (("pre", "Pre"), ("post", "Post"), ("followup", "Follow-up"))
        ),
    )
)
#: The last columns of both batch tables.
BATCH_TRAILING = Schema(
    (Column("warnings", _T, None, "Warnings"), Column("error", _T, None, "Error"))
)
#: The batch measurement table.
BATCH_MEASUREMENTS = BATCH_FILM + MEASURE_RECORD + BATCH_TRAILING
#: The batch comparison table.
BATCH_COMPARISONS = BATCH_PAIR + COMPARE_RECORD + BATCH_TRAILING
#: The batch error table.
BATCH_ERRORS = Schema(
    (
        Column("stage", _T, None, "Stage"),
        Column("subject", _T, None, "Subject"),
        Column("annotation", _T, None, "Annotation"),
        Column("image", _T, None, "Film"),
        Column("error", _T, None, "Error"),
    )
)


# --------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """``value`` for :func:`json.dumps`: enums by value, numpy scalars as Python
    numbers, tuples as lists, non-finite floats and pandas' NA as None."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if type(value).__name__ == "NAType":
        return None
    return value


def csv_cell(value: Any) -> Any:
    """One CSV cell as :func:`csv.writer` is to write it (module docstring)."""
    kind = type(value)
    if kind is str or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else ""
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_json(document: Any, stream: TextIO) -> None:
    """One JSON document (two-space indent, no NaN), then a line end."""
    json.dump(to_jsonable(document), stream, indent=2, allow_nan=False)
    stream.write("\n")


def _writer(stream: TextIO) -> Any:
    return csv.writer(stream, lineterminator="\n")


def write_records_csv(
    records: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    stream: TextIO,
    *,
    header: bool = True,
) -> None:
    """A header (unless ``header`` is False) and one CSV row per record (a missing
    key is an empty cell)."""
    writer = _writer(stream)
    if header:
        writer.writerow(columns)
    writer.writerows([csv_cell(record.get(c)) for c in columns] for record in records)


def frame(rows: Sequence[Mapping[str, Any]], schema: Schema) -> pd.DataFrame:
    """A table of ``rows`` with the schema's columns and dtypes (a missing key is null)."""
    import pandas as pd

    data = {
        column.name: pd.array([row.get(column.name) for row in rows], dtype=column.dtype.value)
        for column in schema
    }
    return pd.DataFrame(data, columns=list(schema.names))


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``table`` as plain dicts: Python numbers, bools and text, None for null."""
    import numpy as np

    columns: list[list[Any]] = []
    for name in table.columns:
        series = table[name]
        kind = str(series.dtype)
        if kind == "float64":
            values = series.to_numpy()
            cells: list[Any] = values.tolist()
            for i in np.flatnonzero(np.isnan(values)).tolist():
                cells[i] = None
        elif kind in ("Int64", "boolean", "string", "str"):
            cells = series.to_numpy(dtype=object, na_value=None).tolist()
        else:
            cells = [to_jsonable(v) for v in series.tolist()]
        columns.append(cells)
    names = list(table.columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def write_parquet(table: pd.DataFrame, handle: Any) -> None:
    """``table`` as Parquet (pyarrow), without the index."""
    table.to_parquet(handle, index=False, engine="pyarrow")
