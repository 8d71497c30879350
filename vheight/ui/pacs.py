"""The app's PACS section (sidebar): open films from a DICOMweb archive, store results back.

- The server: its DICOMweb root URL (``VHEIGHT_PACS_URL`` by default, or
  typed in), with an optional user and password.
- Search by patient ID or accession number: the patient's studies (all of
  them, so that priors in other studies can be compared) with their dates,
  and their films with the vheight results each holds.
- Open a film as pre / post / follow-up; optionally load an earlier vheight
  result of that film (the current one of a reader, or a replaced version)
  instead of the landmarks this computer stored.
- One button stores the results of every film opened from the archive (SR +
  GSPS, each SR naming the one it replaces) and says what was stored.

Films retrieved are kept in a cache folder on this computer (one file per
SOP Instance UID, written atomically), so that reopening one is immediate.
Everything talking to the archive goes through :mod:`vheight.pacs`; every
fault is one sentence shown in the section.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from vheight.errors import VHeightError
from vheight.ui import session

if TYPE_CHECKING:  # vheight.pacs (requests, DICOMweb, highdicom) is imported when first used
    from vheight.pacs import Archive, Film, Study

__all__ = ["sidebar_section", "cache_folder", "URL_ENV"]

URL_ENV = "VHEIGHT_PACS_URL"
URL = "vh.pacs.url"
USER = "vh.pacs.user"
PASSWORD = "vh.pacs.password"
KEY_KIND = "vh.pacs.key_kind"
KEY = "vh.pacs.key"
STUDIES = "vh.pacs.studies"
FILM = "vh.pacs.film"
TARGET = "vh.pacs.target"
RESULT = "vh.pacs.result"
MESSAGE = "vh.pacs.message"
OPENED = "vh.pacs.opened"  # timepoint -> (server URL, SOP Instance UID)
_KINDS = {"patient": "Patient ID", "accession": "Accession number"}
_NO_RESULT = ""
_URL = re.compile(r"https?://[^\s`]+?(?=[.,:;)]?(?:\s|$))")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def cache_folder() -> Path:
    """Where retrieved films are kept (``VHEIGHT_PACS_CACHE``, else a temporary folder)."""
    folder = os.environ.get("VHEIGHT_PACS_CACHE")
    return Path(folder) if folder else Path(tempfile.gettempdir()) / "vheight-pacs"


def _archive() -> Archive:
    from vheight.pacs import Archive

    state = st.session_state
    return Archive(
        str(state.get(URL) or ""),
        user=(state.get(USER) or "").strip() or None,
        password=state.get(PASSWORD) or None,
    )


def _say(kind: str, text: str) -> None:
    st.session_state[MESSAGE] = (kind, text)


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 else (text or "no date")


def _studies() -> list[Study]:
    return list(st.session_state.get(STUDIES) or [])


def _films() -> dict[str, tuple[Study, Film]]:
    return {f.sop_instance_uid: (s, f) for s in _studies() for f in s.films}


def _film_label(uid: str) -> str:
    found = _films().get(uid)
    if found is None:
        return uid
    study, film = found
    readers = sorted(
        {r.facts.reader or "?" for r in study.current_results() if r.facts.film == uid}
    )
    done = f" · results: {', '.join(readers)}" if readers else ""
    name = film.series_description or film.file_name()
    return f"{_date(film.date)} · {film.modality} · {name}{done}"


# -- callbacks ----------------------------------------------------------------------------


def _search() -> None:
    state = st.session_state
    key = str(state.get(KEY) or "").strip()
    if not key:
        _say("warning", "Type a patient ID or an accession number to search.")
        return
    try:
        archive = _archive()
        if state.get(KEY_KIND) == "accession":
            found = archive.search(accession=key)
            patients = sorted({s.patient_id for s in found if s.patient_id})
            # The patient's other studies too: priors are compared across studies.
            for patient in patients:
                known = {s.study_instance_uid for s in found}
                found += [
                    s
                    for s in archive.search(patient_id=patient)
                    if s.study_instance_uid not in known
                ]
        else:
            found = archive.search(patient_id=key)
    except VHeightError as exc:
        state[STUDIES] = []
        _say("error", str(exc))
        return
    found.sort(key=lambda s: (s.study_date, s.study_time))
    state[STUDIES] = found
    state.pop(FILM, None)
    films = sum(len(s.films) for s in found)
    if not found:
        _say(
            "info",
            f"No study of {_KINDS[state.get(KEY_KIND) or 'patient']} {key} on {archive.url}.",
        )
    else:
        counts = f"{_plural(len(found), 'study', 'studies')}, {_plural(films, 'film')}"
        _say("success", f"{counts} on {archive.url}.")


def _retrieve(archive: Archive, film: Film) -> Path:
    """The film in the cache folder (retrieved once, written atomically)."""
    folder = cache_folder() / film.study_instance_uid
    path = folder / f"{film.sop_instance_uid}.dcm"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".part-", suffix=".dcm", dir=folder)
    os.close(handle)
    try:
        archive.retrieve_to(film, temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def _open() -> None:
    from vheight.sr import annotation_from_sr
    from vheight.ui.films import open_path

    state = st.session_state
    uid = state.get(FILM)
    timepoint = state.get(TARGET) or "pre"
    found = _films().get(uid or "")
    if found is None:
        _say("warning", "Search, then choose a film to open.")
        return
    study, film = found
    result_uid = state.get(RESULT) or _NO_RESULT
    # The result chosen must be one of this film's: a choice made while the
    # list still showed another film's results (the film changed just before)
    # would put that film's landmarks on this one.
    results = [
        r
        for r in study.results
        if r.facts.sop_instance_uid == result_uid and r.facts.film == film.sop_instance_uid
    ]
    if result_uid and not results:
        state[RESULT] = _NO_RESULT
        _say(
            "warning",
            f"The earlier result chosen is of another film than "
            f"{film.series_description or 'the film chosen'}: nothing was opened. Choose the "
            "result again, then open.",
        )
        return
    try:
        archive = _archive()
        path = _retrieve(archive, film)
        opened = open_path(path)
        loaded = ""
        annotation = None
        if results:
            result = results[0]
            ds = archive.retrieve(
                study.study_instance_uid,
                result.facts.series_instance_uid,
                result.facts.sop_instance_uid,
            )
            annotation = annotation_from_sr(ds, image_file=path.name)
            named = annotation.image.sop_instance_uid
            if named and named != film.sop_instance_uid:
                raise VHeightError(
                    f"the result of {result.facts.reader or 'an unnamed reader'} names another "
                    f"film (SOP Instance UID {named}) than {film.sop_instance_uid}: not opened"
                )
            annotation = dataclasses.replace(annotation, timepoint=timepoint)
            loaded = (
                f" with the result of {result.facts.reader or 'an unnamed reader'} "
                f"({_plural(len(annotation.levels), 'level')})"
            )
        slot = session.open_into(timepoint, opened)
        if annotation is not None:
            slot = session.commit(slot, annotation, python_change=True)
            session.set_widget(slot, "treated", list(annotation.treated_levels))
    except (VHeightError, OSError) as exc:
        _say("error", str(exc))
        return
    state.setdefault(OPENED, {})[timepoint] = (archive.url, film.sop_instance_uid)
    state[session.TAB] = session.TIMEPOINT_LABELS[timepoint]
    text = (
        f"Opened {film.modality} of {_date(film.date)} ({film.series_description}) as "
        f"{session.TIMEPOINT_LABELS[timepoint]}{loaded}."
    )
    session.flash(timepoint, "success", text)
    _say("success", text)


def _to_store() -> list[Any]:
    """The open slots whose film came from the archive and holds landmarks."""
    opened = st.session_state.get(OPENED) or {}
    out = []
    for timepoint, (_url, uid) in opened.items():
        slot = session.get_slot(timepoint)
        if slot is None or slot.opened.film.info.sop_instance_uid != uid:
            continue
        if slot.annotation.vertebrae and slot.opened.dicom_source is not None:
            out.append(slot)
    return out


def _store() -> None:
    state = st.session_state
    slots = _to_store()
    if not slots:
        _say("warning", "No film opened from the archive has landmarks to store yet.")
        return
    reference = state.get(session.REFERENCE, "adjacent")
    done = []
    try:
        archive = _archive()
        for slot in slots:
            annotation = slot.annotation
            reader = str(state.get(session.ANNOTATOR, "") or "").strip()
            if reader and not annotation.annotator:
                annotation = dataclasses.replace(annotation, annotator=reader)
            record = archive.push_annotation(
                annotation,
                slot.opened.dicom_source,
                name=slot.opened.name,
                gsps=True,
                reference=reference,
            )
            replaced = "a new result" if record.replaces is None else "replacing the previous one"
            done.append(
                f"{session.TIMEPOINT_LABELS[slot.timepoint]}: SR with "
                f"{_plural(len(annotation.levels), 'level')} + GSPS, {replaced}"
            )
    except VHeightError as exc:
        stored = f" Stored before the failure: {'; '.join(done)}." if done else ""
        _say("error", f"{exc}.{stored}")
        return
    _say("success", f"Stored in {archive.url}: {'; '.join(done)}.")
    _refresh_results(archive)


def _refresh_results(archive: Archive) -> None:
    """Search the shown studies again, so that the new results are listed."""
    try:
        st.session_state[STUDIES] = [archive.study(s.study_instance_uid) for s in _studies()]
    except VHeightError:
        pass  # the store succeeded; the list is refreshed on the next search


# -- the section --------------------------------------------------------------------------


def sidebar_section() -> None:
    """The PACS section; call inside ``st.sidebar``."""
    state = st.session_state
    state.setdefault(URL, os.environ.get(URL_ENV, ""))
    state.setdefault(KEY_KIND, "patient")
    st.markdown("#### PACS")
    st.text_input(
        "DICOMweb server",
        key=URL,
        placeholder="http://pacs:8042/dicom-web",
        help=f"The archive's DICOMweb root; {URL_ENV} sets it at start.",
    )
    with st.expander("Login", expanded=False):
        st.text_input("User", key=USER)
        st.text_input("Password", key=PASSWORD, type="password")
    st.radio(
        "Search by", options=list(_KINDS), format_func=_KINDS.get, key=KEY_KIND, horizontal=True
    )
    st.text_input(_KINDS[state.get(KEY_KIND) or "patient"], key=KEY)
    st.button("Search the archive", on_click=_search, width="stretch")
    message = state.get(MESSAGE)
    if message:
        kind, text = message
        getattr(st, kind)(_escape(text))
    studies = _studies()
    if studies:
        for study in studies:
            st.caption(
                _escape(
                    f"{_date(study.study_date)} · {study.description or 'study'}"
                    + (f" · acc. {study.accession_number}" if study.accession_number else "")
                    + f" · {_plural(len(study.films), 'film')}, "
                    + _plural(len(study.current_results()), "current result")
                )
            )
        films = _films()
        if films:
            st.selectbox("Film", options=list(films), format_func=_film_label, key=FILM)
            st.selectbox(
                "Open the film as",
                options=list(session.TIMEPOINT_LABELS),
                format_func=session.TIMEPOINT_LABELS.get,
                key=TARGET,
            )
            uid = state.get(FILM) if state.get(FILM) in films else next(iter(films))
            study = films[uid][0]
            results = [r for r in study.results if r.facts.film == uid]
            options = [_NO_RESULT] + [r.facts.sop_instance_uid for r in results]
            labels = {r.facts.sop_instance_uid: _result_label(r) for r in results}
            labels[_NO_RESULT] = "none: the landmarks stored on this computer"
            if state.get(RESULT) not in options:
                state[RESULT] = _NO_RESULT
            st.selectbox(
                "Earlier vheight result",
                options=options,
                format_func=labels.get,
                key=RESULT,
                help="Load the landmarks of a result stored in the archive",
            )
            st.button("Open from the archive", on_click=_open, width="stretch")
    slots = _to_store()
    st.button(
        "Store results in the archive (SR + GSPS)",
        on_click=_store,
        disabled=not slots,
        width="stretch",
        help="The measurement report and presentation state of every film opened "
        "from the archive; each replaces the reader's previous result of that film",
    )


def _result_label(result: Any) -> str:
    facts = result.facts
    when = facts.content_datetime
    stamp = f"{_date(when[:8])} {when[8:10]}:{when[10:12]}" if len(when) >= 12 else when
    state = "current" if result.current else "replaced"
    return f"{facts.reader or 'unnamed reader'} · {stamp} · {state}"


def _escape(text: str) -> str:
    """``text`` shown literally by Markdown (file and server text is never markup).

    Server URLs are set as inline code: escaped, Markdown would still link them.
    """
    parts = []
    last = 0
    for match in _URL.finditer(text):
        parts.append(_MD_SPECIAL.sub(r"\\\1", text[last : match.start()]))
        parts.append(f"`{match.group(0)}`")
        last = match.end()
    parts.append(_MD_SPECIAL.sub(r"\\\1", text[last:]))
    return "".join(parts)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"
