"""The app's session state: the films open, their annotations, and every change.

One :class:`Slot` per timepoint (``pre``, ``post``, ``followup``) holds an
open film and its current :class:`~vheight.annotation.Annotation`, which is
the single source of truth: the editor sends complete point sets, the widgets
send treated levels and calibrations, and each change goes through
:func:`commit`, which validates it, stamps it, saves it atomically to the
annotation store and only then makes it current.  Nothing is lost when the
browser closes.

Points are ``(x, y)`` pixels of the full-resolution film (``x`` the column,
``y`` the row, the centre of the top-left pixel at ``(0, 0)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from vheight.annotation import LEVELS, TIMEPOINTS, Annotation, sidecar_path
from vheight.calibration import Calibration
from vheight.errors import AnnotationError, CalibrationError, VHeightError
from vheight.film import Film
from vheight.loader import load_film
from vheight.refine import (
    DEFAULT_RADIUS_MM,
    RefineResult,
    is_doubt,
    propose_level_result,
    refine_annotation,
)
from vheight.ui.editor import EditorState
from vheight.ui.films import (
    OpenedFilm,
    initial_annotation,
    now_iso,
    open_path,
    read_annotation_upload,
    read_upload,
    sample_paths,
)
from vheight.ui.store import AnnotationStore

__all__ = [
    "TIMEPOINT_LABELS",
    "TIMEPOINTS",
    "REFERENCES",
    "Slot",
    "init_session",
    "slots",
    "get_slot",
    "widget_key",
    "set_widget",
    "begin_page_run",
    "end_page_run",
    "tab_kept",
    "restore_widgets",
    "remember_widgets",
    "open_into",
    "open_samples",
    "open_deferred_samples",
    "announce_first_frame",
    "awaiting_first_frame",
    "commit",
    "flash",
    "take_flashes",
    "begin_messages",
    "messages_shown",
    "on_editor_edit",
    "on_editor_level",
    "sync_editor",
    "on_film_upload",
    "pending_open",
    "confirm_pending",
    "cancel_pending",
    "request_samples",
    "on_annotation_upload",
    "on_treated_change",
    "apply_calibration",
    "remove_calibration",
    "clear_level",
    "revert_to_sidecar",
    "selected_point",
    "refine_radius",
    "snap_selected_point",
    "snap_levels",
    "propose",
    "proposal_targets",
    "last_refinement",
    "note",
    "take_notes",
]

TIMEPOINT_LABELS = {"pre": "Pre-augmentation", "post": "Post-augmentation", "followup": "Follow-up"}
REFERENCES = ("adjacent", "posterior", "max", "nearest_normal")

_SLOTS = "vh.slots"
_STORE = "vh.store"
_SAMPLES = "vh.samples"
_DEFERRED = "vh.samples.deferred"
#: A viewer was mounted asking to report its first frame of the film (the
#: deferred sample films are decoded then, not while the browser fetches it).
_AWAIT_FRAME = "vh.samples.await_frame"
_FLASH = "vh.flash"
#: How many messages of each queue and tab the tab drawn now has shown.
_TAKEN = "vh.messages.taken"
UPLOAD_TARGET = "vh.upload.target"
UPLOAD_NONCE = "vh.upload.nonce"
UPLOAD_ERROR = "vh.upload.error"
#: A film waiting for the user's answer: its timepoint already holds a film.
PENDING = "vh.upload.pending"
REFERENCE = "vh.reference"
TAB = "vh.tab"
ANNOTATOR = "vh.annotator"


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """A film open at one timepoint, with its current annotation.

    Parameters
    ----------
    timepoint
        ``"pre"``, ``"post"`` or ``"followup"``.
    opened
        The film.
    annotation
        Its current annotation (the single source of truth).
    origin
        Where the annotation came from: ``"store"``, ``"sidecar"``, ``"new"``
        or ``"upload"``.
    epoch
        Bumped whenever Python changed the points (the editor then adopts them).
    ack
        Revision of the last editor edit applied.
    calibration_line
        The ends of the calibration line drawn in the editor so far (one or
        two), pixels.
    saved_to
        Where the annotation was last saved, if it was.
    edited
        Whether the annotation was changed in this session (its DICOM exports
        are then prepared in the background; see :mod:`vheight.ui.exports`).
    """

    timepoint: str
    opened: OpenedFilm
    annotation: Annotation
    origin: str
    epoch: int = 0
    ack: int = 0
    calibration_line: tuple[tuple[float, float], ...] | None = None
    saved_to: Path | None = None
    edited: bool = False

    @property
    def uid(self) -> str:
        """A short stable id of the film, for widget keys."""
        return hashlib.sha1(self.opened.identity.encode("utf-8")).hexdigest()[:10]


# -- state access ------------------------------------------------------------------------


def init_session(*, samples: Path | None, store: AnnotationStore | None = None) -> None:
    """Create the session state once; the first run opens the sample series."""
    state = st.session_state
    if _SLOTS in state:
        return
    state[_SLOTS] = {}
    state[_FLASH] = {}
    state[_STORE] = store or AnnotationStore.from_environment()
    state[_SAMPLES] = samples
    state.setdefault(REFERENCE, "adjacent")
    state.setdefault(UPLOAD_TARGET, "pre")
    state.setdefault(UPLOAD_NONCE, 0)
    state.setdefault(ANNOTATOR, "")
    if samples is not None:
        open_samples(first_only=True)


def store() -> AnnotationStore:
    return st.session_state[_STORE]


def reader() -> str:
    """The reader's name (``""`` until they named themselves; see :mod:`vheight.ui.readers`)."""
    return str(st.session_state.get(ANNOTATOR, "") or "").strip()


def samples_folder() -> Path | None:
    return st.session_state.get(_SAMPLES)


def slots() -> dict[str, Slot]:
    return st.session_state[_SLOTS]


def get_slot(timepoint: str) -> Slot | None:
    return slots().get(timepoint)


def _put(slot: Slot) -> None:
    slots()[slot.timepoint] = slot


def widget_key(slot: Slot, name: str) -> str:
    """Session-state key of one of ``slot``'s widgets (a new film gets new widgets)."""
    return f"vh.{slot.timepoint}.{slot.uid}.{name}"


#: Per-film widgets whose values must survive a run that does not draw them
#: (Streamlit forgets such a widget's state): a tab not yet opened, a film
#: replaced and opened again.
KEPT_WIDGETS = (
    "level", "treated", "window", "invert", "wc", "ww", "cal_mode", "cal_mm", "radius",
)  # fmt: skip
_KEEP = "vh.keep"
#: Film tabs drawn by the last whole-page run, and by this one so far.
_DRAWN_BEFORE = "vh.drawn_before"
_DRAWN = "vh.drawn"
#: True while a whole-page run draws (False in a rerun of one film's fragment).
_PAGE_RUN = "vh.page_run"
#: Timepoints whose tab has been open: drawn in every later run, hidden or not,
#: so that switching back to one is the browser's alone (its viewer stays mounted).
_SHOWN = "vh.shown"


def set_widget(slot: Slot, name: str, value: Any) -> None:
    """Set one of ``slot``'s widgets (from a callback or before it is drawn) and keep it."""
    key = widget_key(slot, name)
    st.session_state[key] = value
    st.session_state.setdefault(_KEEP, {})[key] = value


def begin_page_run() -> None:
    """At the start of a whole-page run (not of a fragment's rerun)."""
    state = st.session_state
    state[_DRAWN_BEFORE] = frozenset(state.get(_DRAWN, ()))
    state[_DRAWN] = set()
    state[_PAGE_RUN] = True


def end_page_run() -> None:
    """At the end of a whole-page run, however it ended."""
    st.session_state[_PAGE_RUN] = False


def tab_kept(timepoint: str, is_open: bool) -> bool:
    """Whether to draw ``timepoint``'s tab in this run: it is open, or was open before."""
    shown = st.session_state.setdefault(_SHOWN, set())
    if is_open:
        shown.add(timepoint)
    return timepoint in shown


def restore_widgets(slot: Slot) -> None:
    """Before drawing a film's tab: give back the values its widgets had when last drawn.

    Only in a whole-page run whose previous one did not draw this tab: then the
    widgets' own state is gone or stale.  When the previous run drew it (a
    rerun of the tab's fragment draws only tabs the last whole run drew), the
    widgets hold the user's latest change, which must win.
    """
    state = st.session_state
    kept = state.setdefault(_KEEP, {})
    shown = f"{slot.timepoint}.{slot.uid}"
    if state.get(_PAGE_RUN) and shown not in state.get(_DRAWN_BEFORE, ()):
        for name in KEPT_WIDGETS:
            key = widget_key(slot, name)
            if key in kept:
                state[key] = kept[key]
    state.setdefault(_DRAWN, set()).add(shown)


def widget_value(slot: Slot, name: str, default: Any = None) -> Any:
    """The value of one of ``slot``'s widgets, also while its tab is not drawn.

    A widget drawn in the last run holds its value in the session state;
    Streamlit drops the state of a widget that a run did not draw, and then
    the value kept when its tab was last drawn is the one.
    """
    key = widget_key(slot, name)
    state = st.session_state
    if key in state:
        return state[key]
    return state.get(_KEEP, {}).get(key, default)


def remember_widgets(slot: Slot) -> None:
    """After drawing a film's tab: keep the current values of its widgets."""
    state = st.session_state
    kept = state.setdefault(_KEEP, {})
    for name in KEPT_WIDGETS:
        key = widget_key(slot, name)
        if key in state:
            kept[key] = state[key]


def flash(timepoint: str, kind: str, text: str) -> None:
    """Queue a message (``"error"``, ``"warning"``, ``"success"``, ``"info"``) for a tab."""
    st.session_state[_FLASH].setdefault(timepoint, []).append((kind, text))


def take_flashes(timepoint: str) -> list[tuple[str, str]]:
    """The queued messages of a tab, to show; they leave the queue when the
    tab has been drawn to the end (:func:`messages_shown`)."""
    return _take(_FLASH, timepoint)


def _take(queue: str, timepoint: str) -> list[tuple[str, str]]:
    """The messages of ``timepoint`` in the queue under ``queue``, counted as taken."""
    state = st.session_state
    taken = list(state.setdefault(queue, {}).get(timepoint, ()))
    state.setdefault(_TAKEN, {})[(queue, timepoint)] = len(taken)
    return taken


def begin_messages(timepoint: str) -> None:
    """The tab of ``timepoint`` is drawn now: nothing of it is taken yet (a run
    stopped meanwhile may have left counts of messages it took)."""
    taken = st.session_state.setdefault(_TAKEN, {})
    for name in (_FLASH, _NOTES):
        taken.pop((name, timepoint), None)


def messages_shown(timepoint: str) -> None:
    """The tab of ``timepoint`` was drawn to its end: the messages it showed
    (:func:`take_flashes`, :func:`take_notes`) leave their queues.

    Streamlit may stop a run at any read or write of the session state (the
    reader clicked meanwhile), and what a stopped run drew is replaced by the
    next run's page: a message taken off its queue when shown was lost then,
    an upload's error never read.  Kept until the tab is drawn to its end, it
    is shown again by the next run.
    """
    state = st.session_state
    taken = state.setdefault(_TAKEN, {})
    for name in (_FLASH, _NOTES):
        count = taken.pop((name, timepoint), 0)
        queue = state.setdefault(name, {})
        if count:
            rest = queue.get(timepoint, [])[count:]
            if rest:
                queue[timepoint] = rest
            else:
                queue.pop(timepoint, None)


# -- opening films -----------------------------------------------------------------------


#: Films of this process decoded from disk and still held (by the cache or a
#: session), keyed as ``_cached_path_film``: a session opening the sample
#: series defers only films not in memory.  Weak: a film the cache dropped and
#: no session holds leaves by itself, so it is never taken for decoded.
_DECODED: weakref.WeakValueDictionary[tuple[str, int, int], Film] = weakref.WeakValueDictionary()


@st.cache_resource(max_entries=8, show_spinner=False)
def _cached_path_film(path: str, mtime_ns: int, size: int) -> Any:
    """A film decoded from disk, shared by sessions (films are immutable)."""
    film = load_film(path)
    _DECODED[(path, mtime_ns, size)] = film
    return film


def _path_film(path: Path) -> Film:
    """The film at ``path``: the one in memory when a session or the cache still
    holds it, else decoded (and cached)."""
    key = _film_key(path)
    film = _DECODED.get(key)
    return film if film is not None else _cached_path_film(*key)


def _film_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _default_level(annotation: Annotation) -> str:
    """The level a film opens on: the first incomplete or missing one between the
    annotated levels (a gap to fill), else the one after the last."""
    for level in annotation.levels:
        if not annotation.is_complete(level):
            return level
    annotated = [LEVELS.index(level) for level in annotation.levels]
    if annotated:
        for index in range(min(annotated), max(annotated)):
            if not annotation.is_complete(LEVELS[index]):
                return LEVELS[index]
    if annotation.levels:
        last = LEVELS.index(annotation.levels[-1])
        return LEVELS[min(last + 1, len(LEVELS) - 1)]
    return "L1"


def open_into(timepoint: str, opened: OpenedFilm) -> Slot:
    """Open ``opened`` at ``timepoint`` with its stored / sidecar / new annotation."""
    initial = initial_annotation(opened, store(), timepoint, reader=reader() or None)
    slot = Slot(
        timepoint=timepoint,
        opened=opened,
        annotation=initial.annotation,
        origin=initial.origin,
        saved_to=initial.source if initial.origin == "store" else None,
    )
    _put(slot)
    set_widget(slot, "level", _default_level(initial.annotation))
    set_widget(slot, "treated", list(initial.annotation.treated_levels))
    for note in initial.notes:
        flash(timepoint, "warning", note)
    return slot


def open_samples(*, first_only: bool = False) -> None:
    """Open the sample series (``pre``, ``post``, ``followup`` when present).

    ``first_only`` opens the first film now and leaves the others to
    :func:`open_deferred_samples`: the first film reaches the browser before
    the others are decoded (the app's first session).
    """
    folder = samples_folder()
    found = sample_paths(folder) if folder is not None else {}
    if not found:
        flash("pre", "info", "No sample films were found; upload a film in the sidebar.")
        return
    items = list(found.items())
    now, later = (items[:1], items[1:]) if first_only else (items, [])
    if later and all(_decoded(path) for _, path in later):
        now, later = items, []  # decoded by an earlier session: nothing to wait for
    st.session_state[_DEFERRED] = later
    for timepoint, path in now:
        _open_sample(timepoint, path)


def open_deferred_samples(*, unless_awaited: bool = False) -> bool:
    """Open the sample films :func:`open_samples` left for later.

    They are opened once the first film no longer competes with them: when its
    viewer reports its first frame (the editor's ``drawn`` state), at the next
    page run, or at the end of a run that mounted no viewer asking for that
    report.  ``unless_awaited`` (the end of a page run) leaves them while such
    a report is awaited.  Returns whether any film was opened.

    A timepoint with a film open (one the reader opened first, or this sample
    opened by a run stopped before it could take it off the list) keeps it.

    A run stopped meanwhile (the reader opened a tab) leaves the films not yet
    opened to the next run.  Streamlit may stop a run at any read or write of
    the session state, so a film leaves the list only once it is open (or its
    error is shown): taken off first, it was lost when the run stopped while
    opening it.
    """
    state = st.session_state
    if unless_awaited and state.get(_AWAIT_FRAME):
        return False
    opened = False
    while state.get(_DEFERRED):
        timepoint, path = state[_DEFERRED][0]
        if get_slot(timepoint) is None:
            _open_sample(timepoint, path)
            opened = True
        state[_DEFERRED] = [(tp, p) for tp, p in state[_DEFERRED] if tp != timepoint]
    state.pop(_DEFERRED, None)
    state.pop(_AWAIT_FRAME, None)
    return opened


def announce_first_frame() -> bool:
    """Whether the viewer mounted now should report its first frame of the film.

    True while sample films wait to be decoded; the report (or the next page
    run) opens them (:func:`open_deferred_samples`).
    """
    if not st.session_state.get(_DEFERRED):
        return False
    st.session_state[_AWAIT_FRAME] = True
    return True


def awaiting_first_frame() -> bool:
    """Whether a viewer of an earlier run was asked to report its first frame."""
    return bool(st.session_state.get(_AWAIT_FRAME))


def _decoded(path: Path) -> bool:
    try:
        return _film_key(path) in _DECODED
    except OSError:
        return False


def _open_sample(timepoint: str, path: Path) -> None:
    try:
        film = _path_film(path)
        open_into(timepoint, open_path(path, film=film))
    except (VHeightError, OSError) as exc:
        flash(timepoint, "error", f"The sample film {path.name} could not be opened: {exc}")


# -- changing the annotation -------------------------------------------------------------


def commit(
    slot: Slot,
    annotation: Annotation,
    *,
    ack: int | None = None,
    python_change: bool = False,
    calibration_line: Any = dataclasses.MISSING,
) -> Slot:
    """Stamp, save atomically to the store, and make ``annotation`` current.

    ``python_change`` bumps the epoch so that the editor adopts the points.
    When the save fails the annotation stays current (so nothing typed is
    lost in this session) and an error says where saving failed.
    """
    annotator = reader()
    changes: dict[str, Any] = {"modified": now_iso()}
    if annotator:
        changes["annotator"] = annotator  # the reader's own annotation, never another's
    annotation = dataclasses.replace(annotation, **changes)
    saved_to = slot.saved_to
    key = slot.opened.store_key
    try:
        saved_to = store().save(key, annotation, reader=annotator or None)
    except (OSError, VHeightError) as exc:
        flash(
            slot.timepoint,
            "error",
            f"Could not save the annotation to {store().path_for(key, annotator or None)}: "
            f"{exc}. Download it from the Annotation panel to keep a copy.",
        )
    update: dict[str, Any] = {"annotation": annotation, "saved_to": saved_to, "edited": True}
    if ack is not None:
        update["ack"] = max(slot.ack, ack)
    if python_change:
        update["epoch"] = slot.epoch + 1
    if calibration_line is not dataclasses.MISSING:
        update["calibration_line"] = calibration_line
    new = dataclasses.replace(slot, **update)
    _put(new)
    return new


def _sync_treated(slot: Slot) -> None:
    set_widget(slot, "treated", list(slot.annotation.treated_levels))


def on_editor_edit(timepoint: str) -> None:
    """Editor callback: the browser sent a complete set of points."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    value = st.session_state.get(widget_key(slot, "editor")) or {}
    edit = EditorState.from_value(value.get("edit") if isinstance(value, Mapping) else None)
    if edit is None:
        return
    try:
        annotation = dataclasses.replace(slot.annotation, vertebrae=edit.vertebrae)
    except AnnotationError as exc:
        flash(timepoint, "error", f"That change was not kept: {exc}")
        _put(dataclasses.replace(slot, ack=max(slot.ack, edit.rev), epoch=slot.epoch + 1))
        return
    if annotation.vertebrae == slot.annotation.vertebrae:
        _put(
            dataclasses.replace(
                slot, ack=max(slot.ack, edit.rev), calibration_line=edit.calibration_line
            )
        )
        return
    commit(slot, annotation, ack=edit.rev, calibration_line=edit.calibration_line)


def sync_editor(timepoint: str) -> None:
    """Apply an editor edit newer than the last one applied (run at the start of each run).

    The editor's callback normally applies each edit at once; this catches an
    edit whose callback did not run (the widget state is the record of truth
    on the browser side), so no edit is ever dropped.
    """
    slot = get_slot(timepoint)
    if slot is None:
        return
    value = st.session_state.get(widget_key(slot, "editor"))
    if not isinstance(value, Mapping):
        return
    edit = EditorState.from_value(value.get("edit"))
    if edit is not None and edit.rev > slot.ack:
        on_editor_edit(timepoint)


def on_editor_level(timepoint: str) -> None:
    """Editor callback: the level was changed in the browser (N, Shift+N, a click)."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    value = st.session_state.get(widget_key(slot, "editor")) or {}
    level = value.get("active_level") if isinstance(value, Mapping) else None
    if level in LEVELS:
        set_widget(slot, "level", level)


def on_film_upload() -> None:
    """Sidebar uploader callback: open the uploaded film at the chosen timepoint."""
    state = st.session_state
    key = f"vh.upload.film.{state[UPLOAD_NONCE]}"
    uploaded = state.get(key)
    state[UPLOAD_ERROR] = None
    if uploaded is None:
        return
    timepoint = state.get(UPLOAD_TARGET, "pre")
    name = uploaded.name
    opened = _read_film(uploaded.getvalue(), name, timepoint)
    state[UPLOAD_NONCE] += 1  # a fresh, empty uploader: the upload read is released
    del uploaded, state[key]
    if isinstance(opened, str):
        state[UPLOAD_ERROR] = opened
        return
    if get_slot(timepoint) is not None:
        # Never replace a film silently: ask first (the sidebar shows the question).
        state[PENDING] = {"opened": opened, "name": name, "timepoint": timepoint}
        return
    _open_read(opened, timepoint)


def pending_open() -> dict[str, Any] | None:
    """The film waiting for "replace?" (``name``, ``timepoint``; ``samples`` for the series)."""
    return st.session_state.get(PENDING)


def confirm_pending(timepoint: str | None = None) -> None:
    """Open the waiting film at its timepoint (replacing that film), or at ``timepoint``."""
    state = st.session_state
    pending = state.get(PENDING)
    if pending is None:
        return
    # Forgotten once open: a run stopped while opening it (any read of the
    # session state may stop one) leaves the question for the next.
    if pending.get("samples"):
        open_samples()
    else:
        _open_read(pending["opened"], timepoint or pending["timepoint"])
    state.pop(PENDING, None)


def cancel_pending() -> None:
    """Forget the waiting film; the film open stays."""
    st.session_state.pop(PENDING, None)


def request_samples() -> None:
    """ "Open the sample series": at once when nothing is open, else after asking."""
    if slots():
        st.session_state[PENDING] = {"samples": True, "name": "the sample series"}
        return
    open_samples()


def open_upload(data: bytes, name: str, timepoint: str) -> str | None:
    """Open uploaded film bytes at ``timepoint``; returns an error sentence, or None."""
    opened = _read_film(data, name, timepoint)
    if isinstance(opened, str):
        return opened
    _open_read(opened, timepoint)
    return None


def _read_film(data: bytes, name: str, timepoint: str) -> OpenedFilm | str:
    """The uploaded film, or the sentence saying why it cannot be opened."""
    if timepoint not in TIMEPOINTS:
        return f"Unknown timepoint {timepoint!r}."
    try:
        return read_upload(data, name)
    except VHeightError as exc:
        return str(exc)
    except Exception as exc:  # a decoder failing in an unexpected way: still one message
        return f"{name}: the film could not be read ({type(exc).__name__}: {exc})"


def _open_read(opened: OpenedFilm, timepoint: str) -> None:
    """Open a film already read at ``timepoint`` and say so."""
    name = opened.name
    slot = open_into(timepoint, opened)
    st.session_state[TAB] = TIMEPOINT_LABELS[timepoint]  # show the film just opened
    for warning in opened.film.warnings:
        flash(timepoint, "warning", warning)
    origin = {
        "store": "its saved landmarks were restored",
        "sidecar": "its sidecar landmarks were loaded",
        "new": "no landmarks yet",
    }[slot.origin]
    flash(timepoint, "success", f"Opened {name} as {TIMEPOINT_LABELS[timepoint]}: {origin}.")


def on_annotation_upload(timepoint: str) -> None:
    """Annotation uploader callback: validate and adopt an annotation file."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    uploaded = st.session_state.get(widget_key(slot, "annotation_upload"))
    if uploaded is None:
        return
    try:
        annotation, warnings = read_annotation_upload(
            uploaded.getvalue(), uploaded.name, slot.opened, timepoint
        )
    except (VHeightError, UnicodeDecodeError) as exc:
        flash(timepoint, "error", f"The annotation was not loaded: {exc}")
        return
    slot = commit(slot, annotation, python_change=True)
    slot = dataclasses.replace(slot, origin="upload")
    _put(slot)
    _sync_treated(slot)
    for warning in warnings:
        flash(timepoint, "warning", warning)
    flash(timepoint, "success", f"Loaded {uploaded.name}: {len(annotation.levels)} level(s).")


def on_treated_change(timepoint: str) -> None:
    """Treated-levels multiselect callback."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    chosen = st.session_state.get(widget_key(slot, "treated")) or []
    annotation = dataclasses.replace(
        slot.annotation, treated_levels=tuple(level for level in LEVELS if level in chosen)
    )
    commit(slot, annotation)


def apply_calibration(timepoint: str) -> None:
    """Store a user calibration from the drawn line and the length typed in (mm)."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    line = slot.calibration_line
    length_mm = st.session_state.get(widget_key(slot, "cal_mm"))
    if line is None:
        flash(
            timepoint, "error", "Draw the calibration line first: click its two ends on the film."
        )
        return
    header = slot.opened.film.info.calibration
    aspect = header.aspect if header.is_calibrated else 1.0
    try:
        calibration = Calibration.from_known_length(
            line[0],
            line[1],
            float(length_mm or 0),
            aspect=aspect,
            description=f"{float(length_mm or 0):g} mm line drawn on the film",
        )
    except CalibrationError as exc:
        flash(timepoint, "error", f"Calibration not applied: {exc}")
        return
    slot = commit(slot, dataclasses.replace(slot.annotation, calibration=calibration))
    set_widget(slot, "cal_mode", False)
    flash(timepoint, "success", f"Calibrated: {calibration.describe()}.")


def remove_calibration(timepoint: str) -> None:
    slot = get_slot(timepoint)
    if slot is None:
        return
    commit(slot, dataclasses.replace(slot.annotation, calibration=None))
    flash(timepoint, "info", "User calibration removed: the film header's spacing applies.")


def clear_level(timepoint: str) -> None:
    """Delete every point of the active level."""
    slot = get_slot(timepoint)
    if slot is None:
        return
    level = st.session_state.get(widget_key(slot, "level"))
    if level not in slot.annotation.vertebrae:
        return
    commit(slot, slot.annotation.without_level(level), python_change=True)
    flash(
        timepoint,
        "info",
        f"All points of {level} were deleted (Ctrl+Z in the viewer restores them).",
    )


def revert_to_sidecar(timepoint: str) -> None:
    """Replace the stored edits of a film opened from disk by its sidecar file."""
    slot = get_slot(timepoint)
    if slot is None or slot.opened.path is None:
        return
    sidecar = sidecar_path(slot.opened.path)
    try:
        annotation, _ = read_annotation_upload(
            sidecar.read_bytes(), sidecar.name, slot.opened, timepoint
        )
    except (OSError, VHeightError) as exc:
        flash(timepoint, "error", f"{sidecar.name} could not be loaded: {exc}")
        return
    slot = commit(slot, annotation, python_change=True)
    slot = dataclasses.replace(slot, origin="sidecar")
    _put(slot)
    _sync_treated(slot)
    flash(timepoint, "success", f"Reloaded {sidecar.name}.")


# -- landmark refinement -----------------------------------------------------------------

_REFINED = "vh.refined"
_NOTES = "vh.refine.notes"


def note(timepoint: str, kind: str, text: str) -> None:
    """Queue a message of a snap or proposal, shown beside its buttons (the viewer stays put)."""
    st.session_state.setdefault(_NOTES, {}).setdefault(timepoint, []).append((kind, text))


def take_notes(timepoint: str) -> list[tuple[str, str]]:
    """The queued snap / proposal messages of a tab, to show; they leave the
    queue when the tab has been drawn to the end (:func:`messages_shown`)."""
    return _take(_NOTES, timepoint)


def selected_point(slot: Slot) -> tuple[str, str] | None:
    """The landmark selected in the editor, ``(level, point name)``, when it is placed.

    The editor reports its selection with a sequence number, on its own when
    only the selection changed (a click on a point, Tab) and inside each edit
    (a point dragged or placed is selected); the most recent report wins.
    """
    value = st.session_state.get(widget_key(slot, "editor"))
    if not isinstance(value, Mapping):
        return None
    reports = [value.get("selected")]
    edit = value.get("edit")
    if isinstance(edit, Mapping):
        reports.append(edit.get("selected"))
    latest: Mapping[str, Any] | None = None
    latest_seq = -1.0
    for report in reports:
        if not isinstance(report, Mapping):
            continue
        try:
            seq = float(report.get("seq", 0))
        except (TypeError, ValueError):
            continue
        if seq > latest_seq:
            latest, latest_seq = report, seq
    if latest is None:
        return None
    level, name = latest.get("level"), latest.get("name")
    if level not in LEVELS or not isinstance(name, str):
        return None
    if name not in slot.annotation.points(level):
        return None
    return (level, name)


def refine_radius(slot: Slot) -> float:
    """The search radius chosen for ``slot``, mm."""
    value = st.session_state.get(widget_key(slot, "radius"), DEFAULT_RADIUS_MM)
    try:
        radius = float(value)
    except (TypeError, ValueError):
        return DEFAULT_RADIUS_MM
    return radius if radius > 0 else DEFAULT_RADIUS_MM


def last_refinement(slot: Slot) -> dict[str, Any] | None:
    """The record of the last snap or proposal on ``slot``'s film (for its table)."""
    found = st.session_state.get(_REFINED, {}).get(slot.timepoint)
    if found is None or found.get("uid") != slot.uid:
        return None
    return found


def _remember_refinement(slot: Slot, title: str, result: RefineResult) -> None:
    st.session_state.setdefault(_REFINED, {})[slot.timepoint] = {
        "uid": slot.uid,
        "title": title,
        "records": result.records(),
        "warnings": list(result.warnings),
        "calibrated": result.calibration.is_calibrated,
    }


def _distance_text(distance_mm: float | None, distance_px: float) -> str:
    return f"{distance_px:.1f} px" if distance_mm is None else f"{distance_mm:.2f} mm"


_FLAG_TEXT = {
    "weak_edge": "no clear edge within the search radius",
    "ambiguous_edge": "two edges of similar strength (double contour)",
    "weak_wall_edge": "the wall's edge was not found; moved across the endplate only",
    "outside_image": "the search reaches outside the film",
    "doubled": "two endplate contours: placed midway between them",
    "spur_excluded": "a spur beyond the wall was left out: corner on the body's outline",
    "unstable": "snapping again kept moving it: no single edge position",
    "rejected_edge": "the edge found lies outside the body (pedicle, spur tip, soft tissue, rib, "
    "a neighbour's endplate)",
    "extrapolated": "predicted from levels on one side only: check it or place it yourself",
    "spacing_out_of_range": "the film's pixel spacing is implausible: nothing searched",
}


def _ready(timepoint: str) -> Slot | None:
    """The slot, with any editor edit not yet applied applied first."""
    sync_editor(timepoint)
    return get_slot(timepoint)


def snap_selected_point(timepoint: str) -> None:
    """Snap the landmark selected in the editor to the endplate edge (one undoable change)."""
    slot = _ready(timepoint)
    if slot is None:
        return
    target = selected_point(slot)
    if target is None:
        note(timepoint, "info", "Select a point in the viewer first (click it, or press Tab).")
        return
    level, name = target
    radius = refine_radius(slot)
    try:
        result = refine_annotation(
            slot.annotation, slot.opened.film, None, levels=[level], points=[name],
            radius_mm=radius,
        )  # fmt: skip
    except (VHeightError, ValueError) as exc:
        note(timepoint, "error", f"{level} {name} was not snapped: {exc}")
        return
    move = result.move(level, name)
    _remember_refinement(slot, f"Snap {level} {name}", result)
    detail = f" ({_FLAG_TEXT[move.flag]})" if move.flag in _FLAG_TEXT else ""
    if not move.moved:
        if not is_doubt(move.flag):
            note(timepoint, "info", f"{level} {name} already lies on its edge{detail}: not moved.")
        else:
            why = _FLAG_TEXT.get(str(move.flag), str(move.flag))
            note(timepoint, "warning", f"{level} {name} was left where it is: {why}.")
        return
    commit(slot, slot.annotation.with_point(level, name, move.xy), python_change=True)
    note(
        timepoint,
        "success",
        f"{level} {name} snapped: moved {_distance_text(move.distance_mm, move.distance_px)}"
        f"{detail}.",
    )


def snap_levels(timepoint: str, every: bool = False) -> None:
    """Snap the six landmarks of the chosen level, or of every level (one undoable change)."""
    slot = _ready(timepoint)
    if slot is None:
        return
    if every:
        levels = list(slot.annotation.levels)
        title = "Snap all levels"
    else:
        level = st.session_state.get(widget_key(slot, "level"))
        levels = [level] if level in slot.annotation.vertebrae else []
        title = f"Snap {level}"
    if not levels:
        note(timepoint, "info", "No landmark to snap on this level: place its points first.")
        return
    try:
        result = refine_annotation(
            slot.annotation, slot.opened.film, None, levels=levels, radius_mm=refine_radius(slot)
        )
    except (VHeightError, ValueError) as exc:
        note(timepoint, "error", f"The landmarks were not snapped: {exc}")
        return
    _remember_refinement(slot, title, result)
    for warning in result.warnings:
        note(timepoint, "warning", warning)
    summary = (
        f"{title}: {result.moved_count} of {len(result.moves)} point(s) moved, "
        f"{result.doubtful_count} flagged (see the table)."
    )
    moved = [m for m in result.moves if m.moved]
    if moved:
        largest = max(moved, key=lambda m: m.distance_px)
        summary += (
            f" Largest move: {_distance_text(largest.distance_mm, largest.distance_px)} "
            f"({largest.level} {largest.point})."
        )
    if result.moved_count == 0:
        note(timepoint, "info", summary)
        return
    commit(slot, result.annotation, python_change=True)
    note(timepoint, "success", summary)


def proposal_targets(slot: Slot) -> dict[str, str | None]:
    """Levels a proposal would place: ``"here"`` (the chosen level when it is empty),
    ``"above"`` and ``"below"`` (its empty neighbours); None where there is none."""
    level = st.session_state.get(widget_key(slot, "level"))
    if level not in LEVELS:
        return {"here": None, "above": None, "below": None}
    index = LEVELS.index(level)

    def empty(i: int) -> str | None:
        if 0 <= i < len(LEVELS) and not slot.annotation.points(LEVELS[i]):
            return LEVELS[i]
        return None

    return {"here": empty(index), "above": empty(index - 1), "below": empty(index + 1)}


def propose(timepoint: str, where: str) -> None:
    """Propose the six landmarks of an empty level (``where``: here, above, below)."""
    slot = _ready(timepoint)
    if slot is None:
        return
    level = proposal_targets(slot).get(where)
    if level is None:
        note(timepoint, "info", "That level already holds points (or there is none).")
        return
    try:
        result = propose_level_result(
            slot.annotation, slot.opened.film, None, level, radius_mm=refine_radius(slot)
        )
    except (VHeightError, ValueError) as exc:
        note(timepoint, "error", f"{level} was not proposed: {exc}")
        return
    _remember_refinement(slot, f"Propose {level}", result)
    slot = commit(slot, result.annotation, python_change=True)
    set_widget(slot, "level", level)
    for warning in result.warnings:
        note(timepoint, "warning", warning)
    note(
        timepoint,
        "success",
        f"{level} proposed ({result.doubtful_count} point(s) flagged, see the table): "
        "check every point.",
    )
