"""Small synthetic pre/post/follow-up DICOM films with their annotations (report, SR, GSPS tests).

Lateral lumbar films of one patient (``Doe^Jane``, ``VH-0042``): five
vertebral bodies T11..L3 drawn as bright quadrilaterals on a darker
background, L1 wedged before augmentation and partly restored after.  The
landmarks are the exact corners and endplate midpoints, in vheight pixel
coordinates (centre of the top-left pixel = (0, 0)), with sub-pixel offsets
so that exact round trips are tested on non-representable values.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from vheight.annotation import Annotation, ImageRef, save_annotation

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "VH-0042"
ROWS, COLUMNS = 800, 560
LEVELS = ("T11", "T12", "L1", "L2", "L3")
# Anterior height of L1 as a fraction of its posterior height, per film.
L1_ANTERIOR = {"pre": 0.55, "post": 0.82, "followup": 0.78}
STUDY_DATES = {"pre": "20260102", "post": "20260105", "followup": "20260301"}


def vertebrae_for(timepoint: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Landmarks of the five bodies; the patient faces left (anterior = smaller x)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    top = 90.123456789
    for i, level in enumerate(LEVELS):
        x_ant = 200.0 + 4.0 * i + 0.3333333
        x_post = x_ant + 150.0 + 0.1428571
        hp = 100.0 + 3.0 * i
        ha = hp * (L1_ANTERIOR[timepoint] if level == "L1" else 0.97)
        hm = (ha + hp) / 2 * 0.98
        y_post_top = top
        y_post_bottom = top + hp
        y_ant_bottom = y_post_bottom + 1.5
        y_ant_top = y_ant_bottom - ha
        x_mid = (x_ant + x_post) / 2
        y_mid_top = (y_ant_top + y_post_top) / 2 + 0.777
        out[level] = {
            "superior_anterior": (x_ant, y_ant_top),
            "superior_middle": (x_mid, y_mid_top),
            "superior_posterior": (x_post, y_post_top),
            "inferior_anterior": (x_ant, y_ant_bottom),
            "inferior_middle": (x_mid, y_mid_top + hm),
            "inferior_posterior": (x_post, y_post_bottom),
        }
        top = y_post_bottom + 25.0
    return out


def _pixels(vertebrae: dict[str, dict[str, tuple[float, float]]], *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((ROWS, COLUMNS), 900.0)
    image += np.linspace(0, 300, COLUMNS)[None, :]
    for pts in vertebrae.values():
        poly = np.array(
            [
                pts["superior_anterior"],
                pts["superior_middle"],
                pts["superior_posterior"],
                pts["inferior_posterior"],
                pts["inferior_middle"],
                pts["inferior_anterior"],
            ]
        )
        mask = np.zeros((ROWS, COLUMNS), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        image[mask > 0] += 1800.0
    image += rng.normal(0, 40, image.shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_film(
    path: Path, timepoint: str, *, study_uid: str, photometric: str = "MONOCHROME2", seed: int = 0
) -> pydicom.Dataset:
    """A CR film of ``timepoint``: 0.2 mm at the detector, ERMF 1.25 (``mm ERMF``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19480101"
    ds.PatientSex = "F"
    ds.StudyDate = STUDY_DATES[timepoint]
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{timepoint.upper()}"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ReferringPhysicianName = ""
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["A", "F"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.EstimatedRadiographicMagnificationFactor = 1.25
    pixels = _pixels(vertebrae_for(timepoint), seed=seed)
    if photometric == "MONOCHROME1":
        pixels = (4095 - pixels).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_series(
    folder: Path,
    timepoints: tuple[str, ...] = ("pre", "post", "followup"),
    *,
    photometric: str = "MONOCHROME2",
) -> dict[str, Path]:
    """Films and annotation files of one patient; returns timepoint -> annotation path."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    out = {}
    for i, timepoint in enumerate(timepoints):
        film = folder / f"{timepoint}.dcm"
        ds = write_film(film, timepoint, study_uid=study_uid, photometric=photometric, seed=i)
        annotation = Annotation(
            image=ImageRef(
                file=film.name, sop_instance_uid=str(ds.SOPInstanceUID), rows=ROWS, columns=COLUMNS
            ),
            timepoint=timepoint,
            vertebrae=vertebrae_for(timepoint),
            treated_levels=("L1",) if timepoint != "pre" else (),
            annotator="Test Reader",
            notes=f"{timepoint} film",
        )
        out[timepoint] = save_annotation(annotation, folder / f"{timepoint}.vheight.json")
    return out
