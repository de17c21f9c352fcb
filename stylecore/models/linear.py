"""LinearTransfer (Li, Liu, Li, Yang; CVPR 2019): a learned linear transformation of VGG features."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder, layer_channels, layer_names
from stylecore.models.adain import alpha_blend
from stylecore.models.base import (StyleTransferModel, TrainingOutputs, TrainingPhase, register_model,
                                   replace_style_term)
from stylecore.models.blocks import MirroredDecoder, build_encoder

_LAYERS = ("relu3_1", "relu4_1")


class MatrixPredictor(nn.Module):
    """Centred features → a (k × k) matrix: 3 convs down to k channels, Gram / HW, a fully connected layer."""

    def __init__(self, channels: int, matrix_size: int) -> None:
        super().__init__()
        widths = [channels, channels // 2, channels // 4, matrix_size]
        convs: list[nn.Module] = []
        for index, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            convs.append(nn.Conv2d(cin, cout, 3, padding=1))
            if index < 2:
                convs.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*convs)
        self.fc = nn.Linear(matrix_size * matrix_size, matrix_size * matrix_size)
        self.matrix_size = matrix_size

    def forward(self, centred: Tensor) -> Tensor:
        gram = SF.gram(self.convs(centred), "hw")
        return self.fc(gram.flatten(1).to(self.fc.weight.dtype)).view(-1, self.matrix_size, self.matrix_size)


class LinearTransform(nn.Module):
    """T = S·C applied to the compressed centred content: unzip(T · compress(f_c − μ_c)) + μ_s."""

    def __init__(self, channels: int, matrix_size: int = 32) -> None:
        super().__init__()
        self.content_net = MatrixPredictor(channels, matrix_size)
        self.style_net = MatrixPredictor(channels, matrix_size)
        self.compress = nn.Conv2d(channels, matrix_size, 1)
        self.unzip = nn.Conv2d(matrix_size, channels, 1)

    def style_code(self, features: Tensor) -> tuple[Tensor, Tensor]:
        mean = features.float().mean(dim=(2, 3), keepdim=True)
        return self.style_net(features - mean.to(features.dtype)), mean

    def forward(self, content: Tensor, style_code: tuple[Tensor, Tensor]) -> Tensor:
        style_matrix, style_mean = style_code
        mean = content.float().mean(dim=(2, 3), keepdim=True)
        centred = content - mean.to(content.dtype)
        content_matrix = self.content_net(centred)
        compressed = self.compress(centred)
        b, k, h, w = compressed.shape
        transform = torch.bmm(style_matrix, content_matrix)
        mixed = torch.bmm(transform.to(compressed.dtype), compressed.flatten(2)).view(b, k, h, w)
        return self.unzip(mixed) + style_mean.to(mixed.dtype)


@register_model("linear")
class LinearTransfer(StyleTransferModel):
    """LinearTransfer (Li et al. 2019): D(unzip(S·C·compress(f_c − μ_c)) + μ_s) at VGG-19 relu3_1 or relu4_1.

    Two small CNNs predict k×k matrices (k = ``matrix_size``, 32) from the content and style
    features; their product transforms the content compressed to k channels. The reference borrows a
    frozen pretrained WCT decoder; here the decoder is trained too, in a documented two-phase schedule:
    phase ``autoencoder`` (the first ``autoencoder_fraction`` of the steps) trains the decoder alone
    to invert the encoder (pixel MSE + perceptual loss at every relu_1 layer up to ``layer``); phase
    ``transform`` freezes it and trains the transformation with the native objective: content MSE at
    ``layer``, style = channel means + Gram / CHW summed over entries on relu1_1..``layer``, weight 0.02.
    """

    blend = "code"  # the output is linear in (S, μ_s), so mixing codes equals mixing outputs

    def __init__(self, layer: str = "relu4_1", matrix_size: int = 32, autoencoder_fraction: float = 0.3,
                 encoder_weights: str = "imagenet", encoder_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(layer=layer, matrix_size=matrix_size, autoencoder_fraction=autoencoder_fraction,
                         encoder_weights=encoder_weights, encoder_options=encoder_options)
        if layer not in _LAYERS:
            raise ValueError(f"linear: layer={layer!r} is not one of {', '.join(_LAYERS)}")
        if not 0.0 <= float(autoencoder_fraction) < 1.0:
            raise ValueError(f"linear: autoencoder_fraction must lie in [0, 1); got {autoencoder_fraction!r} "
                             "(0 skips the decoder phase, for a decoder loaded from elsewhere)")
        if int(matrix_size) < 1:
            raise ValueError(f"linear: matrix_size must be a positive integer; got {matrix_size!r}")
        self.layer = layer
        self.autoencoder_fraction = float(autoencoder_fraction)
        self.encoder = build_encoder("vgg19", layer, encoder_weights, encoder_options)
        self.decoder = MirroredDecoder(layer)
        self.transform = LinearTransform(layer_channels(layer), int(matrix_size))
        self.style_layers = [name for name in layer_names("vgg19")
                             if name.startswith("relu") and name.endswith("_1")
                             and layer_names("vgg19").index(name) <= layer_names("vgg19").index(layer)]

    @property
    def size_multiple(self) -> int:
        return 8 if self.layer == "relu4_1" else 4

    def content_code(self, content: Tensor) -> Tensor:
        return self.encoder(content, [self.layer])[self.layer]

    def style_code(self, style: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.style_code(self.encoder(style, [self.layer])[self.layer])

    def transfer(self, content_code: Tensor, style_code: tuple[Tensor, Tensor]) -> Tensor:
        return self.transform(content_code, style_code)

    def decode(self, representation: Tensor, content_code: Tensor, alpha: float = 1.0) -> Tensor:
        return self.decoder(alpha_blend(representation, content_code, alpha))

    def training_phases(self) -> list[TrainingPhase]:
        if self.autoencoder_fraction == 0:
            return [TrainingPhase("transform", 1.0)]
        return [TrainingPhase("autoencoder", self.autoencoder_fraction),
                TrainingPhase("transform", 1.0 - self.autoencoder_fraction)]

    def trainable_modules(self, phase: str = "transform") -> list[nn.Module]:
        if phase == "autoencoder":
            return [self.decoder]
        if phase in ("transform", "main"):
            return [self.transform]
        raise ValueError(f"linear: unknown phase {phase!r}; phases are autoencoder, transform")

    def loss_encoder(self) -> VGGEncoder:
        return self.encoder

    def default_objective(self, phase: str = "transform", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if phase == "autoencoder":
            return {
                "reconstruction": {"loss": "cycle", "distance": "mse", "weight": 1.0},
                "perceptual": {"loss": "content", "weight": 1.0, "layers": list(self.style_layers)},
            }
        objective = {
            "content": {"loss": "content", "weight": 1.0, "layers": [self.layer]},
            "style": {"loss": "gram", "weight": 0.02, "layers": list(self.style_layers), "gram_normalize": "chw",
                      "include_mean": True, "entry_reduction": "sum"},
        }
        return replace_style_term(objective, style_loss, style_params)

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "transform") -> TrainingOutputs:
        with torch.no_grad():
            content_features = self.encoder(content, set(layers.get("content", ())) | {self.layer})
        if phase == "autoencoder":
            reconstruction = self.decoder(content_features[self.layer])
            return TrainingOutputs(images={"pred": reconstruction, "reconstruction": reconstruction,
                                           "content": content, "style": style},
                                   features={"content": content_features})
        with torch.no_grad():
            style_features = self.encoder(style, set(layers.get("style", ())) | {self.layer})
        transformed = self.transform(content_features[self.layer], self.transform.style_code(style_features[self.layer]))
        pred = self.decoder(transformed)
        return TrainingOutputs(images={"pred": pred, "content": content, "style": style},
                               features={"style": style_features, "content": content_features})
