"""Working with a DICOM archive (PACS) over DICOMweb: search, pull films, push results.

Built on ``dicomweb-client``: QIDO-RS to search, WADO-RS to retrieve, STOW-RS
to store.  :class:`Archive` is one server (its DICOMweb root URL, e.g.
``http://pacs:8042/dicom-web`` for Orthanc) with optional HTTP basic or
bearer-token authentication and a timeout per request (connecting, and
between two pieces of a reply).

- :meth:`Archive.search` lists studies with their films (CR, DX and other
  projection radiographs) and vheight's results (SR documents), the current
  one of each film and reader marked (:func:`vheight.sr.newest_results`).
- :meth:`Archive.pull` writes a study's films into a folder and, per film,
  the annotation of its current vheight SR per reader as a sidecar
  (``film.vheight.json``; ``film.<reader>.vheight.json`` when several
  readers annotated it).  Films are retrieved one at a time, written to disk
  and let go, in the archive's stored transfer syntax (no transcoding)
  unless one is asked for.  Everything goes to a temporary folder beside
  the destination and is moved there only when all of it arrived.
- :meth:`Archive.push` stores the SR (and optionally the presentation state)
  of an annotation, naming the current SR of the same film and reader as its
  predecessor, so that the archive holds one current result per film and
  reader.

Every fault (server unreachable, login refused, a study that is not there,
a reply that stops or is not DICOM, a film the archive cannot send in the
asked transfer syntax, a store the archive refuses) raises
:class:`~vheight.errors.PacsError` with one line naming the server and what
failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session, create_session_from_user_pass
from pydicom.dataset import Dataset

from vheight.annotation import Annotation, load_annotation, save_annotation
from vheight.errors import PacsError, VHeightError
from vheight.sr import (
    SRFacts,
    annotation_from_sr,
    build_sr,
    newest_results,
    read_film_header,
    reader_name,
    result_series_uid,
    sr_facts,
)

__all__ = [
    "FILM_MODALITIES",
    "Archive",
    "Film",
    "Result",
    "Study",
    "PulledFilm",
    "PushRecord",
    "sidecar_name",
]

#: Modalities of the films vheight measures (projection radiographs).
FILM_MODALITIES = frozenset({"CR", "DX", "RG", "DR", "RF", "XA", "PX"})
_SR_CLASSES = frozenset(
    {
        pydicom.uid.ComprehensiveSRStorage,
        pydicom.uid.EnhancedSRStorage,
        pydicom.uid.BasicTextSRStorage,
        pydicom.uid.Comprehensive3DSRStorage,
    }
)
_GSPS_CLASS = pydicom.uid.GrayscaleSoftcopyPresentationStateStorage


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Film:
    """One film of a study, as the archive lists it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_number: int | None
    instance_number: int | None
    series_description: str
    date: str  # YYYYMMDD: the series date, else the study's
    rows: int | None
    columns: int | None

    def file_name(self) -> str:
        """A file name for the film: modality, series and instance numbers (``DX-001-001.dcm``)."""
        series = "x" if self.series_number is None else f"{self.series_number:03d}"
        instance = "x" if self.instance_number is None else f"{self.instance_number:03d}"
        return f"{self.modality or 'film'}-{series}-{instance}.dcm"


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One vheight SR of a study and whether it is the current one for its film and reader."""

    facts: SRFacts
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "sop_instance_uid": self.facts.sop_instance_uid,
            "series_instance_uid": self.facts.series_instance_uid,
            "film": self.facts.film,
            "reader": self.facts.reader,
            "timepoint": self.facts.timepoint,
            "content_datetime": self.facts.content_datetime,
            "instance_number": self.facts.instance_number,
            "replaces": list(self.facts.predecessors),
            "current": self.current,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Study:
    """A study the archive holds: its patient, date, films and vheight results."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    films: tuple[Film, ...]
    results: tuple[Result, ...]
    presentation_states: int
    other_instances: int

    def current_results(self) -> list[Result]:
        return [r for r in self.results if r.current]

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "study_date": self.study_date,
            "accession_number": self.accession_number,
            "description": self.description,
            "films": [dataclasses.asdict(f) for f in self.films],
            "results": [r.to_dict() for r in self.results],
            "presentation_states": self.presentation_states,
            "other_instances": self.other_instances,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PulledFilm:
    """A film written by :meth:`Archive.pull` and the sidecars written beside it."""

    film: Film
    path: Path
    annotations: tuple[Path, ...]
    readers: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PushRecord:
    """What :meth:`Archive.push` stored for one annotation."""

    annotation: str
    film_sop_instance_uid: str
    reader: str
    sr_sop_instance_uid: str
    replaces: str | None
    gsps_sop_instance_uid: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sidecar_name(film_name: str, reader: str | None, *, several: bool) -> str:
    """``film.vheight.json``, or ``film.<reader>.vheight.json`` when several readers share it."""
    stem = film_name[:-4] if film_name.lower().endswith(".dcm") else film_name
    if not several:
        return f"{stem}.vheight.json"
    slug = re.sub(r"[^\w.-]+", "_", (reader or "unnamed").strip(), flags=re.UNICODE).strip("_")
    return f"{stem}.{slug or 'unnamed'}.vheight.json"


# -- the archive --------------------------------------------------------------------------


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if value else ""
    return str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


class Archive:
    """A DICOMweb server (module docstring).

    Parameters
    ----------
    url
        The DICOMweb root (``http://host:8042/dicom-web`` for Orthanc).
    user, password
        HTTP basic authentication.
    token
        A bearer token (``Authorization: Bearer ...``) instead.
    timeout
        Seconds to wait for a connection, and for each piece of a reply.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        url = (url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise PacsError(f"{url or '(no URL)'}: not an http(s) URL of a DICOMweb server")
        if not timeout > 0:
            raise PacsError(f"{url}: the timeout must be positive, not {timeout}")
        if token and user:
            raise PacsError(f"{url}: give a user and password or a token, not both")
        self.url = url
        self.timeout = float(timeout)
        if user:
            session = create_session_from_user_pass(user, password or "")
        else:
            session = create_session()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = DICOMwebClient(
            url, session=session, headers=headers, timeout=(self.timeout, self.timeout)
        )
        # One attempt: a fault is reported at once, not after minutes of retries.
        self._client.set_http_retry_params(retry=False)

    # -- errors --

    @contextlib.contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        """Turn every failure of ``action`` into one :class:`PacsError` line naming the server."""
        try:
            yield
        except PacsError:
            raise
        except requests.exceptions.HTTPError as exc:
            raise PacsError(self._http_message(exc, action)) from exc
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout) as exc:
            raise PacsError(
                f"{self.url}: no answer within {self.timeout:g} s while {action} "
                "(raise --timeout, or check the server)"
            ) from exc
        except requests.exceptions.ChunkedEncodingError as exc:
            raise PacsError(f"{self.url}: the reply stopped halfway while {action}") from exc
        except requests.exceptions.ConnectionError as exc:
            if "timed out" in str(exc).lower():
                raise PacsError(
                    f"{self.url}: no answer within {self.timeout:g} s while {action} "
                    "(the transfer stopped)"
                ) from exc
            raise PacsError(
                f"{self.url}: cannot connect while {action}: the server is unreachable "
                "(check the URL and that the archive is running)"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{self.url}: request failed while {action}: {exc}") from exc
        except (pydicom.errors.InvalidDicomError, ValueError, KeyError, EOFError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PacsError(
                f"{self.url}: the reply is not DICOM while {action} ({detail[:160]})"
            ) from exc

    def _http_message(self, exc: requests.exceptions.HTTPError, action: str) -> str:
        response = exc.response
        code = None if response is None else response.status_code
        reason = "" if response is None else (response.reason or "")
        if code in (401, 403):
            return (
                f"{self.url}: login refused (HTTP {code}) while {action}; "
                "check --user/--password or --token"
            )
        if code == 404:
            return f"{self.url}: not found (HTTP 404) while {action}"
        if code in (406, 415) or (code in (400, 500) and "retriev" in action):
            return (
                f"{self.url}: the archive cannot send it (HTTP {code} {reason}) while {action}; "
                "it may be unable to transcode the film: pull in its stored transfer syntax"
            )
        return f"{self.url}: HTTP {code} {reason} while {action}"

    # -- search --

    def _json(self, items: list[dict[str, Any]]) -> list[Dataset]:
        return [Dataset.from_json(item) for item in items]

    def find_studies(
        self,
        *,
        patient_id: str | None = None,
        accession: str | None = None,
        study_uid: str | None = None,
    ) -> list[Dataset]:
        """QIDO-RS study records matching the given keys (all studies when none)."""
        filters = {
            key: value
            for key, value in (
                ("PatientID", patient_id),
                ("AccessionNumber", accession),
                ("StudyInstanceUID", study_uid),
            )
            if value
        }
        with self._calling("searching studies"):
            found = self._json(
                self._client.search_for_studies(
                    search_filters=filters,
                    fields=["StudyDescription", "PatientName", "AccessionNumber"],
                )
            )
        if study_uid:
            found = [s for s in found if _text(s, "StudyInstanceUID") == study_uid]
        return found

    def search(
        self,
        *,
        patient_id: str | None = None,
        accession: str | None = None,
        study_uid: str | None = None,
        read_results: bool = True,
    ) -> list[Study]:
        """The studies matching the keys, each with its films and vheight results.

        ``read_results`` retrieves each SR document of the studies (small) to
        learn which film and reader it reports and whether it is current.
        """
        studies = self.find_studies(patient_id=patient_id, accession=accession, study_uid=study_uid)
        return [self._study(record, read_results=read_results) for record in studies]

    def study(self, study_uid: str, *, read_results: bool = True) -> Study:
        """One study by its UID; :class:`PacsError` when the archive does not hold it."""
        found = self.search(study_uid=study_uid, read_results=read_results)
        if not found:
            raise PacsError(f"{self.url}: study {study_uid} not found")
        return found[0]

    def _instances(self, study_uid: str) -> list[tuple[Dataset, Dataset]]:
        """(series record, instance record) of every instance of a study."""
        with self._calling(f"listing study {study_uid}"):
            series = self._json(self._client.search_for_series(study_uid, fields=["SeriesDate"]))
            out = []
            for record in series:
                series_uid = _text(record, "SeriesInstanceUID")
                for instance in self._json(
                    self._client.search_for_instances(
                        study_uid,
                        series_uid,
                        fields=[
                            "Rows",
                            "Columns",
                            "InstanceNumber",
                            "SOPClassUID",
                            "ContentDate",
                        ],
                    )
                ):
                    out.append((record, instance))
        return out

    def _study(self, record: Dataset, *, read_results: bool) -> Study:
        study_uid = _text(record, "StudyInstanceUID")
        films: list[Film] = []
        srs: list[tuple[str, str]] = []
        gsps = other = 0
        for series, instance in self._instances(study_uid):
            modality = _text(series, "Modality") or _text(instance, "Modality")
            sop_class = _text(instance, "SOPClassUID")
            if sop_class in _SR_CLASSES or modality == "SR":
                srs.append((_text(series, "SeriesInstanceUID"), _text(instance, "SOPInstanceUID")))
            elif sop_class == _GSPS_CLASS or modality == "PR":
                gsps += 1
            elif modality in FILM_MODALITIES:
                films.append(
                    Film(
                        study_instance_uid=study_uid,
                        series_instance_uid=_text(series, "SeriesInstanceUID"),
                        sop_instance_uid=_text(instance, "SOPInstanceUID"),
                        sop_class_uid=sop_class,
                        modality=modality,
                        series_number=_int(series, "SeriesNumber"),
                        instance_number=_int(instance, "InstanceNumber"),
                        series_description=_text(series, "SeriesDescription"),
                        # The film's own date: a follow-up may sit in the pre-op study.
                        date=_text(instance, "ContentDate")
                        or _text(series, "SeriesDate")
                        or _text(record, "StudyDate"),
                        rows=_int(instance, "Rows"),
                        columns=_int(instance, "Columns"),
                    )
                )
            else:
                other += 1
        films.sort(key=lambda f: (f.date, f.series_number or 0, f.instance_number or 0))
        results: list[Result] = []
        if read_results and srs:
            facts = [sr_facts(self.retrieve(study_uid, s, i)) for s, i in srs]
            current = {doc.sop_instance_uid for doc in newest_results(facts).values()}
            results = [
                Result(facts=doc, current=doc.sop_instance_uid in current)
                for doc in facts
                if doc.is_vheight
            ]
            results.sort(key=lambda r: (r.facts.film or "", r.facts.content_datetime))
        return Study(
            study_instance_uid=study_uid,
            patient_id=_text(record, "PatientID"),
            patient_name=_text(record, "PatientName"),
            study_date=_text(record, "StudyDate"),
            study_time=_text(record, "StudyTime"),
            accession_number=_text(record, "AccessionNumber"),
            description=_text(record, "StudyDescription"),
            films=tuple(films),
            results=tuple(results),
            presentation_states=gsps,
            other_instances=other,
        )

    # -- retrieve --

    def retrieve(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        transfer_syntax: str = "*",
    ) -> Dataset:
        """One instance (WADO-RS), in ``transfer_syntax`` (``*``: as the archive stores it)."""
        with self._calling(f"retrieving instance {sop_uid}"):
            ds = self._client.retrieve_instance(
                study_uid,
                series_uid,
                sop_uid,
                media_types=(("application/dicom", transfer_syntax),),
            )
            if str(ds.get("SOPInstanceUID", "")) != sop_uid:
                raise ValueError(f"asked for instance {sop_uid}, got {ds.get('SOPInstanceUID')}")
        return ds

    def retrieve_to(
        self, film: Film, path: str | os.PathLike[str], *, transfer_syntax: str = "*"
    ) -> Path:
        """Write one film to ``path`` (a DICOM file); only this film is held in memory."""
        ds = self.retrieve(
            film.study_instance_uid,
            film.series_instance_uid,
            film.sop_instance_uid,
            transfer_syntax=transfer_syntax,
        )
        path = Path(path)
        ds.save_as(path, enforce_file_format=True)
        return path

    def current_results(self, study: Study) -> dict[tuple[str, str], Dataset]:
        """The current vheight SR documents of a study per ``(film, reader)``, retrieved."""
        out = {}
        for result in study.current_results():
            key = (result.facts.film or "", result.facts.reader or "")
            out[key] = self.retrieve(
                study.study_instance_uid,
                result.facts.series_instance_uid,
                result.facts.sop_instance_uid,
            )
        return out

    def pull(
        self,
        study_uid: str,
        outdir: str | os.PathLike[str],
        *,
        transfer_syntax: str = "*",
    ) -> list[PulledFilm]:
        """Write a study's films and their current vheight annotations into ``outdir``.

        All files go to a temporary folder beside ``outdir`` first; only when
        every film and annotation arrived are they moved into ``outdir``
        (created, or added to).  On any failure nothing is left in
        ``outdir`` and :class:`PacsError` says what failed.
        """
        outdir = Path(outdir)
        if outdir.exists() and not outdir.is_dir():
            raise PacsError(f"{outdir}: exists and is not a folder")
        study = self.study(study_uid)
        if not study.films:
            raise PacsError(f"{self.url}: study {study_uid} holds no film (CR/DX) to measure")
        results = self.current_results(study)
        parent = outdir.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=parent))
        try:
            pulled = self._pull_into(temp, study, results, transfer_syntax)
            final = _move_into(temp, outdir)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return [
            dataclasses.replace(
                p,
                path=final / p.path.name,
                annotations=tuple(final / a.name for a in p.annotations),
            )
            for p in pulled
        ]

    def _pull_into(
        self,
        folder: Path,
        study: Study,
        results: dict[tuple[str, str], Dataset],
        transfer_syntax: str,
    ) -> list[PulledFilm]:
        names: set[str] = set()
        pulled = []
        for film in study.films:
            name = film.file_name()
            if name in names:
                name = f"{film.sop_instance_uid}.dcm"
            names.add(name)
            path = self.retrieve_to(film, folder / name, transfer_syntax=transfer_syntax)
            readers = sorted(r for f, r in results if f == film.sop_instance_uid)
            sidecars = []
            for reader in readers:
                sr = results[(film.sop_instance_uid, reader)]
                try:
                    annotation = annotation_from_sr(sr, image_file=name)
                except VHeightError as exc:
                    raise PacsError(
                        f"{self.url}: SR {sr.SOPInstanceUID} of film {film.sop_instance_uid} "
                        f"cannot be read: {exc}"
                    ) from exc
                sidecar = folder / sidecar_name(name, reader, several=len(readers) > 1)
                save_annotation(annotation, sidecar)
                sidecars.append(sidecar)
            pulled.append(
                PulledFilm(
                    film=film, path=path, annotations=tuple(sidecars), readers=tuple(readers)
                )
            )
        return pulled

    # -- store --

    def store(self, datasets: Sequence[Dataset], *, what: str) -> None:
        """STOW-RS ``datasets`` (one study); :class:`PacsError` when any is refused."""
        if not datasets:
            return
        study_uid = str(datasets[0].StudyInstanceUID)
        with self._calling(f"storing {what}"):
            reply = self._client.store_instances(list(datasets), study_instance_uid=study_uid)
        failed = [] if reply is None else list(reply.get("FailedSOPSequence", []) or [])
        if failed:
            reasons = ", ".join(
                f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason')})"
                for item in failed
            )
            raise PacsError(f"{self.url}: the archive refused {what}: {reasons}")

    def _versions(
        self, study_uid: str, film_uid: str, reader: str
    ) -> tuple[Dataset | None, Dataset | None]:
        """The current SR and the latest presentation state of a film and reader in the archive."""
        study = self.study(study_uid)
        current = None
        for result in study.current_results():
            if result.facts.film == film_uid and (result.facts.reader or "") == reader:
                current = self.retrieve(
                    study_uid, result.facts.series_instance_uid, result.facts.sop_instance_uid
                )
        gsps_series = result_series_uid(film_uid, reader, "gsps")
        latest = None
        with self._calling(f"listing the presentation states of study {study_uid}"):
            try:
                found = self._json(
                    self._client.search_for_instances(
                        study_uid, gsps_series, fields=["InstanceNumber"]
                    )
                )
            except requests.exceptions.HTTPError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
                found = []
        for record in found:
            if latest is None or (_int(record, "InstanceNumber") or 0) > (
                _int(latest, "InstanceNumber") or 0
            ):
                latest = record
        if latest is not None and "SeriesInstanceUID" not in latest:
            latest.SeriesInstanceUID = gsps_series
        return current, latest

    def push(
        self,
        annotation_path: str | os.PathLike[str],
        *,
        image: str | os.PathLike[str] | None = None,
        gsps: bool = False,
        reference: str = "adjacent",
        annotation: Annotation | None = None,
    ) -> PushRecord:
        """Store the SR (and with ``gsps`` the presentation state) of one annotation.

        The film is ``image`` or the annotation's ``image.file``; the
        archive's current SR of the same film and reader becomes the new
        one's predecessor.  ``annotation`` (already loaded) skips reading
        ``annotation_path``, which then only names it in messages.
        """
        from vheight.gsps import build_gsps

        annotation_path = Path(annotation_path)
        if annotation is None:
            annotation = load_annotation(annotation_path)
        if image is not None:
            film_source: Any = Path(image)
        elif annotation.image.file:
            film_source = annotation_path.parent / annotation.image.file
        else:
            raise PacsError(
                f"{annotation_path}: image.file is not set: pass the DICOM film with --image"
            )
        return self.push_annotation(
            annotation,
            film_source,
            name=str(annotation_path),
            gsps=gsps,
            reference=reference,
            _build_gsps=build_gsps,
        )

    def push_annotation(
        self,
        annotation: Annotation,
        film: Any,
        *,
        name: str,
        gsps: bool = False,
        reference: str = "adjacent",
        _build_gsps: Any = None,
    ) -> PushRecord:
        """:meth:`push` of an annotation object and its film (path, bytes or header)."""
        if _build_gsps is None:
            from vheight.gsps import build_gsps as _build_gsps
        header = read_film_header(film)
        study_uid = str(header.StudyInstanceUID)
        film_uid = str(header.SOPInstanceUID)
        reader = reader_name(annotation.annotator)
        previous, previous_gsps = self._versions(study_uid, film_uid, reader)
        sr = build_sr(annotation, film, reference=reference, predecessor=previous)
        datasets = [sr]
        pr = None
        if gsps:
            pr = _build_gsps(annotation, film, reference=reference, replaces=previous_gsps)
            datasets.append(pr)
        # Part 10 encoding, as a file would be; the archive receives the bytes written.
        encoded = []
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            encoded.append(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
        self.store(encoded, what=f"the results of {name}")
        return PushRecord(
            annotation=name,
            film_sop_instance_uid=film_uid,
            reader=reader,
            sr_sop_instance_uid=str(sr.SOPInstanceUID),
            replaces=None if previous is None else str(previous.SOPInstanceUID),
            gsps_sop_instance_uid=None if pr is None else str(pr.SOPInstanceUID),
        )


def _move_into(temp: Path, outdir: Path) -> Path:
    """Move everything in ``temp`` into ``outdir`` (renamed when it does not exist yet)."""
    if not outdir.exists():
        temp.rename(outdir)
        return outdir
    for item in sorted(temp.iterdir()):
        os.replace(item, outdir / item.name)
    return outdir
