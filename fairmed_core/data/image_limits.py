"""Decoded-size limits for every image FairMed reads (uploads and manifest images), checked from headers only.

An image file can be tiny and decode to gigabytes (a deflated DICOM volume of zeros, a PNG of one colour), so the
size an image will take once decoded is computed from its header and checked here before any pixel is decoded:

* at most ``MAX_FRAME_PIXELS`` pixels (width x height) in one frame, and
* at most ``MAX_DECODED_BYTES`` for all of its pixel data as stored: width x height x frames x samples per pixel
  x bytes per sample (a 512x512 CT volume of 500 16-bit frames fits; a 6000x6000 volume of 55 frames does not).

A deflated DICOM file is also inflated only as far as that limit (``check_deflated_dicom``), because pydicom
inflates the whole dataset before it reads a single header element.
"""

from __future__ import annotations

import warnings
import zlib
from typing import BinaryIO

from fairmed_core.errors import FairMedInputError

__all__ = [
    "MAX_FRAME_PIXELS",
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_FILE_BYTES",
    "check_decoded_size",
    "check_deflated_dicom",
    "check_dicom_before_parsing",
    "limits_in_words",
    "pil_mode_sample_layout",
]

MAX_FRAME_PIXELS = 40_000_000
MAX_DECODED_BYTES = 256 * 2**20
# An image file on disk (a manifest's) may be larger than its pixels only by its header: uncompressed DICOM is
# about as large as its decoded pixels, so this bounds what reading the file costs.
MAX_IMAGE_FILE_BYTES = MAX_DECODED_BYTES + 64 * 2**20
# What a deflated DICOM may inflate to: its pixels plus a generous header.
_MAX_INFLATED_BYTES = MAX_DECODED_BYTES + 16 * 2**20
_DEFLATE_CHUNK = 1 << 20

_RESIZE_HINT = "downscale the image, or export a single frame, before using it"


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MB" if n_bytes >= 2**20 else f"{n_bytes / 2**20:.2f} MB"


def limits_in_words() -> str:
    """The two limits as a user reads them in an error message."""
    return f"{MAX_FRAME_PIXELS:,} pixels per frame and {_megabytes(MAX_DECODED_BYTES)} of decoded pixel data"


def check_decoded_size(
    source: str,
    *,
    width: int,
    height: int,
    frames: int = 1,
    samples: int = 1,
    bits_allocated: int = 8,
    what: str = "image",
    quote_dimensions: bool = True,
) -> int:
    """Refuse an image whose header says it decodes to more than the limits; returns its decoded bytes.

    ``quote_dimensions=False`` leaves width and height out of the message (DICOM messages quote no header value;
    the decoded size, a product, is still given).
    """
    frames, samples = max(int(frames), 1), max(int(samples), 1)
    bytes_per_sample = max((int(bits_allocated) + 7) // 8, 1)
    frame_pixels = int(width) * int(height)
    decoded_bytes = frame_pixels * frames * samples * bytes_per_sample
    if frame_pixels <= MAX_FRAME_PIXELS and decoded_bytes <= MAX_DECODED_BYTES:
        return decoded_bytes
    if quote_dimensions:
        shape = f"{width}x{height} = {frame_pixels:,} pixels"
        if frames > 1:
            shape += f" x {frames:,} frames"
        measured = f"is {shape} ({_megabytes(decoded_bytes)} decoded)"
    else:
        measured = f"would decode to {frame_pixels:,} pixels per frame and {_megabytes(decoded_bytes)} in all"
    raise FairMedInputError(
        f"the {what} is too large: it {measured}; the limit is {limits_in_words()}",
        source=source,
        hint=_RESIZE_HINT,
    )


# PIL modes -> (bands, bytes per band) of the decoded image in memory.
_PIL_BAND_BYTES = {"I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4, "1": 1}


def pil_mode_sample_layout(mode: str) -> tuple[int, int]:
    """``(samples per pixel, bits per sample)`` of an image PIL decodes into ``mode``."""
    from PIL import Image

    try:
        bands = int(Image.getmodebands(mode)) if mode not in _PIL_BAND_BYTES else 1
    except (KeyError, ValueError):
        bands = 4  # an unknown mode is sized as the widest common one
    return bands, 8 * _PIL_BAND_BYTES.get(mode, 1)


def check_deflated_dicom(stream: BinaryIO, source: str) -> None:
    """Inflate the rest of ``stream`` (a deflated DICOM's dataset, after its file meta) only as far as the limit.

    Nothing is kept: the point is to refuse a deflate bomb before pydicom inflates it all at once. A stream that
    does not inflate is left for pydicom to report as corrupt.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    try:
        while True:
            chunk = stream.read(_DEFLATE_CHUNK)
            if not chunk:
                return
            while chunk:
                # max_length bounds each step's output, so a chunk that inflates 1000:1 never sits in memory whole.
                out = inflater.decompress(chunk, _DEFLATE_CHUNK)
                inflated += len(out)
                if inflated > _MAX_INFLATED_BYTES:
                    raise FairMedInputError(
                        f"the DICOM file is too large: its deflated data inflates to more than "
                        f"{_megabytes(_MAX_INFLATED_BYTES)}; the limit is {limits_in_words()}",
                        source=source,
                        hint=_RESIZE_HINT,
                    )
                chunk = inflater.unconsumed_tail
            if inflater.eof:
                return
    except zlib.error:
        return  # not valid deflate data: pydicom refuses it as a corrupt file


def check_dicom_before_parsing(stream: BinaryIO, source: str) -> None:
    """Refuse a deflated DICOM whose dataset inflates past the limit; leaves ``stream`` at its start.

    Only the preamble and file meta are parsed here. Anything unreadable is left for the real parse to refuse.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stream.seek(0)
    try:
        with warnings.catch_warnings():  # pydicom's warnings may quote header values
            warnings.simplefilter("ignore")
            read_preamble(stream, False)
            meta = _read_file_meta_info(stream)
        syntax = meta.get("TransferSyntaxUID", None)
        deflated = syntax is not None and str(syntax) == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - a bad header is reported, without pydicom's text, by the real parse
        deflated = False
    try:
        if deflated:
            check_deflated_dicom(stream, source)
    finally:
        stream.seek(0)
