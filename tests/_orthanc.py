"""A real Orthanc archive for the PACS tests, run as the test's own process.

Debian's ``Orthanc`` binary with its DICOMweb and GDCM plugins, a JSON
configuration in a temporary folder, its own storage and index, and free
HTTP and DICOM ports on 127.0.0.1 (``RemoteAccessAllowed`` false: only this
machine may talk to it).  Without Orthanc the tests are skipped with the
packages to install, except under ``CI`` where they fail.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGINS = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGINS / "libOrthancDicomWeb.so"
GDCM_PLUGIN = PLUGINS / "libOrthancGdcm.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_orthanc(*, gdcm: bool = True) -> None:
    """Skip (or fail under ``CI``) when Orthanc or one of its plugins is missing."""
    needed = [ORTHANC, DICOMWEB_PLUGIN] + ([GDCM_PLUGIN] if gdcm else [])
    missing = [str(p) for p in needed if not p.exists()]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} missing: install Debian's orthanc, orthanc-dicomweb and "
        "orthanc-gdcm to run the PACS tests"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Orthanc:
    """A running Orthanc with its DICOMweb root at :attr:`dicomweb`.

    Parameters
    ----------
    folder
        Where its configuration, storage, index and log go.
    users
        ``{user: password}``: enables HTTP authentication when given.
    gdcm
        Load the GDCM plugin (transcoding of JPEG 2000 films).
    """

    def __init__(
        self, folder: Path, *, users: dict[str, str] | None = None, gdcm: bool = True
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.users = dict(users or {})
        plugins = [str(DICOMWEB_PLUGIN)] + ([str(GDCM_PLUGIN)] if gdcm else [])
        config = {
            "Name": "vheight-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "VHTEST",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpTimeout": 60,
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = folder / "orthanc.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(ORTHANC), str(self.config)],
            cwd=folder,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _auth_header(self) -> dict[str, str]:
        if not self.users:
            return {}
        user, password = next(iter(self.users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def rest(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Orthanc's own REST API (JSON reply), as the archive's administrator."""
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method, headers=self._auth_header()
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            data = reply.read()
        return json.loads(data) if data else None

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one DICOM file through the REST API."""
        return self.rest("POST", "/instances", Path(path).read_bytes())

    def instances(self) -> list[dict[str, Any]]:
        """Every stored instance with its main DICOM tags."""
        return [
            self.rest("GET", f"/instances/{i}/simplified-tags")
            for i in self.rest("GET", "/instances")
        ]

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                raise RuntimeError(f"Orthanc exited: {self.log.read_text(errors='replace')}")
            try:
                self.rest("GET", "/system")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if not self._log_file.closed:
            self._log_file.close()


SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


@contextlib.contextmanager
def sample_archive(folder: Path, reader: str) -> Iterator[Orthanc]:
    """An Orthanc in ``folder`` holding the sample study (three films) and
    ``reader``'s results of its pre and post films, stopped on leaving."""
    from vheight.annotation import load_annotation, save_annotation
    from vheight.pacs import Archive

    require_orthanc()
    server = Orthanc(folder / "orthanc")
    try:
        for name in ("pre", "post", "followup"):
            server.upload(SAMPLES / f"{name}.dcm")
        client = Archive(server.dicomweb)
        for name in ("pre", "post"):
            annotation = load_annotation(SAMPLES / f"{name}.vheight.json")
            path = folder / f"{name}.vheight.json"
            save_annotation(dataclasses.replace(annotation, annotator=reader), path)
            client.push(path, image=SAMPLES / f"{name}.dcm")
        yield server
    finally:
        server.stop()
