"""Driving the landmark editor and reading the app's tables in Chromium (Playwright).

Shared by the browser tests and ``benchmarks/bench_ui.py``.  Film coordinates
are full-resolution pixels (``x`` the column, ``y`` the row); the editor
publishes its view transform in ``data-view`` (``screen = film * zoom + t``,
CSS pixels relative to its canvas), which is how film points are turned into
mouse positions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

_TABLE_JS = """
(el) => {
  const table = el.querySelector('table');
  if (!table) return null;
  const heads = [...table.querySelectorAll('thead th')].map((th) => th.innerText.trim());
  const rows = [...table.querySelectorAll('tbody tr')].map(
    (tr) => [...tr.querySelectorAll('td')].map((td) => td.innerText.trim()));
  return { heads, rows };
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppServer:
    """A running ``streamlit run`` of an app script."""

    def __init__(self, script: Path, *, store: Path, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://localhost:{self.port}"
        self.store = store
        self.log = store.parent / f"streamlit-{self.port}.log"
        full_env = {**os.environ, "VHEIGHT_STORE": str(store), **(env or {})}
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", str(script),
                "--server.port", str(self.port),
                "--server.headless", "true",
                "--server.address", "localhost",
                "--browser.gatherUsageStats", "false",
            ],
            cwd=REPO,
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited: {self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log_file.close()


def active_panel(page: Page) -> Locator:
    """The visible tab's content."""
    return page.locator("[role=tabpanel]").first


def open_tab(page: Page, label: str) -> None:
    page.get_by_role("tab", name=label).click()
    expect(page.get_by_role("tab", name=label)).to_have_attribute("aria-selected", "true")


class Editor:
    """The landmark editor of the visible tab."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.root = active_panel(page).locator("[data-testid=vh-editor]")
        self.canvas = self.root.locator("[data-testid=vh-canvas]")

    def wait_ready(self) -> Editor:
        expect(self.root).to_have_attribute("data-ready", "true", timeout=60_000)
        return self

    def view(self) -> dict[str, float]:
        return json.loads(self.root.get_attribute("data-view") or "{}")

    def rev(self) -> int:
        return int(self.root.get_attribute("data-rev") or 0)

    def status(self) -> str:
        return self.root.locator(".vh-next").inner_text()

    def to_page(self, x: float, y: float) -> tuple[float, float]:
        view = self.view()
        box = self.canvas.bounding_box()
        assert box is not None
        return (box["x"] + x * view["zoom"] + view["tx"], box["y"] + y * view["zoom"] + view["ty"])

    def to_film(self, px: float, py: float) -> tuple[float, float]:
        view = self.view()
        box = self.canvas.bounding_box()
        assert box is not None
        return (
            (px - box["x"] - view["tx"]) / view["zoom"],
            (py - box["y"] - view["ty"]) / view["zoom"],
        )

    def click(self, x: float, y: float) -> tuple[float, float]:
        """Click film point (x, y); returns the film point really under the mouse."""
        px, py = self.to_page(x, y)
        px, py = round(px), round(py)
        self.page.mouse.click(px, py)
        return self.to_film(px, py)

    def drag(
        self,
        start: tuple[float, float],
        end: tuple[float, float],
        *,
        steps: int = 8,
        release: bool = True,
    ) -> tuple[float, float]:
        """Drag from film point ``start`` to ``end``; returns the film displacement made."""
        sx, sy = (round(v) for v in self.to_page(*start))
        ex, ey = (round(v) for v in self.to_page(*end))
        zoom = self.view()["zoom"]
        self.page.mouse.move(sx, sy)
        self.page.mouse.down()
        self.page.mouse.move(ex, ey, steps=steps)
        if release:
            self.page.mouse.up()
        return ((ex - sx) / zoom, (ey - sy) / zoom)

    def wheel(self, x: float, y: float, delta_y: float) -> None:
        px, py = self.to_page(x, y)
        self.page.mouse.move(round(px), round(py))
        self.page.mouse.wheel(0, delta_y)

    def pan_to_centre(self, x: float, y: float) -> None:
        """Pan (middle-button drag) so that film point (x, y) sits at the canvas centre."""
        box = self.canvas.bounding_box()
        assert box is not None
        px, py = self.to_page(x, y)
        self.page.mouse.move(round(px), round(py))
        self.page.mouse.down(button="middle")
        self.page.mouse.move(
            round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2), steps=5
        )
        self.page.mouse.up(button="middle")

    def visible(self, x: float, y: float, *, margin: float = 12) -> bool:
        """Whether film point (x, y) is on the canvas (with a margin, CSS px)."""
        box = self.canvas.bounding_box()
        assert box is not None
        px, py = self.to_page(x, y)
        return (
            box["x"] + margin <= px <= box["x"] + box["width"] - margin
            and box["y"] + margin <= py <= box["y"] + box["height"] - margin
        )

    def press(self, key: str) -> None:
        self.root.focus()
        self.page.keyboard.press(key)


def choose_level(page: Page, level: str) -> None:
    """Pick ``level`` in the visible tab's "Level to place" box."""
    box = active_panel(page).get_by_test_id("stSelectbox").filter(has_text="Level to place")
    box.click()
    page.get_by_role("option", name=level, exact=True).click()
    expect(Editor(page).root).to_have_attribute("data-active-level", level)


def measurement_table(page: Page) -> dict[str, dict[str, str]]:
    """The visible tab's measurement table: level -> column header -> cell text."""
    frame = (
        active_panel(page)
        .get_by_test_id("stTable")
        .filter(has=page.locator("th", has_text="Grade"))
    )
    data: Any = frame.first.evaluate(_TABLE_JS)
    if not data:
        return {}
    heads, rows = data["heads"], data["rows"]
    return {row[0]: dict(zip(heads, row, strict=False)) for row in rows if row}


def number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
