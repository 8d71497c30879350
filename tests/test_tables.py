"""The column schema and the one way a table is written (CSV, JSON, Parquet)."""

from __future__ import annotations

import csv
import enum
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vheight import tables
from vheight.comparison import COMPARE_RECORD_KEYS, SPEC_COMPARE_RECORD_KEYS
from vheight.morphometry import RECORD_KEYS


def _reference_cell(value):
    """The cell rules of the module docstring, written out independently."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value)) if math.isfinite(value) else ""
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(tables.to_jsonable(value))
    return value


def _reference_csv(rows, columns) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_reference_cell(row.get(c)) for c in columns] for row in rows)
    return text.getvalue()


class _Grade(enum.IntEnum):
    MILD = 1


class _Kind(enum.StrEnum):
    WEDGE = "wedge"


_CELLS = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from('ab ,"\r\n\t;é1.-'), max_size=8),
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.sampled_from([1e-05, -1e-05, 1e16, 1e-7, 1e22, -0.0, 0.0, 5e-324, 12.0]),
    st.booleans(),
    st.sampled_from([np.float64(1.25), np.int64(3), np.bool_(True), _Grade.MILD, pd.NA]),
    st.sampled_from([_Kind.WEDGE, (1.5,), {"a": 1}, [1, None]]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from("abcd"), _CELLS), max_size=6),
    st.sampled_from([("a", "b", "c", "d"), ("a",), ("d", "a, b", 'q"')]),
)
def test_csv_cells_follow_the_rules(rows, columns):
    text = io.StringIO()
    tables.write_records_csv(rows, columns, text)
    assert text.getvalue() == _reference_csv(rows, columns)


_SCHEMA = tables.Schema(
    (
        tables.Column("x", tables.Dtype.FLOAT),
        tables.Column("n", tables.Dtype.INT),
        tables.Column("ok", tables.Dtype.BOOL),
        tables.Column("name", tables.Dtype.TEXT),
    )
)
_TYPED_ROWS = st.fixed_dictionaries(
    {
        "x": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "n": st.one_of(st.none(), st.integers(-(2**62), 2**62)),
        "ok": st.one_of(st.none(), st.booleans()),
        "name": st.one_of(st.none(), st.text(max_size=5)),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_TYPED_ROWS, max_size=8))
def test_frame_keeps_every_value_and_type(rows):
    table = tables.frame(rows, _SCHEMA)
    assert [str(t) for t in table.dtypes] == ["float64", "Int64", "boolean", "string"]
    back = tables.records(table)
    assert back == rows
    for got, want in zip(back, rows, strict=True):
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
        if want["x"] is not None:
            assert math.copysign(1, got["x"]) == math.copysign(1, want["x"])  # -0.0 kept


def test_missing_keys_and_non_finite_floats_are_null():
    table = tables.frame([{"x": float("nan")}, {}], _SCHEMA)
    assert tables.records(table) == [dict.fromkeys(_SCHEMA.names)] * 2


def test_json_document_has_no_nan():
    text = io.StringIO()
    tables.write_json({"a": [float("inf"), np.float64(0.5), _Kind.WEDGE, pd.NA]}, text)
    assert json.loads(text.getvalue()) == {"a": [None, 0.5, "wedge", None]}


def test_record_keys_come_from_the_schema():
    assert RECORD_KEYS == tables.MEASURE_RECORD.names
    assert COMPARE_RECORD_KEYS == tables.COMPARE_RECORD.names
    assert SPEC_COMPARE_RECORD_KEYS == COMPARE_RECORD_KEYS[: len(SPEC_COMPARE_RECORD_KEYS)]
    names = tables.BATCH_MEASUREMENTS.names
    assert len(set(names)) == len(names)
    assert len(set(tables.BATCH_COMPARISONS.names)) == len(tables.BATCH_COMPARISONS.names)


@pytest.mark.parametrize(
    ("name", "schema", "unit", "header"),
    [
        pytest.param("anterior_height", tables.MEASURE_RECORD, "mm", "Ha (mm)", id="length"),
        pytest.param("anterior_height", tables.MEASURE_RECORD, "px", "Ha (px)", id="pixels"),
        pytest.param("wedge_angle_deg", tables.MEASURE_RECORD, "mm", "Wedge (deg)", id="deg"),
        pytest.param("max_loss_pct", tables.MEASURE_RECORD, "mm", "Max loss (%)", id="pct"),
        pytest.param("wedge_ratio", tables.MEASURE_RECORD, "mm", "Ha/Hp", id="ratio"),
        pytest.param(
            "restoration_pct_of_lost", tables.COMPARE_RECORD, "px", "Restored (% of lost)", id="of"
        ),
        pytest.param("delta", tables.COMPARE_RECORD, "px", "Change post \u2212 pre (px)", id="d"),
    ],
)
def test_headers(name, schema, unit, header):
    assert schema[name].header(unit) == header


def test_unknown_column():
    with pytest.raises(KeyError):
        tables.MEASURE_RECORD["height"]


def test_parquet_keeps_the_dtypes(tmp_path):
    table = tables.frame([{"x": 1.5, "n": 2, "ok": True, "name": "a"}, {}], _SCHEMA)
    with open(tmp_path / "t.parquet", "wb") as handle:
        tables.write_parquet(table, handle)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), table)
