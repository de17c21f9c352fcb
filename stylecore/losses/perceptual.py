"""Perceptual losses on encoder features: content, classic Gram, balanced Gram, mean/std."""

from __future__ import annotations

import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.losses.base import FeatureLoss, LayerSpec, per_sample_mean, per_sample_sum, register_loss

# The style layers of the Style-Aware Normalized Loss paper (and Magenta's conv1..conv4 endpoints).
PAPER_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
PAPER_CONTENT_LAYERS = ("relu3_3",)
ADAIN_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


@register_loss("content")
class ContentLoss(FeatureLoss):
    """Content loss: Σ_l w_l · MSE(F_l(P), F_l(C)) (Gatys et al. 2016, eq. 2 of Cheng et al. 2021).

    ``normalize="instance"`` compares mean-variance-normalised features instead (SANet's content
    loss, Park & Lee 2019). Default layer: relu3_3 (Cheng et al.).
    """

    slots = {"input": ("features", "pred"), "target": ("features", "content")}
    default_layers = PAPER_CONTENT_LAYERS
    same_size = True

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, normalize: str = "none") -> None:
        super().__init__(layers, weight)
        if normalize not in ("none", "instance"):
            raise ValueError(f"content: normalize={normalize!r} is not one of 'none', 'instance'")
        self.normalize = normalize

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        if self.normalize == "instance":
            x, y = SF.instance_normalize(x), SF.instance_normalize(y)
        return per_sample_mean((x.float() - y.float()).square())


@register_loss("gram")
class GramLoss(FeatureLoss):
    """Classic Gram style loss: Σ_l w_l · MSE(G(F_l(P)), G(F_l(S))) (Gatys et al. 2016).

    ``gram_normalize`` sets the Gram constant: ``hw`` (default; pystiche, Magenta), ``chw``
    (LinearTransfer, Johnson) or ``none``. Default layers: VGG-16 relu1_2, relu2_2, relu3_3, relu4_3.
    LinearTransfer's variant (Li et al. 2019) is ``include_mean=True, entry_reduction="sum"``: the
    squared differences of the channel means are added, and summed over entries instead of averaged.
    """

    default_layers = PAPER_STYLE_LAYERS

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, gram_normalize: str = "hw",
                 include_mean: bool = False, entry_reduction: str = "mean") -> None:
        super().__init__(layers, weight)
        if gram_normalize not in ("none", "hw", "chw"):
            raise ValueError(f"{self.name}: gram_normalize={gram_normalize!r} is not one of 'none', 'hw', 'chw'")
        if entry_reduction not in ("mean", "sum"):
            raise ValueError(f"{self.name}: entry_reduction={entry_reduction!r} is not one of 'mean', 'sum'")
        self.gram_normalize = gram_normalize
        self.include_mean = bool(include_mean)
        self.entry_reduction = entry_reduction

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        gx, gy = SF.gram(x, self.gram_normalize), SF.gram(y, self.gram_normalize)
        reduce_entries = per_sample_mean if self.entry_reduction == "mean" else per_sample_sum
        values = reduce_entries((gx - gy).square())
        if self.include_mean:
            mean_x = x.float().mean(dim=(2, 3))
            mean_y = y.float().mean(dim=(2, 3))
            values = values + reduce_entries((mean_x - mean_y).square())
        return values


@register_loss("balanced_gram")
class BalancedGramLoss(GramLoss):
    """Style-aware normalized ("balanced") Gram loss (Cheng et al., CVPR 2021, eq. 13).

    Per sample k and layer l: ‖G_l(S_k) − G_l(P_k)‖² / (‖G_l(S_k)‖² + ‖G_l(P_k)‖² + eps), the
    denominator (the supremum of the classic loss, eq. 11) detached; averaged over the batch,
    weighted-summed over layers. Each layer's value lies in [0, 1] for post-ReLU features and is
    invariant to the Gram constant and to scaling the features, so styles of very different
    magnitude contribute equally.

    ``eps`` defaults to 0 because any absolute constant breaks that scale invariance for small
    features; the one case it would guard, both Grams zero, gives 0 / 0 and is defined as 0.
    """

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, gram_normalize: str = "hw",
                 eps: float = 0.0) -> None:
        super().__init__(layers, weight, gram_normalize=gram_normalize)
        if not eps >= 0:
            raise ValueError(f"balanced_gram: eps must be ≥ 0; got {eps!r}")
        self.eps = float(eps)

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        gx, gy = SF.gram(x, self.gram_normalize), SF.gram(y, self.gram_normalize)
        numerator = (gy - gx).square().sum(dim=(1, 2))
        # The paper does not backpropagate through the denominator ("more stable training").
        with torch.no_grad():
            denominator = gy.square().sum(dim=(1, 2)) + gx.square().sum(dim=(1, 2)) + self.eps
            # Zero only if both Grams are zero, when the numerator is zero too: define 0 / 0 = 0.
            denominator = denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
        return numerator / denominator


@register_loss("mean_std")
class MeanStdLoss(FeatureLoss):
    """AdaIN style loss: Σ_l w_l · [MSE(μ_l(P), μ_l(S)) + MSE(σ_l(P), σ_l(S))] (Huang & Belongie 2017).

    σ = sqrt(var + eps) with unbiased variance and eps = 1e-5 by default, as the AdaIN reference.
    Default layers: relu1_1, relu2_1, relu3_1, relu4_1.
    """

    default_layers = ADAIN_STYLE_LAYERS

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, eps: float = 1e-5, unbiased: bool = True,
                 eps_placement: str = "inside") -> None:
        super().__init__(layers, weight)
        if eps_placement not in ("inside", "outside"):
            raise ValueError(f"mean_std: eps_placement={eps_placement!r} is not one of 'inside', 'outside'")
        self.eps, self.unbiased, self.eps_placement = float(eps), bool(unbiased), eps_placement

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        mx, sx = SF.mean_std(x, self.eps, self.unbiased, self.eps_placement)  # type: ignore[arg-type]
        my, sy = SF.mean_std(y, self.eps, self.unbiased, self.eps_placement)  # type: ignore[arg-type]
        return per_sample_mean((mx - my).square()) + per_sample_mean((sx - sy).square())
