"""Where the Ray workers find data and keep state: local folders or any fsspec URI (params.yaml: storage).

On one machine, or on a cluster whose nodes share this repository's filesystem, every location is a
folder of the repository. On a cluster without one, ``storage.shards`` and ``storage.checkpoints`` name
URIs (``s3://bucket/stylecore/shards``, ``gs://…``): the shard stage mirrors each shard folder it
writes to ``<storage.shards>/<source>-<split>/``, the training and stylization workers read the shards
from there, and Ray Train / Tune keep their checkpoints under ``<storage.checkpoints>``. DVC's outputs
stay in the repository on the machine that runs ``dvc repro``; these are only what the workers share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipelines.sources import CatalogueError
from stylecore.shards import MANIFEST, is_remote, read_manifest

def settings(params: Mapping[str, Any]) -> dict[str, str | None]:
    """params.yaml's ``storage`` section, checked (:class:`pipelines.settings.StorageSettings`)."""
    from pipelines.settings import read
    from stylecore.config import to_dict

    return to_dict(read(params, "storage"))


def filesystem(location: str):
    """(fsspec filesystem, path inside it) of a URI or local path; names the missing package if needed."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except ImportError as error:  # e.g. s3fs / gcsfs not installed
        raise CatalogueError(f"{location}: {error}; install the fsspec implementation of this scheme "
                             "(s3://: pip install s3fs, gs://: pip install gcsfs)") from None


def join(base: str | Path, *parts: str) -> str:
    """``base/part/…`` for a URI (forward slashes kept) or an absolute local path."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(str(base)).resolve().joinpath(*parts))


def location(value: str | Path, root: Path) -> str:
    """A configured location as a URI or an absolute path (relative paths are under the repository ``root``)."""
    text = str(value)
    if is_remote(text):
        return text
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    return str(path if path.is_absolute() else (root / path).resolve())


def ray_storage(params: Mapping[str, Any], root: Path, kind: str, override: str | Path | None = None) -> str:
    """Where Ray Train / Tune keep the checkpoints of unfinished ``kind`` runs (train, sweeps): ``override``,
    else ``<storage.checkpoints>/<kind>``, else ``ray_results/<kind>`` in the repository."""
    if override is not None:
        return location(override, root)
    return join(location(settings(params)["checkpoints"] or "ray_results", root), kind)


def remove_tree(target: str) -> None:
    """Delete a folder (local or URI) if it exists; a missing one is fine."""
    if is_remote(target):
        fs, path = filesystem(target)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    import shutil

    shutil.rmtree(target, ignore_errors=True)


def download_tree(path: str, destination: Path, like: str) -> None:
    """Copy a folder that Ray names by its path inside the filesystem of ``like`` (a checkpoint under the
    storage ``like``) into the local ``destination``."""
    if is_remote(like):
        fs, _ = filesystem(like)
        fs.get(path.rstrip("/") + "/", str(destination), recursive=True)
        return
    import shutil

    shutil.copytree(path, destination, dirs_exist_ok=True)


def mirror_shards(folder: Path, base: str) -> str:
    """Copy a shard folder to ``<base>/<folder name>/``: the old copy removed, the tars first and the
    manifest last, so a reader that finds the manifest finds every shard it lists."""
    target = join(base, folder.name)
    fs, path = filesystem(target)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    for file in files:
        fs.put_file(str(file), f"{path}/{file.name}")
    fs.put_file(str(folder / MANIFEST), f"{path}/{MANIFEST}")
    return target


def worker_shards(params: Mapping[str, Any], local: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The shard folders as the Ray workers should read them: ``local`` unchanged without
    ``storage.shards``, else their mirrors, each checked to be the copy of the local folder (same manifest)."""
    base = settings(params)["shards"]
    if base is None:
        return {role: list(folders) for role, folders in local.items()}
    mirrored: dict[str, list[str]] = {}
    for role, folders in local.items():
        mirrored[role] = []
        for folder in folders:
            remote = join(base, Path(folder).name)
            if read_manifest(remote) != read_manifest(folder):
                raise CatalogueError(
                    f"{remote} is not a copy of {folder} (storage.shards): its manifest is missing or differs; "
                    f"re-run the shard stage (`dvc repro -f shard@{Path(folder).name}`) to mirror it")
            mirrored[role].append(remote)
    return mirrored

