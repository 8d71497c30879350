"""Tables shown in the app, built from the core's output records (pandas only).

No formula lives here: every number comes from
:meth:`vheight.morphometry.Measurement.records` or
:meth:`vheight.comparison.Comparison.records`; this module only chooses,
orders, labels and colours columns.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from vheight.tables import COMPARE_RECORD, MEASURE_RECORD, Dtype

__all__ = [
    "GRADE_NAMES",
    "GRADE_LABELS",
    "GRADE_BADGES",
    "measurement_frame",
    "style_measurements",
    "comparison_frame",
    "style_comparison",
    "display_comparison",
    "TEXT_COLUMNS",
    "style_plain",
    "fmt_number",
    "MISSING",
    "grades_by_level",
]

GRADE_NAMES = {0: "normal", 1: "mild", 2: "moderate", 3: "severe"}


def grade_badge(record: Mapping[str, Any]) -> str:
    """``"2 moderate"``, ``"incomplete"`` or ``"-"`` for one measure record."""
    if not record.get("complete"):
        return "incomplete"
    grade = record.get("grade")
    if grade is None:
        return "-"
    return f"{int(grade)} {GRADE_NAMES.get(int(grade), '')}".strip()


def grades_by_level(records: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
    """Level -> grade (None when incomplete or not graded), for the editor's colours."""
    return {
        str(r["level"]): (
            None if not r.get("complete") or r.get("grade") is None else int(r["grade"])
        )
        for r in records
    }


#: The measurement table's columns (record keys), in display order.
_MEASUREMENT_KEYS = (
    "level", "grade", "deformity_type", "treated",
    "anterior_height", "middle_height", "posterior_height",
    "wedge_ratio", "mid_ratio", "crush_ratio", "wedge_angle_deg", "segmental_kyphosis_deg",
    "anterior_loss_pct", "middle_loss_pct", "posterior_loss_pct", "max_loss_pct",
    "reference_method",
)  # fmt: skip


def measurement_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The measurement table: one row per annotated level, labelled columns.

    Headers are the schema's labels (:mod:`vheight.tables`); heights carry the
    unit in their header (``Ha (mm)`` or ``Ha (px)``).
    """
    unit = next((str(r.get("unit")) for r in records if r.get("unit")), "px")
    columns = {key: MEASURE_RECORD[key] for key in _MEASUREMENT_KEYS}
    text = {
        "level": lambda r: r["level"],
        "grade": grade_badge,
        "deformity_type": lambda r: r.get("deformity_type") or "",
        "treated": lambda r: bool(r.get("treated")),
        "reference_method": lambda r: r.get("reference_method") or "",
    }
    rows = [
        {
            column.header(unit): text[key](r) if key in text else r.get(key)
            for key, column in columns.items()
        }
        for r in records
    ]
    headers = [column.header(unit) for column in columns.values()]
    frame = pd.DataFrame(rows, columns=headers)
    for column in columns.values():
        if column.dtype is Dtype.FLOAT:
            header = column.header(unit)
            frame[header] = pd.to_numeric(frame[header], errors="coerce").astype("float64")
    return frame


GRADE_LABELS = ("0 normal", "1 mild", "2 moderate", "3 severe", "incomplete")
#: Badge colours (background, text) of each grade label; the editor uses the same hues.
GRADE_BADGES = {
    "0 normal": ("#1f7a47", "#eafff3"),
    "1 mild": ("#9a7b00", "#fffbe8"),
    "2 moderate": ("#b4550b", "#fff3e8"),
    "3 severe": ("#b3232a", "#ffeeee"),
    "incomplete": ("#3d4552", "#d5dbe4"),
}
#: Shown for a missing value (a plain dash would read as a Markdown list).
MISSING = "\u2013"


def _badge(value: Any) -> str:
    colours = GRADE_BADGES.get(str(value))
    if colours is None:
        return ""
    background, text = colours
    return f"background-color: {background}; color: {text}; font-weight: 600; white-space: nowrap"


def style_measurements(frame: pd.DataFrame) -> Any:
    """A pandas Styler for ``st.table``: grade badges, 2 decimals (ratios 3, % 1)."""
    formats: dict[str, Any] = {
        "Treated": lambda v: "yes" if v else "",
        "Grade": lambda v: str(v).replace(" ", "\u00a0"),  # a badge never wraps
    }
    for column in frame.columns:
        if column in ("Ha/Hp", "Hm/Hp", "Crush"):
            formats[column] = "{:.3f}"
        elif frame[column].dtype.kind == "f":
            formats[column] = "{:.1f}" if "(%)" in column else "{:.2f}"
    styler = frame.style.format(formats, na_rep=MISSING)
    return styler.map(_badge, subset=["Grade"])


#: Digits shown per kind of column (the downloads keep every digit).
_DIGITS_PCT = 1
_DIGITS_RATIO = 3
_DIGITS = 2


def fmt_number(value: Any, digits: int = _DIGITS, *, signed: bool = False) -> str:
    """A number rounded for display: never ``-0.00``; None / NaN as an en dash."""
    if value is None:
        return MISSING
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number:  # NaN
        return MISSING
    number = round(number, digits) + 0.0  # float noise and -0.0 become 0.0
    if number == 0:
        number = 0.0
    return f"{number:+.{digits}f}" if signed and number != 0 else f"{number:.{digits}f}"


def _fmt_cell(value: Any, *, digits: int) -> str:
    return fmt_number(value, digits)


def _digits(column: str) -> int:
    if "%" in column:
        return _DIGITS_PCT
    if "ratio" in column.lower() or column in ("Ha/Hp", "Hm/Hp", "Crush"):
        return _DIGITS_RATIO
    if "(deg)" in column:
        return 1
    return _DIGITS


def style_plain(frame: pd.DataFrame) -> Any:
    """A Styler: numbers rounded per column (:func:`fmt_number`), missing as an en dash."""
    formats = {
        column: functools.partial(_fmt_cell, digits=_digits(column))
        for column in frame.columns
        if frame[column].dtype.kind in "fi"
    }
    return frame.style.format(formats, na_rep=MISSING)


#: Comparison columns (record keys), in display order; headers from the schema.
_COMPARISON_KEYS = (
    "level",
    "height",
    "treated",
    "pre",
    "post",
    "followup",
    "delta",
    "restoration_pct_of_lost",
    "restoration_pct_of_initial",
    "restoration_pct_of_reference",
    "loss_since_post_pct",
    "reference_pre",
    "reference_method",
    "wedge_angle_pre_deg",
    "wedge_angle_post_deg",
    "wedge_angle_followup_deg",
    "wedge_angle_change_deg",
    "segmental_kyphosis_change_deg",
    "grade_pre",
    "grade_post",
    "grade_followup",
)
_FOLLOWUP_KEYS = ("followup", "loss_since_post_pct", "wedge_angle_followup_deg", "grade_followup")
_TEXT_KEYS = ("level", "height", "treated", "reference_method")


def comparison_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The comparison table: one row per level and height, labelled columns with units.

    Treated levels come first (each group in anatomical order, as recorded);
    follow-up columns are left out when no film is a follow-up.  Values are
    the records' own (rounding is display only: :func:`style_comparison`);
    grades are text (``"2 moderate"``), missing ones None.
    """
    unit = next((str(r.get("unit")) for r in records if r.get("unit")), "px")
    names = {key: COMPARE_RECORD[key].header(unit) for key in _COMPARISON_KEYS}
    if not records:
        return pd.DataFrame(columns=list(names.values()))
    frame = pd.DataFrame(list(records))
    for key in names:
        if key not in frame.columns:
            frame[key] = None
    if frame["followup"].isna().all():
        names = {k: v for k, v in names.items() if k not in _FOLLOWUP_KEYS}
    frame["treated"] = frame["treated"].fillna(False).astype(bool)
    frame = frame.sort_values("treated", ascending=False, kind="stable").reset_index(drop=True)
    frame = frame[list(names)]
    for key in names:
        if key.startswith("grade_"):
            frame[key] = [
                None if g is None or g != g else f"{int(g)} {GRADE_NAMES.get(int(g), '')}".strip()
                for g in frame[key]
            ]
        elif key not in _TEXT_KEYS:
            frame[key] = pd.to_numeric(frame[key], errors="coerce").astype("float64")
    frame["treated"] = ["yes" if t else "" for t in frame["treated"]]
    return frame.rename(columns=names)


#: Comparison columns that hold text (every other column is a number).
TEXT_COLUMNS = (
    "Level",
    "Height",
    "Treated",
    "Reference",
    "Grade pre",
    "Grade post",
    "Grade follow-up",
)


def display_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`comparison_frame` as text: numbers rounded per column, missing as an en dash.

    An interactive table shows a missing number as "None"; text shows what we choose.
    """
    shown = frame.copy()
    for column in shown.columns:
        if column in TEXT_COLUMNS:
            shown[column] = [MISSING if v is None or v != v else str(v) for v in shown[column]]
        else:
            digits = _digits(column)
            shown[column] = [fmt_number(v, digits) for v in shown[column]]
    return shown


def _treated_row(row: pd.Series) -> list[str]:
    tint = "background-color: rgba(255, 176, 32, 0.13)" if row.get("Treated") == "yes" else ""
    return [tint] * len(row)


def style_comparison(frame: pd.DataFrame) -> Any:
    """A Styler of :func:`comparison_frame`: rounded numbers, en dashes, treated rows tinted."""
    styler = style_plain(frame) if any(frame[c].dtype.kind == "f" for c in frame) else frame.style
    if len(frame):
        styler = styler.apply(_treated_row, axis=1)
    return styler
