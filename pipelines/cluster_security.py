"""What cluster.yaml needs in the AWS account before ``ray up``: the security group it runs in (SSH from one CIDR
the user names, every port between the cluster's own nodes, nothing else) and the IAM instance profiles its node
types name (the head's, which lets Ray's autoscaler launch the workers, and the workers' own).

    python -m pipelines.cluster_security --cidr 203.0.113.7/32 [--bucket BUCKET] [--region us-west-2] [--vpc vpc-…]

Why a step before ``ray up``: when Ray's AWS launcher creates a cluster's security group itself, it always adds
SSH from 0.0.0.0/0. It leaves a group that already has rules as it is, so creating the group named in
cluster.yaml (``provider.security_group.GroupName``) first is what keeps SSH closed to the world. The dashboard
and the MLflow server are never opened to the outside: reach them through ``ray dashboard cluster.yaml`` and
``ray attach cluster.yaml -p 5000`` (SSH tunnels).

Why profiles of our own: Ray's default gives the head alone a role with EC2 and S3 full access and the workers
none, so a worker cannot read shards from a bucket. Here both are scoped: the head may manage EC2 (what the
autoscaler does), pass the worker role to the instances it starts, and use ``--bucket``; the workers may use
``--bucket`` and nothing else. Without ``--bucket`` (the shared-filesystem route) neither may touch S3.
Everything is idempotent: a second run leaves what the first made, and updates the bucket statements.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path

import yaml

GROUP_DESCRIPTION = "stylecore Ray cluster: SSH from one CIDR, all traffic between its nodes"
# What Ray's autoscaler needs on the head (the managed policy Ray's own default head role carries).
AUTOSCALER_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonEC2FullAccess"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
INLINE_POLICY = "stylecore"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's rules for bucket names


class ClusterSecurityError(ValueError):
    """A CIDR or a cluster file that would leave the cluster open; the message names the fix."""


def check_cidr(cidr: str) -> str:
    """``cidr`` as a network, refused when it admits everyone (0.0.0.0/0, ::/0) or is not a network at all."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ClusterSecurityError(f"--cidr {cidr!r} is not an IP network; give your address as a.b.c.d/32") from None
    if network.prefixlen == 0:
        raise ClusterSecurityError(f"--cidr {cidr} admits every address; give your own, e.g. 203.0.113.7/32")
    return str(network)


def group_name(cluster_file: Path) -> str:
    name = (yaml.safe_load(Path(cluster_file).read_text()).get("provider") or {}).get("security_group", {}).get("GroupName")
    if not name:
        raise ClusterSecurityError(f"{cluster_file}: provider.security_group.GroupName is not set; without it Ray "
                                   "creates a group with SSH open to 0.0.0.0/0")
    return name


def ensure_group(ec2, name: str, cidr: str, vpc_id: str | None = None) -> str:
    """Create (or find) the group ``name`` in ``vpc_id`` (default VPC when None) with exactly the two rules; an
    existing group with a rule open to the world is refused. Returns the group id."""
    cidr = check_cidr(cidr)
    if vpc_id is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ClusterSecurityError("this region has no default VPC; pass --vpc")
        vpc_id = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    if found:
        group = found[0]
        open_rules = [rule for rule in group["IpPermissions"] for r in rule.get("IpRanges", [])
                      if r.get("CidrIp") == "0.0.0.0/0"]
        if open_rules:
            raise ClusterSecurityError(f"security group {name} ({group['GroupId']}) already admits 0.0.0.0/0 "
                                       f"({open_rules[0]}); delete it (aws ec2 delete-security-group) and run this again")
        return group["GroupId"]
    group_id = ec2.create_security_group(GroupName=name, Description=GROUP_DESCRIPTION, VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": cidr, "Description": "SSH (ray up, ray attach, tunnels)"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "between the cluster's nodes"}]},
    ])
    return group_id


def check_bucket(bucket: str) -> str:
    """The bucket name of ``bucket`` (a name or ``s3://name/prefix``), refused when it is not a valid S3 name."""
    name = bucket.removeprefix("s3://").split("/", 1)[0]
    if not BUCKET_NAME.match(name) or ".." in name:
        raise ClusterSecurityError(f"--bucket {bucket!r} is not an S3 bucket name; give the bucket of "
                                   "storage.shards, e.g. my-bucket or s3://my-bucket/stylecore")
    return name


def instance_profile_names(cluster: dict, cluster_file: Path) -> tuple[str, str]:
    """(head profile, worker profile) named by ``IamInstanceProfile.Name`` in cluster.yaml's node types: the head
    type's one, and one shared by every worker type."""
    head_type = cluster.get("head_node_type")
    names = {}
    for node_type, spec in (cluster.get("available_node_types") or {}).items():
        profile = (spec.get("node_config") or {}).get("IamInstanceProfile") or {}
        if not profile.get("Name"):
            raise ClusterSecurityError(f"{cluster_file}: available_node_types.{node_type}.node_config has no "
                                       "IamInstanceProfile.Name; every node type names the profile it runs with")
        names[node_type] = profile["Name"]
    if head_type not in names:
        raise ClusterSecurityError(f"{cluster_file}: head_node_type {head_type!r} is not one of available_node_types")
    workers = {name for node_type, name in names.items() if node_type != head_type}
    if len(workers) != 1 or names[head_type] in workers:
        raise ClusterSecurityError(f"{cluster_file}: the worker node types must share one instance profile, other "
                                   f"than the head's ({names})")
    return names[head_type], workers.pop()


def bucket_statements(bucket: str | None) -> list[dict]:
    if bucket is None:
        return []
    return [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": f"arn:aws:s3:::{bucket}/*"}]


def _ensure_role_and_profile(iam, name: str, statements: list[dict], managed: list[str]) -> tuple[str, str]:
    """The role and the instance profile ``name`` holding it, with exactly ``statements`` inline (none: no inline
    policy) and ``managed`` attached. Returns (role ARN, profile ARN)."""
    try:
        role_arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                                   Description="stylecore Ray cluster (pipelines.cluster_security)")["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY,
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    elif INLINE_POLICY in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=INLINE_POLICY)
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
    for policy_arn in managed:
        if policy_arn not in attached:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    roles = [role["RoleName"] for role in profile.get("Roles", [])]
    if roles and roles != [name]:
        raise ClusterSecurityError(f"instance profile {name} holds role(s) {roles}, not {name}; remove them "
                                   f"(aws iam remove-role-from-instance-profile) or name another profile in cluster.yaml")
    if not roles:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return role_arn, profile["Arn"]


def ensure_profiles(iam, head: str, worker: str, bucket: str | None) -> dict[str, str]:
    """The head's and the workers' roles and instance profiles (see the module's docstring). Returns the
    profile ARNs by role."""
    bucket = None if bucket is None else check_bucket(bucket)
    worker_role, worker_profile = _ensure_role_and_profile(iam, worker, bucket_statements(bucket), [])
    pass_worker_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": worker_role}
    _, head_profile = _ensure_role_and_profile(iam, head, [pass_worker_role, *bucket_statements(bucket)],
                                               [AUTOSCALER_POLICY_ARN])
    return {"head": head_profile, "worker": worker_profile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cidr", required=True, help="the only network SSH is open to, e.g. your address /32")
    parser.add_argument("--cluster", default="cluster.yaml", help="the cluster file naming the group")
    parser.add_argument("--region", help="AWS region (default: the cluster file's provider.region)")
    parser.add_argument("--vpc", help="VPC id (default: the region's default VPC)")
    parser.add_argument("--bucket", help="the bucket of the object-storage route (storage.shards, storage.checkpoints, "
                        "mlflow.artifacts), which the head and the workers may read and write; leave it out on the "
                        "shared-filesystem route")
    parser.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # the tests' loopback EC2
    args = parser.parse_args(argv)
    try:
        import boto3

        cluster_file = Path(args.cluster)
        cluster = yaml.safe_load(cluster_file.read_text())
        check_cidr(args.cidr)
        if args.bucket is not None:
            check_bucket(args.bucket)
        name = group_name(cluster_file)
        head_profile, worker_profile = instance_profile_names(cluster, cluster_file)
        region = args.region or cluster["provider"]["region"]
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=args.endpoint_url)
        group_id = ensure_group(ec2, name, args.cidr, args.vpc)
        iam = boto3.client("iam", region_name=region, endpoint_url=args.endpoint_url)
        profiles = ensure_profiles(iam, head_profile, worker_profile, args.bucket)
    except ClusterSecurityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"security group {name} ({group_id}): SSH from {check_cidr(args.cidr)} only, all traffic between its "
          "members; `ray up` will use it as it is")
    reach = f"bucket {check_bucket(args.bucket)}" if args.bucket else "no bucket (shared-filesystem route)"
    print(f"instance profiles: {head_profile} (head: EC2 for the autoscaler, passes {worker_profile}; {reach}), "
          f"{worker_profile} (workers: {reach}); {profiles['head']}, {profiles['worker']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
