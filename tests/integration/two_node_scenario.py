"""A two-node Ray cluster simulated on this machine, driven the way a real cluster is: through RAY_ADDRESS.

Run as a script (it owns its Ray cluster, so it cannot share the test session's): ``python
two_node_scenario.py WORKDIR``. It starts a head and a worker node (``ray.cluster_utils.Cluster``, one
CPU each, so the two Train workers land on different nodes), trains through the train stage's own Ray
entry point (``pipelines.ray_session.ray_session`` reads RAY_ADDRESS), removes the worker node after the
first checkpoint and adds a fresh one (a reclaimed spot node and its replacement), then stylizes a
folder with an actor on each node. WORKDIR is the shared storage. It prints one JSON line of results.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def main(workdir: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from pipelines import ray_training
    from pipelines.stylize_dataset import stylize_dataset
    from pipelines.ray_session import ray_session
    from stylecore.data import save_image
    from stylecore.shards import SourceItem, prepare_image, write_shards
    from stylecore.synthetic import synthetic_artwork, synthetic_photo

    for name in ("content", "style"):
        raw = workdir / f"raw-{name}"
        for i in range(16):
            save_image(synthetic_photo(i, 48) if name == "content" else synthetic_artwork(i, "dots", 48), raw / f"{i}.png")
        write_shards((prepare_image(raw, SourceItem(f"{i}.png"), name, "train", 48, 90, 16, 10**7) for i in range(16)),
                     workdir / name, name, maxcount=4)

    # shutdown_at_exit=False: nodes then install no SIGTERM handler, which only the main thread may do, and
    # the replacement node is added from a thread while the main thread trains. The finally below stops them.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False},
                      shutdown_at_exit=False)
    worker_node = cluster.add_node(num_cpus=1)
    os.environ["RAY_ADDRESS"] = cluster.address
    results: dict = {"address": cluster.address}
    marker = workdir / "resumed"
    marker.write_text("failed once\n")  # the worker hook appends "rank R resumed at step N" on every resume
    storage = workdir / "ray"
    replaced = threading.Event()

    def replace_the_worker_node() -> None:
        # Once a checkpoint is registered, the worker node "is reclaimed"; a fresh node joins a little later.
        # Registered, not merely written: a step-* folder exists as soon as rank 0 uploads it, but the run
        # resumes from it only once Train's controller has recorded it in this snapshot file. Killing the
        # node in between restarts the run from step 0 (seen on a slow machine), which is not what is tested.
        snapshot = storage / "two-nodes" / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 300
        while not snapshot.is_file():
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        results["nodes_before_removal"] = len([n for n in ray.nodes() if n["Alive"]])
        cluster.remove_node(worker_node, allow_graceful=False)
        time.sleep(2)
        cluster.add_node(num_cpus=1)
        replaced.set()

    try:
        with ray_session():  # connects to RAY_ADDRESS, like every stage on a cluster
            results["cluster_cpus"] = ray.cluster_resources().get("CPU", 0)
            thread = threading.Thread(target=replace_the_worker_node, daemon=True)
            thread.start()
            config = {"model": "adain", "model_params": {"encoder_weights": "random:0"}, "steps": 10, "lr": 1e-3}
            from pipelines.ray_session import Scale
            from stylecore.config import DataConfig

            result = ray_training.run(config, DataConfig(batch_size=2, crop_size=32, flip=True), workdir / "content",
                                      workdir / "style", name="two-nodes", storage_path=str(storage),
                                      scale=Scale(2, False), report_every=2, keep=2, max_failures=3,
                                      extra={"fail_marker": str(marker)})
            thread.join(timeout=60)
            results.update(node_replaced=replaced.is_set(), step=int(result.metrics["step"]),
                           error=None if result.error is None else str(result.error),
                           resumed=marker.read_text().splitlines()[1:])
            with result.checkpoint.as_directory() as directory:
                checkpoint = workdir / "final"
                import shutil

                shutil.copytree(directory, checkpoint)
            results["nodes_at_stylize"] = len([n for n in ray.nodes() if n["Alive"]])
            for i in range(24):
                save_image(synthetic_photo(100 + i, 40), workdir / "photos" / f"p{i:02d}.png")
            manifest = stylize_dataset(workdir / "photos", workdir / "raw-style" / "0.png", str(checkpoint),
                                       workdir / "stylized", actors=2, output_format="files", progress=False)
            results["stylized"] = manifest["written"]
            results["stylize_missing"] = manifest["missing"]
    finally:
        cluster.shutdown()
    return results


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1]))), flush=True)
