"""What the `evaluate` stage concludes from its scores: per-candidate tables, the paired comparisons of
gram vs balanced_gram with bootstrap intervals, the summary people read, and the comparison image.

A comparison claims "lower" / "higher" only when its bootstrap interval excludes zero
(:mod:`stylecore.metrics.statistics`); otherwise it says "no difference". Every number taken with a random
backbone is labelled **uncalibrated**.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from stylecore.metrics import spread_ratio
from stylecore.metrics.field import FEATURES, pack_set_inputs, set_scores, set_statistics
from stylecore.metrics.paper import spread_ratios
from stylecore.metrics.statistics import Comparison, batched, compare, compare_many

#: per-candidate columns of the two tables: the seed paper's and the field's
PAPER_COLUMNS = ("content", "style_classic", "style_balanced", "mean_std", "ssim", "style_spread")
FIELD_COLUMNS = ("artfid", "fid", "lpips", "lpips_gray", "cfsd", "histogram")
#: the deception rate's readings (:mod:`stylecore.metrics.deception`); NaN pairs (unseen artists) are left out
DECEPTION_COLUMNS = ("deception_knn", "deception_top1", "deception_top5")
#: measured with trained weights even offline (stylecore.metrics.style_embedding)
PRETRAINED_COLUMNS = ("style_embedding",)
#: what each compared metric is, and which direction is better
COMPARED = {"style_classic": ("classic style loss (Table 5)", "lower"),
            "style_balanced": ("balanced style loss", "lower"),
            "content": ("content loss", "lower"),
            "style_spread": ("per-style spread of the classic loss", "lower"),
            "artfid": ("ArtFID", "lower"), "fid": ("FID to the styles", "lower"),
            "lpips": ("LPIPS to the content", "lower"), "cfsd": ("CFSD", "lower"),
            "histogram": ("colour-histogram distance to the style", "lower"),
            "deception_knn": ("deception rate, nearest style image (Table 6)", "higher"),
            "deception_top1": ("deception rate, classifier top-1", "higher"),
            "style_embedding": ("style distance in Magenta's style embedding (pretrained)", "lower")}


@dataclass
class CandidateScores:
    """One candidate's per-pair values (style-major) and its outputs' Inception features (None without the
    field metrics)."""

    values: dict[str, torch.Tensor]
    features: torch.Tensor | None


def split_scores(values: Mapping[str, torch.Tensor]) -> CandidateScores:
    scalars = {name: v for name, v in values.items() if name != FEATURES}
    return CandidateScores(scalars, values.get(FEATURES))


def scores_at(scores: Mapping[str, CandidateScores], indices: list[int]) -> dict[str, CandidateScores]:
    """Every candidate's scores on a subset of the pairs (``indices`` into the style-major order,
    :meth:`stylecore.heldout.HeldOutPairs.subset`)."""
    return {name: CandidateScores({metric: values[indices] for metric, values in found.values.items()},
                                  None if found.features is None else found.features[indices])
            for name, found in scores.items()}


def _mean(name: str, values: torch.Tensor) -> float:
    """A metric's mean over pairs; the deception readings leave out their NaN pairs (artists the classifier never saw)."""
    return float(values.double().nanmean() if name in DECEPTION_COLUMNS else values.double().mean())


def per_style_means(values: torch.Tensor, contents: int) -> torch.Tensor:
    """(styles,) means of style-major per-pair values."""
    return values.double().view(-1, contents).mean(1)


def summarise(scores: CandidateScores, pairs, percentiles: list[float], reference_features: torch.Tensor | None,
              fid: str = "plain") -> tuple[dict[str, float], list[dict]]:
    """Means over all pairs, the classic-loss spread (with two styles or more) and the set scores (FID, ArtFID); one
    row of means per style."""
    contents = len(pairs.content_keys)
    rows = []
    for index, key in enumerate(pairs.style_keys):
        window = slice(index * contents, (index + 1) * contents)  # pairs are style-major
        rows.append({"style": key, "label": pairs.style_labels[index] if pairs.style_labels else "",
                     **{name: _mean(name, v[window]) for name, v in scores.values.items()}})
    totals = {name: _mean(name, v) for name, v in scores.values.items()}
    high, low = percentiles
    if len(rows) > 1:  # a spread needs two styles; a GAN's domain may hold one held-out artwork (then: left out)
        totals["style_spread"] = spread_ratio([row["style_classic"] for row in rows], high=high, low=low)
    if scores.features is not None and reference_features is not None:
        totals.update(set_scores(scores.values["lpips"], scores.features, reference_features, fid))
    return totals, rows


def compare_losses(scored: Mapping[str, CandidateScores], models: list[str], pairs, settings: Mapping[str, Any],
                   reference_features: torch.Tensor | None) -> dict[str, dict[str, Comparison]]:
    """Per model trained with both gram and balanced_gram: every compared metric, balanced − gram, with a paired
    bootstrap interval (over pairs; over styles for the spread; ``fid_resamples`` for FID and ArtFID)."""
    boot = settings["bootstrap"]
    high, low = settings["spread_percentiles"]
    contents = len(pairs.content_keys)
    results: dict[str, dict[str, Comparison]] = {}
    for model in models:
        gram, balanced = scored.get(f"{model}-gram"), scored.get(f"{model}-balanced_gram")
        if gram is None or balanced is None:
            continue
        options = dict(confidence=boot["confidence"], seed=settings["seed"], min_effect=boot["min_effect"])
        found = {}
        for metric in ("style_classic", "style_balanced", "content", "lpips", "cfsd", "histogram", "style_embedding"):
            if metric in gram.values:
                found[metric] = compare(gram.values[metric], balanced.values[metric], resamples=boot["resamples"],
                                        **options)
        for metric in ("deception_knn", "deception_top1"):  # over the pairs whose style's artist the judge knows
            if metric in gram.values:
                known = gram.values[metric].isfinite() & balanced.values[metric].isfinite()
                if bool(known.any()):
                    found[metric] = compare(gram.values[metric][known], balanced.values[metric][known],
                                            resamples=boot["resamples"], **options)
        spread = batched(lambda means, idx: spread_ratios(means[idx], high=high, low=low))
        found["style_spread"] = compare(per_style_means(gram.values["style_classic"], contents),
                                        per_style_means(balanced.values["style_classic"], contents), spread,
                                        resamples=boot["resamples"], **options)
        if gram.features is not None and reference_features is not None:
            before, after = (pack_set_inputs(s.values["lpips"], s.features, reference_features)
                             for s in (gram, balanced))
            found.update(compare_many(before, after, set_statistics(settings["fid"]), resamples=boot["fid_resamples"],
                                      **options))
        results[model] = found
    return results


def _interval(c: Comparison) -> str:
    relative = (f" ({c.relative * 100:+.1f} %, {c.relative_low * 100:+.1f} … {c.relative_high * 100:+.1f} %)"
                if c.relative == c.relative else "")
    return f"{c.before:.4g} → {c.after:.4g}{relative}"


def summary_markdown(table: Mapping[str, Mapping[str, float]], comparisons: Mapping[str, Mapping[str, Comparison]],
                     candidate_names: list[str], settings: Mapping[str, Any], pair_count: int,
                     backbones: Mapping[str, Any], calibrated: bool, notes: list[str],
                     calibrations: Mapping[str, Mapping[str, float]] | None = None,
                     trained_on: Mapping[str, list[str]] | None = None,
                     optimisation: Mapping[str, Any] | None = None,
                     translation: Mapping[str, Any] | None = None) -> str:
    """The Table 5 comparison and the field's metrics, each comparison with its interval and verdict;
    ``trained_on``: the encoder each candidate's training objective read → those candidates; ``optimisation``:
    the optimisation methods beside every candidate on the pairs they cover (:func:`optimisation_title`);
    ``translation``: each GAN run on its domain's artworks beside every candidate (:func:`translation_title`)."""
    high, low = settings["spread_percentiles"]
    confidence = settings["bootstrap"]["confidence"]
    paper = backbones.get("paper", {})
    lines = ["# Evaluation summary", "",
             f"Protocol **{settings['protocol']}**: {pair_count} held-out content × style pairs "
             f"({settings['contents']} contents × {pair_count // max(settings['contents'], 1)} styles) at "
             f"{settings['size']} px, paired by sample key.", ""]
    if not calibrated:
        lines += ["**Uncalibrated: some backbones are random (offline run); these numbers prove the pipeline, "
                  "not the science, and compare with nothing outside this run.**", ""]
    lines += ["Backbones:", "",
              f"- seed-paper metrics (content, Gram, balanced, mean/std): "
              f"{'VGG-16' if paper.get('arch') == 'vgg16' else paper.get('network', paper.get('arch'))}, weights "
              f"{paper.get('weights')} (pretrained: {paper.get('pretrained')})"]
    if "style_embedding" in backbones:
        part = backbones["style_embedding"]
        lines.append(f"- style_embedding: {part.get('network')}, weights {part.get('weights')} (pretrained: "
                     f"{part.get('pretrained')}): trained weights even offline, so the one style measure here that "
                     "is calibrated when the VGG metrics are not")
    for name in ("fid", "lpips", "cfsd"):
        if name in backbones:
            part = backbones[name]
            lines.append(f"- {name}: {part.get('network')}, weights {part.get('weights')} "
                         f"(pretrained: {part.get('pretrained')})"
                         + (f", resize {part.get('resize')}" if name == "fid" else ""))
    if trained_on:
        lines += ["", "Training objectives read (the loss encoder, `loss_encoder`):", ""]
        lines += [f"- {encoder}: {', '.join(names)}" for encoder, names in trained_on.items()]
    lines += ["", f"Comparisons are balanced_gram − gram on the same pairs, with a paired bootstrap "
                  f"{confidence * 100:g} % interval ({settings['bootstrap']['resamples']} resamples; "
                  f"{settings['bootstrap']['fid_resamples']} for FID and ArtFID; styles for the spread, "
                  f"p{high:g}/p{low:g} of the per-style means of the classic loss). A change is claimed only when "
                  f"its interval excludes zero and it is at least {settings['bootstrap']['min_effect'] * 100:g} % of "
                  "the gram value; otherwise: no difference.", ""]
    lines += [f"| model | metric | gram → balanced_gram (relative, {confidence * 100:g} % interval) | "
              "difference interval | verdict |", "|---|---|---|---|---|"]
    verdicts: dict[str, list[str]] = {}
    for model, found in comparisons.items():
        for metric, comparison in found.items():
            label, _ = COMPARED[metric]
            verdicts.setdefault(metric, []).append(comparison.verdict)
            lines.append(f"| {model} | {label} | {_interval(comparison)} | "
                         f"[{comparison.low:.3g}, {comparison.high:.3g}] | {comparison.verdict} |")
    if comparisons:
        count = len(comparisons)
        lowered = verdicts.get("style_classic", []).count("lower")
        narrowed = verdicts.get("style_spread", []).count("lower")
        lines += ["", f"Balanced training lowered the classic style loss for {lowered} of {count} models and "
                      f"narrowed the per-style spread for {narrowed} of {count}."]
        if "artfid" in verdicts:
            lines.append(f"ArtFID: lower for {verdicts['artfid'].count('lower')} of {count}, higher for "
                         f"{verdicts['artfid'].count('higher')}.")
    else:
        lines += ["", "No model was trained with both gram and balanced_gram (params.yaml: train.grid.losses); "
                      "nothing to compare."]
    lines += deception_table(comparisons, backbones.get("deception"))
    if calibrations:
        lines += ["", "Balanced style weights, calibrated per model (train.losses.balanced_gram.calibrate_batches): at "
                      "initialisation the balanced style term is as large relative to the content term as the gram "
                      "cell's, so each row compares losses, not weights.", "",
                  "| model | gram style weight | balanced style weight | style/content at init: gram | balanced |",
                  "|---|---|---|---|---|"]
        for model, c in calibrations.items():
            lines.append(f"| {model} | {c['classic_weight']:.4g} | {c['weight']:.4g} | {c['classic_ratio']:.4g} | "
                         f"{c['balanced_ratio']:.4g} |")
    lines += [""] + [f"Note: {note}" for note in notes] + ([""] if notes else [])
    lines += ["reports/comparison.jpg: rows are content/style pairs; columns content, style, then "
              + ", ".join(f"{i} {name}" for i, name in enumerate(candidate_names, 1)) + ".", ""]
    lines += _table("The seed paper's metrics (mean over pairs)", table, PAPER_COLUMNS)
    if any("artfid" in row for row in table.values()):
        lines += _table("The field's metrics (ArtFID = (1 + LPIPS)·(1 + FID); FID over all pairs)", table,
                        FIELD_COLUMNS)
    if any("deception_knn" in row for row in table.values()):
        lines += _table("Deception rates (share of outputs the artist classifier attributes to the style's artist)",
                        table, DECEPTION_COLUMNS)
    if any("style_embedding" in row for row in table.values()):
        lines += _table("Style distance in Magenta's style embedding, 1 − cos(P(output), P(style)) (pretrained "
                        "weights: calibrated offline too)", table, PRETRAINED_COLUMNS)
    if optimisation:
        lines += _table(optimisation_title(optimisation), optimisation["table"],
                        side_table_columns(optimisation["table"]))
        lines += ["Encoders of the optimisation methods: " + "; ".join(
            f"{name} {method['encoder'].get('arch')} {method['encoder'].get('weights')} (pretrained: "
            f"{method['encoder'].get('pretrained')})" for name, method in optimisation["methods"].items()), ""]
    for entry in (translation or {}).get("tables", []):
        lines += _table(translation_title(entry), entry["table"], side_table_columns(entry["table"]))
    return "\n".join(lines)


def side_table_columns(table: Mapping[str, Mapping[str, float]]) -> tuple[str, ...]:
    """The columns of a table on a subset of the pairs: the seed paper's, and the field's that were measured."""
    return PAPER_COLUMNS + tuple(c for c in ("artfid", "lpips", "style_embedding")
                                 if any(c in row for row in table.values()))


def translation_title(entry: Mapping[str, Any]) -> str:
    """The heading of a GAN run's table: which domain, on which pairs."""
    return (f"GAN {entry['candidate']}: photo → {entry['domain']} vs the arbitrary-style models, on the "
            f"{entry['pairs']} pairs whose style image is {entry['domain']} ({entry['contents']} contents × "
            f"{entry['styles']} styles; the GAN translates each content to the domain without reading the style image)")


def optimisation_title(optimisation: Mapping[str, Any]) -> str:
    """The heading of the optimisation-vs-feed-forward table: which pairs it is on."""
    return (f"Optimisation ({', '.join(optimisation['methods'])}) vs feed-forward, on the same {optimisation['pairs']} "
            f"pairs ({len(optimisation['contents'])} contents × {optimisation['styles']} styles; the optimize stage "
            "covers these)")


def table6_rows(comparisons: Mapping[str, Mapping[str, Comparison]], metric: str = "deception_knn") -> list[list[str]]:
    """The seed paper's Table 6 layout per model: classic (gram) rate, balanced rate, Imp. (absolute, points) and
    RImp. (relative), each change with its interval, and the verdict."""
    rows = []
    for model, found in comparisons.items():
        c = found.get(metric)
        if c is None:
            continue
        c = c if isinstance(c, Comparison) else Comparison(**{k: v for k, v in c.items() if k != "verdict"})
        relative = (f"{c.relative * 100:+.0f} % [{c.relative_low * 100:+.0f}, {c.relative_high * 100:+.0f}]"
                    if c.relative == c.relative else "– (gram rate 0)")
        rows.append([model, f"{c.before * 100:.2f} %", f"{c.after * 100:.2f} %",
                     f"{c.difference * 100:+.2f} [{c.low * 100:+.2f}, {c.high * 100:+.2f}]", relative, c.verdict])
    return rows


def deception_table(comparisons: Mapping[str, Mapping[str, Comparison]], judge: Mapping[str, Any] | None) -> list[str]:
    """Table 6 as markdown, with the classifier that judged it (or why there is none)."""
    rows = table6_rows(comparisons)
    if judge is None:
        return ["", "Deception rate (Table 6): no artist classifier was given (`dvc repro classifier`)."]
    lines = ["", f"Deception rate (Table 6, the seed paper's nearest-style-image variant), judged by the "
                 f"{judge.get('classifier')}; gallery: {judge.get('gallery')}"
                 + ("" if judge.get("pretrained") == "true" else " — uncalibrated") + ".", ""]
    if not rows:
        return lines + ["No model was trained with both losses; nothing to compare."]
    lines += ["| model | classic loss | balanced loss | Imp. (points, interval) | RImp. (interval) | verdict |",
              "|---|---|---|---|---|---|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _table(title: str, table: Mapping[str, Mapping[str, float]], columns: tuple[str, ...]) -> list[str]:
    lines = [f"{title}:", "", "| candidate | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4g}" if k in row else "–" for k in columns) + " |")
    return lines + [""]


def comparison_pairs(pairs, rows: int) -> list[int]:
    """The pair indices (style-major) of the comparison image's rows: ``rows`` pairs spread over the
    contents and styles."""
    styles, contents = len(pairs.style_keys), len(pairs.content_keys)
    picks = [(r % contents, (r * styles) // min(rows, styles * contents) % styles) for r in range(min(rows, len(pairs)))]
    return [style_index * contents + content_index for content_index, style_index in picks]


def comparison_image(pairs, outputs: Mapping[str, Any], picked: list[int]):
    """A grid image: one row per picked pair (content | style | each candidate's output), names on top;
    ``outputs[name][row]`` is candidate ``name``'s output for pair ``picked[row]``."""
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
