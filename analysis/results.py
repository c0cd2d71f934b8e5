"""The analysis's output: the analysed study, as the DICOM writers see it.

These types say *what* was found, never *how*: the writers (``sr_templates``)
need nothing else, and the analysis fills them without knowing DICOM. They live
at the bottom of the analysis so that data flows one way (analyse -> write).
Everything is validated when it is built (highdicom style): inconsistent data
raise :class:`ValueError` with a sentence that says what is wrong, so a bad
result never reaches a PACS.

Conventions
-----------
* Pixel coordinates of outlines are in the DICOM GSPS / SR *PIXEL* convention:
  a point is (column, row) = (x, y) in pixels, (0, 0) is the top-left corner of
  the top-left pixel and the centre of pixel (r, c) is at (c + 0.5, r + 0.5).
  An outline is a closed polygon given by its N >= 3 vertices, the closing vertex
  not repeated (the writers close it).
* Pixel indices (``centroid_rc``, ``bbox``, the label image) are numpy indices:
  (row, column), row 0 at the top; the centre of pixel (r, c) is at index (r, c).
* Lengths and areas are in millimetres and square millimetres.
* Scores are dimensionless in [0, 1]; the decision at the operating point is
  ``"actionable"`` when ``score >= threshold``, else ``"benign"``.
* Times are :class:`datetime.datetime` (naive = local time of the node).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .extent import nonzero_extent

STATUSES = ("ok", "not_assessable", "failed")
DECISIONS = ("actionable", "benign")
# How a radiologist's region was drawn (a GSPS graphic type, or a SEG segment) ...
DRAWN_ROI_KINDS = ("ellipse", "circle", "polygon", "polyline", "point", "seg")
# ... and every kind of region a result can be about: a drawn one, a calcification cluster the
# node detected on an image without ROI (``no_roi = "detect"``), or the breast outline when an
# image without ROI is analysed as a whole (``no_roi = "whole_breast"``, research only).
ROI_KINDS = DRAWN_ROI_KINDS + ("detected_cluster", "whole_breast")
# How an image without drawn ROI was handled (ImageResult.cluster_detection; None: drawn ROIs,
# the whole breast, or no policy applied).
CLUSTER_DETECTION = ("clusters_detected", "no_cluster_detected", "detection_failed")
# BI-RADS descriptors the writers can code (sr_templates.codes maps them to SNOMED CT).
CALCIFICATION_TYPES = ("amorphous", "coarse_heterogeneous", "fine_pleomorphic",
                       "fine_linear_branching", "punctate", "round")
CALCIFICATION_DISTRIBUTIONS = ("grouped", "linear", "segmental", "regional", "diffuse")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PARAMETER_TYPES = (str, int, float, bool)


def _text(value: Any, what: str, *, max_len: int | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    if any(ch in value for ch in "\\\r\n"):
        raise ValueError(f"{what} must be one line without backslash (DICOM value delimiter): {value!r}")
    return value


def _unit_interval(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} {value!r} is outside [0, 1]")
    return number


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class ModelIdentity:
    """The model bundle that produced the scores.

    ``sha256``: hex digest (64 lowercase hex characters) of the bundle file or
    of its canonical manifest. ``training_data``: one line that says what the
    model was trained on. ``not_for_clinical_use``: True for the demonstration
    model (and anything not validated for clinical use); the writers then say
    "NOT FOR CLINICAL USE" in every object.
    """

    name: str
    version: str
    sha256: str
    training_data: str
    not_for_clinical_use: bool = True

    def __post_init__(self) -> None:
        _text(self.name, "model name", max_len=64)
        _text(self.version, "model version", max_len=64)
        _text(self.training_data, "model training_data", max_len=1024)
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"model sha256 must be 64 lowercase hex characters, got {self.sha256!r}")
        if not isinstance(self.not_for_clinical_use, bool):
            raise ValueError("model not_for_clinical_use must be True or False")


@dataclass(frozen=True)
class Calcification:
    """One segmented calcification, i.e. one label of :attr:`ImageResult.label_image`.

    ``bbox`` = (min_row, min_col, max_row, max_col), max exclusive (numpy slices).
    ``centroid_rc`` = (row, col) in pixel indices. ``area_mm2`` in mm² (None when
    the image has no pixel spacing).
    """

    label: int
    bbox: tuple[int, int, int, int]
    centroid_rc: tuple[float, float]
    area_mm2: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer)) or self.label <= 0:
            raise ValueError(f"calcification label must be a positive integer, got {self.label!r}")
        object.__setattr__(self, "label", int(self.label))
        if len(self.bbox) != 4:
            raise ValueError(f"calcification {self.label}: bbox must be (min_row, min_col, max_row, max_col)")
        r0, c0, r1, c1 = (int(v) for v in self.bbox)
        if not (0 <= r0 < r1 and 0 <= c0 < c1):
            raise ValueError(f"calcification {self.label}: bbox {self.bbox} is empty or negative")
        object.__setattr__(self, "bbox", (r0, c0, r1, c1))
        if len(self.centroid_rc) != 2 or not all(math.isfinite(float(v)) for v in self.centroid_rc):
            raise ValueError(f"calcification {self.label}: centroid_rc must be two finite numbers")
        object.__setattr__(self, "centroid_rc", (float(self.centroid_rc[0]), float(self.centroid_rc[1])))
        if self.area_mm2 is not None:
            area = float(self.area_mm2)
            if not math.isfinite(area) or area <= 0:
                raise ValueError(f"calcification {self.label}: area_mm2 must be > 0, got {self.area_mm2!r}")
            object.__setattr__(self, "area_mm2", area)


@dataclass(frozen=True, eq=False, kw_only=True)
class RoiResult:
    """The analysis of one region of interest on one image.

    ``status``: ``"ok"`` (scored), ``"not_assessable"`` (analysed, but fewer than two
    calcifications, or another reason the method does not apply) or ``"failed"``
    (an error stopped the analysis). ``reason`` is required unless ``ok``.
    ``assessable`` is derived from the status (True only for ``ok``); pass it only
    to have it checked.
    ``calcification_labels``: labels of :attr:`ImageResult.label_image` that belong
    to this ROI; ``n_calcifications`` is their number.
    ``score`` in [0, 1] and ``decision`` at the operating point ``threshold`` (both
    in [0, 1]) are set for ``ok`` only (``threshold`` may be given for the others).
    ``n_calcifications`` and ``assessable`` are derived when None and checked when
    given (with :func:`dataclasses.replace`, pass None to have them derived again).
    ``calcification_type`` / ``distribution``: BI-RADS descriptors when known
    (see :data:`CALCIFICATION_TYPES`, :data:`CALCIFICATION_DISTRIBUTIONS`).
    ``detection_confidence``: for ``kind = "detected_cluster"`` (a cluster the node found on an
    image without ROI, not one a radiologist drew) the detector's confidence in [0, 1] that the
    cluster is real; required for that kind and None for every other kind. It is not the score:
    the score says how likely an analysed cluster is actionable, the confidence that it exists.
    """

    roi_id: str
    referenced_sop_instance_uid: str
    outline_px: np.ndarray
    status: str
    kind: str = "polygon"
    label: str = ""
    calcification_labels: tuple[int, ...] = ()
    n_calcifications: int | None = None
    score: float | None = None
    decision: str | None = None
    threshold: float | None = None
    assessable: bool | None = None
    reason: str | None = None
    calcification_type: str | None = None
    distribution: str | None = None
    detection_confidence: float | None = None

    def __post_init__(self) -> None:
        _text(self.roi_id, "roi_id", max_len=64)
        where = f"ROI {self.roi_id!r}"
        _text(self.referenced_sop_instance_uid, f"{where}: referenced_sop_instance_uid", max_len=64)
        _text(self.label, f"{where}: label", max_len=64, allow_empty=True)
        if self.kind not in ROI_KINDS:
            raise ValueError(f"{where}: unknown kind {self.kind!r}; expected one of {ROI_KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"{where}: unknown status {self.status!r}; expected one of {STATUSES}")

        try:
            outline = np.asarray(self.outline_px, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: outline_px must be an (N, 2) array of numbers") from None
        if outline.ndim != 2 or outline.shape[1] != 2 or outline.shape[0] < 3:
            raise ValueError(f"{where}: outline_px must have shape (N, 2) with N >= 3 "
                             f"(column, row) vertices, got shape {outline.shape}")
        if not np.all(np.isfinite(outline)):
            raise ValueError(f"{where}: outline_px contains NaN or infinite coordinates")
        if len(outline) > 3 and np.array_equal(outline[0], outline[-1]):
            outline = outline[:-1]  # the closing vertex is implicit
        object.__setattr__(self, "outline_px", _readonly(outline))

        labels = tuple(int(v) for v in self.calcification_labels)
        if any(v <= 0 for v in labels):
            raise ValueError(f"{where}: calcification_labels must be positive, got {labels}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{where}: calcification_labels contains duplicates: {labels}")
        object.__setattr__(self, "calcification_labels", labels)
        n = len(labels) if self.n_calcifications is None else self.n_calcifications
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{where}: n_calcifications must be a non-negative integer, got {n!r}")
        if int(n) != len(labels):
            raise ValueError(f"{where}: n_calcifications={n} but {len(labels)} calcification_labels given")
        object.__setattr__(self, "n_calcifications", int(n))

        if self.score is not None:
            object.__setattr__(self, "score", _unit_interval(self.score, f"{where}: score"))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _unit_interval(self.threshold, f"{where}: threshold"))
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"{where}: unknown decision {self.decision!r}; expected one of {DECISIONS}")
        if self.reason is not None:
            _text(self.reason, f"{where}: reason", max_len=1024)

        if self.status == "ok":
            missing = [n for n in ("score", "threshold", "decision") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{where}: status 'ok' needs {', '.join(missing)}")
            expected = "actionable" if self.score >= self.threshold else "benign"
            if self.decision != expected:
                raise ValueError(f"{where}: decision {self.decision!r} contradicts score {self.score:g} "
                                 f"and threshold {self.threshold:g} (expected {expected!r})")
            if self.n_calcifications < 2:
                raise ValueError(f"{where}: status 'ok' needs at least 2 calcifications, got "
                                 f"{self.n_calcifications}; report it as 'not_assessable'")
        else:
            if self.score is not None or self.decision is not None:
                raise ValueError(f"{where}: status {self.status!r} cannot carry a score or a decision")
            if not self.reason:
                raise ValueError(f"{where}: status {self.status!r} needs a reason")
        derived = self.status == "ok"
        if self.assessable is not None and bool(self.assessable) != derived:
            raise ValueError(f"{where}: assessable={self.assessable} contradicts status {self.status!r}")
        object.__setattr__(self, "assessable", derived)

        if self.calcification_type is not None and self.calcification_type not in CALCIFICATION_TYPES:
            raise ValueError(f"{where}: unknown calcification_type {self.calcification_type!r}; "
                             f"expected one of {CALCIFICATION_TYPES}")
        if self.distribution is not None and self.distribution not in CALCIFICATION_DISTRIBUTIONS:
            raise ValueError(f"{where}: unknown distribution {self.distribution!r}; "
                             f"expected one of {CALCIFICATION_DISTRIBUTIONS}")
        if self.kind == "detected_cluster":
            if self.detection_confidence is None:
                raise ValueError(f"{where}: a detected cluster needs its detection_confidence in [0, 1]")
            object.__setattr__(self, "detection_confidence",
                               _unit_interval(self.detection_confidence, f"{where}: detection_confidence"))
        elif self.detection_confidence is not None:
            raise ValueError(f"{where}: detection_confidence is for kind 'detected_cluster' only, "
                             f"this ROI is {self.kind!r}")

    @property
    def detected(self) -> bool:
        """True when the node found this region (a detected cluster), False when a radiologist drew it
        (or, for ``whole_breast``, when it is the breast outline)."""
        return self.kind == "detected_cluster"

    @property
    def display_name(self) -> str:
        return self.label or self.roi_id


def _labels_present(labels: np.ndarray, extent=False) -> set[int]:
    """The non-zero labels of a label image. A histogram is one pass over the pixels where
    ``np.unique`` sorts them (0.2 s for a full-field mammogram); ``np.unique`` is kept for
    the rare label image whose largest label would make the histogram large. ``extent``: the
    labels' :func:`nonzero_extent` when the caller has it."""
    extent = nonzero_extent(labels) if extent is False else extent
    if extent is None:
        return set()
    labels = labels[extent]
    if int(labels.max()) <= 4 * labels.size:
        return set(np.flatnonzero(np.bincount(labels.ravel())).tolist()) - {0}
    return set(np.unique(labels).tolist()) - {0}


@dataclass(frozen=True, eq=False, kw_only=True)
class ImageResult:
    """The analysis of one source image.

    ``shape`` = (rows, columns) of the source image. ``label_image``: int32
    (rows, columns), 0 = background, k > 0 = calcification k; None when the
    segmentation did not run (then every ROI must be ``failed``).
    ``calcifications``: optional per-label details (see :class:`Calcification`).
    ``cluster_detection``: how an image without drawn ROI was handled under ``no_roi = "detect"``
    (:data:`CLUSTER_DETECTION`); None for an image with drawn ROIs (no detection runs on it) or
    analysed as a whole breast. ``"clusters_detected"``: every ROI is a ``detected_cluster``
    (at least one); ``"no_cluster_detected"``: the whole breast was segmented (``label_image`` set)
    and no cluster found, so the image has no ROI, no score and no decision;
    ``"detection_failed"``: the detection could not run or failed, the image has no ROI and
    ``detection_failure`` says why (required then, None otherwise). Detected clusters appear only
    with ``"clusters_detected"``.
    """

    sop_instance_uid: str
    shape: tuple[int, int]
    label_image: np.ndarray | None
    rois: tuple[RoiResult, ...]
    calcifications: tuple[Calcification, ...] = ()
    warnings: tuple[str, ...] = ()
    cluster_detection: str | None = None
    detection_failure: str | None = None
    # derived: (row slice, column slice) of the non-zero labels, None when there are none
    label_extent: tuple[slice, slice] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        _text(self.sop_instance_uid, "image sop_instance_uid", max_len=64)
        where = f"image {self.sop_instance_uid}"
        if len(self.shape) != 2 or any(int(v) <= 0 for v in self.shape):
            raise ValueError(f"{where}: shape must be (rows, columns) > 0, got {self.shape!r}")
        shape = (int(self.shape[0]), int(self.shape[1]))
        object.__setattr__(self, "shape", shape)

        present: set[int] = set()
        if self.label_image is not None:
            labels = np.asarray(self.label_image)
            if labels.shape != shape:
                raise ValueError(f"{where}: label_image has shape {labels.shape}, the image is {shape} "
                                 "(rows, columns)")
            if labels.dtype.kind not in "iub":
                raise ValueError(f"{where}: label_image must hold integers, got dtype {labels.dtype}")
            # Checked on the box of the non-zero pixels: the rest is 0. One pass over the 8-14 Mpx
            # image and one copy (ours, read-only) instead of five passes and two copies.
            extent = nonzero_extent(labels)
            box = labels[extent] if extent is not None else labels[:0, :0]
            if box.size and (box.min() < 0 or box.max() > np.iinfo(np.int32).max):
                raise ValueError(f"{where}: label_image values must be in [0, 2**31 - 1]")
            # Our copy holds the box only: np.zeros is lazily zeroed memory (calloc), so the
            # 8-14 Mpx of background cost neither a copy pass nor, until read, their pages.
            copy = np.zeros(shape, np.int32)
            if extent is not None:
                copy[extent] = box
            labels = copy
            labels.setflags(write=False)
            object.__setattr__(self, "label_image", labels)
            object.__setattr__(self, "label_extent", extent)
            present = _labels_present(labels, extent)

        rois = tuple(self.rois)
        object.__setattr__(self, "rois", rois)
        seen: set[str] = set()
        rows, cols = shape
        for roi in rois:
            if not isinstance(roi, RoiResult):
                raise ValueError(f"{where}: rois must be RoiResult objects, got {type(roi).__name__}")
            if roi.referenced_sop_instance_uid != self.sop_instance_uid:
                raise ValueError(f"ROI {roi.roi_id!r} references image {roi.referenced_sop_instance_uid}, "
                                 f"but it is listed under image {self.sop_instance_uid}")
            if roi.roi_id in seen:
                raise ValueError(f"{where}: roi_id {roi.roi_id!r} is used twice")
            seen.add(roi.roi_id)
            x, y = roi.outline_px[:, 0], roi.outline_px[:, 1]
            if x.min() < -0.5 or y.min() < -0.5 or x.max() > cols + 0.5 or y.max() > rows + 0.5:
                raise ValueError(f"ROI {roi.roi_id!r}: outline_px leaves the {cols} x {rows} image "
                                 "(coordinates are (column, row) in the GSPS PIXEL convention)")
            if self.label_image is None:
                if roi.status != "failed":
                    raise ValueError(f"ROI {roi.roi_id!r} has status {roi.status!r} but {where} has no "
                                     "label_image (segmentation missing): only 'failed' ROIs are possible")
            else:
                missing = sorted(set(roi.calcification_labels) - present)
                if missing:
                    raise ValueError(f"ROI {roi.roi_id!r}: calcification labels {missing} do not occur in "
                                     f"the label_image of {where}")

        self._check_cluster_detection(where)

        calcs = tuple(self.calcifications)
        object.__setattr__(self, "calcifications", calcs)
        for calc in calcs:
            if not isinstance(calc, Calcification):
                raise ValueError(f"{where}: calcifications must be Calcification objects")
            if calc.label not in present:
                raise ValueError(f"{where}: calcification label {calc.label} does not occur in the label_image")
            if calc.bbox[2] > rows or calc.bbox[3] > cols:
                raise ValueError(f"{where}: calcification {calc.label} bbox {calc.bbox} leaves the image")
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    def _check_cluster_detection(self, where: str) -> None:
        state = self.cluster_detection
        detected = [roi.roi_id for roi in self.rois if roi.kind == "detected_cluster"]
        if state is not None and state not in CLUSTER_DETECTION:
            raise ValueError(f"{where}: unknown cluster_detection {state!r}; expected None or one of "
                             f"{CLUSTER_DETECTION}")
        if state == "clusters_detected":
            if not self.rois:
                raise ValueError(f"{where}: cluster_detection 'clusters_detected' needs at least one "
                                 "detected cluster ROI")
            if len(detected) != len(self.rois):
                raise ValueError(f"{where}: cluster_detection 'clusters_detected' but ROIs "
                                 f"{[r.roi_id for r in self.rois if r.kind != 'detected_cluster']} were "
                                 "not detected (an image with drawn ROIs gets no detection)")
        elif detected:
            raise ValueError(f"{where}: ROIs {detected} are detected clusters, so cluster_detection must be "
                             f"'clusters_detected', got {state!r}")
        if state in ("no_cluster_detected", "detection_failed") and self.rois:
            raise ValueError(f"{where}: cluster_detection {state!r} means the image has no ROI, "
                             f"but it has {len(self.rois)}")
        if state == "no_cluster_detected" and self.label_image is None:
            raise ValueError(f"{where}: cluster_detection 'no_cluster_detected' needs the label_image of the "
                             "whole-breast segmentation (no segmentation: 'detection_failed')")
        if state == "detection_failed":
            if not self.detection_failure:
                raise ValueError(f"{where}: cluster_detection 'detection_failed' needs a detection_failure reason")
            _text(self.detection_failure, f"{where}: detection_failure", max_len=1024)
        elif self.detection_failure is not None:
            raise ValueError(f"{where}: detection_failure is for cluster_detection 'detection_failed' only")

    @property
    def no_cluster_detected(self) -> bool:
        """True when the detection ran on this image without ROI and found no cluster."""
        return self.cluster_detection == "no_cluster_detected"

    def roi_mask(self, roi: RoiResult) -> np.ndarray:
        """bool (rows, columns): the pixels of the calcifications of ``roi``."""
        if self.label_image is None or not roi.calcification_labels:
            return np.zeros(self.shape, dtype=bool)
        return np.isin(self.label_image, np.asarray(roi.calcification_labels, dtype=np.int32))

    @classmethod
    def from_label_image(cls, *, sop_instance_uid: str, label_image: np.ndarray,
                         rois, pixel_spacing_mm: tuple[float, float] | None = None,
                         warnings=(), cluster_detection: str | None = None,
                         detection_failure: str | None = None) -> "ImageResult":
        """Build an image result and its :class:`Calcification` list from a label image.

        ``pixel_spacing_mm`` = (row spacing, column spacing) in mm, for the areas.
        """
        from skimage.measure import regionprops

        labels = np.asarray(label_image)
        calcs = []
        pixel_area = None if pixel_spacing_mm is None else float(pixel_spacing_mm[0] * pixel_spacing_mm[1])
        extent = nonzero_extent(labels)  # regionprops on the calcifications' box, not 8-14 Mpx
        if extent is not None:
            r0, c0 = extent[0].start, extent[1].start
            for region in regionprops(labels[extent].astype(np.int32)):
                calcs.append(Calcification(
                    label=int(region.label), bbox=tuple(int(v) + o for v, o in zip(region.bbox, (r0, c0, r0, c0))),
                    centroid_rc=(float(region.centroid[0]) + r0, float(region.centroid[1]) + c0),
                    area_mm2=None if pixel_area is None else float(region.area) * pixel_area))
        return cls(sop_instance_uid=sop_instance_uid, shape=labels.shape, label_image=labels,
                   rois=tuple(rois), calcifications=tuple(calcs), warnings=tuple(warnings),
                   cluster_detection=cluster_detection, detection_failure=detection_failure)


def _freeze_parameters(parameters: Mapping[str, Any] | None) -> Mapping[str, Any]:
    params: dict[str, Any] = {}
    for key, value in dict(parameters or {}).items():
        _text(key, "parameter name", max_len=64)
        if not isinstance(value, _PARAMETER_TYPES):
            raise ValueError(f"parameter {key!r}: value must be str, int, float or bool, "
                             f"got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"parameter {key!r}: value must be finite, got {value!r}")
        params[key] = value
    return MappingProxyType(dict(sorted(params.items())))


@dataclass(frozen=True, eq=False, kw_only=True)
class StudyResult:
    """The analysis of one study: what every writer of this package takes.

    ``parameters``: the algorithm parameters that matter to a reader (threshold,
    K, lengths in mm, ...), name -> str/int/float/bool; stored read-only and
    sorted by name. ``failure``: set when the whole analysis failed (then
    ``images`` may be empty and the SRs say so and why).
    """

    study_instance_uid: str
    images: tuple[ImageResult, ...]
    model: ModelIdentity
    started: datetime
    finished: datetime
    parameters: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    failure: str | None = None

    def __post_init__(self) -> None:
        _text(self.study_instance_uid, "study_instance_uid", max_len=64)
        if not isinstance(self.model, ModelIdentity):
            raise ValueError("model must be a ModelIdentity")
        if not isinstance(self.started, datetime) or not isinstance(self.finished, datetime):
            raise ValueError("started and finished must be datetime objects")
        if (self.started.tzinfo is None) != (self.finished.tzinfo is None):
            raise ValueError("started and finished must both be naive or both be timezone-aware")
        if self.finished < self.started:
            raise ValueError(f"finished ({self.finished.isoformat()}) is before started "
                             f"({self.started.isoformat()})")
        images = tuple(self.images)
        object.__setattr__(self, "images", images)
        seen: set[str] = set()
        for image in images:
            if not isinstance(image, ImageResult):
                raise ValueError(f"images must be ImageResult objects, got {type(image).__name__}")
            if image.sop_instance_uid in seen:
                raise ValueError(f"image {image.sop_instance_uid} is listed twice")
            seen.add(image.sop_instance_uid)
        if not images and self.failure is None:
            raise ValueError("a study result needs at least one image, or a failure reason")
        if self.failure is not None:
            _text(self.failure, "failure", max_len=1024)
        object.__setattr__(self, "parameters", _freeze_parameters(self.parameters))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    @property
    def rois(self) -> list[tuple[ImageResult, RoiResult]]:
        """Every ROI of the study with its image, in study order."""
        return [(image, roi) for image in self.images for roi in image.rois]

    def image(self, sop_instance_uid: str) -> ImageResult:
        for image in self.images:
            if image.sop_instance_uid == sop_instance_uid:
                return image
        raise KeyError(f"image {sop_instance_uid} is not in study result {self.study_instance_uid}")
