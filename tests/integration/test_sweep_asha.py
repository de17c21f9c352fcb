"""ASHA's rungs survive an interrupted and restored Tune experiment (pipelines/asha.py), on the local Ray.

Two sane trials go through ASHA's rungs (the second, worse than the first, is stopped at the first rung); the
third, a wrecked one, interrupts the experiment as it starts (Ctrl+C's
signal to the driver), so the sweep is restored before it reports. Restored, it must be stopped at its first rung
against the sane trials' records, as it would have been without the interruption. Tune alone restores an
empty scheduler, and the wrecked trial runs to the end.
"""

import os
import signal

import pytest

pytest.importorskip("ray")

from pipelines.asha import asha_scheduler  # noqa: E402

MAX_T = 4  # rungs at 1, 2 (and max_t at 4) with grace period 1 and reduction factor 2


def _sweep(storage, name, interrupt_marker, callbacks_of):
    from ray import tune

    driver = os.getpid()

    def trainable(config):
        # The wrecked trial's first start interrupts the sweep; its start after the restore trains.
        if config["score"] > 10 and not os.path.exists(interrupt_marker):
            open(interrupt_marker, "w").close()
            os.kill(driver, signal.SIGINT)
            import time

            time.sleep(600)  # Tune ends this actor when it stops the interrupted experiment
        for _ in range(MAX_T):
            tune.report({"objective": config["score"]})

    scheduler, rung_records = asha_scheduler(max_t=MAX_T, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        trainable, param_space={"score": tune.grid_search([1.0, 2.0, 100.0])},
        tune_config=tune.TuneConfig(metric="objective", mode="min", scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=callbacks_of(rung_records)))
    first = tuner.fit()
    experiment = str(storage / name)
    assert os.path.exists(interrupt_marker) and tune.Tuner.can_restore(experiment)
    assert sorted(r.metrics.get("training_iteration", 0) for r in first) == [0, 1, MAX_T]  # interrupted
    restored = tune.Tuner.restore(experiment, trainable=trainable).fit()
    return {r.config["score"]: r.metrics["training_iteration"] for r in restored}


def test_a_wrecked_trial_reaching_a_rung_after_a_restore_is_stopped_there(local_ray, tmp_path):
    iterations = _sweep(tmp_path / "kept", "kept", str(tmp_path / "kept-interrupted"), lambda records: [records])
    assert iterations == {1.0: MAX_T, 2.0: 1, 100.0: 1}, iterations


def test_without_the_rung_records_tune_restores_an_empty_asha(local_ray, tmp_path):
    """The failure the callback exists for, so that a Ray that fixes it is noticed (and the callback can go)."""
    iterations = _sweep(tmp_path / "lost", "lost", str(tmp_path / "lost-interrupted"), lambda records: [])
    assert iterations == {1.0: MAX_T, 2.0: 1, 100.0: MAX_T}, iterations
