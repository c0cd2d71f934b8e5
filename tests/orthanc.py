"""A real Orthanc (Debian package) as the PACS in tests, on loopback ports of its own."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ORTHANC = "/usr/sbin/Orthanc"


class Orthanc:
    def __init__(self, workdir: Path, http_port: int, dicom_port: int, modalities: dict,
                 aet: str = "TESTPACS", extra_config: dict | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port, self.aet = http_port, dicom_port, aet
        config = {
            "Name": aet,
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": modalities,
            "DicomScuTimeout": 30,
            "Plugins": [],
            "StableAge": 1,
            **(extra_config or {}),
        }
        self.config_path = self.workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log = open(self.workdir / "orthanc.log", "wb")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Orthanc did not start:\n"
                                       + (self.workdir / "orthanc.log").read_text(errors="replace"))
                time.sleep(0.2)

    def _request(self, method: str, path: str, data: bytes | None = None, timeout: float = 120):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, data: bytes | dict | list | str):
        if not isinstance(data, bytes):
            data = json.dumps(data).encode() if not isinstance(data, str) else data.encode()
        return self._request("POST", path, data)

    def upload(self, path: Path) -> str:
        """Store a file in Orthanc; returns its Orthanc instance ID."""
        return self.post("/instances", Path(path).read_bytes())["ID"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)  # the SQLite index stays locked until it exits
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
