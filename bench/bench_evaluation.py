"""The evaluate stage's metrics: images/s of each, the Fréchet distance and its bootstrap, and the styleid
protocol's cost.

Each per-pair metric is timed on the output side only, as the stage runs it (references — contents' and
styles' features — are encoded once per batch for all candidates): the seed paper's VGG-16 pass, LPIPS
(AlexNet), LPIPS_gray, CFSD (VGG-19 to relu3_1 and the self-similarity KL), the colour histogram, and the
Inception pool3 features FID reads, and the deception rate's artist classifier (the demo's ResNet-18 at 64 px, the
full profile's ResNet-50 at 224). Random weights (timing does not depend on them). Then the Fréchet
distance by both routes, and the 200-resample ArtFID bootstrap of one comparison at 800 pairs.

The styleid protocol's cost (20 × 40 = 800 pairs at 512 px per candidate) is estimated from these CPU
figures and, for one GPU, from each network's FLOPs per image (``torch.utils.flop_counter``) at an assumed
sustained fp32 rate (``--gpu-tflops``; say which in BENCHMARKS.md): an estimate, not a measurement.

    python bench/bench_evaluation.py                     # 64 px (the demo) and 256 px
    python bench/bench_evaluation.py --sizes 512 --batch 2 --rounds 1   # the styleid size (slow on a CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.classifier import ArtistClassifier  # noqa: E402
from stylecore.metrics import StylizationMetrics  # noqa: E402
from stylecore.metrics.deception import DeceptionRate  # noqa: E402
from stylecore.metrics.cfsd import CFSD  # noqa: E402
from stylecore.metrics.field import pack_set_inputs, set_statistics  # noqa: E402
from stylecore.metrics.frechet import frechet_distance_of_features  # noqa: E402
from stylecore.metrics.histogram import hellinger, rgb_uv_histogram  # noqa: E402
from stylecore.metrics.inception import InceptionFeatures  # noqa: E402
from stylecore.metrics.lpips import LPIPS  # noqa: E402
from stylecore.metrics.statistics import compare_many  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def median_seconds(call, rounds: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def flops_per_image(call, batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="assumed sustained fp32 TFLOP/s of one GPU for the styleid estimate (H100/H200: ~20 of "
                             "their ~60 peak non-tensor fp32)")
    args = parser.parse_args()
    torch.manual_seed(0)
    paper = StylizationMetrics("random:0")
    lpips, cfsd = LPIPS("alex", "random:0"), CFSD("random:0")
    print(f"CPU {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds}")
    results: dict[str, object] = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "batch": args.batch}
    flops_512: dict[str, float] = {}
    for size in args.sizes:
        inception = InceptionFeatures("random:0", resize=96 if size < 75 else None)
        outputs = torch.rand(args.batch, 3, size, size)
        contents, styles = torch.rand(args.batch, 3, size, size), torch.rand(args.batch, 3, size, size)
        index = torch.arange(args.batch)
        with torch.no_grad():
            paper_refs = paper.encode_references(contents, styles)
            lpips_refs, gray_refs = lpips.features(contents), lpips.features(contents, gray=True)
            cfsd_refs, style_hist = cfsd.features(contents), rgb_uv_histogram(styles)
        # the deception rate's judge as each profile's classifier stage trains it: demo ResNet-18 at 64, full ResNet-50
        backbone, judge_size = ("resnet18", 64) if size < 75 else ("resnet50", 224)
        judge = ArtistClassifier([f"artist-{i}" for i in range(15)], backbone=backbone, input_size=judge_size).eval()
        deception = DeceptionRate(judge, styles, [f"artist-{i % 15}" for i in range(args.batch)])
        deception_name = f"deception ({backbone} at {judge_size})"
        with torch.no_grad():
            deception_refs = deception.encode_references(contents, styles)
        calls = {
            "paper (VGG-16)": lambda: paper.score_indexed(outputs, contents, styles, index, index, paper_refs),
            "lpips (AlexNet)": lambda: lpips.distance(lpips.features(outputs), lpips_refs),
            "lpips_gray": lambda: lpips.distance(lpips.features(outputs, gray=True), gray_refs),
            "cfsd (VGG-19 relu3_1)": lambda: cfsd.distance(cfsd.features(outputs), cfsd_refs),
            "histogram": lambda: hellinger(rgb_uv_histogram(outputs), style_hist),
            "inception pool3" + (" (at 96)" if size < 75 else ""): lambda: inception(outputs),
            deception_name: lambda: deception.score_indexed(outputs, contents, styles, index, index, deception_refs),
        }
        row = {}
        with torch.no_grad():
            for name, call in calls.items():
                seconds = median_seconds(call, args.rounds)
                row[name] = args.batch / seconds
                print(f"{size:>4} px  {name:<28} {row[name]:9.2f} images/s", flush=True)
                if size == 512:
                    flops_512[name] = flops_per_image(call, args.batch)
        row["all field + paper"] = 1 / sum(1 / v for v in row.values())
        print(f"{size:>4} px  {'every metric, per output':<28} {row['all field + paper']:9.1f} images/s")
        results[f"images_per_s_{size}"] = row

    generator = torch.Generator().manual_seed(0)
    for count in (64, 800, 2100):
        x, y = torch.randn(count, 2048, generator=generator), torch.randn(count, 2048, generator=generator)
        seconds = median_seconds(lambda: frechet_distance_of_features(x, y), args.rounds)
        route = "sample (n×n SVD)" if count <= 2048 else "matrix (2048² eigh)"
        print(f"Fréchet distance, {count} images, {route}: {seconds * 1000:.0f} ms")
        results[f"frechet_ms_{count}"] = seconds * 1000
    features = torch.randn(800, 2048, generator=generator)
    before = pack_set_inputs(torch.rand(800), features, torch.randn(800, 2048, generator=generator))
    after = pack_set_inputs(torch.rand(800), features + 0.01, before[:, 2049:].float())
    started = time.perf_counter()
    compare_many(before, after, set_statistics(), resamples=200)
    seconds = time.perf_counter() - started
    print(f"FID + ArtFID bootstrap, 800 pairs, 200 resamples: {seconds:.1f} s per model")
    results["artfid_bootstrap_800_s"] = seconds

    if 512 in args.sizes:
        pairs = 800
        cpu_per_candidate = pairs / results["images_per_s_512"]["all field + paper"]
        gpu_flops = sum(flops_512.values())
        gpu_seconds = pairs * gpu_flops / (args.gpu_tflops * 1e12)
        print(f"styleid protocol, per candidate ({pairs} outputs at 512 px, metrics only): CPU {cpu_per_candidate / 60:.1f} "
              f"min here; one GPU ≈ {gpu_seconds:.1f} s at an assumed {args.gpu_tflops:g} TFLOP/s "
              f"({gpu_flops / 1e9:.0f} GFLOP per output), plus {seconds:.1f} s of FID bootstrap per model on the CPU")
        results["styleid_cpu_min_per_candidate"] = cpu_per_candidate / 60
        results["styleid_gpu_s_per_candidate_estimate"] = gpu_seconds
        results["gflop_per_output_512"] = {k: v / 1e9 for k, v in flops_512.items()}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
