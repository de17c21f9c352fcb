"""The `classifier` stage as DVC runs it: real demo shards, a local Ray with two DDP workers, MLflow on SQLite
and its Model Registry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from workspace_helpers import REPO, demo_workspace  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    def edit(params):
        demo = params["classifier"]["profiles"]["demo"]
        demo.update(steps=40, batch_size=8, input_size=48, load_size=56, warmup_steps=4)
        params["classifier"]["report_every"] = 20
        params["classifier"]["ray"]["workers"] = 2  # DDP through the stage (the default, auto, is one on a CPU node)

    root = tmp_path_factory.mktemp("classifier")
    # 150 training works: 10 by each of the 15 synthetic painters (classifier.min_works); 30 held out
    demo_workspace(root, photos={"train": 4, "val": 4}, artworks={"train": 150, "val": 30}, edit=edit,
                   sources=("demo_artworks",))
    return root


def _stage(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "pipelines.classifier", "--shards", "shards", "--models", "models",
                           "--ray-storage", "ray_results", *extra], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_stage_trains_with_ray_scores_held_out_artworks_logs_and_registers(workspace):
    from mlflow.tracking import MlflowClient

    from stylecore.classifier import load_classifier

    done = _stage(workspace)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 Ray Train worker(s) on CPU" in done.stdout and "15 artists with ≥ 10 works (0 left out)" in done.stdout
    text = (workspace / "models/classifier/metrics.json").read_text()
    assert str(workspace.resolve()) not in text  # kept in git: the registered source is relative to the repository
    metrics = json.loads(text)
    assert metrics["artists"] == 15 and metrics["styles"] == 5 and metrics["step"] == 40
    heldout = metrics["heldout"]
    assert heldout["images"] == 30 and heldout["chance_top1"] == pytest.approx(1 / 15)
    assert 0 <= heldout["top1"] <= heldout["top5"] <= 1 and 0 <= heldout["style_top1"] <= 1
    assert heldout["style_chance_top1"] == pytest.approx(1 / 5)
    per_artist = metrics["per_artist"]
    assert sum(row["images"] for row in per_artist.values()) == 30 and set(per_artist) <= set(json.loads(
        (workspace / "models/classifier/checkpoint/config.json").read_text())["artists"])
    # the overall top-1 is the per-artist top-1s weighted by their images
    assert heldout["top1"] == pytest.approx(sum(r["top1"] * r["images"] for r in per_artist.values()) / 30)
    assert metrics["pretrained"] is False and "randomly initialised" in metrics["backbone"]
    assert "uncalibrated" in done.stdout

    checkpoint = workspace / "models/classifier/checkpoint"
    model = load_classifier(checkpoint)
    assert len(model.artists) == 15 and model.styles == ["checks", "dots", "noise", "stripes", "waves"]
    assert not (workspace / "ray_results/classifier").exists() or not any((workspace / "ray_results/classifier").iterdir())

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stylecore-demo")
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'classifier'")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["heldout/top1"] == pytest.approx(heldout["top1"])
    # both DDP ranks trained: rank 0 logged the curve at every report
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/artist")] == [20, 40]
    assert {"checkpoint", "per_artist.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    [version] = client.search_model_versions("name = 'stylecore-artist-classifier'")
    assert version.run_id == run.info.run_id and version.tags["heldout_top1"] == f"{heldout['top1']:.4f}"
    # the registered version is the checkpoint: downloaded, it loads (safetensors, nothing unpickled)
    downloaded = client.download_artifacts(run.info.run_id, "checkpoint", str(workspace / "downloaded"))
    assert load_classifier(downloaded).artists == model.artists


def test_settings_and_data_problems_stop_the_stage_before_ray_and_name_the_fix(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["classifier"]["min_works"] = 11  # every painter has 10 training works
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    done = _stage(workspace, "--params", "bad.yaml")
    assert done.returncode == 1 and "classifier.min_works=11" in done.stderr and "lower classifier.min_works" in done.stderr
    assert "ray:" not in done.stdout  # nothing started
    params["classifier"]["min_works"] = 10
    params["classifier"]["profiles"]["demo"]["backbone"] = "alexnet"
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    done = _stage(workspace, "--params", "bad.yaml")
    assert done.returncode == 1 and "classifier.profiles.demo" in done.stderr and "alexnet" in done.stderr


def test_a_report_averages_each_figure_over_the_steps_that_have_it():
    """A batch without a style label has no style loss: the window's mean must not fail on it, nor dilute it."""
    from pipelines.ray_training import window_means

    assert window_means([{"loss/artist": 1.0, "loss/style": 2.0}, {"loss/artist": 3.0}]) == {"loss/artist": 2.0}
    assert window_means([{"loss/artist": 1.0}, {"loss/artist": 3.0, "loss/style": 4.0}]) == {
        "loss/artist": 2.0, "loss/style": 4.0}
