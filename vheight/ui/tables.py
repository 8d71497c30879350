"""Tables shown in the app, built from the core's output records (pandas only).

No formula lives here: every number comes from
:meth:`vheight.morphometry.Measurement.records` or
:meth:`vheight.comparison.Comparison.records`; this module only chooses,
orders, labels and colours columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "GRADE_NAMES",
    "GRADE_LABELS",
    "GRADE_BADGES",
    "measurement_frame",
    "style_measurements",
    "comparison_frame",
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


def measurement_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The measurement table: one row per annotated level, labelled columns.

    Heights carry the unit in their header (``Ha (mm)`` or ``Ha (px)``).
    """
    unit = next((str(r.get("unit")) for r in records if r.get("unit")), "px")
    rows = []
    for r in records:
        rows.append(
            {
                "Level": r["level"],
                "Grade": grade_badge(r),
                "Type": r.get("deformity_type") or "",
                "Treated": bool(r.get("treated")),
                f"Ha ({unit})": r.get("anterior_height"),
                f"Hm ({unit})": r.get("middle_height"),
                f"Hp ({unit})": r.get("posterior_height"),
                "Ha/Hp": r.get("wedge_ratio"),
                "Hm/Hp": r.get("mid_ratio"),
                "Crush": r.get("crush_ratio"),
                "Wedge (deg)": r.get("wedge_angle_deg"),
                "Segmental (deg)": r.get("segmental_kyphosis_deg"),
                "Loss A (%)": r.get("anterior_loss_pct"),
                "Loss M (%)": r.get("middle_loss_pct"),
                "Loss P (%)": r.get("posterior_loss_pct"),
                "Max loss (%)": r.get("max_loss_pct"),
                "Reference": r.get("reference_method") or "",
            }
        )
    columns = [
        "Level", "Grade", "Type", "Treated",
        f"Ha ({unit})", f"Hm ({unit})", f"Hp ({unit})",
        "Ha/Hp", "Hm/Hp", "Crush", "Wedge (deg)", "Segmental (deg)",
        "Loss A (%)", "Loss M (%)", "Loss P (%)", "Max loss (%)", "Reference",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    for column in columns[4:-1]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
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


def comparison_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The comparison table: one row per level and height, labelled columns."""
    unit = next((str(r.get("unit")) for r in records if r.get("unit")), "px")
    names = {
        "level": "Level",
        "height": "Height",
        "treated": "Treated",
        "pre": f"Pre ({unit})",
        "post": f"Post ({unit})",
        "followup": f"Follow-up ({unit})",
        "delta": f"Delta ({unit})",
        "restoration_pct_of_initial": "Restored, % of initial",
        "restoration_pct_of_lost": "Restored, % of lost",
        "restoration_pct_of_reference": "Restored, % of reference",
        "loss_since_post_pct": "Loss since post (%)",
        "reference_pre": f"Reference pre ({unit})",
        "reference_method": "Reference",
        "wedge_angle_pre_deg": "Wedge pre (deg)",
        "wedge_angle_post_deg": "Wedge post (deg)",
        "wedge_angle_change_deg": "Wedge change (deg)",
        "segmental_kyphosis_change_deg": "Segmental change (deg)",
        "grade_pre": "Grade pre",
        "grade_post": "Grade post",
    }
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return pd.DataFrame(columns=list(names.values()))
    present = [key for key in names if key in frame.columns]
    frame = frame[present].rename(columns=names)
    if "Follow-up (" + unit + ")" in frame.columns and frame[f"Follow-up ({unit})"].isna().all():
        frame = frame.drop(columns=[f"Follow-up ({unit})", "Loss since post (%)"], errors="ignore")
    return frame
