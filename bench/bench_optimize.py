"""Seconds per pair and peak memory of the optimisation methods (stylecore optimize) at each output size.

Each configuration runs in its own process (so its peak resident memory, ru_maxrss, is its own) for a few steps at
every scale of the method's real schedule; the seconds per step of each scale, times the schedule's steps (STROTSS
250 a scale, Gatys 300), give the seconds per pair. Inputs: scikit-image's bundled photos (astronaut, rocket),
seeded random VGG weights (the time does not depend on the weights).

    python bench/bench_optimize.py                               # 256 and 512, fp32 and bf16 where supported
    python bench/bench_optimize.py --sizes 256 512 1024 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(method: str, size: int, precision: str, device: str, steps: int) -> dict:
    """One configuration, in this process: the seconds per step of each scale and the peak memory."""
    import importlib.util
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from stylecore import optimize

    samples = Path(importlib.util.find_spec("skimage").origin).parent / "data"

    def load(name: str) -> torch.Tensor:
        image = Image.open(samples / name).convert("RGB")
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]

    built = optimize.build(method, size=size, steps=steps, precision=precision, device=device,
                           encoder_weights="random:0")
    schedule = 250 if method == "strotss" else 300
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = built.run(load("astronaut.png"), load("rocket.jpg"))
    wall = time.perf_counter() - started
    per_step = [record.seconds / record.steps for record in result.scales]
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": method, "size": size, "precision": built.precision, "device": device,
            "scales": [list(record.size) for record in result.scales],
            "seconds_per_step": [round(s, 4) for s in per_step],
            "seconds_per_pair": round(sum(per_step) * schedule, 1), "schedule_steps_per_scale": schedule,
            "measured_steps_per_scale": steps, "measured_wall": round(wall, 1), "peak_memory_gib": round(peak / 2**30, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--methods", nargs="+", default=["strotss", "gatys"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4, help="steps measured at each scale (default 4)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: method,size,precision in this process
    args = parser.parse_args()
    if args.one:
        method, size, precision = args.one.split(",")
        print(json.dumps(measure(method, int(size), precision, args.device, args.steps)))
        return 0
    import torch

    from stylecore.devices import bf16_supported

    precisions = [p for p in args.precisions if p != "bf16" or bf16_supported(torch.device(args.device))]
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    print("| method | size | precision | scales | s/step per scale | s/pair (schedule) | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        for size in args.sizes:
            for precision in precisions:
                done = subprocess.run([sys.executable, __file__, "--one", f"{method},{size},{precision}", "--device",
                                       args.device, "--steps", str(args.steps)], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"| {method} | {size} | {precision} | failed: {done.stderr.strip().splitlines()[-1]} |")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {method} | {size} | {row['precision']} | {len(row['scales'])} | "
                      f"{' / '.join(f'{s:.3g}' for s in row['seconds_per_step'])} | {row['seconds_per_pair']:.0f} "
                      f"({row['schedule_steps_per_scale']} steps a scale) | {row['peak_memory_gib']:.2f} GiB |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
