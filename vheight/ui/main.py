"""The app's page: sidebar, one tab per film, and the comparison.

Layout
------
- Sidebar: open a film (upload into a timepoint, or the sample series), the
  reference method of height loss, the reader, where annotations
  are stored.
- One tab per timepoint: display controls (window preset, manual window,
  invert), the landmark editor, the level / snapping / treated / calibration
  / file panels beside it, and the live measurement table with its downloads
  (CSV, JSON, annotated PNG, DICOM SR, presentation state, PDF report).
- Comparison: pre / post / follow-up table, its warnings and downloads.

Snapping and proposing landmarks (:mod:`vheight.refine`) and the DICOM / PDF
exports (:mod:`vheight.sr`, :mod:`vheight.gsps`, :mod:`vheight.report`) are
the core's; the larger files are built only when their button is pressed.

Every number comes from the core (:func:`vheight.morphometry.measure`,
:func:`vheight.comparison.compare`); text that comes from a file (header
strings, file names, annotation notes) is shown with ``st.text`` /
``st.dataframe`` or escaped, never as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from vheight.annotation import LEVELS, dumps_annotation, sidecar_path
from vheight.errors import VHeightError
from vheight.morphometry import measure
from vheight.refine import DEFAULT_RADIUS_MM
from vheight.ui import agreement as agreement_view
from vheight.ui import comparison as comparison_view
from vheight.ui import exports, readers, session
from vheight.ui.editor import (
    DisplayImage,
    ValueImage,
    ValueMapping,
    landmark_editor,
    make_display_image,
    make_value_image,
    value_mapping,
    window_spec,
)
from vheight.ui.films import DEFAULT_WINDOW_KEY, MAX_UPLOAD_MB, display_pixels, window_from_key
from vheight.ui.pacs import sidebar_section as pacs_section
from vheight.ui.session import Slot, widget_key
from vheight.ui.tables import (
    grades_by_level,
    measurement_frame,
    style_measurements,
)
from vheight.ui.text import md_escape, md_path

#: Columns of the measurement table beside the film (the full table is below it).
_BRIEF_COLUMNS = ("Level", "Grade", "Ha", "Hm", "Hp", "Ha/Hp", "Max loss (%)")

__all__ = ["main"]

#: Smallest height of the viewer, CSS px (it grows to fill the window).
EDITOR_MIN_HEIGHT = 420
#: Longest side of a full-resolution region sent when zoomed in, px.
MAX_CROP_SIDE = 2048
COMPARISON = "Comparison"
AGREEMENT = "Agreement"
# Layout only (a constant of this module, never data): a tighter page, compact
# tables beside the film.
_PAGE_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 1.2rem; padding-bottom: 1.5rem;
  padding-left: 1.5rem; padding-right: 1.5rem; }
[data-testid="stSidebarHeader"] { height: 1.5rem; }
[data-testid="stSidebar"][data-collapsed="false"] { width: 244px !important; }
[class*="st-key-vh-brief-"] [data-testid="stTable"] td,
[class*="st-key-vh-brief-"] [data-testid="stTable"] th {
  padding: 2px 6px; font-size: 0.8rem; }
[data-testid="stTabs"] [data-baseweb="tab-list"] { gap: 1rem; }
</style>"""


# -- cached renderings ----------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner=False)
def _film_values(identity: str, _film: Any) -> tuple[ValueImage, ValueMapping]:
    """A film's display codes (keyed by film identity; any window is drawn from them)."""
    mapping = value_mapping(_film)
    return make_value_image(_film, mapping), mapping


@st.cache_resource(max_entries=8, show_spinner=False)
def _preview(identity: str, _film: Any) -> DisplayImage:
    """A JPEG of a film under its first preset: drawn while the codes load."""
    return make_display_image(display_pixels(_film, DEFAULT_WINDOW_KEY, False))


@st.cache_resource(max_entries=32, show_spinner=False)
def _resolved_window(identity: str, window: tuple, _film: Any) -> Any:
    """The preset a window key means for a film (``auto`` computes percentiles once)."""
    return _film.resolve_window(window_from_key(window))


@st.cache_resource(max_entries=16, show_spinner=False)
def _film_crop(identity: str, region: tuple[int, int, int, int], _film: Any) -> ValueImage:
    """A region of a film at full resolution (when it fits :data:`MAX_CROP_SIDE`)."""
    _, mapping = _film_values(identity, _film)
    return make_value_image(_film, mapping, max_side=MAX_CROP_SIDE, region=region)


@st.cache_data(max_entries=24, show_spinner=False)
def _value_range(identity: str, _film: Any) -> tuple[float, float]:
    """Smallest and largest modality value of a film (for the manual window sliders)."""
    values = _film.modality_values
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return (low, high if high > low else low + 1.0)


# -- page ---------------------------------------------------------------------------------


def main(*, samples: Path | None = None) -> None:
    """Draw the app.  ``samples`` is the folder of the sample series, opened at start."""
    st.set_page_config(
        page_title="vheight: vertebral height morphometry",
        layout="wide",
        initial_sidebar_state="expanded",
    )
    st.html(_PAGE_CSS)
    readers.init()
    session.init_session(samples=samples)
    if session.awaiting_first_frame():
        # The first film's viewer was mounted by an earlier run: its film has
        # reached the browser, and this run (a tab opened, say) may need the others.
        session.open_deferred_samples()
    try:
        _page()
    finally:
        # No viewer waits for its film (the reader's prompt, say): decode them now.
        opened_later = session.open_deferred_samples(unless_awaited=True)
    if opened_later:
        st.rerun()  # the sidebar, the report and the comparison see every film


def _page() -> None:
    session.begin_page_run()
    try:
        _page_body()
    finally:
        session.end_page_run()


def _page_body() -> None:
    if readers.gate():
        _film_pages()
    # After the film: the browser draws what arrives first, and the sidebar's
    # widgets (their scripts loaded on first use) would hold the film back by
    # a few tenths of a second at start.  Its values are read from the session
    # state, which its callbacks set before the run.
    _sidebar()


def _film_pages() -> None:
    readers.header()
    for tp in session.TIMEPOINTS:
        session.sync_editor(tp)
    labels = [session.TIMEPOINT_LABELS[tp] for tp in session.TIMEPOINTS]
    # Lazy tabs: a film's tab runs once it has been open (then it stays drawn,
    # hidden when another is open, so switching back needs no server); the
    # comparison and agreement run only while open.  An edit reruns one film's
    # fragment.
    tabs = st.tabs([*labels, COMPARISON, AGREEMENT], key=session.TAB, on_change="rerun")
    for tab, tp in zip(tabs[:3], session.TIMEPOINTS, strict=True):
        if session.tab_kept(tp, bool(tab.open)):
            with tab:
                _film_fragment(tp)
    if tabs[3].open:
        with tabs[3]:
            measurements = {}
            for tp in session.TIMEPOINTS:
                slot = session.get_slot(tp)
                if slot is not None:
                    measurements[tp] = _measure(slot)
            _comparison_tab(measurements)
    if tabs[4].open:
        with tabs[4]:
            agreement_view.page()


@st.fragment
def _film_fragment(timepoint: str) -> None:
    """One film's tab; an edit reruns only this fragment (the sidebar does not change)."""
    session.begin_messages(timepoint)
    session.sync_editor(timepoint)
    slot = session.get_slot(timepoint)
    if slot is not None:
        session.restore_widgets(slot)
        _sync_window(slot)
    _film_tab(timepoint, None if slot is None else _measure(slot))
    if slot is not None:
        session.remember_widgets(slot)
    session.messages_shown(timepoint)  # drawn to the end: its messages were seen


def _measure(slot: Slot) -> Any:
    reference = st.session_state.get(session.REFERENCE, "adjacent")
    try:
        return measure(
            slot.annotation,
            slot.opened.film.calibration,
            reference=reference,
            source=slot.opened.name,
        )
    except VHeightError as exc:
        session.flash(slot.timepoint, "error", f"Measurement failed: {exc}")
        return None


# -- sidebar ------------------------------------------------------------------------------


def _sidebar() -> None:
    state = st.session_state
    with st.sidebar:
        st.markdown("## vheight")
        st.caption("Vertebral body height before and after augmentation")

        st.markdown("#### Open a film")
        st.selectbox(
            "Open as",
            options=list(session.TIMEPOINT_LABELS),
            format_func=session.TIMEPOINT_LABELS.get,
            key=session.UPLOAD_TARGET,
        )
        st.file_uploader(
            f"DICOM, PNG or JPEG (up to {MAX_UPLOAD_MB} MB)",
            key=f"vh.upload.film.{state[session.UPLOAD_NONCE]}",
            on_change=session.on_film_upload,
            help="DICOM files need no extension. The film's landmarks are restored from the "
            "annotation store when it was annotated before.",
        )
        error = state.get(session.UPLOAD_ERROR)
        if error:
            st.error(md_escape(error))
        _replace_prompt()
        if session.samples_folder() is not None:
            st.button(
                "Open the sample series",
                on_click=session.request_samples,
                width="stretch",
                help="Synthetic pre, post and follow-up films with their landmarks",
            )
        pacs_section()

        st.markdown("#### Measurement")
        st.selectbox(
            "Reference for height loss",
            options=list(session.REFERENCES),
            key=session.REFERENCE,
            format_func={
                "adjacent": "adjacent: mean of the neighbouring levels",
                "posterior": "posterior: the vertebra's own posterior height",
                "max": "max: the larger of adjacent and posterior",
                "nearest_normal": "nearest normal: the closest untreated, unfractured levels",
            }.get,
            help="Genant grade from the largest height loss: < 20 % normal, 20-25 % mild, "
            "25-40 % moderate, > 40 % severe. A quantitative suggestion for the reader to confirm.",
        )
        readers.sidebar()

        st.markdown("#### Annotation store")
        st.caption("Every change is saved at once to")
        st.caption(md_path(session.store().folder))
        st.caption("Set VHEIGHT_STORE to use another folder.")


def _replace_prompt() -> None:
    """Ask before a film replaces the one open at its timepoint (or open it beside)."""
    pending = session.pending_open()
    if pending is None:
        return
    labels = session.TIMEPOINT_LABELS
    with st.container(border=True, key="vh-replace"):
        if pending.get("samples"):
            open_now = ", ".join(
                f"{labels[tp].lower()}: {slot.opened.name}" for tp, slot in session.slots().items()
            )
            st.warning(
                md_escape(f"Opening the sample series replaces the films open ({open_now}).")
                + " Their landmarks stay saved in the annotation store.",
                icon=":material/swap_horiz:",
            )
            free: list[str] = []
        else:
            timepoint = pending["timepoint"]
            current = session.get_slot(timepoint)
            levels = len(current.annotation.levels) if current is not None else 0
            held = current.opened.name if current is not None else "a film"
            st.warning(
                md_escape(
                    f"{labels[timepoint]} already holds {held} ({levels} level(s) annotated). "
                    f"Replace it with {pending['name']}?"
                )
                + " Its landmarks stay saved in the annotation store.",
                icon=":material/swap_horiz:",
            )
            free = [tp for tp in session.TIMEPOINTS if session.get_slot(tp) is None]
        st.button(
            "Replace",
            type="primary",
            on_click=session.confirm_pending,
            width="stretch",
            key="vh.pending.replace",
        )
        for tp in free:
            st.button(
                f"Open as {labels[tp]} instead",
                on_click=session.confirm_pending,
                args=(tp,),
                width="stretch",
                key=f"vh.pending.{tp}",
            )
        st.button(
            "Cancel", on_click=session.cancel_pending, width="stretch", key="vh.pending.cancel"
        )


# -- one film -----------------------------------------------------------------------------


def _show_flashes(timepoint: str) -> None:
    for kind, text in session.take_flashes(timepoint):
        getattr(st, kind)(md_escape(text))


def _window_choice(slot: Slot) -> tuple[tuple, bool]:
    """The window chosen for ``slot`` (cache key form) and the invert flag."""
    film = slot.opened.film
    choice = session.widget_value(slot, "window", 0)
    invert = bool(session.widget_value(slot, "invert", False))
    if choice == "manual":
        low, high = _value_range(slot.opened.identity, film)
        centre = float(session.widget_value(slot, "wc", (low + high) / 2))
        width = float(session.widget_value(slot, "ww", high - low))
        return ("manual", round(centre, 3), round(max(width, 1e-3), 3)), invert
    if choice == "auto":
        return ("auto",), invert
    index = int(choice) if isinstance(choice, int) and 0 <= choice < len(film.windows) else 0
    return ("preset", index), invert


def _display_controls(slot: Slot) -> None:
    """Window preset, manual window and invert (the mouse window/level is the editor's)."""
    film = slot.opened.film
    state = st.session_state
    auto = any(w.explanation == "auto" for w in film.windows)
    options: list[Any] = [*range(len(film.windows)), *([] if auto else ["auto"]), "manual"]
    labels: dict[Any, str] = {i: w.label() for i, w in enumerate(film.windows)}
    labels["auto"] = "Auto (0.5-99.5 % of the film's values)"
    wc, ww = session.widget_value(slot, "wc"), session.widget_value(slot, "ww")
    labels["manual"] = (
        f"Manual (C {float(wc):.0f}, W {float(ww):.0f})"
        if wc is not None and ww is not None
        else "Manual window"
    )
    c1, c2, c3 = st.columns([2.3, 0.5, 1], vertical_alignment="bottom", gap="small")
    state.setdefault(widget_key(slot, "window"), 0)
    c1.selectbox(
        "Window",
        options=options,
        format_func=lambda o: labels.get(o, str(o)),
        key=widget_key(slot, "window"),
        help="Right drag in the viewer (or W and drag): left/right = width, up/down = centre.",
    )
    with c2.popover("", icon=":material/tune:", width="stretch", help="Manual window"):
        low, high = _value_range(slot.opened.identity, film)
        span = high - low
        default = film.windows[0] if film.windows else None
        state.setdefault(
            widget_key(slot, "wc"),
            float(np.clip(default.center if default else (low + high) / 2, low, high)),
        )
        state.setdefault(
            widget_key(slot, "ww"),
            float(np.clip(default.width if default else span, 1.0, 2 * span)),
        )
        step = max(span / 1000.0, 0.001)
        st.slider(
            "Centre",
            min_value=low,
            max_value=high,
            step=step,
            key=widget_key(slot, "wc"),
            on_change=_use_manual,
            args=(slot,),
        )
        st.slider(
            "Width",
            min_value=min(1.0, span / 1000.0),
            max_value=2 * span,
            step=step,
            key=widget_key(slot, "ww"),
            on_change=_use_manual,
            args=(slot,),
        )
        st.caption("Modality values (rescaled); moving a slider selects the manual window.")
    c3.toggle("Invert", key=widget_key(slot, "invert"))


def _use_manual(slot: Slot) -> None:
    session.set_widget(slot, "window", "manual")


def _sync_window(slot: Slot) -> None:
    """Apply a window dragged in the viewer that its callback did not apply (by ``seq``)."""
    value = st.session_state.get(widget_key(slot, "editor"))
    window = value.get("window") if hasattr(value, "get") else None
    seq = window.get("seq") if hasattr(window, "get") else None
    applied = widget_key(slot, "window_seq")
    if isinstance(seq, int | float) and seq != st.session_state.get(applied):
        on_editor_window(slot.timepoint)


def on_editor_window(timepoint: str) -> None:
    """Editor callback: a mouse window/level drag ended; it becomes the manual window."""
    slot = session.get_slot(timepoint)
    if slot is None:
        return
    value = st.session_state.get(widget_key(slot, "editor")) or {}
    window = value.get("window") if hasattr(value, "get") else None
    if not hasattr(window, "get"):
        return
    st.session_state[widget_key(slot, "window_seq")] = window.get("seq")
    try:
        centre, width = float(window.get("center")), float(window.get("width"))
    except (TypeError, ValueError):
        return
    if not (np.isfinite(centre) and np.isfinite(width)):
        return
    low, high = _value_range(slot.opened.identity, slot.opened.film)
    span = high - low
    session.set_widget(slot, "wc", float(np.clip(centre, low, high)))
    session.set_widget(slot, "ww", float(np.clip(width, min(1.0, span / 1000.0), 2 * span)))
    session.set_widget(slot, "window", "manual")


def _crop_region(slot: Slot) -> tuple[int, int, int, int] | None:
    """The full-resolution region the editor asked for (clipped to the film), if any."""
    value = st.session_state.get(widget_key(slot, "editor"))
    region = value.get("crop") if hasattr(value, "get") else None
    if not hasattr(region, "get"):
        return None
    film = slot.opened.film
    try:
        x0, y0, x1, y1 = (int(region.get(k)) for k in ("x0", "y0", "x1", "y1"))
    except (TypeError, ValueError):
        return None
    x0, x1 = max(0, x0), min(film.columns, x1)
    y0, y1 = max(0, y0), min(film.rows, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _badge(slot: Slot, measurement: Any) -> dict[str, Any]:
    """The calibration badge of the viewer: ``mm ERMF``, ``mm Proj``..., or uncalibrated."""
    calibration = (
        measurement.calibration
        if measurement is not None
        else (slot.annotation.calibration or slot.opened.film.calibration)
    )
    if calibration.is_calibrated:
        return {
            "text": str(calibration.label),
            "calibrated": True,
            "title": calibration.describe(),
        }
    return {
        "text": "px \u2014 uncalibrated",
        "calibrated": False,
        "title": "No pixel spacing: heights are in pixels. Calibrate under Calibration.",
    }


def _heights(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Level -> the heights drawn beside each vertebra in the viewer."""
    return {
        str(r["level"]): {
            "ha": r.get("anterior_height"),
            "hm": r.get("middle_height"),
            "hp": r.get("posterior_height"),
            "unit": r.get("unit") or "px",
        }
        for r in records
        if r.get("complete")
    }


def _film_tab(timepoint: str, measurement: Any) -> None:
    slot = session.get_slot(timepoint)
    # Always drawn, so that a message never shifts the editor's place in the page
    # (the editor would be mounted again: its view and undo history lost).
    with st.container():
        _show_flashes(timepoint)
        if slot is not None:
            readers.copy_offer(slot)
    if slot is None:
        st.info(
            f"No {session.TIMEPOINT_LABELS[timepoint].lower()} film is open. "
            "Upload one in the sidebar (choose this timepoint under *Open as*)."
        )
        return
    film = slot.opened.film
    records = measurement.records() if measurement is not None else []

    left, right = st.columns([1.75, 1], gap="small")
    below = st.container()
    with right:
        _level_panel(slot)
        _brief_table(timepoint, measurement, records)
        _display_controls(slot)
    window, invert = _window_choice(slot)
    # Both tables are sent before the viewer and the panels: after an edit the
    # full table below arrives with the brief one, not after the rest of the tab.
    with below:
        shown = _measurement_table(measurement)
    with left:
        values, mapping = _film_values(slot.opened.identity, film)
        region = _crop_region(slot)
        crop = None
        if region is not None and values.width < film.columns:
            crop = _film_crop(slot.opened.identity, region, film)
        preset = _resolved_window(slot.opened.identity, window, film)
        calibrating = bool(st.session_state.get(widget_key(slot, "cal_mode"), False))
        landmark_editor(
            key=widget_key(slot, "editor"),
            film_id=slot.opened.identity,
            values=values,
            mapping=mapping,
            window={
                **window_spec(preset, invert=film.invert != invert, mapping=mapping),
                "key": list(window) + [bool(invert)],
            },
            vertebrae=slot.annotation.vertebrae,
            grades=grades_by_level(records),
            heights=_heights(records),
            badge=_badge(slot, measurement),
            treated=slot.annotation.treated_levels,
            active_level=st.session_state[widget_key(slot, "level")],
            epoch=slot.epoch,
            ack=slot.ack,
            mode="calibrate" if calibrating else "landmarks",
            calibration_line=slot.calibration_line,
            crop=crop,
            preview=_preview(slot.opened.identity, film),
            preview_window=[*DEFAULT_WINDOW_KEY, False],
            value_range=_value_range(slot.opened.identity, film),
            height=EDITOR_MIN_HEIGHT,
            on_edit=lambda: session.on_editor_edit(timepoint),
            on_level=lambda: session.on_editor_level(timepoint),
            on_window=lambda: on_editor_window(timepoint),
            announce_drawn=session.announce_first_frame(),
            on_drawn=session.open_deferred_samples,
        )
    with right:
        _refine_panel(slot)
        _treated_panel(slot)
        _calibration_panel(slot, measurement)
        _annotation_panel(slot)
        _film_panel(slot)
    if shown:
        with below:
            _measurement_downloads(slot, measurement, window, invert)


def _brief_table(timepoint: str, measurement: Any, records: list[dict[str, Any]]) -> None:
    """Heights and grades beside the film, and the warnings that change a number."""
    with st.container(key=f"vh-brief-{timepoint}"):
        if measurement is None:
            return
        if not records:
            st.caption("No vertebra annotated yet: click the six points of the level above.")
            return
        frame = measurement_frame(records)
        unit = measurement.unit
        brief = [c if c in frame.columns else f"{c} ({unit})" for c in _BRIEF_COLUMNS]
        st.table(style_measurements(frame[brief]), hide_index=True)
        if measurement.warnings:
            st.warning(
                "\n".join(f"- {md_escape(w)}" for w in measurement.warnings),
                icon=":material/warning:",
            )


def _level_panel(slot: Slot) -> None:
    level_box, progress_box = st.columns([1, 1.6], vertical_alignment="bottom", gap="small")
    level_box.selectbox(
        "Level to place",
        options=list(LEVELS),
        key=widget_key(slot, "level"),
        help="Click the film to place this level's next point; after the sixth the viewer "
        "moves on to the next level. N / Shift+N in the viewer: next / previous level.",
    )
    level = st.session_state[widget_key(slot, "level")]
    placed = len(slot.annotation.points(level))
    progress_box.progress(placed / 6, text=f"{level}: {placed} of 6 points")


def _treated_panel(slot: Slot) -> None:
    level = st.session_state[widget_key(slot, "level")]
    placed = len(slot.annotation.points(level))
    c1, c2 = st.columns([1.6, 1], vertical_alignment="bottom", gap="small")
    c1.multiselect(
        "Treated levels",
        options=list(LEVELS),
        key=widget_key(slot, "treated"),
        on_change=session.on_treated_change,
        args=(slot.timepoint,),
        placeholder="none",
        help="Levels augmented (kyphoplasty, vertebroplasty); hatched in the viewer.",
    )
    c2.button(
        f"Delete {level}",
        on_click=session.clear_level,
        args=(slot.timepoint,),
        disabled=placed == 0,
        width="stretch",
        key=widget_key(slot, "clear"),
        help=f"Delete all points of {level} (Ctrl+Z in the viewer restores them)",
    )


_SHORT_POINT = {
    "superior_anterior": "sup. ant.",
    "superior_middle": "sup. mid.",
    "superior_posterior": "sup. post.",
    "inferior_anterior": "inf. ant.",
    "inferior_middle": "inf. mid.",
    "inferior_posterior": "inf. post.",
}


def _refine_panel(slot: Slot) -> None:
    """Snap landmarks to the endplate edge, propose a neighbouring level."""
    tp = slot.timepoint
    level = st.session_state[widget_key(slot, "level")]
    selected = session.selected_point(slot)
    radius = session.refine_radius(slot)
    calibrated = (slot.annotation.calibration or slot.opened.film.calibration).is_calibrated
    scale = "" if calibrated else ", on a nominal scale: the film is uncalibrated"
    st.caption(f"Snap to the cortical edge (search radius {radius:g} mm{scale})")
    c1, c2, c3 = st.columns(3, gap="small")
    c1.button(
        "Point",
        on_click=session.snap_selected_point,
        args=(tp,),
        disabled=selected is None,
        width="stretch",
        key=widget_key(slot, "snap_point"),
        help=(
            f"Snap {selected[0]} {selected[1]}, the point selected in the viewer"
            if selected is not None
            else "Select a point in the viewer first (click it, or press Tab)"
        ),
    )
    c2.button(
        level,
        on_click=session.snap_levels,
        args=(tp, False),
        disabled=not slot.annotation.points(level),
        width="stretch",
        key=widget_key(slot, "snap_level"),
        help=f"Snap the points of {level}",
    )
    c3.button(
        "All",
        on_click=session.snap_levels,
        args=(tp, True),
        disabled=not slot.annotation.vertebrae,
        width="stretch",
        key=widget_key(slot, "snap_all"),
        help="Snap the points of every level",
    )
    targets = session.proposal_targets(slot)
    propose_help = (
        "Six points predicted from the complete levels (position, tilt and size trend), "
        "then snapped; check them."
        if slot.annotation.complete_levels
        else "Place the six points of one level first: a proposal continues the complete levels."
    )
    # Containers keep the places of the elements below whatever they hold.
    proposals, notes = st.container(), st.container()
    if targets["here"] is not None:
        proposals.button(
            f"Propose {targets['here']}",
            on_click=session.propose,
            args=(tp, "here"),
            disabled=not slot.annotation.complete_levels,
            width="stretch",
            key=widget_key(slot, "propose_here"),
            help=propose_help,
        )
    else:
        p1, p2 = proposals.columns(2, gap="small")
        for column, where, arrow in ((p1, "above", "\u2191"), (p2, "below", "\u2193")):
            target = targets[where]
            column.button(
                f"{arrow} Propose {target}" if target else f"{arrow} Propose",
                on_click=session.propose,
                args=(tp, where),
                disabled=target is None or not slot.annotation.complete_levels,
                width="stretch",
                key=widget_key(slot, f"propose_{where}"),
                help=propose_help if target else _no_proposal(level, where),
            )
    for kind, text in session.take_notes(tp):
        getattr(notes, kind)(md_escape(text))
    last = session.last_refinement(slot)
    with st.expander("Snapping", expanded=False):
        st.session_state.setdefault(widget_key(slot, "radius"), DEFAULT_RADIUS_MM)
        st.number_input(
            "Search radius (mm)",
            min_value=0.5,
            max_value=10.0,
            step=0.5,
            key=widget_key(slot, "radius"),
            help="How far from each point the edge is searched; a point without a clear "
            "edge within it is left where it is and flagged.",
        )
        st.caption("Each snap or proposal is one change: Ctrl+Z in the viewer undoes it.")
        if last is not None:
            st.caption(f"Last: {md_escape(last['title'])}")
            _refinement_table(last)


def _no_proposal(level: str, where: str) -> str:
    index = LEVELS.index(level) + (-1 if where == "above" else 1)
    if not 0 <= index < len(LEVELS):
        return f"No level {where} {level}"
    return f"{LEVELS[index]} ({where} {level}) already has points"


def _refinement_table(last: dict[str, Any]) -> None:
    records = last["records"]
    if not records:
        return
    column = "Moved (mm)" if last["calibrated"] else "Moved (px)"
    rows = [
        {
            "Level": r["level"],
            "Point": _SHORT_POINT.get(r["point"], r["point"]),
            column: (r["distance_mm"] if last["calibrated"] else r["distance_px"])
            if r["moved"]
            else 0.0,
            "Flag": r["flag"] or "",
        }
        for r in records
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(rows), 260),
        column_config={column: st.column_config.NumberColumn(column, format="%.2f")},
    )
    for warning in last["warnings"]:
        st.text(warning)


def _calibration_panel(slot: Slot, measurement: Any) -> None:
    with st.expander("Calibration", expanded=False):
        calibration = (
            measurement.calibration if measurement is not None else slot.opened.film.calibration
        )
        st.text(calibration.describe())
        if calibration.description:
            st.text(calibration.description)
        st.toggle(
            "Draw a line of known length",
            key=widget_key(slot, "cal_mode"),
            help="Click both ends of a ruler or marker of known length on the film, "
            "then type its length.",
        )
        if st.session_state.get(widget_key(slot, "cal_mode")):
            st.session_state.setdefault(widget_key(slot, "cal_mm"), 10.0)
            st.number_input(
                "Known length (mm)",
                min_value=0.1,
                max_value=1000.0,
                step=0.5,
                key=widget_key(slot, "cal_mm"),
            )
            line = slot.calibration_line
            complete = line is not None and len(line) == 2
            if complete:
                length = float(np.hypot(line[1][0] - line[0][0], line[1][1] - line[0][1]))
                st.caption(f"Line: {length:.1f} px")
            st.button(
                "Apply calibration",
                type="primary",
                on_click=session.apply_calibration,
                args=(slot.timepoint,),
                disabled=not complete,
                width="stretch",
                key=widget_key(slot, "cal_apply"),
            )
        if slot.annotation.calibration is not None:
            st.button(
                "Remove the user calibration",
                on_click=session.remove_calibration,
                args=(slot.timepoint,),
                width="stretch",
                key=widget_key(slot, "cal_remove"),
            )


def _annotation_panel(slot: Slot) -> None:
    with st.expander("Annotation file", expanded=False):
        origin = {
            "store": "Restored from the annotation store.",
            "sidecar": "Loaded from the film's sidecar file.",
            "new": "New annotation.",
            "upload": "Loaded from an uploaded file.",
        }.get(slot.origin, "")
        st.caption(origin)
        if slot.saved_to is not None:
            st.caption("Saved to")
            st.caption(md_path(slot.saved_to))
        stem = Path(slot.opened.name).stem or "film"
        st.download_button(
            "Download annotation (JSON)",
            data=dumps_annotation(slot.annotation),
            file_name=f"{stem}.vheight.json",
            mime="application/json",
            on_click="ignore",
            width="stretch",
            key=widget_key(slot, "dl_annotation"),
        )
        st.file_uploader(
            "Load an annotation (JSON or vheight DICOM SR)",
            type=["json", "dcm"],
            key=widget_key(slot, "annotation_upload"),
            on_change=session.on_annotation_upload,
            args=(slot.timepoint,),
            help="A vheight annotation file (v1), or a DICOM SR exported by vheight, of this "
            "film; it replaces the current points.",
        )
        if slot.opened.path is not None and sidecar_path(slot.opened.path).is_file():
            st.button(
                "Reload the sidecar file",
                on_click=session.revert_to_sidecar,
                args=(slot.timepoint,),
                width="stretch",
                key=widget_key(slot, "revert"),
                help="Replace the points by those of the file beside the film",
            )


def _film_panel(slot: Slot) -> None:
    info = slot.opened.film.info
    with st.expander("Film", expanded=False):
        facts = [
            ("File", slot.opened.name),
            ("Format", info.format.value),
            ("Size", f"{info.columns} x {info.rows} px"),
            ("Modality", info.modality or "-"),
            ("Photometric", info.photometric_interpretation or "-"),
            ("Transfer syntax", info.transfer_syntax_name or info.transfer_syntax_uid or "-"),
            ("Bits stored", "-" if info.bits_stored is None else str(info.bits_stored)),
            ("Spacing (header)", info.calibration.describe()),
            ("View", info.view_position or "-"),
            ("Patient position", info.patient_position or "-"),
            ("Study date", info.study_date or "-"),
            ("SOP Instance UID", info.sop_instance_uid or "-"),
        ]
        st.dataframe(
            pd.DataFrame(facts, columns=["", "Value"]),
            hide_index=True,
            width="stretch",
        )
        for warning in info.warnings:
            st.text(warning)


def _measurement_table(measurement: Any) -> bool:
    """The full measurement table; whether there was one (its downloads follow it)."""
    st.markdown("##### All measurements")
    if measurement is None:
        return False
    records = measurement.records()
    if not records:
        st.caption("No vertebra annotated yet: choose a level and click its six points.")
        return False
    st.caption(
        f"Spacing: {md_escape(measurement.spacing_label)} · reference: "
        f"{md_escape(measurement.reference.value)} · grade = Genant, from the largest height "
        "loss (a quantitative suggestion)."
    )
    # A static table: every level visible at once, and redrawn at once after an edit.
    st.table(style_measurements(measurement_frame(records)), hide_index=True)
    return True


def _measurement_downloads(slot: Slot, measurement: Any, window: tuple, invert: bool) -> None:
    """The measurement's downloads (CSV, JSON, PNG, DICOM SR and GSPS, the PDF report)."""
    stem = Path(slot.opened.name).stem or "film"
    film = slot.opened.film
    annotation = slot.annotation

    def _png() -> bytes:
        return exports.annotated_png(display_pixels(film, window, invert), annotation, measurement)

    reference = measurement.reference.value
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.download_button(
        "CSV",
        data=exports.measurement_csv(measurement),
        file_name=f"{stem}.measurements.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=widget_key(slot, "dl_csv"),
    )
    c2.download_button(
        "JSON",
        data=exports.measurement_json(measurement, annotation_name=f"{stem}.vheight.json"),
        file_name=f"{stem}.measurements.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=widget_key(slot, "dl_json"),
    )
    c3.download_button(
        "Annotated PNG",
        data=_png,
        file_name=f"{stem}.annotated.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=widget_key(slot, "dl_png"),
    )
    problem = exports.dicom_export_problem(slot.opened, annotation)
    opened = slot.opened
    if slot.edited:
        # Built while the reader looks at the edit.  The annotation a film opened
        # with is built on the click (a few tenths of a second), not while the
        # app starts and the first film is on its way to the browser.
        exports.prepare_dicom_exports(opened, annotation, reference=reference)
    c4.download_button(
        "DICOM SR",
        data=lambda: exports.prepared_sr(opened, annotation, reference=reference),
        file_name=f"{stem}.sr.dcm",
        mime="application/dicom",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        disabled=problem is not None,
        help=problem or "TID 1500 measurement report of this film, for the PACS",
        key=widget_key(slot, "dl_sr"),
    )
    c5.download_button(
        "Presentation state",
        data=lambda: exports.prepared_gsps(opened, annotation, reference=reference),
        file_name=f"{stem}.pr.dcm",
        mime="application/dicom",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        disabled=problem is not None,
        help=problem or "Landmarks, heights and grades over this film in any DICOM viewer (GSPS)",
        key=widget_key(slot, "dl_gsps"),
    )
    if problem is not None:
        st.caption(md_escape(problem))
    _report_download(f"vh.{slot.timepoint}.{slot.uid}")


# -- comparison ---------------------------------------------------------------------------


def _report_download(prefix: str) -> None:
    """The PDF report of the films open (pre, post, follow-up), built when pressed."""
    open_slots = [slot for tp in session.TIMEPOINTS if (slot := session.get_slot(tp)) is not None]
    if not open_slots:
        return
    films = [(slot.opened, slot.annotation) for slot in open_slots]
    reference = st.session_state.get(session.REFERENCE, "adjacent")
    c1, c2, _ = st.columns([1.4, 1.2, 2.4], vertical_alignment="center")
    deidentify = c2.checkbox(
        "De-identified",
        key=f"{prefix}.deidentify",
        help="No patient name, ID, study date or file name anywhere in the PDF",
    )
    names = ", ".join(session.TIMEPOINT_LABELS[slot.timepoint].lower() for slot in open_slots)
    c1.download_button(
        "PDF report",
        data=lambda: exports.report_pdf(films, reference=reference, deidentify=deidentify),
        file_name="vheight-report-deidentified.pdf" if deidentify else "vheight-report.pdf",
        mime="application/pdf",
        on_click="ignore",
        icon=":material/picture_as_pdf:",
        type="primary",
        width="stretch",
        help=f"A4 report of the films open ({names}) with their comparison; "
        "made when pressed (a few seconds)",
        key=f"{prefix}.report",
    )


def _comparison_tab(measurements: dict[str, Any]) -> None:
    _comparison_body(measurements)
    st.markdown("##### Report")
    _report_download("vh.comparison")


def _comparison_body(measurements: dict[str, Any]) -> None:
    reference = st.session_state.get(session.REFERENCE, "adjacent")
    films = []
    for tp in session.TIMEPOINTS:
        slot = session.get_slot(tp)
        if slot is not None and measurements.get(tp) is not None:
            window, invert = _window_choice(slot)  # as the radiologist set it in its tab
            films.append(
                comparison_view.ComparedFilm(
                    label=session.TIMEPOINT_LABELS[tp],
                    identity=slot.opened.identity,
                    opened=slot.opened,
                    timepoint=tp,
                    annotation=slot.annotation,
                    measurement=measurements[tp],
                    window=window,
                    invert=invert,
                )
            )
    comparison_view.show_comparison(measurements, films, reference=reference)
