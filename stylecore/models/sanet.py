"""SANet: style-attentional networks (Park & Lee, CVPR 2019)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder
from stylecore.models.adain import alpha_blend
from stylecore.models.base import StyleTransferModel, TrainingOutputs, register_model, replace_style_term
from stylecore.models.blocks import ConvLayer, MirroredDecoder, build_encoder

SANET_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


class StyleAttention(nn.Module):
    """O = F_c + W_o · (H(F_s) · softmax(f(mvn(F_c))ᵀ g(mvn(F_s)))ᵀ), f, g, H, W_o 1×1 convs (eq. 1–2).

    The attention runs through ``scaled_dot_product_attention`` with scale 1 (the paper does not scale),
    which uses fused kernels and never materialises the (HW_c × HW_s) matrix where a backend avoids it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = content.shape
        q = self.query(SF.instance_normalize(content)).flatten(2).transpose(1, 2).unsqueeze(1)
        k = self.key(SF.instance_normalize(style)).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(style).flatten(2).transpose(1, 2).unsqueeze(1)
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(1)
        attended = attended.transpose(1, 2).reshape(b, c, h, w)
        return content + self.out(attended)


class SANetTransform(nn.Module):
    """merge_conv(SA_4(c4, s4) + upsample(SA_5(c5, s5))): attention at relu4_1 and relu5_1."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.attention4 = StyleAttention(channels)
        self.attention5 = StyleAttention(channels)
        self.merge = ConvLayer(channels, channels, relu=False)

    def forward(self, content: Mapping[str, Tensor], style: Mapping[str, Tensor]) -> Tensor:
        deep = self.attention5(content["relu5_1"], style["relu5_1"])
        shallow = self.attention4(content["relu4_1"], style["relu4_1"])
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode="nearest")
        return self.merge(shallow + deep)


@register_model("sanet")
class SANet(StyleTransferModel):
    """SANet (Park & Lee 2019): style-attention at VGG-19 relu4_1 and relu5_1, merge conv, mirrored decoder.

    Native objective: mean-variance-normalised content MSE at relu4_1 + relu5_1 (weight 1), ``mean_std``
    style over relu1_1..relu5_1 (weight 3), and the identity losses on I_cc = D(T(c, c)),
    I_ss = D(T(s, s)): λ_id1 · (MSE(I_cc, c) + MSE(I_ss, s)) and λ_id2 · Σ_l MSE(φ_l(I_cc), φ_l(c)) +
    MSE(φ_l(I_ss), φ_l(s)). λ_id1 = 50, λ_id2 = 1 follow the public re-implementation; the paper's text
    swaps them (dypark86/SANET#1), hence parameters. Content is padded to a multiple of 16 and cropped back.
    """

    blend = "features"  # attention is not linear in the style features

    def __init__(self, identity_pixel_weight: float = 50.0, identity_feature_weight: float = 1.0,
                 encoder_weights: str = "imagenet", encoder_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(identity_pixel_weight=identity_pixel_weight,
                         identity_feature_weight=identity_feature_weight,
                         encoder_weights=encoder_weights, encoder_options=encoder_options)
        for key, value in (("identity_pixel_weight", identity_pixel_weight),
                           ("identity_feature_weight", identity_feature_weight)):
            if not float(value) >= 0:
                raise ValueError(f"sanet: {key} must be ≥ 0; got {value!r}")
        self.identity_pixel_weight = float(identity_pixel_weight)
        self.identity_feature_weight = float(identity_feature_weight)
        self.encoder = build_encoder("vgg19", "relu5_1", encoder_weights, encoder_options)
        self.transform = SANetTransform(512)
        self.decoder = MirroredDecoder("relu4_1")

    @property
    def size_multiple(self) -> int:
        return 16

    @property
    def min_side(self) -> int:
        return 32  # relu5_1 must keep ≥ 2×2 positions for its variance

    def content_code(self, content: Tensor) -> dict[str, Tensor]:
        return self.encoder(content, ["relu4_1", "relu5_1"])

    def style_code(self, style: Tensor) -> dict[str, Tensor]:
        return self.encoder(style, ["relu4_1", "relu5_1"])

    def transfer(self, content_code: Mapping[str, Tensor], style_code: Mapping[str, Tensor]) -> Tensor:
        return self.transform(content_code, style_code)

    def decode(self, representation: Tensor, content_code: Mapping[str, Tensor], alpha: float = 1.0) -> Tensor:
        return self.decoder(alpha_blend(representation, content_code["relu4_1"], alpha))

    def trainable_modules(self, phase: str = "main") -> list[nn.Module]:
        return [self.transform, self.decoder]

    def loss_encoder(self) -> VGGEncoder:
        return self.encoder

    @property
    def uses_identity(self) -> bool:
        return self.identity_pixel_weight > 0 or self.identity_feature_weight > 0

    def default_objective(self, phase: str = "main", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        objective: dict[str, Any] = {
            "content": {"loss": "content", "weight": 1.0, "layers": ["relu4_1", "relu5_1"], "normalize": "instance"},
            "style": {"loss": "mean_std", "weight": 3.0, "layers": list(SANET_STYLE_LAYERS)},
        }
        if self.uses_identity:
            pixel, feature = self.identity_pixel_weight, self.identity_feature_weight
            objective.update({
                "identity_content": {"loss": "identity", "distance": "mse", "weight": pixel,
                                     "input": "identity_content", "target": "content"},
                "identity_style": {"loss": "identity", "distance": "mse", "weight": pixel,
                                   "input": "identity_style", "target": "style"},
                "identity_content_features": {"loss": "content", "weight": feature, "layers": list(SANET_STYLE_LAYERS),
                                              "input": "identity_content", "target": "content"},
                "identity_style_features": {"loss": "content", "weight": feature, "layers": list(SANET_STYLE_LAYERS),
                                            "input": "identity_style", "target": "style"},
            })
        return replace_style_term(objective, style_loss, style_params)

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "main") -> TrainingOutputs:
        core = {"relu4_1", "relu5_1"}
        with torch.no_grad():
            content_features = self.encoder(content, set(layers.get("content", ())) | core)
            style_features = self.encoder(style, set(layers.get("style", ())) | core)
        identity = "identity_content" in layers or "identity_style" in layers
        if identity and content.shape[-2:] != style.shape[-2:]:
            raise ValueError(f"sanet: the identity losses need content and style crops of one size; got "
                             f"{tuple(content.shape[-2:])} and {tuple(style.shape[-2:])}")
        transformed = [self.transform(content_features, style_features)]
        if identity:
            transformed += [self.transform(content_features, content_features),
                            self.transform(style_features, style_features)]
        # One decoder pass over the stylized and both identity batches.
        decoded = self.decoder(torch.cat(transformed)).chunk(len(transformed))
        images = {"pred": decoded[0], "content": content, "style": style}
        if identity:
            images.update(identity_content=decoded[1], identity_style=decoded[2])
        return TrainingOutputs(images=images, features={"style": style_features, "content": content_features})
