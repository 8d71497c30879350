"""Agreement between readers: how well two or more readers' measurements of the same films agree.

For films measured by two or more readers (or twice by one reader, each
reading in its own folder), per quantity -- the three heights, the wedge
ratio, the wedge angle and the largest height loss -- over the vertebrae every
reader completed (``measurements.md``, "Agreement between readers"):

- ICC(2,1), two-way random effects, absolute agreement, single rater, and
  ICC(3,1), two-way mixed effects, consistency, single rater, each with its
  95 % confidence interval (Shrout & Fleiss 1979; McGraw & Wong 1996:
  ICC(A,1) and ICC(C,1)), from the two-way ANOVA mean squares (the figures
  of :func:`pingouin.intraclass_corr`, which the tests check them against);
- Bland-Altman, two readers only: the bias (mean of the differences, second
  reader minus first in :attr:`Agreement.readers` order) and the 95 % limits
  of agreement ``bias +- 1.96 SD`` of the differences;
- SEM ``= SD_diff / sqrt(2)`` (with more than two readers, the square root of
  the two-way residual mean square, which is the same number for two), the
  smallest detectable change ``SDC = 1.96 * sqrt(2) * SEM``, and the CV:
  the root mean square of the per-vertebra coefficients of variation
  (``100 * SD / mean`` of the readers' values, SD with ``n - 1``), for the
  quantities on a ratio scale (heights and wedge ratio; the wedge angle and the
  height loss have no true zero, so their CV is null);
- the Genant grade: percent agreement, Cohen's kappa with linear and quadratic
  weights over the grades 0-3 (two readers; :func:`sklearn.metrics.cohen_kappa_score`),
  Fleiss' kappa (:func:`statsmodels.stats.inter_rater.fleiss_kappa`), and the
  percent agreement on "fractured" (grade >= 1).

A statistic that the data do not define (one vertebra, no variance at all,
one grade given everywhere) is None, with a warning saying why; it never
raises.  Lengths are in the unit of the measurements (mm, or px for
uncalibrated films; heights of films whose readers measured in different
units are left out, with a warning).

Entry points: :func:`agreement_files` (annotation files and folders in) and
:func:`agreement` (:class:`Reading` objects in) return an :class:`Agreement`
whose tables are tidy :class:`pandas.DataFrame` objects; the statistics
themselves are plain functions of arrays (:func:`icc`, :func:`bland_altman`,
:func:`cv_rms`, :func:`grade_agreement`).  :func:`simulate_reader` makes a
reader's annotation from true landmarks plus known noise, for tests and
demonstrations.  Landmarks are ``(x, y)`` pixels of the full-resolution film
(``x`` the column, ``y`` the row, the centre of the top-left pixel at ``(0, 0)``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vheight.annotation import Annotation, load_annotation
from vheight.calibration import Calibration
from vheight.errors import VHeightError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vheight.morphometry import Measurement

__all__ = [
    "QUANTITIES",
    "QUANTITY_LABELS",
    "RATIO_SCALE",
    "BY_CHOICES",
    "QUANTITY_COLUMNS",
    "GRADE_KEYS",
    "IccResult",
    "BlandAltman",
    "Reading",
    "Agreement",
    "icc",
    "limits_of_agreement",
    "bland_altman",
    "cv_rms",
    "grade_agreement",
    "reading_files",
    "read_readings",
    "agreement",
    "agreement_files",
    "simulate_reader",
    "bland_altman_figure",
    "bland_altman_png",
    "write_bland_altman_plots",
]

#: The quantities compared, in the order of the output.
QUANTITIES: tuple[str, ...] = (
    "anterior_height",
    "middle_height",
    "posterior_height",
    "wedge_ratio",
    "wedge_angle_deg",
    "max_loss_pct",
)
HEIGHTS = ("anterior_height", "middle_height", "posterior_height")
#: Names for people (plot titles, the app).
QUANTITY_LABELS = {
    "anterior_height": "Anterior height",
    "middle_height": "Middle height",
    "posterior_height": "Posterior height",
    "wedge_ratio": "Wedge ratio (Ha/Hp)",
    "wedge_angle_deg": "Wedge angle",
    "max_loss_pct": "Largest height loss",
}
#: Quantities on a ratio scale (a true zero), the only ones with a CV.
RATIO_SCALE = frozenset({*HEIGHTS, "wedge_ratio"})
_FIXED_UNITS = {"wedge_ratio": "ratio", "wedge_angle_deg": "deg", "max_loss_pct": "%"}
#: How readers are told apart: the annotation's ``annotator``, or the top folder.
BY_CHOICES = ("annotator", "folder")
#: Columns of :attr:`Agreement.quantities` (the JSON record's keys, with each
#: confidence interval as two columns).
QUANTITY_COLUMNS: tuple[str, ...] = (
    "quantity",
    "unit",
    "n",
    "icc_2_1",
    "icc_2_1_ci_low",
    "icc_2_1_ci_high",
    "icc_3_1",
    "icc_3_1_ci_low",
    "icc_3_1_ci_high",
    "bias",
    "sd_diff",
    "loa_low",
    "loa_high",
    "sem",
    "sdc",
    "cv_pct",
)
#: Keys of :attr:`Agreement.grade`.
GRADE_KEYS: tuple[str, ...] = (
    "n",
    "percent_agreement",
    "kappa_linear",
    "kappa_quadratic",
    "fleiss_kappa",
    "fracture_agreement_pct",
)
GRADES = (0, 1, 2, 3)
Z_95 = 1.96


# -- the statistics (arrays in, numbers out) ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IccResult:
    """ICC(2,1) and ICC(3,1) of one ``n`` targets x ``k`` raters table, with the mean squares.

    ``ms_rows`` (between targets), ``ms_columns`` (between raters) and
    ``ms_error`` (residual) are those of the two-way ANOVA without
    replication.  Confidence intervals are ``(low, high)``.  Values the
    data do not define are None and ``warnings`` says why.
    """

    n: int
    k: int
    icc_2_1: float | None = None
    icc_2_1_ci: tuple[float, float] | None = None
    icc_3_1: float | None = None
    icc_3_1_ci: tuple[float, float] | None = None
    ms_rows: float | None = None
    ms_columns: float | None = None
    ms_error: float | None = None
    warnings: tuple[str, ...] = ()


def _mean_squares(y: np.ndarray) -> tuple[float, float, float, float]:
    """Two-way ANOVA without replication: ``(MS rows, MS columns, MS error, SS total)``."""
    n, k = y.shape
    grand = y.mean()
    rows = y.mean(axis=1, keepdims=True)
    cols = y.mean(axis=0, keepdims=True)
    ss_total = float(((y - grand) ** 2).sum())
    ss_rows = float(k * ((rows - grand) ** 2).sum())
    ss_cols = float(n * ((cols - grand) ** 2).sum())
    ss_error = float(((y - rows - cols + grand) ** 2).sum())
    return (
        ss_rows / (n - 1),
        ss_cols / (k - 1),
        ss_error / ((n - 1) * (k - 1)),
        ss_total,
    )


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _interval(values: Any) -> tuple[float, float] | None:
    low, high = (_finite(v) for v in np.asarray(values, dtype=float).ravel()[:2])
    return None if low is None or high is None else (low, high)


def icc(ratings: Any, *, name: str = "the ratings") -> IccResult:
    """ICC(2,1) and ICC(3,1) with 95 % confidence intervals (Shrout & Fleiss 1979).

    Parameters
    ----------
    ratings
        ``n`` targets (vertebrae) x ``k`` raters (readers), no missing value.
    name
        What the ratings are, for the warnings (e.g. ``"anterior_height"``).

    Returns
    -------
    IccResult
        ICC(2,1) = ``(MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)``,
        ICC(3,1) = ``(MSR - MSE) / (MSR + (k-1) MSE)`` (McGraw & Wong's
        ICC(A,1) and ICC(C,1)), with their F-based 95 % intervals.
        With fewer than two targets, or no variance at all, both are None;
        when the readers agree exactly (no residual variance) ICC(3,1) is 1,
        ICC(2,1) follows from the formula and the intervals are None.
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"{name}: expected a targets x raters table, found shape {y.shape}")
    n, k = y.shape
    if k < 2:
        return IccResult(n=n, k=k, warnings=(f"{name}: ICC needs two readers or more",))
    if n < 2:
        return IccResult(
            n=n, k=k, warnings=(f"{name}: ICC needs two vertebrae or more, found {n}",)
        )
    if not np.isfinite(y).all():
        raise ValueError(f"{name}: the ratings must be finite numbers")
    msr, msc, mse, sst = _mean_squares(y)
    scale = float(np.abs(y).max()) or 1.0
    if sst <= (1e-12 * scale) ** 2 * y.size:
        return IccResult(
            n=n,
            k=k,
            ms_rows=msr,
            ms_columns=msc,
            ms_error=mse,
            warnings=(
                f"{name}: every reader gave every vertebra the same value (no variance): "
                "ICC undefined",
            ),
        )
    if mse <= 1e-20 * sst:
        # Exact agreement (up to a constant offset per reader): the formulas' limits.
        icc2 = msr / (msr + k * msc / n)
        return IccResult(
            n=n,
            k=k,
            icc_2_1=icc2,
            icc_3_1=1.0,
            ms_rows=msr,
            ms_columns=msc,
            ms_error=0.0,
            warnings=(
                f"{name}: the readers agree exactly (no residual variance): ICC(3,1) is 1 "
                "and the confidence intervals are undefined",
            ),
        )
    notes: list[str] = []
    # Degenerate tables (no variance between vertebrae, a zero denominator) give
    # non-finite values here: they become None with a warning, never an exception.
    with np.errstate(all="ignore"):
        m_r, m_c, m_e = np.float64(msr), np.float64(msc), np.float64(mse)
        icc2 = _finite((m_r - m_e) / (m_r + (k - 1) * m_e + k * (m_c - m_e) / n))
        icc3 = _finite((m_r - m_e) / (m_r + (k - 1) * m_e))
        ci2 = None if icc2 is None else _icc_a1_interval(icc2, m_r, m_c, m_e, n, k)
        ci3 = _icc_c1_interval(m_r, m_e, n, k)
    for label, value, ci in (("ICC(2,1)", icc2, ci2), ("ICC(3,1)", icc3, ci3)):
        if value is None:
            notes.append(f"{name}: {label} undefined (a zero denominator: no spread to compare)")
        elif ci is None:
            notes.append(f"{name}: the confidence interval of {label} is undefined")
    return IccResult(
        n=n,
        k=k,
        icc_2_1=icc2,
        icc_2_1_ci=ci2,
        icc_3_1=icc3,
        icc_3_1_ci=ci3,
        ms_rows=msr,
        ms_columns=msc,
        ms_error=mse,
        warnings=tuple(notes),
    )


def _icc_c1_interval(msr: float, mse: float, n: int, k: int) -> tuple[float, float] | None:
    """95 % interval of ICC(3,1) = ICC(C,1) (McGraw & Wong 1996, Table 7, case 3A)."""
    from scipy.stats import f

    df1, df2 = n - 1, (n - 1) * (k - 1)
    f_obs = msr / mse
    f_low = f_obs / f.ppf(0.975, df1, df2)
    f_high = f_obs * f.ppf(0.975, df2, df1)
    return _interval(((f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1)))


def _icc_a1_interval(
    rho: float, msr: float, msc: float, mse: float, n: int, k: int
) -> tuple[float, float] | None:
    """95 % interval of ICC(2,1) = ICC(A,1) (McGraw & Wong 1996, Table 7, case 2A).

    Satterthwaite's degrees of freedom ``v`` of the denominator mean square
    ``a MSC + b MSE``, with ``a = k rho / (n (1 - rho))`` and
    ``b = 1 + k rho (n - 1) / (n (1 - rho))``.
    """
    from scipy.stats import f

    if rho >= 1.0:
        return None
    a = k * rho / (n * (1 - rho))
    b = 1 + k * rho * (n - 1) / (n * (1 - rho))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    f_star = f.ppf(0.975, n - 1, v)
    f_star2 = f.ppf(0.975, v, n - 1)
    common = k * msc + (k * n - k - n) * mse
    low = n * (msr - f_star * mse) / (f_star * common + n * msr)
    high = n * (f_star2 * msr - mse) / (common + n * f_star2 * msr)
    return _interval((low, high))


@dataclass(frozen=True, slots=True, kw_only=True)
class BlandAltman:
    """Bland-Altman figures of two readers: differences ``second - first``.

    ``sd`` is the standard deviation of the differences (``n - 1``), None
    with fewer than two pairs (and then the limits too).
    """

    n: int
    bias: float | None
    sd: float | None
    loa_low: float | None
    loa_high: float | None


def limits_of_agreement(bias: float, sd: float) -> tuple[float, float]:
    """The 95 % limits of agreement ``bias -+ 1.96 SD``."""
    return (bias - Z_95 * sd, bias + Z_95 * sd)


def bland_altman(first: Any, second: Any) -> BlandAltman:
    """Bias and 95 % limits of agreement of ``second - first`` (paired values)."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two equal 1-D series, found shapes {a.shape} and {b.shape}")
    d = b - a
    n = int(d.size)
    if n == 0:
        return BlandAltman(n=0, bias=None, sd=None, loa_low=None, loa_high=None)
    bias = float(d.mean())
    if n < 2:
        return BlandAltman(n=n, bias=bias, sd=None, loa_low=None, loa_high=None)
    sd = float(d.std(ddof=1))
    low, high = limits_of_agreement(bias, sd)
    return BlandAltman(n=n, bias=bias, sd=sd, loa_low=low, loa_high=high)


def cv_rms(ratings: Any) -> float | None:
    """Root mean square of the per-target CVs, percent: ``100 * SD / mean`` (SD with ``k - 1``).

    None without a target, or when a target's mean is not > 0 (a CV needs
    a ratio scale).
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] < 2:
        return None
    means = y.mean(axis=1)
    if not (means > 0).all():
        return None
    cvs = 100.0 * y.std(axis=1, ddof=1) / means
    return float(np.sqrt(np.mean(cvs**2)))


def grade_agreement(grades: Any) -> tuple[dict[str, Any], list[str]]:
    """Agreement on the Genant grade (0-3) of ``n`` vertebrae by ``k`` readers.

    Returns
    -------
    tuple
        ``(record, warnings)``: the record holds :data:`GRADE_KEYS`.  Percent
        agreements count the vertebrae on which every reader gave the same
        grade (the same "fractured" = grade >= 1 verdict).  Cohen's kappas
        (linear and quadratic weights over the grades 0-3) need exactly two
        readers; Fleiss' kappa is given for any number.  A kappa is None when
        every reader gave one and the same grade everywhere (chance agreement
        is then 1).
    """
    g = np.asarray(grades, dtype=int)
    record: dict[str, Any] = dict.fromkeys(GRADE_KEYS)
    warnings: list[str] = []
    if g.ndim != 2 or g.shape[0] == 0:
        record["n"] = 0
        return record, warnings
    n, k = g.shape
    if not np.isin(g, GRADES).all():
        raise ValueError(
            f"grades must be 0, 1, 2 or 3, found {sorted(set(g.ravel()) - set(GRADES))}"
        )
    record["n"] = n
    record["percent_agreement"] = 100.0 * float((g == g[:, :1]).all(axis=1).mean())
    fractured = g >= 1
    record["fracture_agreement_pct"] = 100.0 * float(
        (fractured == fractured[:, :1]).all(axis=1).mean()
    )
    used = np.unique(g)
    if used.size < 2:
        warnings.append(
            f"grade: every reader graded every vertebra {int(used[0])}: kappa undefined "
            "(chance agreement is 1)"
        )
        return record, warnings
    if k == 2:
        from sklearn.metrics import cohen_kappa_score

        for weights in ("linear", "quadratic"):
            record[f"kappa_{weights}"] = float(
                cohen_kappa_score(g[:, 0], g[:, 1], labels=list(GRADES), weights=weights)
            )
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    table, _ = aggregate_raters(g, n_cat=len(GRADES))
    record["fleiss_kappa"] = float(fleiss_kappa(table, method="fleiss"))
    return record, warnings


# -- readings: one reader's measurement of one film ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One reader's measurement of one film.

    Parameters
    ----------
    film
        The film's SOP Instance UID (what pairs readings of the same film).
    reader
        Who read it (the annotation's ``annotator``, or a folder name).
    measurement
        The measurement of that reader's annotation.
    source
        Where the annotation came from (a file path), for messages.
    """

    film: str
    reader: str
    measurement: Measurement
    source: str = ""


def reading_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Path | None]]:
    """Every annotation file named by ``paths``: ``(file, folder given or None)``.

    A folder is searched recursively for ``*.vheight.json``; a file is taken as is.

    Raises
    ------
    FileNotFoundError
        When a path does not exist.
    """
    found: list[tuple[Path, Path | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend((f, path) for f in sorted(path.rglob("*.vheight.json")) if f.is_file())
        elif path.is_file():
            found.append((path, None))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def _folder_reader(file: Path, folder: Path | None) -> str:
    """The reader of ``file`` by folder: its top folder under ``folder``, else its parent's name."""
    if folder is not None:
        parts = file.relative_to(folder).parts
        if len(parts) > 1:
            return parts[0]
        return folder.resolve().name
    return file.resolve().parent.name


def read_readings(
    paths: Iterable[str | os.PathLike[str]],
    *,
    by: str = "annotator",
    reference: str = "adjacent",
    calibrations: Mapping[str, Calibration] | None = None,
) -> tuple[list[Reading], list[str], list[str]]:
    """Load and measure the annotations under ``paths``.

    Parameters
    ----------
    paths
        Annotation files and folders (searched recursively).
    by
        ``"annotator"``: the reader is the annotation's ``annotator``;
        ``"folder"``: the top folder under the folder given (a file given
        directly: its parent folder).
    reference
        Height-loss reference method (``measurements.md``).
    calibrations
        SOP Instance UID -> the film's header calibration, for annotations
        whose film is not beside them (e.g. the app's store, for the films it
        has open).  An annotation's own calibration still wins; other films
        are calibrated as by :func:`vheight.measure_file`.

    Returns
    -------
    tuple
        ``(readings, warnings, errors)``: annotations without a SOP Instance
        UID or (with ``by="annotator"``) without an annotator are left out
        with a warning; files that cannot be read or measured become errors
        (``"path: message"``); when one reader has two annotations of one film
        the one modified last is kept, with a warning.
    """
    from vheight.api import resolve_calibration
    from vheight.morphometry import measure

    known = dict(calibrations or {})

    if by not in BY_CHOICES:
        raise ValueError(f"by must be one of {', '.join(BY_CHOICES)}, found {by!r}")
    readings: dict[tuple[str, str], Reading] = {}
    stamps: dict[tuple[str, str], str] = {}
    warnings: list[str] = []
    errors: list[str] = []
    for file, folder in reading_files(paths):
        try:
            annotation = load_annotation(file)
        except (VHeightError, OSError) as exc:
            errors.append(str(exc) if str(file) in str(exc) else f"{file}: {exc}")
            continue
        uid = (annotation.image.sop_instance_uid or "").strip()
        if not uid:
            warnings.append(
                f"{file}: the annotation names no SOP Instance UID, so it cannot be matched "
                "with other readers' annotations of the film: left out"
            )
            continue
        if by == "annotator":
            reader = annotation.annotator.strip()
            if not reader:
                warnings.append(
                    f"{file}: no annotator recorded: left out (record the reader in the "
                    "file's annotator field, or use --by folder)"
                )
                continue
        else:
            reader = _folder_reader(file, folder)
        try:
            if annotation.calibration is None and uid in known:
                calibration, notes = known[uid], []
            else:
                calibration, notes = resolve_calibration(annotation, annotation_path=file)
            measurement = measure(annotation, calibration, reference=reference, source=str(file))
            if notes:
                measurement = dataclasses.replace(
                    measurement, warnings=(*notes, *measurement.warnings)
                )
        except (VHeightError, OSError) as exc:
            errors.append(str(exc) if str(file) in str(exc) else f"{file}: {exc}")
            continue
        key = (uid, reader)
        stamp = annotation.modified or annotation.created or ""
        reading = Reading(film=uid, reader=reader, measurement=measurement, source=str(file))
        if key in readings:
            kept, dropped = (
                (reading, readings[key]) if stamp >= stamps[key] else (readings[key], reading)
            )
            warnings.append(
                f"{reader} has two annotations of film {uid} ({dropped.source} and "
                f"{kept.source}): the one modified last, {kept.source}, counts"
            )
            if kept is not reading:
                continue
        readings[key] = reading
        stamps[key] = stamp
    return list(readings.values()), warnings, errors


# -- the agreement of a set of readings ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """Agreement between readers over the films they all read.

    Attributes
    ----------
    readers
        The readers compared, sorted; Bland-Altman differences are
        ``readers[1] - readers[0]``.
    films
        Number of films every reader read.
    vertebrae
        Number of vertebrae every reader completed on those films.
    vertebrae_by_reader
        Reader -> number of vertebrae they completed on those films (more
        than ``vertebrae`` when readers completed different vertebrae).
    values
        Tidy table of the values compared: one row per film, level and
        reader (columns ``film``, ``level``, ``reader``, ``source``, ``unit``,
        the :data:`QUANTITIES` and ``grade``).
    quantities
        One row per quantity, columns :data:`QUANTITY_COLUMNS` (undefined figures NaN;
        :meth:`quantity_records` turns them into None).
    grade
        Agreement on the Genant grade, keys :data:`GRADE_KEYS`.
    warnings
        Sentences about what was left out and which statistics are undefined.
    errors
        Files that could not be read or measured (``"path: message"``).
    """

    readers: tuple[str, ...]
    films: int
    vertebrae: int
    vertebrae_by_reader: Mapping[str, int]
    values: pd.DataFrame
    quantities: pd.DataFrame
    grade: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    reference: str = "adjacent"

    @property
    def shared(self) -> bool:
        """True when at least two readers read a common film."""
        return len(self.readers) >= 2 and self.films > 0

    @property
    def difference(self) -> str | None:
        """How Bland-Altman differences are taken (``"bob - alice"``), two readers only."""
        return f"{self.readers[1]} - {self.readers[0]}" if len(self.readers) == 2 else None

    def quantity_records(self) -> list[dict[str, Any]]:
        """One JSON record per quantity (``interfaces.md``; intervals as ``[low, high]``)."""
        out = []
        for row in self.quantities.to_dict("records"):
            record: dict[str, Any] = {}
            for key in ("quantity", "unit", "n"):
                record[key] = row[key]
            for name in ("icc_2_1", "icc_3_1"):
                record[name] = _none(row[name])
                low, high = _none(row[f"{name}_ci_low"]), _none(row[f"{name}_ci_high"])
                record[f"{name}_ci"] = None if low is None or high is None else [low, high]
            for key in ("bias", "loa_low", "loa_high", "sem", "sdc", "cv_pct", "sd_diff"):
                record[key] = _none(row[key])
            record["n"] = int(record["n"])
            out.append(record)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``vheight agreement`` (``interfaces.md``)."""
        return {
            "readers": list(self.readers),
            "films": self.films,
            "vertebrae": self.vertebrae,
            "vertebrae_by_reader": dict(self.vertebrae_by_reader),
            "difference": self.difference,
            "reference": self.reference,
            "quantities": self.quantity_records(),
            "grade": {k: v for k, v in self.grade.items() if k != "n"} | {"n": self.grade["n"]},
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }

    def pairs(self, quantity: str) -> pd.DataFrame:
        """Two readers' paired values of ``quantity``: ``film``, ``level``, both readers'
        values, ``mean`` and ``difference`` (``readers[1] - readers[0]``)."""
        import pandas as pd

        if len(self.readers) != 2:
            raise ValueError("Bland-Altman pairs need exactly two readers")
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {quantity!r}; expected one of {QUANTITIES}")
        first, second = self.readers
        if self.values.empty:
            return pd.DataFrame(columns=["film", "level", first, second, "mean", "difference"])
        wide = self.values.pivot_table(
            index=["film", "level"], columns="reader", values=quantity, aggfunc="first"
        )
        wide = wide.reindex(columns=[first, second]).dropna().reset_index()
        wide.columns.name = None
        wide["mean"] = (wide[first] + wide[second]) / 2
        wide["difference"] = wide[second] - wide[first]
        return wide


def _none(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _unit_of(quantity: str, units: set[str]) -> str:
    if quantity in _FIXED_UNITS:
        return _FIXED_UNITS[quantity]
    return units.pop() if len(units) == 1 else "mm"


def agreement(readings: Iterable[Reading], *, reference: str = "adjacent") -> Agreement:
    """The agreement of the readers of :class:`Reading` objects.

    Only films read by every reader count, and on them only the vertebrae
    every reader completed (the counts, :attr:`Agreement.vertebrae_by_reader`
    and the warnings say so).  Readers are told apart by
    :attr:`Reading.reader`; two readings of one film by one reader are refused.

    Raises
    ------
    ValueError
        When one reader has two readings of one film.
    """
    import pandas as pd

    readings = list(readings)
    warnings: list[str] = []
    by_film: dict[str, dict[str, Reading]] = {}
    for reading in readings:
        film = by_film.setdefault(reading.film, {})
        if reading.reader in film:
            raise ValueError(
                f"{reading.reader} has two readings of film {reading.film} "
                f"({film[reading.reader].source} and {reading.source})"
            )
        film[reading.reader] = reading
    shared = {uid: film for uid, film in by_film.items() if len(film) >= 2}
    readers = tuple(sorted({r for film in shared.values() for r in film}, key=_reader_key))
    for uid, film in sorted(by_film.items()):
        if len(film) < 2:
            (only,) = film.values()
            warnings.append(f"film {uid} was read by {only.reader} only ({only.source}): left out")
    films = {uid: film for uid, film in shared.items() if set(film) == set(readers)}
    for uid, film in sorted(shared.items()):
        if uid not in films:
            missing = [r for r in readers if r not in film]
            warnings.append(
                f"film {uid} was not read by {', '.join(missing)}: left out (only films "
                "every reader read count)"
            )
    if len(readers) < 2:
        warnings.insert(0, "fewer than two readers share a film: no agreement to compute")
    elif not films:
        warnings.insert(
            0, f"no film was read by every reader ({', '.join(readers)}): no agreement to compute"
        )

    rows: list[dict[str, Any]] = []
    completed = dict.fromkeys(readers, 0)
    for uid in sorted(films):
        film = films[uid]
        done = {
            r: {lv for lv, v in film[r].measurement.vertebrae.items() if v.complete}
            for r in readers
        }
        for r in readers:
            completed[r] += len(done[r])
        common = set.intersection(*done.values())
        units = {film[r].measurement.unit for r in readers}
        if len(units) > 1:
            warnings.append(
                f"film {uid}: the readers measured it in different units "
                f"({', '.join(f'{r} {film[r].measurement.unit}' for r in readers)}): its "
                "heights are left out"
            )
        for level in sorted(common, key=_level_key):
            for r in readers:
                v = film[r].measurement.vertebrae[level]
                row = {
                    "film": uid,
                    "level": level,
                    "reader": r,
                    "source": film[r].source,
                    "unit": film[r].measurement.unit,
                }
                for q in QUANTITIES:
                    value = getattr(v, q)
                    if q in HEIGHTS and len(units) > 1:
                        value = None
                    row[q] = np.nan if value is None else float(value)
                row["grade"] = None if v.grade is None else int(v.grade)
                rows.append(row)
    columns = ["film", "level", "reader", "source", "unit", *QUANTITIES, "grade"]
    values = pd.DataFrame(rows, columns=columns)
    n_common = len({(r["film"], r["level"]) for r in rows})
    if len(set(completed.values())) > 1:
        counts = ", ".join(f"{r} {n}" for r, n in completed.items())
        warnings.append(
            f"the readers completed different vertebrae on the shared films ({counts}): "
            f"only the {n_common} every reader completed count"
        )

    # Heights pooled over films need one unit: uncalibrated films leave when others are in mm.
    height_units = set(values.loc[values[list(HEIGHTS)].notna().any(axis=1), "unit"])
    if len(height_units) > 1:
        px_films = sorted(set(values.loc[values["unit"] == "px", "film"]))
        warnings.append(
            f"{len(px_films)} film(s) are uncalibrated (px) while others are in mm: their "
            f"heights are left out of the height statistics ({', '.join(px_films)})"
        )
        values.loc[values["unit"] == "px", list(HEIGHTS)] = np.nan
        height_units = {"mm"}

    records = []
    for q in QUANTITIES:
        record, notes = _quantity_record(values, q, readers, _unit_of(q, set(height_units)))
        records.append(record)
        warnings.extend(notes)
    quantities = pd.DataFrame(records, columns=list(QUANTITY_COLUMNS))
    numeric = [c for c in QUANTITY_COLUMNS if c not in ("quantity", "unit")]
    quantities[numeric] = quantities[numeric].astype(float)  # undefined = NaN
    quantities["n"] = quantities["n"].astype(int)

    grade_table = _wide(values, "grade", readers)
    grade, notes = grade_agreement(grade_table)
    warnings.extend(notes)
    return Agreement(
        readers=readers,
        films=len(films),
        vertebrae=n_common,
        vertebrae_by_reader=completed,
        values=values,
        quantities=quantities,
        grade=grade,
        warnings=tuple(warnings),
        reference=reference,
    )


def _reader_key(name: str) -> tuple[str, str]:
    return (name.casefold(), name)


def _level_key(level: str) -> int:
    from vheight.annotation import level_index

    return level_index(level)


def _wide(values: pd.DataFrame, column: str, readers: Sequence[str]) -> np.ndarray:
    """``vertebrae x readers`` of ``column``, vertebrae with a value from every reader only."""
    if values.empty or not readers:
        return np.empty((0, len(readers)))
    wide = values.pivot_table(
        index=["film", "level"], columns="reader", values=column, aggfunc="first"
    )
    wide = wide.reindex(columns=list(readers)).dropna()
    return wide.to_numpy(dtype=float)


def _quantity_record(
    values: pd.DataFrame, quantity: str, readers: Sequence[str], unit: str
) -> tuple[dict[str, Any], list[str]]:
    y = _wide(values, quantity, readers)
    n, k = y.shape
    record: dict[str, Any] = dict.fromkeys(QUANTITY_COLUMNS)
    record.update(quantity=quantity, unit=unit, n=n)
    notes: list[str] = []
    if k < 2 or n == 0:
        return record, notes
    result = icc(y, name=quantity)
    notes.extend(result.warnings)
    record["icc_2_1"], record["icc_3_1"] = result.icc_2_1, result.icc_3_1
    for name, ci in (("icc_2_1", result.icc_2_1_ci), ("icc_3_1", result.icc_3_1_ci)):
        record[f"{name}_ci_low"], record[f"{name}_ci_high"] = ci if ci else (None, None)
    if k == 2:
        ba = bland_altman(y[:, 0], y[:, 1])
        record.update(bias=ba.bias, sd_diff=ba.sd, loa_low=ba.loa_low, loa_high=ba.loa_high)
        sem = None if ba.sd is None else ba.sd / math.sqrt(2.0)
    else:
        sem = None if result.ms_error is None else math.sqrt(result.ms_error)
    record["sem"] = sem
    record["sdc"] = None if sem is None else Z_95 * math.sqrt(2.0) * sem
    if quantity in RATIO_SCALE:
        record["cv_pct"] = cv_rms(y)
        if record["cv_pct"] is None:
            notes.append(f"{quantity}: a vertebra's mean is not above zero: CV undefined")
    return record, notes


def agreement_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    by: str = "annotator",
    reference: str = "adjacent",
) -> Agreement:
    """The agreement of the readers of the annotation files under ``paths``.

    Parameters
    ----------
    paths
        Annotation files and folders (searched recursively for ``*.vheight.json``).
    by
        ``"annotator"`` (the annotation's ``annotator`` names the reader) or
        ``"folder"`` (the top folder under each folder given names the reader).
    reference
        Height-loss reference method: ``adjacent`` (default), ``posterior``, ``max``.

    Returns
    -------
    Agreement
        With :attr:`Agreement.errors` listing the files that could not be read.
        Readings are paired by the film's SOP Instance UID.
    """
    readings, warnings, errors = read_readings(paths, by=by, reference=reference)
    result = agreement(readings, reference=reference)
    return dataclasses.replace(result, warnings=(*warnings, *result.warnings), errors=tuple(errors))


# -- simulated readers (tests, demonstrations) --------------------------------------------


_HEIGHT_POINTS = {
    "anterior": ("superior_anterior", "inferior_anterior"),
    "middle": ("superior_middle", "inferior_middle"),
    "posterior": ("superior_posterior", "inferior_posterior"),
}


def simulate_reader(
    annotation: Annotation,
    calibration: Calibration,
    *,
    reader: str,
    sd_mm: float = 0.0,
    height_offset_mm: Mapping[str, float] | None = None,
    rng: np.random.Generator | int | None = None,
) -> Annotation:
    """A reader's annotation: the landmarks of ``annotation`` moved by known errors.

    Parameters
    ----------
    annotation
        The true landmarks (e.g. a ``vheight phantom`` sidecar).
    calibration
        The film's spacing, to turn millimetres into pixels.
    reader
        The reader's name, written to ``annotator``.
    sd_mm
        Standard deviation of independent Gaussian noise added to each
        coordinate of each point, mm (a height then varies by about
        ``sqrt(2) * sd_mm``, the difference of two such readers by ``2 * sd_mm``).
    height_offset_mm
        Systematic error per height (``"anterior"``, ``"middle"``,
        ``"posterior"``): the inferior point of that height is moved this far
        along the superior-to-inferior direction, so the height grows by it.
    rng
        Random generator or seed.

    Returns
    -------
    Annotation
        Same film and levels, ``annotator`` = ``reader``, a note saying how
        it was made.
    """
    rng = np.random.default_rng(rng)
    offsets = dict(height_offset_mm or {})
    unknown = set(offsets) - set(_HEIGHT_POINTS)
    if unknown:
        raise ValueError(f"unknown height(s) {sorted(unknown)}; expected anterior/middle/posterior")
    row_mm, col_mm = calibration.row_spacing_mm, calibration.col_spacing_mm
    vertebrae: dict[str, dict[str, tuple[float, float]]] = {}
    for level in annotation.levels:
        points = {name: np.array(xy, dtype=float) for name, xy in annotation.points(level).items()}
        for height, mm in offsets.items():
            top, bottom = _HEIGHT_POINTS[height]
            if top in points and bottom in points:
                d_mm = (points[bottom] - points[top]) * (col_mm, row_mm)
                length = float(np.hypot(*d_mm))
                if length > 0:
                    points[bottom] = points[bottom] + d_mm / length * mm / (col_mm, row_mm)
        moved = {}
        for name, xy in points.items():
            noise_mm = rng.normal(0.0, sd_mm, size=2) if sd_mm > 0 else np.zeros(2)
            x, y = xy + noise_mm / (col_mm, row_mm)
            moved[name] = (float(x), float(y))
        vertebrae[level] = moved
    note = f"simulated reader: Gaussian noise SD {sd_mm:g} mm per coordinate"
    if offsets:
        note += "; offsets " + ", ".join(f"{h} {mm:+g} mm" for h, mm in offsets.items())
    return dataclasses.replace(
        annotation,
        vertebrae=vertebrae,
        annotator=reader,
        notes=note,
    )


# -- Bland-Altman plots ---------------------------------------------------------------------


def bland_altman_figure(result: Agreement, quantity: str) -> Any:
    """A :class:`matplotlib.figure.Figure`: differences against means, bias and limits drawn.

    No pyplot state is touched (the figure is standalone, drawn with Agg).

    Raises
    ------
    ValueError
        Without exactly two readers, or for an unknown quantity.
    """
    from matplotlib.figure import Figure

    pairs = result.pairs(quantity)
    row = result.quantities.set_index("quantity").loc[quantity]
    unit = str(row["unit"])
    unit_text = "" if unit == "ratio" else f" ({unit})"
    first, second = result.readers
    fig = Figure(figsize=(7.0, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(pairs["mean"], pairs["difference"], s=26, color="#1f4e79", alpha=0.8, zorder=3)
    bias, low, high = (_none(row[k]) for k in ("bias", "loa_low", "loa_high"))
    fmt = _number_format(unit)
    lines = [
        (bias, "-", "#c0392b", f"bias {fmt(bias)}"),
        (high, "--", "#5d6d7e", f"upper limit {fmt(high)} (bias + 1.96 SD)"),
        (low, "--", "#5d6d7e", f"lower limit {fmt(low)} (bias \u2212 1.96 SD)"),
    ]
    ax.axhline(0.0, color="#bbbbbb", linewidth=0.8, zorder=1)
    for value, style, colour, label in lines:
        if value is None:
            continue
        ax.axhline(value, linestyle=style, color=colour, linewidth=1.4, zorder=2)
        ax.annotate(
            label,
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=9,
            color=colour,
        )
    label = QUANTITY_LABELS.get(quantity, quantity)
    ax.set_xlabel(f"Mean of {first} and {second}{unit_text}")
    ax.set_ylabel(f"{second} \u2212 {first}{unit_text}")
    ax.set_title(f"{label}: Bland-Altman, n = {len(pairs)}", fontsize=11)
    values = [v for v, *_ in lines if v is not None] + list(pairs["difference"])
    if values:
        top, bottom = max(values), min(values)
        pad = 0.15 * (top - bottom) or 1.0
        ax.set_ylim(bottom - pad, top + pad)
    ax.grid(True, color="#eeeeee", zorder=0)
    return fig


def _number_format(unit: str) -> Any:
    digits = 3 if unit == "ratio" else 2

    def fmt(value: float | None) -> str:
        if value is None:
            return "-"
        text = f"{value:+.{digits}f}"
        return text if unit == "ratio" else f"{text} {unit}"

    return fmt


def bland_altman_png(result: Agreement, quantity: str) -> bytes:
    """The Bland-Altman plot of ``quantity`` as PNG bytes."""
    import io

    buffer = io.BytesIO()
    bland_altman_figure(result, quantity).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_bland_altman_plots(result: Agreement, folder: str | os.PathLike[str]) -> list[Path]:
    """One PNG per quantity with data, ``bland_altman_<quantity>.png`` in ``folder`` (created).

    Raises
    ------
    ValueError
        Without exactly two readers.
    """
    from vheight.files import write_atomic

    if len(result.readers) != 2:
        raise ValueError(
            f"Bland-Altman plots need exactly two readers, found {len(result.readers)}"
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for quantity in QUANTITIES:
        n = int(result.quantities.set_index("quantity").loc[quantity, "n"])
        if n == 0:
            continue
        path = out / f"bland_altman_{quantity}.png"
        write_atomic(path, bland_altman_png(result, quantity))
        written.append(path)
    return written
