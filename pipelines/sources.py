"""The dataset catalogue (params.yaml ``sources``) and how each source's files become shard inputs.

A source has a ``kind`` (its layout: ``synthetic``, ``places365``, ``coco``, ``wikiart``), a ``role``
(content or style), the ``profiles`` that use it, its licence, and for real datasets the files to
fetch (URL, name, MD5 or pinned SHA-256, size). ``params.yaml``'s ``profile`` selects the sources:
``demo`` (generated, offline) by default, ``full`` for the real datasets.

Downloaded and extracted files live in ``data/raw/<source>/files``; listers turn that folder into
the ordered :class:`stylecore.shards.SourceItem` list of a split, with labels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from stylecore.shards import SourceItem

KINDS = ("synthetic", "places365", "coco", "wikiart")
ROLES = ("content", "style")
SPLITS = ("train", "val")


class CatalogueError(ValueError):
    """params.yaml's sources or profile are invalid; the message names the key."""


@dataclass
class SourceFile:
    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    extract: bool = True


@dataclass
class Source:
    name: str
    kind: str
    role: str
    profiles: list[str]
    licence: str = ""
    redistribution: bool = False
    files: list[SourceFile] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (synthetic counts, splits map, …)


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"{path} not found; run the stages from the repository root")
    return yaml.safe_load(path.read_text()) or {}


def parse_sources(params: Mapping[str, Any]) -> dict[str, Source]:
    raw = params.get("sources")
    if not isinstance(raw, Mapping) or not raw:
        raise CatalogueError("params.yaml: 'sources' must map source names to their settings")
    profiles = params.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise CatalogueError("params.yaml: 'profiles' must map profile names to lists of sources")
    sources: dict[str, Source] = {}
    for name, settings in raw.items():
        settings = dict(settings)
        where = f"params.yaml: sources.{name}"
        kind = settings.pop("kind", None)
        if kind not in KINDS:
            raise CatalogueError(f"{where}.kind={kind!r} is not one of {', '.join(KINDS)}")
        role = settings.pop("role", None)
        if role not in ROLES:
            raise CatalogueError(f"{where}.role={role!r} is not one of {', '.join(ROLES)}")
        files = []
        for index, entry in enumerate(settings.pop("files", []) or []):
            unknown = set(entry) - {"name", "url", "md5", "sha256", "size", "extract"}
            if unknown or "url" not in entry or "name" not in entry:
                raise CatalogueError(f"{where}.files[{index}]: needs name and url (optional md5, sha256, size, "
                                     f"extract); got keys {sorted(entry)}")
            files.append(SourceFile(**entry))
        if kind != "synthetic" and not files:
            raise CatalogueError(f"{where}: a {kind} source needs files to download")
        licence = str(settings.pop("licence", "")).strip()
        redistribution = bool(settings.pop("redistribution", False))
        in_profiles = [p for p, members in profiles.items() if name in (members or [])]
        sources[name] = Source(name, kind, role, in_profiles, licence, redistribution, files, settings)
    for profile, members in profiles.items():
        unknown = sorted(set(members or []) - set(sources))
        if unknown:
            raise CatalogueError(f"params.yaml: profiles.{profile} names unknown source(s) {', '.join(unknown)}")
    return sources


def active_profile(params: Mapping[str, Any]) -> str:
    profile = params.get("profile", "demo")
    if profile not in (params.get("profiles") or {}):
        raise CatalogueError(f"params.yaml: profile={profile!r} is not one of {', '.join(params.get('profiles') or {})}")
    return profile


def profile_shards(params: Mapping[str, Any], shards_root: Path, split: str) -> dict[str, list[str]]:
    """The active profile's shard folders of ``split`` by role: ``{"content": [...], "style": [...]}``, as
    absolute paths (Ray workers run in another directory)."""
    profile = active_profile(params)
    sources = [s for s in parse_sources(params).values() if profile in s.profiles]
    root = Path(shards_root).resolve()
    return {role: [str(root / f"{s.name}-{split}") for s in sources if s.role == role] for role in ROLES}


def selected_source(params: Mapping[str, Any], name: str) -> tuple[Source, str]:
    """The catalogue entry ``name`` and the active profile, with named errors for either."""
    sources = parse_sources(params)
    if name not in sources:
        raise CatalogueError(f"source {name!r} is not in params.yaml (known: {', '.join(sources)})")
    return sources[name], active_profile(params)


# -- listers: data/raw/<source>/files → ordered items of a split ------------------------------------

Lister = Callable[[Source, Path, str], list[SourceItem]]
LISTERS: dict[str, Lister] = {}


def lister(kind: str):
    def register(fn: Lister) -> Lister:
        LISTERS[kind] = fn
        return fn

    return register


def list_items(source: Source, files_root: Path, split: str) -> list[SourceItem]:
    if split not in SPLITS:
        raise CatalogueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    items = LISTERS[source.kind](source, files_root, split)
    return sorted(items, key=lambda item: item.path)


@lister("synthetic")
def _synthetic(source: Source, root: Path, split: str) -> list[SourceItem]:
    labels = json.loads((root / "labels.json").read_text())
    return [SourceItem(path, labels[path]) for path in labels if path.startswith(f"{split}/")]


def _read_list(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, index = line.strip().rpartition(" ")
            rows.append((name, index))
    return rows


@lister("places365")
def _places365(source: Source, root: Path, split: str) -> list[SourceItem]:
    """Places365-Standard: file lists ``places365_{train_standard,val}.txt`` ("path index") and
    ``categories_places365.txt`` ("/a/abbey 0"); images under ``data_256/`` and ``val_256/``."""
    categories = {index: name for name, index in _read_list(root / "categories_places365.txt")}
    list_file, folder = {"train": ("places365_train_standard.txt", "data_256"),
                         "val": ("places365_val.txt", "val_256")}[split]
    items = []
    for path, index in _read_list(root / list_file):
        scene = categories.get(index, index)
        items.append(SourceItem(f"{folder}/{path.lstrip('/')}", {"scene": scene.lstrip("/"), "scene_index": int(index)}))
    return items


@lister("coco")
def _coco(source: Source, root: Path, split: str) -> list[SourceItem]:
    """MS-COCO 2017: ``train2017/*.jpg`` and ``val2017/*.jpg`` (photos only; no labels are needed)."""
    folder = root / f"{split}2017"
    if not folder.is_dir():
        raise CatalogueError(f"{folder} is missing: has the coco download stage run?")
    return [SourceItem(f"{split}2017/{p.name}") for p in folder.iterdir() if p.is_file()]


@lister("wikiart")
def _wikiart(source: Source, root: Path, split: str) -> list[SourceItem]:
    """WikiArt (ArtGAN): ``wikiart/<Style>/<artist>_<title>.jpg`` and ``wikiart_csv/{Style,Artist,Genre}_{train,val}.csv``
    rows "path,index" with ``{style,artist,genre}_class.txt`` ("index name"). An image takes every label
    whose CSV lists it in this split."""
    csv_dir = root / "wikiart_csv"
    labelled: dict[str, dict[str, Any]] = {}
    for label in ("Style", "Artist", "Genre"):
        table = csv_dir / f"{label}_{split}.csv"
        if not table.is_file():
            continue
        names = {}
        class_file = csv_dir / f"{label.lower()}_class.txt"
        if class_file.is_file():
            for line in class_file.read_text().splitlines():
                if line.strip():
                    index, _, name = line.strip().partition(" ")
                    names[index] = name
        with open(table, newline="") as handle:
            for row in csv.reader(handle):
                if len(row) < 2:
                    continue
                path, index = row[0].strip(), row[1].strip()
                labelled.setdefault(path, {})[label.lower()] = names.get(index, index)
    if not labelled:
        raise CatalogueError(f"{csv_dir}: no {split} CSV; has the wikiart download stage run?")
    return [SourceItem(f"wikiart/{path}", labels) for path, labels in labelled.items()]
