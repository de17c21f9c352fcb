"""Batch stylization of whole datasets with Ray Data, resumable, and the DVC stage `stylize`.

    stylecore stylize-dataset --model models:/stylecore-adain-gram@champion --input data/shards/coco-val \\
        --styles paintings/ --output out/coco-val-adain --policy round_robin
    python -m pipelines.stylize          # the DVC stage: every registered champion on the demo content

The pipeline (:func:`stylize_dataset`): the inputs (WebDataset shards read with
``ray.data.read_webdataset``, or an image folder read with ``ray.data.read_binary_files``) are decoded
and resized on CPU tasks; an actor pool (``ActorPoolStrategy``; each actor loads the model once, from a
``models:/`` URI pinned to one registry version, or a checkpoint) stylizes them with
:class:`stylecore.stylize.Stylizer` and writes each batch itself: WebDataset shards (stylized ``jpg`` +
``json`` provenance: source key, style key, model URI and version, alpha) or image files named by key.

Every written batch is committed by a record in ``<output>/_parts/`` written after its images, so a
re-run after a crash skips exactly what was committed, rewrites nothing twice and deletes shards a
crash left without a record: no duplicates, no gaps. Inputs that cannot be stylized (unreadable,
too small, …) are recorded with the reason and the rest proceed. At the end ``<output>/manifest.json``
lists every output and every rejection, with the model, the settings and images/s.

:func:`stylize_with_models` runs several models in one pipeline (what the stage does with the champions):
the inputs are read and decoded once, every actor holds every model, and each model's images go to its
own output folder with its own commits and manifest.

Styles are image files, a folder or a shard set; the ``policy`` gives each input its style: ``one``
(the first style for all), ``round_robin`` (by the input's position in key order) or ``random``
(seeded by a hash of the key, so the choice survives a restart).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipelines.sources import CatalogueError, load_params, profile_shards
from pipelines.stage import run_stage
from stylecore.imaging import IMAGE_SUFFIXES, MAX_PIXELS, encode_image, open_image
from stylecore.io import (UnsafeName, atomic_write_bytes, atomic_write_text, check_output_name, confined_path,
                          remove_stale_temporaries)

POLICIES = ("one", "round_robin", "random")
FORMATS = ("webdataset", "files")
PARTS = "_parts"
RUN_TOKEN = "RUN"  # in _parts/: the id of the run allowed to commit


class StylizeError(RuntimeError):
    """Bad arguments or inputs; the message names the argument or file and the fix."""


# ---------------------------------------------------------------------------------------------------
# Inputs and styles, listed on the driver


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


def list_inputs(location: str | Path | Sequence[str | Path], limit: int | None = None) -> Inputs:
    """Shard folders / tar files, or an image folder; ``limit`` keeps the first keys in key order."""
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
        return Inputs("shards", sorted(safe)[:limit], urls=urls, refused=refused)
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
    keys = sorted(safe)[:limit]
    return Inputs("files", keys, files={k: files[k] for k in keys}, refused=refused)


def load_styles(location: str | Path | Sequence[str | Path]) -> list[tuple[str, bytes]]:
    """Style images as (key, encoded bytes) from files, a folder or a shard set; each is checked readable."""
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
    for key, data in styles:
        try:
            with open_image(data) as image:
                image.verify()
        except Exception as error:  # noqa: BLE001 - any decoder failure means the same thing here
            raise StylizeError(f"style {key}: not a readable image ({error}); remove it from the styles") from None
    return styles


def assign_styles(keys: Sequence[str], count: int, policy: str, seed: int) -> dict[str, int]:
    """Each input key's style index under ``policy`` (``keys`` in key order)."""
    if policy == "one":
        return {key: 0 for key in keys}
    if policy == "round_robin":
        return {key: index % count for index, key in enumerate(keys)}
    return {key: int.from_bytes(hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest(), "big") % count
            for key in keys}


# ---------------------------------------------------------------------------------------------------
# Decode (CPU tasks) and stylize (actors)


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


def decode_batch(batch: dict[str, np.ndarray], *, size: int | None, work: Mapping[str, tuple[int, Sequence[int]]],
                 key_column: str, data_column: str, key_of_path: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """A Ray Data batch of encoded inputs → pixels (uint8 bytes + shape), style and the jobs (models) still to do
    for it, or the reason it failed.

    ``work`` maps each key to do to (style index, job indices); other rows (done before by every model, or
    beyond the limit) are dropped here.
    """
    keys, styles, jobs, pixels, heights, widths, errors = [], [], [], [], [], [], []
    for name, data in zip(batch[key_column], batch[data_column]):
        key = key_of_path.get(str(name), str(name)) if key_of_path is not None else str(name)
        if key not in work:
            continue
        keys.append(key)
        style, todo = work[key]
        styles.append(style)
        jobs.append(",".join(str(j) for j in todo))
        try:
            image = decode_resize(bytes(data), size)
            pixels.append(image.permute(1, 2, 0).contiguous().numpy().tobytes())
            heights.append(image.shape[1])
            widths.append(image.shape[2])
            errors.append("")
        except Exception as error:  # noqa: BLE001 - the input is recorded with the reason, the rest go on
            pixels.append(b"")
            heights.append(0)
            widths.append(0)
            errors.append(f"unreadable: {type(error).__name__}: {error}")
    return {"key": np.array(keys, dtype=object), "style": np.array(styles, dtype=np.int64),
            "jobs": np.array(jobs, dtype=object), "pixels": np.array(pixels, dtype=object),
            "height": np.array(heights, dtype=np.int64), "width": np.array(widths, dtype=np.int64),
            "error": np.array(errors, dtype=object)}


@dataclass
class Job:
    """One model and the folder its stylized images go to; ``run_token`` fences the folder (see _check_current)."""

    model: str  # a checkpoint path or a models:/ URI pinned to a version
    model_info: dict[str, Any]
    output: Path
    run_token: str


class _JobWriter:
    """One job inside an actor: the loaded model with its prepared styles, and the folder it commits to."""

    def __init__(self, job: Job, stylizer, style_keys: list[str], style_image, output_format: str, image_format: str,
                 quality: int, provenance: Mapping[str, Any]) -> None:
        self.job, self.stylizer = job, stylizer
        self.style_keys, self.style_image = style_keys, style_image  # style_image(index): decoded once per actor
        # Encoded on first use: a few inputs over many styles (the demo: 16 photos, 50 artworks) use only a few.
        self.prepared: dict[int, Any] = {}
        self.output_format, self.image_format, self.quality = output_format, image_format, quality
        self.provenance = {"model": job.model, **job.model_info, **provenance}

    def _style(self, index: int):
        if index not in self.prepared:
            self.prepared[index] = self.stylizer.prepare_styles(self.style_image(index))
        return self.prepared[index]

    def _check_current(self) -> None:
        """Actors that outlive a crashed driver must not commit beside the run that replaced it."""
        if (self.job.output / PARTS / RUN_TOKEN).read_text() != self.job.run_token:
            raise RuntimeError(f"{self.job.output} is being written by a newer run; this one stops")

    def stylize_and_commit(self, items: list[tuple[str, int, Any]],
                           rejected: list[dict]) -> tuple[list[dict], list[dict]]:
        """Stylize (key, style, image) items, write them, commit them and ``rejected`` with one part record;
        returns what was written and every rejection (the given ones and the inputs this model could not
        stylize)."""
        rejected = list(rejected)
        by_style: dict[int, list[tuple[str, Any]]] = {}
        for key, style, image in items:
            by_style.setdefault(style, []).append((key, image))
        outputs: list[tuple[str, int, bytes]] = []
        for style, group in by_style.items():
            try:
                results = self.stylizer([image for _, image in group], self._style(style))
            except ValueError:  # one bad image (e.g. too small for the model) must not sink its batch
                results = []
                for key, image in group:
                    try:
                        results.append(self.stylizer(image, self._style(style)))
                    except ValueError as error:
                        rejected.append({"key": key, "reason": f"cannot stylize: {error}"})
                        results.append(None)
            for (key, _), result in zip(group, results):
                if result is not None:
                    outputs.append((key, style, encode_output(result, self.image_format, self.quality)))
        self._check_current()
        records = self._write(outputs)
        written = [{"key": key, "style": self.style_keys[style], "file": file} for (key, style, _), file in zip(outputs, records)]
        keys = sorted([w["key"] for w in written] + [r["key"] for r in rejected])
        if keys:
            self._check_current()
            part = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
            atomic_write_text(self.job.output / PARTS / f"{part}.json",
                              json.dumps({"written": written, "rejected": rejected}, indent=1) + "\n")
        return written, rejected

    def _write(self, outputs: list[tuple[str, int, bytes]]) -> list[str]:
        """Write the batch's images (a shard, or one file each) before its part record; returns their paths."""
        if not outputs:
            return []
        output = self.job.output
        suffix = "jpg" if self.image_format == "jpg" else "png"
        if self.output_format == "files":
            files = []
            for key, _, data in outputs:
                relative = f"{key}.{suffix}"
                atomic_write_bytes(confined_path(output, relative), data)  # keys were checked; a link was not
                files.append(relative)
            return files
        import webdataset as wds

        name = "shard-" + hashlib.sha256("\n".join(sorted(k for k, _, _ in outputs)).encode()).hexdigest()[:16] + ".tar"
        buffer = io.BytesIO()
        with wds.TarWriter(buffer, mtime=0) as writer:
            for key, style, data in outputs:
                writer.write({"__key__": check_output_name(key), suffix: data, "json": json.dumps(
                    {"source_key": key, "style_key": self.style_keys[style], **self.provenance}).encode()})
        atomic_write_bytes(output / name, buffer.getvalue())
        return [name] * len(outputs)


class StylizeActor:
    """Loads every job's model once, stylizes each batch with each model the batch's inputs are still pending
    for, and commits each model's outputs in its own folder. Style images are decoded once for all models."""

    def __init__(self, jobs: list[Job], styles: list[tuple[str, bytes]], output_format: str, alpha: float,
                 preserve_color: str | None, style_size: int | None, image_format: str, quality: int, threads: int,
                 use_gpu: bool, tracking_uri: str | None, allow_pickle: bool = False) -> None:
        import torch

        import stylecore
        from stylecore.stylize import Stylizer

        if tracking_uri:  # a models:/ URI resolves against the driver's store, wherever the actor runs
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        provenance = {"alpha": alpha, "preserve_color": preserve_color}
        self.style_data, self.decoded_styles = [data for _, data in styles], {}
        self.writers = [_JobWriter(job, Stylizer(stylecore.load(job.model, device=device, allow_pickle=allow_pickle), device=device, alpha=alpha,
                                                 preserve_color=preserve_color, style_size=style_size),
                                   [key for key, _ in styles], self._style_image, output_format, image_format, quality,
                                   provenance) for job in jobs]

    def _style_image(self, index: int):
        if index not in self.decoded_styles:
            self.decoded_styles[index] = decode_resize(self.style_data[index], None).float().div(255)
        return self.decoded_styles[index]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        pending: dict[int, tuple[list, list]] = {}  # job → (items to stylize, decode rejections)
        for key, style, jobs, data, h, w, error in zip(batch["key"], batch["style"], batch["jobs"], batch["pixels"],
                                                       batch["height"], batch["width"], batch["error"]):
            image = None
            if not error:
                image = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(int(h), int(w), 3).permute(2, 0, 1)
                image = image.float().div(255)
            for job in (int(j) for j in str(jobs).split(",")):
                items, rejected = pending.setdefault(job, ([], []))
                if error:
                    rejected.append({"key": str(key), "reason": str(error)})
                else:
                    items.append((str(key), int(style), image))
        job_column, key_column, status_column = [], [], []
        for job, (items, rejected) in sorted(pending.items()):
            written, rejected = self.writers[job].stylize_and_commit(items, rejected)
            for status, records in (("written", written), ("rejected", rejected)):
                job_column += [job] * len(records)
                key_column += [r["key"] for r in records]
                status_column += [status] * len(records)
        return {"job": np.array(job_column, dtype=np.int64), "key": np.array(key_column, dtype=object),
                "status": np.array(status_column, dtype=object)}


def encode_output(image, image_format: str, quality: int) -> bytes:
    from stylecore.data import to_uint8_hwc

    return encode_image(to_uint8_hwc(image), "JPEG" if image_format == "jpg" else "PNG", quality)


# ---------------------------------------------------------------------------------------------------
# Resume state


def committed(output: Path, output_format: str) -> tuple[dict[str, dict], list[dict]]:
    """What earlier runs committed (written keys → record, rejections).

    Shards without a record are deleted: a crash wrote them after the last commit, and their inputs
    will be stylized again. A key committed twice (a crashed run's surviving actor that committed
    while its successor was starting) stays in the first record only: later shards are rewritten
    without it, so every key is in exactly one output.
    """
    written: dict[str, dict] = {}
    rejected: list[dict] = []
    seen_rejected: set[str] = set()
    for part in sorted((output / PARTS).glob("*.json")):
        record = json.loads(part.read_text())
        duplicates = {item["key"] for item in record["written"]} & set(written)
        if duplicates:
            record = _drop_keys(output, part, record, duplicates, output_format)
        for item in record["written"]:
            written[item["key"]] = item
        for item in record["rejected"]:
            if item["key"] not in seen_rejected:
                seen_rejected.add(item["key"])
                rejected.append(item)
    if output_format == "webdataset":
        recorded = {item["file"] for item in written.values()}
        for shard in output.glob("shard-*.tar"):
            if shard.name not in recorded:
                shard.unlink()
    return written, rejected


def _drop_keys(output: Path, part: Path, record: dict, keys: set[str], output_format: str) -> dict:
    kept = [item for item in record["written"] if item["key"] not in keys]
    if output_format == "webdataset":
        import webdataset as wds

        for shard in {item["file"] for item in record["written"]}:
            buffer = io.BytesIO()
            with tarfile.open(output / shard) as source, wds.TarWriter(buffer, mtime=0) as writer:
                samples: dict[str, dict] = {}
                for member in source.getmembers():
                    key, _, extension = member.name.rpartition(".")
                    if key not in keys:
                        samples.setdefault(key, {"__key__": key})[extension] = source.extractfile(member).read()
                for sample in samples.values():
                    writer.write(sample)
            atomic_write_bytes(output / shard, buffer.getvalue())
    record = {"written": kept, "rejected": record["rejected"]}
    atomic_write_text(part, json.dumps(record, indent=1) + "\n")
    return record


def resolve_model(model: str) -> tuple[str, dict[str, Any]]:
    """``models:/name@alias`` → ``models:/name/<version>`` (every actor loads the same version, even if the
    alias moves mid-run) and what to record about it; a checkpoint path is checked to exist."""
    import stylecore

    if model.startswith("models:/"):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name, _, alias = model[len("models:/"):].partition("@")
        if not alias:
            name, _, version = name.partition("/")
            return model, {"model_name": name, "model_version": version or "latest"}
        try:
            version = MlflowClient().get_model_version_by_alias(name, alias)
        except MlflowException as error:
            raise StylizeError(f"model {model}: {error.message} (is MLFLOW_TRACKING_URI the store that registered it?)") from None
        return f"models:/{name}/{version.version}", {"model_name": name, "model_version": str(version.version),
                                                      "model_alias": alias, "model_run_id": version.run_id}
    if model.startswith(stylecore.MLFLOW_SCHEMES):
        return model, {}
    path = Path(model)
    if not path.exists():
        raise StylizeError(f"model {model}: no such checkpoint; pass a checkpoint directory or a models:/ URI")
    return str(path.resolve()), {}


# ---------------------------------------------------------------------------------------------------
# The pipeline


def stylize_dataset(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path], model: str,
                    output: str | Path, **settings: Any) -> dict[str, Any]:
    """Stylize every input once with ``model``; returns (and writes as ``<output>/manifest.json``) what was done.
    The settings are :func:`stylize_with_models`'s."""
    return stylize_with_models(inputs, styles, [(model, output)], **settings)[0]


def stylize_with_models(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path],
                        jobs: Sequence[tuple[str, str | Path]], *, policy: str = "round_robin", seed: int = 0,
                        alpha: float = 1.0, preserve_color: str | None = None, size: int | None = None,
                        style_size: int | None = 512, batch_size: int = 8, actors: int = 2, gpus_per_actor: float = 0.0,
                        cpus_per_actor: float | None = None, output_format: str = "webdataset", image_format: str = "jpg",
                        quality: int = 92, limit: int | None = None, progress: bool = True,
                        allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Stylize every input once with each ``(model, output folder)`` job, in one Ray Data pipeline: the inputs
    are read and decoded once, and each actor holds every model. Returns each job's manifest (also written as
    ``<output>/manifest.json``), in job order.

    Runs on the Ray that is initialised, or starts a local one sized to the machine (``RAY_ADDRESS``:
    that cluster). ``cpus_per_actor`` defaults to 0.5 without GPUs, so the decode tasks and the writer
    always find a CPU beside the actors (a pool holding every CPU hangs Ray Data).
    """
    from stylecore.stylize import COLOR_MODES

    if policy not in POLICIES:
        raise StylizeError(f"policy={policy!r} is not one of {', '.join(POLICIES)}")
    if output_format not in FORMATS:
        raise StylizeError(f"output_format={output_format!r} is not one of {', '.join(FORMATS)}")
    if image_format not in ("jpg", "png"):
        raise StylizeError(f"image_format={image_format!r} is not jpg or png")
    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not is_number(alpha) or not 0.0 <= float(alpha) <= 1.0:
        raise StylizeError(f"alpha={alpha!r} must be a number in [0, 1]")
    if preserve_color not in COLOR_MODES:
        raise StylizeError(f"preserve_color={preserve_color!r} is not one of none, coral, luminance")
    for name, value, optional in (("actors", actors, False), ("batch_size", batch_size, False), ("size", size, True),
                                  ("style_size", style_size, True), ("limit", limit, True), ("quality", quality, False)):
        if not (optional and value is None) and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise StylizeError(f"{name} must be a positive integer{' or null' if optional else ''}; got {value!r}")
    for name, value in (("gpus_per_actor", gpus_per_actor), ("cpus_per_actor", cpus_per_actor)):
        if value is not None and (not is_number(value) or value < 0):
            raise StylizeError(f"{name} must be a number ≥ 0; got {value!r}")
    if not jobs:
        raise StylizeError("no model given; pass a models:/ URI or a checkpoint and an output folder")
    folders = [Path(output).resolve() for _, output in jobs]
    if len(set(folders)) < len(folders):
        raise StylizeError(f"two models write to one output folder ({[str(o) for _, o in jobs]}); give each its own")
    resolved = [resolve_model(model) for model, _ in jobs]
    listed = list_inputs(inputs, limit)
    style_list = load_styles(styles)
    assignment = assign_styles(listed.keys, len(style_list), policy, seed)
    plan: list[Job] = []
    work: dict[str, tuple[int, list[int]]] = {}
    for index, ((model, model_info), (_, output)) in enumerate(zip(resolved, jobs)):
        job = Job(model, model_info, Path(output), uuid.uuid4().hex)
        atomic_write_text(job.output / PARTS / RUN_TOKEN, job.run_token)  # from now on only this run's actors commit
        # Temporaries of writes a crash interrupted: no actor of an earlier run can commit any more (the token).
        stale = remove_stale_temporaries(job.output) + remove_stale_temporaries(job.output / PARTS)
        done, rejected_before = committed(job.output, output_format)
        previously_rejected = {r["key"] for r in rejected_before}
        pending = [key for key in listed.keys if key not in done and key not in previously_rejected]
        for key in pending:
            work.setdefault(key, (assignment[key], []))[1].append(index)
        plan.append(job)
        print(f"stylize: {len(listed.keys)} inputs ({listed.kind}), {len(style_list)} style(s), policy {policy}; "
              f"{len(done)} already written and {len(previously_rejected)} rejected by an earlier run are skipped; "
              f"{len(pending)} to do with {model} into {job.output}"
              + (f"; {len(listed.refused)} refused for unsafe keys (e.g. {listed.refused[0]['key']!r})"
                 if listed.refused else "")
              + (f"; removed {len(stale)} temporaries of an interrupted run" if stale else ""), flush=True)

    started = time.perf_counter()
    counts = [{"written": 0, "rejected": 0} for _ in plan]
    if work:
        from pipelines.train import ray_session

        with ray_session():  # the caller's Ray, RAY_ADDRESS's cluster, or a local instance for this call
            counts = _run_pipeline(listed, work, style_list, plan, output_format=output_format, alpha=float(alpha),
                                   preserve_color=preserve_color, size=size, style_size=style_size,
                                   batch_size=batch_size, actors=actors, gpus_per_actor=gpus_per_actor,
                                   cpus_per_actor=cpus_per_actor, image_format=image_format, quality=quality,
                                   progress=progress, allow_pickle=allow_pickle)
    seconds = time.perf_counter() - started
    settings = {"styles": [key for key, _ in style_list], "policy": policy, "seed": seed, "alpha": alpha,
                "preserve_color": preserve_color, "size": size, "format": output_format, "image_format": image_format}
    total = sum(c["written"] for c in counts)
    manifests = [_finish(job, listed, counts[index], seconds, total, len(plan), settings) for index, job in enumerate(plan)]
    unfinished = [f"{job.output}: {len(m['missing'])} (e.g. {m['missing'][:3]})" for job, m in zip(plan, manifests)
                  if m["missing"]]
    if unfinished:
        raise StylizeError(f"input(s) neither written nor rejected: {'; '.join(unfinished)}; re-run to finish them")
    return manifests


def _finish(job: Job, listed: Inputs, counts: Mapping[str, int], seconds: float, pipeline_written: int, models: int,
            settings: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``<output>/manifest.json`` for one job from what its folder holds now."""
    written, rejected = committed(job.output, settings["format"])
    rejected = listed.refused + rejected
    rejected_keys = {r["key"] for r in rejected}
    missing = [key for key in listed.keys if key not in written and key not in rejected_keys]

    def rate(images: int) -> float:
        return round(images / seconds, 3) if seconds > 0 and images else 0.0

    manifest = {"inputs": len(listed.keys), "written": len(written), "rejected": rejected, "missing": missing,
                "model": job.model, **job.model_info, **settings,
                # with several models in one pipeline the wall time is shared: the pipeline's rate counts them all
                "this_run": {**counts, "seconds": round(seconds, 2), "images_per_second": rate(counts["written"]),
                             "models_in_pipeline": models, "pipeline_images_per_second": rate(pipeline_written)},
                "outputs": sorted(written.values(), key=lambda item: item["key"])}
    atomic_write_text(job.output / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    print(f"stylize: {job.model}: {counts['written']} written and {counts['rejected']} rejected in {seconds:.1f} s; "
          f"{len(written)} of {len(listed.keys)} done, {len(rejected)} rejected in all; {job.output / 'manifest.json'}",
          flush=True)
    return manifest


def _tracking_uri(models: Sequence[str]) -> str | None:
    import stylecore

    if not any(model.startswith(stylecore.MLFLOW_SCHEMES) for model in models):
        return None
    import mlflow

    return mlflow.get_tracking_uri()


def _run_pipeline(listed: Inputs, work: dict[str, tuple[int, list[int]]], styles, plan: list[Job], *,
                  output_format: str, alpha: float, preserve_color, size, style_size, batch_size: int, actors: int,
                  gpus_per_actor: float, cpus_per_actor, image_format: str, quality: int,
                  progress: bool, allow_pickle: bool = False) -> list[dict[str, int]]:
    import ray

    use_gpu = gpus_per_actor > 0
    if cpus_per_actor is None:
        cpus_per_actor = 1.0 if use_gpu else 0.5
    threads = max(1, int(round(cpus_per_actor * 2))) if not use_gpu else 1
    # Half a CPU per read and decode task: with whole ones, a read task, a decode task and two half-CPU actors
    # need 3 CPUs, and on a 2-CPU machine (or two 1-CPU nodes) whichever starts last waits forever: the read
    # task, backpressured, never finishes, and Ray Data reports no error.
    io = {"num_cpus": 0.5}
    if listed.kind == "shards":
        dataset = ray.data.read_webdataset(listed.urls, decoder=None, suffixes=["jpg", "jpeg", "png", "json"],
                                           filesystem=arrow_filesystem(listed.urls[0]), **io)
        decode = {"key_column": "__key__", "data_column": "jpg"}
    else:
        files = [listed.files[k] for k in work]
        dataset = ray.data.read_binary_files(files, include_paths=True, **io)
        decode = {"key_column": "path", "data_column": "bytes", "key_of_path": {listed.files[k]: k for k in work}}
    dataset = dataset.map_batches(decode_batch, fn_kwargs={"size": size, "work": work, **decode},
                                  batch_format="numpy", batch_size=batch_size, **io)
    # A batch is seconds of work (every pending model). With few batches per actor, queue none ahead: under Ray
    # Data's default queue (2 per actor) the first actor up took every batch of the demo's 16 photos while the
    # second was still loading its models. With many, the default keeps each actor fed (256 photos: 2 actors
    # 6.9 images/s against 6.0 with one in flight; BENCHMARKS.md).
    batches = -(-len(work) // batch_size)
    in_flight = 1 if batches < 4 * actors else None
    dataset = dataset.map_batches(
        StylizeActor, batch_format="numpy", batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=in_flight),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs={"jobs": plan, "styles": styles, "output_format": output_format, "alpha": alpha,
                               "preserve_color": preserve_color, "style_size": style_size, "image_format": image_format,
                               "quality": quality, "threads": threads, "use_gpu": use_gpu,
                               "tracking_uri": _tracking_uri([job.model for job in plan]), "allow_pickle": allow_pickle})
    counts = [{"written": 0, "rejected": 0} for _ in plan]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(jobs) for _, jobs in work.values()), desc="stylize", unit="image")
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for job, status in zip(batch["job"], batch["status"]):
            counts[int(job)][str(status)] += 1
        if bar is not None:
            bar.update(len(batch["status"]))
    if bar is not None:
        bar.close()
    return counts


# ---------------------------------------------------------------------------------------------------
# The DVC stage and the `stylecore stylize-dataset` command

SETTINGS = {"contents": 16, "policy": "round_robin", "seed": 0, "alpha": 1.0, "preserve_color": None, "size": 128,
            "style_size": 128, "batch_size": 4, "actors": 2, "gpus_per_actor": "auto", "output_format": "files",
            "image_format": "jpg"}


def settings_of(params: Mapping[str, Any]) -> dict[str, Any]:
    values = {**SETTINGS, **(params.get("stylize") or {})}
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise CatalogueError(f"params.yaml: stylize has unknown key(s) {unknown}; keys: {', '.join(SETTINGS)}")
    return values


def run(*, params_path: Path = Path("params.yaml"), shards_root: Path = Path("data/shards"),
        reports: Path = Path("reports")) -> dict[str, Any]:
    """Stylize the profile's held-out content with every registered champion into ``reports/stylized/``."""
    import mlflow
    import ray

    from pipelines.storage import worker_shards
    from pipelines.train import ray_session, tracking_settings

    params = load_params(params_path)
    settings = settings_of(params)
    registry_file = reports / "registry.json"
    if not registry_file.is_file():
        raise StylizeError(f"{registry_file} not found; run `dvc repro register` first (this stage stylizes with "
                           "each registered champion)")
    names = sorted(json.loads(registry_file.read_text()))
    # the Ray Data read tasks run on any node: the shards as the workers see them (params.yaml: storage.shards)
    shards = worker_shards(params, profile_shards(params, shards_root, "val"))
    mlflow.set_tracking_uri(tracking_settings(params, params_path.resolve().parent)["uri"])
    with ray_session():
        gpus, actors = settings["gpus_per_actor"], settings["actors"]
        if gpus == "auto":  # GPUs whenever there are any: the actors capped at them, never all of them on CPU
            available = int(ray.cluster_resources().get("GPU", 0))
            gpus, actors = (1.0, min(actors, available)) if available else (0.0, actors)
        print(f"stylize: {len(names)} champions in one Ray Data pipeline: {', '.join(names)}; {actors} actor(s) on "
              f"{'GPU' if gpus else 'CPU'}", flush=True)
        # One pipeline for every champion: the content is read and decoded once, and each actor starts once.
        manifests = stylize_with_models(
            shards["content"], shards["style"], [(f"models:/{name}@champion", reports / "stylized" / name) for name in names],
            policy=settings["policy"], seed=settings["seed"], alpha=settings["alpha"],
            preserve_color=settings["preserve_color"], size=settings["size"], style_size=settings["style_size"],
            batch_size=settings["batch_size"], actors=actors, gpus_per_actor=float(gpus),
            output_format=settings["output_format"], image_format=settings["image_format"],
            limit=settings["contents"], progress=False)
    done = {name: {key: manifest[key] for key in ("model_version", "written", "this_run") if key in manifest}
            for name, manifest in zip(names, manifests)}
    atomic_write_text(reports / "stylized" / "summary.json", json.dumps(done, indent=2) + "\n")
    print(f"stylize: {len(done)} champions × {settings['contents']} content images in {reports / 'stylized'}", flush=True)
    return done


def add_command(subparsers) -> None:
    """The ``stylecore stylize-dataset`` subcommand (registered as a ``stylecore.commands`` entry point)."""
    command = subparsers.add_parser("stylize-dataset", help="stylize a whole dataset with Ray Data (resumable)")
    command.add_argument("--model", required=True, help="models:/name@alias or models:/name/version (tracking store "
                                                        "from MLFLOW_TRACKING_URI), or a checkpoint directory")
    command.add_argument("--input", required=True, nargs="+", help="shard folders / .tar files, or one image folder")
    command.add_argument("--styles", required=True, nargs="+", help="style image files, a folder or a shard set")
    command.add_argument("--output", required=True, help="output folder (re-running it resumes)")
    command.add_argument("--policy", choices=POLICIES, default="round_robin")
    command.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    command.add_argument("--alpha", type=float, default=1.0)
    command.add_argument("--preserve-color", dest="preserve_color", choices=["coral", "luminance"])
    command.add_argument("--size", type=int, help="resize inputs to this short side (default: keep)")
    command.add_argument("--style-size", dest="style_size", type=int, default=512)
    command.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    command.add_argument("--actors", type=int, default=2, help="model replicas (actor pool size)")
    command.add_argument("--gpus-per-actor", dest="gpus_per_actor", type=float, default=0.0)
    command.add_argument("--format", dest="output_format", choices=FORMATS, default="webdataset")
    command.add_argument("--image-format", dest="image_format", choices=["jpg", "png"], default="jpg")
    command.add_argument("--limit", type=int, help="only the first N inputs in key order")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                         help="load a models:/ URI logged without a stylecore checkpoint by unpickling MLflow's copy "
                              "(runs code from the store: only for stores you trust)")
    command.set_defaults(func=_cmd_stylize_dataset)


def _cmd_stylize_dataset(args: argparse.Namespace) -> int:
    try:
        stylize_dataset(args.input, args.styles, args.model, args.output, policy=args.policy, seed=args.seed,
                        alpha=args.alpha, preserve_color=args.preserve_color, size=args.size,
                        style_size=args.style_size or None, batch_size=args.batch_size, actors=args.actors,
                        gpus_per_actor=args.gpus_per_actor, output_format=args.output_format,
                        image_format=args.image_format, limit=args.limit, progress=not args.quiet,
                        allow_pickle=args.allow_pickle)
    except StylizeError as error:
        print(f"error: stylize-dataset: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args(argv)
    return run_stage("stylize", lambda: run(params_path=Path(args.params), shards_root=Path(args.shards),
                                            reports=Path(args.reports)), (CatalogueError, StylizeError))


if __name__ == "__main__":
    sys.exit(main())
