"""The Makefile's model targets write the files the product loads by default.

The shipped models are named twice: in the make targets that build them (``demo-seg-model``,
``demo-classifier`` and the targets that evaluate or extend its bundle, ``demo-cluster-model``) and
in the code's defaults (``DEFAULT_SEGMENTATION_MODEL``, ``DEFAULT_BUNDLE``,
``DEFAULT_CLUSTER_MODEL``). A version bumped in one place and not the other would make the target
write a bundle the node never loads, or evaluate one it does not ship.
"""
from __future__ import annotations

import re
from pathlib import Path

from analysis.classify import DEFAULT_BUNDLE
from analysis.clusters import DEFAULT_CLUSTER_MODEL
from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL

ROOT = Path(__file__).resolve().parent.parent


def _makefile() -> str:
    # join continued lines, so each recipe command is one line
    return (ROOT / "Makefile").read_text().replace("\\\n", " ")


def _variable(text: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, f"Makefile defines no {name}"
    return match.group(1)


def _recipe(text: str, target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile has no target {target}"
    return match.group(1)


def _relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def test_segmentation_target_writes_the_default_model():
    text = _makefile()
    assert _variable(text, "SEG_MODEL") == _relative(DEFAULT_SEGMENTATION_MODEL)
    assert "--out $(SEG_MODEL)" in _recipe(text, "demo-seg-model")


def test_classifier_targets_name_the_default_bundle():
    text = _makefile()
    bundle = _relative(DEFAULT_BUNDLE)
    train = _recipe(text, "demo-classifier")
    assert f"--out {bundle} " in train and f"--report {bundle}-report" in train
    version = re.search(r"--version (\S+)", train).group(1)
    assert bundle.endswith(f"-{version}"), (bundle, version)
    assert f"--model {bundle} " in _recipe(text, "evaluate-demo-classifier")
    curve = _recipe(text, "classifier-learning-curve")
    assert f"--seg-model {bundle}/segmentation-cnn.pt" in curve
    assert f"--out {bundle}-report/learning-curve" in curve


def test_cluster_target_writes_the_default_model():
    text = _makefile()
    assert _variable(text, "CLUSTER_MODEL") == _relative(DEFAULT_CLUSTER_MODEL)
    assert "--out $(CLUSTER_MODEL)" in _recipe(text, "demo-cluster-model")
    assert "--model $(CLUSTER_MODEL)" in _recipe(text, "evaluate-demo-clusters")
