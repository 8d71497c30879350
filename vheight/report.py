"""Printable PDF report: annotated films, measurement tables, pre/post/follow-up comparison.

:func:`write_report` (to a file) and :func:`report_bytes` (in memory, for a
download button) take annotations (files, or objects with their films),
measure them, group them by patient (patient ID, else study, else folder) and
order each patient's films pre, post, follow-up.  Per patient the report holds:

- a first page: patient name, patient ID and film dates, the films, treated
  levels, the spacing label, the height-loss reference method and who placed
  the landmarks; then the comparison when a pre and a post film are present
  (heights, change, the three restoration percentages, loss since post with
  a follow-up film, wedge and segmental angle change, grades before and
  after), a line per flag (suspected new fracture, suspected recollapse)
  and its warnings, or else the suggested grade per level and film;
- one page per film: the film (cropped to the annotated vertebrae) with
  landmarks, endplates, heights and grades drawn by :mod:`vheight.render`,
  the measurement table with units and the spacing label, and the warnings
  of that film (including a film that does not match its annotation).

With ``deidentify=True`` no patient name, ID, date, file name or annotator
is printed anywhere (patients are numbered instead) and the PDF metadata
carry none either.  A4 (ReportLab platypus); every page's footer says that
the grade is a quantitative suggestion for the radiologist to confirm, and
which vheight version produced the report.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vheight import __version__
from vheight.annotation import TIMEPOINTS, Annotation, load_annotation
from vheight.errors import ImageReadError, VHeightError
from vheight.files import write_atomic
from vheight.render import GRADE_COLORS, INCOMPLETE_COLOR, TREATED_COLOR, render_annotated

__all__ = [
    "ReportItem",
    "ReportFilm",
    "prepare_films",
    "report_bytes",
    "write_report",
    "pdf_bytes",
    "save_pdf",
    "DISCLAIMER",
]

#: Printed on every page.
DISCLAIMER = (
    "The grade is a quantitative suggestion (Genant thresholds 20/25/40 % applied to the measured "
    "height loss) for the radiologist to confirm; the visual semi-quantitative grade is theirs."
)

_DISCLAIMER_LINES = (
    "The grade is a quantitative suggestion (Genant thresholds 20/25/40 % applied to the measured "
    "height loss) for the radiologist to confirm;",
    "the visual semi-quantitative grade is theirs.",
)
_TIMEPOINT_TITLES = {"pre": "Pre-operative", "post": "Post-operative", "followup": "Follow-up"}
_REFERENCE_TEXT = {
    "adjacent": "adjacent: mean of the same height of the directly adjacent annotated vertebrae "
    "(own posterior height when no neighbour is annotated)",
    "posterior": "posterior: the vertebra's own posterior height (anterior and middle loss only)",
    "max": "max: the larger of the adjacent and the posterior reference, per height",
    "nearest_normal": "nearest_normal: mean of the same height of the nearest normal vertebra "
    "above and below (untreated, Ha/Hp and Hm/Hp at least 0.8, at most two levels away; own "
    "posterior height when there is none)",
}
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportItem:
    """An annotation with its film, for callers that hold both in memory (the app).

    ``film`` is a :class:`vheight.film.Film`, a path or bytes of the film, or
    None (resolved from ``annotation.image.file`` relative to ``folder``).
    ``name`` is the film's display name (not printed when de-identified).
    """

    annotation: Annotation
    film: Any = None
    name: str | None = None
    folder: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFilm:
    """One measured film, ready to print."""

    annotation: Annotation
    film: Any  # vheight.film.Film or None when it could not be read
    measurement: Any  # vheight.morphometry.Measurement
    name: str
    group_key: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()  # file names and paths, hidden when de-identified

    @property
    def info(self) -> Any:
        return None if self.film is None else self.film.info


def _load_film(source: Any, name: str) -> tuple[Any, list[str]]:
    """The film, or None and the reason it could not be read (one warning)."""
    from vheight.files import regular_file_problem
    from vheight.loader import load_film

    shown = repr(name) if "\x00" in str(name) else str(name)[:200]
    if isinstance(source, (str, os.PathLike)):
        problem = regular_file_problem(source, what="film")
        if problem == "no such file":
            return None, [f"film {str(source)[:300]} not found; shown without the image"]
        if problem is not None:
            return None, [f"film {shown} could not be read ({problem}); shown without the image"]
    try:
        return load_film(source, name=name), []
    except (ImageReadError, OSError) as exc:
        return None, [f"film {shown} could not be read ({exc}); shown without the image"]


def _film_mismatch(annotation: Annotation, film: Any, name: str) -> list[str]:
    """Warnings when the film does not look like the one the annotation was drawn on."""
    out = []
    image, info = annotation.image, film.info
    if (
        image.sop_instance_uid
        and info.sop_instance_uid
        and image.sop_instance_uid != info.sop_instance_uid
    ):
        out.append(
            f"film {name} is not the annotated one (SOP Instance UID {info.sop_instance_uid}, "
            f"annotation expects {image.sop_instance_uid})"
        )
    rows, cols = film.pixels.shape
    if (image.rows and image.rows != rows) or (image.columns and image.columns != cols):
        out.append(
            f"film {name} is {cols} x {rows} px but the annotation expects "
            f"{image.columns} x {image.rows} px: the landmarks may be drawn in the wrong place"
        )
    return out


def _prepare_one(item: Any, reference: str) -> ReportFilm:
    from vheight.morphometry import measure

    warnings: list[str] = []
    film: Any = None
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        annotation = load_annotation(path)
        folder = path.parent
        film_source: Any = None
        name = annotation.image.file or path.name
        if annotation.image.file:
            film_source = folder / annotation.image.file
        source_label = str(path)
    else:
        if isinstance(item, Annotation):
            item = ReportItem(annotation=item)
        if not isinstance(item, ReportItem):
            raise TypeError(
                "report input must be an annotation path, an Annotation or a ReportItem, "
                f"found {item!r}"
            )
        annotation = item.annotation
        folder = Path(item.folder) if item.folder else Path.cwd()
        name = item.name or annotation.image.file or "film"
        film_source = item.film
        if film_source is None and annotation.image.file:
            film_source = folder / annotation.image.file
        source_label = name
    if film_source is not None and hasattr(film_source, "pixels"):
        film = film_source
    elif film_source is not None:
        film, more = _load_film(film_source, name)
        warnings.extend(more)
    else:
        warnings.append(
            f"{source_label}: no film given (image.file not set); shown without the image"
        )
    if film is not None:
        warnings.extend(_film_mismatch(annotation, film, name))
    calibration = None if film is None else film.calibration
    measurement = measure(annotation, calibration, reference=reference)
    if film is not None:
        warnings.extend(str(w) for w in film.info.warnings)
    info = None if film is None else film.info
    if info is not None and info.patient_id:
        key: tuple[str, ...] = ("patient", str(info.patient_id), str(info.patient_name or ""))
    elif info is not None and info.study_instance_uid:
        key = ("study", str(info.study_instance_uid))
    else:
        key = ("folder", str(folder.resolve()))
    return ReportFilm(
        annotation=annotation,
        film=film,
        measurement=measurement,
        name=str(name),
        group_key=key,
        warnings=tuple(dict.fromkeys(warnings)),
        identifiers=_identifiers(item, name, film_source, film),
    )


def _identifiers(item: Any, name: Any, film_source: Any, film: Any) -> tuple[str, ...]:
    """Strings naming the files of an input, longest first (they may carry patient names)."""
    found: set[str] = {str(name)}
    for value in (item if isinstance(item, (str, os.PathLike)) else None, film_source):
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            try:
                resolved = str(path.resolve())
            except (OSError, ValueError, RuntimeError):  # NUL byte, symlink loop, too long
                resolved = str(path.absolute())
            found.update({str(value), str(path), path.name, resolved})
    if film is not None:
        found.update(str(v) for v in (film.info.name, film.info.path) if v)
    return tuple(sorted((f for f in found if f), key=len, reverse=True))


def _scrub(text: str, identifiers: Sequence[str]) -> str:
    for identifier in identifiers:
        text = text.replace(identifier, "<film>")
    return text


def prepare_films(items: Iterable[Any], *, reference: str = "adjacent") -> list[list[ReportFilm]]:
    """Measure every input and group the films by patient, each group ordered pre, post, follow-up.

    Groups keep the order in which their first film was given; within a
    group, films without a timepoint come last in the order given.
    """
    films = [_prepare_one(item, reference) for item in items]
    if not films:
        raise VHeightError("nothing to report: give at least one annotation")
    groups: dict[tuple[str, ...], list[ReportFilm]] = {}
    for film in films:
        groups.setdefault(film.group_key, []).append(film)
    order = {t: i for i, t in enumerate(TIMEPOINTS)}
    return [
        sorted(group, key=lambda f: order.get(f.annotation.timepoint or "", len(order)))
        for group in groups.values()
    ]


# -- formatting -------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1, *, signed: bool = False) -> str:
    if value is None or isinstance(value, bool):
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "–"
    if round(number, digits) == 0:
        number = 0.0  # no "-0.0" for a value that rounds to zero
        return f"{number:.{digits}f}"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _tint(rgb: Sequence[int], amount: float = 0.28) -> tuple[float, float, float]:
    r, g, b = (c / 255.0 for c in rgb)
    return (1 - amount + amount * r, 1 - amount + amount * g, 1 - amount + amount * b)


def _person_name(value: Any) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` as ``Family, Given Middle``."""
    parts = [p.strip() for p in str(value).split("=")[0].split("^")]
    family = parts[0] if parts else ""
    rest = " ".join(p for p in parts[1:3] if p)
    return f"{family}, {rest}" if family and rest else (family or rest)


def _study_date(value: str | None) -> str:
    if not value:
        return "unknown"
    text = str(value)
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _crop_box(annotation: Annotation, rows: int, cols: int) -> tuple[float, float, float, float]:
    """Film region to print, ``(x0, y0, x1, y1)`` pixels: the vertebrae, their labels, context."""
    points = [xy for pts in annotation.vertebrae.values() for xy in pts.values()]
    if not points:
        return 0.0, 0.0, float(cols), float(rows)
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    width = max(float(np.ptp(xs)), 0.08 * cols)
    height = max(float(np.ptp(ys)), 0.08 * rows)
    margin_x = max(1.5 * width, 0.1 * cols)
    margin_y = max(0.2 * height, 0.04 * rows)
    x0 = max(0.0, float(xs.min()) - margin_x)
    x1 = min(float(cols), float(xs.max()) + margin_x)
    y0 = max(0.0, float(ys.min()) - margin_y)
    y1 = min(float(rows), float(ys.max()) + margin_y)
    return x0, y0, x1, y1


#: Longest side, in pixels, of the printed film region.
_PRINT_PX = 1500


def _film_jpeg(item: ReportFilm) -> tuple[bytes, int, int] | None:
    """The annotated film region as JPEG bytes (quality 92), with its width and height in pixels."""
    if item.film is None:
        return None
    rows, cols = item.film.pixels.shape
    x0, y0, x1, y1 = _crop_box(item.annotation, rows, cols)
    crop_longest = max(x1 - x0, y1 - y0, 1.0)
    # Print the region at about _PRINT_PX pixels, without rendering huge films whole.
    factor = min(_PRINT_PX / crop_longest, 4200.0 / max(rows, cols), 8.0)
    full_longest = max(rows, cols) * factor
    line_scale = min(max(1.3 * _PRINT_PX / full_longest, 0.1), 10.0)
    image = render_annotated(
        item.film,
        item.annotation,
        item.measurement,
        scale=factor,
        line_scale=line_scale,
        legend=False,
    )
    sy, sx = image.shape[0] / rows, image.shape[1] / cols
    r0, r1 = int(math.floor(y0 * sy)), int(math.ceil(y1 * sy))
    c0, c1 = int(math.floor(x0 * sx)), int(math.ceil(x1 * sx))
    image = np.ascontiguousarray(image[r0:r1, c0:c1, ::-1])
    ok, png = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:  # pragma: no cover - opencv encodes any uint8 array
        return None
    return png.tobytes(), image.shape[1], image.shape[0]


# -- the document -----------------------------------------------------------------------


class _Fonts:
    regular = "Helvetica"
    bold = "Helvetica-Bold"
    italic = "Helvetica-Oblique"


def _register_fonts() -> _Fonts:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    fonts = _Fonts()
    files = {
        "VHSans": "DejaVuSans.ttf",
        "VHSans-Bold": "DejaVuSans-Bold.ttf",
        "VHSans-Oblique": "DejaVuSans-Oblique.ttf",
    }
    if all((_FONT_DIR / f).exists() for f in files.values()):
        for name, file in files.items():
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(_FONT_DIR / file)))
        fonts.regular, fonts.bold, fonts.italic = "VHSans", "VHSans-Bold", "VHSans-Oblique"
    return fonts


def _styles(fonts: _Fonts) -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("base", fontName=fonts.regular, fontSize=8.5, leading=11)
    return {
        "base": base,
        "title": ParagraphStyle(
            "title", parent=base, fontName=fonts.bold, fontSize=15, leading=19, spaceAfter=4
        ),
        "h2": ParagraphStyle(
            "h2",
            parent=base,
            fontName=fonts.bold,
            fontSize=11.5,
            leading=14,
            spaceBefore=2,
            spaceAfter=4,
            textColor=colors.HexColor("#1f3a5f"),
        ),
        "h3": ParagraphStyle(
            "h3",
            parent=base,
            fontName=fonts.bold,
            fontSize=9.5,
            leading=12,
            spaceBefore=6,
            spaceAfter=3,
        ),
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "note": ParagraphStyle(
            "note",
            parent=base,
            fontName=fonts.italic,
            fontSize=7.5,
            leading=9.5,
            textColor=colors.HexColor("#444444"),
        ),
        "warn": ParagraphStyle(
            "warn",
            parent=base,
            fontSize=7.8,
            leading=10,
            textColor=colors.HexColor("#8a4b00"),
            leftIndent=8,
            bulletIndent=0,
        ),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9),
        "cellb": ParagraphStyle("cellb", parent=base, fontName=fonts.bold, fontSize=7.5, leading=9),
    }


def _esc(text: Any) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def _table(
    data: list[list[Any]],
    col_widths: Sequence[float],
    fonts: _Fonts,
    extra: Sequence[tuple[Any, ...]] = (),
    *,
    header_rows: int = 1,
) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(data, colWidths=col_widths, repeatRows=header_rows, hAlign="LEFT")
    style = [
        ("FONT", (0, 0), (-1, -1), fonts.regular, 7.5),
        ("FONT", (0, 0), (-1, header_rows - 1), fonts.bold, 7.2),
        ("BACKGROUND", (0, 0), (-1, header_rows - 1), colors.HexColor("#e4e9f0")),
        ("LINEBELOW", (0, header_rows - 1), (-1, header_rows - 1), 0.6, colors.HexColor("#1f3a5f")),
        ("LINEBELOW", (0, header_rows), (-1, -1), 0.25, colors.HexColor("#c8ced6")),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("ALIGN", (0, 0), (0, -1), "LEFT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    style.extend(extra)
    table.setStyle(TableStyle(style))
    return table


def _measurement_table(item: ReportFilm, fonts: _Fonts, width: float) -> Any:
    from reportlab.lib import colors

    m = item.measurement
    unit = str(m.unit)
    header = [
        "Level",
        f"Ha\n{unit}",
        f"Hm\n{unit}",
        f"Hp\n{unit}",
        "Wedge\nratio",
        "Mid\nratio",
        "Crush\nratio",
        "Wedge\nangle °",
        "Seg. kyph.\nangle °",
        "Max\nloss %",
        "Grade",
        "Type",
        "Reference",
        "Treated",
    ]
    data: list[list[Any]] = [header]
    extra: list[tuple[Any, ...]] = []
    for row_index, rec in enumerate(m.records(), start=1):
        complete = bool(rec.get("complete"))
        grade = rec.get("grade")
        treated = bool(rec.get("treated")) or rec.get("level") in item.annotation.treated_levels
        if complete:
            row = [
                str(rec["level"]),
                _fmt(rec.get("anterior_height")),
                _fmt(rec.get("middle_height")),
                _fmt(rec.get("posterior_height")),
                _fmt(rec.get("wedge_ratio"), 3),
                _fmt(rec.get("mid_ratio"), 3),
                _fmt(rec.get("crush_ratio"), 3),
                _fmt(rec.get("wedge_angle_deg"), 1, signed=True),
                _fmt(rec.get("segmental_kyphosis_deg"), 1, signed=True),
                _fmt(rec.get("max_loss_pct"), 1),
                "–" if grade is None else str(int(grade)),
                str(rec.get("deformity_type") or "–"),
                str(rec.get("reference_method") or "–"),
                "yes" if treated else "",
            ]
        else:
            count = len(item.annotation.vertebrae.get(str(rec["level"]), {}))
            row = (
                [str(rec["level"]), f"incomplete ({count}/6 points): not measured"]
                + [""] * 11
                + ["yes" if treated else ""]
            )
            extra.append(("SPAN", (1, row_index), (12, row_index)))
            extra.append(("ALIGN", (1, row_index), (12, row_index), "LEFT"))
            extra.append(("TEXTCOLOR", (1, row_index), (12, row_index), colors.HexColor("#666666")))
        data.append(row)
        rgb = INCOMPLETE_COLOR if (grade is None or not complete) else GRADE_COLORS.get(int(grade))
        if rgb is not None:
            extra.append(
                ("BACKGROUND", (10, row_index), (10, row_index), colors.Color(*_tint(rgb, 0.55)))
            )
            extra.append(
                ("BACKGROUND", (0, row_index), (0, row_index), colors.Color(*_tint(rgb, 0.3)))
            )
        if treated:
            extra.append(
                ("TEXTCOLOR", (13, row_index), (13, row_index), colors.HexColor("#007a99"))
            )
            extra.append(("FONT", (13, row_index), (13, row_index), fonts.bold, 7.5))
    fractions = [
        0.06,
        0.065,
        0.065,
        0.065,
        0.068,
        0.064,
        0.066,
        0.07,
        0.085,
        0.066,
        0.055,
        0.08,
        0.085,
        0.066,
    ]
    total = sum(fractions)
    widths = [width * f / total for f in fractions]
    extra.append(("ALIGN", (10, 0), (13, -1), "CENTER"))
    return _table(data, widths, fonts, extra)


def _legend(styles: Mapping[str, Any]) -> Any:
    from reportlab.platypus import Paragraph

    parts = [
        f'<font color="{_hex(GRADE_COLORS[g])}">■</font> grade {g} {n}'
        for g, n in ((0, "normal"), (1, "mild"), (2, "moderate"), (3, "severe"))
    ]
    parts.append(f'<font color="{_hex(INCOMPLETE_COLOR)}">■</font> incomplete')
    parts.append(f'<font color="{_hex(TREATED_COLOR)}">▢</font> treated level')
    return Paragraph(
        "Colours: " + " &nbsp; ".join(parts) + ". Ha, Hm, Hp: anterior, middle, posterior height.",
        styles["note"],
    )


def _film_title(item: ReportFilm, deidentify: bool) -> str:
    timepoint = item.annotation.timepoint
    title = _TIMEPOINT_TITLES.get(timepoint or "", "Film")
    info = item.info
    facts = []
    if not deidentify:
        facts.append(item.name)
        if info is not None and info.study_date:
            facts.append(_study_date(info.study_date))
    if info is not None and info.modality:
        facts.append(str(info.modality))
    return title + (f" — {', '.join(_esc(f) for f in facts)}" if facts else "")


def _film_section(
    item: ReportFilm, styles: Mapping[str, Any], fonts: _Fonts, frame_w: float, deidentify: bool
) -> list[Any]:
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, KeepTogether, Paragraph, Spacer

    story: list[Any] = [Paragraph(_film_title(item, deidentify), styles["h2"])]
    m = item.measurement
    cal = getattr(m, "calibration", None)
    spacing = (
        cal.describe() if cal is not None and hasattr(cal, "describe") else str(m.spacing_label)
    )
    story.append(
        Paragraph(
            f"Spacing: {_esc(spacing)} — values in <b>{_esc(m.unit)}</b>, "
            f"label <b>{_esc(m.spacing_label)}</b>. "
            f"Reference method: {_esc(m.reference)}."
            + (
                ""
                if item.annotation.patient_position is None
                else f" Patient position: {_esc(item.annotation.patient_position)}."
            ),
            styles["small"],
        )
    )
    story.append(Spacer(1, 2 * mm))
    png = _film_jpeg(item)
    if png is not None:
        data, w, h = png
        max_w, max_h = frame_w, 148 * mm
        f = min(max_w / w, max_h / h)
        image = Image(io.BytesIO(data), width=w * f, height=h * f)
        image.hAlign = "CENTER"
        story.append(image)
        story.append(Spacer(1, 1.5 * mm))
        story.append(_legend(styles))
    else:
        story.append(Paragraph("Film not available: measurements only.", styles["note"]))
    story.append(Spacer(1, 3 * mm))
    story.append(
        KeepTogether(
            [
                Paragraph("Measurements", styles["h3"]),
                _measurement_table(item, fonts, frame_w),
            ]
        )
    )
    warnings = list(dict.fromkeys([*item.warnings, *(str(w) for w in m.warnings)]))
    if deidentify:
        warnings = [_scrub(w, item.identifiers) for w in warnings]
    if warnings:
        story.append(Spacer(1, 2 * mm))
        story.append(Paragraph("Warnings", styles["h3"]))
        for w in warnings:
            story.append(Paragraph(_esc(w), styles["warn"], bulletText="•"))
    return story


def _compared(group: Sequence[ReportFilm]) -> tuple[Any, bool] | None:
    """The comparison of a patient's films (pre, post, follow-up), and whether a
    follow-up is part of it; None without a pre and a post film."""
    from vheight.comparison import FilmFacts, compare

    by_time: dict[str, ReportFilm] = {}
    for item in group:
        if item.annotation.timepoint and item.annotation.timepoint not in by_time:
            by_time[item.annotation.timepoint] = item
    if "pre" not in by_time or "post" not in by_time:
        return None
    roles = [by_time.get(role) for role in ("pre", "post", "followup")]
    facts = [
        None if item is None or item.info is None else FilmFacts.from_header(item.info)
        for item in roles
    ]
    follow = roles[2]
    # A report groups its films by patient: they are one patient's, whatever the IDs say.
    comparison = compare(
        by_time["pre"].measurement,
        by_time["post"].measurement,
        None if follow is None else follow.measurement,
        facts=facts,
        allow_different_patients=True,
    )
    return comparison, follow is not None


def _flag_lines(comparison: Any, styles: Mapping[str, Any]) -> list[Any]:
    """One line per flag: suspected new fracture, suspected recollapse."""
    from reportlab.platypus import Paragraph

    latest = "follow-up" if comparison.followup is not None else "post"
    lines = []
    for level in comparison.incident_levels:
        reason = comparison.levels[level].incident_reason or ""
        lines.append(
            f"<b>New fracture suspected at {_esc(level)}</b> (untreated, pre to {latest} film): "
            f"{_esc(reason)}. To confirm."
        )
    for level in comparison.recollapsed_levels:
        lost = ", ".join(
            f"{h} {_fmt(hc.loss_since_post_pct, 1)} %"
            for h, hc in comparison.levels[level].heights.items()
            if hc.loss_since_post_pct is not None
        )
        lines.append(
            f"<b>Recollapse suspected at {_esc(level)}</b> (treated): lost since the post "
            f"film {_esc(lost)} (flag at 15 %). To confirm."
        )
    return [Paragraph(line, styles["warn"], bulletText="!") for line in lines]


def _heights_table(
    records: Sequence[Mapping[str, Any]], follow: bool, fonts: _Fonts, frame_w: float
) -> Any:
    """Per level and height: pre, post (follow-up), change, the restoration figures."""
    from reportlab.lib import colors

    from vheight.comparison import percent_of_lost_meaningful

    unit = str(records[0].get("unit") or "")
    followup_unit = str(records[0].get("followup_unit") or unit)
    header = ["Level", "Height", f"Pre\n{unit}", f"Post\n{unit}"]
    if follow:
        header.append(f"Follow-up\n{followup_unit}")
    header += [
        f"Δ\n{unit}",
        "Restored\n% initial",
        "Restored\n% lost",
        "Restored\n% ref.",
        f"Ref. pre\n{unit}",
        "Loss pre\n−post pt",
    ]
    if follow:
        header.append("Loss since\npost %")
    data: list[list[Any]] = [header]
    extra: list[tuple[Any, ...]] = []
    previous_level = None
    for i, rec in enumerate(records, start=1):
        level = str(rec.get("level"))
        row = [
            level if level != previous_level else "",
            str(rec.get("height") or ""),
            _fmt(rec.get("pre")),
            _fmt(rec.get("post")),
        ]
        if follow:
            row.append(_fmt(rec.get("followup")))
        row += [
            _fmt(rec.get("delta"), 2, signed=True),
            _fmt(rec.get("restoration_pct_of_initial"), 1),
            _fmt(
                rec.get("restoration_pct_of_lost") if percent_of_lost_meaningful(rec) else None, 1
            ),
            _fmt(rec.get("restoration_pct_of_reference"), 1),
            _fmt(rec.get("reference_pre")),
            _fmt(rec.get("loss_reduction_pct_points"), 1, signed=True),
        ]
        if follow:
            row.append(_fmt(rec.get("loss_since_post_pct"), 1))
        if level != previous_level and previous_level is not None:
            extra.append(("LINEABOVE", (0, i), (-1, i), 0.6, colors.HexColor("#8795a8")))
        previous_level = level
        data.append(row)
    n = len(header)
    widths = [0.75] + [1.0] * (n - 1)
    extra.append(("ALIGN", (1, 1), (1, -1), "LEFT"))
    return _table(data, [frame_w * w / sum(widths) for w in widths], fonts, extra)


def _levels_table(records: Sequence[Mapping[str, Any]], fonts: _Fonts, frame_w: float) -> Any:
    """Per level: wedge and segmental angles, grades before and after, reference, flag."""
    from reportlab.lib import colors

    header = [
        "Level",
        "Wedge angle\npre °",
        "Wedge angle\npost °",
        "Wedge angle\nchange °",
        "Seg. kyphosis\nchange °",
        "Grade\npre",
        "Grade\npost",
        "Reference",
        "Flag",
    ]
    data: list[list[Any]] = [header]
    extra: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for rec in records:
        level = str(rec.get("level"))
        if level in seen:
            continue
        seen.add(level)
        flag = (
            "new fracture?"
            if rec.get("incident_fracture")
            else "recollapse?"
            if rec.get("recollapse")
            else ""
        )
        data.append(
            [
                level,
                _fmt(rec.get("wedge_angle_pre_deg"), 1, signed=True),
                _fmt(rec.get("wedge_angle_post_deg"), 1, signed=True),
                _fmt(rec.get("wedge_angle_change_deg"), 1, signed=True),
                _fmt(rec.get("segmental_kyphosis_change_deg"), 1, signed=True),
                "–" if rec.get("grade_pre") is None else str(int(rec["grade_pre"])),
                "–" if rec.get("grade_post") is None else str(int(rec["grade_post"])),
                str(rec.get("reference_method") or "–"),
                flag,
            ]
        )
        r = len(data) - 1
        for col, key in ((5, "grade_pre"), (6, "grade_post")):
            g = rec.get(key)
            if g is not None and int(g) in GRADE_COLORS:
                tint = colors.Color(*_tint(GRADE_COLORS[int(g)], 0.55))
                extra.append(("BACKGROUND", (col, r), (col, r), tint))
        if flag:
            extra.append(("FONT", (8, r), (8, r), fonts.bold, 7.5))
    extra.append(("ALIGN", (5, 0), (6, -1), "CENTER"))
    widths = [0.7, 1, 1, 1, 1, 0.7, 0.7, 1.2, 1.3]
    return _table(data, [frame_w * w / sum(widths) for w in widths], fonts, extra)


def _comparison_section(
    group: Sequence[ReportFilm],
    styles: Mapping[str, Any],
    fonts: _Fonts,
    frame_w: float,
    deidentify: bool = False,
) -> list[Any]:
    """The comparison of a patient's films: flags, heights, angles and grades, warnings."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    compared = _compared(group)
    if compared is None:
        return []
    comparison, follow = compared
    records = list(comparison.records())
    story: list[Any] = [
        Paragraph("Comparison: pre / post" + (" / follow-up" if follow else ""), styles["h2"])
    ]
    story.extend(_flag_lines(comparison, styles))
    if not records:
        story.append(Paragraph("No level is measured on both films.", styles["note"]))
        return story
    story.append(
        Paragraph(
            "Δ = H<sub>post</sub> − H<sub>pre</sub>. "
            "Restoration (McKiernan et al., Spine 2003): of initial = Δ / H<sub>pre</sub>; "
            "of lost = Δ / (Ref<sub>pre</sub> − H<sub>pre</sub>); "
            "of reference = Δ / Ref<sub>pre</sub>; Ref<sub>pre</sub> is the pre-film "
            "reference height of the chosen method; % lost is left out (–) where less than "
            "1 mm was lost (5 % of Ref<sub>pre</sub> in px), and above 100 % means "
            "overcorrection. Loss pre−post = the height loss of the "
            "pre film minus that of the post film, each against its own reference "
            "(independent of magnification)."
            + (
                " Loss since post = (H<sub>post</sub> − H<sub>follow-up</sub>) / H<sub>post</sub>."
                if follow
                else ""
            ),
            styles["small"],
        )
    )
    story.append(Spacer(1, 2 * mm))
    story.append(_heights_table(records, follow, fonts, frame_w))
    story.append(Spacer(1, 3 * mm))
    story.append(Paragraph("Angles, grades and flags per level", styles["h3"]))
    story.append(_levels_table(records, fonts, frame_w))
    story.append(
        Paragraph(
            "Negative wedge angle change = correction of the kyphotic wedging. Flags are "
            "quantitative suggestions for the radiologist to confirm: new fracture = a height "
            "down by at least 20 % and 4 mm since pre, or grade 0 to 1 or more; recollapse = "
            "at least 15 % of a treated level's height lost since post.",
            styles["note"],
        )
    )
    story.extend(_comparison_warnings(comparison, group, styles, deidentify))
    return story


def _comparison_warnings(
    comparison: Any, group: Sequence[ReportFilm], styles: Mapping[str, Any], deidentify: bool
) -> list[Any]:
    """The comparison's warnings, file names hidden when de-identified."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    warnings = [str(w) for w in comparison.warnings]
    if deidentify:
        identifiers = sorted({i for item in group for i in item.identifiers}, key=len, reverse=True)
        warnings = [_scrub(w, identifiers) for w in warnings]
    if not warnings:
        return []
    story: list[Any] = [Spacer(1, 2 * mm), Paragraph("Comparison warnings", styles["h3"])]
    story.extend(Paragraph(_esc(w), styles["warn"], bulletText="•") for w in warnings)
    return story


def _summary_section(
    group: Sequence[ReportFilm],
    styles: Mapping[str, Any],
    fonts: _Fonts,
    frame_w: float,
    deidentify: bool,
) -> list[Any]:
    """Grades per level and film, when there is no pre/post pair to compare."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph

    from vheight.annotation import LEVELS

    levels: list[str] = []
    for item in group:
        for rec in item.measurement.records():
            if rec["level"] not in levels:
                levels.append(str(rec["level"]))
    levels.sort(key=LEVELS.index)
    header = ["Level"]
    for item in group:
        label = _TIMEPOINT_TITLES.get(item.annotation.timepoint or "", "Film")
        header.append(label if deidentify else f"{label}\n{item.name}")
    data: list[list[Any]] = [header]
    extra: list[tuple[Any, ...]] = []
    for r, level in enumerate(levels, start=1):
        row = [level]
        for c, item in enumerate(group, start=1):
            recs = {str(x["level"]): x for x in item.measurement.records()}
            rec = recs.get(level)
            if rec is None:
                row.append("not annotated")
            elif not rec.get("complete") or rec.get("grade") is None:
                row.append("incomplete" if not rec.get("complete") else "–")
            else:
                grade = int(rec["grade"])
                row.append(f"grade {grade}, max loss {_fmt(rec.get('max_loss_pct'))} %")
                tint = colors.Color(*_tint(GRADE_COLORS[grade], 0.45))
                extra.append(("BACKGROUND", (c, r), (c, r), tint))
        data.append(row)
    widths = [0.5] + [1.0] * len(group)
    extra.append(("ALIGN", (1, 0), (-1, -1), "CENTER"))
    return [
        Paragraph("Summary: suggested grade per level", styles["h2"]),
        _table(data, [frame_w * w / sum(widths) for w in widths], fonts, extra),
    ]


def _film_dates(group: Sequence[ReportFilm]) -> str:
    """``"Pre-operative 2026-01-05; Post-operative 2026-01-07"``: when each film was
    taken (acquisition, else content, else study date), as the comparison dates them."""
    from vheight.comparison import FilmFacts

    dates = []
    for g in group:
        if g.info is None:
            continue
        acquired = FilmFacts.from_header(g.info).acquired
        label = _TIMEPOINT_TITLES.get(g.annotation.timepoint or "", "film")
        if acquired is not None:
            dates.append(f"{label} {acquired:%Y-%m-%d}")
        elif g.info.study_date:
            dates.append(f"{label} {_study_date(g.info.study_date)}")
    return "; ".join(dates) or "unknown"


def _patient_header(
    group: Sequence[ReportFilm],
    number: int,
    styles: Mapping[str, Any],
    fonts: _Fonts,
    frame_w: float,
    deidentify: bool,
    reference: str,
) -> list[Any]:
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    infos = [g.info for g in group if g.info is not None]
    rows: list[list[Any]] = []
    if deidentify:
        rows.append(["Patient", f"Patient {number} (de-identified)"])
    else:
        names = sorted({_person_name(i.patient_name) for i in infos if i.patient_name})
        ids = sorted({str(i.patient_id) for i in infos if i.patient_id})
        rows.append(["Patient name", ", ".join(names) or "unknown"])
        rows.append(["Patient ID", ", ".join(ids) or "unknown"])
        rows.append(["Film dates", _film_dates(group)])
    films = []
    for g in group:
        label = _TIMEPOINT_TITLES.get(g.annotation.timepoint or "", "Film")
        films.append(label if deidentify else f"{label} ({g.name})")
    rows.append(["Films", ", ".join(films)])
    treated = sorted({lv for g in group for lv in g.annotation.treated_levels})
    rows.append(["Treated levels", ", ".join(treated) or "none recorded"])
    labels = sorted({str(g.measurement.spacing_label) for g in group})
    rows.append(["Spacing", ", ".join(labels)])
    rows.append(["Height-loss reference", _REFERENCE_TEXT.get(reference, reference)])
    annotators = sorted({g.annotation.annotator.strip() for g in group if g.annotation.annotator})
    if annotators and not deidentify:
        rows.append(["Landmarks placed by", ", ".join(annotators)])
    data = [
        [Paragraph(f"<b>{_esc(k)}</b>", styles["cell"]), Paragraph(_esc(v), styles["cell"])]
        for k, v in rows
    ]
    from reportlab.lib import colors

    table = _table(
        data,
        [36 * mm, frame_w - 36 * mm],
        fonts,
        [
            ("ALIGN", (0, 0), (-1, -1), "LEFT"),
            ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef1f5")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.white),
            ("FONT", (0, 0), (-1, 0), fonts.regular, 7.5),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#c8ced6")),
        ],
        header_rows=1,
    )
    return [Paragraph("Vertebral body height report", styles["title"]), table, Spacer(1, 4 * mm)]


def _build(
    groups: Sequence[Sequence[ReportFilm]], buffer: Any, *, reference: str, deidentify: bool
) -> None:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    fonts = _register_fonts()
    styles = _styles(fonts)
    margin = 14 * mm
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=16 * mm,
        bottomMargin=20 * mm,
        title="Vertebral body height report",
        author="vheight",
        subject="Vertebral morphometry",
        creator=f"vheight {__version__}",
        invariant=True,
    )
    frame_w = A4[0] - 2 * margin
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def on_page(canvas: Any, document: Any) -> None:
        canvas.saveState()
        width, height = A4
        canvas.setStrokeColor(colors.HexColor("#1f3a5f"))
        canvas.setLineWidth(0.6)
        canvas.line(margin, height - 11 * mm, width - margin, height - 11 * mm)
        canvas.setFont(fonts.bold, 8)
        canvas.setFillColor(colors.HexColor("#1f3a5f"))
        canvas.drawString(margin, height - 9.5 * mm, "vheight — vertebral body height morphometry")
        canvas.setFont(fonts.regular, 7.5)
        canvas.drawRightString(
            width - margin,
            height - 9.5 * mm,
            f"reference: {reference}" + ("  ·  de-identified" if deidentify else ""),
        )
        canvas.setStrokeColor(colors.HexColor("#c8ced6"))
        canvas.line(margin, 15 * mm, width - margin, 15 * mm)
        canvas.setFillColor(colors.HexColor("#333333"))
        canvas.setFont(fonts.italic, 6.8)
        for i, line in enumerate(_DISCLAIMER_LINES):
            canvas.drawString(margin, (12 - 3 * i) * mm, line)
        canvas.setFont(fonts.regular, 6.8)
        canvas.drawString(
            margin,
            5 * mm,
            f"vheight {__version__} · generated {created} · "
            "measurements from six-point morphometry on the annotated landmarks",
        )
        canvas.drawRightString(width - margin, 5 * mm, f"page {document.page}")
        canvas.restoreState()

    story: list[Any] = []
    for number, group in enumerate(groups, start=1):
        if story:
            story.append(PageBreak())
        story.extend(_patient_header(group, number, styles, fonts, frame_w, deidentify, reference))
        comparison = _comparison_section(group, styles, fonts, frame_w, deidentify)
        story.extend(comparison or _summary_section(group, styles, fonts, frame_w, deidentify))
        for item in group:
            story.append(PageBreak())
            story.extend(_film_section(item, styles, fonts, frame_w, deidentify))
    if not story:  # pragma: no cover - prepare_films refuses empty input
        story.append(Paragraph("Nothing to report.", styles["base"]))
    from reportlab import rl_config

    # Images as binary streams: ASCII85 (the default) is slow in pure Python and 25 % larger.
    use_a85, rl_config.useA85 = rl_config.useA85, 0
    try:
        doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    finally:
        rl_config.useA85 = use_a85


def _check_reference(reference: str) -> None:
    if reference not in _REFERENCE_TEXT:
        raise VHeightError(
            f"unknown reference method {reference!r}: expected adjacent, posterior, max "
            "or nearest_normal"
        )


def pdf_bytes(
    groups: Sequence[Sequence[ReportFilm]], *, reference: str = "adjacent", deidentify: bool = False
) -> bytes:
    """The PDF of films already measured and grouped by :func:`prepare_films`."""
    _check_reference(reference)
    buffer = io.BytesIO()
    _build(groups, buffer, reference=reference, deidentify=deidentify)
    return buffer.getvalue()


def save_pdf(data: bytes, out: str | os.PathLike[str]) -> Path:
    """Write PDF bytes to ``out`` atomically (temporary file in the same folder, then rename)."""
    return write_atomic(out, data, make_parents=True)


def report_bytes(
    annotations: Iterable[Any],
    *,
    reference: str = "adjacent",
    deidentify: bool = False,
) -> bytes:
    """The PDF report of ``annotations`` (module docstring), in memory.

    Parameters
    ----------
    annotations
        Annotation file paths, :class:`~vheight.annotation.Annotation` objects
        (film found through ``image.file`` relative to the working folder) or
        :class:`ReportItem` (annotation with its film, e.g. from the app).
    reference
        Height-loss reference method: ``adjacent``, ``posterior``, ``max`` or
        ``nearest_normal``.
    deidentify
        Print no patient name, ID, study date or file name.
    """
    _check_reference(reference)
    groups = prepare_films(annotations, reference=reference)
    return pdf_bytes(groups, reference=reference, deidentify=deidentify)


def write_report(
    annotations: Iterable[Any],
    out: str | os.PathLike[str],
    *,
    reference: str = "adjacent",
    deidentify: bool = False,
) -> Path:
    """Write :func:`report_bytes` to ``out`` (atomically: temporary file, then rename)."""
    return save_pdf(report_bytes(annotations, reference=reference, deidentify=deidentify), out)
