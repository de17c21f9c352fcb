"""The contract of the GAN translation models, their registry, and CycleGAN's history pool.

A translation model maps a photo to a *domain* (Monet, Ukiyo-e, a WikiArt style label) instead of to the style of
one image: ``translate(images, domain)``. It trains adversarially — generators against discriminators, each side
with its own optimizer — in the one training loop (:class:`stylecore.gan.training.AdversarialTrainer` is
:class:`stylecore.training.Trainer` with a two-sided step). A model declares

* ``generators`` and ``discriminators``: two ``nn.ModuleDict`` — what each optimizer holds;
* ``generator_losses(source, target, domains)``: one forward of every generator computation of a step, the
  discriminators frozen, returning the generator objective, its named terms and the generated images;
* ``discriminator_losses(source, target, generated, domains)``: the discriminators' objective on real images and
  on the (pooled, detached) generated ones.

``source`` is a batch of the source domain (photos), ``target`` one of the target domain(s), unpaired: the
loop's (content, style) batches. ``domains`` is None for two-domain models; a multi-domain model (StarGAN) gets
the domain index of every image of ``cat(source, target)`` (:meth:`TranslationModel.batch_domains`, from the
style samples' labels). Each side is one forward call, so DDP wraps each side once and every parameter is used in
one reduction per step.

Images are [0, 1] at the interface and [−1, 1] inside, as the references train them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.models.base import check_image_batch
from stylecore.registry import Registry

GAN_MODELS: Registry["TranslationModel"] = Registry("GAN model")
register_gan = GAN_MODELS.register


def names() -> list[str]:
    """Names of every registered GAN translation model."""
    return GAN_MODELS.names()


def build(name: str, **params: Any) -> "TranslationModel":
    """Build the GAN model registered as ``name``; unknown parameters fail with the accepted list."""
    return GAN_MODELS.build(name, **params)


def describe(name: str) -> str:
    return GAN_MODELS.describe(name)


def to_signed(images: Tensor) -> Tensor:
    """[0, 1] → [−1, 1], the references' input range."""
    return images * 2.0 - 1.0


def to_unit(images: Tensor) -> Tensor:
    """[−1, 1] → [0, 1]."""
    return (images + 1.0) * 0.5


@dataclass
class AdversarialOutput:
    """One side's objective of one step: the weighted total, its named weighted terms (batch means, detached for
    logging) and the images it generated, by name ([−1, 1], attached to the graph on the generator side)."""

    total: Tensor
    terms: dict[str, Tensor]
    images: dict[str, Tensor] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        values = {name: float(value.detach()) for name, value in self.terms.items()}
        values["total"] = float(self.total.detach())
        return values


class HistoryPool:
    """CycleGAN's buffer of generated images (Shrivastava et al. 2017; Zhu et al. 2017 §4): the discriminator
    sees, per image, either the one just generated or — with probability ½ once the pool holds ``size`` images —
    one generated earlier, which is swapped for the new one. ``size = 0`` turns it off.

    Its randomness comes from its own seeded generator, and :meth:`state_dict` holds the images and that
    generator, so a resumed run draws what the uninterrupted one would have (the reference uses Python's global
    ``random``, which no checkpoint restores)."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"history pool: size must be an integer ≥ 0; got {size!r}")
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, batch: Tensor) -> Tensor:
        if self.size == 0:
            return batch.detach()
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                index = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[index])
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [image.cpu() for image in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.images = [image.to(device) for image in state["images"]]
        self.generator.set_state(state["generator"])


class TranslationModel(nn.Module):
    """Base class of every registered GAN translation model; see the module docstring for the contract."""

    #: the GAN losses (stylecore.losses) a model may train with; the first is its paper's
    gan_losses: ClassVar[tuple[str, ...]] = ("lsgan", "sgan", "hinge", "wgan_gp")
    #: spatial sides must be a multiple of this (the generator's down/upsampling)
    size_multiple: ClassVar[int] = 4
    #: the smallest side :meth:`translate` takes (reflection padding needs more pixels than it pads)
    min_side: ClassVar[int] = 8
    #: one model for several domains (StarGAN), or one model per domain (CycleGAN, U-GAT-IT)
    multi_domain: ClassVar[bool] = False
    #: the reference's step order: D on the current fakes, then G (U-GAT-IT), instead of G then D (CycleGAN)
    discriminator_first: ClassVar[bool] = False
    #: the paper's optimiser settings, TrainConfig keys (:func:`stylecore.gan.training.paper_config`)
    paper_training: ClassVar[dict[str, Any]] = {"lr": 2e-4, "betas": (0.5, 0.999), "lr_schedule": "linear_decay",
                                                "decay_start": 0.5}

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = dict(params)
        self.generators = nn.ModuleDict()
        self.discriminators = nn.ModuleDict()

    @property
    def name(self) -> str:
        return type(self).registered_name  # type: ignore[attr-defined]

    def config(self) -> dict[str, Any]:
        return {"model": self.name, "params": dict(self.params)}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def domains(self) -> tuple[str, ...]:
        """The domains :meth:`translate` maps to."""
        raise NotImplementedError

    @property
    def target_domains(self) -> tuple[str, ...]:
        """The artwork domains photos translate to: every domain but the photos' own, which :attr:`domains` lists
        last."""
        return self.domains[:-1]

    def check_domain(self, domain: str) -> str:
        if domain not in self.domains:
            raise ValueError(f"{self.name}: unknown domain {domain!r}; this model translates to "
                             f"{', '.join(self.domains)}")
        return domain

    def generate(self, images: Tensor, domain: str) -> Tensor:
        """The generator's output for ``domain`` on [−1, 1] images (sides a multiple of :attr:`size_multiple`)."""
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, images: Tensor, domain: str) -> Tensor:
        """``images`` (B, 3, H, W) in [0, 1] → the same images in ``domain``, in [0, 1], at any size (reflection-
        padded to a multiple of :attr:`size_multiple` and cropped back)."""
        self.check_domain(domain)
        images = check_image_batch(images, "images", min_side=self.size_multiple)
        h, w = images.shape[-2:]
        m = self.size_multiple
        padded = F.pad(images, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else images
        out = self.generate(to_signed(padded.to(self.device)), domain)
        return to_unit(out[..., :h, :w].float()).clamp(0, 1)

    # -- the inference interface :class:`stylecore.stylize.Stylizer` drives (a domain is the "style") ---------

    def style_code(self, domain: str) -> str:
        return self.check_domain(domain)

    def stylize(self, content: Tensor, codes: list[str], weights: list[float] | None = None,
                alpha: float = 1.0) -> Tensor:
        """``content`` translated to the one domain in ``codes`` (a GAN's output is not a mix of domains, nor
        interpolated with the content: weights and alpha have no meaning here and are refused)."""
        if len(codes) != 1 or alpha != 1.0:
            raise ValueError(f"{self.name} translates to one domain at full strength; got {len(codes)} domain(s), "
                             f"alpha {alpha}")
        return self.translate(content, codes[0])

    @classmethod
    def domain_params(cls, label: str, domains: list[str]) -> dict[str, Any]:
        """The constructor parameters that name ``domains`` (the values of ``label`` the style side is filtered
        on), e.g. CycleGAN's ``target``; a wrong number of domains is a ValueError."""
        raise NotImplementedError

    def batch_domains(self, sources: int, style_labels: list[dict] | None) -> Tensor | None:
        """The domain index of each image of ``cat(source, target)`` for a multi-domain model, from the style
        samples' labels; None (the default) for a model of two fixed domains."""
        return None

    # -- training ----------------------------------------------------------------------------------

    def generator_losses(self, source: Tensor, target: Tensor, domains: Tensor | None = None) -> AdversarialOutput:
        raise NotImplementedError

    def discriminator_losses(self, source: Tensor, target: Tensor, generated: dict[str, Tensor],
                             domains: Tensor | None = None) -> AdversarialOutput:
        raise NotImplementedError

    def generated_without_grad(self, source: Tensor, target: Tensor, domains: Tensor | None = None
                               ) -> dict[str, Tensor]:
        """The generated images the discriminator step reads, on a step where the generators do not update
        (``n_critic > 1``)."""
        raise NotImplementedError

    def sample_grid_images(self, source: Tensor, target: Tensor, generated: dict[str, Tensor]) -> list[Tensor]:
        """The columns of a training sample grid, each (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """State besides weights that an exact resume needs (history pools)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None: ...

    def after_generator_step(self) -> None:
        """Called after each generator update (U-GAT-IT clips its AdaLIN / ILN ρ to [0, 1] here)."""

    @contextmanager
    def discriminators_frozen(self) -> Iterator[None]:
        """The discriminators as fixed critics for the generators' objective: no gradient reaches them, and they
        train again afterwards (the references' ``set_requires_grad(D, False)``)."""
        parameters = list(self.discriminators.parameters())
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)

    def check_settings(self, gan_loss: str, weights: tuple[str, ...]) -> None:
        """``gan_loss`` one of :attr:`gan_losses` and every named weight parameter a number ≥ 0, or a ValueError
        naming the parameter."""
        if gan_loss not in self.gan_losses:
            raise ValueError(f"{self.name}: gan_loss={gan_loss!r} is not one of {', '.join(self.gan_losses)}")
        for key in weights:
            value = self.params[key]
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{self.name}: {key} must be a number ≥ 0; got {value!r}")


    def persistent_state(self) -> dict[str, Tensor]:
        return self.state_dict()

    def trainable_parameters(self):
        return list(self.generators.parameters()) + list(self.discriminators.parameters())

    def discriminator_inputs(self, generated: dict[str, Tensor]) -> dict[str, Tensor]:
        """The generated images the discriminators see this step (CycleGAN: drawn through its history pools).
        Runs outside DDP's forward: pools are host state."""
        return {name: image.detach() for name, image in generated.items()}


class PhotoToDomain(TranslationModel):
    """A model of two fixed domains, the photos (``source``) and one artwork domain (``target``), with a generator
    each way (``generators["to_target"]``, ``["to_source"]``): CycleGAN, U-GAT-IT. One model per domain."""

    def __init__(self, source: str, target: str, **params: Any) -> None:
        super().__init__(source=source, target=target, **params)
        if not (isinstance(source, str) and isinstance(target, str) and source and target and source != target):
            raise ValueError(f"{self.name}: source and target must be two different domain names; got {source!r}, "
                             f"{target!r}")
        self.source, self.target = source, target

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.target, self.source)

    @classmethod
    def domain_params(cls, label: str, domains: list[str]) -> dict[str, Any]:
        name = cls.registered_name  # type: ignore[attr-defined]
        if len(domains) != 1:
            raise ValueError(f"{name} translates between the photos and one domain; got {len(domains)}: "
                             f"{', '.join(domains)} (train one {name} per domain)")
        return {"target": domains[0]}

    def generator_for(self, domain: str) -> nn.Module:
        return self.generators["to_target" if domain == self.target else "to_source"]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
