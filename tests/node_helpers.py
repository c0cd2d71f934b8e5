"""Helpers for the node tests: configured nodes, real DCMTK storescp peers, a stand-in analysis.

The stand-in engine (``analysis.engine = "node_helpers:stand_in_engine"``) is a small,
deterministic analysis with the engine interface of :mod:`dicom_node.engine`: it reads the
real images and ROI objects with ``analysis.dicom_input``, labels the brightest pixels inside
each ROI as "calcifications" and returns a real, validated ``sr_templates.StudyResult``. It
lets the node tests run in seconds and control timing (``CALCNODE_TEST_ENGINE_DELAY_S``; with
``CALCNODE_TEST_ENGINE_DELAY_ONCE=<path>`` only the first analysis waits) and failure
(``CALCNODE_TEST_ENGINE_FAIL``); ``CALCNODE_TEST_ENGINE_BURN_S`` keeps a core busy that long
(benchmarks). The node around it is the real one.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, free_port

TESTS = Path(__file__).resolve().parent
STORESCP = "/usr/bin/storescp"
DCIODVFY = "/usr/bin/dciodvfy"
ENGINE = "node_helpers:stand_in_engine"


# --------------------------------------------------------------------------- the stand-in engine

class StandInEngine:
    def __init__(self, config):
        self.config = config
        self.delay_s = float(os.environ.get("CALCNODE_TEST_ENGINE_DELAY_S", "0") or 0)
        self.fail = os.environ.get("CALCNODE_TEST_ENGINE_FAIL", "")

    def model_identity(self):
        from analysis.results import ModelIdentity

        return ModelIdentity(name="node-test-stand-in", version="1",
                             sha256=hashlib.sha256(b"node-test-stand-in").hexdigest(),
                             training_data="none: a brightness threshold used by the node tests",
                             not_for_clinical_use=True)

    def analyze(self, images, roi_files):
        from scipy import ndimage

        from analysis.dicom_input import load_image, parse_rois
        from analysis.results import ImageResult, RoiResult, StudyResult

        started = datetime.now()
        delay = self.delay_s
        once = os.environ.get("CALCNODE_TEST_ENGINE_DELAY_ONCE")  # a path: delay only the first run
        if once:
            if Path(once).exists():
                delay = 0
            else:
                Path(once).touch()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            time.sleep(0.1)
        burn_until = time.monotonic() + float(os.environ.get("CALCNODE_TEST_ENGINE_BURN_S", "0") or 0)
        while time.monotonic() < burn_until:  # CPU-bound, like a real analysis (benchmarks)
            sum(i * i for i in range(10000))
        if self.fail:
            raise RuntimeError(self.fail)
        loaded = [load_image(p, default_pixel_spacing_mm=0.07) for p in images]
        rois_by_image: dict[str, list] = {im.sop_instance_uid: [] for im in loaded}
        for k, path in enumerate(roi_files):
            rois, _errors = parse_rois(path, images=[im.geometry for im in loaded])
            for roi in rois:
                # ROI ids are unique within one GSPS/SEG only: a second object on the same image
                # would repeat them
                rois_by_image.setdefault(roi.referenced_sop_instance_uid, []).append((f"o{k}-{roi.roi_id}", roi))
        results = []
        for image in loaded:
            rows, cols = image.shape
            regions = []
            for roi_id, roi in rois_by_image[image.sop_instance_uid]:
                mask = roi.rasterise(image.geometry)
                if roi.kind in ("polygon", "polyline") and len(roi.points_px) >= 3:
                    outline = np.asarray(roi.points_px, float)
                else:
                    r, c = np.nonzero(mask)
                    outline = np.array([[c.min(), r.min()], [c.max() + 1, r.min()], [c.max() + 1, r.max() + 1],
                                        [c.min(), r.max() + 1]], float)
                regions.append((roi_id, roi.label, "polygon" if roi.kind == "polyline" else roi.kind,
                                mask, outline))
            if not regions:
                outline = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], float)
                regions.append(("whole", "whole image", "whole_breast", np.ones((rows, cols), bool), outline))
            union = np.zeros((rows, cols), bool)
            for *_, mask, _ in regions:
                union |= mask
            threshold = np.percentile(image.pixels[union], 99.7)
            labels, _ = ndimage.label((image.pixels > threshold) & union)
            roi_results = []
            for roi_id, label, kind, mask, outline in regions:
                inside = sorted(set(np.unique(labels[mask]).tolist()) - {0})
                common = dict(roi_id=roi_id, referenced_sop_instance_uid=image.sop_instance_uid, label=label,
                              kind=kind, outline_px=outline, calcification_labels=tuple(inside), threshold=0.4)
                if len(inside) >= 2:
                    score = min(1.0, len(inside) / 40)
                    roi_results.append(RoiResult(status="ok", score=score,
                                                 decision="actionable" if score >= 0.4 else "benign", **common))
                else:
                    roi_results.append(RoiResult(status="not_assessable", reason=f"{len(inside)} calcification(s)",
                                                 **common))
            results.append(ImageResult.from_label_image(sop_instance_uid=image.sop_instance_uid, label_image=labels,
                                                        rois=roi_results, pixel_spacing_mm=image.pixel_spacing_mm))
        return StudyResult(study_instance_uid=loaded[0].study_instance_uid, images=results,
                           model=self.model_identity(), started=started, finished=datetime.now(),
                           parameters={"threshold": 0.4})


def stand_in_engine(config):
    return StandInEngine(config)


# --------------------------------------------------------------------------- configuration

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, *, destinations=(), **sections) -> Path:
    """A TOML file: ``sections`` = {"assembly": {"stable_seconds": 1.0}, ...}."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for d in destinations:
        lines.append("[[destinations]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def node_sections(http_port: int | None = None, **overrides) -> dict:
    """Fast settings for tests: short stability wait, the stand-in engine, quick backoff."""
    sections = {
        "assembly": {"stable_seconds": 1.0},
        # no warm-up by default: the stand-in engine has no caches to fill, and the delays and
        # failures the tests inject are meant for the first real job (tests that check the
        # warm-up turn it on)
        "workers": {"count": 1, "stop_timeout_s": 5.0, "warm_up": False},
        "analysis": {"engine": ENGINE},
        "outbound": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 3, "timeout_s": 10.0},
        "http": {"port": http_port if http_port is not None else free_port()},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return sections


@pytest.fixture
def node_env(monkeypatch):
    """The node subprocess (and its spawned workers) can import this module."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), str(ROOT), path) if p))
    monkeypatch.delenv("CALCNODE_TEST_ENGINE_DELAY_S", raising=False)
    monkeypatch.delenv("CALCNODE_TEST_ENGINE_FAIL", raising=False)
    monkeypatch.delenv("CALCNODE_TEST_ENGINE_DELAY_ONCE", raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- peers and waiting

def wait_until(predicate, timeout: float, what: str, interval: float = 0.25, on_fail=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


class StoreSCP:
    """DCMTK storescp as an outbound destination; every reception is its own file (+uf)."""

    def __init__(self, workdir: Path, port: int | None = None, aet: str = "DEST"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aet = aet
        self.log = open(self.dir.parent / f"storescp-{self.port}.log", "ab")
        self.proc = subprocess.Popen([STORESCP, "-aet", aet, "+uf", "-od", str(self.dir), str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._listening, 15, f"storescp on port {self.port}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"storescp exited: {Path(self.log.name).read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def destination(self, name: str = "dest") -> dict:
        return {"name": name, "ae_title": self.aet, "host": "127.0.0.1", "port": self.port}

    def received(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file())

    def received_sop_uids(self) -> list[str]:
        import pydicom

        return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.received())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_storescp(tmp_path):
    from conftest import need_tool

    need_tool(STORESCP)
    started = []

    def _start(name: str = "dest", port: int | None = None) -> StoreSCP:
        scp = StoreSCP(tmp_path / f"storescp-{name}-{len(started)}", port=port)
        started.append(scp)
        return scp

    yield _start
    for scp in started:
        scp.stop()


def state_db(node):
    from dicom_node.state import StateDB

    return StateDB(node.state_dir / "state.db")


def audit_events(node, event: str | None = None) -> list[dict]:
    path = node.state_dir / "audit.log"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if event is None or e["event"] == event]


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line]


# --------------------------------------------------------------------------- Orthanc with a Lua script

def start_orthanc_with_lua(workdir: Path, lua_scripts: list[Path], modalities: dict, stable_age: int = 1,
                           dicom_port: int | None = None, extra_config: dict | None = None):
    """A real Orthanc (tests/orthanc.py) running Lua scripts (the REST API refuses to run Lua);
    ``extra_config``: more Orthanc configuration keys (e.g. a recipe's "UserMetadata")."""
    from orthanc import Orthanc

    return Orthanc(Path(workdir), free_port(), dicom_port or free_port(), modalities,
                   extra_config={"StableAge": stable_age, **(extra_config or {}),
                                 "LuaScripts": [str(p) for p in lua_scripts]})


def sr_scores(path: Path) -> list[tuple[str, float]]:
    """(source image SOP Instance UID, score) of every scored ROI in a calcnode TID 1500 SR, read
    from the content tree as any SR reader would: Measurement Group -> Image Region's SELECTED
    FROM image and the NUM "Actionable calcification cluster score"."""
    import pydicom

    from sr_templates.codes import ACTIONABLE_SCORE

    def code(item):
        seq = item.get("ConceptNameCodeSequence")
        return (seq[0].CodeValue, seq[0].CodingSchemeDesignator) if seq else None

    def walk(item):
        for child in item.get("ContentSequence", []):
            yield child
            yield from walk(child)

    out = []
    for group in walk(pydicom.dcmread(path)):
        if code(group) != ("125007", "DCM"):
            continue
        image = score = None
        for child in group.get("ContentSequence", []):
            if code(child) == ("111030", "DCM"):
                image = str(child.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            elif code(child) == (ACTIONABLE_SCORE.value, ACTIONABLE_SCORE.scheme_designator):
                score = float(child.MeasuredValueSequence[0].NumericValue)
        if score is not None:
            out.append((image, score))
    return sorted(out)
