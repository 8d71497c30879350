"""The annotation model and its v1 JSON file."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import annotation_like_dicts, json_documents, json_values

from vheight.annotation import (
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
from vheight.calibration import Calibration, SpacingLabel
from vheight.errors import AnnotationError

L1 = {
    "superior_anterior": [812.5, 1020.0],
    "superior_middle": [900.1, 1012.2],
    "superior_posterior": [990.0, 1005.4],
    "inferior_anterior": [815.0, 1190.3],
    "inferior_middle": [903.2, 1201.0],
    "inferior_posterior": [992.8, 1209.9],
}


def document(**changes):
    doc = {
        "format": "vheight.annotation",
        "version": 1,
        "image": {"file": "pre.dcm", "sop_instance_uid": "1.2.3", "rows": 2400, "columns": 1800},
        "timepoint": "pre",
        "calibration": None,
        "vertebrae": {"L1": dict(L1)},
        "treated_levels": ["L1"],
        "patient_position": None,
        "annotator": "",
        "created": "2026-11-22T10:00:00Z",
        "modified": "2026-11-22T10:05:00Z",
        "notes": "",
    }
    doc.update(changes)
    return doc


def test_constants():
    assert LEVELS == (*(f"T{i}" for i in range(1, 13)), *(f"L{i}" for i in range(1, 6)))
    assert tuple(Level) == LEVELS and Level.L1 == "L1" and str(Level.T12) == "T12"
    assert POINT_NAMES == (
        "superior_anterior",
        "superior_middle",
        "superior_posterior",
        "inferior_anterior",
        "inferior_middle",
        "inferior_posterior",
    )
    assert tuple(PointName) == POINT_NAMES
    assert TIMEPOINTS == ("pre", "post", "followup")


def test_load_example_of_the_spec(tmp_path):
    path = tmp_path / "pre.vheight.json"
    path.write_text(json.dumps(document()), encoding="utf-8")
    a = load_annotation(path)
    assert a.image == ImageRef(file="pre.dcm", sop_instance_uid="1.2.3", rows=2400, columns=1800)
    assert a.timepoint == "pre" and a.calibration is None and a.treated_levels == ("L1",)
    assert a.vertebrae["L1"]["inferior_posterior"] == (992.8, 1209.9)
    assert a.is_complete("L1") and not a.is_complete("L2")
    assert a.next_missing_point("L1") is None
    assert a.next_missing_point("L2") == "superior_anterior"
    assert a.created == "2026-11-22T10:00:00Z" and a.modified == "2026-11-22T10:05:00Z"


def test_round_trip_preserves_unknown_keys_and_does_not_mutate(tmp_path):
    doc = document(
        future_key={"nested": [1, 2, {"x": None}]},
        calibration={
            "row_spacing_mm": 0.15,
            "col_spacing_mm": 0.12,
            "source": "User",
            "description": "25.4 mm marker",
        },
    )
    doc["image"]["detector"] = {"model": "X"}
    a = loads_annotation(json.dumps(doc), source="a.json")
    assert a.calibration == Calibration.user(
        row_spacing_mm=0.15, col_spacing_mm=0.12, description="25.4 mm marker"
    )
    assert a.calibration.label is SpacingLabel.USER
    before = dumps_annotation(a)
    path = save_annotation(a, tmp_path / "a.vheight.json")
    assert dumps_annotation(a) == before
    again = load_annotation(path)
    assert again == a
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["future_key"] == {"nested": [1, 2, {"x": None}]}
    assert data["image"]["detector"] == {"model": "X"}
    assert data == {**doc, "calibration": doc["calibration"]}
    assert not [p for p in os.listdir(tmp_path) if p != "a.vheight.json"], "temp file left"
    _assert_constructor_gives_the_same(a)
    _assert_constructor_gives_the_same(_loaded_in_reverse_order(doc))


def _loaded_in_reverse_order(doc: dict) -> Annotation:
    """``doc`` loaded with its levels and points written in reverse order."""
    shuffled = {
        **doc,
        "vertebrae": {
            level: dict(reversed(list(points.items())))
            for level, points in reversed(list(doc["vertebrae"].items()))
        },
    }
    loaded = loads_annotation(json.dumps(shuffled), source="r.json")
    assert list(loaded.vertebrae) == [lv for lv in LEVELS if lv in doc["vertebrae"]]
    for level, points in loaded.vertebrae.items():
        assert list(points) == [n for n in POINT_NAMES if n in doc["vertebrae"][level]]
    return loaded


def test_save_is_atomic_and_keeps_mode(tmp_path, monkeypatch):
    a = loads_annotation(json.dumps(document()))
    path = tmp_path / "x.vheight.json"
    path.write_text("old", encoding="utf-8")
    os.chmod(path, 0o640)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(AnnotationError, match=r"x\.vheight\.json.*No space left"):
        save_annotation(a, path)
    assert path.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["x.vheight.json"]
    monkeypatch.undo()
    save_annotation(a, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_annotation(path) == a


def test_save_does_not_set_modified(tmp_path):
    a = loads_annotation(json.dumps(document(modified=None)))
    save_annotation(a, tmp_path / "m.json")
    assert load_annotation(tmp_path / "m.json").modified is None
    b = dataclasses.replace(a, modified="2026-11-22T11:00:00Z")
    save_annotation(b, tmp_path / "m.json")
    assert load_annotation(tmp_path / "m.json").modified == "2026-11-22T11:00:00Z"
    assert a.modified is None


@pytest.mark.parametrize(
    ("film", "expected"),
    [
        pytest.param("a/film.dcm", "a/film.vheight.json", id="dcm"),
        pytest.param("film.png", "film.vheight.json", id="png"),
        pytest.param("x/film", "x/film.vheight.json", id="no-suffix"),
        pytest.param("a.b.dcm", "a.b.vheight.json", id="dotted"),
    ],
)
def test_sidecar_path(film, expected):
    assert sidecar_path(film).as_posix() == expected


def test_edits_return_new_objects():
    a = Annotation()
    b = a.with_point("L2", "superior_anterior", (10, 20))
    assert a.vertebrae == {} and b.vertebrae == {"L2": {"superior_anterior": (10.0, 20.0)}}
    for name in POINT_NAMES[1:]:
        b = b.with_point(Level.L2, PointName(name), (10, 40))
    assert b.is_complete("L2") and list(b.vertebrae["L2"]) == list(POINT_NAMES)
    c = b.with_point("T12", "inferior_middle", (1, 1))
    assert c.levels == ("T12", "L2")
    assert c.without_point("L2", "superior_middle").next_missing_point("L2") == "superior_middle"
    assert c.without_level("T12").levels == ("L2",)
    assert c.without_point("T12", "inferior_middle").levels == ("L2",)
    d = c.with_treated("L2", True).with_treated("T12", True)
    assert d.treated_levels == ("T12", "L2") and d.is_treated("L2")
    assert d.with_treated("T12", False).treated_levels == ("L2",)
    with pytest.raises(TypeError):
        d.vertebrae["L2"]["superior_anterior"] = (0, 0)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.timepoint = "pre"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(d)) == d
    with pytest.raises(AnnotationError, match="unknown level 'T13'"):
        a.with_point("T13", "superior_anterior", (1, 1))
    with pytest.raises(AnnotationError, match=r"L1\.superior_anterior: expected \[x, y\]"):
        a.with_point("L1", "superior_anterior", (1, float("nan")))


def test_with_point_checks_image_bounds():
    a = Annotation(image=ImageRef(rows=100, columns=200))
    assert a.with_point("L1", "superior_anterior", (-20, 109)).levels == ("L1",)
    with pytest.raises(AnnotationError, match="outside"):
        a.with_point("L1", "superior_anterior", (-20.5, 50))
    with pytest.raises(AnnotationError, match="outside"):
        a.with_point("L1", "superior_anterior", (5, 109.5))


BAD = [
    pytest.param(b"\xff\xfe{", r"not UTF-8", id="not-utf8"),
    pytest.param("{", r"not JSON: Expecting property name", id="truncated"),
    pytest.param("", r"not JSON", id="empty"),
    pytest.param("[1, 2]", r"expected a JSON object at the top level, found \[1, 2\]", id="array"),
    pytest.param('{"a": 1, "a": 2}', r"key 'a' appears twice", id="duplicate-key"),
    pytest.param(
        json.dumps(document(future=[1.0, float("nan")])),
        r"future\[1\]: nan is not a valid JSON number",
        id="nan-in-unknown-key",
    ),
    pytest.param(
        json.dumps(document(vertebrae={"L1": {**L1, "inferior_middle": [float("nan"), 2]}})),
        r"vertebrae\.L1\.inferior_middle: expected \[x, y\], two finite numbers, found \[NaN, 2\]",
        id="nan-point",
    ),
    pytest.param(
        document(format="other"),
        r"format: expected 'vheight.annotation', found \"other\"",
        id="format",
    ),
    pytest.param(
        {k: v for k, v in document().items() if k != "format"},
        r"format: expected 'vheight.annotation', found nothing",
        id="format-missing",
    ),
    pytest.param(
        document(version=2),
        r"version: expected 1, found 2: written by a newer vheight",
        id="version-newer",
    ),
    pytest.param(document(version="1"), r"version: expected 1, found \"1\"", id="version-string"),
    pytest.param(
        document(vertebrae={"T13": dict(L1)}),
        r"vertebrae\.T13: unknown level 'T13', expected T1\.\.T12 or L1\.\.L5",
        id="level",
    ),
    pytest.param(
        document(vertebrae={"L1": {**L1, "tip": [1, 2]}}),
        r"vertebrae\.L1\.tip: unknown point name 'tip'",
        id="point-name",
    ),
    pytest.param(
        document(vertebrae={"L1": {**L1, "superior_anterior": [1, 2, 3]}}),
        r"vertebrae\.L1\.superior_anterior: expected \[x, y\], two finite numbers, "
        r"found \[1, 2, 3\]",
        id="three-numbers",
    ),
    pytest.param(
        document(vertebrae={"L1": {**L1, "superior_anterior": ["1", 2]}}),
        r"L1\.superior_anterior: expected \[x, y\]",
        id="string-number",
    ),
    pytest.param(
        document(vertebrae={"L1": {**L1, "superior_anterior": [True, 2]}}),
        r"L1\.superior_anterior: expected \[x, y\]",
        id="bool-number",
    ),
    pytest.param(
        json.dumps(document(vertebrae={"L1": {**L1, "superior_anterior": [7e300, 2]}})).replace(
            "7e+300", "1e400"
        ),
        r"L1\.superior_anterior: expected \[x, y\]",
        id="infinite",
    ),
    pytest.param(
        document(vertebrae={"L1": {**L1, "superior_anterior": [2000, 2]}}),
        r"L1\.superior_anterior: point lies more than 10% of the image size outside "
        r"the 1800 x 2400 px image \(x = 2000 outside \[-180, 1979\]\)",
        id="outside",
    ),
    pytest.param(
        document(vertebrae={"L1": [1, 2]}),
        r"vertebrae\.L1: expected an object of point name",
        id="level-not-object",
    ),
    pytest.param(
        document(vertebrae=[]), r"vertebrae: expected an object of levels", id="vertebrae"
    ),
    pytest.param(
        document(timepoint="later"),
        r"timepoint: expected one of pre, post, followup or null, found \"later\"",
        id="timepoint",
    ),
    pytest.param(
        document(patient_position="upside-down"),
        r"patient_position: expected one of standing, sitting, supine, prone, decubitus",
        id="position",
    ),
    pytest.param(
        document(treated_levels="L1"), r"treated_levels: expected a list", id="treated-str"
    ),
    pytest.param(
        document(treated_levels=["L1", "L1"]),
        r"treated_levels: level L1 listed twice",
        id="treated-twice",
    ),
    pytest.param(
        document(treated_levels=["X1"]),
        r"treated_levels: unknown level \"X1\"",
        id="treated-unknown",
    ),
    pytest.param(
        document(calibration={"row_spacing_mm": 0, "col_spacing_mm": 0.1}),
        r"calibration: row_spacing_mm must be a finite number > 0, found 0",
        id="cal-zero",
    ),
    pytest.param(
        document(calibration={"row_spacing_mm": 0.1}),
        r"calibration: calibration needs 'row_spacing_mm' and 'col_spacing_mm'",
        id="cal-missing",
    ),
    pytest.param(
        document(calibration=0.1), r"calibration: expected null or an object", id="cal-num"
    ),
    pytest.param(
        document(image={"rows": -3}), r"image\.rows: expected a whole number > 0", id="image-rows"
    ),
    pytest.param(document(image=[]), r"image: expected an object or null", id="image-array"),
    pytest.param(document(annotator=3), r"annotator: expected a string, found 3", id="annotator"),
]


@pytest.mark.parametrize(("content", "pattern"), BAD)
def test_bad_files_raise_one_clear_error(tmp_path, content, pattern):
    path = tmp_path / "bad.vheight.json"
    if isinstance(content, dict):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=pattern) as info:
        load_annotation(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_every_bad_landmark_listed_at_once():
    doc = document(
        vertebrae={
            "L1": {**L1, "superior_anterior": [None, 2], "inferior_middle": [1]},
            "L2": {"superior_middle": "here"},
            "S1": {},
        },
        timepoint="now",
    )
    with pytest.raises(AnnotationError) as info:
        Annotation.from_dict(doc, source="pat7/pre.vheight.json")
    message = str(info.value)
    assert message.startswith("pat7/pre.vheight.json: 5 problems: ")
    for part in (
        "timepoint: expected one of",
        "vertebrae.L1.superior_anterior: expected [x, y], two finite numbers, found [null, 2]",
        "vertebrae.L1.inferior_middle: expected [x, y], two finite numbers, found [1]",
        'vertebrae.L2.superior_middle: expected [x, y], two finite numbers, found "here"',
        "vertebrae.S1: unknown level 'S1'",
    ):
        assert part in message
    assert len(info.value.problems) == 5


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.json: 1 problem: cannot read"):
        load_annotation(tmp_path / "nope.json")


def test_incomplete_and_empty_levels_are_valid():
    doc = document(vertebrae={"L2": {"superior_anterior": [1, 2]}, "L1": dict(L1), "T12": {}})
    a = Annotation.from_dict(doc)
    assert a.levels == ("L1", "L2")
    assert a.complete_levels == ("L1",)
    assert not a.is_complete("L2") and a.next_missing_point("L2") == "superior_middle"


def test_bom_and_float_size_are_accepted():
    doc = document()
    doc["image"]["rows"] = 2400.0
    a = loads_annotation(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    assert a.image.rows == 2400 and isinstance(a.image.rows, int)


def test_dumps_is_readable():
    text = dumps_annotation(loads_annotation(json.dumps(document())))
    assert '"superior_anterior": [812.5, 1020.0],' in text
    assert text.endswith("}\n")


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(json_documents)
def test_any_json_value_gives_annotation_or_annotation_error(data):
    try:
        a = Annotation.from_dict(data, source="g.json")
    except AnnotationError as exc:
        assert str(exc).startswith("g.json: ")
    else:
        assert loads_annotation(dumps_annotation(a)) == a
        _assert_constructor_gives_the_same(a)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(annotation_like_dicts)
def test_near_miss_documents_never_crash(data):
    try:
        text = json.dumps(data)
    except ValueError:
        return
    try:
        a = loads_annotation(text, source="n.json")
    except AnnotationError:
        return
    assert loads_annotation(dumps_annotation(a)) == a
    _assert_constructor_gives_the_same(a)


def _assert_constructor_gives_the_same(a: Annotation) -> None:
    """A loaded annotation, built without its checks, is what its constructor makes."""
    for loaded in (a, a.image):
        rebuilt = dataclasses.replace(loaded)  # through __init__ and __post_init__
        assert rebuilt == loaded and hash(rebuilt) == hash(loaded)
        for field in dataclasses.fields(loaded):
            assert type(getattr(rebuilt, field.name)) is type(getattr(loaded, field.name))


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_never_crash(raw):
    try:
        loads_annotation(raw, source="r.json")
    except AnnotationError as exc:
        assert str(exc).startswith("r.json: ")


@given(json_values)
def test_json_values_as_text_never_crash(value):
    try:
        loads_annotation(json.dumps(value), source="t.json")
    except AnnotationError:
        pass


def test_deep_nesting_is_an_annotation_error():
    with pytest.raises(AnnotationError, match="deep.json"):
        loads_annotation("[" * 100000 + "]" * 100000, source="deep.json")


def _through_init(a: Annotation) -> Annotation:
    """The same fields passed through ``__init__`` (and so ``__post_init__``'s checks)."""
    return Annotation(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)})


def _field_types(a: Annotation) -> list[tuple[str, type]]:
    return [(f.name, type(getattr(a, f.name))) for f in dataclasses.fields(a)]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(annotation_like_dicts)
def test_from_dict_builds_what_init_builds(data):
    """from_dict validates once and builds the object directly: it must be the very
    object the checked constructor gives (same values, same read-only types)."""
    try:
        a = Annotation.from_dict(data, source="d.json")
    except AnnotationError:
        return
    b = _through_init(a)
    assert a == b and hash(a) == hash(b)
    assert _field_types(a) == _field_types(b)
    assert [type(points) for points in a.vertebrae.values()] == [
        type(points) for points in b.vertebrae.values()
    ]
    assert a.to_dict() == b.to_dict()
    assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(document(), id="plain"),
        pytest.param(document(extra_key={"nested": [1, 2.5, None]}, notes="n"), id="extra-keys"),
        pytest.param(
            document(calibration={"row_spacing_mm": 0.15, "col_spacing_mm": 0.15}), id="calibrated"
        ),
        pytest.param(document(timepoint=None, treated_levels=None, notes=None), id="nulls"),
    ],
)
def test_from_dict_builds_what_init_builds_examples(doc):
    a = Annotation.from_dict(doc)
    b = _through_init(a)
    assert a == b and _field_types(a) == _field_types(b) and a.to_dict() == b.to_dict()
