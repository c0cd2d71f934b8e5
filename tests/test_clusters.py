"""Calcification clusters on views without ROI: grouping rule, outline, features, model, hit rule,
and ``calcnode evaluate-clusters`` / ``train-clusters`` on a tiny simulated set."""
from __future__ import annotations

import json
from dataclasses import replace
import math
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.clusters import (FEATURE_NAMES, RULE_THRESHOLD, ClusterModel, ClusterParams, DetectedCluster,
                               breast_area_in_disk, candidate_clusters, cluster_outline, detect_clusters,
                               group_points, layout_features, max_in_disk, member_elongation, points_in_polygon,
                               polygon_area, rule_confidence, support_evidence, surround_density,
                               view_member_threshold)
from analysis.segmentation.pipeline import particle_table

SPACING = (0.1, 0.1)


def fake_segmentation(shape, positions, size=3, score=0.8, value=0.7):
    """A Segmentation-like object with square calcifications of ``size`` px at ``positions`` (r, c)."""
    rng = np.random.default_rng(0)
    pixels = (0.3 + rng.normal(0, 0.01, shape)).astype(np.float32)
    labels = np.zeros(shape, np.int32)
    for i, (r, c) in enumerate(positions):
        labels[r:r + size, c:c + size] = i + 1
        pixels[r:r + size, c:c + size] = value
    selection = SimpleNamespace(objects=labels.copy(), scores=np.full(len(positions), score), kept=labels > 0)
    seg = SimpleNamespace(labels=labels, particles=particle_table(labels, pixels, SPACING), selection=selection,
                          candidates=None)
    return seg, pixels


# ---- the grouping rule ---------------------------------------------------------------------

def test_three_within_one_cm2_is_a_cluster_two_are_not():
    three = np.array([[0.0, 0.0], [3.0, 0.0], [1.0, 3.0]])
    assert [g.tolist() for g in group_points(three)] == [[0, 1, 2]]
    assert group_points(three[:2]) == []
    # a fourth point 20 mm away is not linked and does not join
    four = np.vstack([three, [[20.0, 20.0]]])
    assert [g.tolist() for g in group_points(four)] == [[0, 1, 2]]


def test_linked_but_not_within_one_cm2_is_no_cluster():
    # linked at 6 mm, but 12 mm end to end: no disk of 1 cm² (diameter 11.28 mm) holds all three
    params = ClusterParams(link_mm=6.0)
    assert group_points(np.array([[0.0, 0.0], [6.0, 0.0], [12.0, 0.0]]), params) == []
    assert len(group_points(np.array([[0.0, 0.0], [5.5, 0.0], [11.0, 0.0]]), params)) == 1


def test_density_test_is_exact_not_member_centred():
    radius = ClusterParams().window_radius_mm   # 5.64 mm
    params = ClusterParams(link_mm=12.0)
    for circumradius, expected in ((radius * 0.97, 1), (radius * 1.03, 0)):
        angles = np.deg2rad([90, 210, 330])
        tri = circumradius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        # no disk centred on a member holds all three (side = 1.68 x radius) ...
        assert max(np.sum(np.hypot(*(tri - p).T) <= radius) for p in tri) < 3
        # ... but the circumscribed disk does when it is small enough
        assert max_in_disk(tri, radius) == (3 if expected else 2)
        assert len(group_points(tri, params)) == expected


def test_single_linkage_chains_groups():
    chain = np.array([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0], [12.0, 0.0], [16.0, 0.0]])
    assert [g.tolist() for g in group_points(chain)] == [[0, 1, 2, 3, 4]]
    assert group_points(chain, ClusterParams(link_mm=3.9)) == []


def test_min_count_parameter():
    five = np.array([[0, 0], [2, 0], [0, 2], [2, 2], [1, 1]], float)
    assert len(group_points(five, ClusterParams(min_count=5))) == 1
    assert group_points(five[:4], ClusterParams(min_count=5)) == []


def test_params_validate():
    with pytest.raises(ValueError):
        ClusterParams(link_mm=-1)
    with pytest.raises(ValueError):
        ClusterParams(min_count=0)
    assert ClusterParams(window_mm2=100).window_radius_mm == pytest.approx(math.sqrt(100 / math.pi))


# ---- layout features -----------------------------------------------------------------------

def test_a_line_of_objects_has_high_linearity():
    line = np.stack([np.linspace(0, 20, 8), 0.02 * np.arange(8)], axis=1)
    blob = np.random.default_rng(1).normal(0, 2.0, (8, 2))
    f_line, f_blob = layout_features(line, ClusterParams()), layout_features(blob, ClusterParams())
    assert f_line["linearity"] > 0.99
    assert f_line["line_residual_mm"] < 0.05
    assert f_blob["linearity"] < 0.9
    assert f_blob["line_residual_mm"] > 0.5
    assert f_line["n_calcifications"] == 8
    assert f_line["nn_distance_mm"] == pytest.approx(20 / 7, rel=1e-3)


def test_rule_confidence_penalises_lines_and_few_members():
    base = {"n_calcifications": 8, "linearity": 0.9, "line_residual_mm": 0.8, "cnn_mean": 0.8}
    assert rule_confidence(base) >= RULE_THRESHOLD          # elongated, but not a line
    assert rule_confidence({**base, "line_residual_mm": 0.1}) < RULE_THRESHOLD
    assert rule_confidence({**base, "n_calcifications": 3}) < RULE_THRESHOLD
    assert rule_confidence({**base, "cnn_mean": 0.1}) < RULE_THRESHOLD


# ---- outline -------------------------------------------------------------------------------

def test_outline_of_one_pixel_is_its_square_in_pixel_convention():
    outline = cluster_outline(np.array([10]), np.array([20]), SPACING, margin_mm=0.0)
    assert sorted(map(tuple, outline.tolist())) == [(20.0, 10.0), (20.0, 11.0), (21.0, 10.0), (21.0, 11.0)]
    assert polygon_area(outline) == pytest.approx(1.0)


def test_outline_contains_members_and_margin():
    rows = np.array([10, 10, 30, 50])
    cols = np.array([10, 40, 25, 12])
    outline = cluster_outline(rows, cols, SPACING, margin_mm=1.0)
    corners = np.array([[c + dx, r + dy] for r, c in zip(rows, cols) for dx in (0, 1) for dy in (0, 1)], float)
    assert points_in_polygon(outline, corners).all()
    # 1 mm = 10 px beyond the outermost pixel edges, every direction
    assert points_in_polygon(outline, np.array([[10 - 9.9, 10.5], [41 + 9.9, 10.5], [12.5, 51 + 9.9]])).all()
    assert not points_in_polygon(outline, np.array([[10 - 11, 10.5], [12.5, 51 + 11]])).any()
    assert outline.shape[1] == 2 and len(outline) >= 3
    assert not np.array_equal(outline[0], outline[-1])   # the closing vertex is not repeated


def test_outline_margin_in_mm_for_unequal_spacing():
    outline = cluster_outline(np.array([50]), np.array([50]), (0.1, 0.2), margin_mm=1.0)
    xs, ys = outline[:, 0], outline[:, 1]
    assert xs.max() - 51 == pytest.approx(5.0, rel=0.05)    # 1 mm / 0.2 mm columns
    assert ys.max() - 51 == pytest.approx(10.0, rel=0.05)   # 1 mm / 0.1 mm rows


def test_support_evidence_spreads_the_supports_near_one():
    e = support_evidence(np.array([0.0, 0.9, 0.99, 0.999, 1.0, np.float32(0.9999999)]))
    assert e[:4] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert e[4] == e[5] == 6.0                      # capped: float32 supports reach 1.0 exactly
    assert np.all(np.diff(support_evidence(np.linspace(0, 1, 101))) >= 0)


# ---- detect_clusters -----------------------------------------------------------------------

def test_detect_clusters_groups_segmented_calcifications():
    positions = [(100, 100), (110, 120), (120, 105), (300, 300), (300, 380)]
    seg, pixels = fake_segmentation((400, 400), positions)
    found = detect_clusters(seg, pixels, SPACING, np.ones((400, 400), bool), keep_all=True)
    assert len(found) == 1
    c = found[0]
    assert isinstance(c, DetectedCluster)
    assert c.cluster_id == 1 and c.member_labels == (1, 2, 3) and c.n_calcifications == 3
    assert c.centroid_rc == pytest.approx((110.0 + 1, 108.33 + 1), abs=0.01)
    assert set(c.features) == set(FEATURE_NAMES)
    assert c.features["cnn_mean"] == pytest.approx(0.8)
    assert c.features["cnn_evidence_mean"] == pytest.approx(-math.log10(0.2))
    assert c.features["cnn_evidence_sum"] == pytest.approx(-3 * math.log10(0.2))
    assert c.features["contrast_mean"] == pytest.approx(0.4, abs=0.02)
    assert c.area_mm2 == pytest.approx(polygon_area(c.outline_xy) * 0.01)
    members = np.argwhere(np.isin(seg.labels, c.member_labels))
    assert points_in_polygon(c.outline_xy, members[:, ::-1] + 0.5).all()   # (col, row) + 0.5
    assert 0 <= c.confidence <= 1
    assert c.confidence == pytest.approx(rule_confidence(c.features))
    with pytest.raises((TypeError, AttributeError)):
        c.features["n_calcifications"] = 1.0   # read-only


def test_detect_clusters_respects_breast_mask_threshold_and_order():
    positions = [(50, 50), (55, 70), (70, 55), (62, 62), (58, 45), (60, 75),   # 6 calcifications
                 (300, 300), (310, 310), (305, 320)]                            # 3 calcifications
    seg, pixels = fake_segmentation((400, 400), positions)
    found = detect_clusters(seg, pixels, SPACING, np.ones((400, 400), bool), keep_all=True)
    assert [c.n_calcifications for c in found] == [6, 3]
    assert [c.cluster_id for c in found] == [1, 2]
    assert found[0].confidence >= found[1].confidence
    kept = detect_clusters(seg, pixels, SPACING, np.ones((400, 400), bool))
    assert [c.n_calcifications for c in kept] == [6]          # 3 members: rule confidence 0.28 < 0.5
    mask = np.ones((400, 400), bool)
    mask[200:, 200:] = False
    assert [c.n_calcifications for c in detect_clusters(seg, pixels, SPACING, mask, keep_all=True)] == [6]
    empty, px = fake_segmentation((100, 100), [])
    assert detect_clusters(empty, px, SPACING, None) == []


def test_a_models_member_threshold_decides_the_members():
    """Members below the operating point: three specks of which only one is kept at the operating
    point (score 0.95) make no cluster from the segmentation's own calcifications, and one cluster of
    three when the model counts members from support 0.8 up (at_threshold, no network run)."""
    positions = [(100, 100), (110, 120), (120, 105), (300, 300)]
    seg, pixels = fake_segmentation((400, 400), positions)
    seg.selection.scores = np.array([0.95, 0.85, 0.82, 0.5])
    seg.labels = np.where(seg.selection.objects == 1, 1, 0).astype(np.int32)   # kept at 0.9
    seg.particles = particle_table(seg.labels, pixels, SPACING)
    everything = np.ones((400, 400), bool)
    loose = replace(_model(threshold=0.0), member_threshold=0.8)
    assert detect_clusters(seg, pixels, SPACING, everything, model=_model(threshold=0.0)) == []
    found = detect_clusters(seg, pixels, SPACING, everything, model=loose)
    assert [c.n_calcifications for c in found] == [3]
    assert points_in_polygon(found[0].outline_xy, np.array([[101.5, 101.5], [121.5, 111.5], [106.5, 121.5]])).all()
    assert detect_clusters(seg, pixels, SPACING, everything, model=replace(loose, member_threshold=0.9)) == []


def test_a_grainy_view_searches_its_members_at_a_higher_support():
    """The member threshold is raised per view until at most the density asked reach it: 4 objects
    on 1 cm² of breast allowed 2 per cm² keep the best 2 (ties at the cut go out), a view within
    the density keeps the base, and without a density the base stays whatever the count."""
    scores = np.array([0.999, 0.99, 0.95, 0.91, 0.5])
    assert view_member_threshold(scores, 100.0, 0.9, None) == 0.9
    assert view_member_threshold(scores, 100.0, 0.9, 4.0) == 0.9          # 4 of 4 allowed
    t = view_member_threshold(scores, 100.0, 0.9, 2.0)
    assert 0.95 < t <= 0.99 and (scores >= t).sum() == 2
    tied = np.array([0.99, 0.97, 0.97, 0.97])
    assert (tied >= view_member_threshold(tied, 100.0, 0.9, 2.0)).sum() == 1
    assert view_member_threshold(scores, 0.0, 0.9, 2.0) > 0.999            # no breast: no member
    # in detect_clusters: three specks on a 4 cm² view make a cluster at 0.8, not when at most 0.5
    # per cm² (2 objects) may be members
    positions = [(100, 100), (110, 120), (120, 105)]
    seg, pixels = fake_segmentation((200, 200), positions)
    seg.selection.scores = np.array([0.95, 0.85, 0.82])
    everything = np.ones((200, 200), bool)
    loose = replace(_model(threshold=0.0), member_threshold=0.8)
    assert [c.n_calcifications for c in detect_clusters(seg, pixels, SPACING, everything, model=loose)] == [3]
    assert detect_clusters(seg, pixels, SPACING, everything,
                           model=replace(loose, member_density_per_cm2=0.5)) == []
    assert len(detect_clusters(seg, pixels, SPACING, everything, model=replace(loose, member_density_per_cm2=0.75))) == 1


def test_member_elongation_surround_and_breast_area():
    """A one-pixel speck is round (1), a 1 x 10 px line has sqrt(lambda1 / lambda2) = 10 exactly
    (pixel squares: variances 99/12 + 1/12 and 1/12); the breast area of a disk within a full mask
    is the disk's area (pixel-counting error < 1 %), half of it on a mask's straight edge; the
    surround counts the others within the radius per cm² of that area."""
    labels = np.zeros((50, 50), np.int32)
    labels[5, 5] = 1
    labels[20, 10:20] = 2
    e = member_elongation(labels, 3, (0.07, 0.07))
    assert e[0] == pytest.approx(1.0) and e[1] == pytest.approx(10.0) and np.isnan(e[2])
    full = np.ones((400, 400), bool)
    assert breast_area_in_disk(full, (200, 200), 10.0, (0.1, 0.1)) == pytest.approx(math.pi * 100, rel=0.01)
    half = full.copy()
    half[:, 200:] = False
    assert breast_area_in_disk(half, (200, 199.5), 10.0, (0.1, 0.1)) == pytest.approx(math.pi * 50, rel=0.02)
    assert breast_area_in_disk(None, (0, 0), 10.0, (0.1, 0.1)) == pytest.approx(math.pi * 100)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [30.0, 0.0]])
    assert surround_density(pts, np.array([0, 1, 2]), np.zeros(2), 10.0, 200.0) == pytest.approx(0.5)
    assert math.isnan(surround_density(pts, np.array([0]), np.zeros(2), 10.0, 0.0))


def test_a_cluster_standing_out_of_its_surroundings_has_the_higher_excess():
    """The same tight group of 5, alone on the view and amid a scatter of isolated objects: the
    surround density (others per cm² of breast within 15 mm) is 0 alone and the window excess its
    count; amid the scatter the surround is the scatter's density and the excess falls."""
    group = [(200 + 8 * (i % 3), 200 + 8 * (i // 3)) for i in range(5)]        # within 2 mm (0.1 mm px)
    scatter = [(r, c) for r in range(20, 400, 45) for c in range(20, 400, 45)
               if abs(r - 200) > 30 or abs(c - 200) > 30]                      # 4.5 mm apart, > 3 mm away
    everything = np.ones((420, 420), bool)
    alone = candidate_clusters(*fake_segmentation((420, 420), group), SPACING, everything)
    assert len(alone) == 1
    f = alone[0].features
    assert f["surround_density_per_cm2"] == 0 and f["window_excess"] == f["max_in_window"] == 5
    assert f["object_elongation_mean"] == pytest.approx(1.0)          # 3 x 3 px squares
    amid = candidate_clusters(*fake_segmentation((420, 420), group + scatter), SPACING, everything,
                              ClusterParams(link_mm=2.0))
    tight = [c for c in amid if c.features["n_calcifications"] == 5]
    assert len(tight) == 1
    g = tight[0].features
    assert g["surround_density_per_cm2"] > 2.5 and g["window_excess"] < 0.5 * f["window_excess"]
    assert g["view_density_per_cm2"] == pytest.approx((5 + len(scatter)) / (420 * 420 * 0.01 / 100))


def test_detected_cluster_validates():
    outline = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError):
        DetectedCluster(1, (1, 2, 3), (0.0, 0.0), outline[:2], 1.0, 3, 0.5)
    with pytest.raises(ValueError):
        DetectedCluster(1, (1, 2, 3), (0.0, 0.0), outline, 1.0, 2, 0.5)
    with pytest.raises(ValueError):
        DetectedCluster(1, (1, 2, 3), (0.0, 0.0), outline, 1.0, 3, 1.5)


# ---- the model -----------------------------------------------------------------------------

def _model(threshold=0.5):
    return ClusterModel(feature_names=("n_calcifications", "linearity"), transforms=("log1p", "identity"),
                        mean=(1.5, 0.5), scale=(0.5, 0.3), coef=(2.0, -3.0), intercept=0.0,
                        threshold=threshold, info={"note": "test"})


def test_cluster_model_bytes_round_trip_and_scores(tmp_path):
    model = _model()
    again = ClusterModel.from_bytes(model.to_bytes())
    assert again == model and again.sha256 == model.sha256
    # a model without its own member threshold writes no key: files written before it keep their bytes
    assert "member_threshold" not in json.loads(model.to_bytes()) and model.member_threshold is None
    loose = replace(model, member_threshold=0.9)
    assert ClusterModel.from_bytes(loose.to_bytes()) == loose and loose.sha256 != model.sha256
    with pytest.raises(ValueError, match="member_threshold"):
        replace(model, member_threshold=1.5)
    assert "member_density_per_cm2" not in json.loads(loose.to_bytes())
    raised = replace(loose, member_density_per_cm2=2.0)
    assert ClusterModel.from_bytes(raised.to_bytes()) == raised and raised.sha256 != loose.sha256
    with pytest.raises(ValueError, match="which is not set"):
        replace(model, member_density_per_cm2=2.0)
    with pytest.raises(ValueError, match="density > 0"):
        replace(loose, member_density_per_cm2=0.0)
    p = model.predict([{"n_calcifications": 10, "linearity": 0.1}, {"n_calcifications": 3, "linearity": 0.99}])
    assert p[0] > 0.9 and p[1] < 0.1
    (tmp_path / "m.json").write_bytes(model.to_bytes())
    assert ClusterModel.load(tmp_path / "m.json") == model
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a calcnode cluster model"):
        ClusterModel.load(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        ClusterModel(**{**model.__dict__, "feature_names": ("nope", "linearity")})


def test_a_lightgbm_cluster_model_refuses_a_booster_that_does_not_fit():
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (200, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
                        lgb.Dataset(x, label=(x[:, 0] > 0.5).astype(int), feature_name=["n_calcifications", "linearity"]),
                        num_boost_round=5)
    common = dict(transforms=("log1p", "identity"), mean=(), scale=(), coef=(), intercept=0.0, threshold=0.5,
                  learner="lightgbm")
    model = ClusterModel(feature_names=("n_calcifications", "linearity"), booster_text=booster.model_to_string(),
                         **common)
    assert ClusterModel.from_bytes(model.to_bytes()) == model
    assert json.loads(model.to_bytes())["learner"] == "lightgbm"
    with pytest.raises(ValueError, match="differ from feature_names"):
        ClusterModel(feature_names=("linearity", "n_calcifications"), booster_text=model.booster_text, **common)
    with pytest.raises(ValueError, match="cannot be read"):
        ClusterModel(feature_names=("n_calcifications", "linearity"), booster_text="tree\nnonsense", **common)
    with pytest.raises(ValueError, match="needs its booster_text"):
        ClusterModel(feature_names=("n_calcifications", "linearity"), booster_text=None, **common)
    with pytest.raises(ValueError, match="learner"):
        replace(model, learner="forest")


def test_detect_clusters_uses_the_model_threshold():
    positions = [(50, 50), (55, 70), (70, 55), (62, 62), (58, 45), (60, 75)]
    seg, pixels = fake_segmentation((200, 200), positions)
    mask = np.ones((200, 200), bool)
    (c,) = detect_clusters(seg, pixels, SPACING, mask, model=_model(0.0))
    assert c.confidence == pytest.approx(float(_model().predict([c.features])[0]))
    assert detect_clusters(seg, pixels, SPACING, mask, model=_model(min(c.confidence + 0.01, 1.0))) == []


def test_shipped_demo_model_loads_if_present():
    from analysis.clusters import DEFAULT_CLUSTER_MODEL, default_cluster_model

    if not DEFAULT_CLUSTER_MODEL.is_file():
        pytest.skip("no demonstration cluster model in this checkout")
    model = default_cluster_model()
    assert model.not_for_clinical_use
    assert "NOT FOR CLINICAL USE" in json.dumps(model.info)
    assert 0 < model.threshold < 1


# ---- hit rule ------------------------------------------------------------------------------

def test_hit_rule_needs_half_of_the_truth_calcifications():
    from training.clusters.collect import hits

    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    two_of_four = np.array([[1.0, 1.0], [9.0, 9.0], [20.0, 20.0], [30.0, 1.0]])
    one_of_four = np.array([[1.0, 1.0], [15.0, 9.0], [20.0, 20.0], [30.0, 1.0]])
    assert hits(square, [two_of_four, one_of_four]) == [0]
    assert hits(square, [one_of_four]) == []


def test_truth_clusters_from_particle_rows():
    from training.clusters.views import truth_clusters

    rows = [{"label": "0", "kind": "noise_peak", "cluster_id": "", "row": "5", "col": "5"},
            {"label": "1", "kind": "amorphous", "cluster_id": "2", "row": "10", "col": "20"},
            {"label": "2", "kind": "amorphous", "cluster_id": "2", "row": "12", "col": "22"},
            {"label": "3", "kind": "fine_linear", "cluster_id": "1", "row": "50", "col": "60"}]
    clusters = truth_clusters(rows)
    assert [c.cluster_id for c in clusters] == ["1", "2"]
    assert clusters[0].kind == "fine_linear_branching"
    assert clusters[1].points_xy.tolist() == [[20.5, 10.5], [22.5, 12.5]]
    assert clusters[1].particle_labels == (1, 2)


@pytest.mark.parametrize("learner", ["lightgbm", "logistic"])
def test_train_cluster_model_separates_and_sets_threshold(tmp_path, learner):
    from training.clusters.collect import ViewCandidates
    from training.clusters.train import importance, train_cluster_model

    rng = np.random.default_rng(0)
    views = []
    for i in range(30):
        truth = [{"cluster_id": "1", "kind": "punctate", "n": 8, "n_segmented": 8, "detectable": True}] if i % 2 else []
        cands = []
        for j in range(3):
            true = bool(i % 2) and j == 0
            f = {name: float(rng.uniform(0, 1)) for name in FEATURE_NAMES}
            f["n_calcifications"] = float(rng.integers(8, 20) if true else rng.integers(3, 6))
            f["linearity"] = float(rng.uniform(0, 0.6) if true else rng.uniform(0.7, 1.0))
            cands.append({"features": f, "hits": [0] if true else [], "ignored": False})
        views.append(ViewCandidates(name=f"synthetic:s/truth/SYNTH{i // 2:04d}/{'LCC' if i % 2 else 'RCC'}",
                                    source="synthetic", truth=truth, candidates=cands))
    model = train_cluster_model(views, seed=0, target_fp_per_image=0.1, learner=learner)
    assert model.learner == learner and 0 < model.threshold <= 1
    weight = importance(model)
    if learner == "logistic":
        assert weight["n_calcifications"] > 0 and weight["linearity"] < 0
    else:   # the two informative features carry most of the trees' gain
        assert weight["n_calcifications"] + weight["linearity"] > 0.5 * sum(weight.values())
    again = ClusterModel.from_bytes(model.to_bytes())   # the file gives the same scores
    features = [c["features"] for v in views for c in v.candidates]
    assert again == model and np.array_equal(again.predict(features), model.predict(features))
    assert "NOT FOR CLINICAL USE" in model.info["not_for_clinical_use"]
    from training.clusters.evaluate import evaluate

    report = evaluate(views, [], model, "test")
    op = report["simulated"]["operating_point"]
    assert op["sensitivity"]["all"]["sensitivity"] > 0.8 and op["fp_per_image"] <= 0.2


def test_hits_too_large_to_localise_their_cluster_are_left_out_of_the_fit():
    """A hit whose outline exceeds max_positive_area_mm2 (a chained group around a cluster) is
    neither positive nor negative; a large candidate without a hit stays a negative; ignored
    candidates without a hit stay out; None fits every hit. The model records what it left out."""
    from training.clusters.collect import ViewCandidates
    from training.clusters.train import MAX_POSITIVE_AREA_MM2, left_out, samples, train_cluster_model

    def cand(area, hit, ignored=False):
        return {"features": {**{n: 0.5 for n in FEATURE_NAMES}, "area_mm2": float(area)},
                "hits": [0] if hit else [], "ignored": ignored}

    assert MAX_POSITIVE_AREA_MM2 == 500
    assert left_out(cand(600, True)) and not left_out(cand(400, True))
    assert not left_out(cand(600, False)) and left_out(cand(10, False, ignored=True))
    assert not left_out(cand(600, True), None)
    view = ViewCandidates(name="synthetic:s/truth/SYNTH0001/LCC", source="synthetic", truth=[{"n": 8}],
                          candidates=[cand(600, True), cand(50, True), cand(700, False), cand(10, False, True)])
    feats, y, w, where = samples([view], 5.0)
    assert y.tolist() == [1, 0] and [f["area_mm2"] for f in feats] == [50.0, 700.0]
    assert samples([view], 5.0, None)[1].tolist() == [1, 1, 0]
    rng = np.random.default_rng(1)
    views = []
    for i in range(30):
        cands = [cand(rng.uniform(20, 80), True), cand(rng.uniform(20, 80), False)]
        cands[0]["features"]["n_calcifications"], cands[1]["features"]["n_calcifications"] = 12.0, 3.0
        if i % 3 == 0:
            cands.append({**cand(900, True), "features": {**cands[0]["features"], "area_mm2": 900.0}})
        views.append(ViewCandidates(name=f"synthetic:s/truth/SYNTH{i // 2:04d}/{'LCC' if i % 2 else 'RCC'}",
                                    source="synthetic", truth=[{"n": 12}], candidates=cands))
    model = train_cluster_model(views, seed=0)
    assert model.info["positives_left_out"] == 10 and model.info["positives"] == 30
    assert model.info["max_positive_area_mm2"] == 500


def test_a_hit_holds_half_of_all_calcifications_or_half_of_those_the_observer_finds():
    from training.clusters.collect import ViewCandidates, apply_observer

    # a cluster of 6 calcifications on a row, 10 px apart; the observer finds the first 3 only
    points = [[10.0 + 10 * k, 50.0] for k in range(6)]
    square = lambda x0, x1: [[x0, 40.0], [x1, 40.0], [x1, 60.0], [x0, 60.0]]
    truth = [{"cluster_id": "1", "kind": "amorphous", "n": 6, "labels": [1, 2, 3, 4, 5, 6], "points_xy": points,
              "n_segmented": 3, "detectable": True}]
    cands = [{"outline_xy": square(5, 35), "hits": [], "hits_all": []},    # the 3 seen: 3/6 of all, 3/3 seen
             {"outline_xy": square(5, 25), "hits": [], "hits_all": []},    # 2 seen: 2/6, 2/3
             {"outline_xy": square(35, 75), "hits": [0], "hits_all": [0]},  # the 3 unseen: 3/6 of all
             {"outline_xy": square(200, 220), "hits": [], "hits_all": []}]  # elsewhere
    view = ViewCandidates(name="synthetic:s/truth/SYNTH0001/LCC", source="synthetic", truth=truth, candidates=cands)
    apply_observer(view, {1: 0.9, 2: 0.6, 3: 0.5, 4: 0.4, 5: 0.1, 6: 0.0})
    assert truth[0]["observed_labels"] == [1, 2, 3] and truth[0]["n_observer"] == 3 and truth[0]["visible"]
    assert [c["hits"] for c in cands] == [[0], [0], [0], []]
    assert [c["hits_all"] for c in cands] == [[], [], [0], []]       # the first half alone, kept for reports
    # truth collected before the rule (no points) keeps its hits
    old = ViewCandidates(name="x", source="synthetic", truth=[{k: v for k, v in truth[0].items() if k != "points_xy"}],
                         candidates=[{"outline_xy": square(5, 25), "hits": []}])
    apply_observer(old, {1: 0.9, 2: 0.9, 3: 0.9})
    assert old.candidates[0]["hits"] == [] and old.truth[0]["visible"]


# ---- the commands on a tiny simulated set --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from PIL import Image

    from dicom_node.cli import main
    from training.clusters.views import synthetic_views

    root = tmp_path_factory.mktemp("clusters")
    data = root / "synth"
    assert main(["synth", "--out", str(data), "--cases", "2", "--seed", "7", "--size", "900x700",
                 "--max-clusters", "2", "--types", "punctate", "--lateralities", "L", "--views", "CC",
                 "--quiet", "--workers", "1"]) == 0
    # a "real" negative: a simulated view as a 16-bit PNG with a lesion mask beside it
    view = next(synthetic_views(data))
    png = root / "neg" / "case_R-CC.png"
    png.parent.mkdir()
    Image.fromarray(np.round(view.pixels * 4095).astype(np.uint16)).save(png)
    mask = np.zeros(view.pixels.shape, np.uint8)
    mask[100:150, 100:150] = 255
    Image.fromarray(mask).save(png.with_name("case_R-CC_benign_lesion_mask.png"))
    return data, png.parent, root


def test_evaluate_clusters_writes_json_and_png(tiny_set):
    from dicom_node.cli import main

    data, neg, root = tiny_set
    out = root / "eval"
    assert main(["evaluate-clusters", "--data", str(data), "--negatives", str(neg), "--model", "rule",
                 "--out", str(out), "--quiet", "--save-candidates", str(root / "cands.json")]) == 0
    report = json.loads((out / "cluster_metrics.json").read_text())
    assert (out / "cluster_froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sim = report["simulated"]
    assert sim["images"] == 2 and report["real"]["images"] == 1
    assert sim["truth_clusters"] >= 1
    assert sim["operating_point"]["threshold"] == RULE_THRESHOLD
    assert "punctate" in sim["froc"] and sim["froc"]["all"]
    assert 0.0 <= sim["at_fp_rate"]["all"]["sensitivity"] <= 1.0
    assert list(report["real"]["views"]) == ["real:case_R-CC"]
    # the truth the cluster target is stated on: clusters the ideal observer sees (>= 3 particles
    # found at 1 FP/cm²); bright punctate clusters of 4+ calcifications are visible
    cands = json.loads((root / "cands.json").read_text())
    truth = [t for v in cands["simulated"] for t in v["truth"]]
    assert all(isinstance(t["n_observer"], int) and 0 <= t["n_observer"] <= t["n"] for t in truth)
    assert all(t["visible"] == (t["n_observer"] >= 3) for t in truth)
    assert sim["visible_clusters"] == sum(t["visible"] for t in truth) >= 1
    assert sim["operating_point"]["sensitivity"]["visible"]["n"] == sim["visible_clusters"]
    assert "visible" in sim["at_fp_rate"] and "punctate (visible)" in sim["froc"]
    # the candidates file reproduces the evaluation without segmenting again
    out2 = root / "eval2"
    assert main(["evaluate-clusters", "--candidates", str(root / "cands.json"), "--model", "rule",
                 "--out", str(out2), "--quiet"]) == 0
    again = json.loads((out2 / "cluster_metrics.json").read_text())
    assert again["simulated"]["froc"] == sim["froc"]


def test_train_clusters_records_its_member_threshold_and_evaluation_follows_it(tiny_set, capsys):
    """--member-threshold is stored in the model; evaluate-clusters then searches for members as the
    model was trained to, and refuses candidates collected at another threshold."""
    from dicom_node.cli import main

    data, neg, root = tiny_set
    model = root / "loose.json"
    assert main(["train-clusters", "--data", str(data), "--negatives", str(neg), "--member-threshold", "0.5",
                 "--member-density", "50", "--out", str(model), "--quiet",
                 "--save-candidates", str(root / "loose.json.cands")]) == 0
    loaded = ClusterModel.load(model)
    assert loaded.member_threshold == 0.5 and loaded.member_density_per_cm2 == 50
    oof = loaded.info["out_of_fold_at_threshold"]
    assert 0 <= oof["visible_found"] <= oof["visible_clusters"] <= oof["clusters"] and oof["found"] <= oof["clusters"]
    printed = capsys.readouterr().out
    assert "members at 0.5 (raised per view to <= 50 per cm² of breast)" in printed
    assert f"{oof['found']}/{oof['clusters']} clusters" in printed
    saved = json.loads((root / "loose.json.cands").read_text())
    assert saved["member_threshold"] == 0.5 and saved["member_density_per_cm2"] == 50
    # candidates collected at the operating point do not fit this model
    assert main(["evaluate-clusters", "--data", str(data), "--model", "rule", "--out", str(root / "e2"),
                 "--quiet", "--save-candidates", str(root / "op.cands")]) == 0
    # each candidate counts the operating point's calcifications in its outline (what its ROI analysis
    # gets); with members at the operating point every member is one of them
    op_cands = [c for v in json.loads((root / "op.cands").read_text())["simulated"] for c in v["candidates"]]
    assert op_cands and all(c["n_operating_point"] >= c["features"]["n_calcifications"] for c in op_cands)
    assert main(["evaluate-clusters", "--candidates", str(root / "op.cands"), "--model", str(model),
                 "--out", str(root / "e3"), "--quiet"]) == 2
    assert "selection threshold the segmentation model's own, not 0.5 (raised" in capsys.readouterr().err
    assert main(["evaluate-clusters", "--candidates", str(root / "loose.json.cands"), "--model", str(model),
                 "--out", str(root / "e4"), "--quiet"]) == 0
    k = json.loads((root / "e4" / "cluster_metrics.json").read_text())["simulated"]["kept_not_assessable"]
    assert k is None or 0 <= k["hits_not_assessable"] <= min(k["hits"], k["not_assessable"]) <= k["kept"]
    assert main(["train-clusters", "--data", str(data), "--member-threshold", "2", "--out",
                 str(root / "x.json")]) == 2
    assert main(["train-clusters", "--data", str(data), "--member-density", "2", "--out",
                 str(root / "x.json")]) == 2


def test_evaluate_clusters_refuses_missing_inputs(tiny_set, tmp_path, capsys):
    from dicom_node.cli import main

    assert main(["evaluate-clusters", "--data", str(tmp_path / "nope"), "--model", "rule",
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate-clusters", "--model", str(tmp_path / "none.json"), "--out", str(tmp_path / "o"),
                 "--data", str(tiny_set[0])]) == 2
    assert "no such" in capsys.readouterr().err


@pytest.mark.interop
def test_views_inserted_into_a_real_view_ignore_its_lesion_as_the_view_itself_does(interop, tmp_path):
    """The real calcifications of a marked lesion are in no truth: a detection there must be neither a
    hit nor a false mark on an insertion view, as on the real view (a model trained with them as false
    clusters learnt to drop the one real cluster it had; docs/clusters.md)."""
    from training.clusters.views import real_view, synthetic_views
    from training.synth.config import SynthConfig
    from training.synth.dataset import generate_dataset

    source = interop / "real-tissue" / "nyu_gmic_0_R-CC.png"
    plain = interop / "real-tissue" / "nyu_gmic_0_L-CC.png"   # no lesion mask
    generate_dataset(SynthConfig(cases=2, seed=5, max_clusters=1, backgrounds=(str(source), str(plain)),
                                 background_spacing_mm=0.07), tmp_path, workers=1, progress=False)
    views = {v.name.rsplit("/", 1)[-1]: v for v in synthetic_views(tmp_path)}
    expected = real_view(source).ignore
    assert expected is not None and expected.any()
    assert np.array_equal(views["RCC"].ignore, expected)
    assert views["LCC"].ignore is None


@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.5, 3.0])
def test_cluster_threshold_is_the_lowest_with_false_marks_within_the_target(target):
    """choose_threshold counts false marks from sorted confidences; the definition is the descending
    scan over the confidences with ``operating`` at each (ties, ignored and hit candidates included)."""
    from training.clusters.collect import ViewCandidates
    from training.clusters.evaluate import operating
    from training.clusters.train import choose_threshold

    rng = np.random.default_rng(3)
    views, conf = [], []
    for i in range(40):
        n = int(rng.integers(0, 6))
        cands = [{"features": {}, "hits": [0] if rng.random() < 0.3 else [], "ignored": bool(rng.random() < 0.1)}
                 for _ in range(n)]
        views.append(ViewCandidates(name=f"synthetic:s/truth/SYNTH{i:04d}/LCC", source="synthetic",
                                    truth=[{"n": 8}], candidates=cands))
        conf.append(np.round(rng.uniform(0, 1, n), 2))  # rounded: ties between candidates
    values = np.unique(np.concatenate([*conf, [1.0]]))
    expected = 1.0
    for t in values[::-1]:
        if sum(operating(views, conf, t)["false_marks"]) / len(views) > target:
            break
        expected = float(t)
    assert choose_threshold(views, conf, target) == expected
    # a looser target never gives a higher threshold
    assert choose_threshold(views, conf, target + 0.2) <= expected


@pytest.mark.parametrize("seed", [4, 5])
def test_cluster_froc_equals_the_operating_counts_at_every_confidence(seed):
    """froc counts from sorted confidences; the definition is ``operating`` at each threshold (ties,
    ignored and hit candidates, candidates hitting two clusters, clusters no candidate hits, a subset)."""
    from training.clusters.collect import ViewCandidates
    from training.clusters.evaluate import froc, operating

    rng = np.random.default_rng(seed)
    views, conf = [], []
    for i in range(30):
        n_truth, n = int(rng.integers(0, 3)), int(rng.integers(0, 6))
        cands = [{"features": {}, "ignored": bool(rng.random() < 0.1),
                  "hits": sorted({int(h) for h in rng.integers(0, n_truth, int(rng.integers(0, 3)))}) if n_truth else []}
                 for _ in range(n)]
        views.append(ViewCandidates(name=f"synthetic:s/truth/SYNTH{i:04d}/LCC", source="synthetic",
                                    truth=[{"n": 8, "type": str(rng.choice(["a", "b"]))} for _ in range(n_truth)],
                                    candidates=cands))
        conf.append(np.round(rng.uniform(0, 1, n), 2))
    for subset in (None, lambda t: t["type"] == "a"):
        points = froc(views, conf, subset)
        truth = [t for v in views for t in v.truth]
        chosen = np.array([subset is None or subset(t) for t in truth], bool)
        thresholds = np.unique(np.concatenate([*conf, [np.inf]]))[::-1]
        assert len(points) == len(thresholds)
        for p, t in zip(points, thresholds):
            o = operating(views, conf, t)
            assert p["sensitivity"] == pytest.approx(np.array(o["found"], bool)[chosen].mean())
            assert p["fp_per_image"] == pytest.approx(sum(o["false_marks"]) / len(views))
