"""LPIPS (Zhang, Isola, Efros, Shechtman, Wang; CVPR 2018): the learned perceptual distance, ArtFID's content term.

    LPIPS(x, y) = Σ_l  mean_hw  Σ_c  w_lc · (x̂_lhwc − ŷ_lhwc)²,     x̂ = f_l(x) / ‖f_l(x)‖_c

f_l are five ReLU outputs of an ImageNet backbone (AlexNet: conv1…conv5; VGG-16: relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3), unit-normalised over channels (+1e-10), and w_l ≥ 0 the published linear heads ("v0.1").
The heads ship inside the ``lpips`` wheel (``lpips/weights/v0.1/{alex,vgg}.pth``, a few KB) and are read
from there with ``weights_only=True``; the backbones come through the backbone weights policy
(:mod:`stylecore.backbones`: ``imagenet`` from torchvision, a file, or ``random:<seed>``, uncalibrated).

Images are RGB in [0, 1]. The reference maps them to [-1, 1] and then shifts by [-.030, -.088, -.188] and
scales by [.458, .448, .450]: exactly ImageNet's mean/std normalisation of the [0, 1] image, which is what
is applied here. ``gray=True`` scores the images' luma (ITU-R 601, as PIL's ``convert("L")``) in all three
channels: StyleID's LPIPS_gray, content structure without colour.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from stylecore.backbones import EncoderWeightsUnavailable, load_state_file, resolve_weights
from stylecore.encoders import IMAGENET_MEAN, IMAGENET_STD, VGGEncoder

NETS = ("alex", "vgg")
_ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # features[a:b] ends after each ReLU
_VGG_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_LUMA = (0.299, 0.587, 0.114)


def published_heads(net: str) -> Path:
    """The ``lpips`` wheel's v0.1 linear heads of ``net``, located without importing the package."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderWeightsUnavailable("LPIPS needs the published linear heads that ship in the lpips wheel: "
                                        "pip install lpips (or pass heads=<path to a v0.1 .pth>)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise EncoderWeightsUnavailable(f"the lpips package has no heads for {net!r} at {path}")
    return path


class LPIPS(nn.Module):
    """``forward(x, y) -> (B,)`` distances; :meth:`features` and :meth:`distance` split it, so a reference image
    shared by many outputs is encoded once."""

    def __init__(self, net: str = "alex", weights: str | os.PathLike = "imagenet",
                 heads: str | os.PathLike | None = None) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"lpips: net={net!r} is not one of {', '.join(NETS)}")
        self.net = net
        if net == "vgg":
            self.backbone = VGGEncoder("vgg16", layers=_VGG_LAYERS, weights=weights)
            self.weights_source = dict(self.backbone.weights_source)
            channels = (64, 128, 256, 512, 512)
        else:
            self.backbone, self.weights_source = _alexnet_features(weights)
            channels = (64, 192, 384, 256, 256)
        heads_path = Path(heads) if heads is not None else published_heads(net)
        state = load_state_file(heads_path, f"LPIPS {net} heads")
        self.heads = nn.ParameterList()
        for index, width in enumerate(channels):
            key = next((k for k in (f"lin{index}.model.1.weight", f"lin{index}.weight") if k in state), None)
            if key is None or tuple(state[key].shape) != (1, width, 1, 1):
                raise EncoderWeightsUnavailable(f"LPIPS heads {heads_path}: lin{index} must be a (1, {width}, 1, 1) "
                                                f"tensor for {net}; found {tuple(state[key].shape) if key else 'none'}")
            self.heads.append(nn.Parameter(state[key].float().view(width), requires_grad=False))
        # what reports record: the published heads by package and version (a path into site-packages differs on
        # every machine), other heads by the path they were given
        self.heads_source = (f"lpips=={importlib.metadata.version('lpips')} weights/v0.1/{net}.pth"
                             if heads is None else str(heads_path))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def describe(self) -> dict[str, str]:
        return {"network": f"lpips {self.net} v0.1", "weights": self.weights_source["spec"],
                "weights_kind": self.weights_source["kind"], "pretrained": self.weights_source["pretrained"],
                "heads": self.heads_source}

    @torch.no_grad()
    def features(self, x: Tensor, gray: bool = False) -> list[Tensor]:
        """The five unit-normalised feature maps of images ``x`` (B, 3, H, W) in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"lpips: images must be (B, 3, H, W) in [0, 1]; got {tuple(x.shape)}")
        x = x.float()
        if gray:
            luma = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = luma.expand(-1, 3, -1, -1)
        if self.net == "vgg":
            maps = self.backbone(x, _VGG_LAYERS)
            outputs = [maps[name] for name in _VGG_LAYERS]
        else:
            h, outputs = (x - self.mean) / self.std, []
            for start, stop in _ALEX_SLICES:
                h = self.backbone[start:stop](h)
                outputs.append(h)
        return [f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in outputs]

    def distance(self, fx: list[Tensor], fy: list[Tensor]) -> Tensor:
        """Per-sample LPIPS of two :meth:`features` lists (same batch size, or one side of batch 1)."""
        total = 0.0
        for head, a, b in zip(self.heads, fx, fy):
            total = total + ((a - b).square() * head.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
        return total

    def forward(self, x: Tensor, y: Tensor, gray: bool = False) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(f"lpips: x {tuple(x.shape)} and y {tuple(y.shape)} must have one shape")
        return self.distance(self.features(x, gray), self.features(y, gray))


def _alexnet_features(weights: str | os.PathLike) -> tuple[nn.Module, dict[str, str]]:
    import torchvision.models as tvm

    resolved = resolve_weights(weights, "the LPIPS AlexNet", tvm.AlexNet_Weights.IMAGENET1K_V1)
    with torch.random.fork_rng(devices=[]):
        if resolved.seed is not None:
            torch.manual_seed(resolved.seed)
        features = tvm.alexnet(weights=None).features[:12]
    if resolved.state is not None:
        state = {key.removeprefix("features."): value for key, value in resolved.state.items()
                 if key.startswith("features.") or key[:1].isdigit()}
        missing = [key for key in features.state_dict() if key not in state]
        if missing:
            raise EncoderWeightsUnavailable(f"AlexNet weights {resolved.info['spec']} lack {len(missing)} tensors, e.g. "
                                            f"features.{missing[0]}; is this a torchvision AlexNet state dict?")
        features.load_state_dict({key: state[key] for key in features.state_dict()})
    for module in features:  # the in-place ReLUs would overwrite a slice's output that is also returned
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return features, resolved.info
