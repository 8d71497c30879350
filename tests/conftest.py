"""Shared fixtures and builders for the vheight test suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=200)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run a test inside an empty temporary folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
