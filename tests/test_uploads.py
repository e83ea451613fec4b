"""Uploaded images for the Inference page: format sniffing, size and bomb guards, mode conversion, DICOM, no PHI.

Every fixture is built in memory with PIL, numpy, zlib and pydicom.
"""

from __future__ import annotations

import io
import struct
import traceback
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, PngImagePlugin

from fairmed_core.data import uploads
from fairmed_core.data.uploads import (
    MAX_IMAGE_PIXELS,
    MAX_MODEL_SIDE,
    MAX_UPLOAD_BYTES,
    UploadedImage,
    read_uploaded_image,
)
from fairmed_core.errors import FairMedInputError

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    JPEG2000,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    generate_uid,
)

PHI = ("Doe^Jane", "Doe", "Jane", "MRN12345", "19800101", "St Example Hospital")


# ------------------------------------------------------------------------------------------------- builders


def _encode(image: Image.Image, file_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **params)
    return buffer.getvalue()


def _gradient(width: int = 64, height: int = 48) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _zero_png(width: int, height: int) -> bytes:
    """A complete, valid 8-bit grayscale PNG of zeros, streamed so that the pixels never sit in memory."""
    compressor = zlib.compressobj(1)  # the fastest level still compresses zeros over 200:1
    row = bytes(width + 1)  # filter byte 0 + zero pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def _dicom(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    transfer_syntax=ExplicitVRLittleEndian,
    encapsulated_frames: list[bytes] | None = None,
    **attributes,
) -> bytes:
    """A DICOM file with PHI in its header; ``pixels`` is (rows, cols), (frames, rows, cols) or (rows, cols, 3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN12345"
    ds.PatientBirthDate = "19800101"
    ds.InstitutionName = "St Example Hospital"
    ds.Modality = "DX"
    if pixels is not None:
        colour = photometric in ("RGB",)
        frames = pixels.shape[0] if (pixels.ndim == 3 and not colour) else 1
        rows, columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        bits = pixels.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = encapsulate(encapsulated_frames) if encapsulated_frames else pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dx_pixels() -> np.ndarray:
    """16-bit stored values: background 0, a mid region 500 and a bright region 1000."""
    pixels = np.zeros((64, 96), dtype=np.uint16)
    pixels[:, 32:64] = 500
    pixels[:, 64:] = 1000
    return pixels


def _error(data: bytes, filename: str) -> FairMedInputError:
    with pytest.raises(FairMedInputError) as caught:
        read_uploaded_image(data, filename)
    error = caught.value
    assert filename.replace("\\", "/").rsplit("/", 1)[-1] in str(error)
    return error


def _assert_no_phi(text: str) -> None:
    for value in PHI:
        assert value not in text, value


# ------------------------------------------------------------------------------------------------- PNG / JPEG


def test_gray_png_round_trips_unchanged():
    pixels = _gradient()
    result = read_uploaded_image(_encode(Image.fromarray(pixels), "PNG"), "chest.png")
    assert isinstance(result, UploadedImage)
    assert (result.file_format, result.original_mode, result.original_size) == ("PNG", "L", (64, 48))
    assert result.image.mode == "L" and result.notes == () and result.modality is None
    np.testing.assert_array_equal(np.asarray(result.image), pixels)


def test_rgb_jpeg_is_rgb():
    pixels = np.dstack([_gradient(), _gradient()[:, ::-1], np.full((48, 64), 90, np.uint8)])
    result = read_uploaded_image(_encode(Image.fromarray(pixels), "JPEG", quality=95), "photo.jpg")
    assert (result.file_format, result.image.mode, result.image.size) == ("JPEG", "RGB", (64, 48))
    assert np.abs(np.asarray(result.image).astype(int) - pixels).mean() < 4


def test_rgba_png_is_composited_on_black_and_noted():
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[..., :3] = 200
    pixels[:, :5, 3] = 255  # left half opaque, right half fully transparent
    result = read_uploaded_image(_encode(Image.fromarray(pixels), "PNG"), "overlay.png")
    out = np.asarray(result.image)
    assert result.image.mode == "RGB" and result.original_mode == "RGBA"
    assert (out[:, :5] == 200).all() and (out[:, 5:] == 0).all()
    assert any("alpha" in note and "black" in note for note in result.notes)


def test_la_png_becomes_gray():
    pixels = np.dstack([np.full((8, 8), 180, np.uint8), np.full((8, 8), 255, np.uint8)])
    result = read_uploaded_image(_encode(Image.fromarray(pixels), "PNG"), "la.png")
    assert result.image.mode == "L" and result.original_mode == "LA"
    assert (np.asarray(result.image) == 180).all()
    assert any("alpha" in note for note in result.notes)


def test_16_bit_png_is_windowed_and_keeps_contrast():
    pixels = np.full((40, 40), 1000, dtype=np.uint16)
    pixels[:, 20:] = 50000
    pixels[0, 0] = 0  # outliers beyond the 1st-99th percentiles must not set the window
    pixels[0, 1] = 65535
    result = read_uploaded_image(_encode(Image.fromarray(pixels), "PNG"), "ct.png")
    out = np.asarray(result.image)
    assert result.original_mode == "I;16" and result.image.mode == "L" and out.dtype == np.uint8
    assert out[5:, :20].mean() < out[5:, 20:].mean()
    assert out[10, 5] == 0 and out[10, 30] == 255
    assert any("16-bit" in note and "percentile" in note for note in result.notes)


def test_constant_16_bit_image_does_not_divide_by_zero():
    data = _encode(Image.fromarray(np.full((16, 16), 4242, dtype=np.uint16)), "PNG")
    with np.errstate(all="raise"):
        result = read_uploaded_image(data, "flat.png")
    assert result.image.mode == "L" and len(set(np.asarray(result.image).ravel().tolist())) == 1
    assert any("same value" in note for note in result.notes)


def test_palette_pngs():
    colour = Image.fromarray(np.dstack([_gradient(), np.zeros((48, 64), np.uint8), _gradient()[:, ::-1]]))
    result = read_uploaded_image(_encode(colour.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "map.png")
    assert result.original_mode == "P" and result.image.mode == "RGB"
    assert any("palette" in note for note in result.notes)

    gray = Image.fromarray(_gradient()).convert("P")  # grayscale palette
    result = read_uploaded_image(_encode(gray, "PNG"), "gray-palette.png")
    assert result.image.mode in ("L", "RGB")
    np.testing.assert_array_equal(np.asarray(result.image.convert("L")), _gradient())


def test_one_bit_png_becomes_gray():
    result = read_uploaded_image(_encode(Image.fromarray(_gradient() > 127), "PNG"), "mask.png")
    assert result.original_mode == "1" and result.image.mode == "L"
    assert set(np.unique(np.asarray(result.image)).tolist()) == {0, 255}


def test_cmyk_jpeg_becomes_rgb():
    data = _encode(Image.new("RGB", (20, 20), (200, 30, 30)).convert("CMYK"), "JPEG")
    result = read_uploaded_image(data, "print.jpg")
    assert result.original_mode == "CMYK" and result.image.mode == "RGB"
    assert any("CMYK" in note for note in result.notes)


def test_animated_png_keeps_the_first_frame():
    frames = [Image.new("L", (16, 16), value) for value in (10, 120, 240)]
    data = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    result = read_uploaded_image(data, "cine.png")
    assert (np.asarray(result.image) == 10).all()
    assert any("first frame" in note and "3" in note for note in result.notes)


def test_large_image_is_downscaled_and_noted():
    data = _encode(Image.new("L", (4000, 3000), 77), "PNG")
    result = read_uploaded_image(data, "big.png")
    assert result.image.size == (MAX_MODEL_SIDE, 768) and result.original_size == (4000, 3000)
    assert "downscaled from 4000x3000 to 1024x768" in result.notes


def test_exif_orientation_is_applied_and_exif_dropped():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010E] = "Doe^Jane MRN12345"  # ImageDescription
    data = _encode(Image.fromarray(np.dstack([_gradient(40, 20)] * 3)), "JPEG", exif=exif.tobytes())
    result = read_uploaded_image(data, "phone.jpg")
    assert result.image.size == (20, 40) and result.original_size == (40, 20)
    assert any("EXIF orientation" in note for note in result.notes)
    assert result.image.info == {} and len(result.image.getexif()) == 0
    _assert_no_phi(repr(result))


def test_png_text_chunks_are_not_carried_over():
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "Doe^Jane")
    info.add_itxt("PatientID", "MRN12345")
    result = read_uploaded_image(_encode(Image.fromarray(_gradient()), "PNG", pnginfo=info), "tagged.png")
    assert result.image.info == {}
    _assert_no_phi(repr(result) + repr(result.notes))


def test_extension_mismatch_is_read_by_content_and_noted():
    data = _encode(Image.fromarray(np.dstack([_gradient()] * 3)), "JPEG")
    result = read_uploaded_image(data, "actually-a-jpeg.png")
    assert result.file_format == "JPEG" and result.image.mode == "RGB"
    assert any("'.png'" in note and "JPEG" in note for note in result.notes)


def test_unlisted_extension_is_not_remarked_on():
    result = read_uploaded_image(_encode(Image.fromarray(_gradient()), "PNG"), "1.2.840.113619.2.55")
    assert result.notes == ()


@pytest.mark.parametrize(
    "filename, expected",
    [("../../etc/x.png", "x.png"), ("C:\\Users\\me\\Desktop\\scan.png", "scan.png"), ("dir/", "upload")],
)
def test_filename_keeps_only_the_basename(filename, expected):
    result = read_uploaded_image(_encode(Image.fromarray(_gradient()), "PNG"), filename)
    assert result.filename == expected


def test_path_traversal_name_in_errors_is_the_basename():
    error = _error(b"not an image at all", "../../etc/passwd.png")
    assert error.source == "passwd.png" and "etc" not in str(error)


# ------------------------------------------------------------------------------------------------- refusals


def test_oversize_bytes_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Image.open must not be called"))
    data = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)
    error = _error(data, "huge.png")
    assert "20.0 MB" in str(error) and "20 MB limit" in str(error)


def test_zero_png_helper_builds_a_real_png():
    image = Image.open(io.BytesIO(_zero_png(64, 32)))
    image.load()
    assert image.size == (64, 32) and not np.asarray(image).any()


@pytest.fixture(scope="module")
def bomb_over_our_limit() -> bytes:
    """8000x6000 = 48 Mpx: over MAX_IMAGE_PIXELS, under PIL's own warning threshold; about 200 KB."""
    data = _zero_png(8000, 6000)
    assert 8000 * 6000 > MAX_IMAGE_PIXELS and len(data) < 8000 * 6000 / 200
    return data


def test_pixel_limit_fires_before_pixels_are_decoded(bomb_over_our_limit, monkeypatch):
    loads = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or original_load(self))
    error = _error(bomb_over_our_limit, "bomb.png")
    assert "8000x6000" in str(error) and f"{MAX_IMAGE_PIXELS:,}" in str(error)
    assert loads == []
    assert Image.MAX_IMAGE_PIXELS == 89478485  # PIL's global limit is untouched (its default)


@pytest.mark.parametrize(
    "side",
    [
        10000,  # 100 Mpx: PIL's DecompressionBombWarning at open(), turned into an error
        20000,  # 400 Mpx in ~1.7 MB: over twice PIL's limit, so PIL raises DecompressionBombError at open()
    ],
)
def test_pils_own_bomb_guard_becomes_input_error(side):
    data = _zero_png(side, side)
    assert len(data) < side * side / 200
    error = _error(data, f"bomb{side}.png")
    assert "pixel" in str(error)
    assert Image.MAX_IMAGE_PIXELS == 89478485


@pytest.mark.parametrize("file_format, name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_files_are_refused(file_format, name):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data = _encode(noisy, file_format)
    error = _error(data[: len(data) // 2], name)
    assert "could not be decoded" in str(error) and "truncated or corrupt" in str(error)


def test_garbage_after_a_valid_header_is_refused():
    garbage = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    png = _encode(Image.fromarray(_gradient()), "PNG")
    error = _error(png[: 8 + 25] + garbage, "garbled.png")  # signature + IHDR chunk, then garbage
    assert "could not be decoded" in str(error)
    # JPEG has no checksum: libjpeg decodes garbage scan data without complaint, so the missing end-of-image
    # marker is what gives it away.
    jpeg = _encode(Image.fromarray(np.dstack([_gradient()] * 3)), "JPEG")
    start_of_scan = jpeg.index(b"\xff\xda")
    assert b"\xff\xd9" not in garbage
    error = _error(jpeg[: start_of_scan + 20] + garbage, "garbled.jpg")
    assert "could not be decoded" in str(error)


@pytest.mark.parametrize(
    "data, name, says",
    [
        (b"", "empty.png", "empty"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "report.pdf", "PDF"),
        (b"patient notes, not an image\n" * 10, "notes.txt", "not a recognised image"),
        (np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "noise.bin", "not a recogn"),
    ],
)
def test_non_images_are_refused_with_accepted_formats(data, name, says):
    error = _error(data, name)
    assert says in str(error)
    if data:
        assert "PNG, JPEG or DICOM" in str(error)


@pytest.mark.parametrize("file_format, says", [("GIF", "GIF"), ("TIFF", "TIFF"), ("BMP", "BMP")])
def test_other_image_formats_are_refused(file_format, says):
    data = _encode(Image.fromarray(_gradient()), file_format)
    error = _error(data, f"scan.{file_format.lower()}")
    assert says in str(error) and "PNG, JPEG or DICOM" in str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", bytes(128) + b"DICM"]),
    body=st.binary(max_size=1024),
)
def test_random_bytes_raise_only_input_errors(prefix, body):
    try:
        result = read_uploaded_image(prefix + body, "fuzz.bin")
    except FairMedInputError as error:
        assert "fuzz.bin" in str(error)
    else:
        assert result.image.mode in ("L", "RGB")


@pytest.fixture(scope="module")
def valid_files() -> list[bytes]:
    gradient = _gradient(32, 24)
    return [
        _encode(Image.fromarray(gradient), "PNG"),
        _encode(Image.fromarray(np.dstack([gradient] * 3)), "JPEG"),
        _encode(Image.fromarray(gradient.astype(np.uint16) * 200), "PNG"),
        _dicom(_dx_pixels(), RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400),
        _dicom(np.zeros((3, 16, 16), np.uint16)),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, 4),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.booleans()), max_size=6),
)
def test_corrupted_valid_files_raise_only_input_errors(valid_files, which, edits):
    data = bytearray(valid_files[which])
    for where, byte, cut in edits:
        position = int(where * len(data))
        if cut:
            del data[position:]
        elif position < len(data):
            data[position] = byte
    try:
        result = read_uploaded_image(bytes(data), "mutant.bin")
    except FairMedInputError as error:
        assert "mutant.bin" in str(error)
        _assert_no_phi(str(error))
    else:
        assert result.image.mode in ("L", "RGB") and result.image.info == {}
        _assert_no_phi(repr(result))


# ------------------------------------------------------------------------------------------------------ DICOM


def test_dicom_rescale_window_and_no_phi():
    data = _dicom(
        _dx_pixels(),
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=[0, 100],  # multi-valued: the first window is used
        WindowWidth=[400, 800],
    )
    result = read_uploaded_image(data, "patient.dcm")
    out = np.asarray(result.image)
    assert (result.file_format, result.modality, result.image.mode) == ("DICOM", "DX", "L")
    assert result.original_mode == "MONOCHROME2 16-bit" and result.original_size == (96, 64)
    # stored 0 -> -1024 HU (below the window), 500 -> -24 (inside it), 1000 -> 976 (above it)
    assert (out[:, :32] == 0).all() and (out[:, 64:] == 255).all()
    assert 100 <= int(out[0, 40]) <= 125  # only true if the rescale was applied before the window
    assert any("center 0" in note and "width 400" in note for note in result.notes)
    _assert_no_phi(repr(result))
    _assert_no_phi(" ".join(result.notes))
    _assert_no_phi(repr(result.image.info))
    assert result.image.info == {}


def test_dicom_without_window_uses_percentiles():
    result = read_uploaded_image(_dicom(_dx_pixels()), "nowindow.dcm")
    out = np.asarray(result.image)
    assert out[0, 0] < out[0, 40] < out[0, 80]
    assert any("percentile" in note for note in result.notes)


def test_monochrome1_is_inverted():
    pixels = np.full((32, 32), 100, dtype=np.uint16)
    pixels[:, 16:] = 3000  # bright in stored values
    result = read_uploaded_image(_dicom(pixels, photometric="MONOCHROME1"), "mono1.dcm")
    out = np.asarray(result.image)
    assert out[:, 16:].mean() < out[:, :16].mean()
    assert any("MONOCHROME1 inverted" in note for note in result.notes)


def test_rgb_dicom_is_rgb():
    pixels = np.dstack([_gradient(), np.full((48, 64), 30, np.uint8), _gradient()[:, ::-1]])
    result = read_uploaded_image(_dicom(pixels, photometric="RGB", Modality="XC"), "photo.dcm")
    assert result.image.mode == "RGB" and result.modality == "XC"
    np.testing.assert_array_equal(np.asarray(result.image), pixels)


def test_8_bit_dicom_is_kept_as_is():
    result = read_uploaded_image(_dicom(_gradient()), "eight.dcm")
    np.testing.assert_array_equal(np.asarray(result.image), _gradient())


def test_multi_frame_dicom_keeps_the_middle_frame():
    volume = np.zeros((3, 32, 32), dtype=np.uint16)
    volume[0, :, :16] = 4000  # left bright
    volume[1, :16, :] = 4000  # top bright  <- middle frame
    volume[2, :, 16:] = 4000  # right bright
    result = read_uploaded_image(_dicom(volume, Modality="CT"), "volume.dcm")
    out = np.asarray(result.image).astype(int)
    assert out[:16].mean() > out[16:].mean() + 100
    assert abs(out[:, :16].mean() - out[:, 16:].mean()) < 5
    assert any("middle frame" in note and "2 of 3" in note for note in result.notes)
    assert result.modality == "CT"


def test_dicom_without_pixel_data_is_refused_without_phi():
    error = _error(_dicom(None), "report.dcm")
    assert "PixelData" in str(error)
    _assert_no_phi(str(error))


def test_dicom_with_absurd_dimensions_is_refused_before_decoding(monkeypatch):
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("must not decode"))
    data = _dicom(np.zeros((4, 4), np.uint16), Rows=60000, Columns=60000)
    error = _error(data, "bomb.dcm")
    assert "too large" in str(error)
    _assert_no_phi(str(error))
    assert "60000" not in str(error)  # header values are not quoted


def test_truncated_dicom_is_refused():
    data = _dicom(_dx_pixels())
    error = _error(data[: len(data) - 4000], "cut.dcm")
    assert "could not be decoded" in str(error)
    _assert_no_phi("".join(traceback.format_exception(error)))


def test_garbage_after_dicom_magic_is_refused():
    error = _error(bytes(128) + b"DICM" + b"\xff\x00garbage" * 50, "garbage.dcm")
    assert "could not be decoded" in str(error)


def test_jpeg_2000_dicom_with_bogus_pixels_is_a_clear_error():
    data = _dicom(
        np.zeros((32, 32), np.uint16), transfer_syntax=JPEG2000, encapsulated_frames=[b"\x00\x01not a codestream" * 8]
    )
    error = _error(data, "j2k.dcm")
    assert "JPEG 2000" in str(error)
    _assert_no_phi("".join(traceback.format_exception(error)))


def test_missing_decoder_says_to_export_uncompressed(monkeypatch):
    monkeypatch.setattr(uploads, "_decoder_available", lambda transfer_syntax: False)
    data = _dicom(np.zeros((32, 32), np.uint16), transfer_syntax=JPEG2000, encapsulated_frames=[b"\x00" * 64])
    error = _error(data, "j2k-nodecoder.dcm")
    assert "JPEG 2000" in str(error) and "uncompressed" in str(error)
    _assert_no_phi(str(error))


def test_jpeg_ls_dicom_without_its_decoder_is_refused():
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    data = _dicom(np.zeros((32, 32), np.uint16), transfer_syntax=JPEGLSLossless, encapsulated_frames=[b"\x00" * 64])
    error = _error(data, "jls.dcm")
    assert "JPEG-LS" in str(error) and "uncompressed" in str(error)
