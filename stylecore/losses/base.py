"""Loss base classes and the loss registry.

Every loss is a small ``nn.Module`` with a registered name, a ``weight`` (applied by the objective)
and a ``forward`` that returns a per-sample vector with ``reduction="none"`` or its batch mean.

A loss declares its *slots*: the inputs it compares, each of a kind (encoder ``features``, an
``image``, or a plain ``value`` such as logits or a latent mean) and a default *role* — which tensor
of a training step fills it (``pred``, ``content``, ``style``, …). The objective fills the slots by
role, so any loss plugs into any model; a config can re-route a slot (``target: adain_target``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from stylecore.encoders import check_layer_names
from stylecore.registry import Registry

Reduction = Literal["mean", "none"]
SlotKind = Literal["features", "image", "value"]
LayerSpec = Union[Sequence[str], Mapping[str, float], None]

LOSSES: Registry["Loss"] = Registry("loss")
register_loss = LOSSES.register


def names() -> list[str]:
    """Names of every registered loss."""
    return LOSSES.names()


def build(name: str, **params: Any) -> "Loss":
    """Build the loss registered as ``name``; unknown parameters fail with the accepted list."""
    return LOSSES.build(name, **params)


def describe(name: str) -> str:
    """One-line description of loss ``name`` (the first line of its docstring)."""
    return LOSSES.describe(name)


def reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction={reduction!r} is not one of 'mean', 'none'")


def check_weight(value: Any, argument: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be a number ≥ 0; got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{argument} must be a finite number ≥ 0; got {value!r}")
    return number


def parse_layer_weights(layers: LayerSpec, default: Sequence[str], loss_name: str) -> dict[str, float]:
    """``["relu1_1", …]`` (weights 1) or ``{"relu1_1": 0.5, …}`` → ordered {layer: weight}."""
    if layers is None:
        layers = list(default)
    if isinstance(layers, str):
        raise ValueError(f"{loss_name}: layers must be a list of layer names or a mapping of layer → weight, "
                         f"not the string {layers!r} (write [{layers!r}])")
    if isinstance(layers, Mapping):
        weights = {str(k): check_weight(v, f"{loss_name}: weight of layer {k!r}") for k, v in layers.items()}
    else:
        weights = {str(k): 1.0 for k in layers}
    if not weights:
        raise ValueError(f"{loss_name}: layers is empty; give at least one layer name")
    # Any encoder's names (VGG-19's include VGG-16's); the encoder in use checks its own arch later.
    check_layer_names(weights, "any", argument=f"{loss_name}: layers")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"{loss_name}: every layer weight is 0; at least one must be positive")
    return weights


class Loss(nn.Module):
    """Base class: a named, weighted loss term with declared input slots."""

    registered_name: ClassVar[str] = ""
    #: slot name → (kind, default role); the order is the order of forward's positional arguments.
    slots: ClassVar[dict[str, tuple[SlotKind, str]]] = {}

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = check_weight(weight, f"{self.registered_name or type(self).__name__}: weight")

    @property
    def name(self) -> str:
        return self.registered_name or type(self).__name__

    def slot_layers(self, slot: str) -> list[str]:
        """Encoder layers this loss reads from a ``features`` slot."""
        return []

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"


class FeatureLoss(Loss):
    """A loss comparing encoder features of an input with a target, summed over weighted layers.

    Subclasses implement :meth:`layer_values`: per-sample values (B,) for one layer.
    """

    slots = {"input": ("features", "pred"), "target": ("features", "style")}
    default_layers: ClassVar[tuple[str, ...]] = ()
    #: whether input and target must have equal spatial size at each layer
    same_size: ClassVar[bool] = False

    def __init__(self, layers: LayerSpec = None, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.layer_weights = parse_layer_weights(layers, self.default_layers, self.name)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_weights)

    def slot_layers(self, slot: str) -> list[str]:
        return self.layers

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, layers={self.layer_weights}"

    def check_features(self, features: Mapping[str, Tensor], argument: str) -> None:
        if not isinstance(features, Mapping):
            raise TypeError(f"{self.name}: {argument} must be a dict of layer name → tensor "
                            f"(an encoder output); got {type(features).__name__}")
        missing = [layer for layer in self.layer_weights if layer not in features]
        if missing:
            raise ValueError(f"{self.name}: {argument} lacks layer(s) {', '.join(missing)}; "
                             f"it has {', '.join(features) or 'none'}")

    def forward(self, input: Mapping[str, Tensor], target: Mapping[str, Tensor],
                reduction: Reduction = "mean") -> Tensor:
        self.check_features(input, "input features")
        self.check_features(target, "target features")
        total: Tensor | float = 0.0
        for layer, layer_weight in self.layer_weights.items():
            x, y = input[layer], target[layer]
            self.check_pair(x, y, layer)
            if layer_weight == 0:
                continue
            total = total + layer_weight * self.layer_values(x, y)
        return reduce(total, reduction)  # type: ignore[arg-type]

    def check_pair(self, x: Tensor, y: Tensor, layer: str) -> None:
        if x.dim() != 4 or y.dim() != 4:
            raise ValueError(f"{self.name}: features at {layer} must be (B, C, H, W); got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if x.shape[:2] != y.shape[:2]:
            raise ValueError(f"{self.name}: input and target at {layer} differ in batch or channels: "
                             f"{tuple(x.shape)} vs {tuple(y.shape)}")
        if self.same_size and x.shape != y.shape:
            raise ValueError(f"{self.name}: input and target at {layer} must have the same shape; got "
                             f"{tuple(x.shape)} vs {tuple(y.shape)} (compare images of equal size)")

    def layer_values(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


def per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, …) → (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def per_sample_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, …) → (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


class DeviceGenerators:
    """A loss's random draws on the device its inputs are on: a private generator per device, each seeded with
    ``seed``, or None (the device's global RNG, which training checkpoints save) when ``seed`` is None."""

    def __init__(self, seed: int | None) -> None:
        self.seed = None if seed is None else int(seed)
        self.by_device: dict[str, torch.Generator] = {}

    def on(self, device: torch.device | str) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(torch.device(device))
        if key not in self.by_device:
            self.by_device[key] = torch.Generator(key).manual_seed(self.seed)
        return self.by_device[key]


