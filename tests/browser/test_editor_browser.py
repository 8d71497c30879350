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
    LARGE_SIZE,
    REPO,
    AppServer,
    Editor,
    active_panel,
    choose_level,
    measurement_table,
    number,
    open_tab,
    write_large_film,
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
    # After the sixth point the viewer moves on to the next level, and says so.
    expect(editor.toast).to_contain_text(f"{level} complete")
    expect(editor.root).not_to_have_attribute("data-active-level", level)
    box = active_panel(page).get_by_test_id("stSelectbox").filter(has_text="Level to place")
    expect(box.get_by_role("combobox")).not_to_have_value(level)  # the side panel follows
    choose_level(page, level)
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

    # Snapped again, the point already lies on its edge: nothing moves, and the app says so.
    table = _row(page, level)()
    expect(point_button).to_be_enabled()
    point_button.click()
    expect(panel.get_by_test_id("stAlertContentInfo").first).to_contain_text(
        "already lies on its edge"
    )
    assert _row(page, level)() == table
    page.screenshot(path=str(shots / "09-point-already-on-edge.png"))


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


# -- the viewer a reader works in: layout, window/level, no stray grabs, flow ----------------


def _sample_truth():
    from vheight.annotation import load_annotation

    return load_annotation(REPO / "sample_images" / "pre.vheight.json")


def test_viewer_fills_the_window_refits_and_goes_full_screen(app_server, browser, shots):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_server.url)
        editor = Editor(page).wait_ready()
        wait_for(lambda: measurement_table(page), what="the sample's table")

        def fills(height: int) -> bool:
            box = editor.canvas.bounding_box()
            return bool(box) and height - 40 <= box["y"] + box["height"] <= height

        wait_for(lambda: fills(768), what="the viewer filling 1366 x 768")
        # The table beside the film is on screen, whole.
        brief = active_panel(page).locator("[class*=st-key-vh-brief-] [data-testid=stTable]")
        box = brief.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 768, box
        canvas = editor.canvas.bounding_box()
        assert canvas is not None and box["x"] >= canvas["x"] + canvas["width"], (box, canvas)
        page.screenshot(path=str(shots / "10-1366x768.png"))
        zoom = editor.view()["zoom"]

        page.set_viewport_size({"width": 1920, "height": 1080})
        wait_for(lambda: fills(1080), what="the viewer filling 1920 x 1080")
        wait_for(lambda: editor.view()["zoom"] > zoom * 1.2, what="the film refitted")
        page.screenshot(path=str(shots / "11-1920x1080.png"))

        editor.press("f")
        expect(editor.root).to_have_attribute("data-fullscreen", "true")
        wait_for(
            lambda: (
                (b := editor.canvas.bounding_box()) and b["width"] >= 1900 and b["height"] > 980
            ),
            what="the viewer over the whole screen",
        )
        page.screenshot(path=str(shots / "12-full-screen.png"))
        editor.press("Escape")
        expect(editor.root).to_have_attribute("data-fullscreen", "false")
        wait_for(lambda: fills(1080), what="the viewer back in the page")
    finally:
        context.close()


def test_right_drag_window_level_changes_pixels_and_the_png(app_server, browser, shots):
    import cv2
    import numpy as np

    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_server.url)
        editor = Editor(page).wait_ready()
        wait_for(lambda: measurement_table(page), what="the sample's table")
        truth = _sample_truth()
        x, y = truth.vertebrae["L2"]["superior_posterior"]
        spot = (x - 110.0, y + 60.0)  # behind the body, away from the labels
        editor.press("h")  # the overlay off: the film's pixels alone
        expect(editor.root).to_have_attribute("data-overlay", "false")
        before_window = editor.window()
        before = editor.mean_grey(*spot)

        def png() -> np.ndarray:
            with page.expect_download(timeout=60_000) as download:
                active_panel(page).get_by_role("button", name="Annotated PNG").click()
            data = np.frombuffer(download.value.path().read_bytes(), np.uint8)
            return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)

        png_before = png()
        # The download button scrolled the page: bring the viewer back, drawn and ready.
        editor.root.scroll_into_view_if_needed()
        editor.wait_ready()
        # Right drag: left = narrower, up = lower centre; drawn without the server.
        editor.right_drag(-150, -120)
        after_window = editor.window()
        assert after_window["width"] < before_window["width"]
        assert after_window["center"] < before_window["center"]
        wait_for(lambda: abs(editor.mean_grey(*spot) - before) > 15, what="brighter pixels")
        page.screenshot(path=str(shots / "13-window-dragged.png"))
        # The window is the film's: the side panel's preset says so, the PNG follows.
        window_box = active_panel(page).get_by_test_id("stSelectbox").filter(has_text="Window")
        expect(window_box.get_by_role("combobox")).to_have_value(re.compile(r"^Manual \(C "))
        png_after = png()
        ys, xs = int(spot[1]), int(spot[0])
        patch = (slice(ys - 40, ys + 40), slice(xs - 40, xs + 40))
        assert abs(float(png_after[patch].mean()) - float(png_before[patch].mean())) > 15
        # A preset brings the header's window back.
        combo = window_box.get_by_role("combobox")
        combo.scroll_into_view_if_needed()
        combo.click()
        page.get_by_role("option", name=re.compile(r"^SPINE")).click()
        wait_for(
            lambda: abs(editor.window().get("width", 0) - before_window["width"]) < 1e-6,
            what="the preset back",
        )
    finally:
        context.close()


def test_click_beside_another_levels_point_places_a_new_point(app_server, page, shots):
    truth = _sample_truth()
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    table = wait_for(lambda: measurement_table(page), what="the sample's table")
    l4_before = table["L4"]
    choose_level(page, "L5")  # empty, just below L4
    # Zoom so that a screen pixel is well under a film pixel... not needed: at the
    # opening zoom, 8 screen px from L4's inferior anterior corner.
    corner = truth.vertebrae["L4"]["inferior_anterior"]
    cx, cy = editor.to_page(*corner)
    page.mouse.click(round(cx), round(cy) + 8)
    expect(editor.root.locator(".vh-next")).to_contain_text("L5: superior_middle (2/6)")
    expect(editor.root).to_have_attribute("data-active-level", "L5")
    row = wait_for(lambda: measurement_table(page).get("L5"), what="L5 in the table")
    assert row["Grade"] == "incomplete"
    assert measurement_table(page)["L4"] == l4_before  # L4 untouched
    page.screenshot(path=str(shots / "14-click-beside-L4.png"))
    # Shift+click grabs another level's point (and says so).  The page may have
    # grown (a table row), refitting the film: find the corner again.
    cx, cy = editor.to_page(*corner)
    page.keyboard.down("Shift")
    page.mouse.click(round(cx), round(cy))
    page.keyboard.up("Shift")
    expect(editor.root).to_have_attribute("data-active-level", "L4")
    expect(editor.toast).to_contain_text("L4")
    expect(editor.root).to_have_attribute("data-selected", "L4:inferior_anterior")


def test_six_points_move_on_to_the_next_level(app_server, page, shots):
    """T9 above the annotated column: after its sixth point the viewer goes on by itself."""
    truth = _sample_truth()
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    wait_for(lambda: measurement_table(page), what="the sample's table")
    choose_level(page, "T9")
    t10 = truth.vertebrae["T10"]
    lift = t10["inferior_middle"][1] - t10["superior_middle"][1] + 30.0
    rev = editor.rev()
    for index, name in enumerate(
        ("superior_anterior", "superior_middle", "superior_posterior",
         "inferior_anterior", "inferior_middle", "inferior_posterior"), start=1,
    ):  # fmt: skip
        x, y = t10[name]
        editor.click(x, y - lift)
        wait_for(lambda i=index: editor.rev() >= rev + i, what=f"point {index} sent")
    # Down the spine, T10-L4 are complete: L5 is next.
    expect(editor.root).to_have_attribute("data-active-level", "L5")
    expect(editor.toast).to_contain_text("T9 complete")
    box = active_panel(page).get_by_test_id("stSelectbox").filter(has_text="Level to place")
    expect(box.get_by_role("combobox")).to_have_value("L5")
    wait_for(_row(page, "T9"), what="T9 measured")
    page.screenshot(path=str(shots / "15-auto-advance.png"))
    # The direction is the reader's: up the spine from T9 is T8.
    editor.root.locator("[data-testid=vh-direction]").click()
    expect(editor.root).to_have_attribute("data-direction", "up")
    editor.root.locator("[data-testid=vh-direction]").click()
    expect(editor.root).to_have_attribute("data-direction", "down")


def test_overlay_toggle_and_numbers_on_the_film(app_server, page, shots):
    truth = _sample_truth()
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    wait_for(lambda: measurement_table(page), what="the sample's table")
    expect(editor.root.locator("[data-testid=vh-cal-badge]")).to_have_text("mm ERMF")
    point = truth.vertebrae["L2"]["superior_anterior"]
    shown = editor.mean_grey(*point, half=4)
    editor.press("h")
    expect(editor.root).to_have_attribute("data-overlay", "false")
    wait_for(lambda: abs(editor.mean_grey(*point, half=4) - shown) > 5, what="the overlay gone")
    page.screenshot(path=str(shots / "16-overlay-hidden.png"))
    editor.press("h")
    expect(editor.root).to_have_attribute("data-overlay", "true")
    wait_for(lambda: abs(editor.mean_grey(*point, half=4) - shown) < 2, what="the overlay back")
    editor.press("d")
    expect(editor.root).to_have_attribute("data-fill", "dim")


def test_replace_prompt_and_uncalibrated_badge(app_server, page, tmp_path, shots):
    import cv2
    import numpy as np

    image = np.full((400, 300), 90, np.uint8)
    cv2.rectangle(image, (100, 120), (200, 260), 200, -1)
    path = tmp_path / "lateral.png"
    cv2.imwrite(str(path), image)
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.locator("input[type=file]").set_input_files(str(path))
    question = sidebar.locator(".st-key-vh-replace")
    expect(question).to_contain_text("Pre-augmentation already holds pre.dcm")
    page.screenshot(path=str(shots / "17-replace-prompt.png"))
    question.get_by_role("button", name="Cancel").click()
    expect(question).to_have_count(0)
    expect(editor.root).to_have_attribute("data-ready", "true")
    expect(editor.root.locator(".vh-hud-right")).to_contain_text("1500 \u00d7 2000")

    sidebar.locator("input[type=file]").set_input_files(str(path))
    question.get_by_role("button", name="Replace").click()
    expect(question).to_have_count(0)
    # The old film's viewer stays, faded, until the run that opened the new one has
    # ended (seconds on a loaded machine), and may be alone for a moment before the
    # new one is added beside it: wait for the new film's viewer, then for it alone.
    viewers = active_panel(page).locator("[data-testid=vh-editor]")
    new_film = viewers.filter(has=page.locator(".vh-hud-right", has_text="300 \u00d7 400"))
    expect(new_film).to_have_count(1, timeout=60_000)
    expect(viewers).to_have_count(1, timeout=60_000)
    editor = Editor(page)
    expect(editor.root.locator(".vh-hud-right")).to_contain_text("300 \u00d7 400")
    badge = editor.root.locator("[data-testid=vh-cal-badge]")
    expect(badge).to_have_text("px \u2014 uncalibrated")
    expect(badge).to_have_class(re.compile("vh-uncalibrated"))
    page.screenshot(path=str(shots / "18-uncalibrated.png"))


@pytest.fixture(scope="module")
def large_app(tmp_path_factory):
    """The app opening a 3000 x 3000 film (larger than the 2048 px display copy)."""
    folder = tmp_path_factory.mktemp("large")
    films = folder / "films"
    films.mkdir()
    write_large_film(films)
    server = AppServer(
        REPO / "app.py",
        store=folder / "store",
        env={"VHEIGHT_SAMPLES": str(films), "VHEIGHT_READER": "Browser Test"},
    )
    try:
        yield server
    finally:
        server.stop()


def test_zoomed_in_400_percent_the_visible_region_is_full_resolution(large_app, page, shots):
    import json

    page.goto(large_app.url)
    editor = Editor(page).wait_ready()
    expect(editor.root).to_have_attribute("data-display", "2048x2048")
    expect(editor.root.locator(".vh-hud-right")).to_contain_text(f"{LARGE_SIZE} \u00d7")
    editor.press("1")
    for _ in range(7):
        editor.press("+")
    wait_for(lambda: editor.view()["zoom"] >= 4.0, what="zoom 400 %")

    def full_resolution() -> dict | None:
        crop = json.loads(editor.root.get_attribute("data-crop") or "null")
        if not crop or crop["width"] != crop["x1"] - crop["x0"]:
            return None
        box = editor.canvas.bounding_box()
        view = editor.view()
        x0, y0 = (-view["tx"]) / view["zoom"], (-view["ty"]) / view["zoom"]
        x1, y1 = x0 + box["width"] / view["zoom"], y0 + box["height"] / view["zoom"]
        covers = crop["x0"] <= max(0, x0) and crop["x1"] >= min(LARGE_SIZE, x1)
        covers = covers and crop["y0"] <= max(0, y0) and crop["y1"] >= min(LARGE_SIZE, y1)
        return crop if covers else None

    crop = wait_for(full_resolution, timeout=30, what="the visible region at full resolution")
    assert crop["height"] == crop["y1"] - crop["y0"]
    expect(editor.root.locator(".vh-hud-right")).to_contain_text("full resolution")
    page.screenshot(path=str(shots / "19-zoom-400-full-resolution.png"))


def test_switching_back_to_a_film_keeps_its_viewer_and_view(app_server, page, shots):
    """A film's tab once open stays drawn: back on it, the same viewer shows the same view."""
    page.goto(app_server.url)
    editor = Editor(page).wait_ready()
    opening = editor.view()["zoom"]
    editor.wheel(700, 900, -400)  # zoom in
    zoomed = wait_for(lambda: (v := editor.view())["zoom"] > 1.2 * opening and v,
                      what="the zoomed view")  # fmt: skip
    editor.root.evaluate("(el) => { el.dataset.mark = 'pre viewer'; }")
    open_tab(page, "Post-augmentation")
    post = Editor(page).wait_ready()
    assert post.root.get_attribute("data-mark") is None  # another viewer
    started = time.monotonic()
    open_tab(page, "Pre-augmentation")
    back = Editor(page).wait_ready()
    expect(back.root).to_have_attribute("data-mark", "pre viewer")  # not mounted again
    assert time.monotonic() - started < 10
    assert back.view()["zoom"] == pytest.approx(zoomed["zoom"])
    page.screenshot(path=str(shots / "20-back-on-pre.png"))


def test_films_opened_while_the_first_one_is_drawn_show_their_films(tmp_path, page, shots):
    """The first session of a new server draws the pre film before the post and
    follow-up films are decoded; a tab opened the moment the pre film appears (while
    they are being decoded) still shows its film, and so does the next one."""
    server = AppServer(
        REPO / "app.py", store=tmp_path / "store", env={"VHEIGHT_READER": "Browser Test"}
    )
    try:
        page.goto(server.url)
        Editor(page).wait_ready()
        for label in ("Post-augmentation", "Follow-up"):
            open_tab(page, label)
            expect(active_panel(page).locator("[data-testid=vh-editor]")).to_have_attribute(
                "data-codes", "true", timeout=30_000
            )
            expect(active_panel(page)).not_to_contain_text("film is open")
            wait_for(lambda: len(measurement_table(page)) >= 3, what=f"the table of {label}")
        page.screenshot(path=str(shots / "21-tabs-opened-at-start.png"))
    finally:
        server.stop()
