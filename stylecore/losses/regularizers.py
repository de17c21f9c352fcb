"""Regularizers: total variation, KL to N(0, I), and the disentanglement hinge."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.losses.base import LayerSpec, Loss, parse_layer_weights, per_sample_mean, reduce, register_loss
from stylecore.losses.perceptual import ADAIN_STYLE_LAYERS


@register_loss("tv")
class TotalVariationLoss(Loss):
    """Total variation: Σ|Δ_y x| + Σ|Δ_x x| over H·W (``l1``), or Magenta's squared form (``l2``).

    ``mode="l1"`` (anisotropic, the loss survey): (Σ|x_{i+1,j} − x_{i,j}| + Σ|x_{i,j+1} − x_{i,j}|) / (H·W),
    summed over channels. ``mode="l2"`` (Magenta): ½Σ(Δ_y)² / ((H−1)·W·C) + ½Σ(Δ_x)² / (H·(W−1)·C).
    """

    slots = {"input": ("image", "pred")}

    def __init__(self, weight: float = 1.0, mode: str = "l1") -> None:
        super().__init__(weight)
        if mode not in ("l1", "l2"):
            raise ValueError(f"tv: mode={mode!r} is not one of 'l1', 'l2'")
        self.mode = mode

    def forward(self, input: Tensor, reduction: str = "mean") -> Tensor:
        if input.dim() != 4 or input.shape[2] < 2 or input.shape[3] < 2:
            raise ValueError(f"tv: input must be (B, C, H, W) with H, W ≥ 2; got {tuple(input.shape)}")
        x = input.float()
        _, c, h, w = x.shape
        dy = x[:, :, 1:, :] - x[:, :, :-1, :]
        dx = x[:, :, :, 1:] - x[:, :, :, :-1]
        if self.mode == "l1":
            values = (dy.abs().flatten(1).sum(1) + dx.abs().flatten(1).sum(1)) / (h * w)
        else:
            values = 0.5 * dy.square().flatten(1).sum(1) / ((h - 1) * w * c) + \
                0.5 * dx.square().flatten(1).sum(1) / (h * (w - 1) * c)
        return reduce(values, reduction)  # type: ignore[arg-type]


@register_loss("kl")
class KLDivergenceLoss(Loss):
    """KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²), per sample (Kingma & Welling 2013).

    Takes the style code's mean and log-variance, (B, d) or (B, d, …); summed over the code's
    dimensions (``"sum"``, the ELBO's form) or averaged (``"mean"``).
    """

    slots = {"mu": ("value", "style_mu"), "logvar": ("value", "style_logvar")}

    def __init__(self, weight: float = 1.0, dims: str = "sum") -> None:
        super().__init__(weight)
        if dims not in ("sum", "mean"):
            raise ValueError(f"kl: dims={dims!r} is not one of 'sum', 'mean'")
        self.dims = dims

    def forward(self, mu: Tensor, logvar: Tensor, reduction: str = "mean") -> Tensor:
        if mu.shape != logvar.shape or mu.dim() < 2:
            raise ValueError(f"kl: mu and logvar must have the same (B, d, …) shape; got {tuple(mu.shape)} "
                             f"and {tuple(logvar.shape)}")
        mu, logvar = mu.float(), logvar.float()
        terms = -0.5 * (1.0 + logvar - mu.square() - logvar.exp())
        values = terms.flatten(1).sum(1) if self.dims == "sum" else terms.flatten(1).mean(1)
        return reduce(values, reduction)  # type: ignore[arg-type]


@register_loss("disentanglement")
class DisentanglementLoss(Loss):
    """Disentanglement hinge (Variational Style Transfer; Kotovenko et al. 2019):
    max(0, ‖y₁ − y₂‖² − ‖y₁ − s‖² + margin) in style-feature space.

    y₁, y₂ are two outputs with the same style code and different contents, s the style image; their
    style representation is the per-layer channel mean and std (``representation="mean_std"``) or
    the Gram matrix (``"gram"``), and ‖·‖² the layer-weighted mean squared difference.
    """

    slots = {"input": ("features", "pred"), "other": ("features", "pred2"), "style": ("features", "style")}

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, representation: str = "mean_std",
                 margin: float = 0.0) -> None:
        super().__init__(weight)
        self.layer_weights = parse_layer_weights(layers, ADAIN_STYLE_LAYERS, "disentanglement")
        if representation not in ("mean_std", "gram"):
            raise ValueError(f"disentanglement: representation={representation!r} is not one of 'mean_std', 'gram'")
        self.representation = representation
        self.margin = float(margin)

    def slot_layers(self, slot: str) -> list[str]:
        return list(self.layer_weights)

    def _style(self, features: Tensor) -> Tensor:
        if self.representation == "gram":
            return SF.gram(features, "hw").flatten(1)
        mean, std = SF.mean_std(features)
        return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)

    def _distance(self, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
        total: Tensor | float = 0.0
        for layer, layer_weight in self.layer_weights.items():
            if layer not in a or layer not in b:
                raise ValueError(f"disentanglement: features lack layer {layer}")
            total = total + layer_weight * per_sample_mean((self._style(a[layer]) - self._style(b[layer])).square())
        return total  # type: ignore[return-value]

    def forward(self, input: Mapping[str, Tensor], other: Mapping[str, Tensor], style: Mapping[str, Tensor],
                reduction: str = "mean") -> Tensor:
        values = (self._distance(input, other) - self._distance(input, style) + self.margin).clamp_min(0.0)
        return reduce(values, reduction)  # type: ignore[arg-type]
