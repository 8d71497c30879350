"""The landmark editor: a Streamlit components-v2 widget drawn on a canvas.

Coordinates
-----------
Every point exchanged with the editor is ``(x, y)`` in pixels of the
full-resolution film (``x`` the column, ``y`` the row, the centre of the
top-left pixel at ``(0, 0)``), whatever the size of the image shown.  The
film is sent once as 16-bit codes of its modality values (:class:`ValueImage`,
:class:`ValueMapping`), downsampled to at most :data:`MAX_DISPLAY_SIDE` pixels on its long side and
served by Streamlit's media endpoint (the browser caches it); the browser
windows the codes itself, so a mouse window/level drag needs no server round
trip, and the window it settles on is sent back (``window`` state) so that the
exports and the comparison use it.  Zoomed past the display copy, the editor
asks for the visible region (``crop`` state) and draws it at full resolution.
The image is stretched over the full-resolution extent, so a display pixel
never becomes a coordinate.

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
    "ValueImage",
    "ValueMapping",
    "value_mapping",
    "make_value_image",
    "window_spec",
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
    return media_url(image.data, image.mimetype, coordinates=coordinates)


# -- film values for windowing in the browser ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueMapping:
    """How a film's modality values travel to the browser as 16-bit codes.

    A code ``q`` (0-65535) stands for the modality value ``q * scale + offset``.
    For integer stored values spanning at most 65536 codes under a linear
    rescale this is exact (``q = stored - stored_min``); otherwise the
    modality values are quantised over their range.

    Parameters
    ----------
    scale, offset
        Modality value of code ``q``: ``q * scale + offset``.
    exact
        True when every stored value has its own code.
    stored_min
        Smallest stored value (the code origin) when ``exact``.
    low, high
        Modality value range quantised when not ``exact``.
    """

    scale: float
    offset: float
    exact: bool
    stored_min: float = 0.0
    low: float = 0.0
    high: float = 1.0

    def codes(
        self, film: Any, rows: slice = slice(None), columns: slice = slice(None)
    ) -> np.ndarray:
        """The 16-bit codes of a region of ``film`` (uint16, full resolution)."""
        stored = film.stored[rows, columns]
        if self.exact:
            codes = np.subtract(stored, np.int32(self.stored_min), dtype=np.int32)
            return np.clip(codes, 0, 65535).astype(np.uint16)
        values = film.modality.apply(stored)
        span = self.high - self.low
        codes = np.nan_to_num((values - np.float32(self.low)) * np.float32(65535.0 / span), nan=0.0)
        return np.clip(np.rint(codes), 0, 65535).astype(np.uint16)


def value_mapping(film: Any) -> ValueMapping:
    """The :class:`ValueMapping` of ``film`` (exact whenever the stored values allow it)."""
    modality = film.modality
    stored = film.stored
    low, high = film.stored_range or (float(np.nanmin(stored)), float(np.nanmax(stored)))
    if modality.lut is None and np.issubdtype(stored.dtype, np.integer) and high - low <= 65535:
        return ValueMapping(
            scale=modality.slope,
            offset=low * modality.slope + modality.intercept,
            exact=True,
            stored_min=float(low),
        )
    values = film.modality_values
    vlow, vhigh = float(np.nanmin(values)), float(np.nanmax(values))
    if not vhigh > vlow:
        vhigh = vlow + 1.0
    return ValueMapping(
        scale=(vhigh - vlow) / 65535.0, offset=vlow, exact=False, low=vlow, high=vhigh
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueImage:
    """16-bit codes of a film (or of a region of it) for the browser.

    ``data`` is the codes as little-endian uint16, row after row
    (``width * height`` of them); the browser windows them itself, so a new
    window needs no new image.  ``x0, y0, x1, y1`` is the region of the
    full-resolution film covered (pixel edges: ``x1 - x0`` columns).
    """

    data: bytes
    width: int
    height: int
    x0: int
    y0: int
    x1: int
    y1: int
    mimetype: str = "application/octet-stream"


def make_value_image(
    film: Any,
    mapping: ValueMapping,
    *,
    max_side: int = MAX_DISPLAY_SIDE,
    region: tuple[int, int, int, int] | None = None,
) -> ValueImage:
    """The codes of ``film`` (or of ``region``, ``(x0, y0, x1, y1)``), downsampled to ``max_side``.

    A region is sent at full resolution when it fits ``max_side``.
    """
    rows, columns = film.stored.shape
    x0, y0, x1, y1 = region if region is not None else (0, 0, columns, rows)
    x0, x1 = max(0, int(x0)), min(columns, int(x1))
    y0, y1 = max(0, int(y0)), min(rows, int(y1))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty region {region!r} of a {columns} x {rows} film")
    codes = mapping.codes(film, slice(y0, y1), slice(x0, x1))
    long_side = max(codes.shape)
    if long_side > max_side:
        factor = max_side / long_side
        size = (max(1, round(codes.shape[1] * factor)), max(1, round(codes.shape[0] * factor)))
        codes = cv2.resize(codes, size, interpolation=cv2.INTER_AREA)
    height, width = codes.shape
    return ValueImage(
        data=np.ascontiguousarray(codes, dtype="<u2").tobytes(),
        width=int(width),
        height=int(height),
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
    )


def window_spec(preset: Any, *, invert: bool, mapping: ValueMapping) -> dict[str, Any]:
    """What the browser needs to window the codes as ``preset`` does (and ``invert``).

    Linear and sigmoid windows travel as parameters; a VOI LUT as its output
    at each of the 65536 codes (base64 bytes), computed by the preset itself.
    """
    spec: dict[str, Any] = {
        "center": float(preset.center),
        "width": float(preset.width),
        "function": "LUT" if preset.is_lut else str(preset.function.value),
        "invert": bool(invert),
        "label": preset.label(),
    }
    if preset.is_lut:
        values = np.arange(65536, dtype=np.float64) * mapping.scale + mapping.offset
        out = preset.apply(values.astype(np.float32))
        if invert:
            out = 1.0 - out
        table = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
        spec["lut"] = base64.b64encode(table.tobytes()).decode("ascii")
    return spec


def media_url(data: bytes, mimetype: str, *, coordinates: str) -> str:
    """A URL the browser can load ``data`` from (Streamlit's media endpoint, or a data URL)."""
    from streamlit import runtime

    if runtime.exists():
        return runtime.get_instance().media_file_mgr.add(data, mimetype, coordinates)
    encoded = base64.b64encode(data).decode("ascii")
    return f"data:{mimetype};base64,{encoded}"


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
    values: ValueImage,
    mapping: ValueMapping,
    window: Mapping[str, Any],
    vertebrae: Mapping[str, Mapping[str, Sequence[float]]],
    grades: Mapping[str, int | None],
    treated: Sequence[str],
    active_level: str,
    epoch: int,
    ack: int,
    mode: str = "landmarks",
    calibration_line: Sequence[Sequence[float]] | None = None,
    heights: Mapping[str, Mapping[str, Any]] | None = None,
    badge: Mapping[str, Any] | None = None,
    crop: ValueImage | None = None,
    preview: DisplayImage | None = None,
    preview_window: Sequence[Any] | None = None,
    value_range: tuple[float, float] = (0.0, 65535.0),
    height: int = 640,
    on_edit: Callable[[], None] | None = None,
    on_level: Callable[[], None] | None = None,
    on_window: Callable[[], None] | None = None,
    on_crop: Callable[[], None] | None = None,
    announce_drawn: bool = False,
    on_drawn: Callable[[], None] | None = None,
) -> Any:
    """Mount the editor for one film and return its component result.

    Parameters
    ----------
    key
        Streamlit widget key; the editor's state is ``st.session_state[key]``
        with the entries ``edit`` (see :class:`EditorState`),
        ``active_level``, ``selected``, ``window`` (``{"center", "width"}``,
        modality units, after a mouse window/level drag), ``crop`` (the
        full-resolution region ``{"x0", "y0", "x1", "y1"}`` wanted when zoomed
        past the display copy) and ``drawn`` (see ``announce_drawn``).
    film_id
        Identity of the film shown; a new identity resets the view.
    values, mapping
        The film's codes (at most :data:`MAX_DISPLAY_SIDE` on the long side)
        and what they stand for.
    window
        The window to draw with (:func:`window_spec`).
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
    heights
        Level -> ``{"ha", "hm", "hp", "unit"}`` (None where not measurable),
        drawn beside each vertebra.
    badge
        ``{"text", "calibrated"}``: the calibration shown in the toolbar.
    crop
        Full-resolution codes of the region last asked for, if any.
    preview, preview_window
        A JPEG of the film under one window (its ``window["key"]``), drawn while
        the codes load when that is the window asked for: a fast first paint.
    value_range
        Smallest and largest modality value of the film (sets how fast a
        window/level drag moves: the range over about 1000 screen px).
    height
        Smallest height of the viewer, CSS pixels (it grows to the window).
    on_edit, on_level, on_window, on_crop
        Called (as Streamlit widget callbacks) when the points, the active
        level, the window or the wanted region changed in the browser.
    announce_drawn, on_drawn
        When ``announce_drawn``, the editor reports the first frame that shows
        the film's codes (its ``drawn`` state, the film's identity) and
        ``on_drawn`` is called: work that would compete with loading the film
        can wait for it.
    """
    coordinates = f"vheight-editor-{key}"
    data = {
        "film_id": film_id,
        "image": _value_payload(values, coordinates),
        "mapping": {
            "scale": mapping.scale,
            "offset": mapping.offset,
            "range": list(value_range),
        },
        "window": dict(window),
        "crop": None if crop is None else _value_payload(crop, coordinates + "-crop"),
        "preview": (
            None
            if preview is None
            else {
                "url": display_image_url(preview, coordinates=coordinates + "-preview"),
                "key": list(preview_window or []),
            }
        ),
        "rows": int(values.y1 - values.y0),
        "columns": int(values.x1 - values.x0),
        "levels": list(LEVELS),
        "point_names": list(POINT_NAMES),
        "vertebrae": {
            level: {name: [float(xy[0]), float(xy[1])] for name, xy in points.items()}
            for level, points in vertebrae.items()
        },
        "grades": {level: (None if g is None else int(g)) for level, g in grades.items()},
        "heights": {level: dict(h) for level, h in (heights or {}).items()},
        "badge": dict(badge) if badge else None,
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
        "announce_drawn": bool(announce_drawn),
    }
    return _component()(
        key=key,
        data=data,
        on_edit_change=on_edit or _noop,
        on_active_level_change=on_level or _noop,
        on_selected_change=_noop,
        on_window_change=on_window or _noop,
        on_crop_change=on_crop or _noop,
        on_drawn_change=on_drawn or _noop,
    )


def _value_payload(image: ValueImage, coordinates: str) -> dict[str, Any]:
    return {
        "url": media_url(image.data, image.mimetype, coordinates=coordinates),
        "width": image.width,
        "height": image.height,
        "x0": image.x0,
        "y0": image.y0,
        "x1": image.x1,
        "y1": image.y1,
    }


def _noop() -> None:
    """Default widget callback: the value is read from session state."""
