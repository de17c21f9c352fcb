"""CFSD, the content feature structure distance of StyleID (Chung, Hyun, Heo; CVPR 2024).

How far an output's spatial self-similarity drifts from its content image's, at VGG-19 relu3_1 — a content
score that ignores colour and texture statistics:

    F = features / C                  (the H·W positions as rows, C channels; StyleID's scaling)
    P_i = softmax_j(F_c,i · F_c,j),   Q_i = softmax_j(F_o,i · F_o,j)
    CFSD(o, c) = Σ_i KL(P_i ‖ Q_i)    (summed over the positions i, as StyleID's ``KLDivLoss(batchmean)``
                                       on one image per batch does)

The sum runs over positions, so the value grows with the image size: compare CFSD only at one size (a
protocol fixes it). The H·W × H·W similarity maps are built a block of rows at a time, so memory stays
bounded at 512 px (16,384 positions).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.encoders import VGGEncoder

LAYER = "relu3_1"


class CFSD(nn.Module):
    """``forward(output, content) -> (B,)``; :meth:`features` lets a content shared by many outputs be encoded once."""

    def __init__(self, weights: str | os.PathLike = "imagenet", block_elements: int = 1 << 24) -> None:
        super().__init__()
        self.encoder = VGGEncoder("vgg19", layers=[LAYER], weights=weights)
        # similarities held at once, over the batch: 16 M float64 are 128 MB per temporary (a 512 px batch of 8
        # would otherwise need 8 × 16,384² of them)
        self.block_elements = block_elements

    def describe(self) -> dict[str, str]:
        info = self.encoder.describe()
        return {"network": f"vgg19 {LAYER}", "weights": info["weights"], "weights_kind": info["weights_kind"],
                "pretrained": info["pretrained"]}

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """(B, H·W, C) position features of images ``x`` in [0, 1], scaled by 1/C."""
        f = self.encoder(x.float(), [LAYER])[LAYER]
        return f.flatten(2).transpose(1, 2) / f.shape[1]

    def distance(self, output_features: Tensor, content_features: Tensor) -> Tensor:
        if output_features.shape != content_features.shape:
            raise ValueError(f"cfsd: output {tuple(output_features.shape)} and content {tuple(content_features.shape)} "
                             "features differ; score outputs at their content's size")
        batch, positions = output_features.shape[:2]
        rows_per_block = max(1, self.block_elements // (batch * positions))
        total = torch.zeros(batch, dtype=torch.float64, device=output_features.device)
        for start in range(0, positions, rows_per_block):
            rows = slice(start, start + rows_per_block)
            # float64: the similarities are nearly uniform, and float32 cancellation would give negative KL
            log_q = F.log_softmax((output_features[:, rows] @ output_features.transpose(1, 2)).double(), dim=-1)
            log_p = F.log_softmax((content_features[:, rows] @ content_features.transpose(1, 2)).double(), dim=-1)
            total += (log_p.exp() * (log_p - log_q)).sum(dim=(1, 2))
        return total.float()

    def forward(self, output: Tensor, content: Tensor) -> Tensor:
        return self.distance(self.features(output), self.features(content))
