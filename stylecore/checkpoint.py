"""The checkpoint format: directories written by :class:`stylecore.training.Trainer`, read back here.

``step-000100/`` holds ``config.json`` (format, model name + params, training config, step, encoder
description), ``model.safetensors`` (the model's trained state; frozen encoders are rebuilt from their
weights spec) and ``trainer.pt`` (optimizer, scheduler, scaler, RNG states as plain tensors and lists, the
data position; read with ``weights_only=True``). :func:`load` rebuilds a model for inference.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from stylecore import models as model_registry
from stylecore.devices import best_device
from stylecore.models.base import StyleTransferModel

CHECKPOINT_FORMAT = "stylecore-checkpoint/1"
_STEP_DIR = re.compile(r"step-(\d+)$")


class CheckpointError(ValueError):
    """A path is not a usable stylecore checkpoint; the message says why."""


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors, numbers and lists only (a ``weights_only`` load reads it
    back without unpickling anything). CUDA: only this trainer's device, so a resume that sees other
    GPUs (Ray shows a node's GPUs to every worker on it) restores the state it saved."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }
    if device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer.pt`` read with ``weights_only=True``: tensors, numbers, strings and containers, never code.

    A file that needs anything else (a crafted pickle, or a checkpoint written before stylecore stored its
    RNG states as tensors) is refused with :class:`CheckpointError`; its model weights still load.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else type(error).__name__)
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:300]
        raise CheckpointError(
            f"{path}: refused to load the trainer state, which holds more than tensors and numbers ({first}). "
            "stylecore never unpickles objects from a checkpoint: it is a crafted file or one written by an older "
            "stylecore. Its model weights still load (stylecore.load); to train on, start a run in a new output "
            "folder") from None


def checkpoint_steps(root: Path | str) -> list[Path]:
    """The complete ``step-N`` checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))
             and (p / "config.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path | str) -> Path | None:
    steps = checkpoint_steps(root)
    return steps[-1] if steps else None


def latest_step(path: Path) -> int:
    return int(read_checkpoint_config(path)["step"])


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory itself, or a run directory whose newest ``step-N`` is taken."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(f"{path} is not a stylecore checkpoint: it has no config.json + model.safetensors and no "
                          "step-N checkpoint directories (train one with `stylecore train --output DIR`)")


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable config.json ({error})") from None
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: config.json has format {config.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return config


def load_model_state(model: StyleTransferModel, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path / "model.safetensors"))
    expected = model.persistent_state()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: model state does not match a {model.name} built from its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)


def load(path: Path | str, device: str | torch.device | None = None) -> StyleTransferModel:
    """Rebuild the model of a checkpoint directory (or the newest in a run directory), in eval mode, on
    ``device`` (default: CUDA when it works, else the CPU)."""
    path = resolve_checkpoint(path)
    config = read_checkpoint_config(path)
    name, params = config["model"]["model"], dict(config["model"]["params"])
    from stylecore import gan

    if name in gan.names():  # a GAN translation model: its generators translate, no encoder to check
        model = gan.build(name, **params)
        load_model_state(model, path)
        return model.to(device if device is not None else best_device()).eval()
    if name not in model_registry.names():
        raise CheckpointError(f"{path}: model {name!r} is not registered in this stylecore "
                              f"(known: {', '.join(model_registry.names() + gan.names())})")
    cls = model_registry.MODELS.get(name)
    params.update(cls.checkpoint_overrides)
    model = cls(**params)
    encoder = config.get("encoder", {})
    if hasattr(model, "encoder") and isinstance(getattr(model, "encoder"), nn.Module) and "weights_sha256" in encoder:
        current = model.encoder.describe().get("weights_sha256")
        if current is not None and current != encoder["weights_sha256"]:
            raise CheckpointError(f"{path} was trained with encoder weights sha256 {encoder['weights_sha256']}, but "
                                  f"{encoder.get('weights_file')} now has {current}; restore that file")
    load_model_state(model, path)
    return model.to(device if device is not None else best_device()).eval()


def save_model(model: StyleTransferModel, checkpoint_dir: Path | str, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write an inference checkpoint of ``model`` as it is (no training state): ``checkpoint_dir`` holding
    ``config.json`` and ``model.safetensors``, replaced atomically, readable by :func:`load` and everything built
    on it (evaluation, the registry, Ray Data, serving). ``provenance`` (where the weights came from) is kept in
    the config. For pretrained models, which enter the pipeline without training."""
    from safetensors.torch import save_file

    from stylecore.io import atomic_directory

    path = Path(checkpoint_dir)
    state = {key: value.detach().cpu().contiguous() for key, value in model.persistent_state().items()}
    config = {"format": CHECKPOINT_FORMAT, "model": model.config(), "step": 0, "phase": "pretrained",
              "provenance": dict(provenance or {})}
    with atomic_directory(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    return path


def pretrained(name: str, device: str | torch.device | None = None) -> StyleTransferModel:
    """The registered model ``name`` built with its published pretrained weights (e.g. ``magenta_lite``), in eval mode."""
    if name not in model_registry.names():
        raise CheckpointError(f"pretrained:{name}: no model {name!r} is registered (known: {', '.join(model_registry.names())})")
    cls = model_registry.MODELS.get(name)
    if cls.pretrained_weights is None:
        known = [n for n in model_registry.names() if model_registry.MODELS.get(n).pretrained_weights is not None]
        raise CheckpointError(f"pretrained:{name}: {name} has no published weights; pretrained models: {', '.join(known)} "
                              "(a trained model loads from its checkpoint directory or a models:/ URI)")
    return cls(weights=cls.pretrained_weights).to(device if device is not None else best_device()).eval()
