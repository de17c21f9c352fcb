"""dvc.lock at HEAD is what `make run` at HEAD writes: every stage's command, code and params, as dvc.lock records
them, are the checkout's. A change to a stage's code or params committed without the run that rewrites dvc.lock
(or `dvc commit -f <stage>` when it alters no output) fails here, instead of making a user's first `dvc repro`
rerun stages that nobody changed on purpose."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_dvc_lock_records_every_stages_command_code_and_params_as_the_checkout_has_them():
    pytest.importorskip("dvc")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.split("\0")) - {""}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    def in_git(path: str) -> bool:  # a file, or a folder holding tracked files
        return path in tracked or any(name.startswith(path.rstrip("/") + "/") for name in tracked)

    stale = {}
    for stage, changes in json.loads(done.stdout or "{}").items():
        for change in changes:
            if change == "changed command":
                stale.setdefault(stage, []).append("its command")
            elif isinstance(change, dict):
                # Outputs and data dependencies are absent from a clean clone: only what git holds is compared.
                stale.setdefault(stage, []).extend(
                    path for path in change.get("changed deps", {}) if in_git(path))
    stale = {stage: what for stage, what in stale.items() if what}
    assert not stale, ("dvc.lock is stale against this checkout (run `make run` and commit dvc.lock, or `dvc commit -f "
                       f"<stage>` when the change alters no output): {stale}")
