"""Provenance of a run: the code's commit and the DVC hashes of the data it read (what MLflow runs are tagged with)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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


def data_hashes(lock_path: Path, folders: list[str], root: Path) -> dict[str, str]:
    """``{"data.<folder>": md5}`` for each shard folder, from the stage outputs recorded in dvc.lock."""
    import yaml

    outs: dict[str, str] = {}
    if lock_path.is_file():
        for stage in (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                outs[str(out.get("path"))] = str(out.get("md5"))
    hashes = {}
    for folder in folders:
        relative = os.path.relpath(Path(folder).resolve(), root.resolve())
        hashes[f"data.{Path(folder).name}"] = outs.get(relative, "not in dvc.lock (not produced by dvc repro)")
    return hashes
