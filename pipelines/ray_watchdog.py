"""Stops what a killed driver's local Ray leaves running.

``pipelines.ray_session.ray_session`` starts one of these beside every local Ray instance, in its own session, with
a pipe from the driver on its standard input. The pipe closes when the driver exits, however it exits
(``kill -9`` included). The watchdog then waits a few seconds for Ray's own clean-up, and ends every Ray process
of that instance that is still running: Ray's reaper stops the raylet and the GCS with the driver, but their
agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) were left behind, re-parented to init, forever.

A process belongs to the instance when its environment names the instance's address in
``STYLECORE_LOCAL_RAY`` (ray_session sets it before Ray starts, so every Ray process inherits it) and it is a
Ray process (``ray::…`` workers and agents, or a program from Ray's package); the stages of a shared instance,
DVC and anything else are left alone.

    python -m pipelines.ray_watchdog 127.0.0.1:PORT   # stdin: the driver's pipe
"""

from __future__ import annotations

import os
import sys
import time

GRACE_SECONDS = 3.0


def _is_ray_process(process) -> bool:
    name = process.info.get("name") or ""
    command = " ".join(process.info.get("cmdline") or [])
    return name.startswith(("ray::", "ray-dashboard", "raylet", "gcs_server")) or command.startswith("ray::") \
        or "/site-packages/ray/" in command


def leftovers(address: str) -> list:
    """The Ray processes of the local instance at ``address`` still running (this process excluded)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get("STYLECORE_LOCAL_RAY") == address and _is_ray_process(process):
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def stop(address: str) -> int:
    """SIGTERM the leftovers of ``address``, then SIGKILL what survives; returns how many there were."""
    import psutil

    processes = leftovers(address)
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=GRACE_SECONDS)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return len(processes)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdin.buffer.read()  # returns when the driver's end of the pipe closes: the driver has exited
    time.sleep(GRACE_SECONDS)  # Ray's own shutdown or reaper goes first
    stop(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
