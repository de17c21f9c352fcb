"""Images in, batches out: image loading, image sources and the seeded content × style pair stream.

Every source is an indexable sequence of ``(key, image)`` with images as (3, H, W) float tensors in
[0, 1]. :class:`PairStream` draws training batches from a content and a style source: batch ``i``
depends only on (seed, i), so the stream is resumable from its position alone (``state_dict``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.imaging import (DECODE_FORMATS, IMAGE_SUFFIXES, MAX_PIXELS, ImageDecodeError, decode_rgb,
                               encode_image)
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo

# One shard folder, or several read as one set (e.g. Places365 and COCO as the content side).
ShardLocations = Union[str, Path, Sequence[Union[str, Path]]]


class ImageLoadError(ValueError):
    """A file is not an image stylecore can read; the message names it and the reason."""


def load_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> Tensor:
    """Read an image file as a (3, H, W) float tensor in [0, 1], RGB, EXIF orientation applied.

    Only the formats of :data:`stylecore.imaging.DECODE_FORMATS` are decoded, and an image over
    ``max_pixels`` is refused from its header, before decoding."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: no such file")
    try:
        array = np.asarray(decode_rgb(path, max_pixels).image, dtype=np.uint8)
    except ImageDecodeError as error:
        raise ImageLoadError(f"{path}: {error}; only {', '.join(DECODE_FORMATS)} images under {max_pixels} "
                             "pixels are read (convert or downscale it first)") from None
    except OSError as error:
        raise ImageLoadError(f"{path}: unreadable ({error.strerror or error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def save_image(image: Tensor, path: Path | str, quality: int = 95) -> None:
    """Write a (3, H, W) image in [0, 1] atomically; the format follows the suffix (.jpg, .png, …)."""
    from stylecore.io import atomic_write_bytes

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output suffix {path.suffix!r}; use .jpg, .png, .webp or .bmp")
    atomic_write_bytes(path, encode_image(to_uint8_hwc(image), fmt, quality))


def to_uint8_hwc(image: Tensor) -> np.ndarray:
    """A (3, H, W) float image in [0, 1] → (H, W, 3) uint8 pixels (rounded, clamped)."""
    return image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[str, Tensor]: ...


class FolderImages:
    """Every image file under a folder (recursively, sorted), keyed by its relative path."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"image folder {self.root} has no images (looked for {', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        path = self.files[index]
        return str(path.relative_to(self.root)), load_image(path)


class SyntheticImages:
    """Generated stand-ins, labelled as such: ``photos`` or ``artworks`` (cycling the style families)."""

    def __init__(self, kind: str, count: int = 64, size: int = 128, seed: int = 0) -> None:
        if kind not in ("photos", "artworks"):
            raise ValueError(f"synthetic kind {kind!r} is not one of 'photos', 'artworks'")
        self.kind, self.count, self.size, self.seed = kind, int(count), int(size), int(seed)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        if self.kind == "photos":
            return f"synthetic-photo-{index:05d}", synthetic_photo(self.seed * 100_003 + index, self.size)
        family = STYLE_FAMILIES[index % len(STYLE_FAMILIES)]
        return f"synthetic-{family}-{index:05d}", synthetic_artwork(self.seed * 100_003 + index, family, self.size)


def image_source(spec: str, size: int = 128, seed: int = 0) -> ImageSource:
    """``synthetic:photos[:N]`` / ``synthetic:artworks[:N]``, a shard folder (``manifest.json`` or ``*.tar``,
    e.g. ``data/shards/coco-train``) or an image folder."""
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        count = int(parts[2]) if len(parts) > 2 else 64
        return SyntheticImages(parts[1], count=count, size=size, seed=seed)
    from stylecore.shards import ShardImages, is_shard_location

    if is_shard_location(spec):
        return ShardImages(spec)
    return FolderImages(spec)


@dataclass
class Batch:
    content: Tensor
    style: Tensor
    content_keys: list[str]
    style_keys: list[str]
    style_labels: list[dict] | None = None  # each style sample's labels, where the source has them (shards)

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory, for non-blocking copies to a GPU."""
        return Batch(self.content.pin_memory(), self.style.pin_memory(), self.content_keys, self.style_keys,
                     self.style_labels)


def resize_short_side(image: Tensor, short: int) -> Tensor:
    """Resize (3, H, W) so the short side is ``short``, keeping the aspect ratio (antialiased)."""
    h, w = image.shape[-2:]
    scale = short / min(h, w)
    size = (max(short, round(h * scale)), max(short, round(w * scale)))
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A private generator seeded by a hash of ``parts`` (stable across processes and runs)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8)
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))


def unit_float(image: Tensor) -> Tensor:
    """uint8 pixels → float in [0, 1]; a float image is returned as it is."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


class Augment:
    """Resize (short side ``load_size``, aspect kept), random crop to ``crop_size``, optional horizontal
    flip; ``style_jitter`` adds Magenta's style augmentation to style images (brightness ±0.8 as an
    additive delta, saturation ×0.5–1.5, hue ±0.2, vertical flips, a random extra resize of +2…+200 px).
    Images are (3, H, W) floats in [0, 1] or uint8 pixels, the crops always floats: decoded uint8 pixels are
    converted only where they are cut out (a 256² crop of a 512 × 683 image is a fifth of its pixels)."""

    def __init__(self, crop_size: int, load_size: int | None = None, flip: bool = False,
                 style_jitter: bool = False) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size must be positive; got {crop_size}")
        self.crop_size, self.load_size = int(crop_size), int(load_size or crop_size)
        if self.load_size < self.crop_size:
            raise ValueError(f"load_size {self.load_size} is smaller than crop_size {self.crop_size}")
        self.flip, self.style_jitter = bool(flip), bool(style_jitter)

    def _crop_at_load_scale(self, image: Tensor, load: int, where: tuple[float, float]) -> Tensor:
        """The ``crop_size`` square at ``where`` (two uniform draws in [0, 1): its top and left, as fractions of the
        free room) of the image as resized to short side ``load``, cropped before it is resized: the window is
        placed on the resized image's grid and cut from the stored pixels, so only the crop is resampled (a 2×
        upscale of a whole 256 × 341 image is 8× the pixels of the 256² crop it feeds). The window's corners round
        to stored pixels, a shift of under one stored pixel."""
        h, w = image.shape[-2:]
        scale = load / min(h, w)
        resized = (max(load, round(h * scale)), max(load, round(w * scale)))  # what resize_short_side gives
        crop = self.crop_size
        top, left = int(where[0] * (resized[0] - crop + 1)), int(where[1] * (resized[1] - crop + 1))
        if resized == (h, w):
            return image[:, top:top + crop, left:left + crop]
        rows, cols = h / resized[0], w / resized[1]  # stored pixels per resized pixel, each axis
        y0, x0 = round(top * rows), round(left * cols)
        y1, x1 = max(y0 + 1, min(h, round((top + crop) * rows))), max(x0 + 1, min(w, round((left + crop) * cols)))
        window = unit_float(image[None, :, y0:y1, x0:x1])
        return F.interpolate(window, size=(crop, crop), mode="bilinear", align_corners=False,
                             antialias=True)[0].clamp(0, 1)

    def __call__(self, image: Tensor, generator: torch.Generator, style: bool = False) -> Tensor:
        return self.batch([image], generator, style)[0]

    def batch(self, images: Sequence[Tensor], generator: torch.Generator, style: bool = False) -> Tensor:
        """The augmented crops of ``images``, stacked: (N, 3, crop, crop) floats in [0, 1].

        Built for loader threads, where every tensor op hands Python's lock over: one draw from ``generator`` for
        the whole batch (eight uniforms an image: extra load size, top, left, flip, then the style jitter's), each
        crop written straight into its slot of the batch, and uint8 pixels that need no resampling converted there
        and divided by 255 once for the whole batch (bench/bench_loader.py)."""
        crop, jitter = self.crop_size, style and self.style_jitter
        out = torch.empty(len(images), 3, crop, crop, device=images[0].device)
        draws = torch.rand(len(images), 8, generator=generator).tolist()
        scaled = []  # slots holding 0–255 values (uint8 pixels copied as they are)
        for slot, (image, u) in enumerate(zip(images, draws)):
            load = self.load_size + (2 + int(u[0] * 199) if jitter else 0)  # Magenta's +2…+200 px
            image = self._crop_at_load_scale(image, load, (u[1], u[2]))
            if self.flip and u[3] < 0.5:
                image = image.flip(-1)
            if jitter:
                image = self._jitter(unit_float(image), u[4:])
            elif image.dtype == torch.uint8:
                scaled.append(slot)
            out[slot].copy_(image)
        if len(scaled) == len(images):
            out.div_(255.0)
        else:
            for slot in scaled:
                out[slot].div_(255.0)
        return out

    @staticmethod
    def _jitter(image: Tensor, u: Sequence[float]) -> Tensor:
        """Magenta's colour jitter from four uniforms: brightness ±0.8 (additive), saturation ×0.5–1.5, hue ±0.2,
        and a vertical flip half the time."""
        import torchvision.transforms.v2.functional as TF

        image = (image + (-0.8 + 1.6 * u[0])).clamp(0, 1)
        image = TF.adjust_saturation(image, 0.5 + u[1])
        image = TF.adjust_hue(image, -0.2 + 0.4 * u[2])
        return image.flip(-2) if u[3] < 0.5 else image


class PairStream:
    """An endless, seeded, resumable stream of content × style batches from indexable sources.

    Images pass through :class:`Augment`. Batch ``i`` is drawn from a generator seeded by
    (seed, rank, world size, i), so the stream resumes exactly from ``state_dict()`` (its position)
    and every DDP rank draws its own batches.
    """

    def __init__(self, content: ImageSource, style: ImageSource, batch_size: int, crop_size: int,
                 load_size: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 flip: bool = False, style_jitter: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        if len(content) == 0 or len(style) == 0:
            raise ValueError("both the content and the style source need at least one image")
        self.content, self.style = content, style
        self.batch_size = int(batch_size)
        self.augment = Augment(crop_size, load_size, flip, style_jitter)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"data stream state has seed {state['seed']}, this stream {self.seed}")
        self.position = int(state["position"])

    def batch(self, index: int) -> Batch:
        generator = seeded_generator(self.seed, self.rank, self.world_size, index)
        def pick(source: ImageSource) -> list[tuple[str, Tensor]]:
            return [source[i] for i in torch.randint(len(source), (self.batch_size,), generator=generator).tolist()]

        contents, styles = pick(self.content), pick(self.style)
        return Batch(self.augment.batch([image for _, image in contents], generator),
                     self.augment.batch([image for _, image in styles], generator, style=True),
                     [key for key, _ in contents], [key for key, _ in styles])

    def __iter__(self) -> Iterator[Batch]:
        while True:
            batch = self.batch(self.position)
            self.position += 1
            yield batch


class ShardPairStream:
    """Endless content × style batches streamed from shard folders, for sets too large to hold.

    Each side is a resampled WebDataset stream split by node (so every DDP rank reads its own shards
    and none runs dry before the others), shuffled in a buffer, decoded and augmented. The position is
    saved; a resumed stream is reseeded from (seed, position): the same distribution, not the
    identical sample order (use :class:`PairStream` where bitwise resumption matters). ``workers``
    background threads decode and augment ahead of the training thread (see :meth:`_prefetched`).
    ``style_labels`` keeps only the style samples with those labels (``{"style": "Impressionism"}``): the
    unpaired domain stream a GAN trains on, photos on one side and one domain's artworks on the other.
    """

    def __init__(self, content: ShardLocations, style: ShardLocations, batch_size: int, crop_size: int,
                 load_size: int | None = None, seed: int = 0, flip: bool = False, style_jitter: bool = False,
                 shuffle_buffer: int = 1000, workers: int = 0, pin_memory: bool | None = None,
                 style_labels: Mapping[str, Any] | None = None,
                 decode_device: str | torch.device | None = None) -> None:
        from stylecore.shards import check_label_filter, label_filter, shard_urls

        shard_urls(content), shard_urls(style)  # fail now, with the fix, if either is not a shard folder
        # the style side's domain (a GAN's target): only samples with these labels, a label no shard has fails now
        self.style_labels = label_filter(style_labels)
        check_label_filter(style, self.style_labels, "style_labels")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"loader workers must be an integer ≥ 0; got {workers!r}")
        self.content, self.style = content, style
        self.batch_size = int(batch_size)
        self.augment = Augment(crop_size, load_size, flip, style_jitter)
        self.seed, self.shuffle_buffer = int(seed), int(shuffle_buffer)
        self.workers = workers
        # None: each image decoded where it is read (the loader threads); a device: the batch's JPEGs decoded there
        # together (nvJPEG on a GPU) and cropped there, the threads only reading and shuffling the bytes
        self.decode_device = None if decode_device is None else torch.device(decode_device)
        pinnable = self.decode_device is None or self.decode_device.type == "cpu"
        self.pin_memory = pinnable and (torch.cuda.is_available() if pin_memory is None else bool(pin_memory))
        from webdataset.utils import pytorch_worker_info

        self.rank = pytorch_worker_info()[0]  # this DDP rank, fixed at construction: every lane draws with it
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def batches(self, start: int, lane: int = 0) -> Iterator[Batch]:
        """The endless batches of one reader: seeded by (seed, start position, lane), so the inline stream
        (lane 0) and each loader thread (its own lane) read their own reproducible sequence."""
        from stylecore.shards import decode_jpegs, stream_shards

        stream_seed = int(seeded_generator(self.seed, start, *([lane] if lane else [])).initial_seed() % (2**31))
        decoded = self.decode_device is None
        contents = stream_shards(self.content, stream_seed, self.shuffle_buffer, rank=self.rank, decode=decoded)
        styles = stream_shards(self.style, stream_seed + 1, self.shuffle_buffer, rank=self.rank,
                               labels=self.style_labels, decode=decoded)
        generator = seeded_generator(self.seed, "augment", start, *([lane] if lane else []))

        def images(items: list[tuple[str, Any, dict]]) -> Sequence[Tensor]:
            read = [image for _, image, _ in items]
            return read if decoded else decode_jpegs(read, self.decode_device)

        while True:
            c_items = [next(contents) for _ in range(self.batch_size)]
            s_items = [next(styles) for _ in range(self.batch_size)]
            yield Batch(self.augment.batch(images(c_items), generator),
                        self.augment.batch(images(s_items), generator, style=True),
                        [key for key, _, _ in c_items], [key for key, _, _ in s_items],
                        [dict(meta.get("labels") or {}) for _, _, meta in s_items])

    def __iter__(self) -> Iterator[Batch]:
        if self.workers:
            yield from self._prefetched()
            return
        for batch in self.batches(self.position):
            self.position += 1
            yield batch

    def _prefetched(self) -> Iterator[Batch]:
        """Decode and augmentation in ``workers`` background threads, off the training thread: thread w reads lane
        w + 1 (:meth:`batches`) and the batches are handed over in turn (lane 1, lane 2, …, lane 1, …), so the
        sequence is a function of (seed, position, workers) and a resume continues it from the position. Threads,
        not processes: decoding and resizing are torch ops that release the GIL, and a thread hands its batch
        over without copying it through another process (bench/bench_loader.py: 1.8× the inline rate with 2 threads
        on 2 cores at the full profile's sizes; DataLoader processes gave 1.4–1.6×, BENCHMARKS.md). Batches are
        pinned when CUDA is present, ready for a non-blocking copy."""
        import queue
        import threading

        stop = threading.Event()
        lanes = [queue.Queue(maxsize=2) for _ in range(self.workers)]
        failures: list[BaseException] = []
        start = self.position  # read once: the training thread advances the position while the lanes run

        def produce(lane: int) -> None:
            try:
                for batch in self.batches(start, lane + 1):
                    if self.pin_memory:
                        batch = batch.pin_memory()
                    while not stop.is_set():
                        try:
                            lanes[lane].put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as error:  # noqa: BLE001 - handed to the training thread, which raises it
                failures.append(error)
                stop.set()

        threads = [threading.Thread(target=produce, args=(lane,), daemon=True, name=f"stylecore-loader-{lane}")
                   for lane in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            index = 0
            while True:
                while True:
                    try:
                        batch = lanes[index % self.workers].get(timeout=0.1)
                        break
                    except queue.Empty:
                        if failures:
                            raise failures[0]
                index += 1
                self.position += 1
                yield batch
        finally:
            stop.set()  # the stream was closed (or the trainer stopped): end the threads before the interpreter does
            for thread in threads:
                thread.join(timeout=10)


