"""The Comparison tab: the films side by side, the treated levels, the full table.

- Films: each open film (pre, post, follow-up) rendered with its landmarks,
  heights and grade colours (:func:`vheight.render.render_annotated`), cropped
  to its annotated vertebrae with a margin.  When every film is calibrated,
  all crops cover the same field of view in mm (the largest needed), so that
  heights are visually comparable; otherwise each film is cropped to its own
  vertebrae and the caption says so.
- Treated levels: one row of cards per treated level (heights pre -> post,
  change, restoration of the lost height, wedge angle, grades), then a compact
  table with the follow-up and the loss since post.
- The full comparison table (:func:`vheight.ui.tables.style_comparison`).

Every number comes from :meth:`vheight.comparison.Comparison.records` or
:class:`vheight.comparison.LevelComparison`; this module only arranges them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from vheight.annotation import LEVELS, dumps_annotation
from vheight.render import render_annotated
from vheight.ui.films import DEFAULT_WINDOW_KEY, OpenedFilm, display_pixels
from vheight.ui.tables import (
    GRADE_NAMES,
    MISSING,
    TEXT_COLUMNS,
    comparison_frame,
    display_comparison,
    fmt_number,
    style_comparison,
    style_plain,
)

__all__ = [
    "ComparedFilm",
    "CropBox",
    "MARGIN_FRACTION",
    "MARGIN_FRACTION_ACROSS",
    "MIN_MARGIN_MM",
    "crop_boxes",
    "focus_levels",
    "film_caption",
    "level_summary",
    "summary_frame",
    "show_films",
    "show_warnings",
    "show_treated_levels",
    "show_table",
]

#: Margin around the annotated vertebrae, as a fraction of their extent (wider across,
#: where the level labels and height values are written)...
MARGIN_FRACTION = 0.12
MARGIN_FRACTION_ACROSS = 0.7
#: ...and at least this many mm (or px when uncalibrated) on each side.
MIN_MARGIN_MM = 12.0
#: Height of each rendered film crop (display pixels).
IMAGE_HEIGHT = 900
#: Line, dot and text size of the rendering (the crops are shown smaller than the film).
LINE_SCALE = 1.7
#: Largest height of a film on the page (CSS pixels) when the crop is a tall strip.
MAX_DISPLAY_HEIGHT = 640
#: About the width of one film's column on a wide screen (CSS pixels).
COLUMN_WIDTH = 400
FIELD_KEY = "vh.comparison.field"
HEIGHT_NAMES = {"anterior": "Anterior", "middle": "Middle", "posterior": "Posterior"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CropBox:
    """A rectangle of a film in full-resolution pixels: ``[top, bottom) x [left, right)``."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def rows(self) -> int:
        return self.bottom - self.top

    @property
    def columns(self) -> int:
        return self.right - self.left


@dataclass(frozen=True, slots=True, kw_only=True)
class FilmView:
    """What :func:`crop_boxes` needs of one film (sizes in pixels, spacing in mm/px)."""

    rows: int
    columns: int
    points: tuple[tuple[float, float], ...]
    row_spacing_mm: float | None
    col_spacing_mm: float | None


def _place(centre: float, span: float, size: int) -> tuple[int, int]:
    """An interval of ``span`` pixels around ``centre``, shifted to lie inside ``[0, size)``."""
    span = min(max(1.0, span), float(size))
    start = centre - span / 2.0
    start = min(max(0.0, start), size - span)
    low = int(math.floor(start))
    high = int(math.ceil(start + span))
    return max(0, low), min(size, max(high, low + 1))


def crop_boxes(views: Mapping[str, FilmView]) -> tuple[dict[str, CropBox], bool]:
    """The crop of each film, and whether all share one field of view in mm.

    Each crop is centred on the film's annotated points and covers their
    extent plus a margin (:data:`MARGIN_FRACTION`, :data:`MARGIN_FRACTION_ACROSS`, at least
    :data:`MIN_MARGIN_MM`).  When every film has a spacing, the crops have the
    same size in mm (the largest needed by any film); films without points
    are shown whole.
    """
    extents: dict[str, tuple[float, float, float, float]] = {}
    for name, view in views.items():
        if view.points:
            xs = [p[0] for p in view.points]
            ys = [p[1] for p in view.points]
            extents[name] = (min(xs), max(xs), min(ys), max(ys))
    annotated = [views[name] for name in extents]
    common = bool(annotated) and all(
        v.row_spacing_mm is not None and v.col_spacing_mm is not None for v in annotated
    )
    if common:
        width_mm = max(
            (extents[n][1] - extents[n][0]) * (views[n].col_spacing_mm or 1.0) for n in extents
        )
        height_mm = max(
            (extents[n][3] - extents[n][2]) * (views[n].row_spacing_mm or 1.0) for n in extents
        )
        width_mm += 2 * max(MIN_MARGIN_MM, MARGIN_FRACTION_ACROSS * width_mm)
        height_mm += 2 * max(MIN_MARGIN_MM, MARGIN_FRACTION * height_mm)
    boxes: dict[str, CropBox] = {}
    for name, view in views.items():
        if name not in extents:
            boxes[name] = CropBox(top=0, bottom=view.rows, left=0, right=view.columns)
            continue
        x0, x1, y0, y1 = extents[name]
        if common:
            span_x = width_mm / (view.col_spacing_mm or 1.0)
            span_y = height_mm / (view.row_spacing_mm or 1.0)
        else:
            span_x = (x1 - x0) + 2 * max(MIN_MARGIN_MM, MARGIN_FRACTION_ACROSS * (x1 - x0))
            span_y = (y1 - y0) + 2 * max(MIN_MARGIN_MM, MARGIN_FRACTION * (y1 - y0))
        left, right = _place((x0 + x1) / 2.0, span_x, view.columns)
        top, bottom = _place((y0 + y1) / 2.0, span_y, view.rows)
        boxes[name] = CropBox(top=top, bottom=bottom, left=left, right=right)
    return boxes, common


def focus_levels(annotation: Any, treated: Sequence[str]) -> tuple[str, ...]:
    """The treated levels of ``treated`` annotated here, with their annotated neighbours.

    Empty when none of them is annotated (then the whole annotation is shown).
    """
    annotated = [str(level) for level, pts in annotation.vertebrae.items() if len(pts)]
    chosen: set[str] = set()
    for level in treated:
        if level not in annotated:
            continue
        index = LEVELS.index(level)
        chosen.update(LEVELS[i] for i in (index - 1, index, index + 1) if 0 <= i < len(LEVELS))
    return tuple(level for level in annotated if level in chosen)


def film_view(
    film: Any, annotation: Any, measurement: Any, levels: Sequence[str] | None = None
) -> FilmView:
    """The :class:`FilmView` of an open film: the points of ``levels`` (None: every level)."""
    calibration = measurement.calibration if measurement is not None else film.calibration
    calibrated = bool(calibration.is_calibrated)
    points = tuple(
        (float(x), float(y))
        for level, pts in annotation.vertebrae.items()
        if levels is None or level in levels
        for (x, y) in pts.values()
    )
    rows, columns = np.asarray(film.pixels).shape[:2]
    return FilmView(
        rows=int(rows),
        columns=int(columns),
        points=points,
        row_spacing_mm=float(calibration.row_spacing_mm) if calibrated else None,
        col_spacing_mm=float(calibration.col_spacing_mm) if calibrated else None,
    )


def _shifted(annotation: Any, box: CropBox) -> Any:
    """The annotation with its points in the crop's pixel coordinates (levels inside it)."""
    vertebrae = {
        level: {name: (x - box.left, y - box.top) for name, (x, y) in points.items()}
        for level, points in annotation.vertebrae.items()
        if all(box.left <= x < box.right and box.top <= y < box.bottom for x, y in points.values())
    }
    # Only the levels wholly inside the crop are drawn (a cut neighbour stays plain bone).
    image = dataclasses.replace(annotation.image, rows=None, columns=None)
    return dataclasses.replace(annotation, image=image, vertebrae=vertebrae)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparedFilm:
    """One film of the comparison, with the display the radiologist chose in its tab."""

    label: str
    identity: str
    opened: OpenedFilm
    annotation: Any
    measurement: Any
    window: tuple = DEFAULT_WINDOW_KEY
    """The window key of its tab (see :func:`vheight.ui.films.window_from_key`)."""
    invert: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedFilm:
    """A rendered crop, encoded once: PNG bytes and its size in pixels."""

    png: bytes
    rows: int
    columns: int


@st.cache_data(max_entries=12, show_spinner=False)
def _rendered(
    identity: str,
    annotation_text: str,
    reference: str,
    box: CropBox,
    window: tuple,
    invert: bool,
    _film: Any,
    _annotation: Any,
    _measurement: Any,
) -> RenderedFilm:
    """The crop of a film with its landmarks and heights, under the window of its tab.

    Keyed by film, annotation, reference, crop and window: ``annotation_text``
    is the annotation's JSON (its content), so an edit of the landmarks, the
    treated levels or the calibration renders again.
    """
    pixels = display_pixels(
        _film,
        window,
        invert,
        rows=slice(box.top, box.bottom),
        columns=slice(box.left, box.right),
    )
    scale = min(8.0, IMAGE_HEIGHT / max(1, box.rows))
    shown = _shifted(_annotation, box)
    # Text and lines in proportion to the vertebrae: smaller when many share the height.
    line_scale = LINE_SCALE * min(1.0, 3.5 / max(1, len(shown.vertebrae)))
    image = render_annotated(
        pixels, shown, _measurement, scale=scale, line_scale=line_scale, legend=False
    )
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise RuntimeError("the film could not be encoded as PNG")
    return RenderedFilm(png=encoded.tobytes(), rows=image.shape[0], columns=image.shape[1])


def _study_date(value: str | None) -> str | None:
    """A DICOM date ``YYYYMMDD`` as ``YYYY-MM-DD`` (other text as given, None when empty)."""
    if not value:
        return None
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or None


def film_caption(label: str, info: Any, measurement: Any, name: str | None = None) -> str:
    """``"Pre-augmentation · 2024-01-15 · mm ERMF · pre.dcm"`` (plain text)."""
    parts = [label]
    date = _study_date(getattr(info, "study_date", None))
    if date:
        parts.append(date)
    if measurement is not None:
        parts.append(str(measurement.spacing_label))
    if name:
        parts.append(name)
    return " \u00b7 ".join(parts)


FIELDS = {
    "treated": "Treated levels and neighbours",
    "all": "Every annotated level",
}


def show_films(films: Sequence[ComparedFilm], reference: str, treated: Sequence[str]) -> None:
    """The films side by side, each under the window chosen in its own tab.

    ``films``: one per timepoint, in order; ``treated``: the treated levels of
    the comparison.
    """
    if not films:
        return
    head, choice = st.columns([2, 1.3], vertical_alignment="bottom")
    head.markdown("##### Films")
    st.session_state.setdefault(FIELD_KEY, "treated")
    field = choice.segmented_control(
        "Field of view",
        options=list(FIELDS),
        format_func=FIELDS.get,
        key=FIELD_KEY,
        label_visibility="collapsed",
        disabled=not treated,
        help="Crop every film to the treated levels and the vertebrae next to them, "
        "or to every annotated level.",
    )
    views = {}  # by timepoint label: the same file may be open under two timepoints
    for shown in films:
        levels = focus_levels(shown.annotation, treated) if field != "all" else ()
        views[shown.label] = film_view(
            shown.opened.film, shown.annotation, shown.measurement, levels or None
        )
    boxes, common = crop_boxes(views)
    columns = st.columns(len(films), gap="small")
    for column, shown in zip(columns, films, strict=True):
        label, opened, measurement = shown.label, shown.opened, shown.measurement
        image = _rendered(
            shown.identity,
            dumps_annotation(shown.annotation),
            reference,
            boxes[label],
            tuple(shown.window),
            bool(shown.invert),
            opened.film,
            shown.annotation,
            measurement,
        )
        rows, cols = image.rows, image.columns
        with column:
            st.markdown(f"**{label}**")
            if rows * COLUMN_WIDTH > MAX_DISPLAY_HEIGHT * cols:
                # A tall strip: bounded height, so the films stay on one screen.
                st.image(image.png, width=max(120, int(MAX_DISPLAY_HEIGHT * cols / rows)))
            else:
                st.image(image.png, width="stretch")
            st.caption(_plain(film_caption(label, opened.film.info, measurement, opened.name)))
    first = views[films[0].label]
    if common and first.row_spacing_mm is not None and first.col_spacing_mm is not None:
        box = boxes[films[0].label]
        st.caption(
            f"Same field of view on every film: {box.columns * first.col_spacing_mm:.0f} x "
            f"{box.rows * first.row_spacing_mm:.0f} mm, so heights compare at a glance. "
            "Colours: Genant grade of each vertebra (green normal, yellow mild, orange "
            "moderate, red severe); treated levels outlined in cyan."
        )
    else:
        st.caption(
            "Each film is cropped to its own annotated vertebrae: the films are not all "
            "calibrated, so their sizes on screen are not comparable."
        )


def show_warnings(warnings: Sequence[str]) -> None:
    """The comparison's warnings in one box, one line each (text escaped, never HTML)."""
    if not warnings:
        return
    count = len(warnings)
    lines = [f"**Check before reading the numbers** ({count} warning{'s' if count > 1 else ''})"]
    lines += [f"- {_plain(warning)}" for warning in warnings]
    st.warning("\n".join(lines), icon=":material/warning:")


def _plain(text: str) -> str:
    """Text from a file made inert in a Markdown caption."""
    from vheight.ui.main import md_escape

    return md_escape(text)


# -- treated levels -------------------------------------------------------------------------


def _grade(value: Any) -> str:
    if value is None:
        return MISSING
    return f"{int(value)} {GRADE_NAMES.get(int(value), '')}".strip()


def level_summary(records: Sequence[Mapping[str, Any]], level: str) -> dict[str, Any]:
    """The records of one level arranged for its cards: heights by name, level fields."""
    rows = [r for r in records if r["level"] == level]
    if not rows:
        raise KeyError(level)
    first = rows[0]
    return {
        "level": level,
        "unit": first["unit"],
        "heights": {r["height"]: r for r in rows},
        "wedge_pre": first["wedge_angle_pre_deg"],
        "wedge_post": first["wedge_angle_post_deg"],
        "wedge_followup": first.get("wedge_angle_followup_deg"),
        "wedge_change": first["wedge_angle_change_deg"],
        "grades": (first["grade_pre"], first["grade_post"], first.get("grade_followup")),
        "has_followup": any(r.get("followup") is not None for r in rows),
    }


def summary_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per height of a treated level: pre, post, follow-up, change, restoration, loss."""
    unit = summary["unit"]
    rows = []
    for name, record in summary["heights"].items():
        row = {
            "Height": HEIGHT_NAMES.get(name, name),
            f"Pre ({unit})": record["pre"],
            f"Post ({unit})": record["post"],
        }
        if summary["has_followup"]:
            row[f"Follow-up ({unit})"] = record.get("followup")
        row[f"Change post \u2212 pre ({unit})"] = record["delta"]
        row["Restored (% of lost)"] = record.get("restoration_pct_of_lost")
        row["Restored (% of initial)"] = record.get("restoration_pct_of_initial")
        if summary["has_followup"]:
            row["Loss since post (%)"] = record.get("loss_since_post_pct")
        rows.append(row)
    return pd.DataFrame(rows)


def _signed(value: Any, digits: int, suffix: str) -> str | None:
    text = fmt_number(value, digits, signed=True)
    return None if text == MISSING else f"{text}{suffix}"


def show_treated_levels(records: Sequence[Mapping[str, Any]], treated: Sequence[str]) -> None:
    """Cards and a compact table for each treated level."""
    for level in treated:
        try:
            summary = level_summary(records, level)
        except KeyError:
            continue
        unit = summary["unit"]
        st.markdown(f"##### {level} \u00b7 treated")
        cards = st.columns(5, gap="small")
        for card, name in zip(cards[:3], ("anterior", "middle", "posterior"), strict=True):
            record = summary["heights"].get(name)
            if record is None:
                continue
            lost = record.get("restoration_pct_of_lost")
            delta = _signed(record["delta"], 2, f" {unit}")
            if delta is not None and lost is not None:
                delta += f" \u00b7 {fmt_number(lost, 1)} % of lost"
            still = fmt_number(record["delta"], 2) == fmt_number(0.0, 2)
            card.metric(
                f"{HEIGHT_NAMES[name]} \u00b7 pre {fmt_number(record['pre'], 2)} {unit}",
                f"{fmt_number(record['post'], 2)} {unit}",
                delta=delta,
                delta_color="off" if still else "normal",
                delta_arrow="off" if still else "auto",
                border=True,
                help=f"{HEIGHT_NAMES[name]} height after augmentation; change post \u2212 pre "
                "and the share of the height lost before treatment that was restored "
                f"(reference: {record['reference_method']}).",
            )
        cards[3].metric(
            f"Wedge angle \u00b7 pre {fmt_number(summary['wedge_pre'], 1)}\u00b0",
            f"{fmt_number(summary['wedge_post'], 1)}\u00b0",
            delta=_signed(summary["wedge_change"], 1, "\u00b0"),
            delta_color="inverse",
            border=True,
            help="Wedge angle after augmentation and its change post \u2212 pre "
            "(negative: the wedge was corrected).",
        )
        grades = summary["grades"]
        shown = grades if summary["has_followup"] else grades[:2]
        timepoints = "pre \u2192 post" + (" \u2192 follow-up" if summary["has_followup"] else "")
        cards[4].metric(
            "Genant grade",
            " \u2192 ".join(MISSING if g is None else str(int(g)) for g in shown),
            delta=" \u2192 ".join(_grade(g).split(" ")[-1] for g in shown),
            delta_color="off",
            delta_arrow="off",
            border=True,
            help=f"{timepoints}: 0 normal, 1 mild, 2 moderate, 3 severe, from the largest "
            "height loss (a quantitative suggestion for the reader to confirm).",
        )
        st.table(style_plain(summary_frame(summary)), hide_index=True)


def show_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The full comparison table (treated levels first and tinted); returns the text shown.

    Numbers are shown as rounded text (:func:`vheight.ui.tables.display_comparison`),
    right-aligned, with an en dash for a missing value.
    """
    frame = display_comparison(comparison_frame(records))
    numeric = [c for c in frame.columns if c not in TEXT_COLUMNS]
    st.dataframe(
        style_comparison(frame),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(frame), 600),
        column_config={
            column: st.column_config.TextColumn(column, alignment="right") for column in numeric
        },
        key="vh.comparison.table",
    )
    return frame
