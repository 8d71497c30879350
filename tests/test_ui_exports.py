"""The app's background build of DICOM exports: once per content, edits supersede,
bounded, in a worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from vheight.annotation import load_annotation
from vheight.ui import exports
from vheight.ui.films import open_path

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(exports, "PREPARE_DELAY_S", 0.05)


@pytest.fixture
def prepared(fast):
    """Builds in a thread of this process, so that a test can count them."""
    return exports._Prepared(lambda: ThreadPoolExecutor(max_workers=1))


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
    built = threading.Event()
    prepared.ahead("film", "first", _counting([], "first", built))
    assert built.wait(5)
    prepared._pool.shutdown()  # as at interpreter exit
    prepared.ahead("film", "k", lambda: b"ahead")
    time.sleep(0.3)
    assert failures == []
    assert prepared.get("k", lambda: b"clicked") == b"clicked"


class _Broken(ThreadPoolExecutor):
    def submit(self, *args, **kwargs):
        raise BrokenExecutor("the worker died")


def test_a_dead_worker_leaves_the_build_to_the_click_and_is_replaced(fast, monkeypatch):
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    pools = [_Broken(), ThreadPoolExecutor(max_workers=1)]
    prepared = exports._Prepared(lambda: pools.pop(0))
    prepared.ahead("film", "k1", lambda: b"ahead")
    time.sleep(0.3)
    assert failures == []
    assert prepared.get("k1", lambda: b"clicked") == b"clicked"
    built = threading.Event()
    prepared.ahead("film", "k2", _counting([], "k2", built))
    assert built.wait(5)
    assert prepared.get("k2", lambda: b"clicked") == b"k2"
    assert pools == []


def test_builds_run_in_another_process(fast):
    prepared = exports._Prepared()
    prepared.ahead("film", "pid", os.getpid)
    deadline = time.monotonic() + 60  # the worker starts with the first build
    while "pid" not in prepared._done and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = prepared.get("pid", os.getpid)
    assert pid != os.getpid()
    prepared._pool.shutdown()


def test_the_sample_films_sr_and_presentation_state_are_built_ahead_in_the_worker(fast):
    opened = open_path(SAMPLES / "pre.dcm")
    annotation = load_annotation(SAMPLES / "pre.vheight.json")
    exports.prepare_dicom_exports(opened, annotation)
    keys = [exports._export_key(kind, opened, annotation, "adjacent") for kind in ("sr", "gsps")]
    deadline = time.monotonic() + 60
    while not all(k in exports._PREPARED._done for k in keys) and time.monotonic() < deadline:
        time.sleep(0.02)
    for key in keys:
        exports._PREPARED._done[key].result(timeout=60)  # built there, not on the click below
    sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(exports.prepared_sr(opened, annotation)))
    pr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(exports.prepared_gsps(opened, annotation)))
    assert sr.Modality == "SR" and pr.Modality == "PR"
    film = pydicom.dcmread(SAMPLES / "pre.dcm", stop_before_pixels=True)
    assert sr.StudyInstanceUID == film.StudyInstanceUID == pr.StudyInstanceUID


_PARENT = """
import os, sys, time
from vheight.ui import exports
exports.PREPARE_DELAY_S = 0.01
prepared = exports._Prepared()
prepared.ahead("film", "pid", os.getpid)
while "pid" not in prepared._done:
    time.sleep(0.02)
print(prepared.get("pid", os.getpid), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the worker")
def test_the_worker_leaves_when_the_app_is_killed():
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            worker = int(parent.stdout.readline())
            assert _alive(worker)
        finally:
            parent.kill()  # no shutdown of the pool: the app's process is gone
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)
