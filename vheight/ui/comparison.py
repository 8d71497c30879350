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
from vheight.comparison import Comparison, FilmFacts, compare
from vheight.errors import ComparisonError, VHeightError
from vheight.render import render_annotated
from vheight.ui import exports
from vheight.ui.films import DEFAULT_WINDOW_KEY, OpenedFilm, display_pixels
from vheight.ui.tables import (
    GRADE_NAMES,
    MISSING,
    TEXT_COLUMNS,
    comparison_frame,
    display_comparison,
    fmt_number,
    lost_is_meaningful,
    style_comparison,
    style_plain,
)
from vheight.ui.text import md_escape

__all__ = [
    "show_comparison",
    "film_facts",
    "percent_of_lost_text",
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
    timepoint: str = ""
    """``pre``, ``post`` or ``followup``: its role in the comparison."""
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
    marks: tuple[tuple[str, str], ...] = (),
) -> RenderedFilm:
    """The crop of a film with its landmarks and heights, under the window of its tab.

    Keyed by film, annotation, reference, crop, window and marks: ``annotation_text``
    is the annotation's JSON (its content), so an edit of the landmarks, the
    treated levels or the calibration renders again.  ``marks``: ``(level, label)``
    of the flagged levels, framed in magenta with their label.
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
    if marks:
        image = _mark_levels(image, shown, box, marks)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise RuntimeError("the film could not be encoded as PNG")
    return RenderedFilm(png=encoded.tobytes(), rows=image.shape[0], columns=image.shape[1])


#: Colour of a flagged level's frame on the films (RGB): magenta, unlike any grade colour.
FLAG_COLOR = (230, 40, 200)


def _mark_levels(
    image: np.ndarray, shown: Any, box: CropBox, marks: Sequence[tuple[str, str]]
) -> np.ndarray:
    """``image`` (the rendered crop) with a frame and a label around each marked level.

    ``shown`` is the annotation in crop coordinates; the rendering scales the
    crop by ``image`` size / crop size.
    """
    out = np.ascontiguousarray(image).copy()
    fy, fx = out.shape[0] / max(1, box.rows), out.shape[1] / max(1, box.columns)
    thickness = max(2, int(round(out.shape[0] / 300)))
    for level, label in marks:
        points = shown.vertebrae.get(level)
        if not points:
            continue
        xs = [x * fx for x, _ in points.values()]
        ys = [y * fy for _, y in points.values()]
        pad = 0.18 * (max(ys) - min(ys))
        x0, x1 = int(min(xs) - pad), int(max(xs) + pad)
        y0, y1 = int(min(ys) - pad), int(max(ys) + pad)
        cv2.rectangle(out, (x0, y0), (x1, y1), FLAG_COLOR, thickness, cv2.LINE_AA)
        size = max(0.5, out.shape[0] / 1400)
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, size, thickness)
        tx = min(max(0, x1 - w), out.shape[1] - w)
        ty = max(h + base, y0 - base - 2)
        cv2.rectangle(out, (tx, ty - h - base), (tx + w, ty + base), FLAG_COLOR, -1)
        cv2.putText(
            out,
            label,
            (tx, ty),
            cv2.FONT_HERSHEY_SIMPLEX,
            size,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return out


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


def show_films(
    films: Sequence[ComparedFilm],
    reference: str,
    treated: Sequence[str],
    marks: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> None:
    """The films side by side, each under the window chosen in its own tab.

    ``films``: one per timepoint, in order; ``treated``: the treated levels of
    the comparison (the field of view also takes in every marked level);
    ``marks``: by timepoint, the ``(level, label)`` to frame on that film.
    """
    marks = marks or {}
    focus = list(treated) + [lv for m in marks.values() for lv, _ in m if lv not in treated]
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
        disabled=not focus,
        help="Crop every film to the treated levels and the vertebrae next to them, "
        "or to every annotated level.",
    )
    views = {}  # by timepoint label: the same file may be open under two timepoints
    for shown in films:
        levels = focus_levels(shown.annotation, focus) if field != "all" else ()
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
            tuple(marks.get(shown.timepoint, ())),
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
        "followup_unit": first.get("followup_unit") or first["unit"],
        "recollapse": first.get("recollapse"),
    }


def percent_of_lost_text(record: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """How a card shows the share of the lost height restored: ``(text, kind, why)``.

    ``kind`` is ``"restored"`` (a percentage of at most 100 %), ``"overcorrected"``
    (above 100 %: never styled as success) or ``"not-meaningful"`` (less than
    1 mm lost, or 5 % of the reference when uncalibrated, or none at all):
    then the text is a dash and ``why`` says why.
    """
    unit = str(record.get("unit") or "px")
    lost = record.get("lost_pre")
    pct = record.get("restoration_pct_of_lost")
    if lost is None:
        return "% of lost: \u2013", "not-meaningful", "no reference height"
    if not lost_is_meaningful(record):
        if lost <= 0:
            why = "no height lost before treatment"
        else:
            why = f"only {fmt_number(lost, 2)} {unit} lost before treatment"
        return "% of lost: \u2013", "not-meaningful", why
    if pct is not None and pct > 100:
        return f"overcorrected, {fmt_number(pct, 1)} % of lost", "overcorrected", None
    return f"{fmt_number(pct, 1)} % of lost", "restored", None


def _reference_levels(measurement: Any, level: str) -> str:
    """``"T12, L2"``: the levels the vertebra's loss was measured against on that film."""
    v = measurement.vertebrae.get(level) if measurement is not None else None
    levels = getattr(v, "reference_levels", ()) or ()
    return ", ".join(levels) or "none"


def summary_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per height of a treated level: pre, post, follow-up, change, restoration, loss.

    The percentages of the lost height are left out (None) where too little
    was lost for them to mean anything (:func:`percent_of_lost_text`).
    """
    unit = summary["unit"]
    followup_unit = summary.get("followup_unit") or unit
    rows = []
    for name, record in summary["heights"].items():
        row = {
            "Height": HEIGHT_NAMES.get(name, name),
            f"Pre ({unit})": record["pre"],
            f"Post ({unit})": record["post"],
        }
        if summary["has_followup"]:
            row[f"Follow-up ({followup_unit})"] = record.get("followup")
        row[f"Change post \u2212 pre ({unit})"] = record["delta"]
        row[f"Lost before ({unit})"] = record.get("lost_pre")
        meaningful = lost_is_meaningful(record)
        row["Restored (% of lost)"] = record.get("restoration_pct_of_lost") if meaningful else None
        row["Restored (% of lost, relative)"] = (
            record.get("restoration_pct_of_lost_relative") if meaningful else None
        )
        row["Restored (% of initial)"] = record.get("restoration_pct_of_initial")
        if summary["has_followup"]:
            row["Loss since post (%)"] = record.get("loss_since_post_pct")
        rows.append(row)
    return pd.DataFrame(rows)


def _signed(value: Any, digits: int, suffix: str) -> str | None:
    text = fmt_number(value, digits, signed=True)
    return None if text == MISSING else f"{text}{suffix}"


def _height_card(card: Any, name: str, record: Mapping[str, Any], unit: str) -> str | None:
    """One height's card; returns the note to print under the cards (None: nothing to say)."""
    text, kind, why = percent_of_lost_text(record)
    delta = _signed(record["delta"], 2, f" {unit}")
    if delta is not None:
        delta += f" \u00b7 {text}"
    still = fmt_number(record["delta"], 2) == fmt_number(0.0, 2)
    colour = "normal" if kind == "restored" and not still else "off"
    card.metric(
        f"{HEIGHT_NAMES[name]} \u00b7 pre {fmt_number(record['pre'], 2)} {unit}",
        f"{fmt_number(record['post'], 2)} {unit}",
        delta=delta,
        delta_color=colour,
        delta_arrow="off" if still else "auto",
        border=True,
        help=f"{HEIGHT_NAMES[name]} height after augmentation; change post \u2212 pre and the "
        "share of the height lost before treatment that was restored (reference: "
        f"{record['reference_method']}). The share is shown only when at least 1 mm "
        "(5 % of the reference when uncalibrated) was lost; above 100 % the height "
        "was overcorrected.",
    )
    if kind == "overcorrected":
        return (
            f"{HEIGHT_NAMES[name]}: {text} \u2014 the height now exceeds its reference; "
            "overcorrection, not a better result."
        )
    if why and not (record.get("lost_pre") is not None and record["lost_pre"] < 0):
        return (
            f"{HEIGHT_NAMES[name]}: no % of lost height \u2014 {why}, too little to mean anything."
        )
    return None


def show_treated_levels(
    records: Sequence[Mapping[str, Any]],
    treated: Sequence[str],
    comparison: Comparison | None = None,
) -> None:
    """Cards and a compact table for each treated level.

    With ``comparison``, a negative loss before treatment is explained by
    naming the levels it was measured against.
    """
    for level in treated:
        try:
            summary = level_summary(records, level)
        except KeyError:
            continue
        if comparison is not None:
            summary["followup_unit"] = comparison.followup_unit
        unit = summary["unit"]
        flag = summary.get("recollapse")
        st.markdown(f"##### {level} \u00b7 treated" + (" \u00b7 recollapse?" if flag else ""))
        cards = st.columns(5, gap="small")
        notes = []
        for card, name in zip(cards[:3], ("anterior", "middle", "posterior"), strict=True):
            record = summary["heights"].get(name)
            if record is not None:
                note = _height_card(card, name, record, unit)
                if note:
                    notes.append(note)
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
        if comparison is not None:
            notes.extend(_negative_loss_notes(summary, comparison, level))
        for note in notes:
            st.caption(_plain(note))
        st.table(style_plain(summary_frame(summary)), hide_index=True)


def _negative_loss_notes(
    summary: Mapping[str, Any], comparison: Comparison, level: str
) -> list[str]:
    """Why a loss before treatment is negative: the reference levels are taller."""
    notes = []
    for name, record in summary["heights"].items():
        lost = record.get("lost_pre")
        if lost is not None and lost < 0:
            notes.append(
                f"{HEIGHT_NAMES[name]}: {level} was {fmt_number(-lost, 2)} {summary['unit']} "
                f"taller than its reference before treatment (mean of "
                f"{_reference_levels(comparison.pre, level)}, reference "
                f"{record['reference_method']}): no height was lost, so there is nothing "
                "to restore."
            )
    return notes


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


# -- the tab ---------------------------------------------------------------------------------

ROLE_LABELS = {"pre": "pre", "post": "post", "followup": "follow-up"}
#: Prefix of the session keys that remember a confirmed different-patient comparison.
ALLOW_KEY = "vh.comparison.allow_patients"


def film_facts(film: ComparedFilm) -> FilmFacts:
    """The header facts of an open film (patient, date, view) for the comparison."""
    return FilmFacts.from_header(film.opened.film.info, name=film.opened.name)


def _allow_key(films: Sequence[ComparedFilm]) -> str:
    """One confirmation per set of films: opening another film asks again."""
    return ALLOW_KEY + "." + ".".join(f"{f.timepoint}:{f.identity}" for f in films)


def _confirm_different_patients(message: str, key: str) -> None:
    """The different-patient error in place of the comparison, with a confirm button."""
    message = message.split(" (allow_different_patients")[0]  # the API's how-to: not here
    st.error(
        f"**These films belong to different patients: not compared.**\n\n{_plain(message)}.",
        icon=":material/person_alert:",
    )
    st.caption(
        "Check that the right films are open (the patient ID comes from each film's header). "
        "If they do belong together (e.g. the patient was registered twice), confirm to "
        "compare them anyway; the warning stays with the comparison."
    )
    st.button(
        "They are the same patient: compare anyway",
        key=f"{key}.button",
        on_click=st.session_state.__setitem__,
        args=(key, True),
        icon=":material/check:",
    )


def flag_marks(comparison: Comparison) -> dict[str, list[tuple[str, str]]]:
    """By timepoint, the levels to frame on that film: new fractures on the latest film,
    recollapse on the follow-up."""
    latest = "followup" if comparison.followup is not None else "post"
    marks: dict[str, list[tuple[str, str]]] = {}
    for level in comparison.incident_levels:
        marks.setdefault(latest, []).append((level, f"{level} new fracture?"))
    for level in comparison.recollapsed_levels:
        marks.setdefault("followup", []).append((level, f"{level} recollapse?"))
    return marks


def show_flags(comparison: Comparison) -> None:
    """Suspected new fractures and recollapses, first on the tab (one box each)."""
    latest = "follow-up" if comparison.followup is not None else "post"
    for level in comparison.incident_levels:
        reason = comparison.levels[level].incident_reason or ""
        st.error(
            f"**New fracture suspected at {level}** (untreated; pre \u2192 {latest} film): "
            f"{_plain(reason)}. Framed in magenta on the {latest} film below. A quantitative "
            "flag (Black et al.: a height down by at least 20 % and 4 mm, or grade 0 \u2192 "
            "1 or more) for the radiologist to confirm.",
            icon=":material/emergency_home:",
        )
    for level in comparison.recollapsed_levels:
        lost = [
            f"{HEIGHT_NAMES[h]} {fmt_number(hc.loss_since_post_pct, 1)} %"
            for h, hc in comparison.levels[level].heights.items()
            if hc.loss_since_post_pct is not None
        ]
        st.error(
            f"**Recollapse suspected at {level}** (treated): height lost since the post film "
            f"{_plain(', '.join(lost))} (flag at 15 % of any height). Framed on the follow-up "
            "film below; for the radiologist to confirm.",
            icon=":material/emergency_home:",
        )


def _is_flag_warning(warning: str) -> bool:
    return warning.startswith(("new fracture suspected at ", "recollapse suspected at "))


def show_comparison(
    measurements: Mapping[str, Any], films: Sequence[ComparedFilm], *, reference: str
) -> Comparison | None:
    """The Comparison tab: the patient check, the flags, warnings, the treated levels,
    the films, the table and its downloads.  Returns the comparison shown (None
    when there is none: a film missing, or different patients not confirmed)."""
    pre, post = measurements.get("pre"), measurements.get("post")
    if pre is None or post is None:
        st.info("Open a pre- and a post-augmentation film to compare them.")
        return None
    facts = {f.timepoint: film_facts(f) for f in films if f.timepoint}
    key = _allow_key(films)
    try:
        comparison = compare(
            pre,
            post,
            measurements.get("followup"),
            facts=facts,
            allow_different_patients=bool(st.session_state.get(key, False)),
        )
    except ComparisonError as exc:
        _confirm_different_patients(str(exc), key)
        return None
    except VHeightError as exc:
        st.error(_plain(f"The films could not be compared: {exc}"))
        return None
    show_flags(comparison)
    # The flags are shown above, each in its own box.
    show_warnings([w for w in comparison.warnings if not _is_flag_warning(w)])
    records = comparison.records()
    if not records:
        st.caption("No level is complete on both films yet.")
        return comparison
    treated = [lc.level for lc in comparison.levels.values() if lc.treated]
    if treated:
        show_treated_levels(records, treated, comparison)
    else:
        st.info(
            "No level is marked treated: choose the augmented level under *Treated levels* "
            "in a film's tab to see its restoration here."
        )
    show_films(films, reference, treated, flag_marks(comparison))
    st.markdown("##### Every level")
    units = comparison.unit
    if comparison.followup_unit != comparison.unit:
        units += f" (follow-up in {comparison.followup_unit})"
    days = [
        f"{label} {n} days"
        for label, n in (
            ("pre \u2192 post", comparison.days_pre_to_post),
            ("post \u2192 follow-up", comparison.days_post_to_followup),
        )
        if n is not None
    ]
    st.caption(
        f"Lengths in {_plain(units)}, reference for height loss {_plain(reference)}"
        + (f"; {_plain(', '.join(days))}" if days else "")
        + "; treated levels first, tinted. Restoration after McKiernan et al. (Spine 2003): "
        'the percentages differ in what they divide by, so all are given; "% of lost" only '
        "where at least 1 mm (5 % of the reference uncalibrated) was lost. The relative "
        "figures use each film's own loss, so they do not depend on magnification; a "
        "negative loss means the vertebra is taller than its reference levels (named per "
        "row). "
        "Rounded for reading; the downloads keep every digit."
    )
    show_table(
        [
            dict(r, reference_levels_pre=_reference_levels(comparison.pre, r["level"]))
            for r in records
        ]
    )
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button(
        "CSV",
        data=exports.comparison_csv(comparison),
        file_name="comparison.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key="vh.comparison.csv",
    )
    c2.download_button(
        "JSON",
        data=exports.comparison_json(comparison),
        file_name="comparison.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key="vh.comparison.json",
    )
    return comparison
