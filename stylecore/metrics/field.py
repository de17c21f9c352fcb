"""The field's evaluation metrics beside the seed paper's: what StyleID (CVPR 2024) and its successors report.

Per pair (output o of content c and style s):

- ``lpips``: LPIPS(o, c), AlexNet v0.1 unless a protocol says VGG (ArtFID's content term);
- ``lpips_gray``: the same on luma (content structure without colour; StyleID's LPIPS_gray);
- ``cfsd``: StyleID's content feature structure distance (:mod:`stylecore.metrics.cfsd`);
- ``histogram``: HistoGAN's colour-histogram distance of o to s (:mod:`stylecore.metrics.histogram`).

Per candidate, over its outputs (:func:`set_scores`):

- ``fid``: FID between the outputs and their pairs' style images (each style once per pair, as the StyleID
  protocol duplicates them), on Inception pool3 (:mod:`stylecore.metrics.inception`);
- ``artfid``: (1 + mean LPIPS) · (1 + FID) (Wright & Ommer 2022).

Images are paired by their held-out keys (:mod:`stylecore.heldout`), never by file order.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from stylecore.metrics.cfsd import CFSD
from stylecore.metrics.frechet import FID_INFINITY_MIN_IMAGES, fid_infinity, frechet_distance_of_features
from stylecore.metrics.histogram import hellinger, rgb_uv_histogram
from stylecore.metrics.inception import InceptionFeatures
from stylecore.metrics.lpips import LPIPS
from stylecore.models.base import select_batch

PAIR_METRICS = ("lpips", "lpips_gray", "cfsd", "histogram")
SET_METRICS = ("fid", "artfid")
FEATURES = "inception"  # the per-pair key of the outputs' Inception features (not a score)


class FieldMetrics(nn.Module):
    def __init__(self, *, inception_weights: str | os.PathLike, lpips_weights: str | os.PathLike,
                 cfsd_weights: str | os.PathLike, lpips_net: str = "alex", fid_resize: int | None = None,
                 fid: str = "plain") -> None:
        super().__init__()
        if fid not in ("plain", "infinity"):
            raise ValueError(f"fid={fid!r} must be plain or infinity (FID∞, from {FID_INFINITY_MIN_IMAGES:,} images)")
        self.fid = fid
        self.inception = InceptionFeatures(inception_weights, resize=fid_resize)
        self.lpips = LPIPS(lpips_net, lpips_weights)
        self.cfsd = CFSD(cfsd_weights)

    def describe(self) -> dict[str, dict[str, str]]:
        return {"fid": {**self.inception.describe(), "estimator": self.fid}, "lpips": self.lpips.describe(),
                "cfsd": self.cfsd.describe(),
                "histogram": {"network": "none", "method": "HistoGAN RGB-uv, 64 bins, inverse-quadratic σ 0.02, "
                                                           "Hellinger distance"}}

    @property
    def calibrated(self) -> bool:
        """Whether every backbone is pretrained (a random init makes every number here uncalibrated)."""
        return all(part["pretrained"] == "true" for name, part in self.describe().items() if name != "histogram")

    @torch.no_grad()
    def encode_references(self, contents: Tensor, styles: Tensor) -> dict[str, object]:
        return {"lpips": self.lpips.features(contents), "lpips_gray": self.lpips.features(contents, gray=True),
                "cfsd": self.cfsd.features(contents), "histogram": rgb_uv_histogram(styles)}

    @torch.no_grad()
    def score_indexed(self, output: Tensor, contents: Tensor, styles: Tensor, content_index: Tensor,
                      style_index: Tensor, references: dict[str, object] | None = None) -> dict[str, Tensor]:
        """Each pair metric of output k against contents[content_index[k]] / styles[style_index[k]], and the
        outputs' Inception features under :data:`FEATURES`."""
        if references is None:
            references = self.encode_references(contents, styles)
        output = output.float().clamp(0, 1)
        by_content = {key: select_batch(references[key], content_index) for key in ("lpips", "lpips_gray", "cfsd")}
        return {
            "lpips": self.lpips.distance(self.lpips.features(output), by_content["lpips"]).cpu(),
            "lpips_gray": self.lpips.distance(self.lpips.features(output, gray=True), by_content["lpips_gray"]).cpu(),
            "cfsd": self.cfsd.distance(self.cfsd.features(output), by_content["cfsd"]).cpu(),
            "histogram": hellinger(rgb_uv_histogram(output), select_batch(references["histogram"], style_index)).cpu(),
            FEATURES: self.inception(output).cpu(),
        }

    @torch.no_grad()
    def style_features(self, styles: Tensor, batch_size: int = 16) -> Tensor:
        """Inception features of the style images (the FID reference set), in batches."""
        return torch.cat([self.inception(styles[i:i + batch_size]).cpu() for i in range(0, len(styles), batch_size)])


def set_scores(lpips: Tensor, output_features: Tensor, reference_features: Tensor, fid: str = "plain"
               ) -> dict[str, float]:
    """FID of the outputs against their pairs' styles (``reference_features[k]`` is pair k's style), and ArtFID."""
    value = (fid_infinity(output_features, reference_features) if fid == "infinity"
             else frechet_distance_of_features(output_features, reference_features))
    return {"fid": value, "artfid": (1 + float(lpips.double().mean())) * (1 + value)}


def pack_set_inputs(lpips: Tensor, output_features: Tensor, reference_features: Tensor) -> Tensor:
    """(pairs, 1 + 2d) rows [lpips | output features | style features]: what :func:`set_statistics` resamples."""
    return torch.cat([lpips.double().unsqueeze(1), output_features.double(), reference_features.double()], dim=1)


def set_statistics(fid: str = "plain"):
    """A bootstrap statistic (:func:`stylecore.metrics.statistics.compare_many`) of FID and ArtFID over resampled
    pairs of a :func:`pack_set_inputs` tensor: one Fréchet distance per resample serves both."""
    def statistics(packed: Tensor, indices: Tensor) -> dict[str, float]:
        picked = packed[indices]
        width = (packed.shape[1] - 1) // 2
        return set_scores(picked[:, 0], picked[:, 1:1 + width], picked[:, 1 + width:], fid)
    return statistics


class EvaluationMetrics(nn.Module):
    """The seed paper's metrics (:class:`stylecore.metrics.StylizationMetrics`) and, when given, the field's, as
    one scorer for :func:`stylecore.heldout.score_models`."""

    def __init__(self, paper: nn.Module, field: FieldMetrics | None = None, deception: nn.Module | None = None,
                 style_embedding: nn.Module | None = None) -> None:
        super().__init__()
        self.paper = paper
        self.field = field
        self.deception = deception  # a stylecore.metrics.deception.DeceptionRate, when an artist classifier is given
        self.style_embedding = style_embedding  # a StyleEmbeddingDistance, when magenta_lite's weights are installed

    def _optional(self) -> dict[str, nn.Module]:
        return {name: part for name, part in (("deception", self.deception), ("style_embedding", self.style_embedding))
                if part is not None}

    def describe(self) -> dict[str, object]:
        return {"paper": self.paper.describe(), **(self.field.describe() if self.field is not None else {}),
                **{name: part.describe() for name, part in self._optional().items()}}

    @torch.no_grad()
    def encode_references(self, contents: Tensor, styles: Tensor) -> dict[str, object]:
        return {"paper": self.paper.encode_references(contents, styles),
                "field": self.field.encode_references(contents, styles) if self.field is not None else None,
                **{name: part.encode_references(contents, styles) for name, part in self._optional().items()}}

    @torch.no_grad()
    def score_indexed(self, output: Tensor, contents: Tensor, styles: Tensor, content_index: Tensor,
                      style_index: Tensor, references: dict[str, object] | None = None) -> dict[str, Tensor]:
        if references is None:
            references = self.encode_references(contents, styles)
        values = self.paper.score_indexed(output, contents, styles, content_index, style_index, references["paper"])
        if self.field is not None:
            values.update(self.field.score_indexed(output, contents, styles, content_index, style_index,
                                                   references["field"]))
        for name, part in self._optional().items():
            values.update(part.score_indexed(output, contents, styles, content_index, style_index, references[name]))
        return values
