"""Readers in the app (``streamlit.testing.v1.AppTest``): the name prompt, each reader's
own landmarks, the copy of another reader's points, the reader in the exports, and the
Agreement page."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from streamlit.testing.v1 import AppTest

from vheight.annotation import dumps_annotation, load_annotation
from vheight.ui.readers import clean_name
from vheight.ui.session import widget_key
from vheight.ui.store import AnnotationStore

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
SAMPLES = Path(os.environ.get("VHEIGHT_SAMPLES") or REPO / "sample_images")
TIMEOUT = 60


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv("VHEIGHT_STORE", str(folder))
    monkeypatch.setenv("VHEIGHT_SAMPLES", str(SAMPLES))
    monkeypatch.delenv("VHEIGHT_READER", raising=False)
    return folder


def _new(**params) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _name_yourself(at: AppTest, name: str) -> None:
    at.text_input(key="vh.reader.input").input(name)
    [submit] = [b for b in at.button if b.label == "Start reading"]
    submit.click().run()
    assert not at.exception, at.exception


def _slot(at, timepoint="pre"):
    return at.session_state["vh.slots"][timepoint]


def _edit(at, timepoint, vertebrae, *, rev):
    slot = _slot(at, timepoint)
    at.session_state[widget_key(slot, "editor")] = {
        "edit": {
            "rev": rev,
            "vertebrae": {
                lvl: {n: list(xy) for n, xy in pts.items()} for lvl, pts in vertebrae.items()
            },
            "calibration_line": None,
        }
    }
    at.run()
    assert not at.exception, at.exception


def _upload_pre(at):
    data = (SAMPLES / "pre.dcm").read_bytes()  # uploaded: no sidecar beside it
    at.sidebar.file_uploader[0].set_value(("pre.dcm", data, "application/dicom")).run()
    assert not at.exception, at.exception
    # The sample series is open at start: the app asks before replacing its pre film.
    for button in at.button:
        if button.key == "vh.pending.replace":
            button.click().run()
            assert not at.exception, at.exception
    slot = _slot(at)
    assert slot.opened.origin == "upload"
    return slot


def test_the_app_asks_the_reader_before_any_edit(store_dir):
    at = _new()
    assert any("Who is reading?" in m.value for m in at.markdown)
    assert len(at.tabs) == 0  # no film, no editor until the reader is named
    [submit] = [b for b in at.button if b.label == "Start reading"]
    submit.click().run()
    assert any("Type your name" in e.value for e in at.error)
    _name_yourself(at, "  Ada   Lovelace ")
    assert at.session_state["vh.annotator"] == "Ada Lovelace"
    assert at.query_params["reader"] in ("Ada Lovelace", ["Ada Lovelace"])
    assert len(at.tabs) == 5 and at.tabs[4].label == "Agreement"
    assert any("Reading as" in c.value and "Ada Lovelace" in c.value for c in at.caption)
    assert "Ada Lovelace" in [t.value for t in at.sidebar.text]


def test_the_name_is_kept_in_the_address_and_taken_from_the_environment(store_dir, monkeypatch):
    at = _new(reader="bob")
    assert at.session_state["vh.annotator"] == "bob" and len(at.tabs) == 5
    monkeypatch.setenv("VHEIGHT_READER", "carol")
    at = _new()
    assert at.session_state["vh.annotator"] == "carol"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "Type your name", id="empty"),
        pytest.param("x" * 65, "at most 64", id="long"),
        pytest.param("a\x00b", "control", id="control"),
    ],
)
def test_bad_names(text, message):
    with pytest.raises(ValueError, match=message):
        clean_name(text)


def test_each_reader_keeps_their_own_landmarks(store_dir):
    alice = _new()
    _name_yourself(alice, "alice")
    slot = _upload_pre(alice)
    assert slot.origin == "new" and slot.annotation.annotator == "alice"
    points = {"L1": {"superior_anterior": (400.0, 500.0), "superior_posterior": (600.0, 490.0)}}
    _edit(alice, "pre", points, rev=1)
    store = AnnotationStore(folder=store_dir)
    key = _slot(alice).opened.store_key
    saved = load_annotation(store.path_for(key, "alice"))
    assert saved.annotator == "alice" and saved.vertebrae["L1"]["superior_anterior"] == (400, 500)

    # Bob, in another browser session, opens the same film: it starts empty for him,
    # and he is offered a copy of alice's points.
    bob = _new()
    _name_yourself(bob, "bob")
    slot = _upload_pre(bob)
    assert slot.origin == "new" and not slot.annotation.vertebrae
    assert any("alice also annotated this film" in c.value for c in bob.caption)
    _edit(bob, "pre", {"L2": {"superior_anterior": (410.0, 900.0)}}, rev=1)
    assert load_annotation(store.path_for(key, "bob")).levels == ("L2",)
    assert load_annotation(store.path_for(key, "alice")).levels == ("L1",)
    assert not any("also annotated" in c.value for c in bob.caption)  # he has points now

    # Alice reloads: her own points, never bob's.
    again = _new(reader="alice")
    _upload_pre(again)
    assert _slot(again).origin == "store" and _slot(again).annotation.levels == ("L1",)


def test_start_from_a_copy_of_another_readers_points(store_dir):
    alice = _new(reader="alice")
    _upload_pre(alice)
    _edit(alice, "pre", {"L1": {"superior_anterior": (400.0, 500.0)}}, rev=1)
    bob = _new(reader="bob")
    _upload_pre(bob)
    [copy] = [b for b in bob.button if b.label == "Start from a copy"]
    copy.click().run()
    assert not bob.exception, bob.exception
    slot = _slot(bob)
    assert slot.annotation.vertebrae["L1"]["superior_anterior"] == (400.0, 500.0)
    assert slot.annotation.annotator == "bob"
    assert "Started from a copy of alice's landmarks" in slot.annotation.notes
    store = AnnotationStore(folder=store_dir)
    saved = load_annotation(store.path_for(slot.opened.store_key, "bob"))
    assert saved.annotator == "bob" and "copy of alice" in saved.notes
    assert load_annotation(store.path_for(slot.opened.store_key, "alice")).annotator == "alice"


def test_switching_reader_reopens_the_films_as_theirs(store_dir):
    at = _new(reader="alice")
    slot = _slot(at)
    points = {lv: dict(pts) for lv, pts in slot.annotation.vertebrae.items()}
    level = slot.annotation.levels[0]
    x, y = points[level]["inferior_anterior"]
    points[level]["inferior_anterior"] = (x, y + 9.0)
    _edit(at, "pre", points, rev=1)
    [switch] = [b for b in at.sidebar.button if b.label == "Switch reader"]
    switch.click().run()
    assert len(at.tabs) == 0
    _name_yourself(at, "bob")
    # Bob sees the film's sidecar (the points shipped with it), not alice's edit.
    slot = _slot(at)
    assert slot.origin == "sidecar"
    assert slot.annotation.vertebrae[level]["inferior_anterior"] == (x, y)


def test_the_reader_is_in_the_exports(store_dir):
    at = _new(reader="Dr Alice")
    slot = _slot(at)
    points = {lv: dict(pts) for lv, pts in slot.annotation.vertebrae.items()}
    _edit(at, "pre", points | {"L5": {"superior_anterior": (500.0, 1500.0)}}, rev=1)
    slot = _slot(at)
    assert slot.annotation.annotator == "Dr Alice"
    from vheight.ui import exports

    sr = pydicom.dcmread(io.BytesIO(exports.film_sr(slot.opened, slot.annotation)))
    names = []
    for item in sr.ContentSequence:
        if getattr(item, "PersonName", None) is not None:
            names.append(str(item.PersonName))
    assert "Dr Alice^" in names
    document = json.loads(dumps_annotation(slot.annotation))
    assert document["annotator"] == "Dr Alice"
    # The PDF report's header names who placed the landmarks.
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        if os.environ.get("CI"):
            pytest.fail("pdftotext (poppler-utils) is missing")
        pytest.skip("pdftotext (poppler-utils) is missing: the PDF text is not checked")
    pdf = exports.report_pdf([(slot.opened, slot.annotation)], reference="adjacent")
    text = subprocess.run(
        [pdftotext, "-layout", "-", "-"], input=pdf, capture_output=True, check=True
    ).stdout.decode("utf-8")
    assert re.search(r"Landmarks placed by\s+Dr Alice", text), text[:2000]


def test_the_agreement_page_lists_the_readers_of_the_store(store_dir):
    for reader, dy in (("alice", 1.0), ("bob", 4.0)):
        at = _new(reader=reader)
        slot = _slot(at)
        points = {
            lv: {n: (x, y + dy * (n == "inferior_anterior")) for n, (x, y) in pts.items()}
            for lv, pts in slot.annotation.vertebrae.items()
        }
        _edit(at, "pre", points, rev=1)
    at.session_state["vh.tab"] = "Agreement"  # open the Agreement tab
    at.run()
    assert not at.exception, at.exception
    tab = at.tabs[4]
    frames = [d.value for d in tab.dataframe]
    readers = next(f for f in frames if "Reader" in f.columns)
    assert list(readers["Reader"]) == ["alice", "bob"]
    quantities = next(f for f in frames if "Quantity" in f.columns)
    anterior = quantities.set_index("Quantity").loc["Anterior height"]
    n = len(_slot(at).annotation.complete_levels)
    assert anterior["n"] == n
    assert anterior["bias"] > 0  # bob's anterior heights are 3 px longer
    # The store keeps no film, but the film open in the session calibrates its readings.
    assert anterior["unit"] == "mm"
    assert any("2 readers" in m.value for m in tab.markdown)
    # One Bland-Altman plot per quantity with data (the six of them).
    assert len(tab.get("image")) == 6
