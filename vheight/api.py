"""Files in, measurements out: the researcher's entry points.

>>> import vheight
>>> m = vheight.measure_file("sample_images/pre.vheight.json")   # doctest: +SKIP
>>> pandas.DataFrame(m.records())                                 # doctest: +SKIP

Calibration precedence (``measurements.md``): the annotation's own
``calibration`` (a user calibration saved with it) wins; else the film
header, read without decoding pixels from ``image=`` or from the
annotation's ``image.file`` (relative to the annotation's folder); else the
film is uncalibrated and lengths are in pixels.  A film named by
``image.file`` that is not there is a warning (the annotation is still
measured, in px); a film given explicitly with ``image=`` must exist.

Everything here reads files; the formulas live in the pure
:mod:`vheight.morphometry` and :mod:`vheight.comparison`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from vheight.annotation import Annotation, load_annotation
from vheight.calibration import Calibration
from vheight.comparison import Comparison, compare
from vheight.errors import ImageReadError
from vheight.morphometry import Measurement, measure

__all__ = [
    "resolve_calibration",
    "film_header_warnings",
    "film_path",
    "film_location",
    "measure_file",
    "compare_files",
]

PathLike = str | os.PathLike[str]


def film_path(annotation: Annotation, annotation_path: PathLike | None) -> Path | None:
    """The film an annotation names (``image.file``, relative to its folder), or None."""
    location = film_location(annotation, annotation_path)
    return None if location is None else Path(location)


def film_location(annotation: Annotation, annotation_path: PathLike | None) -> str | None:
    """:func:`film_path` as a string, without path objects (for a batch of many files)."""
    name = annotation.image.file
    if not name:
        return None
    if annotation_path is None:
        return name
    return os.path.join(os.path.dirname(os.fspath(annotation_path)), name)


def resolve_calibration(
    annotation: Annotation,
    *,
    annotation_path: PathLike | None = None,
    image: PathLike | None = None,
) -> tuple[Calibration, list[str]]:
    """The calibration to measure ``annotation`` with, and warnings met on the way.

    Parameters
    ----------
    annotation
        The annotation; its own ``calibration`` wins when set.
    annotation_path
        Where it was loaded from (to find ``image.file`` beside it).
    image
        A film whose header to use instead of ``image.file``.

    Returns
    -------
    tuple
        ``(calibration, warnings)``; uncalibrated when nothing usable was found.

    Raises
    ------
    ImageReadError
        ``image`` is given but cannot be read, or ``image.file`` exists but
        is not a readable film.
    """
    if image is not None and not Path(image).is_file():
        raise ImageReadError(f"{image}: film not found (given as the image to measure on)")
    if annotation.calibration is not None:
        return annotation.calibration, []
    warnings: list[str] = []
    if image is not None:
        film = Path(image)
    else:
        named = film_path(annotation, annotation_path)
        if named is None:
            return Calibration.uncalibrated(), warnings
        film = named
        if not film.is_file():
            warnings.append(
                f"the film {annotation.image.file!r} named by the annotation was not found "
                f"at {film}: no header calibration"
            )
            return Calibration.uncalibrated(), warnings
    from vheight.film import read_film_info  # reads headers only; imported when needed

    info = read_film_info(film)
    warnings.extend(film_header_warnings(annotation, film.name, info))
    return info.calibration, warnings


def film_header_warnings(annotation: Annotation, film_name: str, info: Any) -> list[str]:
    """Warnings about a film whose header calibrates ``annotation``.

    ``info`` is the film's :class:`vheight.film.FilmInfo`: its own header
    warnings (prefixed with ``film_name``), and a SOP Instance UID or image size
    that differs from what the annotation records.
    """
    warnings = [w if film_name in w else f"{film_name}: {w}" for w in info.warnings]
    uid = annotation.image.sop_instance_uid
    if uid and info.sop_instance_uid and uid != info.sop_instance_uid:
        warnings.append(
            f"the annotation names SOP Instance UID {uid} but {film_name} has "
            f"{info.sop_instance_uid}: is this the film that was annotated?"
        )
    rows, columns = annotation.image.rows, annotation.image.columns
    if (rows and rows != info.rows) or (columns and columns != info.columns):
        warnings.append(
            f"the annotation was made on a {columns} x {rows} px image but {film_name} is "
            f"{info.columns} x {info.rows} px: landmarks may not match this film"
        )
    return warnings


def measure_file(
    annotation_path: PathLike,
    *,
    image: PathLike | None = None,
    reference: str = "adjacent",
) -> Measurement:
    """Load an annotation file and measure it.

    Parameters
    ----------
    annotation_path
        A ``*.vheight.json`` file.
    image
        The film, when not the annotation's ``image.file`` (only its header
        is read, for the calibration).
    reference
        Height-loss reference: ``"adjacent"`` (default), ``"posterior"`` or ``"max"``.

    Returns
    -------
    Measurement
        ``source`` is ``str(annotation_path)``; calibration warnings come first.
    """
    annotation = load_annotation(annotation_path)
    calibration, warnings = resolve_calibration(
        annotation, annotation_path=annotation_path, image=image
    )
    result = measure(annotation, calibration, reference=reference, source=str(annotation_path))
    if warnings:
        result = dataclasses.replace(result, warnings=(*warnings, *result.warnings))
    return result


def compare_files(
    pre: PathLike,
    post: PathLike,
    followup: PathLike | None = None,
    *,
    reference: str = "adjacent",
) -> Comparison:
    """Measure two or three annotation files of one patient and compare them.

    Each file is measured as by :func:`measure_file` (its own calibration,
    else its film's header); see :func:`vheight.comparison.compare`.
    """
    return compare(
        measure_file(pre, reference=reference),
        measure_file(post, reference=reference),
        None if followup is None else measure_file(followup, reference=reference),
    )
