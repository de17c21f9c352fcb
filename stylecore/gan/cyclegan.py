"""CycleGAN (Zhu et al. 2017): unpaired translation between two domains with cycle consistency."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stylecore import losses
from stylecore.gan.base import AdversarialOutput, HistoryPool, PhotoToDomain, register_gan, to_unit
from stylecore.gan.networks import PatchDiscriminator, ResnetGenerator, init_normal


@register_gan("cyclegan")
class CycleGAN(PhotoToDomain):
    """CycleGAN (Zhu et al. 2017): two ResNet-9 generators G: source → target and F: target → source, two
    70×70 PatchGANs, least-squares GAN loss, cycle λ = 10 and identity 0.5·λ, a history pool of 50 per domain.

    Generator objective (the reference's ``backward_G``)::

        L_G = GAN(D_t(G(s))) + GAN(D_s(F(t))) + λ(‖F(G(s)) − s‖₁ + ‖G(F(t)) − t‖₁) + λ_id·λ(‖G(t) − t‖₁ + ‖F(s) − s‖₁)

    Discriminator objective, each halved as in the reference: ½(D(real) term + D(pool(fake)) term).
    At ``width=64, blocks=9, d_width=64, d_layers=3`` each generator has 11,378,179 parameters and each
    discriminator 2,764,737 (the official code's ``netG resnet_9blocks``, ``netD basic``): 28,285,832 in all.
    """

    #: WGAN-GP needs the critic's gradient penalty, which StarGAN's step computes; CycleGAN's does not
    gan_losses = ("lsgan", "sgan", "hinge")

    def __init__(self, source: str = "photo", target: str = "art", width: int = 64, blocks: int = 9,
                 d_width: int = 64, d_layers: int = 3, gan_loss: str = "lsgan", cycle_weight: float = 10.0,
                 identity_weight: float = 0.5, pool_size: int = 50, seed: int = 0) -> None:
        super().__init__(source=source, target=target, width=width, blocks=blocks, d_width=d_width,
                         d_layers=d_layers, gan_loss=gan_loss, cycle_weight=cycle_weight,
                         identity_weight=identity_weight, pool_size=pool_size, seed=seed)
        self.check_settings(gan_loss, ("cycle_weight", "identity_weight"))
        self.generators["to_target"] = ResnetGenerator(width, blocks)
        self.generators["to_source"] = ResnetGenerator(width, blocks)
        self.discriminators["target"] = PatchDiscriminator(d_width, d_layers)
        self.discriminators["source"] = PatchDiscriminator(d_width, d_layers)
        init_normal(self)
        self.gan = losses.build(gan_loss)
        self.cycle = losses.build("cycle", weight=cycle_weight)
        self.identity = losses.build("identity", weight=cycle_weight * identity_weight)
        # per-rank pools: each DDP rank draws its own sequence (seeded apart), as each sees its own images
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
            else 0
        self.pools = {"target": HistoryPool(pool_size, seed * 1000 + 2 * rank),
                      "source": HistoryPool(pool_size, seed * 1000 + 2 * rank + 1)}

    def generate(self, images: Tensor, domain: str) -> Tensor:
        return self.generator_for(domain)(images)

    def generator_losses(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                         ) -> AdversarialOutput:
        g, f = self.generators["to_target"], self.generators["to_source"]
        with self.discriminators_frozen():  # D is a fixed critic in G's step
            fake_target, fake_source = g(source), f(target)
            terms = {
                "gan_target": self.gan.weight * self.gan(self.discriminators["target"](fake_target)),
                "gan_source": self.gan.weight * self.gan(self.discriminators["source"](fake_source)),
                "cycle_source": self.cycle.weight * self.cycle(f(fake_target), source),
                "cycle_target": self.cycle.weight * self.cycle(g(fake_source), target),
            }
            if self.identity.weight > 0:
                terms["identity_target"] = self.identity.weight * self.identity(g(target), target)
                terms["identity_source"] = self.identity.weight * self.identity(f(source), source)
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return AdversarialOutput(total, {k: v.detach() for k, v in terms.items()},
                                 {"fake_target": fake_target, "fake_source": fake_source})

    @torch.no_grad()
    def generated_without_grad(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                               ) -> dict[str, Tensor]:
        return {"fake_target": self.generators["to_target"](source),
                "fake_source": self.generators["to_source"](target)}

    def discriminator_inputs(self, generated: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"fake_target": self.pools["target"].query(generated["fake_target"]),
                "fake_source": self.pools["source"].query(generated["fake_source"])}

    def discriminator_losses(self, source: Tensor, target: Tensor, generated: dict[str, Tensor],
                             domains: Tensor | None = None) -> AdversarialOutput:
        terms, scores = {}, {}
        for side, real, fake in (("target", target, generated["fake_target"]),
                                 ("source", source, generated["fake_source"])):
            # real and fake in one forward: instance norm is per image, so this equals two forwards, and DDP sees
            # each parameter used once
            logits = self.discriminators[side](torch.cat([real, fake.detach().to(real.dtype)]))
            real_logits, fake_logits = logits.split([real.shape[0], fake.shape[0]])
            terms[f"d_{side}"] = 0.5 * self.gan.weight * self.gan.discriminator(real_logits, fake_logits)
            scores[f"d_{side}_real"] = real_logits.detach().float().mean()
            scores[f"d_{side}_fake"] = fake_logits.detach().float().mean()
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return AdversarialOutput(total, {**{k: v.detach() for k, v in terms.items()}, **scores})

    def sample_grid_images(self, source: Tensor, target: Tensor, generated: dict[str, Tensor]) -> list[Tensor]:
        with torch.no_grad():
            back = self.generators["to_source"](generated["fake_target"])
        return [to_unit(source), to_unit(generated["fake_target"]), to_unit(back)]

    def training_state(self) -> dict[str, Any]:
        return {"pools": {side: pool.state_dict() for side, pool in self.pools.items()}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        for side, pool_state in state.get("pools", {}).items():
            self.pools[side].load_state_dict(pool_state, self.device)
