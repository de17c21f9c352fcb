"""Building blocks shared by the models: the frozen encoder from model parameters, the mirrored decoder."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.encoders import VGGEncoder, _layer_plan

_ENCODER_OPTIONS = ("pooling", "normalization", "padding", "ceil_mode")


def build_encoder(arch: str, deepest_layer: str, weights: str, options: Mapping[str, Any] | None,
                  defaults: Mapping[str, Any] | None = None) -> VGGEncoder:
    """The frozen VGG a model encodes with (and its objective reads), truncated at ``deepest_layer``."""
    settings = dict(defaults or {})
    unknown = sorted(set(options or {}) - set(_ENCODER_OPTIONS))
    if unknown:
        raise ValueError(f"encoder_options: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ENCODER_OPTIONS)}")
    settings.update(options or {})
    return VGGEncoder(arch, layers=[deepest_layer], weights=weights, **settings)  # type: ignore[arg-type]


class ConvLayer(nn.Sequential):
    """Reflection pad + conv (+ ReLU): the decoder unit of the AdaIN family."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(in_channels, out_channels, kernel)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Upsample(nn.Module):
    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class MirroredDecoder(nn.Sequential):
    """The VGG encoder mirrored from ``from_layer`` back to RGB (Huang & Belongie 2017, §6.1).

    Every conv of the encoder becomes a reflection-padded 3×3 conv mapping its output channels back to
    its input channels, every pooling a nearest ×2 upsampling; ReLU after each conv but the last, no
    normalisation and no output activation. From VGG-19 relu4_1 this is exactly the AdaIN decoder.
    """

    def __init__(self, from_layer: str = "relu4_1", arch: str = "vgg19") -> None:
        plan = _layer_plan(arch)
        names = [name for name, *_ in plan]
        if from_layer not in names or not from_layer.startswith("relu"):
            raise ValueError(f"decoder: from_layer must be a relu layer of {arch}; got {from_layer!r}")
        encoder_part = plan[: names.index(from_layer) + 1]
        convs: list[tuple[str, int, int]] = []  # (kind, in, out) in encoder order
        in_channels = 3
        for _, kind, _, channels in encoder_part:
            if kind == "conv":
                convs.append(("conv", in_channels, channels))
                in_channels = channels
            elif kind == "pool":
                convs.append(("pool", 0, 0))
        # Pools after the last conv (none for relu layers) do not occur; mirror in reverse.
        layers: list[nn.Module] = []
        mirrored = list(reversed(convs))
        for index, (kind, enc_in, enc_out) in enumerate(mirrored):
            if kind == "pool":
                layers.append(Upsample(2))
            else:
                layers.append(ConvLayer(enc_out, enc_in, relu=index < len(mirrored) - 1))
        super().__init__(*layers)
        self.from_layer = from_layer
        self.in_channels = encoder_part[-1][3]
