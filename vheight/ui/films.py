"""Opening films in the app: uploads, sample films, and their annotations.

Plain Python (no streamlit), so every path is testable on its own.  A film is
opened into an :class:`OpenedFilm` (the decoded :class:`~vheight.film.Film`,
its store key and where it came from); its annotation is then found by
:func:`initial_annotation`: the annotation store first (edits made in the app
win), then the sidecar beside a film opened from disk (``pre.dcm`` ->
``pre.vheight.json``), else a new, empty annotation.

Points are ``(x, y)`` pixels of the full-resolution film (``x`` the column,
``y`` the row, the centre of the top-left pixel at ``(0, 0)``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vheight.annotation import (
    Annotation,
    ImageRef,
    load_annotation,
    loads_annotation,
    sidecar_path,
)
from vheight.errors import AnnotationError, ImageReadError
from vheight.film import Film, WindowChoice, render_pixels
from vheight.loader import load_film
from vheight.ui.store import AnnotationStore, content_key, film_key

__all__ = [
    "MAX_UPLOAD_MB",
    "MAX_UPLOAD_BYTES",
    "MAX_ANNOTATION_BYTES",
    "OpenedFilm",
    "read_upload",
    "open_path",
    "sample_paths",
    "InitialAnnotation",
    "initial_annotation",
    "new_annotation",
    "read_annotation_upload",
    "now_iso",
    "window_from_key",
    "display_pixels",
]

#: Largest film upload, MiB (also ``server.maxUploadSize`` in ``.streamlit/config.toml``).
MAX_UPLOAD_MB = 200
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
#: Largest annotation upload, bytes (an annotation file is a few kB).
MAX_ANNOTATION_BYTES = 5 * 1024 * 1024

SAMPLE_NAMES = {"pre": "pre.dcm", "post": "post.dcm", "followup": "followup.dcm"}


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-22T10:05:00Z``)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedFilm:
    """A film open in the app.

    Parameters
    ----------
    film
        The decoded film.
    identity
        Unique identity of the file's content (cache key).
    store_key
        Key of its annotation in the store (SOP Instance UID or content hash).
    name
        File name shown to the user.
    origin
        ``"sample"`` (opened from disk) or ``"upload"``.
    path
        The file on disk, for films opened from a path.
    data
        The uploaded file's bytes, kept for uploaded DICOM films only (the
        DICOM exports reference the film through its header).
    """

    film: Film
    identity: str
    store_key: str
    name: str
    origin: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def is_dicom(self) -> bool:
        """True when the film was read from a DICOM file."""
        return str(self.film.info.format) == "DICOM"

    @property
    def dicom_source(self) -> Path | bytes | None:
        """The DICOM file (path or uploaded bytes) for the DICOM exports, or None."""
        if not self.is_dicom:
            return None
        return self.path if self.path is not None else self.data


def _size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.0f} kB"


def read_upload(data: bytes, name: str, *, max_bytes: int = MAX_UPLOAD_BYTES) -> OpenedFilm:
    """Open an uploaded film (DICOM, PNG or JPEG; TIFF too) from its bytes.

    Raises
    ------
    ImageReadError
        With one sentence naming the file and what is wrong: too large,
        empty, not a film, unreadable pixel data.
    """
    size = len(data)
    if size > max_bytes:
        raise ImageReadError(
            f"{name}: the file is {_size_text(size)}, larger than the "
            f"{max_bytes / 2**20:.0f} MB upload limit; open a smaller export of the film"
        )
    if size == 0:
        raise ImageReadError(f"{name}: the file is empty (0 bytes)")
    data = bytes(data)
    film = load_film(data, name=name, max_bytes=max_bytes)
    opened = OpenedFilm(
        film=film,
        identity=content_key(data),
        store_key=film_key(film.info.sop_instance_uid, data),
        name=name,
        origin="upload",
    )
    return dataclasses.replace(opened, data=data) if opened.is_dicom else opened


def open_path(path: str | Path, *, film: Film | None = None) -> OpenedFilm:
    """Open a film from disk (``film`` when already decoded, e.g. from a cache).

    Raises
    ------
    ImageReadError
        When the file cannot be read as a film.
    """
    path = Path(path)
    if film is None:
        film = load_film(path)
    uid = film.info.sop_instance_uid
    try:
        key = film_key(uid)
    except ValueError:
        key = film_key(None, path.read_bytes())
    stat = path.stat()
    return OpenedFilm(
        film=film,
        identity=f"path:{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}",
        store_key=key,
        name=path.name,
        origin="sample",
        path=path,
    )


def sample_paths(folder: Path) -> dict[str, Path]:
    """Timepoint -> sample film in ``folder`` (only those present)."""
    return {
        timepoint: folder / name
        for timepoint, name in SAMPLE_NAMES.items()
        if (folder / name).is_file()
    }


def new_annotation(opened: OpenedFilm, timepoint: str | None) -> Annotation:
    """An empty annotation of ``opened``, stamped now."""
    info = opened.film.info
    stamp = now_iso()
    return Annotation(
        image=ImageRef(
            file=opened.name,
            sop_instance_uid=info.sop_instance_uid,
            rows=opened.film.rows,
            columns=opened.film.columns,
        ),
        timepoint=timepoint,
        patient_position=_position(info.patient_position),
        created=stamp,
        modified=stamp,
    )


def _position(value: str | None) -> str | None:
    """The annotation's patient position from the header's, when it maps."""
    from vheight.annotation import PATIENT_POSITIONS

    text = (value or "").strip().lower()
    return text if text in PATIENT_POSITIONS else None


@dataclass(frozen=True, slots=True, kw_only=True)
class InitialAnnotation:
    """The annotation a film opens with, and where it came from.

    ``origin`` is ``"store"``, ``"sidecar"`` or ``"new"``; ``notes`` are
    sentences for the user (an unreadable stored file, a size mismatch).
    """

    annotation: Annotation
    origin: str
    source: Path | None
    notes: tuple[str, ...] = ()


def _fits(annotation: Annotation, film: Film) -> str | None:
    """Why ``annotation`` cannot belong to ``film``, or None when it can."""
    image = annotation.image
    if image.rows is not None and image.columns is not None:
        if (image.rows, image.columns) != (film.rows, film.columns):
            return (
                f"it was made on a {image.columns} x {image.rows} px film, this film is "
                f"{film.columns} x {film.rows} px"
            )
    return None


def _adopt(annotation: Annotation, opened: OpenedFilm, timepoint: str | None) -> Annotation:
    """Fill in what the film knows (size, UID) and the slot's timepoint."""
    image = annotation.image
    info = opened.film.info
    image = dataclasses.replace(
        image,
        file=image.file or opened.name,
        sop_instance_uid=image.sop_instance_uid or info.sop_instance_uid,
        rows=opened.film.rows,
        columns=opened.film.columns,
    )
    changes: dict[str, object] = {"image": image}
    if timepoint is not None and annotation.timepoint != timepoint:
        changes["timepoint"] = timepoint
    return dataclasses.replace(annotation, **changes)


def initial_annotation(
    opened: OpenedFilm, store: AnnotationStore, timepoint: str | None, reader: str | None = None
) -> InitialAnnotation:
    """The annotation ``opened`` starts with: ``reader``'s in the store, then sidecar, else new.

    Another reader's stored landmarks are never used (the reader may copy them
    on request); a new annotation names ``reader`` as its annotator.
    """
    notes: list[str] = []
    path = store.path_for(opened.store_key, reader)
    try:
        found = store.find(opened.store_key, reader)
    except (AnnotationError, OSError) as exc:
        found = None
        notes.append(f"The stored annotation {path} could not be read ({exc}); it was not used.")
    stored = None if found is None else found.annotation
    if found is not None:
        path = found.path
        if found.legacy and reader:
            by = f" by {found.reader}" if found.reader else ""
            notes.append(
                f"These landmarks were saved{by} before readers were named; your changes are "
                f"saved as {reader}'s."
            )
    if stored is not None:
        why = _fits(stored, opened.film)
        if why is None:
            return InitialAnnotation(
                annotation=_adopt(stored, opened, timepoint),
                origin="store",
                source=path,
                notes=tuple(notes),
            )
        notes.append(f"The stored annotation {path} was not used: {why}.")
    if opened.path is not None:
        sidecar = sidecar_path(opened.path)
        if sidecar.is_file():
            try:
                found = load_annotation(sidecar)
            except (AnnotationError, OSError) as exc:
                notes.append(f"The sidecar {sidecar.name} could not be read ({exc}).")
            else:
                why = _fits(found, opened.film)
                if why is None:
                    return InitialAnnotation(
                        annotation=_adopt(found, opened, timepoint),
                        origin="sidecar",
                        source=sidecar,
                        notes=tuple(notes),
                    )
                notes.append(f"The sidecar {sidecar.name} was not used: {why}.")
    fresh = new_annotation(opened, timepoint)
    if reader:
        fresh = dataclasses.replace(fresh, annotator=reader)
    return InitialAnnotation(
        annotation=fresh,
        origin="new",
        source=None,
        notes=tuple(notes),
    )


def read_annotation_upload(
    data: bytes, name: str, opened: OpenedFilm, timepoint: str | None
) -> tuple[Annotation, list[str]]:
    """Validate an uploaded annotation file against the open film.

    The file is a v1 annotation (JSON) or a vheight DICOM SR (recognised by
    the DICOM preamble), whose landmarks are read back with
    :func:`vheight.sr.annotation_from_sr`.

    Returns the annotation adopted for the film, and warnings (a different
    SOP Instance UID).

    Raises
    ------
    AnnotationError
        Not a valid v1 annotation (the message lists every problem), too
        large, or made on a film of another size.
    SRExportError
        A DICOM file that is not a vheight measurement report.
    """
    if len(data) > MAX_ANNOTATION_BYTES:
        raise AnnotationError(
            f"{name}: {_size_text(len(data))} is too large for an annotation file "
            f"(limit {MAX_ANNOTATION_BYTES // 2**20} MB)"
        )
    if data[128:132] == b"DICM":
        from vheight.sr import annotation_from_sr

        annotation = annotation_from_sr(bytes(data), image_file=opened.name)
    else:
        annotation = loads_annotation(data, source=name)
    why = _fits(annotation, opened.film)
    if why is not None:
        raise AnnotationError(f"{name}: does not belong to {opened.name}: {why}")
    warnings = []
    uid = opened.film.info.sop_instance_uid
    if annotation.image.sop_instance_uid and uid and annotation.image.sop_instance_uid != uid:
        warnings.append(
            f"{name} names another film (SOP Instance UID {annotation.image.sop_instance_uid}); "
            f"its points were placed on {opened.name} anyway."
        )
        annotation = dataclasses.replace(
            annotation, image=dataclasses.replace(annotation.image, sop_instance_uid=uid)
        )
    return _adopt(annotation, opened, timepoint), warnings


# -- display -------------------------------------------------------------------------------

#: The window a film opens with: its first preset, not inverted (see :func:`window_from_key`).
DEFAULT_WINDOW_KEY = ("preset", 0)


def window_from_key(key: tuple) -> WindowChoice:
    """The :meth:`Film.render` window of a window key.

    Keys are hashable (they key cached renderings): ``("preset", index)``,
    ``("auto",)`` (percentiles 0.5-99.5 of the film's values) or
    ``("manual", centre, width)`` in modality units.
    """
    if key[0] == "preset":
        return int(key[1])
    if key[0] == "auto":
        return "auto"
    if key[0] == "manual":
        return (float(key[1]), float(key[2]))
    raise ValueError(f"unknown window key {key!r}")


def display_pixels(
    film: Film,
    window: tuple = DEFAULT_WINDOW_KEY,
    invert: bool = False,
    *,
    rows: slice = slice(None),
    columns: slice = slice(None),
) -> np.ndarray:
    """Display values of a region of ``film`` under a window key (float32, [0, 1]).

    The whole film is :meth:`Film.render`; a region under the film's own
    window is a view of :attr:`Film.pixels`, under any other window it is
    computed for the region only (a crop costs a crop's worth of work).
    """
    choice = window_from_key(window)
    if rows == slice(None) and columns == slice(None):
        return film.render(window=choice, invert=invert)
    preset = film.resolve_window(choice)
    if preset is film.window and not invert:
        return film.pixels[rows, columns]
    return render_pixels(
        film.stored[rows, columns], film.modality, preset, invert=film.invert != invert
    )
