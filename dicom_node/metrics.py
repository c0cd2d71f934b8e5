"""Minimal Prometheus text exposition (no dependency): counters, gauges, histograms."""
from __future__ import annotations

import math
import threading
from typing import Iterable

# Analysis durations (seconds): a small study takes seconds, a full-size 4-view study minutes.
ANALYSIS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in sorted(labels.items()))
    return "{" + body + "}"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class Counters:
    """Process-lifetime counters with labels, thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple], float] = {}

    def inc(self, name: str, amount: float = 1, **labels) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def items(self) -> list[tuple[str, dict, float]]:
        with self._lock:
            return [(name, dict(labels), value) for (name, labels), value in sorted(self._values.items())]


class Exposition:
    """Builds one /metrics page."""

    def __init__(self):
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def declare(self, name: str, kind: str, help_text: str) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, values: Iterable[float],
                  buckets: Iterable[float] = ANALYSIS_BUCKETS, **labels) -> None:
        self.declare(name, "histogram", help_text)
        values = list(values)
        for le in list(buckets) + [math.inf]:
            self.sample(f"{name}_bucket", sum(v <= le for v in values), le=_number(float(le)), **labels)
        self.sample(f"{name}_sum", float(sum(values)), **labels)
        self.sample(f"{name}_count", len(values), **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
