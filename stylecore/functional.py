"""Small pure functions shared by losses and models.

Numeric conventions are explicit arguments (published code disagrees on all of them):
Gram normalisation, biased/unbiased variance, and where eps goes. Statistics and Gram matrices are
computed in float32 even under bf16 autocast, because their sums overflow or lose precision in bf16.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Literal, Mapping, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

GramNormalization = Literal["none", "hw", "chw"]
EpsPlacement = Literal["inside", "outside"]


def _at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half precision to float32; leave float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_feature_map(x: Tensor, argument: str = "features") -> None:
    if x.dim() != 4:
        raise ValueError(f"{argument} must be a (B, C, H, W) tensor; got shape {tuple(x.shape)}")


class _GramProduct(torch.autograd.Function):
    """s·F Fᵀ with a one-matmul backward: ∂L/∂F = s·(Ḡ + Ḡᵀ)·F.

    Autograd would differentiate both operands of F Fᵀ separately (two batched matmuls, one on a
    transposed view); this is about 4× faster on CPU for VGG feature maps (BENCHMARKS.md).
    """

    @staticmethod
    def forward(ctx, flat: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(flat)
        ctx.scale = scale
        b, c, _ = flat.shape
        # beta=0 ignores the uninitialised input; alpha folds the scale into the matmul.
        return torch.baddbmm(flat.new_empty(b, c, c), flat, flat.transpose(1, 2), beta=0.0, alpha=scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (flat,) = ctx.saved_tensors
        symmetric = grad + grad.transpose(1, 2)
        return torch.baddbmm(torch.empty_like(flat), symmetric, flat, beta=0.0, alpha=ctx.scale), None


class _VarMean(torch.autograd.Function):
    """Variance and mean over the last dim with a fused backward:
    ∂L/∂x = ḡ_μ / N + ḡ_var · 2 (x − μ) / (N − correction).

    On CPUs the forward is two passes, μ then Σ(x − μ)² (as stable as Welford's one pass, to ~2e-7 relative in
    float32): torch.var_mean's Welford kernel runs 2–4.5× slower there (a Sapphire Rapids vCPU: 17.8 → 4.0 ms for
    4 × 64 × 128² bf16 features upcast, 14.8 → 3.2 ms in float32), and it was 18 % of a bf16 AdaIN step. On GPUs
    torch.var_mean is one memory pass and stays. ``keep_centred`` saves x − μ for the backward instead of x, when x
    was already a copy made for this call (an upcast), so no extra memory is held."""

    @staticmethod
    def forward(ctx, flat: Tensor, correction: int, keep_centred: bool) -> tuple[Tensor, Tensor]:
        if flat.device.type == "cpu":
            mean = flat.mean(dim=-1)
            centred = flat - mean.unsqueeze(-1)
            var = centred.square().sum(dim=-1).div_(flat.shape[-1] - correction)
        else:
            var, mean = torch.var_mean(flat, dim=-1, correction=correction)
            centred = None
        ctx.keep_centred = keep_centred and centred is not None
        ctx.save_for_backward(centred if ctx.keep_centred else flat, mean)
        ctx.correction = correction
        return var, mean

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_var: Tensor, grad_mean: Tensor) -> tuple[Tensor, None, None]:
        saved, mean = ctx.saved_tensors
        n = saved.shape[-1]
        centred = saved if ctx.keep_centred else saved - mean.unsqueeze(-1)
        scale = (grad_var * (2.0 / (n - ctx.correction))).unsqueeze(-1)
        return torch.addcmul((grad_mean / n).unsqueeze(-1), scale, centred), None, None


def var_mean(x: Tensor, correction: int = 1, keep_centred: bool = False) -> tuple[Tensor, Tensor]:
    """Variance and mean over the last dimension (like torch.var_mean), faster on CPUs and with a faster backward.
    ``keep_centred``: ``x`` is a temporary of the caller's, so the backward may keep x − μ instead of ``x``."""
    return _VarMean.apply(x, correction, keep_centred)


_GRAM_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("stylecore_gram_memo", default=None)


@contextlib.contextmanager
def shared_grams() -> Iterator[None]:
    """Within this block, :func:`gram` of the same feature tensor (same object, unmodified, same
    normalisation and grad mode) is computed once: the ``gram`` and ``balanced_gram`` terms of one objective
    (training's monitored classic loss, evaluation's Table 5 pair) read the same Grams. The objective's forward
    opens one block per call, so nothing outlives it."""
    token = _GRAM_MEMO.set({})
    try:
        yield
    finally:
        _GRAM_MEMO.reset(token)


def gram(x: Tensor, normalize: GramNormalization = "hw") -> Tensor:
    """Gram matrix G = F Fᵀ of (B, C, H, W) features flattened to (B, C, HW).

    ``normalize``: ``"none"``; ``"hw"`` divides by H·W (pystiche, Magenta); ``"chw"`` by C·H·W
    (LinearTransfer, Johnson). Returns (B, C, C) in float32 (float64 for float64 input). Inside
    :func:`shared_grams` a repeated call returns the first result.
    """
    memo = _GRAM_MEMO.get()
    if memo is None:
        return _gram(x, normalize)
    key = (id(x), normalize, torch.is_grad_enabled())
    version = -1 if x.is_inference() else x._version  # inference tensors keep no version counter
    hit = memo.get(key)
    if hit is not None and hit[0] is x and hit[1] == version:
        return hit[2]
    result = _gram(x, normalize)
    memo[key] = (x, version, result)  # holding x keeps its id from being reused within the block
    return result


def _gram(x: Tensor, normalize: GramNormalization) -> Tensor:
    _check_feature_map(x)
    b, c, h, w = x.shape
    flat = _at_least_fp32(x.reshape(b, c, h * w))
    if normalize == "none":
        scale = 1.0
    elif normalize == "hw":
        scale = 1.0 / (h * w)
    elif normalize == "chw":
        scale = 1.0 / (c * h * w)
    else:
        raise ValueError(f"gram normalize={normalize!r} is not one of 'none', 'hw', 'chw'")
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _GramProduct.apply(flat, scale)


def mean_std(
    x: Tensor, eps: float = 1e-5, unbiased: bool = True, eps_placement: EpsPlacement = "inside"
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over H, W, each of shape (B, C, 1, 1), float32.

    σ = sqrt(var + eps) with ``eps_placement="inside"`` (AdaIN/SANet reference), or sqrt(var) + eps
    with ``"outside"``. ``unbiased`` divides by HW − 1 (the AdaIN reference) instead of HW.
    """
    _check_feature_map(x)
    b, c, h, w = x.shape
    if unbiased and h * w < 2:
        raise ValueError(f"unbiased variance needs at least 2 positions; features are {h}x{w}")
    flat = _at_least_fp32(x.reshape(b, c, h * w))
    var, mean = var_mean(flat, correction=1 if unbiased else 0, keep_centred=flat._base is None)
    if eps_placement == "inside":
        std = torch.sqrt(var + eps)
    elif eps_placement == "outside":
        std = torch.sqrt(var) + eps
    else:
        raise ValueError(f"eps_placement={eps_placement!r} is not one of 'inside', 'outside'")
    return mean.view(b, c, 1, 1), std.view(b, c, 1, 1)


def instance_normalize(x: Tensor, eps: float = 1e-5, unbiased: bool = True) -> Tensor:
    """(x − μ(x)) / σ(x) per sample and channel (SANet's mean-variance norm)."""
    mean, std = mean_std(x, eps=eps, unbiased=unbiased)
    return ((x.float() - mean) / std).to(x.dtype)


def adain_from_stats(content: Tensor, style_mean: Tensor, style_std: Tensor, eps: float = 1e-5,
                     unbiased: bool = True) -> Tensor:
    """AdaIN with given target statistics: σ_s · (x − μ(x)) / σ(x) + μ_s."""
    return instance_normalize(content, eps=eps, unbiased=unbiased).float() * style_std + style_mean


def adain(content: Tensor, style: Tensor, eps: float = 1e-5, unbiased: bool = True) -> Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017): σ(s)·(c − μ(c))/σ(c) + μ(s)."""
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(
            f"adain: content {tuple(content.shape)} and style {tuple(style.shape)} must agree in batch and channels"
        )
    style_mean, style_std = mean_std(style, eps=eps, unbiased=unbiased)
    return adain_from_stats(content, style_mean, style_std, eps=eps, unbiased=unbiased)


def _matrix_sqrt_and_inverse_sqrt(cov: Tensor) -> tuple[Tensor, Tensor]:
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    eigenvalues = eigenvalues.clamp_min(1e-12)
    root = eigenvectors @ torch.diag_embed(eigenvalues.sqrt()) @ eigenvectors.transpose(-1, -2)
    inverse_root = eigenvectors @ torch.diag_embed(eigenvalues.rsqrt()) @ eigenvectors.transpose(-1, -2)
    return root, inverse_root


def coral(source: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """CORAL colour transfer: recolour ``source`` so its RGB mean and covariance match ``target``'s.

    x' = Σ_t^{1/2} Σ_s^{-1/2} (x − μ_s) + μ_t, with eps·I added to both covariances (the AdaIN
    reference adds I). Used for colour preservation: recolour the style image to the content's
    palette. Accepts (3, H, W) or (B, 3, H, W) in [0, 1]; output is clamped to [0, 1].
    """
    squeeze = source.dim() == 3
    if squeeze:
        source, target = source.unsqueeze(0), target.unsqueeze(0)
    if source.dim() != 4 or source.shape[1] != 3 or target.dim() != 4 or target.shape[1] != 3:
        raise ValueError(f"coral expects RGB images; got {tuple(source.shape)} and {tuple(target.shape)}")
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"coral: batch sizes differ ({source.shape[0]} vs {target.shape[0]})")
    b = source.shape[0]
    src = source.reshape(b, 3, -1).double()
    tgt = target.reshape(b, 3, -1).double()
    mu_s, mu_t = src.mean(2, keepdim=True), tgt.mean(2, keepdim=True)
    eye = torch.eye(3, dtype=src.dtype, device=src.device)
    cov_s = (src - mu_s) @ (src - mu_s).transpose(1, 2) / src.shape[2] + eps * eye
    cov_t = (tgt - mu_t) @ (tgt - mu_t).transpose(1, 2) / tgt.shape[2] + eps * eye
    _, inv_root_s = _matrix_sqrt_and_inverse_sqrt(cov_s)
    root_t, _ = _matrix_sqrt_and_inverse_sqrt(cov_t)
    out = root_t @ inv_root_s @ (src - mu_s) + mu_t
    out = out.reshape(source.shape).to(source.dtype).clamp(0.0, 1.0)
    return out.squeeze(0) if squeeze else out


def feature_covariance(x: Tensor) -> Tensor:
    """Covariance of N vectors stored channel-major, x (B, D, N) → (B, D, D), divided by N.

    Feature maps flattened to (B, C, HW) are already in this layout, so no copy is needed.
    """
    if x.dim() != 3:
        raise ValueError(f"feature_covariance expects (B, D, N) vectors; got shape {tuple(x.shape)}")
    x = _at_least_fp32(x)
    centred = (x - x.mean(dim=2, keepdim=True)).contiguous()
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _GramProduct.apply(centred, 1.0 / x.shape[2])


def channel_covariance(x: Tensor) -> Tensor:
    """Covariance of a set of D-dim vectors x (B, N, D) → (B, D, D), divided by N (STROTSS)."""
    if x.dim() != 3:
        raise ValueError(f"channel_covariance expects (B, N, D) vectors; got shape {tuple(x.shape)}")
    return feature_covariance(x.transpose(1, 2))


def cosine_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine distances C_ij = 1 − a_i·b_j / (‖a_i‖‖b_j‖); (B, N, D), (B, M, D) → (B, N, M)."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"cosine_distance expects (B, N, D) and (B, M, D); got {tuple(a.shape)}, {tuple(b.shape)}")
    a = F.normalize(a.float(), dim=2, eps=eps)
    b = F.normalize(b.float(), dim=2, eps=eps)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return 1.0 - a @ b.transpose(1, 2)


def random_locations(batch: int, count: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
    """``count`` random sample locations per image, as (B, count, 2) grid coordinates in [−1, 1].

    Drawn where ``generator`` lives (the global RNG of ``device`` when None) and moved to ``device`` only if that
    is elsewhere: a loss that draws on the images' own device never copies from the host mid-forward, which on
    an accelerator waits for all the work queued before it. A seed gives the same locations on a device type.
    """
    if count < 1:
        raise ValueError(f"count must be a positive number of sample locations; got {count}")
    where = generator.device if generator is not None else torch.device(device)
    coordinates = torch.rand(batch, count, 2, generator=generator, device=where) * 2.0 - 1.0
    return coordinates.to(device, non_blocking=True)


def sample_hypercolumns(features: Mapping[str, Tensor] | Sequence[Tensor], locations: Tensor,
                        layer_weights: Sequence[float] | None = None) -> Tensor:
    """Hypercolumns at ``locations``: each feature map is bilinearly sampled there and the
    channels are concatenated (STROTSS), giving (B, N, ΣC).

    ``locations`` are (B, N, 2) (x, y) coordinates in [−1, 1] of the image, shared by all layers
    whatever their resolution. ``layer_weights`` scale each layer's block of channels.
    """
    maps = list(features.values()) if isinstance(features, Mapping) else list(features)
    if not maps:
        raise ValueError("sample_hypercolumns needs at least one feature map")
    grid = locations.unsqueeze(1).to(device=maps[0].device)  # (B, 1, N, 2)
    columns = []
    for index, fmap in enumerate(maps):
        _check_feature_map(fmap, "feature map")
        sampled = F.grid_sample(fmap.float(), grid.float(), mode="bilinear", align_corners=False)
        block = sampled.squeeze(2).transpose(1, 2)  # (B, N, C)
        if layer_weights is not None:
            block = block * layer_weights[index]
        columns.append(block)
    return torch.cat(columns, dim=2)


# RGB → YUV (BT.601): luminance and two chroma axes, for colour preservation (stylize's "luminance" mode).
RGB_TO_YUV = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
)

# RGB → STROTSS's palette space (its reference's rgb_to_yuv_pc): an orthonormal basis whose first axis is the
# grey axis (1, 1, 1)/√3 and whose two chroma axes are symmetric in G and B. Being a rotation, it keeps Euclidean
# distances: the palette term's Euclidean part is the RGB distance, and only its cosine part sees the rotation.
_G = 1 / math.sqrt(3)
RGB_TO_PALETTE = torch.tensor([[_G, _G, _G], [-_G, (1 + _G) / 2, (_G - 1) / 2], [-_G, (_G - 1) / 2, (1 + _G) / 2]])


def rgb_to_palette_space(x: Tensor) -> Tensor:
    """Map (B, 3, H, W) RGB to STROTSS's orthonormal palette space (:data:`RGB_TO_PALETTE`)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (B, 3, H, W); got {tuple(x.shape)}")
    return torch.einsum("ij,bjhw->bihw", RGB_TO_PALETTE.to(x.device, torch.float32), x.float())


def rgb_to_yuv(x: Tensor) -> Tensor:
    """Map (B, 3, H, W) RGB to YUV (BT.601): Y the luminance, U and V the chroma."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (B, 3, H, W); got {tuple(x.shape)}")
    return torch.einsum("ij,bjhw->bihw", RGB_TO_YUV.to(x.device, torch.float32), x.float())
