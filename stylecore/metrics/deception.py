"""Deception rate: how often an artist classifier takes a stylized image for a work of the style image's artist.

Sanakoyeu et al. (ECCV 2018) introduced it; the seed paper (Cheng et al. 2021, Table 6) reports it per model,
classic vs balanced loss. Three per-pair readings, each 1 (deceived) or 0:

- ``deception_top1``: the classifier's most likely artist for the output is the style image's artist;
- ``deception_top5``: that artist is among its five most likely;
- ``deception_knn``: the seed paper's variant — the output's nearest style image in the classifier's embedding
  (L2 over the gallery of every held-out style image) is by the style image's artist.

A pair whose style image is by an artist the classifier never saw gets NaN for top-1 / top-5 (it cannot be
right there; the paper excludes such artists) and a real kNN reading (the gallery knows every artist).
Chance is 1 / artists for top-1; an output that *is* its style image scores the classifier's accuracy on
top-1 and 1 on kNN (its nearest gallery image is itself).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from stylecore.classifier import ArtistClassifier

DECEPTION = ("deception_top1", "deception_top5", "deception_knn")


class DeceptionRate(nn.Module):
    """Scores outputs with ``classifier`` against ``gallery`` (the held-out style images, (M, 3, H, W) in [0, 1])
    and their ``gallery_artists``; the :func:`stylecore.heldout.score_models` scorer interface."""

    def __init__(self, classifier: ArtistClassifier, gallery: Tensor, gallery_artists: Sequence[str],
                 batch_size: int = 32) -> None:
        super().__init__()
        if len(gallery) != len(gallery_artists):
            raise ValueError(f"deception rate: {len(gallery)} gallery images but {len(gallery_artists)} artists")
        if any(not artist for artist in gallery_artists):
            raise ValueError("deception rate: every gallery (style) image needs its artist label; the style shards "
                             "must carry labels.artist")
        self.classifier = classifier.eval()
        names = sorted(set(gallery_artists))
        self.register_buffer("gallery", gallery.float(), persistent=False)
        self.register_buffer("gallery_artist", torch.tensor([names.index(a) for a in gallery_artists]), persistent=False)
        # the classifier's own index of each gallery artist, -1 when it never saw that artist
        self.register_buffer("classifier_index", torch.tensor(
            [classifier.artists.index(a) if a in classifier.artists else -1 for a in gallery_artists]), persistent=False)
        self.batch_size = int(batch_size)
        self.gallery_names = names
        self._gallery_features: Tensor | None = None

    def describe(self) -> dict[str, str]:
        known = int((self.classifier_index >= 0).sum())
        return {"classifier": self.classifier.describe(), "gallery": f"{len(self.gallery)} style images by "
                f"{len(self.gallery_names)} artists; {known} of the images are by artists the classifier learned",
                "weights": self.classifier.weights.get("spec", "?"),
                "pretrained": "true" if self.classifier.weights.get("pretrained") == "true" else "false"}

    def gallery_features(self) -> Tensor:
        if self._gallery_features is None:
            self._gallery_features = torch.cat([self.classifier.embed(self.gallery[i:i + self.batch_size]).float()
                                                for i in range(0, len(self.gallery), self.batch_size)])
        return self._gallery_features

    @torch.no_grad()
    def encode_references(self, contents: Tensor, styles: Tensor) -> Tensor:
        """Which gallery image each style of the batch is: an exact pixel match (the gallery holds every held-out
        style), so each pair knows its style image's artist without carrying labels through the batches."""
        distances = torch.cdist(styles.float().flatten(1), self.gallery.flatten(1))
        nearest = distances.min(1)
        if bool((nearest.values > 1e-3 * styles[0].numel() ** 0.5).any()):
            raise ValueError("deception rate: a style image of the batch is not in the gallery; build the gallery "
                             "from the held-out pairs' styles")
        return nearest.indices

    @torch.no_grad()
    def score_indexed(self, output: Tensor, contents: Tensor, styles: Tensor, content_index: Tensor,
                      style_index: Tensor, references: Tensor | None = None) -> dict[str, Tensor]:
        if references is None:
            references = self.encode_references(contents, styles)
        gallery_index = references[style_index]  # each pair's style image in the gallery
        out = self.classifier(output.float())
        expected = self.classifier_index[gallery_index]
        top = out["artist"].float().topk(min(5, out["artist"].shape[1]), dim=1).indices
        known = expected >= 0
        nan = torch.full_like(expected, float("nan"), dtype=torch.float32)
        top1 = torch.where(known, (top[:, 0] == expected).float(), nan)
        top5 = torch.where(known, (top == expected[:, None]).any(1).float(), nan)
        nearest = torch.cdist(out["features"].float(), self.gallery_features()).argmin(1)
        knn = (self.gallery_artist[nearest] == self.gallery_artist[gallery_index]).float()
        return {"deception_top1": top1, "deception_top5": top5, "deception_knn": knn}
