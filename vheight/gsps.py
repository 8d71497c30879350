"""Grayscale Softcopy Presentation State: the landmarks over the film in any DICOM viewer.

One presentation state (highdicom ``GrayscaleSoftcopyPresentationState``)
references the film by SOP Instance UID and carries, per vertebra, a graphic
annotation on the graphic layer of its grade (``GRADE_0`` .. ``GRADE_3``,
``INCOMPLETE``; each layer recommends the grade colour of
:mod:`vheight.render`):

- one ``POINT`` per landmark,
- the superior and inferior endplates as ``POLYLINE`` (corner - middle - corner),
- the anterior, middle and posterior heights as two-point ``POLYLINE``,
- text objects: each height with its unit at the middle of its line, and the
  level label (``"L1 grade 2 treated"``) beside the vertebra.

All graphic data is in ``PIXEL`` units; DICOM places the top-left corner of
the top-left pixel at ``(0, 0)`` whereas vheight places its centre there, so
0.5 is added to both coordinates (see :mod:`vheight.sr`).

Display: the presentation state carries the film's own VOI (its first window,
or a window computed from the pixel values when the header has none) and a
presentation LUT.  Within a presentation state the film's Photometric
Interpretation is not applied (PS3.3 C.11.6), so a ``MONOCHROME1`` film gets
the ``INVERSE`` presentation LUT shape and shows bone bright, as without the
presentation state; ``MONOCHROME2`` gets ``IDENTITY``.

Series: the film's Body Part Examined and Laterality are copied into the
presentation state's General Series module (Laterality is Type 2C there:
empty when the film names neither), with a Series Description; every
presentation state of one film by one reader is in one series
(:func:`vheight.sr.result_series_uid`), instance numbers counting up from the
one it replaces when ``replaces`` is given.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from vheight import __version__
from vheight.annotation import Annotation
from vheight.dicom import read_dataset
from vheight.errors import SRExportError
from vheight.files import write_atomic
from vheight.render import GRADE_COLORS, INCOMPLETE_COLOR
from vheight.sr import (
    calibration_for,
    check_same_film,
    evidence_header,
    pixel_to_dicom,
    read_film_header,
    reader_name,
    result_series_uid,
)

__all__ = ["build_gsps", "gsps_bytes", "write_gsps", "expected_object_counts", "LAYERS"]

#: Graphic layer names, in rendering order.
LAYERS: tuple[str, ...] = ("GRADE_0", "GRADE_1", "GRADE_2", "GRADE_3", "INCOMPLETE")
_LAYER_COLORS = {
    "GRADE_0": GRADE_COLORS[0],
    "GRADE_1": GRADE_COLORS[1],
    "GRADE_2": GRADE_COLORS[2],
    "GRADE_3": GRADE_COLORS[3],
    "INCOMPLETE": INCOMPLETE_COLOR,
}
_LAYER_DESCRIPTIONS = {
    "GRADE_0": "vertebrae with morphometric grade 0 (normal)",
    "GRADE_1": "vertebrae with morphometric grade 1 (mild)",
    "GRADE_2": "vertebrae with morphometric grade 2 (moderate)",
    "GRADE_3": "vertebrae with morphometric grade 3 (severe)",
    "INCOMPLETE": "vertebrae not yet fully annotated",
}
_HEIGHTS = (
    ("anterior", "superior_anterior", "inferior_anterior", "Ha"),
    ("middle", "superior_middle", "inferior_middle", "Hm"),
    ("posterior", "superior_posterior", "inferior_posterior", "Hp"),
)


def _layer_of(record: Mapping[str, Any] | None, complete: bool) -> str:
    if not complete or record is None or not record.get("complete") or record.get("grade") is None:
        return "INCOMPLETE"
    return f"GRADE_{int(record['grade'])}"


def _graphics(
    points: Mapping[str, Sequence[float]], rows: int, columns: int
) -> list[hd.pr.GraphicObject]:
    """Points, endplates and height lines; positions off the film are clamped to its edge."""

    def at(xy: Sequence[float]) -> tuple[float, float]:
        return _clamp(pixel_to_dicom(xy), rows, columns)

    objects = []
    for name in (
        "superior_anterior",
        "superior_middle",
        "superior_posterior",
        "inferior_anterior",
        "inferior_middle",
        "inferior_posterior",
    ):
        if name in points:
            objects.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POINT,
                    graphic_data=np.array([at(points[name])]),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
    for side in ("superior", "inferior"):
        chain = [
            points[f"{side}_{w}"]
            for w in ("anterior", "middle", "posterior")
            if f"{side}_{w}" in points
        ]
        if len(chain) >= 2:
            objects.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.array([at(p) for p in chain]),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
    for _h, top, bottom, _abbr in _HEIGHTS:
        if top in points and bottom in points:
            objects.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.array([at(points[top]), at(points[bottom])]),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
    return objects


def _clamp(xy: Sequence[float], rows: int, columns: int) -> tuple[float, float]:
    return (min(max(float(xy[0]), 0.0), float(columns)), min(max(float(xy[1]), 0.0), float(rows)))


def _box(
    anchor_x: float,
    centre_y: float,
    width: float,
    height: float,
    side: str,
    rows: int,
    columns: int,
) -> tuple[float, float, float, float]:
    """A text bounding box ``(left, top, right, bottom)`` beside ``anchor_x``, kept on the film.

    ``side`` is where the box lies from the anchor: ``"right"``, ``"left"`` or
    ``"center"`` (centred on it).
    """
    left = {"right": anchor_x, "left": anchor_x - width, "center": anchor_x - width / 2}[side]
    top = centre_y - height / 2
    left = min(max(left, 0.0), max(columns - width, 0.0))
    top = min(max(top, 0.0), max(rows - height, 0.0))
    return (left, top, min(left + width, float(columns)), min(top + height, float(rows)))


def _texts(
    level: str,
    points: Mapping[str, Sequence[float]],
    record: Mapping[str, Any] | None,
    treated: bool,
    rows: int,
    columns: int,
) -> list[hd.pr.TextObject]:
    """Height values beside their lines and the level label beyond the anterior one.

    Texts are placed with bounding boxes (PIXEL units) sized for a character
    height of about 1/90 of the film height, so that viewers lay them out
    alike; the anchor point (not shown) ties each text to its line.
    """
    char_h = max(12.0, rows / 90.0)
    char_w = 0.7 * char_h
    gap = 0.4 * char_h

    def text_box(text: str, x: float, y: float, side: str) -> tuple[float, float, float, float]:
        return _box(x, y, len(text) * char_w + gap, 1.5 * char_h, side, rows, columns)

    justification = {"right": "LEFT", "left": "RIGHT", "center": "CENTER"}
    dicom = {name: pixel_to_dicom(xy) for name, xy in points.items()}
    anterior = [dicom[n] for n in ("superior_anterior", "inferior_anterior") if n in dicom]
    posterior = [dicom[n] for n in ("superior_posterior", "inferior_posterior") if n in dicom]
    facing = "left"
    if anterior and posterior:
        facing = (
            "right"
            if np.mean([p[0] for p in anterior]) > np.mean([p[0] for p in posterior])
            else "left"
        )
    away = {"left": "right", "right": "left"}
    pts = np.array(list(dicom.values()), dtype=float)
    outer_x = pts[:, 0].max() if facing == "right" else pts[:, 0].min()

    texts = []
    complete = len(points) == 6 and record is not None and bool(record.get("complete"))
    label_x = outer_x + (gap if facing == "right" else -gap)
    if complete:
        assert record is not None
        unit = record.get("unit") or "px"
        for height, top, bottom, abbr in _HEIGHTS:
            value = record.get(f"{height}_height")
            if value is None:
                continue
            mid = ((dicom[top][0] + dicom[bottom][0]) / 2, (dicom[top][1] + dicom[bottom][1]) / 2)
            text = f"{abbr} {float(value):.1f} {unit}"
            side = {"anterior": facing, "posterior": away[facing], "middle": "center"}[height]
            x = mid[0] + {"right": gap, "left": -gap, "center": 0.0}[side]
            box = text_box(text, x, mid[1], side)
            if height == "anterior":
                label_x = box[2] + gap if facing == "right" else box[0] - gap
            texts.append(
                hd.pr.TextObject(
                    text_value=text,
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    bounding_box=box,
                    anchor_point=_clamp(mid, rows, columns),
                    anchor_point_visible=False,
                    text_justification=justification[side],
                )
            )
    label = level
    if complete and record is not None and record.get("grade") is not None:
        label += f" grade {int(record['grade'])}"
    elif not complete:
        label += f" incomplete ({len(points)}/6)"
    if treated:
        label += " treated"
    centre = pts.mean(axis=0)
    texts.append(
        hd.pr.TextObject(
            text_value=label,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=text_box(label, label_x, centre[1], facing),
            anchor_point=_clamp(centre, rows, columns),
            anchor_point_visible=False,
            text_justification=justification[facing],
        )
    )
    return texts


def expected_object_counts(annotation: Annotation) -> tuple[int, int]:
    """``(graphic objects, text objects)`` a presentation state of ``annotation`` holds.

    Per vertebra with ``n`` points: ``n`` points, one polyline per endplate
    with at least two points, one per height with both ends; texts: one
    label, plus three heights when complete.
    """
    graphics = texts = 0
    for points in annotation.vertebrae.values():
        if not points:
            continue
        graphics += len(points)
        for side in ("superior", "inferior"):
            graphics += int(
                sum(f"{side}_{w}" in points for w in ("anterior", "middle", "posterior")) >= 2
            )
        graphics += sum(top in points and bottom in points for _h, top, bottom, _a in _HEIGHTS)
        texts += 1 + (3 if len(points) == 6 else 0)
    return graphics, texts


def _voi(
    ds_full: Dataset | None, header: Dataset
) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """The film's first window, or one over its pixel values when the header has none."""
    if "WindowCenter" in header and "WindowWidth" in header:
        centre = header.WindowCenter
        width = header.WindowWidth
        centre = float(centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        explanation = header.get("WindowCenterWidthExplanation")
        if isinstance(explanation, pydicom.multival.MultiValue):
            explanation = explanation[0]
        if width >= 1:
            return [
                # Lists: highdicom would split a lone explanation string into characters.
                hd.pr.SoftcopyVOILUTTransformation(
                    window_center=[centre],
                    window_width=[width],
                    window_explanation=[str(explanation)] if explanation else None,
                )
            ]
    if "VOILUTSequence" in header:
        return None  # highdicom copies the film's VOI LUT
    if ds_full is None or "PixelData" not in ds_full:
        return None
    try:
        values = pydicom.pixels.apply_modality_lut(ds_full.pixel_array, ds_full).astype(np.float64)
    except Exception:  # noqa: BLE001 - an undecodable film keeps the viewer's own window
        return None
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        low, high = float(values.min()), float(values.max()) + 1.0
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=[float((low + high) / 2)],
            window_width=[float(max(high - low, 1.0))],
            window_explanation=["vheight auto"],
        )
    ]


def build_gsps(
    annotation: Annotation,
    film: str | os.PathLike[str] | bytes | BinaryIO | Dataset,
    *,
    measurement: Any = None,
    reference: str = "adjacent",
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    replaces: Dataset | None = None,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A presentation state showing the annotation over ``film`` (module docstring).

    Parameters
    ----------
    annotation
        Landmarks of the film (``(x, y)`` pixels, pixel-centre origin).
    film
        The DICOM film (path, bytes, file object or dataset).  Its pixels are
        read only when its header offers no window.
    measurement
        Heights and grades to show; measured here when None.
    reference
        Reference method when measuring here.
    sop_instance_uid
        UID of the new presentation state; a fresh one by default.
    series_instance_uid
        Its series; by default :func:`vheight.sr.result_series_uid` of the
        film and the annotation's reader.
    replaces
        An earlier presentation state of the same film and reader (header
        enough): the new one joins its series with the next instance number.

    Raises
    ------
    SRExportError
        The film is not DICOM, not grayscale, or not the annotated one.
    """
    name = str(film) if isinstance(film, (str, os.PathLike)) else "film"
    header = read_film_header(film)
    check_same_film(annotation, header, name)
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise SRExportError(f"{name}: a grayscale presentation state needs a grayscale film")
    if len(annotation.vertebrae) == 0:
        raise SRExportError("the annotation has no landmark: nothing to show")
    if measurement is None:
        from vheight.morphometry import measure

        measurement = measure(annotation, calibration_for(annotation, header), reference=reference)
    records = {str(r["level"]): r for r in measurement.records()}

    ds_full = None
    if not ("WindowCenter" in header or "VOILUTSequence" in header):
        if isinstance(film, Dataset):
            ds_full = film
        elif hasattr(film, "pixels") and hasattr(film, "info"):
            ds_full = read_dataset(film.info.path, pixels=True)  # read_film_header checked it
        else:
            fp: Any = io.BytesIO(film) if isinstance(film, bytes) else film
            if hasattr(fp, "seek"):
                fp.seek(0)
            ds_full = read_dataset(fp, pixels=True)
    evidence = evidence_header(header)
    rows, columns = int(header.Rows), int(header.Columns)

    layers = [
        hd.pr.GraphicLayer(
            layer_name=layer,
            order=i + 1,
            description=_LAYER_DESCRIPTIONS[layer],
            display_color=hd.color.CIELabColor.from_rgb(*_LAYER_COLORS[layer]),
        )
        for i, layer in enumerate(LAYERS)
    ]
    by_name = {layer.GraphicLayer: layer for layer in layers}
    treated = set(annotation.treated_levels)
    annotations = []
    for level, points in annotation.vertebrae.items():
        if not points:
            continue
        record = records.get(level)
        layer = by_name[_layer_of(record, len(points) == 6)]
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[evidence],
                graphic_layer=layer,
                graphic_objects=_graphics(points, rows, columns),
                text_objects=_texts(level, points, record, level in treated, rows, columns),
            )
        )
    used = {a.GraphicLayer for a in annotations}
    layers = [layer for layer in layers if layer.GraphicLayer in used]

    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    shape = (
        hd.PresentationLUTShapeValues.INVERSE
        if photometric == "MONOCHROME1"
        else hd.PresentationLUTShapeValues.IDENTITY
    )
    instance_number = 1
    if replaces is not None:
        series_instance_uid = series_instance_uid or str(replaces.SeriesInstanceUID)
        instance_number = int(replaces.get("InstanceNumber") or 0) + 1
    if series_instance_uid is None:
        series_instance_uid = result_series_uid(
            str(header.SOPInstanceUID), reader_name(annotation.annotator), "gsps"
        )
    try:
        pr = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=[evidence],
            series_instance_uid=series_instance_uid,
            series_number=9302,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=instance_number,
            manufacturer="vheight",
            manufacturer_model_name="vheight",
            software_versions=__version__,
            device_serial_number="",
            content_label="VHEIGHT",
            content_description="vertebral landmarks and heights",
            graphic_annotations=annotations,
            graphic_layers=layers,
            voi_lut_transformations=_voi(ds_full, header),
            presentation_lut_transformation=hd.PresentationLUTTransformation(
                presentation_lut_shape=shape
            ),
            content_creator_name=None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SRExportError(f"{name}: cannot build the presentation state: {exc}") from exc
    pr.SeriesDescription = "vheight landmarks and heights"
    # General Series Laterality is Type 2C (paired body parts): the film's
    # when it has one; absent for a named body part without one (the spine
    # is not paired); empty (unknown) when the film names neither.
    if header.get("BodyPartExamined"):
        pr.BodyPartExamined = header.BodyPartExamined
    if header.get("Laterality"):
        pr.Laterality = header.Laterality
    elif not header.get("BodyPartExamined"):
        pr.Laterality = None
    return pr


def gsps_bytes(annotation: Annotation, film: Any, **kwargs: Any) -> bytes:
    """:func:`build_gsps` encoded as a DICOM file (Part 10), in memory."""
    pr = build_gsps(annotation, film, **kwargs)
    buffer = io.BytesIO()
    pr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_gsps(
    annotation: Annotation, film: Any, out: str | os.PathLike[str], **kwargs: Any
) -> Path:
    """Write :func:`build_gsps` to ``out`` (atomically) and return its path."""
    return write_atomic(out, gsps_bytes(annotation, film, **kwargs), make_parents=True)
