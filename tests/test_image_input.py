"""Reading mammograms: pixels in [0, 1] with calcifications bright, spacing in mm, typed errors."""
from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from analysis.dicom_input import UnusableImageError, load_image, read_geometry
from conftest import need_tool
from dicom_factory import BREAST_TOMOSYNTHESIS, MG_FOR_PROCESSING, mg_dataset, rewrap_as_mg, write


def ramp(bits: int) -> np.ndarray:
    top = 2 ** bits - 1
    return np.linspace(0, top, 40 * 30).round().astype(np.uint16).reshape(40, 30)


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_monochrome2_scaled_by_bits_stored(bits):
    stored = ramp(bits)
    image = load_image(mg_dataset(pixels=stored, bits_stored=bits))
    assert image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, stored / (2 ** bits - 1), atol=1e-6)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert not image.inverted


def test_monochrome1_is_inverted_so_calcifications_are_bright():
    stored = np.full((20, 20), 3000, np.uint16)
    stored[10, 10] = 200  # in MONOCHROME1 a low value displays bright: a calcification
    image = load_image(mg_dataset(pixels=stored, photometric="MONOCHROME1"))
    assert image.inverted
    assert np.unravel_index(image.pixels.argmax(), image.pixels.shape) == (10, 10)
    assert image.pixels[10, 10] == pytest.approx(1 - 200 / 4095)


def test_monochrome1_with_its_inverse_presentation_lut_is_inverted_once():
    ds = mg_dataset(pixels=ramp(12), photometric="MONOCHROME1")
    ds.PresentationLUTShape = "INVERSE"  # what the MG IOD requires beside MONOCHROME1
    image = load_image(ds)
    assert image.inverted and image.pixels[0, 0] == 1.0


def test_header_attributes():
    ds = mg_dataset(sop_class_uid=MG_FOR_PROCESSING, laterality="R", view="MLO")
    image = load_image(ds)
    assert image.presentation_intent == "FOR PROCESSING"
    assert (image.laterality, image.view) == ("R", "MLO")
    assert image.sop_instance_uid == ds.SOPInstanceUID
    assert image.series_instance_uid == ds.SeriesInstanceUID
    assert image.study_instance_uid == ds.StudyInstanceUID


def test_view_code_sequence_wins_over_missing_view_position():
    ds = mg_dataset()
    del ds.ViewPosition
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "399368009", "SCT", "medio-lateral oblique"
    ds.ViewCodeSequence = [code]
    assert load_image(ds).view == "MLO"


def test_pixel_spacing_sources():
    both = load_image(mg_dataset(imager_pixel_spacing=(0.07, 0.07), pixel_spacing=(0.065, 0.065)))
    assert both.pixel_spacing_mm == (0.07, 0.07)
    assert both.geometry.spacing_source == "ImagerPixelSpacing"
    only_ps = load_image(mg_dataset(imager_pixel_spacing=None, pixel_spacing=(0.094, 0.094)))
    assert only_ps.geometry.spacing_source == "PixelSpacing"
    assert only_ps.geometry.mm_to_px(0.94) == pytest.approx(10)
    fallback = load_image(mg_dataset(imager_pixel_spacing=None), default_pixel_spacing_mm=0.1)
    assert fallback.geometry.spacing_source == "default" and fallback.warnings
    with pytest.raises(UnusableImageError) as err:
        load_image(mg_dataset(imager_pixel_spacing=None))
    assert err.value.reason == "no_spacing"


def _encode_with_pydicom(ds, syntax):
    ds.compress(syntax)
    return ds


def _encode_jpeg_lossless_with_dcmtk(tmp_path, ds):
    need_tool("/usr/bin/dcmcjpeg")
    src, dst = write(ds, tmp_path / "src.dcm"), tmp_path / "jpeg_lossless.dcm"
    subprocess.run(["/usr/bin/dcmcjpeg", "+e1", str(src), str(dst)], check=True, capture_output=True)
    return pydicom.dcmread(dst)


@pytest.mark.parametrize("syntax", ["rle", "jpegls", "j2k", "jpeg_lossless"])
def test_compressed_transfer_syntaxes_decode_exactly(syntax, tmp_path):
    stored = np.random.default_rng(3).integers(0, 4096, (64, 48)).astype(np.uint16)
    ds = mg_dataset(pixels=stored)
    if syntax == "jpeg_lossless":
        ds = _encode_jpeg_lossless_with_dcmtk(tmp_path, ds)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    else:
        uid = {"rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}[syntax]
        ds = _encode_with_pydicom(ds, uid)
        ds = pydicom.dcmread(write(ds, tmp_path / "c.dcm"))
        assert ds.file_meta.TransferSyntaxUID == uid
    image = load_image(ds)
    np.testing.assert_allclose(image.pixels * 4095, stored, atol=1e-3)


def test_real_jpeg2000_mammogram_decodes_full_size(interop, tmp_path):
    ds = rewrap_as_mg(pydicom.dcmread(interop / "mg" / "MG1_J2KI.dcm"))
    image = load_image(write(ds, tmp_path / "mg1_j2k_as_mg.dcm"))
    assert image.shape == (4664, 3064)
    assert image.bits_stored == 12
    values = image.pixels * 4095
    assert np.allclose(values, values.round(), atol=1e-2), "not 12-bit integers"
    assert values.max() > 2048  # uses the 12-bit range, not 8 bits


def test_12bit_jpeg_extended_is_a_clear_error(interop, tmp_path):
    ds = rewrap_as_mg(pydicom.dcmread(interop / "mg" / "MG1_JPLY.dcm"))
    with pytest.raises(UnusableImageError) as err:
        load_image(write(ds, tmp_path / "jply.dcm"))
    assert err.value.reason == "transfer_syntax"
    assert "JPEG Extended" in str(err.value)


@pytest.mark.parametrize("name", [
    "mg/MG-RDSR-Hologic_2D.dcm", "mg/MG-RDSR-GEPristina-DBT.dcm", "mg/MG-RDSR-Giotto-DBT.dcm",
    "other/highdicom_ct_image.dcm", "other/highdicom_dx_image.dcm", "mg/MG-Im-Hologic-PropProj.dcm",
    "mg/MG1_JPLY.dcm",
])
def test_objects_that_are_not_mammograms_give_typed_errors(interop, name):
    with pytest.raises(UnusableImageError) as err:
        load_image(interop / name)
    assert err.value.reason == "sop_class"
    assert "is not a Digital Mammography X-Ray Image" in str(err.value)


def test_real_ge_mammograms_read(interop):
    image = load_image(interop / "mg" / "MG-Im-GE-SenDS-scaled.dcm")
    assert image.presentation_intent == "FOR PROCESSING"
    assert image.inverted  # MONOCHROME1
    assert image.pixel_spacing_mm == pytest.approx((0.0940909, 0.0940909))
    assert image.laterality == "L" and image.view == "CC"


def test_tomosynthesis_is_out_of_scope():
    with pytest.raises(UnusableImageError) as err:
        load_image(mg_dataset(sop_class_uid=BREAST_TOMOSYNTHESIS))
    assert err.value.reason == "tomosynthesis"


def test_missing_pixel_data():
    ds = mg_dataset()
    del ds.PixelData
    with pytest.raises(UnusableImageError) as err:
        load_image(ds)
    assert err.value.reason == "no_pixel_data"


def test_truncated_file(tmp_path):
    path = write(mg_dataset(200, 200), tmp_path / "full.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnusableImageError) as err:
        load_image(truncated)
    assert err.value.reason == "corrupt"
    # named by its SOP Instance UID (its header reads), not by where it is stored (issue 23)
    assert f"image {pydicom.dcmread(path).SOPInstanceUID}" in str(err.value) and "truncated" in str(err.value)


def test_not_dicom_and_missing_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file")
    for path, reason in ((text, "not_dicom"), (tmp_path / "absent.dcm", "not_found")):
        with pytest.raises(UnusableImageError) as err:
            load_image(path)
        assert err.value.reason == reason


def test_read_geometry_of_any_image_without_pixels(interop):
    g = read_geometry(interop / "gsps" / "softneta_referenced_CR.dcm")
    assert (g.rows, g.columns) == (2688, 2688)
    assert g.pixel_spacing_mm == (0.16, 0.16) and g.spacing_source == "ImagerPixelSpacing"
    with pytest.raises(UnusableImageError):
        read_geometry(interop / "sr" / "highdicom_sr_document.dcm")


def test_view_codes_agree_with_the_snomed_dictionary():
    """Every SNOMED code we map to a view is the code pydicom's dictionary gives that view."""
    from pydicom.sr.codedict import codes
    from analysis.dicom_input.image import VIEW_CODES

    expected = {"CC": codes.SCT.CranioCaudal, "LM": codes.SCT.LateroMedial,
                "LMO": codes.SCT.LateroMedialOblique, "XCCL": codes.SCT.CranioCaudalExaggeratedLaterally,
                "XCCM": codes.SCT.CranioCaudalExaggeratedMedially,
                "XCC": codes.SCT.ExaggeratedCranioCaudalProjection,
                "SIO": codes.SCT.SuperolateralToInferomedialOblique,
                "ISO": codes.SCT.InferomedialToSuperolateralOblique, "FB": codes.SCT.CaudoCranial,
                "CV": codes.SCT.Cleavage, "AT": codes.SCT.AxillaryTail}
    for view, code in expected.items():
        assert VIEW_CODES[code.value] == view
