"""vheight: vertebral body height morphometry on lateral spine radiographs.

Before and after vertebral augmentation (kyphoplasty, vertebroplasty): six
endplate landmarks per vertebra give anterior, middle and posterior heights,
their ratios, height loss and Genant grade, wedge and segmental kyphosis
angles, and the restoration achieved between films.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The public API (pure core and file entry points; nothing here imports pydicom).
from vheight.annotation import (  # noqa: E402
    LEVELS,
    POINT_NAMES,
    TIMEPOINTS,
    Annotation,
    ImageRef,
    Level,
    PointName,
    dumps_annotation,
    load_annotation,
    loads_annotation,
    save_annotation,
    sidecar_path,
)
from vheight.api import compare_files, measure_file, resolve_calibration  # noqa: E402
from vheight.calibration import Calibration, SpacingLabel  # noqa: E402
from vheight.comparison import Comparison, FilmFacts, compare  # noqa: E402
from vheight.errors import (  # noqa: E402
    AnnotationError,
    CalibrationError,
    ComparisonError,
    MeasurementError,
    VHeightError,
)
from vheight.morphometry import (  # noqa: E402
    DeformityType,
    Grade,
    Measurement,
    ReferenceMethod,
    VertebraMeasurement,
    measure,
)

__all__ = [
    "__version__",
    "LEVELS",
    "POINT_NAMES",
    "TIMEPOINTS",
    "Level",
    "PointName",
    "ImageRef",
    "Annotation",
    "load_annotation",
    "loads_annotation",
    "save_annotation",
    "dumps_annotation",
    "sidecar_path",
    "Calibration",
    "SpacingLabel",
    "measure",
    "Measurement",
    "VertebraMeasurement",
    "ReferenceMethod",
    "Grade",
    "DeformityType",
    "compare",
    "Comparison",
    "FilmFacts",
    "measure_file",
    "compare_files",
    "resolve_calibration",
    "VHeightError",
    "AnnotationError",
    "CalibrationError",
    "MeasurementError",
    "ComparisonError",
    "load_film",
    "read_film_info",
    "run_batch",
    "agreement_files",
]

# Entry points that pull in pydicom, opencv or pandas are imported on first use,
# so that ``import vheight`` stays light (PEP 562).
_LAZY = {
    "load_film": "vheight.loader",
    "read_film_info": "vheight.loader",
    "run_batch": "vheight.batch",
    "agreement_files": "vheight.agreement",
}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attribute
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vheight' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
