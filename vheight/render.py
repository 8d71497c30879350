"""Landmarks, endplates and heights drawn over a film (array in, array out).

Coordinates
-----------
Landmarks are ``(x, y)`` pixels of the full-resolution film: ``x`` the column,
``y`` the row, the centre of the top-left pixel at ``(0, 0)``.  When the
output is resized by factors ``sx``, ``sy`` a point is drawn at
``((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5)``, so pixel centres stay
aligned with the resampled image.

What is drawn
-------------
For every annotated vertebra: its six landmarks, the superior and inferior
endplates (corner - middle - corner), the anterior, middle and posterior
height lines with their values and unit, and the level label with the
morphometric grade.  The vertebra's colour says its grade: 0 green,
1 yellow, 2 orange, 3 red; an incomplete vertebra (fewer than six points) is
grey.  Treated (augmented) levels are outlined in cyan and labelled
"treated".  A small legend in the corner explains the colours.

Everything is drawn with OpenCV, anti-aliased (``cv2.LINE_AA``) with
sub-pixel precision, at a line width and font size proportional to the
output size, so the picture reads the same in the app and in a printed
report.  The function never modifies its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from vheight.errors import AnnotationError

__all__ = ["GRADE_COLORS", "INCOMPLETE_COLOR", "TREATED_COLOR", "render_annotated", "to_rgb8"]

#: Colour (RGB) of a vertebra by its morphometric grade.
GRADE_COLORS: Mapping[int, tuple[int, int, int]] = {
    0: (46, 204, 64),
    1: (255, 220, 0),
    2: (255, 133, 27),
    3: (255, 50, 50),
}
#: Colour (RGB) of an incomplete vertebra, or one without a grade.
INCOMPLETE_COLOR: tuple[int, int, int] = (175, 175, 175)
#: Colour (RGB) of the outline marking a treated (augmented) level.
TREATED_COLOR: tuple[int, int, int] = (0, 215, 255)

_GRADE_NAMES = {0: "normal", 1: "mild", 2: "moderate", 3: "severe"}
_HEIGHTS = (
    ("anterior", "superior_anterior", "inferior_anterior", "Ha"),
    ("middle", "superior_middle", "inferior_middle", "Hm"),
    ("posterior", "superior_posterior", "inferior_posterior", "Hp"),
)
_LABEL_SCALE = 0.95
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Drawing coordinates are clamped to this many display pixels from the origin
# (OpenCV draws with 32-bit fixed-point coordinates); landmarks farther than
# OUTSIDE_TOLERANCE of the film's size beyond its edges are refused first.
_FAR_PX = float(1 << 24)

#: How far beyond the film's edges a landmark may lie, as a fraction of its size.
OUTSIDE_TOLERANCE = 0.10


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Grey pixels in [0, 1] (or uint8) as a new ``uint8`` RGB array ``(rows, columns, 3)``."""
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[2] == 3:
        grey_or_rgb = array
    elif array.ndim == 2:
        grey_or_rgb = array
    else:
        raise ValueError(
            f"expected a 2-D grey image or (rows, columns, 3) RGB, found shape {array.shape}"
        )
    if grey_or_rgb.dtype != np.uint8:
        grey_or_rgb = np.clip(np.nan_to_num(grey_or_rgb.astype(np.float32), nan=0.0), 0.0, 1.0)
        grey_or_rgb = np.rint(grey_or_rgb * 255.0).astype(np.uint8)
    if grey_or_rgb.ndim == 2:
        return np.repeat(grey_or_rgb[:, :, None], 3, axis=2)
    return grey_or_rgb.copy()


def _check_landmarks_on_film(annotation: Any, rows: int, cols: int, name: str | None) -> None:
    """Refuse landmarks that are not finite or lie far outside the ``cols`` x ``rows`` film.

    A point may lie up to :data:`OUTSIDE_TOLERANCE` of the film's size beyond
    an edge (a vertebra cut by the edge of the film); farther, the annotation
    was not drawn on this film.
    """
    margin_x, margin_y = OUTSIDE_TOLERANCE * cols, OUTSIDE_TOLERANCE * rows
    for level, points in annotation.vertebrae.items():
        for point, xy in points.items():
            x, y = float(xy[0]), float(xy[1])
            inside = (
                math.isfinite(x)
                and math.isfinite(y)
                and -margin_x - 0.5 <= x <= cols - 0.5 + margin_x
                and -margin_y - 0.5 <= y <= rows - 0.5 + margin_y
            )
            if not inside:
                film = f"{name}: " if name else ""
                raise AnnotationError(
                    f"{film}landmark {level} {point} at ({x:.6g}, {y:.6g}) px lies outside the "
                    f"{cols} x {rows} px film (more than {OUTSIDE_TOLERANCE:.0%} of its size "
                    "beyond an edge): was the annotation drawn on this film?"
                )


def _film_pixels(film: Any) -> np.ndarray:
    """The film's 8-bit display image (or the grey array given)."""
    pixels = getattr(film, "display", None)
    if pixels is None:
        pixels = getattr(film, "pixels", film)
    array = np.asarray(pixels)
    if array.ndim not in (2, 3) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"the film's pixels must be a 2-D array, found shape {array.shape}")
    return array


def _records_by_level(measurement: Any) -> dict[str, Mapping[str, Any]]:
    if measurement is None:
        return {}
    return {str(rec["level"]): rec for rec in measurement.records()}


def _measure(film: Any, annotation: Any) -> Any:
    """Measure ``annotation`` with the film's calibration (None when it cannot be measured)."""
    from vheight.morphometry import measure

    calibration = getattr(film, "calibration", None)
    return measure(annotation, calibration)


def _color_for(record: Mapping[str, Any] | None, complete: bool) -> tuple[int, int, int]:
    if record is None or not complete or not record.get("complete", False):
        return INCOMPLETE_COLOR
    grade = record.get("grade")
    if grade is None:
        return INCOMPLETE_COLOR
    return GRADE_COLORS.get(int(grade), INCOMPLETE_COLOR)


class _Canvas:
    """An RGB uint8 image with drawing helpers in film coordinates."""

    def __init__(
        self, image: np.ndarray, scale_xy: tuple[float, float], *, line_scale: float = 1.0
    ) -> None:
        self.image = image
        self.scale_xy = scale_xy
        size = max(image.shape[0], image.shape[1])
        # Line width and text size grow with the output size; floors keep
        # them visible on thumbnails.
        self.unit = max(size / 1000.0 * line_scale, 0.35)
        self.line = max(1, int(round(1.6 * self.unit)))
        self.thin = max(1, int(round(1.0 * self.unit)))
        self.font_scale = max(0.32, 0.5 * self.unit)
        self.font_thick = max(1, int(round(1.1 * self.unit)))
        self.radius = max(2.0, 3.2 * self.unit)

    def to_display(self, xy: Sequence[float]) -> tuple[float, float]:
        sx, sy = self.scale_xy
        return ((float(xy[0]) + 0.5) * sx - 0.5, (float(xy[1]) + 0.5) * sy - 0.5)

    @staticmethod
    def _fixed(xy: Sequence[float]) -> tuple[int, int]:
        """OpenCV's fixed-point coordinates, kept within its 32-bit range."""
        f = 1 << _SHIFT
        return (
            int(round(min(max(xy[0], -_FAR_PX), _FAR_PX) * f)),
            int(round(min(max(xy[1], -_FAR_PX), _FAR_PX) * f)),
        )

    def polyline(
        self,
        points: Sequence[Sequence[float]],
        color: tuple[int, int, int],
        width: int,
        *,
        closed: bool = False,
    ) -> None:
        pts = np.array([self._fixed(self.to_display(p)) for p in points], dtype=np.int32)
        cv2.polylines(
            self.image, [pts.reshape(-1, 1, 2)], closed, color, width, cv2.LINE_AA, _SHIFT
        )

    def segment(
        self, p: Sequence[float], q: Sequence[float], color: tuple[int, int, int], width: int
    ) -> None:
        cv2.line(
            self.image,
            self._fixed(self.to_display(p)),
            self._fixed(self.to_display(q)),
            color,
            width,
            cv2.LINE_AA,
            _SHIFT,
        )

    def dot(self, p: Sequence[float], color: tuple[int, int, int]) -> None:
        centre = self._fixed(self.to_display(p))
        r = int(round(self.radius * (1 << _SHIFT)))
        cv2.circle(self.image, centre, r + (1 << _SHIFT), (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.image, centre, r, color, -1, cv2.LINE_AA, _SHIFT)

    def _layout(
        self, lines: Sequence[tuple[str, tuple[int, int, int]]], scale: float
    ) -> tuple[float, int, list[Any], int, int, int, int, int]:
        font_scale = self.font_scale * scale
        thick = max(1, int(round(self.font_thick * scale)))
        sizes = [cv2.getTextSize(t, _FONT, font_scale, thick) for t, _ in lines]
        pad = max(2, int(round(3 * self.unit * scale)))
        gap = max(2, int(round(4 * self.unit * scale)))
        width = max(w for (w, _h), _b in sizes) + 2 * pad
        line_h = max(h + b for (_w, h), b in sizes)
        height = len(lines) * line_h + (len(lines) - 1) * gap + 2 * pad
        return font_scale, thick, sizes, pad, gap, width, line_h, height

    def text_width(self, lines: Sequence[tuple[str, tuple[int, int, int]]], scale: float) -> int:
        """Width in pixels of the box :meth:`text` draws for ``lines``."""
        return self._layout(lines, scale)[5]

    def text(
        self,
        display_xy: tuple[float, float],
        lines: Sequence[tuple[str, tuple[int, int, int]]],
        *,
        align: str = "left",
        valign: str = "middle",
        scale: float = 1.0,
    ) -> None:
        """Text lines in a dark translucent box anchored at a display point.

        ``align`` is where the anchor sits horizontally on the box (``left``,
        ``center``, ``right``), ``valign`` vertically (``top``, ``middle``).
        """
        font_scale, thick, sizes, pad, gap, width, line_h, height = self._layout(lines, scale)
        x0 = display_xy[0] - {"left": 0.0, "center": width / 2, "right": width}[align]
        y0 = display_xy[1] - {"top": 0.0, "middle": height / 2}[valign]
        rows, cols = self.image.shape[:2]
        x0 = int(round(min(max(x0, 0), max(cols - width, 0))))
        y0 = int(round(min(max(y0, 0), max(rows - height, 0))))
        x1, y1 = min(x0 + width, cols), min(y0 + height, rows)
        if x1 > x0 and y1 > y0:
            box = self.image[y0:y1, x0:x1]
            box[...] = (box.astype(np.float32) * 0.35).astype(np.uint8)
        y = y0 + pad
        for (t, color), ((_w, h), _b) in zip(lines, sizes, strict=True):
            y_base = y + h
            cv2.putText(
                self.image, t, (x0 + pad, y_base), _FONT, font_scale, color, thick, cv2.LINE_AA
            )
            y += line_h + gap


def _unit_vector(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 0 else np.array([1.0, 0.0])


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "-"
    return f"{number + 0.0 if round(number, digits) else 0.0:.{digits}f}"


def _draw_vertebra(
    canvas: _Canvas,
    level: str,
    points: Mapping[str, Sequence[float]],
    record: Mapping[str, Any] | None,
    treated: bool,
) -> None:
    complete = len(points) == 6
    color = _color_for(record, complete)
    pts = {name: np.asarray(xy, dtype=float) for name, xy in points.items()}
    # The level's measurement, when it was measured (complete in both).
    measured = record if complete and record is not None and record.get("complete") else None
    unit = (record or {}).get("unit") or "px"
    _draw_lines(canvas, pts, color, halo=treated and complete)
    direction = _anterior_direction(pts)
    if measured is not None:
        _draw_heights(canvas, pts, measured, unit, direction)
    lines = _level_caption(level, pts, measured, color)
    if treated:
        lines.append(("treated", TREATED_COLOR))
    _draw_caption(canvas, pts, lines, unit, direction)


def _draw_lines(
    canvas: _Canvas,
    pts: Mapping[str, np.ndarray],
    color: tuple[int, int, int],
    *,
    halo: bool,
) -> None:
    """Endplates (whatever part of each is annotated), height lines and points.

    ``halo`` adds the treated level's cyan outline around the body, drawn under
    the height lines.
    """
    for side in ("superior", "inferior"):
        chain = [
            pts[f"{side}_{where}"]
            for where in ("anterior", "middle", "posterior")
            if f"{side}_{where}" in pts
        ]
        if len(chain) >= 2:
            canvas.polyline(chain, color, canvas.line)
    if halo:
        outline = [
            pts[name]
            for name in (
                "superior_anterior",
                "superior_middle",
                "superior_posterior",
                "inferior_posterior",
                "inferior_middle",
                "inferior_anterior",
            )
        ]
        centre = np.mean(outline, axis=0)
        grow = [centre + (p - centre) * 1.12 for p in outline]
        canvas.polyline(grow, TREATED_COLOR, canvas.line, closed=True)
    for _name, top, bottom, _abbr in _HEIGHTS:
        if top in pts and bottom in pts:
            canvas.segment(pts[top], pts[bottom], color, canvas.thin)
    for xy in pts.values():
        canvas.dot(xy, color)


def _anterior_direction(pts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Unit vector from the posterior wall to the anterior wall on the film.

    The patient may face either way; without points on both walls the film's
    left is taken as anterior.
    """
    anterior = [pts[n] for n in ("superior_anterior", "inferior_anterior") if n in pts]
    posterior = [pts[n] for n in ("superior_posterior", "inferior_posterior") if n in pts]
    if anterior and posterior:
        return _unit_vector(np.mean(anterior, axis=0) - np.mean(posterior, axis=0))
    return np.array([-1.0, 0.0])


def _draw_heights(
    canvas: _Canvas,
    pts: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    unit: str,
    direction: np.ndarray,
) -> None:
    """Ha, Hm and Hp: the middle one on its line, the others outside the walls."""
    offset = 6 * canvas.unit
    for name, top, bottom, abbr in _HEIGHTS:
        value = record.get(f"{name}_height")
        mid = canvas.to_display((pts[top] + pts[bottom]) / 2)
        text = [(f"{abbr} {_fmt(value)} {unit}", (255, 255, 255))]
        if name == "middle":
            canvas.text(mid, text, align="center", scale=0.85)
        else:
            outward = direction if name == "anterior" else -direction
            anchor = (mid[0] + outward[0] * offset, mid[1] + outward[1] * offset)
            align = "left" if outward[0] >= 0 else "right"
            canvas.text(anchor, text, align=align, scale=0.85)


def _level_caption(
    level: str,
    pts: Mapping[str, np.ndarray],
    record: Mapping[str, Any] | None,
    color: tuple[int, int, int],
) -> list[tuple[str, tuple[int, int, int]]]:
    """The level's name and grade (or why it has none), as coloured lines.

    ``record`` is the level's measurement when it was measured, else None.
    """
    if record is not None and record.get("grade") is not None:
        grade = int(record["grade"])
        label = f"{level}  grade {grade}"
        loss = record.get("max_loss_pct")
        detail = _GRADE_NAMES.get(grade, "") if loss is None else f"loss {_fmt(loss)} %"
    elif len(pts) == 6:
        label, detail = level, "not measured"
    else:
        label, detail = level, f"incomplete {len(pts)}/6"
    return [(label, color), (detail, (235, 235, 235))]


def _draw_caption(
    canvas: _Canvas,
    pts: Mapping[str, np.ndarray],
    lines: list[tuple[str, tuple[int, int, int]]],
    unit: str,
    direction: np.ndarray,
) -> None:
    """The caption beside the anterior height value, at the body's mid-height.

    On the posterior side when the film edge leaves no room anteriorly (the
    clearance is the anterior value's width at the size it is drawn).
    """
    xs = [canvas.to_display(p)[0] for p in pts.values()]
    value_w = canvas.text_width([(f"Ha 00.0 {unit}", (0, 0, 0))], 0.85)
    clearance = 6 * canvas.unit + value_w + 8 * canvas.unit
    label_w = canvas.text_width(lines, _LABEL_SCALE)
    cols = canvas.image.shape[1]
    left_x, right_x = min(xs) - clearance, max(xs) + clearance
    room_left = left_x - label_w >= 0
    room_right = right_x + label_w <= cols
    anterior_left = direction[0] < 0
    more_left = left_x >= cols - right_x
    if (
        (anterior_left and room_left)
        or (not anterior_left and not room_right and room_left)
        or (not room_left and not room_right and more_left)
    ):
        anchor_x, align = left_x, "right"
    else:
        anchor_x, align = right_x, "left"
    anchor_y = canvas.to_display(np.mean(list(pts.values()), axis=0))[1]
    canvas.text((anchor_x, anchor_y), lines, align=align, scale=_LABEL_SCALE)


def _draw_legend(canvas: _Canvas, unit_label: str | None) -> None:
    lines = [("Grade (Genant, quantitative)", (255, 255, 255))]
    for grade, color in GRADE_COLORS.items():
        lines.append((f"{grade} {_GRADE_NAMES[grade]}", color))
    lines.append(("incomplete", INCOMPLETE_COLOR))
    lines.append(("treated level", TREATED_COLOR))
    if unit_label:
        lines.append((f"spacing: {unit_label}", (235, 235, 235)))
    margin = 8 * canvas.unit
    canvas.text((margin, margin), lines, align="left", valign="top", scale=0.8)


def render_annotated(
    film: Any,
    annotation: Any,
    measurement: Any = None,
    *,
    max_size: int | None = None,
    scale: float | None = None,
    line_scale: float = 1.0,
    legend: bool = True,
) -> np.ndarray:
    """The film with the annotation's landmarks and heights drawn over it.

    Parameters
    ----------
    film
        A :class:`vheight.film.Film` (its display-ready ``pixels``, float32 in
        [0, 1], and its ``calibration`` are used), or a 2-D grey array in
        [0, 1] / ``uint8`` of the full-resolution film.
    annotation
        The :class:`vheight.annotation.Annotation` of that film; points are
        full-resolution ``(x, y)`` pixels (module docstring).
    measurement
        Its :class:`vheight.morphometry.Measurement`, for the heights and
        grades printed.  When None, the annotation is measured here with the
        film's calibration (or uncalibrated when ``film`` is an array).
    max_size
        Largest output side in pixels; the film is downscaled (area
        averaging) to fit, never enlarged.  None keeps full resolution.
    scale
        Output size as a factor of the film's (``> 1`` enlarges, bicubic);
        overrides ``max_size``.  Used by the report to print a small film
        region large enough to read.
    line_scale
        Factor on line widths, dot sizes and text sizes (which otherwise grow
        with the output size: 1/1000 of its longest side per unit).
    legend
        Draw the colour legend in the top-left corner.

    Returns
    -------
    numpy.ndarray
        A new ``uint8`` RGB array ``(rows, columns, 3)``.
    """
    pixels = _film_pixels(film)
    rows, cols = pixels.shape[:2]
    if annotation is not None:
        _check_landmarks_on_film(annotation, rows, cols, getattr(film, "name", None))
    if scale is not None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= 8):
            raise ValueError(f"scale must be a number in (0, 8], found {scale!r}")
        factor = float(scale)
    else:
        factor = 1.0
        if max_size is not None:
            if int(max_size) < 16:
                raise ValueError(f"max_size must be at least 16 pixels, found {max_size!r}")
            factor = min(1.0, float(max_size) / max(rows, cols))
    image = to_rgb8(pixels)
    scale_xy = (1.0, 1.0)
    if factor != 1.0:
        size = (max(1, int(round(cols * factor))), max(1, int(round(rows * factor))))
        interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_CUBIC
        image = cv2.resize(image, size, interpolation=interpolation)
        # Exact factors per axis after rounding the output size.
        scale_xy = (size[0] / cols, size[1] / rows)
    image = np.ascontiguousarray(image)
    if not (math.isfinite(line_scale) and 0.1 <= line_scale <= 10):
        raise ValueError(f"line_scale must be in [0.1, 10], found {line_scale!r}")
    canvas = _Canvas(image, scale_xy, line_scale=float(line_scale))

    if measurement is None and annotation is not None and len(annotation.vertebrae) > 0:
        measurement = _measure(film, annotation)
    records = _records_by_level(measurement)
    treated = set(getattr(annotation, "treated_levels", ()) or ())
    if annotation is not None:
        for level, points in annotation.vertebrae.items():
            if len(points) == 0:
                continue
            _draw_vertebra(
                canvas, str(level), points, records.get(str(level)), str(level) in treated
            )
    if legend:
        unit_label = None
        if measurement is not None:
            unit_label = str(getattr(measurement, "spacing_label", "") or "") or None
        _draw_legend(canvas, unit_label)
    return canvas.image
