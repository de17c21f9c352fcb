"""A trained model behind a single-tensor interface, for MLflow's pyfunc flavour and model serving.

MLflow's PyTorch pyfunc calls ``module(tensor, **params)`` with one tensor. A style transfer model
takes two images, so the logged module takes them stacked on the channel axis: ``(N, 6, H, W)``,
content RGB then style RGB, floats in [0, 1]; ``alpha`` is an inference parameter. A GAN translation model
takes the photos alone, ``(N, 3, H, W)``, and the target ``domain`` as its parameter (:class:`DomainTranslator`).
Code that wants the model itself loads the logged module and calls :func:`unwrap` (``stylecore.load`` does).
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


class DomainTranslator(nn.Module):
    """``forward(images, domain)`` of a GAN translation model (:mod:`stylecore.gan`): ``(N, 3, H, W)`` in [0, 1]
    → the same images in ``domain`` (an inference parameter; default the model's first domain)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        import copy

        from torch.nn.utils import parametrize

        # a copy whose parametrized weights (spectral norm in U-GAT-IT's discriminators) are baked in: torch pickles
        # parametrized modules only through state_dict, and MLflow's flavour pickles the module
        self.model = copy.deepcopy(model)
        for module in list(self.model.modules()):
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)

    def forward(self, images: Tensor, domain: str | None = None) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch of RGB images (N, 3, H, W) in [0, 1]; got {tuple(images.shape)}")
        return self.model.translate(images.float(), domain or self.model.domains[0])


def pack_pair(content: Tensor, style: Tensor) -> Tensor:
    """``(N, 3, H, W)`` content and style of the same size → the ``(N, 6, H, W)`` input of a packed model."""
    if content.shape != style.shape:
        raise ValueError(f"content {tuple(content.shape)} and style {tuple(style.shape)} must have the same shape "
                         "to be packed; resize the style image to the content's size first")
    return torch.cat([content, style], dim=1)


def unwrap(module: nn.Module) -> StyleTransferModel:
    """The :class:`StyleTransferModel` (or GAN translation model) inside a packed module (or the model itself)."""
    from stylecore.gan import TranslationModel

    model = module.model if isinstance(module, (PackedPairStylizer, DomainTranslator)) else module
    if not isinstance(model, (StyleTransferModel, TranslationModel)):
        raise TypeError(f"{type(module).__name__} is not a stylecore model")
    return model
