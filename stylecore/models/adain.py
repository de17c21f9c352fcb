"""AdaIN (Huang & Belongie, ICCV 2017)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder
from stylecore.losses.perceptual import ADAIN_STYLE_LAYERS
from stylecore.models.base import StyleTransferModel, TrainingOutputs, register_model, replace_style_term
from stylecore.models.blocks import MirroredDecoder, build_encoder

def alpha_blend(transferred: Tensor, content_features: Tensor, alpha: float) -> Tensor:
    """α·t + (1 − α)·f(c): the content/style trade-off of the AdaIN family at inference."""
    if alpha >= 1.0:
        return transferred
    return alpha * transferred + (1.0 - alpha) * content_features.to(transferred.dtype)


@register_model("adain")
class AdaIN(StyleTransferModel):
    """AdaIN (Huang & Belongie 2017): D(α·AdaIN(f(c), f(s)) + (1−α)·f(c)), f = VGG-19 to relu4_1.

    AdaIN(x, y) = σ(y)·(x − μ(x))/σ(x) + μ(y) per channel, σ from the unbiased variance + eps 1e-5
    (the reference). The decoder mirrors the encoder (nearest upsampling, reflection padding) and is
    the only trained part. Native objective: content MSE between f(D(t)) and t at relu4_1; style
    ``mean_std`` over relu1_1..relu4_1, weight 10.
    """

    # AdaIN's target lives in its own VGG's relu4_1 space; scored on another encoder, the content image stands in
    own_space_roles = {"adain_target": "content"}

    layer = "relu4_1"

    def __init__(self, encoder_weights: str = "imagenet", encoder_options: Mapping[str, Any] | None = None,
                 eps: float = 1e-5, unbiased: bool = True) -> None:
        super().__init__(encoder_weights=encoder_weights, encoder_options=encoder_options, eps=eps, unbiased=unbiased)
        self.encoder = build_encoder("vgg19", self.layer, encoder_weights, encoder_options)
        self.decoder = MirroredDecoder(self.layer)
        self.eps, self.unbiased = float(eps), bool(unbiased)

    def content_code(self, content: Tensor) -> Tensor:
        return self.encoder(content, [self.layer])[self.layer]

    def style_code(self, style: Tensor) -> tuple[Tensor, Tensor]:
        return self.style_code_from(self.encoder(style, [self.layer]))

    def transfer(self, content_code: Tensor, style_code: tuple[Tensor, Tensor]) -> Tensor:
        mean, std = style_code
        return SF.adain_from_stats(content_code, mean, std, self.eps, self.unbiased)

    def decode(self, representation: Tensor, content_code: Tensor, alpha: float = 1.0) -> Tensor:
        return self.decoder(alpha_blend(representation, content_code, alpha))

    def trainable_modules(self, phase: str = "main") -> list:
        return [self.decoder]

    def loss_encoder(self) -> VGGEncoder:
        return self.encoder

    def default_objective(self, phase: str = "main", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        objective = {
            "content": {"loss": "content", "weight": 1.0, "layers": [self.layer], "target": "adain_target"},
            "style": {"loss": "mean_std", "weight": 10.0, "layers": list(ADAIN_STYLE_LAYERS),
                      "eps": self.eps, "unbiased": self.unbiased},
        }
        return replace_style_term(objective, style_loss, style_params)

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "main") -> TrainingOutputs:
        with torch.no_grad():
            style_features = self.encoder(style, set(layers.get("style", ())) | {self.layer})
            content_features = self.encoder(content, set(layers.get("content", ())) | {self.layer})
            target = self.transfer(content_features[self.layer], self.style_code_from(style_features))
        pred = self.decoder(target)
        return TrainingOutputs(
            images={"pred": pred, "content": content, "style": style},
            features={"style": style_features, "content": content_features, "adain_target": {self.layer: target}},
        )

    def style_code_from(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return SF.mean_std(features[self.layer], self.eps, self.unbiased)
