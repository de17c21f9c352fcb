"""The stages' console: libraries quiet by default, STYLECORE_LOG_LEVEL brings them back, a bad level is named;
rank 0 alone says what it set up; the training progress line and `dvc repro`'s line a stage with its ETA."""

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


def test_a_train_worker_also_drops_ray_trains_report_line_logged_under_its_file_path_and_restores_the_levels(
        monkeypatch, caplog):
    pytest.importorskip("ray.train")
    from ray.train.v2._internal.execution import context

    from pipelines.console import quiet_train_worker

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    report_logger, stylecore_logger = logging.getLogger(context.__file__), logging.getLogger("stylecore")
    saved = report_logger.level, stylecore_logger.level
    report_logger.setLevel(logging.NOTSET)
    stylecore_logger.setLevel(logging.INFO)
    try:
        with quiet_train_worker():
            caplog.set_level(logging.DEBUG, logger="")
            context.logger.info("Reporting training result 1: TrainingReport(…) from rank 1")
            context.logger.warning("a report that failed")
            # stylecore's set-up lines stay in the worker (rank 0 prints Trainer.summary instead); warnings pass
            logging.getLogger("stylecore.training").info("trainer: model adain …")
            logging.getLogger("stylecore.training").warning("a non-finite step was skipped")
            assert [record.getMessage() for record in caplog.records] == ["a report that failed",
                                                                          "a non-finite step was skipped"]
        # a run in the stage's own process (local mode) leaves its logging as it was
        assert (report_logger.level, stylecore_logger.level) == (logging.NOTSET, logging.INFO)
        caplog.clear()
        monkeypatch.setenv(LOG_LEVEL, "INFO")  # the switch brings every line back
        stylecore_logger.setLevel(logging.NOTSET)
        with quiet_train_worker():
            context.logger.info("Reporting training result 2")
            logging.getLogger("stylecore.training").info("trainer: model adain …")
        assert [record.getMessage() for record in caplog.records] == ["Reporting training result 2",
                                                                      "trainer: model adain …"]
    finally:
        report_logger.setLevel(saved[0])
        stylecore_logger.setLevel(saved[1])


def test_ray_trains_own_logging_config_follows_the_switch(monkeypatch):
    pytest.importorskip("ray.train")
    from pipelines.console import train_logging_config

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    assert train_logging_config().log_level == "WARNING"
    monkeypatch.setenv(LOG_LEVEL, "debug")
    assert train_logging_config().log_level == "DEBUG"


def test_mlflows_pickle_warning_is_dropped_by_default_and_no_other_warning(monkeypatch, caplog):
    monkeypatch.delenv(LOG_LEVEL, raising=False)
    from pipelines.console import _PickleWarning

    flavor = logging.getLogger("mlflow.pytorch")
    saved = list(flavor.filters)
    try:
        flavor.filters[:] = [f for f in saved if not isinstance(f, _PickleWarning)]
        quiet_libraries()
        quiet_libraries()  # a second call adds no second filter
        assert sum(isinstance(f, _PickleWarning) for f in flavor.filters) == 1
        caplog.set_level(logging.DEBUG, logger="")
        flavor.warning("Saving pytorch model by Pickle or CloudPickle format requires exercising caution …")
        flavor.warning("Failed to log the model's requirements")
        assert [record.getMessage() for record in caplog.records] == ["Failed to log the model's requirements"]
    finally:
        flavor.filters[:] = saved


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_training_progress_line_comes_at_most_every_interval_with_rate_and_time_left():
    from stylecore.progress import TrainingProgress

    clock = _Clock()
    progress = TrainingProgress("train@adain-gram", total=1000, every_s=30, clock=clock)
    assert progress.line(100, 30.0, 2.5) is None  # the first step starts the clock (a resumed run starts at 100)
    clock.now += 10
    assert progress.line(150, 30.0, 2.4) is None  # 10 s: too soon
    clock.now += 30
    # 200 steps in 40 s is 5 steps/s, so the 700 steps left take 140 s
    assert progress.line(300, 31.5, 2.25) == ("train@adain-gram: step 300/1000 (30 %), 31.5 samples/s, loss 2.25, "
                                              "2 min 20 s left")
    clock.now += 5
    assert progress.line(320, 31.5, 2.2) is None
    clock.now += 3600
    assert progress.line(1000, 31.5, 2.0) is None  # the last step: the stage's own summary line says it


def test_durations_read_at_a_glance():
    from stylecore.progress import format_duration

    assert [format_duration(s) for s in (0.4, 42, 185, 7440, -3)] == ["0 s", "42 s", "3 min 5 s", "2 h 4 min", "0 s"]


DVC_OUTPUT = """\
Running stage 'download@demo':
> python -m pipelines.download --source demo
download@demo: generated 280 images
Generating lock file 'dvc.lock'
Updating lock file 'dvc.lock'

Stage 'shard@demo' didn't change, skipping
Stage 'train@adain' is cached - skipping run, checking out outputs
Updating lock file 'dvc.lock'

Running stage 'evaluate':
> python -m pipelines.evaluate
evaluate: 12 candidates
Updating lock file 'dvc.lock'

To track the changes with git, run:

\tgit add dvc.lock
Use `dvc push` to send your updates to remote storage.
"""


def _feed(progress, clock, text, step_s=10.0):
    shown = []
    for line in text.splitlines(keepends=True):
        clock.now += step_s
        shown += progress.feed(line)
    return shown


def test_dvc_repro_becomes_a_line_a_stage_with_its_place_and_the_last_runs_timings(monkeypatch):
    from pipelines.console import StageProgress

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    clock = _Clock()
    stages = ["download@demo", "shard@demo", "train@adain", "evaluate"]
    progress = StageProgress(stages, {"download@demo": 50.0, "train@adain": 30.0, "evaluate": 100.0}, clock=clock)
    shown = _feed(progress, clock, DVC_OUTPUT)
    assert shown == [
        "repro: [1/4] download@demo (10 s in; this stage and the 3 after it took 3 min 0 s last time, 1 of them "
        "unmeasured)",
        "download@demo: generated 280 images",
        "repro: [2/4] shard@demo: unchanged, skipped",
        "repro: [3/4] train@adain: restored from DVC's run cache",
        "repro: [4/4] evaluate (1 min 50 s in; this stage and the 0 after it took 1 min 40 s last time)",
        "evaluate: 12 candidates",
    ]  # DVC's advice (git add dvc.lock, dvc push) gives way to the project's, which names the committed outputs too
    closing = progress.finish(0).splitlines()
    assert closing[0].startswith("repro: 4 stage(s) in 3 min 10 s: 2 ran, 1 unchanged, 1 restored;")
    assert closing[1].startswith("repro: to keep this run, commit dvc.lock with the small outputs `git status` lists")
    # each stage that ran is timed from its line to the next stage's: the next run's ETA reads these
    assert progress.timings == {"download@demo": 60.0, "train@adain": 30.0, "evaluate": 80.0}


def test_a_stage_that_only_says_it_is_skipped_is_one_line_and_a_silent_stage_still_shows(monkeypatch):
    from pipelines.console import StageProgress

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    clock = _Clock()
    progress = StageProgress(["download@coco", "shard@coco-val", "evaluate"], {}, clock=clock)
    shown = _feed(progress, clock, "Running stage 'download@coco':\n> python -m pipelines.download --source coco\n"
                                   "download@coco: skipped, not in profile 'demo' (used by: full)\n"
                                   "Updating lock file 'dvc.lock'\n\nRunning stage 'shard@coco-val':\n"
                                   "> python -m pipelines.shard\n")
    assert shown == []  # the skipped stage's line waits: the next stage may be skipped for the same reason
    assert progress.pending is not None  # shard@coco-val has said nothing yet: its line is held …
    assert progress.flush() == ["repro: [1/3] download@coco: skipped, not in profile 'demo' (used by: full)",
                                "repro: [2/3] shard@coco-val (1 min 0 s in)"]  # … until the console lets it out
    assert _feed(progress, clock, "shard@coco-val: skipped, not in profile 'demo'\n") == \
        ["shard@coco-val: skipped, not in profile 'demo'"]  # once out, the stage's lines follow as they come
    assert _feed(progress, clock, "Running stage 'evaluate':\n") == []
    assert progress.finish(0).splitlines()[:2] == [
        "repro: [3/3] evaluate (1 min 30 s in)",  # the last stage's held line comes before the closing line
        "repro: 3 stage(s) in 1 min 30 s: 2 ran, 1 skipped; dvc repro exited with status 0"]


def test_stages_skipped_one_after_another_for_one_reason_share_a_line(monkeypatch):
    from pipelines.console import StageProgress

    monkeypatch.delenv(LOG_LEVEL, raising=False)
    clock = _Clock()
    sources = ["places365", "coco", "wikiart"]
    stages = [f"download@{s}" for s in sources] + [f"shard@{s}" for s in sources[:2]] + ["train@adain"]
    progress = StageProgress(stages, {}, clock=clock)
    dvc = "".join(f"Running stage 'download@{s}':\n> python -m pipelines.download --source {s}\n"
                  f"download@{s}: skipped, not in profile 'demo' (used by: full)\nUpdating lock file 'dvc.lock'\n"
                  for s in sources)
    dvc += "".join(f"Running stage 'shard@{s}':\nshard@{s}: skipped, not in profile 'demo'\n" for s in sources[:2])
    dvc += "Running stage 'train@adain':\ntrain@adain: 2 workers\n"
    assert _feed(progress, clock, dvc) == [
        "repro: [1–3/6] download@places365, download@coco, download@wikiart: skipped, not in profile 'demo' "
        "(used by: full)",
        "repro: [4–5/6] shard@places365, shard@coco: skipped, not in profile 'demo'",
        "repro: [6/6] train@adain (2 min 50 s in)",
        "train@adain: 2 workers"]
    assert progress.finish(0).startswith("repro: 6 stage(s) in 3 min 0 s: 1 ran, 5 skipped;")


def test_a_failed_stage_keeps_its_last_timing_and_verbose_keeps_dvcs_lines(monkeypatch):
    from pipelines.console import StageProgress

    monkeypatch.setenv(LOG_LEVEL, "INFO")
    clock = _Clock()
    progress = StageProgress(None, {"evaluate": 100.0}, verbose=True, clock=clock)
    shown = _feed(progress, clock, "Running stage 'evaluate':\n> python -m pipelines.evaluate\nERROR: failed\n")
    assert shown == ["repro: [1] evaluate (10 s in)", "Running stage 'evaluate':", "> python -m pipelines.evaluate",
                     "ERROR: failed"]
    assert progress.finish(1).endswith("dvc repro exited with status 1")
    assert progress.timings == {"evaluate": 100.0}


def test_stage_timings_from_a_file_this_module_did_not_write_are_ignored(tmp_path):
    from pipelines.console import read_stage_times

    path = tmp_path / "times.json"
    assert read_stage_times(path) == {}
    path.write_text("[1, 2]")
    assert read_stage_times(path) == {}
    path.write_text('{"train@a": 12.5, "evaluate": "soon", "shard@x": -1}')
    assert read_stage_times(path) == {"train@a": 12.5}


@pytest.mark.parametrize("value, verbosity", [(None, 0), ("WARNING", 0), ("INFO", 1), ("DEBUG", 2)])
def test_tunes_tables_follow_the_same_switch(monkeypatch, value, verbosity):
    from pipelines.console import tune_verbosity

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    if value is None:
        monkeypatch.delenv(LOG_LEVEL, raising=False)
    else:
        monkeypatch.setenv(LOG_LEVEL, value)
    assert tune_verbosity() == verbosity
    # silent: Tune's classic reporter, which prints no experiment header at 0; otherwise Tune's default engine
    assert os.environ.get("RAY_AIR_NEW_OUTPUT") == ("0" if verbosity == 0 else None)


def test_rays_known_benign_lines_are_dropped_unless_verbose(monkeypatch):
    from pipelines.console import StageProgress

    lines = ["[2026-12-06 06:35:16,357 E 4777 4777] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches("
             "StylizeActor))' and ID: '7075' has constructor arguments in the object store and max_restarts > 0. If the "
             "arguments in the object store go out of scope or are lost, the actor restart will fail.",
             "(PlacementGroupCleaner pid=3222) Detected that the Ray Train controller actor (300e) is dead. Cleaning up "
             "placement group = [PlacementGroupID(d829)]",
             "[2026-12-06 06:35:16,357 E 4777 4777] core_worker.cc:1234: Actor died unexpectedly"]  # a real error
    quiet = StageProgress(None, {}, clock=_Clock())
    assert [shown for line in lines for shown in quiet.feed(line)] == [lines[2]]
    verbose = StageProgress(None, {}, verbose=True, clock=_Clock())
    assert [shown for line in lines for shown in verbose.feed(line)] == lines
