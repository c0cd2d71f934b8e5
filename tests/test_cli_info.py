"""`calcnode info`: what the analysis will read, and clean errors for bad input."""
from __future__ import annotations

import json
import subprocess

from conftest import CALCNODE, ROOT
from dicom_factory import SECRET_PATIENT_NAME, mg_dataset, write


def run(*args):
    return subprocess.run(CALCNODE + list(map(str, args)), cwd=ROOT, capture_output=True, text=True)


def test_info_json(tmp_path):
    path = write(mg_dataset(50, 40, laterality="R", view="MLO"), tmp_path / "mg.dcm")
    result = run("info", "--json", path)
    assert result.returncode == 0, result.stderr
    [summary] = json.loads(result.stdout)
    assert (summary["rows"], summary["columns"]) == (50, 40)
    assert summary["pixel_spacing_mm"] == [0.07, 0.07]
    assert summary["pixel_spacing_source"] == "ImagerPixelSpacing"
    assert (summary["laterality"], summary["view"]) == ("R", "MLO")
    assert SECRET_PATIENT_NAME not in result.stdout


def test_info_bad_inputs_exit_nonzero_without_traceback(tmp_path, interop):
    good = write(mg_dataset(), tmp_path / "good.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(write(mg_dataset(300, 300), tmp_path / "t.dcm").read_bytes()[:5000])
    result = run("info", good, truncated, interop / "mg" / "MG-RDSR-Hologic_2D.dcm")
    assert result.returncode == 1
    assert "good.dcm: 64x48 12-bit" in result.stdout  # the good one is still described
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("calcnode info: error:") for line in lines)
    assert "X-Ray Radiation Dose SR" in lines[1]
    assert "Traceback" not in result.stderr
