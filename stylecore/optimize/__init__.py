"""Optimisation-based stylization: each output image optimised against a perceptual objective.

``stylecore.optimize.names()`` lists the methods (``gatys``, ``strotss``); ``build(name, **settings)`` makes one,
and its ``run(content, style, hooks=…)`` stylizes a pair of (1, 3, H, W) images in [0, 1]::

    from stylecore import optimize
    result = optimize.build("strotss", size=256, encoder_weights="imagenet").run(content, style)
    result.image          # (1, 3, H, W) in [0, 1]
    result.as_dict()      # settings, encoder, per-scale losses and seconds
"""

from stylecore.optimize import gatys, strotss  # noqa: F401  (registers the methods)
from stylecore.optimize.base import (METHODS, OptimizationHooks, OptimizationMethod, OptimizationResult,
                                     OptimizeMemoryError, ScaleRecord, build, names)

__all__ = ["METHODS", "OptimizationHooks", "OptimizationMethod", "OptimizationResult", "OptimizeMemoryError",
           "ScaleRecord", "build", "names"]
