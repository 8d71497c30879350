"""The app's background build of DICOM exports: once per content, edits supersede, bounded."""

from __future__ import annotations

import threading
import time

import pytest

from vheight.ui import exports


@pytest.fixture
def prepared(monkeypatch):
    monkeypatch.setattr(exports, "PREPARE_DELAY_S", 0.05)
    return exports._Prepared()


def _counting(calls: list[str], name: str, done: threading.Event | None = None):
    def build() -> bytes:
        calls.append(name)
        if done is not None:
            done.set()
        return name.encode()

    return build


def test_a_prepared_key_is_built_once_and_then_handed_out(prepared):
    calls: list[str] = []
    built = threading.Event()
    prepared.ahead("film", "k1", _counting(calls, "k1", built))
    assert built.wait(5)
    assert prepared.get("k1", _counting(calls, "again")) == b"k1"
    assert calls == ["k1"]


def test_an_edit_within_the_delay_supersedes_the_earlier_build(prepared):
    calls: list[str] = []
    built = threading.Event()
    prepared.ahead("film", "old", _counting(calls, "old"))
    prepared.ahead("film", "new", _counting(calls, "new", built))
    assert built.wait(5)
    time.sleep(0.2)  # the first timer has fired too
    assert calls == ["new"]


def test_the_films_remembered_stay_bounded(prepared):
    for i in range(10 * exports._KEPT):
        prepared.ahead(f"film {i}", ("key", i), lambda: b"")
    assert len(prepared._latest) <= exports._KEPT
    assert f"film {10 * exports._KEPT - 1}" in prepared._latest


def test_a_build_timed_after_the_pool_shut_down_is_left_to_the_click(prepared, monkeypatch):
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    prepared._pool.shutdown()  # as at interpreter exit
    prepared.ahead("film", "k", lambda: b"ahead")
    time.sleep(0.3)
    assert failures == []
    assert prepared.get("k", lambda: b"clicked") == b"clicked"
