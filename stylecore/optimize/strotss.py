"""STROTSS (Kolkin, Salavon & Shakhnarovich, CVPR 2019): style transfer by relaxed optimal transport and
self-similarity, with the reference's schedule (nkolkin13/STROTSS ``styleTransfer.py``, ``st_helper.py``).

Per scale (long sides doubling up to ``size``, 64 → 512 by default): the image is a 5-level Laplacian pyramid
optimised with RMSprop; the objective (:func:`stylecore.losses.transport.strotss_objective`) compares hypercolumns
(raw RGB + VGG-16 relu1_1 … relu5_3, ImageNet-normalised) of the output at 1024 points of a strided grid (stride
⌊√(HW/128²)⌋ × ⌈√(HW/128²)⌉, random offsets, re-drawn every 10 steps, shuffled every step) with the content's at
the same points and with 5 × 1000 style points drawn once per scale. The first scale starts from the style's mean
colour plus the content's finest Laplacian band, each later one from the previous result upsampled (plus that
band, except at the last scale); the content weight α = 16 × ``content_weight`` halves at each scale; the learning
rate is 2e-3, 1e-3 at the last scale.

**Spatial guidance** (the paper's user control): two colour-coded masks pair regions of the content with regions
of the style by colour; each region's output points are matched to its own style points, and the objective is the
mean over regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder
from stylecore.losses.transport import STROTSS_LAYERS, set_moments, strotss_objective
from stylecore.optimize import pyramid
from stylecore.optimize.base import (OptimizationHooks, OptimizationMethod, OptimizationResult, ScaleRecord, Timer,
                                     check_pair, register_method, resize, scaled_size)

#: the reference's grid: about 128² candidate points per image, whatever its size
GRID_POINTS = 128 ** 2


@dataclass
class Region:
    """One guided pair: a boolean mask (H, W) of the content and one (h, w) of the style, and the colour naming it."""

    colour: tuple[int, int, int]
    content: Tensor
    style: Tensor


def regions_from_masks(content_mask: Tensor, style_mask: Tensor, min_fraction: float = 0.01) -> list[Region]:
    """Regions from two colour-coded masks (3, H, W) and (3, h, w) in [0, 1], as the reference reads them: the
    colours covering at least ``min_fraction`` of the style mask name the regions, and every pixel of either mask
    belongs to the nearest of them (so JPEG noise at the edges does not split a region). A colour the content
    mask never uses is an error naming it, as is a mask that is not an RGB image."""
    for argument, mask in (("content mask", content_mask), ("style mask", style_mask)):
        if mask.dim() != 3 or mask.shape[0] != 3:
            raise ValueError(f"{argument} must be an RGB image (3, H, W); got {tuple(mask.shape)}")
    style_codes = (style_mask * 255).round().to(torch.int64).flatten(1).T  # (hw, 3)
    colours, counts = torch.unique(style_codes, dim=0, return_counts=True)
    palette = colours[counts >= min_fraction * style_codes.shape[0]]
    if palette.shape[0] == 0:
        raise ValueError(f"style mask: no colour covers {min_fraction:.0%} of it; paint each region in one flat colour")

    def labels(mask: Tensor) -> Tensor:
        codes = (mask * 255).round().flatten(1).T.float()  # (HW, 3)
        return torch.cdist(codes, palette.float()).argmin(dim=1).reshape(mask.shape[-2:])

    content_labels, style_labels = labels(content_mask), labels(style_mask)
    regions = []
    for index, colour in enumerate(palette.tolist()):
        in_content = content_labels == index
        if not in_content.any():
            raise ValueError(f"content mask: the style mask's region colour {tuple(colour)} appears nowhere in the "
                             "content mask; paint the content region it styles in that colour, or remove it")
        regions.append(Region(tuple(colour), in_content, style_labels == index))
    return regions


def _resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5


def _pixel_centres(rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
    """(N,) pixel rows and columns → (1, N, 2) (x, y) grid coordinates in [−1, 1] at the pixels' centres."""
    h, w = size
    return torch.stack([(2 * cols.float() + 1) / w - 1, (2 * rows.float() + 1) / h - 1], dim=1)[None]


def _grid_points(mask: Tensor, generator: torch.Generator) -> Tensor:
    """The reference's candidate points inside ``mask`` (H, W): a strided grid at random offsets, (N, 2) rows and
    columns; the stride keeps about 128² candidates whatever the size."""
    h, w = mask.shape
    ratio = h * w // GRID_POINTS
    stride_rows, stride_cols = max(math.floor(math.sqrt(ratio)), 1), max(math.ceil(math.sqrt(ratio)), 1)
    offset_rows = int(torch.randint(stride_rows, (1,), generator=generator))
    offset_cols = int(torch.randint(stride_cols, (1,), generator=generator))
    rows = torch.arange(offset_rows, h, stride_rows)
    cols = torch.arange(offset_cols, w, stride_cols)
    grid = torch.cartesian_prod(rows, cols)
    inside = grid[mask[grid[:, 0], grid[:, 1]].cpu()]
    if inside.shape[0] == 0:  # a region thinner than the stride: take its own pixels
        inside = mask.nonzero().cpu()
    return inside


@register_method("strotss")
class Strotss(OptimizationMethod):
    """STROTSS (Kolkin et al. 2019) with its reference's schedule: Laplacian-pyramid RMSprop over scales doubling
    to ``size``, REMD + moments + palette against the style and self-similarity to the content on hypercolumns of
    RGB + VGG-16, and optional spatial guidance (colour-coded region masks).

    ``content_weight``: the reference's CLI value (α = 16 × it at the first scale, halved at each). ``steps``:
    per scale (the reference's 250). ``smallest``: the first scale's long side (64); scales double from there,
    and the last is ``size`` exactly.
    """

    memory_layers = STROTSS_LAYERS

    def __init__(self, size: int = 512, steps: int = 250, content_weight: float = 1.0, smallest: int = 64,
                 lr: float = 2e-3, final_lr: float = 1e-3, pyramid_levels: int = 5, n_samples: int = 1024,
                 style_samples: int = 5000, resample_every: int = 10, encoder_weights: str = "imagenet",
                 device: str | torch.device | None = None, precision: str = "auto", seed: int = 0) -> None:
        super().__init__(device, precision, seed)
        for name, value in (("size", size), ("steps", steps), ("smallest", smallest), ("n_samples", n_samples),
                            ("style_samples", style_samples), ("resample_every", resample_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"strotss: {name} must be a positive integer; got {value!r}")
        if not isinstance(pyramid_levels, int) or pyramid_levels < 0:
            raise ValueError(f"strotss: pyramid_levels must be an integer ≥ 0; got {pyramid_levels!r}")
        for name, value in (("content_weight", content_weight), ("lr", lr), ("final_lr", final_lr)):
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"strotss: {name} must be a positive number; got {value!r}")
        if size < 16:
            raise ValueError(f"strotss: size must be at least 16 px; got {size}")
        self.size, self.steps, self.content_weight, self.smallest = size, steps, float(content_weight), smallest
        self.lr, self.final_lr, self.pyramid_levels = float(lr), float(final_lr), pyramid_levels
        self.n_samples, self.style_samples, self.resample_every = n_samples, style_samples, resample_every
        self.encoder_weights = encoder_weights
        self.network = VGGEncoder("vgg16", layers=STROTSS_LAYERS, weights=encoder_weights).to(self.device).eval()

    def long_sides(self) -> list[int]:
        """Each scale's long side: ``size`` halved while the half stays ≥ ``smallest``, coarse to fine."""
        sides = [self.size]
        while sides[0] // 2 >= self.smallest:
            sides.insert(0, sides[0] // 2)
        return sides

    def hypercolumns(self, image: Tensor, features: dict[str, Tensor], locations: Tensor) -> Tensor:
        return SF.sample_hypercolumns([image, *(features[name] for name in STROTSS_LAYERS)], locations)

    def run(self, content: Tensor, style: Tensor, hooks: Sequence[OptimizationHooks] = (),
            content_mask: Tensor | None = None, style_mask: Tensor | None = None) -> OptimizationResult:
        check_pair(content, style)
        if (content_mask is None) != (style_mask is None):
            raise ValueError("strotss: spatial guidance needs both masks, the content's and the style's")
        timer = Timer()
        generator = torch.Generator().manual_seed(self.seed)
        full = scaled_size(*content.shape[-2:], self.size)
        self.check_memory(self.network, full)
        if content_mask is not None:
            regions = regions_from_masks(content_mask, style_mask)
        else:
            regions = [Region((255, 255, 255), torch.ones(full, dtype=torch.bool),
                              torch.ones(style.shape[-2:], dtype=torch.bool))]
        # contiguous: an image decoded as (H, W, C) and permuted keeps its strides through clone(), which
        # L-BFGS's flat views of the gradient cannot take
        content, style = (x.to(self.device).float().contiguous() for x in (content, style))
        sides = self.long_sides()
        records: list[ScaleRecord] = []
        image: Tensor | None = None
        alpha = 16.0 * self.content_weight
        for scale, side in enumerate(sides, start=1):
            size = scaled_size(*full, side)
            scale_content = resize(content, size)
            scale_style = resize(style, scaled_size(*style.shape[-2:], side))
            band = scale_content - resize(resize(scale_content, (max(size[0] // 2, 1), max(size[1] // 2, 1))), size)
            last = scale == len(sides) and scale > 1
            if image is None:
                image = scale_style.mean(dim=(2, 3), keepdim=True) + band
            else:
                image = resize(image, size) + (0 if last else band)
            lr = self.final_lr if last else self.lr
            image, record = self.guarded(size, lambda: self._optimize_scale(
                scale, image, scale_content, scale_style, regions, alpha, lr, generator, hooks))
            records.append(record)
            for hook in hooks:
                hook.on_scale(record)
            alpha /= 2.0
        assert image is not None
        return OptimizationResult(image.detach().float().clamp(0, 1).cpu(), records, self.settings(),
                                  self.network.describe(), self.precision, str(self.device), timer.seconds(),
                                  extra={"regions": [list(r.colour) for r in regions], "scales_long_side": sides})

    def _style_sets(self, style: Tensor, regions: list[Region], generator: torch.Generator
                    ) -> list[tuple[Tensor, tuple[Tensor, Tensor]]]:
        """Each region's style hypercolumns (1, style_samples, d), points drawn uniformly from its pixels once per
        scale (the reference's 5 × 1000), with their moments (fixed for the scale, so computed once)."""
        with torch.no_grad(), self.autocast():
            features = self.network(style, STROTSS_LAYERS)
        size = tuple(style.shape[-2:])
        sets = []
        for region in regions:
            pixels = _resize_mask(region.style, size).nonzero()
            if pixels.shape[0] == 0:
                raise ValueError(f"style mask: region {region.colour} vanishes at {size[1]}x{size[0]}; enlarge it")
            chosen = pixels[torch.randint(pixels.shape[0], (self.style_samples,), generator=generator)]
            locations = _pixel_centres(chosen[:, 0], chosen[:, 1], size).to(style.device)
            vectors = self.hypercolumns(style, features, locations).float()
            sets.append((vectors, set_moments(vectors)))
        return sets

    def _optimize_scale(self, scale: int, start: Tensor, content: Tensor, style: Tensor, regions: list[Region],
                        alpha: float, lr: float, generator: torch.Generator, hooks: Sequence[OptimizationHooks]
                        ) -> tuple[Tensor, ScaleRecord]:
        timer = Timer()
        size = tuple(content.shape[-2:])
        style_sets = self._style_sets(style, regions, generator)
        with torch.no_grad(), self.autocast():
            content_features = self.network(content, STROTSS_LAYERS)
        masks = [_resize_mask(region.content, size) for region in regions]
        levels = [band.detach().clone().requires_grad_(True)
                  for band in pyramid.decompose(start.detach(), self.pyramid_levels)]
        optimizer = torch.optim.RMSprop(levels, lr=lr)
        candidates: list[Tensor] = []
        first: dict[str, float] = {}
        latest: dict[str, float] = {}
        for step in range(self.steps):
            if step % self.resample_every == 0:
                candidates = [_grid_points(mask, generator) for mask in masks]
            optimizer.zero_grad(set_to_none=True)
            image = pyramid.synthesize(levels)
            total = self._objective(image, content, content_features, style_sets, candidates, alpha, generator)
            total.backward()
            optimizer.step()
            latest = {"total": float(total.detach())}
            if step == 0:
                first = dict(latest)
            for hook in hooks:
                hook.on_step(scale, step + 1, self.steps, latest)
        with torch.no_grad():
            image = pyramid.synthesize(levels)
            last = {"total": float(self._objective(image, content, content_features, style_sets, candidates, alpha,
                                                   generator))}
        return image.detach(), ScaleRecord(scale, size, self.steps, first, last, timer.seconds())

    def _objective(self, image: Tensor, content: Tensor, content_features: dict[str, Tensor],
                   style_sets: list[tuple[Tensor, tuple[Tensor, Tensor]]], candidates: list[Tensor], alpha: float,
                   generator: torch.Generator) -> Tensor:
        """The mean over regions of the STROTSS objective at up to ``n_samples`` shuffled candidate points each."""
        size = tuple(image.shape[-2:])
        with self.autocast():
            features = self.network(image, STROTSS_LAYERS)
        total = image.new_zeros(())
        for points, (style_set, style_moments) in zip(candidates, style_sets):
            chosen = points[torch.randperm(points.shape[0], generator=generator)[: self.n_samples]]
            locations = _pixel_centres(chosen[:, 0], chosen[:, 1], size).to(image.device)
            x = self.hypercolumns(image, features, locations).float()
            c = self.hypercolumns(content, content_features, locations).float()
            total = total + strotss_objective(x, c, style_set, alpha, x[..., :3], style_set[..., :3],
                                              style_moments).mean()
        return total / len(style_sets)
