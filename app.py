"""vheight app: ``streamlit run app.py`` (opens on the bundled sample series).

``VHEIGHT_SAMPLES`` names another folder of ``pre.dcm`` / ``post.dcm`` /
``followup.dcm`` films to open at start; ``VHEIGHT_STORE`` the annotation store.
"""

import os
from pathlib import Path

from vheight.ui.main import main

main(
    samples=Path(
        os.environ.get("VHEIGHT_SAMPLES") or Path(__file__).resolve().parent / "sample_images"
    )
)
