"""The training input pipeline: batches/s of ShardPairStream read inline (decode and augmentation on the
training thread) against the same stream read by background loader threads.

Shards of JPEGs are generated here (nothing is downloaded) at the full profile's sizes by default (stored
512 px, load 512, crop 256, batch 8: every stored image is decoded and a 256² window cut from it;
``--store-size 256`` is the older setting where every crop was upscaled 2×), and the training side only
consumes the batches, as a GPU step that takes a few ms would. Medians of rounds taken
in turn (inline, loader, inline, …), because a shared VM drifts. The issue's target: ≥ 1.7× with 2
workers on a 2-core machine.

    python bench/bench_loader.py                     # 2 workers, 60 batches a round, 3 rounds
    python bench/bench_loader.py --workers 2 4 --store-size 256 --load-size 512
"""

from __future__ import annotations

import argparse
import json
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


def build_shards(root: Path, count: int = 64, size: int = 512) -> tuple[Path, Path]:
    for role in ("content", "style"):
        raw = root / f"raw-{role}"
        items = []
        for i in range(count):
            image = synthetic_photo(i, size) if role == "content" else synthetic_artwork(i, STYLE_FAMILIES[i % 5], size)
            save_image(image, raw / f"{i:04d}.png")
            items.append(SourceItem(f"{i:04d}.png"))
        write_shards((prepare_image(raw, item, role, "train", size, 90, 16, 10**8) for item in items),
                     root / role, role, maxcount=16)
    return root / "content", root / "style"


def batches_per_second(stream: ShardPairStream, count: int) -> float:
    iterator = iter(stream)
    next(iterator)  # start-up (worker processes, shard opening) is not the steady state a run lives in
    started = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--load-size", type=int, default=512)
    parser.add_argument("--store-size", type=int, default=512, help="short side of the generated stored JPEGs")
    parser.add_argument("--batches", type=int, default=60, help="batches timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training thread's share; the loader workers take a core each
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        content, style = build_shards(Path(tmp), size=args.store_size)
        settings = dict(batch_size=args.batch, crop_size=args.crop_size, load_size=args.load_size, flip=True,
                        shuffle_buffer=100)
        rates: dict[int, list[float]] = {0: [], **{w: [] for w in args.workers}}
        for _ in range(args.rounds):
            for workers in rates:
                rates[workers].append(batches_per_second(ShardPairStream(content, style, workers=workers, **settings),
                                                         args.batches))
        inline = statistics.median(rates[0])
        for workers, values in rates.items():
            rate = statistics.median(values)
            rows.append({"loader": "inline (training thread)" if not workers else f"{workers} loader threads",
                         "batches_per_second": round(rate, 2), "samples_per_second": round(rate * args.batch, 1),
                         "ms_per_batch": round(1000 / rate, 1), "vs_inline": round(rate / inline, 2),
                         "rounds": [round(v, 2) for v in values]})
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s) in the trainer"
    print(f"# {machine}; batch {args.batch}, stored {args.store_size}, load {args.load_size}, crop {args.crop_size}")
    for row in rows:
        print(f"{row['loader']:<26} {row['batches_per_second']:7.2f} batches/s  {row['ms_per_batch']:6.1f} ms/batch  "
              f"{row['vs_inline']:.2f}× inline  rounds {row['rounds']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
