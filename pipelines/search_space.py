"""A sweep's search space: params.yaml's domains → Ray Tune's, and every trial's settings built and checked.

``sweep.combinations.<model>-<loss>`` maps dotted keys of the training settings (``lr``,
``style_params.weight``, ``objective.content``, ``batch_size``, ``report_every`` …) to ``{loguniform: [low,
high]}``, ``{uniform: [low, high]}``, ``{randint: [low, high]}`` (high exclusive), ``{choice: [...]}``
(sampled), ``{grid: [...]}`` (every value, multiplying ``samples``) or a plain value. ``style_weight_scale``
multiplies a balanced_gram cell's calibrated style weight (:func:`pipelines.settings.calibrated`), so one
space serves every model however different their calibrated weights are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipelines.settings import Combination
from pipelines.sources import CatalogueError
from stylecore.config import ConfigError, DataConfig, TrainConfig, from_mapping, integer, to_dict

DOMAINS = ("loguniform", "uniform", "randint", "choice", "grid")


def search_space(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml's space of one combination → Tune's ``param_space``; errors name the key and the fix."""
    from ray import tune

    if not isinstance(spec, Mapping) or not spec:
        raise CatalogueError(f"params.yaml: sweep.combinations.{name} must be a non-empty mapping of settings to "
                             f"search domains, e.g. lr: {{loguniform: [1.0e-5, 1.0e-3]}}")
    space: dict[str, Any] = {}
    for key, domain in spec.items():
        where = f"params.yaml: sweep.combinations.{name}.{key}"
        if not isinstance(domain, Mapping):
            space[key] = domain  # a constant for this sweep
            continue
        if len(domain) != 1 or next(iter(domain)) not in DOMAINS:
            raise CatalogueError(f"{where} must be one of {{{'|'.join(DOMAINS)}: ...}} or a plain value; got {domain!r}")
        kind, values = next(iter(domain.items()))
        if kind in ("choice", "grid"):
            if not isinstance(values, list) or not values:
                raise CatalogueError(f"{where}: {kind} needs a non-empty list of values; got {values!r}")
            space[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue
        if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)
                and values[0] < values[1]):
            raise CatalogueError(f"{where}: {kind} needs [low, high] numbers with low < high; got {values!r}")
        low, high = values
        if kind == "loguniform":
            if low <= 0:
                raise CatalogueError(f"{where}: loguniform needs low > 0; got {low!r}")
            space[key] = tune.loguniform(low, high)
        elif kind == "uniform":
            space[key] = tune.uniform(low, high)
        else:
            if not (isinstance(low, int) and isinstance(high, int)):
                raise CatalogueError(f"{where}: randint needs integer bounds; got {values!r}")
            space[key] = tune.randint(low, high)
    return space


def extreme_values(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Trial configs that together cover every bound and every listed value, to validate before starting."""
    options = {}
    for key, domain in spec.items():
        if not isinstance(domain, Mapping):
            options[key] = [domain]
            continue
        kind, values = next(iter(domain.items()))
        options[key] = list(values) if kind in ("choice", "grid") else \
            [values[0], values[1] - 1] if kind == "randint" else list(values)
    longest = max(len(v) for v in options.values())
    return [{key: values[min(i, len(values) - 1)] for key, values in options.items()} for i in range(longest)]


#: a sweep key: a factor on the combination's calibrated balanced style weight
STYLE_WEIGHT_SCALE = "style_weight_scale"


def set_dotted(settings: dict[str, Any], key: str, value: Any) -> None:
    node = settings
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def with_values(combination: Combination, values: Mapping[str, Any]) -> Combination:
    """``combination`` with ``values`` applied: dotted training-config keys (``lr``, ``style_params.weight``), data
    config keys (``batch_size``, ``crop_size``, …) and ``report_every``; both configs rebuilt and validated."""
    train, data = combination.train.to_dict(), to_dict(combination.data)
    report_every = combination.report_every
    for key, value in values.items():
        if key in data:
            data[key] = value
        elif key == "report_every":
            report_every = value
        elif key == STYLE_WEIGHT_SCALE:
            continue
        else:
            set_dotted(train, key, value)
    if combination.calibration is not None and "style_params.weight" in values:
        raise ConfigError(f"{combination.name}'s style weight is calibrated (train.losses.balanced_gram."
                          f"calibrate_batches); search {STYLE_WEIGHT_SCALE}, a factor on it, instead of style_params.weight")
    if STYLE_WEIGHT_SCALE in values:  # relative to the calibrated weight (pipelines.settings.calibrated)
        scale, base = values[STYLE_WEIGHT_SCALE], (train.get("style_params") or {}).get("weight")
        if combination.calibration is None or base is None:
            raise ConfigError(f"{STYLE_WEIGHT_SCALE} scales a calibrated balanced style weight; {combination.name} has "
                              "none (set train.losses.balanced_gram.calibrate_batches, or search style_params.weight)")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise ConfigError(f"{STYLE_WEIGHT_SCALE} must be a positive number; got {scale!r}")
        train["style_params"] = {**train["style_params"], "weight": base * scale}
    if not integer(1).check(report_every):
        raise ConfigError(f"report_every must be a positive integer; got {report_every!r}")
    return dataclasses.replace(combination, train=TrainConfig.from_dict(train), report_every=report_every,
                               data=from_mapping(DataConfig, data, "data config"))


def check_space(name: str, combination: Combination, spec: Mapping[str, Any]) -> None:
    """Build every trial config that touches a bound or a listed value, as the trials will: a misspelt
    ``style_params`` key fails here, not in 24 trials."""
    for config in extreme_values(spec):
        try:
            with_values(combination, config).train.check_buildable()
        except ValueError as error:
            raise CatalogueError(f"params.yaml: sweep.combinations.{name}: a trial with {config} is invalid: "
                                 f"{error}") from None
