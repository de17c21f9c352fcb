"""Ray for every stage: one session per stage (a local instance sized to this machine, or the cluster
``RAY_ADDRESS`` names) and the decision of how many workers run on what (:func:`decide_scaling`)."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from pipelines.settings import RaySettings, TrainStageError


@dataclass(frozen=True)
class Scale:
    """How a Ray Train run is laid out: ``num_workers`` DDP ranks, each on a GPU (``gpus_per_worker``) or on one
    CPU running ``threads_per_worker`` torch threads; ``notice`` says what was capped, if anything."""

    num_workers: int
    use_gpu: bool
    gpus_per_worker: float = 1.0
    threads_per_worker: int = 1
    notice: str = ""

    @property
    def in_process(self) -> bool:
        """No worker processes: Ray Train's local mode runs the training in the stage's own process."""
        return self.num_workers == 0

    @property
    def ranks(self) -> int:
        """The data-parallel ranks: the global batch is ``ranks × batch_size``."""
        return max(1, self.num_workers)

    def tag(self) -> str:
        """The layout in a few words, for MLflow's ``workers`` tag: ``2 × GPU``, ``1 × CPU in-process``."""
        return f"{self.ranks} × {'GPU' if self.use_gpu else 'CPU'}{' in-process' if self.in_process else ''}"


# Ray Train's per-run actor that watches the nodes for preemption (spot instances); see ray_session.
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# How often Ray Train's controller polls its workers (default 2 s); a finished run is noticed at the next poll.
HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# The address of a local instance ray_session started (inherited by the stages of pipelines.repro): a
# RAY_ADDRESS equal to it is this machine, which no autoscaler can grow.
LOCAL_RAY = "STYLECORE_LOCAL_RAY"


def on_local_ray() -> bool:
    """Whether the Ray in use is a local instance that ray_session started, not a cluster the user named."""
    address = os.environ.get("RAY_ADDRESS")
    return not address or address == os.environ.get(LOCAL_RAY)


@contextmanager
def ray_session() -> Iterator[None]:
    """Connect to ``RAY_ADDRESS`` or start a local Ray sized to this machine; always shut down after.

    Local Ray gets explicit resources (every CPU, every visible GPU) so that the workers' requests are
    checked against what this machine really has. The dashboard stays on (bound to 127.0.0.1): Ray
    Train's controller monitoring queries the state API it serves, and users watch runs there.

    Every process of a local instance (raylet, agents, Train's placement-group cleaner, …) is started
    with ``RAY_ADDRESS`` naming that instance. Ray's internal state-API lookups otherwise fail with
    "Found multiple active Ray instances" whenever another Ray runs on the machine, and then nothing
    removes the placement groups of stopped Train runs: their CPUs stay reserved and the next run
    (a sweep's next trial) waits forever.
    """
    import ray

    from pipelines.console import quiet_libraries

    if ray.is_initialized():  # a caller (a test, a notebook) owns the session
        yield
        return
    level = quiet_libraries()
    address = os.environ.get("RAY_ADDRESS")
    saved = {key: os.environ.get(key) for key in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT", PREEMPTION_WATCHER,
                                                  HEALTH_CHECK_INTERVAL, LOCAL_RAY)}
    watchdog = None
    if address:
        shared = address == os.environ.get(LOCAL_RAY)
        if not shared or level <= logging.INFO:  # `pipelines.repro` announced its shared Ray once, for every stage
            where = "the shared local Ray" if shared else "the cluster"
            print(f"ray: connecting to {where} at RAY_ADDRESS={address}", flush=True)
        ray.init(address=address, logging_level=level)
    else:
        import socket

        import torch

        cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
        with socket.socket() as probe:  # a free port for this instance's GCS, known before it starts
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Loopback: the instance advertises 127.0.0.1, and the processes it starts reach it there. Some of Ray's
        # gRPC servers still listen on every interface, so every request must carry the instance's token: Ray's
        # token authentication, on by default for local instances since Ray 2.60 (RAY_AUTH_MODE; it is read when
        # ray is imported, so it cannot be switched here). The test suite checks that a wrong token is refused.
        address = f"127.0.0.1:{port}"
        os.environ.update(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=address, **{LOCAL_RAY: address})
        if os.environ.get("RAY_AUTH_MODE", "token") != "token":
            print(f"ray: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: this instance accepts requests without a token "
                  "from anyone who can reach this machine", flush=True)
        # A local instance has no node that can be preempted: spare every Train run the watcher actor (one more
        # process to start while the workers start) unless the user asked for it.
        os.environ.setdefault(PREEMPTION_WATCHER, "0")
        # Polls are cheap here (no network between controller and workers): at Ray's 2 s every run ended 1–2 s
        # after its last step, ~4 s a stage of the demo (the workers and the controller inherit the raylet's env).
        os.environ.setdefault(HEALTH_CHECK_INTERVAL, "0.25")
        print(f"ray: starting a local instance with {cpus} CPUs and {gpus} GPUs at {os.environ['RAY_ADDRESS']} "
              "(set RAY_ADDRESS to use a cluster)", flush=True)
        watchdog = start_watchdog(address)
        try:
            # address="local": a new instance, never a cluster some earlier `ray start` left behind.
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=True,
                     dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", logging_level=level)
        except BaseException:
            _restore_environment(saved)
            watchdog.stdin.close()
            raise
    try:
        yield
    finally:
        ray.shutdown()
        _restore_environment(saved)
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog ends what ray.shutdown left, then exits


def start_watchdog(address: str):
    """:mod:`pipelines.ray_watchdog` for the local instance at ``address``: it outlives a killed driver (its own
    session) and stops the instance's leftover processes when the driver's pipe closes."""
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "pipelines.ray_watchdog", address], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[1]))


def _restore_environment(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def scaling(settings: RaySettings, where: str = "train.ray", announce: bool = True) -> Scale:
    """Workers, GPU use and threads for the cluster at hand (see :func:`decide_scaling`), announced in one line
    (``announce=False``: the caller says it in a line of its own, :func:`describe_scale`)."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0)
    scale = decide_scaling(settings, ray.cluster_resources(), local=on_local_ray(), where=where,
                           reachable=autoscaler_reach(), nodes=max(1, nodes))
    if announce:
        print(f"ray: {describe_scale(scale)}", flush=True)
    return scale


def describe_scale(scale: Scale) -> str:
    if scale.in_process:
        where = "GPU" if scale.use_gpu else f"CPU ({scale.threads_per_worker} torch thread(s))"
        layout = f"Ray Train in this process (local mode) on {where}"
    else:
        device = f"GPU ({scale.gpus_per_worker:g} each, NCCL)" if scale.use_gpu else \
            f"CPU ({scale.threads_per_worker} torch thread(s) each, gloo)"
        layout = f"{scale.num_workers} Ray Train worker(s) on {device}"
    return layout + (f"; {scale.notice}" if scale.notice else "")


def failure_heading(scale: Scale, max_failures: int, key: str) -> str:
    """How a failed training run ended, to open the stage's error: restarted workers, or none to restart."""
    if scale.in_process:
        return "training in the stage's process (Ray Train's local mode: no worker to restart) failed"
    return f"Ray Train failed after up to {max_failures} restarts ({key})"


def autoscaler_reach() -> dict[str, float]:
    """The most of each resource the cluster's autoscaler could bring up (its node types' ``max_workers`` ×
    resources, as Ray Train itself reads them), or {} without an autoscaler (a local Ray, a fixed cluster). Ray's
    private state API (Ray is pinned); any failure reads as no autoscaler."""
    try:
        from ray._private.state import state

        return {key: float(value) for key, value in (state.get_max_resources_from_cluster_config() or {}).items()}
    except Exception:  # noqa: BLE001 - a missing or changed private API must not stop a stage
        return {}


def gpus_in_reach(resources: Mapping[str, float], reachable: Mapping[str, float] | None) -> float:
    """GPUs up now, or the most the autoscaler's node types can add when that is more (a GPU node type with
    ``min_workers: 0`` has none up until something asks for one)."""
    return max(float(resources.get("GPU", 0)), float((reachable or {}).get("GPU", 0)))


def decide_scaling(settings: RaySettings, resources: Mapping[str, float], local: bool,
                   where: str = "train.ray", reachable: Mapping[str, float] | None = None, nodes: int = 1) -> Scale:
    """Workers, GPU use and threads from ``train.ray`` settings and the cluster's resources.

    ``use_gpu: auto`` trains on GPUs whenever the cluster has any, or its autoscaler's node types can add some
    (``reachable``, :func:`autoscaler_reach`: the request for GPU workers is what brings those nodes up). With
    fewer GPUs in reach than workers, the workers are capped at them (said in ``notice``) rather than all of them
    falling back to CPU. On a cluster the user named (``local=False``) without an autoscaler's figures, GPUs it
    lacks may still come, so nothing is refused there. ``use_gpu: true`` on a machine without GPUs, more workers
    than CPUs, and several workers sharing GPUs (NCCL refuses two ranks on one GPU) are errors naming the key.

    ``workers: auto`` is one DDP rank per GPU in reach on GPUs, and one per node (``nodes``: those with CPUs) on
    a cluster's CPUs, where a node's cores serve its one rank as torch threads: two ranks on one machine only add a
    gradient all-reduce and a second process to start (a demo train stage on 2 vCPUs: 27.7 s with 2 workers, 23.7 s
    with 1). On this machine's own Ray without GPUs it is 0, Ray Train's local mode: the one rank runs in the
    stage's process, which has imported torch already (a demo train stage: about 8 s instead of 20 s); workers: 1
    asks for a worker process that Ray restarts after a crash (``max_failures``). ``workers: 0`` is local mode
    anywhere.
    """
    per_gpu = float(settings.gpus_per_worker)
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    in_reach = gpus_in_reach(resources, reachable)
    use_gpu, notice = settings.use_gpu, ""
    if use_gpu == "auto":
        use_gpu = in_reach > 0
    workers = settings.workers
    if workers == "auto":
        # fractions of a GPU are for single-rank sweep trials: DDP ranks never share one (below)
        workers = (max(1, int(in_reach // per_gpu)) if per_gpu >= 1 else 1) if use_gpu else 0 if local \
            else max(1, nodes)
    if settings.use_gpu == "auto":
        if use_gpu and (local or reachable) and in_reach < workers * per_gpu:
            capped = max(1, int(in_reach // per_gpu))
            what = "this machine has" if local else "the cluster's node types reach"
            notice = (f"{where}.workers={workers} capped at {capped}: {what} {in_reach:g} GPU(s) and each worker "
                      f"takes {per_gpu:g} (the global batch is {capped} × batch_size)")
            workers = capped
        if use_gpu and gpus == 0:
            notice = "; ".join(filter(None, [notice, f"no GPU node is up yet: the autoscaler adds them for these "
                                                     f"workers (its node types reach {in_reach:g} GPU(s))"]))
    if use_gpu and workers > 1 and per_gpu < 1:
        raise TrainStageError(f"{where}.gpus_per_worker={per_gpu:g} with {workers} workers would put two DDP ranks on "
                              "one GPU, which NCCL refuses ('Duplicate GPU detected'); set gpus_per_worker: 1, or "
                              "workers: 1 (fractions suit single-worker sweep trials)")
    if local:  # a cluster the user named may add nodes on demand; this machine cannot
        ranks = max(1, workers)  # in-process (0) still trains on one GPU
        if use_gpu and gpus < ranks * per_gpu:
            raise TrainStageError(f"{where} asks for {ranks} workers × {per_gpu} GPU but Ray has {gpus:g} GPUs; "
                                  f"lower {where}.workers, or set {where}.use_gpu: false (or auto)")
        if cpus < workers:
            raise TrainStageError(f"{where}.workers={workers} needs {workers} CPUs but Ray has {cpus:g}; lower "
                                  f"{where}.workers (Ray would wait for resources forever)")
    threads = settings.threads_per_worker
    if threads == "auto":
        threads = max(1, int(cpus // max(1, workers))) if cpus else 1
    return Scale(workers, bool(use_gpu), per_gpu, int(threads), notice)


def release_train_reservations() -> int:
    """Cancel every Ray Train run's reservation with Ray Data's autoscaling coordinator; returns how many.

    Ray Train V2 reserves its workers' CPUs and GPUs there (requester ``train-<run id>``) and cancels the
    reservation when its controller shuts down. A Tune trial that ASHA stops is killed instead
    (ray-project/ray#54305), so its reservation stays for 180 s. On a shared Ray, the next Ray Data pipeline sees
    no free CPU meanwhile: after the demo's sweep, the optimize stage ran one actor of its two (68 s instead of about
    35). A live run re-sends its request every 20 s, so cancelling one costs it nothing lasting. This reaches into
    Ray's private API (Ray is pinned); any failure leaves the reservations as they were.
    """
    try:
        import ray
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator)

        coordinator = get_or_create_autoscaling_coordinator()
        held = ray.get(coordinator.__ray_call__.remote(
            lambda actor: [str(key) for key in actor._ongoing_reqs if str(key).startswith("train-")]), timeout=10)
        for requester in held:
            ray.get(coordinator.cancel_request.remote(requester), timeout=10)
        return len(held)
    except Exception:  # noqa: BLE001 - an optimisation of scheduling: never a reason to fail a stage
        return 0
