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

from stylecore.metrics.paper import METRIC_TERMS, METRICS, StylizationMetrics, spread_ratio, ssim

__all__ = ["METRIC_TERMS", "METRICS", "StylizationMetrics", "spread_ratio", "ssim"]
