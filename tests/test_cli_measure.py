"""``vheight measure`` and ``vheight compare`` on hand-written annotation files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from vheight.cli import main
from vheight.comparison import COMPARE_RECORD_KEYS
from vheight.morphometry import RECORD_KEYS

DATA = Path(__file__).parent / "data" / "annotations"
PRE, POST, FOLLOWUP = (f"patient7_{t}.vheight.json" for t in ("pre", "post", "followup"))


@pytest.fixture
def data_cwd(monkeypatch):
    monkeypatch.chdir(DATA)
    return DATA


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_same(found, expected, where="$"):
    """Field-by-field comparison: same keys, same strings/bools/None, floats to 1e-9 relative."""
    if isinstance(expected, dict):
        assert isinstance(found, dict), where
        assert list(found) == list(expected), f"{where}: keys differ"
        for key in expected:
            assert_same(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for i, (f, e) in enumerate(zip(found, expected, strict=True)):
            assert_same(f, e, f"{where}[{i}]")
    elif isinstance(expected, float) or (isinstance(expected, int) and isinstance(found, float)):
        assert found == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert found == expected and type(found) is type(expected), where


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(PRE, "patient7_pre.measure.expected.json", id="pre"),
        pytest.param(FOLLOWUP, "patient7_followup.measure.expected.json", id="followup-incomplete"),
    ],
)
def test_measure_json_matches_hand_computed(data_cwd, capsys, annotation, expected):
    code, out, err = run(capsys, "measure", annotation, "--format", "json")
    assert code == 0 and err == ""
    document = json.loads(out)
    assert_same(document, json.loads((DATA / expected).read_text(encoding="utf-8")))
    for record in document["vertebrae"]:
        assert list(record) == list(RECORD_KEYS)


def test_compare_json_matches_hand_computed(data_cwd, capsys):
    code, out, err = run(capsys, "compare", PRE, POST, FOLLOWUP, "--format", "json")
    assert code == 0 and err == ""
    document = json.loads(out)
    expected = json.loads((DATA / "patient7.compare.expected.json").read_text(encoding="utf-8"))
    assert_same(document, expected)
    for record in document["levels"]:
        assert list(record) == list(COMPARE_RECORD_KEYS)


def test_compare_two_films(data_cwd, capsys):
    code, out, _ = run(capsys, "compare", PRE, POST, "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["followup"] is None
    l1 = [r for r in document["levels"] if r["level"] == "L1"]
    assert [r["followup"] for r in l1] == [None, None, None]
    assert [r["loss_since_post_pct"] for r in l1] == [None, None, None]
    assert l1[0]["restoration_pct_of_lost"] == pytest.approx(500 / 11, rel=1e-9)


def test_measure_csv_and_reference_option(data_cwd, capsys):
    code, out, _ = run(capsys, "measure", PRE, "--format", "csv", "--reference", "posterior")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(RECORD_KEYS)
    l1 = rows[1]
    assert l1["level"] == "L1" and l1["reference_method"] == "posterior"
    assert float(l1["anterior_loss_pct"]) == pytest.approx(100 * (1 - 18 / 29), rel=1e-9)
    assert l1["posterior_loss_pct"] == "" and l1["treated"] == "true"


def test_compare_csv(data_cwd, capsys):
    code, out, _ = run(capsys, "compare", PRE, POST, "--format", "csv", "--reference", "max")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 9 and list(rows[0]) == list(COMPARE_RECORD_KEYS)
    assert {r["reference_method"] for r in rows} == {"max"}


def test_table_output_and_warnings_on_stderr(data_cwd, capsys):
    code, out, err = run(capsys, "measure", FOLLOWUP)
    assert code == 0
    assert out.splitlines()[0].startswith(f"{FOLLOWUP}: 4 vertebra(e); lengths in mm")
    assert "L1" in out and "wedge" in out
    assert "vheight measure: warning: T11: incomplete (3 of 6 points" in err
    code, out, err = run(capsys, "compare", PRE, POST, FOLLOWUP)
    assert code == 0
    assert "% of lost" in out and "wedge change" in out
    assert "vheight compare: warning: patient position differs: pre standing, post supine" in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["measure"], id="measure-no-annotation"),
        pytest.param(["measure", PRE, "--reference", "nearest"], id="bad-reference"),
        pytest.param(["measure", PRE, "--format", "xml"], id="bad-format"),
        pytest.param(["compare", PRE], id="compare-one-file"),
        pytest.param(["compare", PRE, POST, FOLLOWUP, PRE], id="compare-four-files"),
        pytest.param(["measure", PRE, "--unknown"], id="unknown-option"),
    ],
)
def test_bad_usage_exits_2(data_cwd, capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["measure", "compare"])
def test_malformed_annotation_exits_1_with_one_line(tmp_path, capsys, command):
    bad = tmp_path / "broken.vheight.json"
    doc = json.loads((DATA / PRE).read_text(encoding="utf-8"))
    doc["vertebrae"]["L1"]["superior_anterior"] = [812.5]
    doc["vertebrae"]["L9"] = {}
    bad.write_text(json.dumps(doc), encoding="utf-8")
    argv = ["measure", str(bad)] if command == "measure" else ["compare", str(DATA / PRE), str(bad)]
    code, out, err = run(capsys, *argv, "--format", "json")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"vheight {command}: error: {bad}: 2 problems: ")
    assert "vertebrae.L1.superior_anterior: expected [x, y]" in lines[0]
    assert "vertebrae.L9: unknown level 'L9'" in lines[0]


def test_not_json_and_missing_files_exit_1(tmp_path, capsys):
    junk = tmp_path / "junk.vheight.json"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n")
    code, out, err = run(capsys, "measure", str(junk))
    assert code == 1 and out == ""
    assert err.startswith(f"vheight measure: error: {junk}: 1 problem: not UTF-8")
    code, _, err = run(capsys, "measure", str(tmp_path / "absent.json"))
    assert code == 1 and "absent.json: 1 problem: cannot read" in err
    code, _, err = run(capsys, "measure", str(DATA / PRE), "--image", str(tmp_path / "no.dcm"))
    assert code == 1 and "no.dcm: film not found" in err


def test_uncalibrated_annotation_with_missing_film_is_measured_in_px(tmp_path, capsys):
    doc = json.loads((DATA / PRE).read_text(encoding="utf-8"))
    doc["calibration"] = None
    path = tmp_path / "nocal.vheight.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    code, out, err = run(capsys, "measure", str(path), "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["unit"] == "px" and document["spacing_label"] == "px"
    assert document["vertebrae"][1]["anterior_height"] == pytest.approx(180.0, rel=1e-12)
    assert document["vertebrae"][1]["wedge_ratio"] == pytest.approx(18 / 29, rel=1e-9)
    assert any("'pre.dcm' named by the annotation was not found" in w for w in document["warnings"])
    assert any(w.startswith("uncalibrated: lengths are in pixels") for w in document["warnings"])


def test_mixed_calibration_compare_reports_px(tmp_path, capsys):
    for name in (PRE, POST):
        shutil.copy(DATA / name, tmp_path / name)
    doc = json.loads((tmp_path / POST).read_text(encoding="utf-8"))
    doc["calibration"] = None
    (tmp_path / POST).write_text(json.dumps(doc), encoding="utf-8")
    code, out, _ = run(
        capsys, "compare", str(tmp_path / PRE), str(tmp_path / POST), "--format", "json"
    )
    assert code == 0
    document = json.loads(out)
    assert {r["unit"] for r in document["levels"]} == {"px"}
    l1a = document["levels"][3]
    assert (l1a["level"], l1a["height"]) == ("L1", "anterior")
    assert l1a["pre"] == pytest.approx(180.0) and l1a["delta"] == pytest.approx(50.0)
    assert l1a["restoration_pct_of_initial"] == pytest.approx(100 * 5 / 18, rel=1e-9)
    assert document["warnings"][0].startswith(
        "one film is uncalibrated (pre mm User from User, post uncalibrated (px)): lengths and "
        "deltas are compared in pixels (px), not mm"
    )


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "measure" in out and "compare" in out
