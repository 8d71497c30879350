"""Two readers of one film in a real browser (headless Chromium).

The app serves one film without landmarks (``pre.dcm``, no sidecar).  Alice
names herself and places L1's six points; then Bob, in another browser,
names himself: the film opens empty for him (alice's points are not shown),
he places his own, and the Agreement page lists both readers.  Alice reloads
and still sees her own points, not Bob's.  Screenshots go to
``/tmp/vheight-browser`` (or ``$VHEIGHT_SCREENSHOTS``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from driver import REPO, AppServer, Editor, active_panel, measurement_table, number, open_tab
from playwright.sync_api import expect

from vheight.annotation import POINT_NAMES, load_annotation
from vheight.ui.store import AnnotationStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SAMPLE = REPO / "sample_images"
SLOW = 90_000  # ms: the machine may be shared and slow


@pytest.fixture(scope="module")
def reader_server(tmp_path_factory, app_server) -> Iterator[AppServer]:
    """The app with no reader named and one film without landmarks."""
    del app_server  # only for its check that Chromium is there (skip / fail under CI)
    root = tmp_path_factory.mktemp("readers")
    films = root / "films"
    films.mkdir()
    shutil.copyfile(SAMPLE / "pre.dcm", films / "pre.dcm")
    server = AppServer(
        REPO / "app.py",
        store=root / "store",
        env={"VHEIGHT_READER": "", "VHEIGHT_SAMPLES": str(films)},
    )
    try:
        yield server
    finally:
        server.stop()


def _truth_l1() -> list[tuple[float, float]]:
    points = load_annotation(SAMPLE / "pre.vheight.json").points("L1")
    return [points[name] for name in POINT_NAMES]


def _name_yourself(page, name: str) -> None:
    expect(page.get_by_text("Who is reading?")).to_be_visible(timeout=SLOW)
    field = page.get_by_label("Your name or initials")
    field.fill(name)
    field.press("Enter")  # submits the form
    expect(page.get_by_text(f"Reading as {name}")).to_be_visible(timeout=SLOW)


def _place_l1(page, targets) -> Editor:
    editor = Editor(page)
    expect(editor.root).to_have_attribute("data-ready", "true", timeout=SLOW)
    expect(editor.root).to_have_attribute("data-active-level", "L1")
    expect(editor.root.locator(".vh-next")).to_contain_text("L1: superior_anterior (1/6)")
    for index, target in enumerate(targets, start=1):
        editor.click(*target)
        if index < 6:
            expect(editor.root.locator(".vh-next")).to_contain_text(
                f"({index + 1}/6)", timeout=SLOW
            )
    # L1 is complete: the editor moves on to the next level down.
    expect(editor.root.locator(".vh-next")).to_contain_text(
        "L2: superior_anterior (1/6)", timeout=SLOW
    )
    return editor


def _l1_row(page) -> dict[str, str]:
    deadline = page.evaluate("Date.now()") + SLOW
    while page.evaluate("Date.now()") < deadline:
        row = measurement_table(page).get("L1")
        if row and row.get("Grade") != "incomplete" and number(row.get("Ha/Hp", "")):
            return row
        page.wait_for_timeout(200)
    raise AssertionError("L1 was not measured")


def _ha(row: dict[str, str]) -> float:
    column = next(c for c in row if c.startswith("Ha ("))
    value = number(row[column])
    assert value is not None, row
    return value


def test_two_readers_one_after_the_other(reader_server, browser, shots):
    truth = _truth_l1()
    longer = [(x, y + (14.0 if i == 3 else 0.0)) for i, (x, y) in enumerate(truth)]

    alice = browser.new_context(viewport={"width": 1600, "height": 1150}).new_page()
    alice.set_default_timeout(SLOW)
    alice.goto(reader_server.url)
    expect(alice.get_by_text("Who is reading?")).to_be_visible(timeout=SLOW)
    expect(alice.get_by_label("Your name or initials")).to_be_visible(timeout=SLOW)
    expect(alice.get_by_test_id("vh-editor")).to_have_count(0)  # nothing to edit yet
    alice.screenshot(path=str(shots / "readers-00-prompt.png"))
    _name_yourself(alice, "alice")
    _place_l1(alice, truth)
    ha_alice = _ha(_l1_row(alice))
    alice.screenshot(path=str(shots / "readers-01-alice.png"))
    alice.context.close()

    bob = browser.new_context(viewport={"width": 1600, "height": 1150}).new_page()
    bob.set_default_timeout(SLOW)
    bob.goto(reader_server.url)
    _name_yourself(bob, "bob")
    panel = active_panel(bob)
    # Alice's points are hers: the film opens empty for bob, with the offer of a copy.
    expect(panel.get_by_text("alice also annotated this film", exact=False)).to_be_visible(
        timeout=SLOW
    )
    # Both the brief table beside the film and the full table say so.
    expect(panel.get_by_text("No vertebra annotated yet", exact=False).first).to_be_visible()
    bob.screenshot(path=str(shots / "readers-02-bob-empty.png"))
    _place_l1(bob, longer)
    ha_bob = _ha(_l1_row(bob))
    assert ha_bob > ha_alice  # his inferior anterior corner is 14 px lower

    open_tab(bob, "Agreement")
    panel = active_panel(bob)
    readers = panel.get_by_test_id("stDataFrame").first
    expect(readers).to_be_visible(timeout=SLOW)
    expect(panel.get_by_text("2 readers", exact=False)).to_be_visible(timeout=SLOW)
    expect(panel.get_by_text("(alice, bob)", exact=False)).to_be_visible()
    expect(panel.get_by_text("Fewer than two readers", exact=False)).to_have_count(0)
    bob.screenshot(path=str(shots / "readers-03-agreement.png"), full_page=True)
    bob.context.close()

    # The store holds one file per reader; alice, back, sees her own points only.
    store = AnnotationStore(folder=reader_server.store)
    files = sorted(p.relative_to(reader_server.store).parts[0] for p in store.files())
    assert files == ["alice", "bob"]
    again = browser.new_context(viewport={"width": 1600, "height": 1150}).new_page()
    again.set_default_timeout(SLOW)
    again.goto(f"{reader_server.url}/?reader=alice")
    expect(again.get_by_text("Reading as alice")).to_be_visible(timeout=SLOW)
    assert _ha(_l1_row(again)) == pytest.approx(ha_alice)
    again.context.close()
