"""pipelines.stage_server: a stage command forwarded to the warm server runs as a forked child in the command's own
folder, environment and streams, exits with the stage's status, and dies with the command; without a server the
command runs the stage itself."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines.stage_server import SOCKET_VARIABLE, stage_server

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server():
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), saved]))  # the probe module, for the server
    try:
        with stage_server() as address:
            yield address
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved


def probe(tmp_path, *args, env=None, **kwargs):
    environment = {**os.environ, "PROBE_MARKER": "from-the-command", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "stage_probe", *args], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def fields(stdout: str) -> dict[str, str]:
    line = next(line for line in stdout.splitlines() if line.startswith("pid="))
    head, args = line.split(" args=")
    return {**dict(part.split("=", 1) for part in head.split()), "args": args}


def test_a_forwarded_stage_runs_in_a_fork_with_the_commands_folder_environment_and_streams(server, tmp_path):
    command = probe(tmp_path, "--model", "adain")
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0, err
    seen = fields(out)
    assert int(seen["pid"]) != command.pid  # the server's child ran it, not the command's own interpreter
    assert seen["cwd"] == str(tmp_path) and seen["marker"] == "from-the-command"
    assert seen["args"] == "['--model', 'adain']" and "a line on stderr" in err


def test_the_stages_exit_status_and_errors_reach_the_command(server, tmp_path):
    failing = probe(tmp_path, "--fail")
    failing.communicate(timeout=120)
    assert failing.returncode == 3
    raising = probe(tmp_path, "--raise")
    _, err = raising.communicate(timeout=120)
    assert raising.returncode == 1 and "RuntimeError: the probe's own error" in err


def test_a_signal_to_the_command_stops_its_stage(server, tmp_path):
    command = probe(tmp_path, "--sleep")
    line = command.stdout.readline()
    child = int(fields(line)["pid"])
    assert psutil.pid_exists(child) and child != command.pid
    command.send_signal(signal.SIGTERM)  # what DVC sends a stage it stops
    command.wait(timeout=60)
    assert command.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    after = probe(tmp_path)  # the server serves the next stage
    out, _ = after.communicate(timeout=120)
    assert after.returncode == 0 and int(fields(out)["pid"]) != after.pid


@pytest.mark.parametrize("setting", ["off", "missing"])
def test_without_a_server_the_command_runs_the_stage_itself(tmp_path, setting):
    address = "off" if setting == "off" else str(tmp_path / "no-server" / "socket")
    command = probe(tmp_path, env={SOCKET_VARIABLE: address, "PYTHONPATH": str(HERE)})
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0, err
    assert int(fields(out)["pid"]) == command.pid
