"""cluster.yaml validates against the schema Ray's autoscaler ships, and it and the KubeRay RayJob
pin the project's Ray version and the tested torch."""

import re
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_the_autoscaler_schema_and_its_checks():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_cluster()))  # what `ray up` runs first
    broken = _cluster()
    broken["available_node_types"]["gpu_spot"]["min_worker"] = 1  # a typo the schema must catch
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_the_head_is_on_demand_and_runs_no_trainers_while_gpu_workers_may_be_spot():
    config = _cluster()
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"] and head["max_workers"] == 0
    assert nodes["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in nodes["gpu_on_demand"]["node_config"]
    assert sum(n.get("min_workers", 0) for n in nodes.values()) <= config["max_workers"]


def test_images_pin_the_projects_ray_version_and_setup_installs_the_tested_torch():
    version = ray.__version__
    assert _cluster()["docker"]["image"].startswith(f"rayproject/ray:{version}-")
    torch_pins = re.search(r"^TORCH\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    setup = " ".join(_cluster()["setup_commands"])
    assert all(pin in setup for pin in torch_pins) and "[pipeline]" in setup

    job = yaml.safe_load((REPO / "deploy/rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == version
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images and all(image.startswith(f"rayproject/ray:{version}-") for image in images)
    workers = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert workers["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert workers["terminationGracePeriodSeconds"] > 30  # Ray's drain timeout on SIGTERM
    assert "dvc repro" in job["spec"]["entrypoint"]
