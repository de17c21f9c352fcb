"""stylecore's AdaIN training step against the public pytorch-AdaIN step, side by side in one process.

The reference's networks are imported at run time from a checkout (or bare git directory) of naoto0804/pytorch-AdaIN
(``net.py`` and ``function.py``; nothing of theirs is in stylecore), and its train.py iteration is run as written:
``Net(vgg[:31], decoder)``, ``loss_c + 10 · loss_s``, Adam (lr 1e-4) on the decoder. Both sides start from the same
weights: the reference's VGG convolutions and decoder are copied from stylecore's random-init (random:0) model, and
its 1×1 input convolution is set to stylecore's ImageNet normalisation. With ``--check`` stylecore's encoder runs
with reflection padding as the reference's does, so the two first-step losses must agree: that proves both time the
same arithmetic.

Four settings, timed in interleaved rounds (each round runs ``--steps`` steps of every setting in turn) after one
warm-up step each; the figure is the median step:

- ``reference fp32``, ``stylecore fp32`` (``precision: fp32``, ``channels_last: false``): like for like;
- ``reference bf16+cl``: the reference's step under CPU/CUDA bf16 autocast with its networks and batches in
  channels_last — what a user would switch on in the reference;
- ``stylecore auto``: ``precision: auto`` (bf16 + channels_last where the device has bf16 arithmetic, else fp32).

    python bench/bench_adain_reference.py --reference /path/to/pytorch-AdaIN --size 128 --batch 4
    python bench/bench_adain_reference.py --reference /path/to/pytorch-AdaIN --size 256 --batch 8 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gan_reference import import_reference  # noqa: E402
from stylecore.encoders import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from stylecore.training import Trainer  # noqa: E402


def stylecore_trainer(precision: str, channels_last: bool | str, padding: str) -> Trainer:
    return Trainer({"model": "adain", "model_params": {"encoder_weights": "random:0",
                                                       "encoder_options": {"padding": padding}},
                    "steps": 10**6, "precision": precision, "channels_last": channels_last, "lr": 1e-4},
                   device="cpu")


def reference_networks(checkout: Path):
    """pytorch-AdaIN's ``net.py`` (its ``vgg``, ``decoder`` and ``Net``) from a checkout or a bare git directory."""
    with tempfile.TemporaryDirectory() as scratch:
        sys.path.insert(0, str(checkout))  # net.py imports function.py by name
        if not (checkout / "function.py").is_file():
            sys.modules["function"] = import_reference(checkout, "function.py", Path(scratch))
        return import_reference(checkout, "net.py", Path(scratch))


def copy_weights_into_reference(net_module, trainer: Trainer) -> nn.Module:
    """A fresh reference ``Net`` with stylecore's weights: its VGG's 3×3 convolutions in order, its 1×1 input
    convolution as the ImageNet normalisation, its decoder's convolutions in order. The module's ``vgg`` and
    ``decoder`` are copied first: each setting gets its own networks (one setting's channels_last conversion or
    optimizer must not reach another's)."""
    vgg, decoder = copy.deepcopy(net_module.vgg), copy.deepcopy(net_module.decoder)
    ours = trainer.model
    ref_convs = [m for m in vgg if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        scale = torch.tensor([1.0 / s for s in IMAGENET_STD])
        ref_convs[0].weight.copy_(torch.diag(scale).view(3, 3, 1, 1))
        ref_convs[0].bias.copy_(-torch.tensor(IMAGENET_MEAN) * scale)
        for ref, conv in zip(ref_convs[1:], ours.encoder.convs.values()):
            ref.weight.copy_(conv.weight)
            ref.bias.copy_(conv.bias)
        ours_decoder = [m for m in ours.decoder.modules() if isinstance(m, nn.Conv2d)]
        ref_decoder = [m for m in decoder if isinstance(m, nn.Conv2d)]
        assert len(ours_decoder) == len(ref_decoder), (len(ours_decoder), len(ref_decoder))
        for ref, conv in zip(ref_decoder, ours_decoder):
            ref.weight.copy_(conv.weight)
            ref.bias.copy_(conv.bias)
    return net_module.Net(nn.Sequential(*list(vgg.children())[:31]), decoder)


class ReferenceStep:
    """pytorch-AdaIN's train.py iteration (its lr decay omitted: a scalar per step)."""

    def __init__(self, network: nn.Module, bf16_channels_last: bool) -> None:
        self.network, self.bf16 = network.train(), bf16_channels_last
        if self.bf16:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.network.decoder.parameters(), lr=1e-4)

    def __call__(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.bf16:
            content = content.contiguous(memory_format=torch.channels_last)
            style = style.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss_c, loss_s = self.network(content, style)
            loss = 1.0 * loss_c + 10.0 * loss_s
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of naoto0804/pytorch-AdaIN")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps of each setting per round")
    parser.add_argument("--settings", nargs="+", default=["reference fp32", "stylecore fp32", "reference bf16+cl",
                                                           "stylecore auto"])
    parser.add_argument("--check", action="store_true",
                        help="stylecore's encoder with reflection padding (the reference's): the losses must agree")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()} ({platform.processor() or platform.machine()}), "
          f"{args.size}² × {args.batch}, {args.rounds} rounds × {args.steps} steps", flush=True)
    padding = "reflect" if args.check else "zeros"
    net_module = reference_networks(args.reference)

    g = torch.Generator().manual_seed(0)
    content = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    style = torch.rand(args.batch, 3, args.size, args.size, generator=g)

    steps = {}
    for setting in args.settings:
        side, precision = setting.split()
        if side == "stylecore":
            trainer = stylecore_trainer("fp32" if precision == "fp32" else "auto",
                                        False if precision == "fp32" else "auto", padding)
            steps[setting] = trainer.train_step
        else:
            weights_from = stylecore_trainer("fp32", False, padding)
            steps[setting] = ReferenceStep(copy_weights_into_reference(net_module, weights_from),
                                           bf16_channels_last=precision == "bf16+cl")
        first = steps[setting](content, style)  # the warm-up step: each setting's first loss
        first = first.terms["total"] if side == "stylecore" else float(first)
        print(f"{setting:20s} first-step loss {first:.6f}", flush=True)

    times: dict[str, list[float]] = {setting: [] for setting in steps}
    for _ in range(args.rounds):
        for setting, step in steps.items():
            for _ in range(args.steps):
                started = time.perf_counter()
                step(content, style)
                times[setting].append(time.perf_counter() - started)
    results = []
    base = statistics.median(times[args.settings[0]])
    for setting, values in times.items():
        median = statistics.median(values)
        results.append({"setting": setting, "size": args.size, "batch": args.batch, "ms_per_step": 1000 * median,
                        "samples_per_s": args.batch / median, "of_" + args.settings[0].replace(" ", "_"): base / median})
        print(f"{setting:20s} {1000 * median:9.1f} ms/step  {args.batch / median:7.2f} samples/s  "
              f"{base / median:5.2f}× {args.settings[0]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
