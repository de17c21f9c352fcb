"""Fixtures shared by the integration tests."""

import os
import sys

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs, no dashboard) for the whole test session.

    Never a Ray per module: shutting Ray down and starting it again in one process while background
    threads (Ray Data's executor, Train's pollers) still hold core-worker state can crash the
    interpreter (ray-project/ray#31145); CI saw a segfault at exit after every test had passed.
    """
    ray = pytest.importorskip("ray")
    from pipelines.ray_session import PREEMPTION_WATCHER

    # What pipelines.ray_session.ray_session does for every local instance: no preemption watcher (nothing to preempt).
    os.environ.setdefault(PREEMPTION_WATCHER, "0")
    # address="local": always a new instance, never one a `ray start` (or a killed run's stale
    # /tmp/ray/ray_current_cluster) points at.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def tracking_uri_restored():
    """Each test leaves MLflow's tracking URI as it found it.

    ``mlflow.set_tracking_uri`` (the stages call it, and so do tests) also exports ``MLFLOW_TRACKING_URI``, so one
    test's store used to become every later test's default (``pipelines.tracking.default_tracking_uri`` reads the
    variable as the user's choice): the Ray Train fault test, run after the train-stage tests, wrote into another
    test's SQLite store and failed there with "attempt to write a readonly database".
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(before)  # None unsets the variable too
    elif before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
