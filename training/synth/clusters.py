"""The outcome model: benign vs actionable clusters, their layout, and the Bayes score.

Latent model (documented in docs/simulator.md):

* outcome y ~ Bernoulli(prevalence), 1 = actionable (high-risk or malignant at biopsy);
* latent vector z in R^5, one coordinate per property the paper's features respond to,
  ``z | y ~ N(+/- (Delta / 2) w, I)`` with ``w`` a fixed unit vector
  (:data:`FEATURE_WEIGHTS`) and the sign + for actionable;
* the cluster's physical parameters are monotone functions of z
  (:func:`physical_parameters`); everything else (particle positions, individual
  sizes and shapes, anatomy) is drawn independently of y given z.

So z is a sufficient statistic for y: the Bayes-optimal score from everything the
simulator drew is the log-likelihood ratio ``LLR(z) = Delta * w . z`` (linear, since
both classes share the identity covariance), and its AUC is ``Phi(Delta / sqrt(2))``.
``difficulty`` sets Delta through that AUC: ``AUC* = 1 - difficulty / 2``
(0 -> 0.999 capped, 0.4 (default) -> 0.80, 1 -> 0.5). An image-based model can only
approach AUC* (it sees z through a finite, noisy sample of particles), never exceed it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

from .calcifications import Particle, make_particle

FEATURES = ("size_variability", "shape_irregularity", "layout_linearity", "spread",
            "surrounding_density")
FEATURE_WEIGHTS = np.array([0.50, 0.45, 0.45, 0.40, 0.35])
FEATURE_WEIGHTS = FEATURE_WEIGHTS / np.linalg.norm(FEATURE_WEIGHTS)
MAX_BAYES_AUC = 0.999
DISTRIBUTIONS = ("grouped", "linear", "segmental", "regional")


def bayes_auc(difficulty: float) -> float:
    """The best achievable ROC AUC at ``difficulty`` in [0, 1]: 1 - difficulty / 2 (capped)."""
    return float(min(1.0 - difficulty / 2.0, MAX_BAYES_AUC))


def separation(difficulty: float) -> float:
    """Mahalanobis distance Delta between the class means giving :func:`bayes_auc`."""
    return float(np.sqrt(2.0) * norm.ppf(bayes_auc(difficulty)))


def bayes_llr(z: np.ndarray, difficulty: float) -> np.ndarray:
    """log p(z | actionable) - log p(z | benign); z of shape (..., 5)."""
    return separation(difficulty) * np.asarray(z) @ FEATURE_WEIGHTS


def bayes_posterior(llr: np.ndarray | float, prevalence: float) -> np.ndarray | float:
    """P(actionable | z) for the given prior prevalence."""
    return expit(np.asarray(llr) + logit(prevalence))


@dataclass
class Latent:
    """A cluster's class and latent parameters (see module docstring)."""

    actionable: bool
    z: np.ndarray
    llr: float
    posterior: float


def draw_latent(rng: np.random.Generator, difficulty: float, prevalence: float) -> Latent:
    actionable = bool(rng.random() < prevalence)
    mean = (0.5 if actionable else -0.5) * separation(difficulty) * FEATURE_WEIGHTS
    z = mean + rng.standard_normal(len(FEATURES))
    llr = float(bayes_llr(z, difficulty))
    return Latent(actionable, z, llr, float(bayes_posterior(llr, prevalence)))


def draw_latents(n: int, rng: np.random.Generator, difficulty: float,
                 prevalence: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised: (y (n,), z (n, 5), llr (n,)) for n clusters; no images needed."""
    y = rng.random(n) < prevalence
    z = np.where(y[:, None], 0.5, -0.5) * separation(difficulty) * FEATURE_WEIGHTS
    z = z + rng.standard_normal((n, len(FEATURES)))
    return y, z, bayes_llr(z, difficulty)


@dataclass
class ClusterParams:
    """Physical parameters of a cluster (monotone in z). Lengths in mm."""

    size_cv: float  # coefficient of variation of particle diameter
    irregularity: float  # boundary harmonic amplitude scale
    aspect: float  # major / minor axis of the layout
    spread_mm: float  # RMS extent along the major axis
    density_quantile: float  # target quantile of local glandular density
    distribution: str


def physical_parameters(z: np.ndarray) -> ClusterParams:
    """Map the latent vector to the cluster's physical parameters."""
    size_cv = 0.10 + 0.45 * float(expit(1.2 * z[0]))
    irregularity = 0.05 + 0.45 * float(expit(1.2 * z[1]))
    aspect = 1.0 + 4.0 * float(expit(1.5 * z[2] - 0.5))
    spread = float(np.clip(2.5 * np.exp(0.45 * z[3]), 1.0, 12.0))
    density_q = float(expit(1.2 * z[4]))
    return ClusterParams(size_cv, irregularity, aspect, spread, density_q,
                         distribution_label(aspect, spread))


def distribution_label(aspect: float, spread_mm: float) -> str:
    """BI-RADS distribution from the layout: a deterministic function of z."""
    if spread_mm >= 5.0:
        return "segmental" if aspect >= 2.2 else "regional"
    return "linear" if aspect >= 3.0 else "grouped"


def layout_offsets(rng: np.random.Generator, n: int, params: ClusterParams) -> np.ndarray:
    """(n, 2) particle centres in mm, (u, v): u along the cluster's axis (pointing away
    from the nipple), v across it, centred on the cluster centre."""
    s, a = params.spread_mm, params.aspect
    dist = params.distribution
    if dist == "linear":
        L = np.sqrt(3.0) * s
        u = rng.uniform(-L, L, n)
        v = 0.04 * u ** 2 / max(L, 1e-6) * rng.normal() + rng.normal(0, s / a * 0.5, n)
    elif dist == "segmental":  # branches fanning out from an apex towards the chest wall
        L = 2 * np.sqrt(3.0) * s
        k = int(rng.integers(2, 5))
        angles = rng.uniform(-0.45, 0.45, k)
        b = rng.integers(0, k, n)
        t = rng.uniform(0, L, n)
        u = t * np.cos(angles[b]) - L / 2
        v = t * np.sin(angles[b]) + rng.normal(0, s / a * 0.3, n)
    elif dist == "regional":
        r = 2.0 * s * np.sqrt(rng.uniform(0, 1, n))
        th = rng.uniform(0, 2 * np.pi, n)
        u, v = r * np.cos(th), r * np.sin(th) / a
    else:
        u = rng.normal(0, s, n)
        v = rng.normal(0, s / a, n)
    uv = np.stack([u, v], axis=1)
    return uv - uv.mean(axis=0)


@dataclass
class Cluster:
    """A cluster ready to be placed: latent, parameters, type, particles with offsets (mm)."""

    cluster_id: int
    latent: Latent
    params: ClusterParams
    kind: str
    particles: list[Particle]
    offsets_mm: np.ndarray  # (n, 2) (u, v)

    @property
    def extent_mm(self) -> float:
        """Radius of a disc around the centre containing every particle."""
        r = np.hypot(self.offsets_mm[:, 0], self.offsets_mm[:, 1])
        return float(max(r[i] + p.radius_mm for i, p in enumerate(self.particles)))


def make_cluster(rng: np.random.Generator, cluster_id: int, kind: str, difficulty: float,
                 prevalence: float, n_mean: float = 6.0) -> Cluster:
    """Draw a cluster: latent class and parameters, 4 + Poisson(n_mean) particles, layout
    with a minimum gap of 0.15 mm between particles so each stays a separate object."""
    latent = draw_latent(rng, difficulty, prevalence)
    params = physical_parameters(latent.z)
    n = int(min(4 + rng.poisson(n_mean), 40))
    particles = [make_particle(kind, rng, params.size_cv, params.irregularity) for _ in range(n)]
    offsets = layout_offsets(rng, n, params)
    for _ in range(50):  # push apart overlapping particles
        moved = False
        for i in range(n):
            for j in range(i):
                d = offsets[i] - offsets[j]
                dist = float(np.hypot(*d))
                need = particles[i].radius_mm + particles[j].radius_mm + 0.15
                if dist < need:
                    direction = d / dist if dist > 1e-9 else rng.normal(size=2)
                    direction = direction / np.linalg.norm(direction)
                    offsets[i] += direction * (need - dist) / 2 + 1e-3
                    offsets[j] -= direction * (need - dist) / 2 + 1e-3
                    moved = True
        if not moved:
            break
    return Cluster(cluster_id, latent, params, kind, particles, offsets - offsets.mean(axis=0))
