"""The annotation store: every edit in the app is saved here at once.

One file per film and reader, in a folder given by the ``VHEIGHT_STORE``
environment variable (default ``~/.vheight/annotations``):
``<folder>/<reader>/<key>.vheight.json`` (the v1 annotation format), where
``<reader>`` is the reader's name made safe for a file name
(:func:`reader_folder`).  The store key of an annotation is (film, reader), so
one reader never overwrites another's landmarks.  A film's key is its DICOM
SOP Instance UID, or ``sha256-<hex>`` of the file's bytes for films without
one (PNG, JPEG, DICOM lacking the UID), so reopening the same film, from
wherever, finds its landmarks again.

Files saved before readers were named, ``<folder>/<key>.vheight.json``, are
still read: they are every reader's starting point for that film until the
reader saves their own (which never changes the old file).  Saves are atomic
(:func:`vheight.annotation.save_annotation`: a temporary file in the same
folder, then a rename), so a crash never leaves a half-written file.

This module does not import streamlit: it is plain file handling.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vheight.annotation import Annotation, load_annotation, save_annotation
from vheight.errors import AnnotationError

__all__ = [
    "STORE_ENV",
    "DEFAULT_STORE",
    "store_folder",
    "content_key",
    "film_key",
    "reader_folder",
    "StoredAnnotation",
    "AnnotationStore",
]

#: Environment variable naming the store folder.
STORE_ENV = "VHEIGHT_STORE"
#: Store folder when ``VHEIGHT_STORE`` is not set.
DEFAULT_STORE = Path("~/.vheight/annotations")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = ".vheight.json"


def store_folder(environ: dict[str, str] | None = None) -> Path:
    """The store folder: ``$VHEIGHT_STORE`` or ``~/.vheight/annotations``, expanded."""
    env = os.environ if environ is None else environ
    raw = env.get(STORE_ENV, "").strip()
    return Path(raw or DEFAULT_STORE).expanduser()


def content_key(data: bytes) -> str:
    """``sha256-<hex>`` of a file's bytes: the key of a film without a UID."""
    return "sha256-" + hashlib.sha256(data).hexdigest()


def film_key(sop_instance_uid: str | None, data: bytes | None = None) -> str:
    """The store key of a film: its SOP Instance UID, else the hash of its bytes.

    Raises
    ------
    ValueError
        When the film has no usable UID and no bytes are given.
    """
    uid = (sop_instance_uid or "").strip()
    if uid and _UID.match(uid) and len(uid) <= 64:
        return uid
    if data is None:
        raise ValueError("a film without a SOP Instance UID needs its bytes for a store key")
    return content_key(data)


def reader_folder(reader: str) -> str:
    """The folder name of a reader's annotations: the name itself when it is a plain
    lower-case file name (``alice``), else a safe form of it and a hash of the exact
    name (``dr._muller-1a2b3c4d``), so that different names never share a folder, on
    case-insensitive file systems too.

    Raises
    ------
    ValueError
        For an empty name.
    """
    name = reader.strip()
    if not name:
        raise ValueError("a reader needs a name")
    safe = _SAFE.sub("_", name).strip("._")[:48]
    if safe == name and safe == safe.lower():
        return safe
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe.lower() or 'reader'}-{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredAnnotation:
    """An annotation found in the store, with its file and reader.

    ``reader`` is the annotation's ``annotator`` (empty for an annotation saved
    before readers were named); ``legacy`` is True for such files, stored
    under the film key alone.
    """

    annotation: Annotation
    path: Path
    reader: str
    legacy: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnotationStore:
    """Annotation files keyed by film and reader, in one folder.

    Parameters
    ----------
    folder
        Where the files live; created on the first save.
    """

    folder: Path

    @classmethod
    def from_environment(cls) -> AnnotationStore:
        """The store at :func:`store_folder`."""
        return cls(folder=store_folder())

    def _name(self, key: str) -> str:
        return (_SAFE.sub("_", key).strip("._") or "film") + _SUFFIX

    def path_for(self, key: str, reader: str | None = None) -> Path:
        """The file holding ``reader``'s annotation of the film with store key ``key``
        (without a reader: the file of the single-reader layout)."""
        if reader is None or not reader.strip():
            return self.folder / self._name(key)
        return self.folder / reader_folder(reader) / self._name(key)

    def find(self, key: str, reader: str | None = None) -> StoredAnnotation | None:
        """The annotation ``reader`` works on for film ``key``, or None.

        The reader's own file; else the file of the single-reader layout (saved
        before readers were named: one store had one reader, whatever its
        ``annotator`` says, so it is every reader's starting point until they
        save their own).  Without a reader: the single-reader file.

        Raises
        ------
        AnnotationError
            When the file found is not a valid annotation.
        """
        if reader is not None and reader.strip():
            own = self.path_for(key, reader)
            if own.is_file():
                return StoredAnnotation(
                    annotation=load_annotation(own), path=own, reader=reader.strip()
                )
        legacy = self.path_for(key)
        if not legacy.is_file():
            return None
        annotation = load_annotation(legacy)
        owner = annotation.annotator.strip()
        return StoredAnnotation(annotation=annotation, path=legacy, reader=owner, legacy=True)

    def load(self, key: str, reader: str | None = None) -> Annotation | None:
        """The annotation of :meth:`find`, or None when there is none.

        Raises
        ------
        AnnotationError
            When the stored file exists but is not a valid annotation.
        """
        found = self.find(key, reader)
        return None if found is None else found.annotation

    def save(self, key: str, annotation: Annotation, reader: str | None = None) -> Path:
        """Save atomically as ``reader``'s annotation of film ``key``; returns the path.

        Raises
        ------
        OSError
            When the folder cannot be created or written.
        """
        path = self.path_for(key, reader)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_annotation(annotation, path)

    def others(self, key: str, reader: str | None) -> list[StoredAnnotation]:
        """Every other reader's annotation of film ``key`` (readable files only), by name.

        The single-reader file counts when it names a reader other than ``reader``.
        """
        me = (reader or "").strip()
        found: dict[str, StoredAnnotation] = {}
        name = self._name(key)
        candidates = [(p, False) for p in sorted(self.folder.glob(f"*/{name}"))]
        candidates.append((self.folder / name, True))
        for path, legacy in candidates:
            if not path.is_file():
                continue
            try:
                annotation = load_annotation(path)
            except (AnnotationError, OSError):
                continue
            owner = annotation.annotator.strip()
            if not owner or owner == me or owner in found:
                continue
            if not legacy and me and path.parent.name == reader_folder(me):
                continue
            found[owner] = StoredAnnotation(
                annotation=annotation, path=path, reader=owner, legacy=legacy
            )
        return [found[k] for k in sorted(found, key=lambda n: (n.casefold(), n))]

    def files(self) -> Iterator[Path]:
        """Every annotation file in the store (every reader, and the single-reader files)."""
        if not self.folder.is_dir():
            return iter(())
        return iter(sorted(self.folder.rglob(f"*{_SUFFIX}")))
