"""Image formation of the phantom: attenuation, detector, processing.

The film is built as a map of X-ray attenuation line integrals ``A`` (soft
tissue of the trunk, lungs above the diaphragm, bowel gas, ribs, vertebral
bodies with a cortical shell and trabecular texture, posterior elements,
PMMA cement), then exposed: primary ``exp(-A)`` with the anode heel effect,
focal-spot blur, scatter, quantum noise (Gaussian approximation of Poisson,
variance = mean number of quanta, scaled by ``dose``), the detector's point
spread, a logarithmic response and a frequency processing step like those of
commercial CR/DX systems (large-area contrast compressed, detail enhanced).

Coordinates follow :mod:`vheight.phantom.anatomy`: image pixels ``(x, y)``
with the centre of the top-left pixel at ``(0, 0)``; the film is rendered with
the patient facing right and mirrored at the end when facing left.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from vheight.phantom.anatomy import (
    POINT_NAMES,
    Patient,
    Spine,
    Vertebra,
    build_spine,
    make_patient,
)
from vheight.phantom.spec import (
    LEVELS,
    Facing,
    FilmSpec,
    Photometric,
    SpacingTags,
)

__all__ = ["PhantomFilm", "LevelTruth", "render_film", "header_spacing"]

#: Supersampling factor of the vertebrae (edges placed to 1/SS pixel).
SS = 2

MU_SOFT = 0.0185  # soft tissue, 1/mm (effective energy about 60 keV)


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelTruth:
    """True geometry of one annotated level, as a reader measures it (mm).

    ``*_loss_pct`` use the ``adjacent`` reference of measurements.md over the
    annotated levels of the film; ``None`` where the level has no annotated
    neighbour.
    """

    level: str
    anterior_height_mm: float
    middle_height_mm: float
    posterior_height_mm: float
    depth_mm: float
    fracture: str | None
    cement: bool
    anterior_loss_pct: float | None
    middle_loss_pct: float | None
    posterior_loss_pct: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "anterior_height_mm": self.anterior_height_mm,
            "middle_height_mm": self.middle_height_mm,
            "posterior_height_mm": self.posterior_height_mm,
            "depth_mm": self.depth_mm,
            "fracture": self.fracture,
            "cement": self.cement,
            "anterior_loss_pct": self.anterior_loss_pct,
            "middle_loss_pct": self.middle_loss_pct,
            "posterior_loss_pct": self.posterior_loss_pct,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PhantomFilm:
    """A rendered film: stored pixel values, header facts and the truth.

    Attributes
    ----------
    pixels
        ``uint16`` (rows, columns) stored values, read-only, ``bits_stored``
        significant bits; bright bone is high for MONOCHROME2, low for
        MONOCHROME1.
    landmarks
        Level -> point name -> ``(x, y)`` true landmark, image pixels.
    truth
        Level -> :class:`LevelTruth`.
    row_spacing_mm, col_spacing_mm
        The spacing a reader derives from the header (patient plane), mm.
    window_center, window_width, window_explanation
        VOI presets in stored values (the first is the default).
    """

    spec: FilmSpec
    pixels: np.ndarray
    landmarks: Mapping[str, Mapping[str, tuple[float, float]]]
    truth: Mapping[str, LevelTruth]
    row_spacing_mm: float
    col_spacing_mm: float
    window_center: tuple[float, ...]
    window_width: tuple[float, ...]
    window_explanation: tuple[str, ...]


def header_spacing(spec: FilmSpec) -> tuple[float, float, dict[str, object]]:
    """Patient-plane spacing a reader computes, and the header values that give it.

    The spacing is derived from the decimal strings actually written (DICOM DS),
    so the landmarks and the header agree to floating-point precision.
    """
    ermf = _ds(spec.ermf)
    row, col = _ds(spec.row_spacing_mm), _ds(spec.col_spacing_mm)
    tags: dict[str, object] = {}
    if spec.spacing_tags is SpacingTags.IMAGER_ERMF or spec.spacing_tags is SpacingTags.IMAGER:
        irow, icol = _ds(row * ermf), _ds(col * ermf)
        tags["ImagerPixelSpacing"] = [irow, icol]
        if spec.spacing_tags is SpacingTags.IMAGER_ERMF and ermf > 1:
            tags["EstimatedRadiographicMagnificationFactor"] = ermf
            return irow / ermf, icol / ermf, tags
        if spec.spacing_tags is SpacingTags.IMAGER_ERMF:
            tags["EstimatedRadiographicMagnificationFactor"] = ermf
        return irow / ermf, icol / ermf, tags
    if spec.spacing_tags is SpacingTags.PIXEL_GEOMETRY:
        tags["PixelSpacing"] = [row, col]
        tags["PixelSpacingCalibrationType"] = "GEOMETRY"
        tags["PixelSpacingCalibrationDescription"] = "Phantom geometry (patient plane)"
        tags["ImagerPixelSpacing"] = [_ds(row * ermf), _ds(col * ermf)]
        tags["EstimatedRadiographicMagnificationFactor"] = ermf
        return row, col, tags
    if spec.spacing_tags is SpacingTags.PIXEL:
        tags["PixelSpacing"] = [row, col]
        return row, col, tags
    return row, col, tags


def _ds(value: float) -> float:
    """The float a DICOM DS string of ``value`` reads back as (12 significant digits)."""
    return float(f"{float(value):.12g}")


# --------------------------------------------------------------------------- helpers


def _affine_compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=float).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def _lowpass(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass of a large sigma, computed on a downsampled copy (fast)."""
    if sigma_px < 6:
        return cv2.GaussianBlur(img, (0, 0), sigma_px)
    factor = max(1, int(sigma_px / 3))
    h, w = img.shape
    small = cv2.resize(
        img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _fill(shape: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    """Binary uint8 mask of polygons given in (sub)pixel coordinates (x, y)."""
    mask = np.zeros(shape, np.uint8)
    pts = [np.round(np.asarray(p) * 16).astype(np.int32).reshape(-1, 1, 2) for p in polys]
    cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
    return mask


class _Placement:
    """Patient frame (mm, facing right) -> image pixels (facing right)."""

    def __init__(
        self, spec: FilmSpec, spine: Spine, rng: np.random.Generator, row_mm: float, col_mm: float
    ) -> None:
        self.row_mm, self.col_mm = row_mm, col_mm
        width_mm = spec.columns * col_mm
        height_mm = spec.rows * row_mm
        jitter = rng.uniform(-1, 1, 3)
        bodies = np.vstack([v.to_patient(v.outline_local()) for v in spine.annotated])
        ymid = (bodies[:, 1].min() + bodies[:, 1].max()) / 2
        xmid = float(np.mean([v.origin_mm[0] for v in spine.annotated]))
        # The bodies sit a little anterior of the film's centre so the
        # posterior elements and the back are in the field.
        centre = np.array(
            [width_mm * (0.57 + 0.02 * jitter[0]), height_mm * (0.5 + 0.015 * jitter[1])]
        )
        theta = math.radians(spec.rotation_deg + 0.8 * jitter[2])
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s], [s, c]])
        # rotation about the spine's centre, then the placement and the shift
        t = centre + np.array(spec.shift_mm) - rot @ np.array([xmid, ymid])
        to_mm = np.hstack([rot, t[:, None]])
        scale = np.array([[1 / col_mm, 0, -0.5], [0, 1 / row_mm, -0.5]])
        # pixel centre convention: the pixel (0, 0) covers [0, spacing) mm
        self.patient_to_px = _affine_compose(scale, to_mm)
        self.px_to_patient = cv2.invertAffineTransform(self.patient_to_px)

    def px(self, pts: np.ndarray) -> np.ndarray:
        return _apply(self.patient_to_px, pts)


# --------------------------------------------------------------------------- anatomy


def _profile_x(spine: Spine, local_pt: tuple[float, float] | str) -> tuple[np.ndarray, np.ndarray]:
    """Patient (Y, X) of a landmark-like point on every drawn vertebra, sorted by Y."""
    ys, xs = [], []
    for v in spine.vertebrae:
        if local_pt == "posterior":
            p = (-v.depth_mm / 2, -v.posterior_height_mm / 2)
        else:
            p = (v.depth_mm / 2, -v.anterior_height_mm / 2)
        q = v.to_patient(np.array(p))[0]
        xs.append(q[0])
        ys.append(q[1])
    order = np.argsort(ys)
    return np.asarray(ys)[order], np.asarray(xs)[order]


def _interp_linear(y: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation with linear extrapolation at both ends."""
    out = np.interp(y, ys, xs)
    lo_slope = (xs[1] - xs[0]) / (ys[1] - ys[0])
    hi_slope = (xs[-1] - xs[-2]) / (ys[-1] - ys[-2])
    out = np.where(y < ys[0], xs[0] + (y - ys[0]) * lo_slope, out)
    out = np.where(y > ys[-1], xs[-1] + (y - ys[-1]) * hi_slope, out)
    return out.astype(np.float32)


def _soft_tissue(
    spec: FilmSpec, spine: Spine, place: _Placement, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation of the trunk, lungs and bowel gas; and the body mask."""
    patient = spine.patient
    rows, cols = spec.rows, spec.columns
    # patient coordinates of every pixel, computed on a 1/2 grid (smooth fields)
    f = 2
    gy, gx = np.mgrid[0:rows:f, 0:cols:f].astype(np.float32)
    m = place.px_to_patient.astype(np.float32)  # keep the grids float32
    X = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    Y = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]

    ys, post = _profile_x(spine, "posterior")
    _, ant = _profile_x(spine, "anterior")
    x_post = _interp_linear(Y, ys, post)
    x_ant = _interp_linear(Y, ys, ant)
    # back skin: thicker over the lumbar muscles, following the lordosis
    y_l1 = (
        float(spine.by_level("L1").origin_mm[1])
        if any(v.level == "L1" for v in spine.vertebrae)
        else 0.0
    )
    back = patient.back_mm + 10.0 * np.tanh((Y - y_l1) / 80.0)
    x_skin = x_post - back
    depth = patient.trunk_depth_mm
    xc = x_skin + depth / 2
    r = (X - xc) / (depth / 2)
    k = np.where(r < 0, 4.0, 2.2).astype(np.float32)
    chord = patient.trunk_width_mm * np.clip(1 - np.abs(r) ** k, 0, None) ** (1 / k)
    # subcutaneous fat is less dense than muscle
    fat = _smoothstep((X - x_skin) / 25.0)
    mu = MU_SOFT * (0.86 + 0.14 * fat)
    a = mu * chord
    # paraspinal muscles: slightly denser band behind the spine
    a += 0.12 * np.exp(-(((X - (x_post - 35)) / 22.0) ** 2)) * (chord > 0)

    # lungs above two hemidiaphragms (domes, lower posteriorly)
    t11 = spine.by_level("T11") if any(v.level == "T11" for v in spine.vertebrae) else None
    y_dome = (
        (t11.origin_mm[1] if t11 else float(ys[0]) - 40.0) - 25.0 + 35.0 * patient.diaphragm_level
    )
    x_dome = x_ant + 40.0
    air = np.zeros_like(X)
    for offset, k in ((0.0, 1.0), (13.0, 0.85)):
        yd = y_dome + offset + 85.0 * k * (1 - np.exp(-(((X - x_dome) / 110.0) ** 2)))
        above = np.clip(yd - Y, 0, None)
        path = 120.0 * (1 - np.exp(-above / 16.0))
        post_taper = _smoothstep((X - x_skin - 5.0) / 70.0)
        heart = 1 - 0.55 * _smoothstep((X - x_ant - 25.0) / 60.0)
        # the spine, aorta and paraspinal muscles displace lung around the column
        column = 1 - 0.5 * np.exp(-(((X - (x_post + x_ant) / 2) / 40.0) ** 2))
        air += 0.5 * path * post_taper * heart * column
    a -= MU_SOFT * air
    # faint lung markings
    cell = max(2, int(round(4.0 / (place.row_mm * f))))
    lung_tex = rng.normal(0, 1, (X.shape[0] // cell + 2, X.shape[1] // cell + 2)).astype(np.float32)
    lung_tex = cv2.resize(lung_tex, (X.shape[1], X.shape[0]), interpolation=cv2.INTER_CUBIC)
    a += 0.035 * lung_tex * (air / 120.0)

    # bowel gas: soft-edged lucent blobs anterior to the lumbar spine
    y_diaph = y_dome + 60.0
    gas = np.zeros_like(X)
    for _ in range(int(rng.integers(4, 10))):
        cy = rng.uniform(y_diaph + 20, y_diaph + 260)
        cx0 = float(_interp_linear(np.array([cy]), ys, ant)[0])
        cx = cx0 + rng.uniform(5, 120)
        for _ in range(int(rng.integers(2, 7))):
            bx, by = cx + rng.normal(0, 10), cy + rng.normal(0, 8)
            ra, rb = rng.uniform(5, 16), rng.uniform(4, 11)
            ang = rng.uniform(0, math.pi)
            reach = 1.15 * max(ra, rb)
            sel = np.nonzero(
                (np.abs(X[:, ::8] - bx) < reach).any(axis=1)
                & (np.abs(Y[:, ::8] - by) < reach).any(axis=1)
            )[0]
            if sel.size == 0:
                continue
            r0, r1 = int(sel[0]), int(sel[-1]) + 1
            cols_sel = np.nonzero(
                ((np.abs(X[r0:r1] - bx) < reach) & (np.abs(Y[r0:r1] - by) < reach)).any(axis=0)
            )[0]
            if cols_sel.size == 0:
                continue
            c0, c1 = int(cols_sel[0]), int(cols_sel[-1]) + 1
            xs_, ys_ = X[r0:r1, c0:c1], Y[r0:r1, c0:c1]
            du = (xs_ - bx) * math.cos(ang) + (ys_ - by) * math.sin(ang)
            dv = -(xs_ - bx) * math.sin(ang) + (ys_ - by) * math.cos(ang)
            rr = np.sqrt((du / ra) ** 2 + (dv / rb) ** 2)
            # lobulated, not elliptical: bowel loops and haustra
            theta = np.arctan2(dv / rb, du / ra)
            p1, p2 = rng.uniform(0, 2 * math.pi, 2)
            rr = rr * (1 + 0.16 * np.sin(3 * theta + p1) + 0.09 * np.sin(5 * theta + p2))
            blob = rng.uniform(7, 20) * (1 - _smoothstep((rr - 0.5) / 0.7))
            np.maximum(gas[r0:r1, c0:c1], blob, out=gas[r0:r1, c0:c1])
    a -= MU_SOFT * gas

    a = np.clip(a, 0, None).astype(np.float32)
    body = (chord > 0).astype(np.float32)
    a = cv2.resize(a, (cols, rows), interpolation=cv2.INTER_LINEAR)
    body = cv2.resize(body, (cols, rows), interpolation=cv2.INTER_LINEAR)
    return a, body


def _ribs(
    spec: FilmSpec, spine: Spine, place: _Placement, rng: np.random.Generator, a: np.ndarray
) -> None:
    """Faint curved rib bands (both sides, slightly offset) for thoracic levels."""
    mm = (place.row_mm + place.col_mm) / 2
    mask_all = np.zeros(a.shape, np.float32)
    ys, post = _profile_x(spine, "posterior")
    patient = spine.patient
    for v in spine.vertebrae:
        if not v.level.startswith("T"):
            continue
        n = int(v.level[1:])
        joint = v.to_patient(np.array([-v.depth_mm / 2 - 3.0, -v.posterior_height_mm - 1.0]))[0]
        x_skin = joint[0] - patient.back_mm + 5.0
        length = {11: 0.45, 12: 0.32}.get(n, 0.62)
        for dy, grow in ((0.0, 1.0), (7.0 + rng.uniform(-2, 2), 1.05)):
            p0 = joint + np.array([0.0, dy])
            p1 = np.array([x_skin + 5.0, joint[1] - 8.0 + dy])
            p2 = np.array([x_skin + 12.0, joint[1] + 70.0 * grow + dy])
            p3 = np.array([joint[0] + 150.0 * grow, joint[1] + 160.0 * grow + dy])
            t = np.linspace(0, length, 60)[:, None]
            curve = (
                (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
            )
            pts = place.px(curve)
            width_px = max(2, int(round((8.5 + 0.3 * n) / mm)))
            canvas = np.zeros(a.shape, np.uint8)
            cv2.polylines(
                canvas,
                [np.round(pts * 4).astype(np.int32).reshape(-1, 1, 2)],
                False,
                1,
                thickness=width_px,
                lineType=cv2.LINE_8,
                shift=2,
            )
            mask_all += canvas
    if not mask_all.any():
        return
    binary = (mask_all > 0).astype(np.uint8)
    d = cv2.distanceTransform(binary, cv2.DIST_L2, 3) * mm
    cortex = np.exp(-(((d - 0.7) / 0.7) ** 2))
    ribs = (0.045 * mask_all + 0.065 * cortex * binary).astype(np.float32)
    a += cv2.GaussianBlur(ribs, (0, 0), 0.6)


def _overlap(
    spec: FilmSpec, spine: Spine, place: _Placement, rng: np.random.Generator, a: np.ndarray
) -> None:
    """Rib shadows and bowel gas across the annotated bodies (``spec.realism``)."""
    realism = spec.realism
    assert realism is not None
    mm = (place.row_mm + place.col_mm) / 2
    rows, cols = a.shape
    bodies = [place.px(v.to_patient(v.outline_local())) for v in spine.annotated]
    if realism.rib_bands:
        canvas = np.zeros(a.shape, np.uint8)
        for _ in range(realism.rib_bands):
            outline = bodies[int(rng.integers(0, len(bodies)))]
            centre = outline.mean(axis=0) + rng.uniform(-0.35, 0.35, 2) * np.ptp(outline, axis=0)
            angle = math.radians(rng.uniform(15.0, 40.0)) * (1 if rng.uniform() < 0.5 else -1)
            bend = rng.uniform(-25.0, 25.0) / mm
            t = np.linspace(-1.0, 1.0, 40)[:, None]
            half = 70.0 / mm
            along = np.array([math.cos(angle), math.sin(angle)])
            across = np.array([-along[1], along[0]])
            curve = centre + t * half * along + (1 - t**2) * bend * across
            cv2.polylines(
                canvas,
                [np.round(curve * 4).astype(np.int32).reshape(-1, 1, 2)],
                False,
                1,
                thickness=max(2, int(round(rng.uniform(8.0, 11.0) / mm))),
                lineType=cv2.LINE_8,
                shift=2,
            )
        d = cv2.distanceTransform(canvas, cv2.DIST_L2, 3) * mm
        cortex = np.exp(-(((d - 0.7) / 0.7) ** 2))
        ribs = (0.06 * canvas + 0.08 * cortex * canvas).astype(np.float32)
        a += cv2.GaussianBlur(ribs, (0, 0), 0.6)
    for _ in range(realism.gas_blobs):
        outline = bodies[int(rng.integers(0, len(bodies)))]
        bx, by = outline.mean(axis=0) + rng.uniform(-0.5, 0.5, 2) * np.ptp(outline, axis=0)
        ra, rb = rng.uniform(6.0, 18.0) / mm, rng.uniform(5.0, 12.0) / mm
        reach = 1.2 * max(ra, rb)
        x0, x1 = int(max(0, bx - reach)), int(min(cols, bx + reach + 1))
        y0, y1 = int(max(0, by - reach)), int(min(rows, by + reach + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ang = rng.uniform(0, math.pi)
        du = (xx - bx) * math.cos(ang) + (yy - by) * math.sin(ang)
        dv = -(xx - bx) * math.sin(ang) + (yy - by) * math.cos(ang)
        rr = np.sqrt((du / ra) ** 2 + (dv / rb) ** 2)
        theta = np.arctan2(dv / rb, du / ra)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        rr = rr * (1 + 0.16 * np.sin(3 * theta + p1) + 0.09 * np.sin(5 * theta + p2))
        blob = rng.uniform(8.0, 22.0) * (1 - _smoothstep((rr - 0.5) / 0.7))
        a[y0:y1, x0:x1] -= MU_SOFT * blob.astype(np.float32)
    np.maximum(a, 0.0, out=a)


@functools.lru_cache(maxsize=48)
def _texture_patch(
    seed: int, level: str, res: float = 0.15
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Trabecular texture on a fixed local grid: (array, mm per cell, (u0, v0)).

    Fixed in the vertebra's frame, so a patient's films share the pattern.
    """
    rng = np.random.default_rng([seed, LEVELS.index(level)])
    u0, v0 = -30.0, -40.0
    h, w = int(46.0 / res) + 1, int(60.0 / res) + 1
    iso = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.6 / res)
    vert = cv2.GaussianBlur(
        rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigmaX=0.35 / res, sigmaY=1.6 / res
    )
    low = _lowpass(rng.standard_normal((h, w)).astype(np.float32), 3.0 / res)
    tex = (
        0.13 * iso / (iso.std() + 1e-6)
        + 0.13 * vert / (vert.std() + 1e-6)
        + 0.07 * low / (low.std() + 1e-6)
    )
    tex = tex.astype(np.float32)
    tex.flags.writeable = False
    return tex, res, (u0, v0)


def _vertebra(
    v: Vertebra,
    spec: FilmSpec,
    place: _Placement,
    patient: Patient,
    a: np.ndarray,
    cement: bool,
    cement_rng_seed: int,
) -> None:
    """Draw one vertebra (body, posterior elements, cement) into ``a``."""
    rows, cols = a.shape
    mm = (place.row_mm + place.col_mm) / 2
    to_px = _affine_compose(place.patient_to_px, v.local_affine())
    outline = _apply(to_px, v.outline_local())
    parts = {k: _apply(to_px, p) for k, p in v.posterior_elements_local().items()}
    spur_px = [_apply(to_px, p) for p in v.osteophytes_local()]
    soft = v.soft_tissue_local()
    if soft is not None:  # the soft-tissue layer reaches past the body's margin
        edge, top, bottom = soft
        box = [(edge + 1.0, top - v.disc_above_mm), (edge + 1.0, bottom + v.disc_below_mm)]
        spur_px.append(_apply(to_px, np.array(box)))
    allpts = np.vstack([outline, *parts.values(), *spur_px])
    margin = 4.0 / mm
    x0 = int(max(0, math.floor(allpts[:, 0].min() - margin)))
    y0 = int(max(0, math.floor(allpts[:, 1].min() - margin)))
    x1 = int(min(cols, math.ceil(allpts[:, 0].max() + margin)))
    y1 = int(min(rows, math.ceil(allpts[:, 1].max() + margin)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    h, w = (y1 - y0) * SS, (x1 - x0) * SS
    # image px -> supersampled ROI px
    roi = np.array([[SS, 0, (0.5 - x0) * SS - 0.5], [0, SS, (0.5 - y0) * SS - 0.5]], float)
    local_to_ss = _affine_compose(roi, to_px)
    ssmm = mm / SS

    spurs = [_apply(local_to_ss, p) for p in v.osteophytes_local()]
    inv = cv2.invertAffineTransform(local_to_ss).astype(np.float32)
    gx = np.arange(w, dtype=np.float32)[None, :]
    gy = np.arange(h, dtype=np.float32)[:, None]
    xi = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) / (v.depth_mm / 2)
    tex, res, (u0, v0) = _texture_patch(patient.texture_seed, v.level, max(0.15, round(ssmm, 2)))
    tex_to_local = np.array([[res, 0, u0], [0, res, v0]])
    m_tex = _affine_compose(local_to_ss, tex_to_local)
    tex_ss = cv2.warpAffine(
        tex, m_tex, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    width_factor = v.width_mm / 45.0
    # A doubled endplate: the body drawn twice, its endplates moved half the
    # distance between the rims either way, at half weight (the landmarks sit
    # midway); otherwise once.
    sup, inf = v.doubled_sup_mm / 2, v.doubled_inf_mm / 2
    variants = [(0.0, 0.0, 1.0)] if not (sup or inf) else [(-sup, -inf, 0.5), (sup, inf, 0.5)]
    dens = np.zeros((h, w), np.float32)
    body = np.zeros((h, w), np.uint8)
    d_body = np.full((h, w), -np.inf, np.float32)
    for shift_sup, shift_inf, weight in variants:
        part = _fill((h, w), [_apply(local_to_ss, v.outline_local(shift_sup, shift_inf))])
        for spur in spurs:  # one at a time: overlapping polygons of one call cancel out
            part = np.maximum(part, _fill((h, w), [spur]))
        d_part = cv2.distanceTransform(part, cv2.DIST_L2, 5) * ssmm - 0.5 * ssmm
        # lateral path length: rounded near the edges of the body
        s = np.clip(d_part / 6.0, 0, 1)
        path = np.sqrt(1 - (1 - s) ** 2)
        # the body is rounded in front (kidney-shaped cross-section): the lateral
        # path through it shortens towards the anterior wall
        path *= 0.72 + 0.28 * np.sqrt(np.clip(1 - np.clip(xi, 0, 1) ** 2, 0, 1))
        trab = 0.33 * width_factor * path * (1 + tex_ss)
        rim = 0.13 * np.exp(-0.5 * ((d_part - 0.5) / 0.4) ** 2)
        layer = (trab + rim) * part

        # endplates seen edge-on: a bright band just inside each endplate
        plates = np.zeros((h, w), np.uint8)
        thick = max(1, int(round(0.8 / ssmm)))
        for curve, inward in ((v.superior_endplate(), 1.0), (v.inferior_endplate(), -1.0)):
            c = v.shifted(curve, shift_sup, shift_inf)
            c[:, 1] += inward * 0.45
            pts = _apply(local_to_ss, c)
            cv2.polylines(
                plates,
                [np.round(pts * 4).astype(np.int32).reshape(-1, 1, 2)],
                False,
                1,
                thickness=thick,
                lineType=cv2.LINE_8,
                shift=2,
            )
        layer += 0.30 * width_factor * plates * part
        dens += weight * layer
        body = np.maximum(body, part)
        d_body = np.maximum(d_body, d_part)
    if v.density != 1.0:
        dens *= v.density

    if v.fracture is not None:
        # compacted, sclerotic trabeculae under the collapsed endplate
        band = np.zeros((h, w), np.uint8)
        c = v.superior_endplate()
        c[:, 1] += 2.8
        pts = _apply(local_to_ss, c)
        cv2.polylines(
            band,
            [np.round(pts * 4).astype(np.int32).reshape(-1, 1, 2)],
            False,
            1,
            thickness=max(1, int(round(3.5 / ssmm))),
            lineType=cv2.LINE_8,
            shift=2,
        )
        strength = 0.12 + 0.004 * v.fracture.loss_pct
        dens += strength * cv2.GaussianBlur(band.astype(np.float32), (0, 0), 1.0 / ssmm) * body

    # posterior elements: two pedicles and pillars overlap in the lateral view
    pe = np.zeros((h, w), np.float32)
    weights = {"pedicle": 0.20, "pillar": 0.18, "spinous": 0.13}
    for name, poly in v.posterior_elements_local().items():
        pts = _apply(local_to_ss, poly)
        # work in the part's own box (plus a margin for the distance transform)
        bx0 = int(max(0, math.floor(pts[:, 0].min()) - 2))
        by0 = int(max(0, math.floor(pts[:, 1].min()) - 2))
        bx1 = int(min(w, math.ceil(pts[:, 0].max()) + 3))
        by1 = int(min(h, math.ceil(pts[:, 1].max()) + 3))
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            continue
        mk = _fill((by1 - by0, bx1 - bx0), [pts - (bx0, by0)])
        dk = cv2.distanceTransform(mk, cv2.DIST_L2, 3) * ssmm
        # a rounded bone: thicker inside, with a cortical rim
        core = np.sqrt(np.clip(dk / 2.5, 0, 1))
        rim = np.exp(-0.5 * ((dk - 0.7) / 0.6) ** 2)
        pe[by0:by1, bx0:bx1] += weights[name] * mk * (0.45 + 0.55 * core + 0.8 * rim)
    (cu, cv_), (ru, rv) = v.transverse_process_local()
    uu = np.array([[cu, cv_]])
    c_ss = _apply(local_to_ss, uu)[0]
    tp = np.zeros((h, w), np.float32)
    ang = math.degrees(math.radians(v.angle_deg))
    cv2.ellipse(
        tp,
        (int(round(c_ss[0])), int(round(c_ss[1]))),
        (max(1, int(ru / ssmm)), max(1, int(rv / ssmm))),
        ang,
        0,
        360,
        1.0,
        -1,
    )
    pe += 0.10 * cv2.GaussianBlur(tp, (0, 0), 0.6 / ssmm)
    column = v.pedicle_column_local()
    if column is not None:
        # as dense as the endplate's band, so the band seems to run on past
        # the posterior corner
        mask = _fill((h, w), [_apply(local_to_ss, column)]).astype(np.float32)
        pe += 0.35 * width_factor * mask * (1 - body)
    dens += pe * (1 - 0.5 * body)
    if soft is not None:
        dens += _soft_tissue_layer(v, soft, inv, (h, w)) * (1 - body)

    if cement:
        dens += _cement(v, local_to_ss, (h, w), d_body, body, tex_ss, cement_rng_seed)

    small = cv2.resize(dens.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    a[y0:y1, x0:x1] += small


SOFT_TISSUE_LAYER = 0.10
"""Density of the soft-tissue layer in front of the body over the tissue
beyond it, in the units of the body's (its trabecular bone is about 0.33 at
full path, the endplate's band 0.30 more): far below a normal body's wall,
but next to an osteoporotic body's (``low_contrast``) the two falls are
of a size, which is where a snapper may take the wrong one."""


def _soft_tissue_layer(
    v: Vertebra, soft: tuple[float, float, float], inv: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Density of the soft-tissue layer in front of the body, on the ROI grid
    (``inv``: ROI px -> local mm): from the wall (the body hides what lies
    behind it) to the edge ``u = edge`` (a ramp 1 mm wide: soft tissue has
    no cortex), at full density from corner to corner and fading out over
    the discs, so it is a long, smooth edge with no ends of its own next to
    the corners."""
    edge, top, bottom = soft
    h, w = shape
    gx = np.arange(w, dtype=np.float32)[None, :]
    gy = np.arange(h, dtype=np.float32)[:, None]
    u = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    vv = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    # from 2 mm behind the line of the corners (the wall's waist), a ramp in
    inner = v.depth_mm / 2 - 2.0
    across = _smoothstep((edge + 0.5 - u) / 1.0) * _smoothstep((u - inner + 0.5) / 1.0)
    along = _smoothstep((vv - top + v.disc_above_mm) / v.disc_above_mm) * _smoothstep(
        (bottom + v.disc_below_mm - vv) / v.disc_below_mm
    )
    return (SOFT_TISSUE_LAYER * v.width_mm / 45.0 * across * along).astype(np.float32)


def _cement(
    v: Vertebra,
    local_to_ss: np.ndarray,
    shape: tuple[int, int],
    d_body: np.ndarray,
    body: np.ndarray,
    tex_ss: np.ndarray,
    seed: int,
) -> np.ndarray:
    """PMMA cloud: blobby, mostly in the anterior two thirds, inside the body."""
    rng = np.random.default_rng([seed, LEVELS.index(v.level)])
    h, w = shape
    inv = cv2.invertAffineTransform(local_to_ss).astype(np.float32)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    vv = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    d2 = v.depth_mm / 2
    hm = (v.anterior_height_mm + v.posterior_height_mm) / 2
    xi = u / d2  # -1 posterior .. 1 anterior
    eta = (vv + hm / 2) / hm  # -0.5 top .. 0.5 bottom
    field = np.zeros_like(u)
    blobs = [
        (rng.uniform(0.05, 0.2), rng.uniform(-0.1, 0.05), 0.5, 0.36, 1.0),
        (rng.uniform(-0.05, 0.25), rng.uniform(-0.05, 0.12), 0.42, 0.32, 0.9),
    ]
    for _ in range(int(rng.integers(6, 11))):
        blobs.append(
            (
                rng.uniform(-0.45, 0.7),
                rng.uniform(-0.35, 0.35),
                rng.uniform(0.06, 0.16),
                rng.uniform(0.05, 0.12),
                rng.uniform(0.4, 0.9),
            )
        )
    for cx, cy, sx, sy, wt in blobs:
        field += wt * np.exp(-0.5 * (((xi - cx) / sx) ** 2 + ((eta - cy) / sy) ** 2))
    field *= 1 + 0.6 * tex_ss
    thickness = np.clip((field - 0.5) / 0.9, 0, 1) ** 0.6
    # interdigitation with the trabeculae at the margin of the cloud
    thickness *= np.clip(1 + 0.8 * tex_ss * (1 - thickness), 0, None)
    inside = _smoothstep((d_body - 0.6) / 1.2) * body
    return (2.4 * thickness * inside).astype(np.float32)


# --------------------------------------------------------------------------- exposure


def _expose(
    a: np.ndarray,
    body: np.ndarray,
    spec: FilmSpec,
    rng: np.random.Generator,
    mm: float,
    spine_roi: tuple[slice, slice],
) -> tuple[np.ndarray, float]:
    rows, cols = a.shape
    heel = (1.0 + 0.10 * (np.arange(rows, dtype=np.float32) / rows - 0.5))[:, None]
    primary = np.exp(-a) * heel
    # focal spot and a little breathing motion (patient plane)
    primary = cv2.GaussianBlur(primary, (0, 0), max(0.3, 0.18 / mm))
    # scatter arises in the patient: spread the primary transmitted through tissue only
    scatter = 0.6 * _lowpass(primary * body, 35.0 / mm)
    signal = primary + scatter
    # automatic exposure control: quanta per pixel behind the spine
    ref = float(np.median(signal[spine_roi]))
    quanta = 1400.0 * spec.dose * (mm / 0.17) ** 2
    n0 = quanta / max(ref, 1e-12)
    counts = signal * n0
    noise = rng.standard_normal(counts.shape, dtype=np.float32)
    counts = (
        counts + np.sqrt(counts) * noise + 2.0 * rng.standard_normal(counts.shape, dtype=np.float32)
    )
    counts = cv2.GaussianBlur(counts, (0, 0), max(0.35, spec.blur_mm / mm))
    log = np.log(n0 * 1.2) - np.log(np.maximum(counts, 1.0))
    return log.astype(np.float32), n0


def _process(
    log: np.ndarray, body: np.ndarray, spec: FilmSpec, rng: np.random.Generator, mm: float
) -> np.ndarray:
    """Frequency processing and the characteristic curve -> [0, 1] (bright = dense)."""
    # the local mean of tissue only (normalised convolution), so that the air
    # next to the skin does not make the subcutaneous tissue look dense
    weight = _lowpass(body, 25.0 / mm)
    low = _lowpass(log * body, 25.0 / mm) / np.maximum(weight, 1e-3)
    low = np.where(weight > 0.02, low, log).astype(np.float32)
    mid = _lowpass(log, 2.0 / mm)
    out = 0.22 * low + 1.0 * (mid - low) + 1.3 * (log - mid)
    sample = out[::4, ::4][body[::4, ::4] > 0.5]
    if sample.size < 100:
        sample = out[::4, ::4].ravel()
    # robust to a little very dense material (cement): it goes above the bone
    lo, hi = np.percentile(sample, [0.5, 98.0])
    exposure = spec.exposure if spec.exposure is not None else float(rng.uniform(-0.5, 0.5))
    # bone at about 85 % of the range leaves headroom for cement and metal
    x = 0.02 + 0.72 * (out - lo) / max(hi - lo, 1e-6)
    x = x + 0.10 * exposure
    # a gentle S-shaped characteristic curve
    x = np.clip(x, -0.2, 1.3)
    y = 0.5 + 0.5 * np.tanh(2.4 * (x - 0.5)) / np.tanh(1.2)
    return np.clip(y, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- public


def render_film(spec: FilmSpec) -> PhantomFilm:
    """Render ``spec``: stored pixels, true landmarks and true heights (no I/O)."""
    row_mm, col_mm, _ = header_spacing(spec)
    patient = make_patient(spec.seed)
    spine = build_spine(spec, patient)
    rng = np.random.default_rng([spec.resolved_acquisition_seed, 2])
    place = _Placement(spec, spine, rng, row_mm, col_mm)
    mm = (row_mm + col_mm) / 2

    landmarks: dict[str, dict[str, tuple[float, float]]] = {}
    for v in spine.annotated:
        local = v.landmarks_local()
        pts = place.px(v.to_patient(np.array([local[n] for n in POINT_NAMES])))
        outline = place.px(v.to_patient(v.outline_local()))
        margin_x, margin_y = 1.0 / col_mm, 1.0 / row_mm
        if (
            outline[:, 0].min() < margin_x
            or outline[:, 1].min() < margin_y
            or outline[:, 0].max() > spec.columns - 1 - margin_x
            or outline[:, 1].max() > spec.rows - 1 - margin_y
        ):
            span = (spec.rows * row_mm, spec.columns * col_mm)
            raise ValueError(
                f"vertebra {v.level} does not fit in the film ({spec.rows} x {spec.columns} px "
                f"= {span[0]:.0f} x {span[1]:.0f} mm): use a larger size or spacing, or fewer "
                "levels"
            )
        landmarks[v.level] = {
            n: (float(p[0]), float(p[1])) for n, p in zip(POINT_NAMES, pts, strict=True)
        }

    a, body = _soft_tissue(spec, spine, place, rng)
    _ribs(spec, spine, place, rng, a)
    if spec.realism is not None:
        # its own generator: the rest of the film is drawn as without realism
        extra = np.random.default_rng([spec.resolved_acquisition_seed, 21])
        _overlap(spec, spine, place, extra, a)
    for v in spine.vertebrae:
        _vertebra(v, spec, place, patient, a, v.level in spec.cement_levels, patient.cement_seed)

    ann = np.vstack([np.array(list(p.values())) for p in landmarks.values()])
    y0, y1 = int(ann[:, 1].min()), int(ann[:, 1].max()) + 1
    x0, x1 = int(ann[:, 0].min()), int(ann[:, 0].max()) + 1
    log, _ = _expose(a, body, spec, rng, mm, (slice(y0, y1), slice(x0, x1)))
    img = _process(log, body, spec, rng, mm)

    maxval = (1 << spec.bits_stored) - 1
    stored = np.round(img * maxval).astype(np.uint16)
    if spec.photometric is Photometric.MONOCHROME1:
        stored = (maxval - stored).astype(np.uint16)
    if spec.facing is Facing.LEFT:
        stored = np.ascontiguousarray(stored[:, ::-1])
        landmarks = {
            lv: {n: (spec.columns - 1 - x, y) for n, (x, y) in pts.items()}
            for lv, pts in landmarks.items()
        }
    stored.flags.writeable = False

    # default window: the spine region, in stored values
    roi = stored[y0:y1, max(0, x0 - (x1 - x0) // 2) : x1]
    lo, hi = np.percentile(roi[::2, ::2], [1.0, 99.5])
    center = float(round((lo + hi) / 2))
    width = float(max(2.0, round(hi - lo)))
    truth = _truth(spine, spec)
    return PhantomFilm(
        spec=spec,
        pixels=stored,
        landmarks=landmarks,
        truth=truth,
        row_spacing_mm=row_mm,
        col_spacing_mm=col_mm,
        window_center=(center, float((maxval + 1) / 2)),
        window_width=(width, float(maxval + 1)),
        window_explanation=("SPINE", "FULL RANGE"),
    )


def _truth(spine: Spine, spec: FilmSpec) -> dict[str, LevelTruth]:
    ann = {v.level: v for v in spine.annotated}
    out: dict[str, LevelTruth] = {}
    for lv, v in ann.items():
        heights = (v.anterior_height_mm, v.middle_height_mm, v.posterior_height_mm)
        i = LEVELS.index(lv)
        neighbours = [
            ann[LEVELS[j]] for j in (i - 1, i + 1) if 0 <= j < len(LEVELS) and LEVELS[j] in ann
        ]
        losses: list[float | None] = []
        for k, attr in enumerate(("anterior_height_mm", "middle_height_mm", "posterior_height_mm")):
            if not neighbours:
                losses.append(None)
                continue
            ref = sum(getattr(n, attr) for n in neighbours) / len(neighbours)
            losses.append(100.0 * (1 - heights[k] / ref))
        out[lv] = LevelTruth(
            level=lv,
            anterior_height_mm=heights[0],
            middle_height_mm=heights[1],
            posterior_height_mm=heights[2],
            depth_mm=v.depth_mm,
            fracture=str(v.fracture) if v.fracture else None,
            cement=lv in spec.cement_levels,
            anterior_loss_pct=losses[0],
            middle_loss_pct=losses[1],
            posterior_loss_pct=losses[2],
        )
    return out
