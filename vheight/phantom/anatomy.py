"""Geometry of the phantom's thoracolumbar spine, in millimetres (pure numpy).

Frames
------
*Local frame of a vertebra*: ``u`` points anteriorly, ``v`` caudally (down);
the origin is the midpoint of the chord of the inferior endplate, whose
corners are ``IA = (D/2, 0)`` and ``IP = (-D/2, 0)``; the superior corners are
``SA = (D/2, -Ha)`` and ``SP = (-D/2, -Hp)``.  The anterior and posterior
heights are therefore exactly ``Ha`` and ``Hp``.  The middle points lie on the
endplate curves at ``u = 0`` (mid-distance between the corners), so the middle
height is exactly ``(Ha + Hp) / 2 - c_sup - c_inf`` where ``c`` are the
endplate concavities at the middle.

*Patient frame*: ``X`` anterior, ``Y`` down, mm, with the patient facing
right.  :func:`build_spine` stacks the vertebrae from the top, each separated
by a disc whose anterior and posterior heights set the angle between them.

*Image*: ``x`` column, ``y`` row, pixels, centre of the top-left pixel is
``(0, 0)``; ``x_px = X_img_mm / col_spacing_mm``.  A film of a patient facing
left is the mirror image ``x -> columns - 1 - x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from vheight.phantom.spec import (
    DRAWABLE_LEVELS,
    LEVELS,
    FilmSpec,
    Fracture,
    FractureKind,
    Realism,
)

__all__ = [
    "NORMAL_BODY_MM",
    "DISC_BELOW_MM",
    "CRUSH_PROFILE",
    "POINT_NAMES",
    "Patient",
    "Vertebra",
    "Spine",
    "make_patient",
    "solve_heights",
    "build_spine",
    "with_realism",
]

POINT_NAMES: tuple[str, ...] = (
    "superior_anterior",
    "superior_middle",
    "superior_posterior",
    "inferior_anterior",
    "inferior_middle",
    "inferior_posterior",
)

#: Normal adult vertebral body: anterior height, posterior height, depth
#: (antero-posterior), width (left-right), mm.  Heights and depths grow
#: caudally; thoracic bodies are slightly wedged (kyphosis), lower lumbar
#: bodies slightly taller in front (lordosis).
NORMAL_BODY_MM: dict[str, tuple[float, float, float, float]] = {
    "T6": (17.2, 18.6, 25.0, 27.0),
    "T7": (17.8, 19.3, 26.0, 28.0),
    "T8": (18.6, 20.1, 27.5, 30.0),
    "T9": (19.6, 21.1, 29.0, 32.0),
    "T10": (20.7, 22.2, 30.5, 34.0),
    "T11": (21.8, 23.3, 32.0, 37.0),
    "T12": (23.0, 24.5, 34.0, 40.0),
    "L1": (24.3, 25.5, 36.0, 43.0),
    "L2": (25.6, 26.3, 38.0, 46.0),
    "L3": (26.6, 26.8, 40.0, 48.0),
    "L4": (27.0, 26.6, 41.5, 50.0),
    "L5": (26.8, 24.8, 42.0, 51.0),
}

#: A solved height below this fraction of the level's normal height is refused
#: (consecutive fractures measured against each other can collapse a chain).
MIN_HEIGHT_FRACTION = 0.3

#: Share of a crush fracture's loss taken by the (anterior, middle, posterior) height.
CRUSH_PROFILE: tuple[float, float, float] = (0.85, 0.9, 1.0)

#: Intervertebral disc below each level: anterior and posterior height, mm.
DISC_BELOW_MM: dict[str, tuple[float, float]] = {
    "T6": (4.2, 3.8),
    "T7": (4.4, 3.9),
    "T8": (4.6, 4.0),
    "T9": (4.8, 4.1),
    "T10": (5.1, 4.3),
    "T11": (5.6, 4.6),
    "T12": (6.6, 5.0),
    "L1": (8.2, 5.4),
    "L2": (9.6, 5.7),
    "L3": (10.6, 6.0),
    "L4": (11.6, 6.2),
    "L5": (12.0, 5.8),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Patient:
    """Per-patient anatomical variation, drawn from the patient seed."""

    scale: float  # overall size factor
    level_jitter: dict[str, float]  # per-level height factor
    depth_jitter: dict[str, float]
    concavity_sup_mm: dict[str, float]
    concavity_inf_mm: dict[str, float]
    kyphosis_factor: float  # multiplies the thoracic wedging
    lordosis_factor: float  # multiplies the disc wedging
    tilt_deg: float  # overall lean of the column on the film
    back_mm: float  # posterior wall of L1 to the skin of the back
    trunk_depth_mm: float  # antero-posterior depth of the trunk
    trunk_width_mm: float  # left-right width of the trunk (beam path)
    diaphragm_level: float  # 0 (high) .. 1 (low)
    texture_seed: int
    cement_seed: int


def make_patient(seed: int) -> Patient:
    rng = np.random.default_rng([int(seed), 1])
    levels = DRAWABLE_LEVELS
    jitter = rng.normal(0.0, 0.018, len(levels))
    depth = rng.normal(0.0, 0.02, len(levels))
    csup = rng.uniform(0.35, 0.85, len(levels))
    cinf = rng.uniform(0.35, 0.85, len(levels))
    return Patient(
        scale=float(rng.uniform(0.94, 1.06)),
        level_jitter={lv: float(1 + j) for lv, j in zip(levels, jitter, strict=True)},
        depth_jitter={lv: float(1 + j) for lv, j in zip(levels, depth, strict=True)},
        concavity_sup_mm={lv: float(c) for lv, c in zip(levels, csup, strict=True)},
        concavity_inf_mm={lv: float(c) for lv, c in zip(levels, cinf, strict=True)},
        kyphosis_factor=float(rng.uniform(0.8, 1.5)),
        lordosis_factor=float(rng.uniform(0.85, 1.3)),
        tilt_deg=float(rng.uniform(-4.0, 4.0)),
        back_mm=float(rng.uniform(62.0, 85.0)),
        trunk_depth_mm=float(rng.uniform(230.0, 290.0)),
        trunk_width_mm=float(rng.uniform(300.0, 360.0)),
        diaphragm_level=float(rng.uniform(0.0, 1.0)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        cement_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _normal_heights(patient: Patient, level: str) -> tuple[float, float, float, float, float]:
    """Normal (Ha, Hm, Hp, depth, width) of a level for this patient, mm."""
    ha, hp, depth, width = NORMAL_BODY_MM[level]
    s = patient.scale * patient.level_jitter[level]
    mean = (ha + hp) / 2
    half = (hp - ha) / 2
    if level.startswith("T"):
        half *= patient.kyphosis_factor
    ha, hp = (mean - half) * s, (mean + half) * s
    hm = (ha + hp) / 2 - patient.concavity_sup_mm[level] - patient.concavity_inf_mm[level]
    d = depth * patient.scale * patient.depth_jitter[level]
    return ha, hm, hp, d, width * patient.scale


def solve_heights(
    normal: dict[str, tuple[float, float, float, float, float]],
    annotated: tuple[str, ...],
    fractures: tuple[Fracture, ...],
) -> dict[str, tuple[float, float, float]]:
    """True (Ha, Hm, Hp) of every annotated level, mm.

    ``normal`` maps every level to its normal ``(Ha, Hm, Hp, c_sup, c_inf)``.
    A fracture sets the height that names it (anterior for a wedge, middle for
    biconcave, posterior for crush) to ``(1 - loss) * mean(same height of the
    annotated neighbours)``, the ``adjacent`` reference of measurements.md,
    even when a neighbour is itself fractured (one small linear system per
    height), or to ``Fracture.height_mm`` when given.  Its other heights: a
    wedge keeps its normal posterior height and its middle height follows its
    endplates (``(Ha + Hp) / 2`` minus the normal concavities, about half the
    loss); a biconcave body keeps its normal anterior and posterior heights; a
    crushed body loses :data:`CRUSH_PROFILE` times the loss in front and in
    the middle (against the same adjacent reference), so the posterior loss
    is the largest and names it.
    """
    index = {lv: i for i, lv in enumerate(annotated)}
    by_level = {f.level: f for f in fractures}
    heights = {lv: [normal[lv][0], normal[lv][1], normal[lv][2]] for lv in annotated}
    named = {FractureKind.WEDGE: 0, FractureKind.BICONCAVE: 1, FractureKind.CRUSH: 2}

    def share(f: Fracture, h: int) -> float | None:
        """Fraction of the loss taken by height h, None when h stays anatomical."""
        if named[f.kind] == h:
            return 1.0
        if f.kind is FractureKind.CRUSH:
            return CRUSH_PROFILE[h]
        return None

    def solve(h: int) -> None:
        unknown = []
        for lv, f in by_level.items():
            if share(f, h) is None:
                continue
            if named[f.kind] == h and f.height_mm is not None:
                heights[lv][h] = float(f.height_mm)
            else:
                unknown.append(lv)
        if not unknown:
            return
        pos = {lv: k for k, lv in enumerate(unknown)}
        a = np.eye(len(unknown))
        b = np.zeros(len(unknown))
        for lv in unknown:
            f = by_level[lv]
            keep = 1.0 - share(f, h) * f.loss_pct / 100.0
            neighbours = [x for x in _adjacent(lv) if x in index]
            if not neighbours:
                raise ValueError(
                    f"fracture {f}: the loss is defined against the adjacent "
                    f"levels, but {lv} has no annotated neighbour"
                )
            for x in neighbours:
                if x in pos:
                    a[pos[lv], pos[x]] -= keep / len(neighbours)
                else:
                    b[pos[lv]] += keep * heights[x][h] / len(neighbours)
        for lv, value in zip(unknown, np.linalg.solve(a, b), strict=True):
            if not value >= MIN_HEIGHT_FRACTION * normal[lv][h]:
                names = ", ".join(str(by_level[x]) for x in unknown)
                raise ValueError(
                    f"fractures {names}: measured against each other (adjacent reference), "
                    f"the {('anterior', 'middle', 'posterior')[h]} height of {lv} would be "
                    f"{value:.1f} mm, under {MIN_HEIGHT_FRACTION:.0%} of normal "
                    f"({normal[lv][h]:.1f} mm): use lower losses or fewer consecutive fractures"
                )
            heights[lv][h] = float(value)

    solve(2)  # posterior: crush
    solve(0)  # anterior: wedge, crush
    for lv, f in by_level.items():
        if f.kind is FractureKind.WEDGE:  # the middle follows the tilted endplate
            ha, _, hp = heights[lv]
            heights[lv][1] = (ha + hp) / 2 - normal[lv][3] - normal[lv][4]
    solve(1)  # middle: biconcave, crush
    return {lv: (h[0], h[1], h[2]) for lv, h in heights.items()}


def _adjacent(level: str) -> list[str]:
    i = LEVELS.index(level)
    return [LEVELS[j] for j in (i - 1, i + 1) if 0 <= j < len(LEVELS)]


def _profile(t: np.ndarray, power: float) -> np.ndarray:
    return np.clip(1.0 - t * t, 0.0, None) ** power


@dataclass(frozen=True, slots=True, kw_only=True)
class Vertebra:
    """One drawn vertebra: shape in its local frame and pose in the patient frame."""

    level: str
    annotated: bool
    anterior_height_mm: float
    middle_height_mm: float
    posterior_height_mm: float
    depth_mm: float
    width_mm: float
    concavity_sup_mm: float
    concavity_inf_mm: float
    fracture: Fracture | None
    disc_above_mm: float
    disc_below_mm: float
    lumbar: float  # 0 thoracic .. 1 lumbar (shape of posterior elements)
    angle_deg: float  # rotation of the local frame in the patient frame
    origin_mm: tuple[float, float]  # local origin in the patient frame
    osteophyte_sup_mm: float = 0.0  # anterior spur at the superior endplate
    osteophyte_inf_mm: float = 0.0
    doubled_sup_mm: float = 0.0  # distance between the two projected rims
    doubled_inf_mm: float = 0.0
    density: float = 1.0  # bone density factor (osteoporotic < 1)
    pedicle_column_mm: float = 0.0  # a pedicle column flush with the superior endplate
    soft_tissue_edge_mm: float = 0.0  # a soft-tissue edge this far in front of the body

    # -- local geometry -----------------------------------------------------------

    def landmarks_local(self) -> dict[str, tuple[float, float]]:
        d, ha, hp = self.depth_mm, self.anterior_height_mm, self.posterior_height_mm
        return {
            "superior_anterior": (d / 2, -ha),
            "superior_middle": (0.0, -(ha + hp) / 2 + self.concavity_sup_mm),
            "superior_posterior": (-d / 2, -hp),
            "inferior_anterior": (d / 2, 0.0),
            "inferior_middle": (0.0, -self.concavity_inf_mm),
            "inferior_posterior": (-d / 2, 0.0),
        }

    def _endplate_power(self) -> float:
        if self.fracture is not None and self.fracture.kind is FractureKind.BICONCAVE:
            return 2.5
        return 1.4

    def superior_endplate(self, n: int = 48) -> np.ndarray:
        """Points of the superior endplate from posterior to anterior corner, (n, 2)."""
        d, ha, hp = self.depth_mm, self.anterior_height_mm, self.posterior_height_mm
        t = np.linspace(-1.0, 1.0, n)
        v = -(hp + (ha - hp) * (t + 1) / 2) + self.concavity_sup_mm * _profile(
            t, self._endplate_power()
        )
        if self.fracture is not None:
            # an irregular, fractured endplate; zero at the corners and the middle
            v = v + 0.35 * np.sin(3 * np.pi * t) * _profile(t, 1.0) * np.sign(t + 1e-12)
        return np.column_stack([t * d / 2, v])

    def inferior_endplate(self, n: int = 48) -> np.ndarray:
        """Points of the inferior endplate from anterior to posterior corner, (n, 2)."""
        d = self.depth_mm
        t = np.linspace(1.0, -1.0, n)
        v = -self.concavity_inf_mm * _profile(t, self._endplate_power())
        if self.fracture is not None and self.fracture.kind is not FractureKind.WEDGE:
            v = v - 0.25 * np.sin(2 * np.pi * t) * _profile(t, 1.0)
        return np.column_stack([t * d / 2, v])

    def outline_local(self, shift_sup_mm: float = 0.0, shift_inf_mm: float = 0.0) -> np.ndarray:
        """Closed outline of the body (outer cortex), (n, 2), mm.

        ``shift_sup_mm`` / ``shift_inf_mm`` move the superior / inferior
        endplate along ``v`` (down), the walls following linearly: one rim of a
        doubled endplate contour.
        """
        d, ha, hp = self.depth_mm, self.anterior_height_mm, self.posterior_height_mm
        s = np.linspace(0.0, 1.0, 24)[1:-1]
        waist_a = (
            1.4 if self.fracture is None or self.fracture.kind is not FractureKind.WEDGE else -0.6
        )
        anterior = np.column_stack([d / 2 - waist_a * 4 * s * (1 - s), -ha + ha * s])
        posterior = np.column_stack([-d / 2 + 0.7 * 4 * s * (1 - s), -hp * s])
        out = np.vstack([self.superior_endplate(), anterior, self.inferior_endplate(), posterior])
        if shift_sup_mm or shift_inf_mm:
            return self.shifted(out, shift_sup_mm, shift_inf_mm)
        return out

    def shifted(self, pts: np.ndarray, shift_sup_mm: float, shift_inf_mm: float) -> np.ndarray:
        """Local points moved with the endplates (see :meth:`outline_local`)."""
        d, ha, hp = self.depth_mm, self.anterior_height_mm, self.posterior_height_mm
        pts = np.array(pts, dtype=float)
        height = hp + (ha - hp) * np.clip(pts[:, 0] / d + 0.5, 0.0, 1.0)
        w_sup = np.clip(-pts[:, 1] / height, 0.0, 1.0)
        pts[:, 1] += shift_sup_mm * w_sup + shift_inf_mm * (1.0 - w_sup)
        return pts

    def osteophytes_local(self) -> list[np.ndarray]:
        """Outlines of the anterior spurs (beaks reaching anteriorly and towards
        the disc from the anterior corners), mm; they overlap the body."""
        d, ha = self.depth_mm, self.anterior_height_mm
        out = []
        for length, corner_v, toward in (
            (self.osteophyte_sup_mm, -ha, -1.0),
            (self.osteophyte_inf_mm, 0.0, 1.0),
        ):
            if length <= 0:
                continue
            el = float(length)
            shape = np.array(
                [
                    (-0.4, -(1.2 + 0.6 * el)),  # on the wall, below (above) the corner
                    (0.45 * el, -0.1 * el),
                    (0.8 * el, 0.45 * el),  # the tip, towards the disc
                    (0.3 * el, 0.22 * el),
                    (-(0.8 + 0.35 * el), 0.25),  # on the endplate, inside the corner
                    (-(0.8 + 0.35 * el), -1.5),
                ]
            )
            out.append(np.column_stack([d / 2 + shape[:, 0], corner_v + toward * shape[:, 1]]))
        return out

    def pedicle_column_local(self) -> np.ndarray | None:
        """Outline (mm) of the pedicle column flush with the superior endplate,
        reaching ``pedicle_column_mm`` behind the posterior wall (None without)."""
        if self.pedicle_column_mm <= 0:
            return None
        d, hp = self.depth_mm, self.posterior_height_mm
        back = -d / 2 - self.pedicle_column_mm
        return np.array(
            [(-d / 2 + 1.0, -hp), (back, -hp), (back, -0.6 * hp), (-d / 2 + 1.0, -0.6 * hp)]
        )

    def soft_tissue_local(self) -> tuple[float, float, float] | None:
        """The soft-tissue edge in front of the body (None without): its line
        ``u = edge`` (mm, ``soft_tissue_edge_mm`` in front of the anterior
        corners, parallel to their line) and the stretch ``v`` from ``top``
        to ``bottom`` it spans at full contrast (corner to corner: it fades
        out over the discs beyond)."""
        if self.soft_tissue_edge_mm <= 0:
            return None
        return self.depth_mm / 2 + self.soft_tissue_edge_mm, -self.anterior_height_mm, 0.0

    def posterior_elements_local(self) -> dict[str, np.ndarray]:
        """Pedicle, articular pillar with lamina, spinous process: outlines, mm."""
        d, hp = self.depth_mm, self.posterior_height_mm
        r = self.lumbar
        pw = -d / 2
        pl = 0.2 * d + 3.0  # pedicle length
        lw = 9.0 + 3.0 * r  # pillar width
        da, db = self.disc_above_mm, self.disc_below_mm
        pedicle = np.array(
            [
                (pw + 1.5, -0.96 * hp),
                (pw - pl * 0.5, -0.99 * hp),
                (pw - pl - 0.5, -0.93 * hp),
                (pw - pl - 0.5, -0.40 * hp),
                (pw - pl * 0.6, -0.47 * hp),
                (pw - pl * 0.3, -0.50 * hp),
                (pw + 1.5, -0.42 * hp),
            ]
        )
        q = pw - pl
        pillar = np.array(
            [
                (q + 1.0, -0.90 * hp),
                (q - 0.5, -hp - 0.65 * da),
                (q - 3.5, -hp - 0.55 * da),
                (q - 5.5, -hp + 0.1 * hp),
                (q - lw, -0.72 * hp),
                (q - lw - 1.0, -0.15 * hp),
                (q - lw + 0.5, 0.10 * hp + 0.6 * db),
                (q - lw * 0.55, 0.05 * hp + 0.5 * db),
                (q - lw * 0.3, -0.05 * hp),
                (q + 0.5, -0.38 * hp),
            ]
        )
        gamma = math.radians(38.0 * (1 - r) + 8.0 * r)
        length = (1.05 * (1 - r) + 0.72 * r) * d
        tip_h = (0.28 * (1 - r) + 0.5 * r) * hp
        base_top = np.array([q - lw + 1.5, -0.66 * hp])
        base_bot = np.array([q - lw + 1.5, -0.02 * hp + 0.2 * db])
        axis = np.array([-math.cos(gamma), math.sin(gamma)])
        normal = np.array([math.sin(gamma), math.cos(gamma)])
        centre = (base_top + base_bot) / 2 + axis * length
        spinous = np.array(
            [
                base_top,
                (base_top + centre) / 2 + normal * 0.15 * tip_h - axis * 0.0,
                centre - normal * tip_h / 2,
                centre + axis * 0.25 * tip_h,
                centre + normal * tip_h / 2,
                (base_bot + centre) / 2 + normal * (0.25 * tip_h) - normal * 0.9,
                base_bot,
            ]
        )
        return {"pedicle": pedicle, "pillar": pillar, "spinous": spinous}

    def transverse_process_local(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Centre and semi-axes (mm) of the transverse process seen end-on."""
        d, hp = self.depth_mm, self.posterior_height_mm
        pl = 0.2 * d + 3.0
        return (-d / 2 - pl - 1.5, -0.66 * hp), (5.5 + 1.5 * self.lumbar, 4.2)

    # -- pose ---------------------------------------------------------------------

    def to_patient(self, pts: np.ndarray) -> np.ndarray:
        """Local points (n, 2) -> patient frame (n, 2), mm."""
        a = math.radians(self.angle_deg)
        eu = np.array([math.cos(a), math.sin(a)])
        ev = np.array([-math.sin(a), math.cos(a)])
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        return self.origin_mm + pts[:, :1] * eu + pts[:, 1:2] * ev

    def local_affine(self) -> np.ndarray:
        """2x3 matrix: local mm -> patient mm."""
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, -s, self.origin_mm[0]], [s, c, self.origin_mm[1]]])


@dataclass(frozen=True, slots=True, kw_only=True)
class Spine:
    """All drawn vertebrae of a film, top to bottom, in the patient frame."""

    vertebrae: tuple[Vertebra, ...]
    patient: Patient

    def by_level(self, level: str) -> Vertebra:
        for v in self.vertebrae:
            if v.level == level:
                return v
        raise KeyError(level)

    @property
    def annotated(self) -> tuple[Vertebra, ...]:
        return tuple(v for v in self.vertebrae if v.annotated)


def with_realism(patient: Patient, realism: Realism | None) -> Patient:
    """The patient with the endplate concavities that ``realism`` sets."""
    if realism is None or not realism.concavities:
        return patient
    sup = dict(patient.concavity_sup_mm)
    inf = dict(patient.concavity_inf_mm)
    for c in realism.concavities:
        (sup if c.endplate == "superior" else inf)[c.level] = c.mm
    return replace(patient, concavity_sup_mm=sup, concavity_inf_mm=inf)


def _realism_fields(realism: Realism | None, level: str) -> dict[str, float]:
    if realism is None:
        return {}
    return {
        "osteophyte_sup_mm": realism.feature("osteophytes", level, "superior"),
        "osteophyte_inf_mm": realism.feature("osteophytes", level, "inferior"),
        "doubled_sup_mm": realism.feature("doubled", level, "superior"),
        "doubled_inf_mm": realism.feature("doubled", level, "inferior"),
        "density": realism.low_contrast if level in realism.low_contrast_levels else 1.0,
        "pedicle_column_mm": (
            realism.pedicle_column_mm if level in realism.pedicle_columns else 0.0
        ),
        "soft_tissue_edge_mm": (
            realism.soft_tissue_edge_mm if level in realism.soft_tissue_edges else 0.0
        ),
    }


def _split_concavity(
    level: str, total: float, fracture: Fracture | None, patient: Patient
) -> tuple[float, float]:
    c_sup = patient.concavity_sup_mm[level]
    c_inf = patient.concavity_inf_mm[level]
    if fracture is None or fracture.kind is not FractureKind.BICONCAVE:
        return total - c_inf, c_inf  # = the normal concavities (exact in floating point)
    share = c_sup / (c_sup + c_inf)
    return total * share, total * (1 - share)


def build_spine(spec: FilmSpec, patient: Patient | None = None) -> Spine:
    """Stack the vertebrae of ``spec`` in the patient frame (facing right).

    The column is placed so that the annotated span is centred vertically at
    the origin, then leaned by ``patient.tilt_deg``; :mod:`.render` places it
    on the film.
    """
    patient = with_realism(patient or make_patient(spec.seed), spec.realism)
    first = LEVELS.index(spec.levels[0])
    last = LEVELS.index(spec.levels[-1])
    drawn = [
        LEVELS[i]
        for i in range(first - 2, last + 2)
        if 0 <= i < len(LEVELS) and LEVELS[i] in DRAWABLE_LEVELS
    ]
    normal = {lv: _normal_heights(patient, lv) for lv in drawn}
    truth = solve_heights(
        {
            lv: (n[0], n[1], n[2], patient.concavity_sup_mm[lv], patient.concavity_inf_mm[lv])
            for lv, n in normal.items()
        },
        spec.levels,
        spec.fractures,
    )

    shapes: list[dict] = []
    for lv in drawn:
        ha, hm, hp, depth, width = normal[lv]
        fracture = spec.fracture_at(lv)
        if lv in truth:
            ha, hm, hp = truth[lv]
        total = (ha + hp) / 2 - hm
        c_sup, c_inf = _split_concavity(lv, total, fracture, patient)
        i = LEVELS.index(lv)
        disc_above = (
            DISC_BELOW_MM[LEVELS[i - 1]] if i > 0 and LEVELS[i - 1] in DISC_BELOW_MM else (4.0, 3.5)
        )
        disc_below = DISC_BELOW_MM[lv]
        lumbar = {"T11": 0.15, "T12": 0.45, "L1": 0.8}.get(lv, 1.0 if lv.startswith("L") else 0.0)
        shapes.append(
            dict(
                level=lv,
                annotated=lv in truth,
                anterior_height_mm=ha,
                middle_height_mm=(ha + hp) / 2 - c_sup - c_inf,
                posterior_height_mm=hp,
                depth_mm=depth,
                width_mm=width,
                concavity_sup_mm=c_sup,
                concavity_inf_mm=c_inf,
                fracture=fracture,
                disc_above_mm=float(np.mean(disc_above)) * patient.scale,
                disc_below_mm=float(np.mean(disc_below)) * patient.scale,
                lumbar=lumbar,
                **_realism_fields(spec.realism, lv),
            )
        )

    # Stack from the top: the disc below a vertebra turns the next one by its
    # wedge angle; the next vertebra's own wedge turns its inferior endplate.
    poses: list[tuple[float, np.ndarray]] = []
    for k, shp in enumerate(shapes):
        beta = math.degrees(
            math.atan2(shp["posterior_height_mm"] - shp["anterior_height_mm"], shp["depth_mm"])
        )
        if k == 0:
            alpha_k = 0.0
            origin_k = np.zeros(2)
        else:
            prev = shapes[k - 1]
            prev_alpha, prev_origin = poses[-1]
            da, dp = DISC_BELOW_MM[prev["level"]]
            da, dp = da * patient.scale, dp * patient.scale
            mean = (da + dp) / 2
            half = (da - dp) / 2 * patient.lordosis_factor
            da, dp = mean + half, mean - half
            depth = (prev["depth_mm"] + shp["depth_mm"]) / 2
            gamma = math.degrees(math.atan2(da - dp, depth))
            alpha_k = prev_alpha + gamma - beta
            a = math.radians(prev_alpha)
            ev = np.array([-math.sin(a), math.cos(a)])
            sup_mid = prev_origin + ev * (da + dp) / 2
            # local superior chord midpoint of this vertebra
            local_mid = np.array(
                [0.0, -(shp["anterior_height_mm"] + shp["posterior_height_mm"]) / 2]
            )
            b = math.radians(alpha_k)
            rot = np.array([[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]])
            origin_k = sup_mid - rot @ local_mid
        poses.append((alpha_k, origin_k))

    # Lean and centre: the annotated span's centres define the axis.
    centres = []
    for shp, (a, o) in zip(shapes, poses, strict=True):
        if shp["annotated"]:
            b = math.radians(a)
            local_c = np.array([0.0, -shp["posterior_height_mm"] / 2])
            rot = np.array([[math.cos(b), -math.sin(b)], [math.sin(b), math.cos(b)]])
            centres.append(o + rot @ local_c)
    top, bottom = centres[0], centres[-1]
    axis_angle = math.degrees(math.atan2(bottom[0] - top[0], bottom[1] - top[1]))
    # rotating by t turns a downward axis by -t: lean the axis by tilt_deg
    t = math.radians(axis_angle - patient.tilt_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    mid = (top + bottom) / 2

    vertebrae = []
    for shp, (a, o) in zip(shapes, poses, strict=True):
        new_origin = rot @ (o - mid)
        vertebrae.append(
            Vertebra(
                **shp,
                angle_deg=a + math.degrees(t),
                origin_mm=(float(new_origin[0]), float(new_origin[1])),
            )
        )
    return Spine(vertebrae=tuple(vertebrae), patient=patient)
