"""The app's Comparison tab, v1.1 (AppTest): patients, flags, honest percentages, references.

- A follow-up film of another patient replaces the comparison by the error
  until the reader confirms; then the comparison shows, with the warning.
- The sample follow-up's new L2 fracture leads the tab and is framed on the
  follow-up film.
- The reference selector offers ``nearest_normal``; every film's table names
  the levels each loss is measured against.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
SAMPLES = REPO / "sample_images"
TIMEOUT = 60


def other_patient_series(folder: Path) -> Path:
    """The sample series, its follow-up film relabelled as another patient's."""
    folder.mkdir(parents=True, exist_ok=True)
    for tp in ("pre", "post", "followup"):
        shutil.copy(SAMPLES / f"{tp}.vheight.json", folder)
        if tp == "followup":
            ds = pydicom.dcmread(SAMPLES / "followup.dcm")
            ds.PatientID = "OTHER0042"
            ds.save_as(folder / "followup.dcm")
        else:
            shutil.copy(SAMPLES / f"{tp}.dcm", folder)
    return folder


def _app(tmp_path, monkeypatch, samples: Path) -> AppTest:
    monkeypatch.setenv("VHEIGHT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("VHEIGHT_SAMPLES", str(samples))
    monkeypatch.setenv("VHEIGHT_READER", "Test Reader")  # no name prompt
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    at.run()  # opens the films left for the viewer's first frame (test_app.start)
    assert not at.exception, at.exception
    return at


def _comparison(at):
    at.session_state["vh.tab"] = "Comparison"
    at.run()
    assert not at.exception, at.exception
    return at.tabs[3]


def test_different_patient_followup_is_refused_until_confirmed(tmp_path, monkeypatch):
    at = _app(tmp_path, monkeypatch, other_patient_series(tmp_path / "series"))
    tab = _comparison(at)
    (error,) = [e.value for e in tab.error]
    text = error.replace("\\", "")
    assert text.startswith("**These films belong to different patients: not compared.**")
    assert "patient ID VHPHANTOM002026" in text and "patient ID OTHER0042" in text
    assert "allow_different_patients" not in text  # the API's advice, not the app's
    # No cards, no films, no table until confirmed.
    assert not tab.metric and not tab.get("image") and not tab.dataframe
    (button,) = [b for b in tab.button if b.label.startswith("They are the same patient")]
    button.click().run()
    assert not at.exception, at.exception
    tab = at.tabs[3]
    assert tab.metric and len(tab.get("image")) == 3 and tab.dataframe
    (box,) = [w.value for w in tab.warning]
    assert "belong to different patients: compared on request" in box.replace("\\", "")


def test_new_fracture_leads_the_tab_and_is_framed_on_the_followup(tmp_path, monkeypatch):
    import vheight.ui.comparison as view

    framed = {}
    mark = view._mark_levels

    def spy(image, shown, box, marks):
        framed[tuple(marks)] = True
        out = mark(image, shown, box, marks)
        assert np.count_nonzero(np.all(out == view.FLAG_COLOR, axis=-1)) > 50
        return out

    monkeypatch.setattr(view, "_mark_levels", spy)
    view._rendered.clear()
    at = _app(tmp_path, monkeypatch, SAMPLES)
    tab = _comparison(at)
    first = tab.error[0].value.replace("\\", "")
    # The flag has its own box, not a line among the warnings.
    assert not any("suspected" in w.value for w in tab.warning)
    assert first.startswith("**New fracture suspected at L2** (untreated; pre → follow-up film)")
    assert "anterior height -34.5 % (-9.00 mm) since pre" in first
    assert framed == {(("L2", "L2 new fracture?"),): True}
    (shown,) = [d.value for d in tab.dataframe]
    assert list(shown["Flag"][:3]) == ["new fracture?"] * 3


def test_nearest_normal_reference_and_reference_levels(tmp_path, monkeypatch):
    at = _app(tmp_path, monkeypatch, SAMPLES)
    (select,) = [s for s in at.sidebar.selectbox if s.label == "Reference for height loss"]
    assert "nearest normal: the closest untreated, unfractured levels" in select.options
    select.set_value("nearest_normal").run()
    assert not at.exception, at.exception
    tables = [t.value for t in at.tabs[0].table if "Reference levels" in t.value.columns]
    (table,) = tables
    levels = dict(zip(table["Level"], table["Reference levels"], strict=True))
    # L1 (treated) skips T12 (biconcave) for T11, and L2 below.
    assert levels["L1"] == "T11,L2" and levels["T12"] == "T11,L2"
    assert set(table["Reference"]) == {"nearest_normal"}


@pytest.mark.parametrize("value", [0.9, 0.999999])
def test_percent_of_lost_is_shown_from_1_mm(value):
    from vheight.ui.comparison import percent_of_lost_text

    record = {"unit": "mm", "lost_pre": value, "restoration_pct_of_lost": 50.0}
    assert percent_of_lost_text(record) == (
        "% of lost: \u2013",
        "not-meaningful",
        f"only {value:.2f} mm lost before treatment",
    )
    assert percent_of_lost_text({**record, "lost_pre": 1.0}) == (
        "50.0 % of lost",
        "restored",
        None,
    )
    over = percent_of_lost_text({**record, "lost_pre": 2.0, "restoration_pct_of_lost": 188.1})
    assert over == ("overcorrected, 188.1 % of lost", "overcorrected", None)
    # Uncalibrated: 5 % of the reference height.
    px = {"unit": "px", "lost_pre": 4.9, "reference_pre": 100.0, "restoration_pct_of_lost": 20.0}
    assert percent_of_lost_text(px)[1] == "not-meaningful"
    assert percent_of_lost_text({**px, "lost_pre": 5.0})[1] == "restored"
    assert percent_of_lost_text({**px, "lost_pre": -3.0})[2] == "no height lost before treatment"


def test_the_full_table_names_each_row_s_reference_levels(tmp_path, monkeypatch):
    at = _app(tmp_path, monkeypatch, SAMPLES)
    tab = _comparison(at)
    (shown,) = [d.value for d in tab.dataframe]
    by_level = dict(zip(shown["Level"], shown["Reference levels (pre)"], strict=False))
    assert by_level["L1"] == "T12, L2" and by_level["T10"] == "T11"
    # A negative loss before treatment reads against those levels.
    row = shown[(shown["Level"] == "L2") & (shown["Height"] == "anterior")].iloc[0]
    assert row["Lost before (mm)"].startswith("-")
