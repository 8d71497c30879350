"""Editor latency in a real browser: releasing a dragged landmark -> updated table.

Serves the app (``streamlit run app.py``) on a synthetic 3000 x 3000 CR film
with seven annotated vertebrae, drives headless Chromium with Playwright, and
times, inside the browser (``performance.now()``), from the ``pointerup`` that
ends a drag of a posterior corner to the first animation frame in which the
measurement table shows the new posterior height.  That span holds the whole
round trip: the edit sent over the websocket, validation, the atomic save to
the annotation store, the measurement, the rerun of the page and the table's
redraw.

Baseline in the same run: pressing ``N`` in the editor (next level), which
reruns the same page without changing any measurement, timed to the first
frame where the side panel shows the new level: the cost of a rerun itself.

Run:  .venv/bin/python benchmarks/bench_ui.py [--drags 20]
Target: median drag-to-table under 250 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))

from driver import CHROMIUM, CHROMIUM_ARGS, AppServer, Editor, choose_level  # noqa: E402

SIZE = 3000
SPACING_MM = 0.15
LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")
TARGET_MS = 250.0

# Milliseconds from the last pointerup to the first frame showing `level`'s
# posterior height different from `old` (polled every animation frame).
_WAIT_TABLE_JS = """
([level, old]) => new Promise((resolve) => {
  const start = window.__vhUp;
  const tick = () => {
    for (const table of document.querySelectorAll('[role=tabpanel] [data-testid=stTable] table')) {
      const heads = [...table.querySelectorAll('thead th')].map((th) => th.innerText.trim());
      const col = heads.findIndex((h) => h.startsWith('Hp ('));
      if (col < 0) continue;
      for (const tr of table.querySelectorAll('tbody tr')) {
        const cells = tr.querySelectorAll('td');
        if (cells[0] && cells[0].innerText.trim() === level) {
          const text = cells[col].innerText.trim();
          if (text !== old) { resolve({ms: performance.now() - start, text}); return; }
        }
      }
    }
    requestAnimationFrame(tick);
  };
  tick();
})
"""

_HOOK_JS = """
() => {
  window.__vhUp = 0;
  window.addEventListener('pointerup', () => { window.__vhUp = performance.now(); }, true);
  window.addEventListener('keydown', () => { window.__vhUp = performance.now(); }, true);
}
"""

_WAIT_LEVEL_JS = """
(level) => new Promise((resolve) => {
  const start = window.__vhUp;
  const tick = () => {
    const box = [...document.querySelectorAll('[role=tabpanel] [data-testid=stSelectbox]')]
      .find((el) => el.innerText.includes('Level to place'));
    const input = box && box.querySelector('input');
    const bar = [...document.querySelectorAll('[role=tabpanel] [data-testid=stProgress]')]
      .find((el) => el.innerText.startsWith(level + ':'));
    if (input && input.value === level && bar) { resolve(performance.now() - start); return; }
    requestAnimationFrame(tick);
  };
  tick();
})
"""


def write_film(folder: Path) -> None:
    """A 3000 x 3000 CR film (DICOM) and its sidecar with seven vertebrae."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage as CRImageStorage
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = 1200 + 600 * np.sin(xx / 140.0) * np.cos(yy / 210.0) + rng.normal(0, 40, (SIZE, SIZE))
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
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [SPACING_MM, SPACING_MM]
    ds.WindowCenter = 1200
    ds.WindowWidth = 2400
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(folder / "pre.dcm", ds, enforce_file_format=True)

    vertebrae = {}
    for i, level in enumerate(LEVELS):
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
                  "rows": SIZE, "columns": SIZE},
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


def _summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(values):.0f} ms, "
        f"min {min(values):.0f}, max {max(values):.0f} ms (n={len(values)})"
    )


def run(drags: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium")
    with tempfile.TemporaryDirectory(prefix="vheight-bench-ui-") as tmp:
        folder = Path(tmp) / "films"
        folder.mkdir()
        write_film(folder)
        server = AppServer(
            REPO / "app.py",
            store=Path(tmp) / "store",
            env={"VHEIGHT_SAMPLES": str(folder), "VHEIGHT_READER": "Benchmark"},
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1600, "height": 1150})
                page.set_default_timeout(60_000)
                page.goto(server.url)
                editor = Editor(page).wait_ready()
                page.evaluate(_HOOK_JS)
                level = "L1"
                choose_level(page, level)
                point = np.array([1550.0, 260 + 2 * 370 + 250.0])  # L1 inferior posterior

                # Warm-up: one drag there and back (caches, first rerun).
                page.wait_for_timeout(500)
                drag_ms: list[float] = []
                old = None
                for i in range(drags + 1):
                    step = 12.0 if i % 2 == 0 else -12.0
                    old = old or _hp_text(page, level)
                    target = point + (0.0, step)
                    editor.drag(tuple(point), tuple(target))
                    result = page.evaluate(_WAIT_TABLE_JS, [level, old])
                    point, old = target, result["text"]
                    if i > 0:
                        drag_ms.append(float(result["ms"]))
                    page.wait_for_timeout(150)

                rerun_ms: list[float] = []
                for i in range(drags):
                    forward = i % 2 == 0
                    expected = LEVELS[LEVELS.index("L1") + 1] if forward else "L1"
                    editor.press("n" if forward else "Shift+N")
                    rerun_ms.append(float(page.evaluate(_WAIT_LEVEL_JS, expected)))
                    page.wait_for_timeout(150)
                browser.close()
        finally:
            server.stop()
    print(f"3000 x 3000 film, {len(LEVELS)} vertebrae, headless Chromium, {drags} drags")
    print(_summary("drag release -> updated table", drag_ms))
    print(_summary("baseline: level change (N) -> side panel", rerun_ms))
    median = statistics.median(drag_ms)
    print(f"target < {TARGET_MS:.0f} ms: {'met' if median < TARGET_MS else 'NOT met'}")
    return {"drag_median_ms": median, "rerun_median_ms": statistics.median(rerun_ms)}


def _hp_text(page, level: str) -> str:
    from driver import measurement_table

    return measurement_table(page)[level]["Hp (mm)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drags", type=int, default=20, help="drags timed (default 20)")
    args = parser.parse_args()
    run(args.drags)


if __name__ == "__main__":
    main()
