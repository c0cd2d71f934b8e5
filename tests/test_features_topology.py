"""Topology (Chen et al. 2014) and handcrafted global features on hand-built layouts.

Expected values are computed by hand in the comments, not by the code under test."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from analysis.features import (GRAPH_FEATURES, HANDCRAFTED_NAMES, TOPOLOGY_RADII_MM, FeatureParams,
                               extract_roi_features, graph_features, pairwise_min_distances,
                               topology_names)

SP = (0.07, 0.07)
NO_EDGES_5 = [5, 0, 0, 0, 0, 0, 0.2, 1]


def dots(coords, shape=(64, 400)):
    """Single-pixel objects labelled 1..n at (row, col) coordinates."""
    lab = np.zeros(shape, np.int32)
    for i, (r, c) in enumerate(coords, start=1):
        lab[r, c] = i
    return lab


def topo_table(labels, spacing=SP):
    pixels = np.full(labels.shape, 0.3, np.float32)
    pixels[labels > 0] = 0.8
    f = extract_roi_features(pixels, spacing, 12, None, labels)
    return np.asarray(f.topology.values).reshape(len(TOPOLOGY_RADII_MM), len(GRAPH_FEATURES)), f


def test_names_are_stable():
    names = topology_names()
    assert len(names) == 64 and len(set(names)) == 64
    assert names[0] == "topo_r0.07mm_n_components"
    assert names[7] == "topo_r0.07mm_isolated_fraction"
    assert names[-1] == "topo_r4.48mm_isolated_fraction"
    assert HANDCRAFTED_NAMES == ["area_std_mm2", "centroid_xy_pearson",
                                 "mean_pairwise_centroid_distance_mm"]


def test_chain_of_dots_at_every_radius():
    # 5 one-pixel dots 10 px apart on a row at 0.07 mm: gaps 0.7, 1.4, 2.1, 2.8 mm.
    # Edges where gap <= 2r; 2r = 0.14 0.28 0.56 | 1.12 | 2.24 | 3.36 4.48 8.96.
    t, f = topo_table(dots([(30, 10 + 10 * i) for i in range(5)]))
    expected = {
        0.07: NO_EDGES_5, 0.14: NO_EDGES_5, 0.28: NO_EDGES_5,
        # path 0-1-2-3-4: degrees 1,2,2,2,1 -> mean 8/5; eccentricities 4,3,2,3,4 -> mean 16/5
        0.56: [1, 1.6, 2, 3.2, 4, 0, 1, 0],
        # |i-j| <= 3: 9 edges -> mean degree 18/5, degrees 3,4,4,4,3; ecc 2,1,1,1,2 -> 7/5;
        # clustering: ends 1 (neighbours 3 mutually linked), inner 5/6 (0-4 missing) -> 4.5/5
        1.12: [1, 3.6, 4, 1.4, 2, 0.9, 1, 0],
        1.68: [1, 4, 4, 1, 1, 1, 1, 0], 2.24: [1, 4, 4, 1, 1, 1, 1, 0], 4.48: [1, 4, 4, 1, 1, 1, 1, 0],
    }
    for i, r in enumerate(TOPOLOGY_RADII_MM):
        np.testing.assert_allclose(t[i], expected[r], atol=1e-12, err_msg=f"r = {r} mm")
    # one-pixel objects: no pyradiomics row, listed as unmeasurable, no crash
    assert len(f.foreground.unmeasurable) == 5
    assert np.isnan(f.foreground.values).all()


def test_square_is_a_cycle_then_a_clique():
    # 4 dots on a 2-px square: sides 0.14 mm, diagonals 0.198 mm.
    # r = 0.07 (2r = 0.14, inclusive): the 4-cycle; r >= 0.14 (2r = 0.28): K4.
    t, _ = topo_table(dots([(10, 10), (10, 12), (12, 10), (12, 12)]))
    np.testing.assert_allclose(t[0], [1, 2, 2, 2, 2, 0, 1, 0], atol=1e-12)
    for i in range(1, 8):
        np.testing.assert_allclose(t[i], [1, 3, 3, 1, 1, 1, 1, 0], atol=1e-12)


def test_isolated_dots_at_every_radius():
    # 4 dots 130 px (9.1 mm) apart: > 2 x 4.48 mm, never linked
    t, _ = topo_table(dots([(5, 5), (5, 135), (5, 265), (5, 395)], shape=(10, 400)))
    for i in range(8):
        np.testing.assert_allclose(t[i], [4, 0, 0, 0, 0, 0, 0.25, 1], atol=1e-12)


def test_two_groups_and_an_isolated_dot():
    # a pair 0.35 mm apart, a triangle of side ~0.35 mm, an isolated dot far away.
    # r = 0.28 (2r = 0.56): components {pair}, {triangle}, {dot} -> 3; degrees 1,1,2,2,2,0
    t, _ = topo_table(dots([(10, 10), (10, 15), (10, 100), (10, 105), (14, 102), (60, 300)],
                           shape=(64, 400)))
    i = TOPOLOGY_RADII_MM.index(0.28)
    # mean degree 8/6; ecc 1,1,1,1,1,0 -> 5/6; clustering 0,0,1,1,1,0 -> 0.5; giant 3/6; isolated 1/6
    np.testing.assert_allclose(t[i], [3, 8 / 6, 2, 5 / 6, 1, 0.5, 0.5, 1 / 6], atol=1e-12)


def test_distance_is_between_boundaries_not_centroids():
    # two 5x5 squares, columns 0-4 and 10-14: nearest pixel centres 6 px = 0.42 mm apart,
    # centroids 10 px = 0.70 mm apart.  At r = 0.28 (2r = 0.56) they are linked.
    lab = np.zeros((20, 30), np.int32)
    lab[5:10, 5:10] = 1
    lab[5:10, 15:20] = 2
    t, _ = topo_table(lab)
    assert t[TOPOLOGY_RADII_MM.index(0.14)][0] == 2
    assert t[TOPOLOGY_RADII_MM.index(0.28)][0] == 1
    b1 = np.argwhere(lab == 1) * 0.07
    b2 = np.argwhere(lab == 2) * 0.07
    d = pairwise_min_distances([b1, b2], 10.0)
    assert d[0, 1] == pytest.approx(0.42)
    # screened out beyond the maximum distance
    assert np.isinf(pairwise_min_distances([b1, b2], 0.3)[0, 1])


def test_graph_features_match_networkx_on_random_graphs():
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(1, 25))
        adj = rng.random((n, n)) < rng.uniform(0.02, 0.4)
        adj = np.triu(adj, 1)
        adj = adj | adj.T
        g = nx.from_numpy_array(adj.astype(int))
        comps = [g.subgraph(c) for c in nx.connected_components(g)]
        ecc = {}
        for c in comps:
            ecc.update(nx.eccentricity(c) if c.number_of_nodes() > 1 else {next(iter(c)): 0})
        degs = np.array([d for _, d in g.degree()])
        expected = [len(comps), degs.mean(), degs.max(), np.mean(list(ecc.values())),
                    max(ecc.values()), nx.average_clustering(g),
                    max(len(c) for c in comps) / n, np.mean(degs == 0)]
        np.testing.assert_allclose(graph_features(adj), expected, atol=1e-12, err_msg=f"trial {trial}")


def test_handcrafted_on_a_known_layout():
    # squares of side 1, 2, 3 px at 0.1 mm: areas 0.01, 0.04, 0.09 mm2
    # population std: sqrt((0.0001 + 0.0016 + 0.0081)/3 - (0.14/3)^2) = 0.0329983...
    # centroids (row, col) px: (10, 10), (30.5, 30.5), (51, 51) -> on the line y = x: r = +1
    # pairwise centroid distances: 2.05*sqrt2, 4.1*sqrt2, 2.05*sqrt2 mm -> mean 8.2/3*sqrt2
    lab = np.zeros((60, 60), np.int32)
    lab[10, 10] = 1
    lab[30:32, 30:32] = 2
    lab[50:53, 50:53] = 3
    _, f = topo_table(lab, spacing=(0.1, 0.1))
    h = f.handcrafted
    assert h["area_std_mm2"] == pytest.approx(math.sqrt(0.0098 / 3 - (0.14 / 3) ** 2), rel=1e-9)
    assert h["area_std_mm2"] == pytest.approx(0.0329983, rel=1e-5)
    assert h["centroid_xy_pearson"] == pytest.approx(1.0, abs=1e-12)
    assert h["mean_pairwise_centroid_distance_mm"] == pytest.approx(8.2 / 3 * math.sqrt(2), rel=1e-9)
    # mirrored left-right: x decreases while y increases -> r = -1
    _, f2 = topo_table(lab[:, ::-1].copy(), spacing=(0.1, 0.1))
    assert f2.handcrafted["centroid_xy_pearson"] == pytest.approx(-1.0, abs=1e-12)


def test_handcrafted_degenerate_cases():
    # dots on one row: y has zero variance -> correlation defined as 0
    _, f = topo_table(dots([(5, 10), (5, 30), (5, 70)]))
    assert f.handcrafted["centroid_xy_pearson"] == 0.0
    assert f.handcrafted["area_std_mm2"] == 0.0
    assert f.handcrafted["mean_pairwise_centroid_distance_mm"] == pytest.approx((1.4 + 4.2 + 2.8) / 3)
    # one object: 0, 0, 0 and a single-node graph
    _, f1 = topo_table(dots([(5, 10)]))
    np.testing.assert_array_equal(f1.handcrafted.values, [0, 0, 0])
    np.testing.assert_array_equal(f1.topology.values.reshape(8, 8)[3], [1, 0, 0, 0, 0, 0, 1, 1])
    # no object: every global feature is NaN
    _, f0 = topo_table(np.zeros((20, 20), np.int32))
    assert f0.n_objects == 0
    assert np.isnan(f0.topology.values).all() and np.isnan(f0.handcrafted.values).all()


def render_mm(objects_mm, spacing, size_mm=(12.0, 24.0)):
    """Label image of axis-aligned rectangles given in mm (top, left, height, width)."""
    shape = (round(size_mm[0] / spacing), round(size_mm[1] / spacing))
    lab = np.zeros(shape, np.int32)
    for i, (t, l, h, w) in enumerate(objects_mm, start=1):
        r0, c0 = round(t / spacing), round(l / spacing)
        lab[r0:r0 + round(h / spacing), c0:c0 + round(w / spacing)] = i
    return lab


def test_mm_scaling_same_layout_at_two_spacings():
    # Rectangles 0.4-1.0 mm wide.  Nearest pixel-centre gaps at 0.1 mm between neighbours:
    # 0.5, 1.0, 1.7, 3.1, 6.1 mm (0.05 mm less at 0.05 mm: the boundary pixel centres move
    # half a coarse pixel); every pairwise gap, e.g. 4.4 for objects 1-4, stays >= 0.08 mm
    # from every 2r threshold.  Rendered at 0.1 mm and, by exact 2x2 pixel replication, at
    # 0.05 mm (areas identical, centroids shifted by a constant).
    objs = [(2.0, 1.0, 0.4, 0.4), (2.0, 1.8, 0.6, 0.4), (2.0, 3.1, 1.0, 1.0),
            (2.5, 5.7, 0.4, 0.8), (2.0, 9.5, 0.8, 0.6), (3.0, 16.1, 0.6, 0.6)]
    lab10 = render_mm(objs, 0.1)
    lab05 = np.kron(lab10, np.ones((2, 2), np.int32))
    _, f10 = topo_table(lab10, spacing=(0.1, 0.1))
    _, f05 = topo_table(lab05, spacing=(0.05, 0.05))
    np.testing.assert_array_equal(f10.topology.values, f05.topology.values)
    np.testing.assert_allclose(f10.handcrafted.values, f05.handcrafted.values, rtol=1e-9, atol=1e-12)
    # the layout is not trivial: the graph changes with the radius
    assert len(set(f10.topology.values.reshape(8, 8)[:, 0])) >= 4
    for name in ("area_mm2", "equivalent_diameter_mm", "extent"):
        np.testing.assert_allclose(f10.regionprops.column(name), f05.regionprops.column(name),
                                   rtol=1e-9, err_msg=name)
    # rendered independently at each spacing too (not replicated): same graph
    lab05b = render_mm(objs, 0.05)
    _, f05b = topo_table(lab05b, spacing=(0.05, 0.05))
    np.testing.assert_array_equal(f10.topology.values, f05b.topology.values)


def test_custom_radii_change_the_names():
    f = extract_roi_features(np.zeros((10, 10), np.float32), SP, 12, None, dots([(2, 2), (2, 6)], (10, 10)),
                             params=FeatureParams(topology_radii_mm=(0.1, 0.2)))
    assert f.topology.names[0] == "topo_r0.10mm_n_components" and len(f.topology.names) == 16
    # gap 0.28 mm: not linked at r = 0.1 (2r = 0.2), linked at r = 0.2 (2r = 0.4)
    assert f.topology.values[0] == 2 and f.topology.values[8] == 1
