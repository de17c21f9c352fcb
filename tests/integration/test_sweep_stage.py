"""The `sweep` stage: Ray Tune + Ray Train trials on real demo shards, ASHA, MLflow on SQLite, interrupt and resume.

The stage runs as DVC runs it, a separate process with its own local Ray; the test interrupts it with
SIGINT (Ctrl+C) mid-sweep and runs it again.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from pipelines import sweep  # noqa: E402
from pipelines.sources import CatalogueError  # noqa: E402

from workspace_helpers import REPO, demo_workspace  # noqa: E402
NAME = "adain-balanced_gram"
OTHER = "linear-balanced_gram"  # swept in the full profile only
GOOD, BAD = [1e-4, 2e-4], [0.5, 1.0]  # a learning rate of 0.5 wrecks the decoder at its first step


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    def edit(params):
        params["train"]["grid"] = {"models": ["adain"], "losses": ["balanced_gram"]}
        # Two sane learning rates first, then two that wreck the model: with two trials at once (2 CPUs, one
        # worker each) the wrecked ones start only after a sane one has passed ASHA's first rung, so ASHA
        # must stop them there.
        params["sweep"].update(samples=1, max_concurrent="auto", asha={"grace_period": 1, "reduction_factor": 2},
                               combinations={NAME: {"lr": {"grid": GOOD + BAD}}, OTHER: {"lr": {"grid": [1e-4]}}},
                               run_in={"demo": [NAME], "full": [NAME, OTHER]})
        params["sweep"]["profiles"]["demo"] = {"steps": 12, "report_every": 3}

    root = tmp_path_factory.mktemp("sweep")
    demo_workspace(root, photos={"train": 16, "val": 16}, artworks={"train": 20, "val": 20}, edit=edit)
    return root


def _stage(root: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipelines.sweep", "--combination", NAME, "--params", "params.yaml",
               "--shards", "shards", "--models", "models", "--reports", "reports", "--ray-storage", "ray_results"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _children_with_validation(client, experiment_name: str) -> int:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mlflow.parentRunId` != ''")
    return sum("val/objective" in run.data.metrics for run in runs)


def test_a_sweep_interrupted_and_rerun_completes_with_asha_stops_and_mlflow_parent_and_children(workspace):
    from mlflow.tracking import MlflowClient

    import stylecore

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    first = _stage(workspace)
    deadline = time.monotonic() + 300
    # Interrupt once both running trials have reported a validation score (and a checkpoint) to resume from.
    while _children_with_validation(client, "stylecore-demo") < 2:
        assert first.poll() is None, f"the sweep ended before it was interrupted:\n{first.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no trial reported a validation score within 300 s"
        time.sleep(2)
    first.send_signal(signal.SIGINT)
    log, _ = first.communicate(timeout=240)
    assert first.returncode == 1, log[-3000:]
    assert "interrupted" in log and f"dvc repro sweep@{NAME}" in log
    assert not (workspace / "models/sweeps").exists() and not (workspace / "reports/sweeps").exists()

    second = _stage(workspace)
    log, _ = second.communicate(timeout=600)
    assert second.returncode == 0, log[-5000:]
    assert "restoring the interrupted sweep" in log
    # the trials that run at once share this machine's CPUs: the line says the threads each trial really gets
    # sweep.workers: auto on this machine's own CPU-only Ray: each trial trains in its Tune trial actor (local mode)
    said = re.search(r"up to (\d+) trial\(s\) at once, each Ray Train in this process \(local mode\) on CPU "
                     r"\((\d+) torch thread", log)
    assert said, log[-3000:]
    assert int(said.group(2)) == max(1, (os.cpu_count() or 1) // int(said.group(1)))
    assert "rank 0: resumed from step" in log  # the interrupted trials went on from their kept checkpoints

    report = json.loads((workspace / "reports/sweeps" / f"{NAME}.json").read_text())
    trials = report["trials"]
    assert sorted(t["config"]["lr"] for t in trials) == GOOD + BAD and len({t["trial_id"] for t in trials}) == 4
    outcomes = {t["config"]["lr"]: t["outcome"] for t in trials}
    # ASHA stops a wrecked model at the first rung. Where it goes NaN (bf16 on some CPUs) its score is reported as
    # +inf, the worst; it trains on while Tune weighs that report, so on a busy machine the non-finite guard may
    # end it first: "diverged", not "failed".
    assert all(outcomes[lr] in ("stopped_early", "diverged") for lr in BAD), outcomes
    assert all(outcomes[lr] != "diverged" for lr in GOOD), outcomes
    assert all(t["step"] < 12 for t in trials if t["outcome"] in ("stopped_early", "diverged"))
    finished = [t for t in trials if t["outcome"] == "finished"]
    assert finished and report["counts"]["failed"] == 0
    assert report["best"]["metrics"]["val/objective"] == min(t["metrics"]["val/objective"] for t in finished)
    best = next(t for t in finished if t["trial_id"] == report["best"]["trial_id"])
    assert best["config"]["lr"] in GOOD and best["step"] == 12
    # validation pairs come from the "validation" half of the val shards only
    from stylecore.heldout import heldout_part

    assert {heldout_part(k) for k in report["validation"]["contents"] + report["validation"]["styles"]} == {"validation"}

    checkpoint = workspace / "models/sweeps" / NAME / "checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["step"] == 12 and config["train"]["lr"] == best["config"]["lr"]
    assert stylecore.load(checkpoint) is not None
    assert json.loads((checkpoint / "mlflow.json").read_text())["run_id"] == best["mlflow_run_id"]

    experiment = client.get_experiment_by_name("stylecore-demo")
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == best["trial_id"]
    assert parent.data.metrics["best/val/objective"] == pytest.approx(best["metrics"]["val/objective"])
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4  # the resumed trials reopened their runs: no duplicates
    by_trial = {run.data.tags["sweep.trial_id"]: run for run in children}
    for trial in trials:
        run = by_trial[trial["trial_id"]]
        assert run.info.run_id == trial["mlflow_run_id"]
        assert run.info.status == {"finished": "FINISHED", "stopped_early": "KILLED", "diverged": "FAILED"}[trial["outcome"]]
        assert run.data.tags["sweep.outcome"] == trial["outcome"] and run.data.tags["sweep.step"] == str(trial["step"])
        assert float(run.data.params["trial.lr"]) == trial["config"]["lr"]
        # the run's name says what the trial tried (the UI's runs table), then which trial it is
        assert run.info.run_name == f"{NAME} lr={trial['config']['lr']:.3g} · {trial['trial_id']}"
        # The report's curve has every validation the trial ran, a restore notwithstanding (every 3 steps from the
        # first), and agrees with the value Tune weighed at its last step. A stopped trial trains on while Tune
        # weighs its report, so its curve may go on past the step ASHA stopped it at; a finished one ends at 12.
        curve = {point["step"]: point["val/objective"] for point in trial["curve"]}
        assert list(curve) == list(range(3, max(curve) + 1, 3)), (trial["trial_id"], list(curve))
        assert curve[trial["step"]] == pytest.approx(trial["metrics"]["val/objective"])
        assert max(curve) == 12 if trial["outcome"] == "finished" else trial["step"] <= max(curve) <= 12
        history = client.get_metric_history(run.info.run_id, "val/objective")
        assert {m.step for m in history} == set(curve)
    assert by_trial[best["trial_id"]].data.tags["model_uri"] == report["best"]["model_uri"]
    # finished: Tune's and the trials' Ray state is gone, so a later sweep starts afresh
    assert not (workspace / "ray_results" / report["sweep"]).exists()
    assert not list((workspace / "ray_results/trials").glob(f"{report['sweep']}-*"))


@pytest.mark.parametrize("space, message", [
    ({"lr": {"logarithmic": [1e-5, 1e-3]}}, r"sweep.combinations.adain-balanced_gram.lr must be one of \{loguniform"),
    ({"lr": {"loguniform": [0, 1e-3]}}, r"\.lr: loguniform needs low > 0"),
    ({"lr": {"uniform": [1e-3, 1e-5]}}, r"\.lr: uniform needs \[low, high\] numbers with low < high"),
    ({"lr": {"choice": [1e-4, -1.0]}}, r"a trial with \{'lr': -1.0\} is invalid: .*lr must be a positive number"),
    ({"lr_schedule": {"grid": ["inverse", "linear"]}}, r"lr_schedule='linear' is not one of"),
    ({"batch_size": {"randint": [0, 4]}}, r"data config.batch_size=0 is invalid; it must be a positive integer"),
    ({"no_such_key": {"choice": [1]}}, r"unknown key\(s\) no_such_key"),
])
def test_a_bad_search_space_fails_before_ray_starts_and_names_the_key(workspace, space, message):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["sweep"]["combinations"][NAME] = space
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(CatalogueError, match=message):
        sweep.run(NAME, params_path=workspace / "bad.yaml", shards_root=workspace / "shards",
                  models_root=workspace / "bad-models", reports=workspace / "bad-reports",
                  ray_storage=workspace / "bad-ray")
    assert not (workspace / "bad-ray").exists() and not (workspace / "bad-reports").exists()


def test_sweep_settings_that_could_never_work_are_refused(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    cases = [({"profiles": {"demo": {"steps": 12, "report_every": 12}}}, r"reports 1 time.*grace_period is 1.*report_every"),
             ({"objective": {"style_gram": 1.0}}, r"sweep.objective=\{'style_gram': 1.0\} is invalid; it must be a mapping of evaluation metrics"),
             ({"workers": -1}, r"sweep.workers=-1 is invalid; it must be one of auto or an integer ≥ 0")]
    for change, message in cases:
        bad = yaml.safe_load(yaml.safe_dump(params))
        bad["sweep"].update(change)
        (workspace / "bad.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(CatalogueError, match=message):
            sweep.run(NAME, params_path=workspace / "bad.yaml", shards_root=workspace / "shards",
                      ray_storage=workspace / "bad-ray")
    with pytest.raises(CatalogueError, match=r"sweep.combinations has no 'sanet-gram'; defined: adain-balanced_gram"):
        sweep.run("sanet-gram", params_path=workspace / "params.yaml", shards_root=workspace / "shards")


def test_a_diverged_model_scores_the_worst_validation_objective_so_asha_can_stop_it():
    """ASHA never stops a NaN score (NaN < cutoff is False): the validation reports a diverged model as +inf."""
    import math

    import torch

    import stylecore
    from pipelines.ray_training import Validation
    from stylecore.heldout import HeldOutPairs

    torch.manual_seed(0)
    pairs = HeldOutPairs(torch.rand(2, 3, 32, 32), ["c0", "c1"], torch.rand(2, 3, 32, 32), ["s0", "s1"])
    model = stylecore.models.build("adain", encoder_weights="random:0")
    validate = Validation({"pairs": pairs, "weights": "random:0", "objective": {"style_classic": 1.0, "content": 1.0},
                           "batch_size": 4}, torch.device("cpu"), None)

    class Trained:
        step = 3

    Trained.model = model
    healthy = validate(Trained)
    assert math.isfinite(healthy["val/objective"])
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.fill_(float("nan"))
    wrecked = validate(Trained)
    assert math.isnan(wrecked["val/style_classic"]) and wrecked["val/objective"] == math.inf


def test_a_combination_outside_the_profile_is_a_cheap_skipped_stage_and_run_in_names_only_defined_ones(workspace, capsys):
    stale = workspace / "skip-models/sweeps" / OTHER / "checkpoint"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # a sweep of another profile left a model here: it must go
    report = sweep.run(OTHER, params_path=workspace / "params.yaml", shards_root=workspace / "shards",
                       models_root=workspace / "skip-models", reports=workspace / "skip-reports",
                       ray_storage=workspace / "skip-ray")
    assert "not in profile 'demo'" in report["skipped"] and "swept in: full" in report["skipped"]
    assert json.loads((workspace / "skip-reports/sweeps" / f"{OTHER}.json").read_text()) == report
    assert [p.name for p in stale.iterdir()] == ["SKIPPED.json"] and not (workspace / "skip-ray").exists()
    assert f"sweep@{OTHER}: skipped, not in profile 'demo'" in capsys.readouterr().out
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["sweep"]["run_in"]["demo"].append("sanet-gram")
    (workspace / "bad.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(CatalogueError, match=r"sweep.run_in names sanet-gram, which sweep.combinations does not define"):
        sweep.run(NAME, params_path=workspace / "bad.yaml", shards_root=workspace / "shards")

