"""The app in a real browser: place, zoom, drag, undo, reload, snap (headless Chromium).

The flows a radiologist performs, checked through what the page shows: the
editor's status line and the measurement table.  Heights are compared as
ratios (``Ha/Hp``, new ``Ha`` / old ``Ha``), which hold whatever the film's
pixel spacing, with a tolerance of the mouse's resolution (one screen pixel
in film pixels).  Screenshots go to ``/tmp/vheight-browser`` (or
``$VHEIGHT_SCREENSHOTS``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from driver import (
    REPO,
    Editor,
    active_panel,
    choose_level,
    measurement_table,
    number,
    open_tab,
)
from playwright.sync_api import expect

from vheight.annotation import LEVELS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the table may be re-rendering
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _row(page, level: str, *, ratio: float | None = None) -> Callable[[], dict[str, str] | None]:
    """A check: the table row of ``level``, complete (and with Ha/Hp near ``ratio``)."""

    def check() -> dict[str, str] | None:
        row = measurement_table(page).get(level)
        if not row or row.get("Grade") == "incomplete":
            return None
        value = number(row.get("Ha/Hp", ""))
        if value is None or (ratio is not None and abs(value - ratio) > 0.02):
            return None
        return row

    return check


def _height(row: dict[str, str], prefix: str) -> float:
    column = next(c for c in row if c.startswith(f"{prefix} ("))
    value = number(row[column])
    assert value is not None, row
    return value


def _free_level(page) -> str:
    annotated = set(measurement_table(page))
    return next(level for level in LEVELS if level not in annotated)


def test_place_zoom_drag_and_reload(app_server, page, shots):
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    wait_for(lambda: measurement_table(page), what="the sample's measurement table")
    page.screenshot(path=str(shots / "01-start.png"))

    level = _free_level(page)
    choose_level(page, level)
    assert editor.status() == f"{level}: superior_anterior (1/6)"

    # An empty corner of the film, well away from the spine.
    rows, columns = (
        int(v)
        for v in re.findall(r"\d+", editor.root.locator(".vh-hud-right").inner_text())[:2][::-1]
    )
    x0, y0 = 0.08 * columns, 0.06 * rows
    width, h_anterior, h_posterior = 0.08 * columns, 0.05 * rows, 0.0625 * rows

    # Wheel zoom around the cursor: the film point under it stays put.
    centre = (x0 + width / 2, y0 + h_posterior / 2)
    zoom_before = editor.view()["zoom"]
    for _ in range(3):
        editor.wheel(*centre, -300)
    wait_for(lambda: editor.view()["zoom"] > 3 * zoom_before, what="the wheel zoom")
    under = editor.to_film(*(round(v) for v in editor.to_page(*centre)))
    assert abs(under[0] - centre[0]) < 1 and abs(under[1] - centre[1]) < 1
    tolerance = 1.5 / editor.view()["zoom"]  # film px per screen px, with margin
    # Pan with the middle button so that the whole box is on screen.
    editor.pan_to_centre(*centre)
    wait_for(
        lambda: editor.visible(x0, y0) and editor.visible(x0 + width, y0 + 4 + h_posterior),
        what="the box on screen after panning",
    )

    targets = [
        (x0, y0),
        (x0 + width / 2, y0 + 2),
        (x0 + width, y0 + 4),
        (x0, y0 + h_anterior),
        (x0 + width / 2, y0 + h_anterior + 2),
        (x0 + width, y0 + 4 + h_posterior),
    ]
    placed = []
    for index, target in enumerate(targets, start=1):
        placed.append(editor.click(*target))
        if index < 6:
            expect(editor.root.locator(".vh-next")).to_contain_text(f"({index + 1}/6)")
    expect(editor.root.locator(".vh-next")).to_contain_text("complete (6/6)")

    ratio = (placed[3][1] - placed[0][1]) / (placed[5][1] - placed[2][1])
    row = wait_for(_row(page, level, ratio=ratio), what=f"{level} measured")
    assert number(row["Ha/Hp"]) == pytest.approx(h_anterior / (h_posterior), abs=tolerance / 20)
    ha_before, hp_before = _height(row, "Ha"), _height(row, "Hp")
    page.screenshot(path=str(shots / "02-placed-zoomed.png"))

    # Drag the inferior anterior corner down: Ha grows by the drag, Hp stays.
    start = placed[3]
    moved = editor.drag(start, (start[0], start[1] + 0.25 * h_anterior))
    new_ha_px = placed[3][1] + moved[1] - placed[0][1]
    new_ratio = new_ha_px / (placed[5][1] - placed[2][1])
    row = wait_for(_row(page, level, ratio=new_ratio), what="the table after the drag")
    assert _height(row, "Ha") / ha_before == pytest.approx(
        new_ha_px / (placed[3][1] - placed[0][1]), rel=2e-3
    )
    assert _height(row, "Hp") == pytest.approx(hp_before, rel=1e-9)
    page.screenshot(path=str(shots / "03-dragged.png"))

    # Reload: a new session restores everything from the store.
    page.reload()
    editor = Editor(page).wait_ready()
    row = wait_for(_row(page, level, ratio=new_ratio), what="the table after reload")
    assert _height(row, "Ha") == pytest.approx(
        ha_before * new_ha_px / (placed[3][1] - placed[0][1]), rel=2e-3
    )
    choose_level(page, level)
    assert editor.status().startswith(f"{level}: complete (6/6)")
    page.screenshot(path=str(shots / "04-reloaded.png"))


def test_keyboard_delete_undo_redo_and_levels(app_server, page, shots):
    page.goto(app_server.url)
    open_tab(page, "Post-augmentation")
    editor = Editor(page).wait_ready()
    table = wait_for(lambda: measurement_table(page), what="the post film's table")
    level = next(lvl for lvl, row in table.items() if row.get("Grade") != "incomplete")
    choose_level(page, level)

    # Select a point of the level with Tab, delete it: the level becomes incomplete.
    editor.press("Tab")
    expect(editor.root.locator(".vh-hud-left")).to_contain_text(level)
    editor.press("Delete")
    expect(editor.root.locator(".vh-next")).to_contain_text("(1/6)")
    wait_for(lambda: measurement_table(page)[level]["Grade"] == "incomplete", what="incomplete")

    editor.press("Control+z")
    wait_for(lambda: measurement_table(page)[level]["Grade"] != "incomplete", what="undo")
    editor.press("Control+y")
    wait_for(lambda: measurement_table(page)[level]["Grade"] == "incomplete", what="redo")
    editor.press("Control+z")
    wait_for(lambda: measurement_table(page)[level]["Grade"] != "incomplete", what="undo again")

    # N / Shift+N walk the levels; the side panel follows.
    index = LEVELS.index(level)
    editor.press("n")
    following = LEVELS[min(index + 1, len(LEVELS) - 1)]
    expect(editor.root).to_have_attribute("data-active-level", following)
    box = active_panel(page).get_by_test_id("stSelectbox").filter(has_text="Level to place")
    expect(box.get_by_role("combobox")).to_have_value(following)
    editor.press("Shift+N")
    expect(editor.root).to_have_attribute("data-active-level", level)

    # Zoom keys and the help overlay.
    zoom = editor.view()["zoom"]
    editor.press("+")
    wait_for(lambda: editor.view()["zoom"] > zoom * 1.2, what="+ zooms in")
    editor.press("0")
    wait_for(lambda: abs(editor.view()["zoom"] - zoom) < 1e-6, what="0 fits")
    editor.press("?")
    expect(editor.root.locator(".vh-help")).to_be_visible()
    page.screenshot(path=str(shots / "05-help.png"))
    editor.press("Escape")
    expect(editor.root.locator(".vh-help")).to_be_hidden()

    # Tabs come back as they were left (closed tabs are not drawn at all).
    open_tab(page, "Comparison")
    expect(active_panel(page).get_by_test_id("stDataFrame")).to_be_visible()
    open_tab(page, "Post-augmentation")
    editor = Editor(page).wait_ready()
    expect(editor.root).to_have_attribute("data-active-level", level)


def test_snap_a_dragged_point_back_then_undo(app_server, page, shots):
    """Drag a corner off its edge; Python snaps it back; the viewer's undo still works."""
    from vheight.annotation import load_annotation

    truth = load_annotation(REPO / "sample_images" / "pre.vheight.json")
    level, name = "L2", "superior_anterior"
    x, y = truth.vertebrae[level][name]
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    original = wait_for(_row(page, level), what="the sample's table")
    ha = _height(original, "Ha")
    choose_level(page, level)

    for _ in range(3):
        editor.wheel(x, y, -300)
    wait_for(lambda: editor.view()["zoom"] > 1.0, what="the wheel zoom")
    editor.pan_to_centre(x, y)
    wait_for(lambda: editor.visible(x, y - 20), what="the point on screen")
    rev = editor.rev()
    moved = editor.drag((x, y), (x, y - 14))  # up, off the endplate: Ha grows
    wait_for(lambda: editor.rev() > rev, what="the drag sent")
    dragged = wait_for(
        lambda: (r := _row(page, level)()) and _height(r, "Ha") > ha + 1.0 and r,
        what="the table after the drag",
    )
    page.screenshot(path=str(shots / "06-dragged-off-edge.png"))

    # Snap the vertebra: the table comes back to the sample's heights.
    panel = active_panel(page)
    panel.get_by_role("button", name=level, exact=True).click()
    wait_for(
        lambda: abs(_height(_row(page, level)(), "Ha") - ha) < 0.15, what="the table after snap"
    )
    expect(panel.get_by_test_id("stAlertContentSuccess").first).to_contain_text("moved")
    page.screenshot(path=str(shots / "07-snapped.png"))

    # The viewer's undo takes the snap back (a server-side change is one undo step) ...
    editor.press("Control+z")
    wait_for(
        lambda: abs(_height(_row(page, level)(), "Ha") - _height(dragged, "Ha")) < 0.05,
        what="the table after undo",
    )
    # ... and the point selected in the viewer snaps alone.
    px, py = editor.to_page(x, y + moved[1])
    page.mouse.click(round(px), round(py))
    expect(editor.root).to_have_attribute("data-selected", f"{level}:{name}")
    point_button = panel.get_by_role("button", name="Point", exact=True)
    expect(point_button).to_be_enabled()
    point_button.click()
    wait_for(
        lambda: abs(_height(_row(page, level)(), "Ha") - ha) < 0.15,
        what="the table after snapping the point",
    )
    page.screenshot(path=str(shots / "08-point-snapped.png"))


def test_report_and_dicom_downloads_are_made_on_click(app_server, browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1150}, accept_downloads=True)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_server.url)
        Editor(page).wait_ready()
        wait_for(lambda: measurement_table(page), what="the sample's measurement table")
        expected = {
            "PDF report": ("vheight-report.pdf", 0, b"%PDF"),
            "DICOM SR": ("pre.sr.dcm", 128, b"DICM"),
            "Presentation state": ("pre.pr.dcm", 128, b"DICM"),
        }
        for label, (file_name, offset, magic) in expected.items():
            with page.expect_download(timeout=60_000) as download:
                active_panel(page).get_by_role("button", name=label).click()
            assert download.value.suggested_filename == file_name
            data = download.value.path().read_bytes()
            assert data[offset : offset + 4] == magic, label
    finally:
        context.close()
