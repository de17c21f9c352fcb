"""Pairs per second of optimisation over a dataset with Ray (stylecore optimize-dataset) against a plain loop.

The same pairs (generated photos × artworks, policy all) are optimised three ways, each on fresh output folders:
a plain in-process loop on one thread (one core), and the Ray Data pipeline with 1 and with 2 actors (one thread
each) on a local Ray started before the clock. The pipeline's time includes its actors' start-up (model build,
imports) and the writes and commits; the ratio per core is (pairs/s ÷ actors) ÷ the loop's pairs/s.

    python bench/bench_optimize_dataset.py                                  # gatys, 16 pairs at 64 px
    python bench/bench_optimize_dataset.py --method strotss --photos 4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="gatys", choices=["gatys", "strotss"])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--styles", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray
    import torch

    from pipelines.optimize_dataset import optimize_dataset
    from pipelines.stylize_inputs import decode_resize
    from stylecore import optimize
    from stylecore.data import save_image
    from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo

    root = Path(tempfile.mkdtemp(prefix="bench-optimize-dataset-"))
    for index in range(args.photos):
        save_image(synthetic_photo(index, args.size), root / "photos" / f"p{index:03d}.png")
    for index in range(args.styles):
        family = STYLE_FAMILIES[index % len(STYLE_FAMILIES)]
        save_image(synthetic_artwork(index, family, args.size), root / "styles" / f"{family}{index}.png")
    settings = {"size": args.size, "steps": args.steps, "encoder_weights": "random:0", "precision": "auto"}
    pairs = args.photos * args.styles

    torch.set_num_threads(1)  # one core, as each actor has
    method = optimize.build(args.method, device="cpu", **settings)
    styles = [decode_resize(p.read_bytes(), None).float()[None] / 255 for p in sorted((root / "styles").glob("*.png"))]
    started = time.perf_counter()
    for photo in sorted((root / "photos").glob("*.png")):
        content = decode_resize(photo.read_bytes(), None).float()[None] / 255
        for style in styles:
            save_image(method.run(content, style).image[0], root / "loop" / photo.stem / "x.png")
    loop_rate = pairs / (time.perf_counter() - started)
    results = {"cpu": cpu_name(), "method": args.method, "pairs": pairs, "size": args.size, "steps": args.steps,
               "precision": method.precision, "loop_pairs_per_second": round(loop_rate, 4)}
    print(f"{cpu_name()}: {args.method} {pairs} pairs at {args.size} px, {args.steps} steps, {method.precision}")
    print(f"  plain loop, 1 thread: {loop_rate:.3f} pairs/s")

    ray.init(num_cpus=max(2, max(args.actors)), include_dashboard=False, log_to_driver=False)
    try:
        for actors in args.actors:
            started = time.perf_counter()
            manifest = optimize_dataset(root / "photos", root / "styles", args.method, root / f"ray{actors}", settings,
                                        policy="all", style_size=args.size, actors=actors, output_format="files",
                                        image_format="png", progress=False)
            seconds = time.perf_counter() - started
            assert manifest["written"] == pairs, manifest["missing"]
            rate = pairs / seconds
            results[f"ray_{actors}_actors_pairs_per_second"] = round(rate, 4)
            results[f"ray_{actors}_actors_per_core_vs_loop"] = round(rate / actors / loop_rate, 3)
            print(f"  Ray Data, {actors} actor(s): {rate:.3f} pairs/s ({seconds:.1f} s with the actors' start-up); "
                  f"per core {rate / actors / loop_rate:.2f}× the loop")
    finally:
        ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
