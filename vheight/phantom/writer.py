"""Write phantom films as DICOM (DX or CR) with their true-landmark sidecars.

The film is a "For Presentation" projection radiograph: Digital X-Ray Image
Storage - For Presentation (DX, the default) or Computed Radiography Image
Storage (CR).  Every UID is derived deterministically from the film's
parameters (``pydicom.uid.generate_uid`` with entropy sources), so the same
spec always gives byte-identical headers; films sharing ``study_key`` share
the StudyInstanceUID.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from vheight import __version__
from vheight.annotation import Annotation, ImageRef, save_annotation, sidecar_path
from vheight.files import write_atomic
from vheight.phantom.render import PhantomFilm, header_spacing, render_film
from vheight.phantom.spec import Compression, FilmSpec, Modality, Photometric, Realism

__all__ = ["WrittenFilm", "film_dataset", "film_annotation", "write_film", "spec_to_dict"]

_TRANSFER_SYNTAX = {
    Compression.NONE: ExplicitVRLittleEndian,
    Compression.RLE: RLELossless,
    Compression.J2K: JPEG2000Lossless,
    Compression.JPEGLS: JPEGLSLossless,
}

_DAYS_AFTER = {None: 0, "pre": 0, "post": 2, "followup": 92}


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenFilm:
    """A film written to disk: its paths, UIDs and the rendered film with its truth."""

    path: Path
    annotation_path: Path
    sop_instance_uid: str
    study_instance_uid: str
    film: PhantomFilm

    def record(self) -> dict[str, Any]:
        """One line of the ``vheight phantom`` output."""
        spec = self.film.spec
        return {
            "file": str(self.path),
            "annotation": str(self.annotation_path),
            "seed": spec.seed,
            "timepoint": spec.timepoint,
            "rows": spec.rows,
            "columns": spec.columns,
            "row_spacing_mm": self.film.row_spacing_mm,
            "col_spacing_mm": self.film.col_spacing_mm,
            "facing": spec.facing.value,
            "levels": f"{spec.levels[0]}-{spec.levels[-1]}",
            "fractures": " ".join(str(f) for f in spec.fractures),
            "cement": " ".join(spec.cement_levels),
            "sop_instance_uid": self.sop_instance_uid,
        }


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["vheight.phantom", *(str(p) for p in parts)]))


def _study_key(spec: FilmSpec) -> str:
    return spec.study_key or spec.resolved_patient_id


def _film_date(spec: FilmSpec) -> str:
    start = _dt.datetime.strptime(spec.study_date, "%Y%m%d").date()
    return (start + _dt.timedelta(days=_DAYS_AFTER.get(spec.timepoint, 0))).strftime("%Y%m%d")


def spec_to_dict(spec: FilmSpec) -> dict[str, Any]:
    """The spec as plain JSON values (stored in the sidecar, for provenance)."""
    out: dict[str, Any] = {}
    for name in spec.__dataclass_fields__:
        value = getattr(spec, name)
        if name == "realism":
            if value is not None:
                out[name] = _realism_to_dict(value)
            continue
        if hasattr(value, "value"):
            value = value.value
        elif isinstance(value, tuple):
            value = [str(v) if not isinstance(v, (int, float, str)) else v for v in value]
        out[name] = value
    return out


def _realism_to_dict(realism: Realism) -> dict[str, Any]:
    out: dict[str, Any] = {
        "osteophytes": [str(v) for v in realism.osteophytes],
        "doubled": [str(v) for v in realism.doubled],
        "concavities": [str(v) for v in realism.concavities],
        "low_contrast_levels": list(realism.low_contrast_levels),
        "low_contrast": realism.low_contrast,
        "rib_bands": realism.rib_bands,
        "gas_blobs": realism.gas_blobs,
    }
    if realism.pedicle_columns:  # only when drawn: earlier sidecars stay as they were
        out["pedicle_columns"] = list(realism.pedicle_columns)
        out["pedicle_column_mm"] = realism.pedicle_column_mm
    if realism.soft_tissue_edges:  # likewise
        out["soft_tissue_edges"] = list(realism.soft_tissue_edges)
        out["soft_tissue_edge_mm"] = realism.soft_tissue_edge_mm
    return out


def film_dataset(film: PhantomFilm) -> Dataset:
    """The DICOM dataset of a rendered film (pixel data uncompressed)."""
    spec = film.spec
    modality = spec.resolved_modality
    sop_class = (
        DigitalXRayImageStorageForPresentation
        if modality is Modality.DX
        else ComputedRadiographyImageStorage
    )
    study_uid = _uid("study", _study_key(spec))
    series_uid = _uid(
        "series", _study_key(spec), spec.timepoint, spec.series_number, spec.identity()
    )
    sop_uid = _uid("image", spec.identity())
    date = _film_date(spec)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("implementation", __version__)
    meta.ImplementationVersionName = f"VHEIGHT_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = spec.study_time
    # Patient (synthetic)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.resolved_patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = "072Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom: no real patient"
    # Study / series / equipment
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic thoracolumbar spine, lateral"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDate = date
    ds.SeriesTime = spec.study_time
    ds.SeriesDescription = (
        f"Lateral thoracolumbar phantom ({spec.timepoint})"
        if spec.timepoint
        else "Lateral thoracolumbar phantom"
    )
    ds.Modality = modality.value
    ds.BodyPartExamined = "SPINE"
    ds.ViewPosition = "LL"
    ds.Manufacturer = "vheight"
    ds.ManufacturerModelName = "vheight.phantom"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "Synthetic"
    ds.ContentDate = date
    ds.ContentTime = spec.study_time
    ds.AcquisitionDate = date
    ds.AcquisitionTime = spec.study_time
    ds.InstanceNumber = spec.instance_number
    ds.PatientOrientation = ["A" if spec.facing.value == "right" else "P", "F"]
    ds.ImageLaterality = "U"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = (
        "SYNTHETIC PHANTOM - not a patient image. Generated by vheight.phantom seed "
        f"{spec.seed}; true landmarks in the .vheight.json sidecar."
    )
    if modality is Modality.DX:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if spec.photometric is Photometric.MONOCHROME2 else -1
        ds.PresentationLUTShape = (
            "IDENTITY" if spec.photometric is Photometric.MONOCHROME2 else "INVERSE"
        )
    # Geometry of the exposure (nominal)
    ds.DistanceSourceToDetector = "1150"
    ds.KVP = "85"
    ds.ExposureTime = 320
    ds.Exposure = int(round(40 * spec.dose))
    ds.Grid = ["IN", "FOCUSED"]
    _, _, tags = header_spacing(spec)
    for keyword, value in tags.items():
        setattr(ds, keyword, _ds_value(value))
    # Image pixel
    rows, cols = film.pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric.value
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    # VOI: the first preset frames the vertebral column, the second shows every value
    ds.WindowCenter = [_ds_value(c) for c in film.window_center]
    ds.WindowWidth = [_ds_value(w) for w in film.window_width]
    ds.WindowCenterWidthExplanation = list(film.window_explanation)
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = np.ascontiguousarray(film.pixels, dtype="<u2").tobytes()
    return ds


def _ds_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_ds_value(v) for v in value]
    if isinstance(value, float):
        return f"{value:.12g}"
    return value


def film_annotation(
    film: PhantomFilm, *, file: str | None, sop_instance_uid: str | None
) -> Annotation:
    """The true landmarks of ``film`` as a v1 annotation (calibration from the header)."""
    spec = film.spec
    date = _film_date(spec)
    stamp = f"{date[:4]}-{date[4:6]}-{date[6:]}T{spec.study_time[:2]}:{spec.study_time[2:4]}:00Z"
    fractures = ", ".join(f"{f.level} {f.kind.value} {f.loss_pct:g} %" for f in spec.fractures)
    notes = (
        "True landmarks of a synthetic phantom film (vheight.phantom, seed "
        f"{spec.seed})"
        + (f"; fractures: {fractures}" if fractures else "")
        + (f"; cement in {', '.join(spec.cement_levels)}" if spec.cement_levels else "")
        + "."
    )
    return Annotation(
        image=ImageRef(
            file=file, sop_instance_uid=sop_instance_uid, rows=spec.rows, columns=spec.columns
        ),
        timepoint=spec.timepoint,
        calibration=None,
        vertebrae={lv: dict(pts) for lv, pts in film.landmarks.items()},
        treated_levels=spec.treated_levels,
        patient_position=None,
        annotator="vheight.phantom (ground truth)",
        created=stamp,
        modified=stamp,
        notes=notes,
        extra={
            "phantom": {
                "generator": f"vheight.phantom {__version__}",
                "spec": spec_to_dict(spec),
                "truth": [t.to_dict() for t in film.truth.values()],
                "header_row_spacing_mm": film.row_spacing_mm,
                "header_col_spacing_mm": film.col_spacing_mm,
            }
        },
    )


def write_film(
    spec: FilmSpec | PhantomFilm,
    path: str | os.PathLike[str],
    *,
    annotation: bool = True,
) -> WrittenFilm:
    """Render (if needed) and write one film to ``path``, with its sidecar.

    Parameters
    ----------
    spec
        What to draw, or an already rendered film.
    path
        The DICOM file to write (folders are created).  The sidecar is
        ``<stem>.vheight.json`` beside it.
    annotation
        Write the true-landmark sidecar (default True).
    """
    film = spec if isinstance(spec, PhantomFilm) else render_film(spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = film_dataset(film)
    syntax = _TRANSFER_SYNTAX[film.spec.compression]
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, np.asarray(film.pixels), generate_instance_uid=False)
    write_atomic(path, lambda handle: ds.save_as(handle, enforce_file_format=True))
    sidecar = sidecar_path(path)
    if annotation:
        save_annotation(
            film_annotation(film, file=path.name, sop_instance_uid=str(ds.SOPInstanceUID)), sidecar
        )
    return WrittenFilm(
        path=path,
        annotation_path=sidecar,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        film=film,
    )
