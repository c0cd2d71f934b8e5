"""Typed, pandas-free feature tables.

A :class:`FeatureTable` holds one row per calcification (``labels`` gives the
calcification label of each row, in row order) and one column per feature
(``names``).  Rows of objects that a family cannot measure are NaN and the
reason is listed in ``unmeasurable`` as ``(label, reason)``.

A :class:`FeatureVector` holds the per-ROI (global) features: one value per name.
Both convert to and from a dict of numpy arrays (``np.savez`` friendly, no pickle).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class FeatureTable:
    names: list[str]
    values: np.ndarray  # float64, shape (n_objects, len(names))
    labels: np.ndarray  # int64, shape (n_objects,)
    unmeasurable: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float64)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if values.ndim != 2 or values.shape != (labels.size, len(self.names)):
            raise ValueError(f"values shape {values.shape} does not match "
                             f"{labels.size} objects x {len(self.names)} features")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "names", list(self.names))
        object.__setattr__(self, "unmeasurable", [(int(l), str(r)) for l, r in self.unmeasurable])

    @property
    def n_objects(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def to_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        um = self.unmeasurable
        return {
            f"{prefix}names": np.array(self.names, dtype=str),
            f"{prefix}values": self.values,
            f"{prefix}labels": self.labels,
            f"{prefix}unmeasurable_labels": np.array([l for l, _ in um], dtype=np.int64),
            f"{prefix}unmeasurable_reasons": np.array([r for _, r in um], dtype=str),
        }

    @classmethod
    def from_dict(cls, d, prefix: str = "") -> "FeatureTable":
        return cls(names=[str(n) for n in d[f"{prefix}names"]],
                   values=np.asarray(d[f"{prefix}values"], dtype=np.float64).reshape(
                       -1, len(d[f"{prefix}names"])),
                   labels=np.asarray(d[f"{prefix}labels"], dtype=np.int64),
                   unmeasurable=list(zip((int(v) for v in d[f"{prefix}unmeasurable_labels"]),
                                         (str(v) for v in d[f"{prefix}unmeasurable_reasons"]))))


@dataclass(frozen=True, eq=False)
class FeatureVector:
    names: list[str]
    values: np.ndarray  # float64, shape (len(names),)

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if values.size != len(self.names):
            raise ValueError(f"{values.size} values for {len(self.names)} names")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", list(self.names))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist()))

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def to_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}names": np.array(self.names, dtype=str), f"{prefix}values": self.values}

    @classmethod
    def from_dict(cls, d, prefix: str = "") -> "FeatureVector":
        return cls(names=[str(n) for n in d[f"{prefix}names"]], values=d[f"{prefix}values"])
