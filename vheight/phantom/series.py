"""A pre / post-augmentation / follow-up series of one synthetic patient.

The patient has a wedge fracture treated by kyphoplasty and an untreated
biconcave deformity above it.  The post-operative film shows the height
partly restored and the PMMA cement; the follow-up film shows some height lost
again, and a new fracture of the vertebra below the treated one (the level
most at risk after augmentation), which the comparison should flag.
Between films the magnification (ERMF, hence the patient-plane pixel
spacing of a fixed detector) and the patient's position change a little, as
they do in practice.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vheight.phantom.anatomy import build_spine
from vheight.phantom.spec import NAMED_HEIGHT, Compression, FilmSpec, Fracture, FractureKind
from vheight.phantom.writer import WrittenFilm, write_film

__all__ = ["SAMPLE_SEED", "SeriesPlan", "SAMPLE_PLAN", "series_specs", "generate_series"]

#: Seed of the films in ``sample_images/``.
SAMPLE_SEED = 2026


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesPlan:
    """The clinical story of a series.

    Parameters
    ----------
    treated_level, treated_kind
        The augmented fracture.
    loss_pre_pct, loss_post_pct, loss_followup_pct
        Its height loss (of the height naming the deformity) on each film.
    other_level, other_kind, other_loss_pct
        An untreated deformity, unchanged between films (``None`` for none).
    new_level, new_kind, new_loss_pct
        A new fracture on the follow-up film only (``None`` for none); its loss
        is against the adjacent reference of the follow-up film.  The other
        levels keep the heights they would have without it (the treated
        level's follow-up loss ``loss_followup_pct`` is then against the
        reference of a follow-up film without the new fracture).
    detector_spacing_mm
        Pixel pitch of the detector (ImagerPixelSpacing), the same on every film.
    ermf
        Magnification factor of (pre, post, followup).
    rotation_deg, shift_mm
        Patient repositioning of (pre, post, followup).
    """

    treated_level: str = "L1"
    treated_kind: FractureKind = FractureKind.WEDGE
    loss_pre_pct: float = 30.0
    loss_post_pct: float = 16.0
    loss_followup_pct: float = 21.0
    other_level: str | None = "T12"
    other_kind: FractureKind = FractureKind.BICONCAVE
    other_loss_pct: float = 21.0
    new_level: str | None = "L2"
    new_kind: FractureKind = FractureKind.WEDGE
    new_loss_pct: float = 25.0
    detector_spacing_mm: float = 0.19
    ermf: tuple[float, float, float] = (1.12, 1.09, 1.15)
    rotation_deg: tuple[float, float, float] = (0.0, 2.5, -1.5)
    shift_mm: tuple[tuple[float, float], ...] = ((0.0, 0.0), (6.0, -8.0), (-4.0, 5.0))


SAMPLE_PLAN = SeriesPlan()


def series_specs(
    *, seed: int = SAMPLE_SEED, plan: SeriesPlan = SAMPLE_PLAN, **overrides: Any
) -> tuple[FilmSpec, FilmSpec, FilmSpec]:
    """The three film specs (pre, post, followup) of one patient.

    ``overrides`` are :class:`FilmSpec` fields applied to all three films
    (e.g. ``rows``, ``columns``, ``facing``, ``compression``, ``bits_stored``);
    ``row_spacing_mm``/``col_spacing_mm`` there are the *detector* pitch.
    """
    detector_row = float(overrides.pop("row_spacing_mm", plan.detector_spacing_mm))
    detector_col = float(overrides.pop("col_spacing_mm", detector_row))
    overrides.pop("ermf", None)
    specs: list[FilmSpec] = []
    other_height = 0.0
    losses = (plan.loss_pre_pct, plan.loss_post_pct, plan.loss_followup_pct)
    for i, timepoint in enumerate(("pre", "post", "followup")):
        fractures = [Fracture(level=plan.treated_level, kind=plan.treated_kind, loss_pct=losses[i])]
        if plan.other_level:
            fractures.insert(
                0,
                Fracture(
                    level=plan.other_level, kind=plan.other_kind, loss_pct=plan.other_loss_pct
                ),
            )
        ermf = plan.ermf[i]
        base: dict[str, Any] = dict(
            seed=seed,
            timepoint=timepoint,
            fractures=tuple(fractures),
            cement_levels=(plan.treated_level,) if timepoint != "pre" else (),
            treated_levels=(plan.treated_level,),
            ermf=ermf,
            row_spacing_mm=detector_row / ermf,
            col_spacing_mm=detector_col / ermf,
            rotation_deg=plan.rotation_deg[i],
            shift_mm=plan.shift_mm[i],
            series_number=i + 1,
        )
        base.update(overrides)
        spec = FilmSpec(**base)
        if specs and plan.other_level:
            # the untreated deformity does not change physically: keep its
            # named height from the first film (its measured loss may still
            # move a little, as the treated neighbour's height changes)
            pinned = tuple(
                dataclasses.replace(f, height_mm=other_height) if f.level == plan.other_level else f
                for f in spec.fractures
            )
            spec = spec.replace(fractures=pinned)
        elif plan.other_level:
            other_height = _named_height(spec, plan.other_level, plan.other_kind)
        if timepoint == "followup" and plan.new_level:
            spec = _with_new_fracture(spec, plan)
        specs.append(spec)
    return specs[0], specs[1], specs[2]


def _named_height(spec: FilmSpec, level: str, kind: FractureKind) -> float:
    """The true height (mm) of ``level`` that names a deformity of ``kind``, on ``spec``'s film."""
    v = build_spine(spec).by_level(level)
    return {
        "anterior": v.anterior_height_mm,
        "middle": v.middle_height_mm,
        "posterior": v.posterior_height_mm,
    }[NAMED_HEIGHT[kind]]


def _with_new_fracture(spec: FilmSpec, plan: SeriesPlan) -> FilmSpec:
    """``spec`` with the plan's new fracture added, every other deformity pinned to
    the height it has without it (a new fracture does not change its neighbours)."""
    assert plan.new_level is not None
    pinned = tuple(
        f
        if f.height_mm is not None
        else dataclasses.replace(f, height_mm=_named_height(spec, f.level, f.kind))
        for f in spec.fractures
    )
    new = Fracture(level=plan.new_level, kind=plan.new_kind, loss_pct=plan.new_loss_pct)
    return spec.replace(fractures=(*pinned, new))


def generate_series(
    outdir: str | os.PathLike[str],
    *,
    seed: int = SAMPLE_SEED,
    plan: SeriesPlan = SAMPLE_PLAN,
    compression: Compression | str = Compression.J2K,
    **overrides: Any,
) -> tuple[WrittenFilm, WrittenFilm, WrittenFilm]:
    """Write ``pre.dcm``, ``post.dcm``, ``followup.dcm`` and their sidecars to ``outdir``.

    With the defaults this regenerates ``sample_images/`` exactly.
    """
    outdir = Path(outdir)
    specs = series_specs(seed=seed, plan=plan, compression=Compression(compression), **overrides)
    written = [write_film(spec, outdir / f"{spec.timepoint}.dcm") for spec in specs]
    return written[0], written[1], written[2]
