"""The one training loop of every model and loss: runs alone, and unchanged inside Ray Train workers.

Framework-agnostic on purpose (no Ray, no MLflow): batches in, hooks out. A :class:`Trainer` holds the
model, one objective per training phase, Adam with the references' inverse-decay schedule (or cosine),
mixed precision where the hardware has it, and the state a checkpoint needs to continue a run exactly.

Checkpoints are directories (``step-000100/``) written atomically::

    config.json        model name + params, training config, step, phase, encoder description
    model.safetensors  the model's trained state (frozen encoders are rebuilt from their weights spec)
    trainer.pt         optimizer, scheduler, grad scaler, RNG states, guard counters, data position

``stylecore.load(path)`` rebuilds the model of a checkpoint for inference.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from stylecore import models as model_registry
from stylecore.data import Batch
from stylecore.devices import best_device, bf16_supported, tune_cuda_math
from stylecore.io import atomic_directory, remove_stale_temporaries
from stylecore.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, capture_rng, checkpoint_steps,  # noqa: F401
                                  latest_checkpoint, latest_step, load, load_model_state, load_trainer_state,
                                  read_checkpoint_config, resolve_checkpoint, restore_rng)
from stylecore.config import WEIGHT_PARAMETERS, TrainConfig, apply_weights  # noqa: F401 (their old home)
from stylecore.config import build_loss_encoder, phase_objective
from stylecore.models.base import StyleTransferModel, TrainingPhase
from stylecore.objective import Objective, ObjectiveOutput, build_objective

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class StepResult:
    """What one step reports to hooks.

    Its figures stay where the step computed them until a hook reads them: ``terms``, ``skipped`` and
    ``per_sample`` copy to the host on first read (all terms in one transfer), so a step whose hooks read nothing
    (the pipeline's hooks read at each report) never waits for the accelerator to finish.
    """

    def __init__(self, step: int, phase: str, terms: Mapping[str, Tensor | float], lr: float,
                 samples_per_second: float, samples: int = 0, skipped: Tensor | bool = False,
                 per_sample: Mapping[str, Tensor] | None = None, style_keys: list[str] | None = None,
                 content_keys: list[str] | None = None) -> None:
        self.step = step  # steps completed, this one included
        self.phase = phase
        self.lr = lr
        self.samples_per_second = samples_per_second  # over all DDP ranks (they step in lockstep), launch to launch
        self.samples = samples  # this step's samples over all ranks
        self.style_keys, self.content_keys = style_keys, content_keys
        self._terms, self._skipped, self._per_sample = dict(terms), skipped, dict(per_sample or {})
        self._terms_read: dict[str, float] | None = None
        self._per_sample_read: dict[str, Tensor] | None = None

    @property
    def terms(self) -> dict[str, float]:
        """Weighted batch means, and ``total``."""
        if self._terms_read is None:
            on_device = {name: value for name, value in self._terms.items() if isinstance(value, Tensor)}
            read = dict(zip(on_device, torch.stack([v.detach().float().reshape(()) for v in on_device.values()])
                            .tolist())) if on_device else {}
            self._terms_read = {name: read[name] if name in read else float(value)
                                for name, value in self._terms.items()}
        return self._terms_read

    @property
    def skipped(self) -> bool:
        """A non-finite step: no weight changed (the learning-rate schedule still advanced)."""
        return bool(self._skipped)

    @property
    def per_sample(self) -> dict[str, Tensor]:
        """Unweighted (B,) values per term, on the CPU."""
        if self._per_sample_read is None:
            self._per_sample_read = {name: value.detach().float().cpu() for name, value in self._per_sample.items()}
        return self._per_sample_read


class NonFiniteGuard:
    """Counts the steps skipped for a non-finite loss or gradient on the step's device, and reads the counts only
    every ``check_every`` steps: a per-step check would make every step wait for the accelerator. The run stops
    (:class:`NonFiniteLossError`) at the first check after ``limit`` skipped steps in a row, so at most
    ``check_every − 1`` steps late."""

    def __init__(self, device: torch.device, limit: int, check_every: int) -> None:
        self.limit, self.check_every = limit, check_every
        zeros = lambda: torch.zeros((), dtype=torch.int64, device=device)  # noqa: E731
        self.run, self.worst_run, self.total = zeros(), zeros(), zeros()
        self.reported = 0

    def record(self, nonfinite: Tensor) -> None:
        """One step's flag (a 0-d bool tensor): the run of skipped steps grows or ends, without a host read."""
        flag = nonfinite.to(self.run.dtype)
        self.run.mul_(flag).add_(flag)
        torch.maximum(self.worst_run, self.run, out=self.worst_run)
        self.total.add_(flag)

    def check(self, step: int, terms: Callable[[], Mapping[str, float]]) -> None:
        """Warn about the steps skipped since the last check; raise when a run of them reached the limit."""
        run, worst, total = torch.stack([self.run, self.worst_run, self.total]).tolist()
        self.worst_run.copy_(self.run)
        if total > self.reported:
            log.warning("step %d: %d step(s) with a non-finite loss or gradient skipped since the last check "
                        "(%d in a row now); last terms %s", step, total - self.reported, run,
                        {k: round(v, 4) for k, v in terms().items()})
            self.reported = total
        if worst >= self.limit:
            raise NonFiniteLossError(
                f"{worst} consecutive steps had a non-finite loss or gradient (last terms: {dict(terms())}); "
                "stopping. Lower lr, set grad_clip, or use precision=fp32.")

    def counts(self) -> tuple[int, int]:
        """(skipped in a row now, skipped in all): a host read, for checkpoints and reports."""
        run, total = torch.stack([self.run, self.total]).tolist()
        return int(run), int(total)

    def restore(self, in_a_row: int, total: int) -> None:
        self.run.fill_(in_a_row)
        self.worst_run.fill_(in_a_row)
        self.total.fill_(total)
        self.reported = total


# Adam has a fused kernel on these: one kernel for all parameters (5× the foreach step on a 2-vCPU EPYC at 7 M
# parameters) that takes the non-finite flag as a device tensor (``found_inf``), so a bad update is skipped
# without the host reading the flag.
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_adam(parameters: Sequence[Tensor], device: torch.device, **settings: Any) -> torch.optim.Adam:
    """Adam over ``parameters``, fused where ``device`` has the kernel."""
    return torch.optim.Adam(parameters, fused=device.type in FUSED_ADAM_DEVICES, **settings)


class TrainingHooks:
    """Callbacks of the loop; subclass and override what you need (all no-ops here)."""

    def on_step(self, trainer: "Trainer", result: StepResult) -> None: ...

    def on_images(self, trainer: "Trainer", step: int, grid: Tensor) -> None: ...

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None: ...

    def on_phase(self, trainer: "Trainer", phase: str, step: int) -> None: ...


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return requested


@contextlib.contextmanager
def _stop_after_step(enabled: bool) -> Iterator[threading.Event]:
    """Ctrl-C during :meth:`Trainer.fit` with a checkpoint folder: the running step finishes, a checkpoint of it
    is written and ``KeyboardInterrupt`` is raised, so nothing trained is lost (an interrupt inside
    ``optimizer.step`` would leave a half-updated model). A second Ctrl-C interrupts at once. Only the main
    thread can own signals: elsewhere (Ray Train's workers) this changes nothing."""
    requested = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum, frame):
        requested.set()
        signal.signal(signal.SIGINT, previous)
        log.warning("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield requested
    finally:
        if signal.getsignal(signal.SIGINT) is request_stop:
            signal.signal(signal.SIGINT, previous)


class _TrainingStep(nn.Module):
    """model → objective for one phase, as one module so DDP can wrap the whole forward.

    ``own_encoder``: the objective reads the model's own encoder, so the features the model computed anyway
    are reused. Otherwise (another loss encoder) the model is asked for the roles only, no layers, and its
    features, which live in its own encoder's space, are not handed on: the objective encodes every image."""

    def __init__(self, model: StyleTransferModel, objectives: Mapping[str, Objective], own_encoder: bool = True
                 ) -> None:
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(dict(objectives))
        self.own_encoder = own_encoder
        self.needs = {phase: objective_needs(objective) if own_encoder else
                      {role: set() for role in objective_needs(objective)} for phase, objective in objectives.items()}

    def forward(self, content: Tensor, style: Tensor, phase: str) -> tuple[Tensor, ObjectiveOutput, dict[str, Tensor]]:
        outputs = self.model.training_outputs(content, style, self.needs[phase], phase)
        features = outputs.features if self.own_encoder else None
        result = self.objectives[phase](images=outputs.images, features=features, values=outputs.values)
        return result.total, result, outputs.images


def objective_needs(objective: Objective) -> dict[str, set[str]]:
    """Every role the objective reads → the encoder layers it needs from it (empty for images/values)."""
    needs: dict[str, set[str]] = {role: set() for roles in objective.roles().values() for role in roles}
    for role, layers in objective.feature_layers().items():
        needs[role] = set(layers)
    return needs


def image_grid(content: Tensor, style: Tensor, output: Tensor, rows: int = 4) -> Tensor:
    """(3, H', W') grid with one row per sample: content | style | output, in [0, 1]."""
    import torchvision

    n = min(rows, content.shape[0])
    size = content.shape[-2:]
    resize = lambda x: torch.nn.functional.interpolate(x[:n].float(), size=size, mode="bilinear", align_corners=False)
    triples = torch.stack([resize(content), resize(style), resize(output.detach())], dim=1).flatten(0, 1)
    return torchvision.utils.make_grid(triples.clamp(0, 1).cpu(), nrow=3, padding=2, pad_value=1.0)


class _Bar:
    """A terminal's redrawn bar (tqdm)."""

    def __init__(self, label: str, total: int, initial: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=label, unit="step")
        self.postfix_at = -math.inf

    def update(self, result: StepResult) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.postfix_at >= 1.0:  # reading the loss waits for the device: once a second is enough to watch
            self.postfix_at = now
            self.bar.set_postfix(loss=f"{result.terms['total']:.4g}", sps=f"{result.samples_per_second:.1f}")

    def close(self) -> None:
        self.bar.close()


class _Lines:
    """Where a bar would be carriage returns in a log (output not a terminal): a line every 10 s or so
    (:class:`stylecore.progress.TrainingProgress`), and one at the end."""

    def __init__(self, label: str, total: int, initial: int, every_s: float = 10.0) -> None:
        from stylecore.progress import TrainingProgress

        self.progress = TrainingProgress(label, total, every_s)
        self.last: StepResult | None = None

    def update(self, result: StepResult) -> None:
        self.last = result
        line = self.progress.line(result.step, result.samples_per_second, lambda: result.terms["total"])
        if line:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.last is not None:
            print(f"{self.progress.label}: step {self.last.step}/{self.progress.total}, "
                  f"{self.last.samples_per_second:.1f} samples/s, loss {self.last.terms['total']:.4g}",
                  file=sys.stderr, flush=True)
            self.last = None


def _progress(label: str, total: int, initial: int) -> "_Bar | _Lines":
    return _Bar(label, total, initial) if sys.stderr.isatty() else _Lines(label, total, initial)


class Trainer:
    """Trains one model with one config. See the module docstring.

    ``Trainer(config)`` for a GAN translation model (:mod:`stylecore.gan`) is an
    :class:`stylecore.gan.training.AdversarialTrainer`: the same loop, checkpoints and hooks, a two-sided step."""

    def __new__(cls, config: TrainConfig | Mapping[str, Any], *args: Any, **kwargs: Any) -> "Trainer":
        if cls is Trainer:
            from stylecore import gan

            name = config.model if isinstance(config, TrainConfig) else dict(config).get("model", TrainConfig.model)
            if name in gan.names():
                from stylecore.gan.training import AdversarialTrainer

                cls = AdversarialTrainer
        return super().__new__(cls)

    def __init__(self, config: TrainConfig | Mapping[str, Any], device: str | torch.device | None = None,
                 hooks: Sequence[TrainingHooks] = (), model: StyleTransferModel | None = None) -> None:
        self._take_config(config, device, hooks)
        self.model = model if model is not None else model_registry.build(self.config.model, **self.config.model_params)
        self.phases = self.model.training_phases()
        self.phase_starts = self._phase_starts(self.phases, self.config.steps)
        # the network the objective reads: the model's own, or trained features (TrainConfig.loss_encoder)
        self.loss_encoder = (self.model.loss_encoder() if self.config.loss_encoder == "model"
                             else build_loss_encoder(self.config.loss_encoder))
        objectives = {phase.name: self._build_objective(phase) for phase in self.phases}
        self._place_model()
        self.step_module = _TrainingStep(self.model, objectives, self.config.loss_encoder == "model").to(self.device)
        if self.config.compile:
            for module in {id(m): m for m in self._compilable()}.values():
                module.compile()
        self.runner: nn.Module = self.step_module
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.runner = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Multi-phase models leave some trained parameters idle in each phase.
                find_unused_parameters=len(self.phases) > 1)
        self.parameters = list(self.model.trainable_parameters())
        self.optimizer = make_adam(self.parameters, self.device, lr=self.config.lr, betas=self.config.betas,
                                   weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self._start_counting()
        self.current_phase: str | None = None
        log.info("trainer: model %s (%d trained parameters), precision %s, channels_last %s, compile %s, device %s",
                 self.config.model, sum(p.numel() for p in self.parameters), self.precision, self.channels_last,
                 self.config.compile, self.device)

    def summary(self) -> str:
        """One line: the model, its size, precision and device, and the network the objective reads with its
        weights (pretrained or not: every log says which)."""
        encoder = self.loss_encoder.describe()
        return (f"model {self.config.model} ({sum(p.numel() for p in self.parameters):,} trained parameters), "
                f"{self.precision}{', channels_last' if self.channels_last else ''} on {self.device}; loss encoder "
                f"{encoder['arch']}, weights {encoder['weights']} (pretrained: {encoder['pretrained']})")

    # -- construction helpers ------------------------------------------------------------------

    def _take_config(self, config: TrainConfig | Mapping[str, Any], device: str | torch.device | None,
                     hooks: Sequence[TrainingHooks]) -> None:
        """What every trainer starts from: the validated config, the device, the hooks, the seed, DDP or not."""
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.config.validate()
        self.device = torch.device(device) if device is not None else best_device()
        self.hooks = list(hooks)
        torch.manual_seed(self.config.seed)  # the model's initial weights follow the seed
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        self.world_size = torch.distributed.get_world_size() if self.distributed else 1

    def _place_model(self) -> None:
        """The model on the device, with the precision and memory layout the config and the hardware give."""
        self.model.to(self.device)
        tune_cuda_math(self.device, fixed_shapes=True)  # a run's crops all have one size
        self.precision = resolve_precision(self.config.precision, self.device)
        self.channels_last = (self.config.channels_last if self.config.channels_last != "auto"
                              else self.device.type == "cuda" or self.precision == "bf16")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _start_counting(self) -> None:
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.guard = NonFiniteGuard(self.device, self.config.max_nonfinite_steps,
                                    check_every=self.config.max_nonfinite_steps)

    @property
    def nonfinite_in_a_row(self) -> int:
        """Steps skipped in a row up to now (reads the device)."""
        return self.guard.counts()[0]

    @property
    def nonfinite_total(self) -> int:
        """Steps skipped in this run, resumes included (reads the device)."""
        return self.guard.counts()[1]

    @staticmethod
    def _phase_starts(phases: Sequence[TrainingPhase], steps: int) -> list[int]:
        starts, done = [], 0.0
        for phase in phases:
            starts.append(round(done * steps))
            done += phase.fraction
        return starts

    def _build_objective(self, phase: TrainingPhase) -> Objective:
        return build_objective(phase_objective(self.model, phase.name, self.config), self.loss_encoder)

    def _compilable(self) -> list[nn.Module]:
        modules = [m for phase in self.phases for m in self.model.trainable_modules(phase.name)]
        return modules + [self.loss_encoder]

    def _lr_factor(self, step: int) -> float:
        if self.config.lr_schedule == "inverse":
            return 1.0 / (1.0 + self.config.lr_decay * step)
        if self.config.lr_schedule == "cosine":
            progress = min(step / max(self.config.steps, 1), 1.0)
            floor = self.config.min_lr_ratio
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.config.lr_schedule == "linear_decay":  # CycleGAN's lambda rule, per step instead of per epoch
            start = round(self.config.decay_start * self.config.steps)
            return 1.0 - max(0, step - start) / float(self.config.steps - start + 1)
        return 1.0

    # -- the step ------------------------------------------------------------------------------

    def phase_at(self, step: int) -> TrainingPhase:
        index = max(i for i, start in enumerate(self.phase_starts) if start <= step or i == 0)
        return self.phases[index]

    def _enter_phase(self, phase: TrainingPhase) -> None:
        if phase.name != self.current_phase:
            self.model.set_phase(phase.name)
            self.current_phase = phase.name
            for hook in self.hooks:
                hook.on_phase(self, phase.name, self.step)
            log.info("phase %s from step %d", phase.name, self.step)

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, content: Tensor, style: Tensor, content_keys: list[str] | None = None,
                   style_keys: list[str] | None = None) -> StepResult:
        """One optimisation step on a content batch and a style batch (both (B, 3, H, W) in [0, 1])."""
        started = time.perf_counter()
        phase = self.phase_at(self.step)
        self._enter_phase(phase)
        self.step_module.objectives[phase.name].set_step(self.step)
        self.model.train()
        content, style = self._prepare(content), self._prepare(style)
        with self._autocast():
            total, output, images = self.runner(content, style, phase.name)
        lr = self.optimizer.param_groups[0]["lr"]
        nonfinite = self._apply_gradients(total, self.optimizer, self.parameters)
        self._end_update()
        self.scheduler.step()  # the schedule follows the step count, skipped steps included (AMP's convention)
        return self._finish_step(started, content.shape[0], lambda: image_grid(content, style, images["pred"]),
                                 phase=phase.name, terms=output.detached(), lr=lr, skipped=nonfinite,
                                 per_sample={k: v.detach() for k, v in output.per_sample.items()},
                                 content_keys=content_keys, style_keys=style_keys)

    def _autocast(self):
        """The step's mixed precision: bf16 or fp16 autocast on the device, or none (fp32)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _finish_step(self, started: float, batch: int, sample_grid: Callable[[], Tensor], **fields: Any
                     ) -> StepResult:
        """The end of every trainer's step: count and time it (``batch`` samples per rank), let the non-finite guard
        and the hooks see it, and hand the hooks a sample grid (``sample_grid()``) when one is due."""
        self.step += 1
        elapsed = time.perf_counter() - started
        samples = batch * self.world_size
        result = StepResult(step=self.step, samples_per_second=samples / max(elapsed, 1e-9), samples=samples,
                            **fields)
        self._guard_step(fields["skipped"], result)
        for hook in self.hooks:
            hook.on_step(self, result)
        if self.config.sample_every and self.step % self.config.sample_every == 0 and self.hooks:
            grid = sample_grid()
            for hook in self.hooks:
                hook.on_images(self, self.step, grid)
        return result

    def _apply_gradients(self, total: Tensor, optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]
                         ) -> Tensor:
        """Backward ``total`` and step ``optimizer`` over ``parameters``, unless the loss (on any rank: every rank
        must skip together) or the gradients are not finite. Returns the skip flag as a 0-d bool tensor on the
        device: the decision stays there (fused Adam's ``found_inf``; the grad scaler's own check under fp16), so
        the step never waits for the accelerator. The gradients are cleared either way."""
        nonfinite = ~torch.isfinite(total.detach())
        if self.distributed:
            flag = nonfinite.float().reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # queued, not waited for
            nonfinite = flag[0] > 0
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(optimizer)
        else:
            total.backward()  # a non-finite loss gives non-finite gradients, which the update below skips
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skips the update by itself on inf/nan gradients (loss-scale calibration)
        else:
            # a finite loss with non-finite gradients must not reach the weights either
            nonfinite = nonfinite | ~torch.isfinite(norm.to(nonfinite.device))
            if optimizer.defaults.get("fused"):
                optimizer.found_inf = nonfinite.float()
                optimizer.step()
            elif not bool(nonfinite):  # a host read, only where Adam has no fused kernel
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return nonfinite

    def _end_update(self) -> None:
        """After every optimizer of the step has stepped: the grad scaler's scale moves once per iteration (PyTorch's
        rule with several optimizers; a GAN step has two)."""
        if self.scaler is not None:
            self.scaler.update()

    def _guard_step(self, nonfinite: Tensor, result: StepResult) -> None:
        """The non-finite guard's count, and its check every ``max_nonfinite_steps`` steps
        (:class:`NonFiniteGuard`)."""
        self.guard.record(nonfinite)
        if self.step % self.guard.check_every == 0:
            self.guard.check(self.step, lambda: result.terms)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, data: Iterable[Batch | tuple[Tensor, Tensor]], checkpoint_dir: Path | str | None = None,
            steps: int | None = None, progress: bool = False) -> list[StepResult]:
        """Train until ``steps`` (default: the config's) steps are done, resuming from the latest
        checkpoint in ``checkpoint_dir`` if there is one. The data stream's position is saved and
        restored when it has ``state_dict``/``load_state_dict``.
        """
        total_steps = steps or self.config.steps
        if checkpoint_dir is not None:
            for stale in remove_stale_temporaries(checkpoint_dir):  # writes a kill interrupted: never complete
                log.info("removed %s, left by an interrupted checkpoint write", stale)
            latest = latest_checkpoint(checkpoint_dir)
            if latest is not None and latest_step(latest) > self.step:
                self.load_checkpoint(latest, data=data)
                log.info("resumed from %s at step %d", latest, self.step)
        results: list[StepResult] = []
        bar = _progress(f"train {self.config.model}", total_steps, self.step) if progress else None
        iterator: Iterator = iter(data)
        with _stop_after_step(enabled=checkpoint_dir is not None) as stop_requested:
            self._run_steps(iterator, data, total_steps, checkpoint_dir, results, bar, stop_requested)
        if bar is not None:
            bar.close()
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir, data=data)
        return results

    def _run_steps(self, iterator: Iterator, data: Any, total_steps: int, checkpoint_dir: Path | str | None,
                   results: list[StepResult], bar: Any, stop_requested: threading.Event) -> None:
        while self.step < total_steps:
            batch = next(iterator)
            if isinstance(batch, Batch):
                result = self.train_step(batch.content, batch.style, batch.content_keys, batch.style_keys,
                                         **self._batch_extras(batch))
            else:
                result = self.train_step(*batch)
            results.append(result)
            if bar is not None:
                bar.update(result)
            every = self.config.checkpoint_every
            if checkpoint_dir is not None and every and self.step % every == 0 and self.step < total_steps:
                self.save_checkpoint(checkpoint_dir, data=data)
            if stop_requested.is_set():
                if bar is not None:
                    bar.close()
                path = self.save_checkpoint(checkpoint_dir, data=data)
                raise KeyboardInterrupt(f"stopped after step {self.step}; saved {path}")

    def _batch_extras(self, batch: Batch) -> dict[str, Any]:
        """What else of a batch :meth:`train_step` reads (the adversarial trainer: the style samples' labels)."""
        return {}

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.config(),
            "train": self.config.to_dict(),
            "step": self.step,
            "phase": self.phase_at(max(self.step - 1, 0)).name,
            "encoder": self.loss_encoder.describe(),
            "precision": self.precision,
        }

    def save_checkpoint(self, checkpoint_dir: Path | str, data: Any = None) -> Path:
        """Write ``checkpoint_dir/step-NNNNNN`` atomically; keep the newest ``keep_checkpoints``."""
        from safetensors.torch import save_file

        root = Path(checkpoint_dir)
        path = root / f"step-{self.step:06d}"
        state = {key: value.detach().cpu().contiguous() for key, value in self.model.persistent_state().items()}
        in_a_row, skipped_total = self.guard.counts()  # one read of the device for both
        trainer_state = {
            **self._optimizer_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "nonfinite_in_a_row": in_a_row,
            "nonfinite_total": skipped_total,
            "rng": capture_rng(self.device),
            "data": data.state_dict() if hasattr(data, "state_dict") else None,
        }
        with atomic_directory(path) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            torch.save(trainer_state, tmp / "trainer.pt")
            (tmp / "config.json").write_text(json.dumps(self.checkpoint_config(), indent=2, default=str) + "\n")
        for old in checkpoint_steps(root)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        for hook in self.hooks:
            hook.on_checkpoint(self, path)
        return path

    def load_checkpoint(self, path: Path | str, data: Any = None) -> None:
        """Restore the model, optimizer, scheduler, scaler, RNG and (if given) the data position."""
        path = resolve_checkpoint(path)
        config = read_checkpoint_config(path)
        if config["model"]["model"] != self.config.model:
            raise CheckpointError(f"{path} holds a {config['model']['model']!r} model; this run trains "
                                  f"{self.config.model!r}")
        load_model_state(self.model, path)
        state = load_trainer_state(path / "trainer.pt")
        self._load_optimizer_state(state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.guard.restore(int(state["nonfinite_in_a_row"]), int(state["nonfinite_total"]))
        restore_rng(state["rng"], self.device)
        if data is not None and state.get("data") is not None and hasattr(data, "load_state_dict"):
            data.load_state_dict(state["data"])
        self.current_phase = None  # re-enter the phase (requires_grad flags) on the next step

    def _optimizer_state(self) -> dict[str, Any]:
        """What trainer.pt keeps of the optimizers and schedules (a GAN has one of each per side)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def _load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


# -- checkpoint files ----------------------------------------------------------------------------
