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
import copy
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from pipelines.sources import CatalogueError, active_profile, load_params, profile_shards
from pipelines.stage import run_stage
from stylecore.io import atomic_directory, atomic_write_text

#: keys of a combination's settings that the stage uses itself; every other key is a TrainConfig key
DATA_KEYS = {"batch_size": 4, "crop_size": 256, "load_size": None, "loader_workers": 0, "report_every": 100,
             "weights": None}
RAY_KEYS = {"workers": 2, "use_gpu": "auto", "gpus_per_worker": 1, "threads_per_worker": "auto",
            "max_failures": 2, "keep_checkpoints": 2}


class TrainStageError(RuntimeError):
    """Bad settings, missing data or a failed run; the message names the key or the cause and the fix."""


@dataclass
class Combination:
    """Everything one grid cell needs, resolved from params.yaml and checked before any compute."""

    model: str
    loss: str
    profile: str
    train: dict[str, Any]  # a stylecore.training.TrainConfig dict
    data: dict[str, Any]  # DATA_KEYS
    ray: dict[str, Any]  # RAY_KEYS
    content: list[str] = field(default_factory=list)
    style: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.loss}"

    def digest(self) -> str:
        """Identifies the settings: the same digest resumes the same Ray and MLflow runs."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def weights(self) -> dict[str, str]:
        from stylecore.training import WEIGHT_PARAMETERS

        params = self.train.get("model_params", {})
        return {key: str(params[key]) for key in WEIGHT_PARAMETERS if key in params}


def _is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_ray_settings(settings: Mapping[str, Any], where: str) -> None:
    """``train.ray``'s keys, each with its type and range; the error names the key, the value and the range."""
    unknown = sorted(set(settings) - set(RAY_KEYS))
    if unknown:
        raise CatalogueError(f"params.yaml: {where} has unknown key(s) {unknown}; keys: {', '.join(RAY_KEYS)}")
    rules = {"workers": (lambda v: _is_count(v, 1), "a positive integer"),
             "max_failures": (lambda v: _is_count(v, 0), "an integer ≥ 0 (restarts after a failure; -1, retry "
                                                         "forever, is refused: a broken run must stop)"),
             "keep_checkpoints": (lambda v: _is_count(v, 1), "a positive integer"),
             "use_gpu": (lambda v: v == "auto" or isinstance(v, bool), "auto, true or false"),
             "gpus_per_worker": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                                 "a positive number"),
             "threads_per_worker": (lambda v: v == "auto" or _is_count(v, 1), "auto or a positive integer")}
    for key, (valid, allowed) in rules.items():
        if key in settings and not valid(settings[key]):
            raise CatalogueError(f"params.yaml: {where}.{key}={settings[key]!r} is invalid; it must be {allowed}")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; nested dicts merge, everything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _section(params: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    value: Any = params
    for depth, key in enumerate(keys):
        value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            raise CatalogueError(f"params.yaml: {'.'.join(keys[:depth + 1])} is missing")
    if not isinstance(value, Mapping):
        raise CatalogueError(f"params.yaml: {'.'.join(keys)} must be a mapping; got {value!r}")
    return dict(value)


def resolve_combination(params: Mapping[str, Any], model: str, loss: str, shards_root: Path) -> Combination:
    """The settings and data of ``model × loss``, validated (TrainConfig included) before anything starts."""
    from stylecore import models as model_registry
    from stylecore.registry import accepted_parameters
    from stylecore.training import WEIGHT_PARAMETERS, TrainConfig

    profile = active_profile(params)
    grid = _section(params, "train", "grid")
    if model not in grid.get("models", []) or loss not in grid.get("losses", []):
        raise CatalogueError(f"{model} × {loss} is not in the grid (params.yaml: train.grid.models "
                             f"{grid.get('models')} × train.grid.losses {grid.get('losses')}); add it there")
    profiles = _section(params, "train", "profiles")
    if profile not in profiles:
        raise CatalogueError(f"params.yaml: train.profiles has no entry for profile {profile!r}; "
                             f"defined: {', '.join(profiles)}")
    settings = deep_merge(profiles[profile] or {}, _section(params, "train", "models").get(model) or {})
    settings = deep_merge(settings, _section(params, "train", "losses").get(loss) or {})
    data = {key: settings.pop(key, default) for key, default in DATA_KEYS.items()}
    ray_settings = deep_merge(RAY_KEYS, _section(params, "train", "ray"))
    check_ray_settings(ray_settings, "train.ray")
    for key in ("batch_size", "crop_size", "report_every"):
        if not _is_count(data[key], 1):
            raise CatalogueError(f"params.yaml: train.profiles.{profile}.{key} must be a positive integer; "
                                 f"got {data[key]!r}")
    if not _is_count(data["loader_workers"], 0):
        raise CatalogueError(f"params.yaml: train.profiles.{profile}.loader_workers must be an integer ≥ 0; "
                             f"got {data['loader_workers']!r}")
    if data["load_size"] is not None and not _is_count(data["load_size"], 1):
        raise CatalogueError(f"params.yaml: train.profiles.{profile}.load_size must be a positive integer or null; "
                             f"got {data['load_size']!r}")

    train = {**settings, "model": model, "style_loss": loss}
    model_params = dict(train.get("model_params") or {})
    if data["weights"] is not None:
        # One switch for every pretrained part, unless the model's settings name one explicitly.
        accepted = accepted_parameters(model_registry.MODELS.get(model)) if model in model_registry.names() else []
        for key in WEIGHT_PARAMETERS:
            if key in accepted:
                model_params.setdefault(key, str(data["weights"]))
    train["model_params"] = model_params
    try:
        # the model and every objective built as the workers will (shapes only): a bad loss, key or weights
        # file fails here, before Ray starts, and is never retried
        TrainConfig.from_dict(train).check_buildable()
    except ValueError as error:
        raise CatalogueError(f"params.yaml: train settings of {model} × {loss}: {error}") from None

    shards = profile_shards(params, shards_root, "train")
    combination = Combination(model, loss, str(profile), train, data, ray_settings,
                              content=shards["content"], style=shards["style"])
    from stylecore.shards import shard_urls

    for role in ("content", "style"):
        try:
            shard_urls(getattr(combination, role))
        except FileNotFoundError as error:
            raise TrainStageError(f"{role} shards of profile {profile!r}: {error}") from None
    return combination


# ---------------------------------------------------------------------------------------------------
# Provenance: what the MLflow run is tagged with.


def git_state(root: Path) -> dict[str, str]:
    """The commit and whether tracked files differ from it (``unknown`` outside git). dvc.lock does not
    count: ``dvc repro`` rewrites it after every stage, so it would mark every later stage dirty."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock"))
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def data_hashes(lock_path: Path, folders: list[str], root: Path) -> dict[str, str]:
    """``{"data.<folder>": md5}`` for each shard folder, from the stage outputs recorded in dvc.lock."""
    import yaml

    outs: dict[str, str] = {}
    if lock_path.is_file():
        for stage in (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                outs[str(out.get("path"))] = str(out.get("md5"))
    hashes = {}
    for folder in folders:
        relative = os.path.relpath(Path(folder).resolve(), root.resolve())
        hashes[f"data.{Path(folder).name}"] = outs.get(relative, "not in dvc.lock (not produced by dvc repro)")
    return hashes


# ---------------------------------------------------------------------------------------------------
# Ray


# Ray Train's per-run actor that watches the nodes for preemption (spot instances); see ray_session.
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# The address of a local instance ray_session started (inherited by the stages of pipelines.repro): a
# RAY_ADDRESS equal to it is this machine, which no autoscaler can grow.
LOCAL_RAY = "STYLECORE_LOCAL_RAY"


def on_local_ray() -> bool:
    """Whether the Ray in use is a local instance that ray_session started, not a cluster the user named."""
    address = os.environ.get("RAY_ADDRESS")
    return not address or address == os.environ.get(LOCAL_RAY)


@contextmanager
def ray_session() -> Iterator[None]:
    """Connect to ``RAY_ADDRESS`` or start a local Ray sized to this machine; always shut down after.

    Local Ray gets explicit resources (every CPU, every visible GPU) so that the workers' requests are
    checked against what this machine really has. The dashboard stays on (bound to 127.0.0.1): Ray
    Train's controller monitoring queries the state API it serves, and users watch runs there.

    Every process of a local instance (raylet, agents, Train's placement-group cleaner, …) is started
    with ``RAY_ADDRESS`` naming that instance. Ray's internal state-API lookups otherwise fail with
    "Found multiple active Ray instances" whenever another Ray runs on the machine, and then nothing
    removes the placement groups of stopped Train runs: their CPUs stay reserved and the next run
    (a sweep's next trial) waits forever.
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) owns the session
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    saved = {key: os.environ.get(key) for key in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT", PREEMPTION_WATCHER,
                                                  LOCAL_RAY)}
    watchdog = None
    if address:
        where = "the shared local Ray" if address == os.environ.get(LOCAL_RAY) else "the cluster"
        print(f"ray: connecting to {where} at RAY_ADDRESS={address}", flush=True)
        ray.init(address=address)
    else:
        import socket

        import torch

        cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
        with socket.socket() as probe:  # a free port for this instance's GCS, known before it starts
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Loopback: the instance advertises 127.0.0.1, and the processes it starts reach it there. Some of Ray's
        # gRPC servers still listen on every interface, so every request must carry the instance's token: Ray's
        # token authentication, on by default for local instances since Ray 2.60 (RAY_AUTH_MODE; it is read when
        # ray is imported, so it cannot be switched here). The test suite checks that a wrong token is refused.
        address = f"127.0.0.1:{port}"
        os.environ.update(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=address, **{LOCAL_RAY: address})
        if os.environ.get("RAY_AUTH_MODE", "token") != "token":
            print(f"ray: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: this instance accepts requests without a token "
                  "from anyone who can reach this machine", flush=True)
        # A local instance has no node that can be preempted: spare every Train run the watcher actor (one more
        # process to start while the workers start) unless the user asked for it.
        os.environ.setdefault(PREEMPTION_WATCHER, "0")
        print(f"ray: starting a local instance with {cpus} CPUs and {gpus} GPUs at {os.environ['RAY_ADDRESS']} "
              "(set RAY_ADDRESS to use a cluster)", flush=True)
        watchdog = start_watchdog(address)
        try:
            # address="local": a new instance, never a cluster some earlier `ray start` left behind.
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=True,
                     dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1")
        except BaseException:
            _restore_environment(saved)
            watchdog.stdin.close()
            raise
    try:
        yield
    finally:
        ray.shutdown()
        _restore_environment(saved)
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog ends what ray.shutdown left, then exits


def start_watchdog(address: str):
    """:mod:`pipelines.ray_watchdog` for the local instance at ``address``: it outlives a killed driver (its own
    session) and stops the instance's leftover processes when the driver's pipe closes."""
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "pipelines.ray_watchdog", address], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[1]))


def _restore_environment(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def scaling(combination: Combination, where: str = "train.ray") -> dict[str, Any]:
    """Workers, GPU use and threads for the cluster at hand (see :func:`decide_scaling`), announced in one line."""
    import ray

    scale = decide_scaling(combination.ray, ray.cluster_resources(), local=on_local_ray(), where=where)
    device = f"GPU ({scale['gpus_per_worker']:g} each, NCCL)" if scale["use_gpu"] else \
        f"CPU ({scale['threads_per_worker']} torch thread(s) each, gloo)"
    notice = scale.pop("notice")
    print(f"ray: {scale['num_workers']} worker(s) on {device}" + (f"; {notice}" if notice else ""), flush=True)
    return scale


def decide_scaling(settings: Mapping[str, Any], resources: Mapping[str, float], local: bool,
                   where: str = "train.ray") -> dict[str, Any]:
    """Workers, GPU use and threads from ``train.ray`` settings and the cluster's resources.

    ``use_gpu: auto`` trains on GPUs whenever the cluster has any: on this machine with fewer GPUs than
    workers, the workers are capped at the GPUs (said in ``notice``) rather than all of them falling back to
    CPU. On a cluster the user named (``local=False``), GPUs it lacks may still come from its autoscaler, so
    nothing is refused there. ``use_gpu: true`` on a machine without GPUs, more workers than CPUs, and several
    workers sharing GPUs (NCCL refuses two ranks on one GPU) are errors naming the key to change.
    """
    workers, per_gpu = settings["workers"], float(settings["gpus_per_worker"])
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    use_gpu, notice = settings["use_gpu"], ""
    if use_gpu == "auto":
        use_gpu = gpus > 0
        if use_gpu and local and gpus < workers * per_gpu:
            capped = max(1, int(gpus // per_gpu))
            notice = (f"{where}.workers={workers} capped at {capped}: this machine has {gpus:g} GPU(s) and each worker "
                      f"takes {per_gpu:g} (the global batch is {capped} × batch_size)")
            workers = capped
    elif not isinstance(use_gpu, bool):
        raise CatalogueError(f"params.yaml: {where}.use_gpu must be auto, true or false; got {use_gpu!r}")
    if use_gpu and workers > 1 and per_gpu < 1:
        raise TrainStageError(f"{where}.gpus_per_worker={per_gpu:g} with {workers} workers would put two DDP ranks on "
                              "one GPU, which NCCL refuses ('Duplicate GPU detected'); set gpus_per_worker: 1, or "
                              "workers: 1 (fractions suit single-worker sweep trials)")
    if local:  # a cluster the user named may add nodes on demand; this machine cannot
        if use_gpu and gpus < workers * per_gpu:
            raise TrainStageError(f"{where} asks for {workers} workers × {per_gpu} GPU but Ray has {gpus:g} GPUs; "
                                  f"lower {where}.workers, or set {where}.use_gpu: false (or auto)")
        if cpus < workers:
            raise TrainStageError(f"{where}.workers={workers} needs {workers} CPUs but Ray has {cpus:g}; lower "
                                  f"{where}.workers (Ray would wait for resources forever)")
    threads = settings["threads_per_worker"]
    if threads == "auto":
        threads = max(1, int(cpus // workers)) if cpus else 1
    return {"num_workers": workers, "use_gpu": bool(use_gpu), "gpus_per_worker": per_gpu,
            "threads_per_worker": int(threads), "notice": notice}


# ---------------------------------------------------------------------------------------------------
# The stage


def tracking_settings(params: Mapping[str, Any], root: Path) -> dict[str, Any]:
    from pipelines.storage import location
    from pipelines.tracking import default_tracking_uri

    settings = dict(params.get("mlflow") or {})
    uri = settings.get("tracking_uri") or default_tracking_uri(root)
    experiment = str(settings.get("experiment") or "stylecore-{profile}").format(profile=params.get("profile"))
    return {"uri": uri, "experiment": experiment,
            # a folder of the repository, or a URI (s3://…) every node can write to
            "artifacts": location(settings.get("artifacts") or "mlartifacts", root),
            "interval": float(settings.get("system_metrics_interval") or 10)}


def run(model: str, loss: str, *, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), ray_storage: str | Path | None = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one grid cell; returns the metrics written to ``models/<model>-<loss>/metrics.json``.

    ``ray_storage`` (a folder or URI) keeps Ray's checkpoints of unfinished runs; default
    ``<storage.checkpoints>/train``. The workers read the shards where ``storage.shards`` says.
    """
    import mlflow

    from pipelines import ray_training, storage
    from pipelines.tracking import flatten, start_run

    root = params_path.resolve().parent
    params = load_params(params_path)
    combination = resolve_combination(params, model, loss, shards_root)
    shards = storage.worker_shards(params, {"content": combination.content, "style": combination.style})
    ray_storage = storage.ray_storage(params, root, "train", ray_storage)
    tracking = tracking_settings(params, root)
    stage = os.environ.get("DVC_STAGE", f"train@{combination.name}")
    run_key = f"{combination.name}-{combination.digest()}"
    out = models_root / combination.name
    print(f"{stage}: {model} × {loss}, profile {combination.profile}, {combination.train['steps']} steps, "
          f"weights {combination.weights() or 'none'}", flush=True)

    tags = {"model": model, "loss": loss, "profile": combination.profile, "dvc_stage": stage,
            **git_state(root),
            **{key: value for key, value in combination.weights().items()},
            **data_hashes(root / "dvc.lock", combination.content + combination.style, root)}
    with ray_session():
        scale = scaling(combination)
        tags["workers"] = f"{scale['num_workers']} × {'GPU' if scale['use_gpu'] else 'CPU'}"
        run_id = start_run(tracking["uri"], tracking["experiment"], tracking["artifacts"], combination.name,
                           {"train": combination.train, "data": combination.data, "ray": combination.ray,
                            "content": shards["content"], "style": shards["style"]}, tags, resume_key=run_key)
        print(f"{stage}: MLflow run {run_id} in experiment {tracking['experiment']!r} at {tracking['uri']}", flush=True)
        mlflow.set_tracking_uri(tracking["uri"])
        mlflow.set_system_metrics_sampling_interval(tracking["interval"])
        started = time.perf_counter()
        with mlflow.start_run(run_id=run_id, log_system_metrics=True):  # an exception marks the run FAILED
            try:
                result = ray_training.run(
                    combination.train, shards["content"], shards["style"], name=run_key,
                    storage_path=ray_storage, **scale,
                    batch_size=combination.data["batch_size"], crop_size=combination.data["crop_size"],
                    load_size=combination.data["load_size"], loader_workers=combination.data["loader_workers"],
                    report_every=combination.data["report_every"],
                    keep=combination.ray["keep_checkpoints"], max_failures=combination.ray["max_failures"],
                    extra={**(extra or {}), "mlflow": {"tracking_uri": tracking["uri"], "run_id": run_id}})
                error = result.error if result.checkpoint is not None else result.error or "no checkpoint was reported"
            except Exception as raised:  # Ray raises the workers' error after max_failures restarts
                error = raised
            if error is not None:
                raise TrainStageError(f"Ray Train failed after up to {combination.ray['max_failures']} restarts "
                                      f"(train.ray.max_failures): {error}\nFix the cause and re-run the stage: it "
                                      f"resumes from the last checkpoint in {storage.join(ray_storage, run_key)}")
            metrics = {"step": int(result.metrics["step"]),
                       "loss": {k.split("/", 1)[1]: float(v) for k, v in result.metrics.items() if k.startswith("loss/")},
                       "samples_per_second": float(result.metrics["samples_per_second"]),
                       "throughput": float(result.metrics["throughput"]),
                       "skipped_steps": int(result.metrics.get("skipped_steps", 0)),
                       "wall_seconds": round(time.perf_counter() - started, 1)}
            checkpoint = out / "checkpoint"
            with atomic_directory(checkpoint) as building, result.checkpoint.as_directory() as source:
                shutil.copytree(source, building, dirs_exist_ok=True)
                atomic_write_text(building / "mlflow.json", json.dumps(
                    {"tracking_uri": tracking["uri"], "experiment": tracking["experiment"], "run_id": run_id}, indent=2))
            model_uri = log_final_model(checkpoint, combination)
            mlflow.log_metrics({f"final/{k}": v for k, v in flatten(metrics).items() if _is_number(v)},
                               step=metrics["step"])
            mlflow.set_tag("model_uri", model_uri)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    # Finished: its checkpoints live on in models/; a later re-run must train afresh, not "resume" at the end.
    storage.remove_tree(storage.join(ray_storage, run_key))
    print(f"{stage}: done in {metrics['wall_seconds']} s, {metrics['samples_per_second']:.2f} samples/s, "
          f"loss {metrics['loss'].get('total', float('nan')):.4g}; checkpoint {checkpoint}, model {model_uri}", flush=True)
    return metrics


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def log_final_model(checkpoint: Path, combination: Combination) -> str:
    """Log the trained model to the active MLflow run (pickle, with the stylecore code, for pyfunc and
    ``mlflow models serve``; and its safetensors checkpoint, which ``stylecore.load`` reads); returns its URI.

    It is the inference model rebuilt from the checkpoint (no optimizer, no loss network), behind the
    single-tensor interface of :class:`stylecore.export.PackedPairStylizer` so pyfunc and
    ``mlflow models serve`` can run it; the input example is one content|style pair.
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    import stylecore
    from pipelines.model_uris import checkpoint_files
    from stylecore.export import PackedPairStylizer, pack_pair

    model = stylecore.load(checkpoint).eval()
    size = min(combination.data["crop_size"], 64)
    generator = torch.Generator().manual_seed(0)
    example = pack_pair(torch.rand(1, 3, size, size, generator=generator),
                        torch.rand(1, 3, size, size, generator=generator)).numpy()
    # Any batch and image size (MLflow would infer the example's fixed shape); alpha is a parameter.
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 6, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 3, -1, -1))]),
                               params=ParamSchema([ParamSpec("alpha", "double", 1.0)]))
    info = mlflow.pytorch.log_model(
        PackedPairStylizer(model), name="model", signature=signature, input_example=(example, {"alpha": 1.0}),
        serialization_format="pickle", code_paths=[str(Path(stylecore.__file__).parent)],
        # the checkpoint beside it: stylecore.load("models:/…") rebuilds the model from these, unpickling nothing
        extra_files=checkpoint_files(checkpoint),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          # the installed version, without importing torchvision (1–3 s) only to read it
                          f"torchvision=={importlib.metadata.version('torchvision').split('+')[0]}",
                          "safetensors", "pillow", "pyyaml"])
    return info.model_uri


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
    sys.exit(main())
