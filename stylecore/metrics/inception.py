"""Inception-v3 pool3 features (2048-d), the feature space of FID and ArtFID.

Three published weight sets, each with the input convention and the block variant it was made for:

=================  ==============================================  ============  =========================
weights            what                                            input         blocks
=================  ==============================================  ============  =========================
``art_inception``  art-fid's Inception-v3 trained on artworks          [0, 1]    torchvision's
                   (Wright & Ommer 2022; StyleID's ArtFID)
``pytorch_fid``    the TF FID Inception ported by pytorch-fid          [-1, 1]   TF's (see below)
                   (the number most FID papers report)
``imagenet``       torchvision's ImageNet Inception-v3                 [-1, 1]   torchvision's
=================  ==============================================  ============  =========================

A file (``.safetensors`` or a weights-only torch file with torchvision's key names) is read with the
art-fid conventions unless ``input_range`` / ``variant`` say otherwise; ``random:<seed>`` is a seeded
random init whose numbers are uncalibrated. The TF variant differs from torchvision's in four pooling
layers: average pools that exclude padding (Mixed_5*, Mixed_6b–e, Mixed_7b) and a max pool in Mixed_7c's
pool branch, as the TensorFlow graph that defined FID had them.

``resize``: the side images are resized to (bilinear, ``align_corners=False``, no antialiasing, as
pytorch-fid does) before the network; None feeds them at their size, as art-fid does (StyleID resizes the
short side to 512 first; a protocol states which).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.backbones import EncoderWeightsUnavailable, Release, resolve_weights

InputRange = Literal["unit", "symmetric"]
Variant = Literal["torchvision", "tensorflow"]

RELEASES = {
    "art_inception": Release("art_inception",
                             "https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth",
                             note="art-fid / StyleID's ArtFID feature network; no digest published"),
    "pytorch_fid": Release("pytorch_fid", "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                                          "pt_inception-2015-12-05-6726825d.pth", sha256="6726825d",
                           note="pytorch-fid's port of the TensorFlow FID Inception"),
}
#: (input range, block variant) each named weight set was made for; files and random inits follow art-fid
CONVENTIONS: dict[str, tuple[InputRange, Variant]] = {"art_inception": ("unit", "torchvision"),
                                                       "pytorch_fid": ("symmetric", "tensorflow"),
                                                       "imagenet": ("symmetric", "torchvision")}
FEATURES = 2048
MIN_SIDE = 75  # the smallest input the stride-2 stem and the 3×3 valid convolutions accept

_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionFeatures(nn.Module):
    """``forward(x)``: pool3 features (B, 2048) of RGB images ``x`` in [0, 1]."""

    def __init__(self, weights: str | os.PathLike = "art_inception", resize: int | None = None,
                 input_range: InputRange | None = None, variant: Variant | None = None) -> None:
        super().__init__()
        import torchvision.models as tvm

        spec = os.fspath(weights)
        default_range, default_variant = CONVENTIONS.get(spec, ("unit", "torchvision"))
        self.input_range: InputRange = input_range or default_range
        self.variant: Variant = variant or default_variant
        if self.input_range not in ("unit", "symmetric") or self.variant not in ("torchvision", "tensorflow"):
            raise ValueError(f"inception: input_range={self.input_range!r} (unit | symmetric), variant={self.variant!r} "
                             "(torchvision | tensorflow)")
        if resize is not None and resize < MIN_SIDE:
            raise ValueError(f"inception: resize={resize} is below Inception-v3's smallest input, {MIN_SIDE} px")
        self.resize = resize
        resolved = resolve_weights(spec, "the FID Inception-v3", tvm.Inception_V3_Weights.IMAGENET1K_V1, RELEASES)
        with torch.random.fork_rng(devices=[]):
            if resolved.seed is not None:
                torch.manual_seed(resolved.seed)
            net = tvm.inception_v3(weights=None, aux_logits=False, init_weights=resolved.seed is not None,
                                   transform_input=False)
        if resolved.seed is not None:
            _variance_preserving_init(net, resolved.seed)
        if self.variant == "tensorflow":
            _use_tensorflow_pooling(net)
        if resolved.state is not None:
            # the trunk only: the classifier heads differ between releases (1000, 1008, art-fid's two) and are unused
            trunk_state = {key: value for key, value in resolved.state.items() if key.split(".")[0] in _TRUNK}
            missing, _ = net.load_state_dict(trunk_state, strict=False)
            trunk_missing = [key for key in missing if key.split(".")[0] in _TRUNK]
            if trunk_missing:
                raise EncoderWeightsUnavailable(f"FID Inception weights {spec} lack {len(trunk_missing)} trunk tensors, "
                                                f"e.g. {trunk_missing[0]}; is this an Inception-v3 state dict with "
                                                "torchvision's key names?")
        self.trunk = nn.Sequential(*[getattr(net, name) for name in _TRUNK])
        self.weights_source = resolved.info
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # batch norm in inference mode, always

    def describe(self) -> dict[str, str]:
        return {"network": "inception_v3 pool3", "weights": self.weights_source["spec"],
                "weights_kind": self.weights_source["kind"], "pretrained": self.weights_source["pretrained"],
                "input_range": self.input_range, "variant": self.variant,
                "resize": str(self.resize) if self.resize else "none (fed at the evaluated size)",
                **{f"weights_{k}": v for k, v in self.weights_source.items() if k in ("file", "sha256", "torchvision")}}

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"inception: input must be RGB images (B, 3, H, W) in [0, 1]; got {tuple(x.shape)}")
        if self.resize is not None:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"inception: {x.shape[-2]}×{x.shape[-1]} images are below Inception-v3's smallest input "
                             f"({MIN_SIDE} px); set the protocol's fid_resize (pytorch-fid uses 299)")
        if self.input_range == "symmetric":
            x = 2 * x - 1
        return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)


def _variance_preserving_init(net: nn.Module, seed: int) -> None:
    """Kaiming (fan-in) convolutions for a random Inception: torchvision's init (std 0.1 whatever the fan-in)
    assumes trained batch-norm statistics, and without them pool3 features reach 1e9 and FIDs 1e18."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)


# -- the TensorFlow pooling variant --------------------------------------------------------------

def _pool_excluding_padding(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _inception_a(block, x: Tensor) -> list[Tensor]:
    branch5x5 = block.branch5x5_2(block.branch5x5_1(x))
    branch3x3dbl = block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x)))
    return [block.branch1x1(x), branch5x5, branch3x3dbl, block.branch_pool(_pool_excluding_padding(x))]


def _inception_c(block, x: Tensor) -> list[Tensor]:
    branch7x7 = block.branch7x7_3(block.branch7x7_2(block.branch7x7_1(x)))
    branch7x7dbl = x
    for layer in (block.branch7x7dbl_1, block.branch7x7dbl_2, block.branch7x7dbl_3, block.branch7x7dbl_4,
                  block.branch7x7dbl_5):
        branch7x7dbl = layer(branch7x7dbl)
    return [block.branch1x1(x), branch7x7, branch7x7dbl, block.branch_pool(_pool_excluding_padding(x))]


def _inception_e(pool):
    def forward(block, x: Tensor) -> list[Tensor]:
        branch3x3 = block.branch3x3_1(x)
        branch3x3 = torch.cat([block.branch3x3_2a(branch3x3), block.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = block.branch3x3dbl_2(block.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([block.branch3x3dbl_3a(branch3x3dbl), block.branch3x3dbl_3b(branch3x3dbl)], 1)
        return [block.branch1x1(x), branch3x3, branch3x3dbl, block.branch_pool(pool(x))]
    return forward


def _use_tensorflow_pooling(net: nn.Module) -> None:
    """Swap the pooling of the blocks that differ in the TF graph (the blocks' layers and weights stay)."""
    import types

    max_pool = lambda x: F.max_pool2d(x, kernel_size=3, stride=1, padding=1)  # noqa: E731
    swaps = {**{name: _inception_a for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d")},
             **{name: _inception_c for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")},
             "Mixed_7b": _inception_e(_pool_excluding_padding), "Mixed_7c": _inception_e(max_pool)}
    for name, forward in swaps.items():
        block = getattr(net, name)
        block._forward = types.MethodType(forward, block)
