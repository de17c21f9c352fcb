"""The stages' console: the project's own progress lines, and the libraries' routine INFO output off.

``STYLECORE_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING`` …; default ``WARNING``) is the level the libraries log at:
``STYLECORE_LOG_LEVEL=INFO dvc repro`` brings back Ray's connection lines, Ray Train's per-report and checkpoint
lines, MLflow's system-metrics lines and its artifact download bars. Their warnings and errors always print.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stylecore.progress import format_duration

LOG_LEVEL = "STYLECORE_LOG_LEVEL"

# The loggers whose INFO lines repeat on every stage, run or report (ray.train: "Reporting training result …" and
# "Checkpoint successfully created …" from both ranks at every report; ray: "Connecting to / Connected to" twice a
# stage; mlflow.system_metrics: "Started / Stopped monitoring" and "Skip logging GPU metrics" per run;
# mlflow.store.db.utils: "Creating initial MLflow database tables…", "Updating database tables" on a new store).
CHATTY_LOGGERS = ("ray", "ray.train", "ray.tune", "mlflow.system_metrics", "mlflow.store.db.utils")


def library_level() -> int:
    """The level from ``STYLECORE_LOG_LEVEL``; a clear error for a name ``logging`` does not know."""
    name = os.environ.get(LOG_LEVEL, "WARNING").strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"{LOG_LEVEL}={os.environ[LOG_LEVEL]!r} is not a logging level: use DEBUG, INFO, WARNING "
                         "or ERROR")
    return level


def quiet_libraries() -> int:
    """Set the chatty loggers of this process to :func:`library_level`; returns the level (for ``ray.init``).

    Called where a stage starts Ray or MLflow and at the start of each Ray Train worker, whose environment a
    stage's ``STYLECORE_LOG_LEVEL`` reaches through Ray's workers. MLflow's artifact download bars are a tqdm
    bar per download (two a train stage): off unless the level is INFO or lower, or set explicitly; so is MLflow's
    pickle warning (:class:`_PickleWarning`).
    """
    level = library_level()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if level > logging.INFO:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        pytorch_flavor = logging.getLogger("mlflow.pytorch")
        if not any(isinstance(f, _PickleWarning) for f in pytorch_flavor.filters):
            pytorch_flavor.addFilter(_PickleWarning())
    return level


@contextmanager
def quiet_train_worker() -> Iterator[None]:
    """:func:`quiet_libraries` while a Ray Train worker function runs, with Ray Train's "Reporting training result …"
    line, which its module logs under its file's path (``logging.getLogger(__file__)``), outside the ``ray.train``
    logger. stylecore's own INFO lines (the encoders' weights, the trainer's set-up, four a rank) are kept to the
    worker: rank 0 prints their gist in one line (``Trainer.summary``); ``STYLECORE_LOG_LEVEL=INFO`` shows them all.
    Those two loggers get their levels back at the end: a run in the stage's own process (Ray Train's local mode)
    leaves that process's logging as it found it."""
    level = quiet_libraries()
    from ray.train.v2._internal.execution import context

    loggers = [logging.getLogger(context.__file__), logging.getLogger("stylecore")]
    saved = [logger.level for logger in loggers]
    loggers[0].setLevel(level)
    if level > logging.INFO:  # rank 0 prints the set-up in one line (Trainer.summary) instead
        loggers[1].setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, previous in zip(loggers, saved):
            logger.setLevel(previous)


def tune_verbosity() -> int:
    """Ray Tune's ``RunConfig(verbose=…)``: 0 (silent) by default, where the sweep stage's own lines say what it
    started and how each trial ended; 1 (Tune's tables: every trial's config and result, ~230 lines for the demo's
    four trials) at ``STYLECORE_LOG_LEVEL=INFO``, 2 at ``DEBUG``. At 0, Tune's default output engine still prints
    its experiment header and a TensorBoard hint (10 lines a sweep); its classic reporter prints nothing at 0, so
    it is chosen (``RAY_AIR_NEW_OUTPUT=0``) unless the variable is set already."""
    level = library_level()
    verbosity = 0 if level > logging.INFO else 1 if level > logging.DEBUG else 2
    if verbosity == 0:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return verbosity


def train_logging_config():
    """Ray Train's own ``LoggingConfig`` at :func:`library_level`: its controller's "Requesting resources …",
    "Started training worker group …" lines and the workers' "Setting up process group …" line, logged in processes
    Ray Train configures itself, follow ``STYLECORE_LOG_LEVEL`` like the rest."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level=logging.getLevelName(library_level()))


class _PickleWarning(logging.Filter):
    """MLflow warns, at every ``mlflow.pytorch.log_model``, that a pickled model runs code when loaded. The stages
    log that copy for MLflow's own tools and never load it: stylecore loads the safetensors checkpoint logged beside
    it (README, Security), so the warning is answered and only repeats once a stage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


class StageProgress:
    """``dvc repro``'s console, one line a stage: its place among the pipeline's stages, the time so far, and what
    this stage and the ones after it took on the previous run (:data:`STAGE_TIMES`). DVC's bookkeeping lines
    (the command echo, "Updating lock file", blank separators) are left out unless ``STYLECORE_LOG_LEVEL`` is INFO
    or lower; the stages' own lines, DVC's errors and its closing advice pass through."""

    RUNNING = re.compile(r"^Running stage '(?P<stage>.+)':$")
    UNCHANGED = re.compile(r"^Stage '(?P<stage>.+)' didn't change, skipping$")
    RESTORED = re.compile(r"^Stage '(?P<stage>.+)' is cached - skipping run, checking out outputs$")
    BOOKKEEPING = re.compile(r"^(> |Updating lock file |Generating lock file |\s*$)")
    # Ray's own lines that every successful run prints and that ask nothing of the user: Ray Data creates its actor
    # pool with its context and transformer as object-store arguments, which Ray 2.60 reports at error level for a
    # restartable actor (ray-project/ray#53727: a restart can fail if those objects are lost; nothing is lost
    # here, and a failed stage resumes); and Ray Train's placement-group cleaner announces every finished trial.
    # DVC's closing advice (git add dvc.lock, autostage, dvc push): `finish` says what this project commits instead
    ADVICE = re.compile(r"^(To track the changes with git, run:|\tgit add .*|To enable auto staging, run:|"
                        r"\tdvc config core\.autostage true|Use `dvc push` to send your updates to remote storage\.)$")
    KNOWN_NOISE = re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object "
                             r"store and max_restarts > 0|Detected that the Ray Train controller actor .* is dead\. "
                             r"Cleaning up placement group")

    def __init__(self, stages: list[str] | None, previous: dict[str, float], *, verbose: bool = False,
                 clock=time.monotonic) -> None:
        self.stages, self.previous, self.verbose, self.clock = stages, previous, verbose, clock
        self.timings = dict(previous)
        self.started = clock()
        self.visited: list[str] = []
        self.counts = {"ran": 0, "skipped": 0, "unchanged": 0, "restored": 0}
        self.current: tuple[str, float] | None = None
        # A stage's line held back until the stage says something: a stage that only says it is skipped (a source
        # outside the profile) is one line with it. `flush` lets it out when the stage stays silent.
        self.pending: str | None = None
        # consecutive stages skipped for one reason (the full profile's sources in the demo) share one line, held
        # until a stage that differs: (first place, stages, reason)
        self.skipped_run: tuple[int, list[str], str] | None = None

    def feed(self, line: str) -> list[str]:
        """The console lines for one line of DVC's output."""
        line = line.rstrip("\n")
        for pattern, kind in ((self.RUNNING, "ran"), (self.UNCHANGED, "unchanged"), (self.RESTORED, "restored")):
            match = pattern.match(line)
            if match:
                # a run of skipped stages stays held while the next stage may join it
                hold = kind == "ran" and self.pending is None and not self.verbose
                shown = [*([] if hold else self.flush()), self._visit(match["stage"], kind)]
                if kind == "ran" and not self.verbose:
                    self.pending = shown.pop()
                return [*shown, *([line] if self.verbose else [])]
        if not self.verbose and (self.BOOKKEEPING.match(line) or self.KNOWN_NOISE.search(line)
                                 or self.ADVICE.match(line)):
            return []
        if self.pending is not None and self.current is not None and line.startswith(f"{self.current[0]}: skipped, "):
            stage, said = self.current[0], line[len(self.current[0]) + 2:]
            self.pending = None
            self.counts["ran"] -= 1
            self.counts["skipped"] += 1
            if self.skipped_run is not None and self.skipped_run[2] == said:
                self.skipped_run[1].append(stage)
                return []
            shown = self._skipped_line()
            self.skipped_run = (len(self.visited), [stage], said)
            return shown
        return [*self.flush(), line]

    def flush(self) -> list[str]:
        """The held-back lines, if any: a run of skipped stages, then the current stage's line (to print when the
        stage has been silent for a while)."""
        pending, self.pending = self.pending, None
        return [*self._skipped_line(), *([pending] if pending is not None else [])]

    def _skipped_line(self) -> list[str]:
        if self.skipped_run is None:
            return []
        (first, stages, said), self.skipped_run = self.skipped_run, None
        last = first + len(stages) - 1
        place = f"{first}" if last == first else f"{first}–{last}"
        return [f"repro: [{place}{'/' + str(len(self.stages)) if self.stages else ''}] {', '.join(stages)}: {said}"]

    def _visit(self, stage: str, kind: str) -> str:
        self._close()
        now = self.clock()
        self.visited.append(stage)
        self.counts[kind] += 1
        place = f"[{len(self.visited)}/{len(self.stages)}]" if self.stages else f"[{len(self.visited)}]"
        if kind == "unchanged":
            return f"repro: {place} {stage}: unchanged, skipped"
        if kind == "restored":
            return f"repro: {place} {stage}: restored from DVC's run cache"
        self.current = (stage, now)
        line = f"repro: {place} {stage} ({format_duration(now - self.started)} in"
        if self.stages:
            done = set(self.visited[:-1])
            rest = [name for name in self.stages if name not in done]
            known = [self.previous[name] for name in rest if name in self.previous]
            if known:
                line += (f"; this stage and the {len(rest) - 1} after it took {format_duration(sum(known))} last time"
                         + (f", {len(rest) - len(known)} of them unmeasured" if len(known) < len(rest) else ""))
        return line + ")"

    def _close(self) -> None:
        if self.current is not None:
            stage, started = self.current
            self.timings[stage] = round(self.clock() - started, 1)
            self.current = None

    def finish(self, status: int) -> str:
        """The closing line; a stage that failed keeps its previous timing."""
        if status == 0:
            self._close()
        self.current = None
        counts = ", ".join(f"{number} {kind}" for kind, number in self.counts.items() if number)
        closing = (f"repro: {len(self.visited)} stage(s) in {format_duration(self.clock() - self.started)}"
                   f"{': ' + counts if counts else ''}; dvc repro exited with status {status}")
        if status == 0 and self.counts["ran"] + self.counts["skipped"] and not self.verbose:
            closing += ("\nrepro: to keep this run, commit dvc.lock with the small outputs `git status` lists; "
                        "`dvc push` sends the cache to a remote (README: What goes in git)")
        return "\n".join([*self.flush(), closing])  # a silent last stage's line first


# Where each stage's last run time is kept for the next run's ETA: DVC's own temporary folder (ignored by git).
STAGE_TIMES = Path(".dvc/tmp/stylecore-stage-times.json")


def read_stage_times(path: Path = STAGE_TIMES) -> dict[str, float]:
    """The timings a previous run saved; nothing when the file is missing or not what this module writes."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}
