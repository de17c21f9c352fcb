"""ASHA whose rungs survive an interrupted and restored sweep.

Tune restores an interrupted experiment's trials, its searcher and its callbacks, but not its scheduler: that
comes back as it was built (from ``tuner.pkl``), its rungs empty. A restored ASHA weighs a trial reaching a rung
against the results reported since the restore only (none, for the first trial to get there), so a wrecked trial
that reaches its rungs after a restore runs to the end, and a sane one may be stopped against one rival instead of
all of them. :class:`RungRecords` carries the rungs through the restore: Tune saves every callback's state with
each experiment checkpoint and hands it back on restore before any trial runs again, and the callback, pickled in
``tuner.pkl`` beside the scheduler it holds, comes back holding that same scheduler.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler


def asha_scheduler(*, max_t: int, grace_period: int, reduction_factor: float) -> tuple[ASHAScheduler, RungRecords]:
    """ASHA on ``training_iteration`` and the callback that keeps its rungs; pass both to the same Tuner."""
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace_period,
                              reduction_factor=reduction_factor)
    return scheduler, RungRecords(scheduler)


def _rungs(scheduler: ASHAScheduler) -> list[list[tuple[float, dict[str, float]]]]:
    """Each bracket's rungs as (milestone, {trial id: signed score}), the scheduler's own dicts."""
    try:
        return [list(bracket._rungs) for bracket in scheduler._brackets]
    except AttributeError as error:  # Ray renamed what it keeps: fail loudly rather than resume blind
        raise RuntimeError("this Ray's ASHAScheduler no longer keeps its rungs as _brackets[i]._rungs; "
                           "pipelines/asha.py must follow it") from error


class RungRecords(Callback):
    """A Tune callback whose checkpointed state is its ASHA scheduler's rung records."""

    def __init__(self, scheduler: ASHAScheduler):
        _rungs(scheduler)  # the layout is checked when the sweep is built, not first when it is restored
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        brackets = [[[milestone, dict(recorded)] for milestone, recorded in rungs] for rungs in _rungs(self.scheduler)]
        if not any(recorded for rungs in brackets for _, recorded in rungs):
            return None  # nothing recorded yet: Tune writes no callback file
        return {"brackets": brackets, "stopped": self.scheduler._num_stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        current = _rungs(self.scheduler)
        saved = state["brackets"]
        if [[m for m, _ in rungs] for rungs in current] != [[m for m, _ in rungs] for rungs in saved]:
            raise ValueError("the restored sweep's ASHA rungs do not match its scheduler's: the experiment "
                             "directory was written by different ASHA settings; delete it to start the sweep again")
        for rungs, saved_rungs in zip(current, saved):
            for (_, recorded), (_, saved_recorded) in zip(rungs, saved_rungs):
                recorded.update(saved_recorded)
        self.scheduler._num_stopped = state["stopped"]
