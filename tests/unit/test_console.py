"""The stages' console: libraries quiet by default, STYLECORE_LOG_LEVEL brings them back, a bad level is named."""

import logging
import os

import pytest

from pipelines.console import CHATTY_LOGGERS, LOG_LEVEL, library_level, quiet_libraries


@pytest.fixture(autouse=True)
def levels_restored(monkeypatch):
    saved = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_by_default_the_libraries_info_lines_are_off_and_their_warnings_stay(monkeypatch, caplog):
    monkeypatch.delenv(LOG_LEVEL, raising=False)
    assert quiet_libraries() == logging.WARNING
    caplog.set_level(logging.DEBUG, logger="")  # the root takes everything: only the libraries' own levels filter
    logging.getLogger("ray.train.v2._internal.execution.context").info("Reporting training result 2: …")
    logging.getLogger("mlflow.system_metrics.system_metrics_monitor").info("Started monitoring system metrics.")
    logging.getLogger("ray.train.v2._internal.execution.storage").warning("a checkpoint upload failed")
    assert [record.getMessage() for record in caplog.records] == ["a checkpoint upload failed"]
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_the_level_variable_brings_them_back(monkeypatch, caplog):
    monkeypatch.setenv(LOG_LEVEL, "info")
    assert quiet_libraries() == logging.INFO
    caplog.set_level(logging.DEBUG, logger="")
    logging.getLogger("ray.train.v2._internal.execution.context").info("Reporting training result 2: …")
    assert [record.getMessage() for record in caplog.records] == ["Reporting training result 2: …"]
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # the bars stay as MLflow has them


def test_a_level_logging_does_not_know_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv(LOG_LEVEL, "chatty")
    with pytest.raises(ValueError, match=r"STYLECORE_LOG_LEVEL='chatty' is not a logging level: use DEBUG"):
        library_level()


def test_a_train_worker_also_drops_ray_trains_report_line_logged_under_its_file_path(monkeypatch, caplog):
    pytest.importorskip("ray.train")
    from ray.train.v2._internal.execution import context

    from pipelines.console import quiet_train_worker

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    report_logger = logging.getLogger(context.__file__)
    saved = report_logger.level
    try:
        quiet_train_worker()
        caplog.set_level(logging.DEBUG, logger="")
        context.logger.info("Reporting training result 1: TrainingReport(…) from rank 1")
        context.logger.warning("a report that failed")
        assert [record.getMessage() for record in caplog.records] == ["a report that failed"]
    finally:
        report_logger.setLevel(saved)


@pytest.mark.parametrize("value, verbosity", [(None, 0), ("WARNING", 0), ("INFO", 1), ("DEBUG", 2)])
def test_tunes_tables_follow_the_same_switch(monkeypatch, value, verbosity):
    from pipelines.console import tune_verbosity

    if value is None:
        monkeypatch.delenv(LOG_LEVEL, raising=False)
    else:
        monkeypatch.setenv(LOG_LEVEL, value)
    assert tune_verbosity() == verbosity
