"""A real Orthanc (Debian package) as the PACS in tests, on loopback ports of its own.

The launcher is the viewer's (:class:`dicom_node.viewer.pacs.LocalOrthanc`); this adds the tests'
configuration (routing peers as ``modalities``, StableAge 1 s unless ``extra_config`` says otherwise).
"""
from __future__ import annotations

from pathlib import Path

from dicom_node.viewer.pacs import ORTHANC, LocalOrthanc

__all__ = ["ORTHANC", "Orthanc"]


class Orthanc(LocalOrthanc):
    def __init__(self, workdir: Path, http_port: int, dicom_port: int, modalities: dict,
                 aet: str = "TESTPACS", extra_config: dict | None = None):
        workdir = Path(workdir)
        self.aet = aet
        super().__init__(workdir, {
            "Name": aet,
            "StorageDirectory": str(workdir / "db"),
            "IndexDirectory": str(workdir / "db"),
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
        })
        self.start()

    def upload(self, path: Path) -> str:
        """Store a file in Orthanc; returns its Orthanc instance ID."""
        return self.store(path)
