"""CNN selection step: the proximity target, the decision rule, crops, saving and loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataclasses import replace

from analysis.segmentation.cnn import (ProximityNet, SegmentationModel, SelectionParams, candidate_crops,
                                       outline_objects, predict_crop, proximity_target, select_candidates)
from training.model_files import save_segmentation_model


def test_proximity_target_follows_the_kernel():
    mask = np.zeros((41, 41), bool)
    mask[20, 20] = True
    target = proximity_target(mask, spacing_mm=0.07, radius_mm=0.7, a=1.0)
    assert target[20, 20] == pytest.approx(1.0)
    # 5 px = 0.35 mm = x/2: K = (e^0.5 - 1) / (e - 1)
    assert target[20, 25] == pytest.approx((np.exp(0.5) - 1) / (np.e - 1), rel=1e-5)
    assert target[20, 30] == pytest.approx(0.0, abs=1e-6)  # d = x
    assert target[20, 31] == 0.0 and target[0, 0] == 0.0
    row = target[20, 20:31]
    assert np.all(np.diff(row) < 0)


def test_proximity_target_is_defined_in_mm():
    fine = np.zeros((81, 81), bool)
    fine[40, 40] = True
    coarse = np.zeros((41, 41), bool)
    coarse[20, 20] = True
    t_fine = proximity_target(fine, 0.035)
    t_coarse = proximity_target(coarse, 0.07)
    assert t_fine[40, 50] == pytest.approx(t_coarse[20, 25], rel=1e-5)  # both 0.35 mm away


def test_proximity_target_of_empty_mask_is_zero():
    assert not proximity_target(np.zeros((5, 5), bool), 0.07).any()


def test_candidate_crops_cover_each_candidate_once():
    labels = np.zeros((200, 200), np.int32)
    labels[10:13, 10:13] = 1
    labels[14:16, 14:16] = 2      # overlaps 1 once grown: same crop
    labels[150:152, 150:160] = 3  # far away: its own crop
    crops = candidate_crops(labels, margin_px=5)
    assert sorted(m for _, members in crops for m in members) == [1, 2, 3]
    assert len(crops) == 2
    for box, members in crops:
        for m in members:
            rows, cols = np.nonzero(labels == m)
            assert box[0].start <= rows.min() - 5 or box[0].start == 0
            assert box[0].stop >= rows.max() + 1 + 5 or box[0].stop == 200
    total = sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b, _ in crops)
    assert total < 0.1 * labels.size


class ConstantNet(ProximityNet):
    """A real ProximityNet whose last layer's bias sets the output everywhere (weights zeroed)."""

    def __init__(self, probability: float):
        super().__init__(width=4)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.body[-1].bias.fill_(float(np.log(probability / (1 - probability))))


def test_decision_rule_uses_threshold_and_fraction():
    """HDoGReg's rule on whole candidates (outline_level None) with a real net of constant output."""
    pixels = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    labels = np.zeros((64, 64), np.int32)
    labels[10:14, 10:14] = 1
    labels[40:44, 40:44] = 2
    params = SelectionParams(outline_level=None)
    above = SegmentationModel(ConstantNet(params.prediction_threshold * 2), params)
    below = SegmentationModel(ConstantNet(params.prediction_threshold / 2), params)
    selection = select_candidates(pixels, 0.07, labels, above)
    assert len(selection.scores) == 2 and set(np.unique(selection.objects)) == {0, 1, 2}
    assert np.allclose(selection.scores, params.prediction_threshold * 2, rtol=1e-3)
    assert selection.kept.sum() == 32
    selection = select_candidates(pixels, 0.07, labels, below)
    assert np.all(selection.scores < params.prediction_threshold) and not selection.kept.any()


def test_outlines_cut_a_merged_candidate_into_its_calcifications():
    """A 20x20 candidate (texture merged with two calcifications) holding two 3x3 spots of high
    prediction: two objects at the spots, each kept on its own by the 30 % rule that the whole
    candidate (18/400 pixels high) fails."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:25, 5:25] = 7
    labels[30:33, 30:33] = 9            # another candidate, not judged here
    prediction = np.full((40, 40), 0.05, np.float32)
    prediction[8:11, 8:11] = 0.95
    prediction[18:21, 12:15] = 0.9
    prediction[30:33, 30:33] = 1.0
    params = SelectionParams(outline_level=0.7, prediction_threshold=0.8)
    objects, scores = outline_objects(prediction, labels, [7], params)
    assert objects.max() == 2 and np.allclose(sorted(scores), [0.9, 0.95])
    assert (objects > 0).sum() == 18 and not objects[30:33, 30:33].any()
    whole, whole_score = outline_objects(prediction, labels, [7], replace(params, outline_level=None))
    assert (whole == 1).sum() == 400 and whole_score[0] == pytest.approx(0.05)
    # nothing above the outline level: no object at all
    flat, flat_scores = outline_objects(np.full((40, 40), 0.5, np.float32), labels, [7, 9], params)
    assert not flat.any() and flat_scores.size == 0


def test_models_from_before_outlines_keep_hdogreg_rule(tmp_path):
    model = SegmentationModel(ProximityNet(), SelectionParams(prediction_threshold=0.5))
    save_segmentation_model(model, tmp_path / "old.pt")
    blob = torch.load(tmp_path / "old.pt", weights_only=True)
    del blob["params"]["outline_level"]       # as written before outlines existed
    torch.save(blob, tmp_path / "old.pt")
    assert SegmentationModel.load(tmp_path / "old.pt").params.outline_level is None
    assert SelectionParams().outline_level == pytest.approx(0.7)


def test_support_score_is_the_fraction_rule():
    """score >= t exactly when MORE than 30 % of the candidate's pixels are >= t."""
    from analysis.segmentation.cnn import support_scores

    rng = np.random.default_rng(5)
    labels = rng.integers(1, 6, size=(30, 30))
    prediction = rng.random((30, 30)).astype(np.float32)
    members = [1, 2, 3, 4, 5]
    scores = support_scores(prediction, labels, members, 0.3)
    for t in np.linspace(0, 1, 41):
        for label, score in zip(members, scores):
            fraction = (prediction[labels == label] >= t).mean()
            assert (score >= t) == (fraction > 0.3), (label, t)


def test_no_candidates_gives_empty_mask():
    model = SegmentationModel(ConstantNet(0.5))
    selection = select_candidates(np.zeros((32, 32), np.float32), 0.07,
                                  np.zeros((32, 32), np.int32), model)
    assert not selection.kept.any() and not selection.objects.any() and selection.scores.size == 0


def test_prediction_keeps_the_crop_shape_at_other_spacings():
    net = ProximityNet()
    crop = np.random.default_rng(1).random((37, 53), dtype=np.float32)
    for spacing in (0.05, 0.07, 0.094):
        out = predict_crop(net, crop, spacing)
        assert out.shape == crop.shape and out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 1


def test_save_and_load_round_trip(tmp_path):
    model = SegmentationModel(ProximityNet(), SelectionParams(min_fraction=0.25), {"trained_on": "test"})
    digest = save_segmentation_model(model, tmp_path / "seg.pt")
    loaded = SegmentationModel.load(tmp_path / "seg.pt")
    assert loaded.params.min_fraction == 0.25 and loaded.info == {"trained_on": "test"}
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(model.net.eval()(x), loaded.net(x))
    assert len(digest) == 64 and (tmp_path / "seg.pt").stat().st_size < 20e6
    with pytest.raises(ValueError):
        (tmp_path / "junk.pt").write_bytes(b"no")
        SegmentationModel.load(tmp_path / "junk.pt")


def test_grow_region_in_mm():
    from analysis.segmentation.pipeline import grow_region

    region = np.zeros((100, 100), bool)
    region[50, 50] = True
    grown = grow_region(region, (0.1, 0.05), 1.0)  # 10 px along rows, 20 along columns
    rows, cols = np.nonzero(grown)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (40, 60, 30, 70)
    assert not grow_region(np.zeros((5, 5), bool), (0.1, 0.1), 1.0).any()


@pytest.mark.parametrize("spacing", [(0.07, 0.07), (0.1, 0.05), (0.05, 0.085)])
def test_grow_region_part_by_part_equals_the_whole_image_transform(spacing):
    """Grown part by part (each connected part's own box), the region equals the distance
    transform of the whole image thresholded at the growth, pixel for pixel, with parts far
    apart, close together, touching each other and the image border."""
    from scipy import ndimage

    from analysis.segmentation.pipeline import grow_region

    rng = np.random.default_rng(11)
    for _ in range(8):
        region = np.zeros((180, 220), bool)
        for _ in range(int(rng.integers(1, 6))):
            r, c = int(rng.integers(0, 180)), int(rng.integers(0, 220))
            region[max(r - int(rng.integers(0, 15)), 0):r + 1, max(c - int(rng.integers(0, 15)), 0):c + 1] = True
        grow = float(rng.uniform(0.2, 1.5))
        expected = ndimage.distance_transform_edt(~region, sampling=spacing) <= grow * (1 + 1e-9)
        np.testing.assert_array_equal(grow_region(region, spacing, grow), expected)


def test_models_from_before_local_scaling_keep_the_crop_scaling(tmp_path):
    """The shipped bundle's CNN was trained on crop-wide median/MAD inputs: it must keep them, and its
    identity (what cached features and bundles are keyed by) must not change."""
    from analysis.classify import segmentation_identity

    model = SegmentationModel(ProximityNet(), SelectionParams(input_normalisation="crop"))
    save_segmentation_model(model, tmp_path / "old.pt")
    blob = torch.load(tmp_path / "old.pt", weights_only=True)
    del blob["params"]["input_normalisation"]  # as written before local scaling existed
    torch.save(blob, tmp_path / "old.pt")
    old = SegmentationModel.load(tmp_path / "old.pt")
    assert old.params.input_normalisation == "crop"
    assert SelectionParams().input_normalisation == "local"
    assert segmentation_identity(old) == segmentation_identity(model)
    assert segmentation_identity(SegmentationModel(model.net, SelectionParams())) != segmentation_identity(model)


def test_segmentation_identity_covers_every_setting_that_changes_the_objects(monkeypatch):
    """The identity names the CNN *and* the segmentation settings: each HDoG parameter, the ROI
    growth and the breast mask parameters change it; the same values (however written) do not."""
    from analysis.classify import segmentation_identity
    from analysis.segmentation import BreastMaskParams, HDoGParams
    from analysis.segmentation import settings

    model = SegmentationModel(ProximityNet(width=2), SelectionParams())
    default = segmentation_identity(model)
    assert segmentation_identity(model, HDoGParams()) == default
    assert segmentation_identity(model, HDoGParams(dog_threshold=0.006, truncate=4)) == default  # 4 == 4.0
    assert segmentation_identity(model, HDoGParams(dog_threshold=0.0061)) != default
    changed = {"min_sigma_mm": 0.09, "max_sigma_mm": 0.3, "sigma_ratio": 1.5, "dog_threshold": 0.01,
               "hessian_threshold": 1.0, "truncate": 3.0, "context_mm": 4.0}
    assert set(changed) == set(settings.params_dict(HDoGParams()))  # a new parameter must be listed here
    identities = {segmentation_identity(model, replace(HDoGParams(), **{k: v})) for k, v in changed.items()}
    assert len(identities) == len(changed) and default not in identities
    monkeypatch.setattr(settings, "REGION_GROWTH_MM", 1.5)
    grown = segmentation_identity(model)
    assert grown not in identities | {default}
    monkeypatch.setattr(settings, "REGION_GROWTH_MM", 1.0)
    monkeypatch.setattr(settings, "BreastMaskParams", lambda: BreastMaskParams(erosion_mm=2.0))
    eroded = segmentation_identity(model)
    assert eroded not in identities | {default, grown}
    monkeypatch.undo()
    monkeypatch.setattr(settings, "WHOLE_BREAST_CENTROID_RULE", False)
    assert segmentation_identity(model) not in identities | {default, grown, eroded}
    monkeypatch.undo()
    assert segmentation_identity(model) == default


def test_segment_runs_with_the_region_growth_of_the_settings(monkeypatch):
    """REGION_GROWTH_MM, which the identity records, is the growth segment() applies."""
    from analysis.segmentation import pipeline, settings

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    assert pipeline.REGION_GROWTH_MM is settings.REGION_GROWTH_MM
    grown = []
    monkeypatch.setattr(pipeline, "grow_region", lambda region, spacing, mm: grown.append(mm) or region)
    monkeypatch.setattr(pipeline, "hdog_candidates", stop)
    with pytest.raises(Stop):
        pipeline.segment(np.zeros((8, 8), np.float32), (0.07, 0.07), np.ones((8, 8), bool),
                         SegmentationModel(ProximityNet(width=2), SelectionParams()))
    assert grown == [settings.REGION_GROWTH_MM]


def test_local_scaling_does_not_depend_on_the_crop_size():
    """The network sees the same input for a pixel whether it sits in a 3.4 mm training patch or a
    large inference crop: read with its context, a small crop is scaled as the whole image is."""
    from analysis.segmentation.cnn import local_context_px, normalise, normalise_local

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:400, :400]
    image = (0.3 + 0.4 * x / 400 + 0.01 * rng.standard_normal((400, 400))).astype(np.float32)  # density trend
    image[200:203, 200:203] += 0.05                                                         # a calcification
    whole = normalise_local(image)
    ctx = local_context_px()
    small = normalise_local(image[176 - ctx:224 + ctx, 176 - ctx:224 + ctx])[ctx:-ctx, ctx:-ctx]
    assert np.abs(small - whole[176:224, 176:224]).max() < 0.05 * np.abs(whole[176:224, 176:224]).max()
    assert small[24:27, 24:27].mean() > 3  # the calcification stands out in noise units
    # the crop-wide scaling does depend on the crop: the trend dominates its spread
    crop_small, crop_whole = normalise(image[176:224, 176:224]), normalise(image)[176:224, 176:224]
    assert np.abs(crop_small - crop_whole).max() > 0.5 * np.abs(crop_small).max()


def test_prediction_with_context_has_the_inner_shape():
    from analysis.segmentation.cnn import with_context

    net = ProximityNet()
    image = np.random.default_rng(4).random((120, 140), dtype=np.float32)
    box = (slice(5, 60), slice(70, 138))
    outer, context = with_context(box, image.shape, 30)
    assert context == (5, 30, 30, 2)                 # clipped at the image's edges
    for spacing in (0.05, 0.07, 0.094):
        out = predict_crop(net, image[outer], spacing, "local", context)
        assert out.shape == (55, 68) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError):
        predict_crop(net, image, 0.07, "unknown")


def test_particle_table_equals_scipy_measurements():
    """Centroids, areas and peaks from the labelled pixels alone equal scipy.ndimage's
    measurements over the image, labels without pixels included (NaN centroid, area 0, peak 0)."""
    from scipy import ndimage

    from analysis.segmentation.pipeline import particle_table

    rng = np.random.default_rng(5)
    for _ in range(60):
        labels = np.zeros((90, 120), np.int32)
        for label in range(1, int(rng.integers(2, 9))):
            if rng.random() < 0.2:
                continue  # a label without pixels
            r, c = int(rng.integers(0, 85)), int(rng.integers(0, 115))
            labels[r:r + int(rng.integers(1, 6)), c:c + int(rng.integers(1, 6))] = label
        pixels = rng.random(labels.shape, dtype=np.float32)
        spacing = (0.07, 0.05)
        table = particle_table(labels, pixels, spacing)
        n = int(labels.max())
        index = np.arange(1, n + 1)
        assert len(table) == n
        if n == 0:
            continue
        with np.errstate(invalid="ignore"):
            centroids = np.array(ndimage.center_of_mass(labels > 0, labels, index)).reshape(n, 2)
        areas = ndimage.sum_labels(labels > 0, labels, index)
        np.testing.assert_array_equal(table["row"], centroids[:, 0])
        np.testing.assert_array_equal(table["col"], centroids[:, 1])
        np.testing.assert_array_equal(table["area_px"], areas)
        np.testing.assert_array_equal(table["area_mm2"], areas * spacing[0] * spacing[1])
        np.testing.assert_array_equal(table["max_intensity"], ndimage.maximum(pixels, labels, index).astype(np.float32))


def test_at_threshold_keeps_the_selection_objects_above_another_threshold():
    """at_threshold re-decides the selection without running the network: at the model's own
    threshold it gives exactly segment()'s calcifications, lower it keeps a superset (every
    calcification of the operating point stays, whole), and a non-score is refused."""
    from analysis.segmentation.pipeline import at_threshold, segment
    from training.clusters.collect import DEFAULT_SEGMENTATION_MODEL

    model = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)
    rng = np.random.default_rng(11)
    pixels = (0.35 + rng.normal(0, 0.012, (320, 320))).astype(np.float32)
    rows, cols = np.mgrid[:320, :320]
    for k in range(40):   # specks from clearly visible to barely there
        r, c = rng.integers(15, 305, 2)
        amp = 0.02 + 0.1 * (k % 8) / 7
        pixels += (amp * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.5 ** 2))).astype(np.float32)
    spacing = (0.07, 0.07)
    seg = segment(np.clip(pixels, 0, 1), spacing, np.ones(pixels.shape, bool), model)
    scores = seg.selection.scores
    assert len(scores) > len(seg) > 0   # some objects scored below the operating point
    same = at_threshold(seg, np.clip(pixels, 0, 1), spacing, model.params.prediction_threshold)
    np.testing.assert_array_equal(same.labels, seg.labels)
    np.testing.assert_array_equal(same.particles, seg.particles)
    lower = at_threshold(seg, np.clip(pixels, 0, 1), spacing, float(np.min(scores)))
    assert len(lower) > len(seg)
    for label in range(1, len(seg) + 1):   # each operating-point calcification lies in one lower one
        inside = np.unique(lower.labels[seg.labels == label])
        assert len(inside) == 1 and inside[0] > 0
    assert len(at_threshold(seg, np.clip(pixels, 0, 1), spacing, 1.0)) <= len(seg)
    with pytest.raises(ValueError, match="support score"):
        at_threshold(seg, pixels, spacing, 1.5)


def test_whole_breast_objects_count_where_their_centroid_is():
    """centred_in drops the objects whose centroid lies outside the region, renumbers the rest with
    their scores, and removes the dropped objects' kept pixels (and filled holes) only."""
    from analysis.segmentation.cnn import Selection
    from analysis.segmentation.pipeline import centred_in

    objects = np.zeros((40, 40), np.int32)
    objects[5:8, 5:8] = 1                        # inside, kept
    objects[20:26, 20:26] = 2                    # centroid outside, kept, with a filled hole
    objects[22:24, 22:24] = 0
    objects[30:33, 2:5] = 3                      # inside, not kept
    objects[10:13, 30:33] = 4                    # outside, touching object 5 (one kept piece)
    objects[10:13, 33:36] = 5                    # inside
    scores = np.array([0.99, 0.995, 0.2, 0.999, 0.97])
    kept = np.isin(objects, [1, 2, 4, 5])
    kept[22:24, 22:24] = True                    # the hole filled, as the selection does
    region = np.ones((40, 40), bool)
    region[18:28, 18:28] = False                 # object 2's centre
    region[10:13, 30:33] = False                 # object 4's
    out = centred_in(Selection(objects=objects, scores=scores, kept=kept), region)
    assert out.scores.tolist() == [0.99, 0.2, 0.97]
    assert (out.objects[6, 6], out.objects[31, 3], out.objects[11, 34]) == (1, 2, 3)
    assert out.objects.max() == 3 and not out.objects[20:26, 20:26].any() and not out.objects[10:13, 30:33].any()
    assert not out.kept[20:26, 20:26].any()                  # the dropped piece goes, hole and all
    assert out.kept[10:13, 33:36].all() and not out.kept[10:13, 30:33].any()  # the shared piece keeps 5
    assert out.kept[5:8, 5:8].all() and not out.kept[30:33, 2:5].any()
    everything = centred_in(Selection(objects=objects, scores=scores, kept=kept), np.ones((40, 40), bool))
    assert everything.scores is scores or everything.scores.tolist() == scores.tolist()


@pytest.mark.interop
def test_whole_breast_objects_of_a_real_view_have_their_centroid_in_the_breast(interop):
    """On a real processed view the skin line's bright band gave candidates with one foot in the
    mask; in whole-breast mode every object now has its centroid in it (ROIs keep the rule they had)."""
    from analysis.segmentation import breast_mask
    from analysis.segmentation.pipeline import segment
    from training.segmentation.negatives import load_negative

    source = interop / "real-tissue" / "nyu_gmic_0_R-CC.png"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    view = load_negative(source, 0.07)
    from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL

    model = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)
    breast = breast_mask(view.pixels, view.spacing_mm)
    result = segment(view.pixels, view.spacing_mm, None, model)
    rows = np.round(result.particles["row"]).astype(int)
    cols = np.round(result.particles["col"]).astype(int)
    assert len(result.particles) > 0 and breast[rows, cols].all()
    scores = np.asarray(result.selection.scores)
    assert len(scores) == result.selection.objects.max()
