"""Synthetic lateral thoracolumbar radiographs with known truth.

No public lateral spine radiograph with landmarks can be shipped with vheight,
and every accuracy figure needs ground truth, so the phantom draws films whose
true landmarks are known exactly: vertebral bodies with a cortical shell and
trabecular texture, concave endplates, discs, posterior elements, the
thoracolumbar curve, soft tissue, lungs and diaphragm, ribs, bowel gas, cement
after augmentation; then blur, scatter, quantum noise and CR/DX-like
processing.  Fractures (wedge, biconcave, crush) are built so that measuring
the true landmarks with the ``adjacent`` reference of ``measurements.md``
gives exactly the requested height loss.

Coordinates: a landmark is ``(x, y)`` pixels of the full-resolution image, x
the column, y the row, the centre of the top-left pixel ``(0, 0)``.  Lengths
are millimetres in the patient plane (magnification removed): the header's
``ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor``.

Main entry points: :func:`render_film` (spec -> pixels and truth, no I/O),
:func:`write_film` (DICOM + ``.vheight.json`` sidecar), :func:`generate_series`
(pre/post/follow-up of one patient; the defaults regenerate ``sample_images``).
"""

from __future__ import annotations

from vheight.phantom.anatomy import DISC_BELOW_MM, NORMAL_BODY_MM
from vheight.phantom.render import LevelTruth, PhantomFilm, header_spacing, render_film
from vheight.phantom.series import (
    SAMPLE_PLAN,
    SAMPLE_SEED,
    SeriesPlan,
    generate_series,
    series_specs,
)
from vheight.phantom.spec import (
    NAMED_HEIGHT,
    Compression,
    EndplateFeature,
    Facing,
    FilmSpec,
    Fracture,
    FractureKind,
    Modality,
    Photometric,
    Realism,
    SpacingTags,
    parse_fracture,
    parse_levels,
)
from vheight.phantom.writer import (
    WrittenFilm,
    film_annotation,
    film_dataset,
    spec_to_dict,
    write_film,
)

__all__ = [
    "Compression",
    "DISC_BELOW_MM",
    "EndplateFeature",
    "Facing",
    "FilmSpec",
    "Fracture",
    "FractureKind",
    "NAMED_HEIGHT",
    "LevelTruth",
    "Modality",
    "NORMAL_BODY_MM",
    "Photometric",
    "PhantomFilm",
    "Realism",
    "SAMPLE_PLAN",
    "SAMPLE_SEED",
    "SeriesPlan",
    "SpacingTags",
    "WrittenFilm",
    "film_annotation",
    "film_dataset",
    "generate_series",
    "header_spacing",
    "parse_fracture",
    "parse_levels",
    "render_film",
    "series_specs",
    "spec_to_dict",
    "write_film",
]
