"""GAN translation models (photo → a domain), registered by name: ``names()``, ``build(name, **params)``.

They train adversarially in the one training loop (:class:`stylecore.gan.training.AdversarialTrainer`); see
:mod:`stylecore.gan.base` for the contract.
"""

from stylecore.gan.base import (GAN_MODELS, AdversarialOutput, HistoryPool, TranslationModel, build, describe,
                                names, parameter_count, register_gan)
from stylecore.gan import cyclegan, stargan, ugatit  # noqa: F401  (registration)

__all__ = ["GAN_MODELS", "AdversarialOutput", "HistoryPool", "TranslationModel", "build", "describe", "names",
           "parameter_count", "register_gan"]
