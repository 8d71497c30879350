"""The app's PACS section through Streamlit's AppTest, against a real Orthanc.

The archive holds the sample study (three films) and a reader's earlier
results of the pre and post films.  Opening a film with an earlier result
must put that film's own landmarks on it: a result chosen while the list
still showed another film's results (the film was changed just before the
click) is refused, and nothing is opened.
"""

from __future__ import annotations

import pytest
from _orthanc import sample_archive
from streamlit.testing.v1 import AppTest

from vheight.pacs import Archive
from vheight.ui import pacs

PATIENT_ID = "VHPHANTOM002026"
READER = "Dr Lee"
TIMEOUT = 60


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with sample_archive(tmp_path_factory.mktemp("pacs-app"), READER) as server:
        yield server


def _open_script():
    """The button's callback, run as a Streamlit script (AppTest cannot set the
    app's film and result selectors: their labels are formatted from the
    session)."""
    from vheight.ui import pacs, session

    session.init_session(samples=None)
    pacs._open()


@pytest.fixture
def study(archive):
    client = Archive(archive.dicomweb)
    (found,) = client.search(patient_id=PATIENT_ID)
    return client.study(found.study_instance_uid)


@pytest.fixture
def env(archive, tmp_path, monkeypatch):
    (tmp_path / "no-samples").mkdir()
    monkeypatch.setenv("VHEIGHT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("VHEIGHT_SAMPLES", str(tmp_path / "no-samples"))
    monkeypatch.setenv("VHEIGHT_READER", READER)
    monkeypatch.setenv("VHEIGHT_PACS_CACHE", str(tmp_path / "cache"))


def _film_and_result(study, name: str):
    """The SOP Instance UIDs of the sample film ``name`` and of its result."""
    (film,) = [f for f in study.films if f"({name})" in f.series_description]
    (result,) = [r for r in study.results if r.facts.film == film.sop_instance_uid]
    return film.sop_instance_uid, result.facts.sop_instance_uid


def _open(archive, study, film: str, result: str, timepoint: str) -> AppTest:
    """ "Open from the archive" with ``film``, ``result`` and ``timepoint`` chosen."""
    at = AppTest.from_function(_open_script, default_timeout=TIMEOUT)
    at.session_state[pacs.URL] = archive.dicomweb
    at.session_state[pacs.STUDIES] = [study]
    at.session_state[pacs.FILM] = film
    at.session_state[pacs.TARGET] = timepoint
    at.session_state[pacs.RESULT] = result
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_film_opens_with_its_own_result(archive, study, env):
    post, post_result = _film_and_result(study, "post")
    at = _open(archive, study, post, post_result, "post")
    kind, text = at.session_state[pacs.MESSAGE]
    assert kind == "success" and f"with the result of {READER}" in text, text
    slot = at.session_state["vh.slots"]["post"]
    assert slot.opened.film.info.sop_instance_uid == post
    assert slot.annotation.image.sop_instance_uid == post
    assert len(slot.annotation.levels) == 7


def test_a_result_of_another_film_is_refused_and_nothing_is_opened(archive, study, env):
    """The post film with the pre film's result, as a click right after the
    film was changed sends it (the list still showed the pre film's results):
    the pre film's landmarks were put on the post film, measured with its
    calibration, and the comparison showed a "same film" warning with post
    heights 3 % off the true ones."""
    _, pre_result = _film_and_result(study, "pre")
    post, _ = _film_and_result(study, "post")
    at = _open(archive, study, post, pre_result, "post")
    kind, text = at.session_state[pacs.MESSAGE]
    assert kind == "warning" and "another film" in text and "nothing was opened" in text, text
    slots = at.session_state["vh.slots"] if "vh.slots" in at.session_state else {}
    assert "post" not in slots
    assert at.session_state[pacs.RESULT] == ""  # the choice is cleared
