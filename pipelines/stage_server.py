"""Stages that start without paying for their imports: ``pipelines.repro`` forks each Ray stage from a warm process.

A stage of the demo spent 4–7 s importing torch, Ray Train, MLflow and stylecore before its first line of work, and
about 17 stages do so in every ``dvc repro``. ``pipelines.repro`` starts this server once, beside DVC; it imports
those modules, then waits on a Unix socket in a private folder (mode 0700). DVC still runs every stage's command
as written in dvc.yaml (``python -m pipelines.train …``); that command, seeing ``STYLECORE_STAGE_SERVER``, hands its
module name, arguments, working directory, environment and its standard input, output and error (the descriptors
themselves, ``SCM_RIGHTS``) to the server, which forks a child that becomes the stage: the same ``__main__`` code
in the stage's own folder, environment and streams, its own process group and its own Ray connection (each stage
is still its own Ray job and its own process: nothing a stage leaves behind reaches the next). The command waits for
the child, passes it Ctrl-C and SIGTERM, and exits with its status, so DVC sees what it always saw.

Nothing is imported into the server's process but modules (no Ray connection, no torch operation, no thread of
ours): fork is safe there, as it is for PyTorch's DataLoader workers. Without the server (a plain ``dvc repro``,
``STYLECORE_STAGE_SERVER=off`` before ``pipelines.repro``, a server that is gone) a stage runs in its own process
as before.

    python -m pipelines.stage_server SOCKET   # stdin: the parent's pipe; the server ends when it closes
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

#: the socket of the running server, in the stages' environment (set by pipelines.repro); "off" opts out
SOCKET_VARIABLE = "STYLECORE_STAGE_SERVER"
#: what the server imports once: every stage's heavy imports (the stage modules themselves import the rest)
PRELOAD = ("torch", "torchvision", "ray", "ray.train", "ray.train.torch", "ray.tune", "ray.data", "mlflow",
           "mlflow.pytorch", "webdataset", "pipelines.download", "pipelines.shard", "pipelines.train", "pipelines.gan", "pipelines.sweep", "pipelines.classifier", "pipelines.pretrained",
           "pipelines.optimize", "pipelines.evaluate", "pipelines.register", "pipelines.stylize",
           "pipelines.ray_training", "pipelines.mlflow_hooks", "stylecore.training", "stylecore.models",
           "stylecore.metrics", "stylecore.metrics.field", "stylecore.heldout", "stylecore.gan", "stylecore.optimize")
#: seconds a stage's command waits for a server that is still importing before it runs the stage itself
CONNECT_WAIT_S = 60.0

_in_child = False  # True in a forked stage: its __main__ runs the stage, never forwards it again


def stage_main(main: Callable[[], int]) -> int:
    """What a stage module's ``__main__`` runs: ``main()`` in a child of the stage server when there is one (its
    exit status), else ``main()`` here."""
    address = os.environ.get(SOCKET_VARIABLE, "")
    if address and address != "off" and not _in_child:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            status = forward(address, spec.name, sys.argv[1:])
            if status is not None:
                return status
    return main()


def _send(connection: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    packet = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(connection, [packet], fds)
    else:
        connection.sendall(packet)


def _receive(connection: socket.socket, with_fds: bool = False) -> tuple[dict | None, list[int]]:
    """One message (and the descriptors sent with it); (None, []) when the peer has gone."""
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(connection, 4, 3)
    else:
        head = connection.recv(4)
    while head and len(head) < 4:
        more = connection.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    if len(head) < 4:
        return None, fds
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        more = connection.recv(size - len(body))
        if not more:
            return None, fds
        body += more
    return json.loads(body), fds


def forward(address: str, module: str, arguments: list[str]) -> int | None:
    """Run ``python -m module arguments`` as a child of the server at ``address``; its exit status, or None when
    no server answers (the caller runs the stage itself)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(address)
    except OSError:
        connection.close()
        return None
    with connection:
        connection.settimeout(CONNECT_WAIT_S)  # a server still importing accepts late; one that never does is gone
        try:
            _send(connection, {"module": module, "argv": arguments, "cwd": os.getcwd(), "env": dict(os.environ)},
                  [0, 1, 2])
            started, _ = _receive(connection)
        except OSError:
            return None
        if started is None:
            return None
        child = int(started["pid"])
        connection.settimeout(None)

        def pass_on(number, _frame):  # DVC and the terminal signal this command; the stage is the child
            try:
                os.killpg(child, number)
            except ProcessLookupError:
                pass

        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, pass_on)
        finished, _ = _receive(connection)  # a signal's handler runs and the wait goes on (PEP 475)
        if finished is None:
            print(f"error: the stage server at {address} stopped while running this stage; re-run it "
                  f"(STYLECORE_STAGE_SERVER=off runs every stage in its own process)", file=sys.stderr)
            return 1
        status = int(finished["status"])
        return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell reports it


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the stage and run its module as ``__main__``; its exit status."""
    import runpy
    import traceback

    global _in_child
    _in_child = True
    try:
        os.setpgid(0, 0)  # signals reach it through the command that asked for it (forward's pass_on)
    except OSError:
        pass
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["argv"]]
    # As in `python -m`, the stage's module runs as __main__ only: the server's imported copy would make runpy warn
    sys.modules.pop(request["module"], None)
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as leaving:
        code = leaving.code
        if code is None or isinstance(code, int):
            status = int(code or 0)
        else:
            print(code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        status = 130
    except BaseException:  # noqa: BLE001 - the stage's own traceback, as its own process would print it
        traceback.print_exc()
        status = 1
    return status


def _end_child(status: int) -> None:
    import atexit

    try:
        atexit._run_exitfuncs()  # what the stage registered (Ray's and MLflow's shutdown) runs as at a normal exit
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)


def _serve_one(connection: socket.socket, listener: socket.socket) -> None:
    request, fds = _receive(connection, with_fds=True)
    if request is None or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return
    child = os.fork()
    if child == 0:
        status = 1
        try:
            connection.close()
            listener.close()
            status = _run_child(request, fds)
        finally:
            _end_child(status)
    try:
        os.setpgid(child, child)  # also done by the child: whichever runs first, signals find the group
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    _send(connection, {"pid": child})
    while True:
        done, wait_status = os.waitpid(child, os.WNOHANG)
        if done:
            _send(connection, {"status": os.waitstatus_to_exitcode(wait_status)})
            return
        readable, _, _ = select.select([connection], [], [], 0.2)
        if connection in readable and not connection.recv(1, socket.MSG_PEEK):
            os.killpg(child, signal.SIGTERM)  # the command was killed outright: so is its stage
            os.waitpid(child, 0)
            return


def serve(address: str) -> int:
    """Listen at ``address``, import :data:`PRELOAD`, then fork a child per request until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the stages (forwarded) and pipelines.repro
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(8)
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module the stage imports again (and reports) in its own child
            pass
    parent_pipe = sys.stdin.fileno()
    with listener:
        while True:
            readable, _, _ = select.select([listener, parent_pipe], [], [])
            if parent_pipe in readable and not os.read(parent_pipe, 1):
                return 0
            if listener in readable:
                connection, _ = listener.accept()
                with connection:
                    _serve_one(connection, listener)


@contextmanager
def stage_server() -> Iterator[str | None]:
    """A stage server for the life of the block, its socket in ``STYLECORE_STAGE_SERVER`` (the stages DVC starts
    inherit it); yields the socket, or None when the user set ``STYLECORE_STAGE_SERVER=off``."""
    import shutil
    import subprocess

    if os.environ.get(SOCKET_VARIABLE) == "off":
        yield None
        return
    folder = tempfile.mkdtemp(prefix="stylecore-stages-")  # 0700: only this user's processes may connect
    address = os.path.join(folder, "socket")
    process = subprocess.Popen([sys.executable, "-m", "pipelines.stage_server", address], stdin=subprocess.PIPE,
                               cwd=str(Path(__file__).resolve().parents[1]),
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 10
    while not os.path.exists(address) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # bound before it imports: a stage that comes early waits in the backlog
    saved = os.environ.get(SOCKET_VARIABLE)
    os.environ[SOCKET_VARIABLE] = address
    try:
        yield address
    finally:
        if saved is None:
            os.environ.pop(SOCKET_VARIABLE, None)
        else:
            os.environ[SOCKET_VARIABLE] = saved
        # DVC is done: no stage is running, and the server holds nothing worth waiting for (it may still be importing)
        process.stdin.close()
        process.terminate()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return serve(args[0])


if __name__ == "__main__":
    # Serve from the importable module, not from this `__main__` copy of it: a stage's own `stage_main` must see
    # the `_in_child` flag its fork sets, or it would forward itself to this server again.
    from pipelines.stage_server import main as serve_main

    sys.exit(serve_main())
