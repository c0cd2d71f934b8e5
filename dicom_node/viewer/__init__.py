"""The local viewer (deploy/viewer/): Orthanc with DICOMweb and the OHIF web viewer, on loopback.

:class:`LocalViewer` starts both (:mod:`.pacs`, :mod:`.server`), stores DICOM files (a study and
calcnode's results for it) and gives the OHIF address of a study. ``calcnode viewer`` and
``calcnode demo --viewer`` use it; so does the viewer test (tests/test_viewer_ohif.py).

The recipe's files are in the repository's ``deploy/viewer/``; OHIF's built distribution is
fetched by ``make ohif`` into ``.cache/ohif/dist`` (both found from this package's place in a
clone, or given explicitly).
"""
from __future__ import annotations

from pathlib import Path

from ..batch.inputs import folder_files
from .pacs import ViewerPacs
from .server import ViewerServer

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "deploy" / "viewer"
DEFAULT_OHIF_DIST = REPO / ".cache" / "ohif" / "dist"


def dicom_files(paths) -> list[Path]:
    """The files named, and those inside the folders named (recursively, hidden ones left out)."""
    found: list[Path] = []
    for given in map(Path, paths):
        found += folder_files(given) if given.is_dir() else [given]
    return found


class LocalViewer:
    """Orthanc (DICOMweb) and OHIF on loopback, until :meth:`stop` (or the ``with`` block ends).

    Parameters
    ----------
    workdir : Path
        Folder for Orthanc's database, configuration and log.
    ohif_dist : Path, optional
        OHIF's ``dist/`` folder (default: ``.cache/ohif/dist`` of the clone, made by ``make ohif``).
    port : int
        The viewer's HTTP port on 127.0.0.1 (0: a free one).
    """

    def __init__(self, workdir: Path, ohif_dist: Path | None = None, port: int = 0):
        self.ohif_dist = Path(ohif_dist or DEFAULT_OHIF_DIST)
        if not (self.ohif_dist / "index.html").is_file():
            raise FileNotFoundError(f"no OHIF build in {self.ohif_dist}: `make ohif` fetches it")
        self.pacs = ViewerPacs(Path(workdir), RECIPE / "orthanc-dicomweb.json")
        self.port = port
        self.server: ViewerServer | None = None

    def start(self) -> "LocalViewer":
        self.pacs.start()
        try:
            self.server = ViewerServer(self.ohif_dist, RECIPE / "app-config.js", self.pacs.http_port,
                                       port=self.port).start()
        except BaseException:
            self.pacs.stop()
            raise
        return self

    def store(self, paths) -> list[str]:
        """Store the DICOM files in ``paths`` (files or folders) in Orthanc; the Study Instance
        UIDs they belong to, in the order first seen. A file Orthanc refuses raises."""
        studies: dict[str, None] = {}
        for path in dicom_files(paths):
            instance = self.pacs.store(path)
            studies[self.pacs.get(f"/instances/{instance}/simplified-tags")["StudyInstanceUID"]] = None
        return list(studies)

    def study_url(self, study_instance_uid: str) -> str:
        assert self.server is not None, "start() first"
        return self.server.study_url(study_instance_uid)

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.pacs.stop()

    def __enter__(self) -> "LocalViewer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
