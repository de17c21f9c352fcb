"""The stages' console: the project's own progress lines, and the libraries' routine INFO output off.

``STYLECORE_LOG_LEVEL`` (``DEBUG``, ``INFO``, ``WARNING`` …; default ``WARNING``) is the level the libraries log at:
``STYLECORE_LOG_LEVEL=INFO dvc repro`` brings back Ray's connection lines, Ray Train's per-report and checkpoint
lines, MLflow's system-metrics lines and its artifact download bars. Their warnings and errors always print.
"""

from __future__ import annotations

import logging
import os

LOG_LEVEL = "STYLECORE_LOG_LEVEL"

# The loggers whose INFO lines repeat on every stage, run or report (ray.train: "Reporting training result …" and
# "Checkpoint successfully created …" from both ranks at every report; ray: "Connecting to / Connected to" twice a
# stage; mlflow.system_metrics: "Started / Stopped monitoring" and "Skip logging GPU metrics" per run).
CHATTY_LOGGERS = ("ray", "ray.train", "ray.tune", "mlflow.system_metrics")


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
    bar per download (two a train stage): off unless the level is INFO or lower, or set explicitly.
    """
    level = library_level()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if level > logging.INFO:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return level


def quiet_train_worker() -> None:
    """:func:`quiet_libraries` in a Ray Train worker, with Ray Train's "Reporting training result …" line, which
    its module logs under its file's path (``logging.getLogger(__file__)``), outside the ``ray.train`` logger."""
    level = quiet_libraries()
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(level)


def tune_verbosity() -> int:
    """Ray Tune's ``RunConfig(verbose=…)``: 0 (silent) by default, where the sweep stage's own lines say what it
    started and how each trial ended; 1 (Tune's tables: every trial's config and result, ~230 lines for the demo's
    four trials) at ``STYLECORE_LOG_LEVEL=INFO``, 2 at ``DEBUG``."""
    level = library_level()
    return 0 if level > logging.INFO else 1 if level > logging.DEBUG else 2
