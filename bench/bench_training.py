"""Training throughput of every model (the GAN models' adversarial step included), and the AdaIN step against the
public reference's step.

Prints one line per measurement (model, precision, size, batch, samples/s, ms/step, trained parameters)
and, with --json, writes them for BENCHMARKS.md. Random encoders (random:0): nothing is downloaded.

    python bench/bench_training.py                                  # every model, 256², batch 8
    python bench/bench_training.py --models adain --size 128 --batch 4 --reference
    python bench/bench_training.py --device cuda --precision fp32 bf16 --compile-too
    python bench/bench_training.py --models cyclegan --batch 1 --precision fp32 bf16   # CycleGAN's paper batch

The reference step re-creates pytorch-AdaIN's train.py iteration from its published description
(VGG-19 to relu4_1 as four slices, mirrored decoder, unbiased mean/std loss, Adam on the decoder) with
plain torch modules, so both run the same arithmetic on the same machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.training import Trainer  # noqa: E402

OFFLINE = {
    "adain": {"encoder_weights": "random:0"},
    "linear": {"encoder_weights": "random:0", "autoencoder_fraction": 0.0},
    "sanet": {"encoder_weights": "random:0"},
    "magenta": {"encoder_weights": "random:0", "predictor_weights": "random:0"},
    "vae_adain": {"encoder_weights": "random:0"},
    "magenta_lite": {"encoder_weights": "random:0", "weights": "random:0"},  # weights do not change a step's cost
    "cyclegan": {},  # the official networks (ResNet-9 generators, 70×70 PatchGANs); a step is G then D, both ways
    "ugatit": {},  # the official light generators, global and local discriminators
    "stargan": {"domains": ["art"]},  # the photos and one artwork domain; n_critic 1 here: every step times G and D
}
#: a step's extra inputs per model: StarGAN reads each style image's domain label
LABELLED = {"stargan": "art"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def bench_model(name: str, size: int, batch: int, precision: str, compile_: bool, device: torch.device,
                warmup: int, steps: int, model_params: dict | None = None) -> dict:
    params = OFFLINE[name] if model_params is None else model_params
    trainer = Trainer({"model": name, "model_params": params, "steps": 10**6, "precision": precision,
                       "compile": compile_, "channels_last": "auto"}, device=device)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(batch, 3, size, size, generator=g)
    style = torch.rand(batch, 3, size, size, generator=g)
    extra = {"style_labels": [{"style": LABELLED[name]}] * batch} if name in LABELLED else {}
    times = time_steps(lambda: trainer.train_step(content, style, **extra), device, warmup, steps)
    median = statistics.median(times)
    return {"model": name, "implementation": "stylecore", "precision": trainer.precision,
            "channels_last": trainer.channels_last, "compile": compile_, "size": size, "batch": batch,
            "samples_per_s": batch / median, "ms_per_step": 1000 * median, "steps_timed": steps,
            "trained_parameters": sum(p.numel() for p in trainer.parameters)}


# -- the reference AdaIN step -----------------------------------------------------------------------


def _reference_decoder() -> nn.Sequential:
    def block(cin, cout, relu=True):
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        return layers + ([nn.ReLU()] if relu else [])

    up = [nn.Upsample(scale_factor=2, mode="nearest")]
    return nn.Sequential(*block(512, 256), *up, *block(256, 256), *block(256, 256), *block(256, 256),
                         *block(256, 128), *up, *block(128, 128), *block(128, 64), *up, *block(64, 64),
                         *block(64, 3, relu=False))


def _calc_mean_std(feat: torch.Tensor, eps: float = 1e-5):
    n, c = feat.shape[:2]
    var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def bench_reference_adain(size: int, batch: int, device: torch.device, warmup: int, steps: int) -> dict:
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg19(weights=None).features[:21]
    slices = [features[:2], features[2:7], features[7:12], features[12:21]]
    for s in slices:
        s.to(device).requires_grad_(False)
    decoder = _reference_decoder().to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(batch, 3, size, size, generator=g).to(device)
    style = torch.rand(batch, 3, size, size, generator=g).to(device)

    def encode_all(x):
        out = [x]
        for s in slices:
            out.append(s(out[-1]))
        return out[1:]

    def step():
        style_feats = encode_all(style)
        content_feat = content
        for s in slices:
            content_feat = s(content_feat)
        sm, ss = _calc_mean_std(style_feats[-1])
        cm, cs = _calc_mean_std(content_feat)
        t = (content_feat - cm) / cs * ss + sm
        g_t = decoder(t)
        g_feats = encode_all(g_t)
        loss_c = F.mse_loss(g_feats[-1], t)
        loss_s = 0.0
        for gf, sf in zip(g_feats, style_feats):
            gm, gs = _calc_mean_std(gf)
            m, s_ = _calc_mean_std(sf)
            loss_s = loss_s + F.mse_loss(gm, m) + F.mse_loss(gs, s_)
        loss = loss_c + 10.0 * loss_s
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    times = time_steps(step, device, warmup, steps)
    median = statistics.median(times)
    return {"model": "adain", "implementation": "pytorch-AdaIN reference step", "precision": "fp32",
            "channels_last": False, "compile": False, "size": size, "batch": batch, "samples_per_s": batch / median,
            "ms_per_step": 1000 * median, "steps_timed": steps,
            "trained_parameters": sum(p.numel() for p in decoder.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(OFFLINE))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"])
    parser.add_argument("--compile-too", action="store_true", help="also time torch.compile")
    parser.add_argument("--reference", action="store_true", help="also time the pytorch-AdaIN reference step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()} ({cpu}), device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    results = []
    if args.reference:
        results.append(bench_reference_adain(args.size, args.batch, device, args.warmup, args.steps))
        print(json.dumps(results[-1]), flush=True)
    for name in args.models:
        for precision in args.precision:
            for compile_ in ([False, True] if args.compile_too else [False]):
                results.append(bench_model(name, args.size, args.batch, precision, compile_, device,
                                           args.warmup, args.steps))
                print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
