"""Measure every annotated film under a folder: workers, pairing, tidy tables.

:func:`run_batch` finds every annotation file (``*.vheight.json``) under a
folder, recursively, measures each one exactly as :func:`vheight.api.measure_file`
does, pairs the pre/post/follow-up films of the same patient, compares them
as :func:`vheight.api.compare_files` does, and returns a :class:`BatchResult`
holding three tidy tables (pandas DataFrames, one row per observation):

``measurements``
    One row per annotated vertebra: the ``measure`` output record
    (``level``, ``complete``, ``unit``, ..., ``treated``) preceded by the
    film's identifiers (``annotation``, ``image``, ``patient_id``,
    ``study_instance_uid``, ``sop_instance_uid``, ``timepoint``) and followed
    by ``warnings`` and ``error``.  A file that could not be measured gives a
    single row whose ``error`` names the file and says why; its numbers are
    empty.
``comparisons``
    One row per level and height of each pre/post(/follow-up) pairing: the
    ``compare`` output record preceded by the pairing's identifiers.
``errors``
    The failed inputs only (``stage``, ``subject``, ``annotation``, ``image``,
    ``error``).

Speed
-----
Only a film's header is read (``stop_before_pixels``, through
:func:`vheight.film.read_film_info`): measuring needs the calibration and the
identifiers, never the pixels.  The files are spread over a local process
pool (``workers``, default ``os.cpu_count()``, one per 32 files for a small
folder), in chunks so that the cost of sending a task stays small beside the
work it carries; ``workers=1`` runs in this process without a pool.  A
worker compares the pairings whose files it measured itself and sends back
plain records (a measurement object costs more to send than to compare);
pairings whose files fell in different chunks are measured again and compared
on the pool afterwards.  Any :class:`concurrent.futures.Executor`, or a
``dask.distributed.Client`` (the optional ``vheight[dask]`` extra), may be
passed as ``executor`` to run the same chunks elsewhere; the files must then be
readable at the same paths on every worker.  The CSV files are formatted column
by column, each column of numbers by :mod:`orjson` in C, with the bytes :mod:`csv`
would write.

Pairing rule
------------
A measured annotation whose ``timepoint`` is ``pre``, ``post`` or
``followup`` belongs to a *subject*: its film's ``PatientID`` when the header
has one, else its ``StudyInstanceUID``, else the folder holding the
annotation file (column ``paired_by`` says which).  Within a subject holding
at most one annotation per timepoint, the ``pre`` and ``post`` annotations
are compared (with the ``followup`` one when present).  When a subject holds
several annotations of one timepoint (two treatments of one patient), it is
split by folder and each folder is paired on its own (``paired_by`` gains
``+folder``); a folder still holding two annotations of one timepoint is not
paired, and :attr:`BatchResult.warnings` says so.  Annotations without a
timepoint are measured, never paired.

Output is idempotent: paths are relative to the folder (POSIX separators),
rows are sorted by annotation path then anatomical level order, nothing
depends on the time or on the order in which workers finish, and
:meth:`BatchResult.write` replaces its file atomically; a rerun on unchanged
inputs writes byte-identical files.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import enum
import gc
import importlib
import io
import json
import math
import multiprocessing
import operator
import os
import re
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vheight.annotation import load_annotation
from vheight.api import _film_location, film_header_warnings
from vheight.comparison import SPEC_COMPARE_RECORD_KEYS
from vheight.errors import ImageReadError, VHeightError
from vheight.files import write_atomic
from vheight.morphometry import RECORD_KEYS, Measurement, ReferenceMethod, measure

if TYPE_CHECKING:  # pragma: no cover
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
MEASURE_COLUMNS: tuple[str, ...] = RECORD_KEYS

_FILM_ID_COLUMNS: tuple[str, ...] = (
    "annotation",
    "image",
    "patient_id",
    "study_instance_uid",
    "sop_instance_uid",
    "timepoint",
)
_TRAILING_COLUMNS: tuple[str, ...] = ("warnings", "error")

#: Columns of the batch measurement table, in order (records may add more,
#: placed before ``warnings``).
MEASUREMENT_COLUMNS: tuple[str, ...] = _FILM_ID_COLUMNS + MEASURE_COLUMNS + _TRAILING_COLUMNS

#: Keys of the ``compare`` output record (``interfaces.md``), in order.
COMPARE_COLUMNS: tuple[str, ...] = SPEC_COMPARE_RECORD_KEYS

_PAIR_ID_COLUMNS: tuple[str, ...] = (
    "subject",
    "paired_by",
    "patient_id",
    "pre_annotation",
    "post_annotation",
    "followup_annotation",
    "pre_sop_instance_uid",
    "post_sop_instance_uid",
    "followup_sop_instance_uid",
    "pre_study_instance_uid",
    "post_study_instance_uid",
    "followup_study_instance_uid",
)

#: Columns of the batch comparison table, in order.
COMPARISON_COLUMNS: tuple[str, ...] = _PAIR_ID_COLUMNS + COMPARE_COLUMNS + _TRAILING_COLUMNS

#: Columns of the error table.
ERROR_COLUMNS: tuple[str, ...] = ("stage", "subject", "annotation", "image", "error")

_TIMEPOINT_ORDER: tuple[str, ...] = ("pre", "post", "followup")

# Column dtypes of the DataFrames (other columns are inferred by pandas).
_FLOAT_COLUMNS = frozenset(
    {
        "anterior_height",
        "middle_height",
        "posterior_height",
        "wedge_ratio",
        "mid_ratio",
        "crush_ratio",
        "wedge_angle_deg",
        "segmental_kyphosis_deg",
        "anterior_loss_pct",
        "middle_loss_pct",
        "posterior_loss_pct",
        "max_loss_pct",
        "pre",
        "post",
        "followup",
        "delta",
        "restoration_pct_of_initial",
        "restoration_pct_of_lost",
        "restoration_pct_of_reference",
        "loss_since_post_pct",
        "reference_pre",
        "wedge_angle_pre_deg",
        "wedge_angle_post_deg",
        "wedge_angle_change_deg",
        "segmental_kyphosis_change_deg",
    }
)
_INT_COLUMNS = frozenset({"grade", "grade_pre", "grade_post", "grade_followup"})
_BOOL_COLUMNS = frozenset({"complete", "treated"})

# Chunking: aim for this many chunks per worker (load balance and a lively
# progress bar) but never more than this many files per chunk.
_CHUNKS_PER_WORKER = 4
_MAX_CHUNK = 64
# With the default worker count, at least this many files per worker process.
_MIN_FILES_PER_WORKER = 32


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
# One annotation file, in a worker
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """What a worker sends back for one annotation file (picklable)."""

    annotation: str
    folder: str
    image: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    timepoint: str | None = None
    records: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    measurement: Measurement | None = None
    error: str | None = None


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


def _measure_one(root: str, rel: str, reference: str) -> _Outcome:
    """Measure one annotation file as :func:`vheight.api.measure_file` does.

    The film's header is read once, for both the calibration and the
    identifiers.  Every failure becomes an error outcome naming the file.
    """
    from vheight.loader import read_film_info  # imported here: it brings numpy in

    path = os.path.join(root, rel)
    folder = _folder_of(rel)
    image_rel: str | None = None
    timepoint: str | None = None
    sop_uid: str | None = None
    try:
        annotation = load_annotation(path)
        timepoint = annotation.timepoint
        sop_uid = _text_or_none(annotation.image.sop_instance_uid)
        film = _film_location(annotation, path)
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
        return _Outcome(
            annotation=rel,
            folder=folder,
            image=image_rel,
            patient_id=_text_or_none(info.patient_id) if info is not None else None,
            study_instance_uid=(
                _text_or_none(info.study_instance_uid) if info is not None else None
            ),
            sop_instance_uid=header_uid or sop_uid,
            timepoint=timepoint,
            records=tuple(measurement.records()),  # fresh dicts, not shared: no copy
            warnings=tuple(_strip_root(w, root) for w in (*warnings, *measurement.warnings)),
            measurement=measurement,
        )
    except Exception as exc:  # one bad file must not stop the batch
        return _Outcome(
            annotation=rel,
            folder=folder,
            image=image_rel,
            timepoint=timepoint,
            sop_instance_uid=sop_uid,
            error=_error_message(exc, rel, root),
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


def _measure_chunk(root: str, rels: Sequence[str], reference: str) -> list[_Outcome]:
    """Measure a chunk of annotation files (paths relative to root)."""
    return [_measure_one(root, rel, reference) for rel in rels]


# The comparison of one pairing, keyed by its annotations (pre, post, followup):
# ``(records, warnings, error)`` as :func:`_compare_measurements` gives them.
_GroupKey = tuple[str, str, str | None]
_Compared = tuple[tuple[dict[str, Any], ...], str | None, str | None]


def _group_key(by_timepoint: Mapping[str, _Outcome]) -> _GroupKey:
    followup = by_timepoint.get("followup")
    return (
        by_timepoint["pre"].annotation,
        by_timepoint["post"].annotation,
        followup.annotation if followup is not None else None,
    )


def _measure_and_compare_chunk(
    root: str, rels: Sequence[str], reference: str
) -> tuple[list[_Outcome], dict[_GroupKey, _Compared]]:
    """Worker entry point of a pool: measure a chunk, compare the pairings found
    within it, and send back compact outcomes (records, no measurement objects,
    which cost more to send than to compare).  Pairings that span chunks are
    compared later by :func:`_compare_chunk`."""
    outcomes = _measure_chunk(root, rels, reference)
    groups, _warnings = _pairings(outcomes)
    compared = {
        _group_key(by_timepoint): _compare_outcomes(by_timepoint, root)
        for _paired_by, _subject, by_timepoint in groups
    }
    light = [
        _Outcome(
            annotation=o.annotation,
            folder=o.folder,
            image=o.image,
            patient_id=o.patient_id,
            study_instance_uid=o.study_instance_uid,
            sop_instance_uid=o.sop_instance_uid,
            timepoint=o.timepoint,
            records=o.records,
            warnings=o.warnings,
            error=o.error,
        )
        for o in outcomes
    ]
    return light, compared


def _compare_chunk(
    root: str, keys: Sequence[_GroupKey], reference: str
) -> dict[_GroupKey, _Compared]:
    """Worker entry point: measure the members of these pairings again and compare them."""
    compared: dict[_GroupKey, _Compared] = {}
    for key in keys:
        members = [_measure_one(root, rel, reference) for rel in key if rel is not None]
        if any(m.measurement is None for m in members):  # a file changed meanwhile
            continue
        by_timepoint = dict(zip(_TIMEPOINT_ORDER, members, strict=False))
        compared[key] = _compare_outcomes(by_timepoint, root)
    return compared


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
    size = max(1, min(_MAX_CHUNK, math.ceil(len(items) / (workers * _CHUNKS_PER_WORKER))))
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


def _run_chunks(
    root: str,
    rels: Sequence[str],
    reference: str,
    *,
    executor: Any,
    workers: int,
    update: Callable[[int], object],
) -> tuple[list[_Outcome], dict[_GroupKey, _Compared]]:
    """Outcomes of every file, and the comparisons already made (by pool workers)."""
    if executor is None and workers <= 1:
        outcomes = []
        for rel in rels:
            outcomes.append(_measure_one(root, rel, reference))
            update(1)
        return outcomes, {}

    owned = None
    if executor is None:
        owned = cf.ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
        pool: cf.Executor = owned
    elif _is_dask_client(executor):
        # pure=False: files may change between runs, never reuse a cached result.
        pool = executor.get_executor(pure=False)
        workers = _executor_workers(executor)
    elif isinstance(executor, cf.Executor):
        pool = executor
        workers = _executor_workers(executor)
    else:
        raise TypeError(
            "executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
            f"found {type(executor).__name__}"
        )

    outcomes: list[_Outcome] = []
    compared: dict[_GroupKey, _Compared] = {}
    try:
        futures = {
            pool.submit(_measure_and_compare_chunk, root, chunk, reference): chunk
            for chunk in _chunks(rels, workers)
        }
        try:
            for future in cf.as_completed(futures):
                chunk = futures[future]
                try:
                    chunk_outcomes, chunk_compared = future.result()
                    outcomes.extend(chunk_outcomes)
                    compared.update(chunk_compared)
                except Exception as exc:  # a worker died or could not run the task
                    reason = f"the worker measuring it failed: {type(exc).__name__}: {exc}"
                    outcomes.extend(
                        _Outcome(
                            annotation=rel,
                            folder=_folder_of(rel),
                            error=f"{rel}: {_clean_message(reason, root)}",
                        )
                        for rel in chunk
                    )
                update(len(chunk))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        _compare_across_chunks(pool, root, reference, outcomes, compared, workers)
    finally:
        if owned is not None:
            owned.shutdown(wait=True, cancel_futures=True)
    return outcomes, compared


def _compare_across_chunks(
    pool: cf.Executor,
    root: str,
    reference: str,
    outcomes: Sequence[_Outcome],
    compared: dict[_GroupKey, _Compared],
    workers: int,
) -> None:
    """Compare, on the pool, the pairings whose files were measured in different chunks."""
    groups, _warnings = _pairings(outcomes)
    missing = [key for key in (_group_key(g) for _l, _s, g in groups) if key not in compared]
    if not missing:
        return
    size = max(1, math.ceil(len(missing) / workers))
    futures = [
        pool.submit(_compare_chunk, root, missing[i : i + size], reference)
        for i in range(0, len(missing), size)
    ]
    for future in futures:
        try:
            compared.update(future.result())
        except Exception:  # pragma: no cover - compared in this process instead
            pass


# --------------------------------------------------------------------------------------
# Pairing and comparison (in the workers of a pool, else in this process)
# --------------------------------------------------------------------------------------


def _subject(outcome: _Outcome) -> tuple[str, str]:
    if outcome.patient_id:
        return "patient_id", outcome.patient_id
    if outcome.study_instance_uid:
        return "study_instance_uid", outcome.study_instance_uid
    return "folder", outcome.folder


def _pairings(
    outcomes: Iterable[_Outcome],
) -> tuple[list[tuple[str, str, dict[str, _Outcome]]], list[str]]:
    """Groups to compare as ``(paired_by, subject, {timepoint: outcome})``, and warnings."""
    subjects: dict[tuple[str, str], list[_Outcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.error is None and outcome.timepoint in _TIMEPOINT_ORDER:
            subjects[_subject(outcome)].append(outcome)

    groups: list[tuple[str, str, dict[str, _Outcome]]] = []
    warnings: list[str] = []
    for (paired_by, subject), members in sorted(subjects.items()):
        if _unique_timepoints(members):
            sets = [(paired_by, members)]
        else:
            by_folder: dict[str, list[_Outcome]] = defaultdict(list)
            for member in members:
                by_folder[member.folder].append(member)
            sets = []
            for folder, folder_members in sorted(by_folder.items()):
                if _unique_timepoints(folder_members):
                    sets.append((f"{paired_by}+folder", folder_members))
                else:
                    names = ", ".join(sorted(m.annotation for m in folder_members))
                    warnings.append(
                        f"not paired: {paired_by} {subject} has several annotations of one "
                        f"timepoint in folder {folder or '.'} ({names}); put each treatment "
                        "in its own folder or correct the timepoints"
                    )
        for label, chosen in sets:
            by_timepoint = {m.timepoint: m for m in chosen}
            if "pre" in by_timepoint and "post" in by_timepoint:
                groups.append((label, subject, by_timepoint))
    return groups, warnings


def _unique_timepoints(members: Sequence[_Outcome]) -> bool:
    timepoints = [m.timepoint for m in members]
    return len(timepoints) == len(set(timepoints))


def _compare_outcomes(by_timepoint: Mapping[str, _Outcome], root: str) -> _Compared:
    """compare() of a pairing's measurements: ``(records, warnings, error)``."""
    from vheight.comparison import compare  # looked up per pairing (tests replace it)

    pre, post = by_timepoint["pre"], by_timepoint["post"]
    followup = by_timepoint.get("followup")
    try:
        comparison = compare(
            pre.measurement, post.measurement, followup.measurement if followup else None
        )
        records = comparison.records()
        warnings = "; ".join(_strip_root(w, root) for w in comparison.warnings) or None
    except Exception as exc:  # a refused pairing must not stop the others
        names = " + ".join(o.annotation for o in (pre, post, followup) if o is not None)
        message = (
            str(exc)
            if isinstance(exc, VHeightError)
            else (f"unexpected {type(exc).__name__}: {exc}")
        )
        return (), None, f"{names}: cannot compare: {_clean_message(message, root)}"
    return tuple(records), warnings, None


def _compare_group(
    paired_by: str,
    subject: str,
    by_timepoint: Mapping[str, _Outcome],
    root: str,
    compared: _Compared | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Comparison rows of one group, or one error row when compare() refuses.

    ``compared``: the comparison made elsewhere (a worker); by default it is made here.
    """
    pre, post = by_timepoint["pre"], by_timepoint["post"]
    ids: dict[str, Any] = {
        "subject": subject,
        "paired_by": paired_by,
        "patient_id": pre.patient_id or post.patient_id,
    }
    for name in ("annotation", "sop_instance_uid", "study_instance_uid"):
        for timepoint in _TIMEPOINT_ORDER:
            outcome = by_timepoint.get(timepoint)
            ids[f"{timepoint}_{name}"] = getattr(outcome, name) if outcome is not None else None
    records, warnings, error = (
        compared if compared is not None else _compare_outcomes(by_timepoint, root)
    )
    if error is not None:
        row = {**ids, **dict.fromkeys(COMPARE_COLUMNS), "warnings": None, "error": error}
        return [row], row
    rows = [{**ids, **r, "warnings": warnings, "error": None} for r in records]
    return rows, None


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


def _ordered_columns(rows: Sequence[Mapping[str, Any]], base: Sequence[str]) -> list[str]:
    """``base`` columns, with any extra record key inserted before ``warnings``."""
    known = set(base)
    extra: dict[str, None] = {}  # in order of first appearance
    for row in rows:
        if known.issuperset(row):  # nearly every row: checked in one C call
            continue
        for key in row:
            if key not in known:
                extra[key] = None
                known.add(key)
    head = [c for c in base if c not in _TRAILING_COLUMNS]
    tail = [c for c in base if c in _TRAILING_COLUMNS]
    return head + list(extra) + tail


def _dtype(column: str, values: Iterable[Any]) -> str | None:
    """The pandas dtype of a column: the known one, else inferred from its values."""
    if column in _FLOAT_COLUMNS:
        return "float64"
    if column in _INT_COLUMNS:
        return "Int64"
    if column in _BOOL_COLUMNS:
        return "boolean"
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds <= {str}:
        return "string"
    if kinds <= {bool}:
        return "boolean"
    if kinds <= {int}:
        return "Int64"
    if kinds <= {int, float}:
        return "float64"
    return None  # mixed: left to pandas


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A DataFrame with stable dtypes: float64, nullable Int64/boolean, string."""
    import pandas as pd

    data: dict[str, Any] = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        dtype = _dtype(column, values)
        data[column] = pd.array(values, dtype=dtype) if dtype is not None else values
    return pd.DataFrame(data, columns=list(columns))


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """The outcome of :func:`run_batch`: tidy tables and the problems met.

    Parameters
    ----------
    folder
        The folder measured; every path in the tables is relative to it.
    reference
        Reference method of the height loss used throughout.
    measurement_rows, comparison_rows, error_rows
        The rows of :attr:`measurements`, :attr:`comparisons` and
        :attr:`errors` as plain dicts (``None`` for empty cells), in output
        order.  Numbers are exactly those of the single-file functions.
    warnings
        Batch-level remarks (annotations that could not be paired, films
        annotated twice); per-film warnings are in the ``warnings`` column.
    n_annotations
        Number of annotation files found.
    """

    folder: Path
    reference: str = "adjacent"
    measurement_rows: tuple[Mapping[str, Any], ...] = ()
    comparison_rows: tuple[Mapping[str, Any], ...] = ()
    error_rows: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    n_annotations: int = 0
    measurement_columns: tuple[str, ...] = MEASUREMENT_COLUMNS
    comparison_columns: tuple[str, ...] = COMPARISON_COLUMNS

    # -- tables ----------------------------------------------------------------------

    @property
    def measurements(self) -> pd.DataFrame:
        """One row per annotated vertebra (and one per failed file); a new frame per call."""
        return _frame(self.measurement_rows, self.measurement_columns)

    @property
    def comparisons(self) -> pd.DataFrame:
        """One row per level and height of each pre/post(/follow-up) pairing."""
        return _frame(self.comparison_rows, self.comparison_columns)

    @property
    def errors(self) -> pd.DataFrame:
        """One row per failed input (measurement) or refused pairing (comparison)."""
        return _frame(self.error_rows, ERROR_COLUMNS)

    # -- summary ---------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """True when any file failed or any pairing was refused."""
        return bool(self.error_rows)

    @property
    def n_failed(self) -> int:
        """Number of annotation files that could not be measured."""
        return sum(1 for row in self.error_rows if row["stage"] == Stage.MEASURE.value)

    @property
    def n_vertebrae(self) -> int:
        """Number of vertebra rows (failed files excluded)."""
        return sum(1 for row in self.measurement_rows if row.get("error") is None)

    @property
    def n_comparisons(self) -> int:
        """Number of pairings compared successfully."""
        return len(
            {
                (row["subject"], row["pre_annotation"], row["post_annotation"])
                for row in self.comparison_rows
                if row.get("error") is None
            }
        )

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
            ``--format csv`` output of the other commands: empty for null,
            ``true``/``false``, floats in full (shortest round-trip form).
        """
        path = Path(path)
        kind = TableFormat(format) if format is not None else TableFormat.for_path(path)
        rows, columns = self._table(table)
        if kind is TableFormat.CSV:

            def dump(handle: Any) -> None:
                _write_csv(handle, rows, columns)

        else:

            def dump(handle: Any) -> None:
                _frame(rows, columns).to_parquet(handle, index=False, engine="pyarrow")

        _atomic_write(path, dump)
        return path

    def _table(self, table: str) -> tuple[Sequence[Mapping[str, Any]], Sequence[str]]:
        if table == "measurements":
            return self.measurement_rows, self.measurement_columns
        if table == "comparisons":
            return self.comparison_rows, self.comparison_columns
        if table == "errors":
            return self.error_rows, ERROR_COLUMNS
        raise ValueError(
            f"table must be 'measurements', 'comparisons' or 'errors', found {table!r}"
        )


def _csv_cell(value: Any) -> Any:
    """A CSV cell as ``vheight ... --format csv`` writes it (fast path for plain types)."""
    kind = type(value)
    if value is None:
        return ""
    if kind is str or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else ""
    if kind is bool:
        return "true" if value else "false"
    from vheight.cli._output import to_jsonable

    plain = to_jsonable(value)  # enums, numpy scalars, tuples, non-finite floats
    if plain is None:
        return ""
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, (list, dict)):
        return json.dumps(plain)
    return plain


def _csv_text(value: Any) -> str:
    """A cell's text exactly as :mod:`csv` writes :func:`_csv_cell` of it (unquoted)."""
    cell = _csv_cell(value)
    if cell is None:
        return ""
    if type(cell) is float:
        return repr(cell)
    return str(cell)


_NONE = type(None)
# Values that orjson writes as csv writes _csv_cell() of them: numbers, bools, null.
_JSON_NUMBER_KINDS = frozenset({float, int, bool, _NONE})
_CSV_SPECIAL = ('"', ",", "\n", "\r")  # a cell holding one of these may need quotes
# The spots where orjson's notation of a float may differ from repr(): below 1e-4
# (orjson ``0.00001``, repr ``1e-05``) and exponents (orjson ``1e-7``, repr ``1e-07``).
_NOTATION_SPOTS = (re.compile(rb"0\.0000"), re.compile(rb"e[-+]"))
_JSON_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?")


def _number_texts(values: list[Any]) -> list[str] | None:
    """Cells of a column of numbers and bools (with nulls) formatted in one C pass,
    or None when the column holds anything else.

    :func:`orjson.dumps` writes a float in its shortest round-trip digits, as
    ``repr`` does, an int (or int subclass) in its digits, null for None, NaN
    and infinities (an empty cell, as :func:`_csv_cell` gives) and
    ``true``/``false`` for bools.  Whatever else it can write comes out quoted
    or bracketed (text, enums of text, containers, dates), and what it cannot
    (numpy scalars, float subclasses, ints beyond 64 bits) raises: both send the
    column back, to be formatted otherwise.  Floats whose notation differs from
    ``repr`` are redone with ``repr`` (:func:`_repr_notation`).
    """
    if not values or type(values[0]) not in _JSON_NUMBER_KINDS:
        return None  # a column of text, as a rule: not worth a try
    try:
        blob = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return None
    if b'"' in blob or b"{" in blob or b"[" in blob[1:]:
        return None
    blob = _repr_notation(blob)
    return blob[1:-1].replace(b"null", b"").decode("ascii").split(",")


def _repr_notation(blob: bytes) -> bytes:
    """orjson's array of numbers with each float that ``repr`` writes otherwise
    rewritten as repr() of it (its digits give back the float exactly)."""
    if b"e" not in blob and b"0.0000" not in blob:  # the usual case, found in C
        return blob
    spans: dict[int, int] = {}
    for pattern in _NOTATION_SPOTS:
        for spot in pattern.finditer(blob):
            at = spot.start()
            start = max(blob.rfind(b",", 0, at), blob.rfind(b"[", 0, at)) + 1
            ends = [end for end in (blob.find(b",", at), blob.find(b"]", at)) if end >= 0]
            end = min(ends) if ends else len(blob)
            if _JSON_NUMBER.fullmatch(blob, start, end):
                spans[start] = end
    if not spans:
        return blob
    pieces, done = [], 0
    for start in sorted(spans):
        end = spans[start]
        pieces += [blob[done:start], repr(float(blob[start:end])).encode("ascii")]
        done = end
    pieces.append(blob[done:])
    return b"".join(pieces)


def _csv_column(values: list[Any]) -> list[str]:
    """One column's cells, as :func:`csv.writer` writes :func:`_csv_cell` of them.

    Numbers go through :func:`_number_texts`, text with nulls through one
    pass; any other column cell by cell.  A cell holding a quote, comma or
    line break is quoted by :mod:`csv` itself.
    """
    texts = _number_texts(values)
    if texts is not None:
        return texts
    kinds = set(map(type, values))
    if kinds <= {str, _NONE}:
        texts = ["" if value is None else value for value in values]
    else:
        texts = list(map(_csv_text, values))
    joined = "\0".join(texts)
    if any(special in joined for special in _CSV_SPECIAL):
        # Each distinct text once: the same warning recurs on many rows.
        cells = {
            text: _csv_quoted(text) if any(c in text for c in _CSV_SPECIAL) else text
            for text in set(texts)
        }
        texts = list(map(cells.__getitem__, texts))
    return texts


def _csv_quoted(text: str) -> str:
    """``text`` as one CSV field, quoted if :mod:`csv` quotes it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([text, ""])
    return buffer.getvalue()[:-2]  # without the empty second field and the line end


def _write_csv(handle: Any, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """CSV of ``rows`` (UTF-8, ``\\n`` line ends, header first) into a binary file.

    The bytes are those of :func:`csv.writer` (excel dialect, minimal quoting)
    writing :func:`_csv_cell` of every value (tested against it).  The table is
    formatted column by column (:func:`_csv_column`), numbers by orjson in C,
    then joined.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    if rows and len(columns) == 1:  # the writer quotes a lone empty field: let it
        writer.writerows([_csv_cell(row.get(columns[0]))] for row in rows)
    lines = [buffer.getvalue()[:-1]]
    if rows and len(columns) > 1:
        try:
            table = list(map(operator.itemgetter(*columns), rows))
        except KeyError:  # some row lacks a column: null there
            table = [tuple(map(row.get, columns)) for row in rows]
        cells = [_csv_column(list(values)) for values in zip(*table, strict=True)]
        lines.extend(map(",".join, zip(*cells, strict=True)))
    lines.append("")
    handle.write("\n".join(lines).encode("utf-8"))


def _atomic_write(path: Path, dump: Callable[[Any], None]) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise VHeightError(f"{path}: cannot write, folder {folder} does not exist")
    write_atomic(path, dump)


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
    with _gc_quiet(), _progress_bar(len(rels), progress) as update:
        outcomes, compared = _run_chunks(
            root, rels, reference, executor=executor, workers=n_workers, update=update
        )
        outcomes.sort(key=lambda o: o.annotation)
        return _assemble(folder_path, reference, outcomes, root, compared)


# While a batch runs, the youngest generation of the cyclic garbage collector is
# collected after this many new objects instead of Python's 700.
_GC_YOUNG_THRESHOLD = 50_000


@contextmanager
def _gc_quiet() -> Iterator[None]:
    """The cyclic garbage collector kept from re-reading what a batch keeps.

    A batch allocates mostly objects that live until its end (rows, records), which
    the collector would traverse again at each older-generation collection, a few
    per cent of the batch's time:

    - the objects that exist before the batch (modules, the caller's data) are
      frozen out of its sight, unless the application has frozen objects itself
      (forked workers also leave their memory pages shared instead of copying them
      to update the collector's records);
    - the youngest generation is collected after :data:`_GC_YOUNG_THRESHOLD` new
      objects, so that fewer of them reach the older generations (cycles, such as
      those of failed files, are still freed while the batch runs).

    Both are restored afterwards.  ``vheight batch`` keeps this over the writing of
    the tables too.
    """
    thresholds = gc.get_threshold()
    frozen = not gc.get_freeze_count()
    if frozen:
        gc.freeze()
    gc.set_threshold(max(thresholds[0], _GC_YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if frozen:
            gc.unfreeze()


def _assemble(
    folder: Path,
    reference: str,
    outcomes: Sequence[_Outcome],
    root: str,
    compared: Mapping[_GroupKey, _Compared],
) -> BatchResult:
    measurement_rows: list[dict[str, Any]] = []
    error_rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    by_uid: dict[str, list[str]] = defaultdict(list)
    for outcome in outcomes:
        ids = {
            "annotation": outcome.annotation,
            "image": outcome.image,
            "patient_id": outcome.patient_id,
            "study_instance_uid": outcome.study_instance_uid,
            "sop_instance_uid": outcome.sop_instance_uid,
            "timepoint": outcome.timepoint,
        }
        if outcome.error is not None:
            measurement_rows.append(
                {**ids, **dict.fromkeys(MEASURE_COLUMNS), "warnings": None, "error": outcome.error}
            )
            error_rows.append(
                {
                    "stage": Stage.MEASURE.value,
                    "subject": None,
                    "annotation": outcome.annotation,
                    "image": outcome.image,
                    "error": outcome.error,
                }
            )
            continue
        if outcome.sop_instance_uid:
            by_uid[outcome.sop_instance_uid].append(outcome.annotation)
        joined = "; ".join(outcome.warnings) or None
        measurement_rows.extend(
            {**ids, **record, "warnings": joined, "error": None} for record in outcome.records
        )
    for uid, names in sorted(by_uid.items()):
        if len(names) > 1:
            warnings.append(
                f"SOP Instance UID {uid} is annotated {len(names)} times ({', '.join(names)}): "
                "each annotation is measured separately"
            )

    groups, pairing_warnings = _pairings(outcomes)
    warnings.extend(pairing_warnings)
    # Each group's rows, keyed by what orders the table: subject, paired_by and pre
    # annotation, the same on every row of a group (so groups are sorted, not rows).
    group_rows: list[tuple[tuple[str, str, str], list[dict[str, Any]]]] = []
    for paired_by, subject, by_timepoint in groups:
        key = _group_key(by_timepoint)
        done = compared.get(key)
        if done is None and any(o.measurement is None for o in by_timepoint.values()):
            # Measured by a worker that could not compare it: measure again here.
            done = _compare_chunk(root, [key], reference).get(key) or (
                (),
                None,
                f"{' + '.join(n for n in key if n)}: cannot compare: a file changed "
                "while the batch ran",
            )
        rows, error_row = _compare_group(paired_by, subject, by_timepoint, root, done)
        group_rows.append(((subject, paired_by, by_timepoint["pre"].annotation or ""), rows))
        if error_row is not None:
            error_rows.append(
                {
                    "stage": Stage.COMPARE.value,
                    "subject": subject,
                    "annotation": " + ".join(
                        by_timepoint[t].annotation for t in _TIMEPOINT_ORDER if t in by_timepoint
                    ),
                    "image": None,
                    "error": error_row["error"],
                }
            )
    group_rows.sort(key=operator.itemgetter(0))
    comparison_rows = [row for _key, rows in group_rows for row in rows]

    return BatchResult(
        folder=folder,
        reference=reference,
        measurement_rows=tuple(measurement_rows),
        comparison_rows=tuple(comparison_rows),
        error_rows=tuple(error_rows),
        warnings=tuple(warnings),
        n_annotations=len(outcomes),
        measurement_columns=tuple(_ordered_columns(measurement_rows, MEASUREMENT_COLUMNS)),
        comparison_columns=tuple(_ordered_columns(comparison_rows, COMPARISON_COLUMNS)),
    )


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
