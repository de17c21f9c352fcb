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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from stylecore import models as model_registry
from stylecore.data import Batch
from stylecore.devices import best_device
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


@dataclass
class StepResult:
    """What one step reports to hooks."""

    step: int  # steps completed, this one included
    phase: str
    terms: dict[str, float]  # weighted batch means, and "total"
    lr: float
    samples_per_second: float  # over all DDP ranks (they step in lockstep)
    samples: int = 0  # this step's samples over all ranks
    skipped: bool = False  # a non-finite step that changed nothing
    per_sample: dict[str, Tensor] = field(default_factory=dict)  # unweighted (B,) per term, CPU
    style_keys: list[str] | None = None
    content_keys: list[str] | None = None


class TrainingHooks:
    """Callbacks of the loop; subclass and override what you need (all no-ops here)."""

    def on_step(self, trainer: "Trainer", result: StepResult) -> None: ...

    def on_images(self, trainer: "Trainer", step: int, grid: Tensor) -> None: ...

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None: ...

    def on_phase(self, trainer: "Trainer", phase: str, step: int) -> None: ...


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: CUDA with bf16, or a CPU with bf16 instructions (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


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

    def update(self, result: StepResult) -> None:
        self.bar.update(1)
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
        line = self.progress.line(result.step, result.samples_per_second, result.terms["total"])
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
        self.optimizer = torch.optim.Adam(self.parameters, lr=self.config.lr, betas=self.config.betas,
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
        self.precision = resolve_precision(self.config.precision, self.device)
        self.channels_last = (self.config.channels_last if self.config.channels_last != "auto"
                              else self.device.type == "cuda" or self.precision == "bf16")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _start_counting(self) -> None:
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0

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
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            total, output, images = self.runner(content, style, phase.name)
        lr = self.optimizer.param_groups[0]["lr"]
        skipped = self._apply_gradients(total, self.optimizer, self.parameters)
        self._count_skipped(skipped, output.as_dict())
        if not skipped:
            self.scheduler.step()  # a skipped step changes nothing, the schedule included
        self.step += 1
        elapsed = time.perf_counter() - started
        result = StepResult(
            step=self.step, phase=phase.name, terms=output.as_dict(), lr=lr,
            samples_per_second=content.shape[0] * self.world_size / max(elapsed, 1e-9),
            samples=content.shape[0] * self.world_size, skipped=skipped,
            per_sample={k: v.detach().float().cpu() for k, v in output.per_sample.items()},
            content_keys=content_keys, style_keys=style_keys)
        for hook in self.hooks:
            hook.on_step(self, result)
        if self.config.sample_every and self.step % self.config.sample_every == 0 and self.hooks:
            grid = image_grid(content, style, images["pred"])
            for hook in self.hooks:
                hook.on_images(self, self.step, grid)
        return result

    def _apply_gradients(self, total: Tensor, optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]
                         ) -> bool:
        """Backward ``total`` and step ``optimizer`` over ``parameters`` unless the loss or the gradients are not
        finite (on any rank: every rank must skip together, or DDP's all-reduce hangs). Returns whether the update
        was skipped; the gradients are cleared either way."""
        finite = torch.isfinite(total.detach())
        if self.distributed:
            flag = (~finite).float().reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            finite = flag.item() == 0
        skipped = not bool(finite)
        if not skipped:
            if self.scaler is not None:
                self.scaler.scale(total).backward()
                self.scaler.unscale_(optimizer)
            else:
                total.backward()
            grads = [p.grad for p in parameters if p.grad is not None]
            if self.config.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if self.scaler is not None:
                self.scaler.step(optimizer)  # skips the update by itself on inf/nan gradients
                self.scaler.update()
            elif torch.isfinite(norm):
                optimizer.step()
            else:  # a finite loss with non-finite gradients must not reach the weights either
                skipped = True
        optimizer.zero_grad(set_to_none=True)
        return skipped

    def _count_skipped(self, skipped: bool, terms: Mapping[str, float]) -> None:
        """The non-finite guard: a warning per skipped step, :class:`NonFiniteLossError` after
        ``max_nonfinite_steps`` in a row."""
        if not skipped:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning("step %d: non-finite loss or gradient (%s); step skipped (%d in a row)", self.step + 1,
                    {k: round(v, 4) for k, v in terms.items()}, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} consecutive steps had a non-finite loss or gradient (last terms: "
                f"{dict(terms)}); stopping. Lower lr, set grad_clip, or use precision=fp32.")

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
        trainer_state = {
            **self._optimizer_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
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
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
        self.nonfinite_total = int(state["nonfinite_total"])
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
