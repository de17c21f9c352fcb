"""stylecore serve under load: requests/s and p50 / p99 latency, batching on and off, over HTTP on 127.0.0.1.

The service runs as `stylecore serve` does (a local Ray, one replica per model, the Gateway in front), serving
``--model`` (default pretrained:magenta_lite). Clients post the same-size photo with an uploaded style,
concurrently; a run has ``--requests`` requests per (size, clients) cell. "Batching off" is max_batch_size 1.

    python bench/bench_serve.py                            # 256² and 512², 1 / 4 / 16 clients, CPU
    python bench/bench_serve.py --sizes 512 1024 --requests 128   # on a GPU machine (gpus_per_replica auto)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_evaluation import cpu_name  # noqa: E402
from pipelines import serve as serving  # noqa: E402
from pipelines.sources import load_params  # noqa: E402


def image_bytes(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    pixels = np.stack([x * 255 / side, y * 255 / side, 128 + 60 * np.sin(x / 11.0)], -1) + rng.normal(0, 10, (side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def load(url: str, model: str, side: int, clients: int, count: int) -> dict[str, float]:
    content, style = image_bytes(side, 0), image_bytes(256, 1)

    def one(_):
        started = time.perf_counter()
        answer = requests.post(f"{url}/stylize", files={"content": ("c.jpg", content, "image/jpeg"),
                                                        "style": ("s.jpg", style, "image/jpeg")},
                               data={"model": model, "size": str(side)}, timeout=600)
        answer.raise_for_status()
        return time.perf_counter() - started, int(answer.headers["X-Batch-Size"])

    one(0)  # warm
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {"requests_per_s": count / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "mean_batch": statistics.mean(r[1] for r in results)}


def serve_with(params: dict, root: Path, model: str, batch: int, work) -> object:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    params = json.loads(json.dumps(params))
    params["serve"].update(port=number, max_batch_size=batch, replicas={"min": 1, "max": 1}, max_output_side=2048)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serving.serve_locally, args=(root / "params.yaml", root / "reports", root / "shards",
                                                                   [model], None, None, ready, stop), daemon=True)
    thread.start()
    if not ready.wait(600):
        raise RuntimeError("the service did not start")
    try:
        return work(f"http://127.0.0.1:{number}")
    finally:
        stop.set()
        thread.join(120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:magenta_lite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-batch-size", dest="batch", type=int, default=8)
    args = parser.parse_args(argv)
    params = load_params(REPO / "params.yaml")  # with the catalogue: the gallery reads the held-out artworks' source
    name = args.model.split(":", 1)[1] if args.model.startswith("pretrained:") else args.model
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching, batch in (("on", args.batch), ("off", 1)):
            def work(url):
                return [{"batching": batching, "size": side, "clients": clients,
                         **load(url, name, side, clients, max(args.requests, clients))}
                        for side in args.sizes for clients in args.clients]
            rows += serve_with(params, Path(tmp), args.model, batch, work)
    print(f"stylecore serve, {args.model}, CPU {cpu_name()}, max_batch_size {args.batch} (on) / 1 (off), "
          f"{args.requests} requests per cell")
    print("| batching | size | clients | requests/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batching']} | {row['size']}² | {row['clients']} | {row['requests_per_s']:.2f} | "
              f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['mean_batch']:.1f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
