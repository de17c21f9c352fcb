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


def mean_statistic(values: Tensor, indices: Tensor) -> float:
    return float(values[indices].double().mean())


def compare(before: Tensor, after: Tensor, statistic: Statistic = mean_statistic, resamples: int = 2000,
            confidence: float = 0.95, seed: int = 0, min_effect: float = 0.0) -> Comparison:
    """The paired bootstrap comparison of ``statistic`` between two candidates' values over the same units
    (pairs, or styles): ``before[k]`` and ``after[k]`` belong to unit k."""
    return compare_many(before, after, lambda values, indices: {"value": statistic(values, indices)}, resamples,
                        confidence, seed, min_effect)["value"]


def compare_many(before: Tensor, after: Tensor, statistics: Callable[[Tensor, Tensor], dict[str, float]],
                 resamples: int = 2000, confidence: float = 0.95, seed: int = 0, min_effect: float = 0.0
                 ) -> dict[str, Comparison]:
    """:func:`compare` for several statistics computed together on each resample (FID and ArtFID share their
    costly Fréchet distance): ``statistics(values, indices)`` returns them by name."""
    if before.shape[0] != after.shape[0]:
        raise ValueError(f"a paired comparison needs values for the same units: {before.shape[0]} and {after.shape[0]}")
    units = before.shape[0]
    if units < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 units; got {units}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1; got {resamples}")
    every = torch.arange(units)
    base_before, base_after = statistics(before, every), statistics(after, every)
    generator = torch.Generator().manual_seed(seed)
    differences: dict[str, list[float]] = {name: [] for name in base_before}
    ratios: dict[str, list[float]] = {name: [] for name in base_before}
    for _ in range(resamples):
        draw = torch.randint(units, (units,), generator=generator)
        b, a = statistics(before, draw), statistics(after, draw)
        for name in base_before:
            differences[name].append(a[name] - b[name])
            ratios[name].append((a[name] - b[name]) / b[name] if b[name] != 0 else float("nan"))
    tail = (1 - confidence) / 2
    results = {}
    for name in base_before:
        low, high = _quantiles(differences[name], tail)
        relative_low, relative_high = _quantiles(ratios[name], tail)
        b, a = base_before[name], base_after[name]
        relative = (a - b) / b if b != 0 else float("nan")
        results[name] = Comparison(b, a, a - b, low, high, relative, relative_low, relative_high, confidence,
                                   resamples, min_effect)
    return results


def _quantiles(samples: list[float], tail: float) -> tuple[float, float]:
    values = torch.tensor(samples, dtype=torch.float64)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return float("nan"), float("nan")
    return float(torch.quantile(values, tail)), float(torch.quantile(values, 1 - tail))
