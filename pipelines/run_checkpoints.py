"""Reporting, keeping and resuming a Ray Train run's checkpoints, with worker processes or in the stage's process.

With worker processes, ``ray.train.report`` hands rank 0's checkpoint to Ray Train, which copies it to
``<storage_path>/<name>/`` and gives the newest back to a restarted or re-run worker group
(``ray.train.get_checkpoint``). In Ray Train's local mode (``ScalingConfig(num_workers=0)``: the training function
runs in the stage's own process, so no worker process starts and imports torch — about 12 s of a demo train
stage's 20 s) Ray keeps only the last reported checkpoint object in memory: nothing in storage, nothing to resume
from. For that mode the checkpoints are kept here, where and as Ray Train keeps a worker group's
(``<storage_path>/<name>/step-NNNNNN/``, the newest ``keep``), each marked complete once every file is written, so
that a stage re-run after a crash resumes as it does with workers. A sweep trial in this mode trains in its Tune
trial actor and reports to Tune, with the kept checkpoint's path, as ``TuneReportCallback`` does for a worker group.
Every training worker function reports and resumes through :func:`report` and :func:`resumed_directory`, whichever
mode runs it.
"""

from __future__ import annotations

import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

#: the loop-config key :func:`pipelines.ray_training.torch_trainer` sets for a run in the stage's process:
#: ``{"folder": <storage_path>/<name>, "keep": n, "use_gpu": bool, "tune": bool}`` (``tune``: a sweep trial, whose
#: reports go to Ray Tune instead of Ray Train)
IN_PROCESS = "in_process_run"
#: the empty file beside ``step-NNNNNN/`` that says every file of it was written (a crash mid-copy leaves none)
COMPLETE = ".complete"
_STEP = re.compile(r"step-(\d+)")


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def device(config: Mapping[str, Any]) -> torch.device:
    """The run's torch device: Ray Train's for a worker; in the stage's process, the first GPU when the run asked
    for GPUs (Ray assigns none to a driver, so Ray Train's lookup would answer CPU), else the CPU."""
    run = config.get(IN_PROCESS)
    if run is None:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", torch.cuda.current_device()) if run["use_gpu"] else torch.device("cpu")


def world_rank(config: Mapping[str, Any]) -> int:
    """This rank's place in the run: 0 in the stage's (or trial's) own process, else Ray Train's world rank."""
    if IN_PROCESS in config:
        return 0
    import ray.train

    return ray.train.get_context().get_world_rank()


def report(config: Mapping[str, Any], metrics: dict[str, Any], step: int,
           save: Callable[[Path], Path] | None = None) -> None:
    """``ray.train.report`` of ``metrics`` at ``step``; rank 0 passes ``save``, which writes a checkpoint into the
    folder it is given and returns the checkpoint's path. Every rank reports at the same steps (Ray requires equal
    report counts)."""
    import ray.train
    from ray.train import Checkpoint

    run = config.get(IN_PROCESS)
    with tempfile.TemporaryDirectory() as building:
        written = save(Path(building)) if save is not None else None
        if run is None:  # Ray Train copies the checkpoint to its storage within the report
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(written)) if written else None,
                             checkpoint_dir_name=step_name(step) if written else None)
            return
        checkpoint = keep(written, run["folder"], step, run["keep"]) if written else None
    if not run.get("tune"):
        ray.train.report(metrics, checkpoint=checkpoint)
        return
    # A sweep trial (Ray refuses ray.train's API inside one): to Tune, with the kept checkpoint's path, as
    # TuneReportCallback passes on a worker group's reports
    from ray import tune
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    tune.report({**metrics, **({CHECKPOINT_PATH_KEY: checkpoint.path} if checkpoint is not None else {})})


def keep(source: Path, folder: str, step: int, newest: int):
    """Copy the checkpoint folder ``source`` to ``folder/step-NNNNNN`` (a local folder or a URI), mark it complete,
    and delete all but the ``newest`` complete ones (and what a crash left half-written); returns it as a Ray
    Checkpoint, the one ``Result.checkpoint`` then names."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem
    from ray.train import Checkpoint

    from pipelines.storage import filesystem

    fs, base = filesystem(folder)
    target = f"{base}/{step_name(step)}"
    if fs.exists(target):
        fs.rm(target, recursive=True)
    fs.makedirs(target, exist_ok=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = file.relative_to(source).as_posix()
        fs.makedirs(f"{target}/{relative}".rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(file), f"{target}/{relative}")
    fs.pipe_file(target + COMPLETE, b"")
    complete = _complete_steps(fs, base)
    for old in complete[:-newest]:
        fs.rm(f"{base}/{step_name(old)}", recursive=True)
        fs.rm_file(f"{base}/{step_name(old)}{COMPLETE}")
    for entry in fs.ls(base, detail=False):  # a folder without its mark: a copy a crash cut short
        match = _STEP.fullmatch(entry.rstrip("/").rsplit("/", 1)[-1])
        if match and int(match.group(1)) not in complete:
            fs.rm(entry, recursive=True)
    return Checkpoint(target, filesystem=PyFileSystem(FSSpecHandler(fs)))


def _complete_steps(fs, base: str) -> list[int]:
    if not fs.exists(base):
        return []
    names = {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(base, detail=False)}
    return sorted(int(match.group(1)) for name in names
                  if (match := _STEP.fullmatch(name)) and name + COMPLETE in names)


@contextmanager
def resumed_directory(config: Mapping[str, Any]) -> Iterator[Path | None]:
    """The local folder of the checkpoint this run resumes from, or None for a fresh start: Ray Train's
    (``ray.train.get_checkpoint``) with workers; in the stage's process, the newest complete one kept by
    :func:`keep` (downloaded first from a URI)."""
    run = config.get(IN_PROCESS)
    if run is None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)
        return
    from pipelines.storage import download_tree, filesystem
    from stylecore.shards import is_remote

    fs, base = filesystem(run["folder"])
    complete = _complete_steps(fs, base)
    if not complete:
        yield None
        return
    newest = f"{base}/{step_name(complete[-1])}"
    if not is_remote(run["folder"]):
        yield Path(newest)
        return
    with tempfile.TemporaryDirectory() as local:
        download_tree(newest, Path(local), like=run["folder"])
        yield Path(local)
