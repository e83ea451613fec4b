"""Validation and decoding of one user-uploaded medical image (PNG, JPEG or DICOM) for the Inference page.

``read_uploaded_image`` takes the raw bytes and the name the browser sent and returns an ``UploadedImage``: an
8-bit ``L`` or ``RGB`` PIL image that an image-text model's processor accepts, plus plain-words notes on every
conversion applied. Every problem the user can fix raises ``FairMedInputError`` naming the file; bad bytes never
raise anything else.

Safety rules this module keeps:

* The format is sniffed from the bytes, never taken from the extension.
* Sizes are checked before any pixel is decoded: the byte count first, then the decoded size from the header
  (``image_limits``: pixels per frame, and width x height x frames x samples x bytes per sample), so a small
  decompression bomb never gets decoded; a deflated DICOM is inflated only as far as that limit. PIL's global
  limits are left alone.
* No patient data survives: the returned image is a fresh image with empty ``info`` (no PNG text chunks, no
  EXIF), the only DICOM attribute kept is ``Modality``, and DICOM error messages never quote header values other
  than the transfer syntax. pydicom's own exception texts (which may quote values) are not chained either.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from fairmed_core.errors import FairMedInputError

from .image_limits import MAX_FRAME_PIXELS, check_decoded_size, check_dicom_before_parsing, pil_mode_sample_layout

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_MODEL_SIDE",
    "UploadedImage",
    "read_uploaded_image",
    "decode_dicom",
    "check_dicom_header",
]

MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MiB
MAX_IMAGE_PIXELS = MAX_FRAME_PIXELS  # decompression-bomb guard (width * height), checked before decoding pixels
MAX_MODEL_SIDE = 1024  # the longer side is downscaled to this

_ACCEPTED = "PNG, JPEG or DICOM (.dcm)"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_DICOM_MAGIC_OFFSET = 128
_CORRUPT_HINT = "the file may be truncated or corrupt; export it again and re-upload"

# Known extensions, used only to note a disagreement with the content (the content always wins). Extensions not
# listed (DICOM files are often named by UID, e.g. "1.2.840.113619.2.1") are not remarked on.
_EXTENSION_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
    ".dic": "DICOM",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WebP",
    ".pdf": "PDF",
}

# Signatures of common files that are not accepted, so the error can say what the file looks like.
_OTHER_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"PK\x03\x04", "a ZIP archive"),
)

# Everything PIL and zlib raise for bad bytes; DecompressionBombError is a subclass of Exception, listed anyway.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    zlib.error,
    MemoryError,
    OverflowError,
    ZeroDivisionError,
    RuntimeError,  # includes NotImplementedError, raised by some plugins for unsupported variants
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

_PHOTOMETRIC_GRAY = ("MONOCHROME1", "MONOCHROME2")
_PHOTOMETRIC_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")


@dataclass(frozen=True)
class UploadedImage:
    """A validated upload, decoded to an 8-bit image the model's processor accepts."""

    image: Image.Image  # mode "L" or "RGB", 8-bit, empty info
    filename: str  # basename only
    file_format: str  # "PNG", "JPEG" or "DICOM"
    original_mode: str  # e.g. "I;16", "RGBA", "MONOCHROME2 16-bit"
    original_size: tuple[int, int]  # (width, height) as stored
    notes: tuple[str, ...]  # every conversion applied, in plain words
    modality: str | None  # DICOM Modality when present; the only DICOM metadata kept


def read_uploaded_image(data: bytes, filename: str) -> UploadedImage:
    """Validate and decode one uploaded PNG, JPEG or DICOM file into an 8-bit ``L``/``RGB`` ``UploadedImage``."""
    name = _basename(filename)
    _check_byte_size(data, name)
    data = bytes(data)  # a bytearray or memoryview from the uploader becomes an immutable copy
    file_format = _sniff_format(data, name)
    notes: list[str] = []
    extension_note = _extension_note(name, file_format)
    if extension_note:
        notes.append(extension_note)
    if file_format == "DICOM":
        image, original_mode, original_size, modality = _decode_dicom(data, name, notes)
    else:
        image, original_mode, original_size = _decode_pil(data, name, file_format, notes)
        modality = None
    image = _fit_model_side(image, notes)
    return UploadedImage(
        image=_fresh(image),
        filename=name,
        file_format=file_format,
        original_mode=original_mode,
        original_size=original_size,
        notes=tuple(notes),
        modality=modality,
    )


# --------------------------------------------------------------------------------------------- checks on bytes


def _basename(filename: str) -> str:
    """The last path component of a browser-supplied name, whichever separator it uses, printable only."""
    # Browsers may send "C:\\Users\\...\\x.png"; a crafted request may send "../../etc/x.png".
    base = re.split(r"[\\/]", str(filename))[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base if base not in ("", ".", "..") else "upload"


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MB"


def _check_byte_size(data: bytes, name: str) -> None:
    """Refuse empty and oversize uploads before anything is parsed."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise FairMedInputError(
            f"the upload is {_megabytes(len(data))}, larger than the {MAX_UPLOAD_BYTES // 2**20} MB limit",
            source=name,
            hint="downscale or crop the image, or export a single frame",
        )
    if not data:
        raise FairMedInputError("the file is empty (0 bytes)", source=name, hint=f"upload a {_ACCEPTED} image")


def _sniff_format(data: bytes, name: str) -> str:
    """``"PNG"``, ``"JPEG"`` or ``"DICOM"`` from the file's magic bytes; anything else is refused."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(_JPEG_SOI):
        return "JPEG"
    if data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM"
    looks_like = next((what for magic, what in _OTHER_SIGNATURES if data.startswith(magic)), None)
    if looks_like is None and data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        looks_like = "a WebP image"
    what = f"looks like {looks_like}" if looks_like else "is not a recognised image"
    raise FairMedInputError(
        f"the file {what}; accepted formats are {_ACCEPTED}",
        source=name,
        hint="the format is read from the file's content, not its extension",
    )


def _extension_note(name: str, file_format: str) -> str | None:
    """A note when the file's extension names a different format than its content (the content wins)."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    extension = name[dot:].lower()
    claimed = _EXTENSION_FORMATS.get(extension)
    if claimed is None or claimed == file_format:
        return None
    return f"file extension {extension!r} does not match its content; read as {file_format}"


def _corrupt(name: str, file_format: str) -> FairMedInputError:
    return FairMedInputError(f"the {file_format} file could not be decoded", source=name, hint=_CORRUPT_HINT)


# --------------------------------------------------------------------------------------------------- PNG / JPEG


def _decode_pil(data: bytes, name: str, file_format: str, notes: list[str]) -> tuple[Image.Image, str, tuple[int, int]]:
    """Open a PNG or JPEG with PIL, check its pixel count before loading, and convert it to 8-bit L/RGB."""
    if file_format == "JPEG" and _JPEG_EOI not in data:
        # JPEG has no checksum and libjpeg decodes garbage scan data silently, so a file without an end-of-image
        # marker (cut short, or garbage after the headers) is refused rather than shown as noise.
        raise _corrupt(name, file_format)
    try:
        # PIL warns at ~89M pixels and raises at twice that; both become a refusal here, without touching PIL's
        # global limit. Our own, lower limit is checked before ``load()``.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=[file_format])
            width, height = opened.size
            samples, bits = pil_mode_sample_layout(opened.mode)
            check_decoded_size(name, width=width, height=height, samples=samples, bits_allocated=bits)
            original_mode = opened.mode
            n_frames = int(getattr(opened, "n_frames", 1) or 1)
            if n_frames > 1:
                opened.seek(0)
                notes.append(f"first frame kept of {n_frames} (multi-frame image)")
            opened.load()
            image = _apply_exif_orientation(opened, notes)
            image = _to_eight_bit(image, notes)
    except FairMedInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FairMedInputError(
            f"the image's dimensions exceed the {MAX_IMAGE_PIXELS:,}-pixel limit (decompression-bomb guard)",
            source=name,
            hint="downscale the image before uploading",
        ) from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, file_format) from exc
    return image, original_mode, (width, height)


def _apply_exif_orientation(image: Image.Image, notes: list[str]) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says, so the model sees what the user's viewer shows."""
    try:
        orientation = image.getexif().get(0x0112)
    except _DECODE_ERRORS:
        return image  # unreadable EXIF is ignored (and not carried over)
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image
    notes.append(f"rotated/flipped as the EXIF orientation tag ({orientation}) says")
    return ImageOps.exif_transpose(image)


def _to_eight_bit(image: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any PIL mode a PNG or JPEG can hold to 8-bit ``L`` or ``RGB``, noting what was done."""
    mode = image.mode
    if mode in ("L", "RGB") and "transparency" not in image.info:
        return image
    if mode == "1":
        notes.append("1-bit image converted to 8-bit grayscale")
        return image.convert("L")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels, note = _window_percentiles(np.asarray(image))
        notes.append(f"{_bit_depth_words(mode)} pixels windowed to 8 bits ({note})")
        return Image.fromarray(pixels)
    if mode in ("LA", "La"):
        return _composite_on_black(image.convert("LA"), notes)
    if mode in ("RGBA", "RGBa", "PA") or "transparency" in image.info:
        # P/L/RGB with a tRNS chunk carry transparency in ``info``; convert() turns it into a real alpha channel.
        return _composite_on_black(image.convert("LA" if mode == "L" else "RGBA"), notes)
    if mode == "P":
        rgb = image.convert("RGB")
        if _is_gray(rgb):
            notes.append("grayscale palette expanded to 8-bit grayscale")
            return rgb.convert("L")
        notes.append("palette colours expanded to RGB")
        return rgb
    # CMYK (JPEG), YCbCr, and whatever else PIL can convert.
    notes.append(f"{mode} converted to RGB")
    return image.convert("RGB")


def _bit_depth_words(mode: str) -> str:
    return "16-bit" if mode.startswith("I;16") else f"high-bit-depth (PIL mode {mode})"


def _is_gray(rgb: Image.Image) -> bool:
    pixels = np.asarray(rgb)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def _composite_on_black(image: Image.Image, notes: list[str]) -> Image.Image:
    """Drop the alpha channel of an ``LA`` or ``RGBA`` image by compositing it on black."""
    pixels = np.asarray(image)
    alpha = pixels[..., -1:].astype(np.uint16)
    colour = pixels[..., :-1].astype(np.uint16)
    if (alpha == 255).all():
        notes.append("alpha channel dropped (it was fully opaque)")
    else:
        notes.append("alpha channel dropped (composited on black)")
    composited = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(composited[..., 0] if composited.shape[-1] == 1 else composited)


# -------------------------------------------------------------------------------------------------- windowing


def _window_percentiles(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Map any numeric array to uint8 through its 1st-99th percentile window; also says which window was used."""
    values = np.asarray(values)
    sample = values
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        sample = values if finite.all() else values[finite]
    if sample.size == 0:
        return np.zeros(values.shape, dtype=np.uint8), "no finite pixel values; shown as black"
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    how = "1st-99th percentile"
    if high <= low:
        # Mostly-constant images (a small bright marker on a flat field) fall back to the full range.
        low, high = float(sample.min()), float(sample.max())
        how = "full range; the 1st and 99th percentiles were equal"
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8), "every pixel has the same value; shown as black"
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    return _linear_to_uint8(values, low, high), how


def _linear_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    # float32 halves the memory of a 40-megapixel frame; its precision is far finer than 8-bit output needs.
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _window_dicom(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM linear VOI window (PS3.3 C.11.2.1.2.1) from center/width to uint8."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    if width <= 1:
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    low = center - 0.5 - (width - 1) / 2
    return _linear_to_uint8(values, low, low + (width - 1))


# -------------------------------------------------------------------------------------------------------- DICOM


def decode_dicom(data: bytes, name: str) -> tuple[Image.Image, tuple[str, ...]]:
    """Decode the bytes of one DICOM file (any byte count: the caller bounds it) into an 8-bit ``L``/``RGB`` image
    of its middle frame, with a note on each conversion; manifests read their DICOM images through this too.
    ``name`` is how errors name the file."""
    notes: list[str] = []
    image, _, _, _ = _decode_dicom(bytes(data), name, notes)
    return _fresh(image), tuple(notes)


def check_dicom_header(stream, name: str) -> tuple[int, int]:
    """Check a DICOM file as ``decode_dicom`` would, from its header only (no pixel decoded, large values left
    on disk): a deflate bomb, no image, missing or oversize dimensions, an unsupported photometric
    interpretation or transfer syntax. Returns ``(width, height)``. ``stream`` is a binary file object."""
    import pydicom

    check_dicom_before_parsing(stream, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # defer_size leaves PixelData (and any large value) unread, yet its tag is seen.
            ds = pydicom.dcmread(stream, force=False, defer_size=1024)
            transfer_syntax = _transfer_syntax(ds, name)
            if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise FairMedInputError("the DICOM file holds no image (no PixelData element)", source=name)
            rows, columns, _, _, _ = _dicom_geometry(ds, name)
        except FairMedInputError:
            raise
        except Exception:  # noqa: BLE001 - any parser failure on user bytes is a corrupt file
            raise _corrupt(name, "DICOM") from None  # pydicom's message may quote header values
    _check_decoder(transfer_syntax, name)
    return columns, rows


def _decode_dicom(
    data: bytes, name: str, notes: list[str]
) -> tuple[Image.Image, str, tuple[int, int], str | None]:
    """Read a DICOM file with pydicom and turn its (middle) frame into an 8-bit image, keeping only Modality."""
    import pydicom

    stream = io.BytesIO(data)
    check_dicom_before_parsing(stream, name)
    # pydicom warns about odd header values by quoting them, which could put patient data in the logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(stream, force=False)
            # pydicom parses element values lazily, so reading the header can fail too, not just dcmread.
            return _dicom_dataset_to_image(ds, name, notes)
        except FairMedInputError:
            raise
        except Exception:  # noqa: BLE001 - any parser failure on user bytes is a corrupt file
            raise _corrupt(name, "DICOM") from None  # pydicom's message may quote header values


def _dicom_dataset_to_image(ds, name: str, notes: list[str]) -> tuple[Image.Image, str, tuple[int, int], str | None]:
    """Check a parsed DICOM dataset's header, then decode only the frame that is kept."""
    modality = _modality(ds)
    transfer_syntax = _transfer_syntax(ds, name)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise FairMedInputError(
            "the DICOM file holds no image (no PixelData element)",
            source=name,
            hint="it may be a structured report or a presentation state; upload the image itself",
        )
    rows, columns, frames, photometric, bits = _dicom_geometry(ds, name)
    _check_decoder(transfer_syntax, name)
    index = frames // 2 if frames > 1 else None
    try:
        from pydicom.pixels import pixel_array

        pixels = pixel_array(ds, index=index)
        if index is not None:
            notes.append(f"middle frame kept ({index + 1} of {frames})")
        image = _dicom_pixels_to_image(ds, pixels, photometric, bits, notes)
    except FairMedInputError:
        raise
    except Exception:  # noqa: BLE001 - decoder failures on user bytes are corrupt or unsupported data
        raise FairMedInputError(
            f"the DICOM pixel data ({transfer_syntax.name}) could not be decoded",
            source=name,
            hint=_CORRUPT_HINT,
        ) from None
    original_mode = f"{photometric} {bits}-bit" if photometric else f"{bits}-bit"
    return image, original_mode, (columns, rows), modality


def _modality(ds) -> str | None:
    """The Modality code string (e.g. "CR", "MG"), or None when absent or not a valid code string."""
    value = ds.get("Modality", None)
    text = str(value).strip().upper() if value is not None else ""
    # Only a well-formed code string is kept, so a free-text value can never carry patient data out.
    return text if _CODE_STRING.fullmatch(text) else None


def _transfer_syntax(ds, name: str):
    from pydicom.uid import UID

    file_meta = getattr(ds, "file_meta", None)
    value = file_meta.get("TransferSyntaxUID", None) if file_meta is not None else None
    if not value:
        raise FairMedInputError(
            "the DICOM file could not be decoded: its file meta header names no transfer syntax",
            source=name,
            hint=_CORRUPT_HINT,
        )
    return UID(str(value))


def _check_decoder(transfer_syntax, name: str) -> None:
    """Refuse compressed pixel data that this installation has no decoder for, saying how to export instead."""
    if _decoder_available(transfer_syntax):
        return
    label = transfer_syntax.name if transfer_syntax.name != str(transfer_syntax) else "an unknown transfer syntax"
    raise FairMedInputError(
        f"the DICOM pixel data is compressed with {label} ({transfer_syntax}), which this installation cannot decode",
        source=name,
        hint="export the image uncompressed (Explicit VR Little Endian), or as PNG, and upload it again",
    )


def _decoder_available(transfer_syntax) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except (NotImplementedError, ValueError):
        return False  # no decoder exists for this UID at all (private or unknown syntax)


def _int_attribute(ds, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _dicom_geometry(ds, name: str) -> tuple[int, int, int, str, int]:
    """Rows, columns, frames, photometric interpretation and bit depth, checked before any pixel is decoded."""
    rows = _int_attribute(ds, "Rows")
    columns = _int_attribute(ds, "Columns")
    frames = _int_attribute(ds, "NumberOfFrames", 1)
    if not rows or not columns or rows < 0 or columns < 0 or frames is None or frames < 0:
        # Header values are deliberately not quoted in DICOM messages.
        raise FairMedInputError(
            "the DICOM image has missing or invalid dimensions (Rows, Columns or NumberOfFrames)",
            source=name,
            hint=_CORRUPT_HINT,
        )
    frames = max(frames, 1)
    samples = _int_attribute(ds, "SamplesPerPixel", 1) or 1
    allocated = _int_attribute(ds, "BitsAllocated", 16) or 16
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        allocated = max(allocated, 64 if "DoubleFloatPixelData" in ds else 32)
    # Header values are not quoted (quote_dimensions=False); the decoded size, a product of them, is.
    check_decoded_size(name, width=columns, height=rows, frames=frames, samples=max(samples, 1),
                       bits_allocated=max(allocated, 1), what="DICOM image", quote_dimensions=False)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric and photometric not in _PHOTOMETRIC_GRAY + _PHOTOMETRIC_COLOR:
        raise FairMedInputError(
            "the DICOM image uses a photometric interpretation FairMed cannot display",
            source=name,
            hint="export it as MONOCHROME2 or RGB",
        )
    bits = _int_attribute(ds, "BitsStored") or _int_attribute(ds, "BitsAllocated") or 0
    return rows, columns, frames, photometric, bits


def _dicom_pixels_to_image(ds, pixels: np.ndarray, photometric: str, bits: int, notes: list[str]) -> Image.Image:
    """Turn one decoded DICOM frame into 8-bit L (grayscale) or RGB (colour), noting each step."""
    if photometric == "PALETTE COLOR":
        return _palette_colour(ds, pixels, notes)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        if photometric.startswith("YBR"):
            notes.append(f"{photometric} colour converted to RGB")
        return Image.fromarray(_colour_to_uint8(pixels, bits, notes))
    if pixels.ndim != 2:
        raise ValueError("unexpected pixel array shape")  # turned into a decode error by the caller
    return Image.fromarray(_grayscale_to_uint8(ds, pixels, photometric, bits, notes))


def _colour_to_uint8(pixels: np.ndarray, bits: int, notes: list[str]) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    depth = bits if 8 < bits <= 16 else 16
    notes.append(f"{depth}-bit colour scaled to 8 bits")
    return _linear_to_uint8(pixels, 0.0, float(2**depth - 1))


def _palette_colour(ds, pixels: np.ndarray, notes: list[str]) -> Image.Image:
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(pixels, ds)
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor", None)
    lut_bits = int(descriptor[2]) if descriptor is not None and len(descriptor) == 3 else 16
    notes.append("DICOM palette colours expanded to RGB")
    if lut_bits <= 8 and rgb.max() <= 255:
        return Image.fromarray(rgb.astype(np.uint8))
    return Image.fromarray(_linear_to_uint8(rgb, 0.0, float(2**lut_bits - 1)))


def _float_attribute(ds, keyword: str) -> float | None:
    """A DS attribute as a float, taking the first of several values; None when absent or unreadable."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _grayscale_to_uint8(ds, pixels: np.ndarray, photometric: str, bits: int, notes: list[str]) -> np.ndarray:
    """Rescale slope/intercept, VOI window (the file's, else 1st-99th percentile), MONOCHROME1 inversion."""
    slope = _float_attribute(ds, "RescaleSlope")
    slope = 1.0 if slope is None else slope
    intercept = _float_attribute(ds, "RescaleIntercept") or 0.0
    rescaled = slope != 1.0 or intercept != 0.0
    center = _float_attribute(ds, "WindowCenter")
    width = _float_attribute(ds, "WindowWidth")
    if rescaled:
        # The file's window is defined on rescaled values (e.g. Hounsfield units), so this comes first.
        values = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        notes.append(f"rescale slope {slope:g} and intercept {intercept:g} applied")
    else:
        values = pixels
    if center is not None and width is not None and width > 0:
        out = _window_dicom(values, center, width)
        notes.append(f"windowed to 8 bits with the file's window (center {center:g}, width {width:g})")
    elif pixels.dtype == np.uint8 and bits in (0, 8) and not rescaled:
        out = pixels  # already full-range 8-bit; a percentile stretch would only change its contrast
    else:
        out, how = _window_percentiles(values)
        notes.append(f"{bits or 16}-bit pixels windowed to 8 bits ({how})")
    if photometric == "MONOCHROME1":
        out = 255 - out
        notes.append("MONOCHROME1 inverted so that bright means dense")
    return np.ascontiguousarray(out, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ final steps


def _fit_model_side(image: Image.Image, notes: list[str]) -> Image.Image:
    """Downscale so that the longer side is at most ``MAX_MODEL_SIDE``, keeping the aspect ratio."""
    width, height = image.size
    longer = max(width, height)
    if longer <= MAX_MODEL_SIDE:
        return image
    scale = MAX_MODEL_SIDE / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    notes.append(f"downscaled from {width}x{height} to {size[0]}x{size[1]}")
    # reducing_gap does a cheap BOX reduction first, then LANCZOS for the last step.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _fresh(image: Image.Image) -> Image.Image:
    """A new image holding only the pixels: no PNG text chunks, EXIF, ICC profile or other ``info``."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # defensive: every path above already yields L or RGB
    fresh = Image.fromarray(np.array(image, dtype=np.uint8))
    fresh.info.clear()
    return fresh
