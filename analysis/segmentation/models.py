"""Where the shipped demonstration models are, and what they must say about themselves."""
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_SEGMENTATION_MODEL = WEIGHTS_DIR / "demo-seg-cnn.pt"
NOT_FOR_CLINICAL_USE = "Demonstration model trained on simulated data only: NOT FOR CLINICAL USE."
# A model that also saw real views, only as calcification-free tissue (train-seg --negatives)
NOT_FOR_CLINICAL_USE_REAL_NEGATIVES = ("Demonstration model trained on simulated calcifications, with real views "
                                       "used only as calcification-free tissue: NOT FOR CLINICAL USE.")
