"""Who is reading: the reader names themselves before the first edit.

The name is kept for the browser session (in the session state, and in the
page address as ``?reader=...`` so that a reload keeps it) and is the second
half of the store key (:mod:`vheight.ui.store`): each reader's landmarks of a
film are saved apart, and a film that another reader annotated opens empty
for this one, with an offer to start from a copy of the other's points
(recorded in the annotation's ``notes``).  The name is written as the
``annotator`` of every annotation this reader saves, and from there into
every export (annotation JSON, DICOM SR observer, PDF report).

Where the name comes from, first found: the name typed in this session, the
page address, the login (``st.user``, when the app runs behind one), the
``VHEIGHT_READER`` environment variable (a workstation with one reader);
else the app asks.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata

import streamlit as st

from vheight.ui import session
from vheight.ui.films import now_iso

__all__ = [
    "READER_ENV",
    "MAX_NAME",
    "clean_name",
    "init",
    "current",
    "set_reader",
    "gate",
    "header",
    "sidebar",
    "copy_offer",
    "copy_from",
]

#: Environment variable naming the reader of a single-reader workstation.
READER_ENV = "VHEIGHT_READER"
#: Longest reader name, characters.
MAX_NAME = 64
_PARAM = "reader"
_INPUT = "vh.reader.input"
_ERROR = "vh.reader.error"
_ASKED = "vh.reader.asked"


def clean_name(text: object) -> str:
    """A reader's name as stored: trimmed, inner runs of spaces collapsed.

    Raises
    ------
    ValueError
        Empty, longer than :data:`MAX_NAME`, or holding control characters.
    """
    name = " ".join(str(text or "").split())
    if not name:
        raise ValueError("Type your name (or initials) to start reading.")
    if len(name) > MAX_NAME:
        raise ValueError(f"A reader's name has at most {MAX_NAME} characters.")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError("A reader's name cannot hold control characters.")
    return name


def _login_name() -> str:
    try:
        user = st.user
        if user.get("is_logged_in"):
            return str(user.get("name") or user.get("email") or "")
    except Exception:  # no login configured: st.user says so in several ways
        return ""
    return ""


def _found_name() -> str:
    for candidate in (
        st.query_params.get(_PARAM, ""),
        _login_name(),
        os.environ.get(READER_ENV, ""),
    ):
        try:
            return clean_name(candidate)
        except ValueError:
            continue
    return ""


def init() -> None:
    """Before the session opens its films: take the reader's name where it is known."""
    state = st.session_state
    if state.get(_ASKED):
        return
    state[_ASKED] = True
    if not session.reader():
        state[session.ANNOTATOR] = _found_name()
    if state.get(session.ANNOTATOR):
        st.query_params[_PARAM] = state[session.ANNOTATOR]


def current() -> str:
    """The reader's name, ``""`` until they named themselves."""
    return session.reader()


def set_reader(name: str) -> None:
    """Read as ``name`` from now on: every open film is opened again with that reader's
    landmarks (their own saved annotation, the sidecar, or nothing)."""
    state = st.session_state
    state[session.ANNOTATOR] = clean_name(name)
    st.query_params[_PARAM] = state[session.ANNOTATOR]
    for timepoint, slot in list(session.slots().items()):
        session.open_into(timepoint, slot.opened)


def _on_submit() -> None:
    state = st.session_state
    try:
        set_reader(state.get(_INPUT, ""))
    except ValueError as exc:
        state[_ERROR] = str(exc)
    else:
        state[_ERROR] = None


def _on_switch() -> None:
    st.session_state[session.ANNOTATOR] = ""
    st.session_state[_INPUT] = ""
    if _PARAM in st.query_params:
        del st.query_params[_PARAM]


def gate() -> bool:
    """True when a reader is named; else draws the prompt (and nothing else may edit)."""
    if current():
        return True
    st.markdown("### Who is reading?")
    st.caption(
        "Each reader's landmarks are saved separately: nobody overwrites another reader's "
        "work, and your name is written into every annotation and export you make."
    )
    with st.form("vh.reader.form", border=True, width=420):
        st.text_input(
            "Your name or initials",
            key=_INPUT,
            max_chars=MAX_NAME,
            placeholder="e.g. A. Reader",
        )
        st.form_submit_button("Start reading", type="primary", on_click=_on_submit)
    error = st.session_state.get(_ERROR)
    if error:
        st.error(error)
    return False


def header() -> None:
    """The reader's name at the top of the page."""
    name = current()
    if name:
        st.caption(f"Reading as **{_escape(name)}**")


def sidebar() -> None:
    """The sidebar's reader block: who is reading, and a way to hand over."""
    st.markdown("#### Reader")
    name = current()
    if not name:
        st.caption("Name yourself in the page to start.")
        return
    st.text(name)
    st.button(
        "Switch reader",
        on_click=_on_switch,
        width="stretch",
        key="vh.reader.switch",
        help="Hand over to another reader: each reader's landmarks are kept apart",
    )


def copy_offer(slot: session.Slot) -> None:
    """When this reader has no point on a film another reader annotated: say so and
    offer to start from a copy of that reader's points."""
    if slot.annotation.vertebrae or not current():
        return
    others = [
        o
        for o in session.store().others(slot.opened.store_key, current())
        if o.annotation.vertebrae
    ]
    if not others:
        return
    names = [o.reader for o in others]
    with st.container(border=True):
        st.caption(
            f"{_escape(', '.join(names))} also annotated this film. You start from nothing; "
            "their landmarks stay theirs."
        )
        key = session.widget_key(slot, "copy_from")
        c1, c2 = st.columns([1.3, 1], vertical_alignment="bottom")
        c1.selectbox("Reader", options=names, key=key, label_visibility="collapsed")
        c2.button(
            "Start from a copy",
            on_click=lambda: copy_from(slot.timepoint, st.session_state.get(key) or names[0]),
            key=session.widget_key(slot, "copy_button"),
            help="Copy their points as your starting point (noted in your annotation)",
        )


def copy_from(timepoint: str, other: str) -> None:
    """Start this reader's annotation of the film at ``timepoint`` from ``other``'s points."""
    slot = session.get_slot(timepoint)
    if slot is None:
        return
    found = {o.reader: o for o in session.store().others(slot.opened.store_key, current())}
    source = found.get(other)
    if source is None:
        session.flash(timepoint, "error", f"No annotation of this film by {other} was found.")
        return
    copied = source.annotation
    note = (
        f"Started from a copy of {other}'s landmarks "
        f"(modified {copied.modified or 'at an unknown time'}) on {now_iso()}."
    )
    notes = "\n".join(n for n in (slot.annotation.notes, note) if n)
    annotation = dataclasses.replace(
        slot.annotation,
        vertebrae=copied.vertebrae,
        treated_levels=copied.treated_levels,
        calibration=copied.calibration,
        notes=notes,
    )
    slot = session.commit(slot, annotation, python_change=True)
    session.set_widget(slot, "treated", list(slot.annotation.treated_levels))
    session.flash(
        timepoint,
        "success",
        f"Started from a copy of {other}'s {len(copied.levels)} level(s): your changes are "
        "saved as yours.",
    )


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def _escape(text: str) -> str:
    """Text safe in Streamlit markdown (a reader's name is typed by a person)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))
