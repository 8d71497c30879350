"""The annotation store: one file per film and reader, and the single-reader files of old."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vheight.annotation import Annotation, ImageRef, load_annotation, save_annotation
from vheight.ui.films import initial_annotation, open_path
from vheight.ui.store import AnnotationStore, reader_folder

REPO = Path(__file__).resolve().parents[1]
UID = "1.2.826.0.1.3680043.8.498.1"


def _annotation(annotator: str, x: float = 10.0) -> Annotation:
    return Annotation(
        image=ImageRef(file="film.dcm", sop_instance_uid=UID, rows=100, columns=100),
        vertebrae={"L1": {"superior_anterior": (x, 20.0)}},
        annotator=annotator,
    )


def test_two_readers_of_one_film_never_overwrite_each_other(tmp_path):
    store = AnnotationStore(folder=tmp_path)
    a = store.save(UID, _annotation("alice", 10.0), reader="alice")
    b = store.save(UID, _annotation("bob", 30.0), reader="bob")
    assert a != b and a.is_file() and b.is_file()
    assert a == tmp_path / "alice" / f"{UID}.vheight.json"
    assert store.load(UID, "alice").vertebrae["L1"]["superior_anterior"] == (10.0, 20.0)
    assert store.load(UID, "bob").vertebrae["L1"]["superior_anterior"] == (30.0, 20.0)
    assert store.load(UID, "carol") is None
    # Saving again replaces only that reader's file, atomically (no temporary file left).
    store.save(UID, _annotation("alice", 11.0), reader="alice")
    assert store.load(UID, "bob").vertebrae["L1"]["superior_anterior"] == (30.0, 20.0)
    assert sorted(p.name for p in (tmp_path / "alice").iterdir()) == [f"{UID}.vheight.json"]
    assert [o.reader for o in store.others(UID, "alice")] == ["bob"]
    assert [o.reader for o in store.others(UID, "carol")] == ["alice", "bob"]
    assert list(store.files()) == sorted([a, b])


def test_files_of_the_single_reader_store_still_load(tmp_path):
    store = AnnotationStore(folder=tmp_path)
    legacy = save_annotation(_annotation("", 5.0), tmp_path / f"{UID}.vheight.json")
    assert store.path_for(UID) == legacy
    assert store.load(UID) is not None  # without a reader: as before
    # A file naming nobody is every reader's starting point, until they save their own.
    found = store.find(UID, "alice")
    assert found is not None and found.legacy and found.path == legacy
    store.save(UID, _annotation("alice", 6.0), reader="alice")
    assert store.load(UID, "alice").vertebrae["L1"]["superior_anterior"] == (6.0, 20.0)
    assert store.load(UID, "bob").vertebrae["L1"]["superior_anterior"] == (5.0, 20.0)
    assert load_annotation(legacy).vertebrae["L1"]["superior_anterior"] == (5.0, 20.0)


def test_an_old_file_naming_someone_is_still_every_readers_start(tmp_path):
    # One store had one reader, whatever the annotator field says (often the author
    # of a sidecar or an uploaded file): nobody loses sight of the work done before.
    store = AnnotationStore(folder=tmp_path)
    save_annotation(_annotation("vheight.phantom (ground truth)"), tmp_path / f"{UID}.vheight.json")
    for reader in ("alice", "bob"):
        found = store.find(UID, reader)
        assert found.legacy and found.reader == "vheight.phantom (ground truth)"
    assert [o.legacy for o in store.others(UID, "bob")] == [True]


def test_a_legacy_start_says_so(tmp_path):
    store = AnnotationStore(folder=tmp_path / "store")
    film = tmp_path / "pre.dcm"
    film.write_bytes((REPO / "sample_images" / "pre.dcm").read_bytes())
    opened = open_path(film)
    old = dataclasses.replace(
        _annotation("someone"),
        image=ImageRef(file="pre.dcm", sop_instance_uid=opened.store_key,
                       rows=opened.film.rows, columns=opened.film.columns),
    )  # fmt: skip
    store.save(opened.store_key, old)  # no reader: the single-reader layout
    start = initial_annotation(opened, store, "pre", reader="alice")
    assert start.origin == "store" and start.annotation.vertebrae == old.vertebrae
    assert any("before readers were named" in n and "alice" in n for n in start.notes)


def test_unreadable_files_of_other_readers_are_skipped(tmp_path):
    store = AnnotationStore(folder=tmp_path)
    store.save(UID, _annotation("alice"), reader="alice")
    broken = tmp_path / "bob" / f"{UID}.vheight.json"
    broken.parent.mkdir()
    broken.write_text("{not json", encoding="utf-8")
    assert [o.reader for o in store.others(UID, "carol")] == ["alice"]
    with pytest.raises(ValueError, match="bob"):
        store.load(UID, "bob")


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        pytest.param("alice", "alice", id="plain"),
        pytest.param("a.reader-2", "a.reader-2", id="dots-dashes"),
    ],
)
def test_plain_names_are_their_own_folder(name, folder):
    assert reader_folder(name) == folder


@pytest.mark.parametrize(
    "name", ["Alice", "Dr. Müller", "../../etc", "A B", "A_B", "..", "李 医生"]
)
def test_other_names_get_a_safe_unique_folder(tmp_path, name):
    folder = reader_folder(name)
    assert "/" not in folder and folder not in ("", ".", "..")
    assert folder == folder.lower()
    store = AnnotationStore(folder=tmp_path)
    assert store.path_for(UID, name).parent.parent == tmp_path


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_different_names_never_share_a_folder(a, b):
    if not a.strip() or not b.strip() or a.strip() == b.strip():
        return
    assert reader_folder(a).lower() != reader_folder(b).lower()


def test_a_film_another_reader_annotated_opens_empty(tmp_path):
    store = AnnotationStore(folder=tmp_path / "store")
    film = tmp_path / "pre.dcm"
    film.write_bytes((REPO / "sample_images" / "pre.dcm").read_bytes())  # no sidecar here
    opened = open_path(film)
    first = initial_annotation(opened, store, "pre", reader="alice")
    assert first.origin == "new" and first.annotation.annotator == "alice"
    alice = dataclasses.replace(
        first.annotation, vertebrae={"L1": {"superior_anterior": (100.0, 200.0)}}
    )
    store.save(opened.store_key, alice, reader="alice")
    second = initial_annotation(opened, store, "pre", reader="bob")
    assert second.origin == "new" and not second.annotation.vertebrae
    assert second.annotation.annotator == "bob"
    again = initial_annotation(opened, store, "pre", reader="alice")
    assert again.origin == "store" and again.annotation.vertebrae == alice.vertebrae
