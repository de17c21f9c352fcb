"""``dvc repro`` with one Ray shared by every stage: ``python -m pipelines.repro [dvc repro options]``.

Each Ray stage (train, sweep, stylize) run on its own starts a local Ray and stops it again, which on a
small machine costs more than the demo's training steps. This command starts one local Ray sized to the
machine (``pipelines.ray_session.ray_session``), runs ``dvc repro`` with ``RAY_ADDRESS`` naming it, so every
stage connects instead of starting its own, and shuts it down when DVC is done, also after a failure or
Ctrl-C. With ``RAY_ADDRESS`` already set (a cluster), it only runs ``dvc repro``: the stages connect to
that cluster as they always do. Each stage command forks from one process that has already imported torch, Ray
and MLflow (``pipelines.stage_server``; ``STYLECORE_STAGE_SERVER=off`` runs each in its own process), and a
plain run with every stage up to date (``dvc status``) starts no Ray at all. The stages' outputs and DVC's
bookkeeping are exactly those of a plain ``dvc repro``; only where Ray runs and how a stage starts differ.

The console is a line a stage, ``repro: [12/36] train@adain-gram (3 min 10 s in; this stage and the 24 after it
took 6 min 2 s last time)``, then the stage's own lines; DVC's bookkeeping lines come back with
``STYLECORE_LOG_LEVEL=INFO``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def dvc_command() -> list[str]:
    """The ``dvc`` next to this interpreter (a venv's), else the one on PATH, else ``python -m dvc``."""
    beside = os.path.join(os.path.dirname(sys.executable), "dvc")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("dvc")
    return [found] if found else [sys.executable, "-m", "dvc"]


def pipeline_stages(arguments: list[str]) -> list[str] | None:
    """Every stage ``dvc repro`` visits when it is given no target (the pipeline's stages, ``foreach`` expanded),
    for the progress lines' "k/N"; None when the arguments name targets or options that visit fewer."""
    if any(not a.startswith("-") or a in ("-s", "--single-item", "--downstream") for a in arguments):
        return None
    listed = subprocess.run([*dvc_command(), "stage", "list", "--name-only"], capture_output=True, text=True)
    return listed.stdout.split() if listed.returncode == 0 else None


#: seconds a stage's line waits for the stage's first line (a skipped stage's reason joins it); then it prints
HELD_LINE_S = 2.0


def run_dvc(arguments: list[str]) -> int:
    """Run ``dvc repro ARGUMENTS`` with its console shortened to a line a stage (``pipelines.console.StageProgress``);
    Ctrl-C reaches DVC (same process group), we wait. Each stage's run time is saved for the next run's ETA."""
    from pipelines.console import STAGE_TIMES, StageProgress, library_level, read_stage_times
    from stylecore.io import atomic_write_text

    env = dict(os.environ)
    # The stages are `python -m pipelines.…` commands: the interpreter that runs this must be the one they get.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"  # the stages write into our pipe: line by line, not in 8 KiB blocks at the end
    progress = StageProgress(pipeline_stages(arguments), read_stage_times(), verbose=library_level() <= logging.INFO)
    process = subprocess.Popen([*dvc_command(), "repro", *arguments], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # DVC gets the Ctrl-C and stops its stage
    lock, timer = threading.Lock(), None

    def show(lines: list[str]) -> None:
        for shown in lines:
            print(shown, flush=True)

    def let_out_held_line() -> None:  # a stage that stays silent still shows that it started
        with lock:
            show(progress.flush())

    try:
        for line in process.stdout:
            with lock:
                show(progress.feed(line))
                if timer is not None:
                    timer.cancel()
                if progress.pending is not None:
                    timer = threading.Timer(HELD_LINE_S, let_out_held_line)
                    timer.daemon = True
                    timer.start()
        status = process.wait()
    finally:
        if timer is not None:
            timer.cancel()
        signal.signal(signal.SIGINT, previous)
    print(progress.finish(status), flush=True)
    if Path(".dvc").is_dir():
        atomic_write_text(STAGE_TIMES, json.dumps(progress.timings, indent=1, sort_keys=True) + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from pipelines.stage_server import stage_server

    # The workers' and trials' lines in a stage's console are the project's own, one per rank or trial. Ray's log
    # deduplication (read when Ray is imported, so set before any stage starts) merged the sweep's trial lines, which
    # differ only in their ids, into one with "[repeated 2x across cluster]" and a two-line hint about itself.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Token authentication for the local Ray, chosen explicitly: what Ray 2.60 turns on by default for a new local
    # instance, minus the WARNING it then prints on every run ("enabled … set RAY_AUTH_MODE=disabled to opt out").
    # Ray reads the mode when it is imported: set here, before this process or a stage imports it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    started = time.monotonic()
    if not arguments and up_to_date():
        print(f"repro: every stage is up to date (dvc status); nothing ran and no Ray was started "
              f"({time.monotonic() - started:.1f} s)", flush=True)
        return 0
    # The stages fork from one process that has imported their libraries. It starts once Ray is up: Ray reads its
    # authentication token when it is imported, and a local instance's token exists only once the instance does.
    if os.environ.get("RAY_ADDRESS"):
        print(f"repro: the stages connect to RAY_ADDRESS={os.environ['RAY_ADDRESS']}", flush=True)
        with stage_server():
            return run_dvc(arguments)

    from pipelines.ray_session import ray_session

    with ray_session():  # sets RAY_ADDRESS for the life of the session; the stages inherit it
        print(f"repro: one local Ray for every stage at RAY_ADDRESS={os.environ['RAY_ADDRESS']} "
              f"(up in {time.monotonic() - started:.1f} s)", flush=True)
        with stage_server():
            status = run_dvc(arguments)
    print(f"repro: the shared Ray is shut down ({time.monotonic() - started:.0f} s in all)", flush=True)
    return status


def up_to_date() -> bool:
    """Whether a plain ``dvc repro`` would run no stage (``dvc status -q``, ~3 s): then no Ray need start (a local
    one costs 5–9 s to start and stop). Any doubt (changes, missing data, an error DVC will report) reads as no."""
    return subprocess.run([*dvc_command(), "status", "-q"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
