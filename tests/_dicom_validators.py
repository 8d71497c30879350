"""Independent DICOM validators for the SR and presentation state tests.

DCMTK's ``dsrdump`` (structured reports: parses the whole document tree and
reports every inconsistency as ``W:``/``E:``), DCMTK's ``dcmpschk``
(presentation states) and dicom3tools' ``dciodvfy`` (IOD and module
conformance, ``Error - ...`` lines).  A missing tool skips the test with the
package to install, except under ``CI`` where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGES = {"dsrdump": "dcmtk", "dcmpschk": "dcmtk", "dciodvfy": "dicom3tools"}


def require(tool: str) -> str:
    """The path of ``tool``; skips (or fails under ``CI``) when it is not installed."""
    path = shutil.which(tool)
    if path is not None:
        return path
    message = f"{tool} is not installed (Debian package {PACKAGES[tool]})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


#: DCMTK 3.6.7's VR checker (conformance of string values to their VR) knows
#: only the single-byte character sets: it says so once for every UTF-8
#: document, whatever its content, and ``-Dv`` does not silence it.  This one
#: line is the only warning accepted, and only for ``ISO_IR 192`` documents.
_UTF8_NOTICE = "W: The VR checker does not support this Specific Character Set: ISO_IR 192"


def dsrdump(path: Path) -> str:
    """``dsrdump`` of an SR document; fails on any error or warning (but :data:`_UTF8_NOTICE`).

    Returns the dump: the text as written (UTF-8 for ``ISO_IR 192``).
    """
    import pydicom

    charset = pydicom.dcmread(path, stop_before_pixels=True).get("SpecificCharacterSet")
    accepted = {_UTF8_NOTICE} if charset == "ISO_IR 192" else set()
    result = _run([require("dsrdump"), "+Pc", str(path)])
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("W:", "E:", "F:")) and line not in accepted
    ]
    assert result.returncode == 0 and not problems, (result.returncode, result.stderr)
    return result.stdout


def dcmpschk(path: Path) -> None:
    """``dcmpschk`` of a presentation state: passes all three checks."""
    result = _run([require("dcmpschk"), str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Test passed" in output, output
    assert not [line for line in output.splitlines() if line.startswith(("E:", "F:"))], output


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines ``dciodvfy`` reports (warnings are not errors)."""
    result = _run([require("dciodvfy"), str(path)])
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]
