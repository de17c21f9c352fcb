"""Forward + backward time of each style loss on VGG-16 features, and the balanced/classic ratio.

    python bench/bench_losses.py [--batch 8] [--size 256] [--repeats 15] [--device cpu]

Features come from one pass of a seeded random VGG-16 (the timing does not depend on the weights);
each loss is then timed alone: forward on leaf copies of the output's features (so backward stops
there), backward to them. Prints a table and one JSON line for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import stylecore.losses as L
from stylecore.encoders import VGGEncoder

STYLE_LOSSES = ["gram", "balanced_gram", "mean_std", "moments", "remd"]
CONTENT_LOSSES = ["content", "self_similarity"]


def time_loss(loss, pred_features, target_features, repeats: int, device: torch.device) -> list[float]:
    times = []
    for i in range(repeats + 2):  # two warm-up runs
        leaves = {k: v.detach().requires_grad_(True) for k, v in pred_features.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss(leaves, target_features).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    encoder = VGGEncoder("vgg16", layers=["relu4_3"], weights="random:0").to(device)
    layers = sorted({layer for name in STYLE_LOSSES + CONTENT_LOSSES for layer in L.build(name).layers})
    with torch.no_grad():
        pred = encoder(torch.rand(args.batch, 3, args.size, args.size, device=device), layers)
        style = encoder(torch.rand(args.batch, 3, args.size, args.size, device=device), layers)
        content = encoder(torch.rand(args.batch, 3, args.size, args.size, device=device), layers)
    results = {}
    print(f"device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, {args.size}², median of {args.repeats}")
    for name in STYLE_LOSSES + CONTENT_LOSSES:
        loss = L.build(name)
        target = content if name in CONTENT_LOSSES else style
        times = time_loss(loss, {k: pred[k] for k in loss.layers}, {k: target[k] for k in loss.layers},
                          args.repeats, device)
        results[name] = {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
                         "layers": loss.layers}
        print(f"  {name:<16} {results[name]['median_ms']:8.2f} ms (min {results[name]['min_ms']:.2f})  "
              f"layers {','.join(loss.layers)}")
    ratio = results["balanced_gram"]["median_ms"] / results["gram"]["median_ms"]
    print(f"balanced_gram / gram = {ratio:.3f} (goal ≤ 1.05)")
    print(json.dumps({"device": str(device), "batch": args.batch, "size": args.size, "ratio": round(ratio, 3),
                      "median_ms": {k: round(v["median_ms"], 2) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
