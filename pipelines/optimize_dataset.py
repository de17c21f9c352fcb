"""Optimisation-based stylization of whole datasets with Ray: ``stylecore optimize-dataset``.

    stylecore optimize-dataset --method strotss --content data/shards/coco-val --style paintings/ \\
        --output out/coco-strotss --policy all --size 256 --steps 200 --actors 4

Each content × style pair is optimised on its own (:mod:`stylecore.optimize`), many at once: the same Ray Data
pipeline, exactly-once commits, resume, manifest and provenance as ``stylecore stylize-dataset``
(:func:`pipelines.stylize_dataset.stylize_with_models`; the method stands where a model would, behind
:class:`stylecore.optimize.batch.MethodStylizer`). One pair per Ray Data batch, so the actors share the pairs
evenly; each written output's record carries the objective's terms at its first and last step and its seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipelines.stylize_dataset import METHOD_PREFIX, add_dataset_arguments, stylize_with_models
from pipelines.stylize_inputs import StylizeError


def optimize_with_methods(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path],
                          methods: Mapping[str, tuple[Mapping[str, Any], str | Path]], **options: Any
                          ) -> list[dict[str, Any]]:
    """Optimise every output the policy asks for with each method (name → (its settings, its output folder)), in
    one pipeline; returns each method's manifest, in ``methods``' order. ``options``: :func:`stylize_with_models`'s
    (``batch_size`` defaults to 1: one pair per batch)."""
    options.setdefault("batch_size", 1)
    options.setdefault("label", "optimize")
    jobs = [(METHOD_PREFIX + name, output) for name, (_, output) in methods.items()]
    return stylize_with_models(inputs, styles, jobs, method_settings={name: dict(settings) for name, (settings, _)
                                                                       in methods.items()}, **options)


def optimize_dataset(inputs: str | Path | Sequence[str | Path], styles: str | Path | Sequence[str | Path],
                     method: str, output: str | Path, settings: Mapping[str, Any] | None = None, **options: Any
                     ) -> dict[str, Any]:
    """:func:`optimize_with_methods` for one method."""
    return optimize_with_methods(inputs, styles, {method: (settings or {}, output)}, **options)[0]


def add_command(subparsers) -> None:
    """The ``stylecore optimize-dataset`` subcommand (registered as a ``stylecore.commands`` entry point)."""
    from stylecore.cli_optimize import add_setting_arguments

    command = subparsers.add_parser("optimize-dataset", help="optimise many content × style pairs with Ray "
                                                             "(gatys, strotss; resumable)")
    command.add_argument("--method", required=True, help="an optimisation method: gatys or strotss (stylecore list)")
    # --seed is the method's (and seeds the random policy); --size the output's long side (the method resizes)
    add_dataset_arguments(command, policy_seed=False, input_size=False)
    add_setting_arguments(command, device=False)  # each actor uses its GPU (--gpus-per-actor) or the CPU
    command.set_defaults(func=_cmd_optimize_dataset, batch_size=1, output_format="files", image_format="png")


def _cmd_optimize_dataset(args: argparse.Namespace) -> int:
    from stylecore.cli_optimize import method_settings

    try:
        settings = method_settings(args)
        optimize_dataset(args.content, args.style, args.method, args.output, settings, policy=args.policy,
                         seed=args.seed or 0, style_size=args.style_size or None,
                         batch_size=args.batch_size, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                         output_format=args.output_format, image_format=args.image_format, limit=args.limit,
                         progress=not args.quiet)
    except (StylizeError, ValueError) as error:
        print(f"error: optimize-dataset: {error}", file=sys.stderr)
        return 2
    return 0
