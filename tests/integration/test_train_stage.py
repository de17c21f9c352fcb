"""The `train` stage: settings resolution, MLflow run reuse, crash-and-rerun resume, and the DVC grid."""

import csv
import dataclasses
import json
import os
import re
import shutil
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
from stylecore.metrics import spread_ratio  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _params(**changes) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # val: 5 photos and 2+ artworks of each family in the held-out test half, 3 photos and 1+ in the validation half
    params["sources"]["demo_photos"]["count"] = {"train": 16, "val": 8}
    params["sources"]["demo_artworks"]["count"] = {"train": 15, "val": 20}
    params["train"]["profiles"]["demo"].update(steps=4, report_every=2, sample_every=2, crop_size=32, load_size=40)
    params["evaluate"]["protocols"]["demo"].update(contents=3, styles_per_label=1, size=32)
    # one small sweep: a sane and a wrecking learning rate, two reports each
    params["sweep"].update(samples=1, validation={"contents": 2, "styles_per_label": 1, "size": 32, "seed": 0,
                                                  "batch_size": 16},
                           combinations={"adain-balanced_gram": {"lr": {"grid": [1e-4, 1.0]}}},
                           run_in={"demo": ["adain-balanced_gram"], "full": ["adain-balanced_gram"]})
    params["sweep"]["profiles"]["demo"] = {"steps": 4, "report_every": 2}
    params["stylize"].update(contents=3, size=32, style_size=32)
    # the deception rate's judge: one work per synthetic painter here, so any artist with a work counts
    params["classifier"].update(min_works=1, report_every=2)
    params["classifier"]["ray"]["workers"] = 1
    params["classifier"]["profiles"]["demo"].update(steps=4, batch_size=4, input_size=32, load_size=40, warmup_steps=1)
    # The DVC wiring is the same for every cell; each model's own training and logged model are tested apart
    # (tests/unit/test_training.py, test_every_model_is_logged_as_a_model_mlflow_serves_at_any_size).
    params["train"]["grid"] = {"models": ["adain", "linear"], "losses": ["gram", "balanced_gram"]}
    for key, value in changes.items():
        params["train"]["profiles"]["demo"][key] = value
    return params


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    """The demo profile's shards, built by the real download and shard stages."""
    from pipelines import download, shard

    root = tmp_path_factory.mktemp("demo")
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(_params()))
    for source in ("demo_photos", "demo_artworks", "places365", "coco", "wikiart"):
        download.run(source, params_path, root / "raw", progress=False)
        shard.run(source, "train", params_path, root / "raw", root / "shards", progress=False)
    return root


def test_each_balanced_cell_is_calibrated_for_its_model_and_sweeps_scale_the_calibrated_weight(demo_shards, tmp_path):
    from pipelines.search_space import with_values
    from stylecore.config import ConfigError

    shards = demo_shards / "shards"
    params = _params()
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
    both = _params()
    both["train"]["losses"]["balanced_gram"]["style_params"] = {"weight": 3.0}
    with pytest.raises(CatalogueError, match="derives the style weight.*remove one of the two"):
        resolve_combination(both, "adain", "balanced_gram", shards)
    misplaced = _params()
    misplaced["train"]["losses"]["gram"] = {"calibrate_batches": 2}
    with pytest.raises(CatalogueError, match="gram has none to calibrate"):
        resolve_combination(misplaced, "adain", "gram", shards)


def test_settings_merge_profile_model_and_loss_and_fail_early_with_the_key(demo_shards, local_ray):
    params = _params()
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
    bad = _params()
    bad["train"]["models"]["adain"] = {"lr": -1}
    with pytest.raises(CatalogueError, match="adain × gram: training config: lr must be a positive number"):
        resolve_combination(bad, "adain", "gram", demo_shards / "shards")
    bad = _params()
    bad["train"]["ray"]["workres"] = 2
    with pytest.raises(CatalogueError, match=r"train.ray has unknown key\(s\) workres"):
        resolve_combination(bad, "adain", "gram", demo_shards / "shards")
    with pytest.raises(train.TrainStageError, match="content shards of profile 'demo'.*dvc repro shard"):
        resolve_combination(_params(), "adain", "gram", demo_shards / "no-shards")
    assert scaling(combination.ray) == Scale(2, False, 1.0, 1)  # 2 CPUs / 2 workers, no GPU here
    # more than this 2-CPU Ray holds: Ray would wait forever, so refuse now
    with pytest.raises(train.TrainStageError, match="train.ray.workers=3 needs 3 CPUs but Ray has 2"):
        scaling(dataclasses.replace(combination.ray, workers=3))
    with pytest.raises(train.TrainStageError, match="1 workers × 1.0 GPU but Ray has 0 GPUs"):
        scaling(dataclasses.replace(combination.ray, workers=1, use_gpu=True))
    full = _params()
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


def test_rerunning_the_stage_after_a_crash_resumes_the_ray_run_and_the_mlflow_run(demo_shards, local_ray, tmp_path,
                                                                                  monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params_path = tmp_path / "params.yaml"
    params = _params(steps=6)
    params["train"]["ray"]["max_failures"] = 0  # the first worker death fails the stage
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
    params = _params(steps=2, report_every=2, sample_every=2, crop_size=crop, load_size=28, batch_size=batch)
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

    params = _params()
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


def _run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.timeout(1800)  # 4 train stages, a sweep, evaluate, register, stylize: ≈ 8 min on a slow 2-core day
def test_dvc_repro_trains_the_demo_grid_logs_every_run_and_a_second_repro_is_a_no_op(tmp_path):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(_params()))
    for folder in ("pipelines", "stylecore"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("/data/\n/models/\n/mlflow.db\n/mlartifacts/\n/ray_results/\n")
    _run(repo, "git", "init", "-q")
    _run(repo, sys.executable, "-m", "dvc", "init", "-q")
    _run(repo, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "pipeline")
    commit = _run(repo, "git", "rev-parse", "HEAD").strip()

    # The README's way: every stage connects to one shared local Ray (pipelines/repro.py)
    first = _run(repo, sys.executable, "-m", "pipelines.repro")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    grid = [(m, loss) for m in params["train"]["grid"]["models"] for loss in params["train"]["grid"]["losses"]]
    assert len(grid) == 4 and all(f"train@{m}-{loss}" in first for m, loss in grid)
    # every train stage, the sweep, the classifier, optimize and the stylize stage (all champions in one pipeline)
    # connect to it
    assert first.count("ray: starting a local instance") == 1 and first.count("ray: connecting to the shared local Ray") == 8

    uri = f"sqlite:///{repo / 'mlflow.db'}"  # the default store: in the repository
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stylecore-demo")
    assert experiment.artifact_location == (repo / "mlartifacts").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs, not traces
    every_run = client.search_runs([experiment.experiment_id])
    runs = {r.info.run_name: r for r in every_run if "mlflow.parentRunId" not in r.data.tags}
    pretrained = list(params["pretrained"]["models"])
    assert pretrained == ["magenta_lite"]  # the demo's baseline with published weights, beside the trained grid
    assert set(runs) == {f"{m}-{loss}" for m, loss in grid} | {"evaluate", "sweep adain-balanced_gram", "classifier",
                                                               "optimize"} | {f"{name} (pretrained)" for name in pretrained}
    # the sweep ran after its combination's training, a child run per trial, its best a checkpoint of its own
    sweep = json.loads((repo / "reports/sweeps/adain-balanced_gram.json").read_text())
    assert sorted(t["config"]["lr"] for t in sweep["trials"]) == [1e-4, 1.0]
    assert {r.data.tags["mlflow.parentRunId"] for r in every_run if "mlflow.parentRunId" in r.data.tags} == {
        sweep["mlflow_parent_run_id"]} == {runs["sweep adain-balanced_gram"].info.run_id}
    assert json.loads((repo / "models/sweeps/adain-balanced_gram/checkpoint/mlflow.json").read_text())["run_id"] == \
        sweep["best"]["mlflow_run_id"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    mlflow.set_tracking_uri(uri)
    pair = np.random.default_rng(0).random((1, 6, 32, 48), dtype=np.float32)
    for model, loss in grid:
        out = repo / "models" / f"{model}-{loss}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["step"] == 4 and np.isfinite(metrics["loss"]["total"])
        assert stylecore.load(out / "checkpoint").name == model
        run = runs[f"{model}-{loss}"]
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert (tags["model"], tags["loss"], tags["profile"]) == (model, loss, "demo")
        # MLflow's own source tags (the UI's Source column); dvc.lock rewrites do not make the tree dirty
        assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.git.dirty"] == "false"
        assert tags["mlflow.source.name"] == "pipelines/train.py" and tags["mlflow.source.type"] == "JOB"
        assert tags["mlflow.note.content"].startswith(f"{model} × {loss} (train@{model}-{loss}, profile demo): 4 steps")
        assert tags["dvc_stage"] == f"train@{model}-{loss}"
        assert tags["encoder_weights"] == "random:0" and tags["workers"] == "2 × CPU"
        assert tags["loss_encoder"] == "magenta_lite"  # the demo's objectives read trained features
        assert tags["data.demo_photos-train"] == lock["shard@demo_photos-train"]["outs"][0]["md5"]
        assert run.data.params["train.style_loss"] == loss and run.data.params["data.batch_size"] == "2"
        history = client.get_metric_history(run.info.run_id, "loss/total")
        assert sorted({m.step for m in history}) == [1, 2, 3, 4]  # rank 0 logged every step
        assert "samples_per_second" in run.data.metrics and "system/cpu_utilization_percentage" in run.data.metrics
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        assert any("step+2+" in p for p in images) and any("step+4+" in p for p in images)
        # the logged model runs through MLflow's generic interface, at any size, with alpha as a parameter
        served = mlflow.pyfunc.load_model(tags["model_uri"])
        stylized = served.predict(pair, params={"alpha": 1.0})
        assert stylized.shape == (1, 3, 32, 48) and np.isfinite(stylized).all()

    # evaluate ran after the whole grid: a DVC metric per combination, per-style plots, the summary, MLflow
    evaluated = json.loads(_run(repo, sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    table = next(iter(evaluated.values()))["data"]["reports/metrics.json"]["data"]  # keyed by revision ("": workspace)
    assert set(table) == {f"{m}-{loss}" for m, loss in grid} | {"adain-balanced_gram.sweep"} | set(pretrained)
    summary = (repo / "reports" / "summary.md").read_text()
    assert "15 held-out content × style pairs" in summary and "random:0" in summary
    assert re.search(r"lowered the classic style loss for \d of 2 models", summary)
    # the optimisation methods, scored beside every candidate on the pairs the optimize stage covered (1 content)
    assert "Optimisation (gatys, strotss) vs feed-forward, on the same 5 pairs" in summary
    for name, row in table.items():
        styles = list(csv.DictReader((repo / "reports" / "per_style" / f"{name}.csv").open()))
        assert len(styles) == 5 and {s["label"] for s in styles} == {"stripes", "checks", "dots", "waves", "noise"}
        assert row["style_spread"] == pytest.approx(spread_ratio([float(s["style_classic"]) for s in styles]), rel=1e-4)
        run_id = (runs[name].info.run_id if name in runs else runs[f"{name} (pretrained)"].info.run_id
                  if name in pretrained else sweep["best"]["mlflow_run_id"])
        assert client.get_run(run_id).data.metrics["eval/style_classic"] == pytest.approx(row["style_classic"])
    assert "comparison.jpg" in {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    # register: every combination's model is in the registry as the champion (the first version of each)
    registry = json.loads((repo / "reports" / "registry.json").read_text())
    assert set(registry) == {f"stylecore-{m}-{loss}" for m, loss in grid} | {f"stylecore-{n}" for n in pretrained}
    assert {(entry["version"], entry["alias"]) for entry in registry.values()} == {(1, "champion")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        champion = stylecore.load("models:/stylecore-adain-balanced_gram@champion")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    assert champion.name == "adain"
    # stylize: every champion (the registered version itself) stylized the first held-out photos
    stylized = json.loads((repo / "reports" / "stylized" / "summary.json").read_text())
    assert set(stylized) == set(registry)
    for name, entry in registry.items():
        manifest = json.loads((repo / "reports" / "stylized" / name / "manifest.json").read_text())
        assert manifest["model"] == f"models:/{name}/{entry['version']}" and manifest["written"] == 3
        assert len(list((repo / "reports" / "stylized" / name).glob("*.jpg"))) == 3

    assert "Running stage" not in _run(repo, sys.executable, "-m", "dvc", "repro")  # a second repro is a no-op
    # a changed key reruns only the combinations that read it
    params["train"]["models"]["adain"]["lr"] = 2e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = _run(repo, sys.executable, "-m", "dvc", "status")
    changed = {line.rstrip(":") for line in status.splitlines() if line and not line.startswith(("\t", " "))}
    assert changed == {"train@adain-gram", "train@adain-balanced_gram", "sweep@adain-balanced_gram"}
