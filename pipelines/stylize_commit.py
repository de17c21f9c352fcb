"""Exactly-once output of batch stylization: each batch written by its actor and committed by a record in
``<output>/_parts/`` written after its images, read back on a re-run (what is done, what was rejected), and the
manifest at the end.

A re-run after a crash skips exactly what was committed, rewrites nothing twice and deletes shards a crash left
without a record: no duplicates, no gaps. Only the actors of the run whose id is in ``_parts/RUN`` commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipelines.stylize_inputs import PARTS, RUN_TOKEN, Inputs
from stylecore.imaging import encode_image
from stylecore.io import atomic_write_bytes, atomic_write_text, check_output_name, confined_path


#: threads per stylize actor that copy stylized images back and encode them
ENCODE_THREADS = 2


@dataclass
class Job:
    """One model and the folder its stylized images go to; ``run_token`` fences the folder (see _check_current)."""

    model: str  # a checkpoint path or a models:/ URI pinned to a version
    model_info: dict[str, Any]
    output: Path
    run_token: str
    domain: str | None = None  # a GAN translation model's target domain, given where other models take styles


class _JobWriter:
    """One job inside an actor: the loaded model with its prepared styles, and the folder it commits to."""

    def __init__(self, job: Job, stylizer, style_keys: list[str], style_image, output_format: str, image_format: str,
                 quality: int, provenance: Mapping[str, Any], encoders: ThreadPoolExecutor) -> None:
        self.job, self.stylizer = job, stylizer
        self.style_keys, self.style_image = style_keys, style_image  # style_image(index): decoded once per actor
        # Encoded on first use: a few inputs over many styles (the demo: 8 photos, 50 artworks) use only a few.
        self.prepared: dict[int, Any] = {}
        self.output_format, self.image_format, self.quality = output_format, image_format, quality
        self.provenance = {"model": job.model, **job.model_info, **provenance,
                           **({"domain": job.domain} if job.domain else {})}
        if hasattr(stylizer, "precision"):  # a model's arithmetic: bf16 on a GPU that has it, else fp32
            self.provenance["precision"] = stylizer.precision
        # the actor's encoding threads (one pool for all its models), which copy outputs back and encode them
        # while the model's thread queues the next batches (PIL's encoders and torch's copies release the GIL)
        self.encoders = encoders

    def _style(self, index: int):
        if self.job.domain is not None:  # a GAN's one "style": its domain, whichever style the input was planned
            index = -1
        if index not in self.prepared:
            self.prepared[index] = self.stylizer.prepare_styles(self.job.domain if index == -1 else
                                                                self.style_image(index))
        return self.prepared[index]

    def _style_key(self, index: int) -> str:
        return self.job.domain if self.job.domain is not None else self.style_keys[index]

    def _check_current(self) -> None:
        """Actors that outlive a crashed driver must not commit beside the run that replaced it."""
        if (self.job.output / PARTS / RUN_TOKEN).read_text() != self.job.run_token:
            raise RuntimeError(f"{self.job.output} is being written by a newer run; this one stops")

    def _stylize(self, items: list[tuple[str, str, int, Any]]) -> list[tuple[Any, dict[str, Any]]]:
        """Each (output key, input key, style, image) item stylized with its style, with what the stylizer reports
        about it (an optimisation's final losses; a model: nothing). A model's outputs stay on its device until
        they are encoded."""
        images = [image for _, _, _, image in items]
        if hasattr(self.stylizer, "stylize_each"):
            results = self.stylizer.stylize_each(images, [self._style(style) for _, _, style, _ in items])
        else:  # one style for the group
            results = self.stylizer(images, self._style(items[0][2]))
        details = self.stylizer.details() if hasattr(self.stylizer, "details") else [{}] * len(results)
        return list(zip(results, details))

    def stylize_and_commit(self, items: list[tuple[str, str, int, Any]],
                           rejected: list[dict]) -> tuple[list[dict], list[dict]]:
        """Stylize (output key, input key, style, image) items, write them, commit them and ``rejected`` with one
        part record; returns what was written and every rejection (the given ones and the inputs this model could
        not stylize)."""
        rejected = list(rejected)
        # a model stylizes the whole batch at once, whatever the styles (Stylizer.stylize_each); an optimisation
        # method one style at a time
        groups = [items] if hasattr(self.stylizer, "stylize_each") else \
            [[item for item in items if item[2] == style] for style in dict.fromkeys(item[2] for item in items)]
        pending: list[tuple[str, str, int, Future, dict[str, Any]]] = []
        for group in groups:
            try:
                results = self._stylize(group)
            except ValueError:  # one bad image (e.g. too small for the model) must not sink its batch
                results = []
                for item in group:
                    try:
                        results += self._stylize([item])
                    except ValueError as error:
                        rejected.append({"key": item[0], "reason": f"cannot stylize: {error}"})
                        results.append(None)
            for (key, source, style, _), result in zip(group, results):
                if result is not None:
                    image, detail = result
                    pending.append((key, source, style,
                                    self.encoders.submit(encode_output, image, self.image_format, self.quality), detail))
        outputs = [(key, source, style, encoded.result(), detail) for key, source, style, encoded, detail in pending]
        self._check_current()
        records = self._write(outputs)
        written = [{"key": key, **({"source": source} if source != key else {}), "style": self._style_key(style),
                    "file": file, **detail} for (key, source, style, _, detail), file in zip(outputs, records)]
        keys = sorted([w["key"] for w in written] + [r["key"] for r in rejected])
        if keys:
            self._check_current()
            part = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
            atomic_write_text(self.job.output / PARTS / f"{part}.json",
                              json.dumps({"written": written, "rejected": rejected}, indent=1) + "\n")
        return written, rejected

    def _write(self, outputs: list[tuple[str, str, int, bytes, dict[str, Any]]]) -> list[str]:
        """Write the batch's images (a shard, or one file each) before its part record; returns their paths."""
        if not outputs:
            return []
        output = self.job.output
        suffix = "jpg" if self.image_format == "jpg" else "png"
        if self.output_format == "files":
            files = []
            for key, _, _, data, _ in outputs:
                relative = f"{key}.{suffix}"
                atomic_write_bytes(confined_path(output, relative), data)  # keys were checked; a link was not
                files.append(relative)
            return files
        import webdataset as wds

        name = "shard-" + hashlib.sha256("\n".join(sorted(o[0] for o in outputs)).encode()).hexdigest()[:16] + ".tar"
        buffer = io.BytesIO()
        with wds.TarWriter(buffer, mtime=0) as writer:
            for key, source, style, data, detail in outputs:
                writer.write({"__key__": check_output_name(key), suffix: data, "json": json.dumps(
                    {"source_key": source, "style_key": self._style_key(style), **self.provenance, **detail}).encode()})
        atomic_write_bytes(output / name, buffer.getvalue())
        return [name] * len(outputs)


def encode_output(image, image_format: str, quality: int) -> bytes:
    from stylecore.data import to_uint8_hwc

    return encode_image(to_uint8_hwc(image), "JPEG" if image_format == "jpg" else "PNG", quality)


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


#: up to this many models in one pipeline, each gets its own plan and result lines; more share one (a model
#: that resumes, rejects or misses inputs still gets its own)
MODELS_LISTED = 2


def _finish(job: Job, listed: Inputs, targets: Sequence[str], counts: Mapping[str, int], seconds: float,
            pipeline_written: int, models: int, settings: Mapping[str, Any], label: str = "stylize") -> dict[str, Any]:
    """Write ``<output>/manifest.json`` for one job from what its folder holds now; ``targets``: the output keys
    the run was to make."""
    written, rejected = committed(job.output, settings["format"])
    rejected = listed.refused + rejected
    rejected_keys = {r["key"] for r in rejected}
    missing = [key for key in targets if key not in written and key not in rejected_keys]

    def rate(images: int) -> float:
        return round(images / seconds, 3) if seconds > 0 and images else 0.0

    manifest = {"inputs": len(listed.keys), "expected": len(targets), "written": len(written), "rejected": rejected, "missing": missing,
                "model": job.model, **job.model_info, **settings,
                # with several models in one pipeline the wall time is shared: the pipeline's rate counts them all
                "this_run": {**counts, "seconds": round(seconds, 2), "images_per_second": rate(counts["written"]),
                             "models_in_pipeline": models, "pipeline_images_per_second": rate(pipeline_written)},
                "outputs": sorted(written.values(), key=lambda item: item["key"])}
    atomic_write_text(job.output / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if models > MODELS_LISTED and not counts["rejected"] and not missing:  # the caller sums many models in one line
        return manifest
    print(f"{label}: {job.model}: {counts['written']} written and {counts['rejected']} rejected in {seconds:.1f} s; "
          f"{len(written)} of {len(targets)} done, {len(rejected)} rejected in all; {job.output / 'manifest.json'}",
          flush=True)
    return manifest


