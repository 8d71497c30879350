"""What a synthetic film shows and how it is written: the phantom's parameters.

All lengths are millimetres in the patient plane (the plane of the spine,
after removing X-ray magnification) unless the name says otherwise.  A
:class:`FilmSpec` is plain data: :func:`vheight.phantom.render_film` turns it
into pixels and true landmarks, :func:`vheight.phantom.write_film` into a
DICOM file and its annotation sidecar.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, field

__all__ = [
    "LEVELS",
    "TIMEPOINTS",
    "Facing",
    "FractureKind",
    "Photometric",
    "SpacingTags",
    "Modality",
    "Compression",
    "NAMED_HEIGHT",
    "Fracture",
    "EndplateFeature",
    "Realism",
    "FilmSpec",
    "parse_fracture",
    "parse_levels",
]

LEVELS: tuple[str, ...] = (
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
)
TIMEPOINTS: tuple[str, ...] = ("pre", "post", "followup")

#: Levels the phantom can draw (it knows their normal anatomy).
DRAWABLE_LEVELS: tuple[str, ...] = LEVELS[LEVELS.index("T6") :]


class Facing(enum.StrEnum):
    """Which side of the image the patient's front (anterior) is on."""

    LEFT = "left"
    RIGHT = "right"


class FractureKind(enum.StrEnum):
    """Deformity type; the height it reduces most names it (measurements.md)."""

    WEDGE = "wedge"
    BICONCAVE = "biconcave"
    CRUSH = "crush"


class Photometric(enum.StrEnum):
    MONOCHROME1 = "MONOCHROME1"  # low values white (dense bone dark in the stored values)
    MONOCHROME2 = "MONOCHROME2"  # low values black (dense bone bright)


class SpacingTags(enum.StrEnum):
    """Which pixel spacing attributes the header carries.

    ``imager+ermf``
        ``ImagerPixelSpacing`` (at the detector) and
        ``EstimatedRadiographicMagnificationFactor``: readers divide one by the
        other (label ``mm ERMF``).  The default.
    ``imager``
        ``ImagerPixelSpacing`` only (label ``mm Proj``): measured heights are
        then the true heights times the ERMF, as on a real uncorrected film.
    ``pixel``
        ``PixelSpacing`` only (label ``mm``), equal to the patient-plane spacing.
    ``pixel+geometry``
        ``PixelSpacing`` with ``PixelSpacingCalibrationType`` GEOMETRY and
        ``ImagerPixelSpacing`` and the ERMF (label ``mm ERMF``).
    ``none``
        No spacing at all (label ``px``).
    """

    IMAGER_ERMF = "imager+ermf"
    IMAGER = "imager"
    PIXEL = "pixel"
    PIXEL_GEOMETRY = "pixel+geometry"
    NONE = "none"


class Modality(enum.StrEnum):
    """SOP class of the written film."""

    DX = "DX"  # Digital X-Ray Image Storage - For Presentation
    CR = "CR"  # Computed Radiography Image Storage


class Compression(enum.StrEnum):
    """Transfer syntax of the pixel data; all are lossless."""

    NONE = "none"  # Explicit VR Little Endian
    RLE = "rle"  # RLE Lossless
    J2K = "j2k"  # JPEG 2000 Image Compression (Lossless Only)
    JPEGLS = "jpegls"  # JPEG-LS Lossless


#: The height each deformity type reduces by the requested loss.
NAMED_HEIGHT: dict[FractureKind, str] = {
    FractureKind.WEDGE: "anterior",
    FractureKind.BICONCAVE: "middle",
    FractureKind.CRUSH: "posterior",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Fracture:
    """A deformed vertebral body with a known height loss.

    Parameters
    ----------
    level
        ``"T6"`` .. ``"L5"``.
    kind
        Wedge (anterior height lost), biconcave (middle height lost) or crush
        (posterior height lost).
    loss_pct
        Loss of the height that names the deformity (:data:`NAMED_HEIGHT`), in
        percent, against the ``adjacent`` reference of ``measurements.md``: the
        mean of the same height of the directly adjacent annotated levels.  The
        other heights stay anatomical (see
        :func:`vheight.phantom.anatomy.solve_heights`): a 30 % wedge has an
        anterior loss of exactly 30 %, a normal posterior height and a middle
        height that follows its endplates (about half the loss).
    height_mm
        Optional: the named height itself, mm, instead of deriving it from
        ``loss_pct`` (used to keep an untreated deformity physically unchanged
        across a series while its neighbours change; ``loss_pct`` is then
        nominal and the measured loss is in the truth).
    """

    level: str
    kind: FractureKind
    loss_pct: float
    height_mm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", str(self.level).upper())
        object.__setattr__(self, "kind", FractureKind(self.kind))
        if self.level not in DRAWABLE_LEVELS:
            raise ValueError(
                f"fracture level {self.level!r}: the phantom draws {DRAWABLE_LEVELS[0]} to "
                f"{DRAWABLE_LEVELS[-1]}"
            )
        loss = float(self.loss_pct)
        if not (math.isfinite(loss) and 0.0 <= loss <= 60.0):
            raise ValueError(
                f"fracture {self.level}: height loss must be 0 to 60 %, found {self.loss_pct!r}"
            )
        object.__setattr__(self, "loss_pct", loss)
        if self.height_mm is not None:
            h = float(self.height_mm)
            if not (math.isfinite(h) and 3.0 <= h <= 60.0):
                raise ValueError(
                    f"fracture {self.level}: height_mm must be 3 to 60 mm, found {self.height_mm!r}"
                )
            object.__setattr__(self, "height_mm", h)

    @property
    def named_height(self) -> str:
        """``"anterior"``, ``"middle"`` or ``"posterior"``."""
        return NAMED_HEIGHT[self.kind]

    def __str__(self) -> str:
        return f"{self.level}:{self.kind.value}:{self.loss_pct:g}"


ENDPLATES: tuple[str, ...] = ("superior", "inferior")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndplateFeature:
    """A size in millimetres attached to one endplate of one level.

    Used for an anterior osteophyte (``mm``: how far the spur reaches beyond
    the corner), a doubled endplate contour (``mm``: the distance between the
    two projected rims) and an endplate concavity (``mm``: depth at the
    middle below the chord of the corners).
    """

    level: str
    endplate: str
    mm: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", str(self.level).upper())
        object.__setattr__(self, "endplate", str(self.endplate).lower())
        if self.level not in DRAWABLE_LEVELS:
            raise ValueError(
                f"endplate feature at {self.level!r}: the phantom draws "
                f"{DRAWABLE_LEVELS[0]} to {DRAWABLE_LEVELS[-1]}"
            )
        if self.endplate not in ENDPLATES:
            raise ValueError(
                f"endplate feature at {self.level}: endplate must be superior or inferior, "
                f"found {self.endplate!r}"
            )
        mm = float(self.mm)
        if not (math.isfinite(mm) and 0.0 <= mm <= 8.0):
            raise ValueError(
                f"endplate feature at {self.level} {self.endplate}: size must be 0 to 8 mm, "
                f"found {self.mm!r}"
            )
        object.__setattr__(self, "mm", mm)

    def __str__(self) -> str:
        return f"{self.level}:{self.endplate}:{self.mm:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Realism:
    """What real lateral films show and a clean phantom does not (all off by default).

    Parameters
    ----------
    osteophytes
        Anterior osteophyte spurs: at the anterior corner of the endplate,
        reaching ``mm`` beyond it, anteriorly and towards the disc.  The true
        corner stays on the body's outline (measurements.md: spurs excluded).
    doubled
        Doubled endplate contours (an endplate seen slightly obliquely, its
        two rims projected ``mm`` apart along the body's axis).  The true
        points lie midway between the two contours.
    concavities
        Endplate concavities at the middle, mm (replacing the patient's
        0.35 to 0.85 mm); the true middle point sits at the deepest point.
    low_contrast_levels
        Levels of lower bone density (osteoporotic): their bone attenuates
        ``low_contrast`` times as much.
    low_contrast
        Density factor of the low-contrast levels.
    rib_bands
        Rib shadows drawn across the annotated bodies (oblique bands).
    gas_blobs
        Bowel gas blobs drawn over the annotated bodies.
    pedicle_columns
        Levels whose pedicle column rises flush with the superior endplate,
        as dense as the endplate's cortex, and ends ``pedicle_column_mm``
        behind the posterior wall: the endplate's bright band seems to run
        on past the posterior corner (the true corner stays on the body).
    pedicle_column_mm
        How far the pedicle columns reach behind the posterior wall, mm.
    soft_tissue_edges
        Levels with a soft-tissue interface in front of the anterior wall
        (the anterior longitudinal ligament and prevertebral muscle against
        the fat and bowel in front): a layer of soft tissue denser than what
        lies beyond, from the wall to a long, smooth edge
        ``soft_tissue_edge_mm`` in front of the line of the anterior
        corners and parallel to it, fading out over the discs.  Its edge is
        a fall outward like the wall's, fainter, within a click's search
        (the true corners stay on the body).
    soft_tissue_edge_mm
        How far the soft-tissue edges lie in front of the anterior corners, mm.
    """

    osteophytes: tuple[EndplateFeature, ...] = ()
    doubled: tuple[EndplateFeature, ...] = ()
    concavities: tuple[EndplateFeature, ...] = ()
    low_contrast_levels: tuple[str, ...] = ()
    low_contrast: float = 0.55
    rib_bands: int = 0
    gas_blobs: int = 0
    pedicle_columns: tuple[str, ...] = ()
    pedicle_column_mm: float = 3.5
    soft_tissue_edges: tuple[str, ...] = ()
    soft_tissue_edge_mm: float = 3.0

    def __post_init__(self) -> None:
        for name in ("osteophytes", "doubled", "concavities"):
            values = tuple(
                v if isinstance(v, EndplateFeature) else _parse_feature(str(v))
                for v in getattr(self, name)
            )
            keys = [(v.level, v.endplate) for v in values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{name}: at most one per endplate")
            object.__setattr__(self, name, values)
        object.__setattr__(
            self, "low_contrast_levels", tuple(str(v).upper() for v in self.low_contrast_levels)
        )
        for levels, mm, (lo, hi) in (
            ("pedicle_columns", "pedicle_column_mm", (0.5, 8.0)),
            ("soft_tissue_edges", "soft_tissue_edge_mm", (1.0, 8.0)),
        ):
            named = tuple(str(v).upper() for v in getattr(self, levels))
            bad = [v for v in named if v not in DRAWABLE_LEVELS]
            if bad:
                raise ValueError(
                    f"{levels}: the phantom draws {DRAWABLE_LEVELS[0]} to "
                    f"{DRAWABLE_LEVELS[-1]}, found {', '.join(bad)}"
                )
            object.__setattr__(self, levels, named)
            if not lo <= float(getattr(self, mm)) <= hi:
                raise ValueError(f"{mm} must be {lo:g} to {hi:g} mm, found {getattr(self, mm)!r}")
        if not 0.2 <= float(self.low_contrast) <= 1.0:
            raise ValueError(f"low_contrast must be 0.2 to 1, found {self.low_contrast!r}")
        for name in ("rib_bands", "gas_blobs"):
            if not 0 <= int(getattr(self, name)) <= 12:
                raise ValueError(f"{name} must be 0 to 12, found {getattr(self, name)!r}")

    def feature(self, kind: str, level: str, endplate: str) -> float:
        """Size (mm) of feature ``kind`` (osteophytes, doubled, concavities) there, or 0."""
        for v in getattr(self, kind):
            if v.level == level and v.endplate == endplate:
                return v.mm
        return 0.0

    def levels(self) -> set[str]:
        """Every level a feature names."""
        out = {v.level for k in ("osteophytes", "doubled", "concavities") for v in getattr(self, k)}
        named = set(self.low_contrast_levels) | set(self.pedicle_columns)
        return out | named | set(self.soft_tissue_edges)

    @classmethod
    def typical(cls, seed: int, levels: tuple[str, ...]) -> Realism:
        """A film of an older patient: spurs, doubled contours, deep concavities,
        one osteoporotic level, ribs and gas across the spine (drawn from ``seed``)."""
        import numpy as np

        rng = np.random.default_rng([int(seed), 20])
        spurs, doubled, concave = [], [], []
        for level in levels:
            for endplate in ENDPLATES:
                if rng.uniform() < 0.45:
                    spurs.append(
                        EndplateFeature(level=level, endplate=endplate, mm=rng.uniform(1.5, 5.0))
                    )
                if rng.uniform() < 0.3:
                    doubled.append(
                        EndplateFeature(level=level, endplate=endplate, mm=rng.uniform(0.8, 2.5))
                    )
                concave.append(
                    EndplateFeature(level=level, endplate=endplate, mm=rng.uniform(0.5, 2.0))
                )
        low = (levels[int(rng.integers(0, len(levels)))],)
        return cls(
            osteophytes=tuple(spurs),
            doubled=tuple(doubled),
            concavities=tuple(concave),
            low_contrast_levels=low,
            rib_bands=int(rng.integers(2, 5)),
            gas_blobs=int(rng.integers(2, 6)),
        )


def _parse_feature(text: str) -> EndplateFeature:
    """``"L2:superior:3"`` -> ``EndplateFeature(level="L2", endplate="superior", mm=3)``."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3:
        raise ValueError(
            f"endplate feature {text!r}: expected LEVEL:ENDPLATE:MM, e.g. L2:superior:3"
        )
    try:
        mm = float(parts[2])
    except ValueError:
        raise ValueError(f"endplate feature {text!r}: the size must be a number of mm") from None
    return EndplateFeature(level=parts[0], endplate=parts[1], mm=mm)


_FRACTURE_RE = re.compile(r"^\s*([TtLl]\d{1,2})\s*:\s*([A-Za-z]+)\s*:\s*([0-9.]+)\s*%?\s*$")


def parse_fracture(text: str) -> Fracture:
    """``"L1:wedge:30"`` -> ``Fracture(level="L1", kind=WEDGE, loss_pct=30)``."""
    match = _FRACTURE_RE.match(text)
    if not match:
        raise ValueError(f"fracture {text!r}: expected LEVEL:KIND:LOSS, e.g. L1:wedge:30")
    level, kind, loss = match.groups()
    try:
        kind_enum = FractureKind(kind.lower())
    except ValueError:
        kinds = ", ".join(k.value for k in FractureKind)
        raise ValueError(f"fracture {text!r}: kind must be one of {kinds}") from None
    return Fracture(level=level, kind=kind_enum, loss_pct=float(loss))


def parse_levels(text: str) -> tuple[str, ...]:
    """``"T10-L4"`` or ``"T11,T12,L1"`` -> consecutive levels, top to bottom."""
    text = text.strip().upper()
    if "-" in text:
        first, last = (t.strip() for t in text.split("-", 1))
        if first not in DRAWABLE_LEVELS or last not in DRAWABLE_LEVELS:
            raise ValueError(
                f"levels {text!r}: both ends must be {DRAWABLE_LEVELS[0]}..{DRAWABLE_LEVELS[-1]}"
            )
        i, j = LEVELS.index(first), LEVELS.index(last)
        if j < i:
            raise ValueError(f"levels {text!r}: the first level must be above the last")
        return LEVELS[i : j + 1]
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _default_levels() -> tuple[str, ...]:
    return parse_levels("T10-L4")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilmSpec:
    """Everything that defines one synthetic lateral thoracolumbar film.

    Parameters
    ----------
    seed
        Patient seed: anatomy (sizes, curve, soft tissue, trabecular pattern,
        cement shape).  Films of one patient share it.
    acquisition_seed
        Film seed: quantum noise, exposure, bowel gas.  ``None`` derives it from
        ``seed`` and ``timepoint``.
    rows, columns
        Image size in pixels.
    row_spacing_mm, col_spacing_mm
        Pixel spacing in the patient plane, mm (what a reader computes from the
        header; ``ImagerPixelSpacing`` is this times ``ermf``).
    ermf
        Estimated radiographic magnification factor (>= 1).
    spacing_tags
        Which spacing attributes the header carries (:class:`SpacingTags`).
    photometric, bits_stored
        ``MONOCHROME1`` or ``MONOCHROME2``; 10, 12, 14 or 16 bits stored in a
        16-bit allocation.
    facing
        Anterior on the image's ``left`` or ``right``.
    levels
        Consecutive annotated levels, top to bottom (the true landmarks are
        written for these).  A level above and below is drawn too, unannotated,
        when the phantom knows it.
    fractures
        Deformed levels (at most one per level).
    cement_levels
        Levels filled with PMMA cement (after augmentation).
    treated_levels
        Levels recorded as treated in the annotation (also on the pre film).
    timepoint
        ``"pre"``, ``"post"``, ``"followup"`` or ``None``.
    dose
        Relative detector dose (1 = typical); quantum noise scales as
        ``1/sqrt(dose)``.
    exposure
        Brightness of the processed film, -1 (dark) .. 1 (bright); ``None``
        draws it from the acquisition seed.
    blur_mm
        Standard deviation of the detector's Gaussian point spread, mm.
    rotation_deg, shift_mm
        Extra in-plane rotation of the patient (degrees, clockwise on the
        image) and shift ``(right, down)`` in mm, to mimic repositioning.
    modality
        ``DX`` (default) or ``CR``.  ``None`` picks DX, or CR when the header
        carries no ``ImagerPixelSpacing`` (DX requires it).
    compression
        Lossless transfer syntax of the pixel data.
    patient_id, patient_name, study_date, study_time, study_key
        Synthetic identity; ``study_key`` (default ``patient_id``) seeds the
        StudyInstanceUID, so films sharing it share the study.
    series_number, instance_number
        Written as is.
    realism
        Osteophytes, doubled endplates, deep concavities, osteoporotic levels,
        ribs and gas over the spine (:class:`Realism`); None draws none.
    """

    seed: int = 0
    acquisition_seed: int | None = None
    rows: int = 2000
    columns: int = 1500
    row_spacing_mm: float = 0.17
    col_spacing_mm: float = 0.17
    ermf: float = 1.12
    spacing_tags: SpacingTags = SpacingTags.IMAGER_ERMF
    photometric: Photometric = Photometric.MONOCHROME2
    bits_stored: int = 12
    facing: Facing = Facing.RIGHT
    levels: tuple[str, ...] = field(default_factory=_default_levels)
    fractures: tuple[Fracture, ...] = ()
    cement_levels: tuple[str, ...] = ()
    treated_levels: tuple[str, ...] = ()
    timepoint: str | None = None
    dose: float = 1.0
    exposure: float | None = None
    blur_mm: float = 0.12
    rotation_deg: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)
    modality: Modality | None = None
    compression: Compression = Compression.NONE
    patient_id: str | None = None
    patient_name: str = "PHANTOM^SPINE"
    study_date: str = "20260105"
    study_time: str = "093000"
    study_key: str | None = None
    series_number: int = 1
    instance_number: int = 1
    realism: Realism | None = None

    def __post_init__(self) -> None:
        errors: list[str] = []
        for name, enum_type in (
            ("spacing_tags", SpacingTags),
            ("photometric", Photometric),
            ("facing", Facing),
            ("compression", Compression),
        ):
            try:
                object.__setattr__(self, name, enum_type(getattr(self, name)))
            except ValueError:
                choices = ", ".join(e.value for e in enum_type)
                errors.append(f"{name} must be one of {choices}, found {getattr(self, name)!r}")
        if self.modality is not None:
            try:
                object.__setattr__(self, "modality", Modality(self.modality))
            except ValueError:
                errors.append(f"modality must be DX or CR, found {self.modality!r}")
        if int(self.rows) < 64 or int(self.columns) < 64:
            errors.append(
                f"image size must be at least 64 x 64, found {self.rows} x {self.columns}"
            )
        for name in ("row_spacing_mm", "col_spacing_mm", "dose", "blur_mm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                errors.append(f"{name} must be a finite number > 0, found {value!r}")
        if not (isinstance(self.ermf, (int, float)) and 1.0 <= self.ermf <= 2.0):
            errors.append(f"ermf must be 1.0 to 2.0, found {self.ermf!r}")
        if self.bits_stored not in (10, 12, 14, 16):
            errors.append(f"bits_stored must be 10, 12, 14 or 16, found {self.bits_stored!r}")
        if self.exposure is not None and not -1.0 <= float(self.exposure) <= 1.0:
            errors.append(f"exposure must be -1 to 1, found {self.exposure!r}")
        if self.timepoint is not None and self.timepoint not in TIMEPOINTS:
            errors.append(f"timepoint must be one of {', '.join(TIMEPOINTS)} or None")
        levels = tuple(str(v).upper() for v in self.levels)
        object.__setattr__(self, "levels", levels)
        unknown = [v for v in levels if v not in DRAWABLE_LEVELS]
        if unknown:
            errors.append(
                f"levels {unknown} cannot be drawn: use {DRAWABLE_LEVELS[0]}..{DRAWABLE_LEVELS[-1]}"
            )
        elif not levels:
            errors.append("levels must name at least one level")
        else:
            idx = [LEVELS.index(v) for v in levels]
            if idx != list(range(idx[0], idx[0] + len(idx))):
                errors.append(f"levels must be consecutive, top to bottom, found {list(levels)}")
        fractures = tuple(
            f if isinstance(f, Fracture) else parse_fracture(str(f)) for f in self.fractures
        )
        object.__setattr__(self, "fractures", fractures)
        seen: set[str] = set()
        for f in fractures:
            if f.level in seen:
                errors.append(f"level {f.level} has more than one fracture")
            seen.add(f.level)
            if f.level not in levels:
                errors.append(f"fracture level {f.level} is not among the levels {list(levels)}")
        for name in ("cement_levels", "treated_levels"):
            values = tuple(str(v).upper() for v in getattr(self, name))
            object.__setattr__(self, name, values)
            stray = [v for v in values if v not in levels]
            if stray:
                errors.append(f"{name} {stray} are not among the levels {list(levels)}")
        object.__setattr__(self, "shift_mm", (float(self.shift_mm[0]), float(self.shift_mm[1])))
        if self.realism is not None:
            stray = sorted(self.realism.levels() - set(levels))
            if stray:
                errors.append(
                    f"realism features at {stray} are not among the levels {list(levels)}"
                )
        if self.modality is Modality.DX and self.spacing_tags in (
            SpacingTags.PIXEL,
            SpacingTags.NONE,
        ):
            errors.append(
                "a DX film must carry ImagerPixelSpacing: use modality CR with spacing_tags "
                f"{self.spacing_tags.value!r}"
            )
        if errors:
            raise ValueError("invalid phantom film: " + "; ".join(errors))
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "columns", int(self.columns))

    # -- derived -------------------------------------------------------------------

    @property
    def resolved_modality(self) -> Modality:
        if self.modality is not None:
            return self.modality
        if self.spacing_tags in (SpacingTags.PIXEL, SpacingTags.NONE):
            return Modality.CR
        return Modality.DX

    @property
    def resolved_patient_id(self) -> str:
        return self.patient_id or f"VHPHANTOM{self.seed:06d}"

    @property
    def resolved_acquisition_seed(self) -> int:
        if self.acquisition_seed is not None:
            return int(self.acquisition_seed)
        offset = TIMEPOINTS.index(self.timepoint) + 1 if self.timepoint else 0
        return int(self.seed) * 7919 + 104729 * offset + 17

    def fracture_at(self, level: str) -> Fracture | None:
        for f in self.fractures:
            if f.level == level:
                return f
        return None

    def identity(self) -> str:
        """A text naming this film (seeds its UIDs): the repr, without the
        ``realism`` field when it is off, so that films without it keep the
        UIDs they had before the field existed."""
        text = repr(self)
        if self.realism is None:
            text = text.replace(", realism=None)", ")")
        return text

    def replace(self, **changes: object) -> FilmSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
