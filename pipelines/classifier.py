"""DVC stage `classifier`: the artist classifier the deception rate asks, trained with Ray Train, tracked and registered.

    python -m pipelines.classifier

It learns the style shards' ``artist`` labels (and their ``style`` labels as a second head) from the profile's
train shards, with :class:`stylecore.classifier.ClassifierTrainer` in Ray Train workers (DDP over gloo or NCCL),
the settings of ``classifier.profiles.<profile>``. Artists with fewer than ``classifier.min_works`` training works
are left out (the seed paper keeps artists with 30 or more). Afterwards it scores the held-out accuracy (top-1,
top-5, per artist, and chance) on the profile's validation shards, writes ``models/classifier/checkpoint`` and
``models/classifier/metrics.json``, logs the run to MLflow and registers the checkpoint as a new version of
``classifier.registered_name``. The ``evaluate`` stage reads the checkpoint for the deception rate.

A re-run after a crash resumes from the newest checkpoint Ray kept, as the train stage does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, active_profile, load_params, profile_shards
from pipelines.stage import run_stage
from stylecore.io import atomic_directory, atomic_write_text


class ClassifierStageError(RuntimeError):
    """Bad settings, too few labelled artworks or a failed run; the message names the key or the fix."""


@dataclass(frozen=True)
class ClassifierPlan:
    """Everything the stage is, checked before Ray starts."""

    profile: str
    config: Any  # stylecore.classifier.ClassifierConfig
    artists: list[str]
    styles: list[str]
    train: list[str]  # train shard folders of the style sources
    val: list[str]
    settings: Mapping[str, Any]

    def digest(self) -> str:
        import hashlib

        text = json.dumps({"config": self.config.to_dict(), "artists": self.artists, "styles": self.styles,
                           "train": self.train}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan(params: Mapping[str, Any], shards_root: Path) -> ClassifierPlan:
    """Read and check ``classifier`` and the shards' labels; every problem is an error before any compute."""
    from pipelines.settings import read
    from stylecore.classifier import ClassifierConfig, label_counts

    settings = read(params, "classifier")
    profile = active_profile(params)
    if profile not in settings.profiles:
        raise CatalogueError(f"params.yaml: classifier.profiles has no {profile!r} entry (the active profile); add one")
    try:
        config = ClassifierConfig.from_dict(settings.profiles[profile])
    except ValueError as error:
        raise CatalogueError(f"params.yaml: classifier.profiles.{profile}: {error}") from None
    train = [str(p) for p in profile_shards(params, shards_root, "train")["style"]]
    val = [str(p) for p in profile_shards(params, shards_root, "val")["style"]]
    present = [p for p in train if Path(p, "manifest.json").is_file()]
    if not present:
        raise ClassifierStageError(f"no style train shards under {shards_root} for profile {profile}; run "
                                   "`dvc repro shard` first")
    counts = label_counts(present, "artist")
    artists = sorted(name for name, count in counts.items() if count >= settings.min_works)
    if len(artists) < 2:
        raise ClassifierStageError(
            f"{len(artists)} artist(s) have at least classifier.min_works={settings.min_works} works in "
            f"{', '.join(present)} ({len(counts)} artists in all); lower classifier.min_works or add labelled artworks")
    styles = sorted(label_counts(present, "style"))
    return ClassifierPlan(profile, config, artists, styles, present,
                          [p for p in val if Path(p, "manifest.json").is_file()], {
                              "min_works": settings.min_works, "report_every": settings.report_every,
                              "registered_name": settings.registered_name, "ray": settings.ray,
                              "left_out_artists": len(counts) - len(artists)})


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker (or the stage itself, in local mode): the same ClassifierTrainer a notebook would use,
    resumed from the run's newest checkpoint."""
    import torch

    from pipelines import run_checkpoints
    from pipelines.ray_training import window_means, worker_print
    from stylecore.classifier import ClassifierTrainer, LabelledStream

    from pipelines.console import quiet_train_worker

    with quiet_train_worker():  # Ray Train's report and checkpoint lines; rank 0 alone says what it set up
        torch.set_num_threads(config["threads"])
        rank = run_checkpoints.world_rank(config)
        train = config["config"]
        trainer = ClassifierTrainer(train, config["artists"], config["styles"], device=run_checkpoints.device(config))
        if rank == 0:  # the set-up once (stylecore's own INFO lines stay in the workers)
            worker_print(f"classifier: {trainer.summary()}")
        stream = LabelledStream(config["shards"], config["artists"], config["styles"], train.batch_size, train.input_size,
                                train.load_size, seed=train.seed, rank=rank)
        with run_checkpoints.resumed_directory(config) as directory:
            if directory is not None:
                trainer.load_checkpoint(directory, stream)
                worker_print(f"classifier rank {rank}: resumed from step {trainer.step}")
        tracking = None
        if rank == 0 and config.get("mlflow"):
            from mlflow.tracking import MlflowClient

            tracking = MlflowClient(config["mlflow"]["tracking_uri"])
        window: list[dict[str, float]] = []

        def on_step(trainer: ClassifierTrainer, figures: dict[str, float]) -> None:
            window.append(figures)
            if trainer.step % config["report_every"] and trainer.step != train.steps:
                return
            means = {**window_means(window), "lr": figures["lr"]}  # the rate the window ended at, as the train stage
            window.clear()
            metrics = {"step": trainer.step, **means}
            if rank == 0:
                if tracking is not None:
                    from mlflow.entities import Metric

                    now = int(time.time() * 1000)
                    tracking.log_batch(config["mlflow"]["run_id"], metrics=[
                        Metric(key, float(value), now, trainer.step) for key, value in means.items()])
                run_checkpoints.report(config, metrics, trainer.step,
                                       save=lambda folder: trainer.save_checkpoint(folder, stream))
            else:
                run_checkpoints.report(config, metrics, trainer.step)

        trainer.fit(stream, on_step=on_step)


def held_out(val: list[str], known: list[str], size: int) -> tuple[Any, list[str], list[str]]:
    """Every validation artwork (centre square at ``size``), its artist and its style."""
    import torch

    from stylecore.heldout import center_square
    from stylecore.shards import ShardImages

    images, artists, styles = [], [], []
    for location in val:
        source = ShardImages(location)
        for index in range(len(source)):
            labels = source.metadata(index).get("labels") or {}
            if labels.get("artist"):
                images.append(center_square(source[index][1], size))
                artists.append(str(labels["artist"]))
                styles.append(str(labels.get("style") or ""))
    if not images:
        raise ClassifierStageError(f"no labelled artworks in the validation shards {', '.join(val)}")
    if not set(artists) & set(known):
        raise ClassifierStageError("no validation artwork is by an artist the classifier learned; the train and val "
                                   "shards must share artists")
    return torch.stack(images), artists, styles


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), ray_storage: str | Path | None = None) -> dict[str, Any]:
    import mlflow
    from mlflow.tracking import MlflowClient
    from pipelines import storage
    from pipelines.ray_training import torch_trainer
    from pipelines.provenance import data_tags, shard_inputs, source_tags
    from pipelines.ray_session import describe_scale, failure_heading, ray_session, scaling
    from pipelines.tracking import (DESCRIPTION, fluent_store, log_shard_inputs, portable_uri, start_run,
                                    tracking_settings)
    from stylecore.classifier import accuracy_report, load_classifier

    root = params_path.resolve().parent
    params = load_params(params_path)
    job = plan(params, shards_root)
    config = job.config
    stage = os.environ.get("DVC_STAGE", "classifier")
    tracking = tracking_settings(params, root)
    ray_storage = storage.ray_storage(params, root, "classifier", ray_storage)
    run_key = f"classifier-{job.digest()}"
    out = models_root / "classifier"
    print(f"{stage}: {config.backbone} ({config.weights}) on {len(job.artists)} artists with ≥ {job.settings['min_works']} "
          f"works ({job.settings['left_out_artists']} left out) and {len(job.styles)} styles, profile {job.profile}, "
          f"{config.steps} steps of {config.batch_size} × {config.input_size}²", flush=True)
    started = time.perf_counter()
    style_shards = storage.worker_shards(params, {"style": job.train})["style"]  # where the workers read them
    training = shard_inputs(root / "dvc.lock", job.train, root, style_shards)
    held_out_works = shard_inputs(root / "dvc.lock", job.val, root)
    with ray_session():
        scale = scaling(job.settings["ray"], "classifier.ray", announce=False)  # said with the MLflow run
        tags = {"stage": "classifier", "profile": job.profile, "dvc_stage": stage, "backbone": config.backbone,
                "backbone_weights": config.weights, **source_tags(root, "classifier"),
                **data_tags(training + held_out_works),
                "workers": scale.tag(),
                DESCRIPTION: (f"artist classifier ({config.backbone}, {config.weights}) for the deception rate: "
                              f"{len(job.artists)} artists, {config.steps} steps on {scale.ranks} "
                              f"{'GPU' if scale.use_gpu else 'CPU'} worker(s)")}
        run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, "classifier",
                           {"classifier": config.to_dict(), "min_works": job.settings["min_works"],
                            "artists": len(job.artists), "styles": len(job.styles), "shards": job.train},
                           tags, resume_key=run_key)
        # the held-out accuracy is scored on the val shards' works
        log_shard_inputs(tracking.uri, run_id, {"training": training, "evaluation": held_out_works})
        print(f"{stage}: {describe_scale(scale)}; MLflow run {run_id} in experiment {tracking.experiment!r}",
              flush=True)
        trainer = torch_trainer(
            train_worker, {"config": config, "artists": job.artists, "styles": job.styles,
                           "shards": style_shards,
                           "threads": scale.threads_per_worker, "report_every": job.settings["report_every"],
                           "mlflow": {"tracking_uri": tracking.uri, "run_id": run_id}},
            name=run_key, storage_path=ray_storage, scale=scale, max_failures=job.settings["ray"].max_failures,
            keep=job.settings["ray"].keep_checkpoints)
        client = MlflowClient(tracking.uri)
        try:
            result = trainer.fit()
            error = result.error if result.checkpoint is not None else result.error or "no checkpoint was reported"
        except Exception as raised:  # Ray raises the workers' error after max_failures restarts
            error = raised
        if error is not None:
            client.set_terminated(run_id, "FAILED")
            heading = failure_heading(scale, job.settings["ray"].max_failures, "classifier.ray.max_failures")
            raise ClassifierStageError(f"{heading}: {error}\nFix the cause and re-run the stage: it resumes from "
                                       f"{storage.join(ray_storage, run_key)}")
        checkpoint = out / "checkpoint"
        with atomic_directory(checkpoint) as building, result.checkpoint.as_directory() as source:
            for name in ("config.json", "model.safetensors"):  # the optimizer state stays with Ray's copy
                shutil.copy2(Path(source, name), building / name)
    classifier = load_classifier(checkpoint)
    images, artists, styles = held_out(job.val, job.artists, config.input_size)
    accuracy = accuracy_report(classifier, images, artists, styles)
    metrics = {"step": config.steps, "artists": len(job.artists), "styles": len(job.styles),
               "heldout": {k: v for k, v in accuracy.items() if k != "per_artist"},
               "per_artist": accuracy["per_artist"], "backbone": classifier.describe(),
               "pretrained": classifier.weights.get("pretrained") == "true",
               "wall_seconds": round(time.perf_counter() - started, 1)}
    with fluent_store(tracking.uri, tracking.interval), mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"heldout/{k}": float(v) for k, v in metrics["heldout"].items()}, step=config.steps)
        per_artist = accuracy["per_artist"]
        mlflow.log_table({"artist": list(per_artist), **{key: [row[key] for row in per_artist.values()]
                                                         for key in ("images", "top1", "top5")}}, "per_artist.json")
        mlflow.log_artifacts(str(checkpoint), "checkpoint")
        artifact_uri = mlflow.get_artifact_uri("checkpoint")
    metrics["registered"] = register(client, job.settings["registered_name"], artifact_uri, run_id, metrics)
    metrics["registered"]["source"] = portable_uri(artifact_uri, root)  # metrics.json is kept in git
    client.set_terminated(run_id, "FINISHED")
    atomic_write_text(checkpoint.parent / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    storage.remove_tree(storage.join(ray_storage, run_key))
    heldout = metrics["heldout"]
    print(f"{stage}: done in {metrics['wall_seconds']} s; held-out top-1 {heldout['top1']:.3f}, top-5 {heldout['top5']:.3f} "
          f"(chance {heldout['chance_top1']:.3f}) over {heldout['images']} artworks; {checkpoint}, registered "
          f"{metrics['registered']['name']} version {metrics['registered']['version']}"
          f"{'' if metrics['pretrained'] else ' (random backbone init: uncalibrated)'}", flush=True)
    return metrics


def register(client, name: str, source: str, run_id: str, metrics: Mapping[str, Any]) -> dict[str, str]:
    """A new version of ``name`` for this run's checkpoint, tagged with its held-out accuracy."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="stylecore's artist classifier, the judge of the deception "
                                                         "rate (evaluate stage); a checkpoint for "
                                                         "stylecore.classifier.load_classifier")
    version = client.create_model_version(name, source, run_id=run_id, tags={
        "heldout_top1": f"{metrics['heldout']['top1']:.4f}", "heldout_top5": f"{metrics['heldout']['top5']:.4f}",
        "backbone": metrics["backbone"]})
    return {"name": name, "version": str(version.version), "source": source}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--ray-storage", help="where Ray keeps checkpoints of an unfinished run (default: "
                                              "<params storage.checkpoints or ray_results>/classifier)")
    args = parser.parse_args(argv)
    return run_stage("classifier", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                               models_root=Path(args.models), ray_storage=args.ray_storage),
                     (CatalogueError, ClassifierStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
