"""ROI input layer: GSPS annotations and SEG segments -> Roi (analysis.dicom_input.rois).

Real files written by other software come from ../shared/interop (skipped with a
reason when absent); everything else is built in the test with tests/roi_factory.py.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import skimage.draw
from matplotlib.path import Path as MplPath
from pydicom.uid import generate_uid

from analysis.dicom_input import ImageGeometry, Roi, RoiError, parse_rois, read_geometry, read_rois
from roi_factory import (annotation, displayed_area, geometry, graphic_object, make_gsps, make_seg,
                         save, text_object)

INTEROP = Path(__file__).resolve().parents[1].parent / "shared" / "interop"


def interop_file(relative: str) -> Path:
    path = INTEROP / relative
    if not path.exists():
        pytest.skip(f"interop fixture {path} is absent (../shared/interop is not part of a fresh clone)")
    return path


def closed(points):
    """A POLYLINE closed the DICOM way: the first point repeated at the end."""
    return list(points) + [points[0]]


def ellipse_points(centre, a, b, angle_deg):
    """ELLIPSE graphic data: major axis endpoints, then minor axis endpoints."""
    c = np.asarray(centre, float)
    u = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
    v = np.array([-u[1], u[0]])
    return [c - a * u, c + a * u, c - b * v, c + b * v]


def pixel_at(mask, x, y):
    """The mask value of the pixel that contains PIXEL point (x, y)."""
    return bool(mask[int(math.floor(y)), int(math.floor(x))])


def distance_to_ring(ring, point):
    """Shortest distance from a point to the edges of a closed ring (first point repeated)."""
    p = np.asarray(point, float)
    best = math.inf
    for start, end in zip(ring[:-1], ring[1:]):
        edge = end - start
        t = 0.0 if not edge.any() else min(max(np.dot(p - start, edge) / np.dot(edge, edge), 0.0), 1.0)
        best = min(best, float(np.linalg.norm(p - (start + t * edge))))
    return best


# ============================================================ interop: real GSPS

@pytest.mark.interop
def test_softneta_ellipse_area_agrees_with_the_area_the_other_software_stated():
    gsps_path = interop_file("gsps/softneta_gsps_ellipse_on_CR.dcm")
    image = read_geometry(interop_file("gsps/softneta_referenced_CR.dcm"))
    text = pydicom.dcmread(gsps_path).GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    stated_mm2 = float(re.search(r"Area:\s*([\d.]+)\s*cm", text).group(1)) * 100.0
    sizes = re.search(r"W:\s*([\d.]+)\s*cm\s*H:\s*([\d.]+)\s*cm", text).groups()
    width_mm, height_mm = (float(v) * 10.0 for v in sizes)

    [roi] = read_rois(gsps_path, images=[image])

    assert roi.kind == "ellipse"
    assert roi.referenced_sop_instance_uid == image.sop_instance_uid
    assert roi.area_mm2(image) == pytest.approx(stated_mm2, rel=0.01)
    assert roi.rasterise(image).sum() * image.pixel_area_mm2 == pytest.approx(stated_mm2, rel=0.01)
    # The stated width and height are the two axes (a horizontal major axis here).
    major_mm = np.linalg.norm(roi.points_px[1] - roi.points_px[0]) * image.pixel_spacing_mm[1]
    minor_mm = np.linalg.norm(roi.points_px[3] - roi.points_px[2]) * image.pixel_spacing_mm[0]
    assert major_mm == pytest.approx(width_mm, rel=0.01)
    assert minor_mm == pytest.approx(height_mm, rel=0.01)
    assert roi.label.startswith("MEASUREMENT_1: ") and "Area: 119" in roi.label


@pytest.mark.interop
def test_lunit_polylines_are_two_closed_polygons_with_the_right_areas_and_scores():
    path = interop_file("gsps/lunit_gsps_polyline_text_on_DX.dcm")
    ds = pydicom.dcmread(path)
    item = ds.GraphicAnnotationSequence[0]
    stored = [np.asarray(obj.GraphicData, float).reshape(-1, 2) for obj in item.GraphicObjectSequence]
    # The stored counts 1,903 and 829 INCLUDE the closing point (a copy of the first).
    assert [len(s) for s in stored] == [1903, 829]
    image_uid = item.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    # The DX image is not included; its size is the Displayed Area (BRHC column 2516, row 3023).
    image = ImageGeometry(image_uid, rows=3023, columns=2516, pixel_spacing_mm=(0.139, 0.139),
                          spacing_source="PresentationPixelSpacing")

    rois = read_rois(path, images=[image])

    assert [roi.kind for roi in rois] == ["polygon", "polygon"]
    assert [len(roi.points_px) for roi in rois] == [1902, 828]  # closing duplicate dropped
    anchored = [(t.UnformattedTextValue, tuple(t.AnchorPoint))
                for t in item.TextObjectSequence if "AnchorPoint" in t]
    for roi, ring in zip(rois, stored):
        np.testing.assert_array_equal(roi.points_px, ring[:-1])
        assert roi.referenced_sop_instance_uid == image_uid
        # Independent area: trapezoid rule over the stored closed ring.
        x, y = ring[:, 0], ring[:, 1]
        trapezoid = abs(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]))) / 2.0
        assert roi.area_px() == pytest.approx(trapezoid, rel=1e-9)
        assert roi.rasterise(image).sum() == pytest.approx(trapezoid, rel=0.005)
        # The score text anchored on or inside this outline labels it (Lunit anchors on the
        # outline: matplotlib's point-in-polygon, or within 1 px of an edge).
        inside = [text for text, anchor in anchored
                  if MplPath(ring).contains_point(anchor) or distance_to_ring(ring, anchor) <= 1.0]
        assert len(inside) == 1
        assert roi.label == f"ANALYSIS LAYER: {inside[0]}"


# ============================================================= interop: real SEG

SEG_FILES = [
    "seg/highdicom_seg_image_cr_binary.dcm",
    "seg/highdicom_seg_image_ct_binary.dcm",
    "seg/highdicom_seg_image_ct_binary_fractional.dcm",
    "seg/highdicom_seg_image_ct_binary_overlap.dcm",
    "seg/highdicom_seg_image_ct_true_fractional.dcm",
    "seg/dcmqi_partial_overlaps_seg.dcm",
    "seg/dcmqi_sr_example_seg.dcm",
    "seg/orthanc_tests_DicomSeg_dcmqi.dcm",
]
DCMQI_SEG_FILES = [name for name in SEG_FILES if "dcmqi" in name]


def highdicom_masks(path: Path) -> tuple[dict[tuple[int, str], np.ndarray], dict[int, str]]:
    """Non-empty (segment, source image) masks and segment labels as highdicom reads them."""
    seg = hd.seg.segread(path)
    uids = [uid for _, _, uid in seg.get_source_image_uids()]
    numbers = list(seg.segment_numbers)
    # dcmqi omits Spatial Locations Preserved, which highdicom otherwise refuses.
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False,
        rescale_fractional=True, ignore_spatial_locations=True)
    fractional = seg.SegmentationType == "FRACTIONAL"
    masks = {}
    for i, uid in enumerate(uids):
        for j, number in enumerate(numbers):
            mask = pixels[i, :, :, j] >= 0.5 if fractional else pixels[i, :, :, j] > 0
            if mask.any():
                masks[(number, uid)] = mask
    labels = {number: seg.get_segment_description(number).segment_label for number in numbers}
    return masks, labels


@pytest.mark.interop
@pytest.mark.parametrize("name", SEG_FILES)
def test_seg_masks_and_labels_agree_with_highdicom(name):
    path = interop_file(name)
    expected_masks, expected_labels = highdicom_masks(path)

    rois = read_rois(path)

    assert {(r.segment_number, r.referenced_sop_instance_uid) for r in rois} == set(expected_masks)
    for roi in rois:
        assert roi.kind == "seg"
        assert roi.label == expected_labels[roi.segment_number]
        key = (roi.segment_number, roi.referenced_sop_instance_uid)
        np.testing.assert_array_equal(roi.mask, expected_masks[key])
        assert roi.area_px() == roi.mask.sum()
        rows, columns = roi.mask.shape
        assert roi.points_px[:, 0].min() >= 0 and roi.points_px[:, 0].max() <= columns
        assert roi.points_px[:, 1].min() >= 0 and roi.points_px[:, 1].max() <= rows
    assert len({roi.roi_id for roi in rois}) == len(rois)


@pytest.mark.interop
@pytest.mark.parametrize("name", DCMQI_SEG_FILES)
def test_dcmqi_segs_give_one_nonempty_roi_per_segment_and_image_with_frame_counts(name):
    path = interop_file(name)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    pixel_counts: dict[tuple[int, str], int] = {}
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if frame.any():
            pixel_counts[(number, uid)] = pixel_counts.get((number, uid), 0) + int(frame.sum())
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}

    rois = read_rois(path)

    assert len(rois) == len(pixel_counts) <= int(ds.NumberOfFrames)
    for roi in rois:
        key = (roi.segment_number, roi.referenced_sop_instance_uid)
        assert roi.label == labels[roi.segment_number]
        assert 0 < roi.area_px() <= pixel_counts[key]  # a union of frames: at most their sum
    assert {roi.segment_number for roi in rois} <= set(labels)


# ============================================================== synthetic GSPS

def test_every_graphic_type_in_pixel_units():
    uid = generate_uid()
    image = geometry(uid, rows=200, columns=160, spacing=(0.1, 0.1))
    objects = [
        graphic_object("POLYLINE", closed([(10, 20), (40, 20), (40, 30), (10, 30)])),
        graphic_object("POLYLINE", [(50, 50), (90, 50), (90, 80)]),  # open: closure is a 40x30 triangle
        graphic_object("INTERPOLATED", closed([(100, 100), (120, 110), (100, 120), (80, 110)])),
        graphic_object("CIRCLE", [(60, 140), (80, 140)]),
        graphic_object("ELLIPSE", ellipse_points((100, 60), 30, 15, 30)),
        graphic_object("POINT", [(30, 100)]),
    ]
    rois = read_rois(make_gsps([annotation(objects, layer="LESIONS")], series_images=[uid]), images=[image])

    assert [r.kind for r in rois] == ["polygon", "polyline", "polygon", "circle", "ellipse", "point"]
    assert [len(r.points_px) for r in rois] == [4, 3, 4, 2, 4, 1]
    assert [r.roi_id for r in rois] == [f"ann1-obj{i}" for i in range(1, 7)]
    expected = [300.0, 600.0, 400.0, math.pi * 20 ** 2, math.pi * 30 * 15, math.pi * 25 ** 2]
    for roi, area in zip(rois, expected):
        assert roi.area_px(image) == pytest.approx(area, rel=1e-9)
        assert roi.label == "LESIONS"
    # Rasterised: exact for the axis-aligned rectangle, close to pi r^2 / pi a b otherwise.
    masks = [roi.rasterise(image) for roi in rois]
    assert masks[0].sum() == 300 and masks[0][20:30, 10:40].all()
    for mask, area in zip(masks[1:], expected[1:]):
        assert mask.sum() == pytest.approx(area, rel=0.02)
    rows, cols = np.nonzero(masks[3])  # the circle is centred on PIXEL (60, 140): indices 59.5, 139.5
    assert cols.mean() == pytest.approx(59.5, abs=0.05) and rows.mean() == pytest.approx(139.5, abs=0.05)
    # The ellipse lies along 30 degrees: in along its major axis, out across it beyond b.
    centre, u = np.array([100.0, 60.0]), np.array([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    assert pixel_at(masks[4], *(centre + 27 * u)) and pixel_at(masks[4], *(centre - 27 * u))
    assert not pixel_at(masks[4], *(centre + 18 * np.array([-u[1], u[0]])))
    assert rois[5].radius_mm == 2.5 and rois[5].area_mm2(image) == pytest.approx(math.pi * 2.5 ** 2)


def test_point_radius_is_in_mm_and_follows_anisotropic_spacing():
    uid = generate_uid()
    image = geometry(uid, rows=100, columns=100, spacing=(0.2, 0.1))  # rows 0.2 mm apart, columns 0.1 mm
    ds = make_gsps([annotation([graphic_object("POINT", [(50, 50)])])], series_images=[uid])

    [roi] = read_rois(ds, point_radius_mm=2.0)

    assert roi.area_px() is None  # a disk in mm needs a spacing
    assert roi.area_px(image) == pytest.approx(math.pi * 20 * 10)
    assert roi.area_mm2(image) == pytest.approx(math.pi * 4.0)
    mask = roi.rasterise(image)
    rows, cols = np.nonzero(mask)
    assert cols.max() - cols.min() + 1 == 40 and rows.max() - rows.min() + 1 == 20
    with pytest.raises(RoiError) as excinfo:
        roi.rasterise(geometry(uid, rows=100, columns=100, spacing=None))
    assert excinfo.value.reason == "no_spacing" and "2.0 mm" in str(excinfo.value)
    with pytest.raises(ValueError):
        read_rois(ds, point_radius_mm=0)


def test_display_units_map_through_the_displayed_area_of_each_image():
    a, b = generate_uid(), generate_uid()
    square = graphic_object("POLYLINE", closed([(0, 0), (1, 0), (1, 1), (0, 1)]), units="DISPLAY")
    centre = graphic_object("POINT", [(0.5, 0.25)], units="DISPLAY")
    areas = [displayed_area((11, 21), (110, 220), images=[a]),  # 100 columns x 200 rows for image A
             displayed_area((1, 1), (160, 200))]                 # everything else: the whole 160x200 image
    ds = make_gsps([annotation([square, centre])], series_images=[a, b], displayed_areas=areas)

    rois = read_rois(ds)

    by_image = {(r.referenced_sop_instance_uid, r.kind): r for r in rois}
    np.testing.assert_allclose(by_image[(a, "polygon")].points_px,
                               [(10, 20), (110, 20), (110, 220), (10, 220)])
    np.testing.assert_allclose(by_image[(a, "point")].points_px, [(60, 70)])
    np.testing.assert_allclose(by_image[(b, "polygon")].points_px, [(0, 0), (160, 0), (160, 200), (0, 200)])
    np.testing.assert_allclose(by_image[(b, "point")].points_px, [(80, 50)])
    assert by_image[(a, "polygon")].rasterise(geometry(a, rows=300, columns=300)).sum() == 100 * 200
    assert by_image[(b, "polygon")].rasterise(geometry(b)).all()


def test_several_annotations_and_images_per_gsps():
    a, b, c = (generate_uid() for _ in range(3))
    circle = graphic_object("CIRCLE", [(50, 50), (60, 50)])
    square = graphic_object("POLYLINE", closed([(0, 0), (10, 0), (10, 10), (0, 10)]))
    triangle = graphic_object("POLYLINE", closed([(20, 20), (40, 20), (30, 40)]))
    first = annotation([circle], layer="CALC", texts=[text_object("cluster 1")], images=[a, b])
    second = annotation([square, triangle])  # no Referenced Image Sequence: every image of the series
    ds = make_gsps([first, second], series_images=[a, b, c])

    rois = read_rois(ds, images=[geometry(uid) for uid in (a, b, c)])

    assert len(rois) == 2 + 2 * 3
    assert [(r.roi_id, r.referenced_sop_instance_uid) for r in rois[:2]] == [
        ("ann1-obj1-img1", a), ("ann1-obj1-img2", b)]
    assert {(r.roi_id, r.referenced_sop_instance_uid) for r in rois[2:]} == {
        (f"ann2-obj{o}-img{i}", uid) for o in (1, 2) for i, uid in enumerate((a, b, c), start=1)}
    assert [r.label for r in rois[:2]] == ["CALC: cluster 1"] * 2
    assert {r.label for r in rois[2:]} == {"annotation 2"}
    assert all(r.source_sop_instance_uid == ds.SOPInstanceUID for r in rois)


def test_texts_anchored_inside_a_shape_label_that_shape():
    uid = generate_uid()
    objects = [graphic_object("CIRCLE", [(30, 30), (40, 30)]),
               graphic_object("ELLIPSE", ellipse_points((100, 30), 20, 10, 0)),
               graphic_object("POLYLINE", closed([(10, 100), (50, 100), (50, 150)])),
               graphic_object("POLYLINE", closed([(70, 100), (90, 100), (90, 120), (70, 120)]))]
    # Vendors anchor on the outline: up to 1 px outside still counts (here 0.5 and 0.4 px).
    texts = [text_object("first", anchor=(32, 28)), text_object("second", anchor=(120.5, 30)),
             text_object("fourth", anchor=(90.4, 110)),
             text_object("note")]  # unanchored: goes to shapes that hold no anchored text
    ds = make_gsps([annotation(objects, layer="L", texts=texts)], series_images=[uid])

    assert [r.label for r in read_rois(ds)] == ["L: first", "L: second", "L: note", "L: fourth"]


def test_roi_json_and_areas_in_mm():
    uid = generate_uid()
    image = geometry(uid, spacing=(0.1, 0.1))
    rectangle = graphic_object("POLYLINE", closed([(10, 20), (40, 20), (40, 30), (10, 30)]))
    ds = make_gsps([annotation([rectangle])], series_images=[uid])
    [roi] = read_rois(ds)

    without = roi.to_json()
    with_geometry = json.loads(json.dumps(roi.to_json(image)))

    assert without["area_mm2"] is None and without["area_px"] == 300.0
    assert with_geometry["area_mm2"] == pytest.approx(3.0)
    assert with_geometry["points_px"] == [[10.0, 20.0], [40.0, 20.0], [40.0, 30.0], [10.0, 30.0]]
    assert {k: with_geometry[k] for k in ("source_sop_instance_uid", "referenced_sop_instance_uid", "kind",
                                          "label", "roi_id")} == {
        "source_sop_instance_uid": ds.SOPInstanceUID, "referenced_sop_instance_uid": uid,
        "kind": "polygon", "label": "annotation 1", "roi_id": "ann1-obj1"}
    with pytest.raises(ValueError):
        roi.points_px[0, 0] = 99.0  # the ROI is immutable


def test_gsps_read_from_a_file_equals_the_dataset(tmp_path):
    uid = generate_uid()
    ds = make_gsps([annotation([graphic_object("ELLIPSE", ellipse_points((50, 50), 20, 10, 45))],
                               layer="L")], series_images=[uid])
    [from_file] = read_rois(save(ds, tmp_path / "gsps.dcm"))
    [from_dataset] = read_rois(ds)

    np.testing.assert_allclose(from_file.points_px, from_dataset.points_px, atol=1e-4)  # FL is float32
    assert (from_file.kind, from_file.label, from_file.roi_id) == ("ellipse", "L", "ann1-obj1")


@pytest.mark.parametrize("seed", range(5))
def test_polygon_rasterisation_matches_skimage_at_pixel_centres(seed):
    # Random star-shaped and self-intersecting outlines, partly off the image.
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, 40)
    angles = np.sort(angles) if seed % 2 else angles
    radii = rng.uniform(5, 60, 40)
    points = np.column_stack([70 + radii * np.cos(angles), 50 + radii * np.sin(angles)])
    uid = generate_uid()
    [roi] = read_rois(make_gsps([annotation([graphic_object("POLYLINE", closed(list(points)))])],
                                series_images=[uid]))

    # skimage indexes pixel centres at integers: shift the DICOM PIXEL points by half a pixel.
    expected = np.zeros((100, 120), bool)
    rr, cc = skimage.draw.polygon(roi.points_px[:, 1] - 0.5, roi.points_px[:, 0] - 0.5, shape=(100, 120))
    expected[rr, cc] = True
    np.testing.assert_array_equal(roi.rasterise(geometry(uid, rows=100, columns=120)), expected)


def test_rasterise_refuses_another_image_and_an_empty_region():
    uid = generate_uid()
    outside = graphic_object("POLYLINE", closed([(500, 500), (520, 500), (520, 520)]))
    line = graphic_object("POLYLINE", [(10, 10), (50, 50)])  # an open 2-point polyline encloses nothing
    rois = read_rois(make_gsps([annotation([outside, line])], series_images=[uid]))

    other = generate_uid()
    with pytest.raises(RoiError) as excinfo:
        rois[0].rasterise(geometry(other))
    assert excinfo.value.reason == "wrong_image" and uid in str(excinfo.value) and other in str(excinfo.value)
    for roi in rois:
        with pytest.raises(RoiError) as excinfo:
            roi.rasterise(geometry(uid))
        assert excinfo.value.reason == "empty" and "no pixel" in str(excinfo.value)


# =============================================================== synthetic SEG

def test_binary_seg_one_roi_per_segment_and_image_union_of_frames_empty_skipped():
    a, b = generate_uid(), generate_uid()
    top, bottom, empty, other = (np.zeros((16, 20), np.uint8) for _ in range(4))
    top[2:5, 3:7] = 1
    bottom[10:12, 3:7] = 1
    other[8, 8] = 1
    frames = [(1, a, top), (1, a, bottom), (1, b, empty), (2, b, other)]
    ds = make_seg(frames, labels={1: "calcifications", 2: "mass"})

    rois = read_rois(ds, images=[geometry(a, 16, 20), geometry(b, 16, 20)])

    assert [(r.roi_id, r.segment_number, r.referenced_sop_instance_uid, r.label) for r in rois] == [
        ("seg1", 1, a, "calcifications"), ("seg2", 2, b, "mass")]
    np.testing.assert_array_equal(rois[0].mask, (top | bottom).astype(bool))
    assert rois[0].area_px() == 12 + 8 and rois[1].area_px() == 1
    assert rois[0].area_mm2(geometry(a, 16, 20, spacing=(0.1, 0.2))) == pytest.approx(20 * 0.02)
    np.testing.assert_array_equal(rois[0].rasterise(geometry(a, 16, 20)), rois[0].mask)


def test_seg_contour_is_the_largest_component_in_dicom_pixel_convention():
    uid = generate_uid()
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:7] = 1  # rows 2..4, columns 3..6: edges at x 3..7, y 2..5
    mask[8, 10] = 1     # a smaller component, not outlined
    [roi] = read_rois(make_seg([(1, uid, mask)], labels={1: "x"}))

    x, y = roi.points_px[:, 0], roi.points_px[:, 1]
    assert (x.min(), x.max(), y.min(), y.max()) == (3.0, 7.0, 2.0, 5.0)
    # The contour runs half-way between pixel centres: straight along the edges,
    # cutting each of the 4 corners by a triangle of 0.5 x 0.5 / 2.
    ring = np.vstack([roi.points_px, roi.points_px[:1]])
    shoelace = abs(np.sum((ring[1:, 0] - ring[:-1, 0]) * (ring[1:, 1] + ring[:-1, 1]))) / 2
    assert shoelace == pytest.approx(12 - 4 * 0.125)
    assert roi.area_px() == 13  # the pixel count of the whole mask, both components


def test_fractional_seg_threshold_is_half_the_maximum_fractional_value():
    uid = generate_uid()
    frame = np.zeros((4, 4), np.uint8)
    frame[0, 0], frame[0, 1], frame[1, 1] = 49, 50, 100
    [roi] = read_rois(make_seg([(1, uid, frame)], labels={1: "p"}, segmentation_type="FRACTIONAL",
                               maximum_fractional_value=100))

    expected = np.zeros((4, 4), bool)
    expected[0, 1] = expected[1, 1] = True
    np.testing.assert_array_equal(roi.mask, expected)


def test_labelmap_seg_splits_by_value():
    uid = generate_uid()
    frame = np.zeros((6, 6), np.uint8)
    frame[0:2, 0:2] = 1
    frame[4:6, 4:6] = 3
    rois = read_rois(make_seg([(None, uid, frame)], labels={1: "one", 2: "two", 3: "three"},
                              segmentation_type="LABELMAP"))

    assert [(r.segment_number, r.label, r.area_px()) for r in rois] == [(1, "one", 4.0), (3, "three", 4.0)]
    assert rois[1].mask[4:6, 4:6].all() and not rois[1].mask[0:2, 0:2].any()


@pytest.mark.parametrize("reference", ["shared", "none"])
def test_seg_frame_reference_falls_back_to_shared_groups_then_to_the_only_series_instance(reference):
    uid = generate_uid()
    frame = np.ones((4, 4), np.uint8)
    [roi] = read_rois(make_seg([(1, uid, frame)], labels={1: "x"}, reference=reference))
    assert roi.referenced_sop_instance_uid == uid


def test_seg_read_from_a_file_keeps_one_bit_masks(tmp_path):
    uid = generate_uid()
    frame = np.zeros((7, 9), np.uint8)  # 63 pixels: frames that do not end on a byte boundary
    frame[1:6, 2:5] = 1
    ds = make_seg([(1, uid, frame), (2, uid, 1 - frame)], labels={1: "in", 2: "out"})
    rois = read_rois(save(ds, tmp_path / "seg.dcm"))

    np.testing.assert_array_equal(rois[0].mask, frame.astype(bool))
    np.testing.assert_array_equal(rois[1].mask, ~frame.astype(bool))


# ================================================================= bad input

def test_truncated_synthetic_file_is_a_roi_error(tmp_path):
    uid = generate_uid()
    ds = make_gsps([annotation([graphic_object("POLYLINE", closed([(0, 0), (9, 0), (9, 9)]))])],
                   series_images=[uid])
    data = save(ds, tmp_path / "full.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(RoiError) as excinfo:
        read_rois(cut)
    assert excinfo.value.reason == "corrupt"
    assert "truncated" in str(excinfo.value) and str(cut) in str(excinfo.value)
    assert read_rois(tmp_path / "full.dcm")  # the complete file is not mistaken for a truncated one


@pytest.mark.interop
def test_truncated_real_gsps_is_a_roi_error(tmp_path):
    data = interop_file("gsps/softneta_gsps_ellipse_on_CR.dcm").read_bytes()
    cut = tmp_path / "half.dcm"
    cut.write_bytes(data[: len(data) // 2])

    rois, errors = parse_rois(cut)

    assert rois == [] and [e.reason for e in errors] == ["corrupt"]
    assert "truncated" in str(errors[0])


def test_missing_file_is_a_roi_error(tmp_path):
    with pytest.raises(RoiError) as excinfo:
        read_rois(tmp_path / "nothing.dcm")
    assert excinfo.value.reason == "not_found"


def test_gsps_referencing_an_unknown_image():
    drawn_on, known = generate_uid(), generate_uid()
    ds = make_gsps([annotation([graphic_object("CIRCLE", [(5, 5), (8, 5)])])], series_images=[drawn_on])

    with pytest.raises(RoiError) as excinfo:
        read_rois(ds, images=[geometry(known)])
    assert excinfo.value.reason == "unknown_image"
    assert drawn_on in str(excinfo.value) and "not among" in str(excinfo.value)


@pytest.mark.parametrize("points, closing", [([(5, 5)], "1 point"), (closed([(5, 5), (9, 9)]), "2 distinct")])
def test_degenerate_polylines(points, closing):
    ds = make_gsps([annotation([graphic_object("POLYLINE", points)])], series_images=[generate_uid()])
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "degenerate" and closing in str(excinfo.value)
    assert "annotation 1, graphic object 1 (POLYLINE)" in str(excinfo.value)


@pytest.mark.parametrize("obj, words", [
    (graphic_object("POLYLINE", [(0, 0), (5, 5)], data=[0.0, 0.0, 5.0]), "odd number"),
    (graphic_object("POLYLINE", [(0, 0), (5, 5)], dimensions=3), "Graphic Dimensions is 3"),
    (graphic_object("POLYLINE", [(0, 0), (5, 5), (5, 0)], number_of_points=4), "says 4"),
    (graphic_object("CIRCLE", [(0, 0), (5, 5), (5, 0)]), "CIRCLE takes 2"),
    (graphic_object("ELLIPSE", [(0, 0), (5, 5)]), "ELLIPSE takes 4"),
    (graphic_object("POINT", [(0, 0), (5, 5)]), "POINT takes 1"),
    (graphic_object("POLYLINE", [(0, 0), (5, 5), (5, 0)], data=[0, 0, 5, float("nan"), 5, 0]), "non-finite"),
])
def test_malformed_graphic_objects(obj, words):
    ds = make_gsps([annotation([obj])], series_images=[generate_uid()])
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "malformed"
    assert words in str(excinfo.value)


def test_zero_radius_circle_is_degenerate_and_unknown_types_unsupported():
    circle = graphic_object("CIRCLE", [(5, 5), (5, 5)])
    multipoint = graphic_object("MULTIPOINT", [(5, 5), (6, 6)])
    matrix = graphic_object("POINT", [(5, 5)], units="MATRIX")
    ds = make_gsps([annotation([circle, multipoint, matrix])], series_images=[generate_uid()])

    rois, errors = parse_rois(ds)

    assert rois == []
    assert [e.reason for e in errors] == ["degenerate", "unsupported", "unsupported"]
    assert "MULTIPOINT is not a region" in str(errors[1]) and "MATRIX" in str(errors[2])


def test_display_units_without_a_displayed_area():
    uid = generate_uid()
    ds = make_gsps([annotation([graphic_object("CIRCLE", [(0.5, 0.5), (0.6, 0.5)], units="DISPLAY")])],
                   series_images=[uid],
                   displayed_areas=[displayed_area((1, 1), (10, 10), images=[generate_uid()])])
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "no_displayed_area" and uid in str(excinfo.value)


def test_display_units_with_a_rotation_are_unsupported_but_pixel_units_are_fine():
    uid = generate_uid()
    areas = [displayed_area((1, 1), (100, 100))]
    display = make_gsps([annotation([graphic_object("POINT", [(0.5, 0.5)], units="DISPLAY")])],
                        series_images=[uid], displayed_areas=areas, rotation=90)
    pixel = make_gsps([annotation([graphic_object("POINT", [(50, 50)])])],
                      series_images=[uid], displayed_areas=areas, rotation=90)

    with pytest.raises(RoiError) as excinfo:
        read_rois(display)
    assert excinfo.value.reason == "unsupported" and "rotates or flips" in str(excinfo.value)
    np.testing.assert_allclose(read_rois(pixel)[0].points_px, [(50, 50)])


def test_gsps_with_text_only_has_no_roi():
    ds = make_gsps([annotation([], texts=[text_object("hello")])], series_images=[generate_uid()])
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "no_roi" and "no graphic object" in str(excinfo.value)


def test_annotation_without_any_image_reference():
    ds = make_gsps([annotation([graphic_object("POINT", [(1, 1)])])])  # no series, no item references
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "no_reference"


def test_seg_of_the_wrong_size():
    uid = generate_uid()
    [roi] = read_rois(make_seg([(1, uid, np.ones((16, 16), np.uint8))], labels={1: "x"}))
    wrong = geometry(uid, rows=20, columns=16)

    with pytest.raises(RoiError) as excinfo:
        roi.rasterise(wrong)
    assert excinfo.value.reason == "size_mismatch"
    assert "16x16" in str(excinfo.value) and "16x20" in str(excinfo.value)
    with pytest.raises(RoiError) as excinfo:
        read_rois(make_seg([(1, uid, np.ones((16, 16), np.uint8))], labels={1: "x"}), images=[wrong])
    assert excinfo.value.reason == "size_mismatch"


def test_seg_bad_references():
    a, b = generate_uid(), generate_uid()
    frame = np.ones((4, 4), np.uint8)
    ambiguous = make_seg([(1, a, frame)], labels={1: "x"}, reference="none", series_instances=[a, b])
    moved = make_seg([(1, a, frame)], labels={1: "x"}, spatial_locations_preserved="NO")
    undefined = make_seg([(1, a, frame), (7, a, frame)], labels={1: "x"})

    for ds, reason in ((ambiguous, "no_reference"), (moved, "unsupported")):
        with pytest.raises(RoiError) as excinfo:
            read_rois(ds)
        assert excinfo.value.reason == reason and "segment 1 (x)" in str(excinfo.value)
    rois, errors = parse_rois(undefined)
    assert [r.segment_number for r in rois] == [1]
    assert [e.reason for e in errors] == ["malformed"] and "segment 7" in str(errors[0])
    unnamed = make_seg([(None, a, frame)], labels={1: "x", 2: "y"})
    with pytest.raises(RoiError) as excinfo:
        read_rois(unnamed)
    assert excinfo.value.reason == "malformed" and "names no segment" in str(excinfo.value)


def test_a_missing_required_attribute_is_a_roi_error_not_a_traceback():
    ds = make_seg([(1, generate_uid(), np.ones((4, 4), np.uint8))], labels={1: "x"})
    ds.SegmentSequence[0].SegmentNumber = None  # an empty Type 1 value
    rois, errors = parse_rois(ds)
    assert rois == [] and [e.reason for e in errors] == ["malformed"] and "is malformed" in str(errors[0])


def test_seg_with_only_empty_segments_has_no_roi():
    ds = make_seg([(1, generate_uid(), np.zeros((4, 4), np.uint8))], labels={1: "x"})
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds)
    assert excinfo.value.reason == "no_roi" and "empty" in str(excinfo.value)


def test_objects_that_are_not_gsps_or_seg():
    image = pydicom.Dataset()
    image.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    image.SOPInstanceUID = generate_uid()
    with pytest.raises(RoiError) as excinfo:
        read_rois(image)
    assert excinfo.value.reason == "sop_class" and "Digital Mammography X-Ray Image" in str(excinfo.value)


@pytest.mark.interop
def test_an_sr_is_not_a_roi_object():
    path = interop_file("sr/dcmqi_tid1500_sr_example.dcm")
    rois, errors = parse_rois(path)
    assert rois == [] and [e.reason for e in errors] == ["sop_class"]
    assert "Comprehensive SR" in str(errors[0]) and str(path) in str(errors[0])


def test_parse_rois_keeps_the_good_rois_beside_the_bad_ones():
    a, b = generate_uid(), generate_uid()
    good1 = graphic_object("CIRCLE", [(20, 20), (25, 20)])
    bad = graphic_object("POLYLINE", [(5, 5)])
    good2 = graphic_object("ELLIPSE", ellipse_points((50, 50), 10, 5, 0))
    no_area = graphic_object("CIRCLE", [(0.5, 0.5), (0.6, 0.5)], units="DISPLAY")
    elsewhere = graphic_object("POINT", [(3, 3)])
    ds = make_gsps([annotation([good1, bad, good2], images=[a]), annotation([no_area], images=[a]),
                    annotation([elsewhere], images=[b])], series_images=[a, b])

    rois, errors = parse_rois(ds, images=[geometry(a)])

    assert [r.roi_id for r in rois] == ["ann1-obj1", "ann1-obj3"]
    assert [e.reason for e in errors] == ["degenerate", "no_displayed_area", "unknown_image"]
    assert "annotation 1, graphic object 2" in str(errors[0]) and "annotation 2" in str(errors[1])
    with pytest.raises(RoiError) as excinfo:
        read_rois(ds, images=[geometry(a)])
    assert excinfo.value.reason == "degenerate"  # strict: the first problem


def test_roi_rejects_inconsistent_construction():
    with pytest.raises(ValueError):
        Roi("s", "i", "square", "x", np.zeros((1, 2)), "r")
    with pytest.raises(ValueError):
        Roi("s", "i", "seg", "x", np.zeros((1, 2)), "r")  # a SEG ROI needs its mask
