"""A trained model behind a single-tensor interface, for MLflow's pyfunc flavour and model serving.

MLflow's PyTorch pyfunc calls ``module(tensor, **params)`` with one tensor. A style transfer model
takes two images, so the logged module takes them stacked on the channel axis: ``(N, 6, H, W)``,
content RGB then style RGB, floats in [0, 1]; ``alpha`` is an inference parameter. Code that wants
the model itself loads the logged module and calls :func:`unwrap` (``stylecore.load`` does).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stylecore.models.base import StyleTransferModel


class PackedPairStylizer(nn.Module):
    """``forward(pair, alpha)`` with ``pair = pack_pair(content, style)`` → stylized ``(N, 3, H, W)``."""

    def __init__(self, model: StyleTransferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pair: Tensor, alpha: float = 1.0) -> Tensor:
        if pair.dim() != 4 or pair.shape[1] != 6:
            raise ValueError(f"expected content and style stacked on the channel axis, (N, 6, H, W); got "
                             f"{tuple(pair.shape)}. Build the input with stylecore.export.pack_pair(content, style)")
        return self.model(pair[:, :3].float(), pair[:, 3:].float(), alpha=float(alpha))


def pack_pair(content: Tensor, style: Tensor) -> Tensor:
    """``(N, 3, H, W)`` content and style of the same size → the ``(N, 6, H, W)`` input of a packed model."""
    if content.shape != style.shape:
        raise ValueError(f"content {tuple(content.shape)} and style {tuple(style.shape)} must have the same shape "
                         "to be packed; resize the style image to the content's size first")
    return torch.cat([content, style], dim=1)


def unwrap(module: nn.Module) -> StyleTransferModel:
    """The :class:`StyleTransferModel` inside a packed module (or the model itself)."""
    model = module.model if isinstance(module, PackedPairStylizer) else module
    if not isinstance(model, StyleTransferModel):
        raise TypeError(f"{type(module).__name__} is not a stylecore model")
    return model
