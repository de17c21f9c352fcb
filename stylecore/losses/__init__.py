"""The loss library: ``names()`` lists every loss, ``build(name, **params)`` makes one.

Families: perceptual (content, gram, balanced_gram, mean_std), optimal transport (moments, remd,
self_similarity, palette, strotss), regularizers (tv, kl, disentanglement) and adversarial (sgan,
lsgan, wgan_gp, hinge, cycle, identity, cam).
"""

from stylecore.losses.base import LOSSES, FeatureLoss, Loss, build, describe, names, register_loss
from stylecore.losses import adversarial, perceptual, regularizers, transport  # noqa: F401  (registers)
from stylecore.losses.adversarial import GANLoss, gradient_penalty

__all__ = ["LOSSES", "FeatureLoss", "GANLoss", "Loss", "build", "describe", "gradient_penalty", "names",
           "register_loss"]
