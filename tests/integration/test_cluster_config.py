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


def test_nothing_but_ssh_from_one_cidr_is_open_to_the_outside():
    config = _cluster()
    assert config["provider"]["security_group"]["GroupName"]  # a group created first, with no world-open SSH
    head = " ".join(config["head_start_ray_commands"] + config["head_setup_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert all("RAY_AUTH_MODE=token" in c for c in commands if "ray start" in c)
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_the_cluster_security_group_admits_ssh_from_one_cidr_only(monkeypatch):
    """Against moto's EC2 on 127.0.0.1: the group cluster.yaml names, created with SSH from the given CIDR and
    every port between its members, nothing from 0.0.0.0/0; a world CIDR and a world-open group are refused."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from pipelines.cluster_security import ClusterSecurityError, ensure_group, main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        assert main(["--cidr", "203.0.113.7/32", "--cluster", str(REPO / "cluster.yaml"), "--endpoint-url", endpoint]) == 0
        ec2 = boto3.client("ec2", region_name="us-west-2", endpoint_url=endpoint, **credentials)
        name = _cluster()["provider"]["security_group"]["GroupName"]
        [group] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        ssh = [r for r in group["IpPermissions"] if r.get("FromPort") == 22]
        assert [ip["CidrIp"] for r in ssh for ip in r["IpRanges"]] == ["203.0.113.7/32"]
        everything = [r for r in group["IpPermissions"] if r["IpProtocol"] == "-1"]
        assert [pair["GroupId"] for r in everything for pair in r["UserIdGroupPairs"]] == [group["GroupId"]]
        assert not any(ip["CidrIp"] == "0.0.0.0/0" for r in group["IpPermissions"] for ip in r.get("IpRanges", []))
        assert main(["--cidr", "203.0.113.7/32", "--cluster", str(REPO / "cluster.yaml"),
                     "--endpoint-url", endpoint]) == 0  # run twice: the same group, untouched
        with pytest.raises(ClusterSecurityError, match="admits every address"):
            ensure_group(ec2, name, "0.0.0.0/0")
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        with pytest.raises(ClusterSecurityError, match="already admits 0.0.0.0/0"):
            ensure_group(ec2, name, "203.0.113.7/32")
    finally:
        server.terminate()
        server.wait()
