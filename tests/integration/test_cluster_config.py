"""The cluster manifests work as written: cluster.yaml (and the shared-filesystem file written from it) pass the
schema and checks Ray's autoscaler runs before `ray up`; deploy/rayjob.yaml passes KubeRay's own RayJob schema
(tests/schemas/kuberay, strict: an unknown field is an error, as `kubectl apply` makes it) and its parts name
each other; images pin the project's Ray version and the tested torch; the AWS resources cluster.yaml names are
created by pipelines.cluster_security against moto's EC2 and IAM on 127.0.0.1; the RayJob's entrypoint and its
MLflow server run here as the manifest starts them."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
RAYJOB_SCHEMA = REPO / "tests/schemas/kuberay/ray.io_rayjobs.v1.schema.json"


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _manifests() -> dict[str, dict]:
    """deploy/rayjob.yaml's documents by kind/name."""
    docs = [doc for doc in yaml.safe_load_all((REPO / "deploy/rayjob.yaml").read_text()) if doc]
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


def _rayjob() -> dict:
    [job] = [doc for key, doc in _manifests().items() if key.startswith("RayJob/")]
    return job


def _pod_templates(manifests: dict[str, dict]) -> list[dict]:
    templates = []
    for doc in manifests.values():
        if doc["kind"] == "RayJob":
            cluster = doc["spec"]["rayClusterSpec"]
            templates += [g["template"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
        elif doc["kind"] == "Deployment":
            templates.append(doc["spec"]["template"])
    return templates


def _strict(schema):
    """The CRD schema as the API server applies it with strict field validation: an object that lists its
    properties admits no others, unless the schema says it keeps unknown fields."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def test_cluster_yaml_passes_the_autoscaler_schema_and_its_checks():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_cluster()))  # what `ray up` runs first
    broken = _cluster()
    broken["available_node_types"]["gpu_spot"]["min_worker"] = 1  # a typo the schema must catch
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_cluster_yaml_holds_no_placeholder_and_every_node_type_names_its_instance_profile():
    text = (REPO / "cluster.yaml").read_text()
    config = _cluster()
    # Runs as written: nothing to replace but the bucket in the commented job command, no mount of an EFS that
    # is not there (the shared-filesystem route adds its own, from the export the user gives).
    assert not re.search(r"XXXX|fs-[0-9a-zA-Z]{8}\b", "\n".join(line for line in text.splitlines()
                                                               if not line.lstrip().startswith("#")))
    assert config["initialization_commands"] == []
    assert not any("/mnt/shared" in option for option in config["docker"]["run_options"])
    from pipelines.cluster_security import instance_profile_names

    head, worker = instance_profile_names(config, Path("cluster.yaml"))
    assert head != worker


def test_the_head_is_on_demand_and_runs_no_trainers_while_gpu_workers_may_be_spot():
    config = _cluster()
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"] and head["max_workers"] == 0
    assert nodes["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in nodes["gpu_on_demand"]["node_config"]
    assert sum(n.get("min_workers", 0) for n in nodes.values()) <= config["max_workers"]


def test_images_pin_the_projects_ray_version_and_install_the_tested_torch():
    version = ray.__version__
    torch_pins = re.search(r"^TORCH\s*:=\s*(.+)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    assert _cluster()["docker"]["image"].startswith(f"rayproject/ray:{version}-")
    setup = " ".join(_cluster()["setup_commands"])
    assert all(pin in setup for pin in torch_pins) and "[pipeline]" in setup

    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(version)}-\S+$", dockerfile, re.M)
    run = " ".join(re.findall(r"^RUN (.+?)(?<!\\)$", dockerfile.replace("\\\n", " "), re.M | re.S))
    assert all(pin in run for pin in torch_pins) and "[pipeline]" in run
    tag = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", dockerfile).group(1)

    manifests = _manifests()
    images = {c["image"] for template in _pod_templates(manifests) for c in template["spec"]["containers"]}
    assert images == {tag}  # the job's pods and the tracking server all run the image the Dockerfile builds
    assert _rayjob()["spec"]["rayClusterSpec"]["rayVersion"] == version


def test_the_rayjob_passes_kuberays_schema_strictly_and_a_typo_does_not():
    import jsonschema

    schema = _strict(json.loads(RAYJOB_SCHEMA.read_text()))
    validator = jsonschema.Draft7Validator(schema)
    job = _rayjob()
    assert list(validator.iter_errors(job)) == []

    misspelt = _rayjob()
    group = misspelt["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")
    assert any("minReplica" in error.message for error in validator.iter_errors(misspelt))
    wrong_mode = _rayjob()
    wrong_mode["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    assert any("tokens" in error.message for error in validator.iter_errors(wrong_mode))


def test_the_kubernetes_manifests_name_each_other():
    manifests = _manifests()
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]

    # Every volume a pod mounts is a claim the file defines; the Ray pods share one ReadWriteMany claim.
    claims = {doc["metadata"]["name"]: doc for key, doc in manifests.items() if key.startswith("PersistentVolumeClaim/")}
    for template in _pod_templates(manifests):
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]}
        assert set(volumes.values()) <= set(claims)
        for container in template["spec"]["containers"]:
            assert {mount["name"] for mount in container["volumeMounts"]} <= set(volumes)
    ray_templates = [g["template"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
    shared = {v["persistentVolumeClaim"]["claimName"] for t in ray_templates for v in t["spec"]["volumes"]}
    assert len(shared) == 1 and claims[shared.pop()]["spec"]["accessModes"] == ["ReadWriteMany"]

    # One MLflow server, never two on its SQLite file, reached through the Service the job's URI names.
    [deployment] = [doc for key, doc in manifests.items() if key.startswith("Deployment/")]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    uri = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"]
    host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", uri).groups()
    service = manifests[f"Service/{host}"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [service_port] = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert service_port["targetPort"] in {p["name"] for p in container["ports"]}
    args = container["args"]
    assert args[args.index("--backend-store-uri") + 1].startswith("sqlite:////")
    assert host in args[args.index("--allowed-hosts") + 1].split(",")
    assert service["spec"]["type"] == "ClusterIP"  # nothing exposed outside the Kubernetes cluster

    # The autoscaler is on, so the worker group's bounds mean something; workers drain before they are killed.
    assert cluster["enableInTreeAutoscaling"] is True
    workers = cluster["workerGroupSpecs"][0]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    spec = workers["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["terminationGracePeriodSeconds"] > 30  # Ray's drain timeout on SIGTERM
    assert cluster["authOptions"]["mode"] == "token"
    # The entrypoint is the script the image carries, running the pipeline.
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[:2] == ["bash", "/opt/stylecore/deploy/run_pipeline.sh"] and entrypoint[2:] == ["dvc", "repro"]
    assert re.search(r"^COPY .* \. /opt/stylecore$", (REPO / "deploy/Dockerfile").read_text(), re.M)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_the_rayjob_entrypoint_keeps_the_shared_copy_at_the_images_commit_and_its_outputs(tmp_path):
    """deploy/run_pipeline.sh with real git: the first run clones the image's checkout onto the shared volume; a
    later image moves the copy to its commit, tracked files follow it, ignored outputs stay."""
    image = tmp_path / "image"
    image.mkdir()
    _git(image, "init", "-q", "-b", "main")
    _git(image, "config", "user.email", "ci@example.invalid")
    _git(image, "config", "user.name", "ci")
    (image / ".gitignore").write_text("data/\n")
    (image / "dvc.lock").write_text("v1\n")
    _git(image, "add", ".")
    _git(image, "commit", "-q", "-m", "one")
    shared = tmp_path / "shared" / "stylecore"
    env = {**os.environ, "STYLECORE_IMAGE_CHECKOUT": str(image), "STYLECORE_SHARED_PROJECT": str(shared)}
    script = str(REPO / "deploy/run_pipeline.sh")
    stage = "mkdir -p data && git rev-parse HEAD >> data/ran_at && echo rewritten > dvc.lock"

    first = subprocess.run(["bash", script, "bash", "-c", stage], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "cloning" in first.stdout and (shared / "data/ran_at").read_text().split() == [_git(image, "rev-parse", "HEAD")]

    (image / "dvc.lock").write_text("v2\n")
    _git(image, "commit", "-q", "-am", "two")
    second = subprocess.run(["bash", script, "bash", "-c", "cat dvc.lock"], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "moving" in second.stdout and second.stdout.rstrip().endswith("v2")  # the run's rewrite gave way
    assert _git(shared, "rev-parse", "HEAD") == _git(image, "rev-parse", "HEAD")
    assert (shared / "data/ran_at").exists()  # what the first run computed is still there

    failing = subprocess.run(["bash", script, "false"], env=env, capture_output=True, text=True)
    assert failing.returncode == 1  # the job fails when the pipeline does


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.timeout(180)
def test_the_tracking_server_as_the_manifest_starts_it_answers_its_service_name_and_no_other_host(tmp_path):
    [deployment] = [doc for key, doc in _manifests().items() if key.startswith("Deployment/")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    port = _free_port()
    # The manifest's flags, with its pod paths and address moved to this machine's temporary folder and loopback.
    for flag, value in {"--backend-store-uri": f"sqlite:///{tmp_path}/mlflow.db",
                        "--artifacts-destination": str(tmp_path / "mlartifacts"),
                        "--host": "127.0.0.1", "--port": str(port), "--workers": "1"}.items():
        args[args.index(flag) + 1] = value
    mlflow = Path(sys.executable).parent / container["command"][0]
    server = subprocess.Popen([str(mlflow), *container["command"][1:], *args], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = _status(url, "localhost:5000")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-3000:]
                time.sleep(0.5)
        assert status == 200  # a browser through `kubectl port-forward svc/stylecore-mlflow 5000:5000`
        assert _status(url, "127.0.0.1:5000") == 200
        assert _status(url, "stylecore-mlflow:5000") == 200  # the job and its workers, by the Service's name
        assert _status(url, "stylecore-mlflow.default.svc.cluster.local:5000") == 200  # and its full DNS name
        assert _status(url, "attacker.example") == 403  # anything else (DNS rebinding) is refused
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_nothing_but_ssh_from_one_cidr_is_open_to_the_outside():
    config = _cluster()
    assert config["provider"]["security_group"]["GroupName"]  # a group created first, with no world-open SSH
    head = " ".join(config["head_start_ray_commands"] + config["head_setup_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert all("RAY_AUTH_MODE=token" in c for c in commands if "ray start" in c)
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_the_shared_filesystem_route_mounts_the_export_on_every_node_and_passes_rays_checks(tmp_path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    from pipelines.cluster_shared_fs import main

    export = "fs-0123456789abcdef0.efs.us-west-2.amazonaws.com:/"
    out = tmp_path / "cluster-shared-fs.yaml"
    assert main(["--export", export, "--cluster", str(REPO / "cluster.yaml"), "--out", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    validate_config(prepare_config(config))
    # initialization_commands run on every node's host before its container starts.
    mount = [shlex.split(c) for c in config["initialization_commands"] if "mount -t nfs4" in c]
    assert len(mount) == 1 and export in mount[0] and "/mnt/shared" in mount[0]
    assert "-v /mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert any(c.startswith("cp -a ~/stylecore/. /mnt/shared/stylecore/") for c in config["head_setup_commands"])
    # Everything else is cluster.yaml's.
    source = _cluster()
    for key in ("available_node_types", "provider", "setup_commands", "head_start_ray_commands", "file_mounts"):
        assert config[key] == source[key]

    for hostile in ["host:/x; rm -rf /", "$(id):/", "host:/a/../etc", "http://host:/", "host", "host:relative"]:
        assert main(["--export", hostile, "--cluster", str(REPO / "cluster.yaml"),
                     "--out", str(tmp_path / "hostile.yaml")]) == 2
    assert not (tmp_path / "hostile.yaml").exists()
    assert main(["--export", export, "--cluster", str(out), "--out", str(out)]) == 2  # never over its source


@pytest.fixture
def aws_endpoint():
    """A fresh account per test: moto's EC2 and IAM on 127.0.0.1."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    from moto_server import TEST_CREDENTIALS, moto_endpoint

    saved = {key: os.environ.get(key) for key in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)
    try:
        with moto_endpoint() as endpoint:
            yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_cluster_security_group_admits_ssh_from_one_cidr_only(aws_endpoint):
    """The group cluster.yaml names, created with SSH from the given CIDR and every port between its members,
    nothing from 0.0.0.0/0; a world CIDR and a world-open group are refused."""
    import boto3

    from pipelines.cluster_security import ClusterSecurityError, ensure_group, main

    cluster = str(REPO / "cluster.yaml")
    assert main(["--cidr", "203.0.113.7/32", "--cluster", cluster, "--endpoint-url", aws_endpoint]) == 0
    ec2 = boto3.client("ec2", region_name="us-west-2", endpoint_url=aws_endpoint)
    name = _cluster()["provider"]["security_group"]["GroupName"]
    [group] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    ssh = [r for r in group["IpPermissions"] if r.get("FromPort") == 22]
    assert [ip["CidrIp"] for r in ssh for ip in r["IpRanges"]] == ["203.0.113.7/32"]
    everything = [r for r in group["IpPermissions"] if r["IpProtocol"] == "-1"]
    assert [pair["GroupId"] for r in everything for pair in r["UserIdGroupPairs"]] == [group["GroupId"]]
    assert not any(ip["CidrIp"] == "0.0.0.0/0" for r in group["IpPermissions"] for ip in r.get("IpRanges", []))
    assert main(["--cidr", "203.0.113.7/32", "--cluster", cluster,
                 "--endpoint-url", aws_endpoint]) == 0  # run twice: the same group, untouched
    with pytest.raises(ClusterSecurityError, match="admits every address"):
        ensure_group(ec2, name, "0.0.0.0/0")
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    with pytest.raises(ClusterSecurityError, match="already admits 0.0.0.0/0"):
        ensure_group(ec2, name, "203.0.113.7/32")


def _inline_statements(iam, role: str) -> list[dict]:
    if "stylecore" not in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        return []
    document = iam.get_role_policy(RoleName=role, PolicyName="stylecore")["PolicyDocument"]
    return (json.loads(document) if isinstance(document, str) else document)["Statement"]


def test_the_instance_profiles_give_the_head_the_autoscaler_and_both_the_bucket_alone(aws_endpoint, tmp_path):
    import boto3

    from pipelines.cluster_security import AUTOSCALER_POLICY_ARN, main

    cluster = str(REPO / "cluster.yaml")
    head, worker = "stylecore-head", "stylecore-worker"
    iam = boto3.client("iam", region_name="us-west-2", endpoint_url=aws_endpoint)
    # Refused before anything is made: a bucket that is not one, a world CIDR.
    assert main(["--cidr", "203.0.113.7/32", "--bucket", "s3://Bad_Bucket", "--cluster", cluster,
                 "--endpoint-url", aws_endpoint]) == 2
    assert main(["--cidr", "0.0.0.0/0", "--bucket", "my-bucket", "--cluster", cluster,
                 "--endpoint-url", aws_endpoint]) == 2
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"] in (head, worker)]

    assert main(["--cidr", "203.0.113.7/32", "--bucket", "s3://my-bucket/stylecore", "--cluster", cluster,
                 "--endpoint-url", aws_endpoint]) == 0
    for name in (head, worker):
        [role] = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        assert role["RoleName"] == name
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]
    bucket_resources = {"arn:aws:s3:::my-bucket", "arn:aws:s3:::my-bucket/*"}
    worker_statements = _inline_statements(iam, worker)
    assert {s["Resource"] for s in worker_statements} == bucket_resources
    assert not any("*" in s["Action"] or any(a.endswith(":*") for a in s["Action"]) for s in worker_statements)
    assert iam.list_attached_role_policies(RoleName=worker)["AttachedPolicies"] == []
    worker_arn = iam.get_role(RoleName=worker)["Role"]["Arn"]
    head_statements = _inline_statements(iam, head)
    assert [s["Resource"] for s in head_statements if s["Action"] == "iam:PassRole"] == [worker_arn]
    assert {s["Resource"] for s in head_statements if s["Action"] != "iam:PassRole"} == bucket_resources
    attached = iam.list_attached_role_policies(RoleName=head)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [AUTOSCALER_POLICY_ARN]

    # Again without a bucket (the shared-filesystem route): the same roles, and neither may touch S3 any more.
    assert main(["--cidr", "203.0.113.7/32", "--cluster", cluster, "--endpoint-url", aws_endpoint]) == 0
    assert _inline_statements(iam, worker) == []
    assert [s["Action"] for s in _inline_statements(iam, head)] == ["iam:PassRole"]
    assert len(iam.list_attached_role_policies(RoleName=head)["AttachedPolicies"]) == 1

    # A cluster file whose worker types disagree on their profile is refused, naming the file.
    broken = _cluster()
    broken["available_node_types"]["gpu_on_demand"]["node_config"]["IamInstanceProfile"] = {"Name": "other"}
    broken_file = tmp_path / "broken.yaml"
    broken_file.write_text(yaml.safe_dump(broken))
    assert main(["--cidr", "203.0.113.7/32", "--cluster", str(broken_file), "--endpoint-url", aws_endpoint]) == 2
