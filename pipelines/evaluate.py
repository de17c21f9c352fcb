"""DVC stage `evaluate`: every trained model × loss (and each sweep's best) scored on held-out pairs.

    python -m pipelines.evaluate

The pairs are the ``test`` half of the profile's validation shards (:mod:`stylecore.heldout`; no
training run reads them, and sweeps validate on the other half), every content × every style. The scores are the seed paper's (:mod:`stylecore.metrics`): content loss,
the classic and the balanced Gram style losses, the mean/std distance, SSIM to the content, and the
per-style spread of the classic style loss (percentile ratio over the styles' mean losses).

Writes, under ``reports/``:

- ``metrics.json``: one entry per candidate (``adain-gram``, ``adain-gram.sweep``, …), a DVC metric;
- ``per_style/<candidate>.csv``: each style's mean scores, DVC plots;
- ``comparison.jpg``: rows are content/style pairs, columns content, style and each candidate;
- ``summary.md``: per model, whether balanced training lowered the classic style loss and narrowed
  the spread, in numbers;
- ``evaluation.json``: the candidates' checkpoints and MLflow runs (the ``register`` stage reads it).

Everything is also logged to MLflow: one ``evaluate`` run with the tables and images, and each
candidate's own training run gets its scores as ``eval/<metric>``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, load_params, profile_shards
from pipelines.stage import run_stage
from stylecore.io import atomic_write_bytes, atomic_write_text

class EvaluateStageError(RuntimeError):
    """Missing checkpoints or held-out data; the message names the stage or setting to fix."""


@dataclass
class Candidate:
    """One trained model to score: a grid cell's training result, or its sweep's best trial."""

    name: str  # adain-gram, or adain-gram.sweep
    model: str
    loss: str
    source: str  # train | sweep
    checkpoint: str
    mlflow: dict[str, Any]  # tracking_uri, run_id (from the checkpoint's mlflow.json), when tracked


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's ``evaluate`` section, checked (:class:`pipelines.settings.EvaluateSettings`), with the metric
    encoder's weights resolved (:func:`pipelines.settings.metric_weights`); the record the summary keeps."""
    from pipelines.settings import metric_weights, read
    from stylecore.config import to_dict

    evaluate = read(params, "evaluate")
    return {**to_dict(evaluate), "weights": metric_weights(params, evaluate)}


def find_candidates(params: Mapping[str, Any], models_root: Path) -> list[Candidate]:
    """Every grid cell's trained checkpoint (required) and its sweep's best (when the sweep ran)."""
    grid = ((params.get("train") or {}).get("grid")) or {}
    found, missing = [], []
    for model in grid.get("models", []):
        for loss in grid.get("losses", []):
            for source, folder, name in (("train", models_root / f"{model}-{loss}", f"{model}-{loss}"),
                                         ("sweep", models_root / "sweeps" / f"{model}-{loss}", f"{model}-{loss}.sweep")):
                checkpoint = folder / "checkpoint"
                if not (checkpoint / "config.json").is_file():
                    if source == "train":
                        missing.append(f"train@{model}-{loss}")
                    continue
                tracking = checkpoint / "mlflow.json"
                found.append(Candidate(name, model, loss, source, str(checkpoint),
                                       json.loads(tracking.read_text()) if tracking.is_file() else {}))
    if missing:
        raise EvaluateStageError(f"no trained checkpoint for {', '.join(missing)} under {models_root}; "
                                 f"run `dvc repro {missing[0]}` (or all of `dvc repro train`) first")
    if not found:
        raise EvaluateStageError("params.yaml: train.grid is empty; there is nothing to evaluate")
    return found


def summarise(values: Mapping[str, Any], pairs, percentiles: list[float]) -> tuple[dict[str, float], list[dict]]:
    """Means over all pairs plus the classic-loss spread; and one row of means per style."""
    from stylecore.metrics import spread_ratio

    contents = len(pairs.content_keys)
    rows = []
    for index, key in enumerate(pairs.style_keys):
        window = slice(index * contents, (index + 1) * contents)  # pairs are style-major
        rows.append({"style": key, "label": pairs.style_labels[index] if pairs.style_labels else "",
                     **{name: float(v[window].mean()) for name, v in values.items()}})
    totals = {name: float(v.mean()) for name, v in values.items()}
    high, low = percentiles
    totals["style_spread"] = spread_ratio([row["style_classic"] for row in rows], high=high, low=low)
    return totals, rows


def comparison_pairs(pairs, rows: int) -> list[int]:
    """The pair indices (style-major) of the comparison image's rows: ``rows`` pairs spread over the
    contents and styles."""
    styles, contents = len(pairs.style_keys), len(pairs.content_keys)
    picks = [(r % contents, (r * styles) // min(rows, styles * contents) % styles) for r in range(min(rows, len(pairs)))]
    return [style_index * contents + content_index for content_index, style_index in picks]


def comparison_image(pairs, outputs: Mapping[str, Any], picked: list[int]):
    """A grid image: one row per picked pair (content | style | each candidate's output), names on top;
    ``outputs[name][row]`` is candidate ``name``'s output for pair ``picked[row]``."""
    import torch
    import torchvision
    from PIL import Image, ImageDraw

    contents = len(pairs.content_keys)
    tiles = []
    for row, pair in enumerate(picked):
        tiles += [pairs.contents[pair % contents], pairs.styles[pair // contents]] + [out[row] for out in outputs.values()]
    columns = 2 + len(outputs)
    grid = torchvision.utils.make_grid(torch.stack(tiles), nrow=columns, padding=2, pad_value=1.0)
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    header = 14
    canvas = Image.new("RGB", (image.width, image.height + header), "white")
    canvas.paste(image, (0, header))
    draw = ImageDraw.Draw(canvas)
    cell = image.width / columns
    for column, label in enumerate(["content", "style", *outputs]):
        if len(label) * 6 > cell - 4:  # too narrow for the name: the column's number (summary.md has the legend)
            label = "content" if column == 0 else "style" if column == 1 else str(column - 1)
            label = label if len(label) * 6 <= cell - 4 else label[0]
        draw.text((column * cell + 3, 2), label, fill="black")
    return canvas


def summary_markdown(table: Mapping[str, Mapping[str, float]], candidates: list[Candidate], settings: Mapping[str, Any],
                     pair_count: int, weights: Mapping[str, str]) -> str:
    """States per model whether balanced training lowered the classic style loss and narrowed the spread."""
    high, low = settings["spread_percentiles"]
    lines = ["# Evaluation summary", "",
             f"{pair_count} held-out content × style pairs at {settings['size']} px; metric encoder VGG-16 with "
             f"{weights.get('weights', settings['weights'])} weights.",
             f"Classic style loss: Gram MSE over relu1_2…relu4_3 (the seed paper's Table 5, left column); "
             f"spread: p{high:g}/p{low:g} of the per-style means of the classic loss (1 = every style alike).", ""]
    if str(weights.get("weights", "")).startswith("random"):
        lines += ["**Random encoder weights (offline demo): these numbers prove the pipeline, not the science.**", ""]
    lines += ["| model | classic style loss: gram → balanced_gram | lowered? | spread: gram → balanced_gram | narrowed? |",
              "|---|---|---|---|---|"]
    lowered = narrowed = compared = 0
    for model in dict.fromkeys(c.model for c in candidates):
        gram, balanced = table.get(f"{model}-gram"), table.get(f"{model}-balanced_gram")
        if gram is None or balanced is None:
            continue
        compared += 1
        change = (balanced["style_classic"] - gram["style_classic"]) / gram["style_classic"] * 100
        is_lower = balanced["style_classic"] < gram["style_classic"]
        is_narrower = balanced["style_spread"] < gram["style_spread"]
        lowered += is_lower
        narrowed += is_narrower
        lines.append(f"| {model} | {gram['style_classic']:.4g} → {balanced['style_classic']:.4g} ({change:+.1f} %) | "
                     f"{'yes' if is_lower else 'no'} | {gram['style_spread']:.4g} → {balanced['style_spread']:.4g} | "
                     f"{'yes' if is_narrower else 'no'} |")
    if compared:
        lines += ["", f"Balanced training lowered the classic style loss for {lowered} of {compared} models and "
                      f"narrowed the per-style spread for {narrowed} of {compared}."]
    else:
        lines += ["", "No model was trained with both gram and balanced_gram (params.yaml: train.grid.losses); "
                      "nothing to compare."]
    lines += ["", "reports/comparison.jpg: rows are content/style pairs; columns content, style, then "
              + ", ".join(f"{i} {c.name}" for i, c in enumerate(candidates, 1)) + "."]
    lines += ["", "All candidates (mean over pairs):", "",
              "| candidate | content | style_classic | style_balanced | mean_std | ssim | style_spread |",
              "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4g}" for k in
                                                 ("content", "style_classic", "style_balanced", "mean_std", "ssim",
                                                  "style_spread")) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), reports: Path = Path("reports")) -> dict[str, dict[str, float]]:
    import torch

    import stylecore
    from pipelines.provenance import source_tags
    from stylecore.heldout import score_models, select_heldout
    from stylecore.metrics import StylizationMetrics

    root = params_path.resolve().parent
    params = load_params(params_path)
    settings = settings_of(params)
    candidates = find_candidates(params, models_root)
    shards = profile_shards(params, shards_root, "val")
    started = time.perf_counter()
    try:
        pairs = select_heldout(shards["content"], shards["style"], contents=settings["contents"],
                               styles_per_label=settings["styles_per_label"], size=settings["size"],
                               seed=settings["seed"], style_label=settings["style_label"], part="test")
    except (FileNotFoundError, ValueError) as error:
        raise EvaluateStageError(f"held-out pairs from the validation shards: {error}") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metrics = StylizationMetrics(settings["weights"]).to(device)
    print(f"evaluate: {len(candidates)} candidates × {len(pairs)} pairs ({len(pairs.content_keys)} contents × "
          f"{len(pairs.style_keys)} styles) at {settings['size']} px on {device}; metric encoder {metrics.describe()}",
          flush=True)

    # All candidates at once, batch by batch: the metric encoder sees each held-out image once per batch
    # for all of them, and only the comparison image's outputs are kept.
    models = {candidate.name: stylecore.load(candidate.checkpoint, device=device) for candidate in candidates}
    picked = comparison_pairs(pairs, settings["grid_pairs"])
    last_report = time.perf_counter()

    def progress(done: int, total: int) -> None:  # a line every 30 s: a full-profile evaluation takes a while
        nonlocal last_report
        if time.perf_counter() - last_report >= 30 and done < total:
            last_report = time.perf_counter()
            print(f"evaluate: {done} of {total} pairs scored by every candidate "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    scored = score_models(models, pairs, metrics, settings["batch_size"], device, keep_outputs=picked,
                          progress=progress)
    table: dict[str, dict[str, float]] = {}
    per_style: dict[str, list[dict]] = {}
    outputs = {}
    for candidate in candidates:
        values, outputs[candidate.name] = scored[candidate.name]
        table[candidate.name], per_style[candidate.name] = summarise(values, pairs, settings["spread_percentiles"])
        row = table[candidate.name]
        print(f"evaluate: {candidate.name:<28} content {row['content']:.4g}  classic {row['style_classic']:.4g}  "
              f"balanced {row['style_balanced']:.4g}  ssim {row['ssim']:.3f}  spread {row['style_spread']:.3g}", flush=True)

    reports.mkdir(parents=True, exist_ok=True)
    for name, rows in per_style.items():
        atomic_write_text(reports / "per_style" / f"{name}.csv", _csv_text(rows))
    image = comparison_image(pairs, outputs, picked)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    atomic_write_bytes(reports / "comparison.jpg", buffer.getvalue())
    summary = summary_markdown(table, candidates, settings, len(pairs), metrics.describe())
    atomic_write_text(reports / "summary.md", summary)
    details = {"settings": settings, "encoder": metrics.describe(), "pairs": {"contents": pairs.content_keys,
               "styles": pairs.style_keys, "labels": pairs.style_labels},
               "candidates": [{**asdict(c), "metrics": table[c.name]} for c in candidates]}
    atomic_write_text(reports / "evaluation.json", json.dumps(details, indent=2) + "\n")
    atomic_write_text(reports / "metrics.json", json.dumps(table, indent=2) + "\n")
    log_to_mlflow(params, root, table, candidates, reports, settings, image, source_tags(root, "evaluate"))
    print(f"evaluate: done in {time.perf_counter() - started:.1f} s; reports/metrics.json, reports/summary.md, "
          f"reports/comparison.jpg, reports/per_style/*.csv", flush=True)
    return table


def log_to_mlflow(params, root: Path, table, candidates: list[Candidate], reports: Path, settings, image,
                  git: Mapping[str, str]) -> None:
    """One `evaluate` run with every table and image; each candidate's own run gets its scores."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import flatten, start_run
    from pipelines.tracking import tracking_settings

    tracking = tracking_settings(params, root)
    client = MlflowClient(tracking.uri)
    run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, "evaluate",
                       {"evaluate": settings}, {"stage": "evaluate", "profile": str(params.get("profile")), **git})
    now = int(time.time() * 1000)
    metrics = [Metric(f"{name}/{key}", value, now, 0) for name, row in table.items() for key, value in row.items()]
    for start in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[start:start + 500])
    client.log_image(run_id, image, artifact_file="comparison.jpg")
    for artifact in ("summary.md", "metrics.json", "evaluation.json"):
        client.log_artifact(run_id, str(reports / artifact))
    client.log_artifacts(run_id, str(reports / "per_style"), "per_style")
    client.set_terminated(run_id, "FINISHED")
    for candidate in candidates:
        run = candidate.mlflow.get("run_id")
        if not run or candidate.mlflow.get("tracking_uri") != tracking.uri:
            continue  # trained against another store (or untracked): nothing to annotate there
        client.log_batch(run, metrics=[Metric(f"eval/{k}", float(v), now, 0) for k, v in flatten(table[candidate.name]).items()])
    print(f"evaluate: MLflow run {run_id} in {tracking.experiment!r}; eval/* metrics on each candidate's run", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    return run_stage("evaluate", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                             models_root=Path(args.models), reports=Path(args.reports)),
                     (CatalogueError, EvaluateStageError))


if __name__ == "__main__":
    sys.exit(main())
