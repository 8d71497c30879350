"""Files the app offers for download: measurements, comparison, annotated film.

CSV and JSON use the command line's emitters (:mod:`vheight.cli._output`), so
a file saved from the app is the file ``vheight measure --format csv`` or
``--format json`` would print for the same annotation.  The annotated PNG is
drawn by :func:`vheight.render.render_annotated`.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np

from vheight.cli._output import emit_csv, emit_json

__all__ = [
    "measurement_csv",
    "measurement_json",
    "comparison_csv",
    "comparison_json",
    "annotated_png",
]


def measurement_csv(measurement: Any) -> str:
    """One CSV row per vertebra: the ``measure`` record keys as columns."""
    stream = io.StringIO()
    emit_csv(measurement.records(), stream=stream)
    return stream.getvalue()


def measurement_json(measurement: Any, *, annotation_name: str | None) -> str:
    """The ``vheight measure --format json`` document of one film."""
    stream = io.StringIO()
    emit_json(
        {
            "annotation": annotation_name,
            "unit": measurement.unit,
            "spacing_label": measurement.spacing_label,
            "vertebrae": measurement.records(),
            "warnings": list(measurement.warnings),
        },
        stream=stream,
    )
    return stream.getvalue()


def comparison_csv(comparison: Any) -> str:
    """One CSV row per level and height: the ``compare`` record keys as columns."""
    stream = io.StringIO()
    emit_csv(comparison.records(), stream=stream)
    return stream.getvalue()


def comparison_json(comparison: Any) -> str:
    """The ``vheight compare --format json`` document."""
    stream = io.StringIO()
    emit_json(comparison.to_dict(), stream=stream)
    return stream.getvalue()


def annotated_png(pixels: np.ndarray, annotation: Any, measurement: Any) -> bytes:
    """The film as displayed (``pixels``, float in [0, 1]) with landmarks and heights, as PNG."""
    from vheight.render import render_annotated

    rgb = render_annotated(pixels, annotation, measurement)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - opencv always encodes a uint8 RGB image
        raise ValueError("the annotated film could not be encoded as PNG")
    return encoded.tobytes()
