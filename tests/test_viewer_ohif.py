"""What the radiologist sees: the node's results in OHIF v3, in headless Chromium.

The local viewer of deploy/viewer/ (:class:`dicom_node.viewer.LocalViewer`: Orthanc with its
DICOMweb plugin and OHIF on loopback) holds a ``calcnode synth`` study and ``calcnode analyze
--out``'s results for it (SEG, TID 1500 SR, Mammography CAD SR, GSPS). Playwright for Python
drives the system Chromium (``/usr/bin/chromium``; no browser is downloaded) to open the study:

* the SEG of the view with the most calcification pixels, shown by OHIF over its image: the
  SEG's mask is mapped to screen pixels through the viewport's own geometry (cornerstone's
  image -> world -> canvas transforms), and the overlay colour must be on the calcifications
  and nowhere else on the image;
* the TID 1500 SR: the ROI outlines with each ROI's score, threshold and decision, read from the
  page (OHIF draws them as SVG text); the viewport is zoomed out and panned until every line of
  that text lies inside it (:func:`fit_annotations`), and the test checks each line's box.

Screenshots go to tests/artifacts/viewer/ (gitignored); ``CALCNODE_WRITE_DOCS=1`` also copies
them, cropped and small, to docs/screenshots/ for the README. Skipped, with the reason, when
Chromium, Orthanc's DICOMweb plugin, OHIF's build (``make ohif``) or Playwright is missing:
``make test`` installs all four.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import CALCNODE, ROOT
from test_node_orthanc import synth_study

CHROMIUM = Path("/usr/bin/chromium")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ARTIFACTS = ROOT / "tests" / "artifacts" / "viewer"
SCREENSHOTS = ROOT / "docs" / "screenshots"
# The flags this machine's Chromium needs (no GPU, no network beyond loopback, a fresh profile:
# Playwright gives each launch a new temporary --user-data-dir).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1280, "height": 900}
OVERLAY_SATURATION = 60  # max(R,G,B) - min(R,G,B) of an overlay pixel; the mammogram is grey (0)
NEAR_PX = 6  # screen pixels around a calcification where its overlay may be drawn (edges, blending)


def _missing() -> str | None:
    from dicom_node.viewer import DEFAULT_OHIF_DIST

    for path, what in ((CHROMIUM, "Debian's chromium"), (DICOMWEB_PLUGIN, "Debian's orthanc-dicomweb"),
                       (DEFAULT_OHIF_DIST / "index.html", "OHIF's build (make ohif)")):
        if not path.exists():
            return f"{what} is not installed ({path}); make test installs it"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (make install: the [test] extra)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def viewer_study(tmp_path_factory):
    """The study and its results in a running local viewer: (viewer, study UID, results folder)."""
    from dicom_node.viewer import LocalViewer

    base = tmp_path_factory.mktemp("viewer")
    study = synth_study(base / "synth", "--size", "768x640", "--seed", "5")
    results = base / "results"
    subprocess.run(CALCNODE + ["analyze", str(study), "--out", str(results)], cwd=ROOT, check=True,
                   capture_output=True)
    viewer = LocalViewer(base / "orthanc").start()
    try:
        [study_uid] = viewer.store([study, results])
        yield viewer, study_uid, results
    finally:
        viewer.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_study(browser, url: str):
    """A page on ``url`` with OHIF's first-visit dialogs (investigational use, tour) dismissed."""
    page = browser.new_page(viewport=WINDOW)
    page.goto(url)
    for button in ("Confirm and hide", "Skip all"):
        page.get_by_text(button).dispatch_event("click")  # toasts may cover them: no pointer click
    return page


def screen_points(page, rows_cols: np.ndarray) -> np.ndarray:
    """Page coordinates (x, y) of the centres of image pixels (row, column) in OHIF's viewport."""
    return np.asarray(page.evaluate("""(pixels) => {
        const viewport = window.cornerstone.getEnabledElements()[0].viewport;
        const imageId = viewport.getCurrentImageId();
        const rect = viewport.canvas.getBoundingClientRect();
        return pixels.map(([row, col]) => {
            const world = window.cornerstone.utilities.imageToWorldCoords(imageId, [col + 0.5, row + 0.5]);
            const [x, y] = viewport.worldToCanvas(world);
            return [x + rect.left, y + rect.top];
        });
    }""", [[int(r), int(c)] for r, c in rows_cols]), dtype=float)


# The viewport's box, the displayed image's box and each line of the annotations' text (OHIF draws
# a TID 1500 group's lines as the <tspan>s of one SVG <text> in the annotation's <g>), in page
# coordinates (left, top, right, bottom).
LAYOUT_JS = """() => {
    const viewport = window.cornerstone.getEnabledElements()[0].viewport;
    const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const imageId = viewport.getCurrentImageId();
    const image = window.cornerstone.cache.getImage(imageId);
    const canvas = viewport.canvas.getBoundingClientRect();
    const [[x0, y0], [x1, y1]] = [[0, 0], [image.columns, image.rows]].map(([col, row]) => {
        const [x, y] = viewport.worldToCanvas(window.cornerstone.utilities.imageToWorldCoords(imageId, [col, row]));
        return [x + canvas.left, y + canvas.top];
    });
    return {viewport: box(viewport.element),
            image: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)],
            lines: [...viewport.element.querySelectorAll('g[data-annotation-uid] text tspan')]
                   .map(t => [t.textContent, box(t)]),
            zoom: viewport.getZoom(), pan: viewport.getPan()};
}"""
MARGIN_PX = 8  # screen pixels kept free between the viewport's edge and what it shows


def layout(page) -> dict:
    """:data:`LAYOUT_JS` evaluated on ``page``."""
    return page.evaluate(LAYOUT_JS)


def fit_annotations(page, attempts: int = 12) -> dict:
    """Zoom out and pan OHIF's viewport until the whole image and every annotation line lie inside it.

    OHIF hangs a right breast against the viewport's right edge and writes an outline's lines to the
    right of it, in a fixed font size: they run off the screen. Zooming shrinks the image but not the
    text, so this measures, zooms or pans, renders, and measures again. Pan is in screen pixels.
    Returns the final :func:`layout`.
    """
    for _ in range(attempts):
        now = layout(page)
        boxes = np.array([now["image"]] + [b for _, b in now["lines"]], dtype=float)
        content = np.r_[boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)]
        room = np.asarray(now["viewport"], dtype=float) + [MARGIN_PX, MARGIN_PX, -MARGIN_PX, -MARGIN_PX]
        if (content[:2] >= room[:2]).all() and (content[2:] <= room[2:]).all():
            return now
        too_big = (content[2:] - content[:2]) > (room[2:] - room[:2])
        shift = (room[:2] + room[2:]) / 2 - (content[:2] + content[2:]) / 2
        page.evaluate("""([zoom, dx, dy]) => {
            const viewport = window.cornerstone.getEnabledElements()[0].viewport;
            if (zoom !== 1) { viewport.setZoom(viewport.getZoom() * zoom); }
            else { const [x, y] = viewport.getPan(); viewport.setPan([x + dx, y + dy]); }
            viewport.render(); }""", [0.85 if too_big.any() else 1, float(shift[0]), float(shift[1])])
        page.wait_for_timeout(300)  # the SVG layer is redrawn on the next rendered frame
    return layout(page)


def inside(box, outer) -> bool:
    """Whether ``box`` (left, top, right, bottom) lies in ``outer``."""
    return box[0] >= outer[0] and box[1] >= outer[1] and box[2] <= outer[2] and box[3] <= outer[3]


def saturation(png: Path) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return rgb.max(axis=2) - rgb.min(axis=2)


def save_for_docs(png: Path, name: str, box: tuple[int, int, int, int]) -> None:
    """With CALCNODE_WRITE_DOCS=1: ``box`` (left, top, right, bottom) of the screenshot, scaled to at
    most 900 px wide and palette-quantised, as docs/screenshots/``name`` (< 300 kB)."""
    if not os.environ.get("CALCNODE_WRITE_DOCS"):
        return
    from PIL import Image

    image = Image.open(png).convert("RGB").crop(box)
    if image.width != 900:  # larger: smaller file; smaller (a close-up): pixels a reader can see
        image = image.resize((900, round(image.height * 900 / image.width)),
                             Image.LANCZOS if image.width > 900 else Image.NEAREST)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / name
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    assert out.stat().st_size < 300_000, out


def test_ohif_shows_the_seg_over_the_calcifications(viewer_study, browser):
    viewer, study_uid, results = viewer_study
    segs = [pydicom.dcmread(p) for p in sorted(results.glob("SEG-*.dcm"))]
    assert segs, "the analysis wrote no SEG"
    seg = max(segs, key=lambda ds: int(ds.pixel_array.sum()))
    mask = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns)).any(axis=0)
    source_uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    page = open_study(browser, viewer.study_url(study_uid) + f"&initialSeriesInstanceUID={seg.SeriesInstanceUID}")
    try:
        page.wait_for_function("() => window.services?.segmentationService.getSegmentations().length > 0",
                               timeout=120_000)
        page.wait_for_timeout(2500)  # the labelmap is drawn on the next frames
        shown = page.evaluate("() => window.cornerstone.getEnabledElements()[0].viewport.getCurrentImageId()")
        assert f"/instances/{source_uid}/" in shown  # the SEG's own image
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / "seg-overlay.png"
        page.screenshot(path=str(png))
        corners = screen_points(page, np.array([[0, 0], [mask.shape[0] - 1, mask.shape[1] - 1]]))
        calcifications = screen_points(page, np.argwhere(mask))
    finally:
        page.close()

    coloured = saturation(png) > OVERLAY_SATURATION
    height, width = coloured.shape
    # the displayed image's box on screen, inside the window and OHIF's panels
    (left, top), (right, bottom) = np.floor(corners.min(axis=0)), np.ceil(corners.max(axis=0))
    left, top = int(max(left, 0)), int(max(top, 0))
    right, bottom = int(min(right, width)), int(min(bottom, height))
    near = np.zeros_like(coloured)
    for x, y in calcifications.round().astype(int):
        near[max(y - NEAR_PX, 0):y + NEAR_PX + 1, max(x - NEAR_PX, 0):x + NEAR_PX + 1] = True
    on_image = np.zeros_like(coloured)
    edge = 4  # the viewport's blue border may run along the image's edges
    on_image[top + edge:bottom - edge, left + edge:right - edge] = True
    # present over the calcifications: most calcification pixels have overlay colour within 1 px
    hit = [coloured[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any() for x, y in calcifications.round().astype(int)]
    assert np.mean(hit) > 0.8, f"overlay colour on {np.mean(hit):.0%} of the calcification pixels"
    # absent away from them: on the image, overlay colour only near a calcification (OHIF's own
    # corner icons and any toast are not on the image's calcification-free area)
    stray = coloured & on_image & ~near
    stray[top:top + 40, left:left + 80] = False  # OHIF's viewport icons in the top-left corner
    assert stray.sum() < 0.001 * on_image.sum(), f"{int(stray.sum())} overlay-coloured pixels away from the SEG"
    assert (coloured & near).sum() >= len(calcifications) * 0.8
    save_for_docs(png, "ohif-seg-overlay.png", (left, top, right, bottom))
    # a close-up of the calcifications (the demo image is small: each one is a few screen pixels)
    (x0, y0), (x1, y1) = calcifications.min(axis=0), calcifications.max(axis=0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2 + 40
    save_for_docs(png, "ohif-seg-closeup.png", (int(max(cx - half * 1.3, left)), int(max(cy - half, top)),
                                                 int(min(cx + half * 1.3, right)), int(min(cy + half, bottom))))


def test_ohif_shows_the_sr_score_and_decision(viewer_study, browser):
    import highdicom as hd

    viewer, study_uid, results = viewer_study
    [sr_path] = results.glob("SR-*.dcm")
    sr = hd.sr.srread(sr_path)
    expected = []
    for group in sr.content.get_planar_roi_measurement_groups():
        scores = [m.value for m in group.get_measurements() if m.name.meaning.startswith("Actionable")]
        decisions = [q.value.meaning for q in group.get_qualitative_evaluations()
                     if q.name.meaning == "Decision at operating point"]
        if scores:
            expected.append((float(scores[0]), decisions[0]))
    assert expected, "the SR holds no scored ROI"
    page = open_study(browser, viewer.study_url(study_uid)
                      + f"&initialSeriesInstanceUID={pydicom.dcmread(sr_path).SeriesInstanceUID}")
    try:
        page.wait_for_function("() => document.body.innerText.includes('Actionable calcification cluster score')",
                               timeout=120_000)
        page.wait_for_timeout(1000)  # the SR's outlines are drawn on the next frames
        shown = fit_annotations(page)
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / "sr-measurements.png"
        page.screenshot(path=str(png))
        assert shown == layout(page), "the viewport moved after it was measured"
    finally:
        page.close()
    lines = [text for text, _ in shown["lines"]]
    assert lines, "OHIF drew no annotation text"
    # every line, digits included, on screen: none is cut by the viewport's edges
    cut = [(text, box) for text, box in shown["lines"] if not inside(box, shown["viewport"])]
    assert not cut, f"annotation lines outside the viewport {shown['viewport']}: {cut}"
    assert inside(shown["image"], shown["viewport"])
    # the ROIs of the SR's image are drawn with their lines: the score with 2 decimals and the
    # decision; unitless numbers without OHIF's unit code "1" (app-config.js), a count as an integer
    scored = [(score, decision) for score, decision in expected
              if f"Actionable calcification cluster score: {score:.2f}" in lines]
    assert scored, f"no score of {expected} among the lines {lines}"
    for score, decision in scored:
        assert f"Decision at operating point: {decision}" in lines
    assert any(text.startswith("Threshold Value: 0.") and text.endswith(tuple("0123456789")) for text in lines)
    counts = [text for text in lines if text.startswith("Number of calcifications: ")]
    assert counts and all(text.split(": ")[1].isdigit() for text in counts), counts
    save_for_docs(png, "ohif-sr-measurements.png", tuple(int(v) for v in shown["viewport"]))
