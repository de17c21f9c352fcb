"""MLflow tracking for training runs: the store location and the runs the driver creates (rank 0 logs through
:mod:`pipelines.mlflow_hooks`; this module imports no torch, so a stage that skips stays quick).

The driver creates the experiment (with an explicit artifact location: one created inside a Ray
worker would put artifacts in Ray's session folder) and the run, then hands the run id to the
workers; rank 0 logs through ``MlflowClient`` with that id, so no worker depends on fluent
"active run" state. The default store is SQLite at an absolute path (four slashes: Ray workers run
in another working directory).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from stylecore.shards import is_remote

if TYPE_CHECKING:
    from pipelines.provenance import ShardInput

RESUME_TAG = "stylecore.resume_key"
#: the experiment kind the MLflow UI opens model-development experiments with (runs and charts, not GenAI traces)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: a run's description in the MLflow UI
DESCRIPTION = "mlflow.note.content"


def default_tracking_uri(root: Path | str = ".") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:////<abs>/mlflow.db`` in ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def portable_uri(uri: str, root: Path | str) -> str:
    """``uri`` (or a plain path) as a file kept in git should hold it: a local store, artifact or folder inside the
    repository ``root`` relative to it (``sqlite:///mlflow.db``, ``mlartifacts/…``, ``models/…``: what the stages,
    run from the root, resolve to the same place on any machine), anything else (a server, object storage, a path
    outside) unchanged."""
    base = Path(root).resolve()
    for scheme, keep in (("sqlite:///", "sqlite:///"), ("file://", ""), ("/", "")):
        if uri.startswith(scheme):
            path = Path(uri[len(scheme):] if scheme != "/" else uri)
            if path.is_absolute() and path.resolve().is_relative_to(base):
                return keep + path.resolve().relative_to(base).as_posix()
    return uri


@dataclass(frozen=True)
class Tracking:
    """Where runs go: params.yaml's ``mlflow`` section, resolved for this repository."""

    uri: str
    experiment: str
    artifacts: str  # a folder of the repository, or a URI (s3://…) every node can write to
    interval: float  # seconds between system-metrics samples


def tracking_settings(params: Mapping[str, Any], root: Path) -> Tracking:
    from pipelines.settings import read
    from pipelines.sources import CatalogueError
    from pipelines.storage import location

    settings = read(params, "mlflow")
    interval, profile = settings.system_metrics_interval, params.get("profile")
    if isinstance(interval, Mapping):
        if profile not in interval:
            raise CatalogueError(f"params.yaml: mlflow.system_metrics_interval has no entry for profile {profile!r} "
                                 f"(it has {', '.join(map(str, interval))}); add one, or give one number for all")
        interval = interval[profile]
    return Tracking(settings.tracking_uri or default_tracking_uri(root), settings.experiment.format(profile=profile),
                    location(settings.artifacts, root), float(interval))


#: the fluent API's process-wide settings that :func:`fluent_store` sets and puts back
_FLUENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")


@contextmanager
def fluent_store(uri: str, system_metrics_interval: float | None = None) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``log_model``, system metrics) on ``uri`` for the block only.

    The fluent API reads a process-wide tracking URI (and exports it as ``MLFLOW_TRACKING_URI``); everything
    else here passes the URI to an ``MlflowClient``. The caller's URI, variables and sampling interval are
    put back afterwards, so a stage function called from a notebook or a test leaves its MLflow state as
    it was.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    from pipelines.console import quiet_libraries

    quiet_libraries()
    saved_uri = utils._tracking_uri  # what set_tracking_uri set (None: the default), not the resolved default
    saved = {key: os.environ.get(key) for key in _FLUENT_VARIABLES}
    mlflow.set_tracking_uri(uri)
    if system_metrics_interval is not None:
        mlflow.set_system_metrics_sampling_interval(system_metrics_interval)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def flatten(values: Mapping[str, Any], prefix: str = "", text: Callable[[Any], str] = str) -> dict[str, str]:
    """Nested params → ``{"a.b": "value"}`` strings (each value through ``text``), as MLflow params."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}.", text))
        else:
            out[name] = text(value)[:6000]
    return out


def start_run(tracking_uri: str, experiment: str, artifact_root: Path | str, run_name: str,
              params: Mapping[str, Any], tags: Mapping[str, str], resume_key: str | None = None,
              start_time: float | None = None) -> str:
    """Create (or reuse) the experiment and a run; returns the run id. The run stays open for the workers.

    ``start_time`` (seconds since the epoch): when the work began, for a stage that creates its run at the end
    (so the UI's duration is the stage's, not the logging's).

    With ``resume_key``, an unfinished run (crashed or failed) tagged with the same key is reopened
    instead, so a re-run after a crash continues its curves rather than scattering them over runs.
    """
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, artifact_location=str(artifact_root) if is_remote(
            artifact_root) else Path(artifact_root).resolve().as_uri(), tags=EXPERIMENT_TAGS)
    else:
        experiment_id = found.experiment_id
        for key, value in EXPERIMENT_TAGS.items():
            if found.tags.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)
    run_id = None
    if resume_key is not None:
        unfinished = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RESUME_TAG}` = '{resume_key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if unfinished:
            run_id = unfinished[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            print(f"mlflow: reopening unfinished run {run_id} ({resume_key})", flush=True)
    if run_id is None:
        run_tags = {**tags, **({RESUME_TAG: resume_key} if resume_key else {})}
        run_id = client.create_run(experiment_id, run_name=run_name, tags=run_tags,
                                   start_time=int(start_time * 1000) if start_time is not None else None).info.run_id
    else:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    items = [Param(k, v) for k, v in flatten(params).items()]
    for start in range(0, len(items), 100):  # the store's batch limit; same values again are accepted
        client.log_batch(run_id, params=items[start:start + 100])
    return run_id


def log_shard_inputs(tracking_uri: str, run_id: str, inputs: Mapping[str, list[ShardInput]]) -> None:
    """Each shard folder a run read as an MLflow dataset input (the UI's Datasets column): the folder's name, DVC's
    hash as the digest, where the run read it as the source, its sample and shard counts as the profile.
    ``inputs`` is keyed by MLflow's context tag: ``training``, ``validation`` or ``evaluation``. Logging the same
    folders again (a resumed run) adds nothing: MLflow keys inputs by name and digest."""
    import json
    from urllib.parse import urlparse

    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    datasets = []
    for context, item in ((context, item) for context, items in inputs.items() for item in items):
        scheme = urlparse(item.uri).scheme
        dataset = Dataset(name=item.name, digest=item.digest, source_type="local" if scheme in ("", "file") else scheme,
                          source=json.dumps({"uri": item.uri}),
                          profile=json.dumps({"num_rows": item.samples, "num_shards": item.shards}))
        datasets.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    if datasets:
        MlflowClient(tracking_uri).log_inputs(run_id, datasets=datasets)


def loss_curves(tracking_uri: str, run_id: str, prefix: str = "loss/") -> list[dict[str, float]]:
    """The run's per-step training terms (``loss/*``) as rows ``{step, <term>: value}``, by step: the small
    per-step file a train stage keeps in git for ``dvc plots`` and the evaluation report."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    keys = sorted(k for k in client.get_run(run_id).data.metrics if k.startswith(prefix))
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for point in client.get_metric_history(run_id, key):
            rows.setdefault(point.step, {"step": point.step})[key[len(prefix):]] = point.value
    return [rows[step] for step in sorted(rows)]
