"""Latency of the node behind a real Orthanc running the shipped routing recipe.

Shared by ``tests/test_node_orthanc_latency.py`` (3 studies) and ``bench/bench_latency.py``
(>= 20). A ``calcnode serve`` with the production defaults (only its ports changed: DICOM,
monitoring HTTP) sends its results to an Orthanc that runs ``deploy/orthanc/calcnode-routing.lua``
with the recipe's ``UserMetadata``; the studies are stored into Orthanc one after the other, paced,
as a modality would; Orthanc forwards each stable study to the node over one association.

Per study, from the node's state database (one clock):

* ``latency_s``: the study's last instance received by the node (Orthanc forwarding it) -> the last
  result object stored by Orthanc (``sends.sent_at`` is written after Orthanc's success status);
* split into ``release_s`` (last instance -> association released), ``ready_s`` (release -> job
  queued: the grace and the supervisor's tick), ``queue_s`` (job queued -> started), ``analysis_s``
  (the worker's analysis and writing) and ``sending_s`` (analysis finished -> last object stored).

Also checked: each study came over one association, was analysed once (one job, queued because its
association was released), every result object reached Orthanc, and nothing calcnode wrote was
routed back to the node.
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import time
from pathlib import Path

from conftest import ROOT, RunningNode, free_port
from node_helpers import http_get, start_orthanc_with_lua, wait_until, write_config

RECIPE = ROOT / "deploy" / "orthanc"


def recipe_config() -> dict:
    """The Orthanc keys of deploy/orthanc/orthanc-calcnode.json (comments left out)."""
    return {k: v for k, v in json.loads((RECIPE / "orthanc-calcnode.json").read_text()).items()
            if not k.startswith("//")}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def summary(values: list[float]) -> dict:
    return {"p50": round(statistics.median(values), 2), "p90": round(percentile(values, 0.9), 2),
            "max": round(max(values), 2), "n": len(values)}


def per_study(db_path: Path) -> dict[str, dict]:
    """Per study: its timings (Unix s) and counts from the node's state database."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    try:
        out = {}
        for s in db.execute("SELECT * FROM studies"):
            uid = s["study_instance_uid"]
            jobs = db.execute("SELECT * FROM jobs WHERE study_instance_uid = ? ORDER BY id", (uid,)).fetchall()
            associations = [r[0] for r in db.execute(
                "SELECT DISTINCT association_id FROM instances WHERE study_instance_uid = ?", (uid,))]
            released = db.execute("SELECT ended_at, ended_how FROM associations WHERE id = ?",
                                  (s["last_association_id"],)).fetchone()
            job = jobs[-1] if jobs else None
            sends = db.execute("SELECT state, sent_at FROM sends WHERE job_id = ?",
                               (job["id"],)).fetchall() if job else []
            out[uid] = {"last_received_at": s["last_received_at"], "jobs": len(jobs), "associations": associations,
                        "released_at": released["ended_at"] if released and released["ended_how"] == "released"
                        else None, "job": dict(job) if job else None,
                        "sends": len(sends), "sent": [r["sent_at"] for r in sends if r["state"] == "sent"]}
        return out
    finally:
        db.close()


def answered(study: dict) -> bool:
    job = study["job"]
    return bool(job and job["state"] == "done" and study["sends"] and len(study["sent"]) == study["sends"])


def timings(study: dict) -> dict:
    """The latency of one answered study and its parts, in s."""
    job, last = study["job"], study["last_received_at"]
    done = max(study["sent"])
    released = study["released_at"]
    return {"latency_s": done - last,
            "release_s": (released - last) if released else None,
            "ready_s": (job["created_at"] - released) if released else None,
            "queue_s": job["started_at"] - job["created_at"],
            "analysis_s": job["analysis_s"],
            "sending_s": done - job["finished_at"]}


def workers_ready(http_port: int, count: int) -> bool:
    try:
        return json.loads(http_get(http_port, "/healthz")[1])["workers"]["ready"] >= count
    except (OSError, ValueError, KeyError):
        return False


def run(tmp: Path, studies: list[list[Path]], *, interval_s: float, stable_age: int,
        node_config: dict | None = None, timeout_s: float = 600) -> dict:
    """Store ``studies`` into Orthanc one every ``interval_s`` seconds and measure each study's
    latency. ``node_config``: sections to write into the node's configuration besides its ports
    (none: the production defaults)."""
    tmp.mkdir(parents=True, exist_ok=True)
    orthanc_dicom_port, http_port = free_port(), free_port()
    sections = {"http": {"port": http_port}}
    for section, values in (node_config or {}).items():
        sections.setdefault(section, {}).update(values)
    config = write_config(tmp / "node.toml", destinations=[
        {"name": "orthanc", "ae_title": "TESTPACS", "host": "127.0.0.1", "port": orthanc_dicom_port}], **sections)
    node = RunningNode(tmp / "node", config=config)
    pacs = None
    try:
        started = time.monotonic()
        wait_until(lambda: workers_ready(http_port, 1), 300, "the node's workers ready (models loaded)",
                   on_fail=node.log_text)
        workers_ready_s = time.monotonic() - started
        extra = {k: v for k, v in recipe_config().items() if k not in ("DicomModalities", "LuaScripts")}
        extra["StableAge"] = stable_age
        pacs = start_orthanc_with_lua(tmp / "orthanc", [RECIPE / "calcnode-routing.lua"],
                                      {"calcnode": [node.ae_title, "127.0.0.1", node.port]},
                                      dicom_port=orthanc_dicom_port, extra_config=extra)
        first = time.monotonic()
        for k, files in enumerate(studies):  # a modality stores each study into the PACS
            time.sleep(max(0.0, first + k * interval_s - time.monotonic()))
            for path in files:
                pacs.upload(path)
        db_path = node.state_dir / "state.db"

        def all_answered():
            found = per_study(db_path) if db_path.exists() else {}
            return found if len(found) == len(studies) and all(map(answered, found.values())) else None

        found = wait_until(all_answered, timeout_s, "every study's results in Orthanc", interval=1.0,
                           on_fail=lambda: node.log_text()[-5000:])
        time.sleep(max(3.0, stable_age + 2.0))  # the results made each study stable again in Orthanc
        found = per_study(db_path)
        own_results_routed = sum(1 for e in node.log_events()
                                 if e.get("event") == "C-STORE ignored: a result object of this node")
        queued = [e for e in node.log_events() if e.get("event") == "study queued"]
        duplicates = sum(1 for e in node.log_events() if e.get("event") == "C-STORE duplicate: already in spool")
        in_orthanc = sum(len(pacs.get(f"/studies/{s}/series")) for s in pacs.get("/studies"))
    finally:
        if pacs is not None:
            pacs.stop()
        node.stop()
    parts = [timings(s) for s in found.values()]
    split = {key: summary([p[key] for p in parts if p[key] is not None])
             for key in ("release_s", "ready_s", "queue_s", "analysis_s", "sending_s")
             if any(p[key] is not None for p in parts)}
    return {
        "studies": len(studies), "instances": sum(len(s) for s in studies), "interval_s": interval_s,
        "orthanc_stable_age_s": stable_age, "workers_ready_after_start_s": round(workers_ready_s, 1),
        "latency_s": summary([p["latency_s"] for p in parts]),
        "latency_per_study_s": [round(p["latency_s"], 2) for p in parts],
        "split": split,
        "every_study_one_association": all(len(s["associations"]) == 1 for s in found.values()),
        "every_study_analysed_once": all(s["jobs"] == 1 for s in found.values()),
        "every_study_ready_by_release": len(queued) == len(studies) and all(
            e.get("ready") == "association_released" for e in queued),
        "results_routed_back_to_node": own_results_routed,
        "instances_forwarded_twice": duplicates,
        "series_in_orthanc": in_orthanc,
    }
