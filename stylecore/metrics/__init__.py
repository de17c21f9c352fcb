"""Evaluation metrics of stylized images.

- :mod:`.paper`: the seed paper's (Cheng et al. 2021) per-pair scores on one VGG-16 pass — content loss,
  classic and balanced Gram style losses, mean/std distance, SSIM — and the per-style spread.
- :mod:`.field`: what the field reports today (StyleID's protocol): LPIPS, LPIPS_gray, CFSD and the
  colour-histogram distance per pair; FID and ArtFID per candidate, on :mod:`.inception` features with the
  Fréchet distance of :mod:`.frechet`.
- :mod:`.statistics`: paired bootstrap intervals and the verdicts a summary may claim.

Every backbone follows :mod:`stylecore.backbones` (pretrained, a file, or ``random:<seed>``); numbers taken
with a random backbone are uncalibrated and every report says so.
"""

#: the seed paper's per-pair loss terms, by metric name (defined here, torch-free: checking a setting that names
#: metrics, as a stage that only says it is skipped does, must not import torch)
METRIC_TERMS = {
    "content": {"loss": "content"},
    "style_classic": {"loss": "gram"},
    "style_balanced": {"loss": "balanced_gram"},
    "mean_std": {"loss": "mean_std"},
}
METRICS = (*METRIC_TERMS, "ssim")
_FROM_PAPER = ("StylizationMetrics", "spread_ratio", "ssim")

__all__ = ["METRIC_TERMS", "METRICS", *_FROM_PAPER]


def __getattr__(name: str):
    """The scorers, imported (with torch) on first use."""
    if name in _FROM_PAPER:
        from stylecore.metrics import paper

        return getattr(paper, name)
    raise AttributeError(f"module 'stylecore.metrics' has no attribute {name!r}")
