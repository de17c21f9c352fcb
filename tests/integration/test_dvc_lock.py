"""dvc.lock at HEAD is what `make run` at HEAD writes: every stage's command, code and params, as dvc.lock records
them, are the checkout's, and so are the small outputs committed beside it (metrics, plots, summaries). A change to a
stage's code or params committed without the run that rewrites dvc.lock (or `dvc commit -f <stage>` when it alters
no output), or a dvc.lock committed without the outputs it records, fails here, instead of making a user's first
`dvc repro` rerun stages that nobody changed on purpose, or `dvc metrics diff` compare numbers no run wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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

    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    outputs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}

    def produced(path: str) -> bool:  # another stage's output, inside one, or a folder of them (`models`)
        path = path.rstrip("/")
        return any(out == path or out.startswith(path + "/") or path.startswith(out + "/") for out in outputs)

    stale = {}
    for stage, changes in json.loads(done.stdout or "{}").items():
        for change in changes:
            if change == "changed command":
                stale.setdefault(stage, []).append("its command")
            elif isinstance(change, dict):
                # Outputs and data dependencies are absent from a clean clone: only what git holds is compared. A
                # dependency that is another stage's output is judged where it is produced (its outs below).
                stale.setdefault(stage, []).extend(
                    path for path in change.get("changed deps", {}) if in_git(path) and not produced(path))
                stale.setdefault(stage, []).extend(
                    f"{path} (committed output)" for path, how in change.get("changed outs", {}).items()
                    if in_git(path) and how != "deleted")
    stale = {stage: what for stage, what in stale.items() if what}
    assert not stale, ("dvc.lock is stale against this checkout (run `make run` and commit dvc.lock with the small outputs "
                       f"it wrote (`git status`), or `dvc commit -f <stage>` when the change alters no output): {stale}")
