"""One study end to end: images + ROI objects -> :class:`analysis.results.StudyResult`.

``analyze_study(images, roi_files, seg_model, bundle)``:

1. every image is read (:func:`analysis.dicom_input.load_image`); an unusable one is left out
   with its reason in the study warnings (the others are still analysed);
2. every ROI object is read leniently (:func:`parse_rois`): a bad graphic object or segment is
   reported (study warnings and :attr:`StudyAnalysis.problems`) and the others are kept; an ROI
   that parses but cannot be used on its image (it encloses no pixel, a POINT on an image
   without spacing, ...) becomes a ``failed`` ROI with the reason;
3. per image, the calcifications are segmented once inside the union of its ROIs
   (:func:`analysis.segmentation.pipeline.segment`). ROI ids are the reader's (``ann1-obj2``,
   ``seg3``); when several ROI objects annotate one image, each id gets ``-src<k>``, k = the
   object's rank among the ROI files given. An image without ROI (:data:`NO_ROI_POLICIES`):

   * ``no_roi="detect"`` (the default): the whole breast is segmented once and its calcification
     clusters are detected (:func:`analysis.clusters.detect_clusters`, docs/method.md §3.7); each
     cluster is then an ROI like a drawn one (``cluster-<k>``, kind ``detected_cluster``, its
     outline's pixels as the ROI mask, its detection confidence kept). No cluster: the image has no
     ROI, no score and no decision (``cluster_detection = "no_cluster_detected"``);
   * ``no_roi="skip"``: left out, with a warning (its pixels are not even decoded);
   * ``no_roi="whole_breast"`` (research only): one ROI ``whole-breast`` whose outline is the
     breast mask's, holding every calcification of the breast. A normal breast then often comes
     back "actionable" on scattered specks; calcification CAD marks clusters instead;
4. per ROI, :func:`analyze_roi` — a pure function of (pixels, spacing, bit depth, ROI mask,
   label image) and the bundle, so it can be mapped over ROIs by any engine: its calcifications
   are the segmented objects whose centroid lies inside it (docs/method.md §4.1); with 0 or 1 the ROI is
   ``not_assessable`` with the reason, else its features are extracted and scored by the
   bundle (:mod:`analysis.classify`).

Segmentation runs with the bundle's HDoG parameters (the ones its features were trained with).
The segmentation CNN defaults to the one inside the bundle; another one can be given. Either
way, when the segmentation identity (CNN + settings,
:func:`analysis.classify.segmentation_identity`) differs from the one the bundle records (another
CNN, or ROI growth / breast mask constants changed in the code since training), a warning names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from skimage import measure

from analysis.classify import ClassifierBundle, Score, load_bundle, segmentation_identity
from analysis.clusters import ClusterModel, ClusterParams, default_cluster_model, detect_clusters
from analysis.dicom_input import ImageGeometry, InputError, RoiError, load_image, parse_rois, read_geometry
from analysis.dicom_input.image import read_dataset
from analysis.dicom_input.roi_geometry import polygon_mask
from analysis.dicom_input.rois import DEFAULT_POINT_RADIUS_MM, Roi
from analysis.dicom_input.roi_geometry import clip_to_image
from analysis.features import extract_roi_features, select_roi_objects
from analysis.results import ImageResult, RoiResult, StudyResult
from analysis.segmentation.breast_mask import breast_mask
from analysis.segmentation.spacing import coarse_spacing_reason

MIN_CALCIFICATIONS = 2
NO_ROI_POLICIES = ("detect", "skip", "whole_breast")
WHOLE_BREAST_ROI_ID = "whole-breast"
NO_SPACING = "the image states no pixel spacing, so nothing can be measured in mm"
#: ``cluster_model`` value of :func:`study_analysis` for "the shipped model, or the rule without one".
SHIPPED = "shipped"


@dataclass(frozen=True)
class RoiAnalysis:
    """What :func:`analyze_roi` found for one ROI."""

    calcification_labels: tuple[int, ...]
    status: str  # "ok" or "not_assessable"
    reason: str | None = None
    score: Score | None = None

    @property
    def n_calcifications(self) -> int:
        return len(self.calcification_labels)


def not_assessable_reason(n: int) -> str | None:
    """Why an ROI with ``n`` calcifications cannot be scored (None when it can)."""
    if n >= MIN_CALCIFICATIONS:
        return None
    found = "no calcification" if n == 0 else "1 calcification"
    return f"{found} in the ROI; at least {MIN_CALCIFICATIONS} are needed"


def roi_calcifications(labels: np.ndarray, roi_mask: np.ndarray | None) -> tuple[int, ...]:
    """Labels of the objects whose centroid (nearest pixel) lies inside the ROI (docs/method.md §4.1)."""
    return tuple(int(o.label) for o in select_roi_objects(np.asarray(labels), roi_mask))


def analyze_roi(pixels: np.ndarray, spacing_mm, bits_stored: int, roi_mask: np.ndarray, labels: np.ndarray,
                bundle: ClassifierBundle, *, executor=None) -> RoiAnalysis:
    """One ROI: its calcifications, then not-assessable or features -> score (pure; inputs untouched)."""
    calcs = roi_calcifications(labels, roi_mask)
    reason = not_assessable_reason(len(calcs))
    if reason is not None:
        return RoiAnalysis(calcification_labels=calcs, status="not_assessable", reason=reason)
    features = extract_roi_features(pixels, spacing_mm, bits_stored, roi_mask, labels,
                                    params=bundle.feature_params, executor=executor)
    return RoiAnalysis(calcification_labels=tuple(int(v) for v in features.labels), status="ok",
                       score=bundle.score(features))


# --------------------------------------------------------------------------- outlines

def _one_line(text: str, limit: int) -> str:
    return " ".join(str(text).replace("\\", "/").split())[:limit]


def _ellipse_outline(centre, axis, a: float, b: float, n: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    u = np.asarray(axis, float) / max(np.hypot(*axis), 1e-12)
    v = np.array([-u[1], u[0]])
    return np.asarray(centre, float) + np.outer(a * np.cos(t), u) + np.outer(b * np.sin(t), v)


def roi_outline(roi: Roi, geometry) -> np.ndarray:
    """(N >= 3, 2) (column, row) polygon of an ROI in the PIXEL convention, for the result writers."""
    pts = np.asarray(roi.points_px, dtype=float)
    if roi.kind in ("polygon", "polyline") and len(pts) >= 3:
        return pts
    if roi.kind == "circle" and len(pts) >= 2:
        r = float(np.hypot(*(pts[1] - pts[0])))
        return _ellipse_outline(pts[0], (1.0, 0.0), r, r)
    if roi.kind == "ellipse" and len(pts) >= 4:
        major, minor = pts[1] - pts[0], pts[3] - pts[2]
        return _ellipse_outline((pts[0] + pts[1]) / 2, major, np.hypot(*major) / 2, np.hypot(*minor) / 2)
    if roi.kind == "point" and len(pts) >= 1:
        spacing = geometry.pixel_spacing_mm if geometry is not None else None
        radius = roi.radius_mm or DEFAULT_POINT_RADIUS_MM
        a, b = (radius / spacing[1], radius / spacing[0]) if spacing else (5.0, 5.0)
        return _ellipse_outline(pts[0], (1.0, 0.0), a, b)
    if roi.kind == "seg" and roi.mask is not None and roi.mask.any():
        if len(pts) >= 3:
            return pts
        rows, cols = np.nonzero(roi.mask)
        return _box(rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    if len(pts) >= 1:  # degenerate: a small box around what there is
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return np.array([[x0 - 1, y0 - 1], [x1 + 1, y0 - 1], [x1 + 1, y1 + 1], [x0 - 1, y1 + 1]])
    return _box(0, 0, geometry.rows, geometry.columns)


def _box(r0, c0, r1, c1) -> np.ndarray:
    return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=float)


def mask_outline(mask: np.ndarray, tolerance_px: float = 2.0) -> np.ndarray | None:
    """Outer contour of the largest component of a mask as a (column, row) polygon (None if empty)."""
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)
    contours = measure.find_contours(padded, 0.5)
    if not contours:
        return None
    contour = max(contours, key=len) - 1.0  # (row, col) indices of the unpadded image
    contour = measure.approximate_polygon(contour, tolerance=tolerance_px)
    if len(contour) > 3 and np.array_equal(contour[0], contour[-1]):
        contour = contour[:-1]
    if len(contour) < 3:
        return None
    rows, cols = mask.shape
    xy = np.stack([contour[:, 1] + 0.5, contour[:, 0] + 0.5], axis=1)
    xy[:, 0] = np.clip(xy[:, 0], 0.0, cols)
    xy[:, 1] = np.clip(xy[:, 1], 0.0, rows)
    return xy


# --------------------------------------------------------------------------- per image

@dataclass(frozen=True, eq=False)
class _Entry:
    """One region to analyse on an image: drawn, detected or the whole breast."""

    roi_id: str
    kind: str
    label: str
    outline: np.ndarray  # (N, 2) (column, row), PIXEL convention
    mask: np.ndarray | None  # bool (rows, columns); None when the region cannot be used
    failure: str | None = None  # why not (mask None)
    confidence: float | None = None  # detected clusters: the detector's confidence


def _drawn_entries(rois: list[Roi], geometry, warnings: list[str], problems: list[str]) -> list[_Entry]:
    """The drawn ROIs of one image as :class:`_Entry` objects. An ROI reaching outside the image is
    clipped to it, one lying wholly outside is left out (both said in ``warnings``; the latter also
    in ``problems``): one bad ROI never costs the others their scores."""
    entries = []
    spacing = geometry.pixel_spacing_mm
    uid = geometry.sop_instance_uid
    sources = list(dict.fromkeys(r.source_sop_instance_uid for r in rois))
    for roi in rois:
        # ROI ids are unique within one GSPS/SEG; with several objects on one image, say which
        roi_id = roi.roi_id
        if len(sources) > 1:
            roi_id += f"-src{sources.index(roi.source_sop_instance_uid) + 1}"
        label = _one_line(roi.label, 64)
        outline, clipped = clip_to_image(roi_outline(roi, geometry), geometry.rows, geometry.columns)
        if outline is None:
            problems.append(f"ROI {roi_id} on image {uid} lies outside the image")
            warnings.append(f"ROI not analysed: {roi_id} on image {uid} lies outside the image")
            continue
        if clipped:
            warnings.append(f"ROI {roi_id} on image {uid} reaches outside the image: outline clipped to it")
        try:
            if spacing is None:
                raise RoiError(NO_SPACING, reason="no_spacing")
            entries.append(_Entry(roi_id, roi.kind, label, outline, roi.rasterise(geometry)))
        except RoiError as exc:
            entries.append(_Entry(roi_id, roi.kind, label, outline, None, _one_line(str(exc), 1000)))
    return entries


def _whole_breast_entry(image) -> _Entry:
    """``no_roi="whole_breast"`` (research only): the breast outline as one ROI."""
    geometry = image.geometry
    full = _box(0, 0, geometry.rows, geometry.columns)
    if geometry.pixel_spacing_mm is None:
        return _Entry(WHOLE_BREAST_ROI_ID, "whole_breast", "whole breast", full, None, NO_SPACING)
    mask = breast_mask(image.pixels, geometry.pixel_spacing_mm)
    outline = mask_outline(mask)
    if outline is None:
        return _Entry(WHOLE_BREAST_ROI_ID, "whole_breast", "whole breast", full, None, "no breast found in the image")
    return _Entry(WHOLE_BREAST_ROI_ID, "whole_breast", "whole breast", outline, mask)


@dataclass(frozen=True, eq=False)
class _Detection:
    """What the cluster detection made of one image without ROI."""

    state: str  # analysis.results.CLUSTER_DETECTION
    entries: list  # one _Entry per detected cluster
    labels: np.ndarray | None  # the whole-breast segmentation's label image
    failure: str | None = None


def cluster_roi_id(cluster_id: int) -> str:
    return f"cluster-{int(cluster_id)}"


def _detect_views(images: Sequence, model, hdog_params, cluster_model: ClusterModel | None,
                  cluster_params: ClusterParams, threads: int | None) -> dict:
    """:func:`_detect` of each of ``images`` (by SOP Instance UID), ``threads`` views at once.

    A full-size view costs ~3.5 s, much of it in single-threaded NumPy/SciPy passes that release
    the GIL: two views in two threads took 10.3 s instead of 14.9 s for a 4-view study on 2 cores
    (same results). With one view (or one thread) they run one after the other, no thread started.
    """
    if threads is None:
        import torch  # already loaded by the CNN; its thread count is this process's share of cores

        threads = torch.get_num_threads()
    threads = max(1, min(int(threads), len(images)))
    if threads == 1:
        return {im.sop_instance_uid: _detect(im, model, hdog_params, cluster_model, cluster_params) for im in images}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="detect-view") as pool:
        futures = {im.sop_instance_uid: pool.submit(_detect, im, model, hdog_params, cluster_model, cluster_params)
                   for im in images}
        return {uid: future.result() for uid, future in futures.items()}


def _detect(image, model, hdog_params, cluster_model: ClusterModel | None,
            cluster_params: ClusterParams) -> _Detection:
    """Segment the whole breast once and detect its calcification clusters (docs/method.md §3.7);
    each cluster becomes an :class:`_Entry` whose mask is its outline's pixels (a pixel is in when
    its centre is in the polygon, as for a drawn polygon ROI)."""
    from analysis.segmentation.pipeline import segment

    spacing = image.geometry.pixel_spacing_mm
    if spacing is None:
        return _Detection("detection_failed", [], None, NO_SPACING)
    try:
        mask = breast_mask(image.pixels, spacing)
        if not mask.any():
            return _Detection("detection_failed", [], None, "no breast found in the image")
        # region=None: the segmentation searches the breast mask (this one: not computed twice)
        segmentation = segment(image.pixels, spacing, None, model, hdog_params, breast=mask)
    except Exception as exc:  # one image's failure must not lose the study
        return _Detection("detection_failed", [], None,
                          _one_line(f"segmentation failed: {type(exc).__name__}: {exc}", 1000))
    try:
        clusters = detect_clusters(segmentation, image.pixels, spacing, mask, cluster_params, cluster_model)
    except Exception as exc:
        return _Detection("detection_failed", [], segmentation.labels,
                          _one_line(f"cluster detection failed: {type(exc).__name__}: {exc}", 1000))
    if not clusters:
        return _Detection("no_cluster_detected", [], segmentation.labels)
    rows, cols = image.shape
    entries = []
    for cluster in clusters:
        # the outline is grown by a margin in mm around the members: keep it on the image
        outline = np.asarray(cluster.outline_xy, float).copy()
        outline[:, 0] = np.clip(outline[:, 0], 0.0, cols)
        outline[:, 1] = np.clip(outline[:, 1], 0.0, rows)
        roi_mask = polygon_mask(outline, image.shape)
        ident = cluster_roi_id(cluster.cluster_id)
        label = f"detected cluster {cluster.cluster_id}"
        if roi_mask.any():
            entries.append(_Entry(ident, "detected_cluster", label, outline, roi_mask,
                                  confidence=float(cluster.confidence)))
        else:
            entries.append(_Entry(ident, "detected_cluster", label, outline, None,
                                  "the detected cluster's outline encloses no pixel centre",
                                  confidence=float(cluster.confidence)))
    return _Detection("clusters_detected", entries, segmentation.labels)


def _roi_result(entry: _Entry, image, labels, seg_failure: str | None, bundle: ClassifierBundle,
                threshold: float, scores: dict, *, executor=None) -> RoiResult:
    """One region analysed as a drawn ROI is (:func:`analyze_roi`), whatever its origin."""
    uid = image.sop_instance_uid
    common = dict(roi_id=entry.roi_id, referenced_sop_instance_uid=uid, outline_px=entry.outline,
                  kind=entry.kind, label=entry.label, detection_confidence=entry.confidence)
    failure = entry.failure or (seg_failure if entry.mask is not None else None)
    if failure is None and labels is None:
        failure = "segmentation did not run"
    if failure is not None:
        return RoiResult(status="failed", reason=failure, **common)
    spacing = image.geometry.pixel_spacing_mm
    try:
        found = analyze_roi(image.pixels, spacing, image.bits_stored, entry.mask, labels, bundle, executor=executor)
    except Exception as exc:
        return RoiResult(status="failed", threshold=threshold, **common,
                         reason=_one_line(f"analysis failed: {type(exc).__name__}: {exc}", 1000))
    if found.status == "ok":
        scores[(uid, entry.roi_id)] = found.score
        return RoiResult(status="ok", calcification_labels=found.calcification_labels, score=found.score.score,
                         decision=found.score.decision, threshold=threshold, **common)
    return RoiResult(status="not_assessable", reason=found.reason, threshold=threshold,
                     calcification_labels=found.calcification_labels, **common)


def cluster_parameters(cluster_model: ClusterModel | None, params: ClusterParams) -> dict:
    """The result parameters that say how clusters were detected: the model's identity (name,
    version, SHA-256) or "rule" (:func:`analysis.clusters.rule_confidence`), its confidence
    threshold and the grouping rule's lengths (mm) and count."""
    from analysis.clusters import RULE_THRESHOLD

    if cluster_model is None:
        out = {"cluster_model": "rule", "cluster_threshold": float(RULE_THRESHOLD)}
    else:
        out = {"cluster_model": f"{cluster_model.name} {cluster_model.version}",
               "cluster_model_sha256": cluster_model.sha256,
               "cluster_threshold": float(cluster_model.threshold)}
        if cluster_model.member_threshold is not None:  # members searched for at the model's own threshold
            out["cluster_member_threshold"] = float(cluster_model.member_threshold)
        if cluster_model.member_density_per_cm2 is not None:  # ... raised per view to this density
            out["cluster_member_density_per_cm2"] = float(cluster_model.member_density_per_cm2)
    out.update({"cluster_link_mm": float(params.link_mm), "cluster_min_count": int(params.min_count),
                "cluster_window_mm2": float(params.window_mm2), "cluster_margin_mm": float(params.margin_mm)})
    return out


# --------------------------------------------------------------------------- the study

@dataclass(frozen=True, eq=False)
class StudyAnalysis:
    """:func:`study_analysis`'s full answer: the result for the writers, plus what they do not
    carry (per-ROI contributions, input problems, which file each image came from)."""

    result: StudyResult
    scores: dict = field(default_factory=dict)  # (image SOP UID, roi_id) -> Score
    problems: tuple[str, ...] = ()  # one sentence per input that could not be used
    image_files: dict = field(default_factory=dict)  # image SOP UID -> path (or Dataset) it was read from

    def records(self) -> list[dict]:
        """One JSON-ready dict per ROI (what ``calcnode analyze --json`` prints), in study order,
        plus one per image whose cluster detection found no cluster or failed: ``roi_id`` None,
        ``status`` None, ``cluster_detection`` says which (and ``reason`` why it failed)."""
        model = self.result.model
        model_json = {"name": model.name, "version": model.version, "sha256": model.sha256,
                      "not_for_clinical_use": model.not_for_clinical_use}
        out = []
        for image in self.result.images:
            source = self.image_files.get(image.sop_instance_uid)
            where = {"image": str(source) if isinstance(source, (str, Path)) else "",
                     "sop_instance_uid": image.sop_instance_uid}
            if not image.rois and image.cluster_detection in ("no_cluster_detected", "detection_failed"):
                out.append({**where, "roi_id": None, "roi_label": None, "roi_kind": None, "calcifications": None,
                            "score": None, "threshold": None, "decision": None, "assessable": None,
                            "status": None, "reason": image.detection_failure,
                            "cluster_detection": image.cluster_detection, "detection_confidence": None,
                            "top_features": [], "model": model_json})
            for roi in image.rois:
                score = self.scores.get((image.sop_instance_uid, roi.roi_id))
                out.append({
                    **where,
                    "roi_id": roi.roi_id,
                    "roi_label": roi.label,
                    "roi_kind": roi.kind,
                    "calcifications": roi.n_calcifications,
                    "score": None if roi.score is None else round(roi.score, 6),
                    "threshold": roi.threshold,
                    "decision": roi.decision,
                    "assessable": roi.assessable,
                    "status": roi.status,
                    "reason": roi.reason,
                    "cluster_detection": image.cluster_detection,
                    "detection_confidence": None if roi.detection_confidence is None
                    else round(roi.detection_confidence, 6),
                    "top_features": [c.to_json() for c in score.top_features] if score else [],
                    "model": model_json,
                })
        return out


def _study_uid_of(path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.StudyInstanceUID)
    except Exception:
        return None


@dataclass(frozen=True)
class _HeaderPass:
    """What :func:`_images_without_roi` learnt from the headers and the ROI files."""

    unreferenced: dict  # index in ``images`` -> (header geometry, Study Instance UID): no ROI refers to it
    geometries: frozenset  # the image geometries the ROI files were parsed against
    parsed: tuple | None  # parse_rois(...) of each ROI file; None when a parse raised


def _images_without_roi(images: Sequence, roi_files: Sequence, *, point_radius_mm: float,
                        default_pixel_spacing_mm: float | None) -> _HeaderPass:
    """The images no ROI refers to, from their headers and the parsed ROI files.

    Under ``no_roi = "skip"`` these are not analysed, so their pixels need not be decoded (a
    full-field mammogram takes ~25 ms). Headers only; an image whose header cannot be read is
    left out here, and :func:`load_image` then says why. The ROI parses are kept: the study
    reuses them when the images it loads have exactly these geometries (the usual case).
    """
    headers: dict[int, tuple[ImageGeometry, str]] = {}
    for k, source in enumerate(images):
        try:
            ds = read_dataset(source, stop_before_pixels=True)
            headers[k] = (read_geometry(ds, default_pixel_spacing_mm=default_pixel_spacing_mm),
                          str(ds.get("StudyInstanceUID", "")))
        except InputError:
            continue
    geometries = [g for g, _ in headers.values()]
    try:
        parsed = tuple(parse_rois(path, images=geometries, point_radius_mm=point_radius_mm) for path in roi_files)
    except Exception:  # noqa: BLE001 - the full parse in study_analysis reports it
        return _HeaderPass(unreferenced={}, geometries=frozenset(geometries), parsed=None)
    referenced = {roi.referenced_sop_instance_uid for found, _errors in parsed for roi in found}
    return _HeaderPass(unreferenced={k: h for k, h in headers.items() if h[0].sop_instance_uid not in referenced},
                       geometries=frozenset(geometries), parsed=parsed)


def study_analysis(images: Sequence, roi_files: Sequence = (), seg_model=None,
                   bundle: ClassifierBundle | str | Path | None = None, *, executor=None,
                   no_roi: str = "detect", point_radius_mm: float = DEFAULT_POINT_RADIUS_MM,
                   default_pixel_spacing_mm: float | None = None,
                   cluster_model: ClusterModel | str | Path | None = SHIPPED,
                   cluster_params: ClusterParams = ClusterParams(),
                   view_threads: int | None = None) -> StudyAnalysis:
    """See the module docstring. ``images``: paths (or datasets) of one study's mammograms;
    ``roi_files``: GSPS/SEG paths; ``seg_model``: SegmentationModel, a path, or None (the
    bundle's); ``bundle``: ClassifierBundle, a path, or None (the shipped demonstration bundle);
    ``executor``: optional pool for the per-object radiomics (:func:`analysis.features.feature_pool`);
    ``no_roi``: what an image without ROI gets (:data:`NO_ROI_POLICIES`, module docstring);
    ``cluster_model`` (``no_roi="detect"``): a :class:`analysis.clusters.ClusterModel`, its file,
    :data:`SHIPPED` (the shipped model, or the documented rule when there is none) or None (the
    rule); ``cluster_params``: the grouping rule's parameters (mm). The cluster model's identity
    and the rule's parameters are recorded in the result's parameters. ``view_threads``: how many
    views without ROI are searched for clusters at once (threads; the whole-breast segmentations
    are independent, so the results do not depend on it); None: as many as torch's compute threads
    in this process (the node's worker sets them to its share of the cores), 1: one after the other.

    Raises :class:`InputError` when no image can be used at all (nothing to report on) and
    ``ValueError`` when the images belong to several studies.
    """
    # Deferred on purpose: the CNN modules import torch (over a second), which importing this module
    # (e.g. for MIN_CALCIFICATIONS) should not cost.
    from analysis.segmentation.cnn import SegmentationModel
    from analysis.segmentation.pipeline import segment

    if no_roi not in NO_ROI_POLICIES:
        raise ValueError(f"no_roi must be one of {NO_ROI_POLICIES}, got {no_roi!r}")
    started = datetime.now()
    if not isinstance(bundle, ClassifierBundle):
        bundle = load_bundle(bundle)
    warnings: list[str] = []
    problems: list[str] = []
    if seg_model is None:
        model = bundle.segmentation_model()
    else:
        model = seg_model if isinstance(seg_model, SegmentationModel) else SegmentationModel.load(seg_model)
    hdog_params = bundle.hdog_params
    seg_identity = segmentation_identity(model, hdog_params)
    if seg_identity != bundle.segmentation_sha256:
        warnings.append(f"segmentation {seg_identity[:12]} (CNN and settings) is not the one the classifier "
                        f"was trained with ({bundle.segmentation_sha256[:12]}): scores may be off")

    if no_roi == "detect":
        if isinstance(cluster_model, str) and cluster_model == SHIPPED:
            cluster_model = default_cluster_model()
        elif cluster_model is not None and not isinstance(cluster_model, ClusterModel):
            cluster_model = ClusterModel.load(cluster_model)
        trained_on = (cluster_model.info.get("segmentation_model") or {}) if cluster_model is not None else {}
        if trained_on and (trained_on.get("weights_sha256") != model.sha256 or
                           float(trained_on.get("prediction_threshold", -1)) != float(model.params.prediction_threshold)):
            # cluster features (members, their CNN support) depend on the operating point
            warnings.append(f"the cluster model was trained on segmentation {str(trained_on.get('weights_sha256'))[:12]} "
                            f"at {trained_on.get('prediction_threshold')}, this analysis segments with "
                            f"{model.sha256[:12]} at {model.params.prediction_threshold:g}: detection may be off")

    header_pass = None if no_roi != "skip" else _images_without_roi(
        images, roi_files, point_radius_mm=point_radius_mm, default_pixel_spacing_mm=default_pixel_spacing_mm)
    unreferenced = header_pass.unreferenced if header_pass is not None else {}
    loaded = []
    skipped: list[tuple[ImageGeometry, str]] = []  # (header geometry, study UID): not decoded
    files: dict[str, Any] = {}
    for k, source in enumerate(images):
        if k in unreferenced:
            geometry, study_uid = unreferenced[k]
            if geometry.sop_instance_uid not in files:
                files[geometry.sop_instance_uid] = source
                skipped.append((geometry, study_uid))
                warnings.append(f"image {geometry.sop_instance_uid} has no ROI: not analysed (no_roi = skip)")
            continue
        try:
            image = load_image(source, default_pixel_spacing_mm=default_pixel_spacing_mm)
        except InputError as exc:
            problems.append(str(exc))
            warnings.append(f"image not analysed: {exc}")
            continue
        if image.sop_instance_uid in files:
            warnings.append(f"image {image.sop_instance_uid} given twice; analysed once")
            continue
        files[image.sop_instance_uid] = source  # a path, or the Dataset itself (for the writers)
        loaded.append(image)
    studies = sorted({im.study_instance_uid for im in loaded} | {uid for _, uid in skipped})
    if len(studies) > 1:
        raise ValueError(f"the images belong to {len(studies)} studies; analyse one study at a time")
    if not loaded and skipped:
        study_uid = studies[0]
    elif not loaded:
        uids = {u for u in (_study_uid_of(s) for s in images if isinstance(s, (str, Path))) if u}
        if len(uids) != 1:
            raise InputError("no usable image: " + ("; ".join(problems) or "none given"), reason="no_image")
        study_uid = uids.pop()
    else:
        study_uid = studies[0]

    geometries = [im.geometry for im in loaded] + [g for g, _ in skipped]
    by_image: dict[str, list[Roi]] = {}
    if header_pass is not None and header_pass.parsed is not None and set(geometries) == header_pass.geometries:
        parsed = header_pass.parsed  # parsed against these very geometries already
    else:
        parsed = [parse_rois(path, images=geometries, point_radius_mm=point_radius_mm) for path in roi_files]
    for found, errors in parsed:
        for roi in found:
            by_image.setdefault(roi.referenced_sop_instance_uid, []).append(roi)
        for error in errors:
            if error.reason == "unknown_image":
                warnings.append(f"ignored: {error}")
            else:
                problems.append(str(error))
                warnings.append(f"ROI not analysed: {error}")

    # an image too coarse for the method: nothing segmented, every ROI reports why (as an image
    # without spacing does: a "failed" ROI whose reason says the spacing, the limit and why)
    coarse_of = {im.sop_instance_uid: coarse_spacing_reason(im.geometry.pixel_spacing_mm, hdog_params)
                 if im.geometry.pixel_spacing_mm is not None else None for im in loaded}
    detections = _detect_views(
        [im for im in loaded if no_roi == "detect" and not by_image.get(im.sop_instance_uid)
         and coarse_of[im.sop_instance_uid] is None],
        model, hdog_params, cluster_model, cluster_params, view_threads)
    scores: dict = {}
    image_results = []
    threshold = bundle.threshold
    for image in loaded:
        uid = image.sop_instance_uid
        geometry = image.geometry
        spacing = geometry.pixel_spacing_mm
        rois = by_image.get(uid, [])
        if not rois and no_roi == "skip":
            warnings.append(f"image {uid} has no ROI: not analysed (no_roi = skip)")
            continue

        coarse = coarse_of[uid]
        if coarse is not None:
            warnings.append(f"image {uid} not analysed: {coarse}")
        detection = None
        if not rois and no_roi == "detect":
            detection = _Detection("detection_failed", [], None, coarse) if coarse is not None else detections[uid]
            if detection.failure is not None and coarse is None:
                warnings.append(f"image {uid}: no cluster detection: {detection.failure}")
            entries, labels, seg_failure = detection.entries, detection.labels, None
        else:
            entries = (_drawn_entries(rois, geometry, warnings, problems) if rois
                       else [_whole_breast_entry(image)])
            if coarse is not None:
                entries = [e if e.mask is None else replace(e, mask=None, failure=coarse) for e in entries]
            labels = None
            seg_failure = None
            usable = [e for e in entries if e.mask is not None]
            if usable:
                region = None if not rois else np.logical_or.reduce([e.mask for e in usable])
                try:
                    # whole breast: the entry's mask is the breast mask, not computed again
                    breast = usable[0].mask if not rois else None
                    labels = segment(image.pixels, spacing, region, model, hdog_params, breast=breast).labels
                except Exception as exc:  # one image's failure must not lose the study
                    seg_failure = _one_line(f"segmentation failed: {type(exc).__name__}: {exc}", 1000)

        roi_results = [_roi_result(entry, image, labels, seg_failure, bundle, threshold, scores,
                                   executor=executor) for entry in entries]
        cluster_state = None if detection is None else detection.state
        detection_failure = None if detection is None else detection.failure
        if labels is None:
            image_results.append(ImageResult(sop_instance_uid=uid, shape=image.shape, label_image=None,
                                             rois=tuple(roi_results), warnings=image.warnings,
                                             cluster_detection=cluster_state,
                                             detection_failure=detection_failure))
        else:
            image_results.append(ImageResult.from_label_image(
                sop_instance_uid=uid, label_image=labels, rois=roi_results, pixel_spacing_mm=spacing,
                warnings=image.warnings, cluster_detection=cluster_state, detection_failure=detection_failure))

    parameters = {
        "threshold": float(threshold),
        "segmentation_cnn": seg_identity,
        "min_calcifications": MIN_CALCIFICATIONS,
        "no_roi": no_roi,
    }
    if no_roi == "detect":
        parameters.update(cluster_parameters(cluster_model, cluster_params))
    k = getattr(bundle.aggregator, "k", None)
    if k is not None:
        parameters["kmeans_k"] = int(k)
    failure = None
    if not image_results:
        failure = "; ".join(problems)[:1000] or "no image analysed"
    result = StudyResult(study_instance_uid=study_uid, images=tuple(image_results), model=bundle.identity(),
                         started=started, finished=max(datetime.now(), started), parameters=parameters,
                         warnings=tuple(_one_line(w, 1000) for w in warnings), failure=failure)
    return StudyAnalysis(result=result, scores=scores, problems=tuple(problems), image_files=files)


def analyze_study(images: Sequence, roi_files: Sequence = (), seg_model=None,
                  bundle: ClassifierBundle | str | Path | None = None, *, executor=None,
                  no_roi: str = "detect", point_radius_mm: float = DEFAULT_POINT_RADIUS_MM,
                  default_pixel_spacing_mm: float | None = None,
                  cluster_model: ClusterModel | str | Path | None = SHIPPED,
                  cluster_params: ClusterParams = ClusterParams(), view_threads: int | None = None):
    """The :class:`analysis.results.StudyResult` of one study (see :func:`study_analysis`)."""
    return study_analysis(images, roi_files, seg_model, bundle, executor=executor, no_roi=no_roi,
                          point_radius_mm=point_radius_mm, default_pixel_spacing_mm=default_pixel_spacing_mm,
                          cluster_model=cluster_model, cluster_params=cluster_params,
                          view_threads=view_threads).result


__all__ = ["analyze_study", "study_analysis", "analyze_roi", "RoiAnalysis", "StudyAnalysis",
           "roi_calcifications", "not_assessable_reason", "roi_outline", "mask_outline",
           "cluster_parameters", "MIN_CALCIFICATIONS", "NO_ROI_POLICIES", "WHOLE_BREAST_ROI_ID", "SHIPPED"]
