"""DVC stage `optimize`: the optimisation methods (Gatys, STROTSS) on the evaluation's own held-out pairs, with Ray.

    python -m pipelines.optimize

The pairs are the ``evaluate`` stage's (:func:`stylecore.heldout.select_heldout`, same protocol, same seed, the
``test`` half): the first ``optimize.contents`` of its contents × every one of its styles, at its size, so that
``evaluate`` scores the outputs beside the trained models on the very same pairs. Every method of the profile
(``optimize.profiles.<profile>``: method → settings) runs in one Ray Data pipeline
(:func:`pipelines.optimize_dataset.optimize_with_methods`: exactly-once commits, resume after a crash), each
pair on its own, into ``reports/optimized/<method>/<content key>/<style key>.png`` with its manifest.

One MLflow run ``optimize``: each method's settings and encoder, the mean objective at the first and the last
step and the seconds per pair, a table of every pair's final terms (``pairs.json``) and a sample grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, active_profile, load_params, profile_shards
from pipelines.stage import run_stage
from pipelines.stylize_inputs import StylizeError
from stylecore.io import atomic_write_text

#: settings the stage owns: the output size is the evaluation's, the device each actor's
STAGE_SETTINGS = ("size", "device")


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's ``optimize`` section checked: the actors, and the active profile's ``contents`` (the first N of
    the evaluation's contents; null: all) and ``methods`` (method → settings; each method's encoder weights default
    to the profile's ``train.profiles.<profile>.weights``)."""
    from pipelines.settings import read
    from stylecore.config import integer, to_dict
    from stylecore.optimize import METHODS

    settings = to_dict(read(params, "optimize"))
    profile = active_profile(params)
    entry = settings.pop("profiles").get(profile)
    where = f"params.yaml: optimize.profiles.{profile}"
    if not isinstance(entry, Mapping) or set(entry) != {"contents", "methods"}:
        raise CatalogueError(f"{where}: expected {{contents: N or null, methods: {{strotss: {{steps: 200}}, …}}}}; "
                             f"got {entry!r}")
    if entry["contents"] is not None and not integer(1).check(entry["contents"]):
        raise CatalogueError(f"{where}.contents: expected an integer ≥ 1 or null (all); got {entry['contents']!r}")
    if not isinstance(entry["methods"], Mapping):
        raise CatalogueError(f"{where}.methods: expected a mapping of method → settings; got {entry['methods']!r}")
    weights = _profile_weights(params)  # offline (demo): the same seeded random encoders as training, said so
    chosen = {}
    for name, values in entry["methods"].items():
        if name not in METHODS.names():
            raise CatalogueError(f"{where}.methods: {name!r} is not an optimisation method (known: "
                                 f"{', '.join(METHODS.names())})")
        if values is not None and not isinstance(values, Mapping):
            raise CatalogueError(f"{where}.methods.{name}: expected a mapping of settings; got {values!r}")
        values = dict(values or {})
        owned = sorted(key for key in values if key in STAGE_SETTINGS)
        if owned:
            raise CatalogueError(f"{where}.methods.{name}: {', '.join(owned)} is set by the stage (the output size "
                                 "is evaluate's protocol size; each actor uses its GPU or the CPU); remove it")
        chosen[name] = {"encoder_weights": weights, **values}
    return {**settings, "contents": entry["contents"], "methods": chosen}


def _profile_weights(params: Mapping[str, Any]) -> str:
    from stylecore.config import subsection

    profile = subsection(params, "train", "profiles").get(active_profile(params)) or {}
    return str(profile.get("weights") or "imagenet")


def heldout_subset(params: Mapping[str, Any], shards_root: Path, contents: int | None):
    """The evaluation's held-out pairs (its protocol, seed and ``test`` part) and the subset this stage optimises:
    the first ``contents`` contents (None: all) × every style."""
    from pipelines.evaluate import settings_of as evaluate_settings
    from stylecore.heldout import HeldOutPairs, select_heldout

    protocol = evaluate_settings(params)
    shards = profile_shards(params, shards_root, "val")
    try:
        pairs = select_heldout(shards["content"], shards["style"], contents=protocol["contents"],
                               styles_per_label=protocol["styles_per_label"], styles=protocol["styles"],
                               size=protocol["size"], seed=protocol["seed"], style_label=protocol["style_label"],
                               part="test")
    except (FileNotFoundError, ValueError) as error:
        raise StylizeError(f"the evaluation's held-out pairs from the validation shards: {error}") from None
    kept = len(pairs.content_keys) if contents is None else min(contents, len(pairs.content_keys))
    subset = HeldOutPairs(pairs.contents[:kept], pairs.content_keys[:kept], pairs.styles, pairs.style_keys,
                          pairs.style_labels, pairs.style_artists)
    return protocol, subset


def optimized_outputs(folder: Path, pairs, size: int):
    """The method's outputs in ``folder`` for every pair of ``pairs`` (style-major, as :class:`HeldOutPairs` orders
    them), each cut to the evaluated ``size`` square as the held-out images are; raises ``FileNotFoundError``
    naming the first pair without one."""
    import torch

    from stylecore.data import load_image
    from stylecore.heldout import center_square

    manifest = json.loads((folder / "manifest.json").read_text())
    files = {item["key"]: item["file"] for item in manifest["outputs"]}
    images = []
    for style in pairs.style_keys:
        for content in pairs.content_keys:
            key = f"{content}/{style}"
            if key not in files:
                raise FileNotFoundError(f"{folder}: no output for content {content!r} × style {style!r}; run "
                                        "`dvc repro optimize`")
            images.append(center_square(load_image(folder / files[key]), size))
    return torch.stack(images)


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        reports: Path = Path("reports")) -> dict[str, Any]:
    """Optimise the evaluation's pairs with every method of the profile into ``reports/optimized/``."""
    import ray

    from pipelines.optimize_dataset import optimize_with_methods
    from pipelines.ray_session import ray_session
    from pipelines.storage import worker_shards

    params = load_params(params_path)
    settings = settings_of(params)
    started, began = time.perf_counter(), time.time()
    protocol, pairs = heldout_subset(params, shards_root, settings["contents"])
    size = protocol["size"]
    root = reports / "optimized"
    methods = {name: ({**values, "size": size}, root / name) for name, values in settings["methods"].items()}
    if not methods:
        print(f"optimize: no method in optimize.profiles.{active_profile(params)}; nothing to do", flush=True)
        atomic_write_text(root / "summary.json", json.dumps({"methods": {}}, indent=2) + "\n")
        return {}
    shards = worker_shards(params, profile_shards(params, shards_root, "val"))
    print(f"optimize: {', '.join(methods)} on {len(pairs)} of the evaluation's pairs ({len(pairs.content_keys)} "
          f"contents × {len(pairs.style_keys)} styles) at {size} px", flush=True)
    with ray_session():
        gpus, actors = settings["gpus_per_actor"], settings["actors"]
        if gpus == "auto":  # GPUs whenever there are any: the actors capped at them
            available = int(ray.cluster_resources().get("GPU", 0))
            gpus, actors = (1.0, min(actors, available)) if available else (0.0, actors)
        manifests = optimize_with_methods(
            shards["content"], shards["style"], methods, policy="all", size=size, style_size=size, actors=actors,
            gpus_per_actor=float(gpus), output_format="files", image_format="png", progress=False,
            input_keys=pairs.content_keys, style_keys=pairs.style_keys)
    summary = {name: summarise(manifest) for name, manifest in zip(methods, manifests)}
    # which pairs: evaluate checks they are still its own before it scores the outputs
    covered = {"contents": pairs.content_keys, "styles": pairs.style_keys, "size": size}
    atomic_write_text(root / "summary.json", json.dumps({"pairs": covered, "methods": summary}, indent=2) + "\n")
    for name, row in summary.items():
        print(f"optimize: {name}: {row['written']} pairs, objective {row['first_total_mean']:.4g} → "
              f"{row['last_total_mean']:.4g} (mean over pairs), {row['seconds_per_pair']:.1f} s per pair",
              flush=True)
    log_to_mlflow(params, params_path.resolve().parent, settings, summary, manifests, pairs, root, size, began)
    print(f"optimize: done in {time.perf_counter() - started:.1f} s; {root}", flush=True)
    return summary


def summarise(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A method's manifest → pairs written and rejected, the mean objective at the first and last step, seconds per
    pair, and what ran (settings, encoder)."""
    outputs = manifest["outputs"]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    return {"written": len(outputs), "rejected": len(manifest["rejected"]),
            "first_total_mean": mean([o["losses"]["first"].get("total", float("nan")) for o in outputs]),
            "last_total_mean": mean([o["losses"]["last"].get("total", float("nan")) for o in outputs]),
            "seconds_per_pair": mean([o["seconds"] for o in outputs]),
            "method": manifest["method"]}


def log_to_mlflow(params, root: Path, settings, summary, manifests, pairs, folder: Path, size: int,
                  began: float) -> None:
    """One ``optimize`` run: settings, per-method means, every pair's final terms as a table, a sample grid."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipelines import evaluation_report as report
    from pipelines.provenance import source_tags
    from pipelines.tracking import DESCRIPTION, start_run, tracking_settings

    tracking = tracking_settings(params, root)
    client = MlflowClient(tracking.uri)
    encoders = {name: row["method"]["encoder"] for name, row in summary.items()}
    run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, "optimize",
                       {"optimize": {name: row["method"]["settings"] for name, row in summary.items()},
                        "pairs": {"contents": len(pairs.content_keys), "styles": len(pairs.style_keys), "size": size}},
                       {"stage": "optimize", "profile": str(params.get("profile")),
                        **{f"encoder.{name}": f"{e.get('arch')} {e.get('weights')} (pretrained: {e.get('pretrained')})"
                           for name, e in encoders.items()},
                        DESCRIPTION: "Optimisation-based stylization (" + ", ".join(summary) + ") of the evaluation's "
                                     f"held-out pairs: {len(pairs)} pairs at {size} px",
                        **source_tags(root, "optimize")}, start_time=began)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{name}/{key}", float(row[key]), now, 0) for name, row in summary.items()
                                      for key in ("written", "rejected", "first_total_mean", "last_total_mean",
                                                  "seconds_per_pair")])
    rows = [(name, item) for name, manifest in zip(summary, manifests) for item in manifest["outputs"]]
    terms = sorted({term for _, item in rows for term in item["losses"]["last"]})
    client.log_table(run_id, {"method": [name for name, _ in rows], "content": [item["source"] for _, item in rows],
                              "style": [item["style"] for _, item in rows],
                              "seconds": [item["seconds"] for _, item in rows],
                              "first_total": [item["losses"]["first"].get("total") for _, item in rows],
                              **{f"last_{term}": [item["losses"]["last"].get(term) for _, item in rows]
                                 for term in terms}}, "pairs.json")
    picked = report.comparison_pairs(pairs, min(4, len(pairs)))
    outputs = {name: optimized_outputs(folder / name, pairs, size)[picked] for name in summary}
    client.log_image(run_id, report.comparison_image(pairs, outputs, picked), artifact_file="samples.jpg")
    for name in summary:
        client.log_artifact(run_id, str(folder / name / "manifest.json"), name)
    client.set_terminated(run_id, "FINISHED")
    print(f"optimize: MLflow run {run_id} in {tracking.experiment!r} (pairs.json, samples.jpg)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    return run_stage("optimize", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                             reports=Path(args.reports)), (CatalogueError, StylizeError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
