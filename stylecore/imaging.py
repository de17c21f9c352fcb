"""Image decoding and encoding: the one place untrusted image bytes are opened. Pillow only, no torch
(shard worker processes and Ray Data decode tasks stay light).

Every decode goes through :func:`open_image`, which lets Pillow try only the formats in
:data:`DECODE_FORMATS`: a file that claims to be a JPEG but is an EPS, a PDF or anything else Pillow
could hand to an external program (Ghostscript) or a rarely used plugin is refused as "not an image".
:func:`decode_rgb` adds the pixel budget (checked on the header, before any pixel is decoded; large
JPEGs are decoded at a reduced scale by libjpeg's draft mode when the caller needs less), EXIF
orientation and conversion to 8-bit RGB.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np

#: the file suffixes read as images wherever a folder is scanned (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: the decoders Pillow may use (its JPEG decoder also opens a camera's multi-picture JPEGs, as format MPO)
DECODE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF")
#: the default pixel budget of one decoded image: Pillow's own decompression-bomb threshold
MAX_PIXELS = 89_478_485
#: EXIF orientations that swap width and height (transpose, rotate 90°, transverse, rotate 270°)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)

ImageInput = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]


class ImageDecodeError(ValueError):
    """Bytes that are not an image stylecore reads, or one over the pixel budget; the message says which."""


def open_image(source: ImageInput):
    """A lazily decoded PIL image, opened with the allowed decoders only (:data:`DECODE_FORMATS`).

    Raises :class:`ImageDecodeError` for anything else. The caller closes it (``with open_image(...)``).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        return Image.open(source, formats=DECODE_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image in a supported format ({', '.join(DECODE_FORMATS)})") from None
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"decompression bomb guard: {error}") from None
    except OSError as error:
        if type(error) is not OSError:  # FileNotFoundError, PermissionError…: about the file, not its bytes
            raise
        raise ImageDecodeError(f"corrupt or truncated: {error}") from None
    except (SyntaxError, ValueError, EOFError, struct.error) as error:  # what Pillow's parsers raise on bad headers
        raise ImageDecodeError(f"corrupt or truncated: {error}") from None


def oriented_size(image) -> tuple[int, int]:
    """(width, height) as the image is shown, i.e. after its EXIF orientation is applied."""
    width, height = image.size
    orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


@dataclass
class Decoded:
    """An RGB image and the size of the original (as shown: EXIF orientation applied)."""

    image: object  # PIL.Image.Image in RGB mode, fully loaded
    original_size: tuple[int, int]


def decode_rgb(source: ImageInput, max_pixels: int = MAX_PIXELS, needed_short_side: int | None = None) -> Decoded:
    """Decode ``source`` to an 8-bit RGB PIL image with its EXIF orientation applied.

    ``max_pixels`` bounds the decoded size and is checked on the header, before decoding. When the caller
    needs only ``needed_short_side`` pixels on the short side, a JPEG is decoded by libjpeg at the largest
    reduction (1/2, 1/4, 1/8) that keeps it that large: far cheaper, and a photo whose full size exceeds the
    budget is still read when its reduced size fits. Raises :class:`ImageDecodeError` naming the reason.
    """
    from PIL import Image, ImageOps

    with open_image(source) as image:
        width, height = image.size
        original = oriented_size(image)  # from the header, before draft() changes the size decoded
        if image.format in ("JPEG", "MPO") and needed_short_side and min(width, height) >= 2 * needed_short_side:
            scale = needed_short_side / min(width, height)
            image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageDecodeError(f"decompression bomb guard: {width}x{height} exceeds {max_pixels} pixels "
                                   "(downscale it first, or raise the pixel limit)")
        try:
            with _bomb_limit(max_pixels):
                image.load()  # a truncated or corrupt file fails here, not later in a reader
                if image.getexif().get(0x0112, 1) != 1:  # only then is a transpose needed
                    image = ImageOps.exif_transpose(image)
                rgb = to_rgb(image)
                rgb.load()
        except Image.DecompressionBombError as error:
            raise ImageDecodeError(f"decompression bomb guard: {error}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageDecodeError(f"corrupt or truncated: {error}") from None
    return Decoded(rgb, original)


class _bomb_limit:
    """Pillow's own bomb check (in frames of GIF/TIFF, in plugins) at ``limit``, restored afterwards."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        from PIL import Image

        self.saved = Image.MAX_IMAGE_PIXELS
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice it; ours is the hard limit, so allow up to it.
        Image.MAX_IMAGE_PIXELS = max(self.saved or 0, self.limit)

    def __exit__(self, *exc) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = self.saved


def decode_rgb_array(source: ImageInput, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of ``source`` (see :func:`decode_rgb`)."""
    return np.asarray(decode_rgb(source, max_pixels).image, dtype=np.uint8)


def encode_image(array: np.ndarray, image_format: str = "JPEG", quality: int = 95) -> bytes:
    """(H, W, 3) uint8 pixels → encoded bytes (JPEG, PNG, WEBP or BMP)."""
    from PIL import Image

    image_format = image_format.upper()
    if image_format == "JPG":
        image_format = "JPEG"
    if image_format not in ("JPEG", "PNG", "WEBP", "BMP"):
        raise ValueError(f"image format {image_format!r} is not one of JPEG, PNG, WEBP, BMP")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format,
                                **({"quality": quality} if image_format in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def to_rgb(image, background: tuple[int, int, int] = (255, 255, 255)):
    """Convert a PIL image of any mode (L, P, CMYK, I;16, RGBA, LA, …) to 8-bit RGB.

    Transparency is composited onto ``background`` (white, as an image viewer shows it), not dropped,
    and 16-bit images are scaled down rather than clipped.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")
