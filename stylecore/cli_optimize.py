"""``stylecore optimize``: one content × style pair by an optimisation method, with a progress bar; writes the
image and, beside it, a JSON of the settings, the encoder, the inputs' digests and the per-scale losses."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

#: flag → method setting; flags a method does not take are refused, naming the method
SETTING_FLAGS = ("size", "steps", "scales", "content_weight", "style_loss", "style_weight", "tv_weight", "init",
                 "optimizer", "lr", "preserve_color", "precision", "seed", "device")


def add_setting_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """The methods' settings as flags (:data:`SETTING_FLAGS`, and the encoder weights); shared by ``stylecore
    optimize`` and ``stylecore optimize-dataset`` (whose actors choose their device: ``device=False``). Read them
    back with :func:`method_settings`."""
    parser.add_argument("--size", type=int, help="the output's long side in pixels (default 512)")
    parser.add_argument("--steps", type=int, help="steps per scale (default: gatys 300, strotss 250)")
    parser.add_argument("--scales", type=int, help="gatys: coarse-to-fine scales (default 1)")
    parser.add_argument("--content-weight", dest="content_weight", type=float,
                        help="strotss: the reference's content weight (×16, halved per scale; default 1); "
                             "gatys: the content MSE's weight (default 1)")
    parser.add_argument("--style-loss", dest="style_loss", help="gatys: any registered feature style loss (default gram)")
    parser.add_argument("--style-weight", dest="style_weight", type=float, help="gatys: the style term's weight")
    parser.add_argument("--tv-weight", dest="tv_weight", type=float, help="gatys: total variation weight (default 0)")
    parser.add_argument("--init", choices=["content", "noise", "style_mean"], help="gatys: the start (default content)")
    parser.add_argument("--optimizer", choices=["lbfgs", "adam"], help="gatys: default lbfgs")
    parser.add_argument("--lr", type=float, help="learning rate (default: gatys lbfgs 1, adam 0.02; strotss 2e-3)")
    parser.add_argument("--preserve-color", dest="preserve_color", choices=["coral", "luminance"],
                        help="gatys: keep the content's colours")
    parser.add_argument("--weights", default="imagenet",
                        help="encoder weights: imagenet (torchvision's, downloaded when online) | a file | "
                             "random:<seed> (not pretrained: for trying the mechanics offline)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default auto: bf16 where fast")
    parser.add_argument("--seed", type=int, help="seed of a noise start and of the random feature samples (default 0)")
    if device:
        parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")


def method_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give ``args.method`` (encoder weights included); raises ``ValueError`` naming a flag
    the method does not take, or an unknown method naming the known ones."""
    from stylecore.optimize import METHODS
    from stylecore.registry import accepted_parameters

    accepted = set(accepted_parameters(METHODS.get(args.method)))
    given = {flag: getattr(args, flag, None) for flag in SETTING_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}
    refused = sorted(flag for flag in given if flag not in accepted)
    if refused:
        raise ValueError(f"--method {args.method} takes no {', '.join('--' + f.replace('_', '-') for f in refused)}")
    return {"encoder_weights": args.weights, **given}


def add_command(sub: Any) -> None:
    # nothing here imports torch: building the parser stays instant; the method name is checked against the
    # registry when the command runs (`stylecore list` shows the methods)
    parser = sub.add_parser("optimize", help="stylize one photo by optimising the image itself (gatys, strotss)")
    parser.add_argument("--method", required=True, help="an optimisation method: gatys or strotss (stylecore list)")
    parser.add_argument("--content", required=True, help="the content image (photo)")
    parser.add_argument("--style", required=True, help="the style image (painting)")
    parser.add_argument("--content-mask", dest="content_mask",
                        help="strotss: colour-coded regions of the content (pairs with --style-mask by colour)")
    parser.add_argument("--style-mask", dest="style_mask", help="strotss: colour-coded regions of the style")
    add_setting_arguments(parser)
    parser.add_argument("--output", required=True, help="the output image (.png, .jpg, .webp); its settings and "
                                                       "losses go to the same name with .json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_command)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_command(args: argparse.Namespace) -> int:
    from stylecore.data import ImageLoadError, load_image, save_image
    from stylecore.encoders import EncoderWeightsUnavailable
    from stylecore.io import atomic_write_text
    from stylecore.optimize import OptimizationHooks, OptimizeMemoryError, build

    output = Path(args.output)
    try:
        settings = method_settings(args)  # an unknown method or a flag it does not take: refused, named
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ValueError(f"--output {output}: give an image name ending in .png, .jpg or .webp")
        if (args.content_mask or args.style_mask) and args.method != "strotss":
            raise ValueError("--content-mask / --style-mask (spatial guidance) are strotss's; use --method strotss")
        content, style = load_image(args.content)[None], load_image(args.style)[None]
        masks = {}
        if args.content_mask or args.style_mask:
            if not (args.content_mask and args.style_mask):
                raise ValueError("spatial guidance needs both --content-mask and --style-mask")
            masks = {"content_mask": load_image(args.content_mask), "style_mask": load_image(args.style_mask)}
        method = build(args.method, **settings)
    except (EncoderWeightsUnavailable, FileNotFoundError, ImageLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    class Progress(OptimizationHooks):
        def __init__(self) -> None:
            self.bar = None

        def on_step(self, scale, step, steps, terms):
            if args.quiet:
                return
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=steps, desc=f"{args.method} scale {scale}", unit="step", disable=None)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms.get('total', float('nan')):.4g}")

        def on_scale(self, record):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            print(f"scale {record.scale}: {record.size[1]}x{record.size[0]}, {record.steps} steps, loss "
                  f"{record.first.get('total', float('nan')):.4g} → {record.last.get('total', float('nan')):.4g} "
                  f"({record.seconds:.1f} s)", flush=True)

    encoder = method.network.describe()
    print(f"{args.method}: encoder {encoder['arch']}, weights {encoder['weights']} (pretrained: "
          f"{encoder['pretrained']}), precision {method.precision}, device {method.device}", flush=True)
    try:
        result = method.run(content, style, hooks=[Progress()], **masks)
    except (OptimizeMemoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_image(result.image[0], output)
    record: dict[str, Any] = {**result.as_dict(), "inputs": {
        "content": {"path": str(args.content), "sha256": _digest(Path(args.content))},
        "style": {"path": str(args.style), "sha256": _digest(Path(args.style))},
        **{name: {"path": str(getattr(args, name)), "sha256": _digest(Path(getattr(args, name)))}
           for name in ("content_mask", "style_mask") if getattr(args, name)}}}
    atomic_write_text(output.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({result.image.shape[-1]}x{result.image.shape[-2]}, {result.seconds:.1f} s) and "
          f"{output.with_suffix('.json')}", flush=True)
    return 0
