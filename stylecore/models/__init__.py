"""Style transfer models, registered by name: ``names()``, ``build(name, **params)``, ``describe(name)``."""

from stylecore.models.base import (MODELS, StyleTransferModel, TrainingOutputs, TrainingPhase, build, describe,
                                   names, register_model)
from stylecore.models import adain, linear, magenta, magenta_lite, sanet, vae_adain  # noqa: F401  (registration)

__all__ = ["MODELS", "StyleTransferModel", "TrainingOutputs", "TrainingPhase", "build", "describe", "names",
           "register_model"]
