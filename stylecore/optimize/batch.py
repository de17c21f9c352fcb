"""An optimisation method behind :class:`stylecore.stylize.Stylizer`'s batch interface (``prepare_styles`` once per
style, then a list of contents per call): what lets code written for feed-forward models — batch stylization of
whole datasets — optimise pairs instead, each image on its own."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from stylecore.data import resize_short_side
from stylecore.optimize.base import OptimizationHooks, OptimizationMethod, OptimizeMemoryError


class MethodStylizer:
    """``method`` run on each (3, H, W) content in [0, 1] with one prepared style; :meth:`details` says, per output
    of the last call, the objective's terms at the first and the last step and the seconds it took.

    ``style_size``: the style's short side before it is handed to the method (None keeps it). A content the method
    cannot take (too small, out of memory at its size) raises ``ValueError`` naming why, as a model's Stylizer does.
    """

    def __init__(self, method: OptimizationMethod, style_size: int | None = None,
                 hooks: Sequence[OptimizationHooks] = ()) -> None:
        self.method, self.style_size, self.hooks = method, style_size, list(hooks)
        self._details: list[dict[str, Any]] = []

    def prepare_styles(self, style: Tensor) -> Tensor:
        if style.dim() != 3 or style.shape[0] != 3:
            raise ValueError(f"style must be one RGB image (3, H, W); got {tuple(style.shape)}")
        return (resize_short_side(style, self.style_size) if self.style_size else style)[None].contiguous()

    def __call__(self, contents: Sequence[Tensor], style: Tensor) -> list[Tensor]:
        outputs, details = [], []
        for content in contents:
            try:
                result = self.method.run(content[None].contiguous(), style, hooks=self.hooks)
            except OptimizeMemoryError as error:  # this input is too large here; the next may fit
                raise ValueError(str(error)) from None
            outputs.append(result.image[0])
            details.append({"losses": {"first": result.scales[0].first, "last": result.scales[-1].last},
                            "seconds": round(result.seconds, 3)})
        self._details = details
        return outputs

    def details(self) -> list[dict[str, Any]]:
        return list(self._details)

    def describe(self) -> dict[str, Any]:
        """The method's settings and its encoder (network, weights, whether pretrained): a run's provenance."""
        return {"settings": self.method.settings(), "encoder": self.method.network.describe(),
                "precision": self.method.precision}

