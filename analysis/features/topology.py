"""Cluster topology (Chen et al. 2014) and handcrafted global features of one ROI.

Topology: for each dilation radius r (mm), a graph whose nodes are the ROI's
calcifications, with an edge between two objects whose minimum pixel-centre
distance (mm) is <= 2r -- their r-dilations touch.  The distance is computed
exactly from boundary-pixel coordinates in mm, never by dilating masks, so the
same physical layout gives the same graph at any pixel spacing.

Per graph, 8 features (names ``topo_r{r:.2f}mm_{feature}``):

====================== =============================================================
n_components           number of connected components (isolated nodes count)
mean_degree            2 |E| / N
max_degree             largest node degree
mean_eccentricity      mean over nodes of the node's eccentricity inside its own
                       component (hop count to the farthest node; 0 for an isolated node)
diameter               max eccentricity (= the largest component diameter)
mean_clustering        mean local clustering coefficient (0 for degree < 2), as
                       networkx.average_clustering
giant_component_ratio  nodes in the largest component / N
isolated_fraction      nodes of degree 0 / N
====================== =============================================================

For an ROI with 0 objects every topology feature is NaN.

Handcrafted (3 features):

=================================== ==========================================================
area_std_mm2                        population standard deviation (ddof=0) of object areas
centroid_xy_pearson                 Pearson correlation of centroid x (column, mm) and y (row,
                                    mm, increasing downwards); 0 when N < 2 or when x or y has
                                    zero variance
mean_pairwise_centroid_distance_mm  mean Euclidean distance over unordered centroid pairs;
                                    0 when N < 2
=================================== ==========================================================

For 0 objects the three are NaN; for one object they are 0, 0, 0.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.spatial.distance import cdist

TOPOLOGY_RADII_MM = (0.07, 0.14, 0.28, 0.56, 1.12, 1.68, 2.24, 4.48)
GRAPH_FEATURES = ("n_components", "mean_degree", "max_degree", "mean_eccentricity", "diameter",
                  "mean_clustering", "giant_component_ratio", "isolated_fraction")
HANDCRAFTED_NAMES = ["area_std_mm2", "centroid_xy_pearson", "mean_pairwise_centroid_distance_mm"]

_REL_TOL = 1e-9  # a distance equal to 2r (up to float round-off) is an edge


def topology_names(radii_mm=TOPOLOGY_RADII_MM) -> list[str]:
    return [f"topo_r{r:.2f}mm_{f}" for r in radii_mm for f in GRAPH_FEATURES]


def pairwise_min_distances(boundaries_mm: list[np.ndarray], max_distance_mm: float,
                           chunk_elems: int = 2_000_000) -> np.ndarray:
    """(n, n) minimum point-to-point distance between objects (mm); inf where it
    exceeds ``max_distance_mm`` (those pairs are screened out and never measured).

    ``boundaries_mm[i]``: (m_i, 2) coordinates (mm) of object i's boundary pixels.
    """
    n = len(boundaries_mm)
    d = np.full((n, n), np.inf)
    if n == 0:
        return d
    np.fill_diagonal(d, 0.0)
    pts = [np.asarray(b, dtype=np.float64).reshape(-1, 2) for b in boundaries_mm]
    cent = np.array([p.mean(axis=0) for p in pts])
    rad = np.array([np.sqrt(((p - c) ** 2).sum(1)).max() for p, c in zip(pts, cent)])
    cdist_c = np.sqrt(((cent[:, None, :] - cent[None, :, :]) ** 2).sum(-1))
    # Lower bound of the gap between i and j: centre distance minus both radii.
    lower = cdist_c - rad[:, None] - rad[None, :]
    limit = max_distance_mm * (1 + _REL_TOL) + 1e-12
    for i in range(n - 1):
        js = np.nonzero(lower[i, i + 1:] <= limit)[0] + i + 1
        if js.size == 0:
            continue
        others = np.concatenate([pts[j] for j in js])
        starts = np.concatenate([[0], np.cumsum([pts[j].shape[0] for j in js])[:-1]])
        best = np.full(js.size, np.inf)
        step = max(1, chunk_elems // max(1, others.shape[0]))
        for a in range(0, pts[i].shape[0], step):
            dm = cdist(pts[i][a:a + step], others).min(axis=0)
            best = np.minimum(best, np.minimum.reduceat(dm, starts))
        best[best > limit] = np.inf
        d[i, js] = best
        d[js, i] = best
    return d


def graph_features(adj: np.ndarray) -> np.ndarray:
    """The 8 graph features of an undirected graph given as a boolean adjacency matrix."""
    adj = np.asarray(adj, dtype=bool).copy()
    n = adj.shape[0]
    if n == 0:
        return np.full(len(GRAPH_FEATURES), np.nan)
    np.fill_diagonal(adj, False)
    deg = adj.sum(axis=1).astype(np.float64)
    g = csr_matrix(adj)
    n_comp, comp = connected_components(g, directed=False)
    hops = shortest_path(g, directed=False, unweighted=True)
    hops[~np.isfinite(hops)] = 0.0
    ecc = hops.max(axis=1)
    a = adj.astype(np.float64)
    tri = ((a @ a) * a).sum(axis=1) / 2.0  # triangles through each node
    with np.errstate(divide="ignore", invalid="ignore"):
        clust = np.where(deg >= 2, 2.0 * tri / (deg * (deg - 1)), 0.0)
    giant = np.bincount(comp).max() / n
    return np.array([float(n_comp), deg.mean(), deg.max(), ecc.mean(), ecc.max(), clust.mean(),
                     giant, float(np.mean(deg == 0))])


def topology_features(min_dist_mm: np.ndarray, radii_mm=TOPOLOGY_RADII_MM) -> np.ndarray:
    """64 values (8 radii x 8 graph features) from the pairwise minimum-distance matrix."""
    out = []
    for r in radii_mm:
        thr = 2.0 * r * (1 + _REL_TOL) + 1e-12
        out.append(graph_features(min_dist_mm <= thr))
    return np.concatenate(out)


def handcrafted_features(areas_mm2: np.ndarray, centroids_mm: np.ndarray) -> np.ndarray:
    """area std, centroid x-y Pearson correlation, mean pairwise centroid distance."""
    areas = np.asarray(areas_mm2, dtype=np.float64).reshape(-1)
    cen = np.asarray(centroids_mm, dtype=np.float64).reshape(-1, 2)  # (y=row mm, x=col mm)
    n = areas.size
    if n == 0:
        return np.full(3, np.nan)
    area_std = float(np.std(areas))
    corr = 0.0
    mean_dist = 0.0
    if n >= 2:
        y, x = cen[:, 0], cen[:, 1]
        dx, dy = x - x.mean(), y - y.mean()
        sxx, syy = float((dx * dx).sum()), float((dy * dy).sum())
        # zero variance (up to round-off of the mean) -> 0 by definition
        scale = max(1.0, float(np.abs(cen).max())) ** 2 * n * 1e-20
        if sxx > scale and syy > scale:
            corr = float(np.clip((dx * dy).sum() / np.sqrt(sxx * syy), -1.0, 1.0))
        iu = np.triu_indices(n, k=1)
        dd = np.sqrt(((cen[:, None, :] - cen[None, :, :]) ** 2).sum(-1))
        mean_dist = float(dd[iu].mean())
    return np.array([area_std, corr, mean_dist])
