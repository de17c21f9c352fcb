"""The security group cluster.yaml runs in: SSH from one CIDR the user names, every port between the cluster's
own nodes, nothing else.

    python -m pipelines.cluster_security --cidr 203.0.113.7/32 [--region us-west-2] [--vpc vpc-…]

Why a step before ``ray up``: when Ray's AWS launcher creates a cluster's security group itself, it always adds
SSH from 0.0.0.0/0. It leaves a group that already has rules as it is, so creating the group named in
cluster.yaml (``provider.security_group.GroupName``) first is what keeps SSH closed to the world. The dashboard
and the MLflow server are never opened to the outside: reach them through ``ray dashboard cluster.yaml`` and
``ray attach cluster.yaml -p 5000`` (SSH tunnels).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

import yaml

GROUP_DESCRIPTION = "stylecore Ray cluster: SSH from one CIDR, all traffic between its nodes"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cidr", required=True, help="the only network SSH is open to, e.g. your address /32")
    parser.add_argument("--cluster", default="cluster.yaml", help="the cluster file naming the group")
    parser.add_argument("--region", help="AWS region (default: the cluster file's provider.region)")
    parser.add_argument("--vpc", help="VPC id (default: the region's default VPC)")
    parser.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # the tests' loopback EC2
    args = parser.parse_args(argv)
    try:
        import boto3

        name = group_name(Path(args.cluster))
        region = args.region or yaml.safe_load(Path(args.cluster).read_text())["provider"]["region"]
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=args.endpoint_url)
        group_id = ensure_group(ec2, name, args.cidr, args.vpc)
    except ClusterSecurityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"security group {name} ({group_id}): SSH from {check_cidr(args.cidr)} only, all traffic between its "
          "members; `ray up` will use it as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
