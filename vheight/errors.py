"""Exceptions raised by vheight.

Every error derives from :class:`VHeightError` and from the built-in it
refines, so callers may catch either.  Messages name the file, the level and
the point at fault, what was expected and what was found, and where possible
how to recover.  They are caught once at the edges: the command line prints
one line and exits non-zero, the app shows it, and batch turns it into an
error row.
"""

from __future__ import annotations

__all__ = [
    "VHeightError",
    "DicomReadError",
    "ImageReadError",
    "AnnotationError",
    "CalibrationError",
    "MeasurementError",
    "ComparisonError",
    "SRExportError",
    "PacsError",
]


class VHeightError(Exception):
    """Base class of every error vheight raises on purpose."""


class ImageReadError(VHeightError, ValueError):
    """A film (DICOM, PNG, JPEG, TIFF) could not be read or displayed."""


class DicomReadError(ImageReadError):
    """A DICOM file is not readable, lacks pixel data or is unsupported."""


class AnnotationError(VHeightError, ValueError):
    """An annotation file or object is malformed."""


class CalibrationError(VHeightError, ValueError):
    """A calibration is not usable (zero, negative or non-finite spacing)."""


class MeasurementError(VHeightError, ValueError):
    """Measurements cannot be computed from the given inputs."""


class ComparisonError(VHeightError, ValueError):
    """Films that must not be compared (e.g. of different patients); see the message."""


class SRExportError(VHeightError, ValueError):
    """A DICOM SR or presentation state cannot be written or read."""


class PacsError(VHeightError, OSError):
    """A DICOM archive (PACS) could not be searched, read or written.

    The message names the server and what failed (connection, login, a
    study that does not exist, a transfer that stopped, a reply that is not
    DICOM).
    """
