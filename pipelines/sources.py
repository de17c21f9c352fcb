"""The dataset catalogue (``catalogue/<source>.yaml``, one file per source) and how each source's files become
shard inputs.

A source has a ``kind`` (its layout: ``synthetic``, ``places365``, ``coco``, ``wikiart``, or ``folder``: any
local or fsspec folder of your own images, see :func:`_folder`), a ``role``
(content or style), the ``profiles`` that use it, its licence, and for real datasets the files to
fetch (URL, name, MD5 or pinned SHA-256, size). ``params.yaml``'s ``profile`` selects the sources:
``demo`` (generated, offline) by default, ``full`` for the real datasets.

Downloaded and extracted files live in ``data/raw/<source>/files``; listers turn that folder into
the ordered :class:`stylecore.shards.SourceItem` list of a split, with labels.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from stylecore.shards import SourceItem

KINDS = ("synthetic", "places365", "coco", "wikiart", "folder")
ROLES = ("content", "style")
SPLITS = ("train", "val")


class CatalogueError(ValueError):
    """The catalogue or params.yaml's profile is invalid; the message names the file and key."""


#: beside params.yaml: ``<source>.yaml`` per source, merged into ``params["sources"]`` by :func:`load_params`
CATALOGUE = "catalogue"


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
    """params.yaml, with the catalogue beside it (``catalogue/<source>.yaml``) as its ``sources``. A ``sources``
    mapping written in params.yaml itself is read too (a scratch workspace's one-file set-up), but a source may be
    defined in one place only."""
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"{path} not found; run the stages from the repository root")
    params = yaml.safe_load(path.read_text()) or {}
    folder = path.parent / CATALOGUE
    if folder.is_dir():
        sources = dict(params.get("sources") or {})
        for file in sorted(folder.glob("*.yaml")):
            name = file.stem
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):  # it names data/raw/<name> and the stages
                raise CatalogueError(f"{file}: a source's name (the file's) takes letters, digits and _ only")
            if name in sources:
                raise CatalogueError(f"source {name!r} is defined twice, in {file} and in {path} (sources.{name}); "
                                     "keep the catalogue file")
            entry = yaml.safe_load(file.read_text())
            if not isinstance(entry, Mapping):
                raise CatalogueError(f"{file}: must map the source's settings (kind, role, licence, …)")
            sources[name] = entry
        params["sources"] = sources
    return params


def parse_sources(params: Mapping[str, Any]) -> dict[str, Source]:
    raw = params.get("sources")
    if not isinstance(raw, Mapping) or not raw:
        raise CatalogueError(f"no sources: add one file per source to {CATALOGUE}/ beside params.yaml "
                             "(<source>.yaml: kind, role, licence, …)")
    profiles = params.get("profiles")
    if not isinstance(profiles, Mapping) or not profiles:
        raise CatalogueError("params.yaml: 'profiles' must map profile names to lists of sources")
    sources: dict[str, Source] = {}
    for name, settings in raw.items():
        settings = dict(settings)
        where = f"{CATALOGUE}/{name}.yaml"
        kind = settings.pop("kind", None)
        if kind not in KINDS:
            raise CatalogueError(f"{where}: kind={kind!r} is not one of {', '.join(KINDS)}")
        role = settings.pop("role", None)
        if role not in ROLES:
            raise CatalogueError(f"{where}: role={role!r} is not one of {', '.join(ROLES)}")
        files = []
        for index, entry in enumerate(settings.pop("files", []) or []):
            unknown = set(entry) - {"name", "url", "md5", "sha256", "size", "extract"}
            if unknown or "url" not in entry or "name" not in entry:
                raise CatalogueError(f"{where}: files[{index}]: needs name and url (optional md5, sha256, size, "
                                     f"extract); got keys {sorted(entry)}")
            files.append(SourceFile(**entry))
        if kind not in ("synthetic", "folder") and not files:
            raise CatalogueError(f"{where}: a {kind} source needs files to download")
        licence = str(settings.pop("licence", "")).strip()
        redistribution = bool(settings.pop("redistribution", False))
        if kind == "folder":
            check_folder_options(settings, where)
        in_profiles = [p for p, members in profiles.items() if name in (members or [])]
        sources[name] = Source(name, kind, role, in_profiles, licence, redistribution, files, settings)
    for profile, members in profiles.items():
        unknown = sorted(set(members or []) - set(sources))
        if unknown:
            raise CatalogueError(f"params.yaml: profiles.{profile} names unknown source(s) {', '.join(unknown)}")
    return sources


def active_profile(params: Mapping[str, Any]) -> str:
    profile = params.get("profile")
    if profile is None:
        raise CatalogueError("params.yaml: profile is missing; set it to one of "
                             f"{', '.join(params.get('profiles') or {}) or 'the profiles it defines'}")
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
        raise CatalogueError(f"source {name!r} is not in the catalogue (known: {', '.join(sources)}); add "
                             f"{CATALOGUE}/{name}.yaml")
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


# -- your own images: kind "folder" -----------------------------------------------------------------

FOLDER_OPTIONS = {"path": None, "labels": "subfolders", "label_name": None, "csv": None, "val_fraction": 0.1}


def check_folder_options(settings: Mapping[str, Any], where: str) -> None:
    """A ``folder`` source's keys: ``path`` (a local folder or an fsspec URI), ``labels`` (``subfolders``: the
    first folder below the split names the label; ``csv``: columns of the file ``csv`` inside the folder,
    ``path,<label>,…``; ``none``), ``label_name`` (default ``style`` for a style source, ``scene`` for content)
    and ``val_fraction`` (used when the folder has no ``train/`` and ``val/`` subfolders)."""
    unknown = sorted(set(settings) - set(FOLDER_OPTIONS))
    if unknown:
        raise CatalogueError(f"{where} has unknown key(s) {unknown}; a folder source takes {', '.join(FOLDER_OPTIONS)}")
    if not isinstance(settings.get("path"), str) or not settings["path"]:
        raise CatalogueError(f"{where}: path must name the folder of images (a local path or a URI such as s3://…)")
    labels = settings.get("labels", "subfolders")
    if labels not in ("subfolders", "csv", "none"):
        raise CatalogueError(f"{where}: labels={labels!r} is not one of subfolders, csv, none")
    if labels == "csv" and not isinstance(settings.get("csv"), str):
        raise CatalogueError(f"{where}: csv must name the labels file inside the folder when labels is csv")
    fraction = settings.get("val_fraction", 0.1)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise CatalogueError(f"{where}: val_fraction={fraction!r} must be a number in [0, 1)")


def folder_option(source: Source, key: str) -> Any:
    return source.options.get(key, FOLDER_OPTIONS[key])


def _in_validation(path: str, fraction: float) -> bool:
    """A stable split: the same file lands in the same split on every machine and every run."""
    import hashlib

    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") / 2 ** 64 < fraction


@lister("folder")
def _folder(source: Source, root: Path, split: str) -> list[SourceItem]:
    """Your own images, copied into ``data/raw/<source>/files`` by the download stage. Splits: the ``train/``
    and ``val/`` subfolders when both exist, else a stable hash split of ``val_fraction``. Labels: the first
    folder below the split (``labels: subfolders``), or the columns of a CSV (``path,<label>,…``)."""
    from stylecore.imaging import IMAGE_SUFFIXES

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    split_folders = (root / "train").is_dir() and (root / "val").is_dir()
    fraction = float(folder_option(source, "val_fraction"))
    label_name = folder_option(source, "label_name") or ("style" if source.role == "style" else "scene")
    table: dict[str, dict[str, str]] = {}
    if folder_option(source, "labels") == "csv":
        csv_path = root / folder_option(source, "csv")
        if not csv_path.is_file():
            raise CatalogueError(f"sources.{source.name}: the labels file {folder_option(source, 'csv')} is not in "
                                 f"the folder ({root})")
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise CatalogueError(f"{csv_path}: the first row must name the columns, starting with 'path'")
            for row in reader:
                table[row.pop("path").strip().lstrip("./")] = {k: v for k, v in row.items() if k and v}
    items = []
    for path in files:
        inside = path
        if split_folders:
            first, _, inside = path.partition("/")
            if first != split:
                continue
        elif _in_validation(path, fraction) != (split == "val"):
            continue
        labels: dict[str, Any] = {}
        if folder_option(source, "labels") == "subfolders" and "/" in inside:
            labels[label_name] = inside.split("/", 1)[0]
        elif folder_option(source, "labels") == "csv":
            labels.update(table.get(path, table.get(inside, {})))
        items.append(SourceItem(path, labels))
    return items
