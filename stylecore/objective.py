"""The training objective: a weighted sum of named loss terms, fed by one encoder pass per tensor.

A config maps term names to loss settings::

    {"content": {"loss": "content", "weight": 1.0, "layers": ["relu4_1"], "target": "adain_target"},
     "style":   {"loss": "balanced_gram", "weight": 10.0},
     "tv":      1e-4}                       # shorthand: the term name is the loss, the value its weight

Keys of a term: ``loss`` (registered name, default: the term name), ``weight``, ``warmup_steps`` (the
weight ramps linearly from 0 over that many training steps, see :meth:`Objective.set_step`), a role
for any of the loss's slots (e.g. ``target: style``), and the loss's own parameters. Terms of weight 0 are computed
without gradients and reported, which lets a run monitor e.g. the classic Gram loss while training on
the balanced one.

At call time the step provides tensors by role: ``images`` (e.g. pred, content, style), encoder
``features`` it already has (e.g. the model's own style encoding), and plain ``values`` (logits, VAE
code statistics). For every role the objective asks the encoder once for the union of layers that
all terms need, and reuses given features where they cover it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from stylecore import functional as SF
from stylecore.encoders import VGGEncoder, check_layer_names, equivalent_layers
from stylecore.losses import LOSSES, Loss
from stylecore.registry import accepted_parameters


@dataclass
class ObjectiveOutput:
    """``total`` (differentiable), ``terms`` (weighted batch means) and ``per_sample`` (unweighted (B,))."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    per_sample: dict[str, Tensor] = field(default_factory=dict)

    def detached(self) -> dict[str, Tensor]:
        """``total`` and every term, detached and where they were computed (no copy to the host)."""
        return {"total": self.total.detach(), **{name: value.detach() for name, value in self.terms.items()}}

    def as_dict(self) -> dict[str, float]:
        """Detached floats for logging: ``total`` and every term."""
        return {name: float(value) for name, value in self.detached().items()}


class Objective(nn.Module):
    """Weighted sum of loss terms; see the module docstring for the config and call conventions."""

    def __init__(self, terms: Mapping[str, Loss], routes: Mapping[str, Mapping[str, str]],
                 encoder: VGGEncoder | None = None, warmup_steps: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.routes = {name: dict(route) for name, route in routes.items()}
        self.encoder = encoder
        self.warmup_steps = dict(warmup_steps or {})
        self.base_weights = {name: loss.weight for name, loss in self.terms.items()}
        needed = self.feature_layers()
        if needed:
            if encoder is None:
                raise ValueError(f"objective: terms {', '.join(self._feature_terms())} read encoder features; "
                                 "pass an encoder (stylecore.encoders.VGGEncoder)")
            for role, layers in needed.items():
                check_layer_names(sorted(layers), encoder.arch, argument=f"objective: layers of role {role!r}")
                beyond = sorted(set(layers) - set(encoder.available_layers))
                if beyond:
                    raise ValueError(f"objective: layers {', '.join(beyond)} lie beyond the encoder's truncation at "
                                     f"{encoder.available_layers[-1]}; build the encoder with these layers")

    def set_step(self, step: int) -> None:
        """Apply the weight warm-ups: a term with ``warmup_steps`` N weighs base · min(1, step / N)."""
        for name, steps in self.warmup_steps.items():
            factor = 1.0 if steps == 0 else min(1.0, step / steps)
            self.terms[name].weight = self.base_weights[name] * factor

    def _feature_terms(self) -> list[str]:
        return [name for name, loss in self.terms.items() if any(kind == "features" for kind, _ in loss.slots.values())]

    def feature_layers(self) -> dict[str, set[str]]:
        """role → the union of encoder layers every term reads from that role."""
        needed: dict[str, set[str]] = {}
        for name, loss in self.terms.items():
            for slot, (kind, _) in loss.slots.items():
                if kind == "features":
                    needed.setdefault(self.routes[name][slot], set()).update(loss.slot_layers(slot))
        return needed

    def roles(self) -> dict[str, set[str]]:
        """kind ('features' | 'image' | 'value') → roles the terms read."""
        out: dict[str, set[str]] = {"features": set(), "image": set(), "value": set()}
        for name, loss in self.terms.items():
            for slot, (kind, _) in loss.slots.items():
                out[kind].add(self.routes[name][slot])
        return out

    def encode(self, images: Mapping[str, Tensor], features: Mapping[str, Mapping[str, Tensor]] | None = None
               ) -> dict[str, dict[str, Tensor]]:
        """Features of every role the terms need: given ones where they cover the layers, else one pass."""
        features = dict(features or {})
        out: dict[str, dict[str, Tensor]] = {}
        for role, layers in self.feature_layers().items():
            given = dict(features.get(role, {}))
            missing = layers - set(given)
            if missing:
                if role not in images:
                    raise ValueError(f"objective: role {role!r} needs features at {', '.join(sorted(missing))}; "
                                     f"pass images[{role!r}] or features[{role!r}] covering them")
                assert self.encoder is not None
                given.update(self.encoder(images[role], layers))
            out[role] = given
        return out

    def forward(self, images: Mapping[str, Tensor] | None = None,
                features: Mapping[str, Mapping[str, Tensor]] | None = None,
                values: Mapping[str, Tensor] | None = None) -> ObjectiveOutput:
        with SF.shared_grams():  # terms that read the same features' Grams compute them once
            return self._forward(images, features, values)

    def _forward(self, images, features, values) -> ObjectiveOutput:
        images, values = dict(images or {}), dict(values or {})
        encoded = self.encode(images, features)
        terms: dict[str, Tensor] = {}
        per_sample: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, loss in self.terms.items():
            args = []
            for slot, (kind, _) in loss.slots.items():
                role = self.routes[name][slot]
                source = encoded if kind == "features" else images if kind == "image" else values
                if role not in source:
                    raise ValueError(f"objective: term {name!r} needs {kind} of role {role!r} for its slot "
                                     f"{slot!r}; the step provided {kind} for: {', '.join(sorted(source)) or 'none'}")
                args.append(source[role])
            with torch.set_grad_enabled(torch.is_grad_enabled() and loss.weight > 0):
                sample_values = loss(*args, reduction="none")
            per_sample[name] = sample_values
            terms[name] = loss.weight * sample_values.mean()
            total = terms[name] if total is None else total + terms[name]
        if total is None:
            raise ValueError("objective has no terms")
        return ObjectiveOutput(total=total, terms=terms, per_sample=per_sample)


def build_objective(config: Mapping[str, Any], encoder: VGGEncoder | None = None) -> Objective:
    """Build an :class:`Objective` from a ``{term name: settings}`` mapping (see module docstring)."""
    if not isinstance(config, Mapping) or not config:
        raise ValueError(f"objective config must be a non-empty mapping of term name → settings; got {config!r}")
    terms: dict[str, Loss] = {}
    routes: dict[str, dict[str, str]] = {}
    warmups: dict[str, int] = {}
    for term_name, settings in config.items():
        if isinstance(settings, (int, float)) and not isinstance(settings, bool):
            settings = {"weight": settings}
        if not isinstance(settings, Mapping):
            raise ValueError(f"objective term {term_name!r}: settings must be a mapping or a weight; got {settings!r}")
        settings = dict(settings)
        loss_name = settings.pop("loss", term_name)
        if "warmup_steps" in settings:
            warmup = settings.pop("warmup_steps")
            if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
                raise ValueError(f"objective term {term_name!r}: warmup_steps must be an integer ≥ 0; got {warmup!r}")
            warmups[term_name] = warmup
        cls = LOSSES.get(loss_name)
        route = {slot: str(settings.pop(slot, default)) for slot, (_, default) in cls.slots.items()}
        unknown = sorted(set(settings) - set(accepted_parameters(cls)))
        if unknown:
            raise ValueError(
                f"objective term {term_name!r} (loss {loss_name!r}): unknown key(s) {', '.join(unknown)}; "
                f"allowed: loss, {', '.join(accepted_parameters(cls))}, and the slots {', '.join(cls.slots)}"
            )
        try:
            terms[term_name] = cls(**settings)
        except ValueError as error:
            raise ValueError(f"objective term {term_name!r}: {error}") from None
        routes[term_name] = route
    return Objective(terms, routes, encoder, warmups)


def translate_objective(config: Mapping[str, Any], arch: str,
                        substitute_roles: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``config`` for another encoder: every feature term's layers (its own, else its loss's defaults) become
    ``arch``'s equivalents (:func:`stylecore.encoders.equivalent_layers`), and a slot routed to a role in
    ``substitute_roles`` (features a model computes in its own encoder's space, e.g. AdaIN's target) reads
    the role standing in for it there. Terms that read no features are kept as they are."""
    out: dict[str, Any] = {}
    for term_name, settings in config.items():
        if not isinstance(settings, Mapping):  # a bare weight, or invalid (build_objective says which)
            out[term_name] = settings
            continue
        settings = dict(settings)
        cls = LOSSES.get(settings.get("loss", term_name))
        feature_slots = [slot for slot, (kind, _) in cls.slots.items() if kind == "features"]
        if feature_slots:
            layers = settings.get("layers") if settings.get("layers") is not None else cls.default_layers
            if not layers:
                raise ValueError(f"objective term {term_name!r} (loss {cls.registered_name!r}) names no layers to "
                                 f"translate to the {arch} encoder; give its layers")
            try:
                settings["layers"] = equivalent_layers(layers, arch)
            except ValueError as error:
                raise ValueError(f"objective term {term_name!r}: {error}") from None
            for slot in feature_slots:
                role = str(settings.get(slot, cls.slots[slot][1]))
                if role in (substitute_roles or {}):
                    settings[slot] = substitute_roles[role]
        out[term_name] = settings
    return out


def merge_objective(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{term: weight | settings | None}`` overrides to an objective config."""
    merged = copy.deepcopy(dict(base))
    for term, value in overrides.items():
        if value is None:
            merged.pop(term, None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            settings = merged.get(term, {})
            settings = dict(settings) if isinstance(settings, Mapping) else {"weight": settings}
            settings["weight"] = float(value)
            merged[term] = settings
        elif isinstance(value, Mapping):
            settings = merged.get(term, {})
            settings = dict(settings) if isinstance(settings, Mapping) else {"weight": settings}
            settings.update(value)
            merged[term] = settings
        else:
            raise ValueError(f"objective override for term {term!r} must be a weight, a mapping or null; got {value!r}")
    return merged
