"""The Agreement page: how well the readers of the same films agree.

Takes the annotation store (every reader's annotations saved by the app) or a
folder of annotation files, pairs the annotations of each film (by SOP
Instance UID) made by different readers, and shows the statistics of
:mod:`vheight.agreement`: the readers found and what each annotated, ICC,
Bland-Altman bias and limits, SEM, SDC and CV per quantity, agreement on the
Genant grade, the Bland-Altman plots, and CSV / JSON downloads.  Every number
comes from :mod:`vheight.agreement`; text from files is shown escaped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from vheight.agreement import (
    GRADE_KEYS,
    QUANTITIES,
    QUANTITY_COLUMNS,
    QUANTITY_LABELS,
    agreement,
    bland_altman_png,
    read_readings,
)
from vheight.ui import session
from vheight.ui.text import md_path

__all__ = ["page", "compute", "SOURCE", "FOLDER", "BY"]

SOURCE = "vh.agreement.source"
FOLDER = "vh.agreement.folder"
BY = "vh.agreement.by"
_STORE = "the annotation store"
_FOLDER = "a folder"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def _escape(text: Any) -> str:
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What the result depends on: every annotation file's path, time and size."""
    out = []
    for path in sorted(folder.rglob("*.vheight.json")):
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@st.cache_resource(max_entries=8, show_spinner=False)
def _cached(
    folder: str, by: str, reference: str, calibrations: tuple, fingerprint: tuple
) -> dict[str, Any]:
    return compute(Path(folder), by=by, reference=reference, calibrations=dict(calibrations))


def compute(
    folder: Path, *, by: str, reference: str, calibrations: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The readings found under ``folder`` and their agreement.

    ``calibrations`` (SOP Instance UID -> header calibration) calibrates the
    annotations of films whose file is not beside them (the store's).
    Returns ``{"agreement", "annotations" (one row per reader: films
    annotated), "warnings", "errors"}``.
    """
    readings, warnings, errors = read_readings(
        [folder], by=by, reference=reference, calibrations=calibrations
    )
    result = agreement(readings, reference=reference)
    rows: dict[str, dict[str, Any]] = {}
    for reading in readings:
        row = rows.setdefault(reading.reader, {"Reader": reading.reader, "Films": 0})
        row["Films"] += 1
    annotations = pd.DataFrame(
        sorted(rows.values(), key=lambda r: (r["Reader"].casefold(), r["Reader"])),
        columns=["Reader", "Films"],
    )
    return {
        "agreement": result,
        "annotations": annotations,
        "warnings": [*warnings, *result.warnings],
        "errors": errors,
    }


def _source_folder() -> Path | None:
    state = st.session_state
    if state.get(SOURCE, _STORE) == _STORE:
        return session.store().folder
    text = str(state.get(FOLDER) or "").strip()
    return Path(text).expanduser() if text else None


def _open_calibrations() -> tuple[tuple[str, Any], ...]:
    """The header calibration of each film open in the session, by SOP Instance UID."""
    found = {}
    for slot in session.slots().values():
        uid = slot.opened.film.info.sop_instance_uid
        if uid and slot.opened.film.calibration.is_calibrated:
            found[uid] = slot.opened.film.calibration
    return tuple(sorted(found.items()))


def page() -> None:
    """Draw the Agreement page."""
    state = st.session_state
    st.markdown("##### Agreement between readers")
    c1, c2, c3 = st.columns([1.2, 2.2, 1.2], vertical_alignment="bottom")
    c1.radio("Annotations from", options=[_STORE, _FOLDER], key=SOURCE)
    if state.get(SOURCE, _STORE) == _FOLDER:
        c2.text_input(
            "Folder of annotation files (searched recursively)",
            key=FOLDER,
            placeholder="/data/study/readings",
        )
    else:
        c2.caption("Every reader's annotations saved by this app, in")
        c2.caption(md_path(session.store().folder))
    c3.radio(
        "Readers told apart by",
        options=["annotator", "folder"],
        key=BY,
        format_func={"annotator": "annotator name", "folder": "top folder"}.get,
        help="The annotation's annotator field, or the first folder under the one given "
        "(readers/alice/..., readers/bob/...)",
    )
    folder = _source_folder()
    if folder is None:
        st.info("Type the folder holding the readers' annotation files.")
        return
    if not folder.is_dir():
        st.info(f"No annotations yet: {_escape(folder)} does not exist.")
        return
    reference = state.get(session.REFERENCE, "adjacent")
    by = state.get(BY) or "annotator"
    with st.spinner("Measuring every reader's annotations..."):
        found = _cached(str(folder), by, reference, _open_calibrations(), _fingerprint(folder))
    _show(found)


def _show(found: dict[str, Any]) -> None:
    result = found["agreement"]
    annotations: pd.DataFrame = found["annotations"]
    for error in found["errors"]:
        st.warning(_escape(f"Not read: {error}"))
    if annotations.empty:
        st.info("No annotation naming a film (SOP Instance UID) and a reader was found here.")
    else:
        st.caption("Readers and the films each annotated")
        st.dataframe(annotations, hide_index=True, width=360)
    if not result.shared:
        st.info("Fewer than two readers share a film: nothing to compare yet.")
        _warnings(found["warnings"])
        return
    counts = ", ".join(f"{r} {n}" for r, n in result.vertebrae_by_reader.items())
    st.markdown(
        f"**{len(result.readers)} readers** ({_escape(', '.join(result.readers))}) · "
        f"**{result.films}** film(s) read by every reader · **{result.vertebrae}** "
        f"vertebrae every reader completed (completed: {_escape(counts)})"
    )
    table = result.quantities.copy()
    table.insert(0, "Quantity", [QUANTITY_LABELS.get(q, q) for q in table["quantity"]])
    table = table.drop(columns=["quantity"])
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "unit": st.column_config.TextColumn("Unit"),
            "n": st.column_config.NumberColumn("n"),
            **{
                c: st.column_config.NumberColumn(_HEADERS.get(c, c), format="%.3f")
                for c in QUANTITY_COLUMNS
                if c not in ("quantity", "unit", "n")
            },
        },
    )
    caption = (
        "ICC(2,1): two-way random, absolute agreement; ICC(3,1): two-way mixed, consistency "
        "(Shrout & Fleiss 1979), with 95 % intervals. SEM = SD of the differences / sqrt 2, "
        "SDC = 1.96 x sqrt 2 x SEM; CV = root mean square of the per-vertebra CVs."
    )
    if result.difference:
        caption += f" Bland-Altman differences: {result.difference}."
    st.caption(_escape(caption))
    if "px" in set(result.quantities["unit"]):
        st.caption(
            "Heights in px: the spacing of these films is not known here (the store keeps "
            "the landmarks, not the films; films open in this session are calibrated). "
            "Ratios, angles, losses and ICCs do not depend on it."
        )
    grade = {(_GRADE_HEADERS[k]): result.grade.get(k) for k in GRADE_KEYS}
    st.caption("Genant grade (a quantitative suggestion)")
    st.dataframe(pd.DataFrame([grade]), hide_index=True, width="stretch")
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button(
        "CSV",
        data=result.quantities.to_csv(index=False),
        file_name="agreement.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key="vh.agreement.csv",
    )
    c2.download_button(
        "JSON",
        data=json.dumps(result.to_dict(), indent=2, allow_nan=False),
        file_name="agreement.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key="vh.agreement.json",
    )
    _warnings(found["warnings"])
    if len(result.readers) == 2:
        st.markdown("##### Bland-Altman plots")
        shown = [q for q in QUANTITIES if _n(result, q) > 0]
        for i in range(0, len(shown), 2):
            columns = st.columns(2)
            for column, quantity in zip(columns, shown[i : i + 2], strict=False):
                column.image(_png(result, quantity), width="stretch")
    else:
        st.caption("Bland-Altman plots need exactly two readers.")


def _n(result: Any, quantity: str) -> int:
    return int(result.quantities.set_index("quantity").loc[quantity, "n"])


def _png(result: Any, quantity: str) -> bytes:
    return bland_altman_png(result, quantity)


def _warnings(warnings: list[str]) -> None:
    if warnings:
        with st.expander(f"Notes ({len(warnings)})"):
            for warning in warnings:
                st.text(warning)


_HEADERS = {
    "icc_2_1": "ICC(2,1)",
    "icc_2_1_ci_low": "ICC(2,1) low",
    "icc_2_1_ci_high": "ICC(2,1) high",
    "icc_3_1": "ICC(3,1)",
    "icc_3_1_ci_low": "ICC(3,1) low",
    "icc_3_1_ci_high": "ICC(3,1) high",
    "bias": "Bias",
    "sd_diff": "SD diff",
    "loa_low": "LoA low",
    "loa_high": "LoA high",
    "sem": "SEM",
    "sdc": "SDC",
    "cv_pct": "CV %",
}
_GRADE_HEADERS = {
    "n": "Vertebrae",
    "percent_agreement": "Agreement %",
    "kappa_linear": "Kappa (linear)",
    "kappa_quadratic": "Kappa (quadratic)",
    "fleiss_kappa": "Fleiss' kappa",
    "fracture_agreement_pct": "Fractured: agreement %",
}
