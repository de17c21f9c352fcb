"""Every CUDA path of stylecore in one command, for the few minutes a GPU machine is lent.

    python bench/device_check.py --out $OUT            # on a machine with one NVIDIA GPU: ≤ ~8 minutes
    python bench/device_check.py --cpu-smoke --out DIR # the same code paths at tiny sizes on CPU (in the test suite)

It runs each check in turn, never stopping at a failure, and writes ``device_check.json`` and
``device_check.md`` (one table: check, status, figures, the error text of a failure) into ``--out``:

- ``environment``: torch, CUDA, the device, bf16 support, and an unusable GPU named (stylecore.devices);
- ``step/<model>/<mode>``: one training step of every model at 256² × 8 (smoke: 32² × 2) in fp32, in bf16
  autocast + channels_last, and (adain, sanet) with torch.compile: samples/s, ms/step, peak memory;
- ``decisions``: what ``use_gpu: auto`` decides on this machine's resources, fractional GPUs refused under
  DDP, inference on the best device, a checkpoint's RNG holding only its own device's state and reloading;
- ``host-syncs``: device → host synchronisations in one training step (CUDA's sync debug mode);
- ``loader``: batches/s of the shard stream inline, with 2 loader workers (stored 512, load 512, crop 256) and
  with ``jpeg_decode: device`` (nvJPEG), whose pixels are checked against libjpeg-turbo's;
- ``ray-train``: the Ray Train path on this machine's GPU (NCCL, ``use_gpu`` decided by auto), resumable;
- ``ray-data``: Ray Data stylization with one GPU actor: images/s and the outputs' count;
- ``evaluation``: every evaluation metric (the seed paper's, LPIPS, CFSD, histogram, Inception features) on
  outputs at 512² × 4 (smoke: 64² × 2): outputs/s and peak memory, the styleid protocol's figure.

The figures are the machine's; BENCHMARKS.md records them with the command and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_training import OFFLINE, bench_model  # noqa: E402


class Check:
    """One named check: ``run()`` returns its figures; an exception marks it failed with the error text."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = results

    def __call__(self, name: str, run: Callable[[], dict[str, Any] | None], skip: str | None = None) -> None:
        started = time.perf_counter()
        record: dict[str, Any] = {"check": name}
        if skip:
            record.update(status="skip", reason=skip)
        else:
            try:
                record.update(status="pass", **(run() or {}))
            except Exception as error:  # noqa: BLE001 - every failure is recorded and the next check runs
                record.update(status="fail", error=f"{type(error).__name__}: {error}",
                              trace=traceback.format_exc(limit=6)[-2000:])
        record["seconds"] = round(time.perf_counter() - started, 2)
        self.results.append(record)
        figures = {k: v for k, v in record.items() if k not in ("check", "status", "trace", "seconds")}
        print(f"[{record['status']:>4}] {name} ({record['seconds']} s) {json.dumps(figures, default=str)[:300]}",
              flush=True)
        if record["status"] == "fail":
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def environment(device: torch.device) -> dict[str, Any]:
    from stylecore.devices import unusable_gpu_reason
    from stylecore.devices import bf16_supported

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
            "cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": bf16_supported(device), "unusable_gpu": unusable_gpu_reason()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1),
                    capability=f"{properties.major}.{properties.minor}")
    return info


#: the CPU smoke's GANs: narrow networks (their full widths take 20–30 s a step on 2 cores even at 32²), and
#: discriminators shallow enough for 32² crops (U-GAT-IT's global one downsamples 32×, StarGAN's 64×); the same
#: code paths
SMOKE_PARAMS = {"cyclegan": {"width": 8, "blocks": 2, "d_width": 8},
                "ugatit": {"width": 8, "blocks": 1, "d_width": 8, "global_layers": 4, "local_layers": 3},
                "stargan": {**OFFLINE["stargan"], "width": 8, "blocks": 1, "d_width": 8, "d_layers": 3,
                            "image_size": 32}}


def training_step(model: str, mode: str, device: torch.device, size: int, batch: int, steps: int,
                  smoke: bool = False) -> dict[str, Any]:
    precision = "fp32" if mode == "fp32" else "bf16"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    figures = bench_model(model, size, batch, precision, mode == "compile", device, warmup=2, steps=steps,
                          model_params=SMOKE_PARAMS.get(model) if smoke else None)
    if mode == "fp32" and figures["channels_last"]:
        raise AssertionError("fp32 ran channels_last")
    if device.type == "cuda":
        figures["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()
            if k in ("samples_per_s", "ms_per_step", "precision", "channels_last", "peak_memory_gb", "size", "batch")}


def decisions(device: torch.device, scratch: Path) -> dict[str, Any]:
    """Issue 25's CPU-tested decisions, on this machine's real resources."""
    import stylecore
    from pipelines.ray_session import decide_scaling
    from pipelines.settings import RaySettings, TrainStageError
    from stylecore.devices import best_device
    from stylecore.training import Trainer, load_trainer_state

    gpus = torch.cuda.device_count()
    resources = {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}
    auto = decide_scaling(RaySettings(workers=2, use_gpu="auto", gpus_per_worker=1, threads_per_worker="auto",
                                      max_failures=0, keep_checkpoints=1), resources, local=True)
    if auto.use_gpu != (gpus > 0):
        raise AssertionError(f"use_gpu auto chose {auto.use_gpu} with {gpus} GPU(s)")
    try:
        decide_scaling(RaySettings(workers=2, use_gpu=True, gpus_per_worker=0.5, threads_per_worker=1,
                                   max_failures=0, keep_checkpoints=1), {"CPU": 8.0, "GPU": 1.0}, local=True)
        raise AssertionError("two DDP ranks on one GPU were accepted")
    except TrainStageError:
        pass
    if best_device() != device:
        raise AssertionError(f"best_device() is {best_device()}, expected {device}")
    trainer = Trainer({"model": "adain", "steps": 2, "model_params": OFFLINE["adain"]}, device=device)
    trainer.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    checkpoint = trainer.save_checkpoint(scratch / "rng")
    rng = load_trainer_state(checkpoint / "trainer.pt")["rng"]
    if device.type == "cuda" and not isinstance(rng.get("cuda"), torch.Tensor):
        raise AssertionError(f"the checkpoint's CUDA RNG state is {type(rng.get('cuda')).__name__}, not one tensor")
    resumed = Trainer({"model": "adain", "steps": 2, "model_params": OFFLINE["adain"]}, device=device)
    resumed.load_checkpoint(checkpoint)
    loaded = stylecore.load(checkpoint)
    return {"auto_use_gpu": auto.use_gpu, "auto_workers": auto.num_workers, "notice": auto.notice,
            "inference_device": str(loaded.device), "rng_keys": sorted(rng)}


def host_syncs(device: torch.device) -> dict[str, Any]:
    """Synchronisations one training step forces (each stalls the GPU until the host has caught up): none is the
    goal (issue 25 item 6), for the default step, STROTSS's sampled losses and a GAN's two-sided step. The batch is
    pinned, as the loader's are on CUDA."""
    from stylecore.gan.training import paper_config
    from stylecore.training import Trainer

    configs = {
        "adain": {"model": "adain", "model_params": OFFLINE["adain"]},
        "adain-remd-palette": {"model": "adain", "model_params": OFFLINE["adain"], "style_loss": "remd",
                               "objective": {"palette": {"weight": 1.0}}},
        "cyclegan": paper_config("cyclegan", model_params=SMOKE_PARAMS["cyclegan"]).to_dict(),
    }
    content, style = torch.rand(4, 3, 128, 128).pin_memory(), torch.rand(4, 3, 128, 128).pin_memory()
    found: dict[str, list[str]] = {}
    for name, config in configs.items():
        trainer = Trainer({**config, "steps": 100, "precision": "bf16", "max_nonfinite_steps": 50}, device=device)
        trainer.train_step(content, style)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train_step(content, style)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        found[name] = [str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message).lower()]
    if any(found.values()):
        raise AssertionError(f"host syncs in a training step: {found}")
    return {"syncs_per_step": {name: len(syncs) for name, syncs in found.items()}}


def loader(scratch: Path, smoke: bool, device: torch.device) -> dict[str, Any]:
    from bench_loader import batches_per_second, build_shards
    from stylecore.data import ShardPairStream
    from stylecore.shards import decode_jpegs, iterate_samples, shard_urls, undecoded_sample

    content, style = build_shards(scratch / "loader", count=16 if smoke else 64, size=64 if smoke else 512)
    settings = dict(batch_size=2 if smoke else 8, crop_size=32 if smoke else 256, load_size=48 if smoke else 512,
                    flip=True, shuffle_buffer=50)
    batches = 4 if smoke else 40
    inline = batches_per_second(ShardPairStream(content, style, **settings), batches)
    workers = batches_per_second(ShardPairStream(content, style, workers=2, **settings), batches)
    # jpeg_decode: device — each batch's JPEGs decoded together on the device (nvJPEG on a GPU), the same pixels as
    # libjpeg-turbo's within the decoders' rounding
    on_device = batches_per_second(ShardPairStream(content, style, workers=2, decode_device=device, **settings),
                                   batches)
    datas = [undecoded_sample(sample)[1] for _, sample in zip(range(8), iterate_samples(shard_urls(content)))]
    here, there = decode_jpegs(datas, torch.device("cpu")), decode_jpegs(datas, device)
    worst = max(float((a.float() - b.cpu().float()).abs().mean()) for a, b in zip(here, there))
    if worst > 2.0 or any(b.device.type != device.type for b in there):
        raise AssertionError(f"decoding on {device} differs from libjpeg-turbo by {worst:.2f} levels on average")
    return {"inline_batches_per_s": round(inline, 2), "two_workers_batches_per_s": round(workers, 2),
            "speedup": round(workers / inline, 2), "device_decode_batches_per_s": round(on_device, 2),
            "device_decode_mean_abs_levels": round(worst, 3)}


def ray_train(scratch: Path, smoke: bool) -> dict[str, Any]:
    import ray

    from bench_loader import build_shards
    from pipelines import ray_training

    content, style = build_shards(scratch / "ray-shards", count=16, size=64 if smoke else 256)
    steps = 4 if smoke else 40
    config = {"model": "adain", "model_params": OFFLINE["adain"], "steps": steps, "precision": "auto", "seed": 0}
    started = time.perf_counter()
    from pipelines.ray_session import Scale
    from stylecore.config import DataConfig

    gpu = torch.cuda.is_available()
    data = DataConfig(batch_size=2 if smoke else 8, crop_size=32 if smoke else 256, loader_workers=0 if smoke else 2,
                      flip=True)
    result = ray_training.run(config, data, content, style, name="device-check", storage_path=str(scratch / "ray-results"),
                              scale=Scale(1, gpu, 1.0, 1 if not smoke else 2), report_every=steps // 2, keep=2,
                              max_failures=0)
    if result.error is not None or result.checkpoint is None:
        raise RuntimeError(f"Ray Train ended without a checkpoint: {result.error}")
    return {"gpus_in_cluster": ray.cluster_resources().get("GPU", 0), "steps": steps,
            "samples_per_second": round(float(result.metrics["samples_per_second"]), 2),
            "throughput": round(float(result.metrics["throughput"]), 2),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def ray_data(scratch: Path, smoke: bool, device: torch.device) -> dict[str, Any]:
    from pipelines.stylize_dataset import stylize_dataset
    from stylecore.data import save_image
    from stylecore.synthetic import synthetic_artwork, synthetic_photo
    from stylecore.training import Trainer

    count, size = (8, 48) if smoke else (256, 512)
    for index in range(count):
        save_image(synthetic_photo(index, size), scratch / "photos" / f"{index:04d}.jpg")
    for index, family in enumerate(("waves", "dots")):
        save_image(synthetic_artwork(index, family, size), scratch / "styles" / f"{family}.jpg")
    trainer = Trainer({"model": "adain", "steps": 1, "model_params": OFFLINE["adain"]}, device="cpu")
    checkpoint = trainer.save_checkpoint(scratch / "stylize-model")
    gpus = 1.0 if device.type == "cuda" else 0.0
    manifest = stylize_dataset(scratch / "photos", scratch / "styles", str(checkpoint), scratch / "stylized",
                               style_size=size, batch_size=4 if smoke else 16, actors=1, gpus_per_actor=gpus,
                               output_format="files", progress=False)
    if manifest["written"] != count:
        raise AssertionError(f"{manifest['written']} of {count} images written; rejected {manifest['rejected'][:3]}")
    return {"images": count, "size": size, "gpu_actor": bool(gpus),
            "images_per_second": manifest["this_run"]["images_per_second"]}


def evaluation_metrics(device: torch.device, smoke: bool) -> dict[str, Any]:
    """The evaluate stage's scoring of one batch of outputs (references encoded once, as the stage does)."""
    from stylecore.metrics import StylizationMetrics
    from stylecore.metrics.field import EvaluationMetrics, FieldMetrics

    size, batch = (64, 2) if smoke else (512, 4)
    field = FieldMetrics(inception_weights="random:0", lpips_weights="random:0", cfsd_weights="random:0",
                         fid_resize=96 if size < 75 else None)
    metrics = EvaluationMetrics(StylizationMetrics("random:0"), field).to(device)
    images = torch.rand(3, batch, 3, size, size, device=device)
    index = torch.arange(batch, device=device)
    references = metrics.encode_references(images[1], images[2])
    metrics.score_indexed(images[0], images[1], images[2], index, index, references)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rounds, started = 3, time.perf_counter()
    for _ in range(rounds):
        metrics.score_indexed(images[0], images[1], images[2], index, index, references)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / rounds
    figures = {"size": size, "batch": batch, "outputs_per_s": round(batch / seconds, 2),
               "styleid_candidate_s": round(800 * seconds / batch, 1)}
    if device.type == "cuda":
        figures["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return figures


def optimization(method: str, device: torch.device, smoke: bool) -> dict[str, Any]:
    """One content × style pair by an optimisation method (stylecore optimize), a few steps at every scale of its
    schedule: seconds per step of each scale, and the seconds a full pair takes at the schedule's steps."""
    from stylecore import optimize

    size, steps = (32, 2) if smoke else (512, 10)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, size, size, generator=generator), torch.rand(1, 3, size, size, generator=generator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = optimize.build(method, size=size, steps=steps, device=device, encoder_weights="random:0",
                            **({"smallest": 32} if method == "strotss" and smoke else {})).run(content, style)
    per_step = [record.seconds / record.steps for record in result.scales]
    schedule = 250 if method == "strotss" else 300
    figures = {"size": size, "precision": result.precision, "scales": len(per_step),
               "s_per_step": [round(x, 4) for x in per_step], "s_per_pair": round(schedule * sum(per_step), 1)}
    if device.type == "cuda":
        figures["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return figures


def markdown(results: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", "| check | status | seconds | figures |", "|---|---|---|---|"]
    for record in results:
        figures = {k: v for k, v in record.items() if k not in ("check", "status", "seconds", "trace")}
        text = ", ".join(f"{k} {v}" for k, v in figures.items()).replace("|", "/")
        lines.append(f"| {record['check']} | {record['status']} | {record['seconds']} | {text[:400]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not figures")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device-check")))
    parser.add_argument("--models", nargs="+", default=list(OFFLINE))
    parser.add_argument("--skip-ray", action="store_true", help="leave out the Ray Train and Ray Data checks")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    if not smoke and device.type != "cuda":
        print("error: no usable CUDA device here; run with --cpu-smoke to exercise the code paths on CPU",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    check = Check(results)
    size, batch, steps = (32, 2, 2) if smoke else (256, 8, 10)
    no_cuda = None if device.type == "cuda" else "needs CUDA"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        check("environment", lambda: environment(device))
        for model in args.models:
            for mode in ("fp32", "bf16+channels_last") + (("compile",) if model in ("adain", "sanet") else ()):
                skip = "torch.compile is timed on a GPU only" if mode == "compile" and smoke else None
                check(f"step/{model}/{mode}", lambda m=model, md=mode: training_step(m, md, device, size, batch, steps,
                                                                                   smoke), skip=skip)
        check("decisions", lambda: decisions(device, scratch))
        check("host-syncs", lambda: host_syncs(device), skip=no_cuda)
        check("loader", lambda: loader(scratch, smoke, device))
        check("evaluation", lambda: evaluation_metrics(device, smoke))
        for method in ("strotss", "gatys"):
            check(f"optimize/{method}", lambda m=method: optimization(m, device, smoke))
        if not args.skip_ray:
            import ray

            ray.init(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count() if not smoke else 0,
                     include_dashboard=False, log_to_driver=False)
            try:
                check("ray-train", lambda: ray_train(scratch, smoke))
                check("ray-data", lambda: ray_data(scratch, smoke, device))
            finally:
                ray.shutdown()
    title = (f"device check, {'CPU smoke' if smoke else device}, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    (args.out / "device_check.json").write_text(json.dumps({"title": title, "checks": results}, indent=2) + "\n")
    (args.out / "device_check.md").write_text(markdown(results, title))
    failed = [r["check"] for r in results if r["status"] == "fail"]
    print(f"{len(results)} checks: {len(results) - len(failed)} passed or skipped, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "") + f"; {args.out / 'device_check.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
