"""The colour-histogram distance of HistoGAN (Afifi, Brubaker, Brown; CVPR 2021), as StyleID reports it.

Each image becomes an RGB-uv histogram: for each channel c, the log-chroma pair
(u, v) = (log I_c − log I_c', log I_c − log I_c'') of every pixel, binned on a 64 × 64 grid over [−3, 3]²
with the inverse-quadratic kernel k(d) = 1 / (1 + d²/σ²), σ = 0.02, each pixel weighted by its intensity
√(R² + G² + B²); the three channels' histograms are normalised together to sum to 1. Images larger than
256 px are resized to 256 × 256 first (bilinear). The distance of two histograms is the Hellinger
distance H(p, q) = ‖√p − √q‖₂ / √2, in [0, 1]; it compares an output's colours with its style image's.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

BINS = 64
MAX_SIDE = 256
SIGMA = 0.02
EPS = 1e-6
_PAIRS = ((0, 1, 2), (1, 0, 2), (2, 0, 1))  # (channel, u against, v against)


@torch.no_grad()
def rgb_uv_histogram(images: Tensor, bins: int = BINS, max_side: int = MAX_SIDE, sigma: float = SIGMA) -> Tensor:
    """(B, 3, bins, bins) histograms of RGB images (B, 3, H, W) in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"histogram: images must be (B, 3, H, W) in [0, 1]; got {tuple(images.shape)}")
    x = images.float().clamp(0, 1)
    if x.shape[-2] > max_side or x.shape[-1] > max_side:
        x = F.interpolate(x, size=(max_side, max_side), mode="bilinear", align_corners=False)
    centres = torch.linspace(-3, 3, bins, device=x.device)
    histograms = []
    for image in x.flatten(2):  # (3, P): one image at a time bounds memory to 3 × P × bins
        log_i = torch.log(image + EPS)
        weight = torch.sqrt(image.square().sum(0) + EPS)  # (P,)
        u = torch.stack([log_i[c] - log_i[a] for c, a, _ in _PAIRS])  # (3, P)
        v = torch.stack([log_i[c] - log_i[b] for c, _, b in _PAIRS])
        k_u = 1 / (1 + ((u.unsqueeze(-1) - centres) / sigma).square())  # (3, P, bins)
        k_v = 1 / (1 + ((v.unsqueeze(-1) - centres) / sigma).square())
        histograms.append((weight.view(1, -1, 1) * k_u).transpose(1, 2) @ k_v)  # (3, bins, bins)
    stacked = torch.stack(histograms)
    return stacked / (stacked.sum(dim=(1, 2, 3), keepdim=True) + EPS)


def hellinger(p: Tensor, q: Tensor) -> Tensor:
    """Per-sample Hellinger distance of two batches of histograms (each summing to 1)."""
    if p.shape != q.shape:
        raise ValueError(f"hellinger: histograms {tuple(p.shape)} and {tuple(q.shape)} differ in shape")
    return (p.sqrt() - q.sqrt()).flatten(1).norm(dim=1) / 2 ** 0.5
