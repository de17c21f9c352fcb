"""The shared-filesystem route of cluster.yaml: the same cluster, with an NFS export (EFS or any NFS server) that
every node mounts at /mnt/shared, and the pipeline run from a copy of the project there instead of a bucket.

    python -m pipelines.cluster_shared_fs --export fs-0123456789abcdef0.efs.us-west-2.amazonaws.com:/ \\
        --out cluster-shared-fs.yaml
    ray up cluster-shared-fs.yaml
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 -- \\
        bash -c 'cd /mnt/shared/stylecore && dvc exp run -S profile=full'

Why a file written from cluster.yaml rather than a second hand-kept copy: the two routes differ only in the
mount, so cluster.yaml stays the one description of the cluster and this adds the three things the route needs:
  - the mount, on each node's host before its container starts (``initialization_commands``), with the options
    AWS recommends for EFS, and the folder ``stylecore`` in it owned by the image's ``ray`` user (uid 1000);
  - the mount passed into the container (``docker.run_options``);
  - on the head, the synced project copied into /mnt/shared/stylecore at every ``ray up``: code, params and
    dvc.lock are refreshed, the data, models and MLflow store already there are left as they are.
The export is hostile input (it ends up in a shell command): only a host name or address, a colon and a path of
plain characters are accepted.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from pathlib import Path

import yaml

from stylecore.io import atomic_write_text

MOUNT_POINT = "/mnt/shared"
PROJECT_ON_SHARE = f"{MOUNT_POINT}/stylecore"
# AWS's recommended NFS client options for EFS (they suit any NFSv4.1 server).
NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
RAY_IMAGE_USER = "1000:100"  # the `ray` user and `users` group of the rayproject/ray images
EXPORT = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(?P<path>/[A-Za-z0-9._/-]*)$")


class SharedFilesystemError(ValueError):
    """An export or a cluster file this route cannot use; the message names the fix."""


def check_export(export: str) -> str:
    """``export`` as ``host:/path``, refused when it is anything else (shell syntax, a URL, a missing path)."""
    match = EXPORT.match(export)
    if not match or ".." in match["path"].split("/"):
        raise SharedFilesystemError(
            f"--export {export!r} is not an NFS export; give host:/path, e.g. "
            "fs-0123456789abcdef0.efs.us-west-2.amazonaws.com:/ (EFS) or 10.0.0.5:/exports/stylecore")
    return export


def shared_filesystem_config(cluster: dict, export: str) -> dict:
    """A copy of the cluster launcher config ``cluster`` that mounts ``export`` on every node at /mnt/shared."""
    export = check_export(export)
    config = copy.deepcopy(cluster)
    if config.get("initialization_commands"):
        raise SharedFilesystemError("the cluster file already has initialization_commands; this route adds the mount "
                                    "there, so start from the repository's cluster.yaml")
    quoted = shlex.quote(export)
    config["initialization_commands"] = [
        f"sudo mkdir -p {MOUNT_POINT} && (mountpoint -q {MOUNT_POINT} || "
        f"sudo mount -t nfs4 -o {NFS_OPTIONS} {quoted} {MOUNT_POINT})",
        f"sudo mkdir -p {PROJECT_ON_SHARE} && sudo chown {RAY_IMAGE_USER} {PROJECT_ON_SHARE}",
    ]
    docker = config.setdefault("docker", {})
    docker["run_options"] = [*docker.get("run_options", []), f"-v {MOUNT_POINT}:{MOUNT_POINT}"]
    # The synced checkout over the shared copy: code and pipeline files refreshed, outputs already there kept.
    config["head_setup_commands"] = [f"cp -a ~/stylecore/. {PROJECT_ON_SHARE}/",
                                     *config.get("head_setup_commands", [])]
    return config


def render(config: dict, export: str, source: Path) -> str:
    header = (f"# Written by `python -m pipelines.cluster_shared_fs --export {export}` from {source.name}: the\n"
              f"# shared-filesystem route ({MOUNT_POINT} on every node; run the pipeline in {PROJECT_ON_SHARE}).\n"
              f"# Edit {source.name} and write this again rather than editing it.\n")
    return header + yaml.safe_dump(config, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="the NFS export every node mounts, host:/path")
    parser.add_argument("--cluster", default="cluster.yaml", help="the cluster file to start from")
    parser.add_argument("--out", default="cluster-shared-fs.yaml", help="where to write the new cluster file")
    args = parser.parse_args(argv)
    source, out = Path(args.cluster), Path(args.out)
    try:
        if out.resolve() == source.resolve():
            raise SharedFilesystemError(f"--out {out} is the cluster file itself; write the route to a new file")
        try:
            cluster = yaml.safe_load(source.read_text())
        except OSError as error:
            raise SharedFilesystemError(f"--cluster {source}: {error.strerror}") from None
        text = render(shared_filesystem_config(cluster, args.export), args.export, source)
    except SharedFilesystemError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    atomic_write_text(out, text)
    print(f"wrote {out}: {source.name} with {args.export} mounted at {MOUNT_POINT} on every node; "
          f"`ray up {out}`, then run the pipeline in {PROJECT_ON_SHARE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
