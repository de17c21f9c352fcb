"""A fixed, held-out set of content × style pairs, drawn from validation shards no training run reads.

The evaluation stage scores every trained model on it, and sweeps validate on it. The choice is a
pure function of the shard contents and a seed: each sample's rank is a hash of (seed, key), so the
same shards always give the same pairs, wherever and in whichever order they are read. Selection
streams the shards once and keeps only the chosen samples (bounded memory, any dataset size).

Styles are chosen ``per_label`` per value of a label (e.g. WikiArt's ``style``, the demo's style
families), so every style family is represented and per-style statistics are meaningful.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass, field
from typing import Iterator

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

    def __len__(self) -> int:
        return len(self.content_keys) * len(self.style_keys)

    def pairs(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor, list[int], list[int]]]:
        """Batches of (content, style, content indices, style indices) over all N × M pairs, style-major."""
        indices = [(c, s) for s in range(len(self.style_keys)) for c in range(len(self.content_keys))]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            content_index, style_index = [c for c, _ in chunk], [s for _, s in chunk]
            yield self.contents[content_index], self.styles[style_index], content_index, style_index


def center_square(image: Tensor, size: int) -> Tensor:
    """Resize the short side to ``size`` (aspect kept) and cut the centred ``size × size`` square."""
    image = resize_short_side(image, size)
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top:top + size, left:left + size].contiguous()


def _rank(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest(), "big")


def _choose(locations: ShardLocations, count: int, seed: int, label_key: str | None) -> list[tuple[str, dict, str]]:
    """The ``count`` samples (per label value when ``label_key`` is given) of lowest rank, as
    (key, sample, label), ordered by label then key."""
    import webdataset as wds

    from stylecore.shards import shard_urls

    chosen: dict[str, list[tuple[int, str, dict]]] = {}
    # Max-heaps of the `count` lowest ranks per label (heapq is a min-heap: store negated ranks).
    for sample in wds.WebDataset(shard_urls(locations), shardshuffle=False, empty_check=False):
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


def select_heldout(content: ShardLocations, style: ShardLocations, *, contents: int, styles_per_label: int,
                   size: int, seed: int = 0, style_label: str | None = "style") -> HeldOutPairs:
    """Choose the held-out pairs from validation shards; raises ``ValueError`` naming what is short."""
    from stylecore.shards import decode_sample

    if contents < 1 or styles_per_label < 1:
        raise ValueError(f"held-out pairs need at least one content and one style per label; got contents={contents}, "
                         f"styles_per_label={styles_per_label}")
    picked_contents = _choose(content, contents, seed, None)
    picked_styles = _choose(style, styles_per_label, seed, style_label)
    if len(picked_contents) < contents:
        raise ValueError(f"only {len(picked_contents)} content images in {content}; lower the number of held-out "
                         f"contents to at most that")
    if len(picked_styles) < 2:
        raise ValueError(f"{len(picked_styles)} style image(s) in {style}; per-style statistics need at least 2")

    def stack(picked: list[tuple[str, dict, str]]) -> Tensor:
        return torch.stack([center_square(decode_sample(sample)[1], size) for _, sample, _ in picked])

    return HeldOutPairs(stack(picked_contents), [k for k, _, _ in picked_contents],
                        stack(picked_styles), [k for k, _, _ in picked_styles], [label for _, _, label in picked_styles])
