"""Bootstrap intervals for comparisons of two candidates scored on the same pairs.

Every candidate is scored on one fixed set of held-out pairs, so a comparison is paired: a resample
draws pair indices with replacement and recomputes both candidates' statistic on the same draw
(Efron & Tibshirani 1993, percentile interval). A statistic over styles (the per-style spread) resamples
styles instead. A change is claimed — "lower" or "higher" — only when the interval excludes zero and the
change is at least ``min_effect`` of the before value; otherwise the verdict is "no difference", however
large the point estimate (or however consistent a negligible one: two runs that differ by float noise
differ consistently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

#: a statistic of one candidate on a resample: (candidate's per-unit values or features, unit indices) → value
Statistic = Callable[[Tensor, Tensor], float]


def batched(statistic: Callable) -> Callable:
    """Marks ``statistic`` as taking every resample at once: indices of shape (resamples, units), one value per row
    (a (resamples,) tensor, or a dict of them). :func:`compare_many` then draws and evaluates all resamples in a
    few tensor operations instead of one Python call per resample (2,000 per metric and model in ``evaluate``)."""
    statistic.batched = True
    return statistic


@batched
def mean_statistic(values: Tensor, indices: Tensor) -> Tensor:
    """The mean over the drawn units: a 0-d tensor for one draw (units,), (resamples,) for (resamples, units)."""
    return values[indices].double().mean(-1)


@dataclass(frozen=True)
class Comparison:
    """``after − before`` (and relative to ``before``) with percentile intervals over resamples."""

    before: float
    after: float
    difference: float
    low: float
    high: float
    relative: float  # (after − before) / before, NaN when before is 0
    relative_low: float
    relative_high: float
    confidence: float
    resamples: int
    min_effect: float = 0.0  # the smallest relative change claimed

    @property
    def verdict(self) -> str:
        """``lower`` / ``higher`` when the interval excludes zero and the change is at least ``min_effect``
        (relative), else ``no difference``."""
        large = not self.relative == self.relative or abs(self.relative) >= self.min_effect  # NaN: before is 0
        if self.high < 0 and large:
            return "lower"
        if self.low > 0 and large:
            return "higher"
        return "no difference"

    def as_dict(self) -> dict[str, float | int | str]:
        return {"before": self.before, "after": self.after, "difference": self.difference, "low": self.low,
                "high": self.high, "relative": self.relative, "relative_low": self.relative_low,
                "relative_high": self.relative_high, "confidence": self.confidence, "resamples": self.resamples,
                "min_effect": self.min_effect, "verdict": self.verdict}


def compare(before: Tensor, after: Tensor, statistic: Statistic = mean_statistic, resamples: int = 2000,
            confidence: float = 0.95, seed: int = 0, min_effect: float = 0.0) -> Comparison:
    """The paired bootstrap comparison of ``statistic`` between two candidates' values over the same units
    (pairs, or styles): ``before[k]`` and ``after[k]`` belong to unit k. A :func:`batched` statistic is evaluated
    on every resample at once."""
    def named(values: Tensor, indices: Tensor) -> dict[str, float | Tensor]:
        return {"value": statistic(values, indices)}

    named.batched = getattr(statistic, "batched", False)  # type: ignore[attr-defined]
    return compare_many(before, after, named, resamples, confidence, seed, min_effect)["value"]


def compare_many(before: Tensor, after: Tensor, statistics: Callable[[Tensor, Tensor], dict[str, float]],
                 resamples: int = 2000, confidence: float = 0.95, seed: int = 0, min_effect: float = 0.0
                 ) -> dict[str, Comparison]:
    """:func:`compare` for several statistics computed together on each resample (FID and ArtFID share their
    costly Fréchet distance): ``statistics(values, indices)`` returns them by name (:func:`batched`: for every
    resample at once)."""
    if before.shape[0] != after.shape[0]:
        raise ValueError(f"a paired comparison needs values for the same units: {before.shape[0]} and {after.shape[0]}")
    units = before.shape[0]
    if units < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 units; got {units}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1; got {resamples}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(units, (resamples, units), generator=generator)
    base_before, base_after, drawn_before, drawn_after = (
        _on_resamples(statistics, values, indices)
        for values, indices in ((before, torch.arange(units).unsqueeze(0)), (after, torch.arange(units).unsqueeze(0)),
                                (before, draws), (after, draws)))
    tail = (1 - confidence) / 2
    results = {}
    for name in base_before:
        b, a = float(base_before[name][0]), float(base_after[name][0])
        differences = drawn_after[name] - drawn_before[name]
        ratios = torch.where(drawn_before[name] != 0, differences / drawn_before[name], float("nan"))
        low, high = _quantiles(differences, tail)
        relative_low, relative_high = _quantiles(ratios, tail)
        relative = (a - b) / b if b != 0 else float("nan")
        results[name] = Comparison(b, a, a - b, low, high, relative, relative_low, relative_high, confidence,
                                   resamples, min_effect)
    return results


def _on_resamples(statistics: Callable, values: Tensor, draws: Tensor) -> dict[str, Tensor]:
    """Every named statistic on every row of ``draws`` (resamples, units), as float64 (resamples,) tensors."""
    if getattr(statistics, "batched", False):
        found = statistics(values, draws)
        return {name: torch.as_tensor(value, dtype=torch.float64).reshape(draws.shape[0])
                for name, value in found.items()}
    rows = [statistics(values, draw) for draw in draws]
    return {name: torch.tensor([float(row[name]) for row in rows], dtype=torch.float64) for name in rows[0]}


def _quantiles(samples: Tensor, tail: float) -> tuple[float, float]:
    values = samples[torch.isfinite(samples)]
    if values.numel() == 0:
        return float("nan"), float("nan")
    return float(torch.quantile(values, tail)), float(torch.quantile(values, 1 - tail))
