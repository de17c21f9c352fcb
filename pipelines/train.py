"""DVC stage `train@<model>-<loss>`: one combination of the grid, trained with Ray Train and tracked in MLflow.

    python -m pipelines.train --model adain --loss balanced_gram

The settings are params.yaml's ``train.profiles.<profile>`` ← ``train.models.<model>`` ←
``train.losses.<loss>``; the data are the active profile's content and style shards. The workers run
:class:`stylecore.training.Trainer` unchanged (:mod:`pipelines.ray_training`); the driver owns the
MLflow run (tags, params, system metrics, the final model) and rank 0 logs the curves and images.

Re-running after a crash resumes: the Ray run name and the MLflow run are derived from the
combination's settings, so the same settings find the same Ray checkpoints and reopen the same
unfinished MLflow run. A finished combination leaves ``models/<model>-<loss>/checkpoint`` (loadable
by ``stylecore.load``) and ``metrics.json``, then deletes its Ray checkpoints, so a later re-run
(new code, new data) starts from scratch. With ``RAY_ADDRESS`` set, the stage runs on that cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from pipelines.model_uris import log_final_model
from pipelines.provenance import data_tags, shard_inputs, source_tags
from pipelines.ray_session import describe_scale, failure_heading, ray_session, scaling
from pipelines.settings import Combination, TrainStageError, resolve_combination
from pipelines.sources import CatalogueError, load_params
from pipelines.stage import run_stage
from pipelines.tracking import DESCRIPTION, fluent_store, loss_curves, tracking_settings
from stylecore.config import to_dict
from stylecore.io import atomic_directory, atomic_write_text, csv_text

__all__ = ["TrainStageError", "main", "run"]


def run(model: str, loss: str, *, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), ray_storage: str | Path | None = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one grid cell; returns the metrics written to ``models/<model>-<loss>/metrics.json``.

    ``ray_storage`` (a folder or URI) keeps Ray's checkpoints of unfinished runs; default
    ``<storage.checkpoints>/train``. The workers read the shards where ``storage.shards`` says.
    """
    root = params_path.resolve().parent
    params = load_params(params_path)
    combination = resolve_combination(params, model, loss, shards_root)
    stage = os.environ.get("DVC_STAGE", f"train@{combination.name}")
    heading = (f"{model} × {loss}, profile {combination.profile}, {combination.train.steps} steps, weights "
               f"{combination.model_weights() or 'none'}")
    with ray_session():
        return train_run(combination, params, root, stage, models_root / combination.name, ray_storage,
                         tags={"model": model, "loss": loss}, title=f"{model} × {loss}", extra=extra, heading=heading)


def train_run(combination: Combination, params: Mapping[str, Any], root: Path, stage: str, out: Path,
              ray_storage: str | Path | None, *, tags: Mapping[str, str], title: str,
              extra: dict[str, Any] | None = None, heading: str | None = None) -> dict[str, Any]:
    """One Ray Train run of ``combination`` in the current Ray session, tracked in MLflow: ``out/checkpoint``,
    ``out/metrics.json`` and ``out/curve.csv``, the model logged to the run; a re-run with the same settings resumes
    the same Ray and MLflow runs. What the grid's train stage and the gan stage both run. ``heading`` (what is
    trained) opens the run's one set-up line: the workers and the MLflow run."""
    import mlflow

    from pipelines import ray_training, storage
    from pipelines.tracking import flatten, log_shard_inputs, start_run

    shards = storage.worker_shards(params, {"content": combination.content, "style": combination.style})
    ray_storage = storage.ray_storage(params, root, "train", ray_storage)
    tracking = tracking_settings(params, root)
    run_key = f"{combination.name}-{combination.digest()}"
    inputs = shard_inputs(root / "dvc.lock", combination.content + combination.style, root,
                          shards["content"] + shards["style"])
    tags = {**tags, "profile": combination.profile, "dvc_stage": stage, **source_tags(root, "train"),
            **combination.model_weights(), **data_tags(inputs)}
    scale = scaling(combination.ray, announce=False)  # said with the MLflow run, below
    tags["workers"] = scale.tag()
    data = combination.data
    tags[DESCRIPTION] = (f"{title} ({stage}, profile {combination.profile}): {combination.train.steps} steps "
                         f"of {scale.ranks} × {data.batch_size} {data.crop_size}² crops on "
                         f"{'GPU' if scale.use_gpu else 'CPU'}, lr {combination.train.lr:g}, weights "
                         f"{combination.weights or 'the model defaults'}")
    logged = {"train": combination.train.to_dict(), "data": to_dict(combination.data), "ray": to_dict(combination.ray),
              "report_every": combination.report_every, "content": shards["content"], "style": shards["style"],
              **({"calibration": combination.calibration} if combination.calibration else {})}
    run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, combination.name, logged, tags,
                       resume_key=run_key)
    log_shard_inputs(tracking.uri, run_id, {"training": inputs})
    print(f"{stage}: {heading + '; ' if heading else ''}{describe_scale(scale)}; MLflow run {run_id} in experiment "
          f"{tracking.experiment!r} at {tracking.uri}", flush=True)
    started = time.perf_counter()
    # an exception marks the run FAILED
    with fluent_store(tracking.uri, tracking.interval), mlflow.start_run(run_id=run_id, log_system_metrics=True):
        try:
            result = ray_training.run(
                combination.train, combination.data, shards["content"], shards["style"], name=run_key,
                storage_path=ray_storage, scale=scale, report_every=combination.report_every,
                keep=combination.ray.keep_checkpoints, max_failures=combination.ray.max_failures,
                extra={**(extra or {}), "mlflow": {"tracking_uri": tracking.uri, "run_id": run_id}},
                progress_label=stage if stage.endswith(combination.name) else f"{stage} {combination.name}")
            error = result.error if result.checkpoint is not None else result.error or "no checkpoint was reported"
        except Exception as raised:  # Ray raises the workers' error after max_failures restarts
            error = raised
        if error is not None:
            heading = failure_heading(scale, combination.ray.max_failures, "train.ray.max_failures")
            raise TrainStageError(f"{heading}: {error}\nFix the cause and re-run the stage: it resumes from the last "
                                  f"checkpoint in {storage.join(ray_storage, run_key)}")
        metrics = {"step": int(result.metrics["step"]),
                   "loss": {k.split("/", 1)[1]: float(v) for k, v in result.metrics.items() if k.startswith("loss/")},
                   "samples_per_second": float(result.metrics["samples_per_second"]),
                   "throughput": float(result.metrics["throughput"]),
                   "skipped_steps": int(result.metrics.get("skipped_steps", 0)),
                   "wall_seconds": round(time.perf_counter() - started, 1)}
        if combination.calibration:  # the measured balanced style weight, for the evaluation's summary
            metrics["calibration"] = combination.calibration
        checkpoint = out / "checkpoint"
        with atomic_directory(checkpoint) as building, result.checkpoint.as_directory() as source:
            shutil.copytree(source, building, dirs_exist_ok=True)
            atomic_write_text(building / "mlflow.json", json.dumps(
                {"tracking_uri": tracking.uri, "experiment": tracking.experiment, "run_id": run_id}, indent=2))
        model_uri = log_final_model(checkpoint, combination.data.crop_size)
        mlflow.log_metrics({f"final/{k}": v for k, v in flatten(metrics).items() if _is_number(v)},
                           step=metrics["step"])
        mlflow.set_tag("model_uri", model_uri)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    curve = loss_curves(tracking.uri, run_id)
    if curve:  # per step, small: kept in git for `dvc plots diff` and the evaluation report
        atomic_write_text(out / "curve.csv", csv_text(curve))
    # Finished: its checkpoints live on in models/; a later re-run must train afresh, not "resume" at the end.
    storage.remove_tree(storage.join(ray_storage, run_key))
    print(f"{stage}: {'' if stage.endswith(combination.name) else combination.name + ' '}done in "
          f"{metrics['wall_seconds']} s, {metrics['samples_per_second']:.2f} samples/s, loss "
          f"{metrics['loss'].get('total', float('nan')):.4g}; checkpoint {checkpoint}, model {model_uri}", flush=True)
    return metrics


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--loss", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--ray-storage", help="where Ray keeps checkpoints of unfinished runs, a folder or URI "
                                               "(default: <params storage.checkpoints or ray_results>/train)")
    args = parser.parse_args(argv)
    return run_stage(f"train@{args.model}-{args.loss}", lambda: run(
        args.model, args.loss, params_path=Path(args.params), shards_root=Path(args.shards),
        models_root=Path(args.models), ray_storage=args.ray_storage), (CatalogueError, TrainStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
