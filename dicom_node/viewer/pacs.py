"""The local viewer's archive: Orthanc (Debian package) with its DICOMweb plugin, on loopback.

Orthanc is started with a configuration of its own (in ``workdir``): HTTP and DICOM on
127.0.0.1 ports of its own, no remote access, and the keys of ``deploy/viewer/orthanc-dicomweb.json``
(the DICOMweb plugin and its root ``/dicom-web/``). Files are stored through Orthanc's REST API.
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ORTHANC = "/usr/sbin/Orthanc"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalOrthanc:
    """An Orthanc (Debian package) on loopback with a configuration of its own, driven over REST.

    The viewer's archive (:class:`ViewerPacs`) and the tests' PACS (tests/orthanc.py) are both
    one of these. ``config`` is Orthanc's whole configuration; it is written to
    ``workdir/orthanc.json``, the log to ``workdir/orthanc.log``.
    """

    def __init__(self, workdir: Path, config: dict):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = int(config["HttpPort"])
        self.dicom_port = int(config["DicomPort"])
        self.config_path = self.workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = self.workdir / "orthanc.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LocalOrthanc":
        """Start Orthanc and wait until its REST API answers (RuntimeError with its log if not)."""
        if not Path(ORTHANC).exists():
            raise FileNotFoundError(f"{ORTHANC} is not installed (Debian: apt-get install orthanc)")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_path.read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"Orthanc did not start ({self.log_path}):\n{tail}") from None
                time.sleep(0.2)

    def _request(self, method: str, path: str, data: bytes | None = None, timeout: float = 120):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, data: bytes | dict | list | str):
        """POST ``data`` (bytes as they are; str encoded; anything else as JSON)."""
        if not isinstance(data, bytes):
            data = data.encode() if isinstance(data, str) else json.dumps(data).encode()
        return self._request("POST", path, data)

    def store(self, path: Path) -> str:
        """Store one DICOM file; its Orthanc instance ID."""
        return self.post("/instances", Path(path).read_bytes())["ID"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)  # the SQLite index stays locked until it exits
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ViewerPacs(LocalOrthanc):
    """Orthanc with DICOMweb for the viewer.

    Parameters
    ----------
    workdir : Path
        Folder for Orthanc's configuration, database and log (created).
    dicomweb_config : Path
        JSON with the DICOMweb keys (deploy/viewer/orthanc-dicomweb.json); keys starting with
        ``//`` are comments.
    """

    def __init__(self, workdir: Path, dicomweb_config: Path, http_port: int = 0, dicom_port: int = 0):
        workdir = Path(workdir)
        recipe = {k: v for k, v in json.loads(Path(dicomweb_config).read_text()).items() if not k.startswith("//")}
        super().__init__(workdir, {
            "Name": "CALCNODE-VIEWER",
            "StorageDirectory": str(workdir / "db"),
            "IndexDirectory": str(workdir / "db"),
            "HttpPort": http_port or free_port(),
            "DicomPort": dicom_port or free_port(),
            "DicomAet": "CALCVIEWER",
            "RemoteAccessAllowed": False,  # loopback only
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            **recipe,
        })

    def start(self) -> "ViewerPacs":
        super().start()
        plugins = self.get("/plugins")
        if "dicom-web" not in plugins:
            self.stop()
            raise RuntimeError(f"Orthanc runs without its DICOMweb plugin (loaded: {plugins}); "
                               "Debian: apt-get install orthanc-dicomweb")
        return self
