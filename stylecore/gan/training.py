"""Adversarial training in the one training loop: :class:`AdversarialTrainer` is a :class:`Trainer` whose step
updates two sides, each with its own optimizer and schedule.

``Trainer(config)`` returns one when ``config.model`` is a GAN model, so ``fit`` (resume, Ctrl-C, periodic
checkpoints), the hooks, the non-finite guard, mixed precision and DDP are the arbitrary-style models' own. A step:

1. on every ``n_critic``-th step (every step at the default 1), the generators' objective in one forward — the
   discriminators frozen — and an Adam update of the generators;
2. the discriminators' objective on the real images and the generated ones (through the model's history pool
   where it has one, detached), and an Adam update of the discriminators, at ``d_lr`` (two-time-scale updates).

So at ``n_critic = 1`` a step is the CycleGAN reference's ``optimize_parameters`` (G, then D on the same fakes),
and at ``n_critic = 5`` StarGAN's schedule (D every step, G every fifth). A model with ``discriminator_first``
(U-GAT-IT) updates D on the current generators' fakes first, then G, as its reference does. Adam uses ``betas``
(the GAN papers' (0.5, 0.999): :func:`paper_config`), and ``lr_schedule: linear_decay`` is their
constant-then-linear rule.

Checkpoints hold both optimizers and schedules, the grad scaler, the RNG states and the model's history pools, so
a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from stylecore.config import TrainConfig
from stylecore.gan import base as gan_registry
from stylecore.gan.base import TranslationModel, to_signed
from stylecore.training import StepResult, Trainer, TrainingHooks, make_adam
from stylecore.checkpoint import CHECKPOINT_FORMAT

log = logging.getLogger(__name__)

def paper_config(model: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for GAN ``model`` with its paper's optimiser settings
    (:attr:`TranslationModel.paper_training`, where TrainConfig's defaults are the arbitrary-style models'),
    ``overrides`` on top."""
    return TrainConfig.from_dict({"model": model, **gan_registry.GAN_MODELS.get(model).paper_training, **overrides})


class _Side(nn.Module):
    """One side of the step as one module (what DDP wraps): ``networks`` are its registered parameters — the ones
    its all-reduce averages — and ``compute`` the model's objective for that side."""

    def __init__(self, networks: nn.ModuleDict, compute: Callable[..., Any]) -> None:
        super().__init__()
        self.networks = networks
        self.compute = compute

    def forward(self, *args: Any) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        output = self.compute(*args)
        return output.total, output.terms, output.images


class AdversarialTrainer(Trainer):
    """Trains a GAN translation model; see the module docstring."""

    def __init__(self, config: TrainConfig | Mapping[str, Any], device: str | torch.device | None = None,
                 hooks: Sequence[TrainingHooks] = (), model: TranslationModel | None = None) -> None:
        self._take_config(config, device, hooks)
        self.model = model if model is not None else gan_registry.build(self.config.model, **self.config.model_params)
        if not isinstance(self.model, TranslationModel):
            raise TypeError(f"AdversarialTrainer trains GAN models (stylecore.gan); got {type(self.model).__name__}")
        self._place_model()
        self.generator_side = _Side(self.model.generators, self.model.generator_losses)
        self.discriminator_side = _Side(self.model.discriminators, self.model.discriminator_losses)
        if self.config.compile:
            for network in [*self.model.generators.values(), *self.model.discriminators.values()]:
                network.compile()
        self.generator_runner: nn.Module = self.generator_side
        self.discriminator_runner: nn.Module = self.discriminator_side
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator_runner = DistributedDataParallel(self.generator_side, device_ids=ids)
            self.discriminator_runner = DistributedDataParallel(self.discriminator_side, device_ids=ids)
        self.generator_parameters = list(self.model.generators.parameters())
        self.discriminator_parameters = list(self.model.discriminators.parameters())
        self.parameters = self.generator_parameters + self.discriminator_parameters
        adam = dict(betas=self.config.betas, weight_decay=self.config.weight_decay)
        self.optimizers = {
            "generator": make_adam(self.generator_parameters, self.device, lr=self.config.lr, **adam),
            "discriminator": make_adam(self.discriminator_parameters, self.device,
                                       lr=self.config.d_lr or self.config.lr, **adam)}
        self.schedulers = {side: torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
                           for side, optimizer in self.optimizers.items()}
        self.optimizer, self.scheduler = self.optimizers["generator"], self.schedulers["generator"]
        self._start_counting()
        self.current_phase = "adversarial"
        self.phases, self.phase_starts = [], [0]
        log.info("trainer: %s", self.summary())

    def summary(self) -> str:
        g = sum(p.numel() for p in self.generator_parameters)
        d = sum(p.numel() for p in self.discriminator_parameters)
        return (f"model {self.config.model} ({g:,} generator + {d:,} discriminator parameters, no pretrained "
                f"weights), {self.precision}{', channels_last' if self.channels_last else ''} on {self.device}; "
                f"domains {' / '.join(self.model.domains)}, n_critic {self.config.n_critic}")

    def phase_at(self, step: int):  # one phase: both sides train throughout
        return None

    def _prepare_images(self, x: Tensor) -> Tensor:
        return self._prepare(to_signed(x))

    def _batch_extras(self, batch) -> dict[str, Any]:
        return {"style_labels": batch.style_labels}

    def train_step(self, content: Tensor, style: Tensor, content_keys: list[str] | None = None,
                   style_keys: list[str] | None = None, style_labels: list[dict] | None = None) -> StepResult:
        """One step on a batch of the source domain (``content``) and one of the target domain(s) (``style``),
        unpaired, both (B, 3, H, W) in [0, 1]; ``style_labels`` (each style sample's labels) tell a multi-domain
        model which domain each style image is in."""
        import time

        started = time.perf_counter()
        self.model.train()
        source, target = self._prepare_images(content), self._prepare_images(style)
        domains = self.model.batch_domains(content.shape[0], style_labels)
        if domains is not None:
            domains = domains.to(self.device)
        autocast = self._autocast
        lr = self.optimizers["generator"].param_groups[0]["lr"]
        terms: dict[str, Tensor] = {}  # on the device: StepResult reads them when a hook asks
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        generator_due = (self.step + 1) % self.config.n_critic == 0
        generated: dict[str, Tensor] | None = None

        def generator_step() -> dict[str, Tensor]:
            nonlocal nonfinite
            with autocast():
                g_total, g_terms, images = self.generator_runner(source, target, domains)
            nonfinite = nonfinite | self._apply_gradients(g_total, self.optimizers["generator"],
                                                          self.generator_parameters)
            self.model.after_generator_step()
            terms.update({name: value.detach() for name, value in g_terms.items()}, generator=g_total.detach())
            return {name: image.detach() for name, image in images.items()}

        if generator_due and not self.model.discriminator_first:
            generated = generator_step()
        if generated is None:
            with autocast():
                generated = self.model.generated_without_grad(source, target, domains)
        shown = self.model.discriminator_inputs(generated)
        with autocast():
            d_total, d_terms, _ = self.discriminator_runner(source, target, shown, domains)
        nonfinite = nonfinite | self._apply_gradients(d_total, self.optimizers["discriminator"],
                                                      self.discriminator_parameters)
        terms.update({name: value.detach() for name, value in d_terms.items()}, discriminator=d_total.detach())
        if generator_due and self.model.discriminator_first:  # U-GAT-IT: D on the current fakes, then G
            generator_step()
        # the sum of what this step optimised: one curve that flags divergence; the sides are their own terms
        terms["total"] = terms["generator"] + terms["discriminator"] if "generator" in terms \
            else terms["discriminator"]
        self._end_update()
        import warnings

        with warnings.catch_warnings():
            # both schedules follow the global step, so with n_critic > 1 G's advances on steps where G did not
            # update; torch warns about that order, which here is the intent
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for scheduler in self.schedulers.values():
                scheduler.step()
        return self._finish_step(started, content.shape[0], lambda: self.sample_grid(source, target, generated),
                                 phase="adversarial", terms=terms, lr=lr, skipped=nonfinite,
                                 content_keys=content_keys, style_keys=style_keys)

    def sample_grid(self, source: Tensor, target: Tensor, generated: dict[str, Tensor], rows: int = 4) -> Tensor:
        """(3, H', W') grid, one row per sample: the model's columns (CycleGAN: photo | → domain | back), computed
        under the step's precision (the generated images are bf16 there)."""
        import torchvision

        with self._autocast():
            images = self.model.sample_grid_images(source, target, generated)
        columns = [c[:rows].float().clamp(0, 1).cpu() for c in images]
        cells = torch.stack(columns, dim=1).flatten(0, 1)
        return torchvision.utils.make_grid(cells, nrow=len(columns), padding=2, pad_value=1.0)

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint_config(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "model": self.model.config(), "train": self.config.to_dict(),
                "step": self.step, "phase": "adversarial", "encoder": None, "precision": self.precision}

    def _optimizer_state(self) -> dict[str, Any]:
        return {"optimizers": {side: optimizer.state_dict() for side, optimizer in self.optimizers.items()},
                "schedulers": {side: scheduler.state_dict() for side, scheduler in self.schedulers.items()},
                "model_training_state": self.model.training_state()}

    def _load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        for side, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][side])
            self.schedulers[side].load_state_dict(state["schedulers"][side])
        self.model.load_training_state(state.get("model_training_state", {}))
