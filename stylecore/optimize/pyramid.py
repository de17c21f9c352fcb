"""Laplacian pyramids: STROTSS optimises the image through one, so that a step moves coarse and fine detail alike.

``decompose(x, levels)`` gives ``levels`` band-pass images (each the difference between a level and its
bilinear down-and-up-sampled self) and the coarsest level; ``synthesize`` adds them back from coarse to fine with
the same upsampling, so synthesize(decompose(x)) is x exactly (to floating-point rounding), whatever the size.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F


def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def decompose(image: Tensor, levels: int) -> list[Tensor]:
    """(B, C, H, W) → ``levels`` band-pass images, finest first, then the coarsest level (levels + 1 tensors)."""
    if levels < 0:
        raise ValueError(f"levels must be ≥ 0; got {levels}")
    pyramid, current = [], image
    for _ in range(levels):
        h, w = current.shape[-2:]
        smaller = _up(current, (max(h // 2, 1), max(w // 2, 1)))
        pyramid.append(current - _up(smaller, (h, w)))
        current = smaller
    pyramid.append(current)
    return pyramid


def synthesize(pyramid: list[Tensor]) -> Tensor:
    """The image of a :func:`decompose` output: the coarsest level upsampled and each band added, coarse to fine."""
    current = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        current = band + _up(current, tuple(band.shape[-2:]))
    return current
