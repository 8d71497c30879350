"""Measure every annotated film under a folder: workers, pairing, tidy tables.

:func:`run_batch` finds every annotation file (``*.vheight.json``) under a
folder, recursively, measures each one exactly as :func:`vheight.api.measure_file`
does, pairs the pre/post/follow-up films of the same patient and reader,
compares them as :func:`vheight.api.compare_files` does, and returns a
:class:`BatchResult` holding three tidy tables (pandas DataFrames, one row per
observation; the columns are those of :mod:`vheight.tables`):

``measurements``
    One row per annotated vertebra: the ``measure`` output record
    (``level``, ``complete``, ``unit``, ..., ``treated``) preceded by the
    film's identifiers (``annotation``, ``image``, ``patient_id``,
    ``study_instance_uid``, ``sop_instance_uid``, ``timepoint``,
    ``annotator``) and followed by ``warnings`` and ``error``.  A file that
    could not be measured gives a single row whose ``error`` names the file and
    says why; its numbers are empty.
``comparisons``
    One row per level and height of each pre/post(/follow-up) pairing: the
    ``compare`` output record preceded by the pairing's identifiers.
``errors``
    The failed inputs only (``stage``, ``subject``, ``annotation``, ``image``,
    ``error``).

How the work is shared
----------------------
Only a film's header is read: measuring needs the calibration and the
identifiers, never the pixels.  The sorted files are cut into chunks, run on a
local process pool (``workers``, default ``os.cpu_count()``, one per 32 files
for a small folder; ``workers=1`` runs the same chunks in this process).  A
chunk's task does all the work of its files: it measures them, pairs and
compares the pairings whose files all fell in it (a patient's films lie side by
side in a sorted folder), builds its rows into columns and formats their
CSV text.  This process only gathers the chunks: it pairs the films of the
whole folder from their identifiers, keeps the comparisons that pairing agrees
with, has the few pairings spanning chunks compared on the pool, and sets the
CSV parts aside in a temporary file, so that writing the tables copies them,
with the columns, made typed tables (pandas) only when a table is asked for.
Any :class:`concurrent.futures.Executor`, or a ``dask.distributed.Client`` (the
optional ``vheight[dask]`` extra), may be passed as ``executor`` to run the
same tasks elsewhere; the files must then be readable at the same paths on
every worker.

A task that fails as a whole (a worker process killed, a lost machine) is run
again once, on a fresh pool when the pool is this function's own; if it fails
again its files become error rows saying why.  Every file gets exactly one row
(or one per vertebra) either way, and a run whose task was retried gives the
same tables as an undisturbed run.

Pairing rule
------------
A measured annotation whose ``timepoint`` is ``pre``, ``post`` or
``followup`` belongs to a *subject*: its film's ``PatientID`` when the header
has one, else its ``StudyInstanceUID``, else the folder holding the
annotation file (column ``paired_by`` says which).  Annotations are paired
per subject **and reader** (``annotator``): two readers of one patient give
two comparisons, never a mix of their films.  Within a subject and reader
holding at most one annotation per timepoint, the ``pre`` and ``post``
annotations are compared (with the ``followup`` one when present).  When they
hold several annotations of one timepoint (two treatments of one patient),
they are split by folder and each folder is paired on its own (``paired_by``
gains ``+folder``); a folder still holding two annotations of one timepoint is
not paired, and :attr:`BatchResult.warnings` says so.  Annotations without a
timepoint are measured, never paired.

Output is idempotent: paths are relative to the folder (POSIX separators),
rows are sorted by annotation path then anatomical level order, nothing
depends on the time, the number of workers or the order in which they finish,
and :meth:`BatchResult.write` replaces its file atomically; a rerun on
unchanged inputs writes byte-identical files.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import functools
import gc
import importlib
import io
import itertools
import math
import multiprocessing
import os
import pickle
import queue
import shutil
import sys
import tempfile
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vheight import tables
from vheight.annotation import load_annotation
from vheight.api import film_header_warnings, film_location
from vheight.comparison import FilmFacts
from vheight.errors import ImageReadError, VHeightError
from vheight.files import write_atomic
from vheight.morphometry import Measurement, ReferenceMethod, measure

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = [
    "ANNOTATION_SUFFIX",
    "REFERENCE_METHODS",
    "MEASURE_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "COMPARE_COLUMNS",
    "COMPARISON_COLUMNS",
    "ERROR_COLUMNS",
    "Stage",
    "TableFormat",
    "BatchResult",
    "find_annotations",
    "run_batch",
    "dask_client",
]

#: File name ending of annotation files.
ANNOTATION_SUFFIX = ".vheight.json"

#: Reference methods of the height loss (``measurements.md``).
REFERENCE_METHODS: tuple[str, ...] = tuple(method.value for method in ReferenceMethod)

#: Keys of the ``measure`` output record (``interfaces.md``), in order.
MEASURE_COLUMNS: tuple[str, ...] = tables.MEASURE_RECORD_KEYS
#: Columns of the batch measurement table, in order.
MEASUREMENT_COLUMNS: tuple[str, ...] = tables.BATCH_MEASUREMENTS.names
#: Keys of the ``compare`` output record named by ``interfaces.md``, in order.
COMPARE_COLUMNS: tuple[str, ...] = tables.COMPARE_SPEC_KEYS
#: Columns of the batch comparison table, in order.
COMPARISON_COLUMNS: tuple[str, ...] = tables.BATCH_COMPARISONS.names
#: Columns of the error table.
ERROR_COLUMNS: tuple[str, ...] = tables.BATCH_ERRORS.names

_TIMEPOINT_ORDER: tuple[str, ...] = ("pre", "post", "followup")

# Chunking: aim for this many chunks per worker (load balance and a lively
# progress bar) but never more than this many files per chunk.
_CHUNKS_PER_WORKER = 4
_MAX_CHUNK = 64
# With the default worker count, at least this many files per worker process.
_MIN_FILES_PER_WORKER = 32
# A task that failed as a whole is run this many times in all.
_ATTEMPTS = 2


class Stage(enum.StrEnum):
    """Where an error row comes from."""

    MEASURE = "measure"
    COMPARE = "compare"


class TableFormat(enum.StrEnum):
    """File formats of :meth:`BatchResult.write`."""

    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def for_path(cls, path: str | os.PathLike[str]) -> TableFormat:
        """Parquet for a ``.parquet``/``.pq`` suffix, CSV otherwise."""
        suffix = Path(path).suffix.lower()
        return cls.PARQUET if suffix in (".parquet", ".pq") else cls.CSV


# --------------------------------------------------------------------------------------
# One annotation file
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Film:
    """What the batch keeps of one annotation file: where it is and whom it shows."""

    annotation: str
    folder: str
    image: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    timepoint: str | None = None
    annotator: str | None = None
    facts: FilmFacts | None = None  # patient, date and view, for the comparison
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Measured:
    """One file measured in a worker: its facts, measurement and warnings."""

    film: _Film
    measurement: Measurement | None = None
    warnings: tuple[str, ...] = ()


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` with POSIX separators (``..`` when outside).

    ``path`` is normalised (``os.path.normpath``); ``root`` is resolved.
    """
    inside = root + os.sep
    if os.path.isabs(path) and path.startswith(inside) and os.path.isabs(root):
        # Both normalised and absolute (the usual case): no need for relpath's work.
        rel = path[len(inside) :]
        return rel.replace(os.sep, "/") if os.sep != "/" else rel
    rel = os.path.relpath(path, root)
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


def _folder_of(rel: str) -> str:
    """The folder of a path relative to the root (``"."`` for the root itself)."""
    return rel.rpartition("/")[0] or "."


def _strip_root(message: str, root: str) -> str:
    """Paths inside ``root`` shown relative to it, so output does not depend on
    where the folder lives."""
    return message.replace(root.rstrip(os.sep) + os.sep, "")


def _clean_message(message: str, root: str) -> str:
    """:func:`_strip_root`, on one line (error cells)."""
    return " ".join(_strip_root(message, root).split())


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _measure_one(root: str, rel: str, reference: str) -> _Measured:
    """Measure one annotation file as :func:`vheight.api.measure_file` does.

    The film's header is read once, for both the calibration and the
    identifiers.  Every failure becomes an error naming the file.
    """
    from vheight.loader import read_film_info  # imported here: it brings numpy in

    path = os.path.join(root, rel)
    folder = _folder_of(rel)
    image_rel: str | None = None
    timepoint: str | None = None
    sop_uid: str | None = None
    annotator: str | None = None
    try:
        annotation = load_annotation(path)
        timepoint = annotation.timepoint
        sop_uid = _text_or_none(annotation.image.sop_instance_uid)
        annotator = _text_or_none(annotation.annotator)
        film = film_location(annotation, path)
        film_name = None
        info = None
        if film is not None:
            image_rel = _relative(os.path.normpath(film), root)
            if not os.path.isfile(film):
                # measure_file() measures such a file in px with a warning; in a batch
                # a missing film is an error: its header is needed for pairing, and a
                # px row would pass unnoticed in a table of mm.
                raise ImageReadError(
                    f"{rel}: its film {annotation.image.file!r} (image.file) was not found "
                    f"at {image_rel}; put the film there or correct image.file"
                )
            film_name = os.path.basename(film)
            try:
                info = read_film_info(film)
            except ImageReadError as exc:
                message = str(exc)
                if message.startswith(f"{film_name}: "):  # name the film by its path
                    message = f"{image_rel}: {message[len(film_name) + 2 :]}"
                raise ImageReadError(message) from None
        warnings = _film_warnings(annotation, film_name, info)
        measurement = measure(
            annotation,
            info.calibration if info is not None and annotation.calibration is None else None,
            reference=reference,
            source=rel,
        )
        header_uid = _text_or_none(info.sop_instance_uid) if info is not None else None
        film_facts = _Film(
            annotation=rel,
            folder=folder,
            image=image_rel,
            patient_id=_text_or_none(info.patient_id) if info is not None else None,
            study_instance_uid=(
                _text_or_none(info.study_instance_uid) if info is not None else None
            ),
            sop_instance_uid=header_uid or sop_uid,
            timepoint=timepoint,
            annotator=annotator,
            facts=None if info is None else FilmFacts.from_header(info),
        )
        return _Measured(
            film=film_facts,
            measurement=measurement,
            warnings=tuple(_strip_root(w, root) for w in (*warnings, *measurement.warnings)),
        )
    except Exception as exc:  # one bad file must not stop the batch
        return _Measured(
            film=_Film(
                annotation=rel,
                folder=folder,
                image=image_rel,
                timepoint=timepoint,
                sop_instance_uid=sop_uid,
                annotator=annotator,
                error=_error_message(exc, rel, root),
            )
        )


def _film_warnings(annotation: Any, film_name: str | None, info: Any) -> list[str]:
    """The warnings :func:`vheight.api.resolve_calibration` gives for this film header.

    Only when the header supplies the calibration (the annotation has none of
    its own); the same function words them, so batch and single-file warnings agree.
    """
    if annotation.calibration is not None or info is None or film_name is None:
        return []
    return film_header_warnings(annotation, film_name, info)


def _error_message(exc: BaseException, rel: str, root: str) -> str:
    """The error's own message, prefixed with the annotation's path unless it names it."""
    if isinstance(exc, VHeightError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        message = f"unexpected {type(exc).__name__}: {exc}"
    message = _clean_message(message, root)
    return message if rel in message else f"{rel}: {message}"


def _film_ids(film: _Film) -> dict[str, Any]:
    return {
        "annotation": film.annotation,
        "image": film.image,
        "patient_id": film.patient_id,
        "study_instance_uid": film.study_instance_uid,
        "sop_instance_uid": film.sop_instance_uid,
        "timepoint": film.timepoint,
        "annotator": film.annotator,
    }


_NO_MEASURE_RECORD = dict.fromkeys(MEASURE_COLUMNS)
_NO_COMPARE_RECORD = dict.fromkeys(tables.COMPARE_RECORD_KEYS)


def _measurement_rows(measured: Iterable[_Measured]) -> list[dict[str, Any]]:
    """The measurement table's rows of these files, in order (every column set)."""
    rows: list[dict[str, Any]] = []
    for item in measured:
        ids = _film_ids(item.film)
        if item.measurement is None:
            rows.append({**ids, **_NO_MEASURE_RECORD, "warnings": None, "error": item.film.error})
            continue
        joined = "; ".join(item.warnings) or None
        rows.extend(
            {**ids, **record, "warnings": joined, "error": None}
            for record in item.measurement.records()
        )
    return rows


def _packed(rows: Sequence[Mapping[str, Any]], schema: tables.Schema) -> tuple[bytes, bytes]:
    """``rows`` column by column (pickled: the main process stores them as they come
    and makes them a typed table only when the table is asked for, see
    :meth:`_Stored.table`) and as CSV lines (no header, UTF-8)."""
    columns = tables.columns_of(rows, schema)
    buffer = io.StringIO()
    tables.write_columns_csv(columns, schema, buffer, header=False)
    return pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL), buffer.getvalue().encode(
        "utf-8"
    )


def _csv_text(rows: Sequence[Mapping[str, Any]], schema: tables.Schema) -> bytes:
    """The CSV lines of ``rows`` (no header), UTF-8."""
    buffer = io.StringIO()
    tables.write_columns_csv(tables.columns_of(rows, schema), schema, buffer, header=False)
    return buffer.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------
# Pairing and comparison
# --------------------------------------------------------------------------------------

# A pairing: ``(paired_by, subject, annotator, pre, post, followup)``, the last three
# being annotation paths (followup None when there is none).
_GroupKey = tuple[str, str, str | None, str, str, str | None]


@dataclass(frozen=True, slots=True)
class _Group:
    """The films of one pairing, by timepoint."""

    paired_by: str
    subject: str
    annotator: str | None
    films: Mapping[str, _Film]

    @property
    def key(self) -> _GroupKey:
        followup = self.films.get("followup")
        return (
            self.paired_by,
            self.subject,
            self.annotator,
            self.films["pre"].annotation,
            self.films["post"].annotation,
            followup.annotation if followup is not None else None,
        )

    @property
    def names(self) -> str:
        """The pairing's annotations, ``pre + post (+ followup)``."""
        return " + ".join(self.films[t].annotation for t in _TIMEPOINT_ORDER if t in self.films)


def _subject(film: _Film) -> tuple[str, str]:
    if film.patient_id:
        return "patient_id", film.patient_id
    if film.study_instance_uid:
        return "study_instance_uid", film.study_instance_uid
    return "folder", film.folder


def _pairings(films: Iterable[_Film]) -> tuple[list[_Group], list[str]]:
    """The pairings to compare, and warnings about the films that cannot be paired."""
    subjects: dict[tuple[str, str, str], list[_Film]] = defaultdict(list)
    for film in films:
        if film.error is None and film.timepoint in _TIMEPOINT_ORDER:
            subjects[(*_subject(film), film.annotator or "")].append(film)

    groups: list[_Group] = []
    warnings: list[str] = []
    for (paired_by, subject, annotator), members in sorted(subjects.items()):
        if _unique_timepoints(members):
            sets = [(paired_by, members)]
        else:
            by_folder: dict[str, list[_Film]] = defaultdict(list)
            for member in members:
                by_folder[member.folder].append(member)
            sets = []
            reader = f" read by {annotator}" if annotator else ""
            for folder, folder_members in sorted(by_folder.items()):
                if _unique_timepoints(folder_members):
                    sets.append((f"{paired_by}+folder", folder_members))
                else:
                    names = ", ".join(sorted(m.annotation for m in folder_members))
                    warnings.append(
                        f"not paired: {paired_by} {subject}{reader} has several annotations "
                        f"of one timepoint in folder {folder or '.'} ({names}); put each "
                        "treatment in its own folder or correct the timepoints"
                    )
        for label, chosen in sets:
            by_timepoint = {m.timepoint: m for m in chosen if m.timepoint is not None}
            if "pre" in by_timepoint and "post" in by_timepoint:
                groups.append(_Group(label, subject, annotator or None, by_timepoint))
    return groups, warnings


def _unique_timepoints(members: Sequence[_Film]) -> bool:
    timepoints = [m.timepoint for m in members]
    return len(timepoints) == len(set(timepoints))


def _pair_ids(group: _Group) -> dict[str, Any]:
    pre, post = group.films["pre"], group.films["post"]
    ids: dict[str, Any] = {
        "subject": group.subject,
        "paired_by": group.paired_by,
        "patient_id": pre.patient_id or post.patient_id,
        "annotator": group.annotator,
    }
    for name in ("annotation", "sop_instance_uid", "study_instance_uid"):
        for timepoint in _TIMEPOINT_ORDER:
            film = group.films.get(timepoint)
            ids[f"{timepoint}_{name}"] = getattr(film, name) if film is not None else None
    return ids


def _compare_group(
    group: _Group, measurements: Mapping[str, Measurement], root: str
) -> tuple[list[dict[str, Any]], str | None]:
    """The comparison rows of one pairing, or its one error row and the error."""
    from vheight.comparison import compare  # looked up per pairing (tests replace it)

    ids = _pair_ids(group)
    followup = group.films.get("followup")
    try:
        comparison = compare(
            measurements[group.films["pre"].annotation],
            measurements[group.films["post"].annotation],
            measurements[followup.annotation] if followup is not None else None,
            facts={timepoint: film.facts for timepoint, film in group.films.items()},
        )
        records = comparison.records()
        warnings = "; ".join(_strip_root(w, root) for w in comparison.warnings) or None
    except Exception as exc:  # a refused pairing must not stop the others
        message = (
            str(exc)
            if isinstance(exc, VHeightError)
            else (f"unexpected {type(exc).__name__}: {exc}")
        )
        return _group_error(group, f"cannot compare: {_clean_message(message, root)}")
    return [{**ids, **r, "warnings": warnings, "error": None} for r in records], None


def _group_error(group: _Group, why: str) -> tuple[list[dict[str, Any]], str]:
    error = f"{group.names}: {why}"
    row = {**_pair_ids(group), **_NO_COMPARE_RECORD, "warnings": None, "error": error}
    return [row], error


@dataclass(frozen=True, slots=True, kw_only=True)
class _Compared:
    """Pairings compared by one task: each one's rows (contiguous, in order), error,
    and CSV text."""

    keys: tuple[_GroupKey, ...] = ()
    row_counts: tuple[int, ...] = ()
    errors: tuple[str | None, ...] = ()
    table: bytes = b""  # the rows' columns, pickled
    csv: tuple[bytes, ...] = ()


def _compared(results: Sequence[tuple[_Group, list[dict[str, Any]], str | None]]) -> _Compared:
    rows = [row for _group, group_rows, _error in results for row in group_rows]
    table, text = _packed(rows, tables.BATCH_COMPARISONS)
    # Each pairing's CSV lines: a row is one line (no cell holds a line break) unless
    # quoted; then the pairing's rows are formatted on their own.
    lines = text.split(b"\n")[:-1] if text else []
    counts = [len(group_rows) for _group, group_rows, _error in results]
    if len(lines) == len(rows):
        ends = list(itertools.accumulate(counts))
        csv = tuple(
            b"".join(line + b"\n" for line in lines[end - count : end])
            for end, count in zip(ends, counts, strict=True)
        )
    else:
        csv = tuple(_csv_text(r, tables.BATCH_COMPARISONS) for _g, r, _e in results)
    return _Compared(
        keys=tuple(group.key for group, _rows, _error in results),
        row_counts=tuple(counts),
        errors=tuple(error for _group, _rows, error in results),
        table=table,
        csv=csv,
    )


# --------------------------------------------------------------------------------------
# The tasks a worker runs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Part:
    """What one chunk's task sends back: small facts per file, its measurement rows
    column by column and as CSV text, and the pairings it could compare."""

    films: tuple[_Film, ...]
    table: bytes  # the measurement rows' columns, pickled
    csv: bytes
    n_vertebrae: int
    compared: _Compared


def _measure_chunk(root: str, rels: Sequence[str], reference: str) -> list[_Measured]:
    """Measure a chunk of annotation files (paths relative to root)."""
    return [_measure_one(root, rel, reference) for rel in rels]


def _chunk_task(root: str, rels: Sequence[str], reference: str) -> _Part:
    """A chunk's task: measure its files, compare the pairings found among them,
    and build their rows."""
    measured = _measure_chunk(root, rels, reference)
    films = [item.film for item in measured]
    rows = _measurement_rows(measured)
    measurements = {i.film.annotation: i.measurement for i in measured if i.measurement}
    groups, _warnings = _pairings(films)
    table, text = _packed(rows, tables.BATCH_MEASUREMENTS)
    return _Part(
        films=tuple(films),
        table=table,
        csv=text,
        n_vertebrae=sum(1 for row in rows if row["error"] is None),
        compared=_compared([(g, *_compare_group(g, measurements, root)) for g in groups]),
    )


def _compare_chunk(root: str, groups: Sequence[_Group], reference: str) -> _Compared:
    """A task comparing pairings whose files fell in different chunks: their files
    are measured again here."""
    results = []
    for group in groups:
        names = [film.annotation for film in group.films.values()]
        measured = [_measure_one(root, rel, reference) for rel in names]
        if any(item.measurement is None for item in measured):
            results.append((group, *_group_error(group, _CHANGED)))
            continue
        measurements = {i.film.annotation: i.measurement for i in measured if i.measurement}
        results.append((group, *_compare_group(group, measurements, root)))
    return _compared(results)


_CHANGED = "cannot compare: a file changed while the batch ran"


# --------------------------------------------------------------------------------------
# Finding files and running them
# --------------------------------------------------------------------------------------


def find_annotations(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.vheight.json`` file under ``folder`` (recursive), sorted by path.

    Hidden folders (name starting with ``.``) are skipped; symbolic links to
    folders are not followed.  ``folder`` may also be one annotation file.
    Raises :class:`VHeightError` when ``folder`` does not exist.
    """
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise VHeightError(f"{root}: no such folder; give a folder holding *.vheight.json files")
    return [root / rel for rel in _find_relative(root)]


def _find_relative(root: Path) -> list[str]:
    """:func:`find_annotations` of the folder ``root``, as sorted POSIX paths relative
    to it (string work only: no path objects per file).

    What :func:`os.walk` would find, without its lists per folder: a folder is
    entered unless hidden or a symbolic link, and a folder that cannot be listed,
    or fails while being listed, is skipped.
    """
    found: list[str] = []
    pending = [(os.fspath(root), "")]
    while pending:
        folder, prefix = pending.pop()
        files: list[str] = []
        inside: list[tuple[str, str]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if not is_dir:
                        if name.endswith(ANNOTATION_SUFFIX):
                            files.append(prefix + name)
                    elif not entry.is_symlink():
                        inside.append((entry.path, f"{prefix}{name}/"))
        except OSError:
            continue
        found += files
        pending += inside
    found.sort()
    return found


def _chunks(items: Sequence[str], workers: int) -> list[tuple[str, ...]]:
    """``items`` cut into chunks for ``workers`` workers (0: run here, largest chunks)."""
    size = _MAX_CHUNK
    if workers:
        size = max(1, min(size, math.ceil(len(items) / (workers * _CHUNKS_PER_WORKER))))
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def _is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed" and hasattr(
        executor, "get_executor"
    )


def _executor_workers(executor: Any) -> int:
    """How many tasks ``executor`` runs at once (for chunk sizing)."""
    if _is_dask_client(executor):
        try:
            return max(1, sum(executor.nthreads().values()))
        except Exception:  # pragma: no cover - a scheduler that cannot say
            return os.cpu_count() or 1
    return max(1, int(getattr(executor, "_max_workers", None) or os.cpu_count() or 1))


# What a worker imports; imported before the pool starts so that forked workers
# inherit them instead of each importing them again.
_WORKER_MODULES = (
    "vheight.annotation",
    "vheight.api",
    "vheight.film",
    "vheight.loader",
    "vheight.dicom",
    "vheight.morphometry",
    "vheight.comparison",
    "vheight.tables",
    "pandas",
)


def _pool_context() -> multiprocessing.context.BaseContext | None:
    """``fork`` where it is safe and fast (Linux, one thread), else ``forkserver``
    (workers start from a process that has imported vheight once), else the default."""
    for name in _WORKER_MODULES:
        importlib.import_module(name)
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["vheight.batch", *_WORKER_MODULES])
        return context
    return None


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], object]]:
    if not enabled or total == 0:
        yield lambda n: None
        return
    from tqdm import tqdm

    # disable=None: shown only when stderr is a terminal.
    bar = tqdm(total=total, unit="file", desc="vheight batch", file=sys.stderr, disable=None)
    try:
        yield bar.update
    finally:
        bar.close()


class _Runner:
    """Runs tasks in this process, on a pool of its own, or on a given executor.

    A task that fails as a whole (its worker died, the executor lost it) is run
    once more, on a fresh pool when the pool is the runner's own; the result of a
    task that failed every time is the exception of its last attempt.

    On the runner's own pool a task's result comes back through a file
    (:func:`_handed_over`), and only the file's name through the pool's pipe: a
    worker killed while writing a large result into the pipe leaves half a
    message there, which the pool's reader then waits for forever.  A name is
    written to the pipe in one atomic write, and a half-written file is never
    named.
    """

    def __init__(self, executor: Any, workers: int) -> None:
        self.inline = executor is None and workers <= 1
        self.workers = workers
        self.executor: cf.Executor | None = None
        self._own: cf.ProcessPoolExecutor | None = None
        self._handover: str | None = None  # the folder of results handed over by files
        if executor is None:
            return
        if _is_dask_client(executor):
            # pure=False: files may change between runs, never reuse a cached result.
            self.executor = executor.get_executor(pure=False)
        elif isinstance(executor, cf.Executor):
            self.executor = executor
        else:
            raise TypeError(
                "executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
                f"found {type(executor).__name__}"
            )
        self.workers = _executor_workers(executor)

    def map(
        self,
        task: Callable[..., Any],
        jobs: Sequence[tuple[Any, ...]],
        done: Callable[[int], object] = lambda i: None,
        keep: Callable[[Any], Any] = lambda result: result,
    ) -> list[Any]:
        """``keep(task(*job))`` of every job, in order (``keep`` is applied to each
        result as it arrives); ``done(i)`` once job ``i`` is over."""
        results: list[Any] = [None] * len(jobs)
        if self.inline:
            for i, job in enumerate(jobs):
                results[i] = keep(task(*job))
                done(i)
            return results
        pending = list(range(len(jobs)))
        for attempt in range(1, _ATTEMPTS + 1):
            last = attempt == _ATTEMPTS
            failed = self._attempt(task, jobs, pending, results, done, keep, last=last)
            pending = [i for i in pending if i in failed]
            if not pending:
                break
        return results

    def _attempt(
        self,
        task: Callable[..., Any],
        jobs: Sequence[tuple[Any, ...]],
        pending: Sequence[int],
        results: list[Any],
        done: Callable[[int], object],
        keep: Callable[[Any], Any],
        *,
        last: bool,
    ) -> set[int]:
        """Run the ``pending`` jobs once; the indices of those that failed (``done``
        is told of the others, and of every job on the ``last`` attempt)."""
        pool = self.executor
        handover = None
        if pool is None:
            if self._own is None:
                self._own = cf.ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=_pool_context()
                )
            if self._handover is None:
                self._handover = tempfile.mkdtemp(prefix="vheight-batch-")
            pool, handover = self._own, self._handover
        failed: set[int] = set()
        # Finished futures come through a queue and are dropped once their result is
        # kept: a future holds its result (a whole chunk's bytes) while it lives.
        arrived: queue.SimpleQueue[tuple[int, cf.Future[Any]]] = queue.SimpleQueue()
        submitted: list[weakref.ref[cf.Future[Any]]] = []
        for i in pending:
            try:
                if handover is None:
                    future = pool.submit(task, *jobs[i])
                else:
                    future = pool.submit(_handed_over, handover, task, *jobs[i])
            except Exception as exc:  # a broken pool refuses new tasks
                results[i] = exc
                failed.add(i)
                if last:
                    done(i)
                continue
            submitted.append(weakref.ref(future))
            future.add_done_callback(functools.partial(_arrived, arrived, i))
            del future
        try:
            for _ in range(len(submitted)):
                i, future = arrived.get()
                try:
                    result = future.result()
                    if handover is not None:
                        result = _taken_over(result)
                except Exception as exc:  # the worker died or could not run the task
                    results[i] = exc
                    failed.add(i)
                    if not last:
                        continue
                else:
                    results[i] = keep(result)
                finally:
                    del future
                result = None
                done(i)
        except BaseException:
            for ref in submitted:
                left = ref()
                if left is not None:
                    left.cancel()
            raise
        if failed and self._own is not None:
            self.close()  # perhaps broken: the next attempt starts a fresh pool
        return failed

    def close(self) -> None:
        """Shut the runner's own pool down (it starts another if used again)."""
        if self._own is not None:
            own, self._own = self._own, None
            own.shutdown(wait=True, cancel_futures=True)
        if self._handover is not None:
            folder, self._handover = self._handover, None
            shutil.rmtree(folder, ignore_errors=True)  # with what killed workers left


def _arrived(
    arrived: queue.SimpleQueue[tuple[int, cf.Future[Any]]], i: int, future: cf.Future[Any]
) -> None:
    arrived.put((i, future))


def _handed_over(folder: str, task: Callable[..., Any], *args: Any) -> str:
    """In a worker: ``task(*args)`` pickled into a new file of ``folder``; its path."""
    result = task(*args)
    fd, path = tempfile.mkstemp(dir=folder, suffix=".part")
    with os.fdopen(fd, "wb") as handle:
        pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _taken_over(path: str) -> Any:
    """The result :func:`_handed_over` wrote to ``path``; the file is removed."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    finally:
        os.unlink(path)


def _failure(exc: BaseException, what: str) -> str:
    return f"the worker {what} failed: {type(exc).__name__}: {exc}"


def _run_chunks(
    root: str,
    rels: Sequence[str],
    reference: str,
    *,
    executor: Any,
    workers: int,
    update: Callable[[int], object],
) -> tuple[_Stored, list[_Kept], list[_KeptCompared], list[_Group], list[str]]:
    """Every chunk's part (its bytes in the store as soon as it arrives), the
    comparisons of the pairings spanning chunks, the pairings of the whole folder
    and the pairing warnings."""
    runner = _Runner(executor, workers)
    stored = _Stored()
    # In this process, chunks only bound the memory a chunk's objects take.
    chunks = _chunks(rels, runner.workers) if not runner.inline else _chunks(rels, 0)
    try:
        results = runner.map(
            _chunk_task,
            [(root, chunk, reference) for chunk in chunks],
            lambda i: update(len(chunks[i])),
            stored.keep_part,
        )
        parts = [
            result
            if isinstance(result, _Kept)
            else stored.keep_part(_lost_part(root, chunk, result))
            for chunk, result in zip(chunks, results, strict=True)
        ]
        groups, warnings = _pairings(film for part in parts for film in part.films)
        compared_keys = {key for part in parts for key in part.compared.keys}
        missing = [group for group in groups if group.key not in compared_keys]
        spanning = _compare_across_chunks(runner, stored, root, reference, missing)
    finally:
        runner.close()
    return stored, parts, spanning, groups, warnings


def _lost_part(root: str, chunk: Sequence[str], exc: BaseException) -> _Part:
    """Error rows for the files of a chunk whose task failed every time."""
    reason = _clean_message(_failure(exc, "measuring it"), root)
    films = [
        _Film(annotation=rel, folder=_folder_of(rel), error=f"{rel}: {reason}") for rel in chunk
    ]
    table, text = _packed(
        _measurement_rows(_Measured(film=film) for film in films), tables.BATCH_MEASUREMENTS
    )
    return _Part(films=tuple(films), table=table, csv=text, n_vertebrae=0, compared=_compared([]))


def _compare_across_chunks(
    runner: _Runner, stored: _Stored, root: str, reference: str, groups: Sequence[_Group]
) -> list[_KeptCompared]:
    """Compare, on the pool, the pairings whose files were measured in different chunks."""
    if not groups:
        return []
    size = max(1, math.ceil(len(groups) / runner.workers))
    batches = [tuple(groups[i : i + size]) for i in range(0, len(groups), size)]
    results = runner.map(
        _compare_chunk,
        [(root, batch, reference) for batch in batches],
        keep=stored.keep_compared,
    )
    out = []
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, _KeptCompared):
            out.append(result)
        else:
            why = _clean_message(_failure(result, "comparing it"), root)
            lost = _compared([(group, *_group_error(group, why)) for group in batch])
            out.append(stored.keep_compared(lost))
    return out


# --------------------------------------------------------------------------------------
# Gathering the parts
# --------------------------------------------------------------------------------------


class _Spool:
    """Bytes set aside in an anonymous temporary file as the parts arrive: the CSV
    text of the tables' rows, copied from it into the files written, and their
    columns, read back when a table is asked for."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - kept open
        self._end = 0
        # Closed (and so gone from the disk) with the last table that uses it.
        weakref.finalize(self, self._file.close)

    def add(self, data: bytes) -> tuple[int, int]:
        self._file.seek(self._end)
        self._file.write(data)
        start, self._end = self._end, self._end + len(data)
        return start, len(data)

    def read(self, span: tuple[int, int]) -> bytes:
        self._file.flush()
        self._file.seek(span[0])
        return self._file.read(span[1])

    def copy(self, spans: Iterable[tuple[int, int]], handle: IO[bytes]) -> None:
        for span in spans:
            handle.write(self.read(span))


_Span = tuple[int, int]  # where bytes lie in the spool: (start, length)


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeptCompared:
    """A :class:`_Compared` whose table and CSV text are in the spool."""

    keys: tuple[_GroupKey, ...]
    row_counts: tuple[int, ...]
    errors: tuple[str | None, ...]
    table: _Span
    csv: tuple[_Span, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Kept:
    """A :class:`_Part` whose table and CSV text are in the spool."""

    films: tuple[_Film, ...]
    table: _Span
    csv: _Span
    n_vertebrae: int
    compared: _KeptCompared


class _Stored:
    """The batch tables, kept in a spool until asked for (then built once).

    ``measurements``: the spans of the chunks' pickled columns, in row order.
    ``comparisons``: per compared part, the span of its pickled columns and the
    output position (rank) of each of its rows, -1 for a row of a pairing the
    whole folder's pairing does not keep.  ``*_csv``: the spans of the CSV lines.
    """

    def __init__(self) -> None:
        self.spool = _Spool()
        self.measurements: list[tuple[int, int]] = []
        self.measurement_csv: list[tuple[int, int]] = []
        self.comparisons: list[tuple[tuple[int, int], np.ndarray]] = []
        self.comparison_csv: list[tuple[int, int]] = []
        self._built: dict[str, pd.DataFrame] = {}
        self._lock = threading.Lock()

    def keep_compared(self, compared: _Compared) -> _KeptCompared:
        """``compared`` with its bytes moved to the spool."""
        start, _length = self.spool.add(b"".join(compared.csv))
        spans = []
        for text in compared.csv:
            spans.append((start, len(text)))
            start += len(text)
        return _KeptCompared(
            keys=compared.keys,
            row_counts=compared.row_counts,
            errors=compared.errors,
            table=self.spool.add(compared.table),
            csv=tuple(spans),
        )

    def keep_part(self, part: _Part) -> _Kept:
        """``part`` with its bytes moved to the spool."""
        return _Kept(
            films=part.films,
            table=self.spool.add(part.table),
            csv=self.spool.add(part.csv),
            n_vertebrae=part.n_vertebrae,
            compared=self.keep_compared(part.compared),
        )

    def table(self, name: str) -> pd.DataFrame:
        """The typed table ``name``, built from the parts' columns the first time."""
        with self._lock:
            if name not in self._built:
                self._built[name] = (
                    self._measurements() if name == "measurements" else self._comparisons()
                )
            return self._built[name]

    def _load(self, span: tuple[int, int], schema: tables.Schema) -> pd.DataFrame:
        """The typed table of one part's columns (one part's objects alive at a time)."""
        return tables.frame_of_columns(pickle.loads(self.spool.read(span)), schema)

    def _measurements(self) -> pd.DataFrame:
        schema = tables.BATCH_MEASUREMENTS
        return _concat([self._load(span, schema) for span in self.measurements], schema)

    def _comparisons(self) -> pd.DataFrame:
        import numpy as np

        frames, ranks = [], []
        for span, per_row in self.comparisons:
            keep = per_row >= 0
            frame = self._load(span, tables.BATCH_COMPARISONS)
            frames.append(frame if keep.all() else frame[keep])
            ranks.append(per_row[keep])
        table = _concat(frames, tables.BATCH_COMPARISONS)
        if len(table):
            order = np.argsort(np.concatenate(ranks), kind="stable")
            table = table.take(order).reset_index(drop=True)
        return table


def _assemble(
    folder: Path,
    reference: str,
    stored: _Stored,
    parts: Sequence[_Kept],
    spanning: Sequence[_KeptCompared],
    groups: Sequence[_Group],
    pairing_warnings: Sequence[str],
) -> BatchResult:
    import numpy as np

    films = [film for part in parts for film in part.films]
    stored.measurements = [part.table for part in parts]
    stored.measurement_csv = [part.csv for part in parts]

    # The comparison table: the pairings of the whole folder, ordered by subject,
    # paired_by and pre annotation, each compared in a chunk or across chunks.
    order = sorted(
        range(len(groups)),
        key=lambda g: (groups[g].subject, groups[g].paired_by, groups[g].key[3]),
    )
    rank = {groups[g].key: r for r, g in enumerate(order)}
    comparison_csv: list[tuple[int, int]] = [(0, 0)] * len(groups)
    errors_by_group: dict[int, str] = {}
    n_comparisons = 0
    for compared in [part.compared for part in parts] + list(spanning):
        if not compared.keys:
            continue
        ranks = np.array([rank.get(key, -1) for key in compared.keys], dtype=np.int64)
        for r, text, error, count in zip(
            ranks.tolist(), compared.csv, compared.errors, compared.row_counts, strict=True
        ):
            if r >= 0:
                comparison_csv[r] = text
                if error is not None:
                    errors_by_group[r] = error
                elif count:
                    n_comparisons += 1
        per_row = np.repeat(ranks, compared.row_counts)
        if (per_row >= 0).any():
            stored.comparisons.append((compared.table, per_row))
    stored.comparison_csv = comparison_csv

    error_rows: list[dict[str, Any]] = [
        {
            "stage": Stage.MEASURE.value,
            "subject": None,
            "annotation": film.annotation,
            "image": film.image,
            "error": film.error,
        }
        for film in films
        if film.error is not None
    ]
    for group in groups:  # in pairing order
        error = errors_by_group.get(rank[group.key])
        if error is not None:
            error_rows.append(
                {
                    "stage": Stage.COMPARE.value,
                    "subject": group.subject,
                    "annotation": group.names,
                    "image": None,
                    "error": error,
                }
            )

    warnings: list[str] = []
    # One film read by several readers is expected; by one reader several times, not.
    by_uid: dict[tuple[str, str], list[str]] = defaultdict(list)
    for film in films:
        if film.error is None and film.sop_instance_uid:
            by_uid[(film.sop_instance_uid, film.annotator or "")].append(film.annotation)
    for (uid, _reader), names in sorted(by_uid.items()):
        if len(names) > 1:
            warnings.append(
                f"SOP Instance UID {uid} is annotated {len(names)} times ({', '.join(names)}): "
                "each annotation is measured separately"
            )
    warnings.extend(pairing_warnings)
    return BatchResult(
        folder=folder,
        reference=reference,
        error_rows=tuple(error_rows),
        warnings=tuple(warnings),
        n_annotations=len(films),
        n_vertebrae=sum(part.n_vertebrae for part in parts),
        n_comparisons=n_comparisons,
        stored=stored,
    )


def _concat(frames: Sequence[pd.DataFrame], schema: tables.Schema) -> pd.DataFrame:
    import pandas as pd

    if not frames:
        return tables.frame([], schema)
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class BatchResult:
    """The outcome of :func:`run_batch`: tidy tables and the problems met.

    The tables stay in a temporary file until asked for (:attr:`measurements`,
    :attr:`comparisons`, their ``*_rows``, a Parquet file): writing CSV files
    copies the workers' CSV text, so a large batch written to CSV never holds
    its tables in memory.

    Parameters
    ----------
    folder
        The folder measured; every path in the tables is relative to it.
    reference
        Reference method of the height loss used throughout.
    error_rows
        The rows of :attr:`errors` as plain dicts.
    warnings
        Batch-level remarks (annotations that could not be paired, films
        annotated twice by one reader); per-film warnings are in the
        ``warnings`` column.
    n_annotations, n_vertebrae, n_comparisons
        Annotation files found; vertebra rows (failed files excluded);
        pairings compared successfully.
    stored
        Where the tables are kept (made by :func:`run_batch`).
    """

    folder: Path
    reference: str = "adjacent"
    error_rows: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    n_annotations: int = 0
    n_vertebrae: int = 0
    n_comparisons: int = 0
    stored: _Stored = field(default_factory=lambda: _Stored())

    # -- tables ----------------------------------------------------------------------

    @property
    def measurements(self) -> pd.DataFrame:
        """One row per annotated vertebra (and one per failed file); a new frame per call.

        Columns and dtypes: :data:`vheight.tables.BATCH_MEASUREMENTS`.
        """
        return self.stored.table("measurements").copy()

    @property
    def comparisons(self) -> pd.DataFrame:
        """One row per level and height of each pre/post(/follow-up) pairing.

        Columns and dtypes: :data:`vheight.tables.BATCH_COMPARISONS`.
        """
        return self.stored.table("comparisons").copy()

    @property
    def errors(self) -> pd.DataFrame:
        """One row per failed input (measurement) or refused pairing (comparison)."""
        return tables.frame(self.error_rows, tables.BATCH_ERRORS)

    @property
    def measurement_rows(self) -> tuple[dict[str, Any], ...]:
        """The rows of :attr:`measurements` as plain dicts (None for empty cells)."""
        return tuple(tables.records(self.stored.table("measurements")))

    @property
    def comparison_rows(self) -> tuple[dict[str, Any], ...]:
        """The rows of :attr:`comparisons` as plain dicts (None for empty cells)."""
        return tuple(tables.records(self.stored.table("comparisons")))

    @property
    def measurement_columns(self) -> tuple[str, ...]:
        return MEASUREMENT_COLUMNS

    @property
    def comparison_columns(self) -> tuple[str, ...]:
        return COMPARISON_COLUMNS

    # -- summary ---------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """True when any file failed or any pairing was refused."""
        return bool(self.error_rows)

    @property
    def n_failed(self) -> int:
        """Number of annotation files that could not be measured."""
        return sum(1 for row in self.error_rows if row["stage"] == Stage.MEASURE.value)

    def summary(self) -> dict[str, Any]:
        """Counts for people and logs."""
        return {
            "folder": str(self.folder),
            "annotations": self.n_annotations,
            "measured": self.n_annotations - self.n_failed,
            "failed": self.n_failed,
            "vertebrae": self.n_vertebrae,
            "comparisons": self.n_comparisons,
            "errors": len(self.error_rows),
        }

    # -- files -----------------------------------------------------------------------

    def write(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "measurements",
        format: str | TableFormat | None = None,
    ) -> Path:
        """Write one table to ``path`` atomically; returns the path.

        Parameters
        ----------
        path
            Output file.  Its folder must exist.
        table
            ``"measurements"`` (default), ``"comparisons"`` or ``"errors"``.
        format
            ``"csv"`` or ``"parquet"``; by default Parquet for a ``.parquet``
            or ``.pq`` suffix, CSV otherwise.  CSV cells follow the
            ``--format csv`` output of the other commands (:mod:`vheight.tables`):
            empty for null, ``true``/``false``, floats in full (shortest
            round-trip form).
        """
        path = Path(path)
        kind = TableFormat(format) if format is not None else TableFormat.for_path(path)
        self._check_table(table)
        if kind is TableFormat.CSV:

            def dump(handle: Any) -> None:
                self._write_csv(table, handle)

        else:
            frame = self.errors if table == "errors" else self._frame(table)

            def dump(handle: Any) -> None:
                tables.write_parquet(frame, handle)

        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise VHeightError(f"{path}: cannot write, folder {folder} does not exist")
        write_atomic(path, dump)
        return path

    def write_csv(self, stream: Any, *, table: str = "measurements") -> None:
        """Write one table as CSV text to ``stream`` (e.g. ``sys.stdout``)."""
        self._check_table(table)
        buffer = io.BytesIO()
        self._write_csv(table, buffer)
        stream.write(buffer.getvalue().decode("utf-8"))

    def _check_table(self, table: str) -> None:
        if table not in ("measurements", "comparisons", "errors"):
            raise ValueError(
                f"table must be 'measurements', 'comparisons' or 'errors', found {table!r}"
            )

    def _frame(self, table: str) -> pd.DataFrame:
        return self.stored.table(table)

    def _write_csv(self, table: str, handle: IO[bytes]) -> None:
        if table == "errors":
            text = io.StringIO()
            tables.write_records_csv(self.error_rows, ERROR_COLUMNS, text)
            handle.write(text.getvalue().encode("utf-8"))
            return
        schema = tables.BATCH_MEASUREMENTS if table == "measurements" else tables.BATCH_COMPARISONS
        header = io.StringIO()
        tables.write_records_csv([], schema.names, header)
        handle.write(header.getvalue().encode("utf-8"))
        stored = self.stored
        spans = stored.measurement_csv if table == "measurements" else stored.comparison_csv
        stored.spool.copy(spans, handle)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def run_batch(
    folder: str | os.PathLike[str],
    *,
    reference: str = "adjacent",
    workers: int | None = None,
    executor: Any = None,
    progress: bool = True,
) -> BatchResult:
    """Measure every annotation under ``folder`` and compare pre/post pairs.

    Parameters
    ----------
    folder
        Folder searched recursively for ``*.vheight.json`` files (or a single
        annotation file).  Each annotation's film is ``image.file``, relative
        to the annotation's folder; only its header is read.
    reference
        Reference method of the height loss: ``"adjacent"`` (default),
        ``"posterior"`` or ``"max"``.
    workers
        Local worker processes; default ``os.cpu_count()`` (fewer for a small
        folder: one per 32 files).  ``1`` measures in this process without a
        pool.  Ignored when ``executor`` is given.
    executor
        A :class:`concurrent.futures.Executor` or a ``dask.distributed.Client``
        to run the work on instead (not shut down here).  Workers must see the
        files at the same paths.
    progress
        Show a progress bar on stderr (only when stderr is a terminal).

    Returns
    -------
    BatchResult
        Measurement, comparison and error tables; see the module docstring
        for the columns and the pairing rule.  A file that cannot be read or
        measured becomes an error row; it never stops the batch.

    Raises
    ------
    VHeightError
        ``folder`` does not exist.
    ValueError
        ``reference`` or ``workers`` is not valid.
    """
    if reference not in REFERENCE_METHODS:
        raise ValueError(
            f"reference must be one of {', '.join(REFERENCE_METHODS)}, found {reference!r}"
        )
    if workers is not None and (
        isinstance(workers, bool) or int(workers) != workers or workers < 1
    ):
        raise ValueError(f"workers must be a whole number >= 1, found {workers!r}")
    folder_path = Path(folder)
    if folder_path.is_file():
        root = str(folder_path.parent.resolve())
        rels = [folder_path.name]
    else:
        if not folder_path.is_dir():
            find_annotations(folder_path)  # raises the error naming the folder
        root = str(folder_path.resolve())
        rels = _find_relative(folder_path)

    if workers is None:
        # By default a process costs more to start than a few dozen files take.
        n_workers = min(os.cpu_count() or 1, math.ceil(len(rels) / _MIN_FILES_PER_WORKER))
    else:
        n_workers = min(workers, len(rels))
    n_workers = max(1, n_workers)
    with _progress_bar(len(rels), progress) as update:
        stored, parts, spanning, groups, warnings = _run_chunks(
            root, rels, reference, executor=executor, workers=n_workers, update=update
        )
    return _assemble(folder_path, reference, stored, parts, spanning, groups, warnings)


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A ``dask.distributed.Client`` connected to ``address``, closed on exit.

    Needs the optional extra: ``pip install "vheight[dask]"``.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise VHeightError(
            "running on a Dask scheduler needs dask.distributed, which is not installed: "
            'pip install "vheight[dask]"'
        ) from exc
    failure = None
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        failure = (
            f"cannot reach the Dask scheduler at {address}: {exc}; check the address "
            "(e.g. tcp://host:8786) and that the scheduler is running"
        )
    if failure is not None:
        # The half-built client is released with the exception above: finalise it
        # now, in this thread, rather than whenever a later collection finds it.
        gc.collect()
        raise VHeightError(failure)
    try:
        yield client
    finally:
        client.close()
