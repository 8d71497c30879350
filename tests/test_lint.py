"""The tree stays clean under the project's ruff configuration (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (it comes with the 'test' extra)")
    return [found]


def test_ruff_check_passes_on_the_whole_tree():
    done = subprocess.run(
        [*_ruff(), "check", "--no-cache", "app.py", "vheight", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_check_passes_on_the_whole_tree():
    done = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "app.py", "vheight", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_strict_and_clean_on_the_pure_core():
    pytest.importorskip("mypy", reason="mypy comes with the 'test' extra")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
