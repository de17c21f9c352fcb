"""DVC stage `gan@<model>`: a GAN translation model trained on each domain of the profile with Ray Train.

    python -m pipelines.gan --model cyclegan

A profile trains the models ``gan.run_in`` lists for it (the others' stages say so and skip). A domain is a value
of the style shards' label ``gan.label`` (WikiArt's ``style``; the demo's synthetic
families). CycleGAN and U-GAT-IT train one model per domain of ``gan.profiles.<profile>.domains``, StarGAN one for
all of them; each run is the grid's training run (:func:`pipelines.train.train_run`: Ray Train DDP, MLflow with the
generator and discriminator terms, D(real) / D(fake), sample grids, the logged model, resume after a crash) in one
Ray session. Outputs: ``models/gan/<model>/<run>/`` (``checkpoint``, ``metrics.json``, ``curve.csv``) and
``models/gan/<model>.json``, each run's final figures (``dvc metrics show``). Translate with a run's checkpoint::

    stylecore stylize --model models/gan/cyclegan/cyclegan-dots/checkpoint --domain dots --content … --output …
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipelines.ray_session import ray_session
from pipelines.settings import TrainStageError, gan_skip_reason, resolve_gan_runs
from pipelines.sources import CatalogueError, load_params
from pipelines.stage import run_stage
from pipelines.train import train_run
from stylecore.io import atomic_directory, atomic_write_text


def run(model: str, *, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), ray_storage: str | Path | None = None) -> dict[str, dict]:
    """Train every run of GAN ``model`` (see the module docstring); returns each run's metrics by run name."""
    root = params_path.resolve().parent
    params = load_params(params_path)
    reason = gan_skip_reason(params, model)
    if reason is not None:  # the stage's outputs say why, replacing what another profile's run left
        with atomic_directory(models_root / "gan" / model) as building:
            (building / "SKIPPED.json").write_text(json.dumps({"model": model, "skipped": reason}, indent=2) + "\n")
        atomic_write_text(models_root / "gan" / f"{model}.json", json.dumps({"skipped": reason}, indent=2) + "\n")
        print(f"gan@{model}: skipped, {reason}", flush=True)
        return {}
    runs = resolve_gan_runs(params, model, shards_root)  # every setting and domain checked before Ray starts
    stage = os.environ.get("DVC_STAGE", f"gan@{model}")
    first = runs[0]
    described = ", ".join(f"{r.name} (photo ↔ {' / '.join(r.domains)})" for r in runs)
    heading = (f"{described}, {first.label} labels, profile {first.profile}, {first.train.steps} steps of "
               f"{first.data.batch_size} {first.data.crop_size}² crops, no pretrained weights")
    results: dict[str, dict] = {}
    with ray_session():
        for index, one in enumerate(runs):
            results[one.name] = train_run(one, params, root, stage, models_root / "gan" / model / one.name,
                                          ray_storage, tags={"model": model, "domains": ",".join(one.domains),
                                                             "label": one.label},
                                          title=f"{model}: photo ↔ {', '.join(one.domains)}",
                                          heading=heading if index == 0 else one.name)
    atomic_write_text(models_root / "gan" / f"{model}.json", json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a GAN model of params.yaml's gan.grid")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--ray-storage", help="where Ray keeps checkpoints of unfinished runs, a folder or URI "
                                               "(default: <params storage.checkpoints or ray_results>/train)")
    args = parser.parse_args(argv)
    return run_stage(f"gan@{args.model}", lambda: run(
        args.model, params_path=Path(args.params), shards_root=Path(args.shards), models_root=Path(args.models),
        ray_storage=args.ray_storage), (CatalogueError, TrainStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
