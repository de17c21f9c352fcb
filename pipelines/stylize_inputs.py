"""Batch stylization's inputs: what is listed on the driver (input keys, refused unsafe ones, styles, each input's
style by policy) and what the CPU tasks decode. Shared by :mod:`pipelines.stylize_dataset` and its commit log.

Styles are image files, a folder or a shard set; the ``policy`` gives each input its style: ``one``
(the first style for all), ``round_robin`` (by the input's position in key order), ``random``
(seeded by a hash of the key, so the choice survives a restart) or ``all`` (every input with every style: the
output ``<input key>/<style key>``, a content × style grid such as the evaluation's pairs).
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stylecore.imaging import IMAGE_SUFFIXES, MAX_PIXELS, open_image
from stylecore.io import UnsafeName, check_output_name

POLICIES = ("one", "round_robin", "random", "all")
FORMATS = ("webdataset", "files")
PARTS = "_parts"
RUN_TOKEN = "RUN"  # in _parts/: the id of the run allowed to commit


class StylizeError(RuntimeError):
    """Bad arguments or inputs; the message names the argument or file and the fix."""


@dataclass
class Inputs:
    """The inputs in key order: shard URLs (``kind="shards"``) or files under ``root`` (``kind="files"``)."""

    kind: str
    keys: list[str]
    urls: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # key → path (files only)
    #: inputs whose key cannot name an output inside the output folder ({"key", "reason"}), never read
    refused: list[dict[str, str]] = field(default_factory=list)


def _split_unsafe(keys: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Keys that can name an output file, and the rejections of those that cannot (``..``, absolute, …)."""
    safe, refused = [], []
    for key in keys:
        try:
            safe.append(check_output_name(key))
        except UnsafeName as error:
            refused.append({"key": key, "reason": f"unsafe key: {error}; outputs are named by key"})
    return safe, refused


def arrow_filesystem(url: str):
    """None for local files and the schemes Ray Data reads natively (s3, gs, hdfs, …); any other fsspec URI
    through pyarrow's fsspec handler."""
    from stylecore.shards import is_remote

    if not is_remote(url):
        return None
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(url)
        return None
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, ValueError):
        from pipelines.storage import filesystem

        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(filesystem(url)[0]))


def _tar_keys(url: str) -> list[str]:
    """The sample keys of one WebDataset tar, from its headers (data is skipped, not read)."""
    from stylecore.shards import open_shard

    keys: dict[str, None] = {}
    with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
        for member in tar:
            if member.isfile() and not member.name.startswith("_"):
                base = member.name.rsplit("/", 1)[-1]
                directory = member.name[:-len(base)]
                keys[directory + base.split(".", 1)[0]] = None
    return list(keys)


def _keep(keys: list[str], only: Sequence[str] | None, what: str) -> list[str]:
    """``keys`` restricted to ``only`` (None: all), each of which must be there."""
    if only is None:
        return keys
    present = set(keys)
    absent = [key for key in only if key not in present]
    if absent:
        raise StylizeError(f"{what}: no key{'s' if len(absent) > 1 else ''} {absent[:5]} among them")
    wanted = set(only)
    return [key for key in keys if key in wanted]


def list_inputs(location: str | Path | Sequence[str | Path], limit: int | None = None,
                only: Sequence[str] | None = None) -> Inputs:
    """Shard folders / tar files, or an image folder; ``only`` keeps those keys (each must be there), ``limit``
    the first keys in key order."""
    from stylecore.shards import is_shard_location, shard_urls

    locations = [location] if isinstance(location, (str, Path)) else list(location)
    if not locations:
        raise StylizeError("no input given; pass a shard folder, tar files or an image folder")
    if all(is_shard_location(loc) for loc in locations):
        try:
            urls = shard_urls(locations)
        except FileNotFoundError as error:
            raise StylizeError(f"input {locations}: {error}") from None
        keys = [key for url in urls for key in _tar_keys(url)]
        from collections import Counter

        duplicated = sorted(key for key, count in Counter(keys).items() if count > 1)
        if duplicated:
            raise StylizeError(f"input shards repeat the keys {duplicated[:5]}; outputs are named by key, so keys must be "
                               "unique (reshard, or stylize the shard sets separately)")
        safe, refused = _split_unsafe(keys)
        return Inputs("shards", _keep(sorted(safe), only, f"input {locations}")[:limit], urls=urls, refused=refused)
    if len(locations) != 1 or not Path(locations[0]).is_dir():
        raise StylizeError(f"input {locations}: expected one image folder, or shard folders / .tar files")
    root = Path(locations[0])
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            key = path.relative_to(root).with_suffix("").as_posix()
            if key in files:
                raise StylizeError(f"input folder {root}: {files[key]} and {path} have the same key {key!r}; "
                                   "outputs are named by key, rename one")
            files[key] = str(path.resolve())
    if not files:
        raise StylizeError(f"input folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    safe, refused = _split_unsafe(list(files))
    keys = _keep(sorted(safe), only, f"input folder {root}")[:limit]
    return Inputs("files", keys, files={k: files[k] for k in keys}, refused=refused)


def load_styles(location: str | Path | Sequence[str | Path], only: Sequence[str] | None = None
                ) -> list[tuple[str, bytes]]:
    """Style images as (key, encoded bytes) from files, a folder or a shard set, in the order found; ``only`` keeps
    those keys (each must be there). Each kept one is checked readable."""
    from stylecore.shards import ShardImages, is_remote, is_shard_location

    locations = [location] if isinstance(location, (str, Path)) else list(location)
    styles: list[tuple[str, bytes]] = []
    for loc in locations:
        path = Path(loc)
        if is_shard_location(loc):
            samples = ShardImages(loc).samples
            styles += [(s["__key__"], bytes(s["jpg"])) for s in samples]
        elif is_remote(loc):  # an image file or folder at a URI
            from pipelines.storage import filesystem

            fs, inner = filesystem(str(loc))
            if fs.isfile(inner):
                styles.append((inner.rsplit("/", 1)[-1].rsplit(".", 1)[0], fs.cat_file(inner)))
            elif fs.isdir(inner):
                base = inner.rstrip("/") + "/"
                styles += [(p[len(base):].rsplit(".", 1)[0], fs.cat_file(p)) for p in sorted(fs.find(inner))
                           if p.lower().endswith(IMAGE_SUFFIXES)]
            else:
                raise StylizeError(f"style {loc}: no such file, folder or shard set")
        elif path.is_dir():
            styles += [(p.relative_to(path).with_suffix("").as_posix(), p.read_bytes())
                       for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            styles.append((path.stem, path.read_bytes()))
        else:
            raise StylizeError(f"style {loc}: no such file, folder or shard set")
    if not styles:
        raise StylizeError(f"styles {locations}: no images found")
    if only is not None:
        kept = set(_keep([key for key, _ in styles], only, f"styles {locations}"))
        styles = [(key, data) for key, data in styles if key in kept]
    for key, data in styles:
        try:
            with open_image(data) as image:
                image.verify()
        except Exception as error:  # noqa: BLE001 - any decoder failure means the same thing here
            raise StylizeError(f"style {key}: not a readable image ({error}); remove it from the styles") from None
    return styles


@dataclass(frozen=True)
class Target:
    """One output to make: its key (its name in the output folder), the input it stylizes and the style index."""

    key: str
    source: str
    style: int


def plan_outputs(keys: Sequence[str], style_keys: Sequence[str], policy: str, seed: int) -> list[Target]:
    """The outputs ``policy`` asks for (``keys`` in key order): one per input with the style the policy gives it,
    or, under ``all``, one per input and style named ``<input key>/<style key>`` (the style keys must be able to
    name files)."""
    if policy == "all":
        for style in style_keys:
            try:
                check_output_name(style)
            except UnsafeName as error:
                raise StylizeError(f"style key {style!r}: {error}; policy all names outputs <input>/<style>, so "
                                   "rename the style image") from None
        return [Target(f"{key}/{style_key}", key, style) for key in keys for style, style_key in enumerate(style_keys)]
    count = len(style_keys)
    if policy == "one":
        return [Target(key, key, 0) for key in keys]
    if policy == "round_robin":
        return [Target(key, key, index % count) for index, key in enumerate(keys)]
    return [Target(key, key, int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest(), "big")
                   % count) for key in keys]


def decode_resize(data: bytes, size: int | None, max_pixels: int = MAX_PIXELS):
    """Encoded image bytes → (3, H, W) uint8 tensor, RGB, short side resized to ``size`` (None keeps it).

    The one input transform of the pipeline; the tests stylize its output in one process to compare.
    """
    import torch

    from stylecore.data import resize_short_side
    from stylecore.imaging import decode_rgb

    array = np.asarray(decode_rgb(data, max_pixels, needed_short_side=size).image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    if size:
        tensor = resize_short_side(tensor.float().div(255), size).mul(255).round().clamp(0, 255).byte()
    return tensor


def decode_batch(batch: dict[str, np.ndarray], *, size: int | None,
                 work: Mapping[str, Mapping[str, tuple[int, Sequence[int]]]], key_column: str, data_column: str,
                 key_of_path: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """A Ray Data batch of encoded inputs → one row per output still to make from each: its key, the input's key,
    pixels (uint8 bytes + shape), style and the jobs (models) still to do for it, or the reason it failed.

    ``work`` maps each input key to its outputs to do (output key → (style index, job indices)); other rows
    (done before by every model, or beyond the limit) are dropped here. An input is decoded once for all its
    outputs.
    """
    keys, sources, styles, jobs, pixels, heights, widths, errors = [], [], [], [], [], [], [], []
    for name, data in zip(batch[key_column], batch[data_column]):
        source = key_of_path.get(str(name), str(name)) if key_of_path is not None else str(name)
        if source not in work:
            continue
        try:
            image = decode_resize(bytes(data), size)
            decoded = (image.permute(1, 2, 0).contiguous().numpy().tobytes(), image.shape[1], image.shape[2], "")
        except Exception as error:  # noqa: BLE001 - the input is recorded with the reason, the rest go on
            decoded = (b"", 0, 0, f"unreadable: {type(error).__name__}: {error}")
        for key, (style, todo) in work[source].items():
            keys.append(key)
            sources.append(source)
            styles.append(style)
            jobs.append(",".join(str(j) for j in todo))
            for column, value in zip((pixels, heights, widths, errors), decoded):
                column.append(value)
    return {"key": np.array(keys, dtype=object), "source": np.array(sources, dtype=object),
            "style": np.array(styles, dtype=np.int64), "jobs": np.array(jobs, dtype=object),
            "pixels": np.array(pixels, dtype=object), "height": np.array(heights, dtype=np.int64),
            "width": np.array(widths, dtype=np.int64), "error": np.array(errors, dtype=object)}


