"""End to end with a real PACS: Orthanc routes a study to calcnode, calcnode sends results back.

A ``calcnode synth`` study (768 x 640, one case) is stored in Orthanc, Orthanc forwards it to
the node (``POST /modalities/calcnode/store``), and the test finds in Orthanc new SEG, SR,
Mammography CAD SR and GSPS series for that study, each passing dciodvfy without "Error".

With the shipped demonstration models, the scores in the SR that Orthanc holds must equal
`calcnode analyze --json` on the same files.

Three variants of the analysis the node runs:
* calcnode's own with the shipped demonstration models (skipped, with the reason, while
  analysis/models/ holds no bundle);
* calcnode's own (``analysis.study.analyze_study``, the real segmentation, features and
  LightGBM) with a throwaway bundle trained in seconds on random feature tables and an
  untrained CNN: the scores mean nothing, every code path is the production one;
* the node tests' stand-in analysis (fast).
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from conftest import CALCNODE, ROOT, free_port
from node_helpers import (
    DCIODVFY, audit_events, dciodvfy_errors, node_env, node_sections, sr_scores, start_orthanc_with_lua,
    state_db, wait_until, write_config,
)

__all__ = ["node_env"]

SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.88.50": "CADSR",
    "1.2.840.10008.5.1.4.1.1.11.1": "GSPS",
}


def _real_models_missing() -> str | None:
    try:
        from analysis.classify import DEFAULT_BUNDLE, load_bundle
        import analysis.study  # noqa: F401
    except ImportError as exc:
        return f"analysis.study / analysis.classify not importable: {exc}"
    try:
        load_bundle(None)
    except Exception as exc:  # noqa: BLE001
        return f"the demonstration model bundle ({DEFAULT_BUNDLE}) is not available: {exc}"
    return None


def synth_study(out: Path, *options: str) -> Path:
    """One simulated case (``calcnode synth`` with ``options``) in ``out``; its DICOM folder."""
    subprocess.run(CALCNODE + ["synth", "--out", str(out), "--cases", "1", *options, "--quiet", "--workers", "1"],
                   cwd=ROOT, check=True, capture_output=True)
    return out / "dicom" / "SYNTH0001"


@pytest.fixture(scope="module")
def synth_case(tmp_path_factory) -> Path:
    return synth_study(tmp_path_factory.mktemp("synth-orthanc"), "--size", "768x640", "--seed", "5")


def _put(pacs, path: str, body: dict) -> None:
    import json

    req = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}{path}", data=json.dumps(body).encode(),
                                 method="PUT")
    urllib.request.urlopen(req, timeout=30).read()


def _route_study_and_collect_results(start_node, start_orthanc, tmp_path, synth_case, engine: str,
                                     timeout: float, analysis: dict | None = None) -> dict[str, list[Path]]:
    pacs = start_orthanc({})
    sections = node_sections(analysis={"engine": engine, **(analysis or {})}, assembly={"stable_seconds": 2.0})
    config = write_config(tmp_path / "node.toml", **sections, destinations=[
        {"name": "orthanc", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}])
    node = start_node(state_dir=tmp_path / "node", config=config)
    # the PACS administrator declares the node as a DICOM modality
    _put(pacs, "/modalities/calcnode", {"AET": node.ae_title, "Host": "127.0.0.1", "Port": node.port})
    assert pacs.post("/modalities/calcnode/echo", {}) == {}

    sources = sorted(synth_case.glob("*.dcm"))
    ids = [pacs.upload(p) for p in sources]
    study_uid = str(pydicom.dcmread(sources[0], stop_before_pixels=True).StudyInstanceUID)
    [study_id] = {pacs.get(f"/instances/{i}/study")["ID"] for i in ids}
    before = {s["ID"] for s in pacs.get(f"/studies/{study_id}/series")}
    pacs.post("/modalities/calcnode/store", {"Resources": [study_id], "Synchronous": True})
    assert len(node.stored_files()) == len(sources)

    def results_in_orthanc():
        found: dict[str, list[str]] = {}
        for series in pacs.get(f"/studies/{study_id}/series"):
            if series["ID"] in before:
                continue
            for instance in series["Instances"]:
                tags = pacs.get(f"/instances/{instance}/simplified-tags")
                found.setdefault(SOP_CLASSES.get(tags.get("SOPClassUID"), tags.get("SOPClassUID")), []).append(instance)
        if not {"SEG", "SR", "CADSR", "GSPS"} <= set(found):
            return None
        # every object the node queued is sent and in Orthanc (the four kinds can be there while
        # a second SEG or GSPS is still on its way)
        sends = state_db(node).counts()["sends"]
        done = sum(n for (_, state), n in sends.items() if state == "sent")
        total = sum(sends.values())
        return found if total and done == total == sum(len(v) for v in found.values()) else None

    found = wait_until(results_in_orthanc, timeout, "SEG, SR, CAD SR and GSPS series in Orthanc",
                       interval=1.0, on_fail=node.log_text)
    out = tmp_path / "from-orthanc"
    out.mkdir()
    files: dict[str, list[Path]] = {}
    for kind, instances in found.items():
        for instance in instances:
            path = out / f"{kind}-{instance}.dcm"
            with urllib.request.urlopen(f"http://127.0.0.1:{pacs.http_port}/instances/{instance}/file") as r:
                path.write_bytes(r.read())
            files.setdefault(kind, []).append(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == study_uid
    # nothing sent twice
    sent = [e["sop_instance_uid"] for e in audit_events(node, "object_sent")]
    assert len(sent) == len(set(sent)) == sum(len(v) for v in files.values())
    assert node.stop() == 0
    return files


def _check_valid(files: dict[str, list[Path]]) -> None:
    from conftest import need_tool

    need_tool(DCIODVFY)
    assert set(files) == {"SEG", "SR", "CADSR", "GSPS"}
    for kind, paths in files.items():
        for path in paths:
            assert not dciodvfy_errors(path), f"{kind}: {dciodvfy_errors(path)}"


def test_orthanc_routes_a_study_and_gets_results_from_calcnodes_analysis(node_env, start_node, start_orthanc,
                                                                       tmp_path, synth_case):
    missing = _real_models_missing()
    if missing:
        pytest.skip(missing)
    files = _route_study_and_collect_results(start_node, start_orthanc, tmp_path, synth_case, engine="",
                                             timeout=900)
    _check_valid(files)
    model = pydicom.dcmread(files["SR"][0])
    assert "NOT FOR CLINICAL USE" in str(model.get("SeriesDescription", ""))
    # the scores the radiologist reads in the PACS are the ones `calcnode analyze` gives on the same files
    sources = sorted(synth_case.glob("*.dcm"))
    kinds = {p: pydicom.dcmread(p, stop_before_pixels=True).Modality for p in sources}
    images = [str(p) for p in sources if kinds[p] == "MG"]
    rois = [str(p) for p in sources if kinds[p] != "MG"]
    run = subprocess.run(CALCNODE + ["analyze", *images, "--roi", *rois, "--json"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    expected = sorted((r["sop_instance_uid"], r["score"]) for r in map(json.loads, run.stdout.splitlines())
                      if r["score"] is not None)
    [sr] = files["SR"]
    got = sr_scores(sr)
    assert len(expected) >= 2 and [uid for uid, _ in got] == [uid for uid, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)  # analyze prints 6 decimals


@pytest.fixture(scope="module")
def throwaway_bundle(tmp_path_factory) -> Path:
    try:
        import torch

        from analysis.segmentation.cnn import ProximityNet, SegmentationModel
        from test_classify import fake_set, make_bundle
        from training.model_files import save_bundle, save_segmentation_model
    except ImportError as exc:
        pytest.skip(f"the classifier training code is not importable: {exc}")
    out = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    save_segmentation_model(SegmentationModel(net=ProximityNet(width=2), info={"notice": "untrained test net"}),
                            out / "cnn.pt")
    return save_bundle(make_bundle(fake_set(), out / "cnn.pt", name="node-test-throwaway"), out / "model")


def test_orthanc_routes_a_study_through_the_real_analysis_with_a_throwaway_bundle(
        node_env, start_node, start_orthanc, tmp_path, synth_case, throwaway_bundle):
    files = _route_study_and_collect_results(start_node, start_orthanc, tmp_path, synth_case, engine="",
                                             timeout=600, analysis={"model_bundle": str(throwaway_bundle)})
    _check_valid(files)
    sr = pydicom.dcmread(files["SR"][0])
    assert "NOT FOR CLINICAL USE" in str(sr.get("SeriesDescription", ""))
    assert any("node-test-throwaway" in str(v) for v in sr.get("SoftwareVersions", []))


def test_orthanc_routes_a_study_and_gets_results_back(node_env, start_node, start_orthanc, tmp_path, synth_case):
    files = _route_study_and_collect_results(start_node, start_orthanc, tmp_path, synth_case,
                                             engine="node_helpers:stand_in_engine", timeout=180)
    _check_valid(files)
    assert len(files["SEG"]) == 4 and len(files["GSPS"]) == 4  # one per image (ROI or whole breast)


def test_shipped_orthanc_lua_routes_mammograms_and_rois_but_not_results(node_env, start_node, tmp_path, synth_case):
    """deploy/orthanc/calcnode-routing.lua in a real Orthanc: storing the study in the PACS is
    enough; the stable study goes to the node over one association (images and ROIs together) and
    is analysed once; the results come back and are not routed to the node again; a ROI drawn
    later makes Orthanc forward the study again and the node analyse it again."""
    from conftest import need_tool
    from orthanc import ORTHANC
    from orthanc_latency import RECIPE, recipe_config

    need_tool(ORTHANC)
    orthanc_dicom_port = free_port()
    # stable_seconds far above the test's waits: the study is analysed because its association ended
    config = write_config(tmp_path / "node.toml", **node_sections(assembly={"stable_seconds": 120.0}), destinations=[
        {"name": "orthanc", "ae_title": "TESTPACS", "host": "127.0.0.1", "port": orthanc_dicom_port}])
    node = start_node(state_dir=tmp_path / "node", config=config)
    pacs = start_orthanc_with_lua(tmp_path / "orthanc", [RECIPE / "calcnode-routing.lua"],
                                  {"calcnode": [node.ae_title, "127.0.0.1", node.port]},
                                  dicom_port=orthanc_dicom_port,
                                  extra_config={"UserMetadata": recipe_config()["UserMetadata"]})
    orthanc_log = lambda: (tmp_path / "orthanc" / "orthanc.log").read_text(errors="replace")  # noqa: E731
    try:
        sources = sorted(synth_case.glob("*.dcm"))
        for path in sources:  # the modality / the radiologist's workstation stores into the PACS
            pacs.upload(path)
        wait_until(lambda: len(node.stored_files()) == len(sources), 60,
                   "Orthanc's Lua routing to forward images and ROIs", on_fail=orthanc_log)
        [study_id] = [s for s in pacs.get("/studies")]
        wait_until(lambda: len(pacs.get(f"/studies/{study_id}/series")) >= 2 + 4, 60,
                   "calcnode's result series in Orthanc", on_fail=node.log_text)
        time.sleep(4)  # > StableAge: the study with the results became stable and went through the Lua script
        assert len(node.stored_files()) == len(sources)
        events = node.log_events()
        assert not [e for e in events if e["event"] == "C-STORE ignored: a result object of this node"]
        assert not [e for e in events if e["event"] == "C-STORE duplicate: already in spool"]
        assert orthanc_log().count("calcnode routing") == 1
        [job] = [e for e in events if e["event"] == "study queued"]
        assert job["images"] == 4 and job["roi_objects"] == len(sources) - 4
        assert job["ready"] == "association_released"
        db = state_db(node)
        try:
            assert len({i["association_id"] for i in db.study_instances(str(
                pydicom.dcmread(sources[0], stop_before_pixels=True).StudyInstanceUID))}) == 1
        finally:
            db.close()

        # the radiologist draws one more ROI, stored as a new GSPS series
        late = pydicom.dcmread(next(p for p in sources if p.name.startswith("PR_")))
        late.SOPInstanceUID = pydicom.uid.generate_uid()
        late.SeriesInstanceUID = pydicom.uid.generate_uid()
        late.save_as(tmp_path / "late-roi.dcm")
        pacs.upload(tmp_path / "late-roi.dcm")
        wait_until(lambda: len([e for e in node.log_events() if e["event"] == "study queued"]) == 2, 60,
                   "the study analysed again with the late ROI", on_fail=node.log_text)
        again = [e for e in node.log_events() if e["event"] == "study queued"][-1]
        assert again["roi_objects"] == len(sources) - 4 + 1 and again["ready"] == "association_released"
        assert "input set changed" in again["note"]
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def case_without_roi(tmp_path_factory) -> Path:
    """The two views of a breast with punctate clusters (1600 x 1200: the kind the segmentation finds),
    without the radiologist's ROIs."""
    folder = synth_study(tmp_path_factory.mktemp("synth-no-roi"), "--size", "1600x1200", "--seed", "6",
                         "--max-clusters", "2", "--types", "punctate", "--lateralities", "L")
    for roi in folder.glob("PR_*.dcm"):
        roi.unlink()
    return folder


def test_orthanc_study_without_roi_comes_back_with_detected_cluster_marks(node_env, start_node, start_orthanc,
                                                                         tmp_path, case_without_roi):
    """The default no-ROI policy ("detect"): the node's real analysis finds the clusters; the CAD SR
    marks them (outline and centre) and the GSPS draws their outlines; every object is valid."""
    missing = _real_models_missing()
    if missing:
        pytest.skip(missing)
    files = _route_study_and_collect_results(start_node, start_orthanc, tmp_path, case_without_roi, engine="",
                                             timeout=600)
    _check_valid(files)

    def items(ds):
        for item in ds.get("ContentSequence", []):
            yield item
            yield from items(item)

    def name(item):
        return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""

    [cad] = [pydicom.dcmread(p) for p in files["CADSR"]]
    findings = [i for i in items(cad) if name(i) == "Single Image Finding"]
    assert findings
    for finding in findings:
        kinds = {name(c): c for c in finding.ContentSequence}
        assert kinds["Outline"].GraphicType == "POLYLINE" and kinds["Center"].GraphicType == "POINT"
        assert "Certainty of Finding" in kinds
    [sr] = [pydicom.dcmread(p) for p in files["SR"]]
    sources = [str(i.ConceptCodeSequence[0].CodeMeaning) for i in items(sr) if name(i) == "ROI source"]
    assert sources and set(sources) == {"Detected by calcnode"}
    texts = [a.TextObjectSequence[0].UnformattedTextValue
             for p in files["GSPS"] for a in pydicom.dcmread(p).GraphicAnnotationSequence]
    assert sum("detected by calcnode" in t for t in texts) == len(findings)
    outlines = [a for p in files["GSPS"] for a in pydicom.dcmread(p).GraphicAnnotationSequence
                if "GraphicObjectSequence" in a]
    assert len(outlines) == len(findings)
