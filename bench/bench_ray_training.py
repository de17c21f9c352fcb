"""Ray Train against the direct training loop: samples/s once started, for 1 and 2 workers.

Both sides run the same Trainer on the same streamed demo shards (generated here, nothing is
downloaded; random:0 encoders). Each run takes ``(windows + 1) × window`` steps; the figure is the
median over the windows after the first of wall-clock samples/s, so start-up is excluded and
everything a step really costs is in: data loading and augmentation, hooks, and for Ray one report
with a rank-0 checkpoint per window (the Ray side's ``throughput`` metric). The direct loop runs twice:
bare, and saving the same checkpoint once per window, so that the second comparison charges Ray Train
only with what it adds (the report, the copy into its storage, its daemons) and not with the checkpoint
any real run writes. Medians, because a shared 2-core VM drifts by ±20% from minute to minute. The
issue's target: 1 Ray worker keeps ≥ 90% of the direct loop.

A GAN translation model (``--model cyclegan`` or ``ugatit``: photo ↔ one synthetic family, adversarial steps
with their paper's optimisers; ``--gan-width`` narrows the networks for a small machine) goes through the same
two loops: the direct ``AdversarialTrainer`` against the GAN stage's Ray Train run.

    python bench/bench_ray_training.py                         # adain, 64², batch 4, CPU
    python bench/bench_ray_training.py --size 256 --device cuda --precision bf16 --workers 1
    python bench/bench_ray_training.py --model cyclegan --size 64 --batch 1 --gan-width 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.data import ShardPairStream, save_image  # noqa: E402
from stylecore.shards import SourceItem, prepare_image, write_shards  # noqa: E402
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo  # noqa: E402
from stylecore.training import Trainer  # noqa: E402


def build_shards(root: Path, size: int, count: int = 64) -> tuple[Path, Path]:
    for role in ("content", "style"):
        raw = root / f"raw-{role}"
        for i in range(count):
            image = synthetic_photo(i, size) if role == "content" else \
                synthetic_artwork(i, STYLE_FAMILIES[i % len(STYLE_FAMILIES)], size)
            save_image(image, raw / f"{i}.png")
        prepared = (prepare_image(raw, SourceItem(f"{i}.png"), role, "train", size, 90, 16, 10**8) for i in range(count))
        write_shards(prepared, root / role, role, maxcount=count // 4)
    return root / "content", root / "style"


def direct(config: dict, content: Path, style: Path, batch: int, size: int, window: int, windows: int,
           device: str, checkpoints: Path | None = None) -> float:
    """Median wall-clock samples/s of the plain loop over its windows after the first; with ``checkpoints`` the
    loop saves a checkpoint there at the end of every window, as `stylecore train` does every
    ``checkpoint_every`` steps and as the Ray side's rank 0 does at every report."""
    trainer = Trainer(config, device=device)
    stream = ShardPairStream(content, style, batch_size=batch, crop_size=size, seed=0, flip=True)
    data = iter(stream)
    rates = []
    for index in range(windows + 1):
        started = time.perf_counter()
        for _ in range(window):
            pair = next(data)
            trainer.train_step(pair.content, pair.style)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if checkpoints is not None:
            trainer.save_checkpoint(checkpoints, data=stream)
        if index:
            rates.append(window * batch / (time.perf_counter() - started))
    return statistics.median(rates)


def with_ray(config: dict, content: Path, style: Path, batch: int, size: int, window: int, windows: int,
             workers: int, threads: int, use_gpu: bool, storage: Path) -> tuple[float, float, float]:
    """Medians over the windows after the first of (wall-clock samples/s, the steps' own samples/s), and
    the seconds from fit() to the end, of a Ray Train run reporting (with a checkpoint) once per window."""
    from pipelines.ray_session import Scale
    from pipelines.ray_training import run
    from stylecore.config import DataConfig

    started = time.perf_counter()
    result = run(config, DataConfig(batch_size=batch, crop_size=size, flip=True), content, style,
                 name=f"bench-{workers}", storage_path=str(storage), scale=Scale(workers, use_gpu, 1.0, threads),
                 report_every=window, keep=windows + 1, max_failures=0)
    reports = sorted((metrics for _, metrics in result.best_checkpoints), key=lambda m: m["step"])[1:]
    return (statistics.median(m["throughput"] for m in reports),
            statistics.median(m["samples_per_second"] for m in reports), time.perf_counter() - started)


def training_config(model: str, steps: int, precision: str, gan_width: int | None) -> dict:
    """The run's TrainConfig as a dict: an arbitrary-style model on random:0 encoders, or a GAN photo ↔ dots with its
    paper's optimiser settings (a multi-domain GAN needs labelled shards, which this bench does not write)."""
    from stylecore import gan
    from stylecore.config import to_dict
    from stylecore.gan.training import paper_config

    if model not in gan.names():
        return {"model": model, "model_params": {"encoder_weights": "random:0"}, "steps": steps, "lr": 1e-4,
                "precision": precision, "seed": 0}
    cls = gan.GAN_MODELS.get(model)
    if cls.multi_domain:
        sys.exit(f"error: {model} trains on labelled artworks of several domains; this bench times cyclegan or ugatit")
    widths = {"width": gan_width, "d_width": gan_width} if gan_width else {}
    return to_dict(paper_config(model, model_params={**cls.domain_params("style", ["dots"]), **widths}, steps=steps,
                                precision=precision, seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="adain")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="per worker")
    parser.add_argument("--window", type=int, default=8, help="steps per measured window")
    parser.add_argument("--windows", type=int, default=5, help="measured windows (after one warm-up window)")
    parser.add_argument("--workers", type=int, nargs="+",
                        help="Ray worker counts to time (default 1 and 2 on CPU; 1 up to the GPU count on CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard processes")
    parser.add_argument("--gan-width", type=int, help="a GAN's generator and discriminator width (default: the "
                                                         "paper's, 64)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ray

    gpus = torch.cuda.device_count()
    if args.workers is None:
        args.workers = [1, 2] if not args.device.startswith("cuda") else sorted({1, max(1, gpus)})
    if args.device.startswith("cuda") and max(args.workers) > gpus:
        # each GPU worker takes a whole GPU: more than there are would wait forever, printing nothing
        sys.exit(f"error: --workers {max(args.workers)} needs that many GPUs; this machine has {gpus}")
    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    config = training_config(args.model, (args.windows + 1) * args.window, args.precision, args.gan_width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        content, style = build_shards(Path(tmp), max(args.size, 96))
        base = direct(config, content, style, args.batch, args.size, args.window, args.windows, args.device)
        rows.append({"run": "direct loop, 1 process", "threads": cpus, "samples_per_second": base})
        saving = direct(config, content, style, args.batch, args.size, args.window, args.windows, args.device,
                        checkpoints=Path(tmp) / "direct-checkpoints")
        rows.append({"run": "direct, checkpoint/window", "threads": cpus, "samples_per_second": saving})
        ray.init(num_cpus=cpus, num_gpus=torch.cuda.device_count(), include_dashboard=not args.no_dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=False)
        try:
            for workers in args.workers:
                threads = 1 if args.device.startswith("cuda") else max(1, cpus // workers)
                throughput, steps_only, seconds = with_ray(
                    config, content, style, args.batch, args.size, args.window, args.windows, workers, threads,
                    args.device.startswith("cuda"), Path(tmp) / "ray")
                rows.append({"run": f"Ray Train, {workers} worker(s)", "threads": threads, "samples_per_second": throughput,
                             "steps_only_samples_per_second": steps_only, "fit_seconds": seconds})
        finally:
            ray.shutdown()
    print(f"{args.model}, {args.size}², batch {args.batch}/worker, {args.precision}, {args.device}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    for row in rows:
        share = row["samples_per_second"] / base * 100
        extra = (f"; {row['samples_per_second'] / saving * 100:5.1f}% of direct with a checkpoint per window; the steps "
                 f"alone {row['steps_only_samples_per_second']:.2f}; fit() {row['fit_seconds']:.1f} s in all"
                 if "fit_seconds" in row else "")
        print(f"  {row['run']:<26} {row['threads']} thread(s)  {row['samples_per_second']:7.2f} samples/s  "
              f"({share:5.1f}% of direct){extra}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
