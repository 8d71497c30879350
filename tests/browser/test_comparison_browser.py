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
