"""The app's page: sidebar, one tab per film, and the comparison.

Layout
------
- Sidebar: open a film (upload into a timepoint, or the sample series), the
  reference method of height loss, the annotator's name, where annotations
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

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from vheight.annotation import LEVELS, dumps_annotation, sidecar_path
from vheight.comparison import compare
from vheight.errors import VHeightError
from vheight.morphometry import measure
from vheight.refine import DEFAULT_RADIUS_MM
from vheight.ui import comparison as comparison_view
from vheight.ui import exports, session
from vheight.ui.editor import DisplayImage, landmark_editor, make_display_image
from vheight.ui.films import MAX_UPLOAD_MB, display_pixels
from vheight.ui.pacs import sidebar_section as pacs_section
from vheight.ui.session import Slot, widget_key
from vheight.ui.tables import (
    grades_by_level,
    measurement_frame,
    style_measurements,
)

__all__ = ["main"]

EDITOR_HEIGHT = 660
COMPARISON = "Comparison"
# Layout only (a constant of this module, never data): a tighter page top.
_PAGE_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; padding-bottom: 2rem; }
[data-testid="stSidebarHeader"] { height: 1.5rem; }
</style>"""
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: Any) -> str:
    """Text safe to put in Streamlit markdown (every markdown character escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


# -- cached renderings ----------------------------------------------------------------------


@st.cache_data(max_entries=24, show_spinner=False)
def _display_image(identity: str, window: tuple, invert: bool, _film: Any) -> DisplayImage:
    """The display JPEG of a film under a window (keyed by film identity + window)."""
    return make_display_image(display_pixels(_film, window, invert))


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
    session.init_session(samples=samples)
    _sidebar()
    for tp in session.TIMEPOINTS:
        session.sync_editor(tp)
    labels = [session.TIMEPOINT_LABELS[tp] for tp in session.TIMEPOINTS]
    # Lazy tabs: only the open tab runs, so an edit reruns one film's panel.
    tabs = st.tabs([*labels, COMPARISON], key=session.TAB, on_change="rerun")
    for tab, tp in zip(tabs[:3], session.TIMEPOINTS, strict=True):
        if tab.open:
            with tab:
                _film_fragment(tp)
    if tabs[3].open:
        session.drew_other("comparison")
        with tabs[3]:
            measurements = {}
            for tp in session.TIMEPOINTS:
                slot = session.get_slot(tp)
                if slot is not None:
                    measurements[tp] = _measure(slot)
            _comparison_tab(measurements)


@st.fragment
def _film_fragment(timepoint: str) -> None:
    """One film's tab; an edit reruns only this fragment (the sidebar does not change)."""
    session.sync_editor(timepoint)
    slot = session.get_slot(timepoint)
    if slot is not None:
        session.restore_widgets(slot)
    else:
        session.drew_other(f"{timepoint}.empty")
    _film_tab(timepoint, None if slot is None else _measure(slot))
    if slot is not None:
        session.remember_widgets(slot)


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
        if session.samples_folder() is not None:
            st.button(
                "Open the sample series",
                on_click=session.open_samples,
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
            }.get,
            help="Genant grade from the largest height loss: < 20 % normal, 20-25 % mild, "
            "25-40 % moderate, > 40 % severe. A quantitative suggestion for the reader to confirm.",
        )
        st.text_input(
            "Annotator",
            key=session.ANNOTATOR,
            placeholder="your name or initials",
            help="Written into new annotations when they are saved",
        )

        st.markdown("#### Annotation store")
        st.caption("Every change is saved at once to")
        st.code(str(session.store().folder), language=None)
        st.caption("Set VHEIGHT_STORE to use another folder.")


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
    index = int(choice) if isinstance(choice, int) and 0 <= choice < len(film.windows) else 0
    return ("preset", index), invert


def _display_controls(slot: Slot) -> None:
    film = slot.opened.film
    state = st.session_state
    options: list[Any] = [*range(len(film.windows)), "manual"]
    labels = {i: w.label() for i, w in enumerate(film.windows)}
    labels["manual"] = "Manual window"
    c1, c2, c3 = st.columns([2.2, 1.2, 1], vertical_alignment="bottom")
    state.setdefault(widget_key(slot, "window"), 0)
    c1.selectbox(
        "Window",
        options=options,
        format_func=lambda o: labels.get(o, str(o)),
        key=widget_key(slot, "window"),
    )
    with c2.popover("Manual window", width="stretch"):
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


def _film_tab(timepoint: str, measurement: Any) -> None:
    slot = session.get_slot(timepoint)
    # Always drawn, so that a message never shifts the editor's place in the page
    # (the editor would be mounted again: its view and undo history lost).
    with st.container():
        _show_flashes(timepoint)
    if slot is None:
        st.info(
            f"No {session.TIMEPOINT_LABELS[timepoint].lower()} film is open. "
            "Upload one in the sidebar (choose this timepoint under *Open as*)."
        )
        return
    film = slot.opened.film
    records = measurement.records() if measurement is not None else []

    left, right = st.columns([3.3, 1.25], gap="medium")
    with left:
        _display_controls(slot)
        window, invert = _window_choice(slot)
        image = _display_image(slot.opened.identity, window, invert, film)
        calibrating = bool(st.session_state.get(widget_key(slot, "cal_mode"), False))
        landmark_editor(
            key=widget_key(slot, "editor"),
            film_id=slot.opened.identity,
            image=image,
            vertebrae=slot.annotation.vertebrae,
            grades=grades_by_level(records),
            treated=slot.annotation.treated_levels,
            active_level=st.session_state[widget_key(slot, "level")],
            epoch=slot.epoch,
            ack=slot.ack,
            mode="calibrate" if calibrating else "landmarks",
            calibration_line=slot.calibration_line,
            height=EDITOR_HEIGHT,
            on_edit=lambda: session.on_editor_edit(timepoint),
            on_level=lambda: session.on_editor_level(timepoint),
        )
    with right:
        _level_panel(slot)
        _refine_panel(slot)
        _calibration_panel(slot, measurement)
        _annotation_panel(slot)
        _film_panel(slot)

    _measurement_table(slot, measurement, window, invert)


def _level_panel(slot: Slot) -> None:
    st.markdown("##### Landmarks")
    st.selectbox(
        "Level to place",
        options=list(LEVELS),
        key=widget_key(slot, "level"),
        help="Click the film to place this level's next point; N / Shift+N in the viewer "
        "moves to the next / previous level.",
    )
    level = st.session_state[widget_key(slot, "level")]
    placed = len(slot.annotation.points(level))
    st.progress(placed / 6, text=f"{level}: {placed} of 6 points")
    st.multiselect(
        "Treated levels",
        options=list(LEVELS),
        key=widget_key(slot, "treated"),
        on_change=session.on_treated_change,
        args=(slot.timepoint,),
        placeholder="none",
        help="Levels augmented (kyphoplasty, vertebroplasty); hatched in the viewer.",
    )
    st.button(
        f"Delete all points of {level}",
        on_click=session.clear_level,
        args=(slot.timepoint,),
        disabled=placed == 0,
        width="stretch",
        key=widget_key(slot, "clear"),
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
            st.code(str(slot.saved_to), language=None)
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


def _measurement_table(slot: Slot, measurement: Any, window: tuple, invert: bool) -> None:
    st.markdown("##### Measurements")
    if measurement is None:
        return
    records = measurement.records()
    if not records:
        st.caption("No vertebra annotated yet: choose a level and click its six points.")
        return
    st.caption(
        f"Spacing: {md_escape(measurement.spacing_label)} · reference: "
        f"{md_escape(measurement.reference.value)} · grade = Genant, from the largest height "
        "loss (a quantitative suggestion)."
    )
    # A static table: every level visible at once, and redrawn at once after an edit.
    st.table(style_measurements(measurement_frame(records)), hide_index=True)
    if measurement.warnings:
        with st.expander(f"Notes ({len(measurement.warnings)})"):
            for warning in measurement.warnings:
                st.text(warning)

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
    c4.download_button(
        "DICOM SR",
        data=lambda: exports.film_sr(opened, annotation, reference=reference),
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
        data=lambda: exports.film_gsps(opened, annotation, reference=reference),
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
    pre, post = measurements.get("pre"), measurements.get("post")
    if pre is None or post is None:
        st.info("Open a pre- and a post-augmentation film to compare them.")
        return
    try:
        comparison = compare(pre, post, measurements.get("followup"))
    except VHeightError as exc:
        st.error(md_escape(f"The films could not be compared: {exc}"))
        return
    comparison_view.show_warnings(comparison.warnings)
    records = comparison.records()

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
                    annotation=slot.annotation,
                    measurement=measurements[tp],
                    window=window,
                    invert=invert,
                )
            )
    if not records:
        st.caption("No level is complete on both films yet.")
        return
    treated = [lc.level for lc in comparison.levels.values() if lc.treated]
    if treated:
        comparison_view.show_treated_levels(records, treated)
    else:
        st.info(
            "No level is marked treated: choose the augmented level under *Treated levels* "
            "in a film's tab to see its restoration here."
        )
    comparison_view.show_films(films, reference, treated)
    st.markdown("##### Every level")
    st.caption(
        f"Lengths in {md_escape(comparison.unit)}, reference for height loss "
        f"{md_escape(reference)}; treated levels first, tinted. Restoration after McKiernan "
        "et al. (Spine 2003): the three percentages differ in what they divide by, so all "
        "are given. Rounded for reading; the downloads keep every digit."
    )
    comparison_view.show_table(records)
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
