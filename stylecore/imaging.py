"""Pillow-only image helpers, importable without torch (shard worker processes stay light)."""

from __future__ import annotations

import numpy as np

#: the file suffixes read as images wherever a folder is scanned (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


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
