"""``calcnode demo``: the whole node on one machine, on a simulated study.

Simulates one case (``calcnode synth``: 4 mammograms and the GSPS ROIs of its clusters),
starts a complete node (listener, assembly, a worker, sender) with a throw-away state folder
and a local Storage SCP as its destination, sends the study to the node by C-STORE, waits for
the results to come back, and prints what came back, with the score of every ROI. Nothing
listens beyond loopback, nothing is left running. Everything stays under ``--out``.

Use it to check an installation (models present, DICOM stack working) before connecting a
PACS. With ``--viewer`` the study and the results are then shown in the local OHIF viewer
(``calcnode viewer``), which serves until Ctrl-C. **Synthetic data; the demonstration model is
not for clinical use.**
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from .. import scu_reactor
from ..config import Destination, load_config
from ..logs import setup_logging
from ..state import StateDB

# pydicom, pynetdicom, highdicom, the simulator and the node are imported where they are used, so
# that `calcnode --help` (which imports every command module) stays fast.


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole node on one simulated study and show the results",
        description="Simulate one mammography study, send it through a complete local node "
                    "(analysis with the configured models) and show the DICOM results that come back. "
                    "Synthetic data; not for clinical use.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the study, the node's state "
                                                                "and the received results (created)")
    parser.add_argument("--size", default="768x640", metavar="ROWSxCOLS",
                        help="image size (default 768x640: about a minute on 2 cores; 3328x2560 is full size)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    parser.add_argument("--config", metavar="FILE",
                        help="take [analysis] settings (models, engine) from this configuration")
    parser.add_argument("--engine", default=None, help=argparse_suppress())  # analysis.engine, for tests
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for results (default 1800)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--viewer", "--open", action="store_true", dest="viewer",
                        help="then show the study and its results in the local OHIF viewer (deploy/viewer/: "
                             "Orthanc + DICOMweb + OHIF on 127.0.0.1), open it in a browser if one is found, "
                             "and serve until Ctrl-C")
    parser.add_argument("--viewer-port", type=int, default=8080, help="the viewer's port (default 8080)")
    parser.set_defaults(func=run)


def argparse_suppress():
    return argparse.SUPPRESS


class _Receiver:
    """A Storage SCP (pynetdicom) on loopback that writes what it receives to a folder."""

    def __init__(self, folder: Path):
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.received: list[Path] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="DEMORECV")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, ev) -> int:
        ds = ev.dataset
        ds.file_meta = ev.file_meta
        path = self.folder / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self.received.append(path)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _send(files: list[Path], port: int, ae_title: str) -> int:
    import pydicom
    from pynetdicom import AE

    scu_reactor.install()  # see dicom_node.scu_reactor: no answer lost to pynetdicom's own thread
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="DEMOSCU")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        raise RuntimeError("the demo node refused the association")
    ok = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            ok += bool(status) and status.Status == 0
    finally:
        assoc.release()
    return ok


def _roi_lines(sr_path: Path) -> list[dict]:
    import highdicom as hd

    sr = hd.sr.srread(sr_path)
    rows = []
    for group in sr.content.get_planar_roi_measurement_groups():
        evaluations = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        measurements = {m.name.meaning: m.value for m in group.get_measurements()}
        rows.append({"roi": group.tracking_identifier, "evaluations": evaluations,
                     "measurements": {k: float(v) for k, v in measurements.items()}})
    return rows


def _say(text: str) -> None:
    print(f"calcnode demo: {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    import pydicom

    from training.synth.config import SynthConfig
    from training.synth.dataset import generate_dataset

    from ..service import Node

    try:
        rows, cols = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"calcnode demo: error: --size {args.size!r} is not ROWSxCOLS", file=sys.stderr)
        return 2
    out = args.out.absolute()
    if out.exists() and any(out.iterdir()):
        print(f"calcnode demo: error: {out} is not empty; give a new folder", file=sys.stderr)
        return 2
    from ..viewer.pacs import free_port

    base = load_config(args.config)
    config = replace(
        base,
        node=replace(base.node, host="127.0.0.1", port=free_port(), ae_title="CALCNODE", state_dir=out / "state",
                     allowed_calling_ae_titles=()),
        logging=replace(base.logging, format="text", level="WARNING"),
        assembly=replace(base.assembly, stable_seconds=1.0),
        workers=replace(base.workers, count=1),
        analysis=replace(base.analysis, engine=args.engine if args.engine is not None else base.analysis.engine),
        http=replace(base.http, enabled=False),
        audit=replace(base.audit, path="audit.log"),
        storage=replace(base.storage, min_free_mb=0, retention_days=0.0),
        tls=replace(base.tls, enabled=False),
        destinations=(),
    )
    setup_logging("text", "WARNING")
    logging.getLogger("calcnode").setLevel("ERROR")  # the demo narrates; errors still show

    _say(f"simulating one study ({rows} x {cols}) in {out / 'study'}")
    generate_dataset(SynthConfig(cases=1, seed=args.seed, rows=rows, columns=cols), out / "study", workers=1,
                     progress=False)
    files = sorted((out / "study" / "dicom").rglob("*.dcm"))
    receiver = _Receiver(out / "received")
    config = replace(config, destinations=(Destination("demo", "DEMORECV", "127.0.0.1", receiver.port),))
    node = Node(config)
    started = time.monotonic()
    try:
        node.start()
        _say(f"node listening on 127.0.0.1:{config.node.port}; sending {len(files)} instances")
        stored = _send(files, config.node.port, config.node.ae_title)
        if stored != len(files):
            _say(f"only {stored} of {len(files)} instances were accepted")
        _say("waiting for the analysis and the results (the first analysis also loads the model)")
        db = StateDB(config.state_db)
        deadline = time.monotonic() + args.timeout
        while True:
            jobs, sends = db.jobs(), db.sends()
            finished = jobs and all(j.state in ("done", "failed") for j in jobs)
            if finished and not any(s.state == "pending" for s in sends):
                break
            if time.monotonic() > deadline:
                _say(f"no result within {args.timeout:.0f} s")
                return 1
            time.sleep(0.5)
        db.close()
    finally:
        node.stop()
        receiver.stop()
    seconds = time.monotonic() - started
    job = jobs[-1]
    received = sorted(receiver.received)
    by_class = {}
    for path in received:
        by_class.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID), []).append(path)
    srs = by_class.get("1.2.840.10008.5.1.4.1.1.88.33", [])
    rois = _roi_lines(srs[0]) if srs else []
    summary = {"study": str(out / "study"), "received": str(out / "received"), "seconds": round(seconds, 1),
               "job": {"state": job.state, "reason": job.reason, "analysis_s": job.analysis_s},
               "objects": [p.name for p in received], "rois": rois}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"analysis {job.state} in {job.analysis_s or 0:.1f} s ({seconds:.0f} s in all)"
              + (f": {job.reason}" if job.reason else ""))
        print(f"{len(received)} result objects received in {out / 'received'}:")
        for path in received:
            print(f"  {path.name}")
        for roi in rois:
            ev, m = roi["evaluations"], roi["measurements"]
            shown = {k: v for k, v in ev.items() if k in ("Analysis status", "Decision at operating point")}
            shown.update({k: (int(v) if float(v).is_integer() else round(v, 3)) for k, v in m.items()})
            print(f"  ROI {roi['roi']}: " + ", ".join(f"{k}: {v}" for k, v in shown.items()))
        if job.state == "failed":
            print("the analysis failed; the reason is above (the demonstration model bundle belongs in "
                  "analysis/models/; another one is set with analysis.model_bundle in --config)")
    if job.state != "done":
        return 1
    if args.viewer:
        from .viewer import serve

        return serve([out / "study" / "dicom", out / "received"], port=args.viewer_port,
                     state_dir=out / "viewer", open_browser=True, say=_say)
    return 0
