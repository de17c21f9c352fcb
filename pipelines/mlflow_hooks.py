"""Rank 0's MLflow logging during training: a :class:`stylecore.training.TrainingHooks` that logs to the run the
driver created (:mod:`pipelines.tracking`) by its id, through ``MlflowClient``."""

from __future__ import annotations

import time
from typing import Mapping

from stylecore.training import StepResult, Trainer, TrainingHooks

# MLflow's log_batch takes at most 1000 metrics a call
MLFLOW_BATCH_METRICS = 1000


class MLflowHooks(TrainingHooks):
    """Rank-0 training hooks: every term, lr, samples/s and the batch's style-loss spread per step;
    sample grids as images at their step (the UI's step slider shows training progress).

    The steps' figures are sent every ``every`` steps (and at step ``total``), all in one ``log_batch``: a
    per-step call costs ~4 ms on local SQLite, more over HTTP, with every DDP rank waiting on rank 0, and
    reading a step's figures at once would make each step wait for the accelerator."""

    def __init__(self, tracking_uri: str, run_id: str, every: int = 1, total: int | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(tracking_uri), run_id
        self.every, self.total = every, total
        self.pending: list[tuple[StepResult, float]] = []

    def on_step(self, trainer: Trainer, result: StepResult) -> None:
        self.pending.append((result, time.time()))
        if result.step % self.every == 0 or result.step == self.total:
            self.flush(trainer)

    def on_checkpoint(self, trainer: Trainer, path) -> None:
        self.flush(trainer)  # what a checkpoint covers is on the run too, should the run stop after it

    def flush(self, trainer: Trainer) -> None:
        """Send the pending steps' figures in one call."""
        from mlflow.entities import Metric

        if not self.pending:
            return
        skipped = float(trainer.nonfinite_total)
        metrics = []
        for result, at in self.pending:
            values = {f"loss/{name}": value for name, value in result.terms.items()}
            values.update({"lr": result.lr, "samples_per_second": result.samples_per_second,
                           "skipped_steps": skipped})
            style = result.per_sample.get("style")
            if style is not None and style.numel() > 1 and float(style.min()) > 0:
                # How unequal styles are within the batch (the imbalance the balanced loss targets).
                values["style_spread_max_over_min"] = float(style.max() / style.min())
            metrics += [Metric(k, float(v), int(at * 1000), result.step) for k, v in values.items()]
        self.pending = []
        for start in range(0, len(metrics), MLFLOW_BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH_METRICS])

    def log_values(self, step: int, values: Mapping[str, float]) -> None:
        """Figures of one step (the training terms, validation scores) on this run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def on_images(self, trainer: Trainer, step: int, grid) -> None:
        image = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        self.client.log_image(self.run_id, image, key="samples", step=step)
