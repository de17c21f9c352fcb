"""Sharding throughput and memory, and shard-reader throughput against an image-folder baseline.

    python bench/bench_shards.py --images 2000 8000 --workers 1 2

For each image count it generates COCO-sized JPEGs (640×480, photo-like gradients and noise), shards
them to a 512 short side with pipelines.shard (1 worker, then all), and reports images/s, images/s per
worker process and the peak RSS of the stage (its process plus its workers, from /proc). Then it reads the
shards with stylecore's streaming reader (decode + resize + crop + flip) against torchvision's
ImageFolder + the same transform, single process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    (folder / "train").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(count):
        colour = rng.uniform(0, 255, size=3)
        base = (x / 640)[..., None] * colour + (y / 480)[..., None] * (255 - colour)
        noise = rng.normal(0, 12, size=(480, 640, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = f"train/{i:06d}.jpg"
        Image.fromarray(image).save(folder / path, quality=90)
        labels[path] = {"scene": f"s{i % 10}"}
    (folder / "labels.json").write_text(json.dumps(labels))


def shard_once(work: Path, workers: int) -> dict:
    """Run the shard stage in a fresh process, so its peak RSS (and its workers') is its own."""
    params = {
        "profile": "demo", "profiles": {"demo": ["bench"]},
        "sources": {"bench": {"kind": "synthetic", "role": "content"}},
        "shard": {"store_size": 512, "jpeg_quality": 90, "min_side": 64, "max_pixels": 89478485,
                  "maxcount": 1000, "min_shards": 4, "workers": workers},
    }
    import yaml

    (work / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(work / "shards", ignore_errors=True)
    # Peak RSS is sampled from /proc (the stage process plus its worker processes, summed): getrusage's
    # ru_maxrss would carry over the parent's high-water mark across fork + exec.
    code = (
        "import json, os, threading, time\n"
        "from pathlib import Path\n"
        "def rss(pid):\n"
        "    try:\n"
        "        return int(open(f'/proc/{pid}/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "    except OSError:\n"
        "        return 0\n"
        "def children():\n"
        "    out = []\n"
        "    for task in os.listdir('/proc/self/task'):\n"
        "        try:\n"
        "            out += open(f'/proc/self/task/{task}/children').read().split()\n"
        "        except OSError:\n"
        "            pass\n"
        "    return out\n"
        "peak = {'total': 0, 'parent': 0}\n"
        "def sample():\n"
        "    while True:\n"
        "        own = rss(os.getpid())\n"
        "        total = own + sum(rss(c) for c in children())\n"
        "        peak['total'] = max(peak['total'], total); peak['parent'] = max(peak['parent'], own)\n"
        "        time.sleep(0.1)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "from pipelines.shard import run\n"
        f"work = Path({str(work)!r})\n"
        "t = time.perf_counter()\n"
        "m = run('bench', 'train', work / 'params.yaml', work / 'raw', work / 'shards', progress=False)\n"
        "elapsed = time.perf_counter() - t\n"
        "time.sleep(0.2)\n"
        "print(json.dumps({'samples': m['samples'], 'seconds': elapsed, 'peak_rss_total_mb': peak['total'] / 2**20,"
        " 'peak_rss_parent_mb': peak['parent'] / 2**20}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def read_throughput(shards: Path, raw: Path, batches: int, batch: int) -> dict:
    import torch
    import torchvision

    from stylecore.data import Augment, ShardPairStream, seeded_generator

    stream = iter(ShardPairStream(shards, shards, batch_size=batch, crop_size=256, seed=0, flip=True,
                                  shuffle_buffer=100))
    next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    ours = 2 * batch * batches / (time.perf_counter() - started)  # content + style images per second

    augment = Augment(256, flip=True)
    generator = seeded_generator(0)
    to_tensor = torchvision.transforms.functional.pil_to_tensor
    folder = torchvision.datasets.ImageFolder(str(raw), loader=lambda p: torchvision.datasets.folder.pil_loader(p))
    order = torch.randperm(len(folder), generator=generator)
    started = time.perf_counter()
    count = 2 * batch * batches
    for i in range(count):
        image, _ = folder[int(order[i % len(folder)])]
        augment(to_tensor(image).float().div_(255), generator)
    baseline = count / (time.perf_counter() - started)
    return {"stylecore_shards_images_per_s": ours, "imagefolder_images_per_s": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--read-batches", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    for count in args.images:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            files = work / "raw" / "bench" / "files"
            started = time.perf_counter()
            make_images(files, count)
            (work / "raw" / "bench" / "SOURCE.json").write_text(json.dumps({"status": "complete"}))
            print(f"# generated {count} 640x480 JPEGs in {time.perf_counter() - started:.0f}s", flush=True)
            for workers in args.workers:
                run = shard_once(work, workers)
                rate = run["samples"] / run["seconds"]
                row = {"images": count, "workers": workers, "images_per_s": rate,
                       "images_per_s_per_process": rate / workers, **run}
                results.append(row)
                print(json.dumps(row), flush=True)
            reading = read_throughput(work / "shards" / "bench-train", files, args.read_batches, 8)
            results.append({"images": count, **reading})
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
