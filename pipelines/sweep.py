"""DVC stage `sweep@<model>-<loss>`: Ray Tune over one combination's search space, tracked in MLflow.

    python -m pipelines.sweep --combination adain-balanced_gram

Each trial is a Ray Train run of the same training code as the ``train`` stage (Train V2 pattern: a
Tune function trainable builds the ``TorchTrainer`` and forwards its reports with
``TuneReportCallback``), on the combination's settings with the trial's values and the sweep
profile's overrides (``sweep.profiles.<profile>``: fewer steps, more frequent reports). On this machine's
own CPU-only Ray (``sweep.workers: auto``) the run is in Ray Train's local mode: it trains in the trial
actor itself and reports to Tune directly (:mod:`pipelines.run_checkpoints`). At every
report rank 0 scores the model on the ``validation`` half of the held-out pairs
(:mod:`stylecore.heldout`; the ``evaluate`` stage scores on the other half) and ASHA compares trials
by ``val/objective`` = Σ weight × metric (``sweep.objective``; lower is better), stopping the weak
ones early. Concurrency is bounded by the cluster's CPUs (GPUs): a trial that drives Train workers holds no
CPU itself, so trials can never starve their own workers; one that trains in its actor holds a worker's share.

The search space is ``sweep.combinations.<model>-<loss>`` (:mod:`pipelines.search_space`); every bound and
choice is validated before anything starts.

Re-running the stage after an interruption or a crash restores the sweep (``Tuner.restore``):
finished trials are kept, unfinished ones resume from their last Train checkpoint, and their MLflow
child runs are reopened; ASHA's rungs come back with them (:mod:`pipelines.asha`), so a trial that reaches
a rung after the restore is weighed against every trial that reached it before. When the sweep completes,
the best finished trial's model goes to
``models/sweeps/<model>-<loss>/checkpoint`` (scored by ``evaluate`` as ``<model>-<loss>.sweep``) and
is logged on its child run; ``reports/sweeps/<model>-<loss>.json`` lists every trial's config,
outcome (finished, stopped early by ASHA, diverged, failed) and scores, and the best config.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.console import tune_verbosity
from pipelines.model_uris import log_final_model
from pipelines.provenance import ShardInput, data_tags, shard_inputs, source_tags
from pipelines.ray_session import (Scale, autoscaler_reach, describe_scale, gpus_in_reach, on_local_ray, ray_session,
                                   release_train_reservations, scaling)
from pipelines.search_space import check_space, search_space, with_values
from pipelines.settings import (Combination, SweepSettings, TrainStageError, metric_weights, read,
                                resolve_combination)
from pipelines.sources import CatalogueError, active_profile, load_params, profile_shards
from pipelines.stage import run_stage
from pipelines.tracking import Tracking, flatten, fluent_store, log_shard_inputs, tracking_settings
from stylecore.config import to_dict
from stylecore.io import atomic_directory, atomic_write_text

METRIC = "val/objective"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
# trial outcome → MLflow run status; "diverged": the trial's training hit the non-finite guard (a result of the
# search, such as a learning rate too high, not a fault of the sweep)
RUN_STATUS = {"finished": "FINISHED", "stopped_early": "KILLED", "diverged": "FAILED", "failed": "FAILED"}
OUTCOMES = tuple(RUN_STATUS)
AUTO_WORKERS = "auto"


class SweepStageError(RuntimeError):
    """Bad settings, missing data, an interrupted or failed sweep; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# One trial (runs in a Tune trial actor)


@dataclass
class SweepJob:
    """What every trial of one sweep shares (sent once through the object store)."""

    key: str  # <model>-<loss>-<digest>: names the Tune experiment, the Train runs, the MLflow runs
    combination: Combination
    validation: dict[str, Any]  # pairs, weights, objective, batch_size
    scale: Scale
    trials_storage: str
    tracking: Tracking
    parent_run_id: str
    tags: dict[str, str]
    inputs: dict[str, list[ShardInput]]  # the shard folders read, by MLflow input context


def trial_run_name(combination: str, config: Mapping[str, Any], trial_id: str) -> str:
    """A trial's MLflow run name: its values, so trials are told apart in the UI's runs table, then its Tune id
    (``adain-balanced_gram lr=0.0001 · 5f0e3_00001``)."""
    values = flatten(config, text=lambda value: f"{value:.3g}" if isinstance(value, float) else str(value))
    name = " ".join([combination, *(f"{key}={value}" for key, value in sorted(values.items()))])
    return f"{name[:220]} · {trial_id}"  # MLflow keeps 250 characters of a run name


def run_trial(config: dict[str, Any], job: SweepJob) -> None:
    """One trial: a Ray Train run of the combination with ``config`` applied, in its own MLflow child run."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    from pipelines import ray_training
    from pipelines.tracking import start_run

    trial_id = tune.get_context().get_trial_id()
    trial = with_values(job.combination, config)
    tracking = job.tracking
    run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts,
                       trial_run_name(trial.name, config, trial_id), {"trial": config, "train": trial.train.to_dict(),
                                                          "data": to_dict(trial.data), "report_every": trial.report_every},
                       {**job.tags, PARENT_TAG: job.parent_run_id, "sweep.trial_id": trial_id},
                       resume_key=f"{job.key}/{trial_id}")
    log_shard_inputs(tracking.uri, run_id, job.inputs)
    client = MlflowClient(tracking.uri)
    try:
        result = ray_training.run(
            trial.train, trial.data, trial.content, trial.style, name=f"{job.key}-{trial_id}",
            storage_path=job.trials_storage, scale=job.scale, report_every=trial.report_every,
            keep=trial.ray.keep_checkpoints, max_failures=trial.ray.max_failures, validation=job.validation,
            report_to_tune=True, extra={"mlflow": {"tracking_uri": tracking.uri, "run_id": run_id},
                                        # every trial builds the same model, which the sweep's heading names
                                        "summary_line": False})
        if result.error is not None:
            raise result.error
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------------
# The stage, step by step


def trial_scale(settings: SweepSettings, combination: Combination) -> Scale:
    """The layout of each trial's Ray Train run. ``sweep.workers: auto`` is 0 on this machine's own Ray without GPUs
    (Ray Train's local mode: the trial trains in its Tune trial actor, no Train controller or worker process to
    start), else one worker; a number is that many workers (0: local mode anywhere)."""
    workers = 1 if settings.workers == AUTO_WORKERS else settings.workers
    scale = scaling(dataclasses.replace(combination.ray, workers=workers), where="sweep", announce=False)
    if settings.workers == AUTO_WORKERS and on_local_ray() and not scale.use_gpu:
        scale = dataclasses.replace(scale, num_workers=0)
    return scale


def trial_resources(scale: Scale) -> dict[str, float]:
    """What a Tune trial actor holds. One that only drives its Train workers holds no CPU, or trials would starve
    their own workers; one that trains itself (local mode) holds what a worker would."""
    if not scale.in_process:
        return {"cpu": 0, "memory": 1}
    return {"cpu": 1, **({"gpu": scale.gpus_per_worker} if scale.use_gpu else {})}


def _concurrency(settings: SweepSettings, scale: Scale, resources: Mapping[str, float]) -> int:
    """Trials at once: as many as the cluster's CPUs (GPUs, counting those its autoscaler can add) hold, never
    more than requested."""
    if settings.max_concurrent != "auto":
        return int(settings.max_concurrent)
    if scale.use_gpu:
        fits = gpus_in_reach(resources, autoscaler_reach()) // (scale.ranks * scale.gpus_per_worker)
    else:
        fits = resources.get("CPU", 0) // scale.ranks
    return max(1, int(fits))


def _logged_curve(client, run_id: str | None) -> list[dict[str, float]]:
    """A trial's validation curve from its MLflow run, one point per step (a step re-run after a restore keeps
    its latest value). Complete across restores, unlike Tune's own record of a restored trial, which starts
    afresh; and it includes any report the trial made while Tune was stopping it."""
    if not run_id:
        return []
    # MLflow's SQL store keeps +inf (a diverged model's score) as the largest float: read it back as inf
    latest = {m.step: math.inf if m.value >= sys.float_info.max else m.value
              for m in sorted(client.get_metric_history(run_id, METRIC), key=lambda m: m.timestamp)}
    return [{"step": int(step), METRIC: float(value)} for step, value in sorted(latest.items())]


def _trial_record(result, total_steps: int, child_runs: Mapping[str, str], client) -> dict[str, Any]:
    metrics = dict(result.metrics or {})
    trial_id = metrics.get("trial_id") or Path(result.path).name
    step = int(metrics.get("step", 0))
    if result.error is not None:
        outcome = "diverged" if "NonFiniteLossError" in str(result.error) else "failed"
    else:
        outcome = "finished" if step >= total_steps else "stopped_early"
    curve = _logged_curve(client, child_runs.get(trial_id))
    if not curve:  # no MLflow run (the trial died before opening it): Tune's own record
        frame = result.metrics_dataframe
        if frame is not None and METRIC in frame:
            curve = [{"step": int(s), METRIC: float(v)} for s, v in zip(frame["step"], frame[METRIC])]
    return {"trial_id": trial_id, "config": dict(result.config), "outcome": outcome, "step": step,
            "reports": int(metrics.get("training_iteration", 0)),
            "metrics": {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "loss/"))},
            "curve": curve, "checkpoint": metrics.get("checkpoint_path"), "mlflow_run_id": child_runs.get(trial_id),
            "error": None if result.error is None else str(result.error).splitlines()[0][:500]}


@dataclass
class SweepPlan:
    """Everything the sweep is, resolved and checked before Ray starts."""

    name: str
    settings: SweepSettings
    combination: Combination  # the sweep profile's settings, the workers' shard locations
    spec: dict[str, Any]  # params.yaml's search space
    space: dict[str, Any]  # Tune's
    pairs: Any  # stylecore.heldout.HeldOutPairs: the validation pairs
    weights: str  # of the validation's metric encoder
    key: str  # <name>-<digest of everything above>
    training_shards: list[str]  # the local folders the trials train on (combination's are where workers read them)
    validation_shards: list[str]

    @property
    def reports_per_trial(self) -> int:
        return math.ceil(self.combination.train.steps / self.combination.report_every)


def skip_reason(name: str, params: Mapping[str, Any]) -> str | None:
    """Why the active profile does not sweep ``name`` (``sweep.run_in``), or None when it does."""
    settings: SweepSettings = read(params, "sweep")
    if name not in settings.combinations:
        raise CatalogueError(f"params.yaml: sweep.combinations has no {name!r}; defined: "
                             f"{', '.join(settings.combinations) or 'none'}")
    profile = active_profile(params)
    if name in settings.run_in.get(profile, []):
        return None
    used = [other for other, names in settings.run_in.items() if name in names]
    return f"not in profile {profile!r} (sweep.run_in; swept in: {', '.join(used) or 'no profile'})"


def write_skipped(name: str, reason: str, models_root: Path, reports: Path) -> dict[str, Any]:
    """A skipped sweep's outputs: a report that says why, and a checkpoint folder with no model in it (evaluate
    passes it over), replacing whatever a sweep in another profile left."""
    report = {"combination": name, "skipped": reason}
    with atomic_directory(models_root / "sweeps" / name / "checkpoint") as building:
        (building / "SKIPPED.json").write_text(json.dumps(report, indent=2) + "\n")
    atomic_write_text(reports / "sweeps" / f"{name}.json", json.dumps(report, indent=2) + "\n")
    print(f"sweep@{name}: skipped, {reason}", flush=True)
    return report


def plan_sweep(name: str, params: Mapping[str, Any], shards_root: Path) -> SweepPlan:
    """The sweep's settings, combination, search space and validation pairs, each checked (no Ray yet)."""
    from stylecore.heldout import select_heldout

    settings: SweepSettings = read(params, "sweep")
    if name not in settings.combinations:
        raise CatalogueError(f"params.yaml: sweep.combinations has no {name!r}; defined: "
                             f"{', '.join(settings.combinations) or 'none'}")
    model, _, loss = name.partition("-")
    combination = resolve_combination(params, model, loss, shards_root)
    training_shards = combination.content + combination.style
    from pipelines import storage

    combination = dataclasses.replace(combination, **storage.worker_shards(  # what the trials' workers read
        params, {"content": combination.content, "style": combination.style}))
    overrides = (settings.profiles or {}).get(combination.profile) or {}
    try:  # the sweep profile: fewer steps, more frequent reports
        combination = with_values(combination, overrides)
    except ValueError as error:
        raise CatalogueError(f"params.yaml: sweep.profiles.{combination.profile}: {error}") from None
    combination = dataclasses.replace(combination, ray=dataclasses.replace(combination.ray, workers=settings.workers))
    spec = settings.combinations[name]
    space = search_space(name, spec)
    check_space(name, combination, spec)
    steps, every = combination.train.steps, combination.report_every
    if math.ceil(steps / every) <= settings.asha.grace_period:
        raise CatalogueError(f"params.yaml: a trial reports {math.ceil(steps / every)} time(s) ({steps} steps, "
                             f"report_every {every}) but sweep.asha.grace_period is {settings.asha.grace_period}: ASHA "
                             f"could never stop a trial early; lower report_every in sweep.profiles.{combination.profile}")
    val, evaluate = settings.validation, read(params, "evaluate")
    validation_shards = profile_shards(params, shards_root, "val")
    try:
        pairs = select_heldout(*validation_shards.values(), contents=val.contents,
                               styles_per_label=val.styles_per_label, size=val.size, seed=val.seed,
                               style_label=evaluate.style_label, part="validation")
    except (FileNotFoundError, ValueError) as error:
        raise SweepStageError(f"validation pairs (sweep.validation) from the validation shards: {error}") from None
    digest = hashlib.sha256(json.dumps([combination.digest(), spec, settings.samples, settings.objective, to_dict(val),
                                        to_dict(settings.asha), pairs.content_keys, pairs.style_keys],
                                       sort_keys=True, default=str).encode()).hexdigest()[:12]
    return SweepPlan(name, settings, combination, spec, space, pairs, metric_weights(params, evaluate),
                     f"{name}-{digest}", training_shards, [f for folders in validation_shards.values() for f in folders])


def tune_trials(plan: SweepPlan, job: SweepJob, experiment: str, storage: str, concurrent: int, stage: str):
    """Run (or restore) the Tune experiment; returns its ResultGrid."""
    from ray import tune

    from pipelines.asha import asha_scheduler

    trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), trial_resources(job.scale))
    if tune.Tuner.can_restore(experiment):
        print(f"{stage}: restoring the interrupted sweep in {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True).fit()
    settings = plan.settings
    # The callback keeps ASHA's rungs through a restore (Tune restores trials, not its scheduler).
    scheduler, rung_records = asha_scheduler(max_t=plan.reports_per_trial, grace_period=settings.asha.grace_period,
                                             reduction_factor=settings.asha.reduction_factor)
    return tune.Tuner(
        trainable, param_space=plan.space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="min", num_samples=settings.samples, max_concurrent_trials=concurrent,
            scheduler=scheduler,
            # A new actor per trial: stopping a trial ends its actor, and with it the Train run it owns.
            reuse_actors=False),
        run_config=tune.RunConfig(name=plan.key, storage_path=storage, verbose=tune_verbosity(),
                                  callbacks=[rung_records],
                                  failure_config=tune.FailureConfig(max_failures=settings.max_failures))).fit()


def record_trials(results, plan: SweepPlan, parent: str, experiment: str, client, tracking: Tracking,
                  stage: str) -> list[dict[str, Any]]:
    """Every trial's record (config, outcome, curve), its child run closed with its outcome; an interrupted or
    fruitless sweep is an error saying what to do."""
    from mlflow.entities import RunTag
    from ray import tune

    # Ctrl+C makes fit() return after saving the experiment state, and the in-memory trials then read as
    # terminated: the saved state says which trials really were still pending or running.
    unfinished = [t for t in tune.ExperimentAnalysis(experiment).trials if t.status not in ("TERMINATED", "ERROR")]
    if unfinished:
        client.set_terminated(parent, "KILLED")
        raise SweepStageError(f"the sweep was interrupted with {len(unfinished)} trial(s) unfinished; re-run the "
                              f"stage (`dvc repro {stage}`) to resume it from {experiment}")
    experiment_id = client.get_experiment_by_name(tracking.experiment).experiment_id
    child_runs = {run.data.tags.get("sweep.trial_id"): run.info.run_id for run in client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'", max_results=10_000)}
    trials = sorted((_trial_record(r, plan.combination.train.steps, child_runs, client) for r in results),
                    key=lambda t: t["trial_id"])
    # Tune's record decides each child run's end state: a trial stopped at its last report (ASHA's max_t) may
    # be torn down before its own `set_terminated(FINISHED)`, and is then left FAILED by its exception path.
    # A trial keeps training while Tune weighs its report, so a stopped trial's run can hold a report or more
    # past the step ASHA stopped it at: `sweep.step` is the last step Tune weighed, as in the report.
    for trial in trials:
        if trial["mlflow_run_id"]:
            client.log_batch(trial["mlflow_run_id"], tags=[RunTag("sweep.outcome", trial["outcome"]),
                                                            RunTag("sweep.step", str(trial["step"]))])
            client.set_terminated(trial["mlflow_run_id"], RUN_STATUS[trial["outcome"]])
    if not any(t["outcome"] == "finished" and METRIC in t["metrics"] for t in trials):
        client.set_terminated(parent, "FAILED")
        errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t["error"])
        raise SweepStageError(f"no trial of the sweep finished ({errors or 'all were stopped'}); fix the cause and "
                              f"re-run the stage")
    return trials


def publish_best(plan: SweepPlan, trials: list[dict[str, Any]], parent: str, client, tracking: Tracking,
                 storage: str, models_root: Path, reports: Path, started: float) -> dict[str, Any]:
    """The best finished trial's checkpoint into models/sweeps/, its model logged on its run, the report written
    and summarised on the parent run; returns the report."""
    import mlflow
    from mlflow.entities import Metric, Param

    from pipelines import storage as locations

    settings, steps = plan.settings, plan.combination.train.steps
    best = min((t for t in trials if t["outcome"] == "finished" and METRIC in t["metrics"]),
               key=lambda t: t["metrics"][METRIC])
    out = models_root / "sweeps" / plan.name / "checkpoint"
    with atomic_directory(out) as building:
        locations.download_tree(best["checkpoint"], building, like=storage)
        atomic_write_text(building / "mlflow.json", json.dumps(
            {"tracking_uri": tracking.uri, "experiment": tracking.experiment, "run_id": best["mlflow_run_id"],
             "sweep": plan.key, "trial_id": best["trial_id"]}, indent=2))
    trained = with_values(plan.combination, best["config"])
    with fluent_store(tracking.uri), mlflow.start_run(run_id=best["mlflow_run_id"]):
        model_uri = log_final_model(out, trained.data.crop_size)
        mlflow.set_tag("model_uri", model_uri)
    report = {"combination": plan.name, "sweep": plan.key, "metric": METRIC, "mode": "min",
              "objective": settings.objective,
              "validation": {"contents": plan.pairs.content_keys, "styles": plan.pairs.style_keys},
              "space": plan.spec, "samples": settings.samples, "steps": steps,
              "report_every": plan.combination.report_every,
              "best": {"trial_id": best["trial_id"], "config": best["config"], "metrics": best["metrics"],
                       "checkpoint": str(out), "model_uri": model_uri, "mlflow_run_id": best["mlflow_run_id"]},
              "counts": {outcome: sum(t["outcome"] == outcome for t in trials)
                         for outcome in OUTCOMES},
              "trials": [{k: v for k, v in t.items() if k != "checkpoint"} for t in trials],  # deleted later
              "mlflow_parent_run_id": parent,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(reports / "sweeps" / f"{plan.name}.json", json.dumps(report, indent=2) + "\n")
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(f"best/{k}", v, now, steps) for k, v in best["metrics"].items()]
                     + [Metric(f"trials/{k}", float(v), now, 0) for k, v in report["counts"].items()],
                     params=[Param(k, v) for k, v in flatten({"best": best["config"]}).items()])
    client.set_tag(parent, "best_trial", best["trial_id"])
    client.set_tag(parent, "model_uri", model_uri)
    client.log_artifact(parent, str(reports / "sweeps" / f"{plan.name}.json"))
    client.set_terminated(parent, "FINISHED")
    return report


def run(name: str, *, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), reports: Path = Path("reports"),
        ray_storage: str | Path | None = None) -> dict[str, Any]:
    """Sweep one combination; returns the report written to ``reports/sweeps/<name>.json``.

    ``ray_storage`` (a folder or URI) holds the Tune experiment and the trials' checkpoints until the sweep
    completes; default ``<storage.checkpoints>/sweeps``."""
    root = params_path.resolve().parent
    params = load_params(params_path)
    reason = skip_reason(name, params)
    if reason is not None:  # said before MLflow's import (seconds): the line joins the stage's own line in the console
        return write_skipped(name, reason, models_root, reports)
    from mlflow.tracking import MlflowClient

    from pipelines import storage as locations
    from pipelines.tracking import start_run
    plan = plan_sweep(name, params, shards_root)
    combination, settings = plan.combination, plan.settings
    storage = locations.ray_storage(params, root, "sweeps", ray_storage)
    tracking = tracking_settings(params, root)
    stage = os.environ.get("DVC_STAGE", f"sweep@{name}")
    print(f"{stage}: {settings.samples} sample(s) of {plan.spec} on {combination.model} × {combination.loss}, "
          f"{combination.train.steps} steps per trial, ASHA on {METRIC} = "
          + " + ".join(f"{w:g}·{m}" for m, w in settings.objective.items())
          + f" over {len(plan.pairs)} validation pairs, reported every {combination.report_every} steps", flush=True)
    inputs = {"training": shard_inputs(root / "dvc.lock", plan.training_shards, root,
                                       combination.content + combination.style),
              "validation": shard_inputs(root / "dvc.lock", plan.validation_shards, root)}
    tags = {"model": combination.model, "loss": combination.loss, "profile": combination.profile, "dvc_stage": stage,
            "sweep": plan.key, **source_tags(root, "sweep"), **combination.model_weights(),
            **data_tags(inputs["training"])}
    started = time.perf_counter()
    with ray_session():
        import ray

        scale = trial_scale(settings, combination)  # said below, with the trials' threads
        concurrent = _concurrency(settings, scale, ray.cluster_resources())
        if combination.ray.threads_per_worker == "auto":
            # the CPUs are shared by the trials that run at once, on GPU too (each GPU trial took every CPU before)
            cpus = ray.cluster_resources().get("CPU", 1)
            scale = dataclasses.replace(scale, threads_per_worker=max(1, int(cpus // (concurrent * scale.ranks))))
        parent = start_run(tracking.uri, tracking.experiment, tracking.artifacts, f"sweep {name}",
                           {"sweep": {**{k: v for k, v in to_dict(settings).items()
                                         if k in ("samples", "workers", "objective", "validation", "asha")},
                                      "space": plan.spec},
                            "train": combination.train.to_dict(), "data": to_dict(combination.data)},
                           {**tags, "stage": "sweep"}, resume_key=plan.key)
        log_shard_inputs(tracking.uri, parent, inputs)
        print(f"{stage}: MLflow parent run {parent}; up to {concurrent} trial(s) at once, each "
              f"{describe_scale(scale)}", flush=True)
        job = SweepJob(plan.key, combination, {"pairs": plan.pairs, "weights": plan.weights,
                                               "objective": settings.objective,
                                               "batch_size": settings.validation.batch_size},
                       scale, locations.join(storage, "trials"), tracking, parent, tags, inputs)
        experiment = locations.join(storage, plan.key)
        results = tune_trials(plan, job, experiment, storage, concurrent, stage)
        # the trials ASHA stopped were killed with their Train runs' CPU reservations still held (180 s): release
        # them, or the next Ray Data stage on this Ray waits for CPUs nobody uses
        release_train_reservations()
        client = MlflowClient(tracking.uri)
        trials = record_trials(results, plan, parent, experiment, client, tracking, stage)
        report = publish_best(plan, trials, parent, client, tracking, storage, models_root, reports, started)
    # Complete: the outputs hold what matters; a later sweep (new settings or code) starts afresh.
    locations.remove_tree(experiment)
    for trial in trials:
        locations.remove_tree(locations.join(storage, "trials", f"{plan.key}-{trial['trial_id']}"))
    best = report["best"]
    print(f"{stage}: {len(trials)} trials ({report['counts']['finished']} finished, {report['counts']['stopped_early']} "
          f"stopped early by ASHA, {report['counts']['diverged']} diverged, {report['counts']['failed']} failed) in {report['wall_seconds']} s; best "
          f"{best['trial_id']} {best['config']} {METRIC} {best['metrics'][METRIC]:.4g}; checkpoint "
          f"{best['checkpoint']}, model {best['model_uri']}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--combination", required=True, help="<model>-<loss>, a key of sweep.combinations")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--ray-storage",
                        help="where Tune and the trials keep their state until the sweep completes (a URI on a cluster)")
    args = parser.parse_args(argv)
    return run_stage(f"sweep@{args.combination}", lambda: run(
        args.combination, params_path=Path(args.params), shards_root=Path(args.shards), models_root=Path(args.models),
        reports=Path(args.reports), ray_storage=args.ray_storage),
        (CatalogueError, TrainStageError, SweepStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
