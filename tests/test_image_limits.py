"""Bounded memory and confined paths for every image FairMed reads: uploads and manifest images alike are checked
for their decoded size from the header before any pixel is decoded, and manifests cannot name files outside their
folder."""

from __future__ import annotations

import io
import json
import struct
import traceback
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from fairmed_core.data import read_csv_manifest, read_manifest
from fairmed_core.data.image_limits import MAX_DECODED_BYTES, MAX_FRAME_PIXELS, check_decoded_size
from fairmed_core.data.schema import open_image
from fairmed_core.data.uploads import read_uploaded_image
from fairmed_core.errors import FairMedInputError
from tests.test_uploads import _assert_no_phi, _dicom, _dx_pixels, _zero_png

pydicom = pytest.importorskip("pydicom")
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian  # noqa: E402


def _case(image: str, **fields) -> str:
    record = {"problem": "<image> Is there a finding?", "images": [image], "answer": "yes",
              "demo": "sex: Female, age: 68", "dataset": "site_a", **fields}
    return json.dumps(record)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(path)
    return path


def _manifest(folder: Path, images: list[str]) -> Path:
    path = folder / "manifest.jsonl"
    path.write_text("".join(_case(image) + "\n" for image in images), encoding="utf-8")
    return path


def _refusal(function, *args, **kwargs) -> FairMedInputError:
    with pytest.raises(FairMedInputError) as caught:
        function(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------------------- the size check itself


def test_the_limit_counts_frames_samples_and_bytes_per_sample():
    # A 512x512 CT volume of 400 16-bit frames fits (200 MB); 6000x6000 x 55 frames does not (about 3.7 GB).
    assert check_decoded_size("ct.dcm", width=512, height=512, frames=400, bits_allocated=16) == 512 * 512 * 800
    error = _refusal(check_decoded_size, "big.dcm", width=6000, height=6000, frames=55, bits_allocated=16)
    assert "6000x6000" in str(error) and "55 frames" in str(error) and "3,777 MB decoded" in str(error)
    assert f"{MAX_FRAME_PIXELS:,} pixels per frame" in str(error) and "256 MB" in str(error)
    # One frame over the pixel limit is refused even when its bytes would fit.
    assert "too large" in str(_refusal(check_decoded_size, "wide.png", width=8000, height=6000))
    # Three 16-bit samples count: 40 M pixels of 16-bit RGB is 240 MB, 6 bytes a pixel.
    check_decoded_size("rgb.dcm", width=6000, height=6000, samples=3, bits_allocated=16)
    assert MAX_DECODED_BYTES < 6000 * 6000 * 4 * 2
    _refusal(check_decoded_size, "rgba.dcm", width=6000, height=6000, samples=4, bits_allocated=16)


# ------------------------------------------------------------------------------------------- deflated DICOM


def _deflated_dicom_bomb(pixel_bytes: int) -> bytes:
    """A deflated DICOM whose header claims a 64x64 image and whose PixelData holds ``pixel_bytes`` zeros: the
    file is small, the dataset pydicom would inflate is not. The zeros never sit in memory."""
    small = _dicom(np.zeros((64, 64), np.uint16))
    # Split the uncompressed file into its file meta and its dataset (everything after the meta).
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(small)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    meta_end = stream.tell()
    dataset = small[meta_end:]
    pixel_tag = struct.pack("<HH", 0x7FE0, 0x0010)
    dataset = dataset[: dataset.index(pixel_tag)]  # the header elements, without PixelData
    deflated_file = _dicom(np.zeros((64, 64), np.uint16), transfer_syntax=DeflatedExplicitVRLittleEndian)
    stream = io.BytesIO(deflated_file)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    meta = deflated_file[: stream.tell()]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(dataset + pixel_tag + b"OW\x00\x00" + struct.pack("<I", pixel_bytes))
    head += compressor.flush(zlib.Z_FULL_FLUSH)
    # A full flush resets the compressor's history, so one compressed megabyte of zeros can be repeated as is.
    megabyte = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return meta + head + megabyte * (pixel_bytes >> 20) + compressor.flush()


@pytest.fixture(scope="module")
def deflate_bomb() -> bytes:
    data = _deflated_dicom_bomb(400 * 2**20)
    assert len(data) < 2 * 2**20  # 400 MB of pixels in under 2 MB: under the 20 MB upload limit
    return data


def test_a_deflated_dicom_bomb_upload_is_refused_before_pydicom_inflates_it(deflate_bomb, monkeypatch):
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("pydicom must not inflate the bomb"))
    error = _refusal(read_uploaded_image, deflate_bomb, "bomb.dcm")
    assert "bomb.dcm" in str(error) and "inflates to more than" in str(error) and "256 MB" in str(error)
    _assert_no_phi("".join(traceback.format_exception(error)))


def test_a_small_deflated_dicom_still_reads():
    pixels = _dx_pixels()
    data = _dicom(pixels, transfer_syntax=DeflatedExplicitVRLittleEndian)
    result = read_uploaded_image(data, "small.dcm")
    assert result.image.mode == "L" and result.image.size == (96, 64)


def test_a_dicom_volume_over_the_limit_is_refused_from_its_header_without_quoting_it(monkeypatch):
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("must not decode"))
    # 6000x6000 x 55 frames: each frame is under 40 M pixels, the volume is 3.7 GB.
    data = _dicom(np.zeros((4, 4), np.uint16), Rows=6000, Columns=6000, NumberOfFrames=55)
    error = _refusal(read_uploaded_image, data, "volume.dcm")
    assert "too large" in str(error) and "3,777 MB" in str(error) and "256 MB" in str(error)
    assert "6000" not in str(error)  # header values are not quoted
    _assert_no_phi(str(error))


# --------------------------------------------------------------------------------------- images in manifests


def test_a_png_bomb_in_a_manifest_is_refused_before_its_pixels_are_decoded(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bomb.png").write_bytes(_zero_png(8000, 6000))
    dataset = read_manifest(_manifest(tmp_path, ["img/bomb.png"]))
    loads = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or original_load(self))
    error = _refusal(dataset.load_image, "line1")
    assert "bomb.png" in str(error) and "8000x6000" in str(error) and f"{MAX_FRAME_PIXELS:,}" in str(error)
    assert loads == []


def test_a_dicom_in_a_manifest_is_windowed_to_8_bits_without_phi(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "chest.dcm").write_bytes(_dicom(_dx_pixels()))
    # DICOM files are often named by UID, without a suffix: the content tells.
    (tmp_path / "img" / "1.2.840.99").write_bytes(_dicom(_dx_pixels()))
    dataset = read_manifest(_manifest(tmp_path, ["img/chest.dcm", "img/1.2.840.99"]))
    for case_id in ("line1", "line2"):
        image = dataset.load_image(case_id)
        assert image.mode == "L" and image.size == (96, 64) and np.asarray(image).dtype == np.uint8
        assert image.info == {}
        _assert_no_phi(repr(image.info))
    assert np.asarray(dataset.load_image("line1"))[:, 80].min() > np.asarray(dataset.load_image("line1"))[:, 10].max()


def test_a_dicom_in_a_manifest_gets_the_same_size_check_as_an_upload(tmp_path, monkeypatch, deflate_bomb):
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("must not decode"))
    (tmp_path / "huge.dcm").write_bytes(_dicom(np.zeros((4, 4), np.uint16), Rows=6000, Columns=6000,
                                                NumberOfFrames=55))
    (tmp_path / "bomb.dcm").write_bytes(deflate_bomb)
    for name, says in (("huge.dcm", "3,777 MB"), ("bomb.dcm", "inflates to more than")):
        error = _refusal(open_image, tmp_path / name)
        assert str(tmp_path / name) in str(error) and says in str(error)
        _assert_no_phi("".join(traceback.format_exception(error)))


def test_a_corrupt_dicom_in_a_manifest_does_not_pass_pydicoms_text_on(tmp_path):
    data = _dicom(_dx_pixels())
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 4000])
    error = _refusal(open_image, tmp_path / "cut.dcm")
    assert "cut.dcm" in str(error) and "could not be decoded" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # pydicom's own exception is not chained
    _assert_no_phi("".join(traceback.format_exception(error)))


# ---------------------------------------------------------------------------- manifests stay in their folder


@pytest.fixture()
def layout(tmp_path) -> Path:
    """``data/`` holds a manifest and ``img/a.png``; ``secret.png`` lies outside it, and ``data/link.png`` and
    ``data/linkdir`` are symlinks to places outside."""
    data = tmp_path / "data"
    _png(data / "img" / "a.png")
    _png(tmp_path / "secret.png")
    (tmp_path / "elsewhere").mkdir()
    _png(tmp_path / "elsewhere" / "b.png")
    (data / "link.png").symlink_to(tmp_path / "secret.png")
    (data / "linkdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (data / "inner.png").symlink_to(data / "img" / "a.png")
    return data


@pytest.mark.parametrize("escape", ["../secret.png", "img/../../secret.png", "ABSOLUTE", "link.png",
                                    "linkdir/b.png", "/etc/passwd"])
def test_a_jsonl_manifest_cannot_name_an_image_outside_its_folder(layout, escape):
    image = str(layout.parent / "secret.png") if escape == "ABSOLUTE" else escape
    manifest = _manifest(layout, ["img/a.png", image])
    error = _refusal(read_manifest, manifest)
    assert error.source == str(manifest) and error.row == 2 and error.column == "images"
    assert "points outside the manifest's folder" in str(error) and image in str(error)


def test_an_outside_path_is_refused_whether_or_not_it_exists(layout):
    # The error must not tell a probe whether a file outside exists.
    messages = [str(_refusal(read_manifest, _manifest(layout, [name]))) for name in ("../secret.png", "../nope.png")]
    assert all("points outside" in message for message in messages)


def test_paths_inside_the_folder_resolve_including_links_that_stay_inside(layout):
    dataset = read_manifest(_manifest(layout, ["img/a.png", "inner.png", str(layout / "img" / "a.png")]))
    resolved = str((layout / "img" / "a.png").resolve())
    assert list(dataset.cases["image_path"]) == [resolved] * 3


def test_a_csv_manifest_cannot_name_an_image_outside_its_image_folder(layout):
    table = pd.DataFrame({"path": ["img/a.png", "../secret.png"], "label": ["1", "0"], "sex": ["F", "M"]})
    csv = layout / "labels.csv"
    table.to_csv(csv, index=False)
    error = _refusal(read_csv_manifest, csv, image_root=layout, image_col="path", label_col="label",
                     attribute_cols=["sex"])
    assert error.row == 3 and error.column == "path" and "points outside the image folder" in str(error)


@pytest.mark.parametrize(("content", "says"), [
    ("\ufeff" + _case("img/a.png") + "\n", None),  # a UTF-8 byte-order mark is fine
    (_case("img/a.png") + "\n" + _case("img/a.png", id="x", demo="sex: F\u00e9minin").replace("\\u00e9", "\u00e9"),
     None),  # UTF-8 text, not escaped
    ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ('{"problem": "x", "images": ["img/a.png"], "answer": ' + "9" * 5000 + "}\n", "number too long"),
    (_case("img/" + "a" * 300 + ".png") + "\n", "File name too long"),
    (_case("img/a\u0000.png") + "\n", "NUL"),
])
def test_odd_manifests_read_or_fail_with_a_line_number(layout, content, says):
    manifest = layout / "odd.jsonl"
    manifest.write_text(content, encoding="utf-8")
    if says is None:
        assert len(read_manifest(manifest)) >= 1
        return
    error = _refusal(read_manifest, manifest)
    assert error.row == 1 and says in str(error)


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_manifest_that_is_not_utf8_names_its_line_and_the_fix(layout, encoding):
    manifest = layout / "encoded.jsonl"
    line = _case("img/a.png", demo="sex: F\u00e9minin").replace("\\u00e9", "\u00e9")  # not escaped as \\u
    manifest.write_bytes((line + "\n").encode(encoding))
    error = _refusal(read_manifest, manifest)
    assert error.row == 1 and "not UTF-8" in str(error) and "UTF-16 or Latin-1" in str(error)


def test_huge_integer_answers_do_not_overflow(layout):
    manifest = layout / "big.jsonl"
    manifest.write_text(_case("img/a.png", answer=2**70) + "\n" + _case("img/a.png", answer=1.5) + "\n")
    assert sorted(read_manifest(manifest).cases["answer"]) == ["1.5", str(2**70)]


# ------------------------------------------------------------------------------- header-only image checks


def test_check_images_reads_headers_only_and_counts_every_image(tmp_path, monkeypatch):
    import pydicom.pixels

    (tmp_path / "img").mkdir()
    _png(tmp_path / "img" / "a.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "img" / "b.jpg")
    (tmp_path / "img" / "c.dcm").write_bytes(_dicom(_dx_pixels()))
    dataset = read_manifest(_manifest(tmp_path, ["img/a.png", "img/b.jpg", "img/c.dcm"]))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("no pixel may be decoded"))
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("no pixel may be decoded"))
    assert dataset.check_images() == 3


@pytest.mark.parametrize(("name", "says"), [("bomb.png", "8000x6000"), ("volume.dcm", "3,777 MB"),
                                            ("deflated.dcm", "inflates to more than"), ("empty.dcm", "no image"),
                                            ("text.png", "cannot read image"), ("cut.dcm", "the DICOM file")])
def test_check_images_refuses_what_loading_would_refuse(tmp_path, deflate_bomb, name, says):
    data = {
        "bomb.png": lambda: _zero_png(8000, 6000),
        "volume.dcm": lambda: _dicom(np.zeros((4, 4), np.uint16), Rows=6000, Columns=6000, NumberOfFrames=55),
        "deflated.dcm": lambda: deflate_bomb,
        "empty.dcm": lambda: _dicom(None),
        "text.png": lambda: b"not an image at all",
        "cut.dcm": lambda: _dicom(_dx_pixels())[:300],
    }[name]()
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / name).write_bytes(data)
    dataset = read_manifest(_manifest(tmp_path, [f"img/{name}"]))
    with pytest.raises(FairMedInputError) as caught:
        dataset.check_images()
    assert name in str(caught.value) and says in str(caught.value)
    _assert_no_phi("".join(traceback.format_exception(caught.value)))
