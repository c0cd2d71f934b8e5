"""Shared fixtures: the interop folder, and a real `calcnode serve` started per test."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT.parent / "shared" / "interop"
CALCNODE = [sys.executable, "-m", "dicom_node.cli"]
STORESCU = "/usr/bin/storescu"  # not pynetdicom's script of the same name in the venv
ECHOSCU = "/usr/bin/echoscu"


@pytest.fixture
def interop() -> Path:
    if not INTEROP.is_dir():
        pytest.skip(f"interop fixtures not found at {INTEROP} (they ship in the project's shared/ "
                    "folder beside the repository; CI has it)")
    return INTEROP


def need_tool(path: str) -> str:
    if not Path(path).exists():
        pytest.skip(f"{path} is not installed (make test installs dcmtk dicom3tools orthanc)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningNode:
    """A `calcnode serve` subprocess with its own state dir and port."""

    def __init__(self, state_dir: Path, config: Path | None = None, ae_title: str = "CALCNODE"):
        self.state_dir = Path(state_dir)
        self.port = free_port()
        self.ae_title = ae_title
        self.log_path = self.state_dir.parent / f"node-{self.port}.log"
        cmd = CALCNODE + ["serve", "--host", "127.0.0.1", "--port", str(self.port),
                          "--ae-title", ae_title, "--state-dir", str(self.state_dir),
                          "--log-format", "json"]
        if config is not None:
            cmd += ["--config", str(config)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"calcnode serve exited early:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"calcnode serve did not listen within {timeout}s:\n{self.log_text()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    @property
    def spool(self) -> Path:
        return self.state_dir / "spool"

    def stored_files(self) -> list[Path]:
        return sorted((self.spool / "incoming").glob("*/*.dcm"))

    def all_spool_files(self) -> list[Path]:
        return sorted(p for p in self.spool.rglob("*") if p.is_file())

    def echo(self, calling_ae: str = "TESTSCU") -> subprocess.CompletedProcess:
        return subprocess.run([ECHOSCU, "-aet", calling_ae, "-aec", self.ae_title, "127.0.0.1",
                               str(self.port)], capture_output=True, text=True, timeout=30)

    def storescu(self, *files, calling_ae: str = "TESTSCU", extra=()) -> subprocess.CompletedProcess:
        return subprocess.run([STORESCU, "-aet", calling_ae, "-aec", self.ae_title, "-R", *extra,
                               "127.0.0.1", str(self.port), *map(str, files)],
                              capture_output=True, text=True, timeout=300)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path):
    need_tool(STORESCU)
    nodes = []

    def _start(state_dir: Path | None = None, **kwargs) -> RunningNode:
        node = RunningNode(state_dir or tmp_path / f"state{len(nodes)}", **kwargs)
        nodes.append(node)
        return node

    yield _start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(start_node) -> RunningNode:
    return start_node()


@pytest.fixture
def start_orthanc(tmp_path):
    """Start a real Orthanc: start_orthanc(modalities={"calcnode": ["CALCNODE", "127.0.0.1", port]})."""
    from orthanc import ORTHANC, Orthanc

    need_tool(ORTHANC)
    started = []

    def _start(modalities: dict) -> Orthanc:
        pacs = Orthanc(tmp_path / f"orthanc{len(started)}", free_port(), free_port(), modalities)
        started.append(pacs)
        return pacs

    yield _start
    for pacs in started:
        pacs.stop()
