"""DVC stage `stylize`: the profile's held-out content stylized by every registered champion with Ray Data.

    python -m pipelines.stylize

One pipeline for every champion (:func:`pipelines.stylize_dataset.stylize_with_models`): the content is read
and decoded once, each actor holds every champion, and each champion's images go to
``reports/stylized/<registered name>/`` with its own manifest. A GAN champion (``stylecore-cyclegan-dots``)
translates every content to its domain instead of taking a style image; one of several domains (StarGAN's)
writes ``reports/stylized/<registered name>/<domain>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, load_params, profile_shards
from pipelines.stage import run_stage
from pipelines.stylize_dataset import stylize_with_models
from pipelines.stylize_inputs import StylizeError
from stylecore.io import atomic_write_text


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's ``stylize`` section, checked (:class:`pipelines.settings.StylizeSettings`)."""
    from pipelines.settings import read
    from stylecore.config import to_dict

    return to_dict(read(params, "stylize"))


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        reports: Path = Path("reports")) -> dict[str, Any]:
    """Stylize the profile's held-out content with every registered champion into ``reports/stylized/``."""
    import ray

    from pipelines.storage import worker_shards
    from pipelines.ray_session import autoscaler_reach, gpus_in_reach, ray_session
    from pipelines.tracking import fluent_store, tracking_settings

    params = load_params(params_path)
    settings = settings_of(params)
    registry_file = reports / "registry.json"
    if not registry_file.is_file():
        raise StylizeError(f"{registry_file} not found; run `dvc repro register` first (this stage stylizes with "
                           "each registered champion)")
    registry = json.loads(registry_file.read_text())
    names = sorted(registry)
    # a GAN champion translates every content to each of its domains (one folder each), the others stylize
    jobs = [(f"models:/{name}@champion", reports / "stylized" / name / domain if len(domains) > 1
             else reports / "stylized" / name, domain)
            for name in names for domains in [registry[name].get("domains") or [None]] for domain in domains]
    # the Ray Data read tasks run on any node: the shards as the workers see them (params.yaml: storage.shards)
    shards = worker_shards(params, profile_shards(params, shards_root, "val"))
    # models:/ URIs resolve against the pipeline's store (the actors are told it too)
    with fluent_store(tracking_settings(params, params_path.resolve().parent).uri), ray_session():
        gpus, actors = settings["gpus_per_actor"], settings["actors"]
        if gpus == "auto":  # GPUs whenever there are any (or node types that add them): the actors capped at them
            available = int(gpus_in_reach(ray.cluster_resources(), autoscaler_reach()))
            gpus, actors = (1.0, min(actors, available)) if available else (0.0, actors)
        print(f"stylize: {len(names)} champions in one Ray Data pipeline: {', '.join(names)}; {actors} actor(s) on "
              f"{'GPU' if gpus else 'CPU'}", flush=True)
        # One pipeline for every champion: the content is read and decoded once, and each actor starts once.
        manifests = stylize_with_models(
            shards["content"], shards["style"], jobs,
            policy=settings["policy"], seed=settings["seed"], alpha=settings["alpha"],
            preserve_color=settings["preserve_color"], size=settings["size"], style_size=settings["style_size"],
            batch_size=settings["batch_size"], actors=actors, gpus_per_actor=float(gpus),
            output_format=settings["output_format"], image_format=settings["image_format"],
            limit=settings["contents"], progress=False)
    done = {str(output.relative_to(reports / "stylized")): {key: manifest[key] for key in (
                "model_version", "domain", "written", "this_run") if key in manifest}
            for (_, output, _), manifest in zip(jobs, manifests)}
    atomic_write_text(reports / "stylized" / "summary.json", json.dumps(done, indent=2) + "\n")
    folders = f" ({len(done)} output folders: a GAN one per domain)" if len(done) != len(names) else ""
    print(f"stylize: {len(names)} champions{folders} × {settings['contents']} content images in "
          f"{reports / 'stylized'}", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    return run_stage("stylize", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                            reports=Path(args.reports)), (CatalogueError, StylizeError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
