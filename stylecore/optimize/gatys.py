"""Gatys, Ecker & Bethge 2016 ("Image Style Transfer Using Convolutional Neural Networks"): the output image itself
is optimised to match the content's features at a deep layer and the style's feature statistics at several.

The objective is stylecore's (``stylecore.objective``), so any registered feature style loss stands in for the
Gram loss (``balanced_gram``, ``mean_std``, ``moments``, …) and total variation can be added.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder
from stylecore.losses import LOSSES
from stylecore.objective import build_objective
from stylecore.optimize.base import (OptimizationHooks, OptimizationMethod, OptimizationResult, ScaleRecord, Timer,
                                     check_pair, register_method, resize, scaled_size)

#: the paper's layers: content conv4_2, style conv1_1 … conv5_1 (their ReLU outputs; Caffe's ReLUs are in place)
GATYS_CONTENT_LAYERS = ("relu4_2",)
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: each style loss's default weight against the content MSE (weight 1) on ImageNet VGG-19: the Gram loss with the
#: C·H·W Gram constant at 1e6 is the balance of PyTorch's Gatys tutorial; the others are scaled to start at a
#: comparable share of the objective. Set ``style_weight`` for other encoders or tastes.
DEFAULT_STYLE_WEIGHTS = {"gram": 1e6, "balanced_gram": 1e2, "mean_std": 10.0, "moments": 10.0, "remd": 10.0}
DEFAULT_STYLE_PARAMS = {"gram": {"gram_normalize": "chw"}}
INITS = ("content", "noise", "style_mean")
OPTIMIZERS = ("lbfgs", "adam")
COLOR_MODES = (None, "coral", "luminance")


@register_method("gatys")
class Gatys(OptimizationMethod):
    """Gatys et al. 2016: the image optimised directly (L-BFGS with a line search, or Adam) for content at relu4_2 + a
    style loss on relu1_1 … relu5_1 (+ TV), from the content, noise or the style's mean colour, optionally coarse to
    fine.

    ``size``: the output's long side. ``scales`` > 1 runs coarse to fine: long sides size / 2^(scales−1) … size,
    ``steps`` at each, each scale starting from the previous one upsampled. ``preserve_color``: ``coral`` recolours
    the style to the content's palette first, ``luminance`` keeps the content's chroma in the result (Gatys et al.
    2017). The image is clamped to [0, 1] after every step.
    """

    memory_layers = GATYS_CONTENT_LAYERS + GATYS_STYLE_LAYERS

    def __init__(self, size: int = 512, steps: int = 300, scales: int = 1, optimizer: str = "lbfgs",
                 lr: float | None = None, init: str = "content", style_loss: str = "gram",
                 style_weight: float | None = None, style_params: Mapping[str, Any] | None = None,
                 content_weight: float = 1.0, tv_weight: float = 0.0,
                 content_layers: Sequence[str] = GATYS_CONTENT_LAYERS, style_layers: Sequence[str] = GATYS_STYLE_LAYERS,
                 encoder: str = "vgg19", encoder_weights: str = "imagenet", pooling: str = "max",
                 preserve_color: str | None = None, device: str | torch.device | None = None, precision: str = "auto",
                 seed: int = 0) -> None:
        super().__init__(device, precision, seed)
        for name, value in (("size", size), ("steps", steps), ("scales", scales)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"gatys: {name} must be a positive integer; got {value!r}")
        if size < 2 ** (scales - 1) * 16:
            raise ValueError(f"gatys: size {size} with {scales} scales starts at {size >> (scales - 1)} px; the "
                             "coarsest scale needs 16 px or more (fewer scales or a larger size)")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"gatys: optimizer={optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if init not in INITS:
            raise ValueError(f"gatys: init={init!r} is not one of {', '.join(INITS)}")
        if preserve_color not in COLOR_MODES:
            raise ValueError(f"gatys: preserve_color={preserve_color!r} is not one of none, coral, luminance")
        LOSSES.get(style_loss)
        self.size, self.steps, self.scales, self.optimizer, self.init = size, steps, scales, optimizer, init
        self.lr = float(lr) if lr is not None else (1.0 if optimizer == "lbfgs" else 0.02)
        self.style_loss = style_loss
        self.style_weight = float(style_weight if style_weight is not None else DEFAULT_STYLE_WEIGHTS.get(style_loss, 1.0))
        self.style_params = dict(style_params if style_params is not None else DEFAULT_STYLE_PARAMS.get(style_loss, {}))
        self.content_weight, self.tv_weight = float(content_weight), float(tv_weight)
        self.content_layers, self.style_layers = list(content_layers), list(style_layers)
        self.encoder_weights, self.pooling, self.preserve_color = encoder_weights, pooling, preserve_color
        self.encoder = encoder
        self.memory_layers = tuple(self.content_layers + self.style_layers)
        terms: dict[str, Any] = {
            "content": {"loss": "content", "weight": self.content_weight, "layers": self.content_layers},
            "style": {"loss": style_loss, "weight": self.style_weight, "layers": self.style_layers, **self.style_params},
        }
        if self.tv_weight > 0:
            terms["tv"] = {"weight": self.tv_weight}
        self.network = VGGEncoder(encoder, layers=self.memory_layers, weights=encoder_weights,
                                  pooling=pooling).to(self.device).eval()
        self.objective = build_objective(terms, self.network)  # unknown style_params keys fail here, named

    def _start(self, content: Tensor, style: Tensor, generator: torch.Generator) -> Tensor:
        if self.init == "content":
            return content.clone()
        if self.init == "noise":
            return torch.rand(content.shape, generator=generator).to(content)
        mean = style.mean(dim=(2, 3), keepdim=True).expand_as(content)
        return (mean + 0.1 * (torch.rand(content.shape, generator=generator).to(content) - 0.5)).clamp(0, 1)

    def run(self, content: Tensor, style: Tensor, hooks: Sequence[OptimizationHooks] = (), **inputs: Any
            ) -> OptimizationResult:
        if inputs:
            raise ValueError(f"gatys takes no {', '.join(sorted(inputs))} (spatial guidance is strotss's)")
        check_pair(content, style)
        timer = Timer()
        generator = torch.Generator().manual_seed(self.seed)
        full = scaled_size(*content.shape[-2:], self.size)
        self.check_memory(self.network, full)
        # contiguous: an image decoded as (H, W, C) and permuted keeps its strides through clone(), which
        # L-BFGS's flat views of the gradient cannot take
        content, style = (x.to(self.device).float().contiguous() for x in (content, style))
        if self.preserve_color == "coral":
            style = SF.coral(style, content)
        records: list[ScaleRecord] = []
        image: Tensor | None = None
        for scale in range(1, self.scales + 1):
            size = scaled_size(*full, max(full) >> (self.scales - scale))
            scale_content = resize(content, size)
            scale_style = resize(style, scaled_size(*style.shape[-2:], max(size)))
            image = self._start(scale_content, scale_style, generator) if image is None else resize(image, size)
            image, record = self.guarded(size, lambda: self._optimize_scale(
                scale, image, scale_content, scale_style, hooks))
            records.append(record)
            for hook in hooks:
                hook.on_scale(record)
        assert image is not None
        if self.preserve_color == "luminance":
            from stylecore.stylize import preserve_luminance

            image = preserve_luminance(image, resize(content, tuple(image.shape[-2:])))
        return OptimizationResult(image.detach().float().clamp(0, 1).cpu(), records, self.settings(),
                                  self.network.describe(), self.precision, str(self.device), timer.seconds())

    def _optimize_scale(self, scale: int, start: Tensor, content: Tensor, style: Tensor,
                        hooks: Sequence[OptimizationHooks]) -> tuple[Tensor, ScaleRecord]:
        timer = Timer()
        layers = self.objective.feature_layers()
        with torch.no_grad(), self.autocast():
            targets = {"content": self.network(content, layers.get("content", set())),
                       "style": self.network(style, layers.get("style", set()))}
        image = start.detach().clone().requires_grad_(True)
        # L-BFGS one iteration per step (so the image is clamped and the hooks hear every step), with a strong-Wolfe
        # line search of at most 4 evaluations: without one, lr 1 overshoots (on a 32 px pair the objective rose
        # 60-fold in 4 steps), and PyTorch's default of max_eval = 1.25 × max_iter would leave the search one try
        optimizer = (torch.optim.LBFGS([image], lr=self.lr, max_iter=1, max_eval=4, history_size=50,
                                       line_search_fn="strong_wolfe")
                     if self.optimizer == "lbfgs" else torch.optim.Adam([image], lr=self.lr))
        latest: dict[str, float] = {}

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                out = self.objective(images={"pred": image}, features=targets)
            out.total.backward()
            latest.clear()
            latest.update(out.as_dict())
            if not first:  # the first evaluation is at the start image: the objective the run begins from
                first.update(latest)
            return out.total.detach()

        first: dict[str, float] = {}
        for step in range(1, self.steps + 1):
            optimizer.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            for hook in hooks:
                hook.on_step(scale, step, self.steps, latest)
        with torch.no_grad(), self.autocast():  # the objective of the image returned (clamped after the last step)
            last = self.objective(images={"pred": image}, features=targets).as_dict()
        return image.detach(), ScaleRecord(scale, tuple(image.shape[-2:]), self.steps, first, last, timer.seconds())
