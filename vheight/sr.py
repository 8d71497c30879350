"""DICOM Structured Report export and import: TID 1500 Measurement Report.

One SR document (Comprehensive SR IOD, built with highdicom) per annotated
film.  It references the film by SOP Instance UID, inherits the patient and
study from the film's header, and holds:

- one *Measurement Group* (TID 1501) per annotated vertebra, with the tracking
  identifier = the level (``"L1"``) and a tracking UID, the finding site = the
  vertebra (SNOMED CT, e.g. ``66794005`` "L1 vertebra") and the time point
  context (``pre``, ``post``, ``followup``);
- in it, the anterior, middle and posterior heights (TID 300 measurements
  ``(121207, DCM, "Height")`` in ``mm`` when calibrated, else in UCUM
  ``{pixel}``; the finding site is the vertebra with the topographical
  modifier ``(255549009, SCT, "Anterior")``, ``(C25569, NCIt, "Middle")`` or
  ``(255551008, SCT, "Posterior")``, all three of CID 212), each inferred from
  a SCOORD ``POLYLINE`` through its two landmarks on the film; the wedge, mid
  and crush ratios ``(118586006, SCT, "Ratio")``, unit ``1``, and the wedge
  angle and segmental kyphosis ``(1483009, SCT, "Angle")``, ``deg``, each told
  apart by its measurement method; the height losses (``%``, measurement
  method = the reference method actually used); the Genant grade and the
  deformity type as coded qualitative evaluations, and whether the level was
  treated (SCT Yes/No);
- one further group, tracking identifier ``"vheight annotation"``, holding
  the pixel spacing used (DCM ``Vertical/Horizontal Pixel Spacing``, mm), its
  label (``mm ERMF``, ``mm Proj``, ``px`` ...) and, as the parameters of its
  algorithm identification, the facts of the annotation as one JSON text:
  timepoint, patient position, annotator, notes, time stamps, the
  calibration stored with it, and every landmark exactly (64-bit floats;
  SCOORD graphic data is only 32-bit, so the polylines alone would round).

Concepts without a standard code (the ratio and angle methods, height loss,
grade, deformity type, treated level, spacing label) use the private coding
scheme ``99VHEIGHT``, declared in the Coding Scheme Identification Sequence.
Documents written by vheight 0.x, where heights, ratios and angles had
private codes and each landmark was two numeric items, are read as well.

Character set: the document keeps the film's Specific Character Set when all
its text fits it, and is written in UTF-8 (``ISO_IR 192``) otherwise (a
reader named "Łukasz Żółć 李" on an ``ISO_IR 100`` film).

Versions: a document re-exported for the same film and reader names the one
it replaces in its Predecessor Documents Sequence and joins its series; the
series of a film and reader is the same UID everywhere
(:func:`result_series_uid`), so an archive groups every version of one
result in one series, and :func:`newest_results` picks the current ones.

Coordinates
-----------
vheight places the centre of the top-left pixel at ``(0, 0)``; DICOM spatial
coordinates (SCOORD, and the pixel values written here) place the top-left
*corner* of that pixel at ``(0, 0)``.  Export adds 0.5 to both coordinates and
import subtracts it.

:func:`annotation_from_sr` reads such a document back into an
:class:`~vheight.annotation.Annotation` (identical landmarks, timepoint,
treated levels, film reference and stored calibration).  SR documents from
other software that follow the same layout without the landmark coordinates
are read from the height polylines instead (32-bit precision).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ComprehensiveSRStorage

from vheight import __version__
from vheight.annotation import LEVELS, POINT_NAMES, Annotation
from vheight.calibration import Calibration, SpacingLabel
from vheight.dicom import read_dataset
from vheight.errors import SRExportError
from vheight.files import write_atomic

__all__ = [
    "SCHEME",
    "result_series_uid",
    "sr_facts",
    "SRFacts",
    "newest_results",
    "ANNOTATION_GROUP_ID",
    "SRExportError",
    "build_sr",
    "write_sr",
    "sr_bytes",
    "annotation_from_sr",
    "read_film_header",
    "pixel_to_dicom",
    "dicom_to_pixel",
]

#: Coding scheme designator of vheight's private concepts.
SCHEME = "99VHEIGHT"
#: Tracking identifier of the group holding the annotation-wide facts.
ANNOTATION_GROUP_ID = "vheight annotation"

_SERIES_NUMBER = 9301
_MANUFACTURER = "vheight"


def _local(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


# -- concepts ---------------------------------------------------------------------------

_PROCEDURE = codes.SCT.PlainRadiography
_HEIGHT = codes.DCM.Height  # (121207, DCM, "Height")
_RATIO = Code("118586006", "SCT", "Ratio")
_ANGLE = Code("1483009", "SCT", "Angle")
#: Topographical modifier of the vertebra (finding site) per height, CID 212.
_HEIGHT_MODIFIERS = {
    "anterior": Code("255549009", "SCT", "Anterior"),
    "middle": Code("C25569", "NCIt", "Middle"),
    "posterior": Code("255551008", "SCT", "Posterior"),
}
_HEIGHT_POINTS = {
    "anterior": ("superior_anterior", "inferior_anterior"),
    "middle": ("superior_middle", "inferior_middle"),
    "posterior": ("superior_posterior", "inferior_posterior"),
}
#: Measurement methods telling the ratios apart (no standard code exists).
_RATIO_METHODS = {
    "wedge_ratio": _local("VH-WR", "Vertebral wedge ratio (anterior / posterior height)"),
    "mid_ratio": _local("VH-MR", "Vertebral mid ratio (middle / posterior height)"),
    "crush_ratio": _local("VH-CR", "Vertebral crush ratio (posterior / adjacent posterior height)"),
}
#: Measurement methods telling the angles apart (no standard code exists).
_ANGLE_METHODS = {
    "wedge_angle_deg": _local("VH-WA", "Vertebral wedge angle (positive = kyphotic)"),
    "segmental_kyphosis_deg": _local("VH-SK", "Segmental kyphosis angle (positive = kyphosis)"),
}
#: Concept names of vheight 0.x documents, still read.
_OLD_HEIGHT_CODES = {
    "anterior": _local("VH-HA", "Anterior vertebral body height"),
    "middle": _local("VH-HM", "Middle vertebral body height"),
    "posterior": _local("VH-HP", "Posterior vertebral body height"),
}
_LOSS_CODES = {
    "anterior_loss_pct": _local("VH-LA", "Anterior vertebral height loss"),
    "middle_loss_pct": _local("VH-LM", "Middle vertebral height loss"),
    "posterior_loss_pct": _local("VH-LP", "Posterior vertebral height loss"),
    "max_loss_pct": _local("VH-LX", "Maximum vertebral height loss"),
}
_REFERENCE_CODES = {
    "adjacent": _local("VH-REF-ADJ", "Reference height: mean of adjacent vertebrae"),
    "posterior": _local("VH-REF-POST", "Reference height: own posterior height"),
    "max": _local("VH-REF-MAX", "Reference height: larger of adjacent and posterior"),
    "nearest_normal": _local("VH-REF-NN", "Reference height: mean of nearest normal vertebrae"),
}
_GRADE_NAME = _local("VH-GRADE", "Morphometric vertebral fracture grade (Genant), suggested")
_GRADE_CODES = {
    0: _local("VH-G0", "Grade 0, normal (height loss < 20 %)"),
    1: _local("VH-G1", "Grade 1, mild (height loss 20-25 %)"),
    2: _local("VH-G2", "Grade 2, moderate (height loss 25-40 %)"),
    3: _local("VH-G3", "Grade 3, severe (height loss > 40 %)"),
}
_DEFORMITY_NAME = _local("VH-DEF", "Vertebral deformity type")
_DEFORMITY_CODES = {
    "wedge": _local("VH-DEF-W", "Wedge deformity"),
    "biconcave": _local("VH-DEF-B", "Biconcave deformity"),
    "crush": _local("VH-DEF-C", "Crush deformity"),
}
_TREATED_NAME = _local("VH-TREATED", "Vertebral augmentation at this level")
_SPACING_LABEL_NAME = _local("VH-SPACING", "Pixel spacing calibration")
_SPACING_LABEL_CODES = {
    label: _local(f"VH-SP-{i}", f"Spacing {label.value}") for i, label in enumerate(SpacingLabel)
}
_ABBR = {
    "superior_anterior": "SA",
    "superior_middle": "SM",
    "superior_posterior": "SP",
    "inferior_anterior": "IA",
    "inferior_middle": "IM",
    "inferior_posterior": "IP",
}
#: Landmark coordinates as numeric items (vheight 0.x documents, still read).
_OLD_LANDMARK_CODES = {
    (name, axis): _local(
        f"VH-{_ABBR[name]}-{axis.upper()}",
        f"{name.replace('_', ' ').capitalize()} landmark, {'column' if axis == 'x' else 'row'}",
    )
    for name in POINT_NAMES
    for axis in ("x", "y")
}
_VERTEBRA_CODES: dict[str, Code] = {
    level: getattr(codes.SCT, f"{level}Vertebra") for level in LEVELS
}
_LEVEL_BY_VERTEBRA_CODE = {code.value: level for level, code in _VERTEBRA_CODES.items()}

_TIME_POINT = Code("C2348792", "UMLS", "Time Point")
_UNIT_MM = codes.UCUM.Millimeter
_UNIT_PIXEL = Code("{pixel}", "UCUM", "pixel")
_UNIT_ONE = codes.UCUM.NoUnits
_UNIT_DEG = codes.UCUM.Degree
_UNIT_PCT = codes.UCUM.Percent


def _coding_schemes() -> list[CodingSchemeIdentificationItem]:
    return [
        CodingSchemeIdentificationItem(
            designator=SCHEME,
            name="vheight vertebral morphometry concepts",
            version="1",
            responsible_organization="vheight project",
        )
    ]


# -- coordinates ------------------------------------------------------------------------


def pixel_to_dicom(xy: Sequence[float]) -> tuple[float, float]:
    """vheight ``(x, y)`` (pixel centre origin) -> DICOM ``(column, row)`` (pixel corner origin)."""
    return (float(xy[0]) + 0.5, float(xy[1]) + 0.5)


def dicom_to_pixel(cr: Sequence[float]) -> tuple[float, float]:
    """DICOM ``(column, row)`` (pixel corner origin) -> vheight ``(x, y)`` (pixel centre origin)."""
    return (float(cr[0]) - 0.5, float(cr[1]) - 0.5)


# -- the film ---------------------------------------------------------------------------


def read_film_header(source: Any) -> Dataset:
    """The DICOM header of a film (pixels not read), for referencing it.

    ``source`` is a path, ``bytes``, a binary file object, a pydicom
    ``Dataset``, or a :class:`vheight.film.Film` loaded from a DICOM file
    (its path is read again).  Raises :class:`SRExportError` when the source
    is not a DICOM image with the identifiers an SR or a presentation state
    needs.
    """
    info = getattr(source, "info", None)
    if info is not None and hasattr(source, "pixels"):
        path = getattr(info, "path", None)
        if str(getattr(info, "format", "")) != "DICOM":
            raise SRExportError(
                f"{info.name}: a {info.format} film has no DICOM identity; DICOM SR and "
                "presentation states need the DICOM film"
            )
        if not path or not Path(path).is_file():
            raise SRExportError(
                f"{info.name}: the film was not read from a file; pass the DICOM file's bytes"
            )
        source = Path(path)
    if isinstance(source, Dataset):
        ds = source
        name = "<dataset>"
    else:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "<upload>"
        fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            ds = read_dataset(fp, name=name)
        except FileNotFoundError as exc:
            raise SRExportError(f"{name}: film not found") from exc
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            raise SRExportError(
                f"{name}: not a DICOM file ({exc}); DICOM SR and presentation states "
                "need the DICOM film they refer to"
            ) from exc
    missing = [
        k
        for k in (
            "SOPInstanceUID",
            "SOPClassUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "Rows",
            "Columns",
        )
        if k not in ds
    ]
    if missing:
        raise SRExportError(f"{name}: the DICOM header lacks {', '.join(missing)}")
    return ds


def evidence_header(ds: Dataset) -> Dataset:
    """A copy of the film header with the type 2 attributes highdicom reads set."""
    copy = Dataset()
    for element in ds:
        if element.tag.group in (0x7FE0,) or element.tag.is_private:
            continue
        copy.add(element)
    copy.file_meta = getattr(ds, "file_meta", Dataset())
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
    ):
        if keyword not in copy:
            setattr(copy, keyword, None)
    if "SamplesPerPixel" not in copy:
        copy.SamplesPerPixel = 1
    return copy


def check_same_film(annotation: Annotation, ds: Dataset, name: str) -> None:
    uid = annotation.image.sop_instance_uid
    if uid and uid != str(ds.SOPInstanceUID):
        raise SRExportError(
            f"{name}: the annotation belongs to SOP Instance UID {uid}, "
            f"but the film is {ds.SOPInstanceUID}; pass the film it was drawn on"
        )
    for key, attr in (("rows", "Rows"), ("columns", "Columns")):
        value = getattr(annotation.image, key)
        if value is not None and int(value) != int(getattr(ds, attr)):
            raise SRExportError(
                f"{name}: the annotation expects {key} = {value}, the film has "
                f"{int(getattr(ds, attr))}; pass the film it was drawn on"
            )


def _image_library(ds: Dataset) -> list[Dataset] | None:
    """The film for the TID 1600 image library (modality, size, orientation), when describable."""
    evidence = evidence_header(ds)
    try:
        hd.sr.ImageLibraryEntryDescriptors(evidence)
    except (AttributeError, ValueError, TypeError):
        return None  # a header too sparse to describe: the groups still reference the film
    return [evidence]


def calibration_for(annotation: Annotation, ds: Dataset) -> Calibration:
    if annotation.calibration is not None:
        return annotation.calibration
    calibration, _warnings = Calibration.from_dataset(ds)
    return calibration


# -- export -----------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if np.isfinite(number) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class _FilmRef:
    sop_class_uid: str
    sop_instance_uid: str

    def region(self) -> hd.sr.SourceImageForRegion:
        return hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=self.sop_class_uid,
            referenced_sop_instance_uid=self.sop_instance_uid,
        )

    def group_source(self) -> hd.sr.SourceImageForMeasurementGroup:
        return hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=self.sop_class_uid,
            referenced_sop_instance_uid=self.sop_instance_uid,
        )

    def scoord(
        self, kind: str, points: Sequence[Sequence[float]]
    ) -> hd.sr.CoordinatesForMeasurement:
        data = np.array([pixel_to_dicom(p) for p in points], dtype=np.float64)
        return hd.sr.CoordinatesForMeasurement(
            graphic_type=kind, graphic_data=data, source_image=self.region()
        )


def _vertebra_group(
    level: str,
    points: Mapping[str, Sequence[float]],
    record: Mapping[str, Any] | None,
    treated: bool,
    film: _FilmRef,
    time_point: hd.sr.TimePointContext | None,
    tracking_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements: list[hd.sr.Measurement] = []
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    complete = record is not None and bool(record.get("complete")) and len(points) == 6
    if complete:
        assert record is not None
        length_unit = _UNIT_MM if record.get("unit") == "mm" else _UNIT_PIXEL
        for height, modifier in _HEIGHT_MODIFIERS.items():
            value = _num(record.get(f"{height}_height"))
            if value is None:
                continue
            top, bottom = _HEIGHT_POINTS[height]
            measurements.append(
                hd.sr.Measurement(
                    name=_HEIGHT,
                    value=value,
                    unit=length_unit,
                    finding_sites=[
                        hd.sr.FindingSite(_VERTEBRA_CODES[level], topographical_modifier=modifier)
                    ],
                    referenced_coordinates=[film.scoord("POLYLINE", [points[top], points[bottom]])],
                )
            )
        for key, method in _RATIO_METHODS.items():
            value = _num(record.get(key))
            if value is not None:
                measurements.append(
                    hd.sr.Measurement(name=_RATIO, value=value, unit=_UNIT_ONE, method=method)
                )
        for key, method in _ANGLE_METHODS.items():
            value = _num(record.get(key))
            if value is not None:
                measurements.append(
                    hd.sr.Measurement(name=_ANGLE, value=value, unit=_UNIT_DEG, method=method)
                )
        method = _REFERENCE_CODES.get(str(record.get("reference_method") or ""))
        for key, code in _LOSS_CODES.items():
            value = _num(record.get(key))
            if value is not None:
                measurements.append(
                    hd.sr.Measurement(name=code, value=value, unit=_UNIT_PCT, method=method)
                )
        grade = record.get("grade")
        if grade is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(_GRADE_NAME, _GRADE_CODES[int(grade)]))
        deformity = record.get("deformity_type")
        if deformity in _DEFORMITY_CODES:
            evaluations.append(
                hd.sr.QualitativeEvaluation(_DEFORMITY_NAME, _DEFORMITY_CODES[str(deformity)])
            )
    evaluations.append(
        hd.sr.QualitativeEvaluation(_TREATED_NAME, codes.SCT.Yes if treated else codes.SCT.No)
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=level),
        time_point_context=time_point,
        finding_sites=[hd.sr.FindingSite(_VERTEBRA_CODES[level])],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[film.group_source()],
    )


def _annotation_facts(annotation: Annotation, ds: Dataset) -> dict[str, Any]:
    data = annotation.to_dict()  # unknown keys as plain JSON values
    return {
        "format": "vheight.annotation.facts",
        "version": 2,
        "image": annotation.image.to_dict()
        | {
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
        },
        "timepoint": annotation.timepoint,
        "calibration": None if annotation.calibration is None else annotation.calibration.to_dict(),
        "treated_levels": list(annotation.treated_levels),
        "patient_position": annotation.patient_position,
        "annotator": annotation.annotator,
        "created": annotation.created,
        "modified": annotation.modified,
        "notes": annotation.notes,
        "extra": {key: data[key] for key in annotation.extra},
        # vheight coordinates (pixel-centre origin), exact 64-bit values.
        "landmarks": data["vertebrae"],
    }


def _annotation_group(
    annotation: Annotation,
    ds: Dataset,
    calibration: Calibration,
    film: _FilmRef,
    time_point: hd.sr.TimePointContext | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    facts = _annotation_facts(annotation, ds)
    measurements = []
    if calibration.is_calibrated:
        measurements = [
            hd.sr.Measurement(
                name=codes.DCM.VerticalPixelSpacing,
                value=float(calibration.row_spacing_mm),
                unit=_UNIT_MM,
            ),
            hd.sr.Measurement(
                name=codes.DCM.HorizontalPixelSpacing,
                value=float(calibration.col_spacing_mm),
                unit=_UNIT_MM,
            ),
        ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=ANNOTATION_GROUP_ID),
        time_point_context=time_point,
        algorithm_id=hd.sr.AlgorithmIdentification(
            name="vheight",
            version=__version__,
            parameters=[json.dumps(facts, sort_keys=True, allow_nan=False)],
        ),
        measurements=measurements or None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                _SPACING_LABEL_NAME, _SPACING_LABEL_CODES[calibration.label]
            )
        ],
        source_images=[film.group_source()],
    )


def result_series_uid(film_sop_instance_uid: str, reader: str | None, kind: str = "sr") -> str:
    """The Series Instance UID of vheight's results of one film by one reader.

    The same everywhere for the same ``(film, reader, kind)``: every version
    of a result lands in one series, whichever computer exported it.
    ``kind`` is ``"sr"`` (measurement reports) or ``"gsps"`` (presentation
    states).
    """
    return str(
        pydicom.uid.generate_uid(
            entropy_srcs=["vheight result series", kind, film_sop_instance_uid, reader_name(reader)]
        )
    )


def reader_name(annotator: str | None) -> str:
    return " ".join((annotator or "").split())


def _fits(text: str, charset: Any) -> bool:
    """True when ``text`` can be written in the Specific Character Set ``charset``."""
    values = [charset] if isinstance(charset, str) else list(charset or [])
    terms = [v for v in values if v] or ["ISO_IR 6"]
    if len(terms) > 1 or "2022" in terms[0]:
        return text.isascii()  # ISO 2022 code extensions: only what every one holds
    try:
        codec = pydicom.charset.convert_encodings(terms)[0]
        text.encode(codec)
    except (LookupError, UnicodeEncodeError, ValueError):
        return False
    return True


def _predecessor_of(
    predecessor: Dataset, ds: Dataset, annotation: Annotation, name: str
) -> tuple[Dataset, int]:
    """The reference to the replaced document, and the next instance number in its series."""
    missing = [
        k
        for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        if k not in predecessor
    ]
    if missing:
        raise SRExportError(f"{name}: the replaced SR lacks {', '.join(missing)}")
    if str(predecessor.StudyInstanceUID) != str(ds.StudyInstanceUID):
        raise SRExportError(
            f"{name}: the replaced SR {predecessor.SOPInstanceUID} belongs to study "
            f"{predecessor.StudyInstanceUID}, the film to {ds.StudyInstanceUID}"
        )
    facts = sr_facts(predecessor)
    if facts.film_sop_instance_uids and str(ds.SOPInstanceUID) not in facts.film_sop_instance_uids:
        raise SRExportError(
            f"{name}: the replaced SR {predecessor.SOPInstanceUID} reports another film"
        )
    if facts.reader is not None and facts.reader != reader_name(annotation.annotator):
        raise SRExportError(
            f"{name}: the replaced SR {predecessor.SOPInstanceUID} is reader "
            f"'{facts.reader}', the annotation is reader '{reader_name(annotation.annotator)}'"
        )
    reference = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(reference, keyword, str(getattr(predecessor, keyword)))
    number = int(predecessor.get("InstanceNumber") or 0) + 1
    return reference, number


def build_sr(
    annotation: Annotation,
    film: str | os.PathLike[str] | bytes | BinaryIO | Dataset,
    *,
    measurement: Any = None,
    reference: str = "adjacent",
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    predecessor: Dataset | None = None,
) -> hd.sr.ComprehensiveSR:
    """The TID 1500 Measurement Report of one annotated film (module docstring).

    Parameters
    ----------
    annotation
        Landmarks of the film (``(x, y)`` pixels, pixel-centre origin).
    film
        The DICOM film the annotation was drawn on (path, bytes, file object
        or header dataset): it supplies the patient, study and the referenced
        SOP instance.  Its pixels are not read.
    measurement
        The :class:`~vheight.morphometry.Measurement` to record; measured here
        (calibration: the annotation's own, else the film header's) when None.
    reference
        Reference method when measuring here: ``adjacent``, ``posterior`` or ``max``.
    sop_instance_uid
        UID of the new document; a fresh one by default.
    series_instance_uid
        Its series; by default :func:`result_series_uid` of the film and the
        annotation's reader (or the replaced document's series).
    predecessor
        The document this one replaces (a dataset with at least its SOP
        class, SOP instance, study and series UIDs; the header of an earlier
        vheight SR of the same film and reader): it is named in the
        Predecessor Documents Sequence and the new one joins its series.

    Raises
    ------
    SRExportError
        The film is not DICOM, is not the one the annotation refers to, or
        ``predecessor`` reports another film, reader or study.
    """
    ds = read_film_header(film)
    name = str(film) if isinstance(film, (str, os.PathLike)) else "film"
    check_same_film(annotation, ds, name)
    if len(annotation.vertebrae) == 0:
        raise SRExportError("the annotation has no landmark: nothing to report")
    previous = None
    instance_number = 1
    if predecessor is not None:
        previous, instance_number = _predecessor_of(predecessor, ds, annotation, name)
    calibration = calibration_for(annotation, ds)
    if measurement is None:
        from vheight.morphometry import measure

        measurement = measure(annotation, calibration, reference=reference)
    records = {str(r["level"]): r for r in measurement.records()}
    film_ref = _FilmRef(sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID))
    time_point = None
    if annotation.timepoint:
        order = {"pre": 1, "post": 2, "followup": 3}.get(annotation.timepoint)
        time_point = hd.sr.TimePointContext(time_point=annotation.timepoint, time_point_order=order)

    groups = [_annotation_group(annotation, ds, calibration, film_ref, time_point)]
    treated = set(annotation.treated_levels)
    study_uid = str(ds.StudyInstanceUID)
    for level, points in annotation.vertebrae.items():
        # Tracking UIDs are stable for (study, level): the same vertebra is
        # tracked across the pre, post and follow-up films of a study.
        tracking_uid = pydicom.uid.generate_uid(entropy_srcs=["vheight", study_uid, level])
        groups.append(
            _vertebra_group(
                level,
                points,
                records.get(level),
                level in treated,
                film_ref,
                time_point,
                tracking_uid,
            )
        )

    observer_device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pydicom.uid.generate_uid(entropy_srcs=["vheight", __version__]),
            name="vheight",
            manufacturer_name=_MANUFACTURER,
            model_name="vheight",
        ),
    )
    observer_person = None
    annotator = reader_name(annotation.annotator)
    if annotator:
        person_name = annotator if "^" in annotator else f"{annotator}^"
        try:
            observer_person = hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name=person_name
                ),
            )
        except (ValueError, TypeError):
            observer_person = None  # not a valid DICOM person name: kept in the facts only
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=observer_person, observer_device_context=observer_device
        ),
        procedure_reported=_PROCEDURE,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
        referenced_images=_image_library(ds),
    )
    if series_instance_uid is None:
        series_instance_uid = (
            str(previous.SeriesInstanceUID)
            if previous is not None
            else result_series_uid(str(ds.SOPInstanceUID), annotator, "sr")
        )
    evidence = evidence_header(ds)
    try:
        sr = hd.sr.ComprehensiveSR(
            evidence=[evidence],
            content=report[0],
            series_instance_uid=series_instance_uid,
            series_number=_SERIES_NUMBER,
            sop_instance_uid=sop_instance_uid or hd.UID(),
            instance_number=instance_number,
            manufacturer=_MANUFACTURER,
            is_complete=all(annotation.is_complete(lv) for lv in annotation.vertebrae),
            coding_schemes=_coding_schemes(),
            series_description="vheight vertebral height measurements",
            software_versions=__version__,
            manufacturer_model_name="vheight",
            previous_versions=None if previous is None else [previous],
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SRExportError(f"{name}: cannot build the DICOM SR: {exc}") from exc
    if not _fits(annotator, ds.get("SpecificCharacterSet")):
        # The film's character set cannot hold the reader's name: UTF-8 holds
        # every text, and the film's own values (decoded on reading) too.
        sr.SpecificCharacterSet = "ISO_IR 192"
    return sr


def sr_bytes(annotation: Annotation, film: Any, **kwargs: Any) -> bytes:
    """:func:`build_sr` encoded as a DICOM file (Part 10), in memory."""
    sr = build_sr(annotation, film, **kwargs)
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_sr(annotation: Annotation, film: Any, out: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`build_sr` to ``out`` (atomically) and return its path."""
    data = sr_bytes(annotation, film, **kwargs)
    return write_atomic(out, data, make_parents=True)


# -- import -----------------------------------------------------------------------------


def _read_sr(source: Any) -> tuple[Any, str]:
    """The SR document parsed by highdicom (IOD and content item checks), and a name for it."""
    if isinstance(source, Dataset):
        ds, name = source, "<dataset>"
        copy = True
    else:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "<upload>"
        fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            ds = pydicom.dcmread(fp)
        except FileNotFoundError as exc:
            raise SRExportError(f"{name}: file not found") from exc
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            raise SRExportError(f"{name}: not a DICOM file ({exc})") from exc
        copy = False  # read here: nobody else holds it
    classes = {
        ComprehensiveSRStorage: hd.sr.ComprehensiveSR,
        pydicom.uid.EnhancedSRStorage: hd.sr.EnhancedSR,
        pydicom.uid.Comprehensive3DSRStorage: hd.sr.Comprehensive3DSR,
    }
    sop_class = str(getattr(ds, "SOPClassUID", ""))
    if sop_class not in classes:
        raise SRExportError(
            f"{name}: not a Comprehensive or Enhanced SR document "
            f"(SOP Class UID {sop_class or 'missing'})"
        )
    try:
        return classes[sop_class].from_dataset(ds, copy=copy), name
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SRExportError(f"{name}: not a valid SR document: {exc}") from exc


def _code_key(concept: Any) -> tuple[str, str]:
    return (str(concept.scheme_designator), str(concept.value))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Group:
    """What vheight reads from one TID 1501 measurement group (parsed content items)."""

    tracking_identifier: str | None
    finding_sites: tuple[tuple[str, str], ...]
    numbers: Mapping[tuple[str, str], Any]  # concept -> first NUM content item
    all_numbers: tuple[Any, ...]
    codes: Mapping[tuple[str, str], tuple[str, str]]  # concept -> coded value
    texts: Mapping[tuple[str, str], tuple[str, ...]]
    source_sop_instance_uids: tuple[str, ...]


def _children(item: Any) -> list[Any]:
    return list(getattr(item, "ContentSequence", []) or [])


def _read_group(item: Any) -> _Group:
    tracking = None
    sites: list[tuple[str, str]] = []
    numbers: dict[tuple[str, str], Any] = {}
    all_numbers: list[Any] = []
    coded: dict[tuple[str, str], tuple[str, str]] = {}
    texts: dict[tuple[str, str], list[str]] = {}
    sources: list[str] = []
    for child in _children(item):
        key = _code_key(child.name)
        kind = (
            child.value_type.value if hasattr(child.value_type, "value") else str(child.value_type)
        )
        if kind == "TEXT":
            texts.setdefault(key, []).append(str(child.value))
            if key == _code_key(codes.DCM.TrackingIdentifier):
                tracking = str(child.value)
        elif kind == "NUM":
            numbers.setdefault(key, child)
            all_numbers.append(child)
        elif kind == "CODE":
            value = _code_key(child.value)
            if key == _code_key(codes.SCT.FindingSite):
                sites.append(value)
            else:
                coded.setdefault(key, value)
        elif kind == "IMAGE":
            sources.append(str(child.referenced_sop_instance_uid))
    return _Group(
        tracking_identifier=tracking,
        finding_sites=tuple(sites),
        numbers=numbers,
        all_numbers=tuple(all_numbers),
        codes=coded,
        texts={k: tuple(v) for k, v in texts.items()},
        source_sop_instance_uids=tuple(sources),
    )


def _facts(group: _Group, name: str) -> dict[str, Any]:
    for text in group.texts.get(_code_key(codes.DCM.AlgorithmParameters), ()):
        facts = _facts_json(text)
        if facts is not None:
            return facts
    raise SRExportError(f"{name}: the '{ANNOTATION_GROUP_ID}' group lacks its parameters")


def _facts_json(text: str) -> dict[str, Any] | None:
    try:
        facts = json.loads(text)
    except ValueError:
        return None
    if isinstance(facts, dict) and facts.get("format") == "vheight.annotation.facts":
        return facts
    return None


def _group_level(group: _Group) -> str | None:
    for scheme, value in group.finding_sites:
        level = _LEVEL_BY_VERTEBRA_CODE.get(value)
        if level is not None and scheme in ("SCT", "SRT"):
            return level
    identifier = group.tracking_identifier
    return identifier if identifier in LEVELS else None


_MODIFIER_KEY = ("SCT", "106233006")  # Topographical modifier
_HEIGHT_BY_MODIFIER = {_code_key(code): height for height, code in _HEIGHT_MODIFIERS.items()}
_HEIGHT_BY_OLD_CODE = {_code_key(code): height for height, code in _OLD_HEIGHT_CODES.items()}


def _height_of(item: Any) -> str | None:
    """``anterior``, ``middle`` or ``posterior`` for a height NUM item (new or 0.x codes)."""
    key = _code_key(item.name)
    if key in _HEIGHT_BY_OLD_CODE:
        return _HEIGHT_BY_OLD_CODE[key]
    if key != _code_key(_HEIGHT):
        return None
    for site in _children(item):
        if _code_key(site.name) != _code_key(codes.SCT.FindingSite):
            continue
        for modifier in _children(site):
            if _code_key(modifier.name) == _MODIFIER_KEY:
                return _HEIGHT_BY_MODIFIER.get(_code_key(modifier.value))
    return None


def _points_of(group: _Group) -> dict[str, tuple[float, float]]:
    """Landmarks from vheight 0.x numeric items, else from the height polylines (32-bit)."""
    points: dict[str, tuple[float, float]] = {}
    for name in POINT_NAMES:
        mx = group.numbers.get(_code_key(_OLD_LANDMARK_CODES[(name, "x")]))
        my = group.numbers.get(_code_key(_OLD_LANDMARK_CODES[(name, "y")]))
        if mx is not None and my is not None:
            points[name] = dicom_to_pixel((float(mx.value), float(my.value)))
    if points:
        return points
    for item in group.all_numbers:
        height = _height_of(item)
        if height is None:
            continue
        for child in _children(item):
            kind = getattr(child, "GraphicType", None)
            data = np.asarray(getattr(child, "GraphicData", []), dtype=np.float64).reshape(-1, 2)
            if kind == "POLYLINE" and len(data) == 2:
                top, bottom = _HEIGHT_POINTS[height]
                points[top] = dicom_to_pixel(data[0])
                points[bottom] = dicom_to_pixel(data[1])
                break
    return points


def _exact_landmarks(facts: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    landmarks = facts.get("landmarks")
    if not isinstance(landmarks, dict):
        return {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for level, points in landmarks.items():
        if isinstance(points, dict):
            out[str(level)] = {
                str(p): (float(xy[0]), float(xy[1]))
                for p, xy in points.items()
                if isinstance(xy, (list, tuple)) and len(xy) == 2
            }
    return out


def annotation_from_sr(
    source: str | os.PathLike[str] | bytes | BinaryIO | Dataset,
    *,
    image_file: str | None = None,
) -> Annotation:
    """The annotation recorded in a vheight TID 1500 SR document.

    The document is parsed and checked by highdicom (SR IOD, content items,
    TID 1500 root) before its measurement groups are read.

    Parameters
    ----------
    source
        Path, bytes, binary file object or dataset of the SR document.
    image_file
        Value for ``image.file`` (the film's name relative to where the
        annotation will be saved); defaults to the name recorded at export.

    Raises
    ------
    SRExportError
        Not an SR document, not a TID 1500 measurement report, or one holding
        no vertebra.
    AnnotationError
        The recorded landmarks do not make a valid annotation.
    """
    from highdicom.sr.utils import find_content_items

    sr, name = _read_sr(source)
    try:
        report = hd.sr.MeasurementReport.from_sequence(sr.content, copy=False)
        containers = find_content_items(
            report[0],
            name=codes.DCM.ImagingMeasurements,
            value_type=hd.sr.ValueTypeValues.CONTAINER,
        )
        items = (
            []
            if not containers
            else find_content_items(
                containers[0],
                name=codes.DCM.MeasurementGroup,
                value_type=hd.sr.ValueTypeValues.CONTAINER,
            )
        )
        groups = [_read_group(item) for item in items]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SRExportError(f"{name}: not a TID 1500 measurement report: {exc}") from exc

    facts: dict[str, Any] = {}
    vertebrae: dict[str, dict[str, tuple[float, float]]] = {}
    treated: list[str] = []
    sop_instance_uid: str | None = None
    time_point: str | None = None
    for group in groups:
        if group.tracking_identifier == ANNOTATION_GROUP_ID:
            facts = _facts(group, name)
            continue
        level = _group_level(group)
        if level is None:
            continue
        points = _points_of(group)
        if points:
            vertebrae[level] = points
        if group.codes.get(_code_key(_TREATED_NAME)) == _code_key(codes.SCT.Yes):
            treated.append(level)
        if sop_instance_uid is None and group.source_sop_instance_uids:
            sop_instance_uid = group.source_sop_instance_uids[0]
        if time_point is None and group.texts.get(_code_key(_TIME_POINT)):
            time_point = group.texts[_code_key(_TIME_POINT)][0]
    exact = _exact_landmarks(facts)
    if exact:
        vertebrae = exact  # the annotation's own landmarks, exactly, in its order
    if not vertebrae:
        raise SRExportError(f"{name}: the SR holds no vertebra landmarks")

    image = dict(facts.get("image") or {})
    if image_file is not None:
        image["file"] = image_file
    image.setdefault("sop_instance_uid", sop_instance_uid)
    if time_point not in ("pre", "post", "followup"):
        time_point = None
    data: dict[str, Any] = {
        "format": "vheight.annotation",
        "version": 1,
        "image": image,
        "timepoint": facts.get("timepoint", time_point),
        "calibration": facts.get("calibration"),
        "vertebrae": {lv: {p: list(xy) for p, xy in pts.items()} for lv, pts in vertebrae.items()},
        "treated_levels": facts.get("treated_levels", treated),
        "patient_position": facts.get("patient_position"),
        "annotator": facts.get("annotator") or "",
        "created": facts.get("created"),
        "modified": facts.get("modified"),
        "notes": facts.get("notes") or "",
    }
    extra = facts.get("extra")
    if isinstance(extra, dict):
        for key, value in extra.items():
            data.setdefault(key, value)
    return Annotation.from_dict(data, source=name)


# -- versions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SRFacts:
    """What identifies one vheight SR document among the versions in an archive.

    Parameters
    ----------
    sop_instance_uid, series_instance_uid, study_instance_uid
        The document's UIDs.
    film_sop_instance_uids
        The films it reports (SOP Instance UIDs).
    reader
        The annotator whose landmarks it holds (blanks collapsed), ``""`` for
        none, or None when the document does not say (a header without its
        content tree).
    timepoint
        ``pre``, ``post``, ``followup`` or None.
    predecessors
        SOP Instance UIDs of the documents it replaces.
    content_datetime
        ``YYYYMMDDHHMMSS[.ffffff]`` of its content (DICOM Content Date/Time).
    instance_number
        Its Instance Number (0 when absent).
    is_vheight
        True for a document written by vheight.
    """

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    film_sop_instance_uids: tuple[str, ...]
    reader: str | None
    timepoint: str | None
    predecessors: tuple[str, ...]
    content_datetime: str
    instance_number: int
    is_vheight: bool

    @property
    def film(self) -> str | None:
        """The (first) film it reports."""
        return self.film_sop_instance_uids[0] if self.film_sop_instance_uids else None


def _walk_texts(items: Any, depth: int = 0) -> Any:
    for item in items or []:
        if str(item.get("ValueType", "")) == "TEXT":
            concept = item.get("ConceptNameCodeSequence")
            if (
                concept
                and str(concept[0].get("CodeValue", "")) == codes.DCM.AlgorithmParameters.value
            ):
                yield str(item.get("TextValue", ""))
        if depth < 4 and "ContentSequence" in item:
            yield from _walk_texts(item.ContentSequence, depth + 1)


def _referenced_instances(sequence: Any) -> list[str]:
    uids = []
    for study in sequence or []:
        for series in study.get("ReferencedSeriesSequence", []) or []:
            for sop in series.get("ReferencedSOPSequence", []) or []:
                if "ReferencedSOPInstanceUID" in sop:
                    uids.append(str(sop.ReferencedSOPInstanceUID))
    return uids


def sr_facts(ds: Dataset) -> SRFacts:
    """The identity of an SR document (module docstring, "Versions"), read with pydicom alone.

    ``ds`` is the document (or its header: then ``reader`` is None unless
    the document names it elsewhere).  Fast: no content validation.
    """
    facts = None
    if "ContentSequence" in ds:
        for text in _walk_texts(ds.ContentSequence):
            facts = _facts_json(text)
            if facts is not None:
                break
    films: list[str] = []
    reader: str | None = None
    timepoint: str | None = None
    if facts is not None:
        uid = (facts.get("image") or {}).get("sop_instance_uid")
        if uid:
            films.append(str(uid))
        reader = reader_name(facts.get("annotator"))
        timepoint = facts.get("timepoint")
    for uid in _referenced_instances(ds.get("CurrentRequestedProcedureEvidenceSequence")):
        if uid not in films:
            films.append(uid)
    date = str(ds.get("ContentDate") or ds.get("SeriesDate") or "")
    time = str(ds.get("ContentTime") or "")
    return SRFacts(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        film_sop_instance_uids=tuple(films),
        reader=reader,
        timepoint=timepoint if timepoint in ("pre", "post", "followup") else None,
        predecessors=tuple(_referenced_instances(ds.get("PredecessorDocumentsSequence"))),
        content_datetime=date + time,
        instance_number=int(ds.get("InstanceNumber") or 0),
        is_vheight=facts is not None or str(ds.get("Manufacturer", "")) == _MANUFACTURER,
    )


def newest_results(documents: Sequence[SRFacts]) -> dict[tuple[str, str], SRFacts]:
    """The current vheight result per ``(film SOP Instance UID, reader)``.

    A document named as a predecessor by another is replaced; of the rest,
    the latest content date/time (then the highest instance number) wins.
    Documents that are not vheight's, or name no film, are left out.
    """
    replaced = {uid for doc in documents for uid in doc.predecessors}
    current: dict[tuple[str, str], SRFacts] = {}
    for doc in documents:
        if not doc.is_vheight or doc.film is None or doc.sop_instance_uid in replaced:
            continue
        key = (doc.film, doc.reader or "")
        best = current.get(key)
        if best is None or (doc.content_datetime, doc.instance_number) > (
            best.content_datetime,
            best.instance_number,
        ):
            current[key] = doc
    return current
