"""Fixtures of the browser tests: the app served by ``streamlit run``, and Chromium.

The app runs as a real server (``streamlit run app.py``) on a free port with
an empty annotation store in a temporary folder; Playwright drives Debian's
Chromium (``/usr/bin/chromium``).  Without Chromium the tests are skipped,
except under ``CI`` where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from driver import CHROMIUM, CHROMIUM_ARGS, AppServer

REPO = Path(__file__).resolve().parents[2]
#: Screenshots of the browser tests, for people to look at.
SHOTS = Path(os.environ.get("VHEIGHT_SCREENSHOTS", "/tmp/vheight-browser"))


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    """The vheight app on a free port, with an empty store."""
    _require_chromium()
    store = tmp_path_factory.mktemp("browser") / "store"
    # One named reader (no name prompt); tests/browser/test_readers_browser.py asks.
    server = AppServer(REPO / "app.py", store=store, env={"VHEIGHT_READER": "Browser Test"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1600, "height": 1150})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
