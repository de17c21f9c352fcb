"""Fair weights for the balanced style loss: the style term made as large, relative to the content term, as the
classic Gram term is in the model's classic configuration.

A model × loss grid that swaps ``gram`` for ``balanced_gram`` and keeps the style weight compares weights, not
losses: the balanced term is orders of magnitude larger or smaller than the Gram term it replaces (for the
same images the balanced loss divides each style's Gram error by that style's own scale). The seed paper
re-balances the weight per model (Cheng et al. 2021, §5.1). :func:`calibrate_balanced_weight` does so by
measurement: with the model at its seeded initial weights, on a few seeded training batches, it measures

    classic:   w_g · S_gram          and the content term C
    balanced:        S_balanced      (weight 1, same model, same batches)

and returns w_b = w_g · S_gram / S_balanced, so that w_b · S_balanced / C equals the classic ratio
w_g · S_gram / C at initialisation. Everything it measured is returned, for the run's record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping

import torch
from torch import Tensor

from stylecore.config import STYLE_TERM, TrainConfig, TrainingSettings, phase_objective, training_settings

CLASSIC, BALANCED = "gram", "balanced_gram"


@dataclass(frozen=True)
class Calibration:
    """The calibrated balanced style weight and the measurements behind it (means over the batches)."""

    weight: float  # the balanced style term's weight
    classic_weight: float  # the classic configuration's style weight (w_g)
    classic_style: float  # w_g · S_gram
    balanced_style_unweighted: float  # S_balanced
    content: float  # the content term (the same in both configurations)
    classic_ratio: float  # w_g · S_gram / C
    balanced_ratio: float  # w_b · S_balanced / C: equals classic_ratio by construction
    batches: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def measure_terms(config: TrainConfig, batches: list[tuple[Tensor, Tensor]], device: str | torch.device = "cpu"
                  ) -> tuple[dict[str, float], float]:
    """Each weighted objective term of ``config``'s first training phase with a style term (LinearTransfer's
    reconstruction phase has none), at the model's seeded initial weights, averaged over ``batches`` (forward
    passes only); and the style term's weight in that objective."""
    from stylecore.training import Trainer

    trainer = Trainer(config, device=device)
    styled = [p.name for p in trainer.phases if STYLE_TERM in trainer.step_module.objectives[p.name].terms]
    phase = styled[0] if styled else trainer.phases[0].name
    objective = phase_objective(trainer.model, phase, config)
    style_weight = float((objective.get(STYLE_TERM) or {}).get("weight", 1.0))
    sums: dict[str, float] = {}
    with torch.no_grad():
        for content, style in batches:
            _, result, _ = trainer.step_module(content.to(trainer.device), style.to(trainer.device), phase)
            for name, value in result.terms.items():
                sums[name] = sums.get(name, 0.0) + float(value)
    return {name: total / len(batches) for name, total in sums.items()}, style_weight


def calibrate_balanced_weight(config: TrainConfig, data: Iterable[tuple[Tensor, Tensor]], batches: int = 4,
                              device: str | torch.device = "cpu") -> Calibration:
    """The balanced style weight of ``config``'s model (see the module docstring), measured on the first
    ``batches`` batches of ``data`` (content, style)."""
    if batches < 1:
        raise ValueError(f"calibration needs at least one batch; got {batches}")
    taken = []
    for batch in data:
        content, style = (batch.content, batch.style) if hasattr(batch, "content") else batch
        taken.append((content, style))
        if len(taken) == batches:
            break
    if not taken:
        raise ValueError("calibration: the training data gave no batch")
    classic, weight = measure_terms(dataclasses.replace(config, style_loss=CLASSIC), taken, device)
    unweighted = dataclasses.replace(config, style_loss=BALANCED, style_params={**config.style_params, "weight": 1.0},
                                     objective={k: v for k, v in config.objective.items() if k != STYLE_TERM})
    balanced, _ = measure_terms(unweighted, taken, device)
    for name, terms in (("classic", classic), ("balanced", balanced)):
        missing = {"content", STYLE_TERM} - set(terms)
        if missing:
            raise ValueError(f"calibration: the {name} objective of {config.model} has no {', '.join(sorted(missing))} "
                             f"term (its terms: {', '.join(terms)}); set the balanced style weight by hand")
    if not balanced[STYLE_TERM] > 0 or not classic["content"] > 0:
        raise ValueError(f"calibration: measured balanced style {balanced[STYLE_TERM]:g} and content "
                         f"{classic['content']:g} at initialisation; a ratio needs both positive")
    calibrated = classic[STYLE_TERM] / balanced[STYLE_TERM]
    return Calibration(weight=calibrated, classic_weight=weight, classic_style=classic[STYLE_TERM],
                       balanced_style_unweighted=balanced[STYLE_TERM], content=classic["content"],
                       classic_ratio=classic[STYLE_TERM] / classic["content"],
                       balanced_ratio=calibrated * balanced[STYLE_TERM] / balanced["content"], batches=len(taken))


def calibrate_settings(section: Mapping[str, Any], settings: TrainingSettings, profile: str, content: Any, style: Any,
                       extra_keys: Collection[str] = (), device: str | torch.device = "cpu",
                       where: str = "params.yaml: train") -> tuple[TrainConfig, Calibration]:
    """``settings`` (a balanced_gram cell with ``calibrate_batches``) with its style weight calibrated against the
    gram cell of the same ``section`` (params.yaml's ``train``) on its own data: what the train stage, the sweep
    and ``stylecore train --params`` all do, so the three train alike."""
    train = settings.train
    classic = training_settings(section, train.model, CLASSIC, profile, extra_keys, where)
    stream = settings.data.stream(content, style, seed=train.seed, device=torch.device(device))
    result = calibrate_balanced_weight(classic.train, stream, settings.calibrate_batches, device)
    return dataclasses.replace(train, style_params={**train.style_params, "weight": result.weight}), result


def describe(name: str, result: Calibration) -> str:
    """The one line every caller prints."""
    return (f"{name}: balanced style weight {result.weight:.4g}, calibrated on {result.batches} batches so style/content "
            f"at initialisation = {result.classic_ratio:.4g}, the gram cell's (classic weight {result.classic_weight:g})")
