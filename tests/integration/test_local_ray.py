"""The local Ray that ``pipelines.ray_session`` starts (for one stage, or shared by ``pipelines.repro``): what its
worker processes — where Ray Train's controller and workers run — inherit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]


def test_ray_trains_controller_polls_its_local_workers_often_and_no_preemption_watcher_starts():
    # Ray Train's controller reads RAY_TRAIN_HEALTH_CHECK_INTERVAL_S in its own process (a Ray worker): at Ray's 2 s
    # a finished run is noticed up to 2 s late, which every train stage of the demo paid.
    script = ("import os, ray\nfrom pipelines.ray_session import ray_session\nwith ray_session():\n"
              "    seen = ray.get(ray.remote(lambda: (os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'),\n"
              "                                       os.environ.get('RAY_TRAIN_ENABLE_PREEMPTION_WATCHER'))).remote())\n"
              "    print('SEEN', *seen)\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                          "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert "SEEN 0.25 0" in done.stdout, done.stdout + done.stderr[-2000:]
