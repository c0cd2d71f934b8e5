"""``calcnode viewer``: look at a study and calcnode's results in a web viewer, on this machine.

Starts the local viewer of deploy/viewer/ (:class:`dicom_node.viewer.LocalViewer`: Orthanc with
its DICOMweb plugin, and the OHIF viewer fetched by ``make ohif``), all on 127.0.0.1, stores the
DICOM files given (a study export and the objects ``calcnode analyze --out`` or the node wrote),
prints the OHIF address of each study (and opens it with ``--open`` when a browser is found),
and serves until Ctrl-C. Orthanc's database lives in a temporary folder unless ``--state-dir``.
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
import webbrowser
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "viewer", help="show studies and their results in OHIF (Orthanc + DICOMweb + OHIF on loopback)",
        description="Start Orthanc with DICOMweb and the OHIF web viewer on 127.0.0.1, store the given DICOM "
                    "files and folders, print the viewer's address of each study and serve until Ctrl-C. "
                    "Needs Debian's orthanc and orthanc-dicomweb, and OHIF (make ohif).")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="DICOM files and folders (searched recursively)")
    parser.add_argument("--port", type=int, default=8080, help="the viewer's HTTP port on 127.0.0.1 (default 8080)")
    parser.add_argument("--ohif-dist", type=Path, help="OHIF's dist/ folder (default: .cache/ohif/dist, make ohif)")
    parser.add_argument("--state-dir", type=Path, help="folder for Orthanc's database (default: temporary)")
    parser.add_argument("--open", action="store_true", help="open the first study in a web browser")
    parser.set_defaults(func=run)


def serve(paths, *, port: int = 8080, ohif_dist: Path | None = None, state_dir: Path | None = None,
          open_browser: bool = False, say=print) -> int:
    """Run the local viewer with ``paths`` stored until Ctrl-C; the exit code."""
    from ..viewer import LocalViewer

    def stop(signum, frame):  # a service manager's SIGTERM ends it like Ctrl-C: Orthanc is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="calcnode-viewer-") as scratch:
        try:
            viewer = LocalViewer(state_dir or Path(scratch) / "orthanc", ohif_dist=ohif_dist, port=port).start()
        except (FileNotFoundError, RuntimeError, OSError) as exc:
            print(f"calcnode viewer: error: {exc}", file=sys.stderr)
            return 1
        try:
            studies = viewer.store(paths) if paths else []
            say(f"OHIF viewer: {viewer.url}/ (Orthanc DICOMweb: {viewer.url}/dicom-web)")
            for uid in studies:
                say(f"study: {viewer.study_url(uid)}")
            if open_browser:
                target = viewer.study_url(studies[0]) if studies else viewer.url
                if not webbrowser.open(target):
                    say("no web browser found here: open the address above")
            say("serving until Ctrl-C")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            viewer.stop()


def run(args) -> int:
    return serve(args.paths, port=args.port, ohif_dist=args.ohif_dist, state_dir=args.state_dir,
                 open_browser=args.open)
