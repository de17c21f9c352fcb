"""The ``stylecore`` console command."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from stylecore.io import atomic_write_text


def _cmd_list(args: argparse.Namespace) -> int:
    import stylecore.losses as losses

    width = max(len(name) for name in losses.names())
    print("losses:")
    for name in losses.names():
        print(f"  {name:<{width}}  {losses.describe(name)}")
    return 0


def _cmd_check_losses(args: argparse.Namespace) -> int:
    """Evaluate every registered loss on generated images; write values, gradients and skips."""
    import torch

    import stylecore.losses as losses
    from stylecore.encoders import VGGEncoder
    from stylecore.objective import build_objective
    from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo

    torch.manual_seed(args.seed)
    # relu5_3 is the deepest layer any default loss reads (STROTSS).
    encoder = VGGEncoder(args.arch, layers=["relu5_3"], weights=args.weights)
    print(f"encoder: {encoder.describe()}")
    size = args.size
    content = torch.stack([synthetic_photo(args.seed + i, size) for i in range(args.batch)])
    style = torch.stack([synthetic_artwork(args.seed + i, STYLE_FAMILIES[i % len(STYLE_FAMILIES)], size)
                         for i in range(args.batch)])
    report: dict = {"encoder": encoder.describe(), "image_size": size, "batch": args.batch, "losses": {},
                    "skipped": {}}
    for name in losses.names():
        cls = losses.LOSSES.get(name)
        kinds = {kind for kind, _ in cls.slots.values()}
        if "value" in kinds:
            report["skipped"][name] = ("reads logits or latent statistics, which need a discriminator or a VAE "
                                       "model; its formula is covered by the unit tests")
            continue
        roles = {role for _, role in cls.slots.values()}
        if not roles <= {"pred", "content", "style", "pred2"}:
            report["skipped"][name] = f"needs the model-specific role(s) {sorted(roles - {'pred', 'content', 'style'})}"
            continue
        objective = build_objective({name: {"loss": name}}, encoder)
        # The stylized stand-in: the content pushed halfway towards the style.
        pred = (0.5 * content + 0.5 * style).requires_grad_(True)
        images = {"pred": pred, "pred2": pred.flip(0), "content": content, "style": style}
        out = objective(images=images)
        out.total.backward()
        value, grad = float(out.total.detach()), float(pred.grad.abs().mean())
        with torch.no_grad():
            identical = float(objective(images={"pred": style, "pred2": style, "content": style, "style": style}).total)
        report["losses"][name] = {"value": value, "value_when_output_equals_targets": identical,
                                  "mean_abs_grad": grad, "per_sample": out.per_sample[name].tolist()}
        print(f"  {name:<16} value {value:.4g}   at output = targets {identical:.3g}   |grad| {grad:.3g}")
        if not (math.isfinite(value) and math.isfinite(grad)):
            print(f"error: loss {name} is not finite", file=sys.stderr)
            return 1
    for name, why in report["skipped"].items():
        print(f"  {name:<16} skipped: {why}")
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylecore", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the registered losses with one-line descriptions").set_defaults(func=_cmd_list)

    check = sub.add_parser("check-losses", help="evaluate every loss on generated images (a smoke check)")
    check.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"])
    check.add_argument("--weights", default="random:0",
                       help="encoder weights: imagenet | random:<seed> | path (default: random:0, not pretrained)")
    check.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    check.add_argument("--batch", type=int, default=4)
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--output", help="write the report as JSON here")
    check.set_defaults(func=_cmd_check_losses)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
