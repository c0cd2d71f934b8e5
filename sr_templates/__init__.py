"""DICOM result objects built from an analysed study.

Input: a :class:`analysis.results.StudyResult` (the analysis's typed output: frozen,
validated, no dependency on how it was computed) and the study's source images (pydicom
Datasets). Output, all in new series of the source study, with deterministic UIDs:

* :func:`build_segmentation` - SEG per analysed image (highdicom, BINARY);
* :func:`build_measurement_report` - Comprehensive SR, TID 1500, per study (highdicom);
* :func:`build_mammography_cad_sr` - Mammography CAD SR, TID 4000, per study (pydicom);
* :func:`build_presentation_state` - GSPS per image (highdicom);
* :func:`write_study_results` - all of them, written atomically to a folder.

This package imports only ``analysis`` of ours (never ``dicom_node`` or ``training``).
"""
from .cad_sr import build_mammography_cad_sr
from .gsps import build_presentation_state
from .measurement_report import build_measurement_report
from .seg import build_segmentation
from .writer import build_study_results, write_study_results

__all__ = [
    "build_segmentation", "build_measurement_report", "build_mammography_cad_sr",
    "build_presentation_state", "build_study_results", "write_study_results",
]
