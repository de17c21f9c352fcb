"""Optimal-transport style and content losses of STROTSS (Kolkin et al., CVPR 2019).

Features are compared as *sets* of vectors: hypercolumns (the channels of several layers sampled
bilinearly at the same image locations and concatenated) at N random locations. Locations are drawn
on the features' device, from its global RNG unless a ``seed`` is given, so training checkpoints (which save RNG
state) resume with the same draws.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.losses.base import DeviceGenerators, FeatureLoss, Loss, LayerSpec, reduce, register_loss
from stylecore.losses.perceptual import PAPER_STYLE_LAYERS

# STROTSS's hypercolumn layers of VGG-16 (indices [1,3,6,8,11,13,15,22,29] of torchvision's features).
STROTSS_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu4_3", "relu5_3")


def relaxed_emd(cost: Tensor) -> Tensor:
    """REMD from a cost matrix (B, N, M): max(mean_i min_j C_ij, mean_j min_i C_ij) → (B,)."""
    return torch.maximum(cost.min(dim=2).values.mean(dim=1), cost.min(dim=1).values.mean(dim=1))


def set_moments(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (B, d) and covariance (B, d, d), divided by the count, of vector sets (B, N, d)."""
    vectors = vectors.transpose(1, 2)
    return vectors.mean(dim=2), SF.feature_covariance(vectors)


def moment_distance(a: Tensor, b: Tensor, channels_first: bool = False,
                    b_moments: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(1/d)‖μ_A − μ_B‖₁ + (1/d²)‖Σ_A − Σ_B‖₁ for vector sets (B, N, d), (B, M, d) → (B,);
    with ``channels_first`` the sets are (B, d, N), (B, d, M) (flattened feature maps). ``b_moments``: B's
    (:func:`set_moments`), when a fixed target's are computed once."""
    if not channels_first:
        a, b = a.transpose(1, 2), b.transpose(1, 2)
    b_mean, b_cov = b_moments if b_moments is not None else (b.mean(dim=2), SF.feature_covariance(b))
    mean_term = (a.mean(dim=2) - b_mean).abs().mean(dim=1)
    cov_term = (SF.feature_covariance(a) - b_cov).abs().mean(dim=(1, 2))
    return mean_term + cov_term


def self_similarity_distance(x: Tensor, c: Tensor) -> Tensor:
    """(1/n) Σ_ij |D^X_ij / Σ_i D^X_ij − D^C_ij / Σ_i D^C_ij| with D the cosine-distance matrix
    among the n vectors of each set; x, c: (B, n, d) at corresponding locations → (B,).

    The reference's scale (STROTSS ``dp_loss``: the mean over the n² entries times n). Each normalised column
    sums to 1, so the mean alone shrinks as 1/n, and with it the content term's weight against the style
    terms; times n it is of order one at any number of samples, and α weighs it as the paper's runs did."""
    dx, dc = SF.cosine_distance(x, x), SF.cosine_distance(c, c)
    dx = dx / dx.sum(dim=1, keepdim=True).clamp_min(1e-12)
    dc = dc / dc.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (dx - dc).abs().mean(dim=(1, 2)) * x.shape[1]


def palette_cost(x: Tensor, y: Tensor) -> Tensor:
    """STROTSS colour cost between pixel sets (B, N, 3), (B, M, 3) in its palette space
    (:func:`stylecore.functional.rgb_to_palette_space`): cosine distance + sqrt(clamp(‖x − y‖², 1e-5, 1e5) / 3)."""
    euclidean = torch.cdist(x.float(), y.float()).square().clamp(1e-5, 1e5).div(x.shape[2]).sqrt()
    return SF.cosine_distance(x, y) + euclidean


def _image_pixels(image: Tensor, locations: Tensor) -> Tensor:
    """Pixel colours of (B, 3, H, W) RGB images at locations, in RGB: (B, N, 3)."""
    return SF.sample_hypercolumns([image], locations)


def palette_distance(x_rgb: Tensor, y_rgb: Tensor) -> Tensor:
    """STROTSS's palette term between RGB pixel sets (B, N, 3), (B, M, 3): REMD of :func:`palette_cost` in its
    palette space (:data:`stylecore.functional.RGB_TO_PALETTE`) → (B,)."""
    rotation = SF.RGB_TO_PALETTE.to(x_rgb.device).T
    return relaxed_emd(palette_cost(x_rgb.float() @ rotation, y_rgb.float() @ rotation))


def strotss_objective(x: Tensor, c: Tensor, s: Tensor, alpha: float, x_rgb: Tensor, s_rgb: Tensor,
                      s_moments: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The STROTSS objective of its reference (``remd_dp_g``): (α ℓ_C + ℓ_r + ℓ_m + ℓ_p / max(α, 1)) / (α + 2).

    ``x``, ``c``: hypercolumns (B, n, d) of the output and the content at the same n locations; ``s``: (B, m, d)
    of the style; ``x_rgb``, ``s_rgb``: the RGB pixels of the output and the style there (the palette term's);
    ``s_moments``: the style set's :func:`set_moments`, when it is fixed over many steps (its covariance is the
    costliest part of the objective)."""
    content_term = self_similarity_distance(x, c)
    remd_term = relaxed_emd(SF.cosine_distance(x, s))
    moment_term = moment_distance(x, s, b_moments=s_moments)
    palette_term = palette_distance(x_rgb, s_rgb)
    return (alpha * content_term + remd_term + moment_term + palette_term / max(alpha, 1.0)) / (alpha + 2.0)


class HypercolumnLoss(FeatureLoss):
    """Base for losses on hypercolumns sampled at random locations."""

    default_layers = PAPER_STYLE_LAYERS

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, n_samples: int = 1024,
                 n_target_samples: int | None = None, seed: int | None = None) -> None:
        super().__init__(layers, weight)
        for argument, value in (("n_samples", n_samples), ("n_target_samples", n_target_samples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{self.name}: {argument} must be a positive integer; got {value!r}")
        self.n_samples = n_samples
        self.n_target_samples = n_target_samples or n_samples
        self.generators = DeviceGenerators(seed)

    def locations(self, batch: int, count: int, device: torch.device) -> Tensor:
        return SF.random_locations(batch, count, self.generators.on(device), device)

    def hypercolumns(self, features: Mapping[str, Tensor], locations: Tensor) -> Tensor:
        maps = [features[layer] for layer in self.layer_weights]
        return SF.sample_hypercolumns(maps, locations, list(self.layer_weights.values()))

    def checked(self, input: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> tuple[int, torch.device]:
        self.check_features(input, "input features")
        self.check_features(target, "target features")
        for layer in self.layer_weights:
            self.check_pair(input[layer], target[layer], layer)
        first = input[self.layers[0]]
        return first.shape[0], first.device


@register_loss("moments")
class MomentMatchingLoss(FeatureLoss):
    """Moment matching (STROTSS ℓ_m): Σ_l w_l [(1/d)‖μ_A − μ_B‖₁ + (1/d²)‖Σ_A − Σ_B‖₁].

    A and B are the d-dim feature vectors at every position of layer l of the input and target;
    covariances divided by the number of positions. Default layers: relu1_2, relu2_2, relu3_3, relu4_3.
    """

    default_layers = PAPER_STYLE_LAYERS

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        return moment_distance(x.flatten(2), y.flatten(2), channels_first=True)


@register_loss("remd")
class RelaxedEMDLoss(HypercolumnLoss):
    """Relaxed earth mover's distance (STROTSS ℓ_r): max(mean_i min_j C_ij, mean_j min_i C_ij).

    C_ij = 1 − A_i·B_j / (‖A_i‖‖B_j‖) between hypercolumns of the input (n_samples locations) and the
    target (n_target_samples locations). Layer weights scale each layer's block of the hypercolumn.
    """

    def forward(self, input: Mapping[str, Tensor], target: Mapping[str, Tensor],
                reduction: str = "mean") -> Tensor:
        batch, device = self.checked(input, target)
        a = self.hypercolumns(input, self.locations(batch, self.n_samples, device))
        b = self.hypercolumns(target, self.locations(batch, self.n_target_samples, device))
        return reduce(relaxed_emd(SF.cosine_distance(a, b)), reduction)  # type: ignore[arg-type]


@register_loss("self_similarity")
class SelfSimilarityLoss(HypercolumnLoss):
    """STROTSS content loss: (1/n) Σ_ij |D^X_ij / Σ_i D^X_ij − D^C_ij / Σ_i D^C_ij|.

    D^X, D^C are cosine-distance matrices among hypercolumns of the output X and the content C at the
    same n locations, so X may change appearance while keeping C's self-similarity structure. The 1/n (not
    1/n²) is the reference's scale (:func:`self_similarity_distance`).
    """

    slots = {"input": ("features", "pred"), "target": ("features", "content")}
    same_size = True

    def forward(self, input: Mapping[str, Tensor], target: Mapping[str, Tensor],
                reduction: str = "mean") -> Tensor:
        batch, device = self.checked(input, target)
        locations = self.locations(batch, self.n_samples, device)
        values = self_similarity_distance(self.hypercolumns(input, locations), self.hypercolumns(target, locations))
        return reduce(values, reduction)  # type: ignore[arg-type]


@register_loss("palette")
class PaletteLoss(Loss):
    """STROTSS colour-palette term: ℓ_p = REMD(Y(P), Y(S)) between pixel colours of output and style.

    Colours are mapped to the reference's palette space (an orthonormal rotation of RGB whose first axis is
    grey, :data:`stylecore.functional.RGB_TO_PALETTE`; so the Euclidean part equals RGB's) and compared with
    its cost: cosine distance + sqrt(clamp(‖x − y‖², 1e-5, 1e5) / 3), at n_samples random pixels of each image.
    """

    slots = {"input": ("image", "pred"), "target": ("image", "style")}

    def __init__(self, weight: float = 1.0, n_samples: int = 1024, seed: int | None = None) -> None:
        super().__init__(weight)
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"palette: n_samples must be a positive integer; got {n_samples!r}")
        self.n_samples = n_samples
        self.generators = DeviceGenerators(seed)

    def forward(self, input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        for argument, image in (("input", input), ("target", target)):
            if image.dim() != 4 or image.shape[1] != 3:
                raise ValueError(f"palette: {argument} must be an RGB batch (B, 3, H, W); got {tuple(image.shape)}")
        if input.shape[0] != target.shape[0]:
            raise ValueError(f"palette: batch sizes differ ({input.shape[0]} vs {target.shape[0]})")
        batch = input.shape[0]
        generator = self.generators.on(input.device)
        x = _image_pixels(input, SF.random_locations(batch, self.n_samples, generator, input.device))
        y = _image_pixels(target, SF.random_locations(batch, self.n_samples, generator, input.device))
        return reduce(palette_distance(x, y), reduction)  # type: ignore[arg-type]


@register_loss("strotss")
class StrotssLoss(HypercolumnLoss):
    """The STROTSS objective as its reference computes it (Kolkin et al. 2019, nkolkin13/STROTSS):
    (α ℓ_C + ℓ_r + ℓ_m + ℓ_p / max(α, 1)) / (α + 2).

    ℓ_C self-similarity to the content (at the reference's scale, :func:`self_similarity_distance`), ℓ_m moment
    matching and ℓ_r REMD to the style on hypercolumns (STROTSS's VGG-16 layers plus the raw RGB pixels), ℓ_p the
    palette term. ``alpha`` is the content weight: the reference's CLI value × 16, halved each scale of its
    pyramid. The paper writes the same terms as (α ℓ_C + ℓ_m + ℓ_r + ℓ_p / α) / (2 + α + 1/α); this is the
    code's normalisation (its `remd_dp_g` objective), whose terms keep the balance the published results had.
    """

    slots = {
        "input": ("features", "pred"),
        "content": ("features", "content"),
        "style": ("features", "style"),
        "input_image": ("image", "pred"),
        "content_image": ("image", "content"),
        "style_image": ("image", "style"),
    }
    default_layers = STROTSS_LAYERS

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0, alpha: float = 16.0, n_samples: int = 1024,
                 n_target_samples: int | None = None, include_rgb: bool = True, seed: int | None = None) -> None:
        super().__init__(layers, weight, n_samples, n_target_samples, seed)
        if not alpha > 0:
            raise ValueError(f"strotss: alpha (the content weight) must be > 0; got {alpha!r}")
        self.alpha = float(alpha)
        self.include_rgb = bool(include_rgb)

    def columns(self, features: Mapping[str, Tensor], image: Tensor, locations: Tensor) -> Tensor:
        columns = self.hypercolumns(features, locations)
        if self.include_rgb:
            columns = torch.cat([SF.sample_hypercolumns([image], locations), columns], dim=2)
        return columns

    def forward(self, input: Mapping[str, Tensor], content: Mapping[str, Tensor], style: Mapping[str, Tensor],
                input_image: Tensor, content_image: Tensor, style_image: Tensor, reduction: str = "mean") -> Tensor:
        batch, device = self.checked(input, style)
        self.check_features(content, "content features")
        for layer in self.layer_weights:
            if input[layer].shape != content[layer].shape:
                raise ValueError(f"strotss: output and content differ in shape at {layer} "
                                 f"({tuple(input[layer].shape)} vs {tuple(content[layer].shape)})")
        shared = self.locations(batch, self.n_samples, device)
        style_locations = self.locations(batch, self.n_target_samples, device)
        x = self.columns(input, input_image, shared)
        c = self.columns(content, content_image, shared)
        s = self.columns(style, style_image, style_locations)
        total = strotss_objective(x, c, s, self.alpha, _image_pixels(input_image, shared),
                                  _image_pixels(style_image, style_locations))
        return reduce(total, reduction)  # type: ignore[arg-type]
