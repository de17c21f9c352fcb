"""Adversarial losses on discriminator logits, and the cycle / identity / CAM losses.

Each GAN loss has a generator side and a discriminator side. Logits may be per image (B,) or a
PatchGAN map (B, 1, h, w): the loss is taken per logit and averaged per sample, so a PatchGAN
score is the mean over its patches (Isola et al. 2017).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.losses.base import Loss, check_weight, per_sample_mean, reduce, register_loss


def _check_logits(logits: Tensor, argument: str, loss: str) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() == 0:
        raise ValueError(f"{loss}: {argument} must be a (B,) or (B, …) tensor of logits")
    return logits.float()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty per sample: (‖∇_x̂ D(x̂)‖₂ − 1)² at x̂ = ε·real + (1 − ε)·fake, ε ~ U(0, 1)
    per sample (Gulrajani et al. 2017). Differentiable w.r.t. the critic's parameters."""
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator).to(device=real.device, dtype=real.dtype)
    interpolates = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(interpolates)
    (grads,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1.0).square()


class GANLoss(Loss):
    """Base of the GAN losses: ``forward(fake_logits)`` is the generator side; ``discriminator(real,
    fake)`` the discriminator side, the sum of a term on real and a term on fake logits."""

    slots = {"input": ("value", "fake_logits")}

    def generator_values(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def real_values(self, real: Tensor) -> Tensor:
        raise NotImplementedError

    def fake_values(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, input: Tensor, reduction: str = "mean") -> Tensor:
        """Generator side on the discriminator's logits for generated images."""
        fake = _check_logits(input, "fake logits", self.name)
        return reduce(per_sample_mean(self.generator_values(fake)), reduction)  # type: ignore[arg-type]

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor, reduction: str = "mean") -> Tensor:
        """Discriminator side on logits for real and generated images."""
        real = _check_logits(real_logits, "real logits", self.name)
        fake = _check_logits(fake_logits, "fake logits", self.name)
        if real.shape[0] != fake.shape[0]:
            raise ValueError(f"{self.name}: real and fake logits differ in batch size ({real.shape[0]} vs {fake.shape[0]})")
        values = per_sample_mean(self.real_values(real)) + per_sample_mean(self.fake_values(fake))
        return reduce(values, reduction)  # type: ignore[arg-type]


@register_loss("sgan")
class StandardGANLoss(GANLoss):
    """Standard GAN, non-saturating (Goodfellow et al. 2014): L_D = −log σ(D(x)) − log(1 − σ(D(G(z)))),
    L_G = −log σ(D(G(z))), on logits via softplus for stability."""

    def generator_values(self, fake: Tensor) -> Tensor:
        return F.softplus(-fake)

    def real_values(self, real: Tensor) -> Tensor:
        return F.softplus(-real)

    def fake_values(self, fake: Tensor) -> Tensor:
        return F.softplus(fake)


@register_loss("lsgan")
class LeastSquaresGANLoss(GANLoss):
    """Least-squares GAN (Mao et al. 2017), targets 1 for real and 0 for fake:
    L_D = (D(x) − 1)² + D(G(z))², L_G = (D(G(z)) − 1)² (CycleGAN's and U-GAT-IT's form)."""

    def generator_values(self, fake: Tensor) -> Tensor:
        return (fake - 1.0).square()

    def real_values(self, real: Tensor) -> Tensor:
        return (real - 1.0).square()

    def fake_values(self, fake: Tensor) -> Tensor:
        return fake.square()


@register_loss("hinge")
class HingeGANLoss(GANLoss):
    """Hinge GAN (Lim & Ye 2017; Miyato et al. 2018): L_D = max(0, 1 − D(x)) + max(0, 1 + D(G(z))),
    L_G = −D(G(z))."""

    def generator_values(self, fake: Tensor) -> Tensor:
        return -fake

    def real_values(self, real: Tensor) -> Tensor:
        return F.relu(1.0 - real)

    def fake_values(self, fake: Tensor) -> Tensor:
        return F.relu(1.0 + fake)


@register_loss("wgan_gp")
class WassersteinGPLoss(GANLoss):
    """WGAN-GP (Gulrajani et al. 2017): L_D = −D(x) + D(G(z)) + λ·(‖∇_x̂ D(x̂)‖₂ − 1)², L_G = −D(G(z)).

    The penalty is added by :meth:`discriminator` when given the critic and the real and fake images;
    ``gp_weight`` is λ (10 in the paper).
    """

    def __init__(self, weight: float = 1.0, gp_weight: float = 10.0) -> None:
        super().__init__(weight)
        self.gp_weight = check_weight(gp_weight, "wgan_gp: gp_weight")

    def generator_values(self, fake: Tensor) -> Tensor:
        return -fake

    def real_values(self, real: Tensor) -> Tensor:
        return -real

    def fake_values(self, fake: Tensor) -> Tensor:
        return fake

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor, reduction: str = "mean", *,
                      critic: Callable[[Tensor], Tensor] | None = None, real_images: Tensor | None = None,
                      fake_images: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        values = super().discriminator(real_logits, fake_logits, reduction="none")
        if critic is not None:
            if real_images is None or fake_images is None:
                raise ValueError("wgan_gp: the gradient penalty needs real_images and fake_images with the critic")
            values = values + self.gp_weight * gradient_penalty(critic, real_images, fake_images, generator)
        return reduce(values, reduction)  # type: ignore[arg-type]


class PixelLoss(Loss):
    """Distance between two images: L1 (default) or MSE, averaged per sample."""

    def __init__(self, weight: float = 1.0, distance: str = "l1") -> None:
        super().__init__(weight)
        if distance not in ("l1", "mse"):
            raise ValueError(f"{self.name}: distance={distance!r} is not one of 'l1', 'mse'")
        self.distance = distance

    def forward(self, input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        if input.shape != target.shape:
            raise ValueError(f"{self.name}: input {tuple(input.shape)} and target {tuple(target.shape)} must have "
                             "the same shape")
        diff = input.float() - target.float()
        values = per_sample_mean(diff.abs() if self.distance == "l1" else diff.square())
        return reduce(values, reduction)  # type: ignore[arg-type]


@register_loss("cycle")
class CycleLoss(PixelLoss):
    """Cycle consistency (Zhu et al. 2017): ‖F(G(x)) − x‖₁, the reconstruction against the original."""

    slots = {"input": ("image", "reconstruction"), "target": ("image", "content")}


@register_loss("identity")
class IdentityLoss(PixelLoss):
    """Identity loss: ‖G(y) − y‖₁ for an input already in the output domain (Zhu et al. 2017;
    with ``distance="mse"`` SANet's L_id1, e.g. the output for content = style = c against c)."""

    slots = {"input": ("image", "identity"), "target": ("image", "content")}


@register_loss("cam")
class CAMLoss(Loss):
    """U-GAT-IT class-activation-map loss (Kim et al. 2020).

    Generator side (auxiliary classifier η_s): −(E_{x∈X_s}[log η_s(x)] + E_{x∈X_t}[log(1 − η_s(x))]),
    i.e. BCE on logits with ``positive`` (source-domain inputs) → 1 and ``negative`` (target-domain
    inputs) → 0. Discriminator side (η_D, least squares as in the reference code):
    (η_D(real) − 1)² + η_D(fake)², with ``positive`` = real and ``negative`` = fake logits.
    """

    slots = {"positive": ("value", "cam_source_logits"), "negative": ("value", "cam_target_logits")}

    def forward(self, positive: Tensor, negative: Tensor, reduction: str = "mean", side: str = "generator") -> Tensor:
        pos = _check_logits(positive, "positive logits", "cam")
        neg = _check_logits(negative, "negative logits", "cam")
        if side == "generator":
            values = per_sample_mean(F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")) \
                + per_sample_mean(F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none"))
        elif side == "discriminator":
            values = per_sample_mean((pos - 1.0).square()) + per_sample_mean(neg.square())
        else:
            raise ValueError(f"cam: side={side!r} is not one of 'generator', 'discriminator'")
        return reduce(values, reduction)  # type: ignore[arg-type]
