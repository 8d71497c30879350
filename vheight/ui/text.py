"""Text from files made safe for the page (shared by every panel of the app)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["md_escape"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: Any) -> str:
    """Text safe to put in Streamlit markdown (every markdown character escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))
