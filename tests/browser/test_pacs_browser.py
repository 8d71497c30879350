"""The app's PACS section in a real browser, against a real Orthanc.

The archive holds the sample study (three films) and a reader's earlier
results of the pre and post films.  A radiologist searches the patient,
opens pre and post from the archive with those results, sees the
comparison, and stores the results back; the archive then holds one
current SR per film and reader, each naming the one it replaced.
Screenshots go to ``/tmp/vheight-browser`` (or ``$VHEIGHT_SCREENSHOTS``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest
from conftest import REPO
from driver import AppServer, Editor, active_panel, open_tab
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _orthanc import sample_archive  # noqa: E402

from vheight.pacs import Archive  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SAMPLES = REPO / "sample_images"
PATIENT_ID = "VHPHANTOM002026"
READER = "Dr Lee"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with sample_archive(tmp_path_factory.mktemp("pacs-browser"), READER) as server:
        yield server


@pytest.fixture(scope="module")
def pacs_app(archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pacs-app")
    (folder / "no-samples").mkdir()
    server = AppServer(
        REPO / "app.py",
        store=folder / "store",
        env={
            "VHEIGHT_PACS_URL": archive.dicomweb,
            "VHEIGHT_PACS_CACHE": str(folder / "cache"),
            "VHEIGHT_SAMPLES": str(folder / "no-samples"),
            "VHEIGHT_READER": READER,
        },
    )
    try:
        yield server
    finally:
        server.stop()


def _choose(page, label: str, option: str) -> None:
    """Pick the first option containing ``option`` in the sidebar's select box ``label``."""
    sidebar = page.get_by_test_id("stSidebar")
    box = sidebar.get_by_test_id("stSelectbox").filter(
        has=page.locator("label").get_by_text(label, exact=True)
    )
    for _attempt in range(3):  # a rerun may close the list as it opens
        box.click()
        try:
            page.get_by_role("option").filter(has_text=option).first.click(timeout=15_000)
            return
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError(f"no option {option!r} in {label!r}")


def _open(page, film: str, as_label: str) -> None:
    """Open ``film`` as ``as_label`` with the reader's earlier result.

    A result chosen while the list still shows the previous film's results
    (the run after the film's change not yet drawn) is refused by the app,
    nothing opened, and chosen again here, as a reader would."""
    sidebar = page.get_by_test_id("stSidebar")
    opened = sidebar.get_by_text(f"as {as_label} with the result of {READER}")
    _choose(page, "Film", film)
    _choose(page, "Open the film as", as_label)
    for attempt in range(3):
        _choose(page, "Earlier vheight result", f"{READER} ·")
        sidebar.get_by_role("button", name="Open from the archive").click()
        if attempt == 2:
            break
        try:
            expect(opened).to_be_visible(timeout=20_000)
            return
        except AssertionError:
            expect(sidebar.get_by_text("Choose the result again")).to_be_visible()
    expect(opened).to_be_visible(timeout=60_000)


def test_search_open_compare_and_store_back(pacs_app, archive, page, shots):
    page.goto(pacs_app.url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("PACS", exact=True)).to_be_visible(timeout=60_000)
    expect(sidebar.get_by_role("textbox", name="DICOMweb server")).to_have_value(
        archive.dicomweb, timeout=60_000
    )
    sidebar.get_by_role("textbox", name="Patient ID").fill(PATIENT_ID)
    sidebar.get_by_role("textbox", name="Patient ID").press("Enter")
    sidebar.get_by_role("button", name="Search the archive").click()
    expect(sidebar.get_by_text("1 study, 3 films")).to_be_visible(timeout=60_000)
    expect(sidebar.get_by_text("2026-01-05", exact=False).first).to_be_visible()
    page.screenshot(path=str(shots / "pacs-search.png"), full_page=True)

    _open(page, "(pre)", "Pre-augmentation")
    Editor(page).wait_ready()
    _open(page, "(post)", "Post-augmentation")
    Editor(page).wait_ready()
    page.screenshot(path=str(shots / "pacs-opened.png"), full_page=True)

    open_tab(page, "Comparison")
    panel = active_panel(page)
    # The sample series' treated level L1, anterior height 16.92 -> 20.31 mm.
    expect(panel.get_by_text("Anterior · pre 16.92 mm")).to_be_visible(timeout=60_000)
    expect(panel.get_by_text("20.31 mm").first).to_be_visible()
    page.screenshot(path=str(shots / "pacs-comparison.png"), full_page=True)

    sidebar.get_by_role("button", name="Store results in the archive (SR + GSPS)").click()
    stored = sidebar.get_by_text(f"Stored in {archive.dicomweb}", exact=False)
    try:
        expect(stored).to_be_visible(timeout=90_000)
    except AssertionError:
        page.screenshot(path=str(shots / "pacs-store-failed.png"), full_page=True)
        raise
    text = stored.inner_text()
    assert "Pre-augmentation: SR with 7 levels + GSPS, replacing the previous one" in text
    assert "Post-augmentation: SR with 7 levels + GSPS, replacing the previous one" in text
    page.screenshot(path=str(shots / "pacs-stored.png"), full_page=True)

    # In the archive: the new SRs are the current ones and name the ones they replaced.
    study_uid = str(pydicom.dcmread(SAMPLES / "pre.dcm", stop_before_pixels=True).StudyInstanceUID)
    study = Archive(archive.dicomweb).study(study_uid)
    assert len(study.results) == 4
    current = study.current_results()
    assert len(current) == 2 and {r.facts.reader for r in current} == {READER}
    replaced = {r.facts.sop_instance_uid for r in study.results if not r.current}
    assert {p for r in current for p in r.facts.predecessors} == replaced
    assert study.presentation_states == 2
    instances = archive.instances()
    assert sum(1 for i in instances if i.get("Modality") == "SR") == 4
