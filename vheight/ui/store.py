"""The annotation store: every edit in the app is saved here at once.

One file per film, ``<key>.vheight.json`` (the v1 annotation format), in a
folder given by the ``VHEIGHT_STORE`` environment variable (default
``~/.vheight/annotations``).  A film's key is its DICOM SOP Instance UID, or
``sha256-<hex>`` of the file's bytes for films without one (PNG, JPEG, DICOM
lacking the UID), so reopening the same film, from wherever, finds its
landmarks again.  Saves are atomic (:func:`vheight.annotation.save_annotation`:
a temporary file in the same folder, then a rename), so a crash never leaves a
half-written file.

This module does not import streamlit: it is plain file handling.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from vheight.annotation import Annotation, load_annotation, save_annotation

__all__ = [
    "STORE_ENV",
    "DEFAULT_STORE",
    "store_folder",
    "content_key",
    "film_key",
    "AnnotationStore",
]

#: Environment variable naming the store folder.
STORE_ENV = "VHEIGHT_STORE"
#: Store folder when ``VHEIGHT_STORE`` is not set.
DEFAULT_STORE = Path("~/.vheight/annotations")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnotationStore:
    """Annotation files keyed by film, in one folder.

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

    def path_for(self, key: str) -> Path:
        """The file holding the annotation of the film with store key ``key``."""
        safe = _SAFE.sub("_", key).strip("._") or "film"
        return self.folder / f"{safe}.vheight.json"

    def load(self, key: str) -> Annotation | None:
        """The stored annotation of ``key``, or None when there is none.

        Raises
        ------
        AnnotationError
            When the stored file exists but is not a valid annotation.
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        return load_annotation(path)

    def save(self, key: str, annotation: Annotation) -> Path:
        """Save atomically; returns the path written.

        Raises
        ------
        OSError
            When the folder cannot be created or written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        return save_annotation(annotation, self.path_for(key))
