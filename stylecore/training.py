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

import copy
import dataclasses
import json
import logging
import math
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from stylecore import models as model_registry
from stylecore.data import Batch
from stylecore.devices import best_device
from stylecore.io import atomic_directory, remove_stale_temporaries
from stylecore.models.base import StyleTransferModel, TrainingPhase
from stylecore.objective import Objective, ObjectiveOutput, build_objective

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "stylecore-checkpoint/1"
#: a model's parameters that name pretrained weights (imagenet | a file | random:<seed>)
WEIGHT_PARAMETERS = ("encoder_weights", "predictor_weights")
_STEP_DIR = re.compile(r"step-(\d+)$")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class CheckpointError(ValueError):
    """A path is not a usable stylecore checkpoint; the message says why."""


@dataclass
class TrainConfig:
    """Everything a training run needs besides data. Unknown keys fail in :meth:`from_dict`."""

    model: str = "adain"
    model_params: dict[str, Any] = field(default_factory=dict)
    #: replace the style term's loss (keeping its layers and weight) by any registered style loss
    style_loss: str | None = None
    #: parameters for the style term (e.g. weight, layers, gram_normalize)
    style_params: dict[str, Any] = field(default_factory=dict)
    #: per-term overrides merged into the model's objective: {term: weight | {settings} | None to drop}
    objective: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    lr: float = 1e-4
    lr_schedule: str = "inverse"  # inverse: lr / (1 + lr_decay · step) (AdaIN, SANet, Linear); cosine; constant
    lr_decay: float = 5e-5
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global grad norm; None disables
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16: CUDA only, with a grad scaler)
    channels_last: str | bool = "auto"
    compile: bool = False
    max_nonfinite_steps: int = 10  # consecutive skipped steps before the run stops
    seed: int = 0
    sample_every: int = 0  # steps between sample image grids sent to hooks (0: never)
    checkpoint_every: int = 0  # steps between checkpoints in fit() (0: only at the end)
    keep_checkpoints: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"training config: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        config = cls(**{k: copy.deepcopy(v) for k, v in values.items()})
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def validate(self) -> None:
        self._check_types()
        if self.model not in model_registry.names():
            raise ValueError(f"training config: model={self.model!r} is not registered; "
                             f"choose one of {', '.join(model_registry.names())}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"training config: steps must be a positive integer; got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"training config: lr must be a positive number; got {self.lr!r}")
        if self.lr_schedule not in ("inverse", "cosine", "constant"):
            raise ValueError(f"training config: lr_schedule={self.lr_schedule!r} is not one of inverse, cosine, constant")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"training config: precision={self.precision!r} is not one of auto, fp32, bf16, fp16")
        if self.channels_last not in ("auto", True, False):
            raise ValueError(f"training config: channels_last must be auto, true or false; got {self.channels_last!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"training config: grad_clip must be positive or null; got {self.grad_clip!r}")
        for key in ("max_nonfinite_steps", "keep_checkpoints"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"training config: {key} must be ≥ 1; got {getattr(self, key)!r}")
        for key in ("sample_every", "checkpoint_every"):
            if int(getattr(self, key)) < 0:
                raise ValueError(f"training config: {key} must be ≥ 0; got {getattr(self, key)!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    def _check_types(self) -> None:
        """Each key's type, so that ``grad_clip: "1"`` is an error naming the key, not a TypeError mid-run."""
        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for key in ("steps", "max_nonfinite_steps", "seed", "sample_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"training config: {key} must be an integer; got {value!r} ({type(value).__name__})")
        for key in ("lr", "lr_decay", "min_lr_ratio", "weight_decay"):
            if not is_number(getattr(self, key)):
                raise ValueError(f"training config: {key} must be a number; got {getattr(self, key)!r}")
        if self.grad_clip is not None and not is_number(self.grad_clip):
            raise ValueError(f"training config: grad_clip must be a number or null; got {self.grad_clip!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"training config: compile must be true or false; got {self.compile!r}")
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"training config: betas must be two numbers in [0, 1); got {self.betas!r}")
        for key in ("model_params", "style_params", "objective"):
            if not isinstance(getattr(self, key), Mapping):
                raise ValueError(f"training config: {key} must be a mapping; got {getattr(self, key)!r}")
        if self.style_loss is not None and not isinstance(self.style_loss, str):
            raise ValueError(f"training config: style_loss must be a loss name or null; got {self.style_loss!r}")

    def check_buildable(self) -> None:
        """Build the model and every phase's objective as the Trainer will, without weights or compute.

        The model is built on PyTorch's meta device (shapes only) with seeded random weights in place of
        every pretrained part, whose specs are checked separately (:func:`stylecore.encoders.check_weights_spec`:
        a named file must exist). So an unknown loss, a misspelt ``style_params`` or ``model_params`` key, an
        objective override naming nothing, or a missing weights file fails here, before data or a cluster
        is touched, with the message the Trainer would give.
        """
        from stylecore.encoders import check_weights_spec
        from stylecore.registry import accepted_parameters

        self.validate()
        cls = model_registry.MODELS.get(self.model)
        params = dict(self.model_params)
        for key in WEIGHT_PARAMETERS:
            if key in params:
                try:
                    check_weights_spec(params[key])
                except ValueError as error:
                    raise ValueError(f"training config: model_params.{key}: {error}") from None
                params[key] = "random:0"
        if self.style_loss is not None:
            from stylecore.losses import LOSSES

            try:
                LOSSES.get(self.style_loss)
            except ValueError as error:
                raise ValueError(f"training config: style_loss: {error}") from None
        try:
            with torch.device("meta"):
                model = model_registry.MODELS.build(self.model, **params)
        except (ValueError, TypeError) as error:
            raise ValueError(f"training config: model {self.model!r} with model_params {sorted(params)}: {error} "
                             f"(it accepts: {', '.join(accepted_parameters(cls))})") from None
        for phase in model.training_phases():
            try:
                objective = model.default_objective(phase.name, self.style_loss or None, self.style_params)
                if phase.name != "autoencoder":
                    objective = merge_objective(objective, self.objective)
                build_objective(objective, model.loss_encoder())
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"training config: the {phase.name} objective of {self.model} (style_loss "
                                 f"{self.style_loss}, style_params {dict(self.style_params)}, objective "
                                 f"{dict(self.objective)}): {error}") from None


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


class _TrainingStep(nn.Module):
    """model → objective for one phase, as one module so DDP can wrap the whole forward."""

    def __init__(self, model: StyleTransferModel, objectives: Mapping[str, Objective]) -> None:
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(dict(objectives))
        self.needs = {phase: objective_needs(objective) for phase, objective in objectives.items()}

    def forward(self, content: Tensor, style: Tensor, phase: str) -> tuple[Tensor, ObjectiveOutput, dict[str, Tensor]]:
        outputs = self.model.training_outputs(content, style, self.needs[phase], phase)
        result = self.objectives[phase](images=outputs.images, features=outputs.features, values=outputs.values)
        return result.total, result, outputs.images


def objective_needs(objective: Objective) -> dict[str, set[str]]:
    """Every role the objective reads → the encoder layers it needs from it (empty for images/values)."""
    needs: dict[str, set[str]] = {role: set() for roles in objective.roles().values() for role in roles}
    for role, layers in objective.feature_layers().items():
        needs[role] = set(layers)
    return needs


def merge_objective(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{term: weight | settings | None}`` overrides to an objective config."""
    merged = copy.deepcopy(dict(base))
    for term, value in overrides.items():
        if value is None:
            merged.pop(term, None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            settings = merged.get(term, {})
            settings = dict(settings) if isinstance(settings, Mapping) else {"weight": settings}
            settings["weight"] = float(value)
            merged[term] = settings
        elif isinstance(value, Mapping):
            settings = merged.get(term, {})
            settings = dict(settings) if isinstance(settings, Mapping) else {"weight": settings}
            settings.update(value)
            merged[term] = settings
        else:
            raise ValueError(f"objective override for term {term!r} must be a weight, a mapping or null; got {value!r}")
    return merged


def _capture_rng(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors, numbers and lists only (a ``weights_only`` load reads it
    back without unpickling anything). CUDA: only this trainer's device, so a resume that sees other
    GPUs (Ray shows a node's GPUs to every worker on it) restores the state it saved."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }
    if device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer.pt`` read with ``weights_only=True``: tensors, numbers, strings and containers, never code.

    A file that needs anything else (a crafted pickle, or a checkpoint written before stylecore stored its
    RNG states as tensors) is refused with :class:`CheckpointError`; its model weights still load.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else type(error).__name__)
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:300]
        raise CheckpointError(
            f"{path}: refused to load the trainer state, which holds more than tensors and numbers ({first}). "
            "stylecore never unpickles objects from a checkpoint: it is a crafted file or one written by an older "
            "stylecore. Its model weights still load (stylecore.load); to train on, start a run in a new output "
            "folder") from None


def image_grid(content: Tensor, style: Tensor, output: Tensor, rows: int = 4) -> Tensor:
    """(3, H', W') grid with one row per sample: content | style | output, in [0, 1]."""
    import torchvision

    n = min(rows, content.shape[0])
    size = content.shape[-2:]
    resize = lambda x: torch.nn.functional.interpolate(x[:n].float(), size=size, mode="bilinear", align_corners=False)
    triples = torch.stack([resize(content), resize(style), resize(output.detach())], dim=1).flatten(0, 1)
    return torchvision.utils.make_grid(triples.clamp(0, 1).cpu(), nrow=3, padding=2, pad_value=1.0)


class Trainer:
    """Trains one model with one config. See the module docstring."""

    def __init__(self, config: TrainConfig | Mapping[str, Any], device: str | torch.device | None = None,
                 hooks: Sequence[TrainingHooks] = (), model: StyleTransferModel | None = None) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.config.validate()
        self.device = torch.device(device) if device is not None else best_device()
        self.hooks = list(hooks)
        torch.manual_seed(self.config.seed)  # the model's initial weights follow the seed
        self.model = model if model is not None else model_registry.build(self.config.model, **self.config.model_params)
        self.phases = self.model.training_phases()
        self.phase_starts = self._phase_starts(self.phases, self.config.steps)
        objectives = {phase.name: self._build_objective(phase) for phase in self.phases}
        self.model.to(self.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.channels_last = (self.config.channels_last if self.config.channels_last != "auto"
                              else self.device.type == "cuda" or self.precision == "bf16")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.step_module = _TrainingStep(self.model, objectives).to(self.device)
        if self.config.compile:
            for module in {id(m): m for m in self._compilable()}.values():
                module.compile()
        self.runner: nn.Module = self.step_module
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        self.world_size = torch.distributed.get_world_size() if self.distributed else 1
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
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.current_phase: str | None = None
        log.info("trainer: model %s (%d trained parameters), precision %s, channels_last %s, compile %s, device %s",
                 self.config.model, sum(p.numel() for p in self.parameters), self.precision, self.channels_last,
                 self.config.compile, self.device)

    # -- construction helpers ------------------------------------------------------------------

    @staticmethod
    def _phase_starts(phases: Sequence[TrainingPhase], steps: int) -> list[int]:
        starts, done = [], 0.0
        for phase in phases:
            starts.append(round(done * steps))
            done += phase.fraction
        return starts

    def _build_objective(self, phase: TrainingPhase) -> Objective:
        config = self.model.default_objective(phase.name, self.config.style_loss or None, self.config.style_params)
        if phase.name != "autoencoder":
            config = merge_objective(config, self.config.objective)
        return build_objective(config, self.model.loss_encoder())

    def _compilable(self) -> list[nn.Module]:
        modules = [m for phase in self.phases for m in self.model.trainable_modules(phase.name)]
        return modules + [self.model.loss_encoder()]

    def _lr_factor(self, step: int) -> float:
        if self.config.lr_schedule == "inverse":
            return 1.0 / (1.0 + self.config.lr_decay * step)
        if self.config.lr_schedule == "cosine":
            progress = min(step / max(self.config.steps, 1), 1.0)
            floor = self.config.min_lr_ratio
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
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
        finite = torch.isfinite(total.detach())
        if self.distributed:  # every rank must skip together, or DDP's all-reduce hangs
            flag = (~finite).float().reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            finite = flag.item() == 0
        skipped = not bool(finite)
        lr = self.optimizer.param_groups[0]["lr"]
        if not skipped:
            if self.scaler is not None:
                self.scaler.scale(total).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                total.backward()
            grads = [p.grad for p in self.parameters if p.grad is not None]
            if self.config.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if self.scaler is not None:
                self.scaler.step(self.optimizer)  # skips the update by itself on inf/nan gradients
                self.scaler.update()
            elif torch.isfinite(norm):
                self.optimizer.step()
            else:  # a finite loss with non-finite gradients must not reach the weights either
                skipped = True
        self.optimizer.zero_grad(set_to_none=True)
        if skipped:
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            log.warning("step %d: non-finite loss or gradient (%s); step skipped (%d in a row)", self.step + 1,
                        {k: round(v, 4) for k, v in output.as_dict().items()}, self.nonfinite_in_a_row)
            if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_a_row} consecutive steps had a non-finite loss or gradient (last terms: "
                    f"{output.as_dict()}); stopping. Lower lr, set grad_clip, or use precision=fp32.")
        else:
            self.nonfinite_in_a_row = 0
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
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total_steps, initial=self.step, desc=f"train {self.config.model}", unit="step")
        iterator: Iterator = iter(data)
        while self.step < total_steps:
            batch = next(iterator)
            if isinstance(batch, Batch):
                result = self.train_step(batch.content, batch.style, batch.content_keys, batch.style_keys)
            else:
                result = self.train_step(*batch)
            results.append(result)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{result.terms['total']:.4g}", sps=f"{result.samples_per_second:.1f}")
            every = self.config.checkpoint_every
            if checkpoint_dir is not None and every and self.step % every == 0 and self.step < total_steps:
                self.save_checkpoint(checkpoint_dir, data=data)
        if bar is not None:
            bar.close()
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir, data=data)
        return results

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.config(),
            "train": self.config.to_dict(),
            "step": self.step,
            "phase": self.phase_at(max(self.step - 1, 0)).name,
            "encoder": self.model.loss_encoder().describe(),
            "precision": self.precision,
        }

    def save_checkpoint(self, checkpoint_dir: Path | str, data: Any = None) -> Path:
        """Write ``checkpoint_dir/step-NNNNNN`` atomically; keep the newest ``keep_checkpoints``."""
        from safetensors.torch import save_file

        root = Path(checkpoint_dir)
        path = root / f"step-{self.step:06d}"
        state = {key: value.detach().cpu().contiguous() for key, value in self.model.persistent_state().items()}
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "rng": _capture_rng(self.device),
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
        _load_model_state(self.model, path)
        state = load_trainer_state(path / "trainer.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
        self.nonfinite_total = int(state["nonfinite_total"])
        _restore_rng(state["rng"], self.device)
        if data is not None and state.get("data") is not None and hasattr(data, "load_state_dict"):
            data.load_state_dict(state["data"])
        self.current_phase = None  # re-enter the phase (requires_grad flags) on the next step


# -- checkpoint files ----------------------------------------------------------------------------


def checkpoint_steps(root: Path | str) -> list[Path]:
    """The complete ``step-N`` checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))
             and (p / "config.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path | str) -> Path | None:
    steps = checkpoint_steps(root)
    return steps[-1] if steps else None


def latest_step(path: Path) -> int:
    return int(read_checkpoint_config(path)["step"])


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory itself, or a run directory whose newest ``step-N`` is taken."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"{path} is not a stylecore checkpoint: it has no config.json + model.safetensors and no "
                          "step-N checkpoint directories (train one with `stylecore train --output DIR`)")


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable config.json ({error})") from None
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: config.json has format {config.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return config


def _load_model_state(model: StyleTransferModel, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path / "model.safetensors"))
    expected = model.persistent_state()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: model state does not match a {model.name} built from its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)


def load(path: Path | str, device: str | torch.device | None = None) -> StyleTransferModel:
    """Rebuild the model of a checkpoint directory (or the newest in a run directory), in eval mode, on
    ``device`` (default: CUDA when it works, else the CPU)."""
    path = resolve_checkpoint(path)
    config = read_checkpoint_config(path)
    name, params = config["model"]["model"], dict(config["model"]["params"])
    if name not in model_registry.names():
        raise CheckpointError(f"{path}: model {name!r} is not registered in this stylecore "
                              f"(known: {', '.join(model_registry.names())})")
    cls = model_registry.MODELS.get(name)
    params.update(cls.checkpoint_overrides)
    model = cls(**params)
    encoder = config.get("encoder", {})
    if hasattr(model, "encoder") and isinstance(getattr(model, "encoder"), nn.Module) and "weights_sha256" in encoder:
        current = model.encoder.describe().get("weights_sha256")
        if current is not None and current != encoder["weights_sha256"]:
            raise CheckpointError(f"{path} was trained with encoder weights sha256 {encoder['weights_sha256']}, but "
                                  f"{encoder.get('weights_file')} now has {current}; restore that file")
    _load_model_state(model, path)
    return model.to(device if device is not None else best_device()).eval()
