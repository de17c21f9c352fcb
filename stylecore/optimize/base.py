"""What every optimisation method shares: the registry, the hooks, the result, sizes, precision and memory.

An optimisation method stylizes one content × style pair by optimising the output image itself against a
perceptual objective (no trained network but the frozen encoder), as Gatys et al. 2016 and STROTSS do. Methods
are registered by name (``stylecore.optimize.names()``) and built with their settings; :meth:`run` takes
(1, 3, H, W) images in [0, 1] and returns an :class:`OptimizationResult`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.devices import best_device, is_out_of_memory
from stylecore.encoders import VGGEncoder, layer_channels, layer_stride
from stylecore.registry import Registry, accepted_parameters

METHODS: Registry["OptimizationMethod"] = Registry("optimisation method")


def register_method(name: str) -> Callable[[type], type]:
    return METHODS.register(name)


def names() -> list[str]:
    return METHODS.names()


def build(name: str, **settings: Any) -> "OptimizationMethod":
    """The method ``name`` with ``settings`` (each checked, unknown keys named with the accepted ones)."""
    return METHODS.build(name, **settings)


class OptimizeMemoryError(MemoryError):
    """An output size the device cannot hold; the message gives the size, the estimate and what to lower."""


class OptimizationHooks:
    """Callbacks of a run (all no-ops here): every step's terms, and each scale's end."""

    def on_step(self, scale: int, step: int, steps: int, terms: Mapping[str, float]) -> None: ...

    def on_scale(self, record: "ScaleRecord") -> None: ...


@dataclass
class ScaleRecord:
    """One scale of a run: its index (1-based), output size, steps, the objective's terms at its first and last
    step (weighted, and ``total``), and its seconds."""

    scale: int
    size: tuple[int, int]
    steps: int
    first: dict[str, float]
    last: dict[str, float]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "size": list(self.size), "steps": self.steps, "first": self.first,
                "last": self.last, "seconds": round(self.seconds, 3)}


@dataclass
class OptimizationResult:
    """The output (1, 3, H, W) in [0, 1] on the CPU, every scale's record, the method's settings and the encoder."""

    image: Tensor
    scales: list[ScaleRecord]
    settings: dict[str, Any]
    encoder: dict[str, str]
    precision: str
    device: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """What ``stylecore optimize`` writes beside the image: settings, encoder, and the per-scale losses."""
        return {"method": self.settings.get("method"), "settings": self.settings, "encoder": self.encoder,
                "precision": self.precision, "device": self.device, "seconds": round(self.seconds, 3),
                "size": list(self.image.shape[-2:]), "scales": [record.as_dict() for record in self.scales],
                **self.extra}


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side ``long_side`` and the aspect ratio kept (each side at least 1)."""
    factor = long_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) resized to ``size`` (antialiased when shrinking; bilinear)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def check_pair(content: Tensor, style: Tensor) -> None:
    for argument, image in (("content", content), ("style", style)):
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{argument} must be one RGB image (1, 3, H, W) in [0, 1]; got {shape}")
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"{argument} must hold finite values in [0, 1]")


def encoder_bytes_per_pixel(encoder: VGGEncoder, layers: Sequence[str], precision: str) -> float:
    """Bytes per output pixel one forward and backward pass through ``encoder`` up to the deepest of ``layers``
    keeps: every conv and ReLU output (saved for the backward) and as much again for their gradients."""
    deepest = max(encoder.layer_order.index(name) for name in layers)
    element = 2 if precision == "bf16" else 4
    kept = sum(layer_channels(name, encoder.arch) / layer_stride(name) ** 2
               for name in encoder.layer_order[: deepest + 1] if not name.startswith("pool"))
    return 2 * kept * element


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, or the machine's available memory (Linux), else None."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class OptimizationMethod:
    """Base of the registered methods: settings in the constructor (checked there), one pair per :meth:`run`."""

    registered_name: ClassVar[str] = ""
    #: the encoder layers whose activations bound a run's memory (the deepest layer any term reads)
    memory_layers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str | torch.device | None = None, precision: str = "auto", seed: int = 0) -> None:
        from stylecore.training import resolve_precision

        self.device = torch.device(device) if device is not None else best_device()
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision={precision!r} is not one of auto, fp32, bf16")
        self.precision = resolve_precision(precision, self.device)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        """Every constructor setting by name, and the method: what a run records."""
        values = {name: getattr(self, name) for name in accepted_parameters(type(self)) if hasattr(self, name)}
        values["device"] = str(self.device)
        return {"method": self.registered_name, **values}

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def check_memory(self, encoder: VGGEncoder, size: tuple[int, int], headroom: float = 0.8) -> None:
        """Refuse, before any compute, an output whose encoder pass would not fit in the device's free memory."""
        needed = encoder_bytes_per_pixel(encoder, self.memory_layers, self.precision) * size[0] * size[1]
        free = available_memory(self.device)
        if free is not None and needed > headroom * free:
            fits = int(math.sqrt(headroom * free / encoder_bytes_per_pixel(encoder, self.memory_layers,
                                                                             self.precision)))
            raise OptimizeMemoryError(
                f"{self.registered_name}: an output of {size[1]}x{size[0]} needs about {needed / 2**30:.1f} GiB for "
                f"its encoder passes on {self.device} ({self.precision}), and {free / 2**30:.1f} GiB is free; lower "
                f"the size (--size; about {fits}x{fits} fits), or use bf16 (--precision bf16) where supported")

    def guarded(self, size: tuple[int, int], work: Callable[[], Any]) -> Any:
        """Run ``work``, turning the device running out of memory into an :class:`OptimizeMemoryError`."""
        try:
            return work()
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            raise OptimizeMemoryError(f"{self.registered_name}: out of memory at {size[1]}x{size[0]} on "
                                      f"{self.device}: {str(error).splitlines()[0][:200]}; lower the size (--size)"
                                      ) from None

    def run(self, content: Tensor, style: Tensor, hooks: Sequence[OptimizationHooks] = (), **inputs: Any
            ) -> OptimizationResult:
        raise NotImplementedError


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
