"""Batch stylization of whole datasets with Ray Data, resumable: ``stylecore stylize-dataset``.

    stylecore stylize-dataset --model models:/stylecore-adain-gram@champion --content data/shards/coco-val \\
        --style paintings/ --output out/coco-val-adain --policy round_robin

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
(seeded by a hash of the key, so the choice survives a restart). A GAN translation model
(:mod:`stylecore.gan`) takes a target domain instead (``--domain dots``; a job's third element): every input
once, translated to it; the domain is checked against the model's before Ray starts::

    stylecore stylize-dataset --model models:/stylecore-cyclegan-dots@champion --domain dots \
        --content data/shards/demo_photos-val --output out/photos-as-dots
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipelines.stylize_commit import ENCODE_THREADS, MODELS_LISTED, Job, _finish, _JobWriter, committed
from pipelines.stylize_inputs import (FORMATS, PARTS, POLICIES, RUN_TOKEN, Inputs, StylizeError, Target,
                                      arrow_filesystem, decode_batch, decode_resize, list_inputs, load_styles,
                                      plan_outputs)

#: a "model" that is an optimisation method (stylecore.optimize): ``optimize:strotss``; its settings travel beside it
METHOD_PREFIX = "optimize:"
from stylecore.cli_args import add_renamed
from stylecore.io import atomic_write_text, remove_stale_temporaries


class StylizeActor:
    """Loads every job's model once, stylizes each batch with each model the batch's inputs are still pending
    for, and commits each model's outputs in its own folder. Style images are decoded once for all models."""

    def __init__(self, jobs: list[Job], styles: list[tuple[str, bytes]], output_format: str, alpha: float,
                 preserve_color: str | None, style_size: int | None, image_format: str, quality: int, threads: int,
                 use_gpu: bool, tracking_uri: str | None, allow_pickle: bool = False) -> None:
        import torch

        import stylecore
        from stylecore.devices import tune_cuda_math
        from stylecore.stylize import Stylizer

        if tracking_uri:  # a models:/ URI resolves against the driver's store, wherever the actor runs
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        tune_cuda_math(device, fixed_shapes=False)  # photos come in many sizes: no per-shape autotuning
        self.device = device
        provenance = {"alpha": alpha, "preserve_color": preserve_color}
        self.style_data, self.decoded_styles = [data for _, data in styles], {}

        def stylizer(job: Job):
            if job.model.startswith(METHOD_PREFIX):  # each pair optimised on its own, behind the same interface
                from stylecore.optimize import build
                from stylecore.optimize.batch import MethodStylizer

                return MethodStylizer(build(job.model[len(METHOD_PREFIX):], device=device,
                                            **job.model_info["method_settings"]), style_size=style_size)
            return Stylizer(stylecore.load(job.model, device=device, allow_pickle=allow_pickle), device=device,
                            alpha=alpha, preserve_color=preserve_color, style_size=style_size, precision="auto")

        encoders = ThreadPoolExecutor(max_workers=ENCODE_THREADS, thread_name_prefix="encode")
        self.writers = [_JobWriter(job, stylizer(job), [key for key, _ in styles], self._style_image, output_format,
                                   image_format, quality, provenance, encoders) for job in jobs]

    def _style_image(self, index: int):
        if index not in self.decoded_styles:
            self.decoded_styles[index] = decode_resize(self.style_data[index], None).float().div(255)
        return self.decoded_styles[index]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        pending: dict[int, tuple[list, list]] = {}  # job → (items to stylize, decode rejections)
        for key, source, style, jobs, data, h, w, error in zip(batch["key"], batch["source"], batch["style"],
                                                               batch["jobs"], batch["pixels"], batch["height"],
                                                               batch["width"], batch["error"]):
            image = None
            if not error:
                image = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(int(h), int(w), 3).permute(2, 0, 1)
                # to the model's device as bytes, a quarter of the float copy; converted there
                image = image.to(self.device, non_blocking=True).float().div_(255)
            for job in (int(j) for j in str(jobs).split(",")):
                items, rejected = pending.setdefault(job, ([], []))
                if error:
                    rejected.append({"key": str(key), "reason": str(error)})
                else:
                    items.append((str(key), str(source), int(style), image))
        job_column, key_column, status_column = [], [], []
        for job, (items, rejected) in sorted(pending.items()):
            written, rejected = self.writers[job].stylize_and_commit(items, rejected)
            for status, records in (("written", written), ("rejected", rejected)):
                job_column += [job] * len(records)
                key_column += [r["key"] for r in records]
                status_column += [status] * len(records)
        return {"job": np.array(job_column, dtype=np.int64), "key": np.array(key_column, dtype=object),
                "status": np.array(status_column, dtype=object)}


def resolve_model(model: str, method_settings: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``models:/name@alias`` → ``models:/name/<version>`` (every actor loads the same version, even if the
    alias moves mid-run) and what to record about it; a checkpoint path is checked to exist; an optimisation
    method (``optimize:<name>``) is built here once with ``method_settings``, so a bad setting or weights that are
    not there fail before Ray starts, and its settings and encoder are recorded."""
    import stylecore

    if model.startswith(METHOD_PREFIX):
        from stylecore.backbones import EncoderWeightsUnavailable
        from stylecore.optimize import build
        from stylecore.optimize.batch import MethodStylizer

        name = model[len(METHOD_PREFIX):]
        try:
            described = MethodStylizer(build(name, device="cpu", **dict(method_settings or {}))).describe()
        except (KeyError, ValueError, TypeError, EncoderWeightsUnavailable) as error:
            raise StylizeError(f"method {name}: {error}") from None
        described["settings"].pop("device")  # each actor's own (its GPU or the CPU), not this driver's check
        encoder = described["encoder"]
        print(f"optimize: {name}: encoder {encoder.get('arch')}, weights {encoder.get('weights')} (pretrained: "
              f"{encoder.get('pretrained')})", flush=True)
        return model, {"model_name": name, "model_version": "optimisation",
                       "method_settings": dict(method_settings or {}), "method": described}

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
    if model.startswith("pretrained:"):  # published weights (magenta_lite): every actor builds the same model
        return model, {"model_name": model.split(":", 1)[1], "model_version": "pretrained"}
    path = Path(model)
    if not path.exists():
        raise StylizeError(f"model {model}: no such checkpoint; pass a checkpoint directory or a models:/ URI")
    return str(path.resolve()), {}


def translation_domains(model: str) -> tuple[str, ...] | None:
    """The domains a GAN translation model (:mod:`stylecore.gan`) translates to, None for any other model: read
    from a checkpoint's config (the networks built on the meta device, no weights read) or a registered version's
    ``domains`` tag (the register stage sets it); a version without one is loaded to ask it."""
    import torch

    from stylecore import gan

    if model.startswith((METHOD_PREFIX, "pretrained:")):
        return None
    if model.startswith("models:/"):
        from mlflow.tracking import MlflowClient

        name, _, version = model[len("models:/"):].partition("/")
        if version.isdigit():
            tag = (MlflowClient().get_model_version(name, version).tags or {}).get("domains")
            if tag:
                return tuple(tag.split(","))
        import stylecore

        loaded = stylecore.load(model, device="cpu")
        return tuple(loaded.domains) if isinstance(loaded, gan.TranslationModel) else None
    from stylecore.checkpoint import CheckpointError, read_checkpoint_config

    try:
        config = read_checkpoint_config(Path(model))["model"]
    except (CheckpointError, KeyError, TypeError):
        return None  # not ours to judge here: loading it says what is wrong
    if config.get("model") not in gan.names():
        return None
    with torch.device("meta"):
        return tuple(gan.build(config["model"], **config.get("params", {})).domains)


def check_target(model: str, domain: str | None) -> None:
    """A GAN gets a domain it translates to and the other models styles, or a StylizeError naming the fix."""
    domains = translation_domains(model)
    if domain is None and domains is not None:
        raise StylizeError(f"model {model} is a GAN translation model: give it a domain to translate to (--domain, one "
                           f"of {', '.join(domains)}) instead of style images")
    if domain is not None and domains is None:
        raise StylizeError(f"--domain {domain}: model {model} is not a GAN translation model; it takes style images "
                           "(--style)")
    if domain is not None and domain not in domains:
        raise StylizeError(f"--domain {domain!r}: model {model} translates to {', '.join(domains)}; pick one of them")


def stylize_dataset(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path] | None,
                    model: str, output: str | Path, domain: str | None = None, **settings: Any) -> dict[str, Any]:
    """Stylize every input once with ``model`` (a GAN: translate it to ``domain``, with ``styles`` None); returns
    (and writes as ``<output>/manifest.json``) what was done. The settings are :func:`stylize_with_models`'s."""
    return stylize_with_models(inputs, styles, [(model, output, domain)], **settings)[0]


def stylize_with_models(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path] | None,
                        jobs: Sequence[tuple[str, str | Path] | tuple[str, str | Path, str | None]], *,
                        policy: str = "round_robin", seed: int = 0,
                        alpha: float = 1.0, preserve_color: str | None = None, size: int | None = None,
                        style_size: int | None = 512, batch_size: int = 8, actors: int = 2, gpus_per_actor: float = 0.0,
                        cpus_per_actor: float | None = None, output_format: str = "webdataset", image_format: str = "jpg",
                        quality: int = 92, limit: int | None = None, progress: bool = True,
                        allow_pickle: bool = False, input_keys: Sequence[str] | None = None,
                        style_keys: Sequence[str] | None = None,
                        method_settings: Mapping[str, Mapping[str, Any]] | None = None, label: str = "stylize"
                        ) -> list[dict[str, Any]]:
    """Stylize every input once with each ``(model, output folder)`` job, in one Ray Data pipeline: the inputs
    are read and decoded once, and each actor holds every model. Returns each job's manifest (also written as
    ``<output>/manifest.json``), in job order.

    A model is a ``models:/`` URI, a checkpoint, ``pretrained:<name>``, or an optimisation method
    ``optimize:<name>`` (``method_settings[<name>]``: its settings), which optimises each pair on its own. A job
    ``(model, output, domain)`` translates every input once to ``domain`` with a GAN translation model; ``styles``
    may be None when every job is one.
    ``input_keys`` / ``style_keys``: only these inputs / styles (each must be there). ``label`` starts the
    progress lines.

    Runs on the Ray that is initialised, or starts a local one sized to the machine (``RAY_ADDRESS``:
    that cluster). ``cpus_per_actor`` defaults to 0.5 without GPUs, so the decode tasks and the writer
    always find a CPU beside the actors (a pool holding every CPU hangs Ray Data).
    """
    from stylecore.config import is_number
    from stylecore.stylize import COLOR_MODES

    if policy not in POLICIES:
        raise StylizeError(f"policy={policy!r} is not one of {', '.join(POLICIES)}")
    if output_format not in FORMATS:
        raise StylizeError(f"output_format={output_format!r} is not one of {', '.join(FORMATS)}")
    if image_format not in ("jpg", "png"):
        raise StylizeError(f"image_format={image_format!r} is not jpg or png")
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
    domains = [job[2] if len(job) > 2 else None for job in jobs]
    folders = [Path(job[1]).resolve() for job in jobs]
    if len(set(folders)) < len(folders):
        raise StylizeError(f"two models write to one output folder ({[str(job[1]) for job in jobs]}); give each its own")
    resolved = [resolve_model(job[0], (method_settings or {}).get(job[0][len(METHOD_PREFIX):])) for job in jobs]
    for (model, _), domain in zip(resolved, domains):
        check_target(model, domain)
    listed = list_inputs(inputs, limit, only=input_keys)
    if styles is None and None in domains:
        raise StylizeError("no styles given; the models that are not GAN translation models need style images "
                           "(--style)")
    style_list = load_styles(styles, only=style_keys) if None in domains else []
    targets = plan_outputs(listed.keys, [key for key, _ in style_list], policy, seed) if style_list else []
    translated = [Target(key, key, 0) for key in listed.keys]  # a GAN: every input once, to its domain
    plan: list[Job] = []
    work: dict[str, dict[str, tuple[int, list[int]]]] = {}  # input → its outputs to do → (style, jobs)
    inputs_line = (f"{len(listed.keys)} inputs ({listed.kind})"
                   + (f", {len(style_list)} style(s), policy {policy}" if style_list else "")
                   + (f" ({len(targets)} outputs)" if style_list and len(targets) != len(listed.keys) else "")
                   + (f", translated to {', '.join(sorted({d for d in domains if d}))}" if any(domains) else "")
                   + (f", {len(listed.refused)} refused for unsafe keys (e.g. {listed.refused[0]['key']!r})"
                      if listed.refused else ""))
    for index, ((model, model_info), job_spec, domain) in enumerate(zip(resolved, jobs, domains)):
        job = Job(model, model_info, Path(job_spec[1]), uuid.uuid4().hex, domain)
        atomic_write_text(job.output / PARTS / RUN_TOKEN, job.run_token)  # from now on only this run's actors commit
        # Temporaries of writes a crash interrupted: no actor of an earlier run can commit any more (the token).
        stale = remove_stale_temporaries(job.output) + remove_stale_temporaries(job.output / PARTS)
        done, rejected_before = committed(job.output, output_format)
        previously_rejected = {r["key"] for r in rejected_before}
        pending = [target for target in (targets if domain is None else translated)
                   if target.key not in done and target.key not in previously_rejected]
        for target in pending:
            # an output a GAN and a style model share has the style model's style; the GAN ignores it (-1: none)
            style, listed_jobs = work.setdefault(target.source, {}).get(target.key, (-1, []))
            work[target.source][target.key] = (target.style if domain is None else style, [*listed_jobs, index])
        plan.append(job)
        # Many models (the stylize stage's champions): one line for all, a line of its own only for a model
        # resuming an earlier run; one or two: a line each.
        if len(jobs) <= MODELS_LISTED or done or previously_rejected or stale:
            print(f"{label}: {inputs_line}; {len(done)} already written and {len(previously_rejected)} rejected by an "
                  f"earlier run are skipped; {len(pending)} to do with {model}{f' → {domain}' if domain else ''} "
                  f"into {job.output}"
                  + (f"; removed {len(stale)} temporaries of an interrupted run" if stale else ""), flush=True)
    if len(jobs) > MODELS_LISTED:
        to_do = sum(len(model_jobs) for outputs in work.values() for _, model_jobs in outputs.values())
        print(f"{label}: {inputs_line}; {len(plan)} models, {to_do} output(s) to do into "
              f"{os.path.commonpath([str(job.output) for job in plan])}/", flush=True)

    started = time.perf_counter()
    counts = [{"written": 0, "rejected": 0} for _ in plan]
    if work:
        from pipelines.ray_session import ray_session

        with ray_session():  # the caller's Ray, RAY_ADDRESS's cluster, or a local instance for this call
            counts = _run_pipeline(listed, work, style_list, plan, output_format=output_format, alpha=float(alpha),
                                   preserve_color=preserve_color, size=size, style_size=style_size,
                                   batch_size=batch_size, actors=actors, gpus_per_actor=gpus_per_actor,
                                   cpus_per_actor=cpus_per_actor, image_format=image_format, quality=quality,
                                   progress=progress, allow_pickle=allow_pickle, label=label)
    seconds = time.perf_counter() - started
    settings = {"styles": [key for key, _ in style_list], "policy": policy, "seed": seed, "alpha": alpha,
                "preserve_color": preserve_color, "size": size, "format": output_format, "image_format": image_format}
    total = sum(c["written"] for c in counts)
    target_keys, translated_keys = [target.key for target in targets], [target.key for target in translated]
    manifests = [_finish(job, listed, target_keys, counts[index], seconds, total, len(plan), settings, label)
                 if job.domain is None else
                 _finish(job, listed, translated_keys, counts[index], seconds, total, len(plan),
                         {**settings, "styles": [], "policy": None, "domain": job.domain}, label)
                 for index, job in enumerate(plan)]
    if len(plan) > MODELS_LISTED:
        print(f"{label}: {len(plan)} models: {total} written and {sum(c['rejected'] for c in counts)} rejected in "
              f"{seconds:.1f} s; each model's manifest.json in its folder", flush=True)
    unfinished = [f"{job.output}: {len(m['missing'])} (e.g. {m['missing'][:3]})" for job, m in zip(plan, manifests)
                  if m["missing"]]
    if unfinished:
        raise StylizeError(f"input(s) neither written nor rejected: {'; '.join(unfinished)}; re-run to finish them")
    return manifests


def _tracking_uri(models: Sequence[str]) -> str | None:
    import stylecore

    if not any(model.startswith(stylecore.MLFLOW_SCHEMES) for model in models):
        return None
    import mlflow

    return mlflow.get_tracking_uri()


def quiet_ray_data() -> None:
    """Ray Data without its progress report: on a console that is not a terminal (a DVC stage's) it logs every
    operator's state every 10 s, 60 lines for a one-minute stage. Its warnings and errors still print."""
    import logging

    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled. To enable…"


def blocks_of_at_most(dataset, rows: int, remote_args: dict):
    """``dataset`` with blocks of at most ``rows`` rows, cut inside the tasks that make them.

    ``Dataset.repartition(target_num_rows_per_block=rows)`` alone is a task of its own with Ray's default of one
    whole CPU, which Ray Data fuses into the upstream ``map_batches`` only where their remote arguments match. Ours
    ask half a CPU (see ``io`` in ``_run_pipeline``): unfused, on two 1-CPU nodes the repartition task never found
    a whole CPU beside the actors and the read task, and stylization hung without an error. Ray's API sets no
    resources on a repartition, so this gives it the upstream's through its logical operator (Ray is pinned);
    where that fails the blocks stay as they are: slower balancing across actors, never a hang.
    """
    import dataclasses

    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data.dataset import Dataset

        split = dataset.repartition(target_num_rows_per_block=rows)
        operator = dataclasses.replace(split._logical_plan.dag, ray_remote_args=dict(remote_args))
        return Dataset._from_parent(dataset, LogicalPlan(operator, dataset.context))
    except Exception:  # noqa: BLE001 - an optimisation of scheduling: never a reason to fail a stage
        return dataset


def _run_pipeline(listed: Inputs, work: dict[str, dict[str, tuple[int, list[int]]]], styles, plan: list[Job], *,
                  output_format: str, alpha: float, preserve_color, size, style_size, batch_size: int, actors: int,
                  gpus_per_actor: float, cpus_per_actor, image_format: str, quality: int,
                  progress: bool, allow_pickle: bool = False, label: str = "stylize") -> list[dict[str, int]]:
    import ray

    if not progress:
        quiet_ray_data()
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
    # One actor task takes one block, and a decoded block holds every output of its inputs: without this, the one
    # content of the demo's optimize stage (10 outputs, policy all) went to one actor while the other sat idle.
    dataset = blocks_of_at_most(dataset, batch_size, io)
    # A batch is seconds of work (every pending model). With few batches per actor, queue none ahead: under Ray
    # Data's default queue (2 per actor) the first actor up took every batch of the demo's 16 photos while the
    # second was still loading its models. With many, the default keeps each actor fed (256 photos: 2 actors
    # 6.9 images/s against 6.0 with one in flight; BENCHMARKS.md).
    batches = -(-sum(len(outputs) for outputs in work.values()) // batch_size)
    in_flight = 1 if batches < 4 * actors else None
    dataset = dataset.map_batches(
        StylizeActor, batch_format="numpy", batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=in_flight),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs={"jobs": plan, "styles": styles, "output_format": output_format,
                               "alpha": alpha, "preserve_color": preserve_color, "style_size": style_size, "image_format": image_format,
                               "quality": quality, "threads": threads, "use_gpu": use_gpu,
                               "tracking_uri": _tracking_uri([job.model for job in plan]), "allow_pickle": allow_pickle})
    counts = [{"written": 0, "rejected": 0} for _ in plan]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(jobs) for outputs in work.values() for _, jobs in outputs.values()), desc=label,
                   unit="image", disable=None)  # None: no bar where stderr is no terminal (a log)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for job, status in zip(batch["job"], batch["status"]):
            counts[int(job)][str(status)] += 1
        if bar is not None:
            bar.update(len(batch["status"]))
    if bar is not None:
        bar.close()
    return counts


def add_dataset_arguments(command, policy_seed: bool = True, input_size: bool = True, domain: bool = False) -> None:
    """The inputs, styles, output and Ray Data options ``stylize-dataset`` and ``optimize-dataset`` share (the
    latter's ``--seed`` and ``--size`` are its method's; ``domain``: ``--domain`` in the place of ``--style``)."""
    add_renamed(command, "--content", "--input", required=True, nargs="+",
                help="content: shard folders / .tar files (local or s3://), or one image folder")
    add_renamed(command, "--style", "--styles", required=not domain, nargs="+",
                help="style image files, a folder or a shard set" + (" (or --domain)" if domain else ""))
    if domain:
        command.add_argument("--domain", help="for a GAN translation model (stylecore.gan), instead of --style: the "
                                              "domain to translate every input to (one of the model's)")
    command.add_argument("--output", required=True, help="output folder (re-running it resumes)")
    command.add_argument("--policy", choices=POLICIES, default="round_robin",
                         help="each input's style: the first (one), in turn (round_robin), seeded by key (random), or "
                              "every style (all: outputs <input>/<style>)")
    if policy_seed:
        command.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    if input_size:
        command.add_argument("--size", type=int, help="resize inputs to this short side (default: keep)")
    command.add_argument("--style-size", dest="style_size", type=int, default=512,
                         help="resize styles to this short side (0 keeps their size)")
    command.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="images per model call")
    command.add_argument("--actors", type=int, default=2, help="model replicas (actor pool size)")
    command.add_argument("--gpus-per-actor", dest="gpus_per_actor", type=float, default=0.0,
                         help="GPUs per replica (0: CPU; 0.5 puts two replicas on a GPU)")
    command.add_argument("--format", dest="output_format", choices=FORMATS, default="webdataset",
                         help="webdataset: tar shards with a manifest, like the inputs; files: one image per output")
    command.add_argument("--image-format", dest="image_format", choices=["jpg", "png"], default="jpg",
                         help="encoding of the written images")
    command.add_argument("--limit", type=int, help="only the first N inputs in key order")
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def add_command(subparsers) -> None:
    """The ``stylecore stylize-dataset`` subcommand (registered as a ``stylecore.commands`` entry point)."""
    command = subparsers.add_parser("stylize-dataset", help="stylize a whole dataset with Ray Data (resumable)")
    command.add_argument("--model", required=True, help="models:/name@alias or models:/name/version (tracking store "
                                                        "from MLFLOW_TRACKING_URI), a checkpoint directory, or "
                                                        "pretrained:magenta_lite")
    add_dataset_arguments(command, domain=True)
    command.add_argument("--alpha", type=float, default=1.0, help="style strength in [0, 1]")
    command.add_argument("--preserve-color", dest="preserve_color", choices=["coral", "luminance"],
                         help="keep the content's colours (as stylecore stylize)")
    command.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                         help="load a models:/ URI logged without a stylecore checkpoint by unpickling MLflow's copy "
                              "(runs code from the store: only for stores you trust)")
    command.set_defaults(func=_cmd_stylize_dataset)


def _cmd_stylize_dataset(args: argparse.Namespace) -> int:
    try:
        if (args.style is None) == (args.domain is None):
            raise StylizeError("give either --style (style images, for the arbitrary-style models) or --domain (a "
                               "domain name, for a GAN translation model)")
        stylize_dataset(args.content, args.style, args.model, args.output, domain=args.domain, policy=args.policy,
                        seed=args.seed,
                        alpha=args.alpha, preserve_color=args.preserve_color, size=args.size,
                        style_size=args.style_size or None, batch_size=args.batch_size, actors=args.actors,
                        gpus_per_actor=args.gpus_per_actor, output_format=args.output_format,
                        image_format=args.image_format, limit=args.limit, progress=not args.quiet,
                        allow_pickle=args.allow_pickle)
    except StylizeError as error:
        print(f"error: stylize-dataset: {error}", file=sys.stderr)
        return 2
    return 0


