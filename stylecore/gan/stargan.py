"""StarGAN (Choi et al. 2018): one generator for every domain, conditioned on the target domain's label, and one
discriminator that also classifies the domain."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore import losses
from stylecore.gan.base import AdversarialOutput, TranslationModel, register_gan, to_unit


def _norm(channels: int) -> nn.InstanceNorm2d:
    # affine as in the reference; instance statistics at test time too: the reference builds its norms with
    # track_running_stats=True but never switches them to eval, so its translations use each image's statistics
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels),
                                  nn.ReLU(True), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  _norm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConditionalGenerator(nn.Module):
    """StarGAN's generator: the target label as constant channels concatenated to the image, c7s1-64, two 4×4
    stride-2 downsamplings, ``blocks`` residual blocks, two 4×4 transposed upsamplings, c7s1-3, tanh; zero padding
    (the reference notes that reflection padding breaks this label conditioning), affine instance norm.
    8,430,528 parameters at ``width=64, blocks=6`` and 5 domains (the official defaults)."""

    def __init__(self, domains: int, width: int = 64, blocks: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3 + domains, width, 7, padding=3, bias=False), _norm(width), nn.ReLU(True)]
        channels = width
        for _ in range(2):
            layers += [nn.Conv2d(channels, channels * 2, 4, stride=2, padding=1, bias=False), _norm(channels * 2),
                       nn.ReLU(True)]
            channels *= 2
        layers += [_Residual(channels) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1, bias=False),
                       _norm(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.Conv2d(channels, 3, 7, padding=3, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """``labels``: (B, domains) one-hot (or any mix) of the target domain."""
        planes = labels.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.net(torch.cat([x, planes], 1))


class ClassifyingDiscriminator(nn.Module):
    """StarGAN's discriminator: ``layers`` 4×4 stride-2 convolutions (LeakyReLU 0.01, no normalization), then a
    3×3 convolution to one realness logit per patch and a convolution over the whole remaining map to one logit
    per domain. 44,762,048 parameters at ``width=64, layers=6``, 5 domains, ``image_size=128`` (the official
    defaults). At other input sizes the domain logits are averaged over the positions the head slides over."""

    def __init__(self, domains: int, image_size: int = 128, width: int = 64, layers: int = 6) -> None:
        super().__init__()
        if image_size % 2 ** layers:
            raise ValueError(f"stargan: image_size={image_size} must be a multiple of 2^d_layers = {2 ** layers}")
        modules: list[nn.Module] = []
        channels = 3
        for n in range(layers):
            modules += [nn.Conv2d(channels, width * 2 ** n, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            channels = width * 2 ** n
        self.body = nn.Sequential(*modules)
        self.realness = nn.Conv2d(channels, 1, 3, padding=1, bias=False)
        self.classes = nn.Conv2d(channels, domains, image_size // 2 ** layers, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.realness(h), self.classes(h).mean((2, 3))


@register_gan("stargan")
class StarGAN(TranslationModel):
    """StarGAN (Choi et al. 2018) over the photos (``source``) and the artworks' ``label`` values ``domains``: one
    generator G(x, c) for every target domain c, one discriminator with a realness and a domain-classification
    head. Each step draws target domains by permuting the batch's own labels (the reference's rule), so every
    domain is translated to every other, photos included.

        L_D = −D(x) + D(G(x, c)) + λ_gp GP + λ_cls CE(D_cls(x), c_x)
        L_G = −D(G(x, c)) + λ_cls CE(D_cls(G(x, c)), c) + λ_rec ‖G(G(x, c), c_x) − x‖₁

    The official defaults (yunjey/stargan): WGAN-GP with λ_gp 10, λ_cls 1, λ_rec 10, Adam lr 1e-4 for both, β
    (0.5, 0.999), five D updates per G update (n_critic 5), D first, linear decay over the second half; the
    networks at ``width 64``, 6 residual blocks, 6 discriminator layers, 128² images: 8,430,528 + 44,762,048
    parameters with 5 domains (the photo domain and 4 artwork domains here).
    """

    discriminator_first = True
    multi_domain = True
    gan_losses = ("wgan_gp", "lsgan", "sgan", "hinge")
    paper_training = {"lr": 1e-4, "betas": (0.5, 0.999), "n_critic": 5, "lr_schedule": "linear_decay",
                      "decay_start": 0.5}

    def __init__(self, source: str = "photo", domains: tuple[str, ...] | list[str] = ("art",), label: str = "style",
                 width: int = 64, blocks: int = 6, d_width: int = 64, d_layers: int = 6, image_size: int = 128,
                 gan_loss: str = "wgan_gp", classification_weight: float = 1.0, reconstruction_weight: float = 10.0,
                 gp_weight: float = 10.0, seed: int = 0) -> None:
        domains = list(domains) if isinstance(domains, (list, tuple)) else domains
        super().__init__(source=source, domains=domains, label=label, width=width, blocks=blocks, d_width=d_width,
                         d_layers=d_layers, image_size=image_size, gan_loss=gan_loss,
                         classification_weight=classification_weight, reconstruction_weight=reconstruction_weight,
                         gp_weight=gp_weight, seed=seed)
        names = [source, *domains] if isinstance(domains, list) else None
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"stargan: source and domains must be distinct domain names (at least one artwork "
                             f"domain); got source {source!r}, domains {domains!r}")
        self.check_settings(gan_loss, ("classification_weight", "reconstruction_weight", "gp_weight"))
        self.label = label
        self.names = names  # index 0: the photos
        self.generators["generator"] = ConditionalGenerator(len(names), width, blocks)
        self.discriminators["discriminator"] = ClassifyingDiscriminator(len(names), image_size, d_width, d_layers)
        self.gan = losses.build(gan_loss, **({"gp_weight": gp_weight} if gan_loss == "wgan_gp" else {}))
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
            else 0
        # the target draw and the penalty's interpolation: its own stream, per rank, checkpointed
        self.rng = torch.Generator().manual_seed(seed * 1000 + rank)
        self._targets: Tensor | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return (*self.names[1:], self.names[0])

    @classmethod
    def domain_params(cls, label: str, domains: list[str]) -> dict[str, Any]:
        if not domains:
            raise ValueError("stargan needs at least one artwork domain")
        return {"label": label, "domains": list(domains)}

    def batch_domains(self, sources: int, style_labels: list[dict] | None) -> Tensor:
        if not style_labels:
            raise ValueError(f"stargan trains on labelled artworks: its style batches need each sample's "
                             f"{self.label!r} label (shard folders whose manifest lists it); this batch has none")
        indices = [0] * sources
        for labels in style_labels:
            value = str((labels or {}).get(self.label))
            if value not in self.names[1:]:
                raise ValueError(f"stargan: a style sample has {self.label} = {value!r}, which is not one of its "
                                 f"domains {', '.join(self.names[1:])}; filter the style side to them (style_labels, "
                                 f"stylecore train --domain {self.label}=…)")
            indices.append(self.names.index(value))
        return torch.tensor(indices)

    def _one_hot(self, indices: Tensor) -> Tensor:
        return F.one_hot(indices, len(self.names)).float()

    def generate(self, images: Tensor, domain: str) -> Tensor:
        index = torch.full((images.shape[0],), self.names.index(domain), device=images.device)
        return self.generators["generator"](images, self._one_hot(index))

    def _draw_targets(self, domains: Tensor) -> Tensor:
        order = torch.randperm(domains.shape[0], generator=self.rng).to(domains.device)
        self._targets = domains[order]
        return self._targets

    @torch.no_grad()
    def generated_without_grad(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                               ) -> dict[str, Tensor]:
        # the step's target domains, drawn once here (D goes first) and read again by this step's G update
        targets = self._draw_targets(self._require(domains))
        return {"fake": self.generators["generator"](torch.cat([source, target]), self._one_hot(targets))}

    def _require(self, domains: Tensor | None) -> Tensor:
        if domains is None:
            raise ValueError("stargan needs the domain of every image of the batch (batch_domains)")
        return domains

    def discriminator_losses(self, source: Tensor, target: Tensor, generated: dict[str, Tensor],
                             domains: Tensor | None = None) -> AdversarialOutput:
        domains = self._require(domains)
        critic = self.discriminators["discriminator"]
        real, fake = torch.cat([source, target]), generated["fake"].detach().to(source.dtype)
        realness, classes = critic(torch.cat([real, fake]))  # no normalization: one forward is two forwards' logits
        real_logits, fake_logits = realness.split([real.shape[0], fake.shape[0]])
        if self.params["gan_loss"] == "wgan_gp":
            adversarial = self.gan.discriminator(real_logits, fake_logits, critic=lambda x: critic(x)[0],
                                                 real_images=real, fake_images=fake, generator=self.rng)
        else:
            adversarial = self.gan.discriminator(real_logits, fake_logits)
        classification = F.cross_entropy(classes[:real.shape[0]].float(), domains)
        terms = {"d_adversarial": adversarial, "d_classification": self.params["classification_weight"] * classification}
        total = torch.stack([t.float() for t in terms.values()]).sum()
        accuracy = (classes[:real.shape[0]].argmax(1) == domains).float().mean()
        return AdversarialOutput(total, {**{k: v.detach() for k, v in terms.items()},
                                         "d_real": real_logits.detach().float().mean(),
                                         "d_fake": fake_logits.detach().float().mean(), "d_accuracy": accuracy})

    def generator_losses(self, source: Tensor, target: Tensor, domains: Tensor | None = None) -> AdversarialOutput:
        domains = self._require(domains)
        targets = self._targets if self._targets is not None and self._targets.shape == domains.shape \
            else self._draw_targets(domains)
        generator, critic = self.generators["generator"], self.discriminators["discriminator"]
        real = torch.cat([source, target])
        with self.discriminators_frozen():
            fake = generator(real, self._one_hot(targets))
            realness, classes = critic(fake)
            terms = {
                "gan": self.gan(realness),
                "classification": self.params["classification_weight"] * F.cross_entropy(classes.float(), targets),
                "reconstruction": self.params["reconstruction_weight"]
                * (generator(fake, self._one_hot(domains)) - real).abs().float().mean(),
            }
        total = torch.stack([t.float() for t in terms.values()]).sum()
        return AdversarialOutput(total, {k: v.detach() for k, v in terms.items()}, {"fake": fake})

    def sample_grid_images(self, source: Tensor, target: Tensor, generated: dict[str, Tensor]) -> list[Tensor]:
        """photo | → each artwork domain (up to four)."""
        with torch.no_grad():
            return [to_unit(source)] + [to_unit(self.generate(source, name)) for name in self.names[1:5]]

    def training_state(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            self.rng.set_state(state["rng"])
