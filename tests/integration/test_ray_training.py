"""stylecore.training inside Ray Train V2 on a real local Ray cluster (2 CPU workers, gloo)."""

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import stylecore  # noqa: E402
from stylecore.data import save_image  # noqa: E402
from stylecore.shards import SourceItem, prepare_image, write_shards  # noqa: E402
from stylecore.synthetic import synthetic_artwork, synthetic_photo  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for name in ("content", "style"):
        raw = root / f"raw-{name}"
        items = []
        for i in range(16):
            image = synthetic_photo(i, 48) if name == "content" else synthetic_artwork(i, "waves", 48)
            save_image(image, raw / f"{i}.png")
            items.append(SourceItem(f"{i}.png"))
        write_shards((prepare_image(raw, item, name, "train", 48, 90, 16, 10**7) for item in items),
                     root / name, name, maxcount=4)
    return root


def test_two_workers_train_resume_after_a_worker_dies_and_leave_a_loadable_checkpoint(shards, local_ray, tmp_path):
    from pipelines.ray_training import run

    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri, start_run

    config = {"model": "adain", "model_params": {"encoder_weights": "random:0"}, "steps": 6, "lr": 1e-3,
              "sample_every": 3}
    uri = default_tracking_uri(tmp_path)
    assert uri.startswith("sqlite:////")  # absolute: Ray workers run in another directory
    run_id = start_run(uri, "grid-test", tmp_path / "artifacts", "adain-gram", {"train": config},
                       {"model": "adain", "loss": "mean_std"})
    marker = tmp_path / "failed-once"
    from pipelines.ray_session import Scale
    from stylecore.config import DataConfig

    result = run(config, DataConfig(batch_size=2, crop_size=32, flip=True), shards / "content", shards / "style",
                 name="adain-test", storage_path=str(tmp_path / "ray"), scale=Scale(2, False), report_every=2, keep=2,
                 max_failures=1,
                 extra={"fail_at_step": 5, "fail_marker": str(marker),
                        "mlflow": {"tracking_uri": uri, "run_id": run_id}})
    lines = marker.read_text().splitlines()  # a worker really died at step 5 …
    assert lines[0] == "failed once"
    # … and both ranks resumed from the same reported checkpoint, not from scratch. Ray registers a
    # reported checkpoint when its controller next polls the workers, so a death right after a report
    # can fall back to the previous one (step 2 or 4 here).
    resumed = {int(line.rsplit(" ", 1)[1]) for line in lines[1:]}
    assert len(lines[1:]) == 2 and len(resumed) == 1 and resumed <= {2, 4}
    assert result.error is None and result.metrics["step"] == 6  # the run finished all its steps
    with result.checkpoint.as_directory() as directory:
        saved = json.loads((Path(directory) / "config.json").read_text())
        assert saved["step"] == 6
        model = stylecore.load(directory)
    assert model.name == "adain"

    client = MlflowClient(uri)
    logged = client.get_run(run_id)
    assert logged.data.tags["model"] == "adain" and logged.data.params["train.model"] == "adain"
    steps = {m.step for m in client.get_metric_history(run_id, "loss/total")}
    assert steps == {1, 2, 3, 4, 5, 6}  # rank 0 logged every step (steps after the resume point twice)
    assert {m.step for m in client.get_metric_history(run_id, "lr")} == steps
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert images and all(p.startswith("images/samples") for p in images)
    assert str(tmp_path / "artifacts") in logged.info.artifact_uri


UNSTARTABLE = """
import os, sys, tempfile
import ray
from pipelines.ray_session import Scale
from pipelines.ray_training import LOCAL_START_ATTEMPTS, torch_trainer

def worker(config):
    pass

ray.init(num_cpus=2, include_dashboard=False)
# 3 one-CPU workers on a 2-CPU Ray: the state a leaked placement group leaves (its CPUs held forever)
try:
    result = torch_trainer(worker, {}, name="unstartable", storage_path=tempfile.mkdtemp(), scale=Scale(3, False),
                           max_failures=2, keep=1).fit()
    error = result.error
except Exception as raised:  # what the stages catch and report (pipelines.train.train_run)
    error = raised
print("ERROR:", type(error).__name__, " ".join(str(error).split())[:300], flush=True)
"""


def test_a_worker_group_that_can_never_start_fails_the_run_on_a_local_ray_instead_of_waiting_forever(tmp_path):
    """Ray Train retries a worker-group start that timed out without end (right for an autoscaling cluster); on a
    local Ray nothing can free the resources, so the run fails after LOCAL_START_ATTEMPTS tries. The start timeout is
    shortened through Ray Train's own variable, which its controller reads."""
    import os
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", UNSTARTABLE], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    # without the limit Ray Train retries the start forever and the subprocess's timeout fails this test
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("ERROR:")] or [done.stderr[-2000:]]
    assert "ControllerError" in line and "worker group startup timed out" in line, line
