"""Magenta's arbitrary image stylization (Ghiasi, Lee, Kudlur, Dumoulin, Shlens; BMVC 2017)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore import functional as SF
from stylecore.backbones import EncoderWeightsUnavailable, resolve_weights
from stylecore.encoders import VGGEncoder
from stylecore.models.base import StyleTransferModel, TrainingOutputs, register_model, replace_style_term
from stylecore.models.blocks import Upsample, build_encoder

log = logging.getLogger(__name__)

MAGENTA_STYLE_LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
_TRUNKS = ("inception_v3", "mobilenet_v2")


def _build_trunk(trunk: str, weights: str) -> tuple[nn.Module, int, int, dict[str, str]]:
    """(feature trunk, output channels, smallest input side, weights description)."""
    import torchvision.models as tvm

    if trunk not in _TRUNKS:
        raise ValueError(f"magenta: predictor={trunk!r} is not one of {', '.join(_TRUNKS)}")
    enum = (tvm.Inception_V3_Weights if trunk == "inception_v3" else tvm.MobileNet_V2_Weights).IMAGENET1K_V1
    resolved = resolve_weights(weights, f"magenta predictor ({trunk})", enum)
    with torch.random.fork_rng(devices=[]):
        if resolved.seed is not None:  # torchvision's own init, drawn from the seeded generator
            torch.manual_seed(resolved.seed)
        if trunk == "inception_v3":
            net = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        else:
            net = tvm.mobilenet_v2(weights=None)
    info = resolved.info
    if resolved.state is not None:
        missing, _ = net.load_state_dict(resolved.state, strict=False)
        trunk_missing = [key for key in missing if not key.startswith(("fc.", "classifier.", "AuxLogits."))]
        if trunk_missing:
            raise EncoderWeightsUnavailable(f"predictor weights {info['spec']} lack {len(trunk_missing)} {trunk} "
                                            f"tensors, e.g. {trunk_missing[0]}")
    if trunk == "inception_v3":
        order = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e"]
        return nn.Sequential(*[getattr(net, name) for name in order]), 768, 75, info
    return net.features, 1280, 32, info


class StylePredictor(nn.Module):
    """Style image → ``embedding_dim`` style embedding: a trunk (Inception-v3 to Mixed_6e, or MobileNetV2),
    spatial mean, then a 1×1 conv (a linear map) to the bottleneck."""

    def __init__(self, trunk: str = "inception_v3", weights: str = "imagenet", embedding_dim: int = 100) -> None:
        super().__init__()
        self.trunk, channels, self.min_input, self.weights_source = _build_trunk(trunk, weights)
        self.trunk_name = trunk
        self.bottleneck = nn.Linear(channels, embedding_dim)
        if trunk == "inception_v3":  # torchvision's port of the TF weights expects [-1, 1]
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        else:
            mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, style: Tensor) -> Tensor:
        short = min(style.shape[-2:])
        if short < self.min_input:  # the trunk's strides need this much; styles are textures, so upsample
            scale = self.min_input / short
            style = F.interpolate(style, scale_factor=scale, mode="bilinear", align_corners=False)
        features = self.trunk((style - self.input_mean) / self.input_std)
        return self.bottleneck(features.float().mean(dim=(2, 3)).to(self.bottleneck.weight.dtype))


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with per-sample γ, β predicted from the style embedding (variance eps 1e-5).

    γ = 1 + W_γ·z and β = W_β·z, so a zero embedding starts as plain instance norm.
    """

    def __init__(self, channels: int, embedding_dim: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(embedding_dim, channels)
        self.beta = nn.Linear(embedding_dim, channels)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        gamma = 1.0 + self.gamma(embedding)[:, :, None, None]
        beta = self.beta(embedding)[:, :, None, None]
        return SF.instance_normalize(x, eps=1e-5, unbiased=False) * gamma + beta


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(in_channels, out_channels, kernel, stride))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, embedding_dim: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(channels, channels, 3), ConditionalInstanceNorm(channels, embedding_dim)
        self.conv2, self.norm2 = _conv(channels, channels, 3), ConditionalInstanceNorm(channels, embedding_dim)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x), embedding))
        return x + self.norm2(self.conv2(h), embedding)


class StyleTransformer(nn.Module):
    """The transformer network: 9×9/32, 3×3 s2/64, 3×3 s2/128 convs with batch norm; 5 residual blocks,
    two nearest-upsampling 3×3 convs (64, 32) and a 9×9 conv to RGB, all with conditional instance norm
    (13 sites); sigmoid output."""

    def __init__(self, embedding_dim: int = 100) -> None:
        super().__init__()
        self.contract = nn.Sequential(
            _conv(3, 32, 9), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            _conv(32, 64, 3, 2), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            _conv(64, 128, 3, 2), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
        )
        self.residual = nn.ModuleList([ResidualBlock(128, embedding_dim) for _ in range(5)])
        self.up1, self.up_norm1 = nn.Sequential(Upsample(2), _conv(128, 64, 3)), ConditionalInstanceNorm(64, embedding_dim)
        self.up2, self.up_norm2 = nn.Sequential(Upsample(2), _conv(64, 32, 3)), ConditionalInstanceNorm(32, embedding_dim)
        self.out, self.out_norm = _conv(32, 3, 9), ConditionalInstanceNorm(3, embedding_dim)

    def forward(self, content: Tensor, embedding: Tensor) -> Tensor:
        h = self.contract(content)
        for block in self.residual:
            h = block(h, embedding)
        h = F.relu(self.up_norm1(self.up1(h), embedding))
        h = F.relu(self.up_norm2(self.up2(h), embedding))
        return torch.sigmoid(self.out_norm(self.out(h), embedding))


@register_model("magenta")
class MagentaStylization(StyleTransferModel):
    """Magenta arbitrary stylization (Ghiasi et al. 2017): a style predictor gives a 100-d embedding whose
    linear maps are the γ, β of the transformer's conditional instance norms.

    ``predictor`` is ``inception_v3`` (to Mixed_6e, the paper) or ``mobilenet_v2`` (Magenta's distilled
    version), with ``predictor_weights`` imagenet | file | random:<seed> like the encoder. α interpolates
    the embedding towards the content's own (Magenta's identity interpolation). Native objective on a
    VGG-16 with average pooling and caffe input: content relu3_3 (weight 1), Gram / HW style on
    relu1_2..relu4_3 (0.5e-3 each), TV (Magenta's l2 form, weight 1e4).
    """

    #: a checkpoint holds the trained predictor, so rebuilding it needs no ImageNet file
    checkpoint_overrides = {"predictor_weights": "random:0"}

    def __init__(self, predictor: str = "inception_v3", predictor_weights: str = "imagenet",
                 embedding_dim: int = 100, encoder_weights: str = "imagenet",
                 encoder_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(predictor=predictor, predictor_weights=predictor_weights, embedding_dim=embedding_dim,
                         encoder_weights=encoder_weights, encoder_options=encoder_options)
        if int(embedding_dim) < 1:
            raise ValueError(f"magenta: embedding_dim must be a positive integer; got {embedding_dim!r}")
        self.predictor = StylePredictor(predictor, predictor_weights, int(embedding_dim))
        self.transformer = StyleTransformer(int(embedding_dim))
        # VGG is the loss network only: stylization never runs it, so it is built on first use and a
        # loaded model needs no VGG weights for inference.
        self._encoder: VGGEncoder | None = None
        log.info("magenta style predictor %s: %s", predictor, self.predictor.weights_source)

    @property
    def size_multiple(self) -> int:
        return 4

    def content_code(self, content: Tensor) -> Tensor:
        return content

    def style_code(self, style: Tensor) -> Tensor:
        return self.predictor(style)

    def transfer(self, content_code: Tensor, style_code: Tensor) -> Tensor:
        return style_code

    def decode(self, representation: Tensor, content_code: Tensor, alpha: float = 1.0) -> Tensor:
        if alpha < 1.0:
            representation = alpha * representation + (1.0 - alpha) * self.predictor(content_code)
        return self.transformer(content_code, representation)

    def trainable_modules(self, phase: str = "main") -> list[nn.Module]:
        return [self.predictor, self.transformer]

    def loss_encoder(self) -> VGGEncoder:
        if self._encoder is None:
            encoder = build_encoder("vgg16", "relu4_3", self.params["encoder_weights"], self.params["encoder_options"],
                                    defaults={"pooling": "avg", "normalization": "caffe"})
            self._encoder = encoder.to(self.device)
        return self._encoder

    def default_objective(self, phase: str = "main", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        objective = {
            "content": {"loss": "content", "weight": 1.0, "layers": ["relu3_3"]},
            "style": {"loss": "gram", "weight": 0.5e-3, "layers": list(MAGENTA_STYLE_LAYERS), "gram_normalize": "hw"},
            "tv": {"loss": "tv", "weight": 1e4, "mode": "l2"},
        }
        return replace_style_term(objective, style_loss, style_params)

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "main") -> TrainingOutputs:
        features: dict[str, dict[str, Tensor]] = {}
        with torch.no_grad():
            for role, image in (("style", style), ("content", content)):
                if layers.get(role):
                    features[role] = self.loss_encoder()(image, layers[role])
        pred = self.transformer(content, self.predictor(style))
        return TrainingOutputs(images={"pred": pred, "content": content, "style": style}, features=features)
