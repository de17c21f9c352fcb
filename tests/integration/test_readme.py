"""Every code block of README.md, run as a new user would run it (issue 26).

The blocks run in README order in one workspace, each in a fresh ``bash`` that did only the README's documented
set-up (``source .venv/bin/activate``, which the README must show first: without it a fresh shell finds no
``dvc`` or ``stylecore``): shell blocks as scripts, python blocks as files run by that shell's ``python``. A block that no rule below names runs exactly as typed, so a new example is tested the day it is
written. What the test provides, and nothing more:

- the workspace: a git + DVC repository holding this checkout's code, ``dvc.yaml``, ``.dvc/plots/`` and ``params.yaml`` with the
  demo made smaller (fewer images and steps, one Ray worker, the grid ``adain`` × {gram, balanced_gram}, a
  one-trial sweep), ``.venv`` linked to this checkout's environment, and the pipeline run in it as ``make run``
  runs it (``python -m pipelines.repro``);
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
    Rule("sources:", "check", "a params.yaml fragment: merged into params.yaml, the source catalogue accepts it"),
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
         (("--steps 160000", "--steps 2"), ("--batch 8 --size 256", "--batch 2 --size 64"),
          ("path/to/photos", "photos"), ("path/to/paintings", "paintings"))),
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


def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sources"]["demo_photos"]["count"] = {"train": 16, "val": 8}
    params["sources"]["demo_artworks"]["count"] = {"train": 15, "val": 20}
    params["train"]["grid"] = {"models": ["adain"], "losses": ["gram", "balanced_gram"]}
    params["train"]["profiles"]["demo"].update(steps=4, report_every=2, sample_every=2, crop_size=32, load_size=40)
    params["train"]["ray"]["workers"] = 1
    params["sweep"].update(samples=1, validation={"contents": 2, "styles_per_label": 1, "size": 32, "seed": 0,
                                                  "batch_size": 16},
                           combinations={"adain-balanced_gram": {"lr": {"grid": [1e-4]}}},
                           run_in={"demo": ["adain-balanced_gram"], "full": ["adain-balanced_gram"]})
    params["sweep"]["profiles"]["demo"] = {"steps": 4, "report_every": 2}
    params["evaluate"]["protocols"]["demo"].update(contents=3, styles_per_label=1, size=32)
    params["stylize"].update(contents=3, size=32, style_size=32)
    # the deception rate's judge: one work per synthetic painter here, so any artist with a work counts
    params["classifier"].update(min_works=1, report_every=2)
    params["classifier"]["ray"]["workers"] = 1
    params["classifier"]["profiles"]["demo"].update(steps=4, batch_size=4, input_size=32, load_size=40, warmup_steps=1)
    return params


def _git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True, text=True)


def build_workspace(root: Path) -> Path:
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
    (workspace / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    (workspace / ".venv").symlink_to(REPO / ".venv")
    (workspace / ".gitignore").write_text("/.venv\n/data/\n/models/\n/mlflow.db\n/mlartifacts/\n/ray_results/\n"
                                          "/reports/\n/out/\n/stylized/\n/runs/\n/photos/\n/paintings/\n*.jpg\n")
    _git(workspace, "init", "-q")
    _git(workspace, "config", "user.email", "readme@test")
    _git(workspace, "config", "user.name", "readme test")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=workspace, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=workspace, check=True)
    shutil.copytree(REPO / ".dvc" / "plots", workspace / ".dvc" / "plots")  # the project's plot templates
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-qm", "the project")
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
    return workspace


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

    fragment = yaml.safe_load(block.text)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), fragment)
    if "sources" in fragment:
        from pipelines.sources import parse_sources

        parsed = parse_sources(params)
        assert set(fragment["sources"]) <= set(parsed)
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


@pytest.mark.timeout(2400)
def test_every_readme_block_runs_as_typed_after_the_documented_setup(tmp_path):
    blocks = readme_blocks(README.read_text())
    workspace = build_workspace(tmp_path)
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
