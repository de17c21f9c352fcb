"""Fixtures shared by the integration tests."""

import os

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs, no dashboard) for the whole test session.

    Never a Ray per module: shutting Ray down and starting it again in one process while background
    threads (Ray Data's executor, Train's pollers) still hold core-worker state can crash the
    interpreter (ray-project/ray#31145); CI saw a segfault at exit after every test had passed.
    """
    ray = pytest.importorskip("ray")
    from pipelines.train import PREEMPTION_WATCHER

    # What pipelines.train.ray_session does for every local instance: no preemption watcher (nothing to preempt).
    os.environ.setdefault(PREEMPTION_WATCHER, "0")
    # address="local": always a new instance, never one a `ray start` (or a killed run's stale
    # /tmp/ray/ray_current_cluster) points at.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
