"""Artist (and style) classifiers: the judge of the deception rate (Sanakoyeu et al. 2018; the seed paper's Table 6).

An :class:`ArtistClassifier` is a torchvision backbone — ResNet-18, ResNet-50 or VGG-16, the networks the
deception-rate literature uses — whose pooled features are the embedding (2,048-d for ResNet-50, as the
seed paper's kNN variant uses from inejc/painters), and two linear heads on them: the artist and, where the
data carries it, the style. Its backbone weights follow :mod:`stylecore.backbones` (``imagenet``, a file or
``random:<seed>``); a classifier trained from a random backbone is a real classifier of the data it saw, but
its deception rates compare with nothing published, and its description says so.

:class:`ClassifierTrainer` trains one: AdamW, cross-entropy with label smoothing (artist + ``style_weight`` ×
style), a linear warm-up then cosine decay, bf16 autocast where the hardware is fast at it, DDP when
``torch.distributed`` is up (Ray Train sets it up), and checkpoint directories written atomically
(``model.safetensors``, ``trainer.pt`` read back with ``weights_only=True``, ``config.json``) from which a run
continues where it stopped. :func:`load_classifier` rebuilds a trained one for inference.

Images are (B, 3, H, W) in [0, 1]; the classifier resizes them to its ``input_size`` and normalises with
ImageNet's mean and standard deviation, as every torchvision backbone expects.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.backbones import resolve_weights
from stylecore.checkpoint import CheckpointError, capture_rng, checkpoint_steps, latest_checkpoint, latest_step, \
    load_trainer_state, restore_rng
from stylecore.data import Augment, ShardLocations, seeded_generator
from stylecore.io import atomic_directory, remove_stale_temporaries

log = logging.getLogger(__name__)

CLASSIFIER_FORMAT = "stylecore-classifier/1"
#: backbone → (torchvision constructor, its ImageNet weights enum, embedding width)
BACKBONES = {"resnet18": ("resnet18", "ResNet18_Weights", 512),
             "resnet50": ("resnet50", "ResNet50_Weights", 2048),
             "vgg16": ("vgg16", "VGG16_Weights", 4096)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ArtistClassifier(nn.Module):
    """Backbone → embedding → artist logits (and style logits when ``styles`` are given)."""

    def __init__(self, artists: Sequence[str], styles: Sequence[str] = (), backbone: str = "resnet18",
                 weights: str = "random:0", input_size: int = 224) -> None:
        super().__init__()
        import torchvision.models as tvm

        if backbone not in BACKBONES:
            raise ValueError(f"classifier backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
        if len(artists) < 2 or len(set(artists)) != len(artists):
            raise ValueError(f"an artist classifier needs at least two distinct artists; got {list(artists)[:5]}")
        if input_size < 32:
            raise ValueError(f"classifier input_size must be at least 32 px; got {input_size}")
        constructor, enum_name, width = BACKBONES[backbone]
        self.backbone_name, self.input_size = backbone, int(input_size)
        self.artists, self.styles = list(artists), list(styles)
        resolved = resolve_weights(weights, f"the {backbone} artist classifier", getattr(tvm, enum_name).IMAGENET1K_V1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(resolved.seed or 0)
            trunk = getattr(tvm, constructor)(weights=None)
        if resolved.state is not None:  # the trunk only: ImageNet's 1000-class layer is replaced by our heads
            head = "fc." if backbone.startswith("resnet") else "classifier.6."
            trunk.load_state_dict({k: v for k, v in resolved.state.items() if not k.startswith(head)}, strict=False)
        if backbone.startswith("resnet"):
            trunk.fc = nn.Identity()
        else:
            trunk.classifier = trunk.classifier[:-1]  # … ReLU, Dropout: the 4,096-d penultimate features
        self.trunk = trunk
        self.weights = dict(resolved.info)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((resolved.seed or 0) + 1)
            self.artist_head = nn.Linear(width, len(self.artists))
            self.style_head = nn.Linear(width, len(self.styles)) if len(self.styles) >= 2 else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.embedding_width = width

    def embed(self, images: Tensor) -> Tensor:
        """(B, D) features of images in [0, 1] (resized to ``input_size`` square when they differ)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.trunk((images - self.mean) / self.std)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.embed(images)
        out = {"features": features, "artist": self.artist_head(features)}
        if self.style_head is not None:
            out["style"] = self.style_head(features)
        return out

    def config(self) -> dict[str, Any]:
        return {"format": CLASSIFIER_FORMAT, "backbone": self.backbone_name, "input_size": self.input_size,
                "artists": self.artists, "styles": self.styles, "backbone_weights": self.weights}

    def describe(self) -> str:
        pretrained = self.weights.get("pretrained") == "true"
        return (f"{self.backbone_name} artist classifier ({len(self.artists)} artists) on a "
                f"{'pretrained' if pretrained else 'randomly initialised'} backbone ({self.weights.get('spec')})")


@dataclass(frozen=True)
class ClassifierConfig:
    """How a classifier is trained. Every field is a params.yaml key of the ``classifier`` stage."""

    backbone: str = "resnet18"
    weights: str = "random:0"
    input_size: int = 224
    load_size: int = 256  # short side before the random crop of input_size
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    style_weight: float = 0.5  # the style head's share of the loss (0: artists only)
    precision: str = "auto"
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ClassifierConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"classifier: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**dict(values))
        config.validate()
        return config

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"classifier.backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        for key in ("input_size", "load_size", "batch_size", "steps", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"classifier.{key} must be a positive integer; got {value!r}")
        if self.load_size < self.input_size:
            raise ValueError(f"classifier.load_size {self.load_size} is below input_size {self.input_size}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"classifier.lr must be in (0, 1); got {self.lr!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"classifier.label_smoothing must be in [0, 1); got {self.label_smoothing!r}")
        if self.style_weight < 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("classifier.style_weight, weight_decay and warmup_steps must be ≥ 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"classifier.precision must be auto, fp32 or bf16; got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelledBatch:
    images: Tensor
    artists: Tensor  # (B,) index into the classifier's artists
    styles: Tensor  # (B,) index into its styles, -1 where unknown
    keys: list[str]


class LabelledStream:
    """Endless, seeded batches of labelled artworks from shard folders, for training a classifier.

    Samples whose artist is not in ``artists`` are passed over. Each DDP rank reads its own resampled shard
    sequence (:func:`stylecore.shards.stream_shards`); images are resized, randomly cropped to ``input_size`` and
    flipped. The position is saved; a resumed stream is reseeded from (seed, position), as
    :class:`stylecore.data.ShardPairStream` is: the same distribution, not the identical order."""

    def __init__(self, locations: ShardLocations, artists: Sequence[str], styles: Sequence[str], batch_size: int,
                 input_size: int, load_size: int, seed: int = 0, rank: int = 0, shuffle_buffer: int = 1000) -> None:
        from stylecore.shards import shard_urls

        shard_urls(locations)  # fail now, naming the folder, if it holds no shards
        self.locations, self.batch_size = locations, int(batch_size)
        self.artist_index = {name: i for i, name in enumerate(artists)}
        self.style_index = {name: i for i, name in enumerate(styles)}
        self.augment = Augment(input_size, load_size, flip=True)
        self.seed, self.rank, self.shuffle_buffer = int(seed), int(rank), int(shuffle_buffer)
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position = int(state["position"])

    def __iter__(self) -> Iterator[LabelledBatch]:
        from stylecore.shards import stream_shards

        start = self.position
        samples = stream_shards(self.locations, int(seeded_generator(self.seed, self.rank, start).initial_seed() % 2**31),
                                self.shuffle_buffer, rank=self.rank)
        generator = seeded_generator(self.seed, "augment", self.rank, start)
        while True:
            picked = []
            while len(picked) < self.batch_size:
                key, image, meta = next(samples)
                artist = self.artist_index.get(str((meta.get("labels") or {}).get("artist")))
                if artist is not None:
                    picked.append((key, image, artist, self.style_index.get(str(meta["labels"].get("style")), -1)))
            self.position += 1
            yield LabelledBatch(self.augment.batch([image for _, image, _, _ in picked], generator),
                                torch.tensor([a for _, _, a, _ in picked]), torch.tensor([s for _, _, _, s in picked]),
                                [k for k, _, _, _ in picked])


def label_counts(locations: ShardLocations, label: str) -> dict[str, int]:
    """How many samples of each ``label`` value the shard folders' manifests record (summed over folders)."""
    from stylecore.shards import read_manifest

    counts: dict[str, int] = {}
    for location in [locations] if isinstance(locations, (str, Path)) else list(locations):
        manifest = read_manifest(location) or {}
        for value, count in (manifest.get("per_label", {}).get(label) or {}).items():
            counts[value] = counts.get(value, 0) + int(count)
    return counts


class ClassifierTrainer:
    """Trains an :class:`ArtistClassifier` with a :class:`ClassifierConfig`; see the module docstring."""

    def __init__(self, config: ClassifierConfig, artists: Sequence[str], styles: Sequence[str] = (),
                 device: str | torch.device = "cpu") -> None:
        from stylecore.training import resolve_precision

        config.validate()
        self.config, self.device = config, torch.device(device)
        torch.manual_seed(config.seed)
        self.model = ArtistClassifier(artists, styles, config.backbone, config.weights, config.input_size).to(self.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        self.world_size = torch.distributed.get_world_size() if self.distributed else 1
        self.runner: nn.Module = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.runner = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                                  else None, find_unused_parameters=self.model.style_head is None)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        log.info("classifier: %s", self.summary())

    def summary(self) -> str:
        return f"{self.model.describe()}, precision {self.precision}, device {self.device}"

    def _lr_factor(self, step: int) -> float:
        warmup = self.config.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(self.config.steps - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def train_step(self, batch: LabelledBatch) -> dict[str, float]:
        started = time.perf_counter()
        self.model.train()
        images = batch.images.to(self.device, non_blocking=True)
        artists, styles = batch.artists.to(self.device), batch.styles.to(self.device)
        dtype = torch.bfloat16 if self.precision == "bf16" else None
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = self.runner(images)
        smoothing = self.config.label_smoothing
        artist_loss = F.cross_entropy(out["artist"].float(), artists, label_smoothing=smoothing)
        loss = artist_loss
        terms = {"artist": artist_loss.detach()}
        if "style" in out and self.config.style_weight > 0 and bool((styles >= 0).any()):
            style_loss = F.cross_entropy(out["style"].float(), styles, ignore_index=-1, label_smoothing=smoothing)
            loss = loss + self.config.style_weight * style_loss
            terms["style"] = style_loss.detach()
        elif "style" in out:  # DDP must see the style head take part in every step's graph
            loss = loss + 0.0 * out["style"].sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"classifier step {self.step + 1}: non-finite loss {terms}; lower classifier.lr")
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        accuracy = (out["artist"].detach().argmax(1) == artists).float().mean()
        return {"loss": float(loss.detach()), **{f"loss/{k}": float(v) for k, v in terms.items()},
                "train_top1": float(accuracy), "lr": self.optimizer.param_groups[0]["lr"],
                "samples_per_second": len(images) * self.world_size / max(time.perf_counter() - started, 1e-9)}

    def fit(self, stream: LabelledStream, checkpoint_dir: Path | str | None = None,
            on_step: Callable[["ClassifierTrainer", dict[str, float]], None] | None = None) -> None:
        """Train to ``config.steps``, continuing from the newest checkpoint in ``checkpoint_dir`` if there is one;
        ``on_step(trainer, figures)`` after every step."""
        if checkpoint_dir is not None:
            remove_stale_temporaries(checkpoint_dir)
            latest = latest_checkpoint(checkpoint_dir)
            if latest is not None and latest_step(latest) > self.step:
                self.load_checkpoint(latest, stream)
                log.info("classifier: resumed from %s at step %d", latest, self.step)
        batches = iter(stream)
        while self.step < self.config.steps:
            figures = self.train_step(next(batches))
            if on_step is not None:
                on_step(self, figures)
            if checkpoint_dir is not None and (self.step % self.config.checkpoint_every == 0
                                               or self.step == self.config.steps):
                self.save_checkpoint(checkpoint_dir, stream)

    def save_checkpoint(self, checkpoint_dir: Path | str, stream: LabelledStream | None = None) -> Path:
        from safetensors.torch import save_file

        root = Path(checkpoint_dir)
        path = root / f"step-{self.step:06d}"
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        trainer_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "step": self.step, "rng": capture_rng(self.device),
                         "data": stream.state_dict() if stream is not None else None}
        with atomic_directory(path) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            torch.save(trainer_state, tmp / "trainer.pt")
            (tmp / "config.json").write_text(json.dumps(
                {**self.model.config(), "train": self.config.to_dict(), "step": self.step}, indent=2) + "\n")
        for old in checkpoint_steps(root)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def load_checkpoint(self, path: Path | str, stream: LabelledStream | None = None) -> None:
        from safetensors.torch import load_file

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if config.get("artists") != self.model.artists or config.get("backbone") != self.model.backbone_name:
            raise CheckpointError(f"{path} holds a {config.get('backbone')} classifier of other artists; this run "
                                  f"trains a {self.model.backbone_name} of {len(self.model.artists)} artists")
        self.model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(self.device)))
        state = load_trainer_state(path / "trainer.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        restore_rng(state["rng"], self.device)
        if stream is not None and state.get("data") is not None:
            stream.load_state_dict(state["data"])


def load_classifier(path: Path | str, device: str | torch.device = "cpu") -> ArtistClassifier:
    """A trained classifier from a checkpoint directory (or a folder of ``step-*`` directories: the newest)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file():
        latest = latest_checkpoint(path) if path.is_dir() else None
        if latest is None:
            raise CheckpointError(f"{path} is not a classifier checkpoint (no config.json); train one with "
                                  "`dvc repro classifier`")
        path = latest
    config = json.loads((path / "config.json").read_text())
    if config.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(f"{path} is not a classifier checkpoint (format {config.get('format')!r})")
    # the trained state replaces every weight: the backbone is built bare, never downloaded again
    model = ArtistClassifier(config["artists"], config["styles"], config["backbone"], "random:0", config["input_size"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.weights = dict(config.get("backbone_weights") or {})
    return model.to(device).eval()


@torch.inference_mode()
def classify(model: ArtistClassifier, images: Tensor, batch_size: int = 32) -> dict[str, Tensor]:
    """Artist logits and features of (N, 3, H, W) images in [0, 1], batch by batch, on the model's device."""
    device = next(model.parameters()).device
    parts: dict[str, list[Tensor]] = {}
    model.eval()
    for start in range(0, len(images), batch_size):
        out = model(images[start:start + batch_size].to(device))
        for name, value in out.items():
            parts.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def accuracy_report(model: ArtistClassifier, images: Tensor, artists: Sequence[str], styles: Sequence[str] | None = None,
                    batch_size: int = 32) -> dict[str, Any]:
    """Held-out top-1 / top-5 accuracy over the images whose artist the classifier knows, overall and per artist,
    and chance (one over the number of artists); with ``styles``, the style head's top-1 as well."""
    known = [i for i, name in enumerate(artists) if name in model.artists]
    if not known:
        raise ValueError("none of the held-out images is by an artist the classifier knows")
    out = classify(model, images[known], batch_size)
    logits = out["artist"]
    targets = torch.tensor([model.artists.index(artists[i]) for i in known])
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit1, hit5 = top5[:, 0] == targets, (top5 == targets[:, None]).any(1)
    per_artist = {model.artists[t]: {"images": int((targets == t).sum()), "top1": float(hit1[targets == t].float().mean()),
                                     "top5": float(hit5[targets == t].float().mean())} for t in targets.unique().tolist()}
    report = {"images": len(known), "skipped_unknown_artist": len(artists) - len(known),
              "top1": float(hit1.float().mean()), "top5": float(hit5.float().mean()),
              "chance_top1": 1.0 / len(model.artists), "per_artist": per_artist}
    if styles is not None and "style" in out:
        style_known = [k for k, i in enumerate(known) if styles[i] in model.styles]
        if style_known:
            style_targets = torch.tensor([model.styles.index(styles[known[k]]) for k in style_known])
            predicted = out["style"][style_known].argmax(1)
            report["style_top1"] = float((predicted == style_targets).float().mean())
            report["style_chance_top1"] = 1.0 / len(model.styles)
    return report
