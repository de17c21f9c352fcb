"""Run :class:`stylecore.training.Trainer` inside Ray Train V2 workers (DDP over gloo or NCCL).

Each worker builds the same Trainer the single-process CLI uses; Ray only starts the workers, sets
up torch.distributed (the Trainer then wraps itself in DDP), stores checkpoints and restarts failed
workers. Rank 0 writes a stylecore checkpoint directory every ``checkpoint_every`` steps and reports
it; every rank calls ``ray.train.report`` at the same steps (Ray requires equal report counts). A
restarted or re-run training resumes from the newest reported checkpoint.

With ``extra={"mlflow": {"tracking_uri", "run_id"}}`` rank 0 logs the run through
:class:`pipelines.mlflow_hooks.MLflowHooks`. With ``validation=`` (held-out pairs and metric weights) rank 0
also scores the model on those pairs at every report and adds ``val/<metric>`` and ``val/objective``
to the reported metrics: what a sweep's scheduler compares trials by. This module is the core of the
``train`` and ``sweep`` stages.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipelines import run_checkpoints, storage
from pipelines.console import train_logging_config
from stylecore.progress import TrainingProgress
from pipelines.ray_session import Scale, on_local_ray
from stylecore.config import DataConfig, TrainConfig
from stylecore.data import ShardLocations
from stylecore.training import Trainer, TrainingHooks

# How often rank 0 prints its progress line: often enough to see a long run move, rarely enough for a short log.
PROGRESS_EVERY_S = 30.0
# Worker-group starts a run on a local Ray tries before it fails (each waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S,
# 60 s by default). Ray Train retries a start that timed out forever (FailureConfig.controller_failure_limit -1):
# right on a cluster, whose autoscaler may still be adding nodes, but on one machine nothing will free the CPUs a
# leaked placement group holds (seen once after an ASHA-stopped trial), and the demo waited without end.
LOCAL_START_ATTEMPTS = 3


class _ReportEvery(TrainingHooks):
    """Reports to Ray every ``every`` steps on every rank; rank 0 attaches a checkpoint.

    The reported losses and samples/s are means over the steps since the last report, so the final
    figures describe the end of training rather than one noisy batch. ``samples_per_second`` times the
    steps alone; ``throughput`` is wall-clock samples/s since the last report (data loading, hooks,
    reports and checkpoints included): what a run really achieves.
    """

    def __init__(self, config: Mapping[str, Any], total: int, data: Any,
                 validate: Callable[[Trainer], dict[str, float]] | None = None) -> None:
        self.config, self.every, self.total, self.data = config, config["report_every"], total, data
        self.fail_at_step, self.marker = config.get("fail_at_step"), config.get("fail_marker")
        self.validate = validate  # rank 0 only: the other ranks report training figures alone
        self.window: list[Any] = []
        self.window_started = time.perf_counter()

    def on_step(self, trainer: Trainer, result) -> None:
        if self.fail_at_step is not None and result.step == self.fail_at_step and self.marker \
                and not Path(self.marker).exists():
            Path(self.marker).write_text("failed once\n")  # the fault test: die once, then resume
            os._exit(1)
        self.window.append(result)  # read at the report: a step's figures stay on its device until then
        if result.step % self.every and result.step != self.total:
            return
        window = [r for r in self.window if not r.skipped] or [result]
        self.window = []
        now = time.perf_counter()
        samples = sum(r.samples for r in window)
        throughput, self.window_started = samples / max(now - self.window_started, 1e-9), now
        # A window can span a phase change (linear: autoencoder → transform) whose terms differ
        terms = window_means([r.terms for r in window])
        metrics = {"step": result.step, **{f"loss/{k}": v for k, v in terms.items()}, "lr": result.lr,
                   "samples_per_second": sum(r.samples_per_second for r in window) / len(window),
                   "throughput": throughput,
                   "skipped_steps": trainer.nonfinite_total}
        rank_zero = run_checkpoints.world_rank(self.config) == 0
        if rank_zero and self.validate is not None:
            metrics.update(self.validate(trainer))
        run_checkpoints.report(self.config, metrics, result.step, save=(
            lambda folder: trainer.save_checkpoint(folder, data=self.data)) if rank_zero else None)


def window_means(rows: list[Mapping[str, float]]) -> dict[str, float]:
    """Each figure's mean over the rows of a report window that have it, for the figures of the last row: a
    window may span steps whose terms differ (a phase change, a batch without a style label)."""
    return {name: sum(values) / len(values) for name in rows[-1]
            if (values := [row[name] for row in rows if name in row])}


class Validation:
    """Rank 0's validation: score the model on held-out pairs; ``val/<metric>`` means and
    ``val/objective`` = Σ weight × mean over the metrics ``objective`` names (lower is better; +inf for a model
    whose scores are not finite)."""

    def __init__(self, settings: Mapping[str, Any], device: torch.device, log: Callable[[int, dict], None] | None) -> None:
        from stylecore.metrics import StylizationMetrics

        self.pairs, self.objective = settings["pairs"], dict(settings["objective"])
        self.batch_size, self.device, self.log = int(settings["batch_size"]), device, log
        self.metrics = StylizationMetrics(settings["weights"]).to(device)
        self.references: dict = {}  # the fixed pairs' reference features, encoded at the first report only

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        from stylecore.heldout import score_pairs

        values, _ = score_pairs(trainer.model, self.pairs, self.metrics, self.batch_size, self.device, keep_outputs=(),
                                reference_cache=self.references)
        means = {f"val/{name}": float(value.mean()) for name, value in values.items()}
        objective = sum(weight * means[f"val/{name}"] for name, weight in self.objective.items())
        # A diverged model scores NaN, and ASHA never stops a NaN (`NaN < cutoff` is False): it would train on to
        # its end or to the non-finite guard. +inf is the worst score there is, so the scheduler prunes it.
        means["val/objective"] = objective if math.isfinite(objective) else math.inf
        if self.log is not None:
            self.log(trainer.step, means)
        return means


def worker_print(line: str) -> None:
    """A line from a Ray Train worker to the stage's console, once. Ray Train patches ``print`` in its workers to
    log through its logger, and when a library has wrapped ``sys.stdout`` (MLflow does in the workers) it also
    tees to the wrapped stream: a plain ``print`` showed every line twice. Written to the process's own stdout,
    the line takes the unpatched path, and Ray forwards it as it does every worker line."""
    print(line, file=sys.__stdout__, flush=True)


class _ProgressLine(TrainingHooks):
    """Rank 0's progress line in the stage's console (:class:`stylecore.progress.TrainingProgress`)."""

    def __init__(self, label: str, total: int, every_s: float = PROGRESS_EVERY_S) -> None:
        self.progress = TrainingProgress(label, total, every_s)

    def on_step(self, trainer: Trainer, result) -> None:
        line = self.progress.line(result.step, result.samples_per_second,
                                  lambda: result.terms.get("total", math.nan))
        if line is not None:
            worker_print(line)


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: the same Trainer and data stream as `stylecore train` (the same TrainConfig and
    DataConfig objects), resumed from the run's newest checkpoint (:mod:`pipelines.run_checkpoints`)."""
    from pipelines.console import quiet_train_worker

    with quiet_train_worker():  # Ray Train's report and checkpoint lines, from every rank
        _train(config)


def _train(config: dict[str, Any]) -> None:
    rank = run_checkpoints.world_rank(config)
    train: TrainConfig = config["train"]
    torch.set_num_threads(config["threads_per_worker"])
    device = run_checkpoints.device(config)
    data = config["data"].stream(config["content"], config["style"], seed=train.seed + rank, device=device)
    rank_zero = rank == 0
    tracking = None
    if config.get("mlflow") and rank_zero:
        from pipelines.mlflow_hooks import MLflowHooks

        tracking = MLflowHooks(config["mlflow"]["tracking_uri"], config["mlflow"]["run_id"],
                               every=config["report_every"], total=train.steps)
    validate = None
    if config.get("validation") and rank_zero:
        validate = Validation(config["validation"], device, tracking.log_values if tracking else None)
    hooks: list[TrainingHooks] = [_ReportEvery(config, train.steps, data, validate)]
    if tracking is not None:
        hooks.append(tracking)
    if rank_zero:
        hooks.append(_ProgressLine(config.get("progress_label", "train"), train.steps))
    trainer = Trainer(train, device=device, hooks=hooks)
    if rank_zero and config.get("summary_line", True):  # the set-up in one line (its parts at STYLECORE_LOG_LEVEL=INFO)
        worker_print(f"{config.get('progress_label', 'train')}: {trainer.summary()}")
    with run_checkpoints.resumed_directory(config) as directory:
        if directory is not None:
            trainer.load_checkpoint(directory, data=data)
    if trainer.step:
        worker_print(f"rank {rank}: resumed from step {trainer.step}")
        if config.get("fail_marker") and Path(config["fail_marker"]).exists():
            with open(config["fail_marker"], "a") as log:  # the fault test reads where the run resumed
                log.write(f"rank {rank} resumed at step {trainer.step}\n")
    trainer.fit(data)


def run(train: TrainConfig | Mapping[str, Any], data: DataConfig, content: ShardLocations, style: ShardLocations, *,
        name: str, storage_path: str, scale: Scale, report_every: int, keep: int, max_failures: int,
        validation: Mapping[str, Any] | None = None, report_to_tune: bool = False,
        extra: dict[str, Any] | None = None, progress_label: str | None = None) -> ray.train.Result:
    """Train with Ray Train; a re-run with the same ``name`` and ``storage_path`` resumes.

    ``train`` and ``data`` are the typed configs ``stylecore train`` uses (a mapping is read as a TrainConfig);
    the workers receive them as they are. ``scale`` (:func:`pipelines.ray_session.decide_scaling`) lays out the
    workers: ``data.batch_size`` is per worker (the global batch is ``scale.ranks × batch_size``), and each CPU
    worker holds one CPU and runs ``threads_per_worker`` torch threads. Every ``report_every`` steps the ranks
    report and rank 0 checkpoints; Ray keeps ``keep`` checkpoints and restarts failed workers ``max_failures``
    times. ``validation``: ``{"pairs": HeldOutPairs, "weights": metric encoder weights, "objective": {metric:
    weight}, "batch_size": n}`` makes rank 0 report validation scores (see :class:`Validation`).
    ``report_to_tune``: a sweep trial's run, whose reports Tune hears (through ``TuneReportCallback`` from a worker
    group). Rank 0 prints a progress line at most every ``PROGRESS_EVERY_S`` seconds, labelled ``progress_label``
    (default: ``name``).
    """
    if not isinstance(train, TrainConfig):
        train = TrainConfig.from_dict(train)
    locations = {"content": [str(p) for p in _as_list(content)], "style": [str(p) for p in _as_list(style)]}
    loop_config = {"train": train, "data": data, **locations, "threads_per_worker": scale.threads_per_worker,
                   "report_every": report_every, "validation": dict(validation) if validation else None,
                   "progress_label": progress_label or name, **(extra or {})}
    if scale.in_process and report_to_tune:
        # A sweep trial in local mode. Local mode would call train_worker in this process too, but Ray refuses
        # ray.train's API inside a Tune trial ("deprecated when running in a function passed to Ray Tune"): the
        # trial calls it itself, and run_checkpoints reports to Tune and keeps the checkpoints.
        train_worker(in_process_config(loop_config, name=name, storage_path=storage_path, scale=scale, keep=keep,
                                       report_to_tune=True))
        return ray.train.Result(metrics=None, checkpoint=None, path=storage.join(storage_path, name), error=None)
    trainer = torch_trainer(train_worker, loop_config, name=name, storage_path=storage_path, scale=scale,
                            max_failures=max_failures, keep=keep, report_to_tune=report_to_tune)
    return trainer.fit()


def in_process_config(loop_config: dict[str, Any], *, name: str, storage_path: str | Path, scale: Scale, keep: int,
                      report_to_tune: bool = False) -> dict[str, Any]:
    """``loop_config`` for a run in this process (:data:`pipelines.run_checkpoints.IN_PROCESS`): where its
    checkpoints are kept (where Ray Train would keep a worker group's), how many, its device, and whether its
    reports go to Tune."""
    return {**loop_config, run_checkpoints.IN_PROCESS: {
        "folder": storage.join(storage_path, name), "keep": keep, "use_gpu": scale.use_gpu, "tune": report_to_tune}}


def torch_trainer(worker: Callable[[dict], None], loop_config: dict[str, Any], *, name: str, storage_path: str | Path,
                  scale: Scale, max_failures: int, keep: int, report_to_tune: bool = False) -> TorchTrainer:
    """A Ray Train TorchTrainer of ``worker`` laid out by ``scale``: DDP over NCCL on GPUs, gloo on CPUs, one CPU
    per worker; a re-run with the same ``name`` and ``storage_path`` resumes from the newest of ``keep`` checkpoints,
    and failed workers are restarted ``max_failures`` times. On a local Ray a worker group that cannot start (its
    resources held) fails the run after :data:`LOCAL_START_ATTEMPTS` tries instead of waiting forever. A scale of
    no workers (``scale.in_process``) is Ray Train's local mode: ``worker`` runs in this process, and its
    checkpoints are kept in the same place by :mod:`pipelines.run_checkpoints` (no restarts: a failed run resumes
    when the stage is re-run). Every stage that trains runs through it."""
    callbacks = []
    if scale.in_process:
        if report_to_tune:  # local mode runs no callbacks, and Ray refuses ray.train's API inside a Tune trial
            raise ValueError(f"{name}: a sweep trial in this process runs through ray_training.run, not a TorchTrainer")
        loop_config = in_process_config(loop_config, name=name, storage_path=storage_path, scale=scale, keep=keep)
    elif report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    return TorchTrainer(
        worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if scale.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=scale.num_workers, use_gpu=scale.use_gpu,
                                     resources_per_worker=None if scale.in_process else
                                     {"CPU": 1, "GPU": scale.gpus_per_worker} if scale.use_gpu else {"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage_path), callbacks=callbacks,
                             failure_config=FailureConfig(
                                 max_failures=max_failures,
                                 controller_failure_limit=LOCAL_START_ATTEMPTS if on_local_ray() else -1),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep),
                             logging_config=train_logging_config()))


def _as_list(locations: ShardLocations) -> list:
    return [locations] if isinstance(locations, (str, Path)) else list(locations)
