"""The parameters of one simulator run, in one frozen dataclass.

Every length is in millimetres; the conversion to pixels uses ``pixel_spacing_mm``.
The configuration's JSON form is written to ``dataset.json`` and hashed into the
UIDs, so the same configuration and seed always give the same files, and a run
with any other parameter gives different UIDs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# BI-RADS descriptors, named as the result writers name them (analysis.results.CALCIFICATION_TYPES).
CALCIFICATION_TYPES = ("amorphous", "punctate", "fine_pleomorphic", "fine_linear_branching")
#: Names earlier versions wrote (``--types``, the ``kind`` column of old truth tables).
TYPE_ALIASES = {"fine_linear": "fine_linear_branching"}


def canonical_type(name: str) -> str:
    """The current name of a calcification type (an old alias maps to it)."""
    return TYPE_ALIASES.get(name, name)
ROI_FORMATS = ("gsps", "seg")
ROI_SHAPES = ("polyline", "circle", "ellipse", "mixed")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")

DEFAULT_SIZE = (3328, 2560)  # rows x columns, Hologic 18 x 24 cm paddle at 0.07 mm
DEFAULT_SPACING_MM = 0.07
DEFAULT_DIFFICULTY = 0.4  # Bayes-optimal AUC = 1 - difficulty / 2 = 0.80
DEFAULT_BACKGROUND_SPACING_MM = 0.05  # digitised DDSM film (Lumisys 50 um), NEMA WG04 MG1
TISSUE_MODELS = ("processed", "smooth")  # anatomy.TISSUE_MODELS; "smooth" = the images before the option existed


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``seed`` and every other field decide the output bit for bit."""

    cases: int = 10
    seed: int = 0
    rows: int = DEFAULT_SIZE[0]
    columns: int = DEFAULT_SIZE[1]
    pixel_spacing_mm: float = DEFAULT_SPACING_MM
    difficulty: float = DEFAULT_DIFFICULTY
    prevalence: float = 0.3  # P(actionable) of a cluster
    # calcification type mix (name -> weight); the type is independent of the outcome
    type_weights: tuple[tuple[str, float], ...] = (("amorphous", 1.0),)
    views: tuple[str, ...] = ("CC", "MLO")
    lateralities: tuple[str, ...] = ("L", "R")
    max_clusters: int = 2  # per affected breast (1..max, 1 most likely)
    p_negative_case: float = 0.0  # fraction of cases with no cluster at all
    roi_format: str = "gsps"
    roi_shape: str = "polyline"
    backgrounds: tuple[str, ...] = ()
    background_spacing_mm: float = DEFAULT_BACKGROUND_SPACING_MM
    manufacturer: str = "CALCNODE SYNTH (HOLOGIC-LIKE)"
    distractors: bool = True
    # "processed": vendor-like For Presentation look (docs/simulator.md, Tissue realism);
    # "smooth": the earlier images, byte for byte (kept out of to_json, so their UIDs stay too)
    tissue: str = "smooth"  # "processed" matches real tissue; default once the segmentation is retrained on it

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ValueError("cases must be >= 1")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError("difficulty must be in [0, 1]")
        if not 0.0 < self.prevalence < 1.0:
            raise ValueError("prevalence must be in (0, 1)")
        if self.pixel_spacing_mm <= 0 or self.background_spacing_mm <= 0:
            raise ValueError("pixel spacing must be > 0 mm")
        if self.rows < 256 or self.columns < 192:
            raise ValueError("image size must be at least 256 x 192 pixels")
        if self.roi_format not in ROI_FORMATS:
            raise ValueError(f"roi_format must be one of {ROI_FORMATS}")
        if self.roi_shape not in ROI_SHAPES:
            raise ValueError(f"roi_shape must be one of {ROI_SHAPES}")
        for name, weight in self.type_weights:
            if name not in CALCIFICATION_TYPES or weight < 0:
                raise ValueError(f"unknown calcification type {name!r} or negative weight")
        if sum(w for _, w in self.type_weights) <= 0:
            raise ValueError("calcification type weights sum to zero")
        if not self.views or any(v not in VIEWS for v in self.views):
            raise ValueError(f"views must be a subset of {VIEWS}")
        if not self.lateralities or any(v not in LATERALITIES for v in self.lateralities):
            raise ValueError(f"lateralities must be a subset of {LATERALITIES}")
        if self.tissue not in TISSUE_MODELS:
            raise ValueError(f"tissue must be one of {TISSUE_MODELS}")
        if self.max_clusters < 1:
            raise ValueError("max_clusters must be >= 1")

    @property
    def images_per_case(self) -> int:
        return 1 if self.backgrounds else len(self.views) * len(self.lateralities)

    def to_json(self) -> dict:
        data = asdict(self)
        data["type_weights"] = dict(self.type_weights)
        if self.tissue == "smooth":  # as written before the field existed: same fingerprint, same UIDs
            del data["tissue"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "SynthConfig":
        """The configuration that :meth:`to_json` wrote (``dataset.json``'s ``config``)."""
        data = dict(data)
        data["type_weights"] = tuple(data["type_weights"].items())
        data.setdefault("tissue", "smooth")  # a dataset.json without it was made with smooth tissue
        for key in ("views", "lateralities", "backgrounds"):
            data[key] = tuple(data[key])
        return cls(**data)

    def fingerprint(self) -> str:
        """A short hash of every parameter: part of every UID's entropy."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_type_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``"amorphous:3,punctate:1"`` or ``"amorphous,fine_linear_branching"`` -> ((name, weight), ...)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        out.append((canonical_type(name.strip()), float(weight) if weight else 1.0))
    return tuple(out)


__all__ = ["SynthConfig", "parse_type_weights", "canonical_type", "CALCIFICATION_TYPES", "TYPE_ALIASES"]
