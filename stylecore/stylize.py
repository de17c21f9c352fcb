"""Inference: the :class:`Stylizer` every caller uses (CLI, batch stylization, notebooks).

One Stylizer serves every model through the model contract (content code, style code, transfer,
decode): α, colour preservation (``coral``: recolour the style to the content's palette first;
``luminance``: keep the content's chroma and take only the stylized luminance), several styles with
fractional weights, any image size (padded to the model's multiple, cropped back), optional tiling
with overlap for images larger than ``max_side``, batching. Deterministic: eval mode, no sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from stylecore import functional as SF
from stylecore.data import load_image, resize_short_side
from stylecore.devices import bf16_supported, is_out_of_memory
from stylecore.models.base import StyleTransferModel, check_image_batch, normalize_weights

ImageLike = Union[Tensor, str, Path]
COLOR_MODES = (None, "coral", "luminance")
STYLIZE_PRECISIONS = ("fp32", "bf16", "auto")
#: content with more pixels than this is stylized in tiles by default: a whole 6000×6000 photo through a
#: decoder needs tens of GB of activations, a 2048² tile about 1.5 GB (AdaIN, fp32)
DEFAULT_PIXEL_BUDGET = 2048 * 2048


class StylizeMemoryError(MemoryError):
    """The device ran out of memory stylizing an image; the message gives the size and the settings to lower."""


def as_image(image: ImageLike, argument: str) -> Tensor:
    """A (3, H, W) float image in [0, 1] from a tensor, a path or a PIL image."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if not isinstance(image, Tensor):
        from PIL import Image

        from stylecore.imaging import to_rgb

        if not isinstance(image, Image.Image):
            raise TypeError(f"{argument}: expected a tensor, a path or a PIL image; got {type(image).__name__}")
        return torch.from_numpy(np.asarray(to_rgb(image)).copy()).permute(2, 0, 1).float() / 255.0
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"{argument}: expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    return check_image_batch(image.unsqueeze(0), argument)[0]


def _expand(code: Any, batch: int) -> Any:
    if isinstance(code, Tensor):
        return code.expand(batch, *code.shape[1:]) if code.shape[0] == 1 and batch > 1 else code
    if isinstance(code, dict):
        return {key: _expand(value, batch) for key, value in code.items()}
    if isinstance(code, (tuple, list)):
        return type(code)(_expand(value, batch) for value in code)
    return code


def _code_shapes(code: Any) -> Any:
    """A style code's tensor shapes (codes of equal shapes stack into one batch)."""
    if isinstance(code, Tensor):
        return tuple(code.shape)
    if isinstance(code, dict):
        return tuple((key, _code_shapes(value)) for key, value in sorted(code.items()))
    if isinstance(code, (tuple, list)):
        return tuple(_code_shapes(value) for value in code)
    return repr(code)


def _stack_codes(codes: Sequence[Any]) -> Any:
    """Style codes of one shape, one per sample, as one code with a batch dimension (a code is a tensor with a
    batch dimension of 1, or a dict / tuple of them; anything else must be the same for all)."""
    first = codes[0]
    if isinstance(first, Tensor):
        return torch.cat([code.expand(1, *code.shape[1:]) if code.shape[0] == 1 else code for code in codes])
    if isinstance(first, dict):
        return {key: _stack_codes([code[key] for code in codes]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_stack_codes(list(parts)) for parts in zip(*codes))
    if any(code != first for code in codes[1:]):
        raise ValueError(f"style codes differ in a part that has no batch dimension: {first!r}")
    return first


def _batches(keys: Sequence[Hashable], size: int) -> Iterator[list[int]]:
    """The indices of ``keys``, grouped by equal key (first-seen order) and cut into chunks of at most ``size``:
    the inputs that can share one batch through the model."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    for indices in groups.values():
        for start in range(0, len(indices), size):
            yield indices[start:start + size]


def preserve_luminance(stylized: Tensor, content: Tensor) -> Tensor:
    """The stylized luminance with the content's chroma (BT.601 YUV), both (B, 3, H, W) in [0, 1]."""
    out = SF.rgb_to_yuv(stylized.float())
    ref = SF.rgb_to_yuv(content.float())
    yuv = torch.cat([out[:, :1], ref[:, 1:]], dim=1)
    matrix = torch.linalg.inv(SF.RGB_TO_YUV.to(yuv))
    return torch.einsum("ij,bjhw->bihw", matrix, yuv).clamp(0, 1)


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, device: torch.device) -> Tensor:
    """1 in the middle, rising linearly over ``overlap`` pixels at both ends (never 0)."""
    ramp = torch.ones(length, device=device)
    if overlap > 0:
        edge = torch.linspace(1.0 / (overlap + 1), 1.0, overlap, device=device)
        ramp[:overlap] = torch.minimum(ramp[:overlap], edge)
        ramp[-overlap:] = torch.minimum(ramp[-overlap:], edge.flip(0))
    return ramp


@dataclass
class PreparedStyles:
    """Style batches (1, 3, H, W) on the stylizer's device and their codes (None under coral)."""

    images: list[Tensor]
    codes: list[Any] | None


class Stylizer:
    """Stylize images with a trained model.

    ``model``: a :class:`StyleTransferModel` or a checkpoint path. ``style_size``: resize each style so
    its short side has this many pixels (None keeps it). ``max_side``: content larger than this is
    stylized in overlapping tiles of this size (``tile_overlap`` pixels blended linearly, default
    min(64, max_side / 4)); the style code is computed once from the whole style, so tiles agree.
    ``max_pixels``: without ``max_side``, content with more pixels than this is tiled automatically in
    square tiles of √max_pixels (None: never), so a huge photo does not ask for tens of GB at once.

    A GAN translation model (:mod:`stylecore.gan`) takes the name of a domain where the others take style
    images: ``Stylizer("models/cyclegan-dots/checkpoint")(photo, "dots")``.
    """

    def __init__(self, model: StyleTransferModel | str | Path, device: str | torch.device | None = None,
                 alpha: float = 1.0, preserve_color: str | None = None, max_side: int | None = None,
                 tile_overlap: int | None = None, batch_size: int = 4, style_size: int | None = None,
                 max_pixels: int | None = DEFAULT_PIXEL_BUDGET, precision: str = "fp32") -> None:
        if isinstance(model, (str, Path)):
            from stylecore import load

            model = load(str(model))  # a checkpoint directory or an MLflow models:/ URI
        if preserve_color not in COLOR_MODES:
            raise ValueError(f"preserve_color={preserve_color!r} is not one of None, 'coral', 'luminance'")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}")
        if max_side is not None and max_side < 2 * model.min_side:
            raise ValueError(f"max_side={max_side} is too small for tiling; use at least {2 * model.min_side}")
        if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < (2 * model.min_side) ** 2):
            raise ValueError(f"max_pixels={max_pixels!r} must be an integer of at least {(2 * model.min_side) ** 2} "
                             "(or None to never tile automatically)")
        self.auto_tile = int(max_pixels ** 0.5) // 8 * 8 if max_pixels is not None and max_side is None else None
        if tile_overlap is None:
            tile_overlap = min(64, (max_side or self.auto_tile or 0) // 4)
        if max_side is not None and not 0 <= tile_overlap < max_side // 2:
            raise ValueError(f"tile_overlap must lie in [0, max_side / 2); got {tile_overlap}")
        from stylecore.gan import TranslationModel

        # a GAN translates to a named domain, given where the others take style images (see prepare_styles)
        self.translates = isinstance(model, TranslationModel)
        if self.translates and preserve_color == "coral":
            raise ValueError(f"{model.name} translates to a domain: coral colour transfer needs a style image "
                             "(preserve_color='luminance' works)")
        if self.translates and float(alpha) != 1.0:
            raise ValueError(f"{model.name} translates to a domain: alpha={alpha} interpolates a style code, which a "
                             "domain has not; leave alpha at 1")
        self.device = torch.device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        self.alpha, self.preserve_color = float(alpha), preserve_color
        self.max_side, self.tile_overlap = max_side, int(tile_overlap)
        self.max_pixels = max_pixels
        self.batch_size, self.style_size = int(batch_size), style_size
        if precision not in STYLIZE_PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {', '.join(STYLIZE_PRECISIONS)}")
        # auto: bf16 on a GPU that has it (where fp32 inference leaves its tensor cores idle); fp32 on CPU, where
        # outputs stay exactly those of the model's own arithmetic
        self.precision = ("bf16" if self.device.type == "cuda" and bf16_supported(self.device) else "fp32") \
            if precision == "auto" else precision

    # -- styles --------------------------------------------------------------------------------

    def _style_batch(self, style: ImageLike) -> Tensor:
        image = as_image(style, "style")
        if self.style_size:
            image = resize_short_side(image, self.style_size)
        return check_image_batch(image.unsqueeze(0).to(self.device), "style", self.model.min_side)

    @torch.inference_mode()
    def prepare_styles(self, styles: ImageLike | Sequence[ImageLike]) -> "PreparedStyles":
        """Load the styles once and encode them once; pass the result as ``styles`` to reuse it.

        With ``preserve_color="coral"`` the codes depend on each content image and are computed then.
        """
        if isinstance(styles, PreparedStyles):
            return styles
        style_list = [styles] if isinstance(styles, (Tensor, str, Path)) else list(styles)
        if self.translates:  # a GAN's "styles" are one domain name: checked here, before any image is read
            if len(style_list) != 1 or not isinstance(style_list[0], str):
                raise ValueError(f"{self.model.name} translates to one domain, given by name (one of "
                                 f"{', '.join(self.model.domains)}); got {style_list!r}")
            return PreparedStyles([], [self.model.style_code(style_list[0])])
        images = [self._style_batch(style) for style in style_list]
        codes = None if self.preserve_color == "coral" else [self.model.style_code(s) for s in images]
        return PreparedStyles(images, codes)

    # -- content -------------------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(self, content: ImageLike | Sequence[ImageLike], styles: ImageLike | Sequence[ImageLike],
                 weights: Sequence[float] | None = None, alpha: float | None = None) -> Tensor | list[Tensor]:
        """Stylize one content image (→ (3, H, W)) or a list (→ list), each with the mix of ``styles``."""
        single = isinstance(content, (Tensor, str, Path)) and not (isinstance(content, Tensor) and content.dim() == 4
                                                                   and content.shape[0] > 1)
        contents = [content] if single else (list(content.unbind(0)) if isinstance(content, Tensor) else list(content))
        prepared = self.prepare_styles(styles)
        style_images, codes = prepared.images, prepared.codes
        weights = normalize_weights(weights, len(codes) if codes is not None else len(style_images))
        alpha = self.alpha if alpha is None else float(alpha)
        images = [as_image(c, "content").to(self.device) for c in contents]
        outputs: list[Tensor | None] = [None] * len(images)
        # Batch content of one size together (the usual case: a folder of equal crops).
        for chunk in _batches([tuple(image.shape[-2:]) for image in images], self.batch_size):
            batch = torch.stack([images[i] for i in chunk])
            if codes is None:  # coral: recolour every style to each content image's palette
                for i, image in zip(chunk, batch):
                    recoloured = [SF.coral(s, image.unsqueeze(0)) for s in style_images]
                    own = [self.model.style_code(s) for s in recoloured]
                    outputs[i] = self._stylize_batch(image.unsqueeze(0), own, weights, alpha)[0]
            else:
                result = self._stylize_batch(batch, codes, weights, alpha)
                for i, image in zip(chunk, result):
                    outputs[i] = image
        finished = [out.cpu() for out in outputs if out is not None]
        return finished[0] if single else finished

    @torch.inference_mode()
    def stylize_each(self, contents: Sequence[ImageLike], styles: Sequence["PreparedStyles | ImageLike"],
                     alpha: float | None = None) -> list[Tensor]:
        """Content i with its own style i (prepared or not), for every i: contents of one size whose style codes
        have one shape run as one batch even when the styles differ (each sample's code stacked along the batch),
        so a dataset stylized round-robin over many styles still fills the device's batches. Tiling, α and colour
        preservation as in :meth:`__call__`; coral (codes per content) and style mixes go one content at a time.
        Outputs stay on the stylizer's device."""
        if len(contents) != len(styles):
            raise ValueError(f"{len(contents)} contents and {len(styles)} styles: give one style per content")
        prepared = [self.prepare_styles(style) for style in styles]
        if any(p.codes is None or len(p.codes) != 1 for p in prepared):
            return [self(content, style) for content, style in zip(contents, prepared)]
        alpha = self.alpha if alpha is None else float(alpha)
        images = [as_image(c, "content").to(self.device) for c in contents]
        outputs: list[Tensor] = [torch.empty(0)] * len(images)
        keys = [(tuple(image.shape[-2:]), _code_shapes(style.codes[0])) for image, style in zip(images, prepared)]
        for chunk in _batches(keys, self.batch_size):
            codes = _stack_codes([prepared[i].codes[0] for i in chunk])
            result = self._stylize_batch(torch.stack([images[i] for i in chunk]), [codes], [1.0], alpha)
            for i, image in zip(chunk, result):
                outputs[i] = image
        return outputs

    @torch.inference_mode()
    def stylize_pairs(self, contents: Sequence[ImageLike], styles: Sequence[ImageLike],
                      alpha: float | None = None) -> list[Tensor]:
        """Content i with style i, for every i (one style each, no mixing): pairs whose content and style sizes
        agree run as one batch through the model (a server's requests, each with its own style). Colour
        preservation and α as in :meth:`__call__`; no tiling (keep such inputs within ``max_pixels``)."""
        if len(contents) != len(styles):
            raise ValueError(f"{len(contents)} contents and {len(styles)} styles: give one style per content")
        alpha = self.alpha if alpha is None else float(alpha)
        images = [as_image(c, "content").to(self.device) for c in contents]
        style_images = [self._style_batch(s)[0] for s in styles]
        outputs: list[Tensor] = [torch.empty(0)] * len(images)
        keys = [(*image.shape[-2:], *style.shape[-2:]) for image, style in zip(images, style_images)]
        for chunk in _batches(keys, self.batch_size):
            batch = torch.stack([images[i] for i in chunk])
            style_batch = torch.stack([style_images[i] for i in chunk])
            if self.preserve_color == "coral":
                style_batch = torch.cat([SF.coral(s[None], c[None]) for s, c in zip(style_batch, batch)])
            index = torch.arange(len(chunk), device=batch.device)
            out = self.model.stylize_pairs(batch, style_batch, index, index, alpha).float().clamp(0, 1)
            if self.preserve_color == "luminance":
                out = preserve_luminance(out, batch)
            for i, image in zip(chunk, out):
                outputs[i] = image.cpu()
        return outputs

    def _tile_side(self, h: int, w: int) -> int | None:
        """The tile side for an h × w content, or None to stylize it whole."""
        if self.max_side is not None:
            return self.max_side if max(h, w) > self.max_side else None
        if self.auto_tile is not None and h * w > self.max_pixels:
            return self.auto_tile
        return None

    def _stylize_batch(self, batch: Tensor, codes: Sequence[Any], weights: Sequence[float], alpha: float) -> Tensor:
        h, w = batch.shape[-2:]
        tile = self._tile_side(h, w)
        try:
            out = self._tiled(batch, codes, weights, alpha, tile) if tile else self._plain(batch, codes, weights, alpha)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            text = str(error)
            raise StylizeMemoryError(
                f"out of memory stylizing {batch.shape[0]} image(s) of {w}x{h} on {batch.device} "
                f"({'tiles of ' + str(tile) if tile else 'whole'}): {text.splitlines()[0][:200]}. Lower max_side "
                "(--max-side) or max_pixels (--max-pixels) to stylize in smaller tiles, or downscale the input") from None
        out = out.float().clamp(0, 1)
        if self.preserve_color == "luminance":
            out = preserve_luminance(out, batch)
        return out

    def _plain(self, batch: Tensor, codes: Sequence[Any], weights: Sequence[float], alpha: float) -> Tensor:
        expanded = [_expand(code, batch.shape[0]) for code in codes]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model.stylize(batch, expanded, weights, alpha)

    def _tiled(self, batch: Tensor, codes: Sequence[Any], weights: Sequence[float], alpha: float, side: int) -> Tensor:
        b, _, h, w = batch.shape
        tile_h, tile_w = min(side, h), min(side, w)
        out = torch.zeros(b, 3, h, w, device=batch.device)
        norm = torch.zeros(1, 1, h, w, device=batch.device)
        mask = _ramp(tile_h, self.tile_overlap, batch.device)[:, None] * _ramp(tile_w, self.tile_overlap, batch.device)
        for top in _tile_starts(h, tile_h, self.tile_overlap):
            for left in _tile_starts(w, tile_w, self.tile_overlap):
                tile = batch[..., top:top + tile_h, left:left + tile_w]
                styled = self._plain(tile, codes, weights, alpha).float()
                out[..., top:top + tile_h, left:left + tile_w] += styled * mask
                norm[..., top:top + tile_h, left:left + tile_w] += mask
        return out / norm

    def stylize_files(self, contents: Iterable[Path], styles: Sequence[ImageLike], output_dir: Path | str,
                      weights: Sequence[float] | None = None, suffix: str = ".jpg", progress: bool = False,
                      skip_existing: bool = True) -> dict[str, Any]:
        """Stylize image files into ``output_dir`` (same stem, ``suffix``); unreadable files are reported,
        not fatal. Returns {"written": [...], "skipped": [...], "failed": {path: reason}}."""
        from stylecore.data import ImageLoadError, save_image

        output_dir = Path(output_dir)
        prepared = self.prepare_styles(styles)  # read and encode the styles once, not per content file
        report: dict[str, Any] = {"written": [], "skipped": [], "failed": {}}
        files = list(contents)
        iterator: Iterable[Path] = files
        if progress:
            from tqdm import tqdm

            iterator = tqdm(files, desc="stylize", unit="image", disable=None)  # None: no bar where it is no tty
        for path in iterator:
            target = output_dir / (Path(path).stem + suffix)
            if skip_existing and target.exists():
                report["skipped"].append(str(target))
                continue
            try:
                image = load_image(path)
            except ImageLoadError as error:
                report["failed"][str(path)] = str(error)
                continue
            try:
                result = self(image, prepared, weights)
            except ValueError as error:  # e.g. an image smaller than the model accepts
                report["failed"][str(path)] = str(error)
                continue
            save_image(result, target)
            report["written"].append(str(target))
        return report

