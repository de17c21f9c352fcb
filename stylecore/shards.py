"""WebDataset shards: the sample schema, image preparation, the writer and the readers.

Schema of every sample (../shared/DESIGN.md): ``__key__`` (stable, derived from the source path),
``jpg`` (RGB JPEG, short side ``store_size``) and ``json`` (source, split, original path, original
size, labels). Every shard folder has a ``manifest.json``: shards, sample counts per shard and per
label, and every rejected input with the reason.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence


from stylecore.io import atomic_write_text

if TYPE_CHECKING:  # torch is imported lazily: shard worker processes only need Pillow
    import torch
    from torch import Tensor

SAMPLE_EXTENSIONS = ("jpg", "json")
MANIFEST = "manifest.json"


@dataclass
class SourceItem:
    """One input image of a source: where it is and what is known about it."""

    path: str  # relative to the source root; the key is derived from it
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    key: str
    jpg: bytes
    meta: dict[str, Any]


@dataclass
class Rejected:
    path: str
    reason: str


def sample_key(relative_path: str) -> str:
    """A stable WebDataset key from a source path: readable, unique, with no dots (WebDataset splits keys
    from extensions at the first dot) and a short hash so that distinct paths never collide."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", relative_path.rsplit(".", 1)[0]).strip("_")[-80:]
    digest = hashlib.sha1(relative_path.encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def prepare_image(root: Path, item: SourceItem, source: str, split: str, store_size: int, quality: int,
                  min_side: int, max_pixels: int) -> Prepared | Rejected:
    """Decode, check, convert to RGB, resize (short side ``store_size``, never upscaled) and JPEG-encode.

    Decoding is :func:`stylecore.imaging.decode_rgb`'s: allowed formats only, the pixel budget checked on
    the header (a large JPEG is decoded at the reduced scale ``store_size`` allows, so it is read, not
    refused), EXIF orientation applied; ``original_size`` is the size as shown (after orientation)."""
    from PIL import Image

    from stylecore.imaging import ImageDecodeError, decode_rgb

    path = root / item.path
    try:
        size = path.stat().st_size
    except OSError as error:
        return Rejected(item.path, f"unreadable: {error.strerror or error}")
    if size == 0:
        return Rejected(item.path, "zero-byte file")
    try:
        decoded = decode_rgb(path, max_pixels, needed_short_side=store_size)
    except ImageDecodeError as error:
        reason = str(error)
        return Rejected(item.path, reason if reason.startswith(("decompression", "corrupt")) else f"not an image: {reason}")
    except OSError as error:
        return Rejected(item.path, f"unreadable: {error.strerror or error}")
    width, height = decoded.original_size
    if min(width, height) < min_side:
        return Rejected(item.path, f"too small: {width}x{height}, min side {min_side}")
    rgb = decoded.image
    short = min(rgb.size)
    if short > store_size:
        scale = store_size / short
        rgb = rgb.resize((max(store_size, round(rgb.width * scale)),
                          max(store_size, round(rgb.height * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)  # optimize=True: ~40 % more time for ~5 % bytes
    meta = {"source": source, "split": split, "path": item.path, "original_size": [width, height],
            "stored_size": list(rgb.size), "labels": dict(item.labels)}
    return Prepared(sample_key(item.path), buffer.getvalue(), meta)


def write_shards(results: Iterable[Prepared | Rejected], out_dir: Path, prefix: str, maxcount: int,
                 extra_manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write prepared samples with ``webdataset.ShardWriter`` (fixed mtime: byte-identical reruns) and the
    manifest. ``out_dir`` is filled in place; the caller makes it atomic (a temporary folder, renamed)."""
    import webdataset as wds

    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{prefix}-%06d.tar")
    counts: list[int] = []
    per_label: dict[str, dict[str, int]] = {}
    rejected: list[dict[str, str]] = []
    seen: set[str] = set()

    class _Counting(wds.ShardWriter):
        def next_stream(self) -> None:
            super().next_stream()
            counts.append(0)

    # mtime an int: a float makes tarfile add a PAX header to every member (3 header blocks, not 1, to parse per file)
    with _Counting(pattern, maxcount=maxcount, maxsize=3e9, mtime=0, verbose=0) as sink:
        for result in results:
            if isinstance(result, Rejected):
                rejected.append({"path": result.path, "reason": result.reason})
                continue
            if result.key in seen:
                rejected.append({"path": result.meta["path"], "reason": f"duplicate key {result.key}"})
                continue
            seen.add(result.key)
            sink.write({"__key__": result.key, "jpg": result.jpg,
                        "json": json.dumps(result.meta, sort_keys=True).encode()})
            counts[-1] += 1
            for name, value in result.meta["labels"].items():
                bucket = per_label.setdefault(name, {})
                bucket[str(value)] = bucket.get(str(value), 0) + 1
    shards = sorted(p.name for p in out_dir.glob(f"{prefix}-*.tar"))
    manifest = {
        **dict(extra_manifest or {}),
        "shards": [{"name": name, "samples": count} for name, count in zip(shards, counts)],
        "samples": sum(counts),
        "per_label": {name: dict(sorted(values.items())) for name, values in sorted(per_label.items())},
        "rejected": rejected,
    }
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URI of a non-local filesystem (``s3://``, ``gs://``, ``http://``…), read
    through fsspec; plain paths and ``file://`` URIs are local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | Path) -> Path:
    text = str(location)
    return Path(text[len("file://"):]) if text.startswith("file://") else Path(text)


#: the entry-point group that lends stylecore a filesystem for URIs: ``fsspec = "module:function"``, called with a
#: URI and returning (filesystem, path inside it). The pipeline extra registers fsspec's; stylecore imports none.
FILESYSTEMS = "stylecore.filesystems"


def _fs(location: str | Path):
    from importlib.metadata import entry_points

    found = [entry for entry in entry_points(group=FILESYSTEMS) if entry.name == "fsspec"]
    if not found:
        raise ImportError(f"{location}: reading a URI needs a filesystem; pip install 'stylecore[pipeline]'")
    return found[0].load()(str(location))


def is_shard_location(location: str | Path) -> bool:
    """Whether ``location`` is a shard folder (``manifest.json`` or ``*.tar`` files) or a manifest file."""
    if is_remote(location):
        fs, path = _fs(location)
        if path.endswith("/" + MANIFEST):
            return fs.isfile(path)
        return fs.isfile(f"{path.rstrip('/')}/{MANIFEST}") or bool(fs.glob(f"{path.rstrip('/')}/*.tar"))
    path = local_path(location)
    if path.is_file():
        return path.name == MANIFEST
    return path.is_dir() and ((path / MANIFEST).is_file() or any(path.glob("*.tar")))


def read_manifest(location: str | Path) -> dict | None:
    """The ``manifest.json`` of a shard folder (or the manifest file itself), local or a URI; None if absent."""
    if is_remote(location):
        fs, path = _fs(location)
        manifest = path if path.endswith("/" + MANIFEST) else f"{path.rstrip('/')}/{MANIFEST}"
        return json.loads(fs.cat_file(manifest)) if fs.isfile(manifest) else None
    path = local_path(location)
    manifest = path if path.name == MANIFEST and path.is_file() else path / MANIFEST
    return json.loads(manifest.read_text()) if manifest.is_file() else None


def shard_urls(locations: str | Path | Sequence[str | Path]) -> list[str]:
    """The shard files of one or several shard folders (each in its manifest's order), or manifest files.

    A location is a local path or any fsspec URI (``s3://bucket/shards/coco-train``): on a cluster the
    workers read the shards from shared storage. Several folders make one dataset (e.g. Places365 and
    COCO as the content side). A folder that a stage skipped (its manifest lists no shards) is an error
    only when nothing else has shards.
    """
    if isinstance(locations, (str, Path)):
        locations = [locations]
    urls: list[str] = []
    empty: list[str] = []
    for location in locations:
        text = str(location)
        if is_remote(text):
            folder = text[:-len(MANIFEST) - 1] if text.endswith("/" + MANIFEST) else text.rstrip("/")
            inside = lambda name: f"{folder}/{name}"  # noqa: E731
        else:
            path = local_path(text)
            folder_path = path.parent if path.name == MANIFEST and path.is_file() else path
            inside = lambda name: str(folder_path / name)  # noqa: E731
        data = read_manifest(location)
        if data is not None:
            found = [inside(entry["name"]) for entry in data["shards"] if entry["samples"] > 0]
            if not found:
                empty.append(f"{location} ({data.get('skipped') or 'no samples'})")
            urls += found
            continue
        if is_remote(location):
            fs, path = _fs(location)
            tars = sorted(fs.unstrip_protocol(p) for p in fs.glob(f"{path.rstrip('/')}/*.tar"))
        else:
            path = local_path(location)
            tars = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else []
        if not tars:
            raise FileNotFoundError(f"{location}: no shard folder (manifest.json or *.tar files) here; build shards "
                                    "with `dvc repro shard` or pipelines.shard")
        urls += tars
    if not urls:
        raise FileNotFoundError(f"no shards to read: {'; '.join(empty) or 'no locations given'}; select a profile "
                                "whose sources are downloaded and sharded (params.yaml: profile) and run `dvc repro shard`")
    return urls


def open_shard(url: str):
    """A binary stream of one shard: a local file, or any fsspec URI (streamed, not downloaded first)."""
    if is_remote(url):
        fs, path = _fs(url)
        return fs.open(path, "rb")
    return open(local_path(url), "rb")


def _opened(sources: Iterable[dict]) -> Iterator[dict]:
    for source in sources:
        yield {**source, "stream": open_shard(source["url"])}


def iterate_samples(urls: Sequence[str]) -> Iterator[dict]:
    """Every raw sample of ``urls`` in order (WebDataset's tar expansion and key grouping, with shards opened
    by :func:`open_shard`, so any fsspec URI works where WebDataset's own opener knows only a few schemes)."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    return iter(wds.DataPipeline(wds.SimpleShardList(list(urls)), _opened, tar_file_expander, group_by_keys))


def decode_sample(sample: Mapping[str, Any]) -> tuple[str, "Tensor", dict]:
    """A raw WebDataset sample → (key, (3, H, W) float image in [0, 1], metadata)."""
    key, pixels, meta = decode_pixels(sample)
    return key, pixels.float().div_(255.0), meta


def decode_pixels(sample: Mapping[str, Any]) -> tuple[str, "Tensor", dict]:
    """A raw WebDataset sample → (key, (3, H, W) uint8 pixels, metadata).

    JPEGs decode with torchvision's libjpeg-turbo decoder straight into a tensor (no PIL round trip);
    anything it cannot read falls back to Pillow (:func:`decode_jpegs`).
    """
    import torch

    key, data, meta = undecoded_sample(sample)
    return key, decode_jpegs([data], torch.device("cpu"))[0], meta


def undecoded_sample(sample: Mapping[str, Any]) -> tuple[str, "Tensor", dict]:
    """A raw WebDataset sample → (key, its JPEG bytes as a uint8 tensor, metadata)."""
    import torch

    meta = json.loads(sample["json"]) if "json" in sample else {}
    return sample["__key__"], torch.frombuffer(bytearray(sample["jpg"]), dtype=torch.uint8), meta


def decode_jpegs(datas: Sequence["Tensor"], device: "torch.device") -> list["Tensor"]:
    """JPEG bytes (uint8 tensors) → (3, H, W) uint8 RGB pixels on ``device``: on a CUDA device the whole list in
    one call to nvJPEG (torchvision's GPU decoder); on the CPU one libjpeg-turbo call per image, Pillow taking
    over where torchvision's operator is gone or cannot read one."""
    import torch

    if device.type == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)
    decoder, pixels = _jpeg_decoder(), []
    for data in datas:
        try:
            if decoder is None:
                raise RuntimeError("torchvision's JPEG decoder is not available")
            pixels.append(decoder(data))
        except RuntimeError:
            from stylecore.imaging import decode_rgb_array

            pixels.append(torch.from_numpy(decode_rgb_array(data.numpy().tobytes()).copy()).permute(2, 0, 1))
    return pixels if device.type == "cpu" else [p.to(device) for p in pixels]


@functools.cache
def _jpeg_decoder() -> Callable[["Tensor"], "Tensor"] | None:
    """torchvision's libjpeg-turbo operator (JPEG bytes → (3, H, W) uint8 RGB), or None without torchvision.

    The operator itself, not ``torchvision.io.decode_jpeg``: torchvision 0.29 deprecates its decoders in favour of
    TorchCodec, and the wrapper logs its use and raises a DeprecationWarning on every call, Python work that a
    loader thread does holding the interpreter's lock, per image (the operator stays 1.3× faster than PIL,
    BENCHMARKS.md). Pillow takes over where the operator is gone."""
    import torch

    try:
        from torchvision.io import ImageReadMode  # importing torchvision.io registers torch.ops.image

        operator, rgb = torch.ops.image.decode_jpeg, ImageReadMode.RGB.value
    except (ImportError, AttributeError, RuntimeError):
        return None
    return lambda data: operator(data, rgb, False)  # False: no EXIF rotation, as decode_jpeg's default


class ShardImages:
    """Every sample of a shard folder, in order, held as JPEG bytes (decoded on access).

    An :class:`stylecore.data.ImageSource` for small sets (evaluation pairs, demo training) and exact,
    each-sample-once evaluation; large training sets stream with :func:`stream_shards` instead.
    """

    def __init__(self, location: str | Path) -> None:
        self.urls = shard_urls(location)
        self.samples = [dict(s) for s in iterate_samples(self.urls)]
        if not self.samples:
            raise ValueError(f"{location}: the shards hold no samples")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, "Tensor"]:
        key, image, _ = decode_sample(self.samples[index])
        return key, image

    def metadata(self, index: int) -> dict:
        return json.loads(self.samples[index]["json"])


#: which samples a stream keeps: label name → the accepted values (a sample matches when every named label has one
#: of its values), e.g. ``{"style": ["Impressionism"]}`` — a GAN's target domain
LabelFilter = Mapping[str, Sequence[str]]


def label_filter(labels: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """``{"style": "Impressionism"}`` or ``{"style": ["Impressionism", "Fauvism"]}`` → the canonical
    :data:`LabelFilter` (values as strings, lists); a malformed one is a ValueError naming it."""
    out: dict[str, list[str]] = {}
    for name, values in dict(labels or {}).items():
        values = [values] if isinstance(values, (str, int)) else values
        if not isinstance(name, str) or not name or not isinstance(values, (list, tuple)) or not values or \
                not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"label filter {name!r}: {values!r} must be a label value or a non-empty list of them, "
                             "e.g. style: Impressionism")
        out[name] = [str(v) for v in values]
    return out


def check_label_filter(location: str | Path | Sequence[str | Path], labels: LabelFilter, where: str) -> int:
    """The number of samples of ``location`` that ``labels`` keeps, from the manifests' label counts (per label,
    the smallest count: the exact figure for one label); a label or value no manifest holds is a ValueError that
    names the ones there are. Folders without a manifest are not counted."""
    locations = [location] if isinstance(location, (str, Path)) else list(location)
    manifests = [m for m in (read_manifest(loc) for loc in locations) if m is not None]
    if not manifests or not labels:
        return -1
    kept = []
    for name, values in labels.items():
        counts: dict[str, int] = {}
        for manifest in manifests:
            for value, count in (manifest.get("per_label", {}).get(name) or {}).items():
                counts[value] = counts.get(value, 0) + int(count)
        if not counts:
            known = sorted({label for m in manifests for label in m.get("per_label", {})})
            raise ValueError(f"{where}: the shards {', '.join(map(str, locations))} have no label {name!r}; their "
                             f"labels are {', '.join(known) or 'none'}")
        missing = [v for v in values if v not in counts]
        if missing:
            raise ValueError(f"{where}: no sample of {', '.join(map(str, locations))} has {name} = "
                             f"{', '.join(missing)}; its values are {', '.join(sorted(counts))}")
        kept.append(sum(counts[v] for v in values))
    return min(kept)


def _matching(labels: LabelFilter) -> Callable[[dict], bool]:
    def keep(sample: dict) -> bool:  # reads the small json only: a rejected sample's JPEG is never decoded
        found = json.loads(sample["json"]).get("labels", {}) if "json" in sample else {}
        return all(str(found.get(name)) in values for name, values in labels.items())

    return keep


def stream_shards(location: str | Path | Sequence[str | Path], seed: int, shuffle_buffer: int = 1000,
                  rank: int | None = None, labels: LabelFilter | None = None,
                  decode: bool = True) -> Iterator[tuple[str, "Tensor", dict]]:
    """An endless, resampled, reproducible stream of decoded samples, (3, H, W) uint8 pixels (converted to float
    where they are cropped, :class:`stylecore.data.Augment`); with ``labels``, only the samples whose labels match
    (:data:`LabelFilter`), filtered before they are decoded. ``decode=False`` yields each sample's JPEG bytes as
    a uint8 tensor instead, for :func:`decode_jpegs` to decode a batch of them on a GPU.

    Shards are drawn at random with replacement, so a DDP rank never runs dry before the others; the
    draw is seeded by ``seed`` and the rank/loader worker (WebDataset's ``RANK``-aware worker seed), so
    ranks read different sequences and a rerun reads the same ones. (``WebDataset(resampled=True)``
    would reseed from the clock and pid, making every run different.)
    """
    import webdataset as wds

    from webdataset.tariterators import group_by_keys, tar_file_expander

    stages: list[Any] = [wds.select(_matching(labels))] if labels else []
    pipeline = wds.DataPipeline(
        # rank given: the shard draw depends on it and the seed only, not on which loader process reads it
        wds.ResampledShards(shard_urls(location), seed=seed, deterministic=True,
                            worker_seed=None if rank is None else (lambda: rank * 1000)),
        _opened, tar_file_expander, group_by_keys, *stages,
        wds.shuffle(shuffle_buffer, seed=seed),
    )
    for sample in pipeline:
        yield decode_pixels(sample) if decode else undecoded_sample(sample)
