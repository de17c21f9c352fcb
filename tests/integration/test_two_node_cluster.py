"""Training and stylization on a two-node Ray cluster simulated on this machine, reached through
RAY_ADDRESS; training survives losing its second node (see two_node_scenario.py)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent


def test_training_survives_losing_a_node_and_stylization_runs_on_the_two_node_cluster(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    env.pop("RAY_ADDRESS", None)
    # Its own session: a scenario that hangs is killed with every Ray process it started.
    scenario = subprocess.Popen([sys.executable, str(HERE / "two_node_scenario.py"), str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = scenario.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(scenario.pid, signal.SIGKILL)
        output, _ = scenario.communicate()
        pytest.fail("the two-node scenario did not finish in 8 minutes:\n" + output[-4000:])
    done = subprocess.CompletedProcess(scenario.args, scenario.returncode, output, "")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["cluster_cpus"] == 2 and result["nodes_before_removal"] == 2  # one Train worker per node
    assert result["node_replaced"]
    # the worker group restarted on the replacement node from the last reported checkpoint, and finished
    assert result["error"] is None and result["step"] == 10
    resumed = {int(line.rsplit(" ", 1)[1]) for line in result["resumed"]}
    assert len(result["resumed"]) >= 2 and len(resumed) >= 1 and min(resumed) >= 2
    # stylization ran on the two-node cluster too: every image once
    assert result["nodes_at_stylize"] == 2 and result["stylized"] == 24 and result["stylize_missing"] == []
