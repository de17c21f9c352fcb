"""Fixed, held-out sets of content × style pairs, drawn from validation shards no training run reads.

The validation shards are split in two disjoint parts by a hash of each sample's key
(:func:`heldout_part`): ``test`` pairs score the finished models (the ``evaluate`` stage) and
``validation`` pairs steer sweeps (ASHA's objective), so no sweep picks its winner on the images the
final comparison uses. Within a part, the choice is a pure function of the shard contents and a seed:
each sample's rank is a hash of (seed, key), so the same shards always give the same pairs, wherever
and in whichever order they are read. Selection streams the shards once and keeps only the chosen
samples (bounded memory, any dataset size).

Styles are chosen ``per_label`` per value of a label (e.g. WikiArt's ``style``, the demo's style
families), so every style family is represented and per-style statistics are meaningful.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from stylecore.data import ShardLocations, resize_short_side


@dataclass
class HeldOutPairs:
    """``contents`` (N, 3, s, s) and ``styles`` (M, 3, s, s) in [0, 1]; every content meets every style."""

    contents: Tensor
    content_keys: list[str]
    styles: Tensor
    style_keys: list[str]
    style_labels: list[str] = field(default_factory=list)
    style_artists: list[str] = field(default_factory=list)  # each style's labels.artist ("" when the shard has none)

    def __len__(self) -> int:
        return len(self.content_keys) * len(self.style_keys)

    def pairs(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Batches of the N × M pairs, style-major, each as (contents, styles, content index, style index):
        the distinct images of the batch once, and per pair k its content ``contents[content_index[k]]``
        and style ``styles[style_index[k]]`` (so each image is encoded once per batch)."""
        indices = [(c, s) for s in range(len(self.style_keys)) for c in range(len(self.content_keys))]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            content_ids = list(dict.fromkeys(c for c, _ in chunk))
            style_ids = list(dict.fromkeys(s for _, s in chunk))
            content_index = torch.tensor([content_ids.index(c) for c, _ in chunk])
            style_index = torch.tensor([style_ids.index(s) for _, s in chunk])
            yield self.contents[content_ids], self.styles[style_ids], content_index, style_index

    def subset(self, contents: int, styles: Sequence[int]) -> tuple["HeldOutPairs", list[int]]:
        """The pairs of the first ``contents`` contents with the styles at ``styles``, and where each of them lies
        in this set's style-major order (to read a candidate's per-pair scores on the subset)."""
        if not 0 < contents <= len(self.content_keys) or not styles or not all(
                0 <= s < len(self.style_keys) for s in styles):
            raise ValueError(f"a subset of {contents} contents and styles {list(styles)[:5]} is not within "
                             f"{len(self.content_keys)} contents × {len(self.style_keys)} styles")
        chosen = list(styles)
        subset = HeldOutPairs(self.contents[:contents], self.content_keys[:contents], self.styles[chosen],
                              [self.style_keys[s] for s in chosen],
                              [self.style_labels[s] for s in chosen] if self.style_labels else [],
                              [self.style_artists[s] for s in chosen] if self.style_artists else [])
        indices = [style * len(self.content_keys) + content for style in chosen for content in range(contents)]
        return subset, indices


def score_models(models: Mapping[str, Any], pairs: HeldOutPairs, metrics, batch_size: int,
                 device: torch.device | str, keep_outputs: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 reference_cache: dict[tuple[int, int], Any] | None = None
                 ) -> dict[str, tuple[dict[str, Tensor], Tensor]]:
    """Stylize every pair (style-major) with each of ``models`` (name → a
    :class:`stylecore.models.StyleTransferModel`) and score each output with ``metrics`` (a
    :class:`stylecore.metrics.StylizationMetrics`); returns, per name, the per-pair values of each
    metric and the outputs of the pairs ``keep_outputs`` lists, in that order (every pair when None).

    The work goes batch by batch: a batch's distinct contents and styles are encoded once, by each
    model for stylizing and once for all models by the metric encoder; and only the kept outputs are
    held, so memory does not grow with the number of pairs. ``progress(pairs done, pairs)`` is called
    after each batch. The models run in eval mode and inference mode, their previous modes restored
    afterwards, so a model can be scored in the middle of training (sweep validation).

    ``reference_cache``: a dict the caller keeps between calls on the same pairs, metrics and device (sweep
    validation scores the same pairs at every report): the references' features are encoded on the first
    call only, and looked up by batch on the later ones.
    """
    total = len(pairs)
    wanted = range(total) if keep_outputs is None else [int(i) for i in keep_outputs]
    outside = [i for i in wanted if not 0 <= i < total]
    if outside:
        raise ValueError(f"keep_outputs: pair indices {outside[:5]} lie outside the {total} pairs")
    keep = set(wanted)
    modes = {name: model.training for name, model in models.items()}
    values: dict[str, dict[str, list[Tensor]]] = {name: {} for name in models}
    kept: dict[str, dict[int, Tensor]] = {name: {} for name in models}
    done = 0
    try:
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            for batch, (contents, styles, content_index, style_index) in enumerate(pairs.pairs(batch_size)):
                contents, styles = contents.to(device), styles.to(device)
                content_index, style_index = content_index.to(device), style_index.to(device)
                if reference_cache is not None and (batch_size, batch) in reference_cache:
                    references = reference_cache[(batch_size, batch)]
                else:
                    references = metrics.encode_references(contents, styles)
                    if reference_cache is not None:
                        reference_cache[(batch_size, batch)] = references
                rows = [(position, done + position) for position in range(len(content_index)) if done + position in keep]
                for name, model in models.items():
                    output = model.stylize_pairs(contents, styles, content_index, style_index).float().clamp(0, 1)
                    scores = metrics.score_indexed(output, contents, styles, content_index, style_index, references)
                    for metric, value in scores.items():
                        values[name].setdefault(metric, []).append(value)
                    # a copy, not a view: a view would keep the whole batch's outputs alive
                    kept[name].update((pair, output[position].to("cpu", copy=True)) for position, pair in rows)
                done += len(content_index)
                if progress is not None:
                    progress(done, total)
    finally:
        for name, model in models.items():
            model.train(modes[name])
    results = {}
    for name in models:
        outputs = [kept[name][i] for i in wanted]
        results[name] = ({metric: torch.cat(parts) for metric, parts in values[name].items()},
                         torch.stack(outputs) if outputs else torch.empty(0, 3, 0, 0))
    return results


class PrecomputedOutputs:
    """Outputs made elsewhere (an optimisation method's, one per pair, style-major as :meth:`HeldOutPairs.pairs`
    orders them) in the place of a model in :func:`score_models`, which asks for them batch by batch in that
    order; so they are scored by the same code, on the same batches, as the models beside them."""

    training = False

    def __init__(self, outputs: Tensor) -> None:
        self.outputs, self.served = outputs, 0

    def eval(self) -> "PrecomputedOutputs":
        return self

    def train(self, mode: bool = True) -> "PrecomputedOutputs":
        return self

    def stylize_pairs(self, contents: Tensor, styles: Tensor, content_index: Tensor, style_index: Tensor) -> Tensor:
        count = len(content_index)
        if self.served + count > len(self.outputs):
            raise ValueError(f"asked for pairs {self.served}…{self.served + count - 1} of {len(self.outputs)} "
                             "precomputed outputs; score them once, on the pairs they were made for")
        batch = self.outputs[self.served:self.served + count]
        self.served += count
        return batch.to(contents.device)


class DomainTranslation:
    """A GAN translation model (:mod:`stylecore.gan`) to one domain in the place of a model in :func:`score_models`:
    every pair's content translated to ``domain``, so a photo → domain model is scored with the arbitrary-style
    models' metrics against held-out artworks of that domain (pairs whose styles all belong to it). The translation
    does not read the style images; each distinct content of a batch is translated once."""

    def __init__(self, model, domain: str) -> None:
        self.model, self.domain = model, model.check_domain(domain)

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self) -> "DomainTranslation":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "DomainTranslation":
        self.model.train(mode)
        return self

    def stylize_pairs(self, contents: Tensor, styles: Tensor, content_index: Tensor, style_index: Tensor) -> Tensor:
        return self.model.translate(contents, self.domain).to(contents.device)[content_index]


def score_pairs(model, pairs: HeldOutPairs, metrics, batch_size: int, device: torch.device | str,
                keep_outputs: Sequence[int] | None = None, reference_cache: dict[tuple[int, int], Any] | None = None
                ) -> tuple[dict[str, Tensor], Tensor]:
    """:func:`score_models` for one model: the per-pair values of each metric and the kept outputs."""
    return score_models({"model": model}, pairs, metrics, batch_size, device, keep_outputs,
                        reference_cache=reference_cache)["model"]


def center_square(image: Tensor, size: int) -> Tensor:
    """Resize the short side to ``size`` (aspect kept) and cut the centred ``size × size`` square."""
    image = resize_short_side(image, size)
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top:top + size, left:left + size].contiguous()


PARTS = ("test", "validation")


def _rank(seed: int | str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest(), "big")


def heldout_part(key: str) -> str:
    """``test`` or ``validation``: which part of the held-out data a sample belongs to, by its key alone
    (half each, independent of any seed or count, so the parts never overlap)."""
    return PARTS[_rank("part", key) & 1]


def _choose(locations: ShardLocations, count: int, seed: int, label_key: str | None,
            part: str | None) -> list[tuple[str, dict, str]]:
    """The ``count`` samples (per label value when ``label_key`` is given) of lowest rank in ``part``
    (every sample when None), as (key, sample, label), ordered by label then key."""
    from stylecore.shards import iterate_samples, shard_urls

    chosen: dict[str, list[tuple[int, str, dict]]] = {}
    # Max-heaps of the `count` lowest ranks per label (heapq is a min-heap: store negated ranks).
    for sample in iterate_samples(shard_urls(locations)):
        if part is not None and heldout_part(sample["__key__"]) != part:
            continue
        meta = json.loads(sample["json"]) if "json" in sample else {}
        label = str(meta.get("labels", {}).get(label_key, "unlabelled")) if label_key else ""
        heap = chosen.setdefault(label, [])
        entry = (-_rank(seed, sample["__key__"]), sample["__key__"], dict(sample))
        if len(heap) < count:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return [(key, sample, label) for label in sorted(chosen)
            for _, key, sample in sorted(chosen[label], key=lambda e: e[1])]


def _round_robin(picked: list[tuple[str, dict, str]], count: int, seed: int) -> list[tuple[str, dict, str]]:
    """At most ``count`` of ``picked`` (ordered by label, then key), one label at a time in rank order."""
    by_label: dict[str, list[tuple[str, dict, str]]] = {}
    for entry in picked:
        by_label.setdefault(entry[2], []).append(entry)
    queues = [sorted(entries, key=lambda e: _rank(seed, e[0])) for _, entries in sorted(by_label.items())]
    kept: set[str] = set()
    for depth in range(max(map(len, queues), default=0)):
        for queue in queues:
            if depth < len(queue) and len(kept) < count:
                kept.add(queue[depth][0])
    return [entry for entry in picked if entry[0] in kept]


def select_heldout(content: ShardLocations, style: ShardLocations, *, contents: int, styles_per_label: int,
                   size: int, seed: int = 0, style_label: str | None = "style",
                   part: str | None = None, styles: int | None = None) -> HeldOutPairs:
    """Choose the held-out pairs from validation shards, from one :data:`PARTS` part or (``None``) all of
    them; raises ``ValueError`` naming what is short. ``styles`` caps the style images: taken round robin
    over the labels in rank order (every label's first, then every label's second, …), so a protocol such
    as StyleID's 40 styles spreads over all style families."""
    from stylecore.shards import decode_sample

    if contents < 1 or styles_per_label < 1:
        raise ValueError(f"held-out pairs need at least one content and one style per label; got contents={contents}, "
                         f"styles_per_label={styles_per_label}")
    if part is not None and part not in PARTS:
        raise ValueError(f"held-out part must be one of {', '.join(PARTS)} or None; got {part!r}")
    where = f"the {part} half of " if part else ""
    picked_contents = _choose(content, contents, seed, None, part)
    picked_styles = _choose(style, styles_per_label, seed, style_label, part)
    if len(picked_contents) < contents:
        raise ValueError(f"only {len(picked_contents)} content images in {where}{content}; lower the number of "
                         f"held-out contents to at most that")
    if styles is not None:
        picked_styles = _round_robin(picked_styles, styles, seed)
    if len(picked_styles) < 2:
        raise ValueError(f"{len(picked_styles)} style image(s) in {where}{style}; per-style statistics need at least 2")

    def stack(picked: list[tuple[str, dict, str]]) -> Tensor:
        return torch.stack([center_square(decode_sample(sample)[1], size) for _, sample, _ in picked])

    def artist(sample: dict) -> str:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        return str((meta.get("labels") or {}).get("artist") or "")

    return HeldOutPairs(stack(picked_contents), [k for k, _, _ in picked_contents],
                        stack(picked_styles), [k for k, _, _ in picked_styles], [label for _, _, label in picked_styles],
                        [artist(sample) for _, sample, _ in picked_styles])
