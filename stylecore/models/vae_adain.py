"""Variational AdaIN (Schopohl & Fuchsgruber, "Variational Style Transfer", TUM 2019)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder, layer_channels
from stylecore.models.adain import ADAIN_STYLE_LAYERS, alpha_blend
from stylecore.models.base import StyleTransferModel, TrainingOutputs, register_model, replace_style_term
from stylecore.models.blocks import MirroredDecoder, build_encoder


class StyleEncoder(nn.Module):
    """Style statistics → (μ, log σ²) of the style code.

    Reads the per-channel mean and log-std of the frozen VGG at relu1_1..relu4_1 (what AdaIN-family
    styles are made of, 2 × 960 numbers), so the style path shares the content encoder's single pass.
    """

    def __init__(self, code_dim: int, hidden: int) -> None:
        super().__init__()
        stats = 2 * sum(layer_channels(layer) for layer in ADAIN_STYLE_LAYERS)
        self.net = nn.Sequential(nn.LayerNorm(stats), nn.Linear(stats, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * code_dim))

    def forward(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        parts = []
        for layer in ADAIN_STYLE_LAYERS:
            mean, std = SF.mean_std(features[layer])
            parts += [mean.flatten(1), std.log().flatten(1)]
        out = self.net(torch.cat(parts, dim=1))
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class CodeToStatistics(nn.Module):
    """Style code → the per-channel (μ, σ) AdaIN imposes at relu4_1 (σ through softplus, so positive)."""

    def __init__(self, code_dim: int, hidden: int, channels: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels))

    def forward(self, code: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw_std = self.net(code).float().chunk(2, dim=1)
        std = F.softplus(raw_std) + 1e-5
        return mean[:, :, None, None], std[:, :, None, None]


@register_model("vae_adain")
class VariationalAdaIN(StyleTransferModel):
    """Variational AdaIN: content encoder (frozen VGG-19 to relu4_1), a VAE style encoder q(z | s) = N(μ, σ²),
    z = μ + σ·ε mapped to the AdaIN statistics at relu4_1, the mirrored decoder.

    The smooth style space lets a user sample new styles from N(0, I) (:meth:`sample_codes`) and
    interpolate between codes (:meth:`interpolate_codes`); inference uses z = μ, so it is deterministic.
    Native objective: mean-variance-normalised content MSE at relu4_1 (weight 1; it scores structure
    only, so the content target does not move with the learned statistics as AdaIN's t would), Gram / CHW style on
    relu1_1..relu4_1 (weight 10; the slides give no weights), ``kl`` (weight 0.01, linear warm-up over
    1000 steps), ``disentanglement`` (weight 1) between two contents stylized with the same code.
    """

    # AdaIN's target lives in its own VGG's relu4_1 space; scored on another encoder, the content image stands in
    own_space_roles = {"adain_target": "content"}

    layer = "relu4_1"

    def __init__(self, code_dim: int = 64, hidden: int = 512, encoder_weights: str = "imagenet",
                 encoder_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(code_dim=code_dim, hidden=hidden, encoder_weights=encoder_weights,
                         encoder_options=encoder_options)
        if int(code_dim) < 1 or int(hidden) < 1:
            raise ValueError(f"vae_adain: code_dim and hidden must be positive integers; got {code_dim!r}, {hidden!r}")
        self.code_dim = int(code_dim)
        self.encoder = build_encoder("vgg19", self.layer, encoder_weights, encoder_options)
        self.style_encoder = StyleEncoder(self.code_dim, int(hidden))
        self.code_to_stats = CodeToStatistics(self.code_dim, int(hidden), layer_channels(self.layer))
        self.decoder = MirroredDecoder(self.layer)

    # -- the style space -------------------------------------------------------------------------

    def style_distribution(self, style: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z | style), each (B, code_dim)."""
        return self.style_encoder(self.encoder(style, ADAIN_STYLE_LAYERS))

    def sample_codes(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` new style codes from the prior N(0, I)."""
        return torch.randn(count, self.code_dim, generator=generator, device="cpu").to(self.device)

    @staticmethod
    def interpolate_codes(start: Tensor, end: Tensor, t: float) -> Tensor:
        """(1 − t)·start + t·end."""
        return (1.0 - t) * start + t * end

    # -- inference -------------------------------------------------------------------------------

    def content_code(self, content: Tensor) -> Tensor:
        return self.encoder(content, [self.layer])[self.layer]

    def style_code(self, style: Tensor) -> Tensor:
        mu, _ = self.style_distribution(style)
        return mu

    def transfer(self, content_code: Tensor, style_code: Tensor) -> Tensor:
        mean, std = self.code_to_stats(style_code)
        return SF.adain_from_stats(content_code, mean, std)

    def decode(self, representation: Tensor, content_code: Tensor, alpha: float = 1.0) -> Tensor:
        return self.decoder(alpha_blend(representation, content_code, alpha))

    # -- training --------------------------------------------------------------------------------

    def trainable_modules(self, phase: str = "main") -> list[nn.Module]:
        return [self.style_encoder, self.code_to_stats, self.decoder]

    def loss_encoder(self) -> VGGEncoder:
        return self.encoder

    def default_objective(self, phase: str = "main", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        objective = {
            "content": {"loss": "content", "weight": 1.0, "layers": [self.layer], "normalize": "instance"},
            "style": {"loss": "gram", "weight": 10.0, "layers": list(ADAIN_STYLE_LAYERS), "gram_normalize": "chw"},
            "kl": {"loss": "kl", "weight": 0.01, "warmup_steps": 1000},
            "disentanglement": {"loss": "disentanglement", "weight": 1.0, "layers": list(ADAIN_STYLE_LAYERS)},
        }
        return replace_style_term(objective, style_loss, style_params)

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "main") -> TrainingOutputs:
        with torch.no_grad():
            style_features = self.encoder(style, set(layers.get("style", ())) | set(ADAIN_STYLE_LAYERS))
            content_features = self.encoder(content, set(layers.get("content", ())) | {self.layer})
        mu, logvar = self.style_encoder(style_features)
        code = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        mean, std = self.code_to_stats(code)
        base = content_features[self.layer]
        targets = [SF.adain_from_stats(base, mean, std)]
        if "pred2" in layers:
            # The same code on other contents (the batch rolled by one): the disentanglement pair.
            targets.append(SF.adain_from_stats(base.roll(1, dims=0), mean, std))
        decoded = self.decoder(torch.cat(targets)).chunk(len(targets))
        images = {"pred": decoded[0], "content": content, "style": style}
        if "pred2" in layers:
            images["pred2"] = decoded[1]
        return TrainingOutputs(
            images=images,
            # The AdaIN target is offered detached, for a content term re-routed to it: the style
            # encoder must not shape the target it is scored against.
            features={"style": style_features, "content": content_features,
                      "adain_target": {self.layer: targets[0].detach()}},
            values={"style_mu": mu, "style_logvar": logvar},
        )
