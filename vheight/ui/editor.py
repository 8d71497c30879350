"""The landmark editor: a Streamlit components-v2 widget drawn on a canvas.

Coordinates
-----------
Every point exchanged with the editor is ``(x, y)`` in pixels of the
full-resolution film (``x`` the column, ``y`` the row, the centre of the
top-left pixel at ``(0, 0)``), whatever the size of the image shown.  The film
is sent once, downsampled to at most :data:`MAX_DISPLAY_SIDE` pixels on its
long side, as a JPEG served by Streamlit's media endpoint (the browser caches
it); the editor stretches it over the full-resolution extent, so a display
pixel never becomes a coordinate.

Protocol
--------
Python sends the complete state (points, grades, treated levels, the active
level, the mode) with two counters: ``epoch`` changes when Python itself
changed the points (an annotation loaded, a level cleared) and ``ack`` is the
revision of the last edit Python applied.  The editor sends every edit as the
complete set of points, ``{"rev", "vertebrae", "calibration_line"}``, in its
``edit`` state, and the active level in its ``active_level`` state.  Python is
the single source of truth: it validates, saves and measures each edit.  A
change made by Python (a snap, a proposed level) bumps ``epoch``; the editor
adopts the points as one step of its undo history, so Ctrl+Z in the viewer
undoes it and sends the previous points back as an ordinary edit.

The selected landmark travels as ``{"level", "name", "seq"}`` (``level`` and
``name`` null when nothing is selected): inside each edit (``edit.selected``),
and alone in the ``selected`` state when only the selection changed (a click
on a point, Tab, Esc); the report with the larger ``seq`` is the current one.

The HTML, CSS and JavaScript live beside this module in ``static/`` and are
passed inline (no build step).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import cv2
import numpy as np
import streamlit as st

from vheight.annotation import LEVELS, POINT_NAMES

__all__ = [
    "MAX_DISPLAY_SIDE",
    "DisplayImage",
    "make_display_image",
    "display_image_url",
    "EditorState",
    "landmark_editor",
]

#: Long side, in pixels, of the image sent to the browser.
MAX_DISPLAY_SIDE = 2048
#: JPEG quality of the display image (visually lossless on radiographs).
JPEG_QUALITY = 92
COMPONENT_NAME = "vheight_landmark_editor"


@dataclass(frozen=True, slots=True, kw_only=True)
class DisplayImage:
    """An 8-bit greyscale rendering of a film for the browser.

    Parameters
    ----------
    data
        Encoded image bytes (``mimetype``).
    mimetype
        ``"image/jpeg"`` or ``"image/png"``.
    width, height
        Size of the encoded image, pixels.
    columns, rows
        Size of the full-resolution film, pixels.
    """

    data: bytes
    mimetype: str
    width: int
    height: int
    columns: int
    rows: int

    @property
    def scale_x(self) -> float:
        """Full-resolution pixels per display pixel along x."""
        return self.columns / self.width

    @property
    def scale_y(self) -> float:
        """Full-resolution pixels per display pixel along y."""
        return self.rows / self.height


def make_display_image(
    pixels: np.ndarray, *, max_side: int = MAX_DISPLAY_SIDE, quality: int = JPEG_QUALITY
) -> DisplayImage:
    """Downsample and encode a film for display.

    Parameters
    ----------
    pixels
        2-D float array in ``[0, 1]`` (bright = dense), full resolution.
    max_side
        Largest side of the result, pixels; smaller films are not enlarged.
    quality
        JPEG quality, 1-100.
    """
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a 2-D film, found shape {array.shape}")
    rows, columns = array.shape
    grey = np.clip(np.nan_to_num(array, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    long_side = max(rows, columns)
    if long_side > max_side:
        factor = max_side / long_side
        size = (max(1, round(columns * factor)), max(1, round(rows * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - opencv always encodes a uint8 image
        raise ValueError("the film could not be encoded for display")
    height, width = grey.shape
    return DisplayImage(
        data=encoded.tobytes(),
        mimetype="image/jpeg",
        width=int(width),
        height=int(height),
        columns=int(columns),
        rows=int(rows),
    )


def display_image_url(image: DisplayImage, *, coordinates: str) -> str:
    """A URL the browser can load ``image`` from.

    Served by Streamlit's media endpoint (content-addressed, so the browser
    fetches each rendering once); a ``data:`` URL when no server runs.
    ``coordinates`` names the element using the file, for cleanup.
    """
    from streamlit import runtime

    if runtime.exists():
        manager = runtime.get_instance().media_file_mgr
        return manager.add(image.data, image.mimetype, coordinates)
    encoded = base64.b64encode(image.data).decode("ascii")
    return f"data:{image.mimetype};base64,{encoded}"


@cache
def _asset(name: str) -> str:
    return (
        resources.files("vheight.ui").joinpath("static").joinpath(name).read_text(encoding="utf-8")
    )


@cache
def _component() -> Callable[..., Any]:
    return st.components.v2.component(
        COMPONENT_NAME,
        html=_asset("editor.html"),
        css=_asset("editor.css"),
        js=_asset("editor.js"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EditorState:
    """What the editor sent back: the complete set of points of one film.

    Parameters
    ----------
    rev
        The editor's revision counter of this edit.
    vertebrae
        Level -> point name -> ``(x, y)`` full-resolution pixels.
    calibration_line
        The ends of the calibration line placed so far (one or two), if any.
    """

    rev: int
    vertebrae: dict[str, dict[str, tuple[float, float]]]
    calibration_line: tuple[tuple[float, float], ...] | None

    @classmethod
    def from_value(cls, value: Any) -> EditorState | None:
        """Parse the editor's ``edit`` state value; None when absent or malformed."""
        if not isinstance(value, Mapping):
            return None
        try:
            rev = int(value.get("rev", 0))
        except (TypeError, ValueError):
            return None
        raw = value.get("vertebrae") or {}
        if not isinstance(raw, Mapping):
            return None
        vertebrae: dict[str, dict[str, tuple[float, float]]] = {}
        for level, points in raw.items():
            if not isinstance(points, Mapping):
                return None
            placed = {}
            for name, xy in points.items():
                pair = _pair(xy)
                if pair is None:
                    return None
                placed[str(name)] = pair
            if placed:
                vertebrae[str(level)] = placed
        line = value.get("calibration_line")
        calibration_line = None
        if isinstance(line, Sequence) and not isinstance(line, str) and 1 <= len(line) <= 2:
            ends = tuple(_pair(p) for p in line)
            if all(end is not None for end in ends):
                calibration_line = ends
        return cls(rev=rev, vertebrae=vertebrae, calibration_line=calibration_line)


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    return (x, y)


def landmark_editor(
    *,
    key: str,
    film_id: str,
    image: DisplayImage,
    vertebrae: Mapping[str, Mapping[str, Sequence[float]]],
    grades: Mapping[str, int | None],
    treated: Sequence[str],
    active_level: str,
    epoch: int,
    ack: int,
    mode: str = "landmarks",
    calibration_line: Sequence[Sequence[float]] | None = None,
    height: int = 640,
    on_edit: Callable[[], None] | None = None,
    on_level: Callable[[], None] | None = None,
) -> Any:
    """Mount the editor for one film and return its component result.

    Parameters
    ----------
    key
        Streamlit widget key; the editor's state is ``st.session_state[key]``
        with the entries ``edit`` (see :class:`EditorState`),
        ``active_level`` and ``selected``.
    film_id
        Identity of the film shown; a new identity resets the view.
    image
        The display rendering of the film.
    vertebrae
        Points to draw, full-resolution pixels.
    grades
        Level -> Genant grade (0-3) or None when not measurable.
    treated
        Levels marked as treated.
    active_level
        Level whose next point a click places.
    epoch, ack
        Change counters (module docstring).
    mode
        ``"landmarks"`` or ``"calibrate"`` (clicks place the two ends of a
        line of known length).
    calibration_line
        The calibration line's ends to draw, full-resolution pixels.
    height
        Height of the viewer, CSS pixels.
    on_edit, on_level
        Called (as Streamlit widget callbacks) when the points or the active
        level changed in the browser.
    """
    url = display_image_url(image, coordinates=f"vheight-editor-{key}")
    data = {
        "film_id": film_id,
        "image": {
            "url": url,
            "width": image.width,
            "height": image.height,
            "scale_x": image.scale_x,
            "scale_y": image.scale_y,
        },
        "rows": image.rows,
        "columns": image.columns,
        "levels": list(LEVELS),
        "point_names": list(POINT_NAMES),
        "vertebrae": {
            level: {name: [float(xy[0]), float(xy[1])] for name, xy in points.items()}
            for level, points in vertebrae.items()
        },
        "grades": {level: (None if g is None else int(g)) for level, g in grades.items()},
        "treated": list(treated),
        "active_level": active_level,
        "mode": mode,
        "calibration_line": (
            None
            if calibration_line is None
            else [[float(p[0]), float(p[1])] for p in calibration_line]
        ),
        "epoch": int(epoch),
        "ack": int(ack),
        "height": int(height),
    }
    return _component()(
        key=key,
        data=data,
        on_edit_change=on_edit or _noop,
        on_active_level_change=on_level or _noop,
        on_selected_change=_noop,
    )


def _noop() -> None:
    """Default widget callback: the value is read from session state."""
