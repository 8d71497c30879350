"""Landmark refinement: snapping endplate landmarks to the cortical edge, and
proposing the landmarks of a neighbouring vertebra.

Coordinates
-----------
A landmark is ``(x, y)`` in pixels of the full-resolution image: ``x`` is the
column (to the right), ``y`` the row (down), and the centre of the top-left
pixel is ``(0, 0)``.  Internally every direction, distance and search radius
is worked out in millimetre space (``x * col_spacing_mm``, ``y *
row_spacing_mm``), so films with non-square pixels are searched over the same
physical distance in every direction.  On an uncalibrated film a nominal
spacing is estimated from the size of the annotated vertebrae (see
:func:`search_spacing`) and millimetre figures are not reported.

The edge
--------
The image is expected bright where bone is dense (``Film.pixels``).  The
outer edge of the cortex is the transition from bright cortical bone to the
darker disc or soft tissue outside the body: along a direction pointing away
from the vertebral body, the intensity falls.  The image is smoothed with a
Gaussian of ``0.5 mm`` (per axis in pixels, so anisotropic spacing is
respected), its gradient is sampled bilinearly along profiles, and the
strongest fall within the search radius is located to sub-sample precision
with a parabola through the three samples around it.

An edge is accepted only when the peak fall is well above the noise: above
``EDGE_NOISE_FACTOR`` times the robust (median absolute deviation) standard
deviation of the gradient in the neighbourhood, and above a small fraction of
the film's dynamic range.  When a second, distinct fall nearly as strong lies
within the radius (a double contour), the point is ambiguous.  In both cases
the point is left where it is and flagged.

Per point
---------
- Corners (``*_anterior``, ``*_posterior``): the corner of the body outline,
  where the endplate edge meets the wall edge.  The endplate edge is found
  on profiles along the endplate normal, taken 1 to 6 mm inside the corner
  along the endplate, and a line is fitted to it robustly; a parabola
  replaces the line when it bends into the body significantly (a biconcave
  or irregular endplate bends within those 6 mm, and a line through the
  bend passes outside the corner).  The wall edge is then searched along the
  endplate direction, inside that line (within the cortex), at depths of
  0.2 to 0.8 mm: the end of the endplate cortex at each depth, and the line
  through those ends followed to the endplate edge (a wall that leans or is
  waisted next to the corner ends elsewhere at 0.5 mm depth than at the
  edge).  When that end is not clear, the wall's own edge is found on
  profiles across the wall 1 to 6 mm below (above) the corner and the corner
  is the intersection of the two lines; when neither is clear, the corner
  only moves across the endplate (``weak_wall_edge``).  This is repeated
  once from the new corner when it moved more than 0.5 mm.
- Corner check: once the corners of an endplate are found, each is checked
  along the chord of the refined corners (steadier than the chord of the
  corners as placed): moved across the endplate onto the edge 0.75 to 1.25
  mm inside it (the endplate right next to the corner, which the 1 to 6 mm
  line can miss by a fraction of a millimetre), along the endplate onto the
  end of the cortex, and across once more; each step is a correction of at
  most 0.5 mm, never a new search.
- Middle points (``*_middle``): on the line through the midpoint of the
  (refined) corners of their endplate, parallel to the vertebra's axis (the
  mean direction of its anterior and posterior walls, corner to corner), and
  snapped to the edge along that line on five profiles within 0.5 mm of it,
  so a biconcave endplate is followed.  The middle height is thereby
  measured parallel to the anterior and posterior heights, the point midway
  between the walls.  (The point of the endplate equidistant from its
  corners differs from it on a wedged vertebra with a concave endplate by
  the concavity times the tangent of the endplate's tilt to the walls: 0.2
  mm for a 3.5 mm concavity tilted by 3.5 degrees.)  Without all four
  corners, or when the walls lean more than 20 degrees from the endplate
  normal, the normal is used.  When a corner of the endplate is not found,
  the middle point keeps its place along the endplate.
- Second chance: a point whose own search window holds no edge (placed
  further than the radius from it) is searched again from where the
  vertebra's refined landmarks put it; it is then reported ``reseeded`` and
  may have moved up to twice the radius.
- A double edge across an endplate (two falls of similar strength) is
  settled by the darker outside: the outer edge of an endplate faces the
  disc.  Otherwise the point is ambiguous and left alone.

Stability
---------
Where a point ends does not depend on where it started within the radius: a
corner is searched again from the corner found, and a middle point is placed
from the corners, not from its own start.  So a point already on the edge is
moved only by the localisation error of the edge (on the phantom films of
``benchmarks/bench_refine.py``, points starting within 0.2 mm of the truth
all end within 0.2 mm).  A broad fall (a dense ramp of cement or sclerosis
under the endplate) is located on the fine scale's own maximum, even at the
border of its window, so it does not flip between the coarse and the fine
peak with the start.

The endplate normal of a point is perpendicular to the line through the
corners of its endplate and points away from the centre of the vertebra's
landmarks (superior endplate: towards the head; inferior: towards the feet).
"""

from __future__ import annotations

import cmath
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from vheight.annotation import LEVELS, POINT_NAMES, Annotation, level_index
from vheight.calibration import Calibration
from vheight.errors import AnnotationError, ImageReadError

__all__ = [
    "DEFAULT_RADIUS_MM",
    "SMOOTHING_MM",
    "EDGE_NOISE_FACTOR",
    "RefineFlag",
    "PointMove",
    "RefineResult",
    "refine_annotation",
    "refine_point",
    "propose_level",
    "propose_level_result",
    "predict_level",
    "search_spacing",
]

DEFAULT_RADIUS_MM = 3.0
"""Default search radius around each landmark, millimetres."""

SMOOTHING_MM = 0.5
"""Standard deviation of the Gaussian smoothing before differentiation, mm."""

FINE_SMOOTHING_MM = 0.25
"""Smoothing of the final localisation, within ``SMOOTHING_MM`` of the edge found, mm.

A thin bright cortex pulls the peak of a heavily smoothed gradient outwards
(its inner, rising edge overlaps); the edge found at ``SMOOTHING_MM`` is
therefore located again on a less smoothed gradient nearby."""

_FINE_MIN_PX = 0.8

BACKGROUND_MM = 2.0
"""Scale of the slow intensity trend removed before differentiation, mm."""

EDGE_NOISE_FACTOR = 3.0
"""An edge must be this many noise standard deviations of the gradient strong."""

MIN_CONTRAST_FRACTION = 0.02
"""An edge must be a step of at least this fraction of the film's dynamic range."""

AMBIGUITY_RATIO = 0.7
"""A second distinct edge at least this fraction as strong makes a point ambiguous."""

AMBIGUITY_SEPARATION_MM = 1.0
"""Two edges closer than this (mm) along a profile are the same edge."""

NOMINAL_SPACING_MM = 0.15
"""Spacing assumed for an uncalibrated film when no vertebra gives a scale, mm/px."""

# Typical adult vertebral endplate depth (anterior-posterior, mm), used only to
# guess a nominal pixel spacing on uncalibrated films: a search radius in
# millimetres needs a scale.  Rounded values; the guess is good to about 25 %.
_TYPICAL_ENDPLATE_DEPTH_MM: dict[str, float] = {
    "T1": 16.0, "T2": 17.0, "T3": 18.0, "T4": 19.0, "T5": 20.0, "T6": 22.0,
    "T7": 24.0, "T8": 25.0, "T9": 27.0, "T10": 28.0, "T11": 30.0, "T12": 31.0,
    "L1": 33.0, "L2": 34.0, "L3": 35.0, "L4": 35.0, "L5": 35.0,
}  # fmt: skip

# Typical disc height as a fraction of the vertebral body height, used to
# propose a level next to a single annotated one.
_DISC_TO_BODY_RATIO = 0.3
# A proposed endplate is never aligned closer than this to its neighbour's.
_MIN_DISC_MM = 2.0

_ENDPLATES = ("superior", "inferior")
_SIDES = ("anterior", "posterior")
_CORNERS = tuple(f"{e}_{s}" for e in _ENDPLATES for s in _SIDES)
_MIDDLES = ("superior_middle", "inferior_middle")

# Profile layout for corners: offsets inside the corner along the endplate
# (or the wall) where the edge is sampled, mm.
_STRIP_START_MM = 1.0
_STRIP_END_MM = 6.0
_STRIP_COUNT = 11
_MIDDLE_HALF_WIDTH_MM = 0.5
_MIDDLE_COUNT = 5
_MIN_VALID_PROFILES = 3
# Depths inside the endplate edge (mm) where the end of the cortex is sought
# when the wall next to a corner shows no edge.
_BAND_DEPTHS_MM = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_BAND_AVERAGE_DEPTH_MM = 0.5
_MAX_SLOPE = 0.6
# A parabola replaces the line through a strip's edges when its curvature is
# this many standard errors from zero (and at least this many edges agree).
_CURVATURE_SIGNIFICANCE = 4.0
_MIN_CURVE_PROFILES = 6
# The walls may lean at most this much from the endplate normal to serve as
# the direction a middle point is placed along, degrees.
_MAX_AXIS_TILT_DEG = 20.0
# Offsets inside a corner along the endplate where its final position across
# the endplate is checked, mm, and the largest correction made there, mm.
_NEAR_CORNER_MM = (0.75, 1.0, 1.25)
_NEAR_CORNER_MAX_MM = 0.5
# A corner search is repeated from the corner found when it moved further, mm.
_REPEAT_MM = 0.5


class RefineFlag(enum.StrEnum):
    """Why a landmark was not (fully) moved."""

    WEAK_EDGE = "weak_edge"
    """No edge above the noise threshold within the radius: point left alone."""
    AMBIGUOUS_EDGE = "ambiguous_edge"
    """Two distinct edges of similar strength (double contour): point left alone."""
    WEAK_WALL_EDGE = "weak_wall_edge"
    """Corner: endplate edge found, wall edge not; moved along the endplate normal only."""
    OUTSIDE_IMAGE = "outside_image"
    """The search region leaves the image: point left alone."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class PointMove:
    """How one landmark was refined.

    Attributes
    ----------
    level, point
        The landmark.
    x_before, y_before, x, y
        Position before and after refinement, pixels (module convention).
    dx_px, dy_px, distance_px
        The move, pixels.
    distance_mm
        The move in millimetres; None on an uncalibrated film.
    moved
        True when the point was moved.
    flag
        None when the edge was found, else a :class:`RefineFlag` value.
    edge_score
        Strength of the edge found divided by the acceptance threshold
        (>= 1 accepted); None when no profile could be sampled.
    reseeded
        True when no edge lay within the radius of the point as placed and
        it was found from where the vertebra's other refined landmarks put
        it instead (the move may then reach twice the radius).
    """

    level: str
    point: str
    x_before: float
    y_before: float
    x: float
    y: float
    distance_mm: float | None
    moved: bool
    flag: str | None = None
    edge_score: float | None = None
    reseeded: bool = False

    @property
    def dx_px(self) -> float:
        return self.x - self.x_before

    @property
    def dy_px(self) -> float:
        return self.y - self.y_before

    @property
    def distance_px(self) -> float:
        return math.hypot(self.dx_px, self.dy_px)

    @property
    def xy(self) -> tuple[float, float]:
        """The refined position ``(x, y)``, pixels."""
        return (self.x, self.y)

    def to_record(self) -> dict[str, Any]:
        """One output record (JSON keys = CSV columns)."""
        return {
            "level": self.level,
            "point": self.point,
            "x_before": self.x_before,
            "y_before": self.y_before,
            "x": self.x,
            "y": self.y,
            "dx_px": self.dx_px,
            "dy_px": self.dy_px,
            "distance_px": self.distance_px,
            "distance_mm": self.distance_mm,
            "moved": self.moved,
            "flag": self.flag,
            "edge_score": self.edge_score,
            "reseeded": self.reseeded,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RefineResult:
    """The refined annotation and one :class:`PointMove` per landmark considered.

    Attributes
    ----------
    annotation
        A new annotation with the refined points (the input is never changed).
    moves
        One record per landmark considered, anatomical order.
    calibration
        The calibration used (the annotation's own, else the one given).
    spacing_mm
        ``(row, col)`` spacing used for the search, mm/px (nominal when
        uncalibrated).
    radius_mm
        The search radius, mm.
    warnings
        Human-readable notes (nominal spacing, image size mismatch...).
    """

    annotation: Annotation
    moves: tuple[PointMove, ...]
    calibration: Calibration
    spacing_mm: tuple[float, float]
    radius_mm: float
    warnings: tuple[str, ...] = ()

    def records(self) -> list[dict[str, Any]]:
        """One dict per move (``pandas.DataFrame(result.records())`` works)."""
        return [m.to_record() for m in self.moves]

    def move(self, level: str, point: str) -> PointMove:
        """The record of one landmark; KeyError when it was not considered."""
        for m in self.moves:
            if m.level == level and m.point == point:
                return m
        raise KeyError(f"{level} {point} was not refined")

    @property
    def moved_count(self) -> int:
        return sum(m.moved for m in self.moves)

    @property
    def flagged_count(self) -> int:
        return sum(m.flag is not None for m in self.moves)


# -- image access ----------------------------------------------------------------------


def _image_array(image: Any) -> np.ndarray:
    """A 2-D float32 array, bright = dense bone, from a Film or an array."""
    if hasattr(image, "modality_values"):
        # Window-independent values of a Film; MONOCHROME1 is inverted on
        # display, so invert here too to keep bone bright.
        array = np.asarray(image.modality_values, dtype=np.float32)
        if getattr(image, "invert", False):
            array = -array
    elif hasattr(image, "pixels"):
        array = image.pixels
    else:
        array = image
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., :3].mean(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise ImageReadError(
            f"refinement needs a 2-D grey-level image, found an array of shape {array.shape}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Image:
    """The film prepared for edge search."""

    pixels: np.ndarray
    row_mm: float
    col_mm: float
    contrast_floor: float  # smallest accepted step, intensity units

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape  # type: ignore[return-value]

    def to_mm(self, xy: Sequence[float]) -> np.ndarray:
        return np.array([xy[0] * self.col_mm, xy[1] * self.row_mm], dtype=float)

    def to_px(self, p: np.ndarray) -> tuple[float, float]:
        return (float(p[0] / self.col_mm), float(p[1] / self.row_mm))


def _prepare_image(pixels: np.ndarray, row_mm: float, col_mm: float) -> _Image:
    step = max(1, int(math.sqrt(pixels.size / 60_000)))
    sample = pixels[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        dynamic = float(hi - lo)
    else:
        dynamic = 0.0
    floor = MIN_CONTRAST_FRACTION * dynamic if dynamic > 0 else np.finfo(np.float32).tiny
    return _Image(pixels=pixels, row_mm=row_mm, col_mm=col_mm, contrast_floor=floor)


@dataclass(frozen=True, slots=True)
class _Field:
    """Smoothed gradients (intensity per mm) and intensity over a rectangular patch.

    ``layers`` is ``(rows, columns, 5)``: search-scale ``d/dx``, ``d/dy``,
    fine-scale ``d/dx``, ``d/dy`` (x, y in mm), and the smoothed intensity.
    """

    image: _Image
    row0: int
    col0: int
    layers: np.ndarray
    threshold: float  # accepted peak directional derivative, intensity per mm

    def sample(self, pts_mm: np.ndarray) -> np.ndarray:
        """Bilinear samples of every layer at ``pts_mm`` (..., 2) -> (..., 5); NaN outside."""
        flat = pts_mm.reshape(-1, 2)
        rows = flat[:, 1] / self.image.row_mm - self.row0
        cols = flat[:, 0] / self.image.col_mm - self.col0
        h, w, _ = self.layers.shape
        inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
        r0 = _clamp(np.floor(rows).astype(np.intp), 0, h - 2)
        c0 = _clamp(np.floor(cols).astype(np.intp), 0, w - 2)
        fr = (rows - r0)[:, None]
        fc = (cols - c0)[:, None]
        lay = self.layers
        values = (
            lay[r0, c0] * ((1 - fr) * (1 - fc))
            + lay[r0, c0 + 1] * ((1 - fr) * fc)
            + lay[r0 + 1, c0] * (fr * (1 - fc))
            + lay[r0 + 1, c0 + 1] * (fr * fc)
        )
        values[~inside] = np.nan
        return values.reshape(*pts_mm.shape[:-1], lay.shape[2])

    def derivative(self, pts_mm: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Directional derivative along the unit mm-space ``direction``."""
        v = self.sample(pts_mm)
        return v[..., 0] * direction[0] + v[..., 1] * direction[1]

    def falls(
        self, pts_mm: np.ndarray, direction: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Minus the directional derivative at the search and the fine scale,
        and the smoothed intensity."""
        v = self.sample(pts_mm)
        return (
            -(v[..., 0] * direction[0] + v[..., 1] * direction[1]),
            -(v[..., 2] * direction[0] + v[..., 3] * direction[1]),
            v[..., 4],
        )

    def intensity(self, pts_mm: np.ndarray) -> np.ndarray:
        return self.sample(pts_mm)[..., 4]


def _blur_wide(patch: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Gaussian blur of a wide kernel, computed on a reduced copy (fast, smooth)."""
    factor = int(max(1, min(sigma_x, sigma_y) // 3))
    h, w = patch.shape
    if factor == 1 or h < 4 * factor or w < 4 * factor:
        return cv2.GaussianBlur(
            patch, ksize=(0, 0), sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT
        )
    small = cv2.resize(patch, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small,
        ksize=(0, 0),
        sigmaX=sigma_x / factor,
        sigmaY=sigma_y / factor,
        borderType=cv2.BORDER_REFLECT,
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _make_field(image: _Image, pts_mm: np.ndarray, margin_mm: float) -> _Field | None:
    """Smooth and differentiate the patch covering ``pts_mm`` plus ``margin_mm``."""
    h, w = image.shape
    sig_r = SMOOTHING_MM / image.row_mm
    sig_c = SMOOTHING_MM / image.col_mm
    pad_r = int(math.ceil((margin_mm + 1.5 * BACKGROUND_MM) / image.row_mm)) + 2
    pad_c = int(math.ceil((margin_mm + 1.5 * BACKGROUND_MM) / image.col_mm)) + 2
    xs = pts_mm[:, 0] / image.col_mm
    ys = pts_mm[:, 1] / image.row_mm
    r0 = max(0, int(math.floor(np.min(ys))) - pad_r)
    r1 = min(h, int(math.ceil(np.max(ys))) + pad_r + 1)
    c0 = max(0, int(math.floor(np.min(xs))) - pad_c)
    c1 = min(w, int(math.ceil(np.max(xs))) + pad_c + 1)
    if r1 - r0 < 3 or c1 - c0 < 3:
        return None
    patch = image.pixels[r0:r1, c0:c1]
    if not np.all(np.isfinite(patch)):
        patch = np.nan_to_num(patch, nan=0.0, posinf=0.0, neginf=0.0)
    smooth = cv2.GaussianBlur(
        patch, ksize=(0, 0), sigmaX=sig_c, sigmaY=sig_r, borderType=cv2.BORDER_REFLECT
    )
    # Slow intensity trends (soft-tissue thickness, exposure falloff) are not
    # edges: the gradients are taken on a band-pass (difference of Gaussians).
    background = _blur_wide(patch, BACKGROUND_MM / image.col_mm, BACKGROUND_MM / image.row_mm)
    band = smooth - background
    gx = _central_difference(band, axis=1) / image.col_mm
    gy = _central_difference(band, axis=0) / image.row_mm
    fine = cv2.GaussianBlur(
        patch,
        ksize=(0, 0),
        sigmaX=max(FINE_SMOOTHING_MM / image.col_mm, _FINE_MIN_PX),
        sigmaY=max(FINE_SMOOTHING_MM / image.row_mm, _FINE_MIN_PX),
        borderType=cv2.BORDER_REFLECT,
    )
    fine_band = fine - background
    fine_gx = _central_difference(fine_band, axis=1) / image.col_mm
    fine_gy = _central_difference(fine_band, axis=0) / image.row_mm
    # Robust noise of one gradient component (MAD), from a subsample.
    step = max(1, int(math.sqrt(gx.size / 10_000)))
    comps = np.concatenate([gx[::step, ::step].ravel(), gy[::step, ::step].ravel()])
    noise = 1.4826 * float(np.median(np.abs(comps - np.median(comps))))
    # A step of height C blurred by the smoothing peaks at C / (sqrt(2 pi) sigma).
    floor = image.contrast_floor / (math.sqrt(2 * math.pi) * SMOOTHING_MM)
    threshold = max(EDGE_NOISE_FACTOR * noise, floor)
    layers = np.stack([gx, gy, fine_gx, fine_gy, smooth], axis=-1)
    return _Field(image=image, row0=r0, col0=c0, layers=layers, threshold=threshold)


def _central_difference(array: np.ndarray, *, axis: int) -> np.ndarray:
    """``(f[i+1] - f[i-1]) / 2`` along ``axis`` (rows 0, columns 1), edges reflected."""
    kernel = np.array([[-0.5, 0.0, 0.5]], np.float32)
    return cv2.filter2D(
        array, cv2.CV_32F, kernel if axis == 1 else kernel.T, borderType=cv2.BORDER_REFLECT
    )


# -- one-dimensional edge search ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edge:
    offset: float | None  # mm along the profile direction; None when not accepted
    score: float | None  # peak / threshold
    flag: RefineFlag | None


def _clamp(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``np.clip`` for the small arrays of this module, without its overhead."""
    return np.minimum(np.maximum(a, lo), hi)


def _parabola(values: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Sub-sample shift (in samples) of the peaks at ``i`` (one per row)."""
    rows = np.arange(values.shape[0])
    a, b, c = values[rows, i - 1], values[rows, i], values[rows, i + 1]
    denom = a - 2 * b + c
    curved = denom < 0
    shift = np.zeros(a.shape)
    shift[curved] = 0.5 * (a[curved] - c[curved]) / denom[curved]
    return _clamp(shift, -0.5, 0.5)


def _find_edges(
    fall: np.ndarray,
    t: np.ndarray,
    threshold: float,
    fine: np.ndarray | None = None,
    level: np.ndarray | None = None,
    *,
    resolve_double: bool = False,
) -> list[_Edge]:
    """Locate the strongest outward fall on each row of ``fall`` (K, S).

    ``fall`` is minus the outward derivative, sampled at offsets ``t`` (mm,
    evenly spaced).  Returns one :class:`_Edge` per row: the sub-sample offset
    of the accepted peak, or a flag.  ``fine``, the same profiles at the fine
    scale, relocates each accepted peak when given.

    ``level``, the smoothed intensity along the same profiles, checks that
    the intensity really drops across the edge (1 mm either side) by half
    the step its gradient implies: the band-pass makes weak false falls in
    front of strong rises, which have no such drop.  With ``resolve_double``
    (profiles across an endplate), it also settles a double edge: the outer
    edge of an endplate faces the disc, the darkest tissue near it, so of two
    falls of similar strength the one with the clearly darker outside (by a
    quarter of the step) is taken; otherwise the point is ambiguous.
    """
    k, n = fall.shape
    if n < 5:
        return [_Edge(None, None, RefineFlag.OUTSIDE_IMAGE)] * k
    finite = np.all(np.isfinite(fall), axis=1)
    f = np.where(np.isfinite(fall), fall, -np.inf)
    inner = f[:, 1:-1]
    is_peak = (inner > f[:, :-2]) & (inner >= f[:, 2:])
    peaks = np.full_like(f, -np.inf)
    peaks[:, 1:-1] = np.where(is_peak, inner, -np.inf)
    i = np.argmax(peaks, axis=1)
    rows = np.arange(k)
    peak = peaks[rows, i]
    has_peak = np.isfinite(peak)
    # Rivals: another peak, or a window end still rising (the edge may lie
    # beyond the radius), distinct from the best and nearly as strong.
    ends = np.full_like(f, -np.inf)
    ends[:, 0] = np.where(f[:, 0] > f[:, 1], f[:, 0], -np.inf)
    ends[:, -1] = np.where(f[:, -1] > f[:, -2], f[:, -1], -np.inf)
    rivals = np.maximum(peaks, ends)
    far = np.abs(t[None, :] - t[i][:, None]) > AMBIGUITY_SEPARATION_MM
    rival_at = np.argmax(np.where(far, rivals, -np.inf), axis=1)
    rival = np.where(far[rows, rival_at], rivals[rows, rival_at], -np.inf)
    h = float(t[1] - t[0])
    chosen = i.copy()
    beyond = max(1, int(round(1.0 / h)))
    if level is not None and resolve_double:
        # Double edges: keep the one whose outside (1 mm beyond) is darker.
        io = level[rows, _clamp(i + beyond, 0, n - 1)]
        ro = level[rows, _clamp(rival_at + beyond, 0, n - 1)]
        step = peak * math.sqrt(2 * math.pi) * SMOOTHING_MM
        double = np.isfinite(peaks[rows, rival_at]) & (rival >= AMBIGUITY_RATIO * peak)
        take_rival = double & (ro < io - 0.25 * step)
        keep_best = double & (io < ro - 0.25 * step)
        chosen = np.where(take_rival, rival_at, i)
        rival = np.where(take_rival | keep_best, -np.inf, rival)
        peak = np.where(take_rival, peaks[rows, rival_at], peak)
    safe_i = _clamp(chosen, 1, n - 2)
    offset = t[safe_i] + _parabola(np.where(np.isfinite(f), f, 0.0), safe_i) * h
    if fine is not None:
        near = np.abs(t[None, :] - t[chosen][:, None]) <= SMOOTHING_MM
        fine_f = np.where(near & np.isfinite(fine), fine, -np.inf)
        j = np.argmax(fine_f, axis=1)
        # A maximum of the fine profile itself (it may sit on the window's
        # border), not merely the largest value inside the window.
        safe_j = _clamp(j, 1, n - 2)
        whole = np.where(np.isfinite(fine), fine, -np.inf)
        inside = (
            (j == safe_j)
            & (whole[rows, safe_j] > whole[rows, safe_j - 1])
            & (whole[rows, safe_j] >= whole[rows, safe_j + 1])
        )
        fine_offset = t[safe_j] + _parabola(np.where(np.isfinite(fine), fine, 0.0), safe_j) * h
        offset = np.where(inside, fine_offset, offset)
    score = np.max(f, axis=1) / threshold
    stepless = np.zeros(k, dtype=bool)
    if level is not None:
        drop = (
            level[rows, _clamp(chosen - beyond, 0, n - 1)]
            - level[rows, _clamp(chosen + beyond, 0, n - 1)]
        )
        implied = peak * math.sqrt(2 * math.pi) * SMOOTHING_MM
        stepless = ~(drop >= 0.5 * implied)
    out = []
    for r in range(k):
        if not finite[r]:
            out.append(_Edge(None, None, RefineFlag.OUTSIDE_IMAGE))
        elif not has_peak[r]:
            out.append(_Edge(None, float(score[r]), RefineFlag.WEAK_EDGE))
        elif peak[r] < threshold or stepless[r]:
            out.append(_Edge(None, float(peak[r] / threshold), RefineFlag.WEAK_EDGE))
        elif rival[r] >= AMBIGUITY_RATIO * peak[r]:
            out.append(_Edge(None, float(peak[r] / threshold), RefineFlag.AMBIGUOUS_EDGE))
        else:
            out.append(_Edge(float(offset[r]), float(peak[r] / threshold), None))
    return out


def _find_edge(
    fall: np.ndarray,
    t: np.ndarray,
    threshold: float,
    fine: np.ndarray | None = None,
    level: np.ndarray | None = None,
    *,
    resolve_double: bool = False,
) -> _Edge:
    """:func:`_find_edges` on a single profile."""
    return _find_edges(
        fall[None, :],
        t,
        threshold,
        None if fine is None else fine[None, :],
        None if level is None else level[None, :],
        resolve_double=resolve_double,
    )[0]


def _profile_offsets(image: _Image, radius_mm: float) -> np.ndarray:
    step = 0.5 * min(image.row_mm, image.col_mm)
    n = max(3, int(math.ceil(radius_mm / step)))
    return np.linspace(-radius_mm, radius_mm, 2 * n + 1)


def _edges_on_strip(
    fld: _Field, bases: np.ndarray, normal: np.ndarray, t: np.ndarray, *, endplate: bool
) -> list[_Edge]:
    """One edge search per base point along ``normal`` (outward).

    ``endplate``: the profiles cross an endplate (towards the disc), so a
    double edge is settled by the darker outside (:func:`_find_edges`).
    """
    pts = bases[:, None, :] + t[None, :, None] * normal[None, None, :]
    fall, fine, level = fld.falls(pts, normal)
    return _find_edges(fall, t, fld.threshold, fine, level, resolve_double=endplate)


def _edge_on_average(
    fld: _Field, bases: np.ndarray, normal: np.ndarray, t: np.ndarray, *, endplate: bool
) -> _Edge:
    """One edge search on the profiles through ``bases`` averaged together."""
    pts = bases[:, None, :] + t[None, :, None] * normal[None, None, :]
    fall, fine, level = fld.falls(pts, normal)
    if not np.all(np.isfinite(fall)):
        return _Edge(None, None, RefineFlag.OUTSIDE_IMAGE)
    return _find_edge(
        fall.mean(axis=0),
        t,
        fld.threshold,
        fine.mean(axis=0),
        level.mean(axis=0),
        resolve_double=endplate,
    )


def _fit_offsets(
    s: np.ndarray, edges: list[_Edge], *, curved: bool = True
) -> tuple[float, float, float] | None:
    """Robust edge curve ``offset(s)`` through the accepted edges, at ``s = 0``.

    A line ``a + b s`` is fitted; with ``curved``, a parabola ``a + b s + c
    s^2`` replaces it when it bends into the body significantly (``-c``
    above :data:`_CURVATURE_SIGNIFICANCE` standard errors).  An endplate
    bends that way within a few millimetres of its corner when it is
    biconcave or irregular (and a waisted wall likewise), and a line through
    the bend misplaces its end at the corner outwards; a bend the other way
    is the pedicle or a rim against the edge, not the edge's shape, so the
    line is kept.  Outliers (beyond three robust standard deviations, at
    least 0.25 mm) are dropped and the fit repeated.  Returns ``(a, b, mean
    score)``, the offset and slope of the curve at ``s = 0``, or None when
    too few edges agree or the slope is implausible.
    """
    keep = [(si, e.offset, e.score) for si, e in zip(s, edges, strict=True) if e.flag is None]
    if len(keep) < _MIN_VALID_PROFILES:
        return None
    ss, oo, sc = (np.array(column, dtype=float) for column in zip(*keep, strict=True))
    mask = np.ones(ss.size, dtype=bool)
    coef = None
    for _ in range(3):
        if mask.sum() < _MIN_VALID_PROFILES:
            return None
        coef = _edge_curve(ss[mask], oo[mask], curved=curved)
        if coef is None:
            return None
        res = oo - np.polyval(coef, ss)
        mad = 1.4826 * float(np.median(np.abs(res[mask])))
        new = np.abs(res) <= max(3.0 * mad, 0.25)
        if np.array_equal(new, mask):
            break
        mask = new
    a, b = float(coef[-1]), float(coef[-2])
    if mask.sum() < _MIN_VALID_PROFILES or abs(b) > _MAX_SLOPE:
        return None
    return a, b, float(np.mean(sc[mask]))


def _edge_curve(s: np.ndarray, offset: np.ndarray, *, curved: bool) -> np.ndarray | None:
    """Coefficients (highest power first) of the least-squares line through
    ``offset(s)``, or of the parabola when ``curved`` and it bends into the
    body significantly (:func:`_fit_offsets`); None when degenerate."""
    line = _polyfit(s, offset, 1)
    if not curved or line is None or s.size < _MIN_CURVE_PROFILES:
        return None if line is None else line[0]
    quad = _polyfit(s, offset, 2)
    if quad is None:
        return line[0]
    coef, inverse = quad
    res = offset - np.polyval(coef, s)
    sigma2 = float(res @ res) / (s.size - 3)
    # Standard error of the curvature; a floor of 0.02 mm on the residual
    # keeps a perfect (noise-free) fit from making any bend significant.
    se = math.sqrt(inverse[0, 0] * max(sigma2, 0.02**2))
    return coef if -coef[0] > _CURVATURE_SIGNIFICANCE * se else line[0]


def _polyfit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Least-squares polynomial (highest power first) and the inverse of its
    normal matrix, or None when the points do not determine it."""
    design = np.vander(x, degree + 1)
    normal = design.T @ design
    try:
        inverse = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(inverse)):
        return None
    return inverse @ (design.T @ y), inverse


def _majority_flag(edges: list[_Edge]) -> RefineFlag:
    flags = [e.flag for e in edges if e.flag is not None]
    if flags and flags.count(RefineFlag.OUTSIDE_IMAGE) == len(edges):
        return RefineFlag.OUTSIDE_IMAGE
    if flags.count(RefineFlag.AMBIGUOUS_EDGE) > flags.count(RefineFlag.WEAK_EDGE):
        return RefineFlag.AMBIGUOUS_EDGE
    return RefineFlag.WEAK_EDGE


def _best_score(edges: list[_Edge]) -> float | None:
    scores = [e.score for e in edges if e.score is not None]
    return max(scores) if scores else None


# -- geometry of one vertebra ---------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else None


def _perp(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _other_side(side: str) -> str:
    return "posterior" if side == "anterior" else "anterior"


def _other_endplate(endplate: str) -> str:
    return "inferior" if endplate == "superior" else "superior"


def _outward(
    direction: np.ndarray, origin: np.ndarray, centre: np.ndarray | None, fld: _Field | None
) -> np.ndarray | None:
    """``direction`` or its opposite, whichever points away from the body.

    Uses the centre of the landmarks when it lies clearly to one side,
    otherwise the image (bone, inside, is brighter than the disc outside).
    """
    if centre is not None:
        side = float(np.dot(origin - centre, direction))
        if abs(side) > 2.0:
            return direction if side > 0 else -direction
    if fld is not None:
        offsets = np.linspace(1.0, 3.0, 5)
        ahead = fld.intensity(origin[None, :] + offsets[:, None] * direction[None, :])
        behind = fld.intensity(origin[None, :] - offsets[:, None] * direction[None, :])
        if np.all(np.isfinite(ahead)) and np.all(np.isfinite(behind)):
            return -direction if ahead.mean() > behind.mean() else direction
    if centre is not None and abs(float(np.dot(origin - centre, direction))) > 1e-6:
        return direction if float(np.dot(origin - centre, direction)) > 0 else -direction
    return None


def _endplate_tangent(pts: Mapping[str, np.ndarray], endplate: str, side: str) -> np.ndarray | None:
    """Unit vector along the endplate of ``endplate``, pointing towards ``side``."""
    own = pts.get(f"{endplate}_{side}")
    for a, b in (
        (own, pts.get(f"{endplate}_{_other_side(side)}")),
        (pts.get(f"{_other_endplate(endplate)}_{side}"),
         pts.get(f"{_other_endplate(endplate)}_{_other_side(side)}")),
        (own, pts.get(f"{endplate}_middle")),
        (pts.get(f"{endplate}_middle"), pts.get(f"{endplate}_{_other_side(side)}")),
    ):  # fmt: skip
        if a is not None and b is not None:
            u = _unit(a - b)
            if u is not None:
                return u
    return None


def _wall_tangent(pts: Mapping[str, np.ndarray], endplate: str, side: str) -> np.ndarray | None:
    """Unit vector along the ``side`` wall, pointing towards ``endplate``."""
    for s in (side, _other_side(side)):
        a = pts.get(f"{endplate}_{s}")
        b = pts.get(f"{_other_endplate(endplate)}_{s}")
        if a is not None and b is not None:
            u = _unit(a - b)
            if u is not None:
                return u
    return None


def _centre(pts: Mapping[str, np.ndarray]) -> np.ndarray | None:
    if not pts:
        return None
    return np.mean(np.array(list(pts.values())), axis=0)


def _intersect(p1: np.ndarray, u1: np.ndarray, p2: np.ndarray, u2: np.ndarray) -> np.ndarray | None:
    """Intersection of the lines ``p1 + s u1`` and ``p2 + s u2``."""
    den = _cross(u1, u2)
    if abs(den) < 0.3 * float(np.hypot(*u1) * np.hypot(*u2)):
        return None
    s = _cross(p2 - p1, u2) / den
    return p1 + s * u1


# -- refinement of one vertebra -------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    position: np.ndarray  # mm
    moved: bool
    flag: RefineFlag | None
    score: float | None
    reseeded: bool = False


def _fit_strip(
    fld: _Field,
    origin: np.ndarray,
    inward: np.ndarray,
    across: np.ndarray,
    t: np.ndarray,
    *,
    endplate: bool,
) -> tuple[tuple[float, float, float] | None, list[_Edge]]:
    """Edge line across ``across`` on profiles 1 to 6 mm from ``origin`` along ``inward``.

    Only the stretch next to the corner is used: further along, the wall
    meets the pedicle and the endplate may be concave.
    """
    s = np.linspace(_STRIP_START_MM, _STRIP_END_MM, _STRIP_COUNT)
    bases = origin[None, :] + s[:, None] * inward
    edges = _edges_on_strip(fld, bases, across, t, endplate=endplate)
    return _fit_offsets(s, edges), edges


def _refine_corner(
    fld: _Field,
    start: np.ndarray,
    tangent: np.ndarray,
    normal: np.ndarray,
    wall: np.ndarray,
    wall_normal: np.ndarray,
    radius_mm: float,
    t: np.ndarray,
) -> _Outcome:
    """Corner: where the endplate edge (line or parabola, :func:`_fit_offsets`)
    meets the wall: the end of the endplate cortex (:func:`_band_end`), else
    the intersection with the wall's edge line.

    ``tangent`` points along the endplate towards the corner's side (out of
    the body), ``normal`` away from the body across the endplate; ``wall``
    points along the wall towards this endplate and ``wall_normal`` out of
    the body across the wall.
    """
    current = start.copy()
    score: float | None = None
    for attempt in range(2):
        if attempt and float(np.hypot(*(current - start))) <= _REPEAT_MM:
            break  # the strip already lay where the corner is
        plate, plate_edges = _fit_strip(fld, current, -tangent, normal, t, endplate=True)
        if plate is None:
            return _Outcome(start, False, _majority_flag(plate_edges), _best_score(plate_edges))
        a, b, plate_score = plate
        plate_dir = -tangent + b * normal
        plate_point = current + a * normal
        score = plate_score
        # The wall edge, searched along the endplate: where the endplate
        # cortex ends.  Failing that, the line of the wall's own edge.
        end = _band_end(fld, plate_point, plate_dir, normal, t)
        if end is not None:
            current = end
            continue
        wall_fit, _ = _fit_strip(fld, current, -wall, wall_normal, t, endplate=False)
        if wall_fit is None:
            return _Outcome(plate_point, True, RefineFlag.WEAK_WALL_EDGE, score)
        c, d, wall_score = wall_fit
        wall_point = current + c * wall_normal
        corner = _intersect(plate_point, plate_dir, wall_point, -wall + d * wall_normal)
        if corner is None:
            return _Outcome(plate_point, True, RefineFlag.WEAK_WALL_EDGE, score)
        score = min(plate_score, wall_score)
        current = corner
    # Bounded: the corner may move at most the radius across each edge.
    move = current - start
    limit = radius_mm + 0.5
    if abs(float(np.dot(move, normal))) > limit or abs(float(np.dot(move, wall_normal))) > limit:
        return _Outcome(start, False, RefineFlag.WEAK_EDGE, score)
    return _Outcome(current, True, None, score)


def _snap_next_to_corner(
    fld: _Field, corner: np.ndarray, plate_dir: np.ndarray, normal: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """The corner moved across the endplate onto the edge right next to it.

    ``plate_dir`` points along the endplate into the body, ``normal`` out of
    it across the endplate.  The endplate line of :func:`_refine_corner`
    comes from profiles 1 to 6 mm inside the corner; an endplate that bends
    there (biconcave, irregular) makes the line miss its end by a fraction of
    a millimetre.  Profiles :data:`_NEAR_CORNER_MM` inside the corner,
    averaged, give the edge there; the corner moves across the endplate by
    that offset when it is accepted and small (a correction of at most
    :data:`_NEAR_CORNER_MAX_MM`, never a new search).
    """
    inward = _unit(plate_dir)
    if inward is None:
        return corner
    s = np.array(_NEAR_CORNER_MM)
    bases = corner[None, :] + s[:, None] * inward[None, :]
    edge = _edge_on_average(fld, bases, normal, t, endplate=True)
    if edge.flag is not None or edge.offset is None or abs(edge.offset) > _NEAR_CORNER_MAX_MM:
        return corner
    return corner + edge.offset * normal


def _band_end(
    fld: _Field, plate_point: np.ndarray, plate_dir: np.ndarray, normal: np.ndarray, t: np.ndarray
) -> np.ndarray | None:
    """Where the endplate's bright cortex ends along the endplate, or None.

    The wall next to a corner often shows no edge of its own (a pedicle
    against the posterior wall, a faint anterior wall), but the endplate's
    cortex ends there.  Profiles along the endplate edge line, inside it
    (within the cortex) at each of :data:`_BAND_DEPTHS_MM`, are searched
    outward for the fall at the end of the cortex; a robust line through
    those ends, against depth, is followed to depth 0 (the edge line), so a
    wall that leans or is waisted next to the corner is followed to the
    corner.  When too few depths agree, the profiles up to
    :data:`_BAND_AVERAGE_DEPTH_MM` are averaged instead.  Returns that point
    on the edge line.
    """
    outward = _unit(-plate_dir)
    if outward is None:
        return None
    depths = np.array(_BAND_DEPTHS_MM)
    bases = plate_point[None, :] - depths[:, None] * normal[None, :]
    ends = _edges_on_strip(fld, bases, outward, t, endplate=False)
    fit = _fit_offsets(depths, ends, curved=False)
    if fit is not None:
        return plate_point + fit[0] * outward
    shallow = bases[depths <= _BAND_AVERAGE_DEPTH_MM]
    edge = _edge_on_average(fld, shallow, outward, t, endplate=False)
    if edge.flag is not None or edge.offset is None:
        return None
    return plate_point + edge.offset * outward


def _refine_middle(
    fld: _Field,
    start: np.ndarray,
    anchor: np.ndarray,
    tangent: np.ndarray,
    normal: np.ndarray,
    axis: np.ndarray,
    t: np.ndarray,
) -> _Outcome:
    """Middle point: on the line through ``anchor`` (midpoint of the corners)
    along ``axis`` (the vertebra's axis, outward; the endplate ``normal`` when
    the walls give none), at the start's offset across the endplate, snapped
    along that line."""
    depth = float(np.dot(start - anchor, normal)) / float(np.dot(axis, normal))
    base = anchor + depth * axis
    u = np.linspace(-_MIDDLE_HALF_WIDTH_MM, _MIDDLE_HALF_WIDTH_MM, _MIDDLE_COUNT)
    bases = base[None, :] + u[:, None] * tangent
    edge = _edge_on_average(fld, bases, axis, t, endplate=True)
    if edge.flag is not None or edge.offset is None:
        return _Outcome(start, False, edge.flag, edge.score)
    return _Outcome(base + edge.offset * axis, True, None, edge.score)


def _body_axis(geometry: Mapping[str, np.ndarray], normal: np.ndarray) -> np.ndarray:
    """The vertebra's axis, oriented like ``normal``: the mean direction of
    its anterior and posterior walls (corner to corner), or ``normal`` when a
    corner is missing or the walls lean more than :data:`_MAX_AXIS_TILT_DEG`
    from the endplate normal (implausible landmarks)."""
    walls = []
    for side in _SIDES:
        top = geometry.get(f"superior_{side}")
        bottom = geometry.get(f"inferior_{side}")
        if top is None or bottom is None:
            return normal
        wall = _unit(top - bottom)
        if wall is None:
            return normal
        walls.append(wall if float(np.dot(wall, normal)) > 0 else -wall)
    axis = _unit(walls[0] + walls[1])
    if axis is None or float(np.dot(axis, normal)) < math.cos(math.radians(_MAX_AXIS_TILT_DEG)):
        return normal
    return axis


def _refine_lone(fld: _Field, start: np.ndarray, t: np.ndarray) -> _Outcome:
    """A point with no neighbours to give a direction: search along the
    dominant edge orientation around it, bright side taken as inside."""
    r = float(t[-1])
    grid = np.linspace(-r, r, 9)
    gxx, gyy = np.meshgrid(grid, grid)
    pts = start[None, None, :] + np.stack([gxx, gyy], axis=-1)
    v = fld.sample(pts)
    gx, gy = v[..., 0], v[..., 1]
    ok = np.isfinite(gx) & np.isfinite(gy)
    if not ok.any():
        return _Outcome(start, False, RefineFlag.OUTSIDE_IMAGE, None)
    jxx, jyy, jxy = (float(np.sum(v[ok])) for v in (gx * gx, gy * gy, gx * gy))
    theta = 0.5 * math.atan2(2 * jxy, jxx - jyy)
    direction = np.array([math.cos(theta), math.sin(theta)])
    pts = start[None, :] + t[:, None] * direction[None, :]
    deriv = fld.derivative(pts, direction)
    if not np.all(np.isfinite(deriv)):
        return _Outcome(start, False, RefineFlag.OUTSIDE_IMAGE, None)
    # Bright inside: the outward direction is the one along which intensity falls.
    outward = -direction if deriv[np.argmax(np.abs(deriv))] > 0 else direction
    # Five parallel profiles, 0.5 mm apart, averaged (as for middle points).
    u = np.linspace(-_MIDDLE_HALF_WIDTH_MM, _MIDDLE_HALF_WIDTH_MM, _MIDDLE_COUNT)
    bases = start[None, :] + u[:, None] * _perp(outward)[None, :]
    edge = _edge_on_average(fld, bases, outward, t, endplate=False)
    if edge.flag is not None or edge.offset is None:
        return _Outcome(start, False, edge.flag, edge.score)
    return _Outcome(start + edge.offset * outward, True, None, edge.score)


def _corner_outcome(
    fld: _Field,
    geometry: Mapping[str, np.ndarray],
    name: str,
    start: np.ndarray,
    centre: np.ndarray | None,
    radius_mm: float,
    t: np.ndarray,
) -> _Outcome:
    """Refine corner ``name`` from ``start``, directions taken from ``geometry``."""
    endplate, side = name.split("_")
    tangent = _endplate_tangent(geometry, endplate, side)
    if tangent is None:
        return _refine_lone(fld, start, t)
    normal = _outward(_perp(tangent), start, centre, fld)
    if normal is None:
        return _refine_lone(fld, start, t)
    if centre is not None:
        # The tangent points out of the body along the endplate.
        flipped = _outward(tangent, start, centre, None)
        tangent = tangent if flipped is None else flipped
    wall = _wall_tangent(geometry, endplate, side)
    if wall is None:
        wall = normal  # the wall is roughly perpendicular to the endplate
    wall = wall if float(np.dot(wall, normal)) > 0 else -wall
    wall_normal = _perp(wall)
    wall_normal = wall_normal if float(np.dot(wall_normal, tangent)) > 0 else -wall_normal
    return _refine_corner(fld, start, tangent, normal, wall, wall_normal, radius_mm, t)


def _middle_outcome(
    fld: _Field,
    geometry: Mapping[str, np.ndarray],
    name: str,
    start: np.ndarray,
    centre: np.ndarray | None,
    t: np.ndarray,
    placed: Mapping[str, np.ndarray],
) -> tuple[_Outcome, np.ndarray | None]:
    """Refine middle point ``name`` from ``start``; also returns the anchor used
    (midpoint of the corners of its endplate in ``geometry``, when known).
    Without both corners in ``geometry``, the direction comes from the
    landmarks as ``placed`` and the point keeps its place along the endplate."""
    endplate = name.split("_")[0]
    a = geometry.get(f"{endplate}_anterior")
    p = geometry.get(f"{endplate}_posterior")
    anchor = None
    tangent = None
    if a is not None and p is not None:
        tangent = _unit(a - p)
        if tangent is not None:
            anchor = 0.5 * (a + p)
    if tangent is None:
        tangent = _endplate_tangent(placed, endplate, "anterior")
    if tangent is None:
        return _refine_lone(fld, start, t), None
    normal = _outward(_perp(tangent), start, centre, fld)
    if normal is None:
        return _refine_lone(fld, start, t), None
    if anchor is None:
        return _refine_middle(fld, start, start, tangent, normal, normal, t), None
    axis = _body_axis(geometry, normal)
    return _refine_middle(fld, start, anchor, tangent, normal, axis, t), anchor


def _plate_line(known: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Line through the middle point and the opposite corner of ``name``'s endplate."""
    endplate, side = name.split("_")
    middle = known.get(f"{endplate}_middle")
    opposite = known.get(f"{endplate}_{_other_side(side)}")
    if middle is None or opposite is None:
        return None
    direction = _unit(middle - opposite)
    return None if direction is None else (opposite, direction)


def _wall_line(known: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Line through the same-side corner of the other endplate, perpendicular to it."""
    endplate, side = name.split("_")
    other = _other_endplate(endplate)
    corner = known.get(f"{other}_{side}")
    opposite = known.get(f"{other}_{_other_side(side)}")
    if corner is None or opposite is None:
        return None
    chord = _unit(corner - opposite)
    return None if chord is None else (corner, _perp(chord))


def _corner_seed(
    known: Mapping[str, np.ndarray], name: str, placed: np.ndarray
) -> np.ndarray | None:
    """Where the other landmarks of the vertebra put corner ``name``.

    At the intersection of :func:`_plate_line` and :func:`_wall_line`; when
    only one of them is known, the ``placed`` position moved onto it.
    """
    plate = _plate_line(known, name)
    wall = _wall_line(known, name)
    if plate is not None and wall is not None:
        return _intersect(plate[0], plate[1], wall[0], wall[1])
    line = plate or wall
    if line is None:
        return None
    return line[0] + float(np.dot(placed - line[0], line[1])) * line[1]


_RESEEDABLE = (RefineFlag.WEAK_EDGE, RefineFlag.AMBIGUOUS_EDGE, RefineFlag.WEAK_WALL_EDGE)


def _refine_vertebra(
    image: _Image,
    pts_px: Mapping[str, tuple[float, float]],
    names: Iterable[str],
    radius_mm: float,
) -> dict[str, _Outcome]:
    """Refine the points ``names`` of one vertebra given all its points.

    First pass: every corner from where it was placed, then every middle
    point.  Second pass: a point whose own search found no edge (its edge
    may lie beyond the radius) is searched again from where the refined
    points of its vertebra put it (:func:`_corner_seed`; a middle point from
    the chord between the refined corners), and then marked ``reseeded``;
    such a point moves at most twice the radius.  Each corner found is then
    checked along the chord of the refined corners of its endplate (across,
    along, across: :func:`_snap_next_to_corner`, :func:`_band_end`), and the
    middle points are re-anchored on the final corners.
    """
    pts = {k: image.to_mm(v) for k, v in pts_px.items()}
    wanted = set(names)
    names = [n for n in POINT_NAMES if n in wanted and n in pts]
    if not names:
        return {}
    span = _STRIP_END_MM + 2 * radius_mm + 1.0
    fld = _make_field(image, np.array(list(pts.values())), span)
    if fld is None:
        return {n: _Outcome(pts[n], False, RefineFlag.OUTSIDE_IMAGE, None) for n in names}
    t = _profile_offsets(image, radius_mm)
    centre = _centre(pts) if len(pts) >= 3 else None
    corners = [n for n in names if n in _CORNERS]
    middles = [n for n in names if n in _MIDDLES]
    out: dict[str, _Outcome] = {}
    refined = dict(pts)
    for name in corners:
        out[name] = _corner_outcome(fld, pts, name, pts[name], centre, radius_mm, t)
        refined[name] = out[name].position

    def anchors() -> dict[str, np.ndarray]:
        # A corner not found at all gives no "midway": leave it out, so the
        # middle point keeps its own place along the endplate.
        return {
            k: v
            for k, v in refined.items()
            if not (k in _CORNERS and k in out and not out[k].moved)
        }

    for name in middles:
        out[name], _ = _middle_outcome(fld, anchors(), name, pts[name], centre, t, pts)
        refined[name] = out[name].position

    def known(exclude: str) -> dict[str, np.ndarray]:
        return {
            k: v
            for k, v in refined.items()
            if k != exclude and (k not in out or out[k].flag is None)
        }

    limit = 2 * radius_mm
    for _ in range(2):
        for name in corners:
            if out[name].flag not in _RESEEDABLE:
                continue
            if out[name].flag is RefineFlag.WEAK_WALL_EDGE:
                # The endplate was found: only slide along it to the wall
                # predicted by the other endplate.
                base = out[name].position
                wall = _wall_line(known(name), name)
                endplate, side = name.split("_")
                opposite = known(name).get(f"{endplate}_{_other_side(side)}")
                along = None if opposite is None else _unit(base - opposite)
                if wall is None or along is None:
                    continue
                seed = _intersect(base, along, wall[0], wall[1])
                searched_from = base
            else:
                seed = _corner_seed(known(name), name, pts[name])
                searched_from = pts[name]
            # Only where the first search did not already look.
            if (
                seed is None
                or float(np.hypot(*(seed - searched_from))) < 0.5 * radius_mm
                or float(np.hypot(*(seed - pts[name]))) > limit
            ):
                continue
            again = _corner_outcome(fld, known(name), name, seed, centre, radius_mm, t)
            better = again.flag is None or (
                again.flag is RefineFlag.WEAK_WALL_EDGE and not out[name].moved
            )
            if better and float(np.hypot(*(again.position - pts[name]))) <= limit:
                again.reseeded = True
                out[name] = again
                refined[name] = again.position
    # Each corner found is checked across its endplate once more, next to
    # it along the chord of the refined corners (steadier than the chord of
    # the corners as placed).
    for name in corners:
        endplate, side = name.split("_")
        other = f"{endplate}_{_other_side(side)}"
        if out[name].flag is not None or other not in refined:
            continue
        if other in out and out[other].flag is not None:
            continue
        tangent = _unit(refined[name] - refined[other])
        if tangent is None:
            continue
        normal = _outward(_perp(tangent), refined[name], centre, fld)
        if normal is None:
            continue
        position = _snap_next_to_corner(fld, refined[name], -tangent, normal, t)
        end = _band_end(fld, position, -tangent, normal, t)
        if end is not None and float(np.hypot(*(end - position))) <= _NEAR_CORNER_MAX_MM:
            position = _snap_next_to_corner(fld, end, -tangent, normal, t)
        out[name].position = position
        refined[name] = position
    for name in middles:
        first = out[name]
        outcome, anchor = _middle_outcome(fld, anchors(), name, pts[name], centre, t, pts)
        if outcome.flag in _RESEEDABLE and anchor is not None:
            again, _ = _middle_outcome(fld, anchors(), name, anchor, centre, t, pts)
            if again.flag is None and float(np.hypot(*(again.position - pts[name]))) <= limit:
                again.reseeded = True
                outcome = again
        out[name] = outcome if outcome.flag is None or first.flag is not None else first
        refined[name] = out[name].position
    return out


# -- calibration --------------------------------------------------------------------------


def search_spacing(
    annotation: Annotation, calibration: Calibration | None
) -> tuple[float, float, list[str]]:
    """``(row_mm, col_mm, warnings)`` used to turn millimetres into pixels.

    The calibration's spacing when calibrated.  On an uncalibrated film, the
    annotated endplates are compared with typical adult endplate depths to
    guess a nominal isotropic spacing (else :data:`NOMINAL_SPACING_MM`), and a
    warning says so.
    """
    if calibration is not None and calibration.is_calibrated:
        return calibration.row_spacing_mm, calibration.col_spacing_mm, []
    ratios = []
    for level, pts in annotation.vertebrae.items():
        for endplate in _ENDPLATES:
            a = pts.get(f"{endplate}_anterior")
            p = pts.get(f"{endplate}_posterior")
            if a is not None and p is not None:
                depth_px = math.hypot(a[0] - p[0], a[1] - p[1])
                if depth_px > 1:
                    ratios.append(_TYPICAL_ENDPLATE_DEPTH_MM[level] / depth_px)
    if ratios:
        spacing = float(np.median(ratios))
        note = (
            f"uncalibrated film: searching with a nominal {spacing:.3g} mm/px guessed from "
            "typical endplate depths; distances are reported in pixels only"
        )
    else:
        spacing = NOMINAL_SPACING_MM
        note = (
            f"uncalibrated film and no complete endplate: searching with a nominal "
            f"{spacing:g} mm/px; distances are reported in pixels only"
        )
    return spacing, spacing, [note]


def _resolve(
    annotation: Annotation, image: Any, calibration: Calibration | None
) -> tuple[Calibration, np.ndarray]:
    cal = annotation.calibration or calibration or getattr(image, "calibration", None)
    if cal is None:
        cal = Calibration.uncalibrated()
    pixels = _image_array(image)
    rows, cols = annotation.image.rows, annotation.image.columns
    if rows is not None and cols is not None and (rows, cols) != pixels.shape:
        raise AnnotationError(
            f"the annotation was made on a {rows} x {cols} image but the film given is "
            f"{pixels.shape[0]} x {pixels.shape[1]} (rows x columns): give the film it was "
            "made on"
        )
    return cal, pixels


def _check_radius(radius_mm: float) -> float:
    if isinstance(radius_mm, bool) or not (
        isinstance(radius_mm, (int, float)) and math.isfinite(radius_mm) and radius_mm > 0
    ):
        raise ValueError(f"radius_mm must be a finite number > 0, found {radius_mm!r}")
    return float(radius_mm)


def _move(
    level: str, name: str, before: tuple[float, float], outcome: _Outcome, image: _Image,
    calibrated: bool,
) -> PointMove:  # fmt: skip
    x, y = image.to_px(outcome.position) if outcome.moved else before
    dist_mm = None
    if calibrated:
        dist_mm = math.hypot((x - before[0]) * image.col_mm, (y - before[1]) * image.row_mm)
    return PointMove(
        level=level,
        point=name,
        x_before=float(before[0]),
        y_before=float(before[1]),
        x=float(x),
        y=float(y),
        distance_mm=dist_mm,
        moved=bool(outcome.moved),
        flag=None if outcome.flag is None else outcome.flag.value,
        edge_score=outcome.score,
        reseeded=outcome.reseeded,
    )


# -- public API -----------------------------------------------------------------------------


def refine_annotation(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None = None,
    *,
    levels: Iterable[str] | None = None,
    points: Iterable[str] | None = None,
    radius_mm: float = DEFAULT_RADIUS_MM,
) -> RefineResult:
    """Snap landmarks to the cortical endplate edge near them.

    Parameters
    ----------
    annotation
        The landmarks (pixels, module convention).  Never changed.
    image
        A :class:`vheight.film.Film` or a 2-D array, bright = dense bone, the
        full-resolution image the landmarks were placed on.
    calibration
        Used when the annotation has none (the film's own otherwise); None and
        no calibration anywhere means uncalibrated (nominal search spacing).
    levels
        Levels to refine (default: every annotated level).
    points
        Point names to refine (default: all six).  Points not refined still
        give the directions of those that are.
    radius_mm
        How far each edge is searched on either side of the landmark, mm.

    Returns
    -------
    RefineResult
        The new annotation and one :class:`PointMove` per landmark considered.
    """
    radius_mm = _check_radius(radius_mm)
    cal, pixels = _resolve(annotation, image, calibration)
    row_mm, col_mm, warnings = search_spacing(annotation, cal)
    prepared = _prepare_image(pixels, row_mm, col_mm)
    wanted_levels = _check_levels(levels, annotation)
    wanted_points = _check_points(points)
    vertebrae = {lvl: dict(pts) for lvl, pts in annotation.vertebrae.items()}
    moves: list[PointMove] = []
    for level in wanted_levels:
        pts = annotation.vertebrae.get(level)
        if not pts:
            continue
        outcomes = _refine_vertebra(prepared, pts, wanted_points, radius_mm)
        for name in POINT_NAMES:
            if name not in outcomes:
                continue
            move = _move(level, name, pts[name], outcomes[name], prepared, cal.is_calibrated)
            moves.append(move)
            vertebrae[level][name] = move.xy
    new = replace(annotation, vertebrae=vertebrae)
    return RefineResult(
        annotation=new,
        moves=tuple(moves),
        calibration=cal,
        spacing_mm=(row_mm, col_mm),
        radius_mm=radius_mm,
        warnings=tuple(warnings),
    )


def refine_point(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    point: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
) -> PointMove:
    """Snap one landmark (the editor's snap action).

    The other points of the level, as placed, give the directions; a level
    holding this point alone is searched along the dominant edge orientation
    around it.  Apply the result with
    ``annotation.with_point(level, point, move.xy)`` when ``move.moved``.

    Raises :class:`AnnotationError` when the point is not placed.
    """
    level = str(level)
    point = str(point)
    level_index(level)
    if point not in annotation.points(level):
        raise AnnotationError(f"{level} {point}: the point is not placed, nothing to refine")
    result = refine_annotation(
        annotation, image, calibration, levels=[level], points=[point], radius_mm=radius_mm
    )
    return result.move(level, point)


def _check_levels(levels: Iterable[str] | None, annotation: Annotation) -> list[str]:
    if levels is None:
        return list(annotation.levels)
    wanted = [str(lvl) for lvl in levels]
    for lvl in wanted:
        level_index(lvl)
    return [lvl for lvl in LEVELS if lvl in wanted]


def _check_points(points: Iterable[str] | None) -> list[str]:
    if points is None:
        return list(POINT_NAMES)
    wanted = [str(p) for p in points]
    bad = [p for p in wanted if p not in POINT_NAMES]
    if bad:
        raise AnnotationError(
            f"unknown point name(s) {', '.join(map(repr, bad))}: expected {', '.join(POINT_NAMES)}"
        )
    return wanted


# -- propagation ------------------------------------------------------------------------------


def _as_complex(pts: Mapping[str, tuple[float, float]], row_mm: float, col_mm: float) -> np.ndarray:
    return np.array([pts[n][0] * col_mm + 1j * pts[n][1] * row_mm for n in POINT_NAMES])


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``z -> a z + b`` mapping ``src`` onto ``dst``."""
    zs, zd = src - src.mean(), dst - dst.mean()
    a = complex(np.sum(zd * np.conj(zs)) / np.sum(np.abs(zs) ** 2))
    b = complex(dst.mean() - a * src.mean())
    return a, b


def _expm1(x: complex) -> complex:
    """``exp(x) - 1`` without cancellation for small ``x``."""
    if abs(x) < 1e-4:
        return x + x * x / 2 + x * x * x / 6
    return cmath.exp(x) - 1


def _power(a: complex, b: complex, n: float) -> tuple[complex, complex]:
    """The similarity ``z -> a z + b`` applied ``n`` times (``n`` real).

    ``a^n z + b (a^n - 1) / (a - 1)``, with ``a^n = exp(n log a)`` and the
    ratio computed stably when ``a`` is close to 1 (a near translation).
    """
    log_a = complex(math.log(abs(a)), cmath.phase(a))
    if abs(log_a) < 1e-12:
        return 1 + 0j, b * n
    an = cmath.exp(n * log_a)
    return an, b * _expm1(n * log_a) / _expm1(log_a)


def _source_levels(annotation: Annotation, level: str) -> list[str]:
    """The complete levels a proposal for ``level`` starts from (one or two).

    The nearest complete level, and the next nearest, preferably on the
    other side of ``level`` (interpolation rather than extrapolation).
    """
    target = level_index(level)
    complete = [lvl for lvl in annotation.complete_levels if lvl != level]
    if not complete:
        raise AnnotationError(
            f"cannot propose {level}: no complete vertebra (six points) to start from"
        )
    complete.sort(key=lambda lvl: (abs(level_index(lvl) - target), level_index(lvl)))
    first = complete[0]
    others = complete[1:]
    if not others:
        return [first]
    side = level_index(first) - target
    opposite = [lvl for lvl in others if (level_index(lvl) - target) * side < 0]
    return [first, opposite[0] if opposite else others[0]]


def _next_to(za: np.ndarray, *, up: bool, level: str, source: str) -> np.ndarray:
    """A normal vertebra beside the one whose six points are ``za`` (complex mm).

    Its facing endplate is the neighbour's, shifted along the neighbour's
    axis by a typical disc; its height is the larger of the neighbour's
    anterior and posterior heights (a wedge or crush fracture of the
    neighbour is not copied); its endplate concavities are the neighbour's.
    """
    p = dict(zip(POINT_NAMES, za, strict=True))
    axis = (p["superior_anterior"] - p["inferior_anterior"]) + (
        p["superior_posterior"] - p["inferior_posterior"]
    )
    if abs(axis) < 1e-9:
        raise AnnotationError(f"cannot propose {level}: {source} has zero height")
    u = axis / abs(axis)  # towards the head
    height = max(
        abs(p["superior_anterior"] - p["inferior_anterior"]),
        abs(p["superior_posterior"] - p["inferior_posterior"]),
    )
    disc = _DISC_TO_BODY_RATIO * height

    def sag(endplate: str) -> float:
        # How far the middle point lies inside the chord of its endplate, mm.
        a, m, q = (p[f"{endplate}_{k}"] for k in ("anterior", "middle", "posterior"))
        inward = -u if endplate == "superior" else u
        return float(((m - (a + q) / 2) * inward.conjugate()).real)

    out: dict[str, complex] = {}
    if up:
        for side in _SIDES:
            out[f"inferior_{side}"] = p[f"superior_{side}"] + u * disc
            out[f"superior_{side}"] = out[f"inferior_{side}"] + u * height
    else:
        for side in _SIDES:
            out[f"superior_{side}"] = p[f"inferior_{side}"] - u * disc
            out[f"inferior_{side}"] = out[f"superior_{side}"] - u * height
    for endplate, inward in (("superior", -u), ("inferior", u)):
        chord_mid = (out[f"{endplate}_anterior"] + out[f"{endplate}_posterior"]) / 2
        out[f"{endplate}_middle"] = chord_mid + inward * max(0.0, sag(endplate))
    return np.array([out[n] for n in POINT_NAMES])


def predict_level(
    annotation: Annotation, level: str, calibration: Calibration | None = None
) -> dict[str, tuple[float, float]]:
    """Guess the six landmarks of ``level`` from the complete levels (no image).

    With two complete levels, the similarity (translation, rotation, scale)
    that carries one onto the other is split into per-level steps and applied
    from the nearest complete level, so position, orientation and size trends
    are extrapolated (or interpolated between levels on both sides).  With
    one complete level, a normal vertebra is built beside it: its facing
    endplate shifted along its axis by a typical disc (``0.3`` of the body
    height), as high as the larger of its anterior and posterior heights.

    Raises :class:`AnnotationError` when no level is complete.
    """
    level = str(level)
    target = level_index(level)
    cal = annotation.calibration or calibration
    row_mm, col_mm, _ = search_spacing(annotation, cal)
    sources = _source_levels(annotation, level)
    a_level = sources[0]
    ia = level_index(a_level)
    za = _as_complex(annotation.vertebrae[a_level], row_mm, col_mm)
    if len(sources) > 1:
        b_level = sources[1]
        ib = level_index(b_level)
        zb = _as_complex(annotation.vertebrae[b_level], row_mm, col_mm)
        a, b = _similarity(za, zb)
        step = _power(a, b, 1.0 / (ib - ia))
        a_n, b_n = _power(*step, float(target - ia))
        z = a_n * za + b_n
    else:
        z = za
        for _ in range(abs(target - ia)):
            z = _next_to(z, up=target < ia, level=level, source=a_level)
    return {
        name: (float(zz.real / col_mm), float(zz.imag / row_mm))
        for name, zz in zip(POINT_NAMES, z, strict=True)
    }


def _align_level(
    image: _Image,
    pts_px: Mapping[str, tuple[float, float]],
    radius_mm: float,
    facing: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Shift each endplate and each wall of a predicted vertebra onto the image.

    Each endplate is searched as a whole (profiles along its predicted
    polyline, averaged) across a window of a quarter of the predicted body
    height (at least the radius), and its three points moved by the offset
    found; then each wall likewise, moving its two corners along the
    endplates.  A part without a clear edge stays as predicted, and so does
    an endplate that the shift would bring within ``_MIN_DISC_MM`` of the
    facing endplate of an annotated neighbour (``facing``: endplate name ->
    that neighbour's facing endplate points).
    """
    pts = {k: image.to_mm(v) for k, v in pts_px.items()}
    heights = [float(np.hypot(*(pts[f"superior_{s}"] - pts[f"inferior_{s}"]))) for s in _SIDES]
    window = max(radius_mm, 0.25 * float(np.mean(heights)))
    fld = _make_field(image, np.array(list(pts.values())), window + 1.0)
    if fld is None:
        return dict(pts_px)
    t = _profile_offsets(image, window)
    centre = _centre(pts)
    fractions = np.linspace(0.15, 0.85, 9)
    for endplate in _ENDPLATES:
        a, m, p = (pts[f"{endplate}_{k}"] for k in ("anterior", "middle", "posterior"))
        tangent = _unit(a - p)
        if tangent is None:
            continue
        normal = _outward(_perp(tangent), m, centre, fld)
        if normal is None:
            continue
        path = np.vstack([p, m, a])
        bases = np.array([_along(path, f) for f in fractions])
        edge = _edge_on_average(fld, bases, normal, t, endplate=True)
        if edge.flag is not None or edge.offset is None:
            continue
        neighbour = (facing or {}).get(endplate)
        if neighbour:
            # Signed gap to the neighbour's facing endplate after the shift.
            gap = min(
                float(np.dot(image.to_mm(xy) - (m + edge.offset * normal), normal))
                for xy in neighbour.values()
            )
            if gap < _MIN_DISC_MM:
                continue
        for k in ("anterior", "middle", "posterior"):
            pts[f"{endplate}_{k}"] = pts[f"{endplate}_{k}"] + edge.offset * normal
    for side in _SIDES:
        top, bottom = pts[f"superior_{side}"], pts[f"inferior_{side}"]
        along = _unit(top - bottom)
        if along is None:
            continue
        across = _outward(_perp(along), top, centre, fld)
        if across is None:
            continue
        bases = bottom[None, :] + fractions[:, None] * (top - bottom)[None, :]
        edge = _edge_on_average(fld, bases, across, t, endplate=False)
        if edge.flag is None and edge.offset is not None:
            for e in _ENDPLATES:
                pts[f"{e}_{side}"] = pts[f"{e}_{side}"] + edge.offset * across
    return {k: image.to_px(v) for k, v in pts.items()}


def _along(path: np.ndarray, fraction: float) -> np.ndarray:
    """The point at ``fraction`` of the length of the polyline ``path``."""
    seg = np.hypot(*np.diff(path, axis=0).T)
    target = fraction * float(seg.sum())
    for i, length in enumerate(seg):
        if target <= length or i == len(seg) - 1:
            return path[i] + (path[i + 1] - path[i]) * (target / length if length else 0.0)
        target -= length
    return path[-1]


def propose_level_result(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
    replace_existing: bool = False,
) -> RefineResult:
    """:func:`propose_level`, with the refinement record of the proposed points.

    In the moves, ``x_before``/``y_before`` are the predicted positions.
    """
    level = str(level)
    level_index(level)
    if annotation.points(level) and not replace_existing:
        raise AnnotationError(
            f"cannot propose {level}: it already holds {len(annotation.points(level))} "
            "point(s); remove them first"
        )
    cal = annotation.calibration or calibration or getattr(image, "calibration", None)
    radius_mm = _check_radius(radius_mm)
    # Predict from snapped copies of the source levels (they stay as given).
    sources = _source_levels(annotation, level)
    snapped = refine_annotation(annotation, image, cal, levels=sources, radius_mm=radius_mm)
    predicted = predict_level(snapped.annotation, level, cal)
    cal_used, pixels = _resolve(annotation, image, cal)
    row_mm, col_mm, _ = search_spacing(annotation, cal_used)
    prepared = _prepare_image(pixels, row_mm, col_mm)
    facing = {}
    for endplate, step in (("superior", -1), ("inferior", 1)):
        index = level_index(level) + step
        if 0 <= index < len(LEVELS):
            other = annotation.points(LEVELS[index])
            facing[endplate] = {
                k: v for k, v in other.items() if k.startswith(_other_endplate(endplate))
            }
    aligned = _align_level(prepared, predicted, radius_mm, facing)
    vertebrae = {lvl: dict(pts) for lvl, pts in annotation.vertebrae.items()}
    vertebrae[level] = aligned
    proposed = replace(annotation, vertebrae=vertebrae)
    return refine_annotation(proposed, image, cal, levels=[level], radius_mm=radius_mm)


def propose_level(
    annotation: Annotation,
    image: Any,
    calibration: Calibration | None,
    level: str,
    *,
    radius_mm: float = DEFAULT_RADIUS_MM,
    replace_existing: bool = False,
) -> Annotation:
    """A new annotation with the six landmarks of ``level`` proposed and refined.

    The landmarks are predicted by :func:`predict_level` from the complete
    levels, then snapped by :func:`refine_annotation` (points without a clear
    edge stay where predicted).  Other levels are unchanged.

    Raises :class:`AnnotationError` when ``level`` already holds points (unless
    ``replace_existing``) or no level is complete.
    """
    return propose_level_result(
        annotation,
        image,
        calibration,
        level,
        radius_mm=radius_mm,
        replace_existing=replace_existing,
    ).annotation
