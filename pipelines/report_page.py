"""reports/index.html: the evaluation as one page people read — self-contained (every image inside it as a
data URI, no script, no font or stylesheet fetched), so it opens offline and travels as one file.

It holds the protocol and backbones, the comparison grid, the seed paper's Table 5 comparison and the
field's metrics with their intervals and verdicts, the calibrated balanced weights, and three plots: per
model, the per-style classic loss of gram and balanced_gram side by side on one axis; the per-style
spread (IST) of every candidate; the training curves of every combination.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping

from pipelines.evaluation_report import (COMPARED, DECEPTION_COLUMNS, FIELD_COLUMNS, PAPER_COLUMNS, PRETRAINED_COLUMNS,
                                        optimisation_title, side_table_columns, table6_rows,
                                        translation_title)

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.lower{color:#17692c;font-weight:600}
.higher{color:#a1261b;font-weight:600}.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.6em 1em}
img{max-width:100%;border:1px solid #ddd}caption{text-align:left;font-weight:600;padding:.3em 0}"""


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def per_style_plot(per_style: Mapping[str, list[dict]], models: list[str]) -> str | None:
    """Per model: grouped bars of each style's mean classic loss, gram and balanced_gram on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [m for m in models if f"{m}-gram" in per_style and f"{m}-balanced_gram" in per_style]
    if not pairs:
        return None
    figure, axes = plt.subplots(len(pairs), 1, figsize=(10, 2.6 * len(pairs)), squeeze=False)
    for axis, model in zip(axes[:, 0], pairs):
        gram, balanced = per_style[f"{model}-gram"], per_style[f"{model}-balanced_gram"]
        positions = range(len(gram))
        axis.bar([p - 0.2 for p in positions], [r["style_classic"] for r in gram], 0.4, label="gram")
        axis.bar([p + 0.2 for p in positions], [r["style_classic"] for r in balanced], 0.4, label="balanced_gram")
        axis.set_xticks(list(positions), [r["label"] or r["style"][-8:] for r in gram], rotation=45, ha="right",
                        fontsize=7)
        axis.set_ylabel("classic style loss")
        axis.set_title(model, fontsize=10)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def spread_plot(table: Mapping[str, Mapping[str, float]]) -> str:
    """Every candidate's per-style spread of the classic loss (1 = every style served alike)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 3))
    names = list(table)
    axis.bar(range(len(names)), [table[n]["style_spread"] for n in names],
             color=["#d95f02" if "balanced" in n else "#1b9e77" for n in names])
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("spread (high / low percentile)")
    axis.axhline(1, color="#888", linewidth=0.8)
    figure.tight_layout()
    return _png(figure)


def curves_plot(curves: Mapping[str, list[dict]]) -> str | None:
    """Training loss (total) over steps of every combination, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({name.split("-", 1)[0] for name in curves})
    if not models:
        return None
    figure, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 2.8), squeeze=False)
    for axis, model in zip(axes[0], models):
        for name, rows in sorted(curves.items()):
            if name.split("-", 1)[0] == model and rows:
                axis.plot([r["step"] for r in rows], [r["total"] for r in rows], label=name.split("-", 1)[1])
        axis.set_title(model, fontsize=10)
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss (total)")
    figure.tight_layout()
    return _png(figure)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _table(caption: str, header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr{f' class={chr(34)}{classes[i]}{chr(34)}' if classes and classes[i] else ''}>"
                   + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def render(*, table: Mapping[str, Mapping[str, float]], comparisons: Mapping[str, Mapping[str, Any]],
           per_style: Mapping[str, list[dict]], models: list[str], settings: Mapping[str, Any], pair_count: int,
           backbones: Mapping[str, Any], calibrated: bool, calibrations: Mapping[str, Mapping[str, float]],
           notes: list[str], comparison_jpeg: bytes, curves: Mapping[str, list[dict]],
           optimisation: Mapping[str, Any] | None = None, translation: Mapping[str, Any] | None = None) -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>stylecore evaluation — "
             f"{html.escape(settings['protocol'])}</title><style>{_STYLE}</style></head><body>",
             "<h1>Evaluation</h1>",
             f"<p>Protocol <b>{html.escape(settings['protocol'])}</b>: {pair_count} held-out content × style pairs "
             f"at {settings['size']} px, paired by sample key. Backbones: "
             + "; ".join(f"{html.escape(name)} {html.escape(str(part.get('weights')))} (pretrained: "
                         f"{html.escape(str(part.get('pretrained')))})" for name, part in backbones.items()
                         if isinstance(part, Mapping) and "weights" in part) + ".</p>"]
    if not calibrated:
        parts.append("<p class=warn><b>Uncalibrated:</b> some backbones are random (offline run); these numbers "
                     "prove the pipeline, not the science.</p>")
    parts += [f"<p class=note>{html.escape(note)}</p>" for note in notes]
    parts.append("<h2>Comparison grid</h2><p>Rows are content/style pairs; columns content, style, then "
                 + ", ".join(f"{i} {html.escape(n)}" for i, n in enumerate(table, 1)) + ".</p>")
    parts.append('<img alt="comparison grid" src="data:image/jpeg;base64,'
                 + base64.b64encode(comparison_jpeg).decode() + '">')
    rows, classes = [], []
    for model, found in comparisons.items():
        for metric, c in found.items():
            c = c if isinstance(c, Mapping) else c.as_dict()
            rows.append([model, COMPARED[metric][0], c["before"], c["after"],
                         f"{c['relative'] * 100:+.1f} % [{c['relative_low'] * 100:+.1f}, {c['relative_high'] * 100:+.1f}]",
                         c["verdict"]])
            classes.append({"lower": "lower", "higher": "higher"}.get(c["verdict"], ""))
    if rows:
        parts.append("<h2>gram → balanced_gram, per model (Table 5 and the field's metrics)</h2>")
        parts.append(_table(f"balanced − gram on the same pairs, paired bootstrap "
                            f"{settings['bootstrap']['confidence'] * 100:g} % interval; a change is claimed only when "
                            "the interval excludes zero and it is at least "
                            f"{settings['bootstrap']['min_effect'] * 100:g} %",
                            ["model", "metric", "gram", "balanced_gram", "relative change [interval]", "verdict"],
                            rows, classes))
    parts.append(_table("The seed paper's metrics (mean over pairs)", ["candidate", *PAPER_COLUMNS],
                        [[n, *(row.get(k, "–") for k in PAPER_COLUMNS)] for n, row in table.items()]))
    if any("artfid" in row for row in table.values()):
        parts.append(_table("The field's metrics: ArtFID = (1 + LPIPS)·(1 + FID)", ["candidate", *FIELD_COLUMNS],
                            [[n, *(row.get(k, "–") for k in FIELD_COLUMNS)] for n, row in table.items()]))
    table6 = table6_rows(comparisons)
    if table6:
        parts.append("<h2>Deception rate (Table 6)</h2>")
        parts.append(_table("share of outputs whose nearest style image (artist classifier's embedding) is by the "
                            "style image's artist; balanced − gram with its interval",
                            ["model", "classic loss", "balanced loss", "Imp. (points)", "RImp.", "verdict"], table6))
    if any("deception_knn" in row for row in table.values()):
        parts.append(_table("Deception rates per candidate", ["candidate", *DECEPTION_COLUMNS],
                            [[n, *(row.get(k, "–") for k in DECEPTION_COLUMNS)] for n, row in table.items()]))
    if any("style_embedding" in row for row in table.values()):
        parts.append(_table("Style distance in Magenta's style embedding, 1 − cos(P(output), P(style)): pretrained "
                            "weights, so calibrated even offline (lower: closer to the style)",
                            ["candidate", *PRETRAINED_COLUMNS],
                            [[n, *(row.get(k, "–") for k in PRETRAINED_COLUMNS)] for n, row in table.items()]))
    side_tables = ([(optimisation_title(optimisation), optimisation["table"])] if optimisation else []) + [
        (translation_title(entry), entry["table"]) for entry in (translation or {}).get("tables", [])]
    for title, rows_of in side_tables:  # tables on a subset of the pairs: the optimisation methods', each GAN's
        columns = side_table_columns(rows_of)
        parts.append(_table(title, ["candidate", *columns],
                            [[n, *(row.get(k, "–") for k in columns)] for n, row in rows_of.items()]))
    if calibrations:
        parts.append(_table("Balanced style weights, calibrated per model (style/content at initialisation)",
                            ["model", "gram weight", "balanced weight", "ratio: gram", "ratio: balanced"],
                            [[m, c["classic_weight"], c["weight"], c["classic_ratio"], c["balanced_ratio"]]
                             for m, c in calibrations.items()]))
    plots = [("Per-style classic loss, gram vs balanced_gram", per_style_plot(per_style, models)),
             ("Per-style spread of the classic loss (IST)", spread_plot(table)),
             ("Training curves", curves_plot(curves))]
    for title, uri in plots:
        if uri:
            parts.append(f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"{uri}\">")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
