"""Vertebral levels, landmark names and the annotation file (``*.vheight.json``, v1).

Coordinates
-----------
A landmark is ``(x, y)`` in pixels of the full-resolution image: ``x`` is the
column (to the right), ``y`` the row (down), and the centre of the top-left
pixel is ``(0, 0)``.  Sub-pixel floats are allowed.  Every function of this
module uses that convention.

The file
--------
UTF-8 JSON, ``{"format": "vheight.annotation", "version": 1, ...}``; see
:func:`Annotation.to_dict` for the full layout.  Unknown keys, at the top level
and inside ``image``, are preserved on load and written back on save, so files
written by a newer vheight survive a round trip through this one.

Validation
----------
:func:`load_annotation`, :func:`loads_annotation` and
:meth:`Annotation.from_dict` check everything at once and raise a single
:class:`~vheight.errors.AnnotationError` whose message names the file and
lists every problem, each with its level and point, what was expected and
what was found.  The message is one line (problems separated by ``"; "``) and
the individual problems are also available as ``error.problems``.  Checked:

- the text is UTF-8 JSON (duplicate keys refused) and its top level is an
  object; the non-standard ``NaN``/``Infinity`` literals are read so that
  the error can say which point holds them, and refused anywhere else;
- ``format`` is ``"vheight.annotation"`` and ``version`` is ``1``;
- every level is one of ``T1``..``T12``, ``L1``..``L5`` and every point name
  one of the six of :data:`POINT_NAMES`;
- every point is ``[x, y]``, two finite numbers;
- when ``image.rows`` and ``image.columns`` are known, no point lies more
  than 10 % of the image size outside the image: ``x`` must lie in
  ``[-0.1 * columns, (columns - 1) + 0.1 * columns]`` and ``y`` likewise with
  ``rows`` (a landmark may sit slightly off the film edge, a typo may not);
- ``timepoint`` (:data:`TIMEPOINTS` or null), ``patient_position``
  (:data:`PATIENT_POSITIONS` or null), ``treated_levels`` (known levels, no
  repeats), ``calibration`` (null or two spacings > 0 mm) and the types of
  ``image``, ``annotator``, ``created``, ``modified`` and ``notes``.

A vertebra holding fewer than six points is valid (work in progress); it is
reported as incomplete by the measurements.  A level holding no point at all
is dropped.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vheight.calibration import Calibration
from vheight.errors import AnnotationError, CalibrationError
from vheight.files import write_atomic

__all__ = [
    "FORMAT",
    "VERSION",
    "LEVELS",
    "Level",
    "POINT_NAMES",
    "PointName",
    "TIMEPOINTS",
    "Timepoint",
    "PATIENT_POSITIONS",
    "PatientPosition",
    "OUTSIDE_MARGIN",
    "FrozenMap",
    "ImageRef",
    "Annotation",
    "load_annotation",
    "loads_annotation",
    "save_annotation",
    "dumps_annotation",
    "sidecar_path",
    "level_index",
]

FORMAT = "vheight.annotation"
VERSION = 1

#: How far outside the image a point may lie, as a fraction of the image size
#: along that axis, before it is refused (when ``rows``/``columns`` are known).
OUTSIDE_MARGIN = 0.10


class Level(enum.StrEnum):
    """Vertebral levels in anatomical order, thoracic then lumbar."""

    T1 = "T1"
    T2 = "T2"
    T3 = "T3"
    T4 = "T4"
    T5 = "T5"
    T6 = "T6"
    T7 = "T7"
    T8 = "T8"
    T9 = "T9"
    T10 = "T10"
    T11 = "T11"
    T12 = "T12"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"


class PointName(enum.StrEnum):
    """The six landmarks of a vertebral body (standard 6-point morphometry)."""

    SUPERIOR_ANTERIOR = "superior_anterior"
    SUPERIOR_MIDDLE = "superior_middle"
    SUPERIOR_POSTERIOR = "superior_posterior"
    INFERIOR_ANTERIOR = "inferior_anterior"
    INFERIOR_MIDDLE = "inferior_middle"
    INFERIOR_POSTERIOR = "inferior_posterior"


class Timepoint(enum.StrEnum):
    """When a film was taken relative to the augmentation."""

    PRE = "pre"
    POST = "post"
    FOLLOWUP = "followup"


class PatientPosition(enum.StrEnum):
    """Patient position during the exposure (loading changes heights)."""

    STANDING = "standing"
    SITTING = "sitting"
    SUPINE = "supine"
    PRONE = "prone"
    DECUBITUS = "decubitus"


LEVELS: tuple[str, ...] = tuple(level.value for level in Level)
POINT_NAMES: tuple[str, ...] = tuple(name.value for name in PointName)
TIMEPOINTS: tuple[str, ...] = tuple(t.value for t in Timepoint)
PATIENT_POSITIONS: tuple[str, ...] = tuple(p.value for p in PatientPosition)

_POINT_NAME_SET = frozenset(POINT_NAMES)

_LEVEL_INDEX = {level: i for i, level in enumerate(LEVELS)}
_KNOWN_KEYS = (
    "format",
    "version",
    "image",
    "timepoint",
    "calibration",
    "vertebrae",
    "treated_levels",
    "patient_position",
    "annotator",
    "created",
    "modified",
    "notes",
)
# The keys of the file that are fields of Annotation as they are (checked by it).
_MODEL_KEYS = (
    "timepoint",
    "vertebrae",
    "treated_levels",
    "patient_position",
    "annotator",
    "created",
    "modified",
    "notes",
)
_IMAGE_KEYS = ("file", "sop_instance_uid", "rows", "columns")
_LEVELS_TEXT = "T1..T12 or L1..L5"


def level_index(level: str) -> int:
    """Position of ``level`` in :data:`LEVELS` (T1 = 0 ... L5 = 16).

    Raises :class:`AnnotationError` for an unknown level.
    """
    try:
        return _LEVEL_INDEX[str(level)]
    except KeyError:
        raise AnnotationError(f"unknown level {level!r}: expected {_LEVELS_TEXT}") from None


# -- read-only containers ------------------------------------------------------------------


class FrozenMap(Mapping[str, Any]):
    """A read-only, picklable, hashable mapping that keeps insertion order."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()) -> None:
        self._data = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (list(self._data.items()),))


def _freeze(value: Any) -> Any:
    """Deep read-only copy of a JSON-like value (objects -> mappings, arrays -> tuples)."""
    if isinstance(value, Mapping):
        return FrozenMap([(str(k), _freeze(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return copy.deepcopy(value)


def _thaw(value: Any) -> Any:
    """Plain ``dict``/``list`` copy of a value frozen by :func:`_freeze`."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return copy.deepcopy(value)


# -- validation helpers --------------------------------------------------------------------


def _shown(value: Any, limit: int = 60) -> str:
    """Short printable form of a found value for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except RecursionError:
            text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a finite real number."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _point(value: Any) -> tuple[float, float] | None:
    if type(value) is list and len(value) == 2:  # as parsed from JSON: the usual case
        x, y = value
        if type(x) is float and type(y) is float and x - x == 0.0 and y - y == 0.0:
            return (x, y)  # two finite floats
    if isinstance(value, (str, bytes, Mapping)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if len(items) != 2:
        return None
    x, y = _number(items[0]), _number(items[1])
    if x is None or y is None:
        return None
    return (x, y)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _outside(xy: tuple[float, float], rows: int | None, columns: int | None) -> str | None:
    """Why ``xy`` is too far outside the image, or None when it is acceptable."""
    x, y = xy
    problems = []
    if columns is not None:
        margin = OUTSIDE_MARGIN * columns
        if not (-margin <= x <= (columns - 1) + margin):
            problems.append(f"x = {x:g} outside [{-margin:g}, {columns - 1 + margin:g}]")
    if rows is not None:
        margin = OUTSIDE_MARGIN * rows
        if not (-margin <= y <= (rows - 1) + margin):
            problems.append(f"y = {y:g} outside [{-margin:g}, {rows - 1 + margin:g}]")
    if not problems:
        return None
    size = f"{columns if columns is not None else '?'} x {rows if rows is not None else '?'}"
    return (
        f"point lies more than {OUTSIDE_MARGIN:.0%} of the image size outside the "
        f"{size} px image ({', '.join(problems)})"
    )


def _check_vertebrae(
    value: Any, rows: int | None, columns: int | None, problems: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Validated, ordered copy of a ``vertebrae`` mapping; problems appended."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"vertebrae: expected an object of levels, found {_shown(value)}")
        return {}
    found: dict[str, dict[str, tuple[float, float]]] = {}
    # The bounds _outside() checks, computed once: a point within them is accepted
    # without a call, any other goes through _outside() for the verdict and message.
    x_low = x_high = y_low = y_high = 0.0
    if columns is not None:
        margin = OUTSIDE_MARGIN * columns
        x_low, x_high = -margin, (columns - 1) + margin
    if rows is not None:
        margin = OUTSIDE_MARGIN * rows
        y_low, y_high = -margin, (rows - 1) + margin
    for raw_level, points in value.items():
        level = str(raw_level)
        where = f"vertebrae.{level}"
        known_level = level in _LEVEL_INDEX
        if not known_level:
            problems.append(f"{where}: unknown level {level!r}, expected {_LEVELS_TEXT}")
        if not isinstance(points, Mapping):
            problems.append(
                f"{where}: expected an object of point name -> [x, y], found {_shown(points)}"
            )
            continue
        good: dict[str, tuple[float, float]] = {}
        for raw_name, raw_xy in points.items():
            name = raw_name if type(raw_name) is str else str(raw_name)
            if name not in _POINT_NAME_SET:
                problems.append(
                    f"{where}.{name}: unknown point name {name!r}, expected one of "
                    f"{', '.join(POINT_NAMES)}"
                )
                continue
            xy = _point(raw_xy)
            if xy is None:
                problems.append(
                    f"{where}.{name}: expected [x, y], two finite numbers, found {_shown(raw_xy)}"
                )
                continue
            x, y = xy
            if not (
                (columns is None or x_low <= x <= x_high) and (rows is None or y_low <= y <= y_high)
            ):
                why = _outside(xy, rows, columns)
                if why is not None:
                    problems.append(f"{where}.{name}: {why}")
                    continue
            good[name] = xy
        if known_level and good:
            in_order = tuple(good) == POINT_NAMES  # as files are written: nothing to sort
            found[level] = good if in_order else {n: good[n] for n in POINT_NAMES if n in good}
    return {level: found[level] for level in LEVELS if level in found}


def _check_choice(
    value: Any, key: str, choices: tuple[str, ...], problems: list[str]
) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in choices:
        return str(value)
    problems.append(f"{key}: expected one of {', '.join(choices)} or null, found {_shown(value)}")
    return None


def _check_treated(value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        problems.append(f"treated_levels: expected a list of levels, found {_shown(value)}")
        return ()
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or item not in _LEVEL_INDEX:
            problems.append(
                f"treated_levels: unknown level {_shown(item)}, expected {_LEVELS_TEXT}"
            )
        elif item in seen:
            problems.append(f"treated_levels: level {item} listed twice")
        else:
            seen.add(str(item))
    return tuple(level for level in LEVELS if level in seen)


def _check_text(value: Any, key: str, problems: list[str], *, nullable: bool) -> str | None:
    if value is None:
        if nullable:
            return None
        return ""
    if isinstance(value, str):
        return value
    problems.append(
        f"{key}: expected a string{' or null' if nullable else ''}, found {_shown(value)}"
    )
    return None if nullable else ""


def _check_finite(value: Any, where: str, problems: list[str]) -> None:
    """Refuse NaN and infinities in kept unknown values (they cannot be saved as JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: {value!r} is not a valid JSON number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}", problems)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]", problems)


def _raise(source: str, problems: Sequence[str]) -> None:
    if not problems:
        return
    head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    error = AnnotationError(f"{source}: {head}: " + "; ".join(problems))
    error.problems = tuple(problems)  # type: ignore[attr-defined]
    error.source = source  # type: ignore[attr-defined]
    raise error


# -- the model -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRef:
    """Which film an annotation belongs to.

    Parameters
    ----------
    file
        File name of the film, relative to the annotation file's folder.
    sop_instance_uid
        DICOM SOP Instance UID of the film, when known.
    rows, columns
        Image size in pixels, when known; points are then checked against it.
    extra
        Unknown keys of the file's ``image`` object, preserved on save.
    """

    file: str | None = None
    sop_instance_uid: str | None = None
    rows: int | None = None
    columns: int | None = None
    extra: Mapping[str, Any] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        problems: list[str] = []
        _validate_image_fields(self, problems)
        _raise("annotation", problems)
        for key in ("rows", "columns"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _positive_int(getattr(self, key)))
        object.__setattr__(self, "extra", _freeze(self.extra))

    def to_dict(self) -> dict[str, Any]:
        """The file's ``image`` object (known keys first, then unknown ones)."""
        data: dict[str, Any] = {
            "file": self.file,
            "sop_instance_uid": self.sop_instance_uid,
            "rows": self.rows,
            "columns": self.columns,
        }
        for key, value in self.extra.items():
            if key not in data:
                data[key] = _thaw(value)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<annotation>") -> ImageRef:
        problems: list[str] = []
        image = _image_from_json(data, problems)
        _raise(source, problems)
        return image


def _validate_image_fields(image: ImageRef, problems: list[str]) -> None:
    for key in ("file", "sop_instance_uid"):
        value = getattr(image, key)
        if value is not None and not isinstance(value, str):
            problems.append(f"image.{key}: expected a string or null, found {_shown(value)}")
    for key in ("rows", "columns"):
        value = getattr(image, key)
        if value is not None and _positive_int(value) is None:
            problems.append(
                f"image.{key}: expected a whole number > 0 or null, found {_shown(value)}"
            )
    if not isinstance(image.extra, Mapping):
        problems.append(f"image: extra keys must be a mapping, found {_shown(image.extra)}")
    else:
        for key, value in image.extra.items():
            _check_finite(value, f"image.{key}", problems)


def _image_from_json(data: Any, problems: list[str]) -> ImageRef:
    """The file's ``image`` object as an :class:`ImageRef`; problems appended.

    When the object is not valid, an :class:`ImageRef` holding only the valid
    image size is returned, so that the points can still be checked against it.
    """
    if data is None:
        return ImageRef()
    if not isinstance(data, Mapping):
        problems.append(f"image: expected an object or null, found {_shown(data)}")
        return ImageRef()
    try:
        return ImageRef(
            **{key: data.get(key) for key in _IMAGE_KEYS},
            extra={k: v for k, v in data.items() if k not in _IMAGE_KEYS},
        )
    except AnnotationError as exc:
        problems.extend(exc.problems)  # type: ignore[attr-defined]
    rows, columns = _positive_int(data.get("rows")), _positive_int(data.get("columns"))
    return ImageRef(rows=rows, columns=columns)


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotation:
    """Landmarks of one lateral spine film, and facts about it.

    Points are ``(x, y)`` pixels (module docstring).  The object is immutable:
    the ``with_*``/``without_*`` methods return changed copies, validated
    like a loaded file (an invalid change raises :class:`AnnotationError`).

    Parameters
    ----------
    image
        The film annotated.
    timepoint
        ``"pre"``, ``"post"``, ``"followup"`` or None.
    calibration
        A calibration stored with the annotation (typically a user
        calibration); when set it overrides the film header.
    vertebrae
        Level -> point name -> ``(x, y)``.  Stored read-only, levels in
        anatomical order and points in :data:`POINT_NAMES` order.
    treated_levels
        Levels augmented (kyphoplasty, vertebroplasty), anatomical order.
    patient_position
        One of :data:`PATIENT_POSITIONS` or None.
    annotator, notes
        Free text.
    created, modified
        ISO 8601 timestamps as written by the caller (never set silently).
    extra
        Unknown top-level keys of the file, preserved on save.
    """

    image: ImageRef = field(default_factory=ImageRef)
    timepoint: str | None = None
    calibration: Calibration | None = None
    vertebrae: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=FrozenMap)
    treated_levels: tuple[str, ...] = ()
    patient_position: str | None = None
    annotator: str = ""
    created: str | None = None
    modified: str | None = None
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.image, ImageRef):
            problems.append(f"image: expected an ImageRef, found {self.image!r}")
            rows = columns = None
        else:
            rows, columns = self.image.rows, self.image.columns
        if self.calibration is not None and not isinstance(self.calibration, Calibration):
            problems.append(
                f"calibration: expected a Calibration or None, found {self.calibration!r}"
            )
        timepoint = _check_choice(self.timepoint, "timepoint", TIMEPOINTS, problems)
        position = _check_choice(
            self.patient_position, "patient_position", PATIENT_POSITIONS, problems
        )
        treated_in: Any = self.treated_levels
        if isinstance(treated_in, (list, tuple)):
            treated_in = [str(t) if isinstance(t, str) else t for t in treated_in]
        treated = _check_treated(treated_in, problems)
        vertebrae = _check_vertebrae(self.vertebrae, rows, columns, problems)
        annotator = _check_text(self.annotator, "annotator", problems, nullable=False)
        notes = _check_text(self.notes, "notes", problems, nullable=False)
        _check_text(self.created, "created", problems, nullable=True)
        _check_text(self.modified, "modified", problems, nullable=True)
        if not isinstance(self.extra, Mapping):
            problems.append(f"extra: expected a mapping of unknown keys, found {self.extra!r}")
        else:
            for key, value in self.extra.items():
                if key not in _KNOWN_KEYS:
                    _check_finite(value, str(key), problems)
        _raise("annotation", problems)
        set_ = object.__setattr__
        set_(self, "timepoint", timepoint)
        set_(self, "patient_position", position)
        set_(self, "treated_levels", treated)
        set_(
            self,
            "vertebrae",
            FrozenMap([(lvl, FrozenMap(pts)) for lvl, pts in vertebrae.items()]),
        )
        set_(self, "annotator", annotator)
        set_(self, "notes", notes)
        set_(self, "extra", _freeze({k: v for k, v in self.extra.items() if k not in _KNOWN_KEYS}))

    # -- queries ---------------------------------------------------------------------

    @property
    def levels(self) -> tuple[str, ...]:
        """Annotated levels (at least one point), in anatomical order."""
        return tuple(self.vertebrae)

    @property
    def complete_levels(self) -> tuple[str, ...]:
        """Levels holding all six points, in anatomical order."""
        return tuple(level for level in self.vertebrae if self.is_complete(level))

    def points(self, level: str) -> Mapping[str, tuple[float, float]]:
        """Point name -> ``(x, y)`` of ``level`` (empty when not annotated)."""
        level_index(level)
        return self.vertebrae.get(str(level), FrozenMap())

    def is_complete(self, level: str) -> bool:
        """True when ``level`` holds all six points."""
        return len(self.points(level)) == len(POINT_NAMES)

    def next_missing_point(self, level: str) -> str | None:
        """The first point of :data:`POINT_NAMES` not yet placed on ``level``, or None."""
        placed = self.points(level)
        for name in POINT_NAMES:
            if name not in placed:
                return name
        return None

    def is_treated(self, level: str) -> bool:
        level_index(level)
        return str(level) in self.treated_levels

    # -- changes (new objects) -------------------------------------------------------

    def with_point(self, level: str, name: str, xy: Sequence[float]) -> Annotation:
        """A copy with point ``name`` of ``level`` placed at ``xy`` = ``(x, y)`` pixels."""
        level, name = str(level), str(name)
        vertebrae = {lvl: dict(pts) for lvl, pts in self.vertebrae.items()}
        vertebrae.setdefault(level, {})[name] = xy  # type: ignore[assignment]
        return replace(self, vertebrae=vertebrae)

    def without_point(self, level: str, name: str) -> Annotation:
        """A copy without point ``name`` of ``level`` (unchanged when absent)."""
        level, name = str(level), str(name)
        level_index(level)
        if name not in POINT_NAMES:
            raise AnnotationError(
                f"unknown point name {name!r}: expected one of {', '.join(POINT_NAMES)}"
            )
        vertebrae = {lvl: dict(pts) for lvl, pts in self.vertebrae.items()}
        vertebrae.get(level, {}).pop(name, None)
        return replace(self, vertebrae=vertebrae)

    def without_level(self, level: str) -> Annotation:
        """A copy without any point of ``level`` (unchanged when absent)."""
        level = str(level)
        level_index(level)
        vertebrae = {lvl: pts for lvl, pts in self.vertebrae.items() if lvl != level}
        return replace(self, vertebrae=vertebrae)

    def with_treated(self, level: str, treated: bool = True) -> Annotation:
        """A copy with ``level`` marked as treated (augmented) or not."""
        level = str(level)
        level_index(level)
        current = set(self.treated_levels)
        if treated:
            current.add(level)
        else:
            current.discard(level)
        return replace(self, treated_levels=tuple(lvl for lvl in LEVELS if lvl in current))

    # -- JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The v1 file as plain ``dict``/``list`` values (a fresh copy)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "image": self.image.to_dict(),
            "timepoint": self.timepoint,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "vertebrae": {
                level: {name: [xy[0], xy[1]] for name, xy in points.items()}
                for level, points in self.vertebrae.items()
            },
            "treated_levels": list(self.treated_levels),
            "patient_position": self.patient_position,
            "annotator": self.annotator,
            "created": self.created,
            "modified": self.modified,
            "notes": self.notes,
        }
        for key, value in self.extra.items():
            if key not in data:
                data[key] = _thaw(value)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<annotation>") -> Annotation:
        """Validate a parsed v1 file; raises one :class:`AnnotationError` listing every problem.

        ``source`` names the file in error messages.
        """
        problems: list[str] = []
        if not isinstance(data, Mapping):
            _raise(source, [f"expected a JSON object at the top level, found {_shown(data)}"])
        fmt = data.get("format")
        if fmt != FORMAT:
            found = _shown(fmt) if "format" in data else "nothing"
            problems.append(
                f"format: expected {FORMAT!r}, found {found} (is this a vheight annotation file?)"
            )
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, (int, float)) or version != VERSION:
            hint = ""
            if (
                isinstance(version, (int, float))
                and not isinstance(version, bool)
                and math.isfinite(version)
                and version > VERSION
            ):
                hint = ": written by a newer vheight, upgrade to read it"
            found = _shown(version) if "version" in data else "nothing"
            problems.append(f"version: expected {VERSION}, found {found}{hint}")
        image = _image_from_json(data.get("image"), problems)
        calibration = None
        raw_cal = data.get("calibration")
        if raw_cal is not None:
            if not isinstance(raw_cal, Mapping):
                problems.append(
                    "calibration: expected null or an object with row_spacing_mm and "
                    f"col_spacing_mm, found {_shown(raw_cal)}"
                )
            else:
                try:
                    calibration = Calibration.from_dict(raw_cal)
                except CalibrationError as exc:
                    problems.append(f"calibration: {exc} (found {_shown(raw_cal)})")
                else:
                    for key in ("source", "description"):
                        value = raw_cal.get(key)
                        if value is not None and not isinstance(value, str):
                            problems.append(
                                f"calibration.{key}: expected a string, found {_shown(value)}"
                            )
        fields = {key: data.get(key) for key in _MODEL_KEYS}
        fields["extra"] = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        try:
            annotation = cls(image=image, calibration=calibration, **fields)
        except AnnotationError as exc:
            _raise(source, [*problems, *exc.problems])  # type: ignore[attr-defined]
            raise  # pragma: no cover - _raise raised
        _raise(source, problems)
        return annotation


# -- files ---------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _parse_json(text: str) -> Any:
    """``json.loads`` refusing duplicate keys (:class:`_DuplicateKey`)."""
    return json.loads(text, object_pairs_hook=_pairs_hook)


def loads_annotation(text: str | bytes, *, source: str = "<annotation>") -> Annotation:
    """Parse and validate annotation JSON (``str``, or ``bytes`` in UTF-8).

    Raises :class:`AnnotationError` naming ``source`` for any bad input.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            _raise(source, [f"not UTF-8 text (byte {exc.start}): is this an annotation file?"])
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, found {type(text).__name__}")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = _parse_json(text)
    except _DuplicateKey as exc:
        _raise(source, [f"not valid: key {str(exc)!r} appears twice in one object"])
    except json.JSONDecodeError as exc:
        _raise(source, [f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"])
    except (ValueError, RecursionError) as exc:
        _raise(source, [f"not JSON: {exc}"])
    return Annotation.from_dict(data, source=source)


def load_annotation(path: str | os.PathLike[str]) -> Annotation:
    """Read and validate an annotation file; errors name the file."""
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"expected a str or os.PathLike[str] path, found {type(path).__name__}")
    try:
        with open(name, "rb", buffering=0) as handle:  # read whole: no buffer needed
            raw = handle.read()
    except OSError as exc:
        _raise(name, [f"cannot read the annotation file: {exc.strerror or exc}"])
    return loads_annotation(raw, source=name)


_PAIR = re.compile(r"\[\s*(-?[0-9][0-9.eE+-]*),\s*(-?[0-9][0-9.eE+-]*)\s*\]")


def dumps_annotation(annotation: Annotation) -> str:
    """The annotation as v1 JSON text.

    Two-space indent, one ``[x, y]`` point per line, non-ASCII characters kept
    (the file is UTF-8), final newline.
    """
    text = json.dumps(annotation.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
    return _PAIR.sub(r"[\1, \2]", text) + "\n"


def save_annotation(annotation: Annotation, path: str | os.PathLike[str]) -> Path:
    """Write ``annotation`` to ``path`` atomically; returns the path.

    The text goes to a temporary file in the same folder, is flushed to disk,
    then renamed over ``path`` (:func:`os.replace`), so a reader never sees a
    half-written file.  The object is not changed (``modified`` is the
    caller's to set, e.g. ``dataclasses.replace(a, modified=now)``).
    """
    path = Path(path)
    if not isinstance(annotation, Annotation):
        raise TypeError(f"expected an Annotation, found {type(annotation).__name__}")
    data = dumps_annotation(annotation).encode("utf-8")
    try:
        write_atomic(path, data)
    except OSError as exc:
        _raise(str(path), [f"cannot save the annotation: {exc.strerror or exc}"])
    return path


def sidecar_path(film_path: str | os.PathLike[str]) -> Path:
    """The default annotation file of a film: ``film.dcm`` -> ``film.vheight.json`` beside it."""
    film_path = Path(film_path)
    return film_path.with_name(film_path.stem + ".vheight.json")
