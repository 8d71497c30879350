"""Text from files made safe for the page (shared by every panel of the app)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["md_escape", "md_path"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: Any) -> str:
    """Text safe to put in Streamlit markdown (every markdown character escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def md_path(path: Any) -> str:
    """A file or folder path as inline code in markdown (escaped text if it holds a backtick).

    Inline code rather than ``st.code``: a code block loads the page's syntax
    highlighter, seconds of the browser's time before the first film is drawn
    on a slow machine.
    """
    text = str(path)
    return md_escape(text) if "`" in text else f"`{text}`"
