"""The model contract every style transfer method implements, and the model registry.

A model maps a content batch and a style batch, both RGB in [0, 1], to a stylized batch. Inference
is split into four steps so that one Stylizer serves every method (α, several styles, tiling):

* ``content_code(content)`` – what the model keeps of the content (encoder features; for Magenta
  the image itself and its own style embedding, used for α);
* ``style_code(style)`` – what it keeps of a style (statistics, features, an embedding, a VAE code);
* ``transfer(content_code, style_code)`` – the stylized representation;
* ``decode(representation, content_code, alpha)`` – α-blend with the content's own representation
  and decode to an image.

Several styles are mixed by weighted sums, of the style codes where the transfer is linear in them
(``blend = "code"``: AdaIN's (μ, σ), LinearTransfer's matrix and mean, Magenta's embedding, the VAE
code) and of the transferred features otherwise (``blend = "features"``: SANet's attention).

Training: ``training_outputs(content, style, layers, phase)`` returns the tensors an objective reads,
by role (images, encoder features already computed, plain values). ``layers`` maps every role the
objective reads to the encoder layers it needs from it (empty for image and value roles), so the
model encodes each input once for itself and the losses, and skips outputs no term reads.
``default_objective(style_loss=...)`` gives the paper's loss configuration with the style term
optionally replaced by any registered style loss on the same layers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.encoders import VGGEncoder
from stylecore.registry import Registry

MODELS: Registry["StyleTransferModel"] = Registry("model")
register_model = MODELS.register


def names() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()


def build(name: str, **params: Any) -> "StyleTransferModel":
    """Build the model registered as ``name``; unknown parameters fail with the accepted list."""
    return MODELS.build(name, **params)


def describe(name: str) -> str:
    """One-line description of model ``name``."""
    return MODELS.describe(name)


@dataclass
class TrainingOutputs:
    """What one training forward produced, by role, for :class:`stylecore.objective.Objective`."""

    images: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    values: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingPhase:
    """A stretch of training with its own trainable parameters and objective.

    ``fraction`` of the total steps; phases run in order. Most models have one phase ("main").
    """

    name: str
    fraction: float


def check_image_batch(x: Tensor, argument: str, min_side: int = 1) -> Tensor:
    """Validate an RGB batch in [0, 1]; a grayscale batch is expanded to RGB as a user would expect."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument} must be a tensor batch (B, 3, H, W) in [0, 1]; got {type(x).__name__} "
                        "(load files with stylecore.stylize.load_image)")
    if x.dim() == 3:
        raise ValueError(f"{argument} has shape {tuple(x.shape)}: add a batch dimension, e.g. x.unsqueeze(0)")
    if x.dim() != 4:
        raise ValueError(f"{argument} must have shape (B, 3, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{argument} has dtype {x.dtype}; convert to float in [0, 1] (e.g. x.float() / 255)")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        raise ValueError(f"{argument} has 4 channels (RGBA); composite the alpha channel onto a background "
                         "first (stylecore.stylize.load_image does this) or drop it with x[:, :3]")
    elif x.shape[1] != 3:
        raise ValueError(f"{argument} must have 3 (RGB) or 1 (grayscale) channels; got {x.shape[1]}")
    h, w = x.shape[-2:]
    if min(h, w) < min_side:
        raise ValueError(f"{argument} is {h}x{w} pixels; this model needs at least {min_side} pixels on each "
                         "side (its encoder downsamples by that much)")
    return x


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to a multiple (bottom/right); returns the padded batch and the original size."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        # Reflection needs pad < size; replicate covers images smaller than the pad.
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


def select_batch(code: Any, index: Tensor) -> Any:
    """The batch entries ``index`` (1-D, repeats allowed) of a code: every tensor nested in tuples, lists or
    dicts is indexed along its first (batch) dimension, which every model's codes share."""
    if isinstance(code, Tensor):
        return code.index_select(0, index.to(code.device))
    if isinstance(code, Mapping):
        return {key: select_batch(value, index) for key, value in code.items()}
    if isinstance(code, (tuple, list)):
        return type(code)(select_batch(value, index) for value in code)
    return code


def weighted_sum(items: Sequence[Any], weights: Sequence[float]) -> Any:
    """Σ w_i · item_i over tensors, or element-wise over (nested) tuples / dicts of tensors."""
    first = items[0]
    if isinstance(first, Tensor):
        return sum(w * item for w, item in zip(weights, items))
    if isinstance(first, Mapping):
        return {key: weighted_sum([item[key] for item in items], weights) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(weighted_sum([item[i] for item in items], weights) for i in range(len(first)))
    raise TypeError(f"cannot blend style codes of type {type(first).__name__}")


class StyleTransferModel(nn.Module):
    """Base class of every registered model; see the module docstring for the contract."""

    registered_name: ClassVar[str] = ""
    #: "code" – mix several styles by their codes; "features" – by their transferred features.
    blend: ClassVar[str] = "code"
    #: constructor arguments replaced when rebuilding from a checkpoint (its state supersedes them)
    checkpoint_overrides: ClassVar[dict[str, Any]] = {}
    #: the ``weights`` spec of published pretrained weights (``stylecore.load("pretrained:<name>")``), if any
    pretrained_weights: ClassVar[str | None] = None
    #: feature roles the model computes in its own encoder's space (no image has them) → the role that stands in
    #: for each when the objective reads another encoder (``TrainConfig.loss_encoder``), e.g. AdaIN's target → content
    own_space_roles: ClassVar[dict[str, str]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__()
        # The constructor arguments, so that a checkpoint can rebuild the model (see stylecore.load).
        self.params = copy.deepcopy(params)

    # -- identity ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.registered_name

    def config(self) -> dict[str, Any]:
        return {"model": self.registered_name, "params": copy.deepcopy(self.params)}

    @property
    def size_multiple(self) -> int:
        """Content sides are padded to a multiple of this (the decoder's total upsampling)."""
        return 8

    @property
    def min_side(self) -> int:
        """The smallest image side the model accepts."""
        return 16

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- the pieces of inference ---------------------------------------------------------------

    def content_code(self, content: Tensor) -> Any:
        raise NotImplementedError

    def style_code(self, style: Tensor) -> Any:
        raise NotImplementedError

    def transfer(self, content_code: Any, style_code: Any) -> Any:
        raise NotImplementedError

    def decode(self, representation: Any, content_code: Any, alpha: float = 1.0) -> Tensor:
        raise NotImplementedError

    def mix_style_codes(self, codes: Sequence[Any], weights: Sequence[float]) -> Any:
        """The style code of a weighted mix of styles (only for ``blend = "code"`` models)."""
        return weighted_sum(codes, weights)

    def stylize(self, content: Tensor, style_codes: Sequence[Any], weights: Sequence[float] | None = None,
                alpha: float = 1.0) -> Tensor:
        """Stylize ``content`` with one or more precomputed style codes mixed by ``weights``.

        Content of any size: padded to :attr:`size_multiple`, cropped back. Weights are normalised
        to sum to 1. The output is not clamped (training needs the raw decoder output).
        """
        content = check_image_batch(content, "content", self.min_side)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}")
        weights = normalize_weights(weights, len(style_codes))
        padded, (h, w) = pad_to_multiple(content, self.size_multiple)
        code = self.content_code(padded)
        if self.blend == "code" or len(style_codes) == 1:
            mixed = style_codes[0] if len(style_codes) == 1 else self.mix_style_codes(style_codes, weights)
            representation = self.transfer(code, mixed)
        else:
            representation = weighted_sum([self.transfer(code, s) for s in style_codes], weights)
        return self.decode(representation, code, float(alpha))[..., :h, :w]

    def forward(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        """Stylize a content batch with a style batch (same batch size, or one style for all)."""
        style = check_image_batch(style, "style", self.min_side)
        content = check_image_batch(content, "content", self.min_side)
        if style.shape[0] not in (1, content.shape[0]):
            raise ValueError(f"style batch has {style.shape[0]} images, content {content.shape[0]}: give one "
                             "style per content image or a single style for all")
        pairs = torch.arange(content.shape[0], device=content.device)
        # One style for the whole batch is encoded once, not once per content image.
        return self.stylize_pairs(content, style, pairs, pairs if style.shape[0] > 1 else torch.zeros_like(pairs), alpha)

    def stylize_pairs(self, contents: Tensor, styles: Tensor, content_index: Tensor, style_index: Tensor,
                      alpha: float = 1.0) -> Tensor:
        """Stylize pair k = (contents[content_index[k]], styles[style_index[k]]) for every k, encoding each
        distinct content and style once: scoring every content × every style pays N + M encodings, not
        2 · N · M. Equal to ``forward`` on the gathered batches (same padding, codes and decoding)."""
        styles = check_image_batch(styles, "styles", self.min_side)
        contents = check_image_batch(contents, "contents", self.min_side)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}")
        if content_index.dim() != 1 or content_index.shape != style_index.shape:
            raise ValueError(f"content_index {tuple(content_index.shape)} and style_index {tuple(style_index.shape)} "
                             "must be 1-D and of one length: one entry per pair")
        for name, index, batch in (("content_index", content_index, contents), ("style_index", style_index, styles)):
            if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < batch.shape[0]:
                raise ValueError(f"{name} must lie in [0, {batch.shape[0]}), the images given; got "
                                 f"[{int(index.min())}, {int(index.max())}]")
        padded, (h, w) = pad_to_multiple(contents, self.size_multiple)
        content_code = select_batch(self.content_code(padded), content_index)
        style_code = select_batch(self.style_code(styles), style_index)
        return self.decode(self.transfer(content_code, style_code), content_code, float(alpha))[..., :h, :w]

    # -- training ------------------------------------------------------------------------------

    def training_phases(self) -> list[TrainingPhase]:
        return [TrainingPhase("main", 1.0)]

    def trainable_modules(self, phase: str = "main") -> list[nn.Module]:
        """The modules trained in ``phase``; everything else stays frozen."""
        raise NotImplementedError

    def set_phase(self, phase: str) -> None:
        """Make exactly the parameters of ``phase`` trainable."""
        trainable = {id(p) for module in self.trainable_modules(phase) for p in module.parameters()}
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in trainable)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter trained in some phase (what the optimizer holds)."""
        seen: set[int] = set()
        for phase in self.training_phases():
            for module in self.trainable_modules(phase.name):
                for parameter in module.parameters():
                    if id(parameter) not in seen:
                        seen.add(id(parameter))
                        yield parameter

    def loss_encoder(self) -> VGGEncoder:
        """The frozen encoder the objective reads features from (the model's own where it has one)."""
        raise NotImplementedError

    def default_objective(self, phase: str = "main", style_loss: str | None = None,
                          style_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The paper's objective config for ``phase``; ``style_loss`` swaps the style term's loss."""
        raise NotImplementedError

    def training_outputs(self, content: Tensor, style: Tensor, layers: Mapping[str, set[str]],
                         phase: str = "main") -> TrainingOutputs:
        raise NotImplementedError

    def persistent_state(self) -> dict[str, Tensor]:
        """The state a checkpoint stores: everything but frozen encoders (rebuilt from their weights spec)."""
        skip = tuple(f"{name}." for name, module in self.named_children() if isinstance(module, VGGEncoder))
        return {key: value for key, value in self.state_dict().items() if not key.startswith(skip)}


def replace_style_term(objective: dict[str, Any], style_loss: str | None,
                       style_params: Mapping[str, Any] | None = None, term: str = "style") -> dict[str, Any]:
    """Swap the loss of the ``style`` term, keeping its weight and layers unless ``style_params`` says otherwise.

    Only the loss formula changes, so a model × loss grid compares losses on the same layers.
    Parameters of the native loss that the new one does not take (e.g. mean_std's eps) are dropped.
    """
    from stylecore.losses import LOSSES
    from stylecore.registry import accepted_parameters

    if style_loss is None and not style_params:
        return objective
    objective = copy.deepcopy(objective)
    settings = dict(objective[term])
    if style_loss is not None:
        cls = LOSSES.get(style_loss)
        slot_kinds = {kind for kind, _ in cls.slots.values()}
        if slot_kinds != {"features"}:
            raise ValueError(f"style_loss={style_loss!r} does not compare encoder features (its inputs: "
                             f"{', '.join(cls.slots)}); choose one of the feature style losses")
        keep = {"weight", "layers"} | set(cls.slots)
        settings = {k: v for k, v in settings.items() if k in keep and k in set(accepted_parameters(cls)) | keep}
        settings["loss"] = style_loss
    settings.update(dict(style_params or {}))
    objective[term] = settings
    return objective


def normalize_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if count < 1:
        raise ValueError("give at least one style")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} style weights for {count} styles; give one weight per style")
    if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be ≥ 0 with a positive sum; got {weights}")
    total = sum(weights)
    return [w / total for w in weights]
