"""Frozen VGG-16/19 feature extractor with named layers.

One forward pass returns every requested layer (``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``),
stopping at the deepest one, so all perceptual losses share a single encoder pass.

Weights (``weights=``):

* ``"imagenet"`` – torchvision's ImageNet weights (``VGG16_Weights.IMAGENET1K_V1`` /
  ``VGG19_Weights.IMAGENET1K_V1``), downloaded into ``$TORCH_HOME/hub/checkpoints`` when online.
  Offline with no cached file this raises :class:`EncoderWeightsUnavailable` naming the file.
* a path to a state dict (``.safetensors``, or a torch file loaded with ``weights_only=True``),
  keyed either like torchvision (``features.0.weight``) or by layer name (``conv1_1.weight``).
* ``"random:<seed>"`` – a seeded random (Kaiming) init, for tests and offline demos. Not pretrained:
  losses computed with it are not perceptual, and :meth:`VGGEncoder.describe` says so.

Nothing falls back silently: the weights in use are logged at construction and reported by
:meth:`VGGEncoder.describe` so every run can record them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# EncoderWeightsUnavailable is re-exported: callers catch it from here; the policy is every backbone's
from stylecore.backbones import EncoderWeightsUnavailable, resolve_weights, torchvision_weights_file

__all__ = ["EncoderWeightsUnavailable", "VGGEncoder", "imagenet_weights_file", "layer_names", "layer_channels",
           "check_layer_names", "equivalent_layers"]

log = logging.getLogger(__name__)

Arch = Literal["vgg16", "vgg19"]
Pooling = Literal["max", "avg"]
Normalization = Literal["imagenet", "caffe"]
Padding = Literal["zeros", "reflect"]

_BLOCK_DEPTHS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe VGG expects BGR in [0, 255] minus this per-channel (B, G, R) mean.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_TORCHVISION_WEIGHTS = {"vgg16": "VGG16_Weights", "vgg19": "VGG19_Weights"}


#: encoders that are not VGG: arch → their named layers, shallow to deep (the classes live with their networks:
#: ``magenta_lite``: :class:`stylecore.models.magenta_lite.MagentaLiteEncoder`, Magenta's trained style predictor)
FEATURE_ARCHS: dict[str, tuple[str, ...]] = {
    "magenta_lite": ("stem", *(f"block{i}" for i in range(1, 18)), "head"),
}


#: for each encoder that is not VGG, its layer standing in for VGG's features at each stride (VGG-19's relu{b}_*
#: sit at stride 2^(b-1), pool{b} at 2^b). The predictor's first features are at stride 2, so relu1 → stem, relu2 →
#: block3, relu3 → block6 and relu4 → block10 stand one level coarser (the end of each of its stages); relu5 → block13,
#: the end of its other stride-16 stage, stays at VGG's stride so that a 32-px crop still has 2×2 maps there (its
#: stride-32 block17 would be 1×1, and a variance of one position is undefined); pool5 → block17.
VGG_EQUIVALENTS: dict[str, dict[int, str]] = {
    "magenta_lite": {1: "stem", 2: "block3", 4: "block6", 8: "block10", 16: "block13", 32: "block17"},
}


def equivalent_layers(layers: Sequence[str] | Mapping[str, float], arch: str) -> list[str] | dict[str, float]:
    """VGG layer names → ``arch``'s equivalents (:data:`VGG_EQUIVALENTS`); names of ``arch`` itself are kept.

    A list stays a list (duplicates dropped, order kept); a ``{layer: weight}`` mapping stays a mapping, the
    weights of VGG layers that meet at one layer added, so a term's total weight is unchanged."""
    if arch not in VGG_EQUIVALENTS:
        raise ValueError(f"no VGG layer equivalents for encoder {arch!r}; known: {', '.join(VGG_EQUIVALENTS)}")
    own = set(FEATURE_ARCHS[arch])
    weights = dict(layers) if isinstance(layers, Mapping) else {name: 1.0 for name in layers}
    out: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in own:
            check_layer_names([name], "vgg19", argument=f"layers for the {arch} encoder")
            name = VGG_EQUIVALENTS[arch][layer_stride(name)]
        out[name] = out.get(name, 0.0) + float(weight)
    return out if isinstance(layers, Mapping) else list(out)


def known_layer_names() -> list[str]:
    """Every layer name of every encoder (VGG-19's include VGG-16's): what a loss may name before it meets one."""
    return [*layer_names("vgg19"), *(name for names in FEATURE_ARCHS.values() for name in names)]


def _layer_plan(arch: str) -> list[tuple[str, str, int, int]]:
    """(name, kind, torchvision features index, out channels) for every layer of the arch."""
    if arch not in _BLOCK_DEPTHS:
        raise ValueError(f"encoder arch {arch!r} is not supported; choose one of: {', '.join(_BLOCK_DEPTHS)}")
    plan = []
    index = 0
    for block, (depth, channels) in enumerate(zip(_BLOCK_DEPTHS[arch], _BLOCK_CHANNELS), start=1):
        for i in range(1, depth + 1):
            plan.append((f"conv{block}_{i}", "conv", index, channels))
            plan.append((f"relu{block}_{i}", "relu", index + 1, channels))
            index += 2
        plan.append((f"pool{block}", "pool", index, channels))
        index += 1
    return plan


def layer_names(arch: Arch = "vgg19") -> list[str]:
    """All addressable layer names of ``arch``, shallow to deep."""
    if arch in FEATURE_ARCHS:
        return list(FEATURE_ARCHS[arch])
    return [name for name, *_ in _layer_plan(arch)]


def layer_channels(layer: str, arch: Arch = "vgg19") -> int:
    """Number of channels of ``layer``'s output."""
    for name, _, _, channels in _layer_plan(arch):
        if name == layer:
            return channels
    raise ValueError(f"unknown layer {layer!r} for {arch}; valid layers: {', '.join(layer_names(arch))}")


def layer_stride(layer: str) -> int:
    """Spatial downsampling factor of ``layer`` relative to the input (1 for block 1 convs)."""
    match = re.fullmatch(r"(?:conv|relu)(\d)_\d|pool(\d)", layer)
    if not match:
        raise ValueError(f"not a VGG layer name: {layer!r}")
    if match.group(2):
        return 2 ** int(match.group(2))
    return 2 ** (int(match.group(1)) - 1)


def check_layer_names(layers: Iterable[str], arch: Arch = "vgg19", argument: str = "layers") -> list[str]:
    layers = list(layers)
    valid = known_layer_names() if arch == "any" else layer_names(arch)
    bad = [layer for layer in layers if layer not in valid]
    if bad:
        raise ValueError(
            f"{argument}: unknown layer name(s) {', '.join(map(repr, bad))} for {arch}; "
            f"valid names are {', '.join(valid)}"
        )
    return layers


def imagenet_weights_file(arch: Arch) -> Path:
    """Where torchvision caches (and expects) the ImageNet VGG weights file."""
    return torchvision_weights_file(_torchvision_weights(arch))


def _torchvision_weights(arch: str):
    import torchvision.models as tvm

    return getattr(tvm, _TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1


class VGGEncoder(nn.Module):
    """Frozen VGG feature extractor: ``forward(x, layers) -> {name: features}`` in one pass.

    ``x`` is an RGB batch in [0, 1] of shape (B, 3, H, W); the chosen input normalisation is applied
    inside. The network is truncated after the deepest layer in ``layers`` (all layers if None).
    """

    def __init__(
        self,
        arch: Arch = "vgg19",
        layers: Iterable[str] | None = None,
        weights: str | os.PathLike = "imagenet",
        pooling: Pooling = "max",
        normalization: Normalization = "imagenet",
        padding: Padding = "zeros",
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        plan = _layer_plan(arch)
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling={pooling!r} is not supported; choose 'max' or 'avg'")
        if normalization not in ("imagenet", "caffe"):
            raise ValueError(f"normalization={normalization!r} is not supported; choose 'imagenet' or 'caffe'")
        if padding not in ("zeros", "reflect"):
            raise ValueError(f"padding={padding!r} is not supported; choose 'zeros' or 'reflect'")
        all_names = [name for name, *_ in plan]
        if layers is not None:
            requested = check_layer_names(layers, arch)
            if not requested:
                raise ValueError("layers: give at least one layer name, or None for the whole network")
            last = max(all_names.index(name) for name in requested)
            plan = plan[: last + 1]
        self.arch = arch
        self.pooling = pooling
        self.normalization = normalization
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.layer_order: list[str] = [name for name, *_ in plan]
        self._kinds: dict[str, str] = {name: kind for name, kind, *_ in plan}
        self._tv_index: dict[str, int] = {name: idx for name, kind, idx, _ in plan if kind == "conv"}

        self.convs = nn.ModuleDict()
        in_channels = 3
        for name, kind, _, channels in plan:
            if kind == "conv":
                self.convs[name] = nn.Conv2d(in_channels, channels, 3, padding=1, padding_mode=padding)
                in_channels = channels

        if normalization == "imagenet":
            mean, scale = torch.tensor(IMAGENET_MEAN), torch.tensor([1.0 / std for std in IMAGENET_STD])
        else:
            # normalize() flips to BGR first, so the mean stays in BGR order.
            mean, scale = torch.tensor([value / 255.0 for value in CAFFE_BGR_MEAN]), torch.full((3,), 255.0)
        self.register_buffer("input_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)

        self.weights_source = self._load_weights(weights)
        self.requires_grad_(False)
        self.eval()
        log.info("VGG encoder: %s", self.describe())

    # -- weights -----------------------------------------------------------------------------

    def _load_weights(self, weights: str | os.PathLike) -> dict[str, str]:
        resolved = resolve_weights(weights, self.arch, lambda: _torchvision_weights(self.arch))
        if resolved.state is None:
            self._random_init(resolved.seed)
        else:
            self._load_state(resolved.state, resolved.info.get("file", str(weights)))
        return resolved.info

    def _load_state(self, state: Mapping[str, Tensor], origin: str) -> None:
        if "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        by_name: dict[str, Tensor] = {}
        for name, index in self._tv_index.items():
            for param in ("weight", "bias"):
                for key in (f"{name}.{param}", f"features.{index}.{param}", f"convs.{name}.{param}"):
                    if key in state:
                        by_name[f"{name}.{param}"] = state[key]
                        break
        expected = [f"{name}.{param}" for name in self._tv_index for param in ("weight", "bias")]
        missing = [key for key in expected if key not in by_name]
        if missing:
            raise EncoderWeightsUnavailable(
                f"weights {origin} lack {len(missing)} tensor(s) needed for {self.arch} up to "
                f"{self.layer_order[-1]}, e.g. {missing[0]} (or features.{self._tv_index[missing[0].split('.')[0]]}."
                f"{missing[0].split('.')[1]}). Is this a {self.arch} state dict?"
            )
        for key, tensor in by_name.items():
            name, param = key.split(".")
            target = getattr(self.convs[name], param)
            if target.shape != tensor.shape:
                raise EncoderWeightsUnavailable(
                    f"weights {origin}: {key} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)} "
                    f"for {self.arch}"
                )
            with torch.no_grad():
                target.copy_(tensor.to(target.dtype))

    def _random_init(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs.values():
                # torchvision's VGG init (Kaiming normal, fan_out, ReLU), drawn from a private generator.
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                conv.bias.zero_()

    # -- behaviour ---------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "VGGEncoder":
        # Always frozen: a parent module's .train() must not flip the encoder out of eval mode.
        return super().train(False)

    @property
    def available_layers(self) -> list[str]:
        return list(self.layer_order)

    def describe(self) -> dict[str, str]:
        """What this encoder is, for logs and run metadata."""
        info = {
            "arch": self.arch,
            "weights": self.weights_source["spec"],
            "weights_kind": self.weights_source["kind"],
            "pretrained": self.weights_source["pretrained"],
            "pooling": self.pooling,
            "normalization": self.normalization,
            "padding": self.padding,
            "last_layer": self.layer_order[-1],
        }
        for key in ("file", "sha256", "torchvision", "seed"):
            if key in self.weights_source:
                info[f"weights_{key}"] = self.weights_source[key]
        return info

    def normalize(self, x: Tensor) -> Tensor:
        if self.normalization == "caffe":
            x = x.flip(1)  # RGB -> BGR
        return (x - self.input_mean.to(x.dtype)) * self.input_scale.to(x.dtype)

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        wanted = set(layers)
        if not wanted:
            return {}
        unknown = wanted - set(self.layer_order)
        if unknown:
            deeper = [name for name in unknown if name in layer_names(self.arch)]  # type: ignore[arg-type]
            why = (f"they lie beyond this encoder's truncation at {self.layer_order[-1]}" if deeper
                   else f"valid names: {', '.join(self.layer_order)}")
            raise ValueError(f"layers: {', '.join(sorted(unknown))} not available ({why})")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"encoder input must be an RGB batch of shape (B, 3, H, W); got {tuple(x.shape)}")
        deepest = max(self.layer_order.index(name) for name in wanted)
        out: dict[str, Tensor] = {}
        h = self.normalize(x)
        for name in self.layer_order[: deepest + 1]:
            kind = self._kinds[name]
            if kind == "conv":
                h = self.convs[name](h)
            elif kind == "relu":
                # In place unless the conv output itself was requested (then it must survive);
                # autograd allows it because a conv's backward does not need its output.
                h = F.relu(h) if "conv" + name[4:] in wanted else F.relu_(h)
            elif self.pooling == "max":
                h = F.max_pool2d(h, 2, 2, ceil_mode=self.ceil_mode)
            else:
                h = F.avg_pool2d(h, 2, 2, ceil_mode=self.ceil_mode)
            if name in wanted:
                out[name] = h
        return out
