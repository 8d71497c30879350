"""``vheight.pacs`` and ``vheight pacs`` against a real Orthanc (DICOMweb + GDCM plugins).

The archive is Debian's Orthanc run by the fixtures of :mod:`_orthanc` on
127.0.0.1.  Faults a healthy Orthanc never shows (a reply that stops
halfway, a body that is not DICOM) come from a small HTTP relay in front of
the same Orthanc that passes every request through and spoils only the
film transfers.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from _orthanc import Orthanc, free_port, require_orthanc

from vheight.annotation import load_annotation, save_annotation
from vheight.calibration import Calibration
from vheight.cli import main
from vheight.errors import PacsError
from vheight.morphometry import measure
from vheight.pacs import Archive, sidecar_name

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
PATIENT_ID = "VHPHANTOM002026"


def _sample_study_uid() -> str:
    return str(pydicom.dcmread(SAMPLES / "pre.dcm", stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        for name in ("pre", "post", "followup"):
            server.upload(SAMPLES / f"{name}.dcm")
        yield server
    finally:
        server.stop()


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, server: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vheight pacs: error: {server}"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def _nothing_left(outdir: Path) -> None:
    assert not outdir.exists()
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(f".{outdir.name}.")]


# -- search, pull, push: the round trip ------------------------------------------------------


def test_search_lists_the_sample_study_with_its_three_films(orthanc, capsys):
    code, out, err = run(
        ["pacs", "search", orthanc.dicomweb, "--patient-id", PATIENT_ID, "--format", "json"],
        capsys,
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["server"] == orthanc.dicomweb
    (study,) = document["studies"]
    assert study["study_instance_uid"] == _sample_study_uid()
    assert study["patient_id"] == PATIENT_ID
    assert study["study_date"] == "20260105"
    films = {f["series_description"]: f for f in study["films"]}
    assert len(films) == 3
    for name in ("pre", "post", "followup"):
        header = pydicom.dcmread(SAMPLES / f"{name}.dcm", stop_before_pixels=True)
        (film,) = [f for f in study["films"] if f["sop_instance_uid"] == header.SOPInstanceUID]
        assert (film["modality"], film["rows"], film["columns"]) == ("DX", 2000, 1500)
        # Each film's own date (the follow-up sits in the pre-op study, 3 months on).
        assert film["date"] == header.ContentDate
    assert [f["date"] for f in study["films"]] == ["20260105", "20260107", "20260407"]
    code, out, _err = run(["pacs", "search", orthanc.dicomweb, "--patient-id", "nobody"], capsys)
    assert code == 0 and out == ""


def test_round_trip_pull_measure_edit_push_pull(orthanc, tmp_path, capsys):
    study_uid = _sample_study_uid()
    first = tmp_path / "first"
    code, out, err = run(
        ["pacs", "pull", orthanc.dicomweb, "--study", study_uid, str(first), "--format", "json"],
        capsys,
    )
    assert code == 0, err
    pulled = json.loads(out)["films"]
    assert len(pulled) == 3
    by_uid = {}
    for item in pulled:
        path = Path(item["film"])
        assert path.parent == first
        by_uid[item["sop_instance_uid"]] = path
    # The films arrive byte for byte as stored (no transcoding).
    for name in ("pre", "post", "followup"):
        original = pydicom.dcmread(SAMPLES / f"{name}.dcm")
        path = by_uid[str(original.SOPInstanceUID)]
        back = pydicom.dcmread(path)
        assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert back.PixelData == original.PixelData

    # Measure each pulled film (the sample landmarks), then edit one point of the pre film.
    sidecars = {}
    for name in ("pre", "post"):
        annotation = load_annotation(SAMPLES / f"{name}.vheight.json")
        film = by_uid[annotation.image.sop_instance_uid]
        annotation = replace(
            annotation, image=replace(annotation.image, file=film.name), annotator="Dr Lee"
        )
        sidecar = first / sidecar_name(film.name, None, several=False)
        save_annotation(annotation, sidecar)
        code, out, err = run(["measure", str(sidecar), "--format", "json"], capsys)
        assert code == 0, err
        assert json.loads(out)["unit"] == "mm"
        sidecars[name] = sidecar
    push = ["pacs", "push", orthanc.dicomweb, *map(str, sidecars.values()), "--gsps"]
    code, out, err = run([*push, "--format", "json"], capsys)
    assert code == 0, err
    stored = json.loads(out)["stored"]
    assert [s["replaces"] for s in stored] == [None, None]
    assert all(s["gsps_sop_instance_uid"] for s in stored)

    pre = load_annotation(sidecars["pre"])
    level = next(iter(pre.vertebrae))
    x, y = pre.vertebrae[level]["superior_anterior"]
    edited = pre.with_point(level, "superior_anterior", (x + 3.125, y - 2.0625))
    save_annotation(edited, sidecars["pre"])
    code, out, err = run(
        ["pacs", "push", orthanc.dicomweb, str(sidecars["pre"]), "--gsps", "--format", "json"],
        capsys,
    )
    assert code == 0, err
    (again,) = json.loads(out)["stored"]
    assert again["replaces"] == stored[0]["sr_sop_instance_uid"]

    # One current SR per film and reader; the replaced one is still there, not current.
    code, out, err = run(
        ["pacs", "search", orthanc.dicomweb, "--study", study_uid, "--format", "json"], capsys
    )
    assert code == 0, err
    (study,) = json.loads(out)["studies"]
    current = [r for r in study["results"] if r["current"]]
    assert sorted(r["film"] for r in current) == sorted(
        [pre.image.sop_instance_uid, load_annotation(sidecars["post"]).image.sop_instance_uid]
    )
    assert {r["reader"] for r in current} == {"Dr Lee"}
    assert len(study["results"]) == 3
    (old,) = [r for r in study["results"] if not r["current"]]
    assert old["sop_instance_uid"] == stored[0]["sr_sop_instance_uid"]
    (new,) = [r for r in current if r["film"] == pre.image.sop_instance_uid]
    assert new["replaces"] == [old["sop_instance_uid"]]
    assert new["series_instance_uid"] == old["series_instance_uid"]
    assert study["presentation_states"] == 3

    # Pull again: the edited landmarks, exactly.
    second = tmp_path / "second"
    code, out, err = run(
        ["pacs", "pull", orthanc.dicomweb, "--study", study_uid, str(second)], capsys
    )
    assert code == 0, err
    back = load_annotation(second / sidecars["pre"].name)
    assert back.vertebrae == edited.vertebrae
    assert back.annotator == "Dr Lee"
    assert back.image.file == by_uid[pre.image.sop_instance_uid].name
    assert load_annotation(second / sidecars["post"].name).vertebrae == (
        load_annotation(sidecars["post"]).vertebrae
    )
    assert not (second / "DX-003-001.vheight.json").exists()  # follow-up not measured

    # The current SR as highdicom reads it holds the heights vheight measures.
    (sr_item,) = [
        i for i in orthanc.instances() if i["SOPInstanceUID"] == again["sr_sop_instance_uid"]
    ]
    archive = Archive(orthanc.dicomweb)
    ds = archive.retrieve(study_uid, sr_item["SeriesInstanceUID"], again["sr_sop_instance_uid"])
    sr = hd.sr.ComprehensiveSR.from_dataset(ds)
    groups = hd.sr.MeasurementReport.from_sequence(sr.content).get_image_measurement_groups()
    film_header = pydicom.dcmread(second / back.image.file, stop_before_pixels=True)
    calibration, _ = Calibration.from_dataset(film_header)
    records = {r["level"]: r for r in measure(edited, calibration).records()}
    modifiers = {"255549009": "anterior", "C25569": "middle", "255551008": "posterior"}
    checked = 0
    for group in groups[1:]:
        for m in group.get_measurements(name=hd.sr.CodedConcept("121207", "DCM", "Height")):
            height = modifiers[m.finding_sites[0].topographical_modifier.value]
            expected = records[group.tracking_identifier][f"{height}_height"]
            assert float(m.value) == pytest.approx(expected, rel=1e-9)
            checked += 1
    assert checked == 3 * sum(1 for r in records.values() if r["complete"])


def test_two_readers_give_two_current_results_and_two_sidecars(orthanc, tmp_path, capsys):
    study_uid = _sample_study_uid()
    folder = tmp_path / "films"
    archive = Archive(orthanc.dicomweb)
    archive.pull(study_uid, folder)
    followup = load_annotation(SAMPLES / "followup.vheight.json")
    header = pydicom.dcmread(SAMPLES / "followup.dcm", stop_before_pixels=True)
    (film,) = [
        p
        for p in folder.glob("*.dcm")
        if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == header.SOPInstanceUID
    ]  # noqa: E501
    for reader in ("Reader One", "Łukasz Żółć 李"):
        annotation = replace(
            followup, image=replace(followup.image, file=film.name), annotator=reader
        )
        path = tmp_path / f"{reader[:3]}.vheight.json"
        save_annotation(annotation, path)
        record = archive.push(path, image=film)
        assert record.replaces is None and record.reader == reader
    study = archive.study(study_uid)
    readers = sorted(
        r.facts.reader for r in study.current_results() if r.facts.film == header.SOPInstanceUID
    )
    assert readers == ["Reader One", "Łukasz Żółć 李"]
    out = tmp_path / "again"
    pulled = {p.film.sop_instance_uid: p for p in archive.pull(study_uid, out)}
    sidecars = pulled[str(header.SOPInstanceUID)].annotations
    assert sorted(p.name for p in sidecars) == sorted(
        [
            sidecar_name(film.name, "Reader One", several=True),
            sidecar_name(film.name, "Łukasz Żółć 李", several=True),
        ]
    )
    assert {load_annotation(p).annotator for p in sidecars} == {"Reader One", "Łukasz Żółć 李"}


def test_pull_into_an_existing_folder_adds_the_files(orthanc, tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    pulled = Archive(orthanc.dicomweb).pull(_sample_study_uid(), folder)
    assert (folder / "keep.txt").read_text() == "mine"
    assert all(p.path.parent == folder and p.path.is_file() for p in pulled)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing.")]


# -- faults: one line naming the server, exit 1, nothing in OUTDIR ----------------------------


def test_unreachable_server(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    outdir = tmp_path / "out"
    code, _out, err = run(["pacs", "pull", url, "--study", "1.2.3", str(outdir)], capsys)
    assert code == 1
    _one_line_error(err, url, "cannot connect", "unreachable")
    _nothing_left(outdir)
    code, _out, err = run(["pacs", "search", url, "--patient-id", "x"], capsys)
    assert code == 1
    _one_line_error(err, url, "cannot connect")


def test_study_that_does_not_exist(orthanc, tmp_path, capsys):
    outdir = tmp_path / "out"
    code, _out, err = run(
        ["pacs", "pull", orthanc.dicomweb, "--study", "1.2.826.0.1.99", str(outdir)], capsys
    )
    assert code == 1
    _one_line_error(err, orthanc.dicomweb, "study 1.2.826.0.1.99 not found")
    _nothing_left(outdir)
    code, _out, err = run(["pacs", "search", orthanc.dicomweb, "--study", "1.2.826.0.1.99"], capsys)
    assert code == 1
    _one_line_error(err, orthanc.dicomweb, "not found")


def test_a_url_that_is_no_dicomweb_root(orthanc, capsys):
    url = f"{orthanc.url}/no-such-root"
    code, _out, err = run(["pacs", "search", url, "--patient-id", PATIENT_ID], capsys)
    assert code == 1
    _one_line_error(err, url, "HTTP 404")


@pytest.mark.parametrize("argv", [["search", "ftp://x"], ["search", "pacs.example"]])
def test_bad_url_is_one_line(argv, capsys):
    code, _out, err = run(["pacs", *argv], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "not an http(s) URL" in err


def test_push_of_a_missing_annotation_names_it(orthanc, tmp_path, capsys):
    missing = tmp_path / "nothing.vheight.json"
    code, _out, err = run(["pacs", "push", orthanc.dicomweb, str(missing)], capsys)
    assert code == 1
    assert str(missing) in err and len(err.strip().splitlines()) == 1


class _Relay(BaseHTTPRequestHandler):
    """Passes requests to Orthanc; spoils film retrievals as ``server.mode`` says."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _is_film_retrieval(self) -> bool:
        path = self.path.split("?")[0]
        return "/instances/" in path and not path.endswith(("/metadata", "/instances/"))

    def do_GET(self):
        target = f"{self.server.upstream}{self.path}"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        request = urllib.request.Request(target, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                status, reply_headers, body = reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as exc:
            status, reply_headers, body = exc.code, dict(exc.headers), exc.read()
        spoil = self._is_film_retrieval() and status == 200
        if spoil and self.server.mode == "html":
            body = b"<html><body>Maintenance: please come back later</body></html>"
            reply_headers = {"Content-Type": "text/html"}
        self.send_response(status)
        for key, value in reply_headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if spoil and self.server.mode == "stall":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(self.server.stall_s)
            return
        self.wfile.write(body)


@pytest.fixture
def relay(orthanc):
    def start(mode: str, stall_s: float = 8.0) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
        server.daemon_threads = True
        server.upstream = orthanc.dicomweb
        server.mode = mode
        server.stall_s = stall_s
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    servers: list[ThreadingHTTPServer] = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_server_that_stops_sending_mid_transfer(relay, tmp_path, capsys):
    url = relay("stall")
    outdir = tmp_path / "out"
    started = time.monotonic()
    code, _out, err = run(
        ["pacs", "pull", url, "--study", _sample_study_uid(), str(outdir), "--timeout", "2"],
        capsys,
    )
    assert code == 1
    assert time.monotonic() - started < 60
    _one_line_error(err, url, "no answer within 2 s")
    _nothing_left(outdir)


def test_a_reply_that_is_not_dicom(relay, tmp_path, capsys):
    url = relay("html")
    outdir = tmp_path / "out"
    code, _out, err = run(
        ["pacs", "pull", url, "--study", _sample_study_uid(), str(outdir)], capsys
    )
    assert code == 1
    _one_line_error(err, url, "not DICOM", "retrieving instance")
    _nothing_left(outdir)


def test_a_film_the_archive_cannot_transcode(tmp_path, capsys):
    """Orthanc 1.10 without its GDCM plugin cannot decode the JPEG 2000 sample films."""
    require_orthanc(gdcm=False)
    server = Orthanc(tmp_path / "plain", gdcm=False)
    try:
        server.upload(SAMPLES / "pre.dcm")
        outdir = tmp_path / "out"
        code, _out, err = run(
            [
                "pacs", "pull", server.dicomweb, "--study", _sample_study_uid(), str(outdir),
                "--transfer-syntax", pydicom.uid.ExplicitVRLittleEndian,
            ],
            capsys,
        )  # fmt: skip
        assert code == 1
        _one_line_error(err, server.dicomweb, "retrieving instance")
        _nothing_left(outdir)
        # As stored, it comes through.
        code, _out, err = run(
            ["pacs", "pull", server.dicomweb, "--study", _sample_study_uid(), str(outdir)], capsys
        )
        assert code == 0, err
    finally:
        server.stop()


# -- authentication ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("locked"), users={"radiology": "s3cret-pw"})
    try:
        server.upload(SAMPLES / "pre.dcm")
        yield server
    finally:
        server.stop()


def test_wrong_password_is_refused_in_one_line(locked, tmp_path, capsys):
    outdir = tmp_path / "out"
    for argv in (
        ["search", locked.dicomweb, "--user", "radiology", "--password", "wrong"],
        ["search", locked.dicomweb],
        ["pull", locked.dicomweb, "--user", "radiology", "--password", "wrong",
         "--study", _sample_study_uid(), str(outdir)],
        ["search", locked.dicomweb, "--token", "not-a-valid-token"],
    ):  # fmt: skip
        code, _out, err = run(["pacs", *argv], capsys)
        assert code == 1, argv
        _one_line_error(err, locked.dicomweb, "login refused (HTTP 401)")
    _nothing_left(outdir)


def test_right_password_works_from_options_and_environment(locked, tmp_path, capsys, monkeypatch):
    code, out, err = run(
        ["pacs", "search", locked.dicomweb, "--user", "radiology", "--password", "s3cret-pw",
         "--format", "json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["studies"][0]["study_instance_uid"] == _sample_study_uid()
    monkeypatch.setenv("VHEIGHT_PACS_USER", "radiology")
    monkeypatch.setenv("VHEIGHT_PACS_PASSWORD", "s3cret-pw")
    outdir = tmp_path / "out"
    code, _out, err = run(
        ["pacs", "pull", locked.dicomweb, "--study", _sample_study_uid(), str(outdir)], capsys
    )
    assert code == 0, err
    assert len(list(outdir.glob("*.dcm"))) == 1


def test_archive_rejects_bad_options():
    with pytest.raises(PacsError, match="not both"):
        Archive("http://127.0.0.1:1/dicom-web", user="a", token="t")
    with pytest.raises(PacsError, match="timeout must be positive"):
        Archive("http://127.0.0.1:1/dicom-web", timeout=0)


def test_pull_does_not_hold_the_study_in_memory(orthanc, tmp_path):
    """Films are retrieved, written and let go one by one: the peak of pulling the study
    is that of retrieving one film (plus reading the small SR documents), not three films'."""
    import tracemalloc

    archive = Archive(orthanc.dicomweb)
    study = archive.study(_sample_study_uid(), read_results=False)
    assert len(study.films) == 3
    sizes = [(SAMPLES / f"{n}.dcm").stat().st_size for n in ("pre", "post", "followup")]
    tracemalloc.start()
    try:
        archive.retrieve_to(study.films[0], tmp_path / "one.dcm")
        _current, one_film = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        archive.pull(study.study_instance_uid, tmp_path / "mem")
        _current, whole_study = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole_study < one_film + 2 * max(sizes) + 8 * 2**20, (whole_study, one_film, sizes)
    assert len(list((tmp_path / "mem").glob("*.dcm"))) == 3


def test_search_by_accession_and_the_patients_prior_in_another_study(orthanc, tmp_path):
    """A follow-up study with an accession number: found by it, and by patient with the first."""
    ds = pydicom.dcmread(SAMPLES / "followup.dcm")
    ds.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["vheight test", "later study"])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["vheight test", "later series"])
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["vheight test", "later film"])
    ds.StudyDate = ds.SeriesDate = "20260301"
    ds.AccessionNumber = "ACC-0301"
    path = tmp_path / "later.dcm"
    ds.save_as(path)
    orthanc.upload(path)
    archive = Archive(orthanc.dicomweb)
    (study,) = archive.search(accession="ACC-0301")
    assert study.study_instance_uid == ds.StudyInstanceUID
    assert (study.accession_number, study.study_date) == ("ACC-0301", "20260301")
    assert [f.sop_instance_uid for f in study.films] == [ds.SOPInstanceUID]
    both = archive.search(patient_id=PATIENT_ID)
    assert {s.study_date for s in both} == {"20260105", "20260301"}
