"""DVC stage `sweep@<model>-<loss>`: Ray Tune over one combination's search space, tracked in MLflow.

    python -m pipelines.sweep --combination adain-balanced_gram

Each trial is a Ray Train run of the same training code as the ``train`` stage (Train V2 pattern: a
Tune function trainable builds the ``TorchTrainer`` and forwards its reports with
``TuneReportCallback``), on the combination's settings with the trial's values and the sweep
profile's overrides (``sweep.profiles.<profile>``: fewer steps, more frequent reports). At every
report rank 0 scores the model on the ``validation`` half of the held-out pairs
(:mod:`stylecore.heldout`; the ``evaluate`` stage scores on the other half) and ASHA compares trials
by ``val/objective`` = Σ weight × metric (``sweep.objective``; lower is better), stopping the weak
ones early. Concurrency is bounded by the cluster's CPUs (GPUs): a trial itself holds no CPU (it
only drives its Train workers), so trials can never starve their own workers.

The search space is ``sweep.combinations.<model>-<loss>``: dotted keys of the training settings
(``lr``, ``style_params.weight``, ``objective.content``, ``style_params.layers.relu1_1``, ``batch_size``
…), each ``{loguniform: [low, high]}``, ``{uniform: [low, high]}``, ``{randint: [low, high]}``
(high exclusive), ``{choice: [...]}`` (sampled), ``{grid: [...]}`` (every value, multiplying
``samples``) or a plain value. Every bound and choice is validated before anything starts.

Re-running the stage after an interruption or a crash restores the sweep (``Tuner.restore``):
finished trials are kept, unfinished ones resume from their last Train checkpoint, and their MLflow
child runs are reopened. When the sweep completes, the best finished trial's model goes to
``models/sweeps/<model>-<loss>/checkpoint`` (scored by ``evaluate`` as ``<model>-<loss>.sweep``) and
is logged on its child run; ``reports/sweeps/<model>-<loss>.json`` lists every trial's config,
outcome (finished, stopped early by ASHA, failed) and scores, and the best config.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, load_params, profile_shards
from pipelines.stage import run_stage
from pipelines.train import (Combination, TrainStageError, deep_merge, git_state, resolve_combination,
                             tracking_settings)
from stylecore.io import atomic_directory, atomic_write_text

SETTINGS = {"samples": 4, "workers": 1, "max_concurrent": "auto", "max_failures": 1,
            "objective": {"content": 1.0, "style_balanced": 1.0},
            "validation": {"contents": 4, "styles_per_label": 1, "size": 64, "seed": 0, "batch_size": 16},
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "profiles": {}, "combinations": {}}
DOMAINS = ("loguniform", "uniform", "randint", "choice", "grid")
#: trial keys that set the data stream rather than the TrainConfig
DATA_OVERRIDES = ("batch_size", "crop_size", "load_size")
METRIC = "val/objective"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
RUN_STATUS = {"finished": "FINISHED", "stopped_early": "KILLED", "failed": "FAILED"}  # trial outcome → MLflow run status


class SweepStageError(RuntimeError):
    """Bad settings, missing data, an interrupted or failed sweep; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# Settings and the search space


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    values = deep_merge(SETTINGS, params.get("sweep") or {})
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise CatalogueError(f"params.yaml: sweep has unknown key(s) {unknown}; keys: {', '.join(SETTINGS)}")
    for key in ("samples", "workers"):
        if not isinstance(values[key], int) or values[key] < 1:
            raise CatalogueError(f"params.yaml: sweep.{key} must be a positive integer; got {values[key]!r}")
    failures = values["max_failures"]
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        raise CatalogueError(f"params.yaml: sweep.max_failures={failures!r} is invalid; it must be an integer ≥ 0 "
                             "(-1, retry forever, is refused: a broken trial must stop)")
    if values["max_concurrent"] != "auto" and (not isinstance(values["max_concurrent"], int) or values["max_concurrent"] < 1):
        raise CatalogueError(f"params.yaml: sweep.max_concurrent must be auto or a positive integer; "
                             f"got {values['max_concurrent']!r}")
    from stylecore.metrics import METRICS

    objective = values["objective"]
    if not objective or not all(name in METRICS and isinstance(w, (int, float)) for name, w in objective.items()):
        raise CatalogueError(f"params.yaml: sweep.objective must map evaluation metrics ({', '.join(METRICS)}) to "
                             f"weights (lower val/objective is better: give ssim a negative weight); got {objective!r}")
    asha = values["asha"]
    if set(asha) != {"grace_period", "reduction_factor"} or asha["grace_period"] < 1 or asha["reduction_factor"] < 2:
        raise CatalogueError("params.yaml: sweep.asha needs grace_period ≥ 1 and reduction_factor ≥ 2 (reports, "
                             f"not steps); got {asha!r}")
    return values


def search_space(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's space of one combination → Tune's ``param_space``; errors name the key and the fix."""
    from ray import tune

    if not isinstance(spec, Mapping) or not spec:
        raise CatalogueError(f"params.yaml: sweep.combinations.{name} must be a non-empty mapping of settings to "
                             f"search domains, e.g. lr: {{loguniform: [1.0e-5, 1.0e-3]}}")
    space: dict[str, Any] = {}
    for key, domain in spec.items():
        where = f"params.yaml: sweep.combinations.{name}.{key}"
        if not isinstance(domain, Mapping):
            space[key] = domain  # a constant for this sweep
            continue
        if len(domain) != 1 or next(iter(domain)) not in DOMAINS:
            raise CatalogueError(f"{where} must be one of {{{'|'.join(DOMAINS)}: ...}} or a plain value; got {domain!r}")
        kind, values = next(iter(domain.items()))
        if kind in ("choice", "grid"):
            if not isinstance(values, list) or not values:
                raise CatalogueError(f"{where}: {kind} needs a non-empty list of values; got {values!r}")
            space[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue
        if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)
                and values[0] < values[1]):
            raise CatalogueError(f"{where}: {kind} needs [low, high] numbers with low < high; got {values!r}")
        low, high = values
        if kind == "loguniform":
            if low <= 0:
                raise CatalogueError(f"{where}: loguniform needs low > 0; got {low!r}")
            space[key] = tune.loguniform(low, high)
        elif kind == "uniform":
            space[key] = tune.uniform(low, high)
        else:
            if not (isinstance(low, int) and isinstance(high, int)):
                raise CatalogueError(f"{where}: randint needs integer bounds; got {values!r}")
            space[key] = tune.randint(low, high)
    return space


def extreme_values(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Trial configs that together cover every bound and every listed value, to validate before starting."""
    options = {}
    for key, domain in spec.items():
        if not isinstance(domain, Mapping):
            options[key] = [domain]
            continue
        kind, values = next(iter(domain.items()))
        options[key] = list(values) if kind in ("choice", "grid") else \
            [values[0], values[1] - 1] if kind == "randint" else list(values)
    longest = max(len(v) for v in options.values())
    return [{key: values[min(i, len(values) - 1)] for key, values in options.items()} for i in range(longest)]


def set_dotted(settings: dict[str, Any], key: str, value: Any) -> None:
    node = settings
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def trial_settings(combination: Combination, config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TrainConfig dict and data settings of one trial: the combination's, with the trial's values."""
    train, data = copy.deepcopy(combination.train), dict(combination.data)
    for key, value in config.items():
        if key in DATA_OVERRIDES:
            data[key] = value
        else:
            set_dotted(train, key, value)
    return train, data


def check_space(name: str, combination: Combination, spec: Mapping[str, Any]) -> None:
    from stylecore.training import TrainConfig

    for config in extreme_values(spec):
        train, data = trial_settings(combination, config)
        try:
            TrainConfig.from_dict(train).check_buildable()  # a misspelt style_params key fails here, not in 24 trials
            for key in DATA_OVERRIDES:
                if data[key] is not None and (not isinstance(data[key], int) or data[key] < 1):
                    raise ValueError(f"{key} must be a positive integer; got {data[key]!r}")
        except ValueError as error:
            raise CatalogueError(f"params.yaml: sweep.combinations.{name}: a trial with {config} is invalid: "
                                 f"{error}") from None


# ---------------------------------------------------------------------------------------------------
# One trial (runs in a Tune trial actor)


@dataclass
class SweepJob:
    """What every trial of one sweep shares (sent once through the object store)."""

    key: str  # <model>-<loss>-<digest>: names the Tune experiment, the Train runs, the MLflow runs
    combination: Combination
    validation: dict[str, Any]  # pairs, weights, objective, batch_size
    scale: dict[str, Any]
    trials_storage: str
    tracking: dict[str, Any]
    parent_run_id: str
    tags: dict[str, str]


def run_trial(config: dict[str, Any], job: SweepJob) -> None:
    """One trial: a Ray Train run of the combination with ``config`` applied, in its own MLflow child run."""
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines import ray_training
    from pipelines.tracking import start_run

    trial_id = tune.get_context().get_trial_id()
    combination = job.combination
    train, data = trial_settings(combination, config)
    tracking = job.tracking
    run_id = start_run(tracking["uri"], tracking["experiment"], tracking["artifacts"],
                       f"{combination.name} trial {trial_id}", {"trial": config, "train": train, "data": data},
                       {**job.tags, PARENT_TAG: job.parent_run_id, "sweep.trial_id": trial_id},
                       resume_key=f"{job.key}/{trial_id}")
    client = MlflowClient(tracking["uri"])
    try:
        result = ray_training.run(
            train, combination.content, combination.style, name=f"{job.key}-{trial_id}",
            storage_path=job.trials_storage, **job.scale, batch_size=data["batch_size"], crop_size=data["crop_size"],
            load_size=data["load_size"], loader_workers=data["loader_workers"], report_every=data["report_every"],
            keep=combination.ray["keep_checkpoints"],
            max_failures=combination.ray["max_failures"], validation=job.validation,
            callbacks=[TuneReportCallback()], extra={"mlflow": {"tracking_uri": tracking["uri"], "run_id": run_id}})
        if result.error is not None:
            raise result.error
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


# ---------------------------------------------------------------------------------------------------
# The stage


def _concurrency(settings: Mapping[str, Any], scale: Mapping[str, Any]) -> int:
    """Trials at once: as many as the cluster's CPUs (GPUs) hold, never more than requested."""
    import ray

    if settings["max_concurrent"] != "auto":
        return int(settings["max_concurrent"])
    resources = ray.cluster_resources()
    workers = scale["num_workers"]
    if scale["use_gpu"]:
        fits = resources.get("GPU", 0) // (workers * scale["gpus_per_worker"])
    else:
        fits = resources.get("CPU", 0) // workers
    return max(1, int(fits))


def _logged_curve(client, run_id: str | None) -> list[dict[str, float]]:
    """A trial's validation curve from its MLflow run, one point per step (a step re-run after a restore keeps
    its latest value). Complete across restores, unlike Tune's own record of a restored trial, which starts
    afresh; and it includes any report the trial made while Tune was stopping it."""
    if not run_id:
        return []
    latest = {m.step: m.value for m in sorted(client.get_metric_history(run_id, METRIC), key=lambda m: m.timestamp)}
    return [{"step": int(step), METRIC: float(value)} for step, value in sorted(latest.items())]


def _trial_record(result, total_steps: int, child_runs: Mapping[str, str], client) -> dict[str, Any]:
    metrics = dict(result.metrics or {})
    trial_id = metrics.get("trial_id") or Path(result.path).name
    step = int(metrics.get("step", 0))
    outcome = "failed" if result.error is not None else "finished" if step >= total_steps else "stopped_early"
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


def run(name: str, *, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), reports: Path = Path("reports"),
        ray_storage: str | Path | None = None) -> dict[str, Any]:
    """Sweep one combination; returns the report written to ``reports/sweeps/<name>.json``.

    ``ray_storage`` (a folder or URI) holds the Tune experiment and the trials' checkpoints until the sweep
    completes; default ``<storage.checkpoints>/sweeps``."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from pipelines import storage as locations
    from pipelines.train import log_final_model, ray_session, scaling
    from pipelines.tracking import flatten, start_run
    from stylecore.heldout import select_heldout

    root = params_path.resolve().parent
    params = load_params(params_path)
    settings = settings_of(params)
    if name not in settings["combinations"]:
        raise CatalogueError(f"params.yaml: sweep.combinations has no {name!r}; defined: "
                             f"{', '.join(settings['combinations']) or 'none'}")
    model, _, loss = name.partition("-")
    combination = resolve_combination(params, model, loss, shards_root)
    local_val = profile_shards(params, shards_root, "val")
    for role, folders in locations.worker_shards(params, {"content": combination.content,
                                                          "style": combination.style}).items():
        setattr(combination, role, folders)  # what the trials' workers read
    overrides = (settings["profiles"] or {}).get(combination.profile) or {}
    for key, value in overrides.items():  # the sweep profile: fewer steps, more frequent reports
        (combination.data if key in combination.data else combination.train)[key] = value
    combination.ray = {**combination.ray, "workers": settings["workers"]}
    spec = settings["combinations"][name]
    space = search_space(name, spec)
    check_space(name, combination, spec)
    steps, every = int(combination.train["steps"]), int(combination.data["report_every"])
    reports_per_trial = math.ceil(steps / every)
    if reports_per_trial <= settings["asha"]["grace_period"]:
        raise CatalogueError(f"params.yaml: a trial reports {reports_per_trial} time(s) ({steps} steps, report_every "
                             f"{every}) but sweep.asha.grace_period is {settings['asha']['grace_period']}: ASHA could "
                             f"never stop a trial early; lower report_every in sweep.profiles.{combination.profile}")
    val = settings["validation"]
    try:
        pairs = select_heldout(*local_val.values(), contents=val["contents"],
                               styles_per_label=val["styles_per_label"], size=val["size"], seed=val["seed"],
                               style_label=(params.get("evaluate") or {}).get("style_label", "style"), part="validation")
    except (FileNotFoundError, ValueError) as error:
        raise SweepStageError(f"validation pairs (sweep.validation) from the validation shards: {error}") from None
    weights = str(combination.data["weights"] or "imagenet")
    digest = hashlib.sha256(json.dumps([combination.digest(), spec, settings["samples"], settings["objective"], val,
                                        settings["asha"], pairs.content_keys, pairs.style_keys],
                                       sort_keys=True, default=str).encode()).hexdigest()[:12]
    key = f"{name}-{digest}"
    storage = locations.ray_storage(params, root, "sweeps", ray_storage)
    tracking = tracking_settings(params, root)
    stage = os.environ.get("DVC_STAGE", f"sweep@{name}")
    print(f"{stage}: {settings['samples']} sample(s) of {spec} on {model} × {loss}, {steps} steps per trial, ASHA on "
          f"{METRIC} = " + " + ".join(f"{w:g}·{m}" for m, w in settings["objective"].items())
          + f" over {len(pairs)} validation pairs, reported every {every} steps", flush=True)

    tags = {"model": model, "loss": loss, "profile": combination.profile, "dvc_stage": stage, "sweep": key,
            **git_state(root), **combination.weights()}
    started = time.perf_counter()
    with ray_session():
        scale = scaling(combination, where="sweep")
        concurrent = _concurrency(settings, scale)
        if combination.ray["threads_per_worker"] == "auto":
            # the CPUs are shared by the trials that run at once, on GPU too (each GPU trial took every CPU before)
            import ray

            cpus = ray.cluster_resources().get("CPU", 1)
            scale["threads_per_worker"] = max(1, int(cpus // (concurrent * scale["num_workers"])))
        parent = start_run(tracking["uri"], tracking["experiment"], tracking["artifacts"], f"sweep {name}",
                           {"sweep": {**{k: settings[k] for k in ("samples", "workers", "objective", "validation", "asha")},
                                      "space": spec}, "train": combination.train, "data": combination.data},
                           {**tags, "stage": "sweep"}, resume_key=key)
        print(f"{stage}: MLflow parent run {parent}; up to {concurrent} trial(s) at once, each "
              f"{scale['num_workers']} × {'GPU' if scale['use_gpu'] else 'CPU'} worker(s)", flush=True)
        job = SweepJob(key, combination, {"pairs": pairs, "weights": weights, "objective": settings["objective"],
                                          "batch_size": val["batch_size"]},
                       scale, locations.join(storage, "trials"), tracking, parent, tags)
        # A trial only drives its Train workers: it holds no CPU, or trials would starve their own workers.
        trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), {"cpu": 0, "memory": 1})
        experiment = locations.join(storage, key)
        if tune.Tuner.can_restore(experiment):
            print(f"{stage}: restoring the interrupted sweep in {experiment}", flush=True)
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode="min", num_samples=settings["samples"], max_concurrent_trials=concurrent,
                    scheduler=ASHAScheduler(time_attr="training_iteration", max_t=reports_per_trial,
                                            grace_period=settings["asha"]["grace_period"],
                                            reduction_factor=settings["asha"]["reduction_factor"]),
                    # A new actor per trial: stopping a trial ends its actor, and with it the Train run it owns.
                    reuse_actors=False),
                run_config=tune.RunConfig(name=key, storage_path=storage, verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=settings["max_failures"])))
        results = tuner.fit()
        client = MlflowClient(tracking["uri"])
        # Ctrl+C makes fit() return after saving the experiment state, and the in-memory trials then read as
        # terminated: the saved state says which trials really were still pending or running.
        unfinished = [t for t in tune.ExperimentAnalysis(experiment).trials if t.status not in ("TERMINATED", "ERROR")]
        if unfinished:
            client.set_terminated(parent, "KILLED")
            raise SweepStageError(f"the sweep was interrupted with {len(unfinished)} trial(s) unfinished; re-run the "
                                  f"stage (`dvc repro {stage}`) to resume it from {experiment}")
        experiment_id = client.get_experiment_by_name(tracking["experiment"]).experiment_id
        child_runs = {run.data.tags.get("sweep.trial_id"): run.info.run_id for run in client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'", max_results=10_000)}
        trials = sorted((_trial_record(r, steps, child_runs, client) for r in results), key=lambda t: t["trial_id"])
        # Tune's record decides each child run's end state: a trial stopped at its last report (ASHA's max_t) may
        # be torn down before its own `set_terminated(FINISHED)`, and is then left FAILED by its exception path.
        # A trial keeps training while Tune weighs its report, so a stopped trial's run can hold a report or more
        # past the step ASHA stopped it at: `sweep.step` is the last step Tune weighed, as in the report.
        for trial in trials:
            if trial["mlflow_run_id"]:
                client.log_batch(trial["mlflow_run_id"], tags=[RunTag("sweep.outcome", trial["outcome"]),
                                                                RunTag("sweep.step", str(trial["step"]))])
                client.set_terminated(trial["mlflow_run_id"], RUN_STATUS[trial["outcome"]])
        finished = [t for t in trials if t["outcome"] == "finished" and METRIC in t["metrics"]]
        if not finished:
            client.set_terminated(parent, "FAILED")
            errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t["error"])
            raise SweepStageError(f"no trial of the sweep finished ({errors or 'all were stopped'}); fix the cause and "
                                  f"re-run the stage")
        best = min(finished, key=lambda t: t["metrics"][METRIC])

        out = models_root / "sweeps" / name / "checkpoint"
        with atomic_directory(out) as building:
            locations.download_tree(best["checkpoint"], building, like=storage)
            atomic_write_text(building / "mlflow.json", json.dumps(
                {"tracking_uri": tracking["uri"], "experiment": tracking["experiment"], "run_id": best["mlflow_run_id"],
                 "sweep": key, "trial_id": best["trial_id"]}, indent=2))
        mlflow.set_tracking_uri(tracking["uri"])
        with mlflow.start_run(run_id=best["mlflow_run_id"]):
            model_uri = log_final_model(out, combination)
            mlflow.set_tag("model_uri", model_uri)
        report = {"combination": name, "sweep": key, "metric": METRIC, "mode": "min", "objective": settings["objective"],
                  "validation": {"contents": pairs.content_keys, "styles": pairs.style_keys},
                  "space": spec, "samples": settings["samples"], "steps": steps, "report_every": every,
                  "best": {"trial_id": best["trial_id"], "config": best["config"], "metrics": best["metrics"],
                           "checkpoint": str(out), "model_uri": model_uri, "mlflow_run_id": best["mlflow_run_id"]},
                  "counts": {outcome: sum(t["outcome"] == outcome for t in trials)
                             for outcome in ("finished", "stopped_early", "failed")},
                  "trials": [{k: v for k, v in t.items() if k != "checkpoint"} for t in trials],  # deleted below
                  "mlflow_parent_run_id": parent,
                  "wall_seconds": round(time.perf_counter() - started, 1)}
        atomic_write_text(reports / "sweeps" / f"{name}.json", json.dumps(report, indent=2) + "\n")
        now = int(time.time() * 1000)
        client.log_batch(parent, metrics=[Metric(f"best/{k}", v, now, steps) for k, v in best["metrics"].items()]
                         + [Metric(f"trials/{k}", float(v), now, 0) for k, v in report["counts"].items()],
                         params=[Param(k, v) for k, v in flatten({"best": best["config"]}).items()])
        client.set_tag(parent, "best_trial", best["trial_id"])
        client.set_tag(parent, "model_uri", model_uri)
        client.log_artifact(parent, str(reports / "sweeps" / f"{name}.json"))
        client.set_terminated(parent, "FINISHED")
    # Complete: the outputs hold what matters; a later sweep (new settings or code) starts afresh.
    locations.remove_tree(experiment)
    for trial in trials:
        locations.remove_tree(locations.join(storage, "trials", f"{key}-{trial['trial_id']}"))
    print(f"{stage}: {len(trials)} trials ({report['counts']['finished']} finished, {report['counts']['stopped_early']} "
          f"stopped early by ASHA, {report['counts']['failed']} failed) in {report['wall_seconds']} s; best "
          f"{best['trial_id']} {best['config']} {METRIC} {best['metrics'][METRIC]:.4g}; checkpoint {out}, "
          f"model {model_uri}", flush=True)
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
    sys.exit(main())
