"""Every location a cluster's workers share, as a URI: shards, Ray checkpoints and MLflow artifacts in an S3
bucket (params.yaml: storage, mlflow.artifacts). The bucket is served by moto's S3 server on 127.0.0.1 and
reached the way a real one is: s3fs (fsspec) for the stages, pyarrow for Ray, boto3 for MLflow, all
pointed at it by AWS_ENDPOINT_URL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("s3fs")
pytest.importorskip("moto")

from moto_server import TEST_CREDENTIALS, moto_endpoint  # noqa: E402
from workspace_helpers import demo_workspace  # noqa: E402

BUCKET = "stylecore-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_endpoint() as endpoint:
        yield {"AWS_ENDPOINT_URL": endpoint, **TEST_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}


def _s3(env):
    import s3fs

    return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)


def _run(command: list[str], cwd: Path, env: dict) -> str:
    full = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        full.pop(key, None)
    done = subprocess.run(command, cwd=cwd, env=full, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-4000:] + done.stderr[-4000:])
    return done.stdout + done.stderr


@pytest.mark.timeout(1200)
def test_training_and_stylization_use_shards_checkpoints_and_artifacts_in_a_bucket(s3_endpoint, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import stylecore
    from pipelines import storage
    from pipelines.sources import CatalogueError

    for key, value in s3_endpoint.items():
        monkeypatch.setenv(key, value)
    s3 = _s3(s3_endpoint)
    s3.mkdir(BUCKET)

    def edit(params):
        params["storage"] = {"shards": f"s3://{BUCKET}/shards", "checkpoints": f"s3://{BUCKET}/ray"}
        params["mlflow"]["artifacts"] = f"s3://{BUCKET}/mlartifacts"
        params["train"]["profiles"]["demo"].update(steps=4, report_every=2, sample_every=2, crop_size=32,
                                                   load_size=40)
        params["train"]["ray"]["workers"] = 1

    params = demo_workspace(tmp_path, photos={"train": 8, "val": 6}, artworks={"train": 10, "val": 5}, edit=edit)

    # The shard stage mirrored every folder it wrote: the same manifest, every shard it lists.
    for folder in sorted((tmp_path / "shards").iterdir()):
        remote = f"{BUCKET}/shards/{folder.name}"
        assert json.loads(s3.cat_file(f"{remote}/manifest.json")) == json.loads((folder / "manifest.json").read_text())
        assert sorted(Path(p).name for p in s3.ls(remote)) == sorted(p.name for p in folder.iterdir())

    # The train stage's command, as DVC runs it: its workers read the bucket's shards and checkpoint to it.
    _run([sys.executable, "-m", "pipelines.train", "--model", "adain", "--loss", "gram",
                "--params", str(tmp_path / "params.yaml"), "--shards", str(tmp_path / "shards"),
                "--models", str(tmp_path / "models")], tmp_path, s3_endpoint)
    metrics = json.loads((tmp_path / "models/adain-gram/metrics.json").read_text())
    assert metrics["step"] == 4
    assert stylecore.load(tmp_path / "models/adain-gram/checkpoint").name == "adain"  # fetched from the bucket
    assert not (tmp_path / "ray_results").exists()  # nothing of Ray's state on the local disk …
    # … Ray kept it in the bucket, and the finished run's folder is gone from there
    assert s3.exists(f"{BUCKET}/ray/train") and not [p for p in s3.find(f"{BUCKET}/ray/train") if "adain-gram" in p]
    client = MlflowClient(params["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name("stylecore-demo")
    assert experiment.artifact_location == f"s3://{BUCKET}/mlartifacts"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["content"] == str([f"s3://{BUCKET}/shards/demo_photos-train"])
    in_bucket = s3.find(f"{BUCKET}/mlartifacts")
    assert any(p.endswith("/MLmodel") for p in in_bucket)  # the logged model …
    assert any("/images/" in p or p.endswith(".png") for p in in_bucket)  # … and rank 0's sample grids
    assert not (tmp_path / "mlartifacts").exists()

    # Batch stylization reads content and styles from the bucket (Ray Data over pyarrow's S3).
    output = tmp_path / "stylized"
    _run([sys.executable, "-m", "stylecore.cli", "stylize-dataset", "--model", str(tmp_path / "models/adain-gram/checkpoint"),
          "--content", f"s3://{BUCKET}/shards/demo_photos-val", "--style", f"s3://{BUCKET}/shards/demo_artworks-val",
          "--output", str(output), "--format", "files", "--actors", "1", "--size", "32", "--style-size", "32",
          "--limit", "4", "--quiet"], tmp_path, s3_endpoint)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["written"] == 4 and manifest["missing"] == [] and len(list(output.glob("*.jpg"))) == 4

    # A checkpoint Ray names by its path inside the bucket comes down whole (the sweep's best trial).
    s3.pipe({f"{BUCKET}/ray/sweeps/trials/t1/checkpoint_000001/model.safetensors": b"weights",
             f"{BUCKET}/ray/sweeps/trials/t1/checkpoint_000001/sub/state.json": b"{}"})
    storage.download_tree(f"{BUCKET}/ray/sweeps/trials/t1/checkpoint_000001", tmp_path / "best",
                          like=f"s3://{BUCKET}/ray/sweeps")
    assert (tmp_path / "best/model.safetensors").read_bytes() == b"weights"
    assert (tmp_path / "best/sub/state.json").read_bytes() == b"{}"

    # A mirror that no longer matches the local shards is refused before any compute, with the fix.
    s3.pipe_file(f"{BUCKET}/shards/demo_photos-train/manifest.json", b'{"shards": []}')
    local = {"content": [str(tmp_path / "shards/demo_photos-train")], "style": []}
    with pytest.raises(CatalogueError, match=r"not a copy of .*dvc repro -f shard@demo_photos-train"):
        storage.worker_shards(yaml.safe_load((tmp_path / "params.yaml").read_text()), local)


def test_storage_settings_are_checked_and_local_defaults_stay_in_the_repository(tmp_path):
    from pipelines import storage
    from pipelines.sources import CatalogueError

    with pytest.raises(CatalogueError, match=r"storage has unknown key\(s\) shard; its keys: shards, checkpoints"):
        storage.settings({"storage": {"shard": "s3://b/x"}})
    with pytest.raises(CatalogueError, match=r"storage.checkpoints=3 is invalid; it must be null or a non-empty string"):
        storage.settings({"storage": {"shards": None, "checkpoints": 3}})
    with pytest.raises(CatalogueError, match=r"storage lacks checkpoints; give every key a value there"):
        storage.settings({"storage": {"shards": None}})  # params.yaml is the one home: no default here
    local_defaults = {"storage": {"shards": None, "checkpoints": None}}
    assert storage.ray_storage(local_defaults, tmp_path, "train") == str(tmp_path / "ray_results" / "train")
    remote = {"storage": {"shards": None, "checkpoints": "s3://b/ray/"}}
    assert storage.ray_storage(remote, tmp_path, "sweeps") == "s3://b/ray/sweeps"
    assert storage.ray_storage(local_defaults, tmp_path, "train", override="elsewhere") == str(tmp_path / "elsewhere")
    local = {"content": [str(tmp_path / "shards/a-train")], "style": []}
    assert storage.worker_shards(local_defaults, local) == local  # one machine: the local folders
