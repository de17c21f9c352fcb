"""`python -m pipelines.repro`'s console on a real DVC pipeline in a temporary git repository: a line a stage
with its place and, from the second run on, the previous run's timings; the stages' own lines in order; DVC's
bookkeeping lines only at STYLECORE_LOG_LEVEL=INFO."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
stages:
  prepare:
    cmd: python -c "import time; time.sleep(1.2); open('prepared.txt', 'w').write(open('source.txt').read())"
    deps: [source.txt]
    outs: [prepared.txt]
  use:
    foreach: [x, y]
    do:
      cmd: python -c "print('made ${item}'); open('used-${item}.txt', 'w').write(open('prepared.txt').read())"
      deps: [prepared.txt]
      outs: ["used-${item}.txt"]
"""


def _repro(repo: Path, *arguments: str, **env: str) -> list[str]:
    # RAY_ADDRESS set: repro runs dvc repro alone, as on a cluster (these stages need no Ray)
    full = {key: value for key, value in os.environ.items() if key != "STYLECORE_LOG_LEVEL"}
    full.update({"RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(REPO),
                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env})
    done = subprocess.run([sys.executable, "-m", "pipelines.repro", *arguments], cwd=repo, env=full, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.fixture
def pipeline_repo(tmp_path):
    pytest.importorskip("dvc")
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    (tmp_path / "source.txt").write_text("one\n")
    return tmp_path


def test_repro_prints_a_line_a_stage_and_the_last_runs_timings_on_the_next(pipeline_repo):
    first = _repro(pipeline_repo)
    stage_lines = [line for line in first if line.startswith("repro: [")]
    assert [line.split(" (")[0] for line in stage_lines] == ["repro: [1/3] prepare", "repro: [2/3] use@x",
                                                             "repro: [3/3] use@y"]
    assert not any("last time" in line for line in stage_lines)  # nothing measured yet
    # a stage's own lines come before the next stage's line (the stages write unbuffered into the pipe)
    assert first.index("made x") < first.index(stage_lines[2])
    assert not any(line.startswith(("> ", "Updating lock file", "Running stage")) for line in first)
    assert any(line.startswith("repro: 3 stage(s) in") and "3 ran" in line for line in first)
    timings = json.loads((pipeline_repo / ".dvc/tmp/stylecore-stage-times.json").read_text())
    assert set(timings) == {"prepare", "use@x", "use@y"} and timings["prepare"] >= 1.2

    (pipeline_repo / "source.txt").write_text("two\n")  # prepare reruns; its output changes, so the uses rerun too
    second = _repro(pipeline_repo)
    [prepare] = [line for line in second if line.startswith("repro: [1/3] prepare")]
    assert "this stage and the 2 after it took" in prepare and "unmeasured" not in prepare
    # a plain re-run with nothing to do asks `dvc status` and stops there: no Ray, no dvc repro
    noop = _repro(pipeline_repo)
    assert len(noop) == 1 and noop[0].startswith("repro: every stage is up to date (dvc status)")
    third = _repro(pipeline_repo, "--no-run-cache")  # with options it is dvc repro's own no-op, a line a stage
    assert [line for line in third if line.startswith("repro: [")] == [
        "repro: [1/3] prepare: unchanged, skipped", "repro: [2/3] use@x: unchanged, skipped",
        "repro: [3/3] use@y: unchanged, skipped"]

    (pipeline_repo / "source.txt").write_text("three\n")
    verbose = _repro(pipeline_repo, STYLECORE_LOG_LEVEL="INFO")
    assert "Running stage 'prepare':" in verbose and any(line.startswith("> python") for line in verbose)
