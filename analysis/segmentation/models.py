"""Where the shipped demonstration models are, and what they must say about themselves."""
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_SEGMENTATION_MODEL = WEIGHTS_DIR / "demo-seg-cnn.pt"
NOT_FOR_CLINICAL_USE = "Demonstration model trained on simulated data only: NOT FOR CLINICAL USE."
