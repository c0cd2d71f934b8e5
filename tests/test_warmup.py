"""A worker's warm-up (dicom_node.warmup): the shipped models analyse a small simulated study
and leave nothing behind; a failing analysis is reported; a node's workers are ready only
after it, and the first real study then costs what the next ones cost."""
from __future__ import annotations

import pytest

from dicom_node.config import load_config
from dicom_node.warmup import warm_up
from dicom_node.job import EngineBox


def test_warm_up_analyses_a_simulated_study_and_removes_it(tmp_path):
    config = load_config(None, {"assembly": {"no_roi_policy": "skip"}})
    engines = EngineBox(config)
    folder = tmp_path / "warmup" / "worker-0"
    folder.mkdir(parents=True)
    (folder / "left-by-a-killed-warm-up").write_text("x")
    seconds = warm_up(engines, folder, write_gsps=True)
    assert seconds > 0
    assert engines.engine is not None  # the models were loaded for it
    assert not folder.exists()


def test_a_failing_warm_up_raises_and_removes_its_folder(tmp_path):
    class Broken:
        def get(self):
            raise RuntimeError("no engine here")

        def identity(self):
            raise RuntimeError("no engine here")

    folder = tmp_path / "warmup"
    with pytest.raises(Exception):
        warm_up(Broken(), folder, write_gsps=True)
    assert not folder.exists()
