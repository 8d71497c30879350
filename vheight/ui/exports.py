"""Files the app offers for download: measurements, comparison, annotated film,
the PDF report, DICOM SR and presentation state.

CSV and JSON use the command line's emitters (:mod:`vheight.cli._output`), so
a file saved from the app is the file ``vheight measure --format csv`` or
``--format json`` would print for the same annotation.  The annotated PNG is
drawn by :func:`vheight.render.render_annotated`; the PDF report, the SR and
the presentation state are those of ``vheight report`` and ``vheight sr``
(:mod:`vheight.report`, :mod:`vheight.sr`, :mod:`vheight.gsps`).  The app
builds the larger files only when their download button is pressed, except
the DICOM SR and presentation state: building an SR takes a few tenths of a
second of pure Python (highdicom copies and re-reads the whole content tree),
so :func:`prepare_dicom_exports` starts both in a worker process once a film's
annotation has stayed unchanged for :data:`PREPARE_DELAY_S`, keyed on the
annotation's content; the download then only waits for what is left, the
same annotation is never built twice, and the reader's next edit does not
wait for the build.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from functools import partial
from typing import Any

import cv2
import numpy as np

from vheight.cli._output import emit_csv, emit_json

__all__ = [
    "measurement_csv",
    "measurement_json",
    "comparison_csv",
    "comparison_json",
    "annotated_png",
    "report_pdf",
    "dicom_export_problem",
    "film_sr",
    "film_gsps",
    "PREPARE_DELAY_S",
    "prepare_dicom_exports",
    "prepared_sr",
    "prepared_gsps",
]

#: Seconds an annotation stays unchanged before its DICOM exports are built.
PREPARE_DELAY_S = 0.3
#: Prepared exports kept (each a few tens of kB).
_KEPT = 16


def measurement_csv(measurement: Any) -> str:
    """One CSV row per vertebra: the ``measure`` record keys as columns."""
    stream = io.StringIO()
    emit_csv(measurement.records(), stream=stream)
    return stream.getvalue()


def measurement_json(measurement: Any, *, annotation_name: str | None) -> str:
    """The ``vheight measure --format json`` document of one film."""
    stream = io.StringIO()
    emit_json(
        {
            "annotation": annotation_name,
            "unit": measurement.unit,
            "spacing_label": measurement.spacing_label,
            "vertebrae": measurement.records(),
            "warnings": list(measurement.warnings),
        },
        stream=stream,
    )
    return stream.getvalue()


def comparison_csv(comparison: Any) -> str:
    """One CSV row per level and height: the ``compare`` record keys as columns."""
    stream = io.StringIO()
    emit_csv(comparison.records(), stream=stream)
    return stream.getvalue()


def comparison_json(comparison: Any) -> str:
    """The ``vheight compare --format json`` document."""
    stream = io.StringIO()
    emit_json(comparison.to_dict(), stream=stream)
    return stream.getvalue()


def annotated_png(pixels: np.ndarray, annotation: Any, measurement: Any) -> bytes:
    """The film as displayed (``pixels``, float in [0, 1]) with landmarks and heights, as PNG."""
    from vheight.render import render_annotated

    rgb = render_annotated(pixels, annotation, measurement)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - opencv always encodes a uint8 RGB image
        raise ValueError("the annotated film could not be encoded as PNG")
    return encoded.tobytes()


def report_pdf(
    films: Sequence[tuple[Any, Any]], *, reference: str = "adjacent", deidentify: bool = False
) -> bytes:
    """The PDF report of one patient's films.

    Parameters
    ----------
    films
        ``(opened, annotation)`` pairs, pre / post / follow-up order:
        :class:`vheight.ui.films.OpenedFilm` and its current annotation.
    reference
        Height-loss reference method.
    deidentify
        Print no patient name, ID, study date or file name.
    """
    from vheight.report import ReportItem, report_bytes

    items = [
        ReportItem(annotation=annotation, film=opened.film, name=opened.name)
        for opened, annotation in films
    ]
    return report_bytes(items, reference=reference, deidentify=deidentify)


def dicom_export_problem(opened: Any, annotation: Any) -> str | None:
    """Why a film's DICOM SR / presentation state cannot be made, or None when it can."""
    if not opened.is_dicom:
        return (
            f"{opened.name} is a {opened.film.info.format} film: a DICOM SR and a presentation "
            "state refer to a DICOM film; open the DICOM file to export them."
        )
    if opened.dicom_source is None:
        return f"{opened.name}: the DICOM file is no longer available; open it again."
    if not annotation.vertebrae:
        return "No landmark placed yet: nothing to export."
    return None


def film_sr(opened: Any, annotation: Any, *, reference: str = "adjacent") -> bytes:
    """The DICOM SR (TID 1500) of a film's annotation, Part 10 bytes.

    Raises
    ------
    SRExportError
        When the film is not a DICOM film or the annotation has no landmark.
    """
    source = opened.dicom_source
    return _sr_of(annotation, opened.film if source is None else source, reference=reference)


def film_gsps(opened: Any, annotation: Any, *, reference: str = "adjacent") -> bytes:
    """The grayscale softcopy presentation state of a film's annotation, Part 10 bytes.

    Raises
    ------
    SRExportError
        When the film is not a DICOM film or the annotation has no landmark.
    """
    source = opened.dicom_source
    return _gsps_of(annotation, opened.film if source is None else source, reference=reference)


def _sr_of(annotation: Any, source: Any, *, reference: str) -> bytes:
    # vheight.sr (highdicom) is imported where the SR is built: in the worker
    # process for a build ahead, not in the page run that asks for it.
    from vheight.sr import sr_bytes

    return sr_bytes(annotation, source, reference=reference)


def _gsps_of(annotation: Any, source: Any, *, reference: str) -> bytes:
    from vheight.gsps import gsps_bytes

    return gsps_bytes(annotation, source, reference=reference)


# -- DICOM exports prepared in the background -------------------------------------------


def _export_process_pool() -> Executor:
    """One worker process: building an SR is pure Python (highdicom), so in a
    thread of the app's process it would hold the interpreter while the next
    edit's page run waits for it; a process runs it on another core.  Spawned,
    not forked: the app's process has threads (the server's, Streamlit's)."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent: int) -> None:
    """In the worker: leave when the app's process is gone.  An app stopped
    in order shuts its pool down; one killed outright would otherwise leave
    the idle worker behind for good."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="vheight-exports-parent", daemon=True).start()


class _Prepared:
    """Export bytes keyed on (kind, film identity, annotation, reference), built once.

    Builds asked ahead run in the executor ``pool`` makes (by default one
    worker process, started with the first build); a build asked with a delay
    is skipped when its film has asked for another annotation meanwhile (the
    reader kept editing).  A download whose bytes nobody built ahead builds
    them in the app's process.
    """

    def __init__(self, pool: Callable[[], Executor] = _export_process_pool) -> None:
        self._lock = threading.Lock()
        self._done: OrderedDict[Hashable, Future[bytes]] = OrderedDict()
        # The last key each film asked for, the most recent films last; as
        # bounded as ``_done`` (a timer whose film was dropped builds nothing:
        # its export is built on the click instead).
        self._latest: OrderedDict[Hashable, Hashable] = OrderedDict()
        self._make_pool = pool
        self._pool: Executor | None = None

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The bytes of ``key``: prepared, being prepared (waited for), or built here."""
        with self._lock:
            future = self._done.get(key)
            if future is None or (future.done() and future.exception() is not None):
                future = Future()
                self._keep(key, future)
                owner = True
            else:
                owner = False
        if owner:
            try:
                future.set_result(build())
            except BaseException as exc:  # handed to whoever waits for the bytes
                future.set_exception(exc)
        return future.result()

    def ahead(self, film: Hashable, key: Hashable, build: Callable[..., bytes], *args: Any,
              **kwargs: Any) -> None:  # fmt: skip
        """Build ``build(*args, **kwargs)`` as ``key`` in the background after
        :data:`PREPARE_DELAY_S` unless superseded.  With the default pool,
        ``build`` and its arguments travel to the worker process: a function of
        a module and picklable arguments."""
        with self._lock:
            self._latest[film] = key
            self._latest.move_to_end(film)
            while len(self._latest) > _KEPT:
                self._latest.popitem(last=False)
            if key in self._done:
                return
        timer = threading.Timer(
            PREPARE_DELAY_S, self._start, args=(film, key, partial(build, *args, **kwargs))
        )
        timer.daemon = True
        timer.start()

    def _start(self, film: Hashable, key: Hashable, job: Callable[[], bytes]) -> None:
        with self._lock:
            if self._latest.get(film) != key or key in self._done:
                return  # edited again meanwhile, or already asked for
            if self._pool is None:
                self._pool = self._make_pool()
            try:
                future = self._pool.submit(job)
            except BrokenExecutor:  # the worker died: a new one for the next build
                self._pool = None
                return  # a click builds this export itself
            except RuntimeError:  # the pool is shut down (the interpreter is exiting)
                return
            self._keep(key, future)

    def _keep(self, key: Hashable, future: Future[bytes]) -> None:
        self._done[key] = future
        while len(self._done) > _KEPT:
            self._done.popitem(last=False)


_PREPARED = _Prepared()


def _export_key(kind: str, opened: Any, annotation: Any, reference: str) -> Hashable:
    return (kind, opened.identity, annotation, reference)


def prepare_dicom_exports(opened: Any, annotation: Any, *, reference: str = "adjacent") -> None:
    """Start building the SR and presentation state of ``annotation`` in the background.

    Call on every page run that shows the download buttons; nothing is built
    while the annotation keeps changing, nor twice for the same content.
    """
    if dicom_export_problem(opened, annotation) is not None:
        return
    for kind, build in (("sr", _sr_of), ("gsps", _gsps_of)):
        _PREPARED.ahead(
            (kind, opened.identity),
            _export_key(kind, opened, annotation, reference),
            build,
            annotation,
            opened.dicom_source,
            reference=reference,
        )


def prepared_sr(opened: Any, annotation: Any, *, reference: str = "adjacent") -> bytes:
    """:func:`film_sr`, from the background build when there is one."""
    return _PREPARED.get(
        _export_key("sr", opened, annotation, reference),
        lambda: film_sr(opened, annotation, reference=reference),
    )


def prepared_gsps(opened: Any, annotation: Any, *, reference: str = "adjacent") -> bytes:
    """:func:`film_gsps`, from the background build when there is one."""
    return _PREPARED.get(
        _export_key("gsps", opened, annotation, reference),
        lambda: film_gsps(opened, annotation, reference=reference),
    )
