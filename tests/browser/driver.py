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

import numpy as np
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

#: The large synthetic film of :func:`write_large_film`.
LARGE_SIZE = 3000
LARGE_SPACING_MM = 0.15
LARGE_LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")

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

    @property
    def toast(self) -> Locator:
        """The transient message of the viewer (level changes, modes)."""
        return self.root.locator("[data-testid=vh-toast]")

    def window(self) -> dict[str, float]:
        """The window the viewer draws with: ``{"center", "width"}``, modality units."""
        return json.loads(self.root.get_attribute("data-window") or "{}")

    def mean_grey(self, x: float, y: float, half: int = 40) -> float:
        """Mean red value of the canvas in a square of ``2 * half`` CSS px around film (x, y)."""
        px, py = self.to_page(x, y)
        box = self.canvas.bounding_box()
        assert box is not None
        return float(
            self.canvas.evaluate(
                """(c, [x, y, half]) => {
                  const dpr = window.devicePixelRatio || 1;
                  const d = c.getContext('2d').getImageData(
                    Math.round((x - half) * dpr), Math.round((y - half) * dpr),
                    Math.round(2 * half * dpr), Math.round(2 * half * dpr)).data;
                  let sum = 0;
                  for (let i = 0; i < d.length; i += 4) sum += d[i];
                  return sum / (d.length / 4);
                }""",
                [px - box["x"], py - box["y"], half],
            )
        )

    def right_drag(self, dx: float, dy: float, *, steps: int = 12) -> None:
        """Right-button drag by (dx, dy) CSS px from the canvas centre (window/level)."""
        box = self.canvas.bounding_box()
        assert box is not None
        cx, cy = round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)
        self.page.mouse.move(cx, cy)
        self.page.mouse.down(button="right")
        self.page.mouse.move(cx + dx, cy + dy, steps=steps)
        self.page.mouse.up(button="right")

    def wait_ready(self) -> Editor:
        """The film drawn, and its values loaded (window/level works from then on)."""
        expect(self.root).to_have_attribute("data-ready", "true", timeout=60_000)
        expect(self.root).to_have_attribute("data-codes", "true", timeout=60_000)
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


def write_large_film(folder: Path, size: int = LARGE_SIZE) -> None:
    """A ``size`` x ``size`` CR film ``pre.dcm`` (DICOM) and its sidecar with seven vertebrae.

    Synthetic (smooth waves and noise), 0.15 mm spacing; vertebra ``i`` of
    :data:`LARGE_LARGE_LEVELS` spans rows ``260 + 370 i`` to ``+250``, columns 1250-1550.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage as CRImageStorage
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 1200 + 600 * np.sin(xx / 140.0) * np.cos(yy / 210.0) + rng.normal(0, 40, (size, size))
    pixels = np.clip(image, 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / "pre.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.PatientID = "BENCH"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [LARGE_SPACING_MM, LARGE_SPACING_MM]
    ds.WindowCenter = 1200
    ds.WindowWidth = 2400
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(folder / "pre.dcm", ds, enforce_file_format=True)

    vertebrae = {}
    for i, level in enumerate(LARGE_LEVELS):
        top = 260 + i * 370
        vertebrae[level] = {
            "superior_anterior": [1250.0, top + 6.0],
            "superior_middle": [1400.0, top + 3.0],
            "superior_posterior": [1550.0, top],
            "inferior_anterior": [1250.0, top + 240.0],
            "inferior_middle": [1400.0, top + 236.0],
            "inferior_posterior": [1550.0, top + 250.0],
        }
    annotation = {
        "format": "vheight.annotation",
        "version": 1,
        "image": {"file": "pre.dcm", "sop_instance_uid": str(ds.SOPInstanceUID),
                  "rows": size, "columns": size},
        "timepoint": "pre",
        "calibration": None,
        "vertebrae": vertebrae,
        "treated_levels": [],
        "patient_position": None,
        "annotator": "",
        "created": None,
        "modified": None,
        "notes": "",
    }  # fmt: skip
    (folder / "pre.vheight.json").write_text(json.dumps(annotation), encoding="utf-8")
