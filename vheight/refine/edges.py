"""The edge: the film prepared for search, smoothed gradients, 1-D edge location and
robust edge lines (see the package docstring, "The edge")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from vheight.errors import ImageReadError
from vheight.refine.model import (
    AMBIGUITY_RATIO,
    AMBIGUITY_SEPARATION_MM,
    BACKGROUND_MM,
    EDGE_NOISE_FACTOR,
    FINE_SMOOTHING_MM,
    MIN_CONTRAST_FRACTION,
    SMOOTHING_MM,
    RefineFlag,
)

__all__ = [
    "edge_threshold",
    "image_array",
    "PreparedImage",
    "prepare_image",
    "Field",
    "make_field",
    "central_difference",
    "Edge",
    "clamp",
    "find_edges",
    "find_edge",
    "profile_offsets",
    "edges_on_strip",
    "edge_on_average",
    "fit_offsets",
    "edge_line",
    "majority_flag",
    "best_score",
    "local_maxima",
]

_FINE_MIN_PX = 0.8
_MIN_VALID_PROFILES = 3
_MAX_SLOPE = 0.6
# A parabola replaces the line through a strip's edges when its curvature is
# this many standard errors from zero (and at least this many edges agree).
_CURVATURE_SIGNIFICANCE = 4.0
_MIN_CURVE_PROFILES = 6


# -- image access ----------------------------------------------------------------------


def image_array(image: Any) -> np.ndarray:
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
class PreparedImage:
    """The film prepared for edge search.

    ``row_mm``/``col_mm`` is the film's spacing: landmarks in film pixels
    go to millimetres with it (:meth:`to_mm`, :meth:`to_px`).  ``pixels`` is
    the searched grid: the film itself, or on a film finer than
    :data:`WORK_SPACING_MM` a copy binned by ``bin_rows`` x ``bin_cols``
    (:func:`prepare_image`), whose pixel ``(j, i)`` covers film pixels
    ``[j * bin_rows, (j + 1) * bin_rows)`` x ``[i * bin_cols, ...)``.
    """

    pixels: np.ndarray
    row_mm: float
    col_mm: float
    contrast_floor: float  # smallest accepted step, intensity units
    bin_rows: int = 1
    bin_cols: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the searched grid (binned), rows x columns."""
        return self.pixels.shape  # type: ignore[return-value]

    @property
    def work_row_mm(self) -> float:
        """Row spacing of the searched grid, mm."""
        return self.row_mm * self.bin_rows

    @property
    def work_col_mm(self) -> float:
        """Column spacing of the searched grid, mm."""
        return self.col_mm * self.bin_cols

    def to_mm(self, xy: Sequence[float]) -> np.ndarray:
        return np.array([xy[0] * self.col_mm, xy[1] * self.row_mm], dtype=float)

    def to_px(self, p: np.ndarray) -> tuple[float, float]:
        return (float(p[0] / self.col_mm), float(p[1] / self.row_mm))

    def to_grid(self, pts_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of ``pts_mm`` (..., 2) on the searched grid."""
        rows = (pts_mm[..., 1] / self.row_mm - 0.5 * (self.bin_rows - 1)) / self.bin_rows
        cols = (pts_mm[..., 0] / self.col_mm - 0.5 * (self.bin_cols - 1)) / self.bin_cols
        return rows, cols


WORK_SPACING_MM = 0.05
"""Films finer than this (mm/px) are searched on a copy binned to about this spacing.

A 0.5 mm smoothing is 10 pixels there; a finer grid adds work, not accuracy,
and the kernels and patches of the search stay bounded in pixels."""

SEARCHABLE_SPACING_MM = (0.001, 5.0)
"""Pixel spacings (mm/px) the edge search works with; outside, points are left alone.

Below, even the binned grid would need kernels of hundreds of pixels (or the
film is a few millimetres wide); above, the search radius is below a pixel."""

MAX_SIGMA_PX = 64.0
"""Largest Gaussian standard deviation applied directly, pixels (wider ones are
computed on a reduced copy, :func:`blur_wide`)."""

MAX_PATCH_PX = 2048
"""Largest side of a searched patch, pixels of the searched grid."""

DOUBLED_MAX_MM = 2.8
"""Two falls across an endplate at most this far apart (and at least
``AMBIGUITY_SEPARATION_MM``), with no rise between them, are the two rims of
a doubled contour: the edge is taken midway (measurements.md)."""

DOUBLED_RATIO = 0.45
"""The weaker fall of a doubled contour is at least this fraction of the stronger."""

MAX_PROFILE_SAMPLES = 1025
"""Largest number of samples along one search profile."""


def spacing_searchable(row_mm: float, col_mm: float) -> bool:
    """True when both spacings lie in :data:`SEARCHABLE_SPACING_MM`."""
    lo, hi = SEARCHABLE_SPACING_MM
    return all(math.isfinite(v) and lo <= v <= hi for v in (row_mm, col_mm))


def _bin_factor(spacing_mm: float, size_px: int) -> int:
    """Integer binning bringing ``spacing_mm`` up to about :data:`WORK_SPACING_MM`,
    leaving at least 16 pixels of the film's ``size_px``."""
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        return 1
    wanted = math.floor(min(WORK_SPACING_MM / spacing_mm, 1e6))
    return int(max(1, min(wanted, size_px // 16)))


def prepare_image(pixels: np.ndarray, row_mm: float, col_mm: float) -> PreparedImage:
    h, w = pixels.shape
    bin_rows, bin_cols = _bin_factor(row_mm, h), _bin_factor(col_mm, w)
    if bin_rows > 1 or bin_cols > 1:
        cropped = pixels[: (h // bin_rows) * bin_rows, : (w // bin_cols) * bin_cols]
        if not np.all(np.isfinite(cropped)):
            cropped = np.nan_to_num(cropped, nan=0.0, posinf=0.0, neginf=0.0)
        grid = cv2.resize(cropped, (w // bin_cols, h // bin_rows), interpolation=cv2.INTER_AREA)
    else:
        grid = pixels
    step = max(1, int(math.sqrt(grid.size / 60_000)))
    sample = grid[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        dynamic = float(hi - lo)
    else:
        dynamic = 0.0
    floor = MIN_CONTRAST_FRACTION * dynamic if dynamic > 0 else np.finfo(np.float32).tiny
    return PreparedImage(
        pixels=grid,
        row_mm=row_mm,
        col_mm=col_mm,
        contrast_floor=floor,
        bin_rows=bin_rows,
        bin_cols=bin_cols,
    )


@dataclass(frozen=True, slots=True)
class Field:
    """Smoothed gradients (intensity per mm) and intensity over a rectangular patch.

    ``layers`` is ``(rows, columns, 5)``: search-scale ``d/dx``, ``d/dy``,
    fine-scale ``d/dx``, ``d/dy`` (x, y in mm), and the smoothed intensity.
    """

    image: PreparedImage
    row0: int
    col0: int
    layers: np.ndarray
    threshold: float  # accepted peak directional derivative, intensity per mm

    def sample(self, pts_mm: np.ndarray) -> np.ndarray:
        """Bilinear samples of every layer at ``pts_mm`` (..., 2) -> (..., 5); NaN outside."""
        flat = pts_mm.reshape(-1, 2)
        rows, cols = self.image.to_grid(flat)
        rows = rows - self.row0
        cols = cols - self.col0
        h, w, k = self.layers.shape
        inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
        r0 = clamp(np.floor(rows).astype(np.intp), 0, h - 2)
        c0 = clamp(np.floor(cols).astype(np.intp), 0, w - 2)
        fr = (rows - r0)[:, None]
        fc = (cols - c0)[:, None]
        gr, gc = 1 - fr, 1 - fc
        # The four neighbours by flat index (one take each, all layers at once).
        lay = self.layers.reshape(-1, k)
        i = r0 * w + c0
        values = (
            lay.take(i, axis=0) * (gr * gc)
            + lay.take(i + 1, axis=0) * (gr * fc)
            + lay.take(i + w, axis=0) * (fr * gc)
            + lay.take(i + (w + 1), axis=0) * (fr * fc)
        )
        values[~inside] = np.nan
        return values.reshape(*pts_mm.shape[:-1], k)

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


def blur_wide(patch: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Gaussian blur of a wide kernel, computed on a reduced copy (fast, smooth).

    A kernel wider than twice the patch is taken as twice the patch (the blur
    is then nearly flat either way), and the kernel applied is at most
    :data:`MAX_SIGMA_PX`, so the work is bounded by the patch.  The copy is
    reduced by a power of two, the patch first extended (mirrored) to a
    multiple of it: the reduced pixels then sit on the image's own grid
    whatever the patch's size (patches start on a grid of 128 pixels), so
    two patches give the same values where they overlap, away from their
    borders.
    """
    h, w = patch.shape
    sigma_x = float(min(sigma_x, 2 * w))
    sigma_y = float(min(sigma_y, 2 * h))
    wanted = max(1.0, min(min(sigma_x, sigma_y) // 3, max(1, min(h, w) // 4)))
    factor = 2 ** int(math.floor(math.log2(wanted)))
    if factor == 1 or h < 4 * factor or w < 4 * factor:
        return cv2.GaussianBlur(
            patch,
            ksize=(0, 0),
            sigmaX=min(sigma_x, MAX_SIGMA_PX),
            sigmaY=min(sigma_y, MAX_SIGMA_PX),
            borderType=cv2.BORDER_REFLECT,
        )
    full_h, full_w = -(-h // factor) * factor, -(-w // factor) * factor
    if (full_h, full_w) != (h, w):
        patch = cv2.copyMakeBorder(patch, 0, full_h - h, 0, full_w - w, cv2.BORDER_REFLECT)
    small = cv2.resize(patch, (full_w // factor, full_h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small,
        ksize=(0, 0),
        sigmaX=min(sigma_x / factor, MAX_SIGMA_PX),
        sigmaY=min(sigma_y / factor, MAX_SIGMA_PX),
        borderType=cv2.BORDER_REFLECT,
    )
    return cv2.resize(small, (full_w, full_h), interpolation=cv2.INTER_LINEAR)[:h, :w]


def _sigma_px(sigma_mm: float, spacing_mm: float, *, floor: float = 0.0) -> float:
    """``sigma_mm`` in pixels of ``spacing_mm``, within ``[floor, MAX_SIGMA_PX]``."""
    return float(min(max(sigma_mm / spacing_mm, floor), MAX_SIGMA_PX))


_PATCH_GRID_PX = 128


def _span(lo: float, hi: float, pad: int, size: int) -> tuple[int, int]:
    """``[lo - pad, hi + pad]`` in whole pixels, inside ``[0, size)`` and at most
    :data:`MAX_PATCH_PX` long (centred on ``lo..hi`` when cut)."""
    # Bounds on a grid of _PATCH_GRID_PX pixels: points moved a little give
    # the same patch, the same noise estimate and so the same decisions.
    a = max(0, (int(math.floor(lo)) - pad) // _PATCH_GRID_PX * _PATCH_GRID_PX)
    b = min(size, -(-(int(math.ceil(hi)) + pad + 1) // _PATCH_GRID_PX) * _PATCH_GRID_PX)
    if b - a > MAX_PATCH_PX:
        mid = int(round(0.5 * (lo + hi)))
        a = max(0, min(mid - MAX_PATCH_PX // 2, size - MAX_PATCH_PX))
        b = min(size, a + MAX_PATCH_PX)
    return a, b


_NOISE_SAMPLE_MM = 0.5


def _noise_samples(lo: float, hi: float, pad: int, a: int, b: int, spacing_mm: float) -> slice:
    """Rows (or columns) of the searched grid where the noise is sampled, as a
    slice of the patch ``[a, b)``: ``[lo - pad, hi + pad]`` inside the patch,
    about every :data:`_NOISE_SAMPLE_MM`, on multiples of the step (the
    image's own grid, not the patch's)."""
    first = max(a, int(math.ceil(lo - pad)))
    last = min(b - 1, int(math.floor(hi + pad)))
    if last < first:
        first, last = a, b - 1
    step = max(1, min(int(round(_NOISE_SAMPLE_MM / spacing_mm)), (last - first + 1) // 64))
    start = -(-first // step) * step
    if start > last:
        return slice(first - a, first - a + 1)
    return slice(start - a, last + 1 - a, step)


def edge_threshold(fld: Field, pts_mm: np.ndarray, pad_mm: float) -> float:
    """The accepted peak fall (intensity per mm) around ``pts_mm`` (N, 2):
    :data:`EDGE_NOISE_FACTOR` times the robust (MAD) noise of one gradient
    component over the points plus ``pad_mm``, sampled on the image's grid
    (within the patch), and at least the film's contrast floor.

    A function of the points and the image only, not of the patch: the same
    points give the same threshold, whatever patch holds them.
    """
    ys, xs = fld.image.to_grid(pts_mm)
    h, w, _ = fld.layers.shape
    row_mm, col_mm = fld.image.work_row_mm, fld.image.work_col_mm
    pad_r, pad_c = int(math.ceil(pad_mm / row_mm)), int(math.ceil(pad_mm / col_mm))
    r0, c0 = fld.row0, fld.col0
    rows = _noise_samples(float(np.min(ys)), float(np.max(ys)), pad_r, r0, r0 + h, row_mm)
    cols = _noise_samples(float(np.min(xs)), float(np.max(xs)), pad_c, c0, c0 + w, col_mm)
    # Both gradient components of the sampled grid (the medians do not depend
    # on their order).
    comps = fld.layers[rows, cols, :2].ravel()
    noise = 1.4826 * float(np.median(np.abs(comps - np.median(comps))))
    # A step of height C blurred by the smoothing peaks at C / (sqrt(2 pi) sigma).
    floor = fld.image.contrast_floor / (math.sqrt(2 * math.pi) * SMOOTHING_MM)
    return max(EDGE_NOISE_FACTOR * noise, floor)


def make_field(
    image: PreparedImage, pts_mm: np.ndarray, margin_mm: float, *, threshold: bool = True
) -> Field | None:
    """Smooth and differentiate the patch covering ``pts_mm`` plus ``margin_mm``.

    Every kernel and the patch are bounded in pixels (:data:`MAX_SIGMA_PX`,
    :data:`MAX_PATCH_PX`) and by the image, whatever the spacing; None when
    the patch is empty or the spacing is beyond any arithmetic (1e-30 to
    1e30 mm/px).  The field's threshold is the noise around ``pts_mm``
    (:func:`edge_threshold`); without ``threshold``, for a caller that sets
    its own, it is not computed and left at 0, to be replaced before any
    edge search.
    """
    h, w = image.shape
    row_mm, col_mm = image.work_row_mm, image.work_col_mm
    if not all(1e-30 <= v <= 1e30 for v in (row_mm, col_mm)):
        return None  # gradients per mm would leave float32's range
    sig_r = _sigma_px(SMOOTHING_MM, row_mm)
    sig_c = _sigma_px(SMOOTHING_MM, col_mm)
    reach_mm = margin_mm + 1.5 * BACKGROUND_MM
    pad_r = int(min(math.ceil(min(reach_mm / row_mm, MAX_PATCH_PX)), MAX_PATCH_PX)) + 2
    pad_c = int(min(math.ceil(min(reach_mm / col_mm, MAX_PATCH_PX)), MAX_PATCH_PX)) + 2
    ys, xs = image.to_grid(pts_mm)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return None
    if (
        np.max(ys) < -pad_r
        or np.min(ys) > h + pad_r
        or np.max(xs) < -pad_c
        or np.min(xs) > w + pad_c
    ):
        return None
    r0, r1 = _span(float(np.min(ys)), float(np.max(ys)), pad_r, h)
    c0, c1 = _span(float(np.min(xs)), float(np.max(xs)), pad_c, w)
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
    background = blur_wide(
        patch,
        min(BACKGROUND_MM / col_mm, 4 * MAX_PATCH_PX),
        min(BACKGROUND_MM / row_mm, 4 * MAX_PATCH_PX),
    )
    fine = cv2.GaussianBlur(
        patch,
        ksize=(0, 0),
        sigmaX=_sigma_px(FINE_SMOOTHING_MM, col_mm, floor=_FINE_MIN_PX),
        sigmaY=_sigma_px(FINE_SMOOTHING_MM, row_mm, floor=_FINE_MIN_PX),
        borderType=cv2.BORDER_REFLECT,
    )
    # The band-passes in place of the blurs they are made from (the background last).
    fine_gx, fine_gy = _gradients(np.subtract(fine, background, out=fine), row_mm, col_mm)
    gx, gy = _gradients(np.subtract(smooth, background, out=background), row_mm, col_mm)
    # Interleaved (rows, columns, 5): a bilinear sample reads its four pixels'
    # layers together (cv2.merge interleaves several times faster than np.stack).
    layers = cv2.merge([gx, gy, fine_gx, fine_gy, smooth])
    fld = Field(image=image, row0=r0, col0=c0, layers=layers, threshold=0.0)
    if not threshold:
        return fld
    return replace(fld, threshold=edge_threshold(fld, pts_mm, reach_mm))


def _gradients(band: np.ndarray, row_mm: float, col_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``d/dx`` and ``d/dy`` of ``band`` per mm (central differences; divided in
    place: a patch-sized array fewer each)."""
    gx = central_difference(band, axis=1)
    gx /= col_mm
    gy = central_difference(band, axis=0)
    gy /= row_mm
    return gx, gy


def central_difference(array: np.ndarray, *, axis: int) -> np.ndarray:
    """``(f[i+1] - f[i-1]) / 2`` along ``axis`` (rows 0, columns 1), edges reflected."""
    kernel = np.array([[-0.5, 0.0, 0.5]], np.float32)
    return cv2.filter2D(
        array, cv2.CV_32F, kernel if axis == 1 else kernel.T, borderType=cv2.BORDER_REFLECT
    )


# -- one-dimensional edge search ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    offset: float | None  # mm along the profile direction; None when not accepted
    score: float | None  # peak / threshold
    flag: RefineFlag | None
    doubled: bool = False  # accepted midway between the two falls of a doubled contour


def clamp(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``np.clip`` for the small arrays of this module, without its overhead."""
    return np.minimum(np.maximum(a, lo), hi)


def parabola_shift(values: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Sub-sample shift (in samples) of the peaks at ``i`` (one per row)."""
    rows = np.arange(values.shape[0])
    a, b, c = values[rows, i - 1], values[rows, i], values[rows, i + 1]
    denom = a - 2 * b + c
    curved = denom < 0
    shift = np.zeros(a.shape)
    shift[curved] = 0.5 * (a[curved] - c[curved]) / denom[curved]
    return clamp(shift, -0.5, 0.5)


def local_maxima(f: np.ndarray) -> np.ndarray:
    """``f`` (K, S) where it is a local maximum along each row, -inf elsewhere."""
    inner = f[:, 1:-1]
    is_peak = (inner > f[:, :-2]) & (inner >= f[:, 2:])
    peaks = np.full_like(f, -np.inf)
    peaks[:, 1:-1] = np.where(is_peak, inner, -np.inf)
    return peaks


def _rim_pairs(
    f: np.ndarray,
    t: np.ndarray,
    level: np.ndarray,
    first: np.ndarray,
    peaks: np.ndarray,
    gap_mm: tuple[float, float],
    floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``f`` (K, S) whose fall at ``first`` has a second fall of a
    doubled contour, and the offset midway between the two (mm).

    The second fall is the largest of ``peaks`` (the local maxima of ``f``)
    ``gap_mm`` from the first (beyond the lower bound), above ``floor`` and
    at least :data:`DOUBLED_RATIO` of the first, and beyond the outer one
    (1 mm outside) the film is darker than anywhere between the two: two
    rims (or a rim and a half-dense body), then the disc.
    """
    k, n = f.shape
    h = float(t[1] - t[0])
    rows = np.arange(k)
    peak = peaks[rows, first]
    gap = np.abs(t[None, :] - t[first][:, None])
    window = (gap > gap_mm[0]) & (gap <= gap_mm[1])
    second = np.where(window, peaks, -np.inf)
    j = np.argmax(second, axis=1)
    strength = second[rows, j]
    candidate = (
        np.isfinite(peak)
        & (peak > 0)
        & np.isfinite(strength)
        & (strength >= floor)
        & (strength >= DOUBLED_RATIO * peak)
    )
    doubled = np.zeros(k, dtype=bool)
    offset = np.zeros(k)
    if not candidate.any():
        return doubled, offset
    r = np.nonzero(candidate)[0]
    a = np.minimum(first[r], j[r])
    b = np.maximum(first[r], j[r])
    cols = np.arange(n)[None, :]
    span = (cols >= a[:, None]) & (cols <= b[:, None])
    lev = level[r]
    between_ok = np.all(np.isfinite(lev) | ~span, axis=1)
    lowest = np.min(np.where(span, lev, np.inf), axis=1)
    # The outer rim of a doubled contour faces the disc: beyond the outer
    # fall the film is darker than between the two falls.
    beyond = max(1, int(round(1.0 / h)))
    outside = lev[np.arange(r.size), np.minimum(b + beyond, n - 1)]
    ok = between_ok & (outside < lowest)
    r, a, b = r[ok], a[ok], b[ok]
    if r.size:
        safe = np.where(np.isfinite(f[r]), f[r], 0.0)
        ends_a, ends_b = clamp(a, 1, n - 2), clamp(b, 1, n - 2)
        shift_a = parabola_shift(safe, ends_a)
        shift_b = parabola_shift(safe, ends_b)
        doubled[r] = True
        offset[r] = 0.5 * (t[ends_a] + shift_a * h + t[ends_b] + shift_b * h)
    return doubled, offset


CLOSE_DOUBLED_MM = (0.6, 1.6)
"""Two maxima of the fine-scale fall this far apart (mm) at the edge found on
the search scale are the two rims of a doubled contour too close for that
scale to tell apart (it sees the stronger rim with the weaker as a shoulder)."""


def _close_doubled(
    fine: np.ndarray, t: np.ndarray, level: np.ndarray, chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the fine-scale fall ``fine`` (K, S; -inf where not sampled) whose
    edge at ``chosen`` is a close doubled contour, and the offset midway (mm).

    The largest maximum of ``fine`` within ``SMOOTHING_MM`` of the
    search-scale edge (the one the fine scale relocates it to) and the
    largest one ``CLOSE_DOUBLED_MM`` from it make the pair
    (:func:`_rim_pairs`): the two rims of a doubled contour, which the
    search-scale smoothing merges into one fall.
    """
    peaks = local_maxima(fine)
    near = np.abs(t[None, :] - t[chosen][:, None]) <= SMOOTHING_MM
    first = np.argmax(np.where(near, peaks, -np.inf), axis=1)
    return _rim_pairs(fine, t, level, first, peaks, CLOSE_DOUBLED_MM, 0.0)


def find_edges(
    fall: np.ndarray,
    t: np.ndarray,
    threshold: float,
    fine: np.ndarray | None = None,
    level: np.ndarray | None = None,
    *,
    resolve_double: bool = False,
) -> list[Edge]:
    """Locate the strongest outward fall on each row of ``fall`` (K, S).

    ``fall`` is minus the outward derivative, sampled at offsets ``t`` (mm,
    evenly spaced).  Returns one :class:`Edge` per row: the sub-sample offset
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
        return [Edge(None, None, RefineFlag.OUTSIDE_IMAGE)] * k
    finite = np.all(np.isfinite(fall), axis=1)
    f = np.where(np.isfinite(fall), fall, -np.inf)
    peaks = local_maxima(f)
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
    doubled = np.zeros(k, dtype=bool)
    mid_offset = np.zeros(k)
    if level is not None and resolve_double:
        doubled, mid_offset = _rim_pairs(
            f, t, level, i, peaks, (AMBIGUITY_SEPARATION_MM, DOUBLED_MAX_MM), threshold
        )
        rival = np.where(doubled, -np.inf, rival)
    if level is not None and resolve_double:
        # Double edges: keep the one whose outside (1 mm beyond) is darker.
        io = level[rows, clamp(i + beyond, 0, n - 1)]
        ro = level[rows, clamp(rival_at + beyond, 0, n - 1)]
        step = peak * math.sqrt(2 * math.pi) * SMOOTHING_MM
        double = np.isfinite(peaks[rows, rival_at]) & (rival >= AMBIGUITY_RATIO * peak)
        take_rival = double & (ro < io - 0.25 * step)
        keep_best = double & (io < ro - 0.25 * step)
        chosen = np.where(take_rival, rival_at, i)
        rival = np.where(take_rival | keep_best, -np.inf, rival)
        peak = np.where(take_rival, peaks[rows, rival_at], peak)
    safe_i = clamp(chosen, 1, n - 2)
    offset = t[safe_i] + parabola_shift(np.where(np.isfinite(f), f, 0.0), safe_i) * h
    if fine is not None:
        near = np.abs(t[None, :] - t[chosen][:, None]) <= SMOOTHING_MM
        fine_f = np.where(near & np.isfinite(fine), fine, -np.inf)
        j = np.argmax(fine_f, axis=1)
        # A maximum of the fine profile itself (it may sit on the window's
        # border), not merely the largest value inside the window.
        safe_j = clamp(j, 1, n - 2)
        whole = np.where(np.isfinite(fine), fine, -np.inf)
        inside = (
            (j == safe_j)
            & (whole[rows, safe_j] > whole[rows, safe_j - 1])
            & (whole[rows, safe_j] >= whole[rows, safe_j + 1])
        )
        fine_offset = t[safe_j] + parabola_shift(np.where(np.isfinite(fine), fine, 0.0), safe_j) * h
        offset = np.where(inside, fine_offset, offset)
        # Only where an edge is accepted and not yet doubled does it matter.
        todo = np.nonzero(~doubled & (peak >= threshold))[0]
        if level is not None and resolve_double and todo.size:
            close, close_offset = _close_doubled(whole[todo], t, level[todo], chosen[todo])
            doubled[todo] = close
            mid_offset[todo] = np.where(close, close_offset, mid_offset[todo])
    score = np.max(f, axis=1) / threshold
    stepless = np.zeros(k, dtype=bool)
    if level is not None:
        drop = (
            level[rows, clamp(chosen - beyond, 0, n - 1)]
            - level[rows, clamp(chosen + beyond, 0, n - 1)]
        )
        implied = peak * math.sqrt(2 * math.pi) * SMOOTHING_MM
        stepless = ~(drop >= 0.5 * implied)
    out = []
    for r in range(k):
        if not finite[r]:
            out.append(Edge(None, None, RefineFlag.OUTSIDE_IMAGE))
        elif not has_peak[r]:
            out.append(Edge(None, float(score[r]), RefineFlag.WEAK_EDGE))
        elif peak[r] < threshold or stepless[r]:
            out.append(Edge(None, float(peak[r] / threshold), RefineFlag.WEAK_EDGE))
        elif doubled[r]:
            out.append(Edge(float(mid_offset[r]), float(peak[r] / threshold), None, doubled=True))
        elif rival[r] >= AMBIGUITY_RATIO * peak[r]:
            out.append(Edge(None, float(peak[r] / threshold), RefineFlag.AMBIGUOUS_EDGE))
        else:
            out.append(Edge(float(offset[r]), float(peak[r] / threshold), None))
    return out


def find_edge(
    fall: np.ndarray,
    t: np.ndarray,
    threshold: float,
    fine: np.ndarray | None = None,
    level: np.ndarray | None = None,
    *,
    resolve_double: bool = False,
) -> Edge:
    """:func:`find_edges` on a single profile."""
    return find_edges(
        fall[None, :],
        t,
        threshold,
        None if fine is None else fine[None, :],
        None if level is None else level[None, :],
        resolve_double=resolve_double,
    )[0]


def profile_offsets(image: PreparedImage, radius_mm: float) -> np.ndarray:
    step = 0.5 * min(image.work_row_mm, image.work_col_mm)
    half = MAX_PROFILE_SAMPLES // 2
    n = max(3, int(math.ceil(min(radius_mm / step, half)))) if step > 0 else half
    return np.linspace(-radius_mm, radius_mm, 2 * n + 1)


def edges_on_strip(
    fld: Field, bases: np.ndarray, normal: np.ndarray, t: np.ndarray, *, endplate: bool
) -> list[Edge]:
    """One edge search per base point along ``normal`` (outward).

    ``endplate``: the profiles cross an endplate (towards the disc), so a
    double edge is settled by the darker outside (:func:`find_edges`).
    """
    pts = bases[:, None, :] + t[None, :, None] * normal[None, None, :]
    fall, fine, level = fld.falls(pts, normal)
    return find_edges(fall, t, fld.threshold, fine, level, resolve_double=endplate)


def edge_on_average(
    fld: Field, bases: np.ndarray, normal: np.ndarray, t: np.ndarray, *, endplate: bool
) -> Edge:
    """One edge search on the profiles through ``bases`` averaged together."""
    pts = bases[:, None, :] + t[None, :, None] * normal[None, None, :]
    fall, fine, level = fld.falls(pts, normal)
    if not np.all(np.isfinite(fall)):
        return Edge(None, None, RefineFlag.OUTSIDE_IMAGE)
    return find_edge(
        fall.mean(axis=0),
        t,
        fld.threshold,
        fine.mean(axis=0),
        level.mean(axis=0),
        resolve_double=endplate,
    )


# The mean fall along an edge line found by :func:`edge_line` is accepted
# above this fraction of the one-profile threshold (the mean of a dozen nearly
# independent profiles has a third of one profile's noise).
_LINE_FACTOR = 0.5


def edge_line(
    fld: Field,
    origin: np.ndarray,
    inward: np.ndarray,
    across: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
) -> tuple[float, float, float] | None:
    """The clearest straight edge across the profiles through ``origin + s *
    inward`` along ``across`` (outward): ``(a, b, score)``, the line
    ``offset(s) = a + b s`` and its mean fall over the threshold, or None.

    Every line within :data:`_MAX_SLOPE` of the profiles' normal is scored by
    the mean fall along it, so an edge that no single profile shows above
    the threshold (the wall of a faint body) is found where the profiles
    agree on it, and a profile crossing something else (a spur's base, a
    rib) only weakens it.  The line taken is the strongest that is a local
    maximum across, at least :data:`_LINE_FACTOR` of the threshold, with a
    real drop of intensity across it (as in :func:`find_edges`); none when
    a fall without that drop, the band-pass's echo of a strong rise (a rib,
    bowel gas), is stronger by more than 1 / :data:`AMBIGUITY_RATIO`: the
    profiles are then about something else.
    """
    k, n = s.size, t.size
    h = float(t[1] - t[0])
    centred = s - float(s.mean())
    reach = float(np.max(np.abs(centred)))
    if n < 5 or k < _MIN_VALID_PROFILES or reach <= 0:
        return None
    pts = origin[None, None, :] + s[:, None, None] * inward + t[None, :, None] * across
    fall, _, level = fld.falls(pts, across)
    if not (np.all(np.isfinite(fall)) and np.all(np.isfinite(level))):
        return None
    # Slopes a sample apart at the ends of the strip (two apart missed the
    # wall's best line often enough to cost the benchmark 0.15 mm at p95);
    # the line through offset t_j at the strip's centre reads each profile
    # at t_j + slope * s.
    steps = int(math.ceil(_MAX_SLOPE * reach / h))
    slopes = np.arange(-steps, steps + 1) * (h / reach)
    at = (t[None, None, :] - t[0] + slopes[:, None, None] * centred[None, :, None]) / h
    inside = np.all((at >= 0) & (at <= n - 1), axis=1)
    j0 = clamp(np.floor(at).astype(np.intp), 0, n - 2)
    w = at - j0
    flat = j0 + (np.arange(k) * n)[None, :, None]

    def along(values: np.ndarray, i: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
        """Mean of ``values`` (K, S) read at flat indices ``i`` plus fractions ``f``."""
        v = values.ravel()
        return (v.take(i) * (1 - f) + v.take(i + 1) * f).mean(axis=axis)

    mean_fall = np.where(inside, along(fall, flat, w, 1), -np.inf)
    best = np.argmax(mean_fall, axis=0)
    cols = np.arange(n)
    response = mean_fall[best, cols]
    # The intensity along the best line through each offset only: (S, K).
    mean_level = along(level, flat[best, :, cols], w[best, :, cols], 1)
    beyond = max(1, int(round(1.0 / h)))
    drop = mean_level[clamp(cols - beyond, 0, n - 1)] - mean_level[clamp(cols + beyond, 0, n - 1)]
    real = np.isfinite(response) & (drop >= 0.5 * response * math.sqrt(2 * math.pi) * SMOOTHING_MM)
    every = local_maxima(response[None, :])[0]
    peaks = np.where(real, every, -np.inf)
    j = int(np.argmax(peaks))
    if not peaks[j] >= max(_LINE_FACTOR * fld.threshold, AMBIGUITY_RATIO * float(np.max(every))):
        return None
    b = float(slopes[best[j]])
    finite = np.where(np.isfinite(response), response, 0.0)[None, :]
    shift = float(parabola_shift(finite, np.array([j]))[0])  # 0 < j < n - 1: a maximum
    return float(t[j]) + shift * h - b * float(s.mean()), b, float(response[j]) / fld.threshold


def fit_offsets(
    s: np.ndarray, edges: list[Edge], *, curved: bool = True
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
        coef = edge_curve(ss[mask], oo[mask], curved=curved)
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


def edge_curve(s: np.ndarray, offset: np.ndarray, *, curved: bool) -> np.ndarray | None:
    """Coefficients (highest power first) of the least-squares line through
    ``offset(s)``, or of the parabola when ``curved`` and it bends into the
    body significantly (:func:`fit_offsets`); None when degenerate."""
    line = polyfit(s, offset, 1)
    if not curved or line is None or s.size < _MIN_CURVE_PROFILES:
        return None if line is None else line[0]
    quad = polyfit(s, offset, 2)
    if quad is None:
        return line[0]
    coef, inverse = quad
    res = offset - np.polyval(coef, s)
    sigma2 = float(res @ res) / (s.size - 3)
    # Standard error of the curvature; a floor of 0.02 mm on the residual
    # keeps a perfect (noise-free) fit from making any bend significant.
    se = math.sqrt(inverse[0, 0] * max(sigma2, 0.02**2))
    return coef if -coef[0] > _CURVATURE_SIGNIFICANCE * se else line[0]


def polyfit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray] | None:
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


def majority_flag(edges: list[Edge]) -> RefineFlag:
    flags = [e.flag for e in edges if e.flag is not None]
    if flags and flags.count(RefineFlag.OUTSIDE_IMAGE) == len(edges):
        return RefineFlag.OUTSIDE_IMAGE
    if flags.count(RefineFlag.AMBIGUOUS_EDGE) > flags.count(RefineFlag.WEAK_EDGE):
        return RefineFlag.AMBIGUOUS_EDGE
    return RefineFlag.WEAK_EDGE


def best_score(edges: list[Edge]) -> float | None:
    scores = [e.score for e in edges if e.score is not None]
    return max(scores) if scores else None
