"""vheight app: ``streamlit run app.py`` (opens on the bundled sample series)."""

from pathlib import Path

from vheight.ui.main import main

main(samples=Path(__file__).resolve().parent / "sample_images")
