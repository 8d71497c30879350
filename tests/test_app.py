"""The app, driven headless with Streamlit's AppTest, and its plain-Python helpers.

Landmark edits are injected as the editor widget's state (what the browser
sends: the complete set of points, full-resolution pixels); the browser side
itself is covered by ``tests/browser``.  Expected numbers come from the core
(:func:`vheight.morphometry.measure` on the same annotation): these tests check
the wiring of the app, the core's own tests check the formulas.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import weakref
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from vheight.annotation import POINT_NAMES, load_annotation, sidecar_path
from vheight.errors import AnnotationError, ImageReadError
from vheight.loader import load_film
from vheight.morphometry import measure
from vheight.ui.editor import EditorState, make_display_image
from vheight.ui.films import open_path, read_annotation_upload, read_upload
from vheight.ui.main import md_escape
from vheight.ui.session import widget_key
from vheight.ui.store import AnnotationStore, content_key, film_key, store_folder
from vheight.ui.tables import grades_by_level, measurement_frame

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
SAMPLES = Path(os.environ.get("VHEIGHT_SAMPLES") or REPO / "sample_images")
TIMEOUT = 60
#: The reader of the app in these tests (``VHEIGHT_READER``: no name prompt).
READER = "Test Reader"


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv("VHEIGHT_STORE", str(folder))
    monkeypatch.setenv("VHEIGHT_SAMPLES", str(SAMPLES))
    monkeypatch.setenv("VHEIGHT_READER", READER)
    return folder


def start(at: AppTest) -> AppTest:
    """The app's first session as a browser sees it: the first run draws the pre
    film and leaves the other sample films for the viewer's report of its first
    frame; AppTest has no browser, so a second run (the next one a reader would
    cause) opens them."""
    at.run()
    assert not at.exception, at.exception
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(store_dir):
    return start(AppTest.from_file(str(APP), default_timeout=TIMEOUT))


def _saved(store_dir, slot):
    """Where the test reader's annotation of ``slot``'s film is stored."""
    return AnnotationStore(folder=store_dir).path_for(slot.opened.store_key, READER)


def _slot(at, timepoint="pre"):
    return at.session_state["vh.slots"][timepoint]


TABS = {"pre": 0, "post": 1, "followup": 2}


def _tables(at, timepoint="pre") -> list[pd.DataFrame]:
    """The film tab's measurement tables: the brief one beside the film, the full one."""
    tab = at.tabs[TABS[timepoint]]
    return [t.value for t in tab.table if "Grade" in t.value.columns]


def _table(at, timepoint="pre") -> pd.DataFrame:
    found = [t for t in _tables(at, timepoint) if "Reference" in t.columns]
    assert len(found) == 1, f"{timepoint}: expected one full measurement table, found {len(found)}"
    return found[0]


def _expected(timepoint: str, reference: str = "adjacent"):
    film = load_film(SAMPLES / f"{timepoint}.dcm")
    annotation = load_annotation(sidecar_path(SAMPLES / f"{timepoint}.dcm"))
    return measure(annotation, film.calibration, reference=reference)


def _edit(at, timepoint, vertebrae, *, rev, calibration_line=None):
    """Inject what the editor sends after an edit, then rerun."""
    slot = _slot(at, timepoint)
    at.session_state[widget_key(slot, "editor")] = {
        "edit": {
            "rev": rev,
            "vertebrae": {
                lvl: {n: list(xy) for n, xy in pts.items()} for lvl, pts in vertebrae.items()
            },
            "calibration_line": calibration_line,
        }
    }
    at.run()
    assert not at.exception, at.exception


def _points(annotation):
    return {level: dict(points) for level, points in annotation.vertebrae.items()}


# -- the app -----------------------------------------------------------------------------


def test_app_starts_on_the_measured_sample_series(app):
    slots = app.session_state["vh.slots"]
    assert set(slots) == {"pre", "post", "followup"}
    for timepoint, slot in slots.items():
        assert slot.opened.name == f"{timepoint}.dcm"
        assert slot.origin == "sidecar"
        assert slot.annotation.complete_levels, f"{timepoint}: no complete level"
    expected = _expected("pre")
    table = _table(app, "pre")
    unit = expected.unit
    assert list(table["Level"]) == [r["level"] for r in expected.records()]
    np.testing.assert_allclose(
        table[f"Ha ({unit})"].to_numpy(dtype=float),
        [
            np.nan if r["anterior_height"] is None else r["anterior_height"]
            for r in expected.records()
        ],
        rtol=1e-12,
    )
    assert not app.error


@pytest.fixture
def fresh_server(monkeypatch):
    """A server that has decoded no sample film yet (as at the app's first start)."""
    from vheight.ui import session

    session._cached_path_film.clear()
    monkeypatch.setattr(session, "_DECODED", weakref.WeakValueDictionary())
    yield
    session._cached_path_film.clear()


def _blank_png() -> bytes:
    """A black 300 x 200 PNG film."""
    ok, png = cv2.imencode(".png", np.zeros((300, 200), np.uint8))
    assert ok
    return png.tobytes()


def _upload_as(app, timepoint: str, name: str, data: bytes) -> None:
    """Upload the PNG ``data`` as ``name`` into ``timepoint`` through the sidebar."""
    app.sidebar.selectbox(key="vh.upload.target").set_value(timepoint).run()
    app.sidebar.file_uploader[0].set_value((name, data, "image/png")).run()


def _stop_once(monkeypatch, owner, name: str, *, when=lambda *args, **kwargs: True) -> list:
    """Make ``owner.name`` stop the run (as Streamlit does at a session-state
    access when the reader clicked meanwhile) the first time it is called
    with arguments ``when`` accepts; returns the list of calls it stopped."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    original = getattr(owner, name)
    stopped = []

    def stopping(*args, **kwargs):
        if not stopped and when(*args, **kwargs):
            stopped.append((args, kwargs))
            raise StopException()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, stopping)
    return stopped


def _names(at) -> dict[str, str]:
    """Timepoint -> the name of the film open there."""
    return {tp: slot.opened.name for tp, slot in at.session_state["vh.slots"].items()}


def test_a_sample_film_counts_as_decoded_only_while_it_is_held(fresh_server, monkeypatch):
    import gc

    from vheight.ui import session

    path = SAMPLES / "post.dcm"
    film = session._path_film(path)
    assert session._decoded(path)
    session._cached_path_film.clear()  # dropped by the cache, still held by a session
    monkeypatch.setattr(session, "load_film", lambda *a, **k: pytest.fail("decoded again"))
    assert session._decoded(path) and session._path_film(path) is film
    del film
    gc.collect()
    assert not session._decoded(path)  # nothing holds it: the next session decodes it


def test_the_first_film_is_not_held_back_by_the_others(store_dir, fresh_server):
    """The first run opens only the pre film; its viewer is asked to report its
    first frame, and the post and follow-up films are decoded after it (or at
    the next run), never in the run that sends the first film."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert set(at.session_state["vh.slots"]) == {"pre"}
    assert at.session_state["vh.samples.await_frame"] is True
    assert [tp for tp, _ in at.session_state["vh.samples.deferred"]] == ["post", "followup"]
    assert _tables(at, "pre")  # the first film is measured in that run
    at.run()
    assert not at.exception, at.exception
    assert _names(at) == {"pre": "pre.dcm", "post": "post.dcm", "followup": "followup.dcm"}
    assert "vh.samples.deferred" not in at.session_state
    # A later session of the same server has nothing left to wait for.
    again = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert set(again.session_state["vh.slots"]) == {"pre", "post", "followup"}


def test_a_run_stopped_while_a_deferred_sample_opens_leaves_it_to_the_next(
    store_dir, fresh_server, monkeypatch
):
    """Every read of the session state is a point where Streamlit stops a run (a
    click on a tab, say).  A run stopped while the follow-up sample was being
    opened must leave it for the next run: it was once dropped from the films
    waiting and never opened."""
    from vheight.ui import session

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert set(at.session_state["vh.slots"]) == {"pre"}
    stopped = _stop_once(
        monkeypatch,
        session,
        "initial_annotation",
        when=lambda opened, store, tp, **_: tp == "followup",
    )
    at.run()
    assert [args[2] for args, _ in stopped] == ["followup"]
    assert set(at.session_state["vh.slots"]) == {"pre", "post"}
    at.run()
    assert not at.exception, at.exception
    assert _names(at) == {"pre": "pre.dcm", "post": "post.dcm", "followup": "followup.dcm"}
    assert "vh.samples.deferred" not in at.session_state


def test_a_message_shown_by_a_stopped_run_is_shown_again(app, monkeypatch):
    """An upload's error (any tab's message) shown by a run that Streamlit then
    stopped (the reader clicked meanwhile) is gone with that run's page: it
    was taken off its queue all the same, and never read.  It stays queued
    until its tab is drawn to the end."""
    from vheight.ui import readers

    app.session_state["vh.flash"] = {"pre": [("error", "mine.dcm: not a DICOM file")]}
    stopped = _stop_once(monkeypatch, readers, "copy_offer")  # after the message was drawn
    app.run()
    assert stopped
    app.run()
    assert not app.exception, app.exception
    assert [e.value.replace("\\", "") for e in app.error] == ["mine.dcm: not a DICOM file"]
    app.run()  # seen: not shown again
    assert not app.error


def test_a_film_opened_before_its_deferred_sample_is_kept(store_dir, fresh_server):
    """A film uploaded as "Post" before the sample post film was decoded stays open."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert set(at.session_state["vh.slots"]) == {"pre"}
    at.session_state["vh.upload.target"] = "post"
    at.sidebar.file_uploader[0].set_value(("mine.png", _blank_png(), "image/png")).run()
    assert not at.exception, at.exception
    assert _names(at) == {"pre": "pre.dcm", "post": "mine.png", "followup": "followup.dcm"}
    assert at.session_state.get("vh.upload.pending") is None  # nothing to confirm


@pytest.mark.parametrize(
    "reference",
    [pytest.param("posterior", id="posterior"), pytest.param("max", id="max")],
)
def test_reference_method_changes_the_table(app, reference):
    before = _table(app, "pre")
    app.sidebar.selectbox(key="vh.reference").set_value(reference).run()
    assert not app.exception
    after = _table(app, "pre")
    expected = _expected("pre", reference).records()
    complete = [r for r in expected if r["complete"]]
    assert {r["reference_method"] for r in complete} <= {reference, "posterior"}
    assert list(after["Reference"]) == [r["reference_method"] or "" for r in expected]
    np.testing.assert_allclose(
        after["Max loss (%)"].to_numpy(dtype=float),
        [np.nan if r["max_loss_pct"] is None else r["max_loss_pct"] for r in expected],
        rtol=1e-12,
    )
    # The table really changed: the method column and at least one loss.
    assert list(before["Reference"]) != list(after["Reference"]) or not before.equals(after)
    assert not before["Loss P (%)"].equals(after["Loss P (%)"]) or not before["Loss A (%)"].equals(
        after["Loss A (%)"]
    )


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        pytest.param(
            "broken.dcm", b"this is not a radiograph " * 20, "not a DICOM file", id="garbage"
        ),
        pytest.param("empty.dcm", b"", "empty", id="empty"),
        pytest.param("cut.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cut.png", id="truncated-png"),
        pytest.param("bomb.png", None, "bomb.png: image too large to decode", id="png-bomb"),
    ],
)
def test_corrupt_upload_shows_one_clear_error(app, name, data, fragment):
    if data is None:  # 144 megapixels in a few KB, refused from its header
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (12000, 12000)).save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    before = _slot(app, "pre")
    app.sidebar.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 1, errors
    assert fragment in errors[0].replace("\\", "")
    assert "Traceback" not in errors[0]
    assert _slot(app, "pre") is before  # the open film is untouched


def test_png_upload_opens_a_new_film_keyed_by_content(app, tmp_path):
    image = np.zeros((300, 200), np.uint8)
    cv2.rectangle(image, (50, 60), (150, 240), 200, -1)
    ok, png = cv2.imencode(".png", image)
    assert ok
    app.sidebar.selectbox(key="vh.upload.target").set_value("followup").run()
    app.sidebar.file_uploader[0].set_value(("<b>lateral</b>.png", png.tobytes(), "image/png")).run()
    app.sidebar.button(key="vh.pending.replace").click().run()  # follow-up held the sample
    assert not app.exception
    assert not app.error
    slot = _slot(app, "followup")
    assert slot.opened.name == "<b>lateral</b>.png"
    assert slot.opened.store_key == content_key(png.tobytes())
    assert (slot.opened.film.rows, slot.opened.film.columns) == (300, 200)
    assert slot.origin == "new" and not slot.annotation.vertebrae
    # The file name reaches markdown escaped, never as HTML.
    shown = [s.value for s in app.success]
    assert any("\\<b\\>lateral\\</b\\>" in text for text in shown), shown


def test_opening_into_a_held_timepoint_asks_first(app):
    """A film uploaded as "Pre" while a pre film is open waits for an answer."""
    png = _blank_png()
    before = _slot(app, "pre")
    _upload_as(app, "pre", "new.png", png)
    assert not app.exception
    assert _slot(app, "pre") is before  # nothing replaced yet
    question = " ".join(w.value.replace("\\", "") for w in app.sidebar.warning)
    assert "Pre-augmentation already holds pre.dcm" in question and "new.png" in question
    app.sidebar.button(key="vh.pending.cancel").click().run()
    assert _slot(app, "pre") is before and not app.sidebar.warning

    # Ask again, then replace.
    app.sidebar.file_uploader[0].set_value(("new.png", png, "image/png")).run()
    app.sidebar.button(key="vh.pending.replace").click().run()
    assert not app.exception
    assert _slot(app, "pre").opened.name == "new.png"
    # The sample series asks too, now that films are open.
    sample = [b for b in app.sidebar.button if b.label == "Open the sample series"]
    sample[0].click().run()
    assert _slot(app, "pre").opened.name == "new.png"
    app.sidebar.button(key="vh.pending.replace").click().run()
    assert _slot(app, "pre").opened.name == "pre.dcm"


def test_a_run_stopped_while_replacing_keeps_the_question(app, monkeypatch):
    """The "Replace" click stopped while the film opens: the film open
    stays, and the question stays to be answered again (it was once forgotten,
    the uploaded film with it)."""
    from vheight.ui import session

    before = _slot(app, "pre")
    _upload_as(app, "pre", "new.png", _blank_png())
    stopped = _stop_once(monkeypatch, session, "initial_annotation")
    app.sidebar.button(key="vh.pending.replace").click().run()
    assert stopped and _slot(app, "pre") is before
    assert app.session_state["vh.upload.pending"]["name"] == "new.png"
    app.run()  # the run after: the question is shown again
    question = " ".join(w.value.replace("\\", "") for w in app.sidebar.warning)
    assert "new.png" in question
    app.sidebar.button(key="vh.pending.replace").click().run()
    assert not app.exception, app.exception
    assert _slot(app, "pre").opened.name == "new.png"
    assert "vh.upload.pending" not in app.session_state


def test_an_edit_is_saved_to_the_store_at_once(app, store_dir):
    slot = _slot(app, "pre")
    level = slot.annotation.complete_levels[0]
    points = _points(slot.annotation)
    x, y = points[level]["inferior_anterior"]
    points[level]["inferior_anterior"] = (x, y + 12.5)
    _edit(app, "pre", points, rev=1)

    slot = _slot(app, "pre")
    assert slot.ack == 1
    saved = AnnotationStore(folder=store_dir).path_for(slot.opened.store_key, READER)
    assert saved.is_file()
    stored = load_annotation(saved)
    assert stored.vertebrae[level]["inferior_anterior"] == (x, y + 12.5)
    assert stored.modified is not None
    # The table follows the edit: the anterior height is the core's on the edited points.
    expected = measure(stored, slot.opened.film.calibration).record(level)
    table = _table(app, "pre").set_index("Level")
    unit = expected["unit"]
    assert table.loc[level, f"Ha ({unit})"] == pytest.approx(expected["anterior_height"], rel=1e-12)

    # A new session (browser reload) restores the edit from the store.
    again = start(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    reopened = _slot(again, "pre")
    assert reopened.origin == "store"
    assert reopened.annotation.vertebrae[level]["inferior_anterior"] == (x, y + 12.5)


def test_a_stale_or_invalid_edit_is_not_kept(app):
    slot = _slot(app, "pre")
    level = slot.annotation.complete_levels[0]
    points = _points(slot.annotation)
    points[level]["superior_anterior"] = (1e7, 5.0)  # far outside the film
    _edit(app, "pre", points, rev=3)
    after = _slot(app, "pre")
    assert after.annotation.vertebrae == slot.annotation.vertebrae
    assert after.ack == 3 and after.epoch == slot.epoch + 1  # the editor is told to revert
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "not kept" in errors[0]


def test_new_level_placed_point_by_point_is_incomplete_then_measured(app):
    slot = _slot(app, "pre")
    free = next(lvl for lvl in ("T1", "T2", "T3") if lvl not in slot.annotation.vertebrae)
    points = _points(slot.annotation)
    points[free] = {}
    coords = [(100, 100), (150, 98), (200, 96), (100, 180), (150, 185), (200, 190)]
    for rev, (name, xy) in enumerate(zip(POINT_NAMES, coords, strict=True), start=1):
        points[free][name] = xy
        _edit(app, "pre", points, rev=rev)
        row = _table(app, "pre").set_index("Level").loc[free]
        if rev < 6:
            assert row["Grade"] == "incomplete"
    unit = _slot(app, "pre").opened.film.calibration.unit
    spacing = _slot(app, "pre").opened.film.calibration.row_spacing_mm
    assert row[f"Ha ({unit})"] == pytest.approx(80 * spacing, rel=1e-9)
    assert row[f"Hp ({unit})"] == pytest.approx(94 * spacing, rel=1e-9)


def test_treated_levels_are_saved(app, store_dir):
    slot = _slot(app, "pre")
    levels = list(slot.annotation.complete_levels[:2])
    app.multiselect(key=widget_key(slot, "treated")).set_value(levels).run()
    assert not app.exception
    stored = load_annotation(_saved(store_dir, slot))
    assert list(stored.treated_levels) == levels
    table = _table(app, "pre").set_index("Level")
    assert [lvl for lvl in table.index if table.loc[lvl, "Treated"]] == levels


def test_calibration_line_gives_a_user_calibration(app):
    slot = _slot(app, "pre")
    app.toggle(key=widget_key(slot, "cal_mode")).set_value(True).run()
    _edit(
        app,
        "pre",
        _points(slot.annotation),
        rev=1,
        calibration_line=[[100.0, 100.0], [100.0, 300.0]],
    )
    app.number_input(key=widget_key(slot, "cal_mm")).set_value(50.0).run()
    app.button(key=widget_key(slot, "cal_apply")).click().run()
    assert not app.exception
    calibration = _slot(app, "pre").annotation.calibration
    assert calibration is not None and calibration.label.value == "mm User"
    assert calibration.row_spacing_mm == pytest.approx(50.0 / 200.0 * calibration.aspect, rel=1e-9)
    table = _table(app, "pre")
    assert "Ha (mm)" in table.columns


def test_invalid_annotation_upload_lists_the_problems(app):
    slot = _slot(app, "pre")
    bad = {
        "format": "vheight.annotation",
        "version": 1,
        "vertebrae": {"L9": {"superior_anterior": [1, 2]}, "L1": {"superior_apex": [1, 2]}},
    }
    app.file_uploader(key=widget_key(slot, "annotation_upload")).set_value(
        ("bad.vheight.json", json.dumps(bad).encode(), "application/json")
    ).run()
    assert not app.exception
    errors = [e.value.replace("\\", "") for e in app.error]
    assert len(errors) == 1, errors
    assert "L9" in errors[0] and "superior_apex" in errors[0]
    assert _slot(app, "pre").annotation == slot.annotation


# -- plain helpers ------------------------------------------------------------------------


def test_upload_size_is_bounded():
    with pytest.raises(ImageReadError, match=r"big\.dcm: the file is .* upload limit"):
        read_upload(b"\x00" * 2048, "big.dcm", max_bytes=1024)


@pytest.mark.parametrize(
    ("uid", "data", "expected"),
    [
        pytest.param("1.2.840.113619.2.55", None, "1.2.840.113619.2.55", id="uid"),
        pytest.param(None, b"abc", content_key(b"abc"), id="no-uid"),
        pytest.param("../etc/passwd", b"abc", content_key(b"abc"), id="not-a-uid"),
    ],
)
def test_film_key(uid, data, expected):
    assert film_key(uid, data) == expected


def test_store_folder_from_environment(tmp_path):
    assert store_folder({"VHEIGHT_STORE": str(tmp_path)}) == tmp_path
    assert store_folder({}) == Path("~/.vheight/annotations").expanduser()
    store = AnnotationStore(folder=tmp_path)
    assert store.path_for("../../x").parent == tmp_path


def test_reopening_prefers_the_store_over_the_sidecar(tmp_path):
    film_path = SAMPLES / "pre.dcm"
    opened = open_path(film_path)
    store = AnnotationStore(folder=tmp_path)
    sidecar = load_annotation(sidecar_path(film_path))
    from vheight.ui.films import initial_annotation

    assert initial_annotation(opened, store, "pre").origin == "sidecar"
    edited = sidecar.without_level(sidecar.levels[0])
    store.save(opened.store_key, edited)
    found = initial_annotation(opened, store, "pre")
    assert found.origin == "store" and found.annotation.vertebrae == edited.vertebrae
    # A corrupt stored file is reported and the sidecar used instead.
    store.path_for(opened.store_key).write_text("{not json", encoding="utf-8")
    found = initial_annotation(opened, store, "pre")
    assert found.origin == "sidecar" and found.notes


def test_annotation_for_another_film_size_is_refused():
    opened = open_path(SAMPLES / "pre.dcm")
    annotation = load_annotation(sidecar_path(SAMPLES / "pre.dcm"))
    other = dataclasses.replace(
        annotation, image=dataclasses.replace(annotation.image, rows=10_000, columns=10_000)
    )
    from vheight.annotation import dumps_annotation

    with pytest.raises(AnnotationError, match="does not belong to pre.dcm"):
        read_annotation_upload(dumps_annotation(other).encode(), "x.json", opened, "pre")


@pytest.mark.parametrize(
    ("shape", "display"),
    [
        pytest.param((3000, 2400), (2048, 1638), id="large-downsampled"),
        pytest.param((500, 400), (500, 400), id="small-kept"),
    ],
)
def test_display_image_is_bounded_and_scaled(shape, display):
    pixels = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    image = make_display_image(pixels)
    assert (image.height, image.width) == display
    assert (image.rows, image.columns) == shape
    assert image.scale_y == pytest.approx(shape[0] / display[0])
    decoded = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded.shape == display


def _browser_lut(spec: dict, mapping) -> np.ndarray:
    """The grey level of each code as the viewer's script computes it (editor.js buildLut)."""
    m = np.arange(65536, dtype=np.float64) * mapping.scale + mapping.offset
    c, w = spec["center"], max(spec["width"], 1e-6)
    if spec["function"] == "SIGMOID":
        y = 1 / (1 + np.exp(np.clip(-4 * (m - c) / w, -80, 80)))
    elif spec["function"] == "LINEAR_EXACT":
        y = (m - c) / w + 0.5
    elif w <= 1:
        y = (m > c - 0.5).astype(float)
    else:
        y = (m - (c - 0.5)) / (w - 1) + 0.5
    y = np.clip(y, 0, 1)
    if spec["invert"]:
        y = 1 - y
    return np.floor(y * 255 + 0.5)


@pytest.mark.parametrize("window", [0, 1, "auto", (2200.0, 900.0)])
@pytest.mark.parametrize("invert", [False, True])
def test_the_browser_windows_the_codes_as_the_exports_do(window, invert):
    """Codes + the window spec give the grey levels of Film.render (the PNG export)."""
    from vheight.ui.editor import make_value_image, value_mapping, window_spec

    film = load_film(SAMPLES / "pre.dcm")
    mapping = value_mapping(film)
    assert mapping.exact  # 12-bit stored values, linear rescale: one code per value
    image = make_value_image(film, mapping)
    codes = np.frombuffer(image.data, "<u2").reshape(image.height, image.width)
    assert np.array_equal(codes * mapping.scale + mapping.offset, film.modality_values)
    preset = film.resolve_window(window)
    spec = window_spec(preset, invert=film.invert != invert, mapping=mapping)
    browser = _browser_lut(spec, mapping)[codes]
    server = np.floor(film.render(window=window, invert=invert) * 255 + 0.5)
    assert np.abs(browser - server).max() <= 1


def test_codes_of_a_region_and_of_a_rescaled_film():
    from vheight.film import ModalityTransform
    from vheight.ui.editor import make_value_image, value_mapping

    film = load_film(SAMPLES / "pre.dcm")
    rescaled = dataclasses.replace(
        film, modality=ModalityTransform(slope=0.5, intercept=-1024.0), stored_range=None
    )
    for item in (film, rescaled):
        mapping = value_mapping(item)
        crop = make_value_image(item, mapping, region=(100, 200, 400, 450))
        assert (crop.width, crop.height) == (300, 250)  # full resolution
        codes = np.frombuffer(crop.data, "<u2").reshape(crop.height, crop.width)
        np.testing.assert_allclose(
            codes * mapping.scale + mapping.offset, item.modality_values[200:450, 100:400]
        )
    with pytest.raises(ValueError, match="empty region"):
        make_value_image(film, value_mapping(film), region=(10, 10, 10, 20))


def test_a_window_dragged_in_the_viewer_becomes_the_films_window(app):
    """The editor's ``window`` report is the manual window: the PNG and comparison use it."""
    slot = _slot(app, "pre")
    app.session_state[widget_key(slot, "editor")] = {
        "window": {"center": 2300.0, "width": 800.0, "seq": 1}
    }
    app.run()
    assert not app.exception
    assert app.session_state[widget_key(slot, "window")] == "manual"
    assert app.session_state[widget_key(slot, "wc")] == 2300.0
    assert app.session_state[widget_key(slot, "ww")] == 800.0
    # A window beyond the sliders' range is clamped to it (the film's values).
    app.session_state[widget_key(slot, "editor")] = {
        "window": {"center": 1e9, "width": 800.0, "seq": 2}
    }
    app.run()
    assert not app.exception
    assert app.session_state[widget_key(slot, "wc")] == float(
        np.nanmax(slot.opened.film.modality_values)
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param({"rev": "x"}, id="bad-rev"),
        pytest.param({"rev": 1, "vertebrae": {"L1": {"superior_anterior": [1]}}}, id="short-point"),
        pytest.param({"rev": 1, "vertebrae": {"L1": {"superior_anterior": ["a", 2]}}}, id="text"),
        pytest.param(
            {"rev": 1, "vertebrae": {"L1": {"superior_anterior": [float("nan"), 2]}}}, id="nan"
        ),
    ],
)
def test_malformed_editor_state_is_ignored(value):
    assert EditorState.from_value(value) is None


def test_editor_state_parses_points_and_line():
    state = EditorState.from_value(
        {
            "rev": 4,
            "vertebrae": {"L1": {"superior_anterior": [1, 2.5]}, "L2": {}},
            "calibration_line": [[0, 0], [3, 4]],
        }
    )
    assert state == EditorState(
        rev=4,
        vertebrae={"L1": {"superior_anterior": (1.0, 2.5)}},
        calibration_line=((0.0, 0.0), (3.0, 4.0)),
    )


def test_tables_label_units_and_grades():
    records = [
        {
            "level": "L1",
            "complete": True,
            "unit": "mm",
            "anterior_height": 20.0,
            "grade": 2,
            "deformity_type": "wedge",
            "treated": True,
        },
        {"level": "L2", "complete": False, "unit": "mm", "anterior_height": None, "grade": None},
    ]
    frame = measurement_frame(records)
    assert list(frame["Grade"]) == ["2 moderate", "incomplete"]
    assert frame["Ha (mm)"].isna().tolist() == [False, True]
    assert grades_by_level(records) == {"L1": 2, "L2": None}


def test_markdown_escape():
    assert md_escape("<img src=x>*a*_[b](c)") == "\\<img src=x\\>\\*a\\*\\_\\[b\\]\\(c\\)"


def test_exports_are_the_command_line_documents_and_a_png():
    import csv
    import io

    from vheight.comparison import compare
    from vheight.ui import exports

    films = {tp: load_film(SAMPLES / f"{tp}.dcm") for tp in ("pre", "post")}
    measured = {
        tp: measure(
            load_annotation(sidecar_path(SAMPLES / f"{tp}.dcm")),
            films[tp].calibration,
            source=f"{tp}.vheight.json",
        )
        for tp in films
    }
    rows = list(csv.DictReader(io.StringIO(exports.measurement_csv(measured["pre"]))))
    assert [r["level"] for r in rows] == list(measured["pre"].levels)
    assert list(rows[0]) == list(measured["pre"].records()[0])
    document = json.loads(exports.measurement_json(measured["pre"], annotation_name="pre.json"))
    assert document["annotation"] == "pre.json"
    assert document["vertebrae"] == json.loads(json.dumps(measured["pre"].records()))
    comparison = compare(measured["pre"], measured["post"])
    assert json.loads(exports.comparison_json(comparison))["pre"] == "pre.vheight.json"
    png = exports.annotated_png(films["pre"].pixels, measured["pre"].annotation, measured["pre"])
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (films["pre"].rows, films["pre"].columns, 3)
    assert image.std(axis=2).max() > 0  # coloured overlays drawn over the grey film


def test_film_settings_survive_switching_tabs(app):
    slot = _slot(app, "pre")
    app.selectbox(key=widget_key(slot, "level")).set_value("T3").run()
    app.toggle(key=widget_key(slot, "invert")).set_value(True).run()
    for label in ("Comparison", "Post-augmentation", "Pre-augmentation"):
        app.session_state["vh.tab"] = label
        app.run()
        assert not app.exception, (label, app.exception)
    assert app.selectbox(key=widget_key(slot, "level")).value == "T3"
    assert app.toggle(key=widget_key(slot, "invert")).value is True
    assert list(_table(app, "pre")["Level"])  # the tab is drawn again, measured


def test_comparison_tab_shows_the_core_comparison(app):
    from vheight.comparison import compare

    app.session_state["vh.tab"] = "Comparison"
    app.run()
    assert not app.exception
    expected = compare(_expected("pre"), _expected("post"), _expected("followup"))
    shown = [d.value for d in app.tabs[3].dataframe]
    assert len(shown) == 1
    assert len(shown[0]) == len(expected.records())
    # The flags (the sample's new L2 fracture) have their own error box each; the
    # other warnings share one box.
    flags = [w for w in expected.warnings if "suspected at" in w]
    others = [w for w in expected.warnings if w not in flags]
    assert flags and len(app.tabs[3].error) == len(flags)
    boxes = [w.value.replace("\\", "") for w in app.warning]
    assert len(boxes) == (1 if others else 0)
    for warning in others:
        assert f"- {warning}" in boxes[0].splitlines()


def test_half_drawn_calibration_line_is_kept_but_not_applied(app):
    slot = _slot(app, "pre")
    app.toggle(key=widget_key(slot, "cal_mode")).set_value(True).run()
    _edit(app, "pre", _points(slot.annotation), rev=1, calibration_line=[[100.0, 100.0]])
    assert _slot(app, "pre").calibration_line == ((100.0, 100.0),)
    assert app.button(key=widget_key(slot, "cal_apply")).disabled
    assert _slot(app, "pre").annotation.calibration is None


def test_level_chosen_survives_an_empty_tab_and_the_comparison(app, tmp_path):
    slot = _slot(app, "post")
    app.session_state["vh.tab"] = "Post-augmentation"
    app.run()
    app.selectbox(key=widget_key(slot, "level")).set_value("T10").run()
    del app.session_state["vh.slots"]["followup"]  # an empty tab
    for label in ("Follow-up", "Comparison", "Post-augmentation"):
        app.session_state["vh.tab"] = label
        app.run()
        assert not app.exception, (label, app.exception)
    assert app.selectbox(key=widget_key(slot, "level")).value == "T10"


# -- exports built on demand ----------------------------------------------------------------


@pytest.fixture
def deferred(monkeypatch):
    """The callables behind the app's on-demand downloads, by file id (what a click runs)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    found = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, *args, **kwargs):
        file_id = original(self, data_callable, *args, **kwargs)
        found[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return found


def _download(at, deferred, key) -> bytes:
    """Press a download button built on demand: run its callable, as the server does."""
    button = at.get("download_button")
    found = [b for b in button if b.proto.id.endswith(key) or getattr(b, "key", None) == key]
    assert len(found) == 1, f"no single download button {key!r}"
    assert not found[0].proto.disabled, f"{key} is disabled"
    file_id = found[0].proto.deferred_file_id
    assert file_id in deferred, f"{key}: not a download built on demand"
    data = deferred[file_id]()
    return data.encode() if isinstance(data, str) else bytes(data)


def _pdf_text(data: bytes, tmp_path: Path) -> str:
    import shutil
    import subprocess

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(data)
    return subprocess.run(
        ["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout


def test_pdf_report_of_the_films_open_and_de_identified(deferred, app, tmp_path):
    slot = _slot(app, "pre")
    prefix = f"vh.pre.{slot.uid}"
    pdf = _download(app, deferred, f"{prefix}.report")
    assert pdf.startswith(b"%PDF")
    text = _pdf_text(pdf, tmp_path)
    assert "VHPHANTOM002026" in text and "pre.dcm" in text and "followup.dcm" in text
    app.checkbox(key=f"{prefix}.deidentify").check().run()
    assert not app.exception
    anonymous = _download(app, deferred, f"{prefix}.report")
    text = _pdf_text(anonymous, tmp_path)
    assert anonymous.startswith(b"%PDF")
    assert "VHPHANTOM002026" not in text and "pre.dcm" not in text
    # The same report from the comparison tab.
    app.session_state["vh.tab"] = "Comparison"
    app.run()
    assert not app.exception
    assert _download(app, deferred, "vh.comparison.report").startswith(b"%PDF")


def test_dicom_sr_and_presentation_state_of_a_film(deferred, app):
    import io

    import pydicom

    slot = _slot(app, "pre")
    sr = pydicom.dcmread(io.BytesIO(_download(app, deferred, widget_key(slot, "dl_sr"))))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.StudyInstanceUID == slot.opened.film.info.study_instance_uid
    pr = pydicom.dcmread(io.BytesIO(_download(app, deferred, widget_key(slot, "dl_gsps"))))
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy PS
    referenced = pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert referenced.ReferencedSOPInstanceUID == slot.opened.film.info.sop_instance_uid

    # The SR loads back as the film's annotation: the same landmarks.
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    app.file_uploader(key=widget_key(slot, "annotation_upload")).set_value(
        ("pre.sr.dcm", buffer.getvalue(), "application/dicom")
    ).run()
    assert not app.exception and not app.error
    restored = _slot(app, "pre").annotation
    assert set(restored.vertebrae) == set(slot.annotation.vertebrae)
    for level, points in slot.annotation.vertebrae.items():
        for name, xy in points.items():
            assert restored.vertebrae[level][name] == pytest.approx(xy, abs=1e-6)


def test_png_film_offers_no_dicom_export_and_says_why(deferred, app):
    from vheight.sr import SRExportError
    from vheight.ui import exports

    _upload_as(app, "followup", "lateral.png", _blank_png())
    app.sidebar.button(key="vh.pending.replace").click().run()
    coords = [(100, 100), (150, 98), (200, 96), (100, 180), (150, 185), (200, 190)]
    _edit(app, "followup", {"L1": dict(zip(POINT_NAMES, coords, strict=True))}, rev=1)
    slot = _slot(app, "followup")
    for name in ("dl_sr", "dl_gsps"):
        assert app.get("download_button")  # the film's export row is drawn
        button = [
            b for b in app.get("download_button") if b.proto.id.endswith(widget_key(slot, name))
        ]
        assert len(button) == 1 and button[0].proto.disabled
    captions = [c.value.replace("\\", "") for c in app.tabs[2].caption]
    assert any("is a PNG film" in c and "DICOM film" in c for c in captions), captions
    with pytest.raises(SRExportError, match="PNG film has no DICOM identity"):
        exports.film_sr(slot.opened, slot.annotation)
    # The PDF report still takes the PNG film.
    assert _download(app, deferred, f"vh.followup.{slot.uid}.report").startswith(b"%PDF")


# -- landmark refinement ----------------------------------------------------------------------


def _truth(timepoint="pre"):
    return load_annotation(sidecar_path(SAMPLES / f"{timepoint}.dcm"))


def _error_mm(slot, level, name, truth) -> float:
    spacing = slot.opened.film.calibration
    (x, y), (tx, ty) = slot.annotation.vertebrae[level][name], truth.vertebrae[level][name]
    return float(np.hypot((x - tx) * spacing.col_spacing_mm, (y - ty) * spacing.row_spacing_mm))


def _perturbed(slot, moves_mm):
    """The slot's points with some moved by (dx, dy) millimetres."""
    spacing = slot.opened.film.calibration
    points = _points(slot.annotation)
    for (level, name), (dx, dy) in moves_mm.items():
        x, y = points[level][name]
        points[level][name] = (x + dx / spacing.col_spacing_mm, y + dy / spacing.row_spacing_mm)
    return points


def test_snap_the_selected_point_back_to_the_edge(app, store_dir):
    truth = _truth()
    slot = _slot(app, "pre")
    assert app.button(key=widget_key(slot, "snap_point")).disabled  # nothing selected yet
    points = _perturbed(slot, {("L2", "superior_anterior"): (0.0, -1.5)})
    slot = _slot(app, "pre")
    at_editor = {
        "rev": 1,
        "vertebrae": {lvl: {n: list(xy) for n, xy in pts.items()} for lvl, pts in points.items()},
        "calibration_line": None,
        "selected": {"level": "L2", "name": "superior_anterior", "seq": 1},
    }
    app.session_state[widget_key(slot, "editor")] = {"edit": at_editor}
    app.run()
    slot = _slot(app, "pre")
    assert _error_mm(slot, "L2", "superior_anterior", truth) == pytest.approx(1.5, abs=1e-6)
    epoch = slot.epoch
    app.button(key=widget_key(slot, "snap_point")).click().run()
    assert not app.exception and not app.error
    slot = _slot(app, "pre")
    assert _error_mm(slot, "L2", "superior_anterior", truth) < 0.5
    assert slot.epoch == epoch + 1  # the editor adopts the snapped point
    stored = load_annotation(_saved(store_dir, slot))
    assert stored.vertebrae == slot.annotation.vertebrae
    assert any("snapped" in s.value for s in app.success)
    # Undo in the editor sends the previous points back: an ordinary edit, accepted.
    _edit(app, "pre", points, rev=2)
    assert _error_mm(_slot(app, "pre"), "L2", "superior_anterior", truth) == pytest.approx(
        1.5, abs=1e-6
    )


def test_snap_a_point_already_on_its_edge_says_so(app, store_dir):
    """The sample's points lie on their edges: snapping one moves nothing, and
    the app says so (it had said "snapped: moved 0.00 mm", as if it moved)."""
    slot = _slot(app, "pre")
    points = slot.annotation.vertebrae
    app.session_state[widget_key(slot, "editor")] = {
        "edit": {
            "rev": 1,
            "vertebrae": {
                lvl: {n: list(xy) for n, xy in pts.items()} for lvl, pts in points.items()
            },
            "calibration_line": None,
            "selected": {"level": "L2", "name": "superior_anterior", "seq": 1},
        }
    }
    app.run()
    slot = _slot(app, "pre")
    before, epoch = slot.annotation.vertebrae, slot.epoch
    app.button(key=widget_key(slot, "snap_point")).click().run()
    assert not app.exception and not app.error
    slot = _slot(app, "pre")
    assert slot.annotation.vertebrae == before and slot.epoch == epoch
    assert any("already lies on its edge" in s.value for s in app.info)
    assert not any("snapped" in s.value for s in app.success)


@pytest.mark.parametrize(
    ("button", "moves"),
    [
        pytest.param(
            "snap_level",
            {
                ("L2", "superior_anterior"): (0.0, 1.5),
                ("L2", "superior_middle"): (0.0, -1.5),
                ("L2", "inferior_posterior"): (0.0, 1.5),
                ("L2", "inferior_middle"): (0.0, 1.5),
            },
            id="vertebra",
        ),
        pytest.param(
            "snap_all",
            {("T11", "inferior_middle"): (0.0, -1.5), ("L3", "superior_posterior"): (0.0, 1.5)},
            id="all",
        ),
    ],
)
def test_snap_a_vertebra_or_every_level(app, store_dir, button, moves):
    truth = _truth()
    slot = _slot(app, "pre")
    app.selectbox(key=widget_key(slot, "level")).set_value("L2").run()
    _edit(app, "pre", _perturbed(slot, moves), rev=1)
    app.button(key=widget_key(slot, button)).click().run()
    assert not app.exception and not app.error
    slot = _slot(app, "pre")
    for level, name in moves:
        assert _error_mm(slot, level, name, truth) < 0.5, (level, name)
    stored = load_annotation(_saved(store_dir, slot))
    assert stored.vertebrae == slot.annotation.vertebrae
    # The moves are listed beside the editor.
    shown = [d.value for d in app.tabs[0].dataframe if "Flag" in d.value.columns]
    assert len(shown) == 1
    expected_rows = 6 if button == "snap_level" else 6 * len(slot.annotation.levels)
    assert len(shown[0]) == expected_rows


def test_propose_a_missing_level(app, store_dir):
    truth = _truth()
    slot = _slot(app, "pre")
    points = _points(slot.annotation)
    del points["L4"]
    _edit(app, "pre", points, rev=1)
    app.selectbox(key=widget_key(slot, "level")).set_value("L4").run()
    app.button(key=widget_key(slot, "propose_here")).click().run()
    assert not app.exception and not app.error
    slot = _slot(app, "pre")
    assert slot.annotation.is_complete("L4")
    worst = max(_error_mm(slot, "L4", name, truth) for name in POINT_NAMES)
    assert worst < 2.0
    stored = load_annotation(_saved(store_dir, slot))
    assert stored.is_complete("L4")
    # L4 now holds points: the buttons offer its empty neighbour below (L5) instead.
    assert app.button(key=widget_key(slot, "propose_below")).label.endswith("L5")
    assert app.button(key=widget_key(slot, "propose_above")).disabled


def test_propose_without_a_complete_level_explains(app):
    slot = _slot(app, "pre")
    points = _points(slot.annotation)
    kept = {"L1": dict(list(points["L1"].items())[:3])}
    _edit(app, "pre", kept, rev=1)
    app.selectbox(key=widget_key(slot, "level")).set_value("L2").run()
    button = app.button(key=widget_key(slot, "propose_here"))
    assert button.disabled and "six points of one level first" in button.help


@pytest.mark.parametrize(
    ("alone", "in_edit", "expected"),
    [
        pytest.param(
            {"level": "L3", "name": "inferior_middle", "seq": 4},
            {"level": "L2", "name": "superior_anterior", "seq": 3},
            ("L3", "inferior_middle"),
            id="click-after-drag",
        ),
        pytest.param(
            {"level": "L3", "name": "inferior_middle", "seq": 4},
            {"level": "L2", "name": "superior_anterior", "seq": 5},
            ("L2", "superior_anterior"),
            id="drag-after-click",
        ),
        pytest.param(
            {"level": None, "name": None, "seq": 6},
            {"level": "L2", "name": "superior_anterior", "seq": 5},
            None,
            id="deselected",
        ),
        pytest.param(
            {"level": "L5", "name": "superior_anterior", "seq": 7},
            {"level": "L2", "name": "superior_anterior", "seq": 5},
            None,
            id="not-placed",
        ),
        pytest.param(
            {"level": "L9", "name": "superior_anterior", "seq": 7}, None, None, id="bad-level"
        ),
    ],
)
def test_the_latest_selection_reported_by_the_editor_is_snapped(app, alone, in_edit, expected):
    slot = _slot(app, "pre")
    edit = {
        "rev": 1,
        "vertebrae": {
            lvl: {n: list(xy) for n, xy in pts.items()}
            for lvl, pts in slot.annotation.vertebrae.items()
        },
        "calibration_line": None,
        "selected": in_edit,
    }
    app.session_state[widget_key(slot, "editor")] = {"edit": edit, "selected": alone}
    app.run()
    assert not app.exception
    button = app.button(key=widget_key(slot, "snap_point"))
    assert button.disabled == (expected is None)
    if expected is not None:
        assert f"Snap {expected[0]} {expected[1]}," in button.help


# -- the comparison tab ---------------------------------------------------------------------


def _comparison(at):
    at.session_state["vh.tab"] = "Comparison"
    at.run()
    assert not at.exception, at.exception
    return at.tabs[3]


def _expected_comparison():
    from vheight.comparison import compare

    return compare(_expected("pre"), _expected("post"), _expected("followup"))


def test_comparison_tab_shows_the_films_and_the_treated_level_first(app):
    tab = _comparison(app)
    expected = _expected_comparison()
    l1 = {r["height"]: r for r in expected.records() if r["level"] == "L1"}
    assert l1["anterior"]["treated"]
    # The sample series: L1 anterior 16.92 -> 20.31 mm, +3.38 mm, 46.7 % of the lost height.
    assert round(l1["anterior"]["pre"], 2) == 16.92
    assert round(l1["anterior"]["post"], 2) == 20.31
    assert round(l1["anterior"]["restoration_pct_of_lost"], 1) == 46.7

    assert len(tab.get("image")) == 3
    captions = [c.value.replace("\\", "") for c in tab.caption]
    for label, name in (
        ("Pre-augmentation", "pre.dcm"),
        ("Post-augmentation", "post.dcm"),
        ("Follow-up", "followup.dcm"),
    ):
        assert any(c.startswith(label) and c.endswith(name) and "mm" in c for c in captions), (
            label,
            captions,
        )
    assert any("Same field of view on every film" in c for c in captions)

    cards = {m.label.split(" \u00b7 ")[0]: m for m in tab.metric}
    assert cards["Anterior"].label == "Anterior \u00b7 pre 16.92 mm"
    assert cards["Anterior"].value == "20.31 mm"
    assert cards["Anterior"].delta == "+3.38 mm \u00b7 46.7 % of lost"
    middle = l1["middle"]
    assert cards["Middle"].value == f"{middle['post']:.2f} mm"
    assert cards["Middle"].delta.startswith(f"+{middle['delta']:.2f} mm")
    # The middle height had lost 0.90 mm only: no percentage of it (the issue's
    # "188.1 % of lost" in green).
    assert round(middle["lost_pre"], 2) == 0.9
    assert cards["Middle"].delta.endswith(" \u00b7 % of lost: \u2013")
    # float noise is no change; the posterior height had lost nothing
    assert cards["Posterior"].delta == "0.00 mm \u00b7 % of lost: \u2013"
    notes = [c.value.replace("\\", "") for c in tab.caption]
    assert (
        "Middle: no % of lost height \u2014 only 0.90 mm lost before treatment, too little "
        "to mean anything." in notes
    ), notes
    assert any(
        c.startswith(
            "Posterior: L1 was 0.76 mm taller than its reference before treatment "
            "(mean of T12, L2, reference adjacent)"
        )
        for c in notes
    ), notes
    first = l1["anterior"]
    assert cards["Wedge angle"].value == f"{first['wedge_angle_post_deg']:.1f}\u00b0"
    assert cards["Wedge angle"].delta == f"{first['wedge_angle_change_deg']:.1f}\u00b0"
    grades = (first["grade_pre"], first["grade_post"], first["grade_followup"])
    assert cards["Genant grade"].value == " \u2192 ".join(str(g) for g in grades)

    (summary,) = [t.value for t in tab.table]
    assert list(summary["Height"]) == ["Anterior", "Middle", "Posterior"]
    np.testing.assert_allclose(
        summary["Follow-up (mm)"], [l1[h]["followup"] for h in ("anterior", "middle", "posterior")]
    )


def test_comparison_films_keep_the_window_chosen_in_their_tabs(app, monkeypatch):
    import vheight.ui.comparison as comparison_ui

    pre, post = _slot(app, "pre"), _slot(app, "post")
    app.selectbox(key=widget_key(pre, "window")).set_value("manual").run()
    app.session_state["vh.tab"] = "Post-augmentation"
    app.run()
    app.toggle(key=widget_key(post, "invert")).set_value(True).run()
    assert not app.exception, app.exception
    seen = {}
    shown = comparison_ui.display_pixels

    def spy(film, window, invert, **region):
        seen[film.info.name] = (window[0], invert)
        return shown(film, window, invert, **region)

    monkeypatch.setattr(comparison_ui, "display_pixels", spy)
    comparison_ui._rendered.clear()
    tab = _comparison(app)
    assert len(tab.get("image")) == 3
    assert seen == {
        "pre.dcm": ("manual", False),
        "post.dcm": ("preset", True),
        "followup.dcm": ("preset", False),
    }


def test_comparison_table_is_rounded_treated_first_and_dashes_missing(app):
    tab = _comparison(app)
    expected = _expected_comparison()
    (shown,) = [d.value for d in tab.dataframe]
    assert len(shown) == len(expected.records())
    # The sample follow-up's new L2 fracture leads, then the treated L1.
    flagged = [r for r in expected.records() if r["incident_fracture"]]
    assert [r["level"] for r in flagged] == ["L2"] * 3
    assert list(shown["Level"][:3]) == ["L2"] * 3
    assert set(shown["Flag"][:3]) == {"new fracture?"}
    treated = [r for r in expected.records() if r["treated"]]
    assert list(shown["Level"][3 : 3 + len(treated)]) == [r["level"] for r in treated]
    assert set(shown["Treated"][3 : 3 + len(treated)]) == {"yes"}
    assert "Change post \u2212 pre (mm)" in shown.columns
    cells = shown.astype(str).to_numpy().ravel().tolist()
    assert not [c for c in cells if c.startswith("-") and c.strip("-0.") == ""]
    assert "None" not in cells and "nan" not in cells
    # The sample's L1 posterior height lost nothing: no restoration of lost height.
    row = shown[(shown["Level"] == "L1") & (shown["Height"] == "posterior")].iloc[0]
    assert row["Restored (% of lost)"] == "\u2013"
    assert row["Change post \u2212 pre (mm)"] == "0.00"


def test_comparison_field_of_view_and_no_treated_level(app):
    from vheight.ui.comparison import FIELD_KEY

    _comparison(app)
    app.session_state[FIELD_KEY] = "all"
    app.run()
    assert not app.exception, app.exception
    assert len(app.tabs[3].get("image")) == 3
    for timepoint in ("pre", "post", "followup"):
        slot = _slot(app, timepoint)
        app.session_state["vh.slots"][timepoint] = dataclasses.replace(
            slot, annotation=slot.annotation.with_treated("L1", False)
        )
    app.run()
    assert not app.exception, app.exception
    tab = app.tabs[3]
    assert not tab.metric
    assert any("No level is marked treated" in i.value for i in tab.info)
    assert len(tab.get("image")) == 3


@pytest.mark.parametrize(
    ("value", "digits", "signed", "expected"),
    [
        pytest.param(-7.1e-15, 2, False, "0.00", id="negative-noise"),
        pytest.param(-0.0, 1, True, "0.0", id="negative-zero-signed"),
        pytest.param(3.38443, 2, True, "+3.38", id="signed"),
        pytest.param(-5.142, 1, True, "-5.1", id="negative"),
        pytest.param(None, 2, False, "\u2013", id="none"),
        pytest.param(float("nan"), 2, False, "\u2013", id="nan"),
        pytest.param(46.6666, 1, False, "46.7", id="percent"),
    ],
)
def test_display_numbers(value, digits, signed, expected):
    from vheight.ui.tables import fmt_number

    assert fmt_number(value, digits, signed=signed) == expected


def _view(rows, columns, points, spacing):
    from vheight.ui.comparison import FilmView

    return FilmView(
        rows=rows,
        columns=columns,
        points=tuple(points),
        row_spacing_mm=spacing,
        col_spacing_mm=spacing,
    )


def test_crops_share_one_field_of_view_in_mm():
    from vheight.ui.comparison import MIN_MARGIN_MM, crop_boxes

    views = {
        # The same 40 x 60 mm object at 0.2 and 0.1 mm/px.
        "pre": _view(2000, 1500, [(500, 500), (700, 800)], 0.2),
        "post": _view(2000, 1500, [(600, 600), (1000, 1200)], 0.1),
        # A film without points is shown whole.
        "followup": _view(400, 300, [], 0.1),
    }
    boxes, common = crop_boxes(views)
    assert common
    pre, post = boxes["pre"], boxes["post"]
    assert pre.columns * 0.2 == pytest.approx(post.columns * 0.1, abs=0.3)
    assert pre.rows * 0.2 == pytest.approx(post.rows * 0.1, abs=0.3)
    assert pre.rows * 0.2 >= 60 + 2 * MIN_MARGIN_MM - 0.3
    assert pre.left <= 500 and pre.right >= 700 and pre.top <= 500 and pre.bottom >= 800
    assert (boxes["followup"].rows, boxes["followup"].columns) == (400, 300)


def test_crops_stay_inside_the_film_and_uncalibrated_films_crop_alone():
    from vheight.ui.comparison import crop_boxes

    views = {
        "pre": _view(500, 400, [(5, 5), (100, 480)], None),
        "post": _view(500, 400, [(200, 200), (210, 220)], 0.1),
    }
    boxes, common = crop_boxes(views)
    assert not common
    for name, box in boxes.items():
        assert 0 <= box.left < box.right <= 400, name
        assert 0 <= box.top < box.bottom <= 500, name
    assert boxes["post"].rows < boxes["pre"].rows


def test_focus_is_the_treated_levels_and_their_neighbours():
    from vheight.ui.comparison import focus_levels

    annotation = load_annotation(SAMPLES / "pre.vheight.json")
    assert set(annotation.vertebrae) >= {"T12", "L1", "L2"}
    assert focus_levels(annotation, ["L1"]) == ("T12", "L1", "L2")
    assert focus_levels(annotation, ["T3"]) == ()


def test_comparison_warnings_in_one_box_and_mixed_labels_stay_in_mm(app):
    from vheight.calibration import Calibration
    from vheight.comparison import compare

    slot = _slot(app, "post")
    user = Calibration.user(row_spacing_mm=0.11, description="ruler <b>10 mm</b>")
    app.session_state["vh.slots"]["post"] = dataclasses.replace(
        slot, annotation=dataclasses.replace(slot.annotation, calibration=user)
    )
    tab = _comparison(app)
    measured = {
        tp: measure(_slot(app, tp).annotation, _slot(app, tp).opened.film.calibration)
        for tp in ("pre", "post", "followup")
    }
    expected = compare(measured["pre"], measured["post"], measured["followup"])
    # v1.1: different calibration labels keep mm (each film its own) and warn.
    assert expected.unit == "mm" and expected.warnings
    assert any(w.startswith("the calibration labels differ") for w in expected.warnings)
    (box,) = [w.value for w in tab.warning]
    lines = box.splitlines()
    assert lines[0].startswith("**Check before reading the numbers**")
    assert [line.replace("\\", "") for line in lines[1:]] == [
        f"- {w}"
        for w in expected.warnings
        if "suspected at" not in w  # flags: boxes of their own
    ]
    assert "<" not in box.replace("\\<", "")  # escaped: never HTML
    cards = {m.label.split(" \u00b7 ")[0]: m for m in tab.metric}
    anterior = next(
        r for r in expected.records() if r["level"] == "L1" and r["height"] == "anterior"
    )
    assert cards["Anterior"].value == f"{anterior['post']:.2f} mm"
    (shown,) = [d.value for d in tab.dataframe]
    assert "Pre (mm)" in shown.columns
    captions = [c.value.replace("\\", "") for c in tab.caption]
    assert any(c.startswith("Post-augmentation") and "mm User" in c for c in captions)


def test_comparison_of_pre_and_post_only(app):
    del app.session_state["vh.slots"]["followup"]
    tab = _comparison(app)
    assert len(tab.get("image")) == 2
    (shown,) = [d.value for d in tab.dataframe]
    assert not [c for c in shown.columns if "ollow" in c or "since post" in c]
    (summary,) = [t.value for t in tab.table]
    assert "Follow-up (mm)" not in summary.columns
    grades = {m.label: m.value for m in tab.metric}["Genant grade"]
    assert grades.count("\u2192") == 1


def test_display_pixels_of_a_region_under_a_window():
    from vheight.loader import load_film
    from vheight.ui.films import display_pixels, window_from_key

    film = load_film(SAMPLES / "pre.dcm")
    rows, columns = slice(100, 180), slice(40, 95)
    assert np.shares_memory(display_pixels(film, rows=rows, columns=columns), film.pixels)
    np.testing.assert_array_equal(
        display_pixels(film, rows=rows, columns=columns), film.pixels[rows, columns]
    )
    low, high = film.stored_range
    key = ("manual", (low + high) / 2, (high - low) / 3)
    for window, invert in ((key, False), (key, True), (("preset", 0), True)):
        expected = film.render(window=window_from_key(window), invert=invert)[rows, columns]
        region = display_pixels(film, window, invert, rows=rows, columns=columns)
        np.testing.assert_allclose(region, expected, atol=1e-6)
    assert window_from_key(("auto",)) == "auto"  # the percentile window
    with pytest.raises(ValueError, match="unknown window key"):
        window_from_key(("best",))


def test_dicom_exports_are_built_ahead_only_after_an_edit(app, monkeypatch):
    """The annotation a film opens with is not built in the background (that
    competed with the first film at start); an edited one is, while the reader
    looks at the edit."""
    from vheight.ui import exports

    started = []
    monkeypatch.setattr(
        exports, "prepare_dicom_exports", lambda opened, *a, **k: started.append(opened.name)
    )
    app.run()
    assert not app.exception, app.exception
    assert started == []
    slot = _slot(app, "pre")
    points = _points(slot.annotation)
    level = slot.annotation.complete_levels[0]
    x, y = points[level]["inferior_anterior"]
    points[level]["inferior_anterior"] = (x, y + 4.0)
    _edit(app, "pre", points, rev=1)
    assert started == ["pre.dcm"]
