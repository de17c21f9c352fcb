"""Every code block of README.md, run as a new user would run it (issue 26).

The blocks run in README order in one workspace, each in a fresh ``bash`` that did only the README's documented
set-up (``source .venv/bin/activate``, which the README must show first: without it a fresh shell finds no
``dvc`` or ``stylecore``): shell blocks as scripts, python blocks as files run by that shell's ``python``. A block that no rule below names runs exactly as typed, so a new example is tested the day it is
written. What the test provides, and nothing more:

- the workspace: a git + DVC repository holding this checkout's code, ``dvc.yaml``, ``.dvc/plots/`` and ``params.yaml`` with the
  demo made smaller (``workspace_helpers.small_demo_params``: fewer images and steps, the grid {adain, linear} ×
  {gram, balanced_gram}, a two-trial sweep), ``.venv`` linked to this checkout's environment, and the pipeline
  run in it as ``make run`` runs it (``python -m pipelines.repro``), once: the first test checks what it built
  (every stage's outputs, MLflow runs, the registry, a second repro that does nothing), the second runs the
  blocks;
- the example inputs the README names (``photo.jpg``, ``a.jpg``, ``b.jpg``, ``photos/``, ``paintings/``),
  generated;
- ``TORCH_HOME`` with seeded random VGG-16/19 files where torchvision's cache expects the ImageNet weights
  (nothing can be downloaded here; the README's ``imagenet`` examples then load them as they would the real
  ones);
- an environment with the system PATH and none of the suite's own variables (no ``VIRTUAL_ENV``,
  ``MLFLOW_TRACKING_URI``, ``RAY_ADDRESS``, ``PYTHONPATH``).

:data:`RULES` lists every block handled otherwise, and why.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from workspace_helpers import small_demo_params, write_params

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def first(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")


@dataclass(frozen=True)
class Rule:
    starts: str  # the block whose first line starts with this
    action: str  # skip | server | check | run (with substitutions)
    why: str
    substitutions: tuple[tuple[str, str], ...] = ()


RULES = (
    Rule("make run", "skip", "the two commands themselves: CI runs `make test` (this suite); `make run` is the "
                             "demo, timed in BENCHMARKS.md: its pipeline (python -m pipelines.repro) builds the "
                             "workspace here, so the blocks after it find what a user finds after `make run`"),
    Rule(".venv/bin/mlflow ui", "server", "a server: started, asked for its page over HTTP, stopped (on a free port)",
         (("--port 5000", "--port {port}"),)),
    Rule("stylecore serve", "server", "a server: started, asked for its page over HTTP, stopped (on a free port)",
         (("--port 8000", "--port {port}"),)),
    Rule("curl -s -F content=@photo.jpg", "skip", "needs the server of the block above running; "
                                                  "tests/integration/test_serve.py posts the same request"),
    Rule("# catalogue/", "check", "a catalogue file: beside the repository's catalogue, with a profile using it, "
                                  "the source catalogue accepts it"),
    Rule("sweep:", "check", "a params.yaml fragment: every trial of its search space builds (pipelines.search_space)"),
    Rule("python -m pipelines.cluster_security", "skip",
         "needs an AWS account; tests/integration/test_cluster_config.py checks cluster.yaml and runs the script "
         "against moto's EC2 and IAM on 127.0.0.1"),
    Rule("python -m pipelines.cluster_shared_fs", "skip",
         "needs an NFS export and an AWS account; tests/integration/test_cluster_config.py writes the same file and "
         "runs Ray's own checks on it"),
    Rule("docker build -f deploy/Dockerfile", "skip",
         "needs Docker and a Kubernetes cluster with KubeRay; tests/integration/test_cluster_config.py checks the "
         "manifests against KubeRay's schema and runs the entrypoint and the tracking server as written"),
    Rule("stylecore train --model sanet", "run", "a long run: 2 steps, a smaller batch and crop, the generated inputs",
         (("--steps 160000", "--steps 2"), ("--batch-size 8 --size 256", "--batch-size 2 --size 64"),
          ("path/to/photos", "photos"), ("path/to/paintings", "paintings"))),
    Rule("# the demo's shards (after `make run`)", "run", "long runs: 2 steps at 64 px (StarGAN's discriminator "
                                                         "then reads 64² images)",
         (("--steps 20000", "--steps 2"), ("--size 128", "--size 64"), ("image_size=128", "image_size=64"))),
    Rule("stylecore optimize --method strotss", "run", "long runs: 64 px, 3 steps a scale",
         (("--size 512", "--size 64 --steps 3"), ("--scales 2", "--size 64 --steps 3 --scales 2"))),
    Rule("stylecore optimize-dataset --method strotss", "run", "a long run: 32 px, 2 steps a pair",
         (("--size 256", "--size 32 --steps 2"),)),
    Rule("import stylecore", "run", "a long run: 2 steps, a smaller batch and crop",
         (("steps=2000", "steps=2"), ("batch_size=8, crop_size=256", "batch_size=2, crop_size=64"))),
    Rule("stylecore/", "check", "the layout: every module it names exists, and every module of stylecore/ and "
                                "pipelines/ is named"),
)


def readme_blocks(text: str) -> list[Block]:
    found = []
    for match in re.finditer(r"^```([\w-]*)\n(.*?)^```\s*$", text, flags=re.MULTILINE | re.DOTALL):
        found.append(Block(text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)))
    return found


def rule_for(block: Block) -> Rule | None:
    return next((rule for rule in RULES if block.first.startswith(rule.starts)), None)


def test_every_rule_names_a_block_and_every_substitution_finds_its_text():
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 10
    for rule in RULES:
        matched = [block for block in blocks if block.first.startswith(rule.starts)]
        assert len(matched) == 1, f"rule {rule.starts!r} matches {len(matched)} README blocks; it must name exactly one"
        for old, _ in rule.substitutions:
            assert old in matched[0].text, f"rule {rule.starts!r}: {old!r} is no longer in the block at line " \
                                           f"{matched[0].line}; update the rule with the README"
    assert {block.lang for block in blocks} <= {"bash", "python", "yaml", ""}, "a block in a language the test cannot run"
    assert documented_setup(blocks) == ACTIVATE  # the way into the environment comes first


def test_the_layout_names_every_module_and_only_modules_that_exist():
    """The layout check on its own, in a second: a module added without its README line fails here early
    (the test below runs it too, after several minutes of blocks)."""
    layout = [block for block in readme_blocks(README.read_text()) if block.first.startswith("stylecore/")]
    assert len(layout) == 1
    check_layout(layout[0])


# ---------------------------------------------------------------------------------------------------
# The workspace


def _run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def build_workspace(root: Path) -> tuple[Path, str]:
    import torch
    import torchvision

    from stylecore.data import save_image
    from stylecore.encoders import imagenet_weights_file
    from stylecore.synthetic import synthetic_artwork, synthetic_photo

    workspace = root / "workspace"
    workspace.mkdir()
    for name in ("dvc.yaml", "pyproject.toml", "Makefile"):
        shutil.copy(REPO / name, workspace)
    for folder in ("pipelines", "stylecore"):
        shutil.copytree(REPO / folder, workspace / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(workspace, small_demo_params())
    (workspace / ".venv").symlink_to(REPO / ".venv")
    # the project's own .gitignore (what a run writes is committed on purpose or ignored: checked below), and the
    # files the README's blocks make
    (workspace / ".gitignore").write_text((REPO / ".gitignore").read_text() + "\n/out/\n/stylized/\n/runs/\n/photos/\n"
                                          "/paintings/\n*.jpg\n/photo-regions.png\n/a-regions.png\n")
    _run(workspace, "git", "init", "-q")
    _run(workspace, "git", "config", "user.email", "readme@test")
    _run(workspace, "git", "config", "user.name", "readme test")
    _run(workspace, sys.executable, "-m", "dvc", "init", "-q")
    _run(workspace, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    shutil.copytree(REPO / ".dvc" / "plots", workspace / ".dvc" / "plots")  # the project's plot templates
    _run(workspace, "git", "add", "-A")
    _run(workspace, "git", "commit", "-qm", "the project")
    # what `make run` runs (its first block is skipped): the pipeline, with one local Ray for every stage
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY",
                                                                          "MLFLOW_TRACKING_URI")}
    built = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "pipelines.repro"], cwd=workspace, env=env,
                           capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    save_image(synthetic_photo(7, 96), workspace / "photo.jpg")
    for index, family in enumerate(("waves", "checks")):
        save_image(synthetic_artwork(3 + index, family, 96), workspace / f"{'ab'[index]}.jpg")
    regions = torch.zeros(3, 96, 96)  # the guidance masks: photo left ↔ style top (red), right ↔ bottom (blue)
    regions[0, :, :48], regions[2, :, 48:] = 1, 1
    save_image(regions, workspace / "photo-regions.png")
    regions = torch.zeros(3, 96, 96)
    regions[0, :48], regions[2, 48:] = 1, 1
    save_image(regions, workspace / "a-regions.png")
    for i in range(3):
        save_image(synthetic_photo(20 + i, 80), workspace / "photos" / f"p{i}.jpg")
        save_image(synthetic_artwork(30 + i, ("dots", "stripes", "noise")[i], 80), workspace / "paintings" / f"s{i}.jpg")
    torch_home = root / "torch-home"  # passed to the blocks' environment only
    for arch in ("vgg16", "vgg19"):
        target = torch_home / "hub" / "checkpoints" / imagenet_weights_file(arch).name
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), target)
    return workspace, built.stdout + built.stderr


def block_environment(root: Path) -> dict[str, str]:
    keep = {key: os.environ[key] for key in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER") if key in os.environ}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "TORCH_HOME": str(root / "torch-home")}


# ---------------------------------------------------------------------------------------------------
# Running the blocks


#: the documented set-up: the README must show it as the first line of a block before anything else runs
ACTIVATE = "source .venv/bin/activate"


def documented_setup(blocks: list[Block]) -> str | None:
    """The set-up every block runs after: ``ACTIVATE`` when the README's first runnable shell block opens with
    it (the way into the environment, said once), else None: then the blocks run in a bare shell."""
    runnable = [block for block in blocks if block.lang == "bash" and (rule_for(block) is None
                                                                       or rule_for(block).action == "run")]
    return ACTIVATE if runnable and runnable[0].first == ACTIVATE else None


def run_shell(script: str, workspace: Path, env: dict[str, str], timeout: int,
              setup: str | None) -> subprocess.CompletedProcess:
    prelude = "set -eo pipefail\n" + (f"{setup}\n" if setup else "")
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", prelude + script], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_server(command: str, workspace: Path, env: dict[str, str], setup: str | None) -> str | None:
    """Start the block's server, wait for its page; None when it answered, else what went wrong."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = command.replace("{port}", str(port))
    prelude = "set -eo pipefail\n" + (f"{setup}\n" if setup else "")
    server = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", prelude + "exec " + command.strip()],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                return f"the server exited with status {server.returncode}: {server.stdout.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return None
            except OSError:
                time.sleep(1)
        return "no answer on its port within 120 s"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def check_fragment(block: Block, workspace: Path) -> None:
    """A params.yaml fragment the README shows: accepted by the code that reads that part of params.yaml."""
    from pipelines.settings import resolve_combination
    from stylecore.config import deep_merge

    from pipelines.sources import load_params, parse_sources

    fragment = yaml.safe_load(block.text)
    if block.first.startswith("# catalogue/"):  # one source's file: its name is the file's
        name = Path(block.first.split()[1]).stem
        params = load_params(REPO / "params.yaml")
        params["sources"][name] = fragment
        params["profiles"]["mine"] = ["demo_photos", name]
        assert parse_sources(params)[name].profiles == ["mine"]
        return
    params = deep_merge(load_params(REPO / "params.yaml"), fragment)
    if "sweep" in fragment:
        from pipelines.search_space import check_space, search_space

        for name, spec in fragment["sweep"]["combinations"].items():
            model, _, loss = name.partition("-")
            search_space(name, spec)
            check_space(name, resolve_combination(params, model, loss, workspace / "data" / "shards"), spec)


def check_layout(block: Block) -> None:
    """The layout block names every module of stylecore/ and pipelines/, and only modules that exist."""
    entries: dict[str, str] = {}
    current = None
    for line in block.text.splitlines():
        if line and not line[0].isspace():
            current, _, rest = line.partition(" ")
            entries[current] = rest
        elif current is not None:
            entries[current] += " " + line
    for package in ("stylecore/", "pipelines/"):
        named = set(re.findall(r"(?<![\w/])(\w+\.py|\w+/)(?!\w)", entries[package]))
        folder = REPO / package
        actual = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"} | \
                 {f"{p.name}/" for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
        assert named == actual, (f"README layout of {package}: names {sorted(named - actual)} that do not exist "
                                 f"and misses {sorted(actual - named)}")
    for name in entries:
        assert (REPO / name.rstrip("/")).exists(), f"README layout names {name}, which does not exist"


@pytest.fixture(scope="module")
def make_run_workspace(tmp_path_factory):
    """The workspace after ``make run``'s pipeline: built once, checked by the first test, used by the second."""
    root = tmp_path_factory.mktemp("readme")
    workspace, printed = build_workspace(root)
    return root, workspace, printed


def _datasets(client, run_id: str) -> set[tuple[str, str, str]]:
    """A run's dataset inputs as (name, digest, context)."""
    return {(d.dataset.name, d.dataset.digest, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
            for d in client.get_run(run_id).inputs.dataset_inputs}


# 4 train stages, a sweep, the classifier, optimize, evaluate, register, stylize: ≈ 8 min on a slow 2-core day
@pytest.mark.timeout(2400)
def test_the_pipeline_trains_the_demo_grid_logs_every_run_and_a_second_repro_is_a_no_op(make_run_workspace):
    """What the pipeline built, before any block runs (the blocks add runs, models and files of their own)."""
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    import stylecore
    from stylecore.metrics import spread_ratio

    _, repo, first = make_run_workspace
    commit = _run(repo, "git", "rev-parse", "HEAD").strip()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    grid = [(m, loss) for m in params["train"]["grid"]["models"] for loss in params["train"]["grid"]["losses"]]
    assert len(grid) == 4 and all(f"train@{m}-{loss}" in first for m, loss in grid)
    # every train stage, the sweep, the classifier, optimize and the stylize stage (all champions in one pipeline)
    # connect to the one local Ray (none starts its own), quietly: the repro line said where it is
    assert first.count("ray: starting a local instance") == 1 and "ray: connecting to" not in first
    # the console: each training run's set-up is one line from rank 0, printed once; no error-level line from Ray
    for m, loss in grid:
        assert first.count(f"train@{m}-{loss}: model {m} (") == 1, first
    assert "core_worker.cc" not in first and not re.search(r"^\[[^]]* E \d+ \d+\]", first, flags=re.MULTILINE)
    # stages that only skip, one after another for one reason, share a line (each joins it when it says so within
    # the console's 2 s hold, which a loaded machine may miss: the run then continues on a line of its own)
    assert re.search(r"^repro: \[3(–[45])?/\d+\] download@places365(, download@coco)?(, download@wikiart)?: "
                     r"skipped, not in profile 'demo'", first, flags=re.MULTILINE)

    uri = f"sqlite:///{repo / 'mlflow.db'}"  # the default store: in the repository
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stylecore-demo")
    assert experiment.artifact_location == (repo / "mlartifacts").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs, not traces
    every_run = client.search_runs([experiment.experiment_id])
    runs = {r.info.run_name: r for r in every_run if "mlflow.parentRunId" not in r.data.tags}
    pretrained = list(params["pretrained"]["models"])
    assert pretrained == ["magenta_lite"]  # the demo's baseline with published weights, beside the trained grid
    gan_runs = {f"{model}-{domain}" for model in params["gan"]["grid"] for domain in params["gan"]["profiles"]["demo"]["domains"]}
    assert gan_runs == {"cyclegan-dots"}
    assert set(runs) == {f"{m}-{loss}" for m, loss in grid} | {"evaluate", "sweep adain-balanced_gram", "classifier",
                                                               "optimize"} | {f"{name} (pretrained)" for name in pretrained} | gan_runs
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
        assert tags["encoder_weights"] == "random:0" and tags["workers"] == "1 × CPU in-process"
        assert tags["loss_encoder"] == "magenta_lite"  # the demo's objectives read trained features
        assert tags["data.demo_photos-train"] == lock["shard@demo_photos-train"]["outs"][0]["md5"]
        # the shard folders it read are its MLflow datasets (the UI's Datasets column), DVC's hashes as digests
        assert _datasets(client, run.info.run_id) == {(f"{name}-train", lock[f"shard@{name}-train"]["outs"][0]["md5"],
                                                        "training") for name in ("demo_photos", "demo_artworks")}
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

    # the GAN stage: a CycleGAN photo ↔ dots in the same Ray session, its G and D terms and sample grids in MLflow,
    # its checkpoint a translation model and its logged model a pyfunc taking the domain as a parameter
    gan_run = runs["cyclegan-dots"]
    assert gan_run.info.status == "FINISHED" and gan_run.data.tags["dvc_stage"] == "gan@cyclegan"
    assert (gan_run.data.tags["model"], gan_run.data.tags["domains"]) == ("cyclegan", "dots")
    assert first.count("gan@cyclegan cyclegan-dots: model cyclegan (") == 1, first  # rank 0 set-up line, once
    for term in ("generator", "discriminator", "d_target_real", "d_target_fake", "cycle_source", "gan_target"):
        assert sorted(m.step for m in client.get_metric_history(gan_run.info.run_id, f"loss/{term}")) == [1, 2, 3, 4]
    assert any("step+4+" in a.path for a in client.list_artifacts(gan_run.info.run_id, "images"))
    translator = stylecore.load(repo / "models/gan/cyclegan/cyclegan-dots/checkpoint")
    assert translator.domains == ("dots", "photo")
    summary = json.loads((repo / "models/gan/cyclegan.json").read_text())
    assert summary["cyclegan-dots"]["step"] == 4 and np.isfinite(summary["cyclegan-dots"]["loss"]["discriminator"])
    translated = mlflow.pyfunc.load_model(gan_run.data.tags["model_uri"]).predict(pair[:, :3], params={"domain": "dots"})
    assert translated.shape == (1, 3, 32, 48) and 0 <= translated.min() and translated.max() <= 1

    # the sweep trained on the train shards and validated on the val shards; so did the classifier, on the artworks
    val = {(f"{name}-val", lock[f"shard@{name}-val"]["outs"][0]["md5"]) for name in ("demo_photos", "demo_artworks")}
    train = {(f"{name}-train", lock[f"shard@{name}-train"]["outs"][0]["md5"]) for name in ("demo_photos", "demo_artworks")}
    swept = {(*d, "training") for d in train} | {(*d, "validation") for d in val}
    trials = [r.info.run_id for r in every_run if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2 and all(_datasets(client, run_id) == swept
                                    for run_id in [runs["sweep adain-balanced_gram"].info.run_id, *trials])
    assert _datasets(client, runs["classifier"].info.run_id) == \
        {(*d, "training") for d in train if "artworks" in d[0]} | {(*d, "evaluation") for d in val if "artworks" in d[0]}
    assert _datasets(client, runs["evaluate"].info.run_id) == {(*d, "evaluation") for d in val}
    # evaluate ran after the whole grid: a DVC metric per combination, per-style plots, the summary, MLflow
    evaluated = json.loads(_run(repo, sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    files = next(iter(evaluated.values()))["data"]  # keyed by revision ("": workspace), then by file: one per candidate
    table = {Path(path).stem: found["data"] for path, found in files.items() if path.startswith("reports/metrics/")}
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
    assert set(registry) == {f"stylecore-{m}-{loss}" for m, loss in grid} | {f"stylecore-{n}" for n in pretrained} | {
        f"stylecore-{name}" for name in gan_runs}  # a GAN run by model and domain
    assert {(entry["version"], entry["alias"]) for entry in registry.values()} == {(1, "champion")}
    # the GAN run was scored on the held-out artworks of its domain (3 contents × the one dots style)
    [translated] = json.loads((repo / "reports" / "evaluation.json").read_text())["translation"]["candidates"]
    assert translated["name"] == "cyclegan-dots" and translated["domains"]["dots"]["pairs"] == 3
    assert registry["stylecore-cyclegan-dots"]["domains"] == ["dots"]
    assert client.get_run(gan_run.info.run_id).data.metrics["eval/style_balanced"] == pytest.approx(
        translated["metrics"]["style_balanced"])
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
        assert manifest.get("domain") == (entry["domains"][0] if "domains" in entry else None)  # a GAN: its domain
        assert len(list((repo / "reports" / "stylized" / name).glob("*.jpg"))) == 3

    assert "Running stage" not in _run(repo, sys.executable, "-m", "dvc", "repro")  # a second repro is a no-op
    # Every file the run wrote is ignored (DVC's cached outputs, by the .gitignore files it writes; the stores) or
    # one of the small outputs committed on purpose, so `git status` after a run shows what to commit, nothing else.
    written = [line[3:] for line in _run(repo, "git", "status", "--porcelain", "--untracked-files=all").splitlines()]
    on_purpose = re.compile(r"dvc\.lock|(models/(.*/)?)?\.gitignore|models/[^/]+/(metrics\.json|curve\.csv)|models/gan/[^/]+\.json|"
                            r"reports/(\.gitignore|evaluation\.json|summary\.md|registry\.json|metrics/[^/]+\.json|"
                            r"per_style/[^/]+\.csv|plots/[^/]+\.csv|sweeps/[^/]+\.json)|models/pretrained/[^/]+/metrics\.json")
    assert written and all(on_purpose.fullmatch(path) for path in written), written
    assert {"reports/metrics/adain-gram.json", "models/adain-gram/metrics.json", "dvc.lock"} <= set(written)
    # `dvc push` stores the cache in a remote and `dvc pull` brings an output back from it (a scratch remote, so
    # the README's own `dvc remote add` below is the workspace's first)
    remote = repo.parent / "scratch-remote"
    _run(repo, sys.executable, "-m", "dvc", "remote", "add", "--local", "scratch", str(remote))
    try:
        _run(repo, sys.executable, "-m", "dvc", "push", "-r", "scratch", "-q")
        checkpoint = repo / "models" / "adain-gram" / "checkpoint"
        weights = (checkpoint / "model.safetensors").read_bytes()
        shutil.rmtree(checkpoint)
        _run(repo, sys.executable, "-m", "dvc", "cache", "dir", "--local", str(repo.parent / "empty-cache"))
        _run(repo, sys.executable, "-m", "dvc", "pull", "-r", "scratch", "-q", "models/adain-gram/checkpoint")
        assert (checkpoint / "model.safetensors").read_bytes() == weights  # from the remote: the cache was empty
    finally:
        _run(repo, sys.executable, "-m", "dvc", "cache", "dir", "--local", "--unset")
        _run(repo, sys.executable, "-m", "dvc", "remote", "remove", "--local", "scratch")
    # a changed key reruns only the combinations that read it (params.yaml put back for the blocks)
    as_built = (repo / "params.yaml").read_text()
    params["train"]["models"]["adain"]["lr"] = 2e-4
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        status = _run(repo, sys.executable, "-m", "dvc", "status")
    finally:
        (repo / "params.yaml").write_text(as_built)
    changed = {line.rstrip(":") for line in status.splitlines() if line and not line.startswith(("\t", " "))}
    assert changed == {"train@adain-gram", "train@adain-balanced_gram", "sweep@adain-balanced_gram"}


@pytest.mark.timeout(2400)
def test_every_readme_block_runs_as_typed_after_the_documented_setup(make_run_workspace):
    blocks = readme_blocks(README.read_text())
    tmp_path, workspace, _ = make_run_workspace
    env = block_environment(tmp_path)
    setup = documented_setup(blocks)
    failures = [] if setup else [f"the README shows no way into the environment: its first shell block must open "
                                 f"with `{ACTIVATE}` (a fresh shell has no dvc, stylecore, mlflow or ray)"]
    for index, block in enumerate(blocks):
        rule = rule_for(block)
        where = f"README.md line {block.line} ({block.first[:60]!r})"
        text = block.text
        for old, new in rule.substitutions if rule else ():
            text = text.replace(old, new)
        action = rule.action if rule else "run"
        if action == "skip":
            continue
        if action == "server":
            problem = run_server(text, workspace, env, setup)
            if problem:
                failures.append(f"{where}: {problem}")
            continue
        if action == "check":
            try:
                check_layout(block) if block.first.startswith("stylecore/") else check_fragment(block, workspace)
            except Exception as error:  # noqa: BLE001 (every failure is reported with its block)
                failures.append(f"{where}: {type(error).__name__}: {error}")
            continue
        if block.lang == "python":
            script = workspace / f"readme_block_{index}.py"
            script.write_text(text)
            done = run_shell(f"python {script.name}\n", workspace, env, timeout=900, setup=setup)
        else:
            done = run_shell(text, workspace, env, timeout=1500, setup=setup)
        if done.returncode != 0:
            failures.append(f"{where}: exit status {done.returncode}\n--- stdout (end)\n{done.stdout[-3000:]}\n"
                            f"--- stderr (end)\n{done.stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)
