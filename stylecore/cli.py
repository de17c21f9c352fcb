"""The ``stylecore`` console command."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from stylecore.cli_args import add_renamed
from stylecore.cli_args import finish as finish_parsers
from stylecore.io import atomic_write_text


def _cmd_list(args: argparse.Namespace) -> int:
    import stylecore.losses as losses
    import stylecore.models as models
    import stylecore.optimize as optimize
    from stylecore import gan

    width = max(len(name) for name in losses.names() + models.names() + optimize.names() + gan.names())
    print("models:")
    for name in models.names():
        print(f"  {name:<{width}}  {models.describe(name)}")
    print("GAN translation models (photo → a domain; stylecore train --domain LABEL=VALUE, stylize --domain):")
    for name in gan.names():
        print(f"  {name:<{width}}  {gan.describe(name)}")
    print("losses:")
    for name in losses.names():
        print(f"  {name:<{width}}  {losses.describe(name)}")
    print("optimisation methods (stylecore optimize):")
    for name in optimize.names():
        print(f"  {name:<{width}}  {optimize.METHODS.describe(name)}")
    return 0


def _parse_assignments(items: Sequence[str], option: str) -> dict:
    """``KEY=VALUE`` pairs, values parsed as YAML (numbers, booleans, lists, null)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {option} expects KEY=VALUE; got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


#: flags of `stylecore train` that set DataConfig fields (flag dest → field)
DATA_FLAGS = {"batch_size": "batch_size", "size": "crop_size", "load_size": "load_size", "loader_workers": "loader_workers",
              "jpeg_decode": "jpeg_decode", "flip": "flip", "style_jitter": "style_jitter"}


def training_configs(args: argparse.Namespace):
    """The TrainConfig and DataConfig of a `stylecore train` call: ``--params`` (a params.yaml: the model × loss
    settings of its profile, read as the pipeline reads them) ← ``--config`` ← the flags. Without ``--params``
    the typed configs' own defaults fill what is not given. Third: what a balanced_gram cell's calibration needs
    (``(train section, settings, profile)``, or None), as the pipeline calibrates it."""
    import dataclasses

    import yaml

    from stylecore.config import (WEIGHT_PARAMETERS, ConfigError, DataConfig, TrainConfig, apply_weights,
                                  from_mapping, training_settings)

    values: dict = {}
    data = DataConfig()
    calibration = None
    if args.params:
        params = yaml.safe_load(Path(args.params).read_text()) or {}
        profile = args.profile or params.get("profile")
        if not profile:
            raise ConfigError(f"--params {args.params} names no profile; pass --profile")
        model = args.model or TrainConfig.model
        settings = training_settings(params.get("train") or {}, model, args.style_loss, str(profile),
                                     extra_keys=("report_every",), where=f"{args.params}: train")
        values, data = settings.train.to_dict(), settings.data
        if settings.calibrate_batches is not None:
            calibration = (params.get("train") or {}, settings, str(profile))
    else:
        from stylecore import gan

        if (args.model or TrainConfig.model) in gan.names():  # a GAN starts from its paper's optimiser settings
            values = dict(gan.GAN_MODELS.get(args.model).paper_training)
    if args.config:
        values.update(yaml.safe_load(Path(args.config).read_text()) or {})
    for key in ("model", "style_loss", "steps", "lr", "precision", "seed", "checkpoint_every", "sample_every",
                "loss_encoder"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.compile:
        values["compile"] = True
    values.setdefault("model", TrainConfig.model)
    params = dict(values.get("model_params") or {})
    from stylecore import gan

    if args.weights and values["model"] in gan.names():
        raise ConfigError(f"--weights sets pretrained parts (encoders, predictors); {values['model']} has none: its "
                          "networks start from the paper's random initialisation (--seed picks it)")
    if args.weights:  # the flag wins over any weights the settings named
        params = apply_weights(values["model"], {k: v for k, v in params.items() if k not in WEIGHT_PARAMETERS},
                               args.weights)
    params.update(_parse_assignments(args.model_param, "--model-param"))
    values["model_params"] = params
    objective = dict(values.get("objective") or {})
    objective.update(_parse_assignments(args.objective, "--objective"))
    values["objective"] = objective
    flags = {field: getattr(args, flag) for flag, field in DATA_FLAGS.items() if getattr(args, flag) is not None}
    if args.domain:  # the style side filtered to label values; a GAN names its target domain(s) after them
        label, _, listed = args.domain.partition("=")
        domains = [value for value in listed.split(",") if value]
        if not label or not domains:
            raise ConfigError(f"--domain expects LABEL=VALUE[,VALUE…], e.g. style=Impressionism; got {args.domain!r}")
        flags["style_labels"] = {label: domains}
        from stylecore import gan

        if values["model"] in gan.names():  # domains named by --model-param win
            values["model_params"] = {**gan.GAN_MODELS.get(values["model"]).domain_params(label, domains),
                                      **values["model_params"]}
    data = from_mapping(DataConfig, {**dataclasses.asdict(data), **flags}, "data config")
    config = TrainConfig.from_dict(values)
    if calibration is not None and (config.style_loss != "balanced_gram" or "weight" in config.style_params
                                    or "style" in config.objective):
        calibration = None  # the flags or --config chose the loss or the weight: nothing to calibrate
    return config, data, calibration


def _cmd_train(args: argparse.Namespace) -> int:
    import stylecore.models as models
    from stylecore import gan
    from stylecore.data import save_image
    from stylecore.encoders import EncoderWeightsUnavailable
    from stylecore.training import CheckpointError, NonFiniteLossError, Trainer, TrainingHooks

    if args.model is not None and args.model not in models.names() + gan.names():
        print(f"error: unknown model {args.model!r}; choose one of {', '.join(models.names() + gan.names())}",
              file=sys.stderr)
        return 2
    try:
        config, data_config, calibration = training_configs(args)
        config.check_buildable()  # a bad loss, parameter or weights file fails before any data is read
        if calibration is not None:  # the balanced style weight, measured as the train stage measures it
            import dataclasses

            from stylecore.calibration import calibrate_settings, describe

            section, settings, profile = calibration
            settings = dataclasses.replace(settings, train=config, data=data_config)
            config, result = calibrate_settings(section, settings, profile, args.content, args.style,
                                                extra_keys=("report_every",), where=f"{args.params}: train")
            print(describe(f"{config.model} × balanced_gram", result))
        # Shards stream (bounded memory, split by node); --in-memory samples them by index instead.
        from stylecore.devices import best_device

        data = data_config.stream(args.content, args.style, seed=config.seed, in_memory=args.in_memory,
                                  device=args.device or best_device())
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)

    class SaveSamples(TrainingHooks):
        def on_images(self, trainer, step, grid):
            save_image(grid, output / "samples" / f"step-{step:06d}.png")

    try:
        trainer = Trainer(config, device=args.device, hooks=[SaveSamples()])
    except (EncoderWeightsUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.model in gan.names():
        print(trainer.summary())
    else:
        encoder = trainer.loss_encoder.describe()
        print(f"model {config.model} ({sum(p.numel() for p in trainer.parameters):,} trained parameters), "
              f"objective terms {', '.join(trainer.step_module.objectives[trainer.phases[-1].name].terms)}, "
              f"precision {trainer.precision}, device {trainer.device}")
        which = "the model's own" if config.loss_encoder == "model" else config.loss_encoder
        print(f"loss encoder: {which} ({encoder['arch']}), weights {encoder['weights']} (pretrained: "
              f"{encoder['pretrained']})")
    domain = "".join(f", style side {name} = {' | '.join(v)}" for name, v in data_config.style_labels.items())
    print(f"data: batch {data_config.batch_size}, crop {data_config.crop_size}, load "
          f"{data_config.load_size or data_config.crop_size}, flip {'on' if data_config.flip else 'off'}, style jitter "
          f"{'on' if data_config.style_jitter else 'off'}, {data_config.loader_workers} loader thread(s), JPEGs decoded on the "
          f"{'training device' if data_config.jpeg_decode == 'device' else 'loader side'}{domain}"
          + (f"; settings from {args.params}" if args.params else ""))
    try:
        results = trainer.fit(data, checkpoint_dir=output, progress=not args.quiet)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except CheckpointError as error:  # resuming from a checkpoint that is not ours (or not one at all)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if results:
        last = results[-1]
        print(f"step {last.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.terms.items()))
    else:
        print(f"nothing to do: {output} already holds a checkpoint at step {trainer.step} ≥ {config.steps}")
    print(f"checkpoint: {output / f'step-{trainer.step:06d}'}")
    return 0


def _image_files(paths: Sequence[str]) -> list[Path]:
    from stylecore.imaging import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def _load_model(location: str, device: str | None, allow_pickle: bool = False):
    """A checkpoint path, or a URI whose failures (unknown model or alias, no server) become one clear error
    like a bad path."""
    from stylecore import load, uri_scheme

    if uri_scheme(location) is None:
        return load(location, device=device)
    try:
        return load(location, device=device, allow_pickle=allow_pickle)
    except ImportError:
        raise
    except Exception as error:  # MlflowException and transport errors: MLflow is optional, so no import here
        raise ValueError(f"{location}: could not load it ({type(error).__name__}: {error}); check the name and "
                         "alias and MLFLOW_TRACKING_URI") from None


def _cmd_stylize(args: argparse.Namespace) -> int:
    from stylecore.data import ImageLoadError
    from stylecore.encoders import EncoderWeightsUnavailable
    from stylecore.stylize import DEFAULT_PIXEL_BUDGET, StylizeMemoryError, Stylizer
    from stylecore.training import CheckpointError

    try:
        # Every argument checked before the model loads.
        if Path(args.output).exists() and not Path(args.output).is_dir():
            raise ValueError(f"--output {args.output} is a file; give a folder (outputs are named after the contents)")
        if args.max_pixels is not None and args.max_pixels < 1:
            raise ValueError(f"--max-pixels must be a positive integer (0 is not allowed); got {args.max_pixels}")
        if (args.style is None) == (args.domain is None):
            raise ValueError("give --style (style images, for the arbitrary-style models) or --domain (a domain name, "
                             "for a GAN translation model), not both and not neither")
        contents = _image_files(args.content)
        styles: list = [Path(s) for s in args.style or []]
        for style in styles:
            if not style.is_file():
                raise FileNotFoundError(f"style {style}: no such file")
        if args.style_weights is not None and len(args.style_weights) != len(styles):
            raise ValueError(f"--style-weights gives {len(args.style_weights)} weight(s) for {len(styles)} style(s); "
                             "give one weight per style")
        model = _load_model(args.model, args.device, allow_pickle=args.allow_pickle)
        from stylecore.gan import TranslationModel

        if isinstance(model, TranslationModel) != (args.domain is not None):
            raise ValueError(f"{args.model} is a GAN translation model: give --domain (one of "
                             f"{', '.join(model.domains)}) instead of --style" if args.domain is None else
                             f"{args.model} is a {model.name} model, which takes --style images; --domain is for "
                             "GAN translation models")
        if args.domain is not None:
            styles = [model.check_domain(args.domain)]
        stylizer = Stylizer(model, alpha=args.alpha, preserve_color=args.preserve_color, max_side=args.max_side,
                            tile_overlap=args.tile_overlap, style_size=args.style_size,
                            max_pixels=args.max_pixels if args.max_pixels is not None else DEFAULT_PIXEL_BUDGET)
        report = stylizer.stylize_files(contents, styles, args.output, weights=args.style_weights,
                                        suffix=args.suffix, progress=not args.quiet, skip_existing=not args.overwrite)
    except (CheckpointError, EncoderWeightsUnavailable, FileNotFoundError, ImageLoadError, ValueError, ImportError,
            StylizeMemoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(report['written'])} image(s) to {args.output}"
          + (f", skipped {len(report['skipped'])} already there (--overwrite to redo)" if report["skipped"] else ""))
    for path, reason in report["failed"].items():
        print(f"failed: {reason}", file=sys.stderr)
    return 1 if report["failed"] else 0


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
    if not args.quiet:
        print(f"encoder: {encoder.describe()}")
    size = args.size
    content = torch.stack([synthetic_photo(args.seed + i, size) for i in range(args.batch_size)])
    style = torch.stack([synthetic_artwork(args.seed + i, STYLE_FAMILIES[i % len(STYLE_FAMILIES)], size)
                         for i in range(args.batch_size)])
    report: dict = {"encoder": encoder.describe(), "image_size": size, "batch": args.batch_size, "losses": {},
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
        if not args.quiet:
            print(f"  {name:<16} value {value:.4g}   at output = targets {identical:.3g}   |grad| {grad:.3g}")
        if not (math.isfinite(value) and math.isfinite(grad)):
            print(f"error: loss {name} is not finite", file=sys.stderr)
            return 1
    for name, why in report["skipped"].items():
        if not args.quiet:
            print(f"  {name:<16} skipped: {why}")
    if args.quiet:
        described = report["encoder"]
        print(f"check-losses: {len(report['losses'])} losses finite with gradients on {described['arch']} (weights "
              f"{described['weights']}, pretrained: {described['pretrained']}), {len(report['skipped'])} skipped "
              f"({', '.join(report['skipped'])}: the report says why)")
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("stylecore")
    except PackageNotFoundError:  # run from a source tree without installing it
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(
        prog="stylecore", description="Arbitrary style transfer: train and stylize with the models and losses of "
                                      "`stylecore list`, optimise single images, batch-stylize datasets with Ray Data "
                                      "and serve the registry's champions. `stylecore <command> --help` for each.")
    parser.add_argument("--version", action="version", version=f"stylecore {installed}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the models and losses with one-line descriptions").set_defaults(func=_cmd_list)

    from stylecore.config import LOSS_ENCODERS, DataConfig, TrainConfig

    data_default = DataConfig()
    train = sub.add_parser("train", help="train a model in this process (no Ray); resumes from --output")
    train.add_argument("--params", help="a params.yaml: start from its train settings of --model × --style-loss in "
                                        "--profile, exactly as the pipeline's Ray path reads them (the flags win)")
    train.add_argument("--profile", help="the params.yaml profile (default: its `profile` key)")
    train.add_argument("--config", help="YAML file of training settings (stylecore.config.TrainConfig keys)")
    train.add_argument("--model", help=f"model name (see `stylecore list`; default {TrainConfig.model})")
    train.add_argument("--style-loss", dest="style_loss", help="replace the model's style loss, e.g. balanced_gram")
    train.add_argument("--content", required=True,
                       help="content shard folder (data/shards/…), image folder, or synthetic:photos[:N]")
    train.add_argument("--style", required=True,
                       help="style shard folder (data/shards/…), image folder, or synthetic:artworks[:N]")
    train.add_argument("--output", required=True, help="checkpoint directory (step-N subfolders, samples/)")
    train.add_argument("--steps", type=int, help=f"default {TrainConfig.steps}")
    add_renamed(train, "--batch-size", "--batch", type=int, help=f"images per batch (default {data_default.batch_size})")
    train.add_argument("--size", type=int, help=f"training crop side (default {data_default.crop_size})")
    train.add_argument("--load-size", type=int, dest="load_size",
                       help="resize the short side to this before cropping (default: --size)")
    train.add_argument("--lr", type=float, help=f"default {TrainConfig.lr:g}")
    train.add_argument("--flip", action=argparse.BooleanOptionalAction,
                       help=f"random horizontal flips (default {str(data_default.flip).lower()})")
    train.add_argument("--style-jitter", dest="style_jitter", action=argparse.BooleanOptionalAction,
                       help="Magenta's style augmentation (colour jitter, flips, random scale) on style images")
    train.add_argument("--loader-workers", dest="loader_workers", type=int,
                       help=f"background threads that decode and augment shard batches (default "
                            f"{data_default.loader_workers}: on the training thread; 2-4 keep a GPU fed)")
    train.add_argument("--jpeg-decode", dest="jpeg_decode", choices=("loader", "device"),
                       help=f"where streamed shards' JPEGs are decoded: loader (libjpeg-turbo in the loader threads) "
                            f"or device (each batch on the training device: nvJPEG on a GPU) (default "
                            f"{data_default.jpeg_decode})")
    train.add_argument("--domain", metavar="LABEL=VALUE[,VALUE…]",
                       help="train on the style samples with these label values only (shard folders), e.g. "
                            "style=Impressionism: a GAN model's target domain(s), named after the values (one for "
                            "cyclegan and ugatit, several for stargan)")
    train.add_argument("--in-memory", dest="in_memory", action="store_true",
                       help="hold shard folders in memory and sample them by index (bitwise-exact resume) "
                            "instead of streaming them")
    train.add_argument("--weights", help="pretrained weights of the encoder (and Magenta's predictor): imagenet | "
                                         "random:<seed> | path (default: the model's, imagenet)")
    train.add_argument("--model-param", action="append", default=[], metavar="KEY=VALUE",
                       help="a model constructor parameter, e.g. predictor=mobilenet_v2 (repeatable)")
    train.add_argument("--objective", action="append", default=[], metavar="TERM=WEIGHT",
                       help="override an objective term's weight (or null to drop it), e.g. style=5 (repeatable)")
    train.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                       help="auto: bf16 where the device supports it fast, else fp32; fp16 is CUDA only (default: the "
                            "config's, auto)")
    train.add_argument("--loss-encoder", choices=LOSS_ENCODERS,
                       help="the network the objective reads: model (its own VGG, the papers') or magenta_lite "
                            "(trained features, offline; VGG layers become their equivalents) (default: model)")
    train.add_argument("--compile", action="store_true", help="torch.compile the trained and encoder modules")
    train.add_argument("--seed", type=int, help=f"seed of the initialisation and data order (default {TrainConfig.seed})")
    train.add_argument("--checkpoint-every", type=int, dest="checkpoint_every",
                       help="save a resumable checkpoint every N steps (default 0: at the end only)")
    train.add_argument("--sample-every", type=int, dest="sample_every", help="save a sample grid every N steps")
    train.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    stylize = sub.add_parser("stylize", help="stylize image files with a trained checkpoint or a pretrained model")
    add_renamed(stylize, "--model", "--checkpoint", required=True, help="checkpoint directory (or a run directory: its newest), an MLflow URI such as "
                                "models:/stylecore-adain-gram@champion (server from MLFLOW_TRACKING_URI), or "
                                "pretrained:magenta_lite (published weights, no training)")
    stylize.add_argument("--content", required=True, nargs="+", help="content image files or folders")
    stylize.add_argument("--style", nargs="+", help="one or more style images (mixed by --style-weights)")
    stylize.add_argument("--domain", help="for a GAN translation model (stylecore.gan), instead of --style: the domain "
                                          "to translate to (one the model was trained on; an unknown one lists them)")
    stylize.add_argument("--style-weights", dest="style_weights", type=float, nargs="+",
                         help="one weight per style (normalised to sum 1; default equal)")
    stylize.add_argument("--alpha", type=float, default=1.0, help="style strength in [0, 1] (default 1)")
    stylize.add_argument("--preserve-color", dest="preserve_color", choices=["coral", "luminance"],
                         help="keep the content's colours: coral (match the style's colour statistics to the content's) "
                              "or luminance (stylize the luminance only)")
    stylize.add_argument("--style-size", dest="style_size", type=int, default=512,
                         help="resize styles to this short side (default 512; 0 keeps their size)")
    stylize.add_argument("--max-side", dest="max_side", type=int,
                         help="stylize content larger than this in overlapping tiles of this size")
    stylize.add_argument("--max-pixels", dest="max_pixels", type=int,
                         help="without --max-side, tile content with more pixels than this in square tiles of "
                              "its square root (default 2048x2048 = 4194304)")
    stylize.add_argument("--tile-overlap", dest="tile_overlap", type=int,
                         help="overlap of tiles in pixels (default min(64, max_side / 4))")
    stylize.add_argument("--output", required=True, help="output folder (files named after the content)")
    stylize.add_argument("--suffix", default=".jpg", help="output format by suffix (default .jpg)")
    stylize.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    stylize.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                         help="load a models:/ URI logged without a stylecore checkpoint by unpickling MLflow's copy "
                              "(runs code from the store: only for stores you trust)")
    stylize.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    stylize.add_argument("--quiet", action="store_true", help="no progress bar")
    stylize.set_defaults(func=_cmd_stylize)

    check = sub.add_parser("check-losses", help="evaluate every loss on generated images (a smoke check)")
    check.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"], help="the VGG the losses read")
    check.add_argument("--weights", default="random:0",
                       help="encoder weights: imagenet | random:<seed> | path (default: random:0, not pretrained)")
    check.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    add_renamed(check, "--batch-size", "--batch", type=int, default=4, help="images per batch")
    check.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    check.add_argument("--output", help="write the report as JSON here")
    check.add_argument("--quiet", action="store_true", help="one summary line instead of a line per loss")
    check.set_defaults(func=_cmd_check_losses)

    from stylecore.cli_optimize import add_command as add_optimize

    add_optimize(sub)

    # Commands other packages add (the pipeline's `stylize-dataset`), found by entry point: stylecore itself
    # knows nothing of them.
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="stylecore.commands"), key=lambda e: e.name):
        try:
            entry.load()(sub)
        except ImportError as error:  # the pipeline extra is not installed: say how to get the command
            why = f"{entry.name} is unavailable ({error}); pip install 'stylecore[pipeline]'"
            sub.add_parser(entry.name, help=why).set_defaults(func=lambda _args, why=why: print(f"error: {why}") or 2)
    finish_parsers(parser, sub)  # defaults and exit codes in every --help; descriptions from the listed help

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as interrupt:  # every command writes atomically and resumes: say so, no traceback
        done = f" ({interrupt})" if str(interrupt) else ""
        print(f"\ninterrupted{done}: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
