"""Deterministic synthetic images: clearly labelled stand-ins for photos and artworks.

Used wherever real data cannot be had (tests, offline demos). Photos are smooth gradients with a few
soft shapes; artworks come in style families with distinct palettes and textures, so style-level
statistics differ between families as they do between real art styles.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

STYLE_FAMILIES = ("stripes", "checks", "dots", "waves", "noise")
PAINTERS_PER_FAMILY = 3  # the demo's synthetic "artists": three hands per style family


def _grid(size: int) -> tuple[Tensor, Tensor]:
    axis = torch.linspace(0.0, 1.0, size)
    return torch.meshgrid(axis, axis, indexing="ij")


def synthetic_photo(seed: int, size: int = 128) -> Tensor:
    """A (3, size, size) "photo" in [0, 1]: a colour gradient sky/ground with soft blobs."""
    g = torch.Generator().manual_seed(int(seed))
    y, x = _grid(size)
    top, bottom = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
    horizon = 0.3 + 0.4 * torch.rand(1, generator=g).item()
    image = torch.where(y < horizon, top * (1 - y), bottom * (0.5 + 0.5 * y))
    for _ in range(3):
        cy, cx, radius = torch.rand(3, generator=g).tolist()
        colour = torch.rand(3, 1, 1, generator=g)
        mask = torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.05 * radius))
        image = image * (1 - mask) + colour * mask
    return image.clamp(0, 1)


def synthetic_artwork(seed: int, family: str, size: int = 128, painter: int | None = None) -> Tensor:
    """A (3, size, size) "artwork" of a style family (see STYLE_FAMILIES), in [0, 1].

    ``painter`` (0, 1, 2, …) gives the works of one painter within a family a trait of their own, so that an
    artist classifier has something to learn: painter p mixes its two colours from the p-th band of lightness
    (channel values in ((p + 0.15)/3, (p + 0.85)/3) for three painters), a dark, a middle and a light hand."""
    if family not in STYLE_FAMILIES:
        raise ValueError(f"unknown style family {family!r}; choose one of {', '.join(STYLE_FAMILIES)}")
    g = torch.Generator().manual_seed(int(seed))
    y, x = _grid(size)
    frequency = 4 + 12 * torch.rand(1, generator=g).item()
    angle = math.pi * torch.rand(1, generator=g).item()
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if family == "stripes":
        pattern = (torch.sin(2 * math.pi * frequency * u) > 0).float()
    elif family == "checks":
        pattern = ((torch.sin(2 * math.pi * frequency * u) > 0) ^ (torch.sin(2 * math.pi * frequency * v) > 0)).float()
    elif family == "dots":
        pattern = ((torch.sin(2 * math.pi * frequency * u) * torch.sin(2 * math.pi * frequency * v)) > 0.5).float()
    elif family == "waves":
        pattern = 0.5 + 0.5 * torch.sin(2 * math.pi * frequency * (u + 0.1 * torch.sin(2 * math.pi * 3 * v)))
    else:
        coarse = torch.rand(1, 1, 8, 8, generator=g)
        pattern = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    first, second = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
    if painter is not None:
        band = int(painter) % PAINTERS_PER_FAMILY
        first, second = ((band + 0.15 + 0.7 * colour) / PAINTERS_PER_FAMILY for colour in (first, second))
    grain = 0.05 * torch.rand(3, size, size, generator=g)
    return (first * pattern + second * (1 - pattern) + grain).clamp(0, 1)
