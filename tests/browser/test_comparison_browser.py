"""The Comparison tab in a real browser (headless Chromium).

The sample series opens measured; a radiologist inverts the pre-augmentation
film in its tab, then opens the comparison: the treated level's cards, the
three films side by side (the pre film still inverted) and the full table.
Screenshots go to ``/tmp/vheight-browser`` (or ``$VHEIGHT_SCREENSHOTS``).
"""

from __future__ import annotations

import numpy as np
import pytest
from driver import Editor, active_panel, open_tab
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The grey levels (0-255) of a loaded <img> shrunk to 24 x 24, read through a canvas.
_GREYS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = 24; canvas.height = 24;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0, 24, 24);
    const data = context.getImageData(0, 0, 24, 24).data;
    const greys = [];
    for (let i = 0; i < data.length; i += 4) greys.push((data[i] + data[i + 1] + data[i + 2]) / 3);
    return greys;
}"""


def test_comparison_tab_shows_cards_films_and_table(app_server, page, shots):
    page.goto(app_server.url)
    Editor(page).wait_ready()
    panel = active_panel(page)
    panel.get_by_text("Invert", exact=True).click()
    expect(panel.get_by_role("switch", name="Invert")).to_be_checked()
    open_tab(page, "Comparison")
    panel = active_panel(page)

    # The treated level first: L1, anterior height restored from 16.92 to 20.31 mm.
    expect(panel.get_by_text("Anterior · pre 16.92 mm")).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("20.31 mm").first).to_be_visible()
    expect(panel.get_by_text("+3.38 mm · 46.7 % of lost")).to_be_visible()

    films = panel.locator("[data-testid=stImage] img")
    expect(films).to_have_count(3, timeout=60_000)
    for label in ("Pre-augmentation", "Post-augmentation", "Follow-up"):
        expect(panel.get_by_text(label, exact=True).first).to_be_visible()
    expect(panel.get_by_text("Same field of view on every film", exact=False)).to_be_visible()
    page.wait_for_function(
        "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)",
        arg=films.element_handles(),
    )
    page.screenshot(path=str(shots / "comparison-tab.png"), full_page=True)
    pre, post, followup = (np.array(films.nth(i).evaluate(_GREYS)) for i in range(3))
    # The same field of view on each film: post and follow-up look alike, and the pre
    # film keeps the inversion chosen in its tab (bone dark on a bright field).
    assert np.corrcoef(post, followup)[0, 1] > 0.5
    assert np.corrcoef(pre, post)[0, 1] < -0.3

    table = panel.locator("[data-testid=stDataFrame], [data-testid=stTable]").last
    expect(table).to_be_visible()


def test_new_fracture_at_followup_is_flagged_first(app_server, page, shots):
    """The sample follow-up has a new L2 fracture: the tab opens on its flag."""
    page.goto(app_server.url)
    Editor(page).wait_ready()
    open_tab(page, "Comparison")
    panel = active_panel(page)
    flag = panel.get_by_test_id("stAlertContentError").get_by_text("New fracture suspected at L2")
    expect(flag).to_be_visible(timeout=60_000)
    expect(
        panel.get_by_test_id("stAlertContentError").get_by_text(
            "anterior height -34.5 % (-9.00 mm) since pre", exact=False
        )
    ).to_be_visible()
    # The flag comes before the treated level's cards.
    cards = panel.get_by_text("Anterior · pre 16.92 mm")
    expect(cards).to_be_visible()
    assert flag.bounding_box()["y"] < cards.bounding_box()["y"]
    # The honest cards: L1's middle height had lost 0.90 mm only.
    expect(panel.get_by_text("only 0.90 mm lost before treatment", exact=False)).to_be_visible()
    films = panel.locator("[data-testid=stImage] img")
    expect(films).to_have_count(3, timeout=60_000)
    page.wait_for_function(
        "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)",
        arg=films.element_handles(),
    )
    page.screenshot(path=str(shots / "comparison-new-fracture.png"), full_page=True)


@pytest.fixture
def other_patient_server(tmp_path):
    """The app on the sample series whose follow-up film is another patient's."""
    import shutil

    import pydicom
    from conftest import REPO
    from driver import AppServer

    samples = REPO / "sample_images"
    folder = tmp_path / "series"
    folder.mkdir()
    for tp in ("pre", "post", "followup"):
        shutil.copy(samples / f"{tp}.vheight.json", folder)
        if tp == "followup":
            ds = pydicom.dcmread(samples / "followup.dcm")
            ds.PatientID = "OTHER0042"
            ds.save_as(folder / "followup.dcm")
        else:
            shutil.copy(samples / f"{tp}.dcm", folder)
    server = AppServer(
        REPO / "app.py",
        store=tmp_path / "store",
        env={"VHEIGHT_SAMPLES": str(folder), "VHEIGHT_READER": "Browser Test"},
    )
    try:
        yield server
    finally:
        server.stop()


def test_different_patient_followup_shows_the_error_and_no_cards(other_patient_server, page, shots):
    page.goto(other_patient_server.url)
    Editor(page).wait_ready()
    open_tab(page, "Comparison")
    panel = active_panel(page)
    expect(
        panel.get_by_text("These films belong to different patients: not compared.")
    ).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("patient ID OTHER0042", exact=False)).to_be_visible()
    confirm = panel.get_by_role("button", name="They are the same patient: compare anyway")
    expect(confirm).to_be_visible()
    assert panel.locator("[data-testid=stMetric]").count() == 0
    assert panel.locator("[data-testid=stImage]").count() == 0
    page.screenshot(path=str(shots / "comparison-different-patient.png"), full_page=True)
    confirm.click()
    expect(panel.get_by_text("Anterior · pre 16.92 mm")).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("compared on request", exact=False).first).to_be_visible()
