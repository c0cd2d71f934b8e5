"""Every coded concept the writers put in a DICOM object, in one place.

Three tables:

* :data:`STANDARD_CODES` - DICOM (DCM), SNOMED CT (SCT) and UCUM codes that
  pydicom's code dictionary (``pydicom.sr._concepts_dict``) knows; the tests check
  each value, scheme and meaning against it, and :data:`CONTEXT_GROUPS` against
  pydicom's context-group membership (``pydicom.sr._cid_dict``).
* :data:`CODES_NOT_IN_PYDICOM` - standard codes pydicom lacks, each with the part
  of the standard that defines it (the tests check that pydicom indeed lacks them,
  so this table never hides a typo).
* :data:`PRIVATE_CODES` - this project's own concepts, coding scheme
  :data:`PRIVATE_SCHEME` (PS3.16 §8.2: a private scheme designator starts with
  "99"; every object that uses one declares it in its Coding Scheme
  Identification Sequence). Used where no standard concept says what we mean.
"""
from __future__ import annotations

from pydicom.sr.coding import Code

# ------------------------------------------------------------------ private scheme
PRIVATE_SCHEME = "99CALCNODE"
PRIVATE_SCHEME_NAME = "calcnode result concepts"
PRIVATE_SCHEME_ORGANIZATION = "calcnode project"

ACTIONABLE_SCORE = Code("CN001", PRIVATE_SCHEME, "Actionable calcification cluster score")
DECISION_AT_OPERATING_POINT = Code("CN002", PRIVATE_SCHEME, "Decision at operating point")
DECISION_ACTIONABLE = Code("CN003", PRIVATE_SCHEME, "Actionable (high-risk or malignant)")
DECISION_BENIGN = Code("CN004", PRIVATE_SCHEME, "Benign")
ANALYSIS_STATUS = Code("CN005", PRIVATE_SCHEME, "Analysis status")
STATUS_OK = Code("CN006", PRIVATE_SCHEME, "Analysed")
STATUS_NOT_ASSESSABLE = Code("CN007", PRIVATE_SCHEME, "Not assessable")
STATUS_FAILED = Code("CN008", PRIVATE_SCHEME, "Analysis failed")
# Where an ROI came from: no standard concept says "drawn by a reader" vs "found by a device" for
# a TID 1410 region (Observer Type is per document, and the document's observer is calcnode).
ROI_SOURCE = Code("CN009", PRIVATE_SCHEME, "ROI source")
ROI_DRAWN = Code("CN010", PRIVATE_SCHEME, "Drawn by radiologist")
ROI_DETECTED = Code("CN011", PRIVATE_SCHEME, "Detected by calcnode")
ROI_WHOLE_BREAST = Code("CN012", PRIVATE_SCHEME, "Whole breast outline by calcnode")
# The outcome of the cluster detection on a view without ROI (TID 1501 image-level group).
CLUSTER_DETECTION = Code("CN013", PRIVATE_SCHEME, "Calcification cluster detection")
NO_CLUSTER_DETECTED = Code("CN014", PRIVATE_SCHEME, "No calcification cluster detected")
CLUSTER_DETECTION_FAILED = Code("CN015", PRIVATE_SCHEME, "Calcification cluster detection failed")

PRIVATE_CODES = {
    "ACTIONABLE_SCORE": ACTIONABLE_SCORE,
    "DECISION_AT_OPERATING_POINT": DECISION_AT_OPERATING_POINT,
    "DECISION_ACTIONABLE": DECISION_ACTIONABLE,
    "DECISION_BENIGN": DECISION_BENIGN,
    "ANALYSIS_STATUS": ANALYSIS_STATUS,
    "STATUS_OK": STATUS_OK,
    "STATUS_NOT_ASSESSABLE": STATUS_NOT_ASSESSABLE,
    "STATUS_FAILED": STATUS_FAILED,
    "ROI_SOURCE": ROI_SOURCE,
    "ROI_DRAWN": ROI_DRAWN,
    "ROI_DETECTED": ROI_DETECTED,
    "ROI_WHOLE_BREAST": ROI_WHOLE_BREAST,
    "CLUSTER_DETECTION": CLUSTER_DETECTION,
    "NO_CLUSTER_DETECTED": NO_CLUSTER_DETECTED,
    "CLUSTER_DETECTION_FAILED": CLUSTER_DETECTION_FAILED,
}
DECISION_CODES = {"actionable": DECISION_ACTIONABLE, "benign": DECISION_BENIGN}
STATUS_CODES = {"ok": STATUS_OK, "not_assessable": STATUS_NOT_ASSESSABLE, "failed": STATUS_FAILED}
DETECTION_OUTCOME_CODES = {"no_cluster_detected": NO_CLUSTER_DETECTED, "detection_failed": CLUSTER_DETECTION_FAILED}
#: The words every object uses for a view whose cluster detection found nothing.
NO_CLUSTER_DETECTED_TEXT = NO_CLUSTER_DETECTED.meaning


def roi_source(kind: str) -> Code:
    """The ROI source value of an ROI kind (:data:`analysis.results.ROI_KINDS`)."""
    if kind == "detected_cluster":
        return ROI_DETECTED
    if kind == "whole_breast":
        return ROI_WHOLE_BREAST
    return ROI_DRAWN

# ------------------------------------------------------------------ findings (SEG, SR)
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")
INDIVIDUAL_CALCIFICATION = Code("129770007", "SCT", "Individual calcification")
CALCIFICATION_CLUSTER = Code("129769006", "SCT", "Calcification cluster")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # CID 7162 algorithm family
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")  # CID 7005 purpose of reference

# ------------------------------------------------------------------ TID 1500 (Comprehensive SR)
MAMMOGRAPHY_PROCEDURE = Code("71651007", "SCT", "Mammography")
NUMBER_OF_CALCIFICATIONS = Code("111038", "DCM", "Number of calcifications")
THRESHOLD_VALUE = Code("122411", "DCM", "Threshold Value")
COMMENT = Code("121106", "DCM", "Comment")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 10
CALCIFICATION_TYPE = Code("111009", "DCM", "Calcification Type")
CALCIFICATION_DISTRIBUTION = Code("111008", "DCM", "Calcification Distribution")
NO_UNITS = Code("1", "UCUM", "no units")
PERCENT = Code("%", "UCUM", "Percent")
MILLIMETER = Code("mm", "UCUM", "mm")
PIXELS = Code("{pixels}", "UCUM", "Pixels")
SOURCE = Code("260753009", "SCT", "Source")  # Image Library entry (TID 1601), as highdicom writes it
MAMMOGRAPHY_MODALITY = Code("MG", "DCM", "Mammography")  # CID 29 Acquisition Modality

CALCIFICATION_TYPE_CODES = {  # CID 6010 "Mammography Calcification Type"
    "amorphous": Code("129760005", "SCT", "Amorphous calcification"),
    "coarse_heterogeneous": Code("129763007", "SCT", "Heterogeneous calcification"),
    "fine_pleomorphic": Code("111344", "DCM", "Fine pleomorphic calcification"),
    "fine_linear_branching": Code("129762002", "SCT", "Fine linear, branching (casting) calcification"),
    "punctate": Code("129755006", "SCT", "Punctate calcification"),
    "round": Code("129756007", "SCT", "Round shaped calcification"),
}
DISTRIBUTION_CODES = {  # CID 6012 "Calcification Distribution Modifier"
    "grouped": Code("129766004", "SCT", "Grouped calcification distribution"),
    "linear": Code("129765000", "SCT", "Linear calcification distribution"),
    "segmental": Code("129768003", "SCT", "Segmental calcification distribution"),
    "regional": Code("129767008", "SCT", "Regional calcification distribution"),
    "diffuse": Code("129764001", "SCT", "Diffuse calcification distribution"),
}

# ------------------------------------------------------------------ TID 4000 (Mammography CAD SR)
MAMMOGRAPHY_CAD_REPORT = Code("111036", "DCM", "Mammography CAD Report")
LANGUAGE_OF_CONTENT = Code("121049", "DCM", "Language of Content Item and Descendants")
IMAGE_LIBRARY = Code("111028", "DCM", "Image Library")
IMAGE_LATERALITY = Code("111027", "DCM", "Image Laterality")
IMAGE_VIEW = Code("111031", "DCM", "Image View")
IMAGE_VIEW_MODIFIER = Code("111032", "DCM", "Image View Modifier")
PATIENT_ORIENTATION_ROW = Code("111044", "DCM", "Patient Orientation Row")
PATIENT_ORIENTATION_COLUMN = Code("111043", "DCM", "Patient Orientation Column")
STUDY_DATE = Code("111060", "DCM", "Study Date")
STUDY_TIME = Code("111061", "DCM", "Study Time")
CONTENT_DATE = Code("111018", "DCM", "Content Date")
CONTENT_TIME = Code("111019", "DCM", "Content Time")
HORIZONTAL_PIXEL_SPACING = Code("111026", "DCM", "Horizontal Pixel Spacing")
VERTICAL_PIXEL_SPACING = Code("111066", "DCM", "Vertical Pixel Spacing")
CAD_PROCESSING_AND_FINDINGS_SUMMARY = Code("111017", "DCM", "CAD Processing and Findings Summary")
INDIVIDUAL_IMPRESSION_RECOMMENDATION = Code("111034", "DCM", "Individual Impression/Recommendation")
RENDERING_INTENT = Code("111056", "DCM", "Rendering Intent")
SINGLE_IMAGE_FINDING = Code("111059", "DCM", "Single Image Finding")
CAD_OPERATING_POINT = Code("111071", "DCM", "CAD Operating Point")
MAXIMUM_CAD_OPERATING_POINT = Code("111072", "DCM", "Maximum CAD Operating Point")
RECOMMENDED_CAD_OPERATING_POINT = Code("111092", "DCM", "Recommended CAD Operating Point")
CERTAINTY_OF_FINDING = Code("111012", "DCM", "Certainty of Finding")
CENTER = Code("111010", "DCM", "Center")
OUTLINE = Code("111041", "DCM", "Outline")
SUMMARY_OF_DETECTIONS = Code("111064", "DCM", "Summary of Detections")
SUMMARY_OF_ANALYSES = Code("111065", "DCM", "Summary of Analyses")
SUCCESSFUL_DETECTIONS = Code("111063", "DCM", "Successful Detections")
FAILED_DETECTIONS = Code("111025", "DCM", "Failed Detections")
SUCCESSFUL_ANALYSES = Code("111062", "DCM", "Successful Analyses")
FAILED_ANALYSES = Code("111024", "DCM", "Failed Analyses")
DETECTION_PERFORMED = Code("111022", "DCM", "Detection Performed")
ANALYSIS_PERFORMED = Code("111004", "DCM", "Analysis Performed")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
ALGORITHM_PARAMETERS = Code("111002", "DCM", "Algorithm Parameters")
INDIVIDUAL_IMPRESSION_ANALYSIS = Code("111233", "DCM", "Individual Impression/Recommendation Analysis")
ARBITRARY_UNIT = Code("[arb'U]", "UCUM", "arbitrary unit")

# CID 6034 "Intended Use of CAD Output"
PRESENTATION_REQUIRED = Code("111150", "DCM", "Presentation Required: Rendering device is expected to present")
PRESENTATION_OPTIONAL = Code("111151", "DCM", "Presentation Optional: Rendering device may present")
NOT_FOR_PRESENTATION = Code("111152", "DCM", "Not for Presentation: Rendering device expected not to present")
# CID 6042 "Status of Results"
SUCCEEDED = Code("111222", "DCM", "Succeeded")
PARTIALLY_SUCCEEDED = Code("111223", "DCM", "Partially Succeeded")
FAILED = Code("111224", "DCM", "Failed")
NOT_ATTEMPTED = Code("111225", "DCM", "Not Attempted")
# CID 6047 "CAD Processing and Findings Summary"
ALL_SUCCEEDED_WITHOUT_FINDINGS = Code("111241", "DCM", "All algorithms succeeded; without findings")
ALL_SUCCEEDED_WITH_FINDINGS = Code("111242", "DCM", "All algorithms succeeded; with findings")
NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS = Code("111243", "DCM", "Not all algorithms succeeded; without findings")
NOT_ALL_SUCCEEDED_WITH_FINDINGS = Code("111244", "DCM", "Not all algorithms succeeded; with findings")
NONE_SUCCEEDED_WITHOUT_FINDINGS = Code("111245", "DCM", "No algorithms succeeded; without findings")

# CID 6022 "Side" (Image Laterality in the CAD image library)
LATERALITY_CODES = {
    "L": Code("80248007", "SCT", "Left breast"),
    "R": Code("73056007", "SCT", "Right breast"),
    "B": Code("63762007", "SCT", "Both breasts"),
}
# CID 4014 "View for Mammography", keyed by the View Position (0018,5101) defined terms.
VIEW_CODES = {
    "CC": Code("399162004", "SCT", "cranio-caudal"),
    "MLO": Code("399368009", "SCT", "medio-lateral oblique"),
    "ML": Code("399260004", "SCT", "medial-lateral"),
    "LM": Code("399352003", "SCT", "latero-medial"),
    "LMO": Code("399099002", "SCT", "latero-medial oblique"),
    "XCCL": Code("399192008", "SCT", "cranio-caudal exaggerated laterally"),
    "XCCM": Code("399101009", "SCT", "cranio-caudal exaggerated medially"),
    "FB": Code("399196006", "SCT", "caudo-cranial"),
    "SIO": Code("399188001", "SCT", "superolateral to inferomedial oblique"),
    "ISO": Code("441555000", "SCT", "inferomedial to superolateral oblique"),
}

# ------------------------------------------------------------------ codes pydicom lacks
LANGUAGE_EN_US = Code("en-US", "RFC5646", "English (United States)")
OPERATING_POINT_RANGE = Code("{0:1}", "UCUM", "range: 0:1")

CODES_NOT_IN_PYDICOM = {
    "LANGUAGE_EN_US": (LANGUAGE_EN_US,
                       "PS3.16 CID 5000 'Language': values are RFC 5646 tags, scheme RFC5646 "
                       "(TID 1204 row 1; the same item highdicom writes in TID 1500)"),
    "PIXELS": (PIXELS, "PS3.16 TID 1602 rows 3-4 (Pixel Data Rows / Columns): UNITS = EV ({pixels}, UCUM, "
               "\"pixels\"); highdicom writes the meaning \"Pixels\""),
    "OPERATING_POINT_RANGE": (OPERATING_POINT_RANGE,
                              "PS3.16 TID 4023 rows 2 and 6: UNITS = DT ({0:n}, UCUM, \"range: 0:n\") "
                              "where n is the Maximum CAD Operating Point (here 1)"),
}

STANDARD_CODES = {name: value for name, value in globals().items()
                  if isinstance(value, Code) and value.scheme_designator in ("DCM", "SCT", "UCUM")
                  and name not in CODES_NOT_IN_PYDICOM}
for _group, _table in (("CALCIFICATION_TYPE", CALCIFICATION_TYPE_CODES), ("DISTRIBUTION", DISTRIBUTION_CODES),
                       ("LATERALITY", LATERALITY_CODES), ("VIEW", VIEW_CODES)):
    for _key, _code in _table.items():
        STANDARD_CODES[f"{_group}_{_key}"] = _code

# Values that must come from a given context group (template row -> CID).
CONTEXT_GROUPS = {
    6014: [CALCIFICATION_CLUSTER, INDIVIDUAL_CALCIFICATION],  # TID 4006 row 1, TID 4017 $DetectionCode
    6034: [PRESENTATION_REQUIRED, PRESENTATION_OPTIONAL, NOT_FOR_PRESENTATION],  # Rendering Intent
    6042: [SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, NOT_ATTEMPTED],  # Summary of Detections/Analyses
    6043: [INDIVIDUAL_IMPRESSION_ANALYSIS],  # TID 4018 $AnalysisCode
    6047: [ALL_SUCCEEDED_WITHOUT_FINDINGS, ALL_SUCCEEDED_WITH_FINDINGS, NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS,
           NOT_ALL_SUCCEEDED_WITH_FINDINGS, NONE_SUCCEEDED_WITHOUT_FINDINGS],  # TID 4001 row 1
    6048: [CERTAINTY_OF_FINDING],  # CAD operating point axis label
    6022: list(LATERALITY_CODES.values()),  # TID 4020 $ImageLaterality
    4014: list(VIEW_CODES.values()),  # TID 4020 $ImageView
    6010: list(CALCIFICATION_TYPE_CODES.values()),
    6012: list(DISTRIBUTION_CODES.values()),
    7162: [ARTIFICIAL_INTELLIGENCE],  # Algorithm Family
    7005: [PROCESSING_EQUIPMENT],  # Contributing Equipment purpose of reference
    29: [MAMMOGRAPHY_MODALITY],  # TID 1602 Modality
}
