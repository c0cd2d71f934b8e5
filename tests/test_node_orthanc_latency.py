"""Results seconds after Orthanc forwards a study: the production defaults behind the shipped recipe.

The lighter version of ``python -m bench.bench_latency`` (tests/orthanc_latency.py): 3 simulated
studies with ROIs stored into an Orthanc that runs ``deploy/orthanc/calcnode-routing.lua``; a node
with the production defaults (``stable_seconds = 30``, ``association_grace_seconds = 2``, one
worker, the shipped models; only its ports changed). Orthanc's StableAge is 2 s here instead of
the recipe's 60 (it is not part of the measured time, which starts when the node receives the
study's last instance).
"""
from __future__ import annotations

import subprocess

import pytest

from conftest import CALCNODE, ROOT, need_tool
from node_helpers import node_env
from orthanc_latency import run
from test_node_orthanc import _real_models_missing

__all__ = ["node_env"]

STABLE_SECONDS = 30.0  # the production default, which the answers must come well within


def test_each_study_is_answered_seconds_after_orthanc_forwards_it(node_env, tmp_path):
    from orthanc import ORTHANC

    need_tool(ORTHANC)
    missing = _real_models_missing()
    if missing:
        pytest.skip(missing)
    subprocess.run(CALCNODE + ["synth", "--out", str(tmp_path / "synth"), "--cases", "3", "--size", "768x640",
                               "--seed", "21", "--negative-fraction", "0", "--quiet", "--workers", "1"],
                   cwd=ROOT, check=True, capture_output=True)
    studies = [sorted(c.glob("*.dcm")) for c in sorted((tmp_path / "synth" / "dicom").glob("SYNTH*"))]
    assert len(studies) == 3 and all(any(p.name.startswith("PR_") for p in s) for s in studies)
    figures = run(tmp_path / "run", studies, interval_s=6.0, stable_age=2, timeout_s=300)
    print(figures)
    assert figures["every_study_one_association"] and figures["every_study_analysed_once"]
    assert figures["every_study_ready_by_release"]
    assert figures["results_routed_back_to_node"] == 0 and figures["instances_forwarded_twice"] == 0
    assert max(figures["latency_per_study_s"]) < STABLE_SECONDS / 3, figures
