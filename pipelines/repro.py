"""``dvc repro`` with one Ray shared by every stage: ``python -m pipelines.repro [dvc repro options]``.

Each Ray stage (train, sweep, stylize) run on its own starts a local Ray and stops it again, which on a
small machine costs more than the demo's training steps. This command starts one local Ray sized to the
machine (``pipelines.ray_session.ray_session``), runs ``dvc repro`` with ``RAY_ADDRESS`` naming it, so every
stage connects instead of starting its own, and shuts it down when DVC is done, also after a failure or
Ctrl-C. With ``RAY_ADDRESS`` already set (a cluster), it only runs ``dvc repro``: the stages connect to
that cluster as they always do. The stages' outputs and DVC's bookkeeping are exactly those of a plain
``dvc repro``; only where Ray runs differs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time


def dvc_command() -> list[str]:
    """The ``dvc`` next to this interpreter (a venv's), else the one on PATH, else ``python -m dvc``."""
    beside = os.path.join(os.path.dirname(sys.executable), "dvc")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("dvc")
    return [found] if found else [sys.executable, "-m", "dvc"]


def run_dvc(arguments: list[str]) -> int:
    """Run ``dvc repro ARGUMENTS`` in the foreground; Ctrl-C reaches DVC (same process group), we wait."""
    env = dict(os.environ)
    # The stages are `python -m pipelines.…` commands: the interpreter that runs this must be the one they get.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    process = subprocess.Popen([*dvc_command(), "repro", *arguments], env=env)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # DVC gets the Ctrl-C and stops its stage
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if os.environ.get("RAY_ADDRESS"):
        print(f"repro: the stages connect to RAY_ADDRESS={os.environ['RAY_ADDRESS']}", flush=True)
        return run_dvc(arguments)

    from pipelines.ray_session import ray_session

    started = time.monotonic()
    with ray_session():  # sets RAY_ADDRESS for the life of the session; the stages inherit it
        print(f"repro: one local Ray for every stage at RAY_ADDRESS={os.environ['RAY_ADDRESS']} "
              f"(up in {time.monotonic() - started:.1f} s)", flush=True)
        status = run_dvc(arguments)
    print(f"repro: dvc repro exited with status {status} after {time.monotonic() - started:.0f} s; "
          "the shared Ray is shut down", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
