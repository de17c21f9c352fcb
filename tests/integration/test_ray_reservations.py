"""A Ray Train run killed with its Tune trial leaves its CPUs reserved with Ray Data's autoscaling coordinator for
180 s (ray-project/ray#54305); the sweep stage releases such reservations so the next Ray Data stage is not starved."""

import pytest

pytest.importorskip("ray")


def test_a_dead_train_runs_reservation_is_released_and_ray_data_gets_the_cpus_back(local_ray):
    import ray
    from ray.data._internal.cluster_autoscaler.base_autoscaling_coordinator import ResourceRequestPriority
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator)

    from pipelines.ray_session import release_train_reservations

    coordinator = get_or_create_autoscaling_coordinator()
    cpus = ray.cluster_resources()["CPU"]
    # what a killed trial leaves: its Train run's workers reserved at high priority, for minutes
    ray.get(coordinator.request_resources.remote("train-killed-trial", [{"CPU": 1.0}] * int(cpus), 180,
                                                 priority=ResourceRequestPriority.HIGH))
    ray.get(coordinator.request_resources.remote("data-probe", [{"CPU": 0.5}], 60, request_remaining=["CPU"]))

    def probe_cpus() -> float:
        reserved = ray.get(coordinator.get_reserved_resources.remote("data-probe", recompute=True))
        return sum(bundle.get("CPU", 0) for bundle in reserved.values())

    try:
        assert probe_cpus() < 0.5  # starved: the dead run holds every CPU
        assert release_train_reservations() == 1
        assert probe_cpus() >= cpus - 0.5  # the CPUs are Ray Data's again (its own request is left alone)
        assert release_train_reservations() == 0
    finally:
        ray.get(coordinator.cancel_request.remote("data-probe"))
        ray.get(coordinator.cancel_request.remote("train-killed-trial"))
