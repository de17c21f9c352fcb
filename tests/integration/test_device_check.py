"""bench/device_check.py --cpu-smoke: the GPU session's one prepared command runs the same code paths here at
tiny sizes, so it cannot rot between the rare sessions that have a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]


def test_the_device_check_runs_every_path_on_cpu_and_reports_each(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "STYLECORE_LOCAL_RAY")}
    done = subprocess.run([sys.executable, "bench/device_check.py", "--cpu-smoke", "--out", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "device_check.json").read_text())
    statuses = {record["check"]: record["status"] for record in report["checks"]}
    failures = {r["check"]: r.get("error") for r in report["checks"] if r["status"] == "fail"}
    assert done.returncode == 0 and not failures, (failures, done.stdout[-3000:], done.stderr[-3000:])
    models = ["adain", "linear", "sanet", "magenta", "vae_adain", "magenta_lite", "cyclegan", "ugatit", "stargan"]
    expected = {"environment", "decisions", "host-syncs", "loader", "ray-train", "ray-data", "evaluation",
                *(f"step/{m}/{mode}" for m in models for mode in ("fp32", "bf16+channels_last")),
                "step/adain/compile", "step/sanet/compile", "optimize/strotss", "optimize/gatys"}
    assert set(statuses) == expected
    # on CPU only what needs CUDA (the sync count) and the compile timing are skipped; the rest ran
    assert {c for c, s in statuses.items() if s == "skip"} == {"host-syncs", "step/adain/compile", "step/sanet/compile"}
    by_name = {record["check"]: record for record in report["checks"]}
    assert by_name["step/adain/fp32"]["samples_per_s"] > 0 and by_name["ray-data"]["images"] == 8
    assert by_name["evaluation"]["outputs_per_s"] > 0 and by_name["evaluation"]["size"] == 64
    assert by_name["optimize/strotss"]["s_per_pair"] > 0 and by_name["optimize/gatys"]["scales"] == 1
    assert by_name["decisions"]["auto_use_gpu"] is False and by_name["decisions"]["inference_device"] == "cpu"
    table = (tmp_path / "device_check.md").read_text()
    assert all(f"| {name} |" in table for name in expected)
