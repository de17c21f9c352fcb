"""The `train` stage: settings resolution, MLflow run reuse, crash-and-rerun resume, logged models.

The DVC grid, run by ``python -m pipelines.repro`` as ``make run`` runs it, is checked in
tests/integration/test_readme.py, on the one pipeline that test builds for the README's blocks."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("ray")
pytest.importorskip("mlflow")

import stylecore  # noqa: E402
from pipelines import train  # noqa: E402
from pipelines.model_uris import log_final_model  # noqa: E402
from pipelines.ray_session import Scale, scaling  # noqa: E402
from pipelines.settings import resolve_combination  # noqa: E402
from pipelines.sources import CatalogueError  # noqa: E402
from pipelines.tracking import start_run  # noqa: E402
from workspace_helpers import small_demo_params  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    """The demo profile's shards, built by the real download and shard stages."""
    from pipelines import download, shard

    root = tmp_path_factory.mktemp("demo")
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(small_demo_params()))
    for source in ("demo_photos", "demo_artworks", "places365", "coco", "wikiart"):
        download.run(source, params_path, root / "raw", progress=False)
        shard.run(source, "train", params_path, root / "raw", root / "shards", progress=False)
    return root


def test_each_balanced_cell_is_calibrated_for_its_model_and_sweeps_scale_the_calibrated_weight(demo_shards, tmp_path):
    from pipelines.search_space import with_values
    from stylecore.config import ConfigError

    shards = demo_shards / "shards"
    params = small_demo_params()
    adain, linear = (resolve_combination(params, model, "balanced_gram", shards) for model in ("adain", "linear"))
    for combination, classic_weight in ((adain, 10.0), (linear, 0.02)):  # the gram cells' inherited weights
        record = combination.calibration
        assert record["batches"] == params["train"]["losses"]["balanced_gram"]["calibrate_batches"]
        assert record["classic_weight"] == pytest.approx(classic_weight)
        assert combination.train.style_params["weight"] == pytest.approx(record["weight"])
        assert record["balanced_ratio"] == pytest.approx(record["classic_ratio"], rel=1e-6)
    assert "calibration" in adain.as_dict() and resolve_combination(params, "adain", "gram", shards).calibration is None
    # the same shards, seed and model give the same weight (DVC reruns the stage only when something changed)
    assert resolve_combination(params, "adain", "balanced_gram", shards).calibration == adain.calibration
    # `stylecore train --params` calibrates as the stage does: the same weight from the same settings and data
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    done = subprocess.run([str(Path(sys.executable).parent / "stylecore"), "train", "--params", str(params_path),
                           "--model", "adain", "--style-loss", "balanced_gram", "--steps", "1", "--content",
                           str(shards / "demo_photos-train"), "--style", str(shards / "demo_artworks-train"),
                           "--output", str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = re.search(r"balanced style weight ([0-9.e+-]+), calibrated on 4 batches", done.stdout)
    assert printed and float(printed.group(1)) == pytest.approx(adain.calibration["weight"], rel=1e-3)

    scaled = with_values(adain, {"style_weight_scale": 2.0})
    assert scaled.train.style_params["weight"] == pytest.approx(2 * adain.calibration["weight"])
    with pytest.raises(ConfigError, match="search style_weight_scale, a factor on it, instead"):
        with_values(adain, {"style_params.weight": 3.0})
    with pytest.raises(ConfigError, match="scales a calibrated balanced style weight; adain-gram has none"):
        with_values(resolve_combination(params, "adain", "gram", shards), {"style_weight_scale": 2.0})
    both = small_demo_params()
    both["train"]["losses"]["balanced_gram"]["style_params"] = {"weight": 3.0}
    with pytest.raises(CatalogueError, match="derives the style weight.*remove one of the two"):
        resolve_combination(both, "adain", "balanced_gram", shards)
    misplaced = small_demo_params()
    misplaced["train"]["losses"]["gram"] = {"calibrate_batches": 2}
    with pytest.raises(CatalogueError, match="gram has none to calibrate"):
        resolve_combination(misplaced, "adain", "gram", shards)


def test_settings_merge_profile_model_and_loss_and_fail_early_with_the_key(demo_shards, local_ray):
    params = small_demo_params()
    params["train"]["grid"]["models"].append("magenta")
    params["train"]["models"]["magenta"] = {"lr": 2e-3, "model_params": {"predictor": "mobilenet_v2"}}
    params["train"]["losses"]["balanced_gram"] = {"lr": 5e-4, "style_params": {"weight": 3.0}}
    combination = resolve_combination(params, "magenta", "balanced_gram", demo_shards / "shards")
    assert combination.train.lr == 5e-4  # the loss's settings are merged last
    assert combination.train.style_params == {"weight": 3.0} and combination.train.style_loss == "balanced_gram"
    # the profile's weights switch reaches every pretrained part, and the model's own keys survive the merge
    assert combination.train.model_params == {"predictor": "mobilenet_v2", "encoder_weights": "random:0",
                                              "predictor_weights": "random:0"}
    assert combination.data.batch_size == 2 and not hasattr(combination.train, "batch_size")
    assert [Path(p).name for p in combination.content] == ["demo_photos-train"]
    assert [Path(p).name for p in combination.style] == ["demo_artworks-train"]
    assert all(Path(p).is_absolute() for p in combination.content + combination.style)  # Ray workers' cwd differs
    assert combination.digest() != resolve_combination(params, "magenta", "gram", demo_shards / "shards").digest()

    with pytest.raises(CatalogueError, match="not in the grid"):
        resolve_combination(params, "adain", "mean_std", demo_shards / "shards")
    bad = small_demo_params()
    bad["train"]["models"]["adain"] = {"lr": -1}
    with pytest.raises(CatalogueError, match="adain × gram: training config: lr must be a positive number"):
        resolve_combination(bad, "adain", "gram", demo_shards / "shards")
    bad = small_demo_params()
    bad["train"]["ray"]["workres"] = 2
    with pytest.raises(CatalogueError, match=r"train.ray has unknown key\(s\) workres"):
        resolve_combination(bad, "adain", "gram", demo_shards / "shards")
    with pytest.raises(train.TrainStageError, match="content shards of profile 'demo'.*dvc repro shard"):
        resolve_combination(small_demo_params(), "adain", "gram", demo_shards / "no-shards")
    # workers: auto on this 2-CPU, GPU-less machine's own Ray: one rank in the stage's process, both CPUs' threads
    assert scaling(combination.ray) == Scale(0, False, 1.0, 2)
    assert scaling(dataclasses.replace(combination.ray, workers=2)) == Scale(2, False, 1.0, 1)
    # more than this 2-CPU Ray holds: Ray would wait forever, so refuse now
    with pytest.raises(train.TrainStageError, match="train.ray.workers=3 needs 3 CPUs but Ray has 2"):
        scaling(dataclasses.replace(combination.ray, workers=3))
    with pytest.raises(train.TrainStageError, match="1 workers × 1.0 GPU but Ray has 0 GPUs"):
        scaling(dataclasses.replace(combination.ray, workers=1, use_gpu=True))
    full = small_demo_params()
    full["profile"] = "full"  # the real datasets were never downloaded here: their folders are skipped stubs
    with pytest.raises(train.TrainStageError, match="not in profile 'demo'"):
        resolve_combination(full, "adain", "gram", demo_shards / "shards")


def test_an_unfinished_mlflow_run_is_reopened_and_a_finished_one_never(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = start_run(uri, "grid", tmp_path / "artifacts", "adain-gram", {"lr": 1}, {"model": "adain"}, resume_key="k1")
    client = MlflowClient(uri)
    client.set_terminated(first, status="FAILED")
    again = start_run(uri, "grid", tmp_path / "artifacts", "adain-gram", {"lr": 1}, {"model": "adain"}, resume_key="k1")
    assert again == first and client.get_run(first).info.status == "RUNNING"
    other = start_run(uri, "grid", tmp_path / "artifacts", "adain-gram", {"lr": 2}, {"model": "adain"}, resume_key="k2")
    assert other != first  # other settings, another run
    client.set_terminated(first, status="FINISHED")
    assert start_run(uri, "grid", tmp_path / "artifacts", "adain-gram", {"lr": 1}, {}, resume_key="k1") != first


def test_the_shard_folders_a_run_read_are_its_mlflow_dataset_inputs_with_dvc_hashes(demo_shards, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.provenance import data_tags, shard_inputs
    from pipelines.tracking import log_shard_inputs

    folders = [str(demo_shards / "shards" / name) for name in ("demo_photos-train", "demo_artworks-train")]
    manifests = [json.loads((Path(f) / "manifest.json").read_text()) for f in folders]
    # dvc.lock knows the photos (as `dvc repro` records a stage's output), not the artworks
    relative = os.path.relpath(folders[0], tmp_path)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"shard@demo_photos-train": {"outs": [{"path": relative, "md5": "0" * 32 + ".dir"}]}}}))
    mirror = "s3://bucket/shards/demo_artworks-train"  # storage.shards: the workers read a mirror
    inputs = shard_inputs(tmp_path / "dvc.lock", folders, tmp_path, [folders[0], mirror])
    assert data_tags(inputs) == {"data.demo_photos-train": "0" * 32 + ".dir",
                                 "data.demo_artworks-train": "not in dvc.lock (not produced by dvc repro)"}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = start_run(uri, "grid", tmp_path / "artifacts", "adain-gram", {}, {})
    log_shard_inputs(uri, run_id, {"training": inputs})
    log_shard_inputs(uri, run_id, {"training": inputs})  # a resumed run logs them again: nothing is added
    dataset_inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    logged = {d.dataset.name: d for d in dataset_inputs}
    assert set(logged) == {"demo_photos-train", "demo_artworks-train"} and len(dataset_inputs) == 2
    photos, artworks = logged["demo_photos-train"], logged["demo_artworks-train"]
    assert photos.dataset.digest == "0" * 32 + ".dir" and photos.dataset.source_type == "local"
    assert json.loads(photos.dataset.source) == {"uri": Path(folders[0]).as_uri()}
    assert (artworks.dataset.source_type, json.loads(artworks.dataset.source)) == ("s3", {"uri": mirror})
    # not versioned by DVC: a digest of its manifest, so another build of the folder is another dataset
    assert artworks.dataset.digest.startswith("manifest-") and artworks.dataset.digest != photos.dataset.digest
    for item, manifest in zip((photos, artworks), manifests):
        assert json.loads(item.dataset.profile) == {"num_rows": sum(s["samples"] for s in manifest["shards"]),
                                                    "num_shards": len(manifest["shards"])}
        assert [(t.key, t.value) for t in item.tags] == [("mlflow.data.context", "training")]


def test_rerunning_the_stage_after_a_crash_resumes_the_ray_run_and_the_mlflow_run(demo_shards, local_ray, tmp_path,
                                                                                  monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params_path = tmp_path / "params.yaml"
    params = small_demo_params(steps=6)
    params["train"]["ray"]["max_failures"] = 0  # the first worker death fails the stage
    params["train"]["ray"]["workers"] = 2  # DDP through the stage: both ranks resume from one checkpoint
    params["mlflow"]["artifacts"] = str(tmp_path / "artifacts")
    params_path.write_text(yaml.safe_dump(params))
    marker = tmp_path / "died"
    kwargs = dict(params_path=params_path, shards_root=demo_shards / "shards", models_root=tmp_path / "models",
                  ray_storage=tmp_path / "ray", extra={"fail_at_step": 5, "fail_marker": str(marker)})
    with pytest.raises(train.TrainStageError, match="re-run the stage: it resumes from the last checkpoint"):
        train.run("adain", "gram", **kwargs)
    assert marker.read_text().startswith("failed once") and not (tmp_path / "models/adain-gram").exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (failed,) = client.search_runs([client.get_experiment_by_name("stylecore-demo").experiment_id])
    assert failed.info.status == "FAILED"

    metrics = train.run("adain", "gram", **kwargs)  # the same command again
    # Both ranks resumed from one reported checkpoint (Ray registers a report when its controller next
    # polls, so a death soon after the step-4 report may fall back to step 2), not from scratch.
    resumed = {line.split(" resumed")[0]: int(line.rsplit(" ", 1)[1]) for line in marker.read_text().splitlines()
               if "resumed" in line}
    assert len(resumed) == 2 and len(set(resumed.values())) == 1 and set(resumed.values()) <= {2, 4}
    assert metrics["step"] == 6 and set(metrics["loss"]) == {"total", "content", "style"}
    (run,) = client.search_runs([failed.info.experiment_id])  # the same run, now finished
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert stylecore.load(tmp_path / "models/adain-gram/checkpoint").name == "adain"
    assert json.loads((tmp_path / "models/adain-gram/metrics.json").read_text()) == metrics
    assert not any((tmp_path / "ray").iterdir())  # finished: a later re-run trains afresh


def test_a_run_in_the_stages_own_process_keeps_its_checkpoints_and_resumes_after_the_process_dies(
        demo_shards, local_ray, tmp_path, monkeypatch):
    """workers: auto on this machine's own CPU-only Ray is Ray Train's local mode: the training runs in the stage's
    process, and its checkpoints are kept where Ray Train keeps a worker group's (the newest ``keep_checkpoints``,
    each marked complete). The stage's process dies mid-run (a real exit, as an out-of-memory kill would end it);
    the same command again resumes from the newest complete checkpoint, not from a copy the crash cut short."""
    from mlflow.tracking import MlflowClient

    from pipelines.run_checkpoints import COMPLETE

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    params = small_demo_params(steps=6, report_every=1)
    assert params["train"]["ray"]["workers"] == "auto" and params["train"]["ray"]["keep_checkpoints"] == 2
    params["mlflow"]["artifacts"] = str(tmp_path / "artifacts")
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    marker = tmp_path / "died"
    kwargs = dict(params_path=params_path, shards_root=demo_shards / "shards", models_root=tmp_path / "models",
                  ray_storage=tmp_path / "ray", extra={"fail_at_step": 5, "fail_marker": str(marker)})
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY")}
    stage = ("import json, sys; from pathlib import Path; from pipelines import train; a = json.loads(sys.argv[1]); "
             "train.run('adain', 'gram', **{k: Path(v) if k.endswith(('_path', '_root')) else v for k, v in a.items()})")
    died = subprocess.run([sys.executable, "-c", stage, json.dumps(kwargs, default=str)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == 1 and marker.read_text() == "failed once\n", died.stdout + died.stderr
    assert "Ray Train in this process (local mode) on CPU (2 torch thread(s))" in died.stdout
    (run_folder,) = (tmp_path / "ray").iterdir()
    # reports at steps 1-4 before the death at 5: the newest two kept, each marked complete
    assert sorted(p.name for p in run_folder.iterdir()) == [f"step-00000{n}{end}" for n in (3, 4) for end in ("", COMPLETE)]
    half_copied = run_folder / "step-000005"  # what a death in the middle of a copy leaves: no mark
    half_copied.mkdir()
    (half_copied / "config.json").write_text("{")

    metrics = train.run("adain", "gram", **kwargs)  # the same command again, in this process
    assert marker.read_text().splitlines()[1:] == ["rank 0 resumed at step 4"]
    assert metrics["step"] == 6 and set(metrics["loss"]) == {"total", "content", "style"}
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("stylecore-demo").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["workers"] == "1 × CPU in-process"
    assert stylecore.load(tmp_path / "models/adain-gram/checkpoint").name == "adain"
    assert not run_folder.exists()  # finished: a later re-run trains afresh


def _sample_grid_sizes(folder: Path) -> set[tuple[int, int]]:
    from PIL import Image

    return {Image.open(path).size for path in folder.rglob("*.png")}


def test_one_default_changed_in_params_yaml_reaches_the_cli_and_the_ray_path_alike(demo_shards, local_ray, tmp_path,
                                                                                   monkeypatch):
    """params.yaml is the one home of the data settings: a changed crop and batch size shape the batches of the
    Ray workers and of `stylecore train --params` alike (seen in the sample grids both write: one row of
    content | style | output crops per sample, up to 4 rows, 2 px padding). Running the stage in-process
    leaves the caller's MLflow tracking URI as it was."""
    import mlflow
    from mlflow.tracking import MlflowClient

    crop, batch = 24, 3
    params = small_demo_params(steps=2, report_every=2, sample_every=2, crop_size=crop, load_size=28, batch_size=batch)
    params["train"]["ray"]["workers"] = 1
    params["mlflow"].update(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=str(tmp_path / "artifacts"))
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    expected = {(3 * crop + 4 * 2, batch * crop + (batch + 1) * 2)}  # (width, height) of a 3-column grid

    caller_uri = f"sqlite:///{tmp_path / 'callers-own.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", caller_uri)
    mlflow.set_tracking_uri(caller_uri)
    train.run("adain", "gram", params_path=params_path, shards_root=demo_shards / "shards",
              models_root=tmp_path / "models", ray_storage=tmp_path / "ray")
    assert mlflow.get_tracking_uri() == caller_uri and os.environ["MLFLOW_TRACKING_URI"] == caller_uri
    client = MlflowClient(params["mlflow"]["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("stylecore-demo").experiment_id])
    assert run.data.params["data.crop_size"] == str(crop) and run.data.params["data.flip"] == "True"
    logged = Path(client.download_artifacts(run.info.run_id, "images", str(tmp_path / "ray-samples")))
    assert _sample_grid_sizes(logged) == expected

    content, style = (demo_shards / "shards" / f"{name}-train" for name in ("demo_photos", "demo_artworks"))
    done = subprocess.run([str(Path(sys.executable).parent / "stylecore"), "train", "--params", str(params_path),
                           "--model", "adain", "--style-loss", "gram", "--content", str(content), "--style", str(style),
                           "--output", str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _sample_grid_sizes(tmp_path / "cli" / "samples") == expected


@pytest.mark.parametrize("model", ["adain", "linear", "sanet", "magenta", "vae_adain"])
def test_every_model_is_logged_as_a_model_mlflow_serves_at_any_size(model, demo_shards, tmp_path):
    """The train stage's last step for each model of the demo grid: its checkpoint (the demo's settings) logged
    as an MLflow model that loads through the generic pyfunc interface and stylizes any image size, with alpha
    as a parameter."""
    import mlflow
    import numpy as np

    from stylecore.training import Trainer

    params = small_demo_params()
    params["train"]["grid"]["models"] = [model]
    combination = resolve_combination(params, model, "balanced_gram", demo_shards / "shards")
    checkpoint = Trainer(combination.train, device="cpu").save_checkpoint(tmp_path / "checkpoint")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run(experiment_id=mlflow.create_experiment("models", str(tmp_path / "artifacts"))):
        uri = log_final_model(checkpoint, combination.data.crop_size)
    served = mlflow.pyfunc.load_model(uri)
    pair = np.random.default_rng(0).random((2, 6, 40, 56), dtype=np.float32)
    stylized = served.predict(pair, params={"alpha": 0.5})
    assert stylized.shape == (2, 3, 40, 56) and np.isfinite(stylized).all()
    with torch.inference_mode():  # the checkpoint's own model, called directly, gives the same images
        direct = stylecore.load(checkpoint).eval()(torch.from_numpy(pair[:, :3]), torch.from_numpy(pair[:, 3:]), alpha=0.5)
    np.testing.assert_allclose(stylized, direct.numpy(), atol=1e-5)
