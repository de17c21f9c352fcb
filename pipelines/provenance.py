"""Provenance of a run: the code's commit and the DVC hashes of the data it read (what MLflow runs are tagged with)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stylecore.shards import is_remote, read_manifest


#: MLflow's own run tags for the code a run came from (what the UI's Source column shows)
GIT_COMMIT, GIT_DIRTY = "mlflow.source.git.commit", "mlflow.source.git.dirty"
SOURCE_NAME, SOURCE_TYPE = "mlflow.source.name", "mlflow.source.type"


def git_state(root: Path) -> dict[str, str]:
    """The commit and whether tracked files differ from it (``unknown`` outside git), as MLflow's standard source
    tags. dvc.lock does not count: ``dvc repro`` rewrites it after every stage, so it would mark every later stage
    dirty."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock"))
    except (OSError, subprocess.CalledProcessError):
        return {GIT_COMMIT: "unknown", GIT_DIRTY: "unknown"}
    return {GIT_COMMIT: commit, GIT_DIRTY: str(dirty).lower()}


def source_tags(root: Path, module: str) -> dict[str, str]:
    """MLflow's source tags of a stage run: the stage's file (``pipelines/train.py``) run as a job, at the commit
    and dirtiness of :func:`git_state`."""
    return {SOURCE_NAME: f"pipelines/{module}.py", SOURCE_TYPE: "JOB", **git_state(root)}


@dataclass(frozen=True)
class ShardInput:
    """A shard folder a run read, as MLflow records a dataset input."""

    name: str  # the folder's name: <source>-<split>
    digest: str  # DVC's hash of the folder (dvc.lock), else a hash of its manifest
    uri: str  # where the run read it: the local folder's file URI, or its mirror's URI (storage.shards)
    samples: int | None  # from its manifest.json
    shards: int | None
    versioned: bool  # whether the digest is DVC's


def shard_inputs(lock_path: Path, folders: list[str], root: Path,
                 read_from: list[str] | None = None) -> list[ShardInput]:
    """Each shard folder with DVC's hash from the stage outputs recorded in dvc.lock and its manifest's counts;
    ``read_from`` (same order): where the run read each one, when not the local folder."""
    import yaml

    outs: dict[str, str] = {}
    if lock_path.is_file():
        for stage in (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                outs[str(out.get("path"))] = str(out.get("md5"))
    inputs = []
    for index, folder in enumerate(folders):
        manifest = read_manifest(folder) or {}
        shards = manifest.get("shards")
        relative = os.path.relpath(Path(folder).resolve(), root.resolve())
        md5 = outs.get(relative)
        digest = md5 or "manifest-" + hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:24]
        location = read_from[index] if read_from else str(folder)
        inputs.append(ShardInput(Path(folder).name, digest,
                                 location if is_remote(location) else Path(location).resolve().as_uri(),
                                 sum(int(s["samples"]) for s in shards) if shards else None,
                                 len(shards) if shards else None, md5 is not None))
    return inputs


def data_tags(inputs: list[ShardInput]) -> dict[str, str]:
    """``{"data.<folder>": md5}`` run tags (what the registry copies onto a model version)."""
    return {f"data.{item.name}": item.digest if item.versioned else "not in dvc.lock (not produced by dvc repro)"
            for item in inputs}
